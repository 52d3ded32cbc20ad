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
