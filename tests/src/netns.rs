//! Throwaway network namespaces: every test that touches links makes its
//! own and deletes it on drop, so nothing is created in the machine's own
//! namespace.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates a fresh namespace. Needs root (CI runs as root).
    pub fn new() -> Netns {
        let name = format!(
            "pap-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip (iproute2) is missing");
        assert!(
            out.status.success(),
            "cannot create a network namespace (the tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs a program inside the namespace; what it prints is scanned for
    /// the credentials.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        crate::output(
            Command::new("ip")
                .args(["netns", "exec", &self.name, program])
                .args(args),
        )
    }

    /// Runs `ip ARGS` inside the namespace and insists it succeeds.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = self.run("ip", args);
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -j addr` parsed.
    pub fn addr_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ip(&["-j", "addr"])).unwrap()
    }

    /// Whether this kernel can make dummy interfaces.
    pub fn dummy_supported(&self) -> bool {
        let ok = self
            .run("ip", &["link", "add", "probe0", "type", "dummy"])
            .status
            .success();
        if ok {
            self.ip(&["link", "del", "probe0"]);
        }
        ok
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
