//! Stage one: the file and environment as written, before any checks.
//!
//! Every struct refuses unknown keys so that a typo is reported instead of
//! silently falling back to a default. Nothing here may hold the password:
//! a `password` key is refused by name before these types are ever
//! deserialised (see `load.rs`), because deserialisation errors quote values.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub network: Option<RawNetwork>,
    pub proxy: Option<RawProxy>,
    pub upstream: Option<RawUpstream>,
    pub build: Option<RawBuild>,
    pub cache: Option<RawCache>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    pub bridge: Option<String>,
    pub address: String,
    #[serde(default)]
    pub ports: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    pub listen: String,
    pub interface: Option<String>,
    pub allowed_clients: Option<Vec<String>>,
    pub allowed_paths: Option<Vec<String>>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub metrics_listen: Option<String>,
    pub max_connections: Option<u32>,
    pub max_connections_per_client: Option<u32>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_url_bytes: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub send_timeout_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub readiness_cache_secs: Option<u64>,
    pub fetch_records: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub url: String,
    pub username: String,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_plaintext: bool,
    pub connect_timeout_secs: Option<u64>,
    pub response_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub max_redirects: Option<u32>,
    pub redirect_hosts: Option<Vec<String>>,
    pub readiness_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuild {
    pub tool: Option<String>,
    pub kayobe: Option<String>,
    pub kolla_build: Option<String>,
    pub kolla_config: Option<PathBuf>,
    pub template_override: Option<PathBuf>,
    pub mirrors: Option<std::collections::BTreeMap<String, String>>,
    pub kayobe_config_path: Option<PathBuf>,
    pub environment: Option<String>,
    pub distro: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub dir: PathBuf,
    pub max_size: RawSize,
}

/// `max_size = 10737418240` or `max_size = "10 GiB"`; environment
/// overrides arrive as either.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSize {
    Bytes(u64),
    Text(String),
}
