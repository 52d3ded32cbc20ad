//! Plain Kolla mode: the `kolla-build.conf` and the template override
//! ci-builder writes for one build.
//!
//! The override points every repository file an image has at the proxy
//! while the image builds, and puts the original files back at its end, so
//! no image keeps a proxy URL: the same hooks the StackHPC Kayobe
//! configuration uses, written for both package families.
//!
//! - `labels` (every image, right after `FROM`): rewrite the files the
//!   parent image left (the parent restored its originals);
//! - `base_ubuntu_package_sources_list` (after Kolla copies its own
//!   sources), `base_ubuntu_package_apt_preferences` (after `extrepo`),
//!   `base_rocky_repo_overrides_post_copy` and
//!   `base_rocky_repo_overrides_post_yum` (after the release packages add
//!   theirs): rewrite what Kolla has just added;
//! - `base_footer` and `footer` (the end of every image): restore, then
//!   fail the image if a repository file still names the proxy.
//!
//! A rewrite keeps the original of each file it changes under
//! [`BACKUP_DIR`] the first time it sees it, and again whenever Kolla has
//! replaced the file with one that does not name the proxy, so the restore
//! always puts back what the image would have had without ci-builder.

use crate::error::BuilderError;
use pulp_auth_config::Mirror;
use std::path::Path;

/// Where the originals wait inside the image during its build.
pub const BACKUP_DIR: &str = "/var/lib/ci-builder-repos";

/// Kolla's own backups of `build_only` repositories (`repos_yaml`), which
/// its last step restores after every block has run.
const KOLLA_BACKUP_DIR: &str = "/tmp/kolla-repos-backup";

/// The blocks this override defines; an operator's override, concatenated
/// after it by Kolla, must not define them again (Jinja refuses a block
/// defined twice in one template).
pub const BLOCKS: [&str; 7] = [
    "labels",
    "base_ubuntu_package_sources_list",
    "base_ubuntu_package_apt_preferences",
    "base_rocky_repo_overrides_post_copy",
    "base_rocky_repo_overrides_post_yum",
    "base_footer",
    "footer",
];

/// kolla-build.conf `[DEFAULT]` keys ci-builder sets itself.
const OWNED: [&str; 4] = ["base", "tag", "network_mode", "template_override"];

/// The shell that rewrites every repository file naming a mirror's
/// upstream: deb one-line and deb822 sources by URL, rpm `.repo` files by
/// `baseurl` (uncommented), with `mirrorlist` and `metalink` switched off
/// in the sections whose `baseurl` now names the proxy.
fn rewrite(proxy: &str, mirrors: &[Mirror]) -> Vec<String> {
    let url_exprs: String = mirrors
        .iter()
        .map(|m| {
            format!(
                " -e 's#(^|[[:space:]=])({})(/+|([[:space:]]|$))#\\1{}{}\\4#g'",
                sed_regex(&m.upstream),
                proxy,
                m.path.as_str()
            )
        })
        .collect();
    let proxy_re = sed_regex(proxy);
    vec![
        format!("b={BACKUP_DIR}; p='{proxy}'"),
        "for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources /etc/yum.repos.d/*.repo; do".into(),
        "  [ -f \"$f\" ] || continue".into(),
        "  grep -qF \"$p\" \"$f\" || { mkdir -p \"$b${f%/*}\" && cp -p \"$f\" \"$b$f\"; }".into(),
        format!("  sed -E -i{url_exprs} -e 's#^[[:space:]]*\\#+[[:space:]]*(baseurl[[:space:]]*=[[:space:]]*{proxy_re})#\\1#' \"$f\""),
        "  case \"$f\" in *.repo) ;; *) continue ;; esac".into(),
        "  grep -qF \"$p\" \"$f\" || continue".into(),
        "  o=\"$f.ci-builder\"; s=\"$o.section\"; : >\"$o\"; ours=".into(),
        "  flush() { [ -f \"$s\" ] || return 0; if [ -n \"$ours\" ]; then sed -E 's/^(mirrorlist|metalink)([[:space:]]*=)/#\\1\\2/' \"$s\"; else cat \"$s\"; fi >>\"$o\"; rm -f \"$s\"; ours=; }".into(),
        "  while IFS= read -r l || [ -n \"$l\" ]; do".into(),
        "    case \"$l\" in \"[\"*) flush ;; esac".into(),
        "    printf '%s\\n' \"$l\" >>\"$s\"".into(),
        "    case \"$l\" in baseurl*=*\"$p\"*) ours=1 ;; esac".into(),
        "  done <\"$f\"".into(),
        "  flush; cat \"$o\" >\"$f\"; rm -f \"$o\"".into(),
        "done".into(),
    ]
}

/// The shell that puts the originals back and refuses an image that still
/// names the proxy in a repository file (files Kolla itself restores in its
/// last step are left to it).
fn restore(proxy: &str) -> Vec<String> {
    vec![
        format!("b={BACKUP_DIR}; p='{proxy}'; k={KOLLA_BACKUP_DIR}"),
        // Only files that still exist: a step may have removed one on purpose.
        "if [ -d \"$b\" ]; then find \"$b\" -type f >\"$b.list\"".into(),
        "  while IFS= read -r g; do f=${g#\"$b\"}; if [ -f \"$f\" ]; then cp -p \"$g\" \"$f\"; fi; done <\"$b.list\"".into(),
        "  rm -rf \"$b\" \"$b.list\"".into(),
        "fi".into(),
        "left=".into(),
        "for f in $(grep -rlF \"$p\" /etc/apt/sources.list /etc/apt/sources.list.d /etc/yum.repos.d 2>/dev/null); do".into(),
        "  n=${f##*/}".into(),
        "  [ -f \"$k/${n%.sources}.enabled\" ] || [ -f \"$k/$n.enabled\" ] || left=\"$left $f\"".into(),
        "done".into(),
        "if [ -n \"$left\" ]; then echo \"ci-builder: these repository files still name the proxy $p:$left\" >&2; exit 1; fi".into(),
    ]
}

/// `lines` as one shell line for a Dockerfile: `;` between commands, none
/// after the words that open a body.
fn join_shell(lines: &[String]) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        out.push_str(line);
        if i + 1 < lines.len() {
            let opens = ["do", "then", "else", "{"]
                .iter()
                .any(|w| line.ends_with(&format!(" {w}")) || line == *w);
            out.push_str(if opens { " \\\n    " } else { "; \\\n    " });
        }
    }
    out
}

/// One `RUN` of `lines`. Kept out of Jinja's reach, since shell like
/// `${#x}` would open a Jinja comment.
fn run(lines: &[String]) -> String {
    format!("{{% raw %}}\nRUN {}\n{{% endraw %}}\n", join_shell(lines))
}

/// The template override for `proxy` (the URL builds reach the proxy at)
/// and the operator's mirrors.
pub fn template_override(proxy: &str, mirrors: &[Mirror]) -> String {
    let rewrite = rewrite(proxy, mirrors);
    let restore = restore(proxy);
    let rewrite_run = run(&rewrite);
    let restore_run = run(&restore);
    // Inside base_rocky_repo_overrides_post_yum Kolla's RUN is still open
    // (`... \` before the block, `&& distro-sync` after it).
    let chained = format!(
        "{{% raw %}}\n    && {{ {}; }} \\\n{{% endraw %}}",
        join_shell(&rewrite)
    );
    format!(
        "{{% extends parent_template %}}\n\
         {{# Written by ci-builder for one build: repository files point at \
         pulp-auth-proxy while each image builds and get their originals back \
         at its end. #}}\n\
         \n\
         {{% block labels %}}\n{{{{ super() }}}}\n{rewrite_run}{{% endblock %}}\n\
         \n\
         {{% block base_ubuntu_package_sources_list %}}\n{{{{ super() }}}}\n{rewrite_run}{{% endblock %}}\n\
         \n\
         {{% block base_ubuntu_package_apt_preferences %}}\n{rewrite_run}{{{{ super() }}}}\n{{% endblock %}}\n\
         \n\
         {{% block base_rocky_repo_overrides_post_copy %}}\n{rewrite_run}{{% endblock %}}\n\
         \n\
         {{% block base_rocky_repo_overrides_post_yum %}}\n{chained}\n{{% endblock %}}\n\
         \n\
         {{% block base_footer %}}\n{restore_run}{{% endblock %}}\n\
         \n\
         {{% block footer %}}\n{restore_run}{{% endblock %}}\n"
    )
}

/// An ERE matching `text` literally.
fn sed_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if ".[]()*+?{}|^$\\#".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `[DEFAULT]` values of an operator's kolla-build.conf that
/// ci-builder takes as defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorDefaults {
    /// `base`.
    pub base: Option<String>,
    /// `tag`.
    pub tag: Option<String>,
}

/// What ci-builder writes for one plain Kolla build.
#[derive(Debug, Clone)]
pub struct Files {
    /// kolla-build.conf.
    pub conf: String,
    /// ci-builder's template override.
    pub template: String,
}

/// The settings ci-builder puts in `[DEFAULT]`.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// `base`.
    pub base: &'a str,
    /// `tag`.
    pub tag: &'a str,
    /// Where ci-builder's override will be.
    pub template: &'a Path,
    /// The operator's override, rendered after ours.
    pub operator_template: Option<&'a Path>,
}

/// Reads the operator's kolla-build.conf: the defaults it gives, and the
/// text without the keys ci-builder sets. Refuses keys that would break the
/// build's way to the proxy.
pub fn operator_conf(path: &Path) -> Result<(OperatorDefaults, String), BuilderError> {
    let text = std::fs::read_to_string(path).map_err(|source| BuilderError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, message: String| BuilderError::KollaConfig {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut defaults = OperatorDefaults::default();
    let mut kept = String::with_capacity(text.len());
    let mut in_default = true;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_default = trimmed == "[DEFAULT]";
        } else if in_default && !trimmed.starts_with(['#', ';']) {
            if let Some((key, value)) = trimmed.split_once('=') {
                // oslo.config reads `base-tag` and `base_tag` alike.
                let key = key.trim().replace('-', "_");
                let value = value.trim().to_string();
                match key.as_str() {
                    "base" => defaults.base = Some(value),
                    "tag" => defaults.tag = Some(value),
                    "network_mode" if value != "host" => {
                        return Err(bad(
                            n + 1,
                            format!(
                                "network_mode = {value}: builds reach the proxy on the host's \
                                 address only with network_mode = host, which ci-builder sets; \
                                 remove the line"
                            ),
                        ))
                    }
                    "template_override" => {
                        return Err(bad(
                            n + 1,
                            "template_override: ci-builder passes its own override; name yours \
                             in [build] template_override instead, and it is rendered after ours"
                                .into(),
                        ))
                    }
                    _ => {}
                }
                if OWNED.contains(&key.as_str()) {
                    continue;
                }
            }
        }
        kept.push_str(line);
        kept.push('\n');
    }
    Ok((defaults, kept))
}

/// Refuses an operator override that redefines one of ours.
pub fn check_operator_template(path: &Path) -> Result<(), BuilderError> {
    let text = std::fs::read_to_string(path).map_err(|source| BuilderError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("{%") {
            rest = &rest[at + 2..];
            let tag = rest.trim_start_matches(['-', '+']).trim_start();
            if let Some(name) = tag.strip_prefix("block") {
                let name = name.split_whitespace().next().unwrap_or("");
                if BLOCKS.contains(&name) {
                    return Err(BuilderError::TemplateBlock {
                        path: path.to_path_buf(),
                        line: n + 1,
                        block: name.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// kolla-build.conf: ci-builder's `[DEFAULT]` keys first, then the
/// operator's file without the keys ci-builder sets.
pub fn conf(settings: &Settings<'_>, operator: Option<&str>) -> String {
    let mut out = String::from("# Written by ci-builder for one build.\n[DEFAULT]\n");
    out.push_str(&format!("base = {}\n", settings.base));
    out.push_str(&format!("tag = {}\n", settings.tag));
    // Builds reach the proxy on the host's address.
    out.push_str("network_mode = host\n");
    out.push_str(&format!(
        "template_override = {}\n",
        settings.template.display()
    ));
    if let Some(t) = settings.operator_template {
        out.push_str(&format!("template_override = {}\n", t.display()));
    }
    if let Some(text) = operator {
        out.push_str("\n# The operator's kolla_config follows.\n");
        out.push_str(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn operator_conf_gives_defaults_and_keeps_the_rest() {
        let f = file(
            "[DEFAULT]\nbase = ubuntu\ntag= 2026.2-ubuntu-noble\nnetwork-mode = host\n\
             pull = false\n# template_override = commented\n[cron]\ntag = not-default\n",
        );
        let (d, kept) = operator_conf(f.path()).unwrap();
        assert_eq!(d.base.as_deref(), Some("ubuntu"));
        assert_eq!(d.tag.as_deref(), Some("2026.2-ubuntu-noble"));
        assert_eq!(
            kept,
            "[DEFAULT]\npull = false\n# template_override = commented\n[cron]\ntag = not-default\n"
        );
    }

    #[test]
    fn operator_conf_refuses_what_would_break_the_way_to_the_proxy() {
        let f = file("[DEFAULT]\nnetwork_mode = bridge\n");
        let err = operator_conf(f.path()).unwrap_err().to_string();
        assert!(
            err.contains(", line 2: network_mode = bridge: builds reach the proxy"),
            "{err}"
        );
        let f = file("[DEFAULT]\n\ntemplate-override = /x.j2\n");
        let err = operator_conf(f.path()).unwrap_err().to_string();
        assert!(err.contains(", line 3: template_override: ci-builder passes its own override; name yours in [build] template_override"), "{err}");
        let err = operator_conf(Path::new("/nonexistent/kolla-build.conf"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read /nonexistent/kolla-build.conf: "),
            "{err}"
        );
    }

    #[test]
    fn an_operator_override_may_not_redefine_our_blocks() {
        let ok =
            file("{% extends parent_template %}\n{% block cron_footer %}RUN true{% endblock %}\n");
        check_operator_template(ok.path()).unwrap();
        let bad = file(
            "{% extends parent_template %}\n\n{%- block  footer -%}\nRUN true\n{% endblock %}\n",
        );
        let err = check_operator_template(bad.path()).unwrap_err().to_string();
        assert!(
            err.contains(", line 3: block `footer` is ci-builder's"),
            "{err}"
        );
    }

    #[test]
    fn conf_puts_ours_first_then_the_operators() {
        let text = conf(
            &Settings {
                base: "debian",
                tag: "t1",
                template: Path::new("/tmp/d/ci-builder-override.j2"),
                operator_template: Some(Path::new("/etc/kolla/mine.j2")),
            },
            Some("[DEFAULT]\npull = false\n"),
        );
        assert_eq!(
            text,
            "# Written by ci-builder for one build.\n[DEFAULT]\nbase = debian\ntag = t1\n\
             network_mode = host\ntemplate_override = /tmp/d/ci-builder-override.j2\n\
             template_override = /etc/kolla/mine.j2\n\n\
             # The operator's kolla_config follows.\n[DEFAULT]\npull = false\n"
        );
    }

    #[test]
    fn the_override_defines_every_block_it_claims_and_keeps_shell_from_jinja() {
        let mirrors = [Mirror {
            upstream: "http://dl.rockylinux.org/$contentdir".into(),
            path: pulp_auth_config::PathPrefix::parse("/pulp/content/rocky/").unwrap(),
        }];
        let t = template_override("http://192.168.33.3", &mirrors);
        assert!(t.starts_with("{% extends parent_template %}\n"));
        for b in BLOCKS {
            assert_eq!(t.matches(&format!("{{% block {b} %}}")).count(), 1, "{b}");
        }
        // Every shell line sits between raw and endraw.
        let raw = t.matches("{% raw %}").count();
        assert_eq!(raw, t.matches("{% endraw %}").count());
        assert_eq!(raw, BLOCKS.len());
        assert!(
            t.contains(r"http://dl\.rockylinux\.org/\$contentdir"),
            "{t}"
        );
    }
}
