//! Loads the upstream password into a `SecretString`, and nowhere else.
//!
//! Sources, first found wins: `upstream.password_file`; the systemd
//! credential `$CREDENTIALS_DIRECTORY/pulp-password`; the environment
//! variable `PULP_AUTH_PROXY_PASSWORD`. Figment never sees the password:
//! its environment provider ignores that variable (see `load`).

use crate::files::{self, FileError};
use secrecy::SecretString;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The environment variable that may carry the password.
pub const PASSWORD_ENV: &str = "PULP_AUTH_PROXY_PASSWORD";
/// The name of the systemd credential (`LoadCredential=pulp-password:...`).
pub const CREDENTIAL_NAME: &str = "pulp-password";

/// Passwords are short; a larger file is a mistake (a wrong path), and
/// reading it whole would be a memory hazard.
const MAX_PASSWORD_BYTES: u64 = 4096;

/// Where the password came from, for the start-up log line. Never holds the
/// password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `upstream.password_file`.
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/pulp-password`.
    SystemdCredential(PathBuf),
    /// `PULP_AUTH_PROXY_PASSWORD`.
    Environment,
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::File(p) => write!(f, "password file {}", p.display()),
            PasswordSource::SystemdCredential(p) => {
                write!(f, "systemd credential {}", p.display())
            }
            PasswordSource::Environment => write!(f, "environment variable {PASSWORD_ENV}"),
        }
    }
}

impl PasswordSource {
    /// A warning for a source that exposes the password beyond the process:
    /// an environment variable stays readable in `/proc/PID/environ` (to
    /// root and the same user) for the process's whole life, and is
    /// inherited by anything it starts.
    pub fn exposure(&self) -> Option<String> {
        match self {
            PasswordSource::Environment => Some(format!(
                "the password comes from {PASSWORD_ENV}, which stays readable in \
                 /proc/{}/environ for as long as this process runs; use \
                 upstream.password_file (mode 0600) or the systemd credential \
                 `{CREDENTIAL_NAME}` (LoadCredential=) instead",
                std::process::id()
            )),
            PasswordSource::File(_) | PasswordSource::SystemdCredential(_) => None,
        }
    }
}

/// Why the password could not be loaded. No variant can hold password
/// bytes: messages name the source and the fix only.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// No source had a password.
    #[error(
        "no password found: set upstream.password_file to a file of mode 0600, \
         deliver the systemd credential `{CREDENTIAL_NAME}` (LoadCredential=), \
         or set {PASSWORD_ENV}"
    )]
    Missing,
    /// A file could not be opened or read.
    #[error("cannot read {source_name}: {error}")]
    Unreadable {
        /// Which source.
        source_name: PasswordSource,
        /// The I/O error (it never contains file content).
        error: std::io::Error,
    },
    /// A FIFO, device, socket or directory where the password file should be.
    #[error("{source_name} is a {kind}, not a regular file; put the password in a regular file of mode 0600")]
    NotRegular {
        /// Which source.
        source_name: PasswordSource,
        /// What it is instead.
        kind: &'static str,
    },
    /// A password file others may read.
    #[error(
        "{source_name} has mode {mode:04o}, so group or others can access it; \
         run `chmod 600 {path}`",
        path = .path.display()
    )]
    LoosePermissions {
        /// Which source.
        source_name: PasswordSource,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Empty after stripping one trailing newline.
    #[error("{0} is empty; put the password in it (one trailing newline is allowed)")]
    Empty(PasswordSource),
    /// Larger than any password.
    #[error("{0} is larger than {MAX_PASSWORD_BYTES} bytes; is it the right file?")]
    TooLarge(PasswordSource),
    /// Not UTF-8.
    #[error("{0} is not valid UTF-8 text")]
    NotUtf8(PasswordSource),
    /// A `\r` or `\n` inside the password: a wrong file, or a second line.
    #[error("{0} has more than one line; the file must hold only the password")]
    MultiLine(PasswordSource),
}

/// Loads the password. `env` looks up environment variables; the binaries
/// pass `std::env::var_os`, tests pass a map.
pub fn load_password(
    password_file: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<(SecretString, PasswordSource), CredentialError> {
    if let Some(path) = password_file {
        let source = PasswordSource::File(path.to_path_buf());
        return read_file(path, &source).map(|p| (p, source));
    }
    if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join(CREDENTIAL_NAME);
        if path.exists() {
            let source = PasswordSource::SystemdCredential(path.clone());
            return read_file(&path, &source).map(|p| (p, source));
        }
    }
    if let Some(value) = env(PASSWORD_ENV) {
        let source = PasswordSource::Environment;
        let text = value
            .into_string()
            .map_err(|_| CredentialError::NotUtf8(source.clone()))?;
        return check(text, &source).map(|p| (p, source));
    }
    Err(CredentialError::Missing)
}

fn read_file(path: &Path, source: &PasswordSource) -> Result<SecretString, CredentialError> {
    let unreadable = |error| CredentialError::Unreadable {
        source_name: source.clone(),
        error,
    };
    let (file, meta) = files::open_regular(path).map_err(|e| match e {
        FileError::NotRegular { kind, .. } => CredentialError::NotRegular {
            source_name: source.clone(),
            kind,
        },
        FileError::Io { source: error, .. } => unreadable(error),
        other => unreadable(std::io::Error::other(other.to_string())),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialError::LoosePermissions {
            source_name: source.clone(),
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = Vec::with_capacity(256);
    file.take(MAX_PASSWORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_PASSWORD_BYTES {
        zero(&mut bytes);
        return Err(CredentialError::TooLarge(source.clone()));
    }
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let mut bytes = e.into_bytes();
        zero(&mut bytes);
        CredentialError::NotUtf8(source.clone())
    })?;
    check(text, source)
}

/// Moves `text` into a secret first, so every early return wipes it.
fn check(text: String, source: &PasswordSource) -> Result<SecretString, CredentialError> {
    use secrecy::ExposeSecret;
    let secret = SecretString::from(text);
    let s = secret.expose_secret();
    if s.is_empty() {
        return Err(CredentialError::Empty(source.clone()));
    }
    if s.contains(['\r', '\n']) {
        return Err(CredentialError::MultiLine(source.clone()));
    }
    Ok(secret)
}

fn zero(bytes: &mut [u8]) {
    // Best effort for the error paths; the success path is wiped by
    // SecretString on drop.
    for b in bytes.iter_mut() {
        *b = 0;
    }
    std::hint::black_box(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;
    use std::io::Write;

    const FAKE: &str = "fake pass:@/%+ word";

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn write_secret(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn file_wins_and_one_newline_is_stripped() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_secret(dir.path(), "pw", format!("{FAKE}\n").as_bytes(), 0o600);
        let (pw, src) = load_password(Some(&path), env_of(&[(PASSWORD_ENV, "other")])).unwrap();
        assert_eq!(pw.expose_secret(), FAKE);
        assert_eq!(src, PasswordSource::File(path));
    }

    #[test]
    fn crlf_is_stripped_but_spaces_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_secret(dir.path(), "pw", b" x \r\n", 0o400);
        let (pw, _) = load_password(Some(&path), env_of(&[])).unwrap();
        assert_eq!(pw.expose_secret(), " x ");
    }

    #[test]
    fn second_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_secret(dir.path(), "pw", b"a\n\n", 0o600);
        let err = load_password(Some(&path), env_of(&[])).unwrap_err();
        assert!(matches!(err, CredentialError::MultiLine(_)), "{err}");
    }

    #[test]
    fn fifo_password_file_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let err = load_password(Some(&path), env_of(&[])).unwrap_err();
        assert!(
            matches!(err, CredentialError::NotRegular { kind: "FIFO", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn device_password_file_is_refused() {
        let err = load_password(Some(Path::new("/dev/zero")), env_of(&[])).unwrap_err();
        assert!(
            matches!(err, CredentialError::NotRegular { kind: "device", .. }),
            "{err}"
        );
    }

    #[test]
    fn only_the_environment_source_carries_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_secret(dir.path(), "pw", FAKE.as_bytes(), 0o600);
        let (_, file) = load_password(Some(&path), env_of(&[])).unwrap();
        assert_eq!(file.exposure(), None);
        let (_, env) = load_password(None, env_of(&[(PASSWORD_ENV, FAKE)])).unwrap();
        let warning = env.exposure().unwrap();
        assert!(
            warning.contains("/proc/") && warning.contains("password_file"),
            "{warning}"
        );
        assert!(warning.contains("LoadCredential="), "{warning}");
        assert!(!warning.contains(FAKE), "{warning}");
    }

    #[test]
    fn loose_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_secret(dir.path(), "pw", FAKE.as_bytes(), 0o640);
        let err = load_password(Some(&path), env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode 0640"), "{err}");
        assert!(
            err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
        assert!(!err.contains(FAKE));
    }

    #[test]
    fn empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_secret(dir.path(), "pw", b"\n", 0o600);
        let err = load_password(Some(&path), env_of(&[])).unwrap_err();
        assert!(matches!(err, CredentialError::Empty(_)), "{err}");
    }

    #[test]
    fn configured_file_missing_does_not_fall_through() {
        let err = load_password(
            Some(Path::new("/nonexistent/pw")),
            env_of(&[(PASSWORD_ENV, FAKE)]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pw"), "{err}");
    }

    #[test]
    fn systemd_credential_before_environment() {
        let dir = tempfile::tempdir().unwrap();
        write_secret(dir.path(), CREDENTIAL_NAME, b"cred\n", 0o400);
        let env = env_of(&[
            ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
            (PASSWORD_ENV, "from-env"),
        ]);
        let (pw, src) = load_password(None, env).unwrap();
        assert_eq!(pw.expose_secret(), "cred");
        assert!(matches!(src, PasswordSource::SystemdCredential(_)));
    }

    #[test]
    fn environment_is_last_and_taken_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_of(&[
            ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
            (PASSWORD_ENV, FAKE),
        ]);
        let (pw, src) = load_password(None, env).unwrap();
        assert_eq!(pw.expose_secret(), FAKE);
        assert_eq!(src, PasswordSource::Environment);
    }

    #[test]
    fn nothing_found_names_every_source() {
        let err = load_password(None, env_of(&[])).unwrap_err().to_string();
        for needle in ["password_file", CREDENTIAL_NAME, PASSWORD_ENV] {
            assert!(err.contains(needle), "{err}");
        }
    }
}
