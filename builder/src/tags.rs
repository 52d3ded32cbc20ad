//! `ci-builder tags`: points a Kayobe configuration at the images just
//! built, the seed guide's last step ("edit `etc/kayobe/kolla-image-tags.yml`
//! to reference the tag").
//!
//! The file is edited as text, one value in place, so its comments, order
//! and quoting stay byte for byte; a shape this module does not recognise
//! is refused rather than rewritten. The shape is the one Kayobe
//! configurations use:
//!
//! ```yaml
//! kolla_image_tags:
//!   openstack:
//!     rocky-9: 2025.1-rocky-9-20261203T120000
//! ```

use std::path::{Path, PathBuf};

/// The file, relative to the Kayobe configuration directory (`etc/kayobe`).
pub const FILE: &str = "kolla-image-tags.yml";

/// Why the file could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum TagsError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's shape is not the one this command edits.
    #[error("{}: {what}; set the tag by hand (expected `kolla_image_tags:` then `  {key}:` then `    {distro}: TAG`, block style)", path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// What was not found.
        what: String,
        /// The service key looked for.
        key: String,
        /// The distribution key looked for.
        distro: String,
    },
    /// The tag does not name a distribution the way Kayobe's tags do.
    #[error("cannot tell the distribution from the tag {tag:?} (Kayobe's tags are <release>-<distribution>-<datetime>, e.g. 2025.1-rocky-9-20261203T120000); pass --distro-key")]
    Distro {
        /// The tag.
        tag: String,
    },
}

/// The distribution key of a Kayobe tag: what lies between the release and
/// the datetime, `rocky-9` in `2025.1-rocky-9-20261203T120000`.
pub fn distro_key(tag: &str) -> Result<String, TagsError> {
    let parts: Vec<&str> = tag.split('-').collect();
    let stamp =
        |s: &str| s.len() >= 9 && s.contains('T') && s.starts_with(|c: char| c.is_ascii_digit());
    match parts.as_slice() {
        [_, middle @ .., last] if !middle.is_empty() && stamp(last) => Ok(middle.join("-")),
        _ => Err(TagsError::Distro {
            tag: tag.to_string(),
        }),
    }
}

/// The edit: the file's text before and after.
#[derive(Debug)]
pub struct Edit {
    /// The file.
    pub path: PathBuf,
    /// As it is.
    pub before: String,
    /// With the one value changed.
    pub after: String,
}

/// Computes the edit that sets `kolla_image_tags.<key>.<distro>` to `tag`.
pub fn plan(config_dir: &Path, key: &str, distro: &str, tag: &str) -> Result<Edit, TagsError> {
    let path = config_dir.join(FILE);
    let before = std::fs::read_to_string(&path).map_err(|source| TagsError::Io {
        path: path.clone(),
        source,
    })?;
    let shape = |what: String| TagsError::Shape {
        path: path.clone(),
        what,
        key: key.to_string(),
        distro: distro.to_string(),
    };
    let lines: Vec<&str> = before.split_inclusive('\n').collect();
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let content = |l: &str| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    };
    let top = lines
        .iter()
        .position(|l| l.trim_end().starts_with("kolla_image_tags:") && indent(l) == 0)
        .ok_or_else(|| shape("no `kolla_image_tags:` at the top level".into()))?;
    if !lines[top].trim_end().ends_with(':') {
        return Err(shape("`kolla_image_tags:` is not a block mapping".into()));
    }
    // The block of `kolla_image_tags`: indented lines after it.
    let block_end = (top + 1..lines.len())
        .find(|&i| content(lines[i]) && indent(lines[i]) == 0)
        .unwrap_or(lines.len());
    let key_line = (top + 1..block_end)
        .find(|&i| {
            content(lines[i])
                && lines[i].trim_end() == format!("{}{key}:", " ".repeat(indent(lines[i])))
        })
        .ok_or_else(|| shape(format!("no `{key}:` under `kolla_image_tags:`")))?;
    let key_indent = indent(lines[key_line]);
    let key_end = (key_line + 1..block_end)
        .find(|&i| content(lines[i]) && indent(lines[i]) <= key_indent)
        .unwrap_or(block_end);
    let prefix = format!("{distro}:");
    let value_line = (key_line + 1..key_end)
        .find(|&i| content(lines[i]) && lines[i].trim_start().starts_with(&prefix))
        .ok_or_else(|| shape(format!("no `{distro}:` under `{key}:`")))?;
    let line = lines[value_line];
    let head_len = indent(line) + prefix.len();
    let rest = &line[head_len..];
    let newline = if line.ends_with('\n') { "\n" } else { "" };
    let body = rest.trim_end_matches('\n');
    // Keep a trailing comment and the value's quoting style.
    let (value, comment) = match body.find(" #") {
        Some(i) => (&body[..i], &body[i..]),
        None => (body, ""),
    };
    let value_trim = value.trim();
    if value_trim.is_empty() || value_trim.starts_with(['{', '[', '&', '*', '|', '>']) {
        return Err(shape(format!("`{distro}:` does not hold a plain tag")));
    }
    let quoted = match value_trim.chars().next() {
        Some(q @ ('"' | '\'')) => format!("{q}{tag}{q}"),
        _ => tag.to_string(),
    };
    let lead = &value[..value.len() - value.trim_start().len()];
    let trail = &value[value.trim_end().len()..];
    let new_line = format!(
        "{}{lead}{quoted}{trail}{comment}{newline}",
        &line[..head_len]
    );
    let mut after = String::with_capacity(before.len() + tag.len());
    for (i, l) in lines.iter().enumerate() {
        after.push_str(if i == value_line { &new_line } else { l });
    }
    Ok(Edit {
        path,
        before,
        after,
    })
}

impl Edit {
    /// A unified-style diff of the changed line.
    pub fn diff(&self) -> String {
        let mut out = format!("--- {0}\n+++ {0}\n", self.path.display());
        for (i, (a, b)) in self.before.lines().zip(self.after.lines()).enumerate() {
            if a != b {
                out.push_str(&format!("@@ line {} @@\n-{a}\n+{b}\n", i + 1));
            }
        }
        out
    }

    /// Writes the new text, atomically (a temporary file beside it, then a
    /// rename), keeping the file's permissions.
    pub fn write(&self) -> Result<(), TagsError> {
        let io = |source| TagsError::Io {
            path: self.path.clone(),
            source,
        };
        let perms = std::fs::metadata(&self.path).map_err(io)?.permissions();
        let tmp = self.path.with_extension("yml.ci-builder-tmp");
        std::fs::write(&tmp, &self.after).map_err(io)?;
        std::fs::set_permissions(&tmp, perms).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE_TEXT: &str = "---\n# Dict of Kolla image tags to deploy for each service.\nkolla_image_tags:\n  openstack:\n    rocky-9: 2025.1-rocky-9-20260101T000000  # last good\n    ubuntu-noble: \"2025.1-ubuntu-noble-20260101T000000\"\n  bifrost:\n    rocky-9: 2025.1-rocky-9-20250101T000000\n\nother: 1\n";

    fn write(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), text).unwrap();
        dir
    }

    #[test]
    fn only_the_one_value_changes() {
        let dir = write(FILE_TEXT);
        let tag = "2025.1-rocky-9-20261203T120000";
        let edit = plan(dir.path(), "openstack", &distro_key(tag).unwrap(), tag).unwrap();
        assert_eq!(
            edit.after,
            FILE_TEXT.replace(
                "rocky-9: 2025.1-rocky-9-20260101T000000  # last good",
                "rocky-9: 2025.1-rocky-9-20261203T120000  # last good"
            )
        );
        assert!(edit
            .diff()
            .contains("+    rocky-9: 2025.1-rocky-9-20261203T120000"));
        edit.write().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            edit.after
        );

        let tag = "2025.1-ubuntu-noble-20261203T120000";
        let edit = plan(dir.path(), "openstack", "ubuntu-noble", tag).unwrap();
        assert!(edit
            .after
            .contains("ubuntu-noble: \"2025.1-ubuntu-noble-20261203T120000\"\n"));
        assert!(edit
            .after
            .contains("  bifrost:\n    rocky-9: 2025.1-rocky-9-20250101T000000\n"));
    }

    #[test]
    fn shapes_it_does_not_know_are_refused() {
        for (text, needle) in [
            ("other: 1\n", "no `kolla_image_tags:`"),
            (
                "kolla_image_tags: {openstack: {rocky-9: x}}\n",
                "not a block mapping",
            ),
            (
                "kolla_image_tags:\n  bifrost:\n    rocky-9: x\n",
                "no `openstack:`",
            ),
            (
                "kolla_image_tags:\n  openstack:\n    ubuntu-noble: x\n",
                "no `rocky-9:`",
            ),
            (
                "kolla_image_tags:\n  openstack:\n    rocky-9: *anchor\n",
                "does not hold a plain tag",
            ),
        ] {
            let dir = write(text);
            let err = plan(dir.path(), "openstack", "rocky-9", "t")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("set the tag by hand"), "{err}");
        }
    }

    #[test]
    fn the_distribution_comes_from_the_tag() {
        assert_eq!(
            distro_key("2025.1-rocky-9-20261203T120000").unwrap(),
            "rocky-9"
        );
        assert_eq!(
            distro_key("master-ubuntu-noble-20261203T1200").unwrap(),
            "ubuntu-noble"
        );
        assert!(distro_key("t1").is_err());
        assert!(distro_key("2025.1-20261203T120000").is_err());
    }
}
