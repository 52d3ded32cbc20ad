//! A real Pulp for the e2e tier: pulpcore with the deb and rpm plugins from
//! the pinned venv (`tests/pulp/venv.sh`), a private PostgreSQL cluster on a
//! unix socket of its own, `pulpcore-api` on a unix socket,
//! `pulpcore-content` serving HTTPS on 127.0.0.1 with a certificate from the
//! tests' CA, and one `pulpcore-worker`. Content is synced into it from a
//! local HTTP server the way a production Pulp gets it
//! (`tests/pulp/content.py`), behind an RBAC content guard that only the
//! test user may read through (and one distribution behind a guard it may
//! not).
//!
//! Two storage modes ([`Storage`]): the filesystem, and S3 on a local
//! `moto_server` with every content request redirected to it. With
//! [`Content::netns`] the TCP side (the content app, the worker, the file
//! servers, moto_server) runs in a network namespace, for the bridge
//! deployment. The content app logs the `Authorization` each request
//! carried, so a test can show Pulp saw only the proxy's; a byte-counting
//! relay in front of it measures what Pulp sends.
//!
//! Every process is started in a process group of its own and stopped by
//! that id when the [`Pulp`] drops, also when the test fails; a piece that
//! does not come up fails the test with its name and the tail of its log.
//!
//! A migrated database is slow to make (`migrate` runs for tens of
//! seconds), so its dump is kept in the cache next to the venv, named for
//! everything that shapes it, and restored on a warm start.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pki::TestCa;
use crate::proxy::ConfigFile;

/// The cache shared with `tests/pulp/venv.sh`: outside the checkout, so a
/// fresh clone on the same machine (CI) reuses the venv and the dump.
pub const CACHE: &str = "/var/tmp/pulp-auth-proxy-tests-cache";

/// `tests/pulp`, where the pins, the settings templates and the scripts are.
fn pulp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pulp")
}

/// Where Pulp keeps its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `MEDIA_ROOT` on the local filesystem; the content app streams files.
    Filesystem,
    /// S3 on a local `moto_server` (TLS with the tests' certificate, path
    /// addressing) with `REDIRECT_TO_OBJECT_STORAGE`: the content app
    /// answers every content request with a 302 to a presigned URL.
    /// moto does not check the signatures.
    S3,
}

impl Storage {
    fn template(self) -> &'static str {
        match self {
            Storage::Filesystem => "storage-fs.py.in",
            Storage::S3 => "storage-s3.py.in",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Storage::Filesystem => "fs",
            Storage::S3 => "s3",
        }
    }
}

/// What the fixture syncs into Pulp.
#[derive(Debug, Default, Clone, Copy)]
pub struct Content<'a> {
    /// An APT repository (suite `stable`, component `main`, amd64), served
    /// as `debian` (verbatim publication) and `debian-structured`.
    pub deb: Option<&'a Path>,
    /// An RPM repository (with `repodata/`), served as `rpm`.
    pub rpm: Option<&'a Path>,
    /// More APT repositories, each synced with all its suites and
    /// published structured at its own base path.
    pub mirrors: &'a [DebMirror<'a>],
    /// A network namespace (`ip netns` name) for what speaks TCP: the
    /// content app on the namespace's 127.0.0.1, the worker and the
    /// servers it syncs from. PostgreSQL and the API stay outside on their
    /// unix sockets. The bridge deployment's proxy runs in there too, so
    /// there is no meter: [`Pulp::bytes_sent`] stays 0.
    pub netns: Option<&'a str>,
}

/// One of [`Content::mirrors`].
#[derive(Debug, Clone, Copy)]
pub struct DebMirror<'a> {
    /// The Pulp remote's, repository's and distribution key's name.
    pub name: &'a str,
    /// The APT repository (`dists/`, `pool/`).
    pub dir: &'a Path,
    /// Its suites, space-separated.
    pub distributions: &'a str,
    /// The distribution's base path (under `/pulp/content/`).
    pub base_path: &'a str,
}

/// How long each stage of a start took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// `venv.sh`: instant when the venv is cached.
    pub venv: Duration,
    /// initdb and the cluster's start.
    pub postgres: Duration,
    /// S3 mode: moto_server up and its bucket made.
    pub storage: Duration,
    /// `migrate` (cold) or the restore of the cached dump (warm).
    pub database: Duration,
    /// Whether `database` was a `migrate`.
    pub migrated: bool,
    /// The admin user, then the three services up to a full status.
    pub services: Duration,
    /// Remotes, syncs, publications, distributions, guard and user.
    pub content: Duration,
    /// Everything.
    pub total: Duration,
}

/// One line of the content app's access log.
#[derive(Debug, Clone)]
pub struct Access {
    /// The request line, `GET /pulp/content/... HTTP/1.1`.
    pub request: String,
    /// The response status.
    pub status: u16,
    /// The `Authorization` header Pulp received, if any.
    pub authorization: Option<String>,
}

/// A running Pulp; everything it started is stopped on drop.
pub struct Pulp {
    /// Stopped in reverse order, the database last.
    services: Vec<Service>,
    meter: Option<Meter>,
    /// S3 mode: the meter every S3 request goes through, Pulp's uploads
    /// and the clients' presigned downloads alike.
    storage_meter: Option<Meter>,
    /// S3 mode: the endpoint Pulp is told (the storage meter, or in a
    /// namespace moto_server itself on the namespace's loopback).
    s3_endpoint: Option<String>,
    content_addr: Option<SocketAddr>,
    /// In a namespace: the content app there.
    netns_content: Option<SocketAddr>,
    api_socket: PathBuf,
    ca_file: PathBuf,
    /// What each stage of the start took.
    pub timings: Timings,
    /// The distributions' base paths by name (`deb_verbatim`,
    /// `deb_structured`, `rpm`), from `content.py`.
    pub distributions: serde_json::Value,
    /// The API's `admin`, made for this run.
    admin_password: String,
    // Last: removed once every process is gone.
    dir: tempfile::TempDir,
}

/// The tail of a log, for failure messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(30);
    format!(
        "last lines of {}:\n{}",
        path.display(),
        lines[from..].join("\n")
    )
}

/// Polls `check` until it yields a value; `on_wait` runs between polls (to
/// notice a service that died) and the test fails with `what` after
/// `within`.
fn poll<T>(
    within: Duration,
    what: &str,
    mut on_wait: impl FnMut(),
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        on_wait();
        assert!(Instant::now() < deadline, "no {what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

use crate::run;

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A free port on 127.0.0.1. Another process could take it before Pulp
/// binds it; the content app then fails to start and says so.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A long-running child in a process group of its own, so stopping it
/// reaches everything it forked (gunicorn's workers, the worker's task
/// processes, PostgreSQL's backends) by the one id the test holds.
struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// How it is asked to stop: gunicorn and the worker stop on TERM,
    /// PostgreSQL's fast shutdown is INT.
    signal: &'static str,
    /// PostgreSQL's postmaster stops its own backends; signalling them too
    /// would only make noise. Everything else gets the signal as a group.
    group: bool,
}

impl Service {
    fn spawn(
        name: &'static str,
        mut cmd: Command,
        log: &Path,
        signal: &'static str,
        group: bool,
    ) -> Service {
        let file = fs::File::create(log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        Service {
            name,
            child,
            log: log.to_path_buf(),
            signal,
            group,
        }
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited with {status} while Pulp was starting; {}",
                self.name,
                tail(&self.log)
            );
        }
    }

    fn kill(&self, signal: &str, group: bool) {
        let id = self.child.id();
        let target = if group {
            format!("-{id}")
        } else {
            id.to_string()
        };
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), "--", &target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill(self.signal, self.group);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("{} ignored {}; killing it", self.name, self.signal);
                self.kill("KILL", true);
                let _ = self.child.wait();
            }
        }
        // Whatever the leader left behind in its group.
        self.kill("KILL", true);
    }
}

/// A plain TCP relay in front of the content app that counts the bytes
/// Pulp sends, TLS records and all: what "bytes from Pulp" means in the
/// cache tests. The content app's own access log cannot say (aiohttp's
/// `%b` leaves out file bodies).
struct Meter {
    addr: SocketAddr,
    down: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Meter {
    fn start(target: SocketAddr) -> Meter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (down, stop, open) = (down.clone(), stop.clone(), open.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    {
                        let mut open = open.lock().unwrap();
                        open.push(client.try_clone().unwrap());
                        open.push(server.try_clone().unwrap());
                    }
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    std::thread::spawn(move || pump(client, server, None));
                    let down = down.clone();
                    std::thread::spawn(move || pump(s2, c2, Some(&down)));
                }
            })
        };
        Meter {
            addr,
            down,
            stop,
            open,
            thread: Some(thread),
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, count: Option<&AtomicU64>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if let Some(c) = count {
                    c.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// The newest PostgreSQL server Debian installed.
fn pg_bin() -> (PathBuf, String) {
    let root = Path::new("/usr/lib/postgresql");
    let major = fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|v| root.join(v.to_string()).join("bin/initdb").exists())
        .max()
        .expect("no PostgreSQL server in /usr/lib/postgresql; tests/run installs postgresql");
    (root.join(major.to_string()).join("bin"), major.to_string())
}

/// The `postgres` user's uid and gid, from `/etc/passwd`.
fn postgres_ids() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == "postgres")
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .expect("no postgres user; tests/run installs postgresql")
}

/// Runs `program` as the `postgres` user (initdb refuses root).
/// `setpriv` execs it, so the child's id is the program's own.
fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"])
        .arg(program)
        .env_clear()
        .env("PATH", crate::host_path())
        .env("LANG", "C");
    cmd
}

/// Names what shapes a migrated database: the pins, the settings and the
/// storage mode (migrate copies the storage settings into it), and the
/// PostgreSQL major version the dump came from.
fn dump_key(storage: Storage, pg_major: &str) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for name in ["requirements.txt", "settings.py.in", storage.template()] {
        h.update(fs::read(pulp_dir().join(name)).unwrap());
        h.update([0]);
    }
    h.update(pg_major.as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}", storage.name(), &hex[..16])
}

/// A Fernet key (what `DB_ENCRYPTION_KEY` names): 32 random bytes,
/// URL-safe base64.
fn fernet_key() -> String {
    use base64::Engine as _;
    let mut buf = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom");
    base64::engine::general_purpose::URL_SAFE.encode(buf)
}

/// One request to the API over its unix socket; `None` until it answers
/// 200 with JSON.
fn api_get(socket: &Path, path: &str) -> Option<serde_json::Value> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    // HTTP/1.0: gunicorn closes after the response, so the body ends there.
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| serde_json::from_str(body).ok())?
}

/// One request to the API as `admin`, over its unix socket: the status
/// and the JSON body (`Null` when there is none).
fn api_call(
    socket: &Path,
    admin_password: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("admin:{admin_password}"));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = UnixStream::connect(socket).expect("Pulp's API socket");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\n\
         Accept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("Pulp's API answer");
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

impl Pulp {
    /// Sets the password of Pulp user `username` through the API, as an
    /// operator rotating it would.
    pub fn set_password(&self, username: &str, password: &str) {
        let (status, users) = api_call(
            &self.api_socket,
            &self.admin_password,
            "GET",
            &format!("/pulp/api/v3/users/?username={username}"),
            None,
        );
        assert_eq!(status, 200, "listing Pulp's users: {users}");
        let href = users["results"][0]["pulp_href"]
            .as_str()
            .unwrap_or_else(|| panic!("no Pulp user {username}: {users}"))
            .to_string();
        let (status, _) = api_call(
            &self.api_socket,
            &self.admin_password,
            "PATCH",
            &href,
            Some(&serde_json::json!({ "password": password })),
        );
        // The answer may echo nothing secret, but is not shown either way.
        assert_eq!(status, 200, "changing the password of Pulp user {username}");
    }

    /// Brings up a Pulp with `content` synced into it, on `storage`, its
    /// content app's certificate from `ca`. Blocking: call it from
    /// `spawn_blocking` or `block_in_place`.
    pub fn start(ca: &TestCa, storage: Storage, content: Content<'_>) -> Pulp {
        let started = Instant::now();
        let mut timings = Timings::default();

        let t = Instant::now();
        // venv.sh keeps the machine's environment: pip may need its
        // mirror or certificate settings to reach the index.
        let venv = run(
            Command::new("bash").arg(pulp_dir().join("venv.sh")),
            "tests/pulp/venv.sh (the Pulp venv)",
        );
        let venv = PathBuf::from(venv.trim());
        timings.venv = t.elapsed();

        let dir = tempfile::Builder::new()
            .prefix("pap-pulp-")
            .tempdir()
            .unwrap();
        // The postgres user must reach its cluster inside; it may not list
        // or read the rest.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
        let d = dir.path().to_path_buf();
        for sub in ["media", "static", "work", "upload-tmp"] {
            fs::create_dir(d.join(sub)).unwrap();
        }
        let mut pulp = Pulp {
            services: Vec::new(),
            meter: None,
            storage_meter: None,
            s3_endpoint: None,
            content_addr: None,
            netns_content: None,
            api_socket: d.join("api.sock"),
            ca_file: d.join("ca.pem"),
            timings,
            distributions: serde_json::Value::Null,
            admin_password: String::new(),
            dir,
        };
        ca.write_pem(&pulp.ca_file);
        ca.write_leaf_pem(&d.join("content.pem"), &d.join("content.key"));

        // PostgreSQL, run directly rather than through pg_ctl, which would
        // detach it and leave the test without its process id.
        let t = Instant::now();
        let (pg_bin, pg_major) = pg_bin();
        let pg = d.join("pg");
        fs::create_dir(&pg).unwrap();
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(&pg, Some(uid), Some(gid)).unwrap();
        run(
            as_postgres(&pg_bin.join("initdb"))
                .current_dir(&pg)
                .args(["-D", "data", "-A", "trust", "-U", "postgres"])
                .args(["-E", "UTF8", "--locale=C", "--no-sync"]),
            "initdb (as postgres)",
        );
        let mut postgres = as_postgres(&pg_bin.join("postgres"));
        postgres
            .current_dir(&pg)
            .arg("-D")
            .arg(pg.join("data"))
            .arg("-k")
            .arg(&pg)
            // No TCP at all: the socket directory is the only way in.
            .args(["-c", "listen_addresses="])
            // A throwaway cluster: durability buys nothing.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"]);
        pulp.services.push(Service::spawn(
            "postgres",
            postgres,
            &d.join("postgres.log"),
            "INT",
            false,
        ));
        let isready = pg_bin.join("pg_isready");
        poll(
            Duration::from_secs(30),
            "PostgreSQL accepting connections",
            || pulp.assert_running(),
            || {
                Command::new(&isready)
                    .arg("-q")
                    .arg("-h")
                    .arg(&pg)
                    .args(["-U", "postgres"])
                    .env_clear()
                    .status()
                    .ok()?
                    .success()
                    .then_some(())
            },
        );
        let pg_tool = |name: &str| {
            let mut cmd = Command::new(pg_bin.join(name));
            cmd.arg("-h").arg(&pg).args(["-U", "postgres"]).env_clear();
            cmd
        };
        run(pg_tool("createdb").arg("pulp"), "createdb pulp");
        pulp.timings.postgres = t.elapsed();

        // Settings. The content app's port is Pulp's own; clients reach it
        // through the meter. In S3 mode the endpoint Pulp is told, and so
        // the host of every presigned URL, is the storage meter's.
        let content_port = free_port();
        let moto_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        // In a namespace the meter (on the host's loopback) is out of
        // reach: there the endpoint is moto_server itself.
        if storage == Storage::S3 {
            pulp.s3_endpoint = Some(match content.netns {
                None => {
                    let meter = Meter::start(moto_addr);
                    let endpoint = format!("https://{}", meter.addr);
                    pulp.storage_meter = Some(meter);
                    endpoint
                }
                Some(_) => format!("https://{moto_addr}"),
            });
        }
        let s3_endpoint = pulp.s3_endpoint.clone().unwrap_or_default();
        let settings = fs::read_to_string(pulp_dir().join("settings.py.in"))
            .unwrap()
            .replace("@SECRET_KEY@", &random_hex(32))
            .replace(
                "@CONTENT_ORIGIN@",
                &format!("https://127.0.0.1:{content_port}"),
            )
            .replace("@PG_SOCKET_DIR@", pg.to_str().unwrap())
            .replace("@DIR@", d.to_str().unwrap())
            + &fs::read_to_string(pulp_dir().join(storage.template()))
                .unwrap()
                .replace("@S3_ENDPOINT@", &s3_endpoint)
                .replace("@CA_FILE@", pulp.ca_file.to_str().unwrap());
        fs::write(d.join("settings.py"), settings).unwrap();
        let env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                format!("{}:{}", venv.join("bin").display(), crate::host_path()),
            ),
            (
                "PULP_SETTINGS".into(),
                d.join("settings.py").display().to_string(),
            ),
            (
                "DJANGO_SETTINGS_MODULE".into(),
                "pulpcore.app.settings".into(),
            ),
            // gunicorn and Django write under $HOME; keep it in the run.
            ("HOME".into(), d.display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
        ];
        let pulp_cmd = |program: &str| {
            let mut cmd = Command::new(venv.join("bin").join(program));
            cmd.env_clear().current_dir(&d);
            for (k, v) in &env {
                cmd.env(k, v);
            }
            cmd
        };
        // `ip netns exec` execs the program once it has entered the
        // namespace, so the child's id stays the program's own.
        let in_netns = |program: &str| match content.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns])
                    .arg(venv.join("bin").join(program))
                    .env_clear()
                    .current_dir(&d);
                for (k, v) in &env {
                    cmd.env(k, v);
                }
                cmd
            }
            None => pulp_cmd(program),
        };

        if storage == Storage::S3 {
            let t = Instant::now();
            let mut moto = in_netns("moto_server");
            moto.args(["-H", "127.0.0.1", "-p", &moto_addr.port().to_string()])
                .arg("-c")
                .arg(d.join("content.pem"))
                .arg("-k")
                .arg(d.join("content.key"));
            pulp.services.push(Service::spawn(
                "moto_server",
                moto,
                &d.join("moto.log"),
                "TERM",
                true,
            ));
            poll(
                Duration::from_secs(30),
                "moto_server listening",
                || pulp.assert_running(),
                || {
                    match content.netns {
                    None => TcpStream::connect(moto_addr).ok().map(drop),
                    Some(ns) => Command::new("ip")
                        .args(["netns", "exec", ns, "/usr/bin/python3", "-c"])
                        .arg("import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)")
                        .arg(moto_addr.port().to_string())
                        .stderr(Stdio::null())
                        .status()
                        .ok()
                        .filter(|s| s.success())
                        .map(drop),
                }
                },
            );
            // The bucket Pulp writes to, made over the same endpoint and
            // trust Pulp uses. moto's keys are fixed fakes.
            run(
                in_netns("python").args([
                    "-c",
                    "import sys, boto3\n\
                     boto3.client('s3', endpoint_url=sys.argv[1], verify=sys.argv[2],\n\
                     region_name='us-east-1', aws_access_key_id='fake-access-key',\n\
                     aws_secret_access_key='fake-secret-key').create_bucket(Bucket='pulp')",
                    &s3_endpoint,
                    pulp.ca_file.to_str().unwrap(),
                ]),
                "creating the S3 bucket on moto_server",
            );
            pulp.timings.storage = t.elapsed();
        }

        // The database: the cached dump when there is one, else migrate
        // and keep a dump of the result. The encryption key travels with
        // the dump: migrate stores the default domain's storage settings
        // encrypted with it.
        let t = Instant::now();
        fs::create_dir_all(CACHE).unwrap();
        let key = dump_key(storage, &pg_major);
        // The dump and its key live in one directory that appears by one
        // rename, so a dump is only ever seen with its own key, and
        // complete; tests of one process may migrate at once on the cold
        // path, and the first rename wins.
        let cached = Path::new(CACHE).join(format!("pulp-db-{key}"));
        let (cached_dump, cached_key) = (cached.join("db.dump"), cached.join("db.fernet"));
        let db_key = d.join("db.key");
        if cached.is_dir() {
            fs::copy(&cached_key, &db_key).unwrap();
            run(
                pg_tool("pg_restore")
                    .args(["--no-owner", "-d", "pulp"])
                    .arg(&cached_dump),
                "pg_restore of the cached Pulp database",
            );
        } else {
            fs::write(&db_key, fernet_key()).unwrap();
            fs::set_permissions(&db_key, fs::Permissions::from_mode(0o600)).unwrap();
            let log = d.join("migrate.log");
            let out = pulp_cmd("pulpcore-manager")
                .args(["migrate", "--noinput"])
                .stdout(fs::File::create(&log).unwrap())
                .stderr(fs::File::options().append(true).open(&log).unwrap())
                .status()
                .expect("pulpcore-manager");
            assert!(
                out.success(),
                "pulpcore-manager migrate failed; {}",
                tail(&log)
            );
            let tmp = Path::new(CACHE).join(format!("pulp-db-{key}.{}", random_hex(8)));
            fs::create_dir(&tmp).unwrap();
            run(
                pg_tool("pg_dump")
                    .args(["-Fc", "-f"])
                    .arg(tmp.join("db.dump"))
                    .arg("pulp"),
                "pg_dump of the migrated Pulp database",
            );
            fs::copy(&db_key, tmp.join("db.fernet")).unwrap();
            if fs::rename(&tmp, &cached).is_err() {
                // Another test's copy landed first; it is as good.
                fs::remove_dir_all(&tmp).unwrap();
            }
            pulp.timings.migrated = true;
        }
        pulp.timings.database = t.elapsed();

        // The admin, made by Django itself from a script on stdin (the
        // password is on no command line); the test user comes later,
        // through the API as an operator would make it.
        let t = Instant::now();
        let admin_password = random_hex(16);
        let mut shell = pulp_cmd("pulpcore-manager")
            .arg("shell")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        write!(
            shell.stdin.take().unwrap(),
            "from django.contrib.auth import get_user_model\n\
             get_user_model().objects.create_superuser('admin', '', {})\n",
            serde_json::to_string(&admin_password).unwrap()
        )
        .unwrap();
        let out = shell.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "pulpcore-manager shell (the admin user) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pulp.admin_password = admin_password.clone();

        // The three services. The API listens on a unix socket only; the
        // content app logs every request with the Authorization it saw.
        let mut api = pulp_cmd("pulpcore-api");
        api.arg("--bind")
            .arg(format!("unix:{}", pulp.api_socket.display()))
            .args(["--workers", "1", "--no-control-socket"]);
        pulp.services.push(Service::spawn(
            "pulpcore-api",
            api,
            &d.join("api.log"),
            "TERM",
            true,
        ));
        let mut content_app = in_netns("pulpcore-content");
        content_app
            .env(
                "GUNICORN_CMD_ARGS",
                format!(
                    "--certfile={} --keyfile={}",
                    d.join("content.pem").display(),
                    d.join("content.key").display()
                ),
            )
            .arg("--bind")
            .arg(format!("127.0.0.1:{content_port}"))
            .args(["--workers", "1", "--no-control-socket"])
            .arg("--access-logfile")
            .arg(d.join("content-access.log"))
            .args(["--access-logformat", r#"%a "%r" %s "%{Authorization}i""#]);
        pulp.services.push(Service::spawn(
            "pulpcore-content",
            content_app,
            &d.join("content.log"),
            "TERM",
            true,
        ));
        pulp.services.push(Service::spawn(
            "pulpcore-worker",
            in_netns("pulpcore-worker"),
            &d.join("worker.log"),
            "TERM",
            true,
        ));
        let socket = pulp.api_socket.clone();
        let status = poll(
            Duration::from_secs(90),
            "Pulp status with an API app, a content app and a worker online",
            || pulp.assert_running(),
            || {
                let s = api_get(&socket, "/pulp/api/v3/status/")?;
                let online = |k: &str| s[k].as_array().is_some_and(|a| !a.is_empty());
                (online("online_api_apps")
                    && online("online_content_apps")
                    && online("online_workers"))
                .then_some(s)
            },
        );
        let content_addr: SocketAddr = format!("127.0.0.1:{content_port}").parse().unwrap();
        if content.netns.is_none() {
            poll(
                Duration::from_secs(30),
                "pulpcore-content listening",
                || pulp.assert_running(),
                || TcpStream::connect(content_addr).ok(),
            );
        }
        let versions = status["versions"].to_string();
        assert!(
            versions.contains("\"deb\"") && versions.contains("\"rpm\""),
            "{versions}"
        );
        pulp.timings.services = t.elapsed();

        // Content, from local HTTP servers stopped once synced.
        let t = Instant::now();
        let deb = content
            .deb
            .map(|p| FileServer::start(p, &d.join("deb-http.log"), content.netns));
        let rpm = content
            .rpm
            .map(|p| FileServer::start(p, &d.join("rpm-http.log"), content.netns));
        let mirrors: Vec<(FileServer, &DebMirror)> = content
            .mirrors
            .iter()
            .map(|m| {
                let log = d.join(format!("{}-http.log", m.name));
                (FileServer::start(m.dir, &log, content.netns), m)
            })
            .collect();
        let spec = serde_json::json!({
            "deb_mirrors": mirrors.iter().map(|(server, m)| serde_json::json!({
                "name": m.name,
                "url": server.url(),
                "distributions": m.distributions,
                "base_path": m.base_path,
            })).collect::<Vec<_>>(),
            "api_socket": pulp.api_socket,
            "admin": {"username": "admin", "password": admin_password},
            "user": {"username": crate::USERNAME, "password": crate::PASSWORD},
            "deb_remote": deb.as_ref().map(FileServer::url),
            "rpm_remote": rpm.as_ref().map(FileServer::url),
        });
        let out = crate::output_with_input(
            pulp_cmd("python").arg(pulp_dir().join("content.py")),
            spec.to_string().as_bytes(),
        );
        assert!(
            out.status.success(),
            "Pulp's content set-up (tests/pulp/content.py) failed: {}\npulpcore-worker's {}",
            String::from_utf8_lossy(&out.stderr),
            tail(&d.join("worker.log"))
        );
        pulp.distributions = serde_json::from_slice(&out.stdout).unwrap();
        drop((deb, rpm, mirrors));
        pulp.timings.content = t.elapsed();

        if content.netns.is_none() {
            pulp.meter = Some(Meter::start(content_addr));
            pulp.content_addr = Some(content_addr);
        } else {
            pulp.netns_content = Some(content_addr);
        }
        pulp.timings.total = started.elapsed();
        pulp
    }

    fn assert_running(&mut self) {
        for s in &mut self.services {
            s.assert_running();
        }
    }

    /// `https://127.0.0.1:PORT`: the content app, through the meter (in a
    /// namespace: directly, on the namespace's loopback).
    pub fn content_url(&self) -> String {
        match (&self.meter, self.netns_content) {
            (Some(m), _) => format!("https://{}", m.addr),
            (None, Some(addr)) => format!("https://{addr}"),
            (None, None) => unreachable!("a started Pulp has a content app"),
        }
    }

    /// A proxy config in front of this Pulp's content app, reading the
    /// password from `password_file`, with a 256 MiB cache in `cache` when
    /// given. Readiness goes through the guarded distribution: its root
    /// listing on the filesystem; on S3 a file, which Pulp answers with a
    /// redirect once it has checked the credentials. On S3 the storage is
    /// on loopback, which the proxy reaches only when it is listed.
    pub fn proxy_config(&self, password_file: &Path, cache: Option<&Path>) -> ConfigFile {
        let mut config = crate::proxy::config(&self.content_url(), self.ca_file(), password_file);
        if let Some(dir) = cache {
            crate::cache_section(dir, "256 MiB")(&mut config);
        }
        config.keys("proxy", "readiness_cache_secs = 0");
        if self.storage_url().is_some() {
            config.keys(
                "upstream",
                "redirect_hosts = [\"127.0.0.1\"]\n\
                 readiness_path = \"/pulp/content/debian/dists/stable/Release\"",
            );
        } else {
            config.keys("upstream", "readiness_path = \"/pulp/content/debian/\"");
        }
        config
    }

    /// The CA that signed the content app's certificate, as PEM.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// S3 mode: bytes the storage has sent so far (to Pulp and to clients).
    pub fn storage_bytes_sent(&self) -> Option<u64> {
        Some(self.storage_meter.as_ref()?.down.load(Ordering::SeqCst))
    }

    /// S3 mode: `https://127.0.0.1:PORT`, the host of every presigned URL
    /// (in a namespace, on its loopback).
    pub fn storage_url(&self) -> Option<String> {
        self.s3_endpoint.clone()
    }

    /// Bytes the content app has sent so far through [`Pulp::content_url`].
    pub fn bytes_sent(&self) -> u64 {
        self.meter
            .as_ref()
            .map_or(0, |m| m.down.load(Ordering::SeqCst))
    }

    /// The run directory (settings, logs, the cluster, media).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every request the content app has logged so far.
    pub fn access_log(&self) -> Vec<Access> {
        let text =
            fs::read_to_string(self.dir.path().join("content-access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                // %a "%r" %s "%{Authorization}i"
                let (_, rest) = l.split_once(" \"")?;
                let (request, rest) = rest.split_once("\" ")?;
                let (status, auth) = rest.split_once(' ')?;
                let auth = auth.trim_matches('"');
                Some(Access {
                    request: request.to_string(),
                    status: status.parse().ok()?,
                    authorization: (auth != "-").then(|| auth.to_string()),
                })
            })
            .collect()
    }

    /// Stops everything, then checks that nothing it started is left:
    /// no process in any of its groups, nothing listening on the content
    /// app's port.
    pub fn stop_checked(self) -> Result<(), String> {
        let groups = self.groups();
        let content = self.content_addr;
        drop(self);
        let left = processes_in(&groups);
        if !left.is_empty() {
            return Err(format!("Pulp processes left after the stop: {left:?}"));
        }
        if let Some(addr) = content {
            if TcpStream::connect(addr).is_ok() {
                return Err(format!("something still listens on {addr} after the stop"));
            }
        }
        Ok(())
    }

    fn groups(&self) -> Vec<u32> {
        self.services.iter().map(|s| s.child.id()).collect()
    }

    /// Peak resident memory of every Pulp process now alive, in KiB
    /// (the sum of each one's VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        processes_in(&self.groups())
            .iter()
            .map(|pid| {
                let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// The processes whose process group is one of `groups`, from `/proc`.
fn processes_in(groups: &[u32]) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and ")".
        let Some((_, after)) = stat.rsplit_once(") ") else {
            continue;
        };
        let pgrp = after.split_whitespace().nth(2).and_then(|g| g.parse().ok());
        if pgrp.is_some_and(|g| groups.contains(&g)) {
            found.push(pid);
        }
    }
    found
}

impl Drop for Pulp {
    fn drop(&mut self) {
        self.meter.take();
        self.storage_meter.take();
        while let Some(mut s) = self.services.pop() {
            s.stop();
        }
        if std::thread::panicking() {
            // Keep the logs the failure message points at.
            let kept = self.dir.path().to_path_buf();
            self.dir.disable_cleanup(true);
            eprintln!("Pulp's run directory kept for its logs: {}", kept.display());
        }
    }
}

/// A directory served over plain HTTP on 127.0.0.1, for Pulp to sync from:
/// Python's own `http.server`, stopped on drop.
struct FileServer {
    child: crate::KillOnDrop,
    port: u16,
}

impl FileServer {
    fn start(root: &Path, log: &Path, netns: Option<&str>) -> FileServer {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "/usr/bin/python3"]);
                c
            }
            None => Command::new("/usr/bin/python3"),
        };
        let mut child = crate::KillOnDrop(
            cmd.args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
                .arg("--directory")
                .arg(root)
                .env_clear()
                .env("PATH", crate::host_path())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(fs::File::create(log).unwrap())
                .spawn()
                .expect("python3 (tests/run installs it)"),
        );
        // "Serving HTTP on 127.0.0.1 port 40123 (http://...) ..."
        let mut line = String::new();
        BufReader::new(child.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("http.server did not start: {line:?}; {}", tail(log)));
        FileServer { child, port }
    }

    fn url(&self) -> String {
        let _ = &self.child;
        format!("http://127.0.0.1:{}/", self.port)
    }
}
