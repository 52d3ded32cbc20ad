//! A small typed facade over rtnetlink: the few verbs `net` needs, with
//! kernel errors kept as `io::Error`s so callers can tell "not permitted"
//! and "not supported" from the rest.

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkDummy, LinkMessageBuilder, LinkUnspec};
use std::io;

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name, e.g. `breth1`.
    pub name: String,
    /// `None` for devices without link info (loopback, physical devices).
    pub kind: Option<LinkKind>,
    /// Administratively up.
    pub up: bool,
    /// Index of the bridge it is enslaved to.
    pub master: Option<u32>,
}

impl Link {
    /// Whether the kernel reports this link as `kind`.
    pub fn is(&self, kind: Kind) -> bool {
        self.kind == Some(LinkKind::Known(kind))
    }
}

/// One address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Interface index.
    pub index: u32,
    /// Address with prefix length.
    pub net: IpNet,
}

/// Link kinds `net up` creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Linux bridge.
    Bridge,
    /// A dummy interface (a port that keeps the bridge up).
    Dummy,
}

impl Kind {
    /// The kernel's name for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bridge => "bridge",
            Kind::Dummy => "dummy",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link's kind as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// One of the kinds `net up` creates.
    Known(Kind),
    /// Any other kind, by the kernel's name (`veth`, `vlan`, ...).
    Other(String),
}

impl LinkKind {
    /// The kernel's name for the kind.
    pub fn as_str(&self) -> &str {
        match self {
            LinkKind::Known(k) => k.as_str(),
            LinkKind::Other(name) => name,
        }
    }
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&InfoKind> for LinkKind {
    fn from(kind: &InfoKind) -> Self {
        match kind {
            InfoKind::Bridge => LinkKind::Known(Kind::Bridge),
            InfoKind::Dummy => LinkKind::Known(Kind::Dummy),
            InfoKind::Other(name) => LinkKind::Other(name.clone()),
            other => LinkKind::Other(other.to_string()),
        }
    }
}

/// A netlink request that failed; `op` says which.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct NetlinkError {
    /// What was being done, e.g. `create bridge breth1`.
    pub op: String,
    /// The kernel's answer.
    #[source]
    pub source: io::Error,
}

impl NetlinkError {
    fn new(op: impl Into<String>, e: rtnetlink::Error) -> Self {
        let source = match e {
            rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
            other => io::Error::other(other.to_string()),
        };
        Self {
            op: op.into(),
            source,
        }
    }

    /// EPERM or EACCES: the caller lacks CAP_NET_ADMIN.
    pub fn is_permission(&self) -> bool {
        self.source.kind() == io::ErrorKind::PermissionDenied
            || matches!(self.source.raw_os_error(), Some(1) | Some(13))
    }

    /// EOPNOTSUPP: the kernel has no driver for the kind.
    pub fn is_unsupported(&self) -> bool {
        matches!(self.source.raw_os_error(), Some(95))
    }
}

/// An open rtnetlink connection.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection in the calling thread's network namespace. Needs
    /// a Tokio runtime.
    pub fn connect() -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Every link in this network namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let mut stream = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| NetlinkError::new("list links", e))?
        {
            out.push(to_link(&msg));
        }
        Ok(out)
    }

    /// Every address on every link.
    pub async fn addresses(&self) -> Result<Vec<Address>, NetlinkError> {
        let mut stream = self.handle.address().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| NetlinkError::new("list addresses", e))?
        {
            if let Some(a) = to_address(&msg) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Creates a link of `kind` named `name`, down.
    pub async fn create(&self, name: &str, kind: Kind) -> Result<(), NetlinkError> {
        let msg = match kind {
            // Created down; `up` raises them once they are complete.
            Kind::Bridge => LinkMessageBuilder::<LinkBridge>::new(name).build(),
            Kind::Dummy => LinkMessageBuilder::<LinkDummy>::new(name).build(),
        };
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::new(format!("create {kind} {name}"), e))
    }

    /// Enslaves link `index` to bridge `master`.
    pub async fn set_master(
        &self,
        index: u32,
        master: u32,
        what: &str,
    ) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).controller(master).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::new(format!("enslave {what}"), e))
    }

    /// Sets link `index` administratively up.
    pub async fn set_up(&self, index: u32, what: &str) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::new(format!("set {what} up"), e))
    }

    /// Adds `net` to link `index`.
    pub async fn add_address(
        &self,
        index: u32,
        net: IpNet,
        what: &str,
    ) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, net.addr(), net.prefix_len())
            .execute()
            .await
            .map_err(|e| NetlinkError::new(format!("add {net} to {what}"), e))
    }

    /// Deletes link `index`.
    pub async fn delete(&self, index: u32, what: &str) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| NetlinkError::new(format!("delete {what}"), e))
    }
}

fn to_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Controller(m) => link.master = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(LinkKind::from(kind));
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn to_address(msg: &AddressMessage) -> Option<Address> {
    // IFA_LOCAL is the interface's own address on point-to-point links;
    // IFA_ADDRESS otherwise. Prefer LOCAL when present.
    let mut addr = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => addr = Some(*ip),
            AddressAttribute::Address(ip) if addr.is_none() => addr = Some(*ip),
            _ => {}
        }
    }
    let net = IpNet::new(addr?, msg.header.prefix_len).ok()?;
    Some(Address {
        index: msg.header.index,
        net,
    })
}
