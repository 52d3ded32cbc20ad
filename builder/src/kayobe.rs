//! What Kayobe decided: the tag of a build that was not given `--tag`.
//!
//! Kayobe computes the tag itself (its configurations usually prefix the
//! release: `<release>-<distribution>-<datetime>`) and writes it to the
//! `kolla-build.conf` it generates for each build, at
//! `{{ config_path }}/kolla/kolla-build.conf`, where `config_path` is
//! `{{ base_path }}/etc` and `base_path` is `/opt/kayobe` unless the Kayobe
//! configuration sets them. The builder reads that file after the build
//! instead of imposing a tag of its own.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// More than a kernel clock tick (at most 10 ms).
const COARSE_CLOCK: std::time::Duration = std::time::Duration::from_millis(50);

/// Kayobe's default `config_path`.
const DEFAULT_CONFIG_PATH: &str = "/opt/kayobe/etc";

/// Where Kayobe writes `kolla-build.conf`: `config_path`, or `base_path`
/// joined with `etc`, from `globals.yml` of the Kayobe configuration (the
/// environment's own `globals.yml` winning) when it is a plain value;
/// otherwise Kayobe's default.
pub fn build_conf_path(kayobe_config: Option<&Path>, environment: Option<&str>) -> PathBuf {
    let mut files = Vec::new();
    if let Some(dir) = kayobe_config {
        files.push(dir.join("globals.yml"));
        if let Some(env) = environment {
            files.push(dir.join("environments").join(env).join("globals.yml"));
        }
    }
    let mut config_path = PathBuf::from(DEFAULT_CONFIG_PATH);
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if let Some(v) = plain_value(&text, "config_path") {
            config_path = PathBuf::from(v);
        } else if let Some(v) = plain_value(&text, "base_path") {
            config_path = Path::new(&v).join("etc");
        }
    }
    config_path.join("kolla").join("kolla-build.conf")
}

/// `key: value` at the top level of a YAML file, when the value is a plain
/// absolute path (not a Jinja expression the builder cannot evaluate).
fn plain_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let v = rest.split(" #").next()?.trim().trim_matches(['"', '\'']);
        (v.starts_with('/') && !v.contains("{{")).then(|| v.to_string())
    })
}

/// The `tag` of `[DEFAULT]` in the `kolla-build.conf` at `path`, when the
/// file was written at or after `since` (an older one is another build's).
pub fn read_tag(path: &Path, since: SystemTime) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let written = meta
        .modified()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // File times come from the kernel's coarse clock, which may lag the
    // clock `since` was read from by a tick.
    if written + COARSE_CLOCK < since {
        return Err(format!(
            "{} was not written by this build (it is older)",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    tag_in(&text).ok_or_else(|| format!("{} has no `tag = ...` in [DEFAULT]", path.display()))
}

fn tag_in(text: &str) -> Option<String> {
    let mut section = "DEFAULT".to_string();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
        } else if section == "DEFAULT" {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "tag" && !v.trim().is_empty() {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_tag_comes_from_default_only() {
        let conf = "[DEFAULT]\nbase = rocky\n# tag = old\ntag = master-rocky-9-20261203T1200\n\n[profiles]\ntag = no\n";
        assert_eq!(
            tag_in(conf).as_deref(),
            Some("master-rocky-9-20261203T1200")
        );
        assert_eq!(tag_in("[x]\ntag = y\n"), None);
        assert_eq!(tag_in("tag=z\n").as_deref(), Some("z"));
    }

    #[test]
    fn the_path_follows_the_kayobe_configuration_and_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path();
        assert_eq!(
            build_conf_path(Some(cfg), None),
            Path::new("/opt/kayobe/etc/kolla/kolla-build.conf")
        );
        std::fs::write(cfg.join("globals.yml"), "---\nbase_path: /srv/kayobe\n").unwrap();
        assert_eq!(
            build_conf_path(Some(cfg), Some("ci")),
            Path::new("/srv/kayobe/etc/kolla/kolla-build.conf")
        );
        let env = cfg.join("environments/ci");
        std::fs::create_dir_all(&env).unwrap();
        std::fs::write(env.join("globals.yml"), "config_path: \"/etc/k\"  # ours\n").unwrap();
        assert_eq!(
            build_conf_path(Some(cfg), Some("ci")),
            Path::new("/etc/k/kolla/kolla-build.conf")
        );
        std::fs::write(
            env.join("globals.yml"),
            "config_path: \"{{ base_path }}/x\"\n",
        )
        .unwrap();
        assert_eq!(
            build_conf_path(Some(cfg), Some("ci")),
            Path::new("/srv/kayobe/etc/kolla/kolla-build.conf"),
            "a template is not evaluated"
        );
    }

    #[test]
    fn an_older_file_is_another_builds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kolla-build.conf");
        std::fs::write(&path, "[DEFAULT]\ntag = t\n").unwrap();
        let after = SystemTime::now() + Duration::from_secs(3600);
        assert!(read_tag(&path, after).unwrap_err().contains("older"));
        let before = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(read_tag(&path, before).unwrap(), "t");
    }
}
