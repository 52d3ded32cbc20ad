//! Test support for the end-to-end suite: a certificate authority made per
//! run, a recording HTTPS upstream that checks the exact Basic header, the
//! real `pulp-auth-proxy` binary run as a child, a plain HTTP client, and a
//! leak scanner that every test ends with.

pub mod apt;
pub mod client;
pub mod docker;
pub mod leak;
pub mod netns;
pub mod pki;
pub mod proxy;
pub mod upstream;

/// The test credentials. The password is obviously fake and holds every
/// character that changes under some encoding (`:`, `@`, `/`, `%`, `+`,
/// space), so encoding bugs and leaks show up in any form.
pub const USERNAME: &str = "ci-user";
/// See [`USERNAME`].
pub const PASSWORD: &str = "fake pass:@/%+ word";

/// The `Authorization` value the upstream requires.
pub fn basic_header() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{PASSWORD}"))
    )
}

/// Where cargo put the workspace's binaries, next to this test executable.
pub fn bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// A trusted upstream and a proxy in front of it, the usual test set-up.
pub struct Setup {
    /// The recording upstream.
    pub upstream: upstream::Upstream,
    /// Config, password file and logs.
    pub scratch: proxy::Scratch,
    /// The running proxy.
    pub proxy: proxy::Proxy,
    /// Every response body a test wants leak-checked.
    pub seen: std::sync::Mutex<Vec<u8>>,
}

impl Setup {
    /// The default: upstream with TLS 1.2 and 1.3, proxy with defaults.
    pub async fn start() -> Setup {
        Self::start_with(upstream::Versions::Both, "", |c| c).await
    }

    /// With `prefix` appended to the upstream URL and `edit` applied to the
    /// config text.
    pub async fn start_with(
        versions: upstream::Versions,
        prefix: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Setup {
        let ca = pki::TestCa::new();
        let upstream = upstream::Upstream::start(ca.leaf(), versions).await;
        let scratch = proxy::Scratch::new();
        ca.write_pem(&scratch.path("ca.pem"));
        let text = proxy::config(
            &format!("{}{prefix}", upstream.url()),
            &scratch.path("ca.pem"),
            &scratch.path("pw"),
        );
        let config = scratch.write_config(&edit(text));
        let proxy = tokio::task::spawn_blocking(move || proxy::Proxy::start(&config, &[]))
            .await
            .unwrap();
        Setup {
            upstream,
            scratch,
            proxy,
            seen: Default::default(),
        }
    }

    /// Remembers a response for the final leak check.
    pub fn saw(&self, got: &client::Got) {
        let mut seen = self.seen.lock().unwrap();
        seen.extend_from_slice(format!("{:?}", got.headers).as_bytes());
        seen.extend_from_slice(&got.body);
    }

    /// The end of every test: no credential in any response or log line.
    pub fn assert_no_leaks(&self) {
        leak::assert_clean("a response", &self.seen.lock().unwrap());
        leak::assert_clean("the proxy's log", self.proxy.log_text().as_bytes());
    }
}

/// A config edit that adds `keys` (TOML lines) to the `[proxy]` section.
pub fn proxy_keys(keys: &str) -> impl FnOnce(String) -> String + '_ {
    move |c| c.replacen("[proxy]\n", &format!("[proxy]\n{keys}\n"), 1)
}

/// A config edit that adds `keys` (TOML lines) to the `[upstream]` section.
pub fn upstream_keys(keys: &str) -> impl FnOnce(String) -> String + '_ {
    move |c| c.replacen("[upstream]\n", &format!("[upstream]\n{keys}\n"), 1)
}

/// A config edit that turns the cache on in `dir`, bounded by `max_size`.
pub fn cache_section(dir: &std::path::Path, max_size: &str) -> impl FnOnce(String) -> String {
    let section = format!(
        "\n[cache]\ndir = \"{}\"\nmax_size = \"{max_size}\"\n",
        dir.display()
    );
    move |c| c + &section
}

/// The value of one series (`name{labels}` exactly) in a Prometheus text
/// exposition; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
        .unwrap_or(0.0)
}

/// The status code of the first response in raw response bytes.
pub fn first_status(raw: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(raw.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// How many responses raw response bytes hold.
pub fn count_responses(raw: &[u8]) -> usize {
    raw.windows(9).filter(|w| w == b"HTTP/1.1 ").count()
}

/// A child process killed and reaped on drop, also when a test panics.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
