//! `net persist`: systemd-networkd files that recreate the bridge at boot.
//! Every file is checked before any is written, so a refusal changes
//! nothing; each is written to a temporary name and renamed into place.

use crate::error::BuilderError;
use pulp_auth_config::Network;
use std::path::{Path, PathBuf};

/// The files for `[network]`, as (file name, content), in write order.
pub fn files(net: &Network) -> Vec<(String, String)> {
    let bridge = net.bridge.as_str();
    let header = "# Written by `ci-builder net persist`; the bridge pulp-auth-proxy listens on.\n";
    let mut out = vec![
        (
            format!("50-{bridge}.netdev"),
            format!("{header}[NetDev]\nName={bridge}\nKind=bridge\n"),
        ),
        (
            format!("50-{bridge}.network"),
            format!(
                "{header}[Match]\nName={bridge}\n\n[Network]\nAddress={}\nConfigureWithoutCarrier=yes\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n[Link]\nRequiredForOnline=no\n",
                net.address
            ),
        ),
    ];
    for port in &net.ports {
        let port = port.as_str();
        out.push((
            format!("50-{port}.netdev"),
            format!("{header}[NetDev]\nName={port}\nKind=dummy\n"),
        ));
        out.push((
            format!("50-{port}.network"),
            format!("{header}[Match]\nName={port}\n\n[Network]\nBridge={bridge}\n\n[Link]\nRequiredForOnline=no\n"),
        ));
    }
    out
}

/// What happened to each file.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Did not exist.
    Written(PathBuf),
    /// Existed with the same content.
    Unchanged(PathBuf),
    /// Existed with other content; replaced because of `--force`.
    Replaced(PathBuf),
}

/// Writes the files into `dir`. Files with other content are refused unless
/// `force`.
pub fn write(net: &Network, dir: &Path, force: bool) -> Result<Vec<Outcome>, BuilderError> {
    if !dir.is_dir() {
        return Err(BuilderError::NotADirectory(dir.to_path_buf()));
    }
    let planned: Vec<_> = files(net)
        .into_iter()
        .map(|(name, content)| (dir.join(name), content))
        .collect();
    let mut clashes = Vec::new();
    for (path, content) in &planned {
        match std::fs::read_to_string(path) {
            Ok(existing) if existing != *content && !force => clashes.push(path.clone()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read", path)(e)),
        }
    }
    if !clashes.is_empty() {
        return Err(BuilderError::Exists(clashes));
    }
    let mut out = Vec::new();
    for (path, content) in planned {
        let existing = std::fs::read_to_string(&path).ok();
        if existing.as_deref() == Some(content.as_str()) {
            out.push(Outcome::Unchanged(path));
            continue;
        }
        let tmp = path.with_extension("tmp-ci-builder");
        std::fs::write(&tmp, &content).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename a temporary file to", &path))?;
        out.push(if existing.is_some() {
            Outcome::Replaced(path)
        } else {
            Outcome::Written(path)
        });
    }
    Ok(out)
}

/// The error for a failed `action` on `path`, for `map_err`.
fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BuilderError + 'a {
    move |source| BuilderError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
