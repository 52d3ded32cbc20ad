//! Binding the one listen address, with the checks that keep the proxy off
//! untrusted networks: the address is never a wildcard (the config type
//! cannot hold one), and with `proxy.interface` set it must be assigned to
//! that interface.

use crate::error::StartError;
use pulp_auth_config::Proxy;
use std::io::ErrorKind;
use std::net::IpAddr;
use tokio::net::TcpListener;

/// Checks the interface rule, then binds `proxy.listen`.
pub async fn bind(proxy: &Proxy) -> Result<TcpListener, StartError> {
    let addr = proxy.listen.socket_addr();
    if let Some(interface) = &proxy.interface {
        check_interface(addr.ip(), interface.as_str())?;
    }
    TcpListener::bind(addr).await.map_err(|source| {
        let hint = match source.kind() {
            ErrorKind::AddrNotAvailable => {
                " (the address is not on this host: run `ci-builder net up`, or fix proxy.listen)"
            }
            ErrorKind::PermissionDenied => {
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE; the systemd unit grants it)"
            }
            ErrorKind::AddrInUse => {
                " (another process listens there; stop it or pick another port)"
            }
            _ => "",
        };
        StartError::Bind { addr, source, hint }
    })
}

/// Refuses unless `ip` is one of `interface`'s addresses.
pub fn check_interface(ip: IpAddr, interface: &str) -> Result<(), StartError> {
    let addrs = if_addrs::get_if_addrs().map_err(StartError::Interfaces)?;
    let ip = ip.to_canonical();
    let on_it: Vec<IpAddr> = addrs
        .iter()
        .filter(|a| a.name == interface)
        .map(|a| a.ip())
        .collect();
    if on_it.contains(&ip) {
        return Ok(());
    }
    let elsewhere: Vec<&str> = addrs
        .iter()
        .filter(|a| a.ip() == ip)
        .map(|a| a.name.as_str())
        .collect();
    let mut found = if on_it.is_empty() {
        format!("{interface} is missing or has no address")
    } else {
        let list: Vec<String> = on_it.iter().map(|a| a.to_string()).collect();
        format!("{interface} has {}", list.join(", "))
    };
    if let Some(other) = elsewhere.first() {
        found.push_str(&format!("; the address is on {other}"));
    }
    Err(StartError::NotOnInterface {
        addr: ip,
        interface: interface.to_string(),
        found,
    })
}

/// Takes the listening socket systemd passed (`LISTEN_FDS`/`LISTEN_PID`,
/// as with `pulp-auth-proxy.socket`), if any, and holds it to the same rules
/// as one the proxy binds itself: exactly `proxy.listen`, never a wildcard,
/// on `proxy.interface` when set.
pub fn inherited(proxy: &Proxy) -> Result<Option<TcpListener>, StartError> {
    let mut fds = listenfd::ListenFd::from_env();
    let bad = |reason: String| StartError::Inherited(reason);
    match fds.len() {
        0 => return Ok(None),
        1 => {}
        n => {
            return Err(bad(format!(
                "systemd passed {n} sockets; the proxy takes exactly one (one ListenStream= in pulp-auth-proxy.socket)"
            )))
        }
    }
    let socket = fds
        .take_tcp_listener(0)
        .map_err(|e| bad(format!("the passed socket is not a TCP listener: {e}")))?
        .ok_or_else(|| bad("the passed socket was already taken".into()))?;
    let local = socket
        .local_addr()
        .map_err(|e| bad(format!("cannot read the passed socket's address: {e}")))?;
    pulp_auth_config::ListenAddr::new(local).map_err(|e| bad(format!("the passed socket {e}")))?;
    if local != proxy.listen.socket_addr() {
        return Err(bad(format!(
            "the passed socket listens on {local} but proxy.listen is {}; make ListenStream= match proxy.listen",
            proxy.listen
        )));
    }
    if let Some(interface) = &proxy.interface {
        check_interface(local.ip(), interface.as_str())?;
    }
    socket
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(socket))
        .map(Some)
        .map_err(|e| bad(format!("cannot use the passed socket: {e}")))
}

/// Binds `proxy.metrics_listen` (loopback or another trusted address; the
/// config type already refused wildcards).
pub async fn bind_metrics(addr: pulp_auth_config::ListenAddr) -> Result<TcpListener, StartError> {
    let addr = addr.socket_addr();
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr,
            source,
            hint: " (proxy.metrics_listen)",
        })
}
