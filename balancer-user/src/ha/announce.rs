//! Telling the neighbours that an address moved here: a gratuitous ARP for
//! IPv4, an unsolicited neighbour advertisement (override flag set) for IPv6,
//! sent on the interface that holds the address with a packet socket.

use std::{
    ffi::CString,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, Result, bail};
use balancer_common::csum;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// Announces `ip` as ours on `interface`.
pub fn announce(interface: &str, ip: IpAddr) -> Result<()> {
    let mac = mac_of(interface)?;
    let (frame, dst) = match ip {
        IpAddr::V4(v4) => (gratuitous_arp(mac, v4), [0xff; 6]),
        IpAddr::V6(v6) => (
            unsolicited_na(mac, v6),
            [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
        ),
    };
    send_frame(interface, &frame, dst)
}

fn mac_of(interface: &str) -> Result<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))
        .with_context(|| format!("reading the MAC address of {interface}"))?;
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC address {text:?} of {interface}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{interface} has no Ethernet address"))
}

/// An ARP request for our own address (sender = target), broadcast.
pub fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// A neighbour advertisement for `ip` to all nodes, overriding caches.
pub fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]);
    icmp.extend_from_slice(&0x2000_0000u32.to_be_bytes()); // override
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[2, 1]); // target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(ip, all_nodes, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0x00, 0x00, 0x00, 0x01]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let pseudo = csum::pseudo_header_v6(src.octets(), dst.octets(), 58, msg.len() as u32);
    csum::checksum(pseudo, msg)
}

fn send_frame(interface: &str, frame: &[u8], dst: [u8; 6]) -> Result<()> {
    let name = CString::new(interface)?;
    // SAFETY: a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {interface}");
    }
    // SAFETY: plain socket call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!("packet socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: zeroed sockaddr_ll is valid; the fields set are its documented ones.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&dst);
    // SAFETY: frame and addr outlive the call; the lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if sent < 0 {
        bail!("sending an announcement on {interface}: {err}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_names_the_address_as_sender_and_target() {
        let f = gratuitous_arp([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 51, 100, 10));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[28..32], &[198, 51, 100, 10]);
        assert_eq!(&f[38..42], &[198, 51, 100, 10]);
    }

    #[test]
    fn neighbour_advertisement_checksum_verifies() {
        let ip: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
        let f = unsolicited_na([2, 0, 0, 0, 0, 1], ip);
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136);
        // A message with its checksum in place sums to zero.
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let mut zeroed = icmp.to_vec();
        zeroed[2..4].copy_from_slice(&[0, 0]);
        let sum = icmpv6_checksum(ip, dst, &zeroed);
        assert_eq!(sum.to_be_bytes(), [icmp[2], icmp[3]]);
        assert_eq!(icmpv6_checksum(ip, dst, icmp), 0);
    }
}
