//! Promise 3 and the connection limits: where the proxy listens, whom it
//! serves, how many at once, and how long a slow client may take.

use e2e::client::{get, get_hashed, raw};
use e2e::pki::TestCa;
use e2e::proxy::{config, Proxy, Scratch};
use e2e::upstream::Content;
use e2e::{first_status, leak, metric, proxy_keys, Setup};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn start_fails(edit: &str, needles: &[&str]) {
    let s = Scratch::new();
    TestCa::new().write_pem(&s.path("ca.pem"));
    let mut text = config("https://127.0.0.1:9", &s.path("ca.pem"), &s.path("pw"));
    text.keys("proxy", edit);
    let cfg = s.write_config(&text);
    let (status, log) = Proxy::run(&cfg, &[]);
    assert_eq!(status.code(), Some(78), "{log}");
    for n in needles {
        assert!(log.contains(n), "`{n}` missing:\n{log}");
    }
    leak::assert_clean("a start-up error", log.as_bytes());
}

#[test]
fn interface_must_hold_the_listen_address() {
    // 127.0.0.2 is routed via lo but is not one of lo's addresses.
    let edit = "interface = \"lo\"";
    let s = Scratch::new();
    TestCa::new().write_pem(&s.path("ca.pem"));
    let mut text = config("https://127.0.0.1:9", &s.path("ca.pem"), &s.path("pw"));
    text.keys("proxy", edit);
    let good = s.write_config(&text);
    drop(Proxy::start(&good, &[]));
    start_fails(
        "interface = \"lo\"\nlisten = \"127.0.0.2:0\"",
        &[
            "127.0.0.2 is not assigned to interface lo",
            "ci-builder net up",
        ],
    );
    start_fails(
        "interface = \"nosuch0\"\nlisten = \"127.0.0.1:0\"",
        &["nosuch0 is missing or has no address"],
    );
}

#[tokio::test]
async fn clients_outside_allowed_clients_get_403_and_nothing_is_forwarded() {
    let s = Setup::start_with(
        Default::default(),
        "",
        proxy_keys("allowed_clients = [\"10.0.0.0/8\"]"),
    )
    .await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    let got = get(s.proxy.addr, "/pulp/content/a").await;
    assert_eq!(got.status, 403);
    assert!(s.upstream.requests().is_empty());
    assert!(s.proxy.log_text().contains("rule=client"));
    s.saw(&got);
    s.assert_no_leaks();

    let s = Setup::start_with(
        Default::default(),
        "",
        proxy_keys("allowed_clients = [\"127.0.0.0/8\"]"),
    )
    .await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    assert_eq!(get(s.proxy.addr, "/pulp/content/a").await.status, 200);
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_only_while_every_slot_is_busy() {
    let s = Setup::start_with(
        Default::default(),
        "",
        proxy_keys("max_connections = 2\nmax_connections_per_client = 2"),
    )
    .await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    let (open, gate) = tokio::sync::watch::channel(false);
    s.upstream
        .put("/pulp/content/gated", Content::Gated { len: 1 << 20, gate });
    let addr = s.proxy.addr;
    // Both slots serve a transfer the upstream holds mid-way.
    let busy: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get_hashed(addr, "/pulp/content/gated").await }))
        .collect();
    e2e::wait_for(Duration::from_secs(10), "two transfers started", || async {
        (s.upstream.count("/pulp/content/gated") == 2).then_some(())
    })
    .await;
    // From another address: this one already holds its two.
    let third = tokio::spawn(async move { exchange(&mut from(addr, "127.0.0.2").await).await });
    s.proxy
        .wait_for_log("every connection slot is serving a request; waiting for one")
        .await;
    assert!(
        !third.is_finished(),
        "a third connection was served beyond max_connections = 2"
    );
    assert_eq!(s.upstream.count("/pulp/content/a"), 0);
    // The transfers end; their connections stay open but idle, and one
    // makes room for the third.
    open.send(true).unwrap();
    for b in busy {
        assert_eq!(b.await.unwrap().unwrap().1, 1 << 20);
    }
    let status = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, Some(200));
    s.assert_no_leaks();
}

#[tokio::test]
async fn idle_keep_alive_connections_make_room_for_new_clients() {
    let s = Setup::start_with(Default::default(), "", proxy_keys("max_connections = 2")).await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    let addr = s.proxy.addr;
    // Every slot held by an idle keep-alive connection (the idle timeout
    // is 60 s).
    let mut a = from(addr, "127.0.0.2").await;
    let mut b = from(addr, "127.0.0.3").await;
    assert_eq!(exchange(&mut a).await, Some(200));
    assert_eq!(exchange(&mut b).await, Some(200));
    // A new client is served at once, and one idle connection was closed
    // for it.
    let got = tokio::time::timeout(Duration::from_secs(5), get(addr, "/pulp/content/a"))
        .await
        .expect("a new client waited behind idle keep-alive connections");
    assert_eq!(got.status, 200);
    let mut closed = 0;
    for c in [&mut a, &mut b] {
        let mut buf = [0u8; 16];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await {
            assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "exactly one idle connection makes room");
    let log = s.proxy.log_text();
    assert!(
        log.contains("rule=reclaimed") && log.contains("proxy.max_connections reached"),
        "{log}"
    );
    let text = String::from_utf8(get(addr, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        metric(
            &text,
            "pulp_auth_proxy_closed_connections_total{reason=\"reclaimed\"}"
        ) >= 1.0
    );
    s.assert_no_leaks();
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let s = Setup::start_with(
        Default::default(),
        "",
        proxy_keys("max_connections = 4\nmax_connections_per_client = 2"),
    )
    .await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    let addr = s.proxy.addr;
    let mut mine = Vec::new();
    for _ in 0..2 {
        let mut c = from(addr, "127.0.0.2").await;
        assert_eq!(exchange(&mut c).await, Some(200));
        mine.push(c);
    }
    // A third from the same address is closed without an answer ...
    let mut over = from(addr, "127.0.0.2").await;
    let _ = over
        .write_all(b"GET /pulp/content/a HTTP/1.1\r\nHost: p\r\n\r\n")
        .await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), over.read(&mut buf))
        .await
        .expect("the connection over the limit was left open")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    // ... while another address is served, and the first one's own
    // connections go on working.
    let mut other = from(addr, "127.0.0.3").await;
    assert_eq!(exchange(&mut other).await, Some(200));
    assert_eq!(exchange(&mut mine[0]).await, Some(200));
    assert_eq!(s.upstream.count("/pulp/content/a"), 4);
    let log = s.proxy.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("rule=client-connections"))
        .unwrap_or_else(|| panic!("no refusal line:\n{log}"));
    assert!(
        line.contains("peer=127.0.0.2:") && line.contains("proxy.max_connections_per_client"),
        "{line}"
    );
    let text = String::from_utf8(get(addr, "/metrics").await.body.to_vec()).unwrap();
    assert_eq!(
        metric(
            &text,
            "pulp_auth_proxy_refusals_total{rule=\"client-connections\"}"
        ),
        1.0
    );
    s.assert_no_leaks();
}

/// A connection to `addr` from the loopback address `source`.
async fn from(addr: std::net::SocketAddr, source: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// One request on an open connection; the response's status.
async fn exchange(c: &mut tokio::net::TcpStream) -> Option<u16> {
    c.write_all(b"GET /pulp/content/a HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = c.read(&mut buf).await.unwrap();
    first_status(&buf[..n])
}

#[tokio::test]
async fn slowloris_is_cut_and_others_are_still_served() {
    let s = Setup::start_with(
        Default::default(),
        "",
        proxy_keys("header_timeout_secs = 2"),
    )
    .await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    let (mut readers, mut writers) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let mut c = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
        c.write_all(b"GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nX-Slow: ")
            .await
            .unwrap();
        let (r, w) = c.into_split();
        readers.push(r);
        writers.push(w);
    }
    // The attacker's pace: a byte per connection every 300 ms, until told
    // to stop, which keeps every head incomplete past the header timeout.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let dribble = tokio::spawn(async move {
        loop {
            for w in writers.iter_mut() {
                let _ = w.write_all(b"a").await;
            }
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    });
    // All 200 are in the proxy (not in the kernel's queue) and open.
    let addr = s.proxy.addr;
    e2e::wait_for(
        Duration::from_secs(10),
        "200 slow connections accepted",
        || async {
            let text = String::from_utf8_lossy(&get(addr, "/metrics").await.body).into_owned();
            let open = metric(&text, "pulp_auth_proxy_open_connections");
            (e2e::accept_queue(addr) == 0 && open >= 201.0).then_some(())
        },
    )
    .await;
    // A normal request is served meanwhile, well inside the time the slow
    // heads are given.
    let got = tokio::time::timeout(Duration::from_secs(2), get(addr, "/pulp/content/a"))
        .await
        .expect("a normal request waited behind slowloris");
    assert_eq!(got.status, 200);

    // Every slow connection is closed by the proxy once its head is 2 s
    // old, while the dribbling goes on.
    for r in readers.iter_mut() {
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(10), r.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "a slow connection is still open after the header timeout: {closed:?}"
        );
    }
    let _ = stop.send(());
    dribble.await.unwrap();
    let log = s.proxy.log_text();
    assert!(log.contains("rule=header-timeout"), "{log}");
    // Nothing was sent to those clients, so no status is logged for them.
    assert!(
        !log.lines()
            .any(|l| l.contains("rule=header-timeout") && l.contains("status=")),
        "{log}"
    );
    s.assert_no_leaks();
}

#[tokio::test]
async fn idle_keep_alive_outlives_the_header_timeout() {
    let s = Setup::start_with(
        Default::default(),
        "",
        proxy_keys("header_timeout_secs = 1\nidle_timeout_secs = 3"),
    )
    .await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    let mut c = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
    let req = b"GET /pulp/content/a HTTP/1.1\r\nHost: p\r\n\r\n";
    c.write_all(req).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = c.read(&mut buf).await.unwrap();
    assert_eq!(first_status(&buf[..n]), Some(200));
    // Idle for twice the header timeout: still open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.write_all(req).await.unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert_eq!(first_status(&buf[..n]), Some(200));
    // Idle past the idle timeout: closed by the proxy.
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(6), c.read(&mut buf))
        .await
        .expect("idle connection not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "closed after {:?}",
        started.elapsed()
    );
    let _ = raw(s.proxy.addr, b"", Duration::from_millis(10)).await;
    s.assert_no_leaks();
}
