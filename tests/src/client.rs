//! Plain HTTP clients for talking to the proxy: a hyper client for normal
//! requests, and raw TCP for requests an HTTP library would refuse to send.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response read in full.
#[derive(Debug)]
pub struct Got {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// Sends `method target` with `headers` to the proxy and reads the answer.
pub async fn send(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Got {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{target}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body,
    }
}

/// Sends `method target` on `stream`, a connection made elsewhere (in
/// another network namespace), and reads the answer.
pub async fn send_on(
    stream: std::net::TcpStream,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Got, String> {
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let host = stream.peer_addr().map_err(|e| e.to_string())?.to_string();
    let io = hyper_util::rt::TokioIo::new(
        tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?,
    );
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(target)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Got {
        status,
        headers,
        body,
    })
}

/// `GET target`.
pub async fn get(addr: SocketAddr, target: &str) -> Got {
    send(addr, "GET", target, &[]).await
}

/// Streams `GET target` through SHA-256 without keeping the body; returns
/// (status, bytes, hex digest), or an error if the transfer broke.
pub async fn get_hashed(
    addr: SocketAddr,
    target: &str,
) -> Result<(StatusCode, u64, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = Request::get(format!("http://{addr}{target}"))
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body broke after {n} bytes: {e}"))?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
            hasher.update(d);
        }
    }
    Ok((status, n, hex(&hasher.finalize())))
}

/// SHA-256 of `len` bytes of the upstream's pattern.
pub fn pattern_sha256(len: u64) -> String {
    let mut hasher = Sha256::new();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut at = 0;
    while at < len {
        let n = (len - at).min(1 << 20);
        buf.clear();
        buf.extend((at..at + n).map(crate::upstream::pattern_byte));
        hasher.update(&buf);
        at += n;
    }
    hex(&hasher.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes `bytes` on a fresh connection and reads until the proxy closes it
/// or `wait` passes without data.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}
