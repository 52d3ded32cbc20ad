//! `ci-builder net`: the trusted bridge of `[network]`, made and checked
//! over netlink. `up` is get-or-create and changes nothing when a conflict
//! is found; `down` removes only what `up` makes and keeps going past
//! failures; `status` compares the kernel's view with the config.

pub mod netlink;
pub mod persist;

use crate::error::{BuilderError, NetFailures};
use ipnet::IpNet;
use netlink::{Address, Kind, Link, LinkKind, Netlink, NetlinkError};
use pulp_auth_config::Network;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

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
        BuilderError::NotPermitted(e)
    } else {
        BuilderError::Netlink(e)
    }
}

/// Something in the way of `net up`; it changes nothing when it finds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// A link has the bridge's or a port's name but another kind.
    WrongKind {
        /// The link's name.
        name: String,
        /// What the kernel says it is.
        found: Option<LinkKind>,
        /// What `[network]` wants there.
        wanted: Kind,
    },
    /// A port is already enslaved to another bridge.
    PortOfOther {
        /// The port.
        port: String,
        /// The bridge it belongs to (or `#index`).
        master: String,
    },
    /// `network.address` is already on another interface.
    AddressElsewhere {
        /// The address without prefix.
        ip: IpAddr,
        /// The interface that has it.
        on: String,
    },
    /// The bridge has `network.address` with another prefix length.
    PrefixDiffers {
        /// The bridge.
        bridge: String,
        /// The address as the bridge has it.
        found: IpNet,
        /// `network.address`.
        wanted: IpNet,
    },
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::WrongKind {
                name,
                found,
                wanted,
            } => {
                let fix = match wanted {
                    Kind::Bridge => "set network.bridge to another name",
                    Kind::Dummy => "change network.ports",
                };
                write!(
                    f,
                    "a link named {name} exists but is {}, not a {wanted}; remove it or {fix}",
                    describe_kind(found.as_ref())
                )
            }
            Conflict::PortOfOther { port, master } => {
                write!(f, "{port} is already a port of {master}")
            }
            Conflict::AddressElsewhere { ip, on } => write!(
                f,
                "{ip} is already assigned to {on}; remove it there or change network.address"
            ),
            Conflict::PrefixDiffers {
                bridge,
                found,
                wanted,
            } => write!(
                f,
                "{bridge} has {found} but network.address is {wanted}; remove the old address first"
            ),
        }
    }
}

/// Every reason `up` must not touch anything, found before any change.
fn conflicts(net: &Network, view: &View) -> Vec<Conflict> {
    let mut out = Vec::new();
    let bridge = net.bridge.as_str();
    if let Some(link) = view.link(bridge) {
        if !link.is(Kind::Bridge) {
            out.push(Conflict::WrongKind {
                name: bridge.to_string(),
                found: link.kind.clone(),
                wanted: Kind::Bridge,
            });
        }
    }
    for port in &net.ports {
        if let Some(link) = view.link(port.as_str()) {
            if !link.is(Kind::Dummy) {
                out.push(Conflict::WrongKind {
                    name: port.to_string(),
                    found: link.kind.clone(),
                    wanted: Kind::Dummy,
                });
            } else if let Some(m) = link.master {
                if view.link(bridge).map(|b| b.index) != Some(m) {
                    out.push(Conflict::PortOfOther {
                        port: port.to_string(),
                        master: view.name_of(m),
                    });
                }
            }
        }
    }
    let ip = net.address.addr();
    for a in &view.addresses {
        let on = view.name_of(a.index);
        if a.net.addr() == ip && on != bridge {
            out.push(Conflict::AddressElsewhere { ip, on });
        } else if a.net.addr() == ip && a.net.prefix_len() != net.address.prefix_len() {
            out.push(Conflict::PrefixDiffers {
                bridge: bridge.to_string(),
                found: a.net,
                wanted: net.address,
            });
        }
    }
    out
}

fn describe_kind(kind: Option<&LinkKind>) -> String {
    match kind {
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

/// `net up`: looks for conflicts first and changes nothing if it finds
/// one; otherwise creates what is missing and, if a step fails, removes
/// what this run created.
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
        .ok_or_else(|| BuilderError::Vanished {
            link: name.to_string(),
        })
}

/// Why `net down` could not remove a link.
#[derive(Debug)]
pub enum DownFailure {
    /// The link has the configured name but not the kind `up` makes.
    NotOurs {
        /// The link's name.
        name: String,
        /// What the kernel says it is.
        found: Option<LinkKind>,
        /// What `up` would have made.
        wanted: Kind,
    },
    /// The kernel refused to delete it.
    Netlink(NetlinkError),
}

impl fmt::Display for DownFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownFailure::NotOurs {
                name,
                found,
                wanted,
            } => write!(
                f,
                "{name} is {}, not a {wanted}; left alone (ci-builder net up did not make it)",
                describe_kind(found.as_ref())
            ),
            DownFailure::Netlink(e) => e.fmt(f),
        }
    }
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
        .map(|p| (p.as_str(), Kind::Dummy))
        .chain(std::iter::once((net.bridge.as_str(), Kind::Bridge)));
    for (name, kind) in targets {
        let Some(link) = view.link(name) else {
            continue;
        };
        if !link.is(kind) {
            failures.push(DownFailure::NotOurs {
                name: name.to_string(),
                found: link.kind.clone(),
                wanted: kind,
            });
            continue;
        }
        match nl.delete(link.index, name).await {
            Ok(()) => done.push(format!("deleted {kind} {name}")),
            Err(e) if e.is_permission() => return Err(BuilderError::NotPermitted(e)),
            Err(e) => failures.push(DownFailure::Netlink(e)),
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
    /// What the config wants it to be: `bridge` or `port`.
    pub role: &'static str,
    /// Kind as the kernel names it (`bridge`, `dummy`, `veth`, ...);
    /// `None` when missing or without a link kind.
    pub kind: Option<String>,
    /// `up`, `down` or `missing`.
    pub state: &'static str,
    /// The bridge it is enslaved to.
    pub master: Option<String>,
    /// Its addresses with prefix length, e.g. `192.168.33.3/24`.
    pub addresses: Vec<String>,
}

/// What `net status` found: one row per configured link, and whether
/// (and how) the host differs from `[network]`.
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
            if !b.is(Kind::Bridge) {
                differences.push(format!(
                    "{bridge_name} is {}, not a bridge",
                    describe_kind(b.kind.as_ref())
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
    let dummy_supported = Path::new("/sys/module/dummy").exists();
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
                if !l.is(Kind::Dummy) {
                    differences.push(format!(
                        "{name} is {}, not a dummy",
                        describe_kind(l.kind.as_ref())
                    ));
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
        kind: link.and_then(|l| l.kind.as_ref()).map(|k| k.to_string()),
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
    /// The table `net status` prints without `--json`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use pulp_auth_config::InterfaceName;

    fn network() -> Network {
        Network {
            bridge: InterfaceName::parse("breth1").unwrap(),
            address: "192.168.33.3/24".parse().unwrap(),
            ports: vec![InterfaceName::parse("dummy1").unwrap()],
        }
    }

    fn link(index: u32, name: &str, kind: Option<LinkKind>, master: Option<u32>) -> Link {
        Link {
            index,
            name: name.to_string(),
            kind,
            up: true,
            master,
        }
    }

    fn address(index: u32, net: &str) -> Address {
        Address {
            index,
            net: net.parse().unwrap(),
        }
    }

    fn lines(found: &[Conflict]) -> Vec<String> {
        found.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn the_configured_links_are_no_conflict() {
        let view = View {
            links: vec![
                link(2, "breth1", Some(LinkKind::Known(Kind::Bridge)), None),
                link(3, "dummy1", Some(LinkKind::Known(Kind::Dummy)), Some(2)),
            ],
            addresses: vec![address(2, "192.168.33.3/24")],
        };
        assert_eq!(conflicts(&network(), &view), vec![]);
    }

    #[test]
    fn links_of_the_wrong_kind_are_named_with_their_kind() {
        let view = View {
            links: vec![
                link(2, "breth1", Some(LinkKind::Other("veth".into())), None),
                link(3, "dummy1", None, None),
            ],
            addresses: vec![],
        };
        assert_eq!(
            lines(&conflicts(&network(), &view)),
            [
                "a link named breth1 exists but is a veth, not a bridge; remove it or set network.bridge to another name",
                "a link named dummy1 exists but is a device without a link kind, not a dummy; remove it or change network.ports",
            ]
        );
    }

    #[test]
    fn ports_and_addresses_taken_elsewhere_are_conflicts() {
        let view = View {
            links: vec![
                link(2, "breth1", Some(LinkKind::Known(Kind::Bridge)), None),
                link(3, "dummy1", Some(LinkKind::Known(Kind::Dummy)), Some(4)),
                link(4, "br-other", Some(LinkKind::Known(Kind::Bridge)), None),
                link(5, "other0", Some(LinkKind::Other("veth".into())), None),
            ],
            addresses: vec![address(5, "192.168.33.3/24"), address(2, "192.168.33.3/16")],
        };
        assert_eq!(
            lines(&conflicts(&network(), &view)),
            [
                "dummy1 is already a port of br-other",
                "192.168.33.3 is already assigned to other0; remove it there or change network.address",
                "breth1 has 192.168.33.3/16 but network.address is 192.168.33.3/24; remove the old address first",
            ]
        );
    }

    #[test]
    fn down_says_why_it_left_a_link_alone() {
        let failure = DownFailure::NotOurs {
            name: "breth1".into(),
            found: Some(LinkKind::Other("veth".into())),
            wanted: Kind::Bridge,
        };
        assert_eq!(
            failure.to_string(),
            "breth1 is a veth, not a bridge; left alone (ci-builder net up did not make it)"
        );
    }
}
