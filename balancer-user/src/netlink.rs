//! The host's addresses through rtnetlink: a takeover moves the floating
//! addresses with a few netlink messages, never waiting for a process to
//! start.

use std::{future::Future, net::IpAddr};

use anyhow::{Context, Result, anyhow};
use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};

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
