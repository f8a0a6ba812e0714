//! Packet-level behaviour of the XDP program through BPF_PROG_TEST_RUN: a packet
//! in, the action and the packet out asserted, maps written by the daemon's own
//! code (config → plan → Dataplane::apply). Each test runs in a network
//! namespace of its own thread, with static neighbours so that the program's
//! FIB lookups resolve deterministically.

mod common;

/// Backend index of the dns service's backend in the fixture's configuration
/// (after web's three).
const DNS_BACKEND: u32 = 3;

use std::time::{Duration, Instant};

use balancer_common::{ha::Lease, service::BackendIndex, stats::Counter};
use balancer_tests::{
    config::{Config, Health, Service},
    poll_until,
};
use balancer_user::expiry::Timeouts;
use common::*;

#[test]
fn syn_to_vip_is_rewritten_to_a_backend_and_the_reply_to_the_client() {
    let Some(fx) = Fixture::new() else { return };
    let syn = tcp_frame(CLIENT, VIP, 51000, 80, "S", b"");
    let (action, out) = fx.run(&syn, fx.front);
    assert_eq!(action, XDP_REDIRECT, "from front to back is a redirect");
    let fwd = inspect(&out);
    assert_eq!(fwd.src, SNAT);
    assert!(BACKENDS.contains(&fwd.dst), "went to {:?}", fwd.dst);
    assert_eq!(fwd.dport, 8080);
    assert!(
        (40000..=40031).contains(&fwd.sport),
        "snat port {}",
        fwd.sport
    );
    assert_eq!(fwd.eth_dst, backend_mac(fwd.dst));
    assert_eq!(fwd.eth_src, BACK_MAC);
    assert_eq!(fwd.ttl, 64);
    assert_eq!(out.len(), syn.len());

    // The backend answers the SNAT address; the reply goes back out of front.
    let syn_ack = tcp_frame(fwd.dst, SNAT, 8080, fwd.sport, "SA", b"");
    let (action, out) = fx.run(&syn_ack, fx.back);
    assert_eq!(action, XDP_REDIRECT);
    let rep = inspect(&out);
    assert_eq!((rep.src, rep.sport), (VIP, 80));
    assert_eq!((rep.dst, rep.dport), (CLIENT, 51000));
    assert_eq!(rep.eth_dst, CLIENT_MAC);
    assert_eq!(rep.eth_src, FRONT_MAC);

    // Data in both directions keeps the same translation and its payload.
    let data = tcp_frame(CLIENT, VIP, 51000, 80, "AP", b"GET / HTTP/1.0\r\n\r\n");
    let (action, out) = fx.run(&data, fx.front);
    assert_eq!(action, XDP_REDIRECT);
    let d = inspect(&out);
    assert_eq!(
        (d.src, d.sport, d.dst, d.dport),
        (SNAT, fwd.sport, fwd.dst, 8080)
    );
    assert_eq!(d.payload, b"GET / HTTP/1.0\r\n\r\n");

    assert_eq!(fx.dp.counter(Counter::NewFlow).unwrap(), 1);
    assert_eq!(fx.dp.flow_entries().unwrap(), 2, "one entry per direction");
    let idx = BACKENDS.iter().position(|b| *b == fwd.dst).unwrap() as u32;
    assert_eq!(fx.dp.active_conns(BackendIndex(idx)).unwrap(), 1);
    let stats = fx.dp.backend_stats(BackendIndex(idx)).unwrap();
    assert_eq!(
        (stats.packets_to, stats.packets_from, stats.new_flows),
        (2, 1, 1)
    );
}

#[test]
fn reply_out_of_the_same_interface_is_xdp_tx() {
    let Some(fx) = Fixture::new() else { return };
    // A client on the backend side: the reply leaves where the request came in.
    sh("ip neigh add 203.0.113.50 lladdr 02:00:00:00:00:50 dev back nud permanent");
    let syn = tcp_frame([203, 0, 113, 50], VIP, 42000, 80, "S", b"");
    let (action, out) = fx.run(&syn, fx.back);
    assert_eq!(action, XDP_TX);
    let fwd = inspect(&out);
    assert_eq!(fwd.src, SNAT);
    assert_eq!(fx.dp.counter(Counter::ForwardTx).unwrap(), 1);
}

#[test]
fn packets_not_for_a_service_pass_unchanged() {
    let Some(fx) = Fixture::new() else { return };
    let cases = [
        (
            "host's own address",
            tcp_frame(CLIENT, HOST_FRONT, 51000, 22, "S", b""),
        ),
        (
            "VIP, unconfigured port",
            tcp_frame(CLIENT, VIP, 51000, 443, "S", b""),
        ),
        (
            "VIP, UDP on a TCP port",
            udp_frame(CLIENT, VIP, 51000, 80, b"x"),
        ),
        (
            "SNAT address, no flow",
            tcp_frame(BACKENDS[0], SNAT, 8080, 40001, "SA", b""),
        ),
        (
            "other host",
            udp_frame(CLIENT, [192, 0, 2, 1], 5000, 53, b"q"),
        ),
    ];
    for (name, frame) in cases {
        let (action, out) = fx.run(&frame, fx.front);
        assert_eq!(action, XDP_PASS, "{name}");
        assert_eq!(out, frame, "{name}: passed unchanged");
    }
    let mut arp = tcp_frame(CLIENT, VIP, 1, 80, "S", b"");
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let (action, out) = fx.run(&arp, fx.front);
    assert_eq!((action, out), (XDP_PASS, arp), "non-IP ethertype");
    assert_eq!(fx.dp.counter(Counter::NewFlow).unwrap(), 0);
}

/// The VIP is a local address without a socket on the port, so the host's
/// stack answers with a reset: the client of a flow that ended (reset, expired)
/// learns at once instead of retransmitting into a black hole.
#[test]
fn segment_without_flow_goes_to_the_stack_unchanged_and_is_counted() {
    let Some(fx) = Fixture::new() else { return };
    for flags in ["A", "SA", "R", "FA"] {
        let frame = tcp_frame(CLIENT, VIP, 52000, 80, flags, b"");
        let (action, out) = fx.run(&frame, fx.front);
        assert_eq!((action, out), (XDP_PASS, frame), "{flags} without a flow");
    }
    assert_eq!(fx.dp.counter(Counter::PassNoFlow).unwrap(), 4);
    assert_eq!(fx.dp.flow_entries().unwrap(), 0);
}

#[test]
fn truncated_frames_pass_or_drop_never_forward() {
    let Some(fx) = Fixture::new() else { return };
    let full = [
        tcp_frame(CLIENT, VIP, 53000, 80, "S", b"hello"),
        udp_frame(CLIENT, VIP, 53000, 53, b"query"),
    ];
    for frame in full {
        // Every cut from a bare Ethernet header on, at and between the IP and L4
        // header boundaries (BPF_PROG_TEST_RUN refuses frames shorter than an
        // Ethernet header, as no driver hands those to XDP).
        for len in 14..frame.len() {
            let cut = &frame[..len];
            let (action, out) = fx.run(cut, fx.front);
            assert!(
                action == XDP_PASS || action == XDP_DROP,
                "cut at {len}: action {action}"
            );
            if action == XDP_PASS {
                assert_eq!(out, cut, "cut at {len}: passed unchanged");
            }
        }
    }
    assert_eq!(fx.dp.counter(Counter::NewFlow).unwrap(), 0);
    assert!(fx.dp.counter(Counter::DropMalformed).unwrap() > 0);

    // Lengths that do not add up are dropped too.
    let mut frame = tcp_frame(CLIENT, VIP, 53001, 80, "S", b"");
    frame[16..18].copy_from_slice(&2000u16.to_be_bytes()); // IP total length > frame
    assert_eq!(fx.run(&frame, fx.front).0, XDP_DROP);
    let mut frame = tcp_frame(CLIENT, VIP, 53002, 80, "S", b"");
    frame[14] = 0x44; // IHL 4
    assert_eq!(fx.run(&frame, fx.front).0, XDP_DROP);
    let mut frame = tcp_frame(CLIENT, VIP, 53003, 80, "S", b"");
    frame[14 + 20 + 12] = 0x40; // TCP data offset 4 words
    assert_eq!(fx.run(&frame, fx.front).0, XDP_DROP);
    let mut frame = udp_frame(CLIENT, VIP, 53004, 53, b"q");
    frame[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&200u16.to_be_bytes()); // UDP length > IP
    assert_eq!(fx.run(&frame, fx.front).0, XDP_DROP);
    assert_eq!(fx.dp.counter(Counter::NewFlow).unwrap(), 0);
}

#[test]
fn fragments_to_a_vip_pass_to_the_stack() {
    let Some(fx) = Fixture::new() else { return };
    let mut frame = udp_frame(CLIENT, VIP, 54000, 53, b"fragmented");
    frame[20] = 0x20; // more fragments
    let c = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..])
        .unwrap()
        .to_header();
    let check = c.calc_header_checksum();
    frame[24..26].copy_from_slice(&check.to_be_bytes());
    let (action, out) = fx.run(&frame, fx.front);
    assert_eq!((action, &out), (XDP_PASS, &frame));
    assert_eq!(fx.dp.counter(Counter::PassFragment).unwrap(), 1);
}

#[test]
fn udp_request_and_reply_are_translated() {
    let Some(fx) = Fixture::new() else { return };
    let req = udp_frame(CLIENT, VIP, 55000, 53, b"what is example.org");
    let (action, out) = fx.run(&req, fx.front);
    assert_eq!(action, XDP_REDIRECT);
    let fwd = inspect(&out);
    assert_eq!((fwd.src, fwd.dst, fwd.dport), (SNAT, BACKENDS[0], 5353));
    assert_eq!(fwd.payload, b"what is example.org");

    let reply = udp_frame(BACKENDS[0], SNAT, 5353, fwd.sport, b"192.0.2.1");
    let (action, out) = fx.run(&reply, fx.back);
    assert_eq!(action, XDP_REDIRECT);
    let rep = inspect(&out);
    assert_eq!(
        (rep.src, rep.sport, rep.dst, rep.dport),
        (VIP, 53, CLIENT, 55000)
    );

    // A zero UDP checksum means "none" and stays so.
    let mut nocsum = udp_frame(CLIENT, VIP, 55001, 53, b"no checksum");
    nocsum[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let (action, out) = fx.run(&nocsum, fx.front);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
    inspect(&out);
}

#[test]
fn unknown_neighbour_passes_the_translated_packet_to_the_stack() {
    let Some(fx) = Fixture::new() else { return };
    let syn = tcp_frame(CLIENT, VIP, 56000, 81, "S", b"");
    let (action, out) = fx.run(&syn, fx.front);
    assert_eq!(action, XDP_PASS);
    let fwd = inspect(&out);
    assert_eq!(
        (fwd.src, fwd.dst, fwd.dport),
        (SNAT, UNRESOLVED_BACKEND, 8080)
    );
    assert_eq!(fx.dp.counter(Counter::PassNoNeighbour).unwrap(), 1);
}

#[test]
fn least_connections_spreads_and_closing_releases() {
    let Some(fx) = Fixture::new() else { return };
    let mut sports_by_backend = vec![Vec::new(); 3];
    for i in 0..30u16 {
        let (action, out) = fx.run(&tcp_frame(CLIENT, VIP, 57000 + i, 80, "S", b""), fx.front);
        assert_eq!(action, XDP_REDIRECT);
        let seen = inspect(&out);
        let b = BACKENDS.iter().position(|a| *a == seen.dst).unwrap();
        sports_by_backend[b].push(57000 + i);
    }
    let counts: Vec<u64> = (0..3)
        .map(|i| fx.dp.active_conns(BackendIndex(i)).unwrap())
        .collect();
    assert_eq!(counts, vec![10, 10, 10]);

    // Backend 0's clients close (FIN from the client); its count drops, a second
    // FIN or a RST of the same flow does not drop it again.
    for &sport in &sports_by_backend[0] {
        let fin = tcp_frame(CLIENT, VIP, sport, 80, "FA", b"");
        assert_eq!(fx.run(&fin, fx.front).0, XDP_REDIRECT);
        let rst = tcp_frame(CLIENT, VIP, sport, 80, "R", b"");
        assert_eq!(fx.run(&rst, fx.front).0, XDP_REDIRECT);
    }
    assert_eq!(fx.dp.active_conns(BackendIndex(0)).unwrap(), 0);
    // The next ten new flows all go to the idle backend.
    for i in 0..10u16 {
        let (_, out) = fx.run(&tcp_frame(CLIENT, VIP, 58000 + i, 80, "S", b""), fx.front);
        assert_eq!(inspect(&out).dst, BACKENDS[0], "flow {i}");
    }
    let counts: Vec<u64> = (0..3)
        .map(|i| fx.dp.active_conns(BackendIndex(i)).unwrap())
        .collect();
    assert_eq!(counts, vec![10, 10, 10]);
    // Slots of the second service start after the first service's.
    assert_eq!(fx.dp.active_conns(BackendIndex(DNS_BACKEND)).unwrap(), 0);
}

#[test]
fn snat_ports_are_unique_per_backend_and_exhaustion_is_counted() {
    let Some(fx) = Fixture::new() else { return };
    // One backend for UDP; its 32-port range fills up.
    let mut ports = std::collections::HashSet::new();
    for i in 0..32u16 {
        let (action, out) = fx.run(&udp_frame(CLIENT, VIP, 60000 + i, 53, b"q"), fx.front);
        assert_eq!(action, XDP_REDIRECT, "flow {i}");
        assert!(ports.insert(inspect(&out).sport), "port reused");
    }
    assert_eq!(ports.len(), 32);
    let (action, _) = fx.run(&udp_frame(CLIENT, VIP, 61000, 53, b"q"), fx.front);
    assert_eq!(action, XDP_DROP);
    assert_eq!(fx.dp.counter(Counter::DropSnatExhausted).unwrap(), 1);
    // Existing flows are untouched.
    let (action, _) = fx.run(&udp_frame(CLIENT, VIP, 60005, 53, b"again"), fx.front);
    assert_eq!(action, XDP_REDIRECT);
}

fn no_idle_allowed() -> Timeouts {
    Timeouts {
        tcp_established: Duration::from_secs(3600),
        tcp_transitory: Duration::ZERO,
        tcp_syn: Duration::ZERO,
        udp: Duration::ZERO,
    }
}

#[test]
fn ten_thousand_closed_connections_leave_no_count_and_no_entry() {
    let Some(mut fx) = Fixture::new() else { return };
    sh("for i in $(seq 100 149); do \
        ip neigh add 198.51.100.$i lladdr 02:00:00:00:01:$(printf %02x $i) dev front nud permanent; \
        done");
    // The fixture's SNAT range has 32 ports per backend: 10,000 connections only
    // fit because expiry gives the ports of closed flows back.
    let mut expired = 0;
    for i in 0..10_000u32 {
        // Clients spread over addresses and ports, as many real ones would be.
        let client = [198, 51, 100, 100 + (i % 50) as u8];
        let sport = 20_000 + (i / 50) as u16;
        let (action, out) = fx.run(&tcp_frame(client, VIP, sport, 80, "S", b""), fx.front);
        assert_eq!(action, XDP_REDIRECT, "SYN {i}");
        let fwd = inspect(&out);
        let answer = |flags| tcp_frame(fwd.dst, SNAT, 8080, fwd.sport, flags, b"");
        assert_eq!(fx.run(&answer("SA"), fx.back).0, XDP_REDIRECT);
        // The client's ACK completes the handshake (SYNs that never complete
        // are a flood, which auto mode answers with cookies).
        let ack = tcp_seq_frame(client, VIP, sport, 80, "A", 1001, 1001, b"");
        assert_eq!(fx.run(&ack, fx.front).0, XDP_REDIRECT);
        let fin = tcp_frame(client, VIP, sport, 80, "FA", b"");
        assert_eq!(fx.run(&fin, fx.front).0, XDP_REDIRECT);
        assert_eq!(fx.run(&answer("FA"), fx.back).0, XDP_REDIRECT);
        if i % 48 == 47 {
            let stats = fx.dp.sweep(&no_idle_allowed()).unwrap();
            assert_eq!(stats.released, 0, "already released by the FINs");
            expired += stats.expired;
        }
    }
    assert_eq!(fx.dp.counter(Counter::NewFlow).unwrap(), 10_000);
    assert_eq!(fx.dp.counter(Counter::DropSnatExhausted).unwrap(), 0);
    for b in 0..3 {
        assert_eq!(
            fx.dp.active_conns(BackendIndex(b)).unwrap(),
            0,
            "backend {b}: FINs gave the count back"
        );
    }
    let stats = fx.dp.sweep(&no_idle_allowed()).unwrap();
    assert_eq!(expired + stats.expired, 10_000);
    assert_eq!(fx.dp.flow_entries().unwrap(), 0);
    for b in 0..3 {
        assert_eq!(fx.dp.active_conns(BackendIndex(b)).unwrap(), 0);
    }
}

#[test]
fn idle_flows_expire_and_give_back_count_and_port() {
    let Some(mut fx) = Fixture::new() else { return };
    // UDP to one backend with a 32-port SNAT range: full after 32 flows.
    for i in 0..32u16 {
        assert_eq!(
            fx.run(&udp_frame(CLIENT, VIP, 30000 + i, 53, b"q"), fx.front)
                .0,
            XDP_REDIRECT
        );
    }
    assert_eq!(
        fx.run(&udp_frame(CLIENT, VIP, 31000, 53, b"q"), fx.front).0,
        XDP_DROP
    );
    let dns_backend = DNS_BACKEND;
    assert_eq!(fx.dp.active_conns(BackendIndex(dns_backend)).unwrap(), 32);
    // An established TCP flow with a long limit is kept.
    handshake(&fx, CLIENT, 32000, 80);

    let stats = fx.dp.sweep(&no_idle_allowed()).unwrap();
    assert_eq!((stats.expired, stats.released), (32, 32));
    assert_eq!(fx.dp.active_conns(BackendIndex(dns_backend)).unwrap(), 0);
    assert_eq!(
        fx.dp.flow_entries().unwrap(),
        2,
        "the established TCP flow stays"
    );
    // The ports are free again.
    for i in 0..32u16 {
        assert_eq!(
            fx.run(&udp_frame(CLIENT, VIP, 33000 + i, 53, b"q"), fx.front)
                .0,
            XDP_REDIRECT
        );
    }
    // A sweep before the limit removes nothing.
    let patient = Timeouts {
        udp: Duration::from_secs(60),
        ..no_idle_allowed()
    };
    assert_eq!(fx.dp.sweep(&patient).unwrap().expired, 0);
}

#[test]
fn sweeps_count_the_entries_and_the_snat_ports_they_keep() {
    let Some(mut fx) = Fixture::new() else { return };
    // 5 UDP flows to the dns backend, one established TCP flow to web.
    for i in 0..5u16 {
        let frame = udp_frame(CLIENT, VIP, 34000 + i, 53, b"q");
        assert_eq!(fx.run(&frame, fx.front).0, XDP_REDIRECT);
    }
    let fwd = handshake(&fx, CLIENT, 34100, 80);
    let web = BACKENDS.iter().position(|b| *b == fwd.dst).unwrap() as u32;
    let patient = Timeouts {
        udp: Duration::from_secs(60),
        ..no_idle_allowed()
    };
    let first = fx.dp.sweep(&patient).unwrap();
    assert_eq!((first.scanned, first.kept_entries), (12, 12));
    let ports = fx.dp.all_sweep_backends(4, first.generation).unwrap();
    let mut want = [0; 4];
    want[web as usize] = 1;
    want[DNS_BACKEND as usize] = 5;
    assert_eq!(ports, want);
    // The UDP flows expire: their entries and ports are no longer counted.
    let second = fx.dp.sweep(&no_idle_allowed()).unwrap();
    assert_eq!(second.generation, first.generation + 1);
    assert_eq!((second.expired, second.kept_entries), (5, 2));
    want[DNS_BACKEND as usize] = 0;
    assert_eq!(
        fx.dp.all_sweep_backends(4, second.generation).unwrap(),
        want
    );
}

#[test]
fn every_snat_address_adds_its_ports() {
    let config = config().snat([SNAT, [203, 0, 113, 8]]);
    let Some(fx) = Fixture::with_config(&config, 4096) else {
        return;
    };
    // One UDP backend, 32 ports per address: 64 flows, then none.
    let mut used = std::collections::HashSet::new();
    for i in 0..64u16 {
        let (action, out) = fx.run(&udp_frame(CLIENT, VIP, 62000 + i, 53, b"q"), fx.front);
        assert_eq!(action, XDP_REDIRECT, "flow {i}");
        let seen = inspect(&out);
        assert!(
            used.insert((seen.src, seen.sport)),
            "address and port reused"
        );
        // The reply to that address and port finds the flow.
        let reply = udp_frame(BACKENDS[0], seen.src, 5353, seen.sport, b"a");
        let (action, out) = fx.run(&reply, fx.back);
        assert_eq!(action, XDP_REDIRECT, "reply {i}");
        assert_eq!(inspect(&out).dport, 62000 + i);
    }
    let per_address = |a: [u8; 4]| used.iter().filter(|(s, _)| *s == a).count();
    assert_eq!((per_address(SNAT), per_address([203, 0, 113, 8])), (32, 32));
    let (action, _) = fx.run(&udp_frame(CLIENT, VIP, 63000, 53, b"q"), fx.front);
    assert_eq!(action, XDP_DROP);
    assert_eq!(fx.dp.counter(Counter::DropSnatExhausted).unwrap(), 1);
}

/// With every backend down, a SYN is refused at once by the host (it has the
/// VIP and no socket on the port), not left to time out.
#[test]
fn no_healthy_backend_leaves_the_syn_to_the_host_unchanged_and_counts_it() {
    let Some(mut fx) = Fixture::new() else { return };
    for index in 0..3 {
        fx.dp
            .set_backend_flags(
                BackendIndex(index),
                balancer_common::service::BACKEND_F_PRESENT,
            )
            .unwrap();
    }
    let syn = tcp_frame(CLIENT, VIP, 52001, 80, "S", b"");
    let (action, out) = fx.run(&syn, fx.front);
    assert_eq!((action, out), (XDP_PASS, syn));
    assert_eq!(fx.dp.counter(Counter::DropNoBackend).unwrap(), 1);
    assert_eq!(fx.dp.flow_entries().unwrap(), 0);
}

/// ARP and neighbour solicitations about a VIP are the host's to answer while
/// this node holds the HA lease (or has no HA), and dropped once it ran out:
/// a killed active node must stop drawing its clients.
#[test]
fn arp_and_neighbour_solicitation_for_a_vip_stop_when_the_ha_lease_runs_out() {
    // Both families: an IPv6 VIP beside the IPv4 ones.
    let config = config_with_ipv6();
    let Some(mut fx) = Fixture::with_config(&config, 4096) else {
        return;
    };
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&CLIENT);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&VIP);
    let mut ns = vec![0x33, 0x33, 0xff, 0, 0, 0x10];
    ns.extend_from_slice(&CLIENT_MAC);
    ns.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 24, 58, 255]);
    ns.extend_from_slice(&CLIENT6);
    ns.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0x10]);
    ns.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
    ns.extend_from_slice(&VIP6);
    let mut other = arp.clone();
    other[38..42].copy_from_slice(&[198, 51, 100, 99]);
    // No HA (lease 0), then a lease that runs: the host answers.
    for lease in [0, u64::MAX] {
        fx.dp
            .set_ha_lease(Lease {
                until_ns: lease,
                ..Lease::default()
            })
            .unwrap();
        for frame in [&arp, &ns, &other] {
            let (action, out) = fx.run(frame, fx.front);
            assert_eq!((action, &out), (XDP_PASS, frame), "lease {lease}");
        }
    }
    // Run out (1 ns after boot): dropped, except for an address not ours.
    fx.dp
        .set_ha_lease(Lease {
            until_ns: 1,
            ..Lease::default()
        })
        .unwrap();
    assert_eq!(fx.run(&arp, fx.front).0, XDP_DROP);
    assert_eq!(fx.run(&ns, fx.front).0, XDP_DROP);
    assert_eq!(fx.run(&other, fx.front).0, XDP_PASS);
    assert_eq!(fx.dp.counter(Counter::DropArpNotActive).unwrap(), 2);
    // And no new flow opens while not active.
    let syn = tcp_frame(CLIENT, VIP, 52002, 80, "S", b"");
    assert_eq!(fx.run(&syn, fx.front).0, XDP_DROP);
    assert_eq!(fx.dp.counter(Counter::DropNotActive).unwrap(), 1);
}

/// A VIP added at run time is looked at at once (its address filter bit is
/// set with it), and one removed is the host's again.
#[test]
fn vips_added_and_removed_at_run_time_are_filtered_in_and_out() {
    let Some(mut fx) = Fixture::new() else { return };
    let new_vip = [198, 51, 100, 20];
    let syn = tcp_frame(CLIENT, new_vip, 52003, 80, "S", b"");
    assert_eq!(
        fx.run(&syn, fx.front),
        (XDP_PASS, syn.clone()),
        "not a VIP yet"
    );
    let with = config().service(
        Service::tcp("late", new_vip, 80)
            .health(Health::none())
            .backend("203.0.113.11:8080"),
    );
    let apply = |fx: &mut Fixture, config: &Config| {
        let plan = plan_of(config);
        fx.dp.apply(&plan).unwrap();
        fx.dp.remove_stale(&plan).unwrap();
    };
    apply(&mut fx, &with);
    assert_eq!(fx.run(&syn, fx.front).0, XDP_REDIRECT, "a VIP now");
    apply(&mut fx, &config());
    let other = tcp_frame(CLIENT, new_vip, 52004, 80, "S", b"");
    assert_eq!(
        fx.run(&other, fx.front),
        (XDP_PASS, other.clone()),
        "the host's again"
    );
    // The VIPs that stayed still work.
    let kept = tcp_frame(CLIENT, VIP, 52005, 80, "S", b"");
    assert_eq!(fx.run(&kept, fx.front).0, XDP_REDIRECT);
}

/// New flows reuse their backend's next hop for up to a second rather than
/// asking the FIB each time: the Ethernet destination still always belongs to
/// the backend the packet is addressed to, when a backend's index passes to
/// another backend at once, and after its neighbour's address changes within
/// the second.
#[test]
fn new_flows_take_the_next_hop_of_the_backend_they_are_addressed_to() {
    // The hop cache is per CPU: pinned, every flow here meets the same one.
    pin_to_cpu0();
    let Some(mut fx) = Fixture::new() else { return };
    let mut sport = 53000u16;
    let mut open = |fx: &Fixture| {
        sport += 1;
        let (action, out) = fx.run(&tcp_frame(CLIENT, VIP, sport, 80, "S", b""), fx.front);
        assert_eq!(action, XDP_REDIRECT, "flow from port {sport}");
        inspect(&out)
    };
    for _ in 0..6 {
        let seen = open(&fx);
        assert_eq!(seen.eth_dst, backend_mac(seen.dst));
    }
    // The same indexes, the backends in the other order: the hops cached a
    // moment ago belong to other addresses now.
    let mut reversed = config();
    reversed.service_mut("web").backends.reverse();
    assert_ne!(reversed, config());
    fx.dp.apply(&plan_of(&reversed)).unwrap();
    for _ in 0..6 {
        let seen = open(&fx);
        assert_eq!(seen.eth_dst, backend_mac(seen.dst), "after the reorder");
    }
    // A backend's neighbour moves to another Ethernet address: new flows
    // follow it once the cached hop is a second old. New flows, every 50 ms,
    // until one to the moved backend takes its new address; any opened later
    // than a second after the move (and a margin for the coarse clock) with
    // the old one is a failure. 50 ms: 32 SNAT ports per backend last.
    let moved = [0x02, 0, 0, 0, 0x0f, 0x11];
    let cached_at_most = Duration::from_millis(1100);
    sh(&format!(
        "ip neigh replace 203.0.113.11 lladdr {} dev back nud permanent",
        mac(moved)
    ));
    let since_move = Instant::now();
    let mut stale_too_late = Vec::new();
    let took = poll_until(Duration::from_secs(3), Duration::from_millis(50), || {
        let opened = since_move.elapsed();
        let seen = open(&fx);
        if seen.dst != BACKENDS[0] {
            assert_eq!(seen.eth_dst, backend_mac(seen.dst));
            return false;
        }
        if seen.eth_dst == moved {
            return true;
        }
        assert_eq!(
            seen.eth_dst,
            backend_mac(seen.dst),
            "the old address or the new"
        );
        if opened >= cached_at_most {
            stale_too_late.push(opened);
        }
        false
    })
    .expect("no new flow took the moved neighbour's address within 3 s");
    assert!(
        stale_too_late.is_empty(),
        "flows opened {stale_too_late:?} after the move took the old address (cached {cached_at_most:?} at most)"
    );
    eprintln!("new flows took the moved neighbour's address {took:?} after the move");
    let mut seen_moved = 0;
    for _ in 0..9 {
        let seen = open(&fx);
        if seen.dst == BACKENDS[0] {
            assert_eq!(seen.eth_dst, moved, "a second after the move");
            seen_moved += 1;
        } else {
            assert_eq!(seen.eth_dst, backend_mac(seen.dst));
        }
    }
    assert!(seen_moved > 0, "no new flow went to the moved backend");
}

/// Ports of a range larger than the tries per flow are handed out in turn
/// from where the last flow's was found, so the range fills to its last port
/// without refusing a flow while one is free.
#[test]
fn a_large_snat_range_fills_to_its_last_port_without_refusals() {
    let config = config().snat_port_range(40000, 40299);
    let Some(fx) = Fixture::with_config(&config, 4096) else {
        return;
    };
    let mut used = std::collections::HashSet::new();
    for i in 0..300u16 {
        let (action, out) = fx.run(&udp_frame(CLIENT, VIP, 30000 + i, 53, b"q"), fx.front);
        assert_eq!(action, XDP_REDIRECT, "flow {i} of 300");
        let port = inspect(&out).sport;
        assert!((40000..40300).contains(&port));
        assert!(used.insert(port), "port {port} handed out twice");
    }
    assert_eq!(fx.dp.counter(Counter::DropSnatExhausted).unwrap(), 0);
    let (action, _) = fx.run(&udp_frame(CLIENT, VIP, 31000, 53, b"q"), fx.front);
    assert_eq!(action, XDP_DROP, "the range is full");
    assert_eq!(fx.dp.counter(Counter::DropSnatExhausted).unwrap(), 1);
}

#[test]
fn a_peers_flows_are_held_until_adopted_then_expire_as_this_nodes() {
    use aya::maps::HashMap;
    use balancer_common::{
        expiry::{ADOPT_ALL, SweepLimits},
        flow::{FlowKey, FlowValue, OWNER_SELF},
        maps::Flows,
    };
    let Some(mut fx) = Fixture::new() else { return };
    // Five UDP flows, as a peer's sync would have installed them: owned by
    // the peer, idle since long ago.
    for i in 0..5u16 {
        let frame = udp_frame(CLIENT, VIP, 34000 + i, 53, b"q");
        assert_eq!(fx.run(&frame, fx.front).0, XDP_REDIRECT);
    }
    let peer = balancer_common::flow::node_id(b"lb-a");
    {
        let mut flows = fx
            .dp
            .map_mut::<Flows, HashMap<_, FlowKey, FlowValue>>()
            .unwrap();
        let entries: Vec<(FlowKey, FlowValue)> = flows.iter().map(Result::unwrap).collect();
        assert_eq!(entries.len(), 10);
        for (k, mut v) in entries {
            v.owner = peer;
            v.last_seen_ns = 1;
            flows.insert(k, v, 0).unwrap();
        }
    }
    // Held: no idleness expires a peer's flow.
    let stats = fx.dp.sweep(&no_idle_allowed()).unwrap();
    assert_eq!((stats.expired, stats.held_entries), (0, 10));
    assert_eq!(fx.dp.flow_entries().unwrap(), 10);
    // Adopted (a takeover): this node's now, idle from now on.
    let adopt = SweepLimits {
        adopt: ADOPT_ALL,
        ..Timeouts {
            udp: Duration::from_secs(60),
            ..no_idle_allowed()
        }
        .limits()
    };
    let stats = fx.dp.sweep_with(adopt).unwrap();
    assert_eq!((stats.adopted, stats.expired), (5, 0), "{stats:?}");
    {
        let flows = fx
            .dp
            .map::<Flows, HashMap<_, FlowKey, FlowValue>>()
            .unwrap();
        assert!(
            flows
                .iter()
                .map(Result::unwrap)
                .all(|(_, v)| v.owner == OWNER_SELF && v.last_seen_ns > 1)
        );
    }
    // And from then on they expire like any of this node's.
    let stats = fx.dp.sweep(&no_idle_allowed()).unwrap();
    assert_eq!(stats.expired, 5);
    assert_eq!(fx.dp.flow_entries().unwrap(), 0);
}

/// In active-active a peer's flow may end on this node (ECMP brought its FIN
/// or reset here): this node told the owner, who says no more of it, so the
/// entries go like a closing flow of this node's. A peer's flow that did not
/// end here stays held.
#[test]
fn a_peers_flow_that_ended_here_expires_and_the_others_stay_held() {
    use aya::maps::HashMap;
    use balancer_common::{
        flow::{FlowKey, FlowValue},
        maps::Flows,
    };
    let Some(mut fx) = Fixture::new() else { return };
    // Established, so that both are in the flow table (not half-open).
    for port in [36000, 36001] {
        handshake(&fx, CLIENT, port, 80);
    }
    let peer = balancer_common::flow::node_id(b"lb-b");
    let retag = |fx: &mut Fixture| {
        let mut flows = fx
            .dp
            .map_mut::<Flows, HashMap<_, FlowKey, FlowValue>>()
            .unwrap();
        let entries: Vec<(FlowKey, FlowValue)> = flows.iter().map(Result::unwrap).collect();
        for (k, mut v) in entries {
            v.owner = peer;
            v.last_seen_ns = 1;
            flows.insert(k, v, 0).unwrap();
        }
    };
    retag(&mut fx);
    // The client resets the first connection through this node.
    let rst = tcp_frame(CLIENT, VIP, 36000, 80, "R", b"");
    assert_eq!(fx.run(&rst, fx.front).0, XDP_REDIRECT);
    retag(&mut fx);
    // (Its reply entry counts as held when the walk meets it first.)
    let stats = fx.dp.sweep(&no_idle_allowed()).unwrap();
    assert_eq!((stats.expired, stats.adopted), (1, 0), "{stats:?}");
    assert_eq!(
        fx.dp.flow_entries().unwrap(),
        2,
        "the other flow's two entries"
    );
    let stats = fx.dp.sweep(&no_idle_allowed()).unwrap();
    assert_eq!((stats.expired, stats.held_entries), (0, 2), "{stats:?}");
}

/// Active-active: a peer's flow installed here is not counted in this node's
/// ACTIVE_CONNS (the daemon cannot change a count the program changes with
/// atomic adds without losing the program's updates), so its end here gives
/// nothing back: the count does not wrap below zero, and the end still
/// counts as this node's release (the flow closes and goes at the sweep).
#[test]
fn a_peers_uncounted_flow_ending_here_leaves_the_counts_alone() {
    use aya::maps::{Array, HashMap};
    use balancer_common::{
        flow::{DIR_FORWARD, FlowKey, FlowValue, RELEASED, UNCOUNTED},
        maps::{ActiveConns, Flows},
    };
    let Some(mut fx) = Fixture::new() else { return };
    handshake(&fx, CLIENT, 36100, 80);
    let peer = balancer_common::flow::node_id(b"lb-b");
    // As the sink installs it: the peer's, uncounted here.
    let backend = {
        let mut flows = fx
            .dp
            .map_mut::<Flows, HashMap<_, FlowKey, FlowValue>>()
            .unwrap();
        let entries: Vec<(FlowKey, FlowValue)> = flows.iter().map(Result::unwrap).collect();
        let mut backend = None;
        for (k, mut v) in entries {
            v.owner = peer;
            if v.direction == DIR_FORWARD {
                v.released = UNCOUNTED;
                backend = Some(v.backend);
            }
            flows.insert(k, v, 0).unwrap();
        }
        backend.expect("a forward entry")
    };
    let active = |fx: &mut Fixture| {
        let counts = fx.dp.map_mut::<ActiveConns, Array<_, u64>>().unwrap();
        counts.get(&backend.0, 0).unwrap()
    };
    {
        let mut counts = fx.dp.map_mut::<ActiveConns, Array<_, u64>>().unwrap();
        counts.set(backend.0, 0, 0).unwrap();
    }
    let rst = tcp_frame(CLIENT, VIP, 36100, 80, "R", b"");
    assert_eq!(fx.run(&rst, fx.front).0, XDP_REDIRECT);
    assert_eq!(
        active(&mut fx),
        0,
        "nothing given back for an uncounted flow"
    );
    let released: Vec<u32> = fx
        .dp
        .map_mut::<Flows, HashMap<_, FlowKey, FlowValue>>()
        .unwrap()
        .iter()
        .map(Result::unwrap)
        .filter(|(_, v)| v.direction == DIR_FORWARD)
        .map(|(_, v)| v.released)
        .collect();
    assert_eq!(released, vec![RELEASED], "released here");
    let stats = fx.dp.sweep(&no_idle_allowed()).unwrap();
    assert_eq!(stats.expired, 1, "it ended here: {stats:?}");
}

#[test]
fn just_after_a_takeover_a_segment_of_no_known_flow_is_dropped_not_reset() {
    let Some(mut fx) = Fixture::new() else { return };
    let mid_flow = tcp_frame(CLIENT, VIP, 35000, 80, "A", b"data");
    fx.dp
        .set_ha_lease(Lease {
            until_ns: u64::MAX,
            takeover_grace_until_ns: u64::MAX,
        })
        .unwrap();
    assert_eq!(fx.run(&mid_flow, fx.front).0, XDP_DROP);
    assert_eq!(fx.dp.counter(Counter::DropTakeoverGrace).unwrap(), 1);
    // A new connection is not held up by the grace.
    let syn = tcp_frame(CLIENT, VIP, 35001, 80, "S", b"");
    assert_eq!(fx.run(&syn, fx.front).0, XDP_REDIRECT);
    // After it, the host answers such a segment (with a reset).
    fx.dp
        .set_ha_lease(Lease {
            until_ns: u64::MAX,
            takeover_grace_until_ns: 1,
        })
        .unwrap();
    let (action, out) = fx.run(&mid_flow, fx.front);
    assert_eq!((action, &out), (XDP_PASS, &mid_flow));
    assert_eq!(fx.dp.counter(Counter::PassNoFlow).unwrap(), 1);
    assert_eq!(fx.dp.counter(Counter::DropTakeoverGrace).unwrap(), 1);
}
