//! `ci-builder net`: the trusted bridge of `[network]`, made and checked
//! over netlink. `up` is get-or-create and changes nothing when a conflict
//! is found; `down` removes only what `up` makes and keeps going past
//! failures; `status` compares the kernel's view with the config.

pub mod netlink;
pub mod persist;

use crate::error::{BuilderError, NetFailures};
use ipnet::IpNet;
use netlink::{Address, Kind, Link, Netlink, NetlinkError};
use pulp_auth_config::Network;

/// The kernel's view of the links and addresses `[network]` names.
struct View {
    links: Vec<Link>,
    addresses: Vec<Address>,
}

impl View {
    async fn read(nl: &Netlink) -> Result<Self, BuilderError> {
        Ok(Self {
            links: nl.links().await.map_err(net_err)?,
            addresses: nl.addresses().await.map_err(net_err)?,
        })
    }

    fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    fn name_of(&self, index: u32) -> String {
        self.links
            .iter()
            .find(|l| l.index == index)
            .map_or_else(|| format!("#{index}"), |l| l.name.clone())
    }

    fn addresses_of(&self, index: u32) -> Vec<IpNet> {
        self.addresses
            .iter()
            .filter(|a| a.index == index)
            .map(|a| a.net)
            .collect()
    }
}

fn net_err(e: NetlinkError) -> BuilderError {
    if e.is_permission() {
        BuilderError::NotPermitted(e.op)
    } else {
        BuilderError::Netlink(e)
    }
}

/// Every reason `up` must not touch anything, found before any change.
fn conflicts(net: &Network, view: &View) -> Vec<String> {
    let mut out = Vec::new();
    let bridge = net.bridge.as_str();
    if let Some(link) = view.link(bridge) {
        if link.kind.as_deref() != Some("bridge") {
            out.push(format!(
                "a link named {bridge} exists but is {}, not a bridge; remove it or set network.bridge to another name",
                describe_kind(link)
            ));
        }
    }
    for port in &net.ports {
        if let Some(link) = view.link(port.as_str()) {
            if link.kind.as_deref() != Some("dummy") {
                out.push(format!(
                    "a link named {port} exists but is {}, not a dummy; remove it or change network.ports",
                    describe_kind(link)
                ));
            } else if let Some(m) = link.master {
                if view.link(bridge).map(|b| b.index) != Some(m) {
                    out.push(format!("{port} is already a port of {}", view.name_of(m)));
                }
            }
        }
    }
    let ip = net.address.addr();
    for a in &view.addresses {
        let on = view.name_of(a.index);
        if a.net.addr() == ip && on != bridge {
            out.push(format!(
                "{ip} is already assigned to {on}; remove it there or change network.address"
            ));
        } else if a.net.addr() == ip && a.net.prefix_len() != net.address.prefix_len() {
            out.push(format!(
                "{bridge} has {} but network.address is {}; remove the old address first",
                a.net, net.address
            ));
        }
    }
    out
}

fn describe_kind(link: &Link) -> String {
    match &link.kind {
        Some(k) => format!("a {k}"),
        None => "a device without a link kind".to_string(),
    }
}

/// What `up` did, for the operator.
#[derive(Debug, Default)]
pub struct UpReport {
    /// One line per change.
    pub changes: Vec<String>,
    /// Things that did not stop `up`.
    pub warnings: Vec<String>,
}

/// `net up`.
pub async fn up(net: &Network) -> Result<UpReport, BuilderError> {
    let nl = Netlink::connect().map_err(BuilderError::NetlinkSocket)?;
    let view = View::read(&nl).await?;
    let problems = conflicts(net, &view);
    if !problems.is_empty() {
        return Err(BuilderError::Conflict(problems));
    }
    let mut report = UpReport::default();
    let mut created: Vec<(u32, String)> = Vec::new();
    match apply(&nl, net, &view, &mut report, &mut created).await {
        Ok(()) => Ok(report),
        Err(e) => {
            // Leave nothing half-made: remove what this run created.
            for (index, name) in created.iter().rev() {
                let _ = nl.delete(*index, name).await;
            }
            Err(e)
        }
    }
}

async fn apply(
    nl: &Netlink,
    net: &Network,
    view: &View,
    report: &mut UpReport,
    created: &mut Vec<(u32, String)>,
) -> Result<(), BuilderError> {
    let bridge_name = net.bridge.as_str();
    let bridge = match view.link(bridge_name) {
        Some(l) => l.clone(),
        None => {
            nl.create(bridge_name, Kind::Bridge)
                .await
                .map_err(net_err)?;
            let l = find(nl, bridge_name).await?;
            created.push((l.index, bridge_name.to_string()));
            report.changes.push(format!("created bridge {bridge_name}"));
            l
        }
    };
    if !view.addresses_of(bridge.index).contains(&net.address) {
        nl.add_address(bridge.index, net.address, bridge_name)
            .await
            .map_err(net_err)?;
        report
            .changes
            .push(format!("added {} to {bridge_name}", net.address));
    }
    for port in &net.ports {
        let name = port.as_str();
        let link = match view.link(name) {
            Some(l) => l.clone(),
            None => match nl.create(name, Kind::Dummy).await {
                Ok(()) => {
                    let l = find(nl, name).await?;
                    created.push((l.index, name.to_string()));
                    report.changes.push(format!("created dummy {name}"));
                    l
                }
                Err(e) if e.is_unsupported() => {
                    report.warnings.push(format!(
                        "this kernel has no dummy interface support; {bridge_name} runs without port {name} \
                         (its address still works for local and container traffic)"
                    ));
                    continue;
                }
                Err(e) => return Err(net_err(e)),
            },
        };
        if link.master != Some(bridge.index) {
            nl.set_master(link.index, bridge.index, name)
                .await
                .map_err(net_err)?;
            report
                .changes
                .push(format!("enslaved {name} to {bridge_name}"));
        }
        if !link.up {
            nl.set_up(link.index, name).await.map_err(net_err)?;
            report.changes.push(format!("set {name} up"));
        }
    }
    if !bridge.up {
        nl.set_up(bridge.index, bridge_name)
            .await
            .map_err(net_err)?;
        report.changes.push(format!("set {bridge_name} up"));
    }
    Ok(())
}

async fn find(nl: &Netlink, name: &str) -> Result<Link, BuilderError> {
    nl.links()
        .await
        .map_err(net_err)?
        .into_iter()
        .find(|l| l.name == name)
        .ok_or_else(|| BuilderError::Vanished(name.to_string()))
}

/// `net down`: deletes the ports (dummies only) and the bridge (bridges
/// only). Keeps going past a failure and reports every one.
pub async fn down(net: &Network) -> Result<Vec<String>, BuilderError> {
    let nl = Netlink::connect().map_err(BuilderError::NetlinkSocket)?;
    let view = View::read(&nl).await?;
    let mut done = Vec::new();
    let mut failures = Vec::new();
    let targets = net
        .ports
        .iter()
        .map(|p| (p.as_str(), "dummy"))
        .chain(std::iter::once((net.bridge.as_str(), "bridge")));
    for (name, kind) in targets {
        let Some(link) = view.link(name) else {
            continue;
        };
        if link.kind.as_deref() != Some(kind) {
            failures.push(format!(
                "{name} is {}, not a {kind}; left alone (ci-builder net up did not make it)",
                describe_kind(link)
            ));
            continue;
        }
        match nl.delete(link.index, name).await {
            Ok(()) => done.push(format!("deleted {kind} {name}")),
            Err(e) if e.is_permission() => return Err(BuilderError::NotPermitted(e.op)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        Ok(done)
    } else {
        Err(BuilderError::Down(NetFailures { done, failures }))
    }
}

/// One row of `net status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkStatus {
    /// Interface name.
    pub name: String,
    /// What the config wants it to be.
    pub role: &'static str,
    /// Kind as the kernel reports it; `None` when missing.
    pub kind: Option<String>,
    /// `up`, `down` or `missing`.
    pub state: &'static str,
    /// The bridge it is enslaved to.
    pub master: Option<String>,
    /// Its addresses.
    pub addresses: Vec<String>,
}

/// `net status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The configured links.
    pub links: Vec<LinkStatus>,
    /// Whether the host matches the config.
    pub matches: bool,
    /// What differs, one line each.
    pub differences: Vec<String>,
    /// Notes that are not differences.
    pub notes: Vec<String>,
}

/// Compares the kernel's view with `[network]`.
pub async fn status(net: &Network) -> Result<Status, BuilderError> {
    let nl = Netlink::connect().map_err(BuilderError::NetlinkSocket)?;
    let view = View::read(&nl).await?;
    let mut differences = Vec::new();
    let mut notes = Vec::new();
    let mut rows = Vec::new();
    let bridge_name = net.bridge.as_str();
    let bridge = view.link(bridge_name);
    rows.push(row(&view, bridge_name, "bridge", bridge));
    match bridge {
        None => differences.push(format!("{bridge_name} is missing")),
        Some(b) => {
            if b.kind.as_deref() != Some("bridge") {
                differences.push(format!(
                    "{bridge_name} is {}, not a bridge",
                    describe_kind(b)
                ));
            }
            if !b.up {
                differences.push(format!("{bridge_name} is down"));
            }
            if !view.addresses_of(b.index).contains(&net.address) {
                differences.push(format!("{bridge_name} lacks {}", net.address));
            }
        }
    }
    let dummy_supported = std::path::Path::new("/sys/module/dummy").exists();
    for port in &net.ports {
        let name = port.as_str();
        let link = view.link(name);
        rows.push(row(&view, name, "port", link));
        match link {
            None if !dummy_supported => notes.push(format!(
                "{name} is missing: this kernel has no dummy interface support, so the bridge runs without it"
            )),
            None => differences.push(format!("{name} is missing")),
            Some(l) => {
                if l.kind.as_deref() != Some("dummy") {
                    differences.push(format!("{name} is {}, not a dummy", describe_kind(l)));
                }
                if bridge.is_none() || l.master != bridge.map(|b| b.index) {
                    differences.push(format!("{name} is not a port of {bridge_name}"));
                }
                if !l.up {
                    differences.push(format!("{name} is down"));
                }
            }
        }
    }
    Ok(Status {
        links: rows,
        matches: differences.is_empty(),
        differences,
        notes,
    })
}

fn row(view: &View, name: &str, role: &'static str, link: Option<&Link>) -> LinkStatus {
    LinkStatus {
        name: name.to_string(),
        role,
        kind: link.and_then(|l| l.kind.clone()),
        state: match link {
            None => "missing",
            Some(l) if l.up => "up",
            Some(_) => "down",
        },
        master: link.and_then(|l| l.master).map(|m| view.name_of(m)),
        addresses: link
            .map(|l| {
                view.addresses_of(l.index)
                    .iter()
                    .map(|a| a.to_string())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

impl Status {
    /// The human table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<16} {:<7} {:<8} {:<8} {:<12} ADDRESSES\n",
            "LINK", "ROLE", "KIND", "STATE", "MASTER"
        );
        for l in &self.links {
            out.push_str(&format!(
                "{:<16} {:<7} {:<8} {:<8} {:<12} {}\n",
                l.name,
                l.role,
                l.kind.as_deref().unwrap_or("-"),
                l.state,
                l.master.as_deref().unwrap_or("-"),
                if l.addresses.is_empty() {
                    "-".to_string()
                } else {
                    l.addresses.join(" ")
                }
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        if self.matches {
            out.push_str("matches the configuration\n");
        } else {
            for d in &self.differences {
                out.push_str(&format!("differs: {d}\n"));
            }
        }
        out
    }
}
