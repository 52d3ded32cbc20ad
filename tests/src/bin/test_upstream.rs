//! The test upstream as a process of its own, for tests that need it
//! inside a network namespace: an HTTPS Pulp stand-in with a fresh test CA,
//! requiring the test credentials, serving a directory; with `storage`,
//! redirecting every content request to an object-storage stand-in on
//! `localhost` (see `e2e::storage`).
//!
//!     test-upstream LISTEN_ADDR CA_OUT_PEM DIR URL_PREFIX [storage]

use e2e::pki::TestCa;
use e2e::upstream::{Upstream, Versions};
use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, ca_out, dir, prefix, storage) = match args.as_slice() {
        [_, l, c, d, p] => (l, c, d, p, false),
        [_, l, c, d, p, s] if s == "storage" => (l, c, d, p, true),
        _ => {
            eprintln!("usage: test-upstream LISTEN_ADDR CA_OUT_PEM DIR URL_PREFIX [storage]");
            std::process::exit(2);
        }
    };
    let ca = TestCa::new();
    ca.write_pem(std::path::Path::new(ca_out));
    let upstream = Upstream::start_on(
        listen.parse().expect("LISTEN_ADDR"),
        ca.leaf(),
        Versions::Both,
    )
    .await;
    upstream.serve_dir(prefix, std::path::Path::new(dir));
    // Kept until the process ends.
    let _storage = match storage {
        true => Some(upstream.with_storage(ca.leaf()).await),
        false => None,
    };
    println!("listening {}", upstream.addr);
    std::io::stdout().flush().unwrap();
    std::future::pending::<()>().await;
}
