//! The fetch record (`/fetches?since=CURSOR`): every forwarded response a
//! client received whole, with the sha256 of what it received, what the
//! cache did and the host that served it; never a query string, a refusal
//! or the proxy's own endpoints; bounded, and off with
//! `proxy.fetch_records = 0`.

use bytes::Bytes;
use e2e::client::{get, send, Got};
use e2e::storage::Storage;
use e2e::upstream::{Content, Versions};
use e2e::{cache_section, proxy_keys, upstream_keys, Setup};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Duration;

const RPM: &str = "/pulp/content/rocky/Packages/h/hello-2.12-1.el9.x86_64.rpm";
const RELEASE: &str = "/pulp/content/debian/dists/bookworm/Release";

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn lines(got: &Got) -> Vec<Value> {
    String::from_utf8(got.body.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn header(got: &Got, name: &str) -> u64 {
    got.headers[name].to_str().unwrap().parse().unwrap()
}

/// The records after `cursor`, once there are `n` of them: a transfer is
/// recorded when the proxy lets go of it, which may be just after the
/// client has its last byte.
async fn records(addr: SocketAddr, cursor: u64, n: usize) -> (Got, Vec<Value>) {
    let target = format!("/fetches?since={cursor}");
    e2e::wait_for(Duration::from_secs(10), &format!("{n} records"), || async {
        let got = get(addr, &target).await;
        let found = lines(&got);
        (found.len() >= n).then_some((got, found))
    })
    .await
}

#[tokio::test]
async fn every_completed_fetch_is_recorded_with_the_hash_the_client_got() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Setup::start_with(
        Versions::Both,
        "",
        cache_section(&tmp.path().join("cache"), "64 MiB"),
    )
    .await;
    let rpm = Bytes::from((0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let release = Bytes::from_static(b"Origin: Debian\nSuite: bookworm\n");
    s.upstream.put(RPM, Content::Bytes(rpm.clone()));
    s.upstream.put(RELEASE, Content::Bytes(release.clone()));

    let before = send(s.proxy.addr, "HEAD", "/fetches", &[]).await;
    assert_eq!(before.status, 200);
    assert_eq!(header(&before, "fetches-cursor"), 0);
    for target in [RPM, RPM] {
        assert_eq!(get(s.proxy.addr, target).await.body, rpm);
    }
    let query = format!("{RELEASE}?client-chose=this");
    assert_eq!(get(s.proxy.addr, &query).await.body, release);
    assert_eq!(send(s.proxy.addr, "HEAD", RELEASE, &[]).await.status, 200);
    assert_eq!(get(s.proxy.addr, "/pulp/content/none").await.status, 404);
    // Neither a refusal nor a local endpoint is a fetch.
    assert_eq!(get(s.proxy.addr, "/pulp/api/v3/users/").await.status, 403);
    assert_eq!(get(s.proxy.addr, "/metrics").await.status, 200);

    let (page, found) = records(s.proxy.addr, 0, 5).await;
    s.saw(&page);
    assert_eq!(page.headers["content-type"], "application/x-ndjson");
    let rows: Vec<String> = found
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap(),
                r["status"],
                r["bytes"],
                r["cache"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            format!("GET {RPM} 200 200000 miss"),
            format!("GET {RPM} 200 200000 hit"),
            format!("GET {RELEASE} 200 {} miss", release.len()),
            format!("HEAD {RELEASE} 200 0 bypass"),
            "GET /pulp/content/none 404 10 miss".to_string(),
        ],
        "{found:?}"
    );
    assert_eq!(found[0]["sha256"], sha256(&rpm), "as the upstream sent it");
    assert_eq!(found[1]["sha256"], sha256(&rpm), "as the cache served it");
    assert_eq!(found[2]["sha256"], sha256(&release));
    assert_eq!(found[3]["sha256"], sha256(b""));
    let host = s.upstream.url().split("//").nth(1).unwrap().to_string();
    for r in &found {
        assert_eq!(r["host"], host.trim_end_matches('/'), "{r}");
    }
    let seqs: Vec<u64> = found.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(header(&page, "fetches-cursor"), 5);
    assert_eq!(header(&page, "fetches-lost"), 0);

    // A cursor reads what came after it.
    get(s.proxy.addr, RELEASE).await;
    let (page, found) = records(s.proxy.addr, 5, 1).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["seq"], 6);
    assert_eq!(header(&page, "fetches-cursor"), 6);

    let bad = get(s.proxy.addr, "/fetches?since=last").await;
    assert_eq!(bad.status, 400);
    assert!(String::from_utf8_lossy(&bad.body).contains("since=CURSOR"));
    s.assert_no_leaks();
}

#[tokio::test]
async fn a_fetch_through_a_redirect_names_the_storage_host_and_never_its_query() {
    let keys = format!("redirect_hosts = [\"{}\"]\n", Storage::HOST);
    let s = Setup::start_with(Versions::Both, "", upstream_keys(&keys)).await;
    let storage = s.upstream.with_storage(s.ca.leaf()).await;
    let data = Bytes::from_static(b"Origin: Debian\n");
    s.upstream.put(RELEASE, Content::Bytes(data.clone()));
    assert_eq!(get(s.proxy.addr, RELEASE).await.body, data);
    let (page, found) = records(s.proxy.addr, 0, 1).await;
    s.saw(&page);
    assert_eq!(found[0]["host"], Storage::HOST);
    assert_eq!(found[0]["path"], RELEASE);
    assert_eq!(found[0]["sha256"], sha256(&data));
    let presigned = storage.requests()[0].target.clone();
    let query = presigned.split_once('?').unwrap().1;
    let text = String::from_utf8_lossy(&page.body);
    assert!(
        !text.contains(query) && !text.contains("X-Amz") && !text.contains('?'),
        "{text}"
    );
    s.assert_no_leaks();
}

#[tokio::test]
async fn the_record_is_bounded_says_what_it_lost_and_can_be_off() {
    let s = Setup::start_with(Versions::Both, "", proxy_keys("fetch_records = 2")).await;
    s.upstream
        .put(RELEASE, Content::Bytes(Bytes::from_static(b"x")));
    for _ in 0..3 {
        get(s.proxy.addr, RELEASE).await;
    }
    let page = e2e::wait_for(Duration::from_secs(10), "3 fetches", || async {
        let got = send(s.proxy.addr, "HEAD", "/fetches", &[]).await;
        (header(&got, "fetches-cursor") == 3).then_some(got)
    })
    .await;
    assert!(page.body.is_empty(), "HEAD has no body");
    let (page, found) = records(s.proxy.addr, 0, 2).await;
    let seqs: Vec<u64> = found.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(header(&page, "fetches-lost"), 1);

    // A cursor belongs to its epoch: a restarted proxy counts from 1 again
    // in another one.
    let again = Setup::start_with(Versions::Both, "", proxy_keys("fetch_records = 2")).await;
    let first = send(s.proxy.addr, "HEAD", "/fetches", &[]).await;
    let second = send(again.proxy.addr, "HEAD", "/fetches", &[]).await;
    assert!(header(&first, "fetches-epoch") < header(&second, "fetches-epoch"));
    assert_eq!(header(&second, "fetches-cursor"), 0);

    let off = Setup::start_with(Versions::Both, "", proxy_keys("fetch_records = 0")).await;
    let got = get(off.proxy.addr, "/fetches").await;
    assert_eq!(got.status, 404);
    assert!(String::from_utf8_lossy(&got.body).contains("fetch_records = 0"));
}
