//! ICMP errors about tracked flows are translated both ways (path MTU
//! discovery through the balancer); other ICMP is the host's.

mod common;

use balancer_common::{csum, stats::Counter};
use common::*;
use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4::DestUnreachableHeader};

const ROUTER_BACK: [u8; 4] = [203, 0, 113, 254];
const ROUTER_FRONT: [u8; 4] = [198, 51, 100, 254];

/// "Fragmentation needed" from `router` to `dst`, quoting `quote` (an IP packet).
fn frag_needed(router: [u8; 4], dst: [u8; 4], quote: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, FRONT_MAC)
        .ipv4(router, dst, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut v, quote)
        .unwrap();
    v
}

/// The IPv4 ICMP message of a frame, after checking both checksums it holds.
fn icmp4_of(frame: &[u8]) -> (&[u8], [u8; 4], [u8; 4]) {
    let ip = &frame[14..34];
    assert_eq!(csum::checksum(0, ip), 0, "outer IPv4 header checksum");
    let icmp = &frame[34..];
    assert_eq!(csum::checksum(0, icmp), 0, "ICMP checksum");
    (
        icmp,
        ip[12..16].try_into().unwrap(),
        ip[16..20].try_into().unwrap(),
    )
}

/// What the quoted IPv4 packet says: (src, sport, dst, dport), header checksum checked.
fn quoted4(icmp: &[u8]) -> ([u8; 4], u16, [u8; 4], u16) {
    let q = &icmp[8..];
    assert_eq!(
        csum::checksum(0, &q[..20]),
        0,
        "quoted IPv4 header checksum"
    );
    (
        q[12..16].try_into().unwrap(),
        u16::from_be_bytes([q[20], q[21]]),
        q[16..20].try_into().unwrap(),
        u16::from_be_bytes([q[22], q[23]]),
    )
}

#[test]
fn frag_needed_from_the_backend_side_reaches_the_client() {
    let Some(fx) = Fixture::new() else { return };
    let (_, out) = fx.run(&tcp_frame(CLIENT, VIP, 51000, 80, "S", b"x"), fx.front);
    // A router on the way to the backend quotes the packet we sent (IP header
    // and the first 8 bytes of TCP, the least RFC 792 asks).
    let err = frag_needed(ROUTER_BACK, SNAT, &out[14..14 + 28]);
    let (action, out) = fx.run(&err, fx.back);
    assert_eq!(action, XDP_REDIRECT, "out of front, to the client");
    let (icmp, src, dst) = icmp4_of(&out);
    assert_eq!((src, dst), (VIP, CLIENT));
    assert_eq!(&icmp[..2], &[3, 4], "still fragmentation needed");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1400, "MTU kept");
    assert_eq!(
        quoted4(icmp),
        (CLIENT, 51000, VIP, 80),
        "as the client sent it"
    );
    assert_eq!(&out[..6], &CLIENT_MAC);
    assert_eq!(fx.dp.counter(Counter::IcmpRelayed).unwrap(), 1);
}

#[test]
fn frag_needed_from_the_client_side_reaches_the_backend() {
    let Some(fx) = Fixture::new() else { return };
    let (_, out) = fx.run(&tcp_frame(CLIENT, VIP, 51000, 80, "S", b""), fx.front);
    let fwd = inspect(&out);
    let answer = tcp_frame(fwd.dst, SNAT, 8080, fwd.sport, "SA", &[7; 40]);
    let (_, reply) = fx.run(&answer, fx.back);
    // A router towards the client quotes our reply, whole (TCP checksum too).
    let err = frag_needed(ROUTER_FRONT, VIP, &reply[14..]);
    let (action, out) = fx.run(&err, fx.front);
    assert_eq!(action, XDP_REDIRECT, "out of back, to the backend");
    let (icmp, src, dst) = icmp4_of(&out);
    assert_eq!((src, dst), (SNAT, fwd.dst));
    assert_eq!(
        quoted4(icmp),
        (fwd.dst, 8080, SNAT, fwd.sport),
        "as the backend sent it"
    );
    // The whole quote is the backend's own packet again, TCP checksum included.
    assert_eq!(&icmp[8..], &answer[14..]);
}

#[test]
fn packet_too_big_from_the_backend_side_reaches_the_ipv6_client() {
    let config = config_with_ipv6();
    let Some(fx) = Fixture::with_config(&config, 4096) else {
        return;
    };
    let (_, out) = fx.run(&tcp6_frame(CLIENT6, VIP6, 52000, 80, "S", b""), fx.front);
    let fwd = inspect6(&out);
    let mut err = Vec::new();
    PacketBuilder::ethernet2(BACK_MAC, backend_mac6(fwd.dst))
        .ipv6(fwd.dst, SNAT6, 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut err, &out[14..])
        .unwrap();
    let (action, out) = fx.run(&err, fx.back);
    assert_eq!(action, XDP_REDIRECT);
    let ip = &out[14..54];
    assert_eq!((&ip[8..24], &ip[24..40]), (&VIP6[..], &CLIENT6[..]));
    let icmp = &out[54..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[8..40]);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    assert_eq!(
        csum::checksum(csum::sum_be(0, &pseudo), icmp),
        0,
        "ICMPv6 checksum"
    );
    let q = &icmp[8..];
    assert_eq!((&q[8..24], &q[24..40]), (&CLIENT6[..], &VIP6[..]));
    assert_eq!(
        (
            u16::from_be_bytes([q[40], q[41]]),
            u16::from_be_bytes([q[42], q[43]])
        ),
        (52000, 80)
    );
}

#[test]
fn other_icmp_is_the_hosts() {
    let Some(fx) = Fixture::new() else { return };
    // An error about no flow of ours.
    let stranger = tcp_frame(SNAT, BACKENDS[0], 40001, 8080, "S", b"");
    let err = frag_needed(ROUTER_BACK, SNAT, &stranger[14..14 + 28]);
    assert_eq!(fx.run(&err, fx.back), (XDP_PASS, err));
    // An echo request to the VIP: the host answers it.
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, FRONT_MAC)
        .ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"ping")
        .unwrap();
    assert_eq!(fx.run(&ping, fx.front), (XDP_PASS, ping));
}

#[test]
fn cut_errors_pass_or_drop_never_forward_broken() {
    let Some(fx) = Fixture::new() else { return };
    let (_, out) = fx.run(&tcp_frame(CLIENT, VIP, 53000, 80, "S", b""), fx.front);
    let err = frag_needed(ROUTER_BACK, SNAT, &out[14..]);
    for len in 14..err.len() {
        let cut = &err[..len];
        let (action, got) = fx.run(cut, fx.back);
        match action {
            XDP_PASS => assert_eq!(got, cut, "cut at {len}"),
            XDP_DROP => {}
            XDP_REDIRECT => {
                // Enough of the quote for its ports: translated, checksums whole.
                assert!(len >= 14 + 20 + 8 + 20 + 4, "cut at {len}");
                icmp4_of(&got);
            }
            other => panic!("cut at {len}: action {other}"),
        }
    }
}
