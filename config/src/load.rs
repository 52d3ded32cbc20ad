//! Stage one: the TOML file, then `PULP_AUTH_PROXY_*` overrides, into the
//! raw structs. The environment is a value the caller passes (the binaries
//! pass `std::env::vars_os()`), so nothing here reads the process
//! environment and tests can give each load its own.

use crate::error::ConfigError;
use crate::files::{self, FileError};
use crate::raw::RawConfig;
use crate::ENV_PREFIX;
use figment::providers::Serialized;
use figment::value::Value;
use figment::Figment;
use std::ffi::OsStr;
use std::path::Path;

/// A configuration is a few kilobytes; a larger file is a wrong path.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// One `PULP_AUTH_PROXY_*` variable as a dotted key and its value.
struct Override {
    var: String,
    key: String,
    value: String,
}

/// Reads `path` and applies `env`'s overrides; a `password` key anywhere is
/// refused by name before anything is type-checked.
pub(crate) fn raw<K, V>(
    path: &Path,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<RawConfig, ConfigError>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let bytes = files::read_protected(path, MAX_CONFIG_BYTES).map_err(|e| match e {
        FileError::Io { path, source } => ConfigError::Read { path, source },
        other => ConfigError::Unsafe(other),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((0, 0));
        ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.message().trim().to_string(),
            line,
            column,
        }
    })?;
    let file_origin = format!("config file {}", path.display());
    if let Some(key) = password_key(&table, "") {
        return Err(ConfigError::PasswordKey {
            key,
            origin: file_origin,
        });
    }

    let overrides = overrides(env);
    if let Some(o) = overrides
        .iter()
        .find(|o| o.key.split('.').any(|s| s.eq_ignore_ascii_case("password")))
    {
        return Err(ConfigError::PasswordKey {
            key: o.key.clone(),
            origin: format!("environment variable {}", o.var),
        });
    }

    let figment = overrides
        .into_iter()
        .fold(Figment::from(Serialized::defaults(table)), |f, o| {
            let value = override_value(&o.value);
            f.merge(Serialized::default(&o.key, value))
        });
    figment.extract().map_err(|e| ConfigError::Schema {
        origin: file_origin,
        problems: schema_problems(e),
    })
}

/// An override's value as figment's `Env` reads it (`"true"` a bool, `"5"`
/// a number, `[..]` an array, ...), except text with both a `\` and a
/// non-ASCII character, which is taken as the literal string: figment
/// 0.10's unescaping indexes bytes by character count and panics on it.
fn override_value(text: &str) -> Value {
    if text.contains('\\') && !text.is_ascii() {
        return Value::from(text.to_string());
    }
    text.parse().unwrap_or_else(|e| match e {})
}

/// The overrides in `env`, as figment's `Env::prefixed(..).split("__")`
/// reads them: prefix matched without case, keys lowercased, `__` nesting,
/// keys with an empty segment skipped. `PULP_AUTH_PROXY_PASSWORD` is the
/// credential loader's alone and is left out here.
fn overrides<K, V>(env: impl IntoIterator<Item = (K, V)>) -> Vec<Override>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut out = Vec::new();
    for (k, v) in env {
        let var = k.as_ref().to_string_lossy().trim().to_string();
        let Some(rest) = var
            .get(..ENV_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
            .map(|_| &var[ENV_PREFIX.len()..])
        else {
            continue;
        };
        if rest.eq_ignore_ascii_case("PASSWORD") {
            continue;
        }
        let key = rest.replace("__", ".").trim().to_ascii_lowercase();
        if key.split('.').any(str::is_empty) {
            continue;
        }
        out.push(Override {
            key,
            value: v.as_ref().to_string_lossy().into_owned(),
            var,
        });
    }
    out
}

/// The first key named `password` (in any case) at any depth.
fn password_key(table: &toml::Table, prefix: &str) -> Option<String> {
    table.iter().find_map(|(k, v)| {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if k.eq_ignore_ascii_case("password") {
            return Some(key);
        }
        match v {
            toml::Value::Table(inner) => password_key(inner, &key),
            _ => None,
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

fn schema_problems(errors: figment::Error) -> String {
    errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            if key.is_empty() {
                e.kind.to_string()
            } else {
                format!("{key}: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
