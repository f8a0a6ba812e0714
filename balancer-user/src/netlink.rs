//! The host's addresses through rtnetlink: a takeover moves the floating
//! addresses with a few netlink messages, never waiting for a process to
//! start.

use std::{future::Future, net::IpAddr};

use anyhow::{Context, Result, anyhow};
use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::{
        address::{AddressAttribute, AddressHeaderFlags, AddressMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
    },
};

/// An address of the host and the interface that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    pub ifindex: u32,
    pub net: IpNet,
}

/// A netlink connection, served on the tokio runtime it was made on.
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Connects; the connection's task runs on the current runtime.
    pub fn connect() -> Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Every address of the host (this network namespace).
    pub async fn addresses(&self) -> Result<Vec<HostAddress>> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .context("listing the host's addresses")?;
        Ok(messages
            .iter()
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    // IFA_LOCAL is the address itself where a peer is set
                    // (IPv4); IFA_ADDRESS otherwise.
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let ip = ip.or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })?;
                let net = IpNet::new(ip, m.header.prefix_len).ok()?;
                Some(HostAddress {
                    ifindex: m.header.index,
                    net,
                })
            })
            .collect())
    }

    /// Adds `net` (an address and its prefix) to the interface `ifindex`; an
    /// IPv6 address skips duplicate address detection, so that it works at once.
    pub async fn add_address(&self, ifindex: u32, net: IpNet) -> Result<()> {
        let mut request = self
            .handle
            .address()
            .add(ifindex, net.addr(), net.prefix_len());
        if net.addr().is_ipv6() {
            request.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        request
            .execute()
            .await
            .with_context(|| format!("adding {net} to ifindex {ifindex}"))
    }

    /// Removes `net` from the interface `ifindex`.
    pub async fn del_address(&self, ifindex: u32, net: IpNet) -> Result<()> {
        let found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .set_address_filter(net.addr())
            .execute()
            .try_next()
            .await
            .with_context(|| format!("finding {net} on ifindex {ifindex}"))?
            .ok_or_else(|| anyhow!("{net} is not on ifindex {ifindex}"))?;
        self.handle
            .address()
            .del(found)
            .execute()
            .await
            .with_context(|| format!("removing {net} from ifindex {ifindex}"))
    }

    /// Whether an XDP program is attached to the interface `ifindex`.
    pub async fn xdp_attached(&self, ifindex: u32) -> Result<bool> {
        use rtnetlink::packet_route::link::{LinkAttribute, LinkXdp, XdpAttached};
        let link = self
            .handle
            .link()
            .get()
            .match_index(ifindex)
            .execute()
            .try_next()
            .await
            .with_context(|| format!("reading link {ifindex}"))?
            .ok_or_else(|| anyhow!("no link with index {ifindex}"))?;
        Ok(link.attributes.iter().any(|a| match a {
            LinkAttribute::Xdp(xdp) => xdp.iter().any(|x| match x {
                LinkXdp::Attached(how) => *how != XdpAttached::None,
                LinkXdp::ProgId(id) => *id != 0,
                _ => false,
            }),
            _ => false,
        }))
    }

    /// The interface that holds `ip`, if any.
    pub async fn interface_of(&self, ip: IpAddr) -> Result<Option<u32>> {
        Ok(self
            .addresses()
            .await?
            .into_iter()
            .find(|a| a.net.addr() == ip)
            .map(|a| a.ifindex))
    }
}

/// A host route of this program's in a routing table of its own: what a
/// routing daemon exports. Blackhole: it says where to announce, not where
/// to forward (nothing routes through that table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostRoute {
    pub table: u32,
    pub protocol: u8,
    pub ip: IpAddr,
}

impl HostRoute {
    fn message(&self) -> RouteMessage {
        let prefix = if self.ip.is_ipv4() { 32 } else { 128 };
        RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(self.ip, prefix)
            .expect("a host prefix of the address's own family")
            .table_id(self.table)
            .protocol(RouteProtocol::Other(self.protocol))
            .scope(RouteScope::Universe)
            .kind(RouteType::BlackHole)
            .build()
    }
}

impl Netlink {
    /// Adds `route`, or replaces one to the same prefix in the same table.
    pub async fn add_route(&self, route: HostRoute) -> Result<()> {
        self.handle
            .route()
            .add(route.message())
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding a route to {} in table {}", route.ip, route.table))
    }

    /// Removes `route`; one already gone is no error.
    pub async fn del_route(&self, route: HostRoute) -> Result<()> {
        match self.handle.route().del(route.message()).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            Err(e) => Err(anyhow!(e)).with_context(|| {
                format!(
                    "removing the route to {} from table {}",
                    route.ip, route.table
                )
            }),
        }
    }

    /// The host routes of `protocol` in `table`, both families.
    pub async fn routes(&self, table: u32, protocol: u8) -> Result<Vec<HostRoute>> {
        let mut found = Vec::new();
        for dump in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let messages: Vec<RouteMessage> = self
                .handle
                .route()
                .get(dump)
                .execute()
                .try_collect()
                .await
                .context("listing the routes")?;
            for m in messages {
                let in_table = m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(m.header.table));
                let host = m.header.destination_prefix_length
                    == if m.header.address_family == rtnetlink::packet_route::AddressFamily::Inet {
                        32
                    } else {
                        128
                    };
                if in_table != table || u8::from(m.header.protocol) != protocol || !host {
                    continue;
                }
                let ip = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                    RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                    _ => None,
                });
                if let Some(ip) = ip {
                    found.push(HostRoute {
                        table,
                        protocol,
                        ip,
                    });
                }
            }
        }
        Ok(found)
    }
}

/// Runs `work` on a connection of its own from code that cannot wait
/// (a `Drop`): on a thread with its own runtime, so that it works whether or
/// not the caller is inside one.
pub fn blocking<T, F, W>(work: W) -> Result<T>
where
    T: Send,
    F: Future<Output = Result<T>>,
    W: FnOnce(Netlink) -> F + Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("a runtime for netlink")?;
                runtime.block_on(async { work(Netlink::connect()?).await })
            })
            .join()
            .map_err(|_| anyhow!("the netlink thread panicked"))?
    })
}
