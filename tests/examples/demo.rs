//! The one-command demo (run by `tests/demo`): a Pulp stand-in that
//! requires credentials, pulp-auth-proxy in front of it, a real image build
//! that installs packages through the proxy, and the audit's verdict.
//! `--bridge` runs the bridge deployment in a network namespace instead;
//! `--keep` keeps the built image and the working directory.

use e2e::apt::{self, dockerfile, REPO_PREFIX};
use e2e::docker::Image;
use e2e::netns::Netns;
use e2e::proxy::{Proxy, Scratch};
use e2e::upstream::{Upstream, Versions};
use e2e::{pki, USERNAME};
use std::process::Command;

fn say(step: &str) {
    println!("\n== {step}");
}

fn access_lines(log: &str) {
    for line in log.lines().filter(|l| l.contains(" access: ")) {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap_or("-")
                .to_string()
        };
        println!(
            "   proxy: {} {} -> {} ({} bytes, {} ms)",
            field("method="),
            field("path="),
            field("status="),
            field("bytes="),
            field("duration_ms=")
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bridge = args.iter().any(|a| a == "--bridge");
    let keep = args.iter().any(|a| a == "--keep");
    if args.iter().any(|a| a != "--bridge" && a != "--keep") {
        eprintln!("usage: demo [--bridge] [--keep]");
        std::process::exit(2);
    }
    say("Preparing a real APT repository (hello, tree, jq) and a Debian bookworm base image (cached after the first run)");
    let repo = apt::repo();
    let scratch = Scratch::new();
    println!("   repository: {}", repo.display());
    println!(
        "   credentials: user {USERNAME}, a fake password in {} (mode 0600)",
        scratch.path("pw").display()
    );
    if bridge {
        bridge_demo(&repo, &scratch);
    } else {
        loopback_demo(&repo, &scratch, keep);
    }
    if keep {
        let dir = scratch.dir.keep();
        println!("\n(kept: working directory {})", dir.display());
    } else {
        println!("\nDone; nothing left behind (pass --keep to keep the image and the working directory).");
    }
}

fn loopback_demo(repo: &std::path::Path, scratch: &Scratch, keep: bool) {
    let base = apt::base_image();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = pki::TestCa::new();
    let upstream = rt.block_on(Upstream::start(ca.leaf(), Versions::Both));
    upstream.serve_dir(REPO_PREFIX, repo);
    ca.write_pem(&scratch.path("ca.pem"));
    say(&format!(
        "Pulp stand-in at {} (HTTPS, test CA; answers 401 without the credentials)",
        upstream.url()
    ));
    let cfg = scratch.write_config(&e2e::proxy::config(
        &upstream.url(),
        &scratch.path("ca.pem"),
        &scratch.path("pw"),
    ));
    let proxy = Proxy::start(&cfg, &[("RUST_LOG", "info")]);
    say(&format!(
        "pulp-auth-proxy listens on {} only (loopback), forwarding to {}",
        proxy.url(),
        upstream.url()
    ));

    let tag = format!("pap-demo:{}", std::process::id());
    say(&format!(
        "docker build --network host -t {tag}: apt-get install hello tree jq from {}{REPO_PREFIX}",
        proxy.url()
    ));
    let image = Image::try_build(&tag, &dockerfile(base, &proxy.url()), &[], &[])
        .unwrap_or_else(|log| panic!("the build failed:\n{log}"));
    access_lines(&proxy.log_text());
    let sent = upstream.requests();
    println!(
        "   the upstream saw {} requests, every one with the proxy's Authorization header: {}",
        sent.len(),
        sent.iter()
            .all(|r| r.header("authorization") == vec![e2e::basic_header()])
    );

    say(&format!("ci-builder audit {tag}"));
    let out = Command::new(e2e::bin("ci-builder"))
        .arg("--config")
        .arg(&cfg)
        .args(["audit", &tag])
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("   {line}");
    }
    println!(
        "   verdict: {}",
        match out.status.code() {
            Some(0) => "no credential in any layer, history entry or config",
            Some(1) => "the credentials leaked",
            _ => "the audit failed",
        }
    );
    if keep {
        std::mem::forget(image);
        println!("(kept: image {tag})");
    }
}

fn bridge_demo(repo: &std::path::Path, scratch: &Scratch) {
    let rootfs = apt::rootfs_copy();
    let ns = Netns::new();
    say(&format!(
        "Network namespace {} stands in for the build host",
        ns.name
    ));
    let (upstream, up_addr) = apt::upstream_in(&ns, &scratch.path("ca.pem"), repo, false);
    println!("   Pulp stand-in at https://{up_addr} inside the namespace");
    let cfg = scratch.write_config(&apt::bridge_config(
        &up_addr,
        &scratch.path("pw"),
        &scratch.path("ca.pem"),
        "",
    ));
    let builder = e2e::bin("ci-builder");
    say("ci-builder net up");
    let out = ns.run(
        builder.to_str().unwrap(),
        &["--config", cfg.to_str().unwrap(), "net", "up"],
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("   {line}");
    }
    print!("{}", String::from_utf8_lossy(&out.stderr));
    let proxy = Proxy::start_in(Some(&ns.name), &cfg, &[("RUST_LOG", "info")]);
    say(&format!(
        "pulp-auth-proxy listens on {} (on breth1 only)",
        proxy.url()
    ));
    let root = rootfs.path().to_str().unwrap().to_string();
    std::fs::write(
        rootfs.path().join("etc/apt/sources.list"),
        format!("deb [trusted=yes] http://192.168.33.3{REPO_PREFIX} stable main\n"),
    )
    .unwrap();
    say("chroot <debian bookworm> apt-get update && apt-get install hello jq, in the namespace");
    for args in [
        vec![root.as_str(), "apt-get", "-qq", "update"],
        vec![
            root.as_str(),
            "apt-get",
            "-qq",
            "install",
            "-y",
            "--no-install-recommends",
            "hello",
            "jq",
        ],
        vec![root.as_str(), "hello"],
    ] {
        let out = ns.run("chroot", &args);
        if !out.status.success() {
            panic!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        if args[1] == "hello" {
            println!(
                "   hello says: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
    }
    access_lines(&proxy.log_text());
    drop(proxy);
    drop(upstream);
    say("ci-builder net down");
    let out = ns.run(
        builder.to_str().unwrap(),
        &["--config", cfg.to_str().unwrap(), "net", "down"],
    );
    print!("   {}", String::from_utf8_lossy(&out.stdout));
}
