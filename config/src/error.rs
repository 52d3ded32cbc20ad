//! Why the configuration could not be loaded. Messages name the file and
//! key and say what to do; none quotes the password.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `proxy.listen`.
    pub key: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}; pass --config FILE or create it (see config/example.toml)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not one the loader may trust (see `files`).
    #[error("config file {0}")]
    Unsafe(crate::files::FileError),
    /// The file is not UTF-8 text.
    #[error("config file {} is not UTF-8 text; save it as UTF-8", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The file is not TOML. Only the parser's message and position are
    /// kept, never the offending line, which might hold a password.
    #[error("config file {} is not valid TOML: {message} (line {line}, column {column})", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A `password` key: the password does not belong in the configuration.
    #[error(
        "{origin}: the key `{key}` is not allowed, the password must not live in the \
         configuration; put it in a file of mode 0600 named by upstream.password_file, \
         deliver it as the systemd credential `pulp-password`, or set PULP_AUTH_PROXY_PASSWORD"
    )]
    PasswordKey {
        /// The dotted key.
        key: String,
        /// `config file X` or `environment variable Y`.
        origin: String,
    },
    /// A value has the wrong type or a key is unknown.
    #[error("{origin}: {problems}")]
    Schema {
        /// The file.
        origin: String,
        /// One line per problem.
        problems: String,
    },
    /// Values that parse but are not acceptable.
    #[error("invalid configuration in {}:\n{}", path.display(), list(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// A section the running command needs is absent.
    #[error("{} has no [{section}] section; {hint}", path.display())]
    MissingSection {
        /// The file.
        path: PathBuf,
        /// The section name.
        section: &'static str,
        /// What to add.
        hint: &'static str,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}
