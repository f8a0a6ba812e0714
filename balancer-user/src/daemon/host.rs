//! What the host must provide the data plane: forwarding and related
//! sysctls on the XDP interfaces, the floating addresses, and the SNAT ports
//! kept out of the host's ephemeral range.

use std::net::IpAddr;

use anyhow::Result;

use crate::{
    config::{Config, Forwarding},
    netconf::{self, NetChanges},
    netlink::Netlink,
};

/// VIPs and SNAT addresses: what moves to the active node.
pub fn floating_addresses(config: &Config) -> Vec<IpAddr> {
    let mut addresses: Vec<_> = config.services.iter().map(|s| s.vip).collect();
    if config.node.forwarding == Forwarding::FullNat {
        addresses.extend(config.node.snat_addresses.iter().copied());
    }
    addresses.sort();
    addresses.dedup();
    addresses
}

/// Forwarding on the XDP interfaces (the FIB lookup and the stack's fallback
/// path need it), the floating addresses, and the SNAT port reservation.
pub async fn prepare(config: &Config, net: &mut NetChanges, netlink: &Netlink) -> Result<()> {
    let ipv6 = config.services.iter().any(|s| s.vip.is_ipv6());
    for interface in &config.node.interfaces {
        netconf::ifindex(interface)?;
        net.sysctl(&format!("net.ipv4.conf.{interface}.forwarding"), "1")?;
        if ipv6 {
            // The program's IPv6 FIB lookups need it on the ingress interface.
            net.sysctl(&format!("net.ipv6.conf.{interface}.forwarding"), "1")?;
        }
        // Packets the program translated but left to the stack (unknown
        // neighbour) carry a local source address: VIP or SNAT.
        net.sysctl(&format!("net.ipv4.conf.{interface}.accept_local"), "1")?;
        net.sysctl(&format!("net.ipv4.conf.{interface}.rp_filter"), "0")?;
    }
    // With high availability the active node owns them (the HA thread).
    if !config.ha.enabled {
        net.ensure_local(
            netlink,
            &floating_addresses(config),
            &config.node.interfaces,
        )
        .await?;
    }
    if config.node.forwarding == Forwarding::FullNat {
        let (min, max) = config.node.snat_port_range;
        net.reserve_ports(min, max)?;
    }
    Ok(())
}
