//! The benchmark that matters to a build: the package-manager workload of
//! the real-Pulp tier against Pulp on S3 (every content request redirected
//! to a presigned URL on the object store), repeated N times, through
//! three front ends in turn:
//!
//!   nginx-deployed   nginx as the existing Ansible role configures it:
//!                    `proxy_pass`, `Host`, `Authorization`,
//!                    `proxy_ssl_server_name on`, TLS 1.2 only, no
//!                    verification. Pulp's redirects pass through to the
//!                    client, which fetches from the object store itself.
//!   proxy            pulp-auth-proxy without cache, following redirects
//!   proxy-cache      pulp-auth-proxy with its cache, one cache for all N
//!
//! One repetition is what one image build asks of its package manager: a
//! `docker build --no-cache` running apt-get update and install, and a dnf
//! install into a fresh root. A Kolla build has about 100 such steps.
//! Front ends alternate within each repetition, so drift falls on all
//! alike. Reported: wall time, bytes from Pulp and from the object store
//! (on the wire, TLS included), and the front end's CPU, with ratios
//! against nginx-deployed.
//!
//!     cargo build --release --workspace --bins
//!     tests/bench/build-through-pulp.sh [N, default 10]

use e2e::docker::{ensure_daemon, Image};
use e2e::pki::TestCa;
use e2e::proxy::{Proxy, Scratch};
use e2e::pulp::{Content, Pulp, Storage};
use e2e::{apt, rpm, KillOnDrop};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map(|a| {
            a.parse().unwrap_or_else(|_| {
                eprintln!("pulp_build: the argument is the number of repetitions, not {a:?}");
                std::process::exit(2)
            })
        })
        .unwrap_or(10);
    let deb_repo = apt::repo();
    let rpm_repo = rpm::repo();
    let ca = TestCa::new();
    let pulp = Pulp::start(
        &ca,
        Storage::S3,
        Content {
            deb: Some(&deb_repo),
            rpm: Some(&rpm_repo),
            netns: None,
            mirrors: &[],
        },
    );
    ensure_daemon();
    let base = apt::base_image();
    let scratch = Scratch::new();

    let nginx = Nginx::start(&pulp, &scratch);
    // Info, as a unit runs it: the tests' trace level would charge the
    // proxy for logging no operator asks for.
    let env = [("RUST_LOG", "info")];
    let config = pulp.proxy_config(&scratch.path("pw"), None);
    let proxy = Proxy::start(&scratch.write_config(&config), &env);
    // Its own directory: a proxy's log sits beside its config.
    let cached_scratch = Scratch::new();
    let config = pulp.proxy_config(
        &cached_scratch.path("pw"),
        Some(&cached_scratch.path("cache")),
    );
    let cached = Proxy::start(&cached_scratch.write_config(&config), &env);

    let ca_pem = std::fs::read(pulp.ca_file()).unwrap();
    let fronts: [Front; 3] = [
        Front {
            name: "nginx-deployed",
            url: format!("http://{}", nginx.addr),
            pid: nginx.child.0.id(),
            // The client reaches the object store itself; on a build host
            // its certificate is one the image trusts.
            client_ca: Some(&ca_pem),
        },
        Front {
            name: "proxy",
            url: proxy.url(),
            pid: proxy.child.id(),
            client_ca: None,
        },
        Front {
            name: "proxy-cache",
            url: cached.url(),
            pid: cached.child.id(),
            client_ca: None,
        },
    ];
    let mut totals = [Cost::default(); 3];
    for rep in 1..=reps {
        for (front, total) in fronts.iter().zip(&mut totals) {
            eprintln!("repetition {rep}/{reps}: {}", front.name);
            let cost = one_build(&pulp, front, base, pulp.ca_file());
            total.add(&cost);
        }
    }
    assert!(
        !proxy.log_text().contains("X-Amz-") && !cached.log_text().contains("X-Amz-"),
        "a presigned URL in a proxy's log"
    );
    report(reps, &fronts, &totals);
}

/// A front end under test.
struct Front<'a> {
    name: &'static str,
    url: String,
    pid: u32,
    /// The CA the client needs to follow redirects to the storage itself.
    client_ca: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Default)]
struct Cost {
    secs: f64,
    pulp_bytes: u64,
    storage_bytes: u64,
    cpu_secs: f64,
}

impl Cost {
    fn add(&mut self, o: &Cost) {
        self.secs += o.secs;
        self.pulp_bytes += o.pulp_bytes;
        self.storage_bytes += o.storage_bytes;
        self.cpu_secs += o.cpu_secs;
    }
}

/// One image's package-manager work through `front`: an apt build and a
/// dnf install.
fn one_build(pulp: &Pulp, front: &Front, base: &str, ca_file: &Path) -> Cost {
    let pulp_before = pulp.bytes_sent();
    let storage_before = pulp.storage_bytes_sent().unwrap_or(0);
    let cpu_before = cpu_secs(front.pid);
    let started = Instant::now();

    let mut dockerfile = apt::dockerfile(base, &front.url);
    let mut files: Vec<(&str, &[u8])> = Vec::new();
    if let Some(ca) = front.client_ca {
        let (from, rest) = dockerfile.split_once('\n').unwrap();
        dockerfile = format!(
            "{from}\nCOPY ca.pem /ca.pem\n\
             RUN echo 'Acquire::https::CaInfo \"/ca.pem\";' > /etc/apt/apt.conf.d/99-storage-ca\n{rest}"
        );
        files.push(("ca.pem", ca));
    }
    let tag = format!("pap-bench-pulp-build:{}", std::process::id());
    let built = Image::try_build(&tag, &dockerfile, &files, &[]);
    if let Err(log) = built {
        panic!("the apt build through {} failed:\n{log}", front.name);
    }
    let repo_lines = match front.client_ca {
        Some(_) => format!("sslcacert={}\n", ca_file.display()),
        None => String::new(),
    };
    let baseurl = format!("{}/pulp/content/rpm/", front.url);
    let (_root, text) = rpm::dnf_install_with(None, &baseurl, &repo_lines);
    if front.client_ca.is_none() {
        assert!(!text.contains("X-Amz-"), "dnf saw a presigned URL:\n{text}");
    }

    Cost {
        secs: started.elapsed().as_secs_f64(),
        pulp_bytes: pulp.bytes_sent() - pulp_before,
        storage_bytes: pulp.storage_bytes_sent().unwrap_or(0) - storage_before,
        cpu_secs: cpu_secs(front.pid) - cpu_before,
    }
}

/// User and system CPU of process `pid` so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = String::from_utf8(
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse::<f64>()
    .unwrap();
    ticks as f64 / hz
}

/// Debian's nginx in one process (no master), configured as deployed.
struct Nginx {
    child: KillOnDrop,
    addr: std::net::SocketAddr,
}

impl Nginx {
    fn start(pulp: &Pulp, scratch: &Scratch) -> Nginx {
        let dir = scratch.path("nginx");
        std::fs::create_dir(&dir).unwrap();
        let addr: std::net::SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let upstream = pulp.content_url();
        let host = upstream.trim_start_matches("https://");
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  server {{\n    listen {addr};\n    \
             location / {{\n      proxy_pass {upstream};\n      \
             proxy_set_header Host {host};\n      \
             proxy_set_header Authorization \"{auth}\";\n      \
             proxy_ssl_server_name on;\n      proxy_ssl_protocols TLSv1.2;\n    }}\n  }}\n}}\n",
            auth = e2e::basic_header(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = KillOnDrop(
            Command::new("nginx")
                .arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
                .spawn()
                .unwrap_or_else(|e| {
                    eprintln!("pulp_build: cannot run nginx ({e}); install Debian's nginx-light");
                    std::process::exit(2)
                }),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {addr}:\n{}",
                std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, addr }
    }
}

fn report(reps: usize, fronts: &[Front; 3], totals: &[Cost; 3]) {
    let reference = &totals[0];
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "\n{reps} repetitions of one image's package installs (apt-get in docker build, dnf), \
         Pulp on S3, totals:"
    );
    println!(
        "{:<16} {:>9} {:>15} {:>17} {:>10} {:>7} {:>7} {:>7} {:>7}",
        "front end",
        "wall s",
        "bytes from Pulp",
        "bytes from store",
        "CPU s",
        "wall",
        "Pulp",
        "store",
        "CPU"
    );
    for (front, c) in fronts.iter().zip(totals) {
        println!(
            "{:<16} {:>9.1} {:>15} {:>17} {:>10.2} {:>6.2}x {:>6.2}x {:>6.2}x {:>6.2}x",
            front.name,
            c.secs,
            c.pulp_bytes,
            c.storage_bytes,
            c.cpu_secs,
            ratio(c.secs, reference.secs),
            ratio(c.pulp_bytes as f64, reference.pulp_bytes as f64),
            ratio(c.storage_bytes as f64, reference.storage_bytes as f64),
            ratio(c.cpu_secs, reference.cpu_secs),
        );
    }
    println!("ratios: against nginx-deployed; CPU is the front end's own (user + system).");
}
