//! Promise 3 and the connection limits: where the proxy listens, whom it
//! serves, how many at once, and how long a slow client may take.

use e2e::client::{get, raw};
use e2e::pki::TestCa;
use e2e::proxy::{config, Proxy, Scratch};
use e2e::upstream::Content;
use e2e::{first_status, leak, proxy_keys, Setup};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn start_fails(edit: &str, needles: &[&str]) {
    let s = Scratch::new();
    TestCa::new().write_pem(&s.path("ca.pem"));
    let text = config("https://127.0.0.1:9", &s.path("ca.pem"), &s.path("pw"))
        .replace("listen = \"127.0.0.1:0\"\n", "");
    let cfg = s.write_config(&text.replace("[proxy]\n", &format!("[proxy]\n{edit}\n")));
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
    let text = config("https://127.0.0.1:9", &s.path("ca.pem"), &s.path("pw"));
    let good = s.write_config(&text.replace("[proxy]\n", &format!("[proxy]\n{edit}\n")));
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
async fn connections_beyond_the_limit_wait() {
    let s = Setup::start_with(Default::default(), "", proxy_keys("max_connections = 2")).await;
    s.upstream
        .put("/pulp/content/a", Content::Bytes("a".into()));
    let a = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = s.proxy.addr;
    let third = tokio::spawn(async move { get(addr, "/pulp/content/a").await.status });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served beyond max_connections = 2"
    );
    drop(a);
    let status = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    drop(b);
    s.assert_no_leaks();
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
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut c = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
        c.write_all(b"GET /pulp/content/a HTTP/1.1\r\nHost: p\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(c);
    }
    // Keep them dribbling for longer than the header timeout.
    let dribble = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            for c in slow.iter_mut() {
                let _ = c.write_all(b"a").await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        slow
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    assert_eq!(get(s.proxy.addr, "/pulp/content/a").await.status, 200);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "a normal request took {took:?} under slowloris"
    );

    let mut slow = dribble.await.unwrap();
    let mut closed = 0;
    for c in slow.iter_mut() {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) | Ok(Err(_)) =
            tokio::time::timeout(Duration::from_millis(50), c.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 200,
        "slow connections still open after the header timeout"
    );
    assert!(s.proxy.log_text().contains("rule=header-timeout"));
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
