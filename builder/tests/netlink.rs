//! The netlink facade's verbs against the real kernel, inside a network
//! namespace made for the test: the test re-runs itself under
//! `ip netns exec`, so nothing touches the machine's own namespace.
//! Enslaving is shown with a veth port, which every kernel offers; dummy
//! creation is checked to succeed or to report "unsupported" as such.

use ci_builder::net::netlink::{Kind, LinkKind, Netlink};
use std::process::Command;

/// Names of the namespaces this test makes start with this.
const NS_PREFIX: &str = "cib-";

/// Whether this process already runs in one of the test's namespaces:
/// asked of `ip netns identify`, so the test needs no marker in its
/// environment.
fn inside() -> bool {
    let out = Command::new("ip")
        .args(["netns", "identify"])
        .output()
        .expect("ip (iproute2) is missing");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .any(|name| name.starts_with(NS_PREFIX))
}

fn in_fresh_netns(test: &str) -> bool {
    if inside() {
        return true;
    }
    let ns = format!("{NS_PREFIX}{}", std::process::id());
    let add = Command::new("ip")
        .args(["netns", "add", &ns])
        .output()
        .expect("ip (iproute2) is missing");
    assert!(
        add.status.success(),
        "cannot create a network namespace (needs root): {}",
        String::from_utf8_lossy(&add.stderr)
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .output()
        .unwrap();
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && log.contains("1 passed"),
        "inside the namespace:\n{log}"
    );
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn facade_verbs() {
    if !in_fresh_netns("facade_verbs") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let nl = Netlink::connect().unwrap();
        nl.create("br-t", Kind::Bridge).await.unwrap();
        ip(&[
            "link", "add", "port-t", "type", "veth", "peer", "name", "peer-t",
        ]);
        let links = nl.links().await.unwrap();
        let br = links.iter().find(|l| l.name == "br-t").unwrap().clone();
        let port = links.iter().find(|l| l.name == "port-t").unwrap().clone();
        assert_eq!(br.kind, Some(LinkKind::Known(Kind::Bridge)));
        assert!(br.is(Kind::Bridge) && !br.is(Kind::Dummy));
        assert_eq!(port.kind, Some(LinkKind::Other("veth".into())));
        assert!(!port.is(Kind::Bridge));
        assert!(!br.up && port.master.is_none());

        nl.set_master(port.index, br.index, "port-t").await.unwrap();
        nl.set_up(br.index, "br-t").await.unwrap();
        nl.add_address(br.index, "192.168.33.3/24".parse().unwrap(), "br-t")
            .await
            .unwrap();
        let links = nl.links().await.unwrap();
        let port = links.iter().find(|l| l.name == "port-t").unwrap();
        assert_eq!(port.master, Some(br.index), "veth not enslaved");
        assert!(links.iter().find(|l| l.name == "br-t").unwrap().up);
        let addrs = nl.addresses().await.unwrap();
        assert!(addrs
            .iter()
            .any(|a| a.index == br.index && a.net.to_string() == "192.168.33.3/24"));

        match nl.create("dummy-t", Kind::Dummy).await {
            Ok(()) => eprintln!("dummy interfaces: supported"),
            Err(e) => {
                assert!(e.is_unsupported(), "dummy creation failed otherwise: {e}");
                eprintln!("dummy interfaces: unsupported by this kernel");
            }
        }
        nl.delete(br.index, "br-t").await.unwrap();
        assert!(!nl.links().await.unwrap().iter().any(|l| l.name == "br-t"));
    });
}
