//! The test upstream as a process of its own, for tests that need it
//! inside a network namespace: an HTTPS Pulp stand-in with a fresh test CA,
//! requiring the test credentials, serving a directory.
//!
//!     test-upstream LISTEN_ADDR CA_OUT_PEM DIR URL_PREFIX

use e2e::pki::TestCa;
use e2e::upstream::{Upstream, Versions};
use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, ca_out, dir, prefix] = args.as_slice() else {
        eprintln!("usage: test-upstream LISTEN_ADDR CA_OUT_PEM DIR URL_PREFIX");
        std::process::exit(2);
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
    println!("listening {}", upstream.addr);
    std::io::stdout().flush().unwrap();
    std::future::pending::<()>().await;
}
