//! IPv6 services through BPF_PROG_TEST_RUN: translation both ways, extension
//! headers, fragments, truncation and source rules.

mod common;

use std::net::{IpAddr, SocketAddr};

use balancer_common::stats::Counter;
use balancer_tests::config::{Config, Health, Service};
use common::*;

/// IPv6 services on [`VIP6`]: `web6` (TCP 80, the three [`BACKENDS6`]),
/// `dns6` (UDP 53) and `inside-only` (TCP 81, allowing 2001:db8:1::/64 only).
fn config6() -> Config {
    let backend = |b: usize, port: u16| SocketAddr::from((BACKENDS6[b], port));
    Config::new("v6")
        .snat([SNAT.into(), IpAddr::from(SNAT6)])
        .service(
            Service::tcp("web6", VIP6, 80)
                .health(Health::none())
                .backends([backend(0, 8080), backend(1, 8080), backend(2, 8080)]),
        )
        .service(
            Service::udp("dns6", VIP6, 53)
                .health(Health::none())
                .backend(backend(0, 5353)),
        )
        .service(
            Service::tcp("inside-only", VIP6, 81)
                .allow(["2001:db8:1::/64"])
                .health(Health::none())
                .backend(backend(1, 8080)),
        )
}

fn fixture() -> Option<Fixture> {
    Fixture::with_config(&config6(), 4096)
}

#[test]
fn syn_and_reply_are_translated_with_valid_checksums() {
    let Some(fx) = fixture() else { return };
    let syn = tcp6_frame(CLIENT6, VIP6, 51000, 80, "S", b"");
    let (action, out) = fx.run(&syn, fx.front);
    assert_eq!(action, XDP_REDIRECT);
    let fwd = inspect6(&out);
    assert_eq!(fwd.src, SNAT6);
    assert!(BACKENDS6.contains(&fwd.dst), "{:?}", fwd.dst);
    assert_eq!(fwd.dport, 8080);
    assert_eq!(fwd.eth_dst, backend_mac6(fwd.dst));
    assert_eq!(fwd.eth_src, BACK_MAC);

    let mut reply = tcp6_frame(fwd.dst, SNAT6, 8080, fwd.sport, "SA", b"");
    reply[..12].copy_from_slice(&[BACK_MAC, backend_mac6(fwd.dst)].concat());
    let (action, out) = fx.run(&reply, fx.back);
    assert_eq!(action, XDP_REDIRECT);
    let rep = inspect6(&out);
    assert_eq!(
        (rep.src, rep.sport, rep.dst, rep.dport),
        (VIP6, 80, CLIENT6, 51000)
    );
    assert_eq!(rep.eth_dst, CLIENT_MAC);

    let data = tcp6_frame(CLIENT6, VIP6, 51000, 80, "AP", b"GET / HTTP/1.1\r\n\r\n");
    let (action, out) = fx.run(&data, fx.front);
    assert_eq!(action, XDP_REDIRECT);
    let d = inspect6(&out);
    assert_eq!((d.dst, d.sport), (fwd.dst, fwd.sport));
    assert_eq!(d.payload, b"GET / HTTP/1.1\r\n\r\n");
}

#[test]
fn udp_both_ways() {
    let Some(fx) = fixture() else { return };
    let (action, out) = fx.run(&udp6_frame(CLIENT6, VIP6, 52000, 53, b"q6"), fx.front);
    assert_eq!(action, XDP_REDIRECT);
    let fwd = inspect6(&out);
    assert_eq!((fwd.src, fwd.dst, fwd.dport), (SNAT6, BACKENDS6[0], 5353));
    let reply = udp6_frame(BACKENDS6[0], SNAT6, 5353, fwd.sport, b"a6");
    let (action, out) = fx.run(&reply, fx.back);
    assert_eq!(action, XDP_REDIRECT);
    let rep = inspect6(&out);
    assert_eq!(
        (rep.src, rep.sport, rep.dst, rep.dport),
        (VIP6, 53, CLIENT6, 52000)
    );
    assert_eq!(rep.payload, b"a6");
}

#[test]
fn extension_headers_are_skipped_and_kept() {
    let Some(fx) = fixture() else { return };
    let pad = |len: usize| {
        let mut h = vec![0u8; len];
        h[1] = (len / 8 - 1) as u8;
        h
    };
    // hop-by-hop, then destination options of 16 bytes, then TCP
    let syn = with_ipv6_ext(
        &tcp6_frame(CLIENT6, VIP6, 53000, 80, "S", b""),
        &[(0, pad(8)), (60, pad(16))],
    );
    let (action, out) = fx.run(&syn, fx.front);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(out.len(), syn.len());
    let fwd = inspect6(&out);
    assert_eq!((fwd.src, fwd.dport), (SNAT6, 8080));
    assert_eq!(
        &out[14 + 40..14 + 64],
        &syn[14 + 40..14 + 64],
        "headers kept"
    );
    // A fragment header: the stack reassembles, the program passes it.
    let mut frag = vec![0u8; 8];
    frag[3] = 1; // more fragments
    let fragment = with_ipv6_ext(
        &udp6_frame(CLIENT6, VIP6, 53001, 53, b"part"),
        &[(44, frag)],
    );
    let (action, out) = fx.run(&fragment, fx.front);
    assert_eq!((action, out), (XDP_PASS, fragment));
    assert_eq!(fx.dp.counter(Counter::PassFragment).unwrap(), 1);
    // An extension header longer than the payload is malformed.
    let mut bad = syn.clone();
    bad[14 + 40 + 1] = 200;
    assert_eq!(fx.run(&bad, fx.front).0, XDP_DROP);
}

#[test]
fn truncated_ipv6_frames_pass_or_drop_never_forward() {
    let Some(fx) = fixture() else { return };
    let frames = [
        tcp6_frame(CLIENT6, VIP6, 54000, 80, "S", b"hello"),
        udp6_frame(CLIENT6, VIP6, 54001, 53, b"query"),
    ];
    for frame in frames {
        for len in 14..frame.len() {
            let cut = &frame[..len];
            let (action, out) = fx.run(cut, fx.front);
            assert!(
                action == XDP_PASS || action == XDP_DROP,
                "cut at {len}: {action}"
            );
            if action == XDP_PASS {
                assert_eq!(out, cut, "cut at {len}");
            }
        }
    }
    assert_eq!(fx.dp.counter(Counter::NewFlow).unwrap(), 0);
}

#[test]
fn not_for_us_passes_and_source_rules_apply() {
    let Some(fx) = fixture() else { return };
    let other = tcp6_frame(CLIENT6, v6(1, 1), 55000, 22, "S", b"");
    assert_eq!(fx.run(&other, fx.front), (XDP_PASS, other));
    let inside = tcp6_frame(CLIENT6, VIP6, 55001, 81, "S", b"");
    assert_eq!(fx.run(&inside, fx.front).0, XDP_REDIRECT);
    let outside = tcp6_frame(v6(5, 1), VIP6, 55002, 81, "S", b"");
    assert_eq!(fx.run(&outside, fx.front).0, XDP_DROP);
    assert_eq!(fx.dp.counter(Counter::DropFirewall).unwrap(), 1);
}
