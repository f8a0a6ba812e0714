//! The SYN proxy and half-open flows at packet level (BPF_PROG_TEST_RUN): a
//! SYN answered with a cookie and no state, the cookie's ACK turned into the
//! SYN to a backend, the backend's SYN-ACK answered, sequence numbers and
//! SACK blocks translated, in both families; and half-open flows that expire
//! on time and never evict an established one.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use balancer_common::{
    cookie::{self, CookieData, MSS_V4, PROXY_WSCALE},
    flow::{FlowKey, FlowValue, STATE_ESTABLISHED, STATE_PROXY_SYN},
    maps::{Flows, HalfOpen},
    stats::Counter,
};
use balancer_tests::{
    config::{Config, Firewall, Flows as FlowsConfig, SynCookies},
    poll_until,
};
use balancer_user::{expiry::Timeouts, syncookie};
use common::*;

/// MSS 1460, SACK permitted, timestamps, window scale 7: a Linux client's SYN.
const LINUX_SYN_OPTS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
];
fn always() -> Config {
    config_with_ipv6().firewall(Firewall::default().syn_cookies(SynCookies::Always))
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn v6(a: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(a))
}

/// The family's client, VIP, SNAT address and backends.
struct Family {
    client: IpAddr,
    vip: IpAddr,
    snat: IpAddr,
    backends: Vec<IpAddr>,
}

fn family(six: bool) -> Family {
    if six {
        Family {
            client: v6(CLIENT6),
            vip: v6(VIP6),
            snat: v6(SNAT6),
            backends: vec![v6(BACKENDS6[0])],
        }
    } else {
        Family {
            client: v4(CLIENT),
            vip: v4(VIP),
            snat: v4(SNAT),
            backends: BACKENDS.iter().map(|b| v4(*b)).collect(),
        }
    }
}

const ISN: u32 = 0x1234_5678;
const BACKEND_ISN: u32 = 0x8000_0010;

/// A proxied connection up to the backend's SYN-ACK: the client's SYN
/// answered, its ACK sent on as a SYN, the backend's SYN-ACK answered.
struct Proxied {
    f: Family,
    cookie: u32,
    /// The SYN as the backend got it.
    syn: Tcp,
}

impl Proxied {
    fn delta(&self) -> u32 {
        BACKEND_ISN.wrapping_sub(self.cookie)
    }
}

/// The client's SYN answered with a cookie: the SYN-ACK.
fn syn_ack(fx: &Fixture, f: &Family, sport: u16, opts: &[u8]) -> Tcp {
    let syn = Tcp::new(f.client, f.vip, sport, 80, SYN)
        .seq(ISN, 0)
        .opts(opts);
    let (action, out) = fx.run(&syn.client_frame(), fx.front);
    assert_eq!(action, XDP_TX, "a SYN-ACK goes back");
    let (t, eth_src, eth_dst) = seen(&out);
    assert_eq!((eth_src, eth_dst), (FRONT_MAC, CLIENT_MAC));
    t
}

/// Up to the SYN sent to the backend (the flow waiting for its answer).
fn proxied_syn(fx: &Fixture, six: bool, sport: u16) -> Proxied {
    let f = family(six);
    let sa = syn_ack(fx, &f, sport, &LINUX_SYN_OPTS);
    let cookie = sa.seq;
    let ack = Tcp::new(f.client, f.vip, sport, 80, ACK)
        .seq(ISN + 1, cookie.wrapping_add(1))
        .window(502);
    let (action, out) = fx.run(&ack.client_frame(), fx.front);
    assert_eq!(action, XDP_REDIRECT, "the ACK goes on to a backend");
    let (syn, _, _) = seen(&out);
    Proxied { f, cookie, syn }
}

/// The backend's SYN-ACK (window scale `ws`) answered: the flow established.
fn established(fx: &Fixture, p: &Proxied, ws: u8) -> Tcp {
    let sa = Tcp::new(p.syn.dst, p.syn.src, p.syn.dport, p.syn.sport, SYN | ACK)
        .seq(BACKEND_ISN, ISN + 1)
        .opts(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, ws]);
    let (action, out) = fx.run(&sa.backend_frame(), fx.back);
    assert_eq!(action, XDP_TX, "the ACK goes back to the backend");
    let (ack, eth_src, eth_dst) = seen(&out);
    assert_eq!(eth_src, BACK_MAC);
    assert_eq!(
        eth_dst,
        match p.syn.dst {
            IpAddr::V4(a) => backend_mac(a.octets()),
            IpAddr::V6(a) => backend_mac6(a.octets()),
        }
    );
    ack
}

fn half_open_entries(fx: &Fixture) -> usize {
    fx.dp.half_open_entries().unwrap()
}

#[test]
fn a_syn_gets_a_syn_ack_with_a_cookie_and_no_state() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    for six in [false, true] {
        let f = family(six);
        let sa = syn_ack(&fx, &f, 40000, &LINUX_SYN_OPTS);
        assert_eq!((sa.src, sa.dst), (f.vip, f.client));
        assert_eq!((sa.sport, sa.dport), (80, 40000));
        assert_eq!(sa.flags, SYN | ACK);
        assert_eq!(sa.ack, ISN + 1);
        let mss = if six { 1440 } else { 1460 };
        assert_eq!(sa.opts, proxy_opts(mss, Some(PROXY_WSCALE), true));
        assert!(sa.payload.is_empty());
        // Without options: none of them back, the MSS only.
        let bare = syn_ack(&fx, &f, 40001, &[]);
        assert_eq!(bare.opts, proxy_opts(mss, None, false));
        assert_ne!(bare.seq, sa.seq, "another tuple, another cookie");
    }
    assert_eq!(fx.dp.counter(Counter::SynCookieSent).unwrap(), 4);
    assert_eq!(fx.dp.flow_entries().unwrap(), 0, "no state");
    assert_eq!(fx.dp.counter(Counter::NewFlow).unwrap(), 0);
}

#[test]
fn the_cookie_is_the_keyed_hash_every_node_computes_alike() {
    let Some(mut fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    // Keys as HA peers derive them from their shared key.
    let shared = b"0123456789abcdef0123456789abcdef".to_vec();
    let period = cookie::period_at(unix_now());
    fx.dp
        .rotate_cookie_keys(&syncookie::Secret::Shared(shared.clone()), period)
        .unwrap();
    let f = family(false);
    let sa = syn_ack(&fx, &f, 40100, &LINUX_SYN_OPTS);
    let key = syncookie::derive(&shared, period);
    let words = cookie::words_v4(
        u32::from_ne_bytes(CLIENT),
        u32::from_ne_bytes(VIP),
        40100u16.to_be(),
        80u16.to_be(),
        ISN,
    );
    let hash = cookie::siphash24(key.k0, key.k1, &words) as u32;
    let data = CookieData::of_syn(1460, 7, true, false);
    assert_eq!(sa.seq, cookie::make(hash, period, data));
    assert_eq!(cookie::check(sa.seq, hash), Some(data));
}

#[test]
fn an_ack_with_a_valid_cookie_becomes_the_syn_to_a_backend() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    for (six, sport) in [(false, 41000), (true, 41001)] {
        let p = proxied_syn(&fx, six, sport);
        let syn = &p.syn;
        assert_eq!(syn.src, p.f.snat);
        assert!(p.f.backends.contains(&syn.dst), "{:?}", syn.dst);
        assert_eq!(syn.dport, 8080);
        assert_eq!(syn.flags, SYN);
        assert_eq!(syn.seq, ISN, "the client's ISN");
        assert_eq!(syn.window, 502, "the client's window");
        // The client's options, as the cookie kept them.
        let mss = if six { 1440 } else { 1460 };
        assert_eq!(syn.opts, proxy_opts(mss, Some(7), true));
        assert!(syn.payload.is_empty());
    }
    assert_eq!(fx.dp.counter(Counter::SynCookieValid).unwrap(), 2);
    assert_eq!(fx.dp.counter(Counter::NewFlow).unwrap(), 2);
    assert_eq!(
        half_open_entries(&fx),
        4,
        "half-open until the backend answers"
    );
}

#[test]
fn a_bad_cookie_is_dropped_and_counted() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    let f = family(false);
    let sa = syn_ack(&fx, &f, 42000, &LINUX_SYN_OPTS);
    for (seq, ack) in [
        (ISN + 1, sa.seq.wrapping_add(2)),
        (ISN + 2, sa.seq.wrapping_add(1)),
        (ISN + 1, sa.seq ^ 0x0010_0000),
        (7, 0x4000_0000),
    ] {
        let ack = Tcp::new(f.client, f.vip, 42000, 80, ACK).seq(seq, ack);
        assert_eq!(fx.run(&ack.client_frame(), fx.front).0, XDP_DROP);
    }
    // From another client, the cookie is not its.
    let other =
        Tcp::new(v4([198, 51, 100, 3]), f.vip, 42000, 80, ACK).seq(ISN + 1, sa.seq.wrapping_add(1));
    assert_eq!(fx.run(&other.client_frame(), fx.front).0, XDP_DROP);
    assert_eq!(fx.dp.counter(Counter::DropSynCookieInvalid).unwrap(), 5);
    assert_eq!(fx.dp.flow_entries().unwrap(), 0);
}

#[test]
fn the_backends_syn_ack_becomes_an_ack_to_the_backend() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    for (six, sport) in [(false, 43000), (true, 43001)] {
        let p = proxied_syn(&fx, six, sport);
        let ack = established(&fx, &p, 7);
        assert_eq!((ack.src, ack.dst), (p.syn.src, p.syn.dst));
        assert_eq!((ack.sport, ack.dport), (p.syn.sport, p.syn.dport));
        assert_eq!(ack.flags, ACK);
        assert_eq!((ack.seq, ack.ack), (ISN + 1, BACKEND_ISN + 1));
        assert_eq!(ack.window, 502, "the client's window");
        assert!(ack.opts.is_empty() && ack.payload.is_empty());
    }
    assert_eq!(fx.dp.counter(Counter::SynProxyEstablished).unwrap(), 2);
    assert_eq!(half_open_entries(&fx), 0);
    assert_eq!(fx.dp.flow_entries().unwrap(), 4, "both flows established");
}

#[test]
fn data_both_ways_is_translated_with_sack_blocks_and_valid_checksums() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    for (six, sport) in [(false, 44000), (true, 44001)] {
        let p = proxied_syn(&fx, six, sport);
        // The backend scales by 9, the client was told 7: its windows grow 4x.
        established(&fx, &p, 9);
        let d = p.delta();
        // Client to backend: acknowledgements and SACK blocks translated;
        // SACK at an even and at an odd offset in the header.
        for sack_opts in [
            {
                let mut o = vec![1, 1, 5, 18];
                for edge in [
                    p.cookie + 2000,
                    p.cookie + 3000,
                    p.cookie + 4000,
                    p.cookie + 5000,
                ] {
                    o.extend_from_slice(&edge.to_be_bytes());
                }
                o
            },
            {
                let mut o = vec![1, 5, 10];
                for edge in [p.cookie + 7, p.cookie + 11] {
                    o.extend_from_slice(&edge.to_be_bytes());
                }
                o
            },
        ] {
            let data = Tcp::new(p.f.client, p.f.vip, sport, 80, ACK | PSH)
                .seq(ISN + 1, p.cookie + 1001)
                .opts(&sack_opts)
                .payload(b"GET / HTTP/1.1\r\n\r\n");
            let (action, out) = fx.run(&data.client_frame(), fx.front);
            assert_eq!(action, XDP_REDIRECT);
            let (t, _, _) = seen(&out);
            assert_eq!((t.src, t.dst), (p.syn.src, p.syn.dst));
            assert_eq!(t.seq, ISN + 1, "the client's numbers are the backend's");
            assert_eq!(t.ack, p.cookie.wrapping_add(1001).wrapping_add(d));
            assert_eq!(t.ack, BACKEND_ISN + 1001);
            let mut want = data.opts.clone();
            let start = want.iter().position(|b| *b == 5).unwrap() + 2;
            let end = start - 2 + want[start - 1] as usize;
            for at in (start..end).step_by(4) {
                let edge = u32::from_be_bytes(want[at..at + 4].try_into().unwrap());
                want[at..at + 4].copy_from_slice(&edge.wrapping_add(d).to_be_bytes());
            }
            assert_eq!(t.opts, want, "SACK blocks in the backend's numbers");
            assert_eq!(t.payload, b"GET / HTTP/1.1\r\n\r\n");
        }
        // Backend to client: sequence numbers translated, window rescaled.
        let reply = Tcp::new(p.syn.dst, p.syn.src, p.syn.dport, p.syn.sport, ACK | PSH)
            .seq(BACKEND_ISN + 1, ISN + 20)
            .window(1000)
            .payload(b"HTTP/1.1 200 OK\r\n\r\n");
        let (action, out) = fx.run(&reply.backend_frame(), fx.back);
        assert_eq!(action, XDP_REDIRECT);
        let (t, _, _) = seen(&out);
        assert_eq!((t.src, t.dst), (p.f.vip, p.f.client));
        assert_eq!((t.sport, t.dport), (80, sport));
        assert_eq!(t.seq, p.cookie + 1);
        assert_eq!(t.ack, ISN + 20);
        assert_eq!(t.window, 4000, "scaled by 9 read by 7");
        assert_eq!(t.payload, b"HTTP/1.1 200 OK\r\n\r\n");
        // A FIN of either side is translated too.
        let fin = Tcp::new(p.f.client, p.f.vip, sport, 80, FIN | ACK).seq(ISN + 20, p.cookie + 20);
        let (action, out) = fx.run(&fin.client_frame(), fx.front);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(seen(&out).0.ack, BACKEND_ISN + 20);
    }
}

#[test]
fn the_backends_syn_ack_again_is_acked_again_not_forwarded() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    let p = proxied_syn(&fx, false, 45000);
    established(&fx, &p, 7);
    let again = established(&fx, &p, 7);
    assert_eq!((again.seq, again.ack), (ISN + 1, BACKEND_ISN + 1));
    assert_eq!(fx.dp.counter(Counter::SynProxyEstablished).unwrap(), 1);
}

#[test]
fn early_data_is_dropped_and_counted() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    let p = proxied_syn(&fx, false, 46000);
    let data = Tcp::new(p.f.client, p.f.vip, 46000, 80, ACK | PSH)
        .seq(ISN + 1, p.cookie + 1)
        .payload(b"too early");
    assert_eq!(fx.run(&data.client_frame(), fx.front).0, XDP_DROP);
    assert_eq!(fx.dp.counter(Counter::DropSynProxyEarly).unwrap(), 1);
    // Sent again once the backend answered, it goes through.
    established(&fx, &p, 7);
    let (action, out) = fx.run(&data.client_frame(), fx.front);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(seen(&out).0.ack, BACKEND_ISN + 1);
}

/// SACK option bytes (after two NOPs) of `edges`.
fn sack(edges: &[u32]) -> Vec<u8> {
    let mut o = vec![1, 1, 5, 2 + 4 * edges.len() as u8];
    for e in edges {
        o.extend_from_slice(&e.to_be_bytes());
    }
    o
}

#[test]
fn a_backend_in_time_wait_gets_the_syn_again_past_it_and_both_numbers_are_translated() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    // The backend's TIME_WAIT expects this next from the tuple's last
    // connection, past the client's ISN: it answers the SYN with an ACK.
    const TW_NEXT: u32 = ISN + 0x0100_0000;
    let isn2 = TW_NEXT + 0x1_0000;
    for (six, sport) in [(false, 46100), (true, 46101)] {
        let p = proxied_syn(&fx, six, sport);
        let tw_ack = Tcp::new(p.syn.dst, p.syn.src, p.syn.dport, p.syn.sport, ACK)
            .seq(0x5555_0000, TW_NEXT)
            .window(501);
        let (action, out) = fx.run(&tw_ack.backend_frame(), fx.back);
        assert_eq!(action, XDP_TX, "the SYN goes back to the backend");
        let (syn, eth_src, eth_dst) = seen(&out);
        assert_eq!(eth_src, BACK_MAC);
        assert_eq!(
            eth_dst,
            match p.syn.dst {
                IpAddr::V4(a) => backend_mac(a.octets()),
                IpAddr::V6(a) => backend_mac6(a.octets()),
            }
        );
        assert_eq!((syn.src, syn.dst), (p.syn.src, p.syn.dst));
        assert_eq!((syn.sport, syn.dport), (p.syn.sport, p.syn.dport));
        assert_eq!(syn.flags, SYN);
        assert_eq!(syn.seq, isn2, "past what the TIME_WAIT expects");
        assert_eq!(syn.window, 502, "the client's");
        assert_eq!(syn.opts, p.syn.opts, "the client's options again");
        // Once per flow: another ACK is dropped (no ping-pong with a socket
        // that is not a TIME_WAIT).
        assert_eq!(fx.run(&tw_ack.backend_frame(), fx.back).0, XDP_DROP);
        // The backend accepts it; its SYN-ACK acknowledges the new ISN.
        let sa = Tcp::new(p.syn.dst, p.syn.src, p.syn.dport, p.syn.sport, SYN | ACK)
            .seq(BACKEND_ISN, isn2 + 1)
            .opts(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7]);
        let (action, out) = fx.run(&sa.backend_frame(), fx.back);
        assert_eq!(action, XDP_TX);
        let (ack, _, _) = seen(&out);
        assert_eq!(
            (ack.flags, ack.seq, ack.ack),
            (ACK, isn2 + 1, BACKEND_ISN + 1)
        );
        // Client to backend: sequence numbers in the new ISN's space too.
        let d = p.delta();
        let data = Tcp::new(p.f.client, p.f.vip, sport, 80, ACK | PSH)
            .seq(ISN + 1, p.cookie + 1001)
            .opts(&sack(&[p.cookie + 2000, p.cookie + 3000]))
            .payload(b"GET / HTTP/1.1\r\n\r\n");
        let (action, out) = fx.run(&data.client_frame(), fx.front);
        assert_eq!(action, XDP_REDIRECT);
        let (t, _, _) = seen(&out);
        assert_eq!((t.seq, t.ack), (isn2 + 1, BACKEND_ISN + 1001));
        assert_eq!(
            t.opts,
            sack(&[
                p.cookie.wrapping_add(2000).wrapping_add(d),
                p.cookie.wrapping_add(3000).wrapping_add(d)
            ])
        );
        // Backend to client: its acknowledgements and SACK blocks back in the
        // client's space, its sequence numbers in the cookie's.
        let reply = Tcp::new(p.syn.dst, p.syn.src, p.syn.dport, p.syn.sport, ACK | PSH)
            .seq(BACKEND_ISN + 1, isn2 + 20)
            .opts(&sack(&[isn2 + 100, isn2 + 200, isn2 + 300, isn2 + 400]))
            .payload(b"HTTP/1.1 200 OK\r\n\r\n");
        let (action, out) = fx.run(&reply.backend_frame(), fx.back);
        assert_eq!(action, XDP_REDIRECT);
        let (t, _, _) = seen(&out);
        assert_eq!((t.seq, t.ack), (p.cookie + 1, ISN + 20));
        assert_eq!(t.opts, sack(&[ISN + 100, ISN + 200, ISN + 300, ISN + 400]));
        assert_eq!(t.payload, b"HTTP/1.1 200 OK\r\n\r\n");
    }
    assert_eq!(fx.dp.counter(Counter::SynProxyTimeWait).unwrap(), 2);
    assert_eq!(fx.dp.counter(Counter::SynProxyEstablished).unwrap(), 2);
}

#[test]
fn a_silent_backend_gets_the_syn_again_when_the_client_repeats_itself() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    let p = proxied_syn(&fx, false, 46200);
    let data = Tcp::new(p.f.client, p.f.vip, 46200, 80, ACK | PSH)
        .seq(ISN + 1, p.cookie + 1)
        .window(600)
        .payload(b"GET / HTTP/1.1\r\n\r\n");
    // At once: early data, dropped (the backend's SYN-ACK is on its way).
    assert_eq!(fx.run(&data.client_frame(), fx.front).0, XDP_DROP);
    // A later segment is never taken for the first.
    let later = Tcp::new(p.f.client, p.f.vip, 46200, 80, ACK | PSH)
        .seq(ISN + 100, p.cookie + 1)
        .payload(b"more");
    // The client's first segment again, a while later: the SYN goes again.
    let mut again = None;
    poll_until(Duration::from_secs(3), Duration::from_millis(20), || {
        assert_eq!(fx.run(&later.client_frame(), fx.front).0, XDP_DROP);
        let (action, out) = fx.run(&data.client_frame(), fx.front);
        again = (action == XDP_REDIRECT).then(|| seen(&out).0);
        again.is_some()
    });
    let again = again.expect("the SYN went again");
    assert_eq!((again.src, again.dst), (p.syn.src, p.syn.dst));
    assert_eq!((again.sport, again.dport), (p.syn.sport, p.syn.dport));
    assert_eq!((again.flags, again.seq), (SYN, ISN));
    assert_eq!(again.window, 600);
    assert_eq!(again.opts, p.syn.opts);
    assert!(again.payload.is_empty());
    assert_eq!(fx.dp.counter(Counter::SynProxySynAgain).unwrap(), 1);
    // The backend answers it as it would have the first.
    established(&fx, &p, 7);
    let (action, out) = fx.run(&data.client_frame(), fx.front);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(seen(&out).0.ack, BACKEND_ISN + 1);
}

#[test]
fn a_refusing_backend_gets_the_client_a_reset() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    for (six, sport) in [(false, 47000), (true, 47001)] {
        let p = proxied_syn(&fx, six, sport);
        let rst =
            Tcp::new(p.syn.dst, p.syn.src, p.syn.dport, p.syn.sport, RST | ACK).seq(0, ISN + 1);
        let (action, out) = fx.run(&rst.backend_frame(), fx.back);
        assert_eq!(action, XDP_REDIRECT);
        let (t, _, _) = seen(&out);
        assert_eq!((t.src, t.dst), (p.f.vip, p.f.client));
        assert_eq!(t.flags & RST, RST);
        assert_eq!(t.seq, p.cookie + 1, "in the client's window");
    }
    assert_eq!(fx.dp.counter(Counter::SynProxyRefused).unwrap(), 2);
    for b in 0..4 {
        assert_eq!(
            fx.dp
                .active_conns(balancer_common::service::BackendIndex(b))
                .unwrap(),
            0
        );
    }
}

#[test]
fn a_proxied_flow_that_the_backend_never_answers_expires_and_is_counted() {
    let Some(mut fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    proxied_syn(&fx, false, 48000);
    let stats = fx.dp.sweep(&instant_half_open()).unwrap();
    assert_eq!(
        (stats.expired, stats.half_open_expired, stats.proxy_expired),
        (1, 1, 1)
    );
    assert_eq!(fx.dp.flow_entries().unwrap(), 0);
}

/// Half-open flows go at once; others stay.
fn instant_half_open() -> Timeouts {
    Timeouts {
        tcp_established: Duration::from_secs(3600),
        tcp_transitory: Duration::from_secs(30),
        tcp_syn: Duration::ZERO,
        udp: Duration::from_secs(60),
    }
}

fn off() -> Config {
    config().firewall(Firewall::default().syn_cookies(SynCookies::Off))
}

#[test]
fn half_open_flows_expire_whatever_the_backend_sends_again() {
    let Some(mut fx) = Fixture::with_config(&off(), 65536) else {
        return;
    };
    let (action, out) = fx.run(&tcp_frame(CLIENT, VIP, 49000, 80, "S", b""), fx.front);
    assert_eq!(action, XDP_REDIRECT);
    let fwd = inspect(&out);
    let syn_ack = tcp_seq_frame(fwd.dst, SNAT, 8080, fwd.sport, "SA", 5000, 1001, b"");
    // The limit, a second: the backend's SYN-ACKs, sent again and again to a
    // client that never answers, do not keep the flow.
    let limit = Timeouts {
        tcp_syn: Duration::from_secs(1),
        ..instant_half_open()
    };
    let created = std::time::Instant::now();
    let gone = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        assert_eq!(fx.run(&syn_ack, fx.back).0, XDP_REDIRECT);
        let stats = fx.dp.sweep(&limit).unwrap();
        stats.half_open_expired == 1
    });
    assert!(gone.is_some(), "the half-open flow expired");
    let age = created.elapsed();
    assert!(
        age < Duration::from_millis(2500),
        "expired {age:?} after its SYN, not after the last SYN-ACK"
    );
    assert_eq!(fx.dp.flow_entries().unwrap(), 0);
    assert_eq!(
        fx.dp
            .active_conns(balancer_common::service::BackendIndex(
                BACKENDS.iter().position(|b| *b == fwd.dst).unwrap() as u32
            ))
            .unwrap(),
        0
    );
    // A completed handshake moves the flow to the flow table, where the
    // half-open limit does not apply.
    handshake(&fx, CLIENT, 49001, 80);
    assert_eq!(half_open_entries(&fx), 0);
    let stats = fx.dp.sweep(&instant_half_open()).unwrap();
    assert_eq!(stats.expired, 0);
    assert_eq!(fx.dp.counter(Counter::HandshakeCompleted).unwrap(), 1);
}

#[test]
fn a_flood_of_new_flows_never_evicts_an_established_one() {
    // A flow table of 4,096 entries (2,048 flows); the half-open table gets
    // its own 4,096.
    let config = off()
        .snat_port_range(1024, 65535)
        .flows(FlowsConfig::default().capacity(4096));
    let Some(fx) = Fixture::with_config(&config, 4096) else {
        return;
    };
    sh("for i in $(seq 100 149); do \
        ip neigh add 198.51.100.$i lladdr 02:00:00:00:01:$(printf %02x $i) dev front nud permanent; \
        done");
    let clients: Vec<([u8; 4], u16)> = (0..1500u32)
        .map(|i| {
            (
                [198, 51, 100, 100 + (i % 50) as u8],
                10_000 + (i / 50) as u16,
            )
        })
        .collect();
    for (client, sport) in &clients {
        handshake(&fx, *client, *sport, 80);
    }
    let flows = |fx: &Fixture| -> usize {
        let map: aya::maps::HashMap<_, FlowKey, FlowValue> = fx.dp.map::<Flows, _>().unwrap();
        map.keys().count()
    };
    assert_eq!(flows(&fx), 3000);
    // 20,000 SYNs that never complete: ten times the half-open table. Those
    // that find it full are refused (and counted), never given a place.
    let mut refused = 0;
    for i in 0..20_000u32 {
        let client = [203, 0, 113, 100 + (i % 100) as u8];
        let frame = tcp_frame(client, VIP, 20_000 + (i / 100) as u16, 80, "S", b"");
        match fx.run(&frame, fx.back).0 {
            XDP_TX => {}
            XDP_DROP => refused += 1,
            other => panic!("SYN {i}: action {other}"),
        }
    }
    assert_eq!(flows(&fx), 3000, "every established flow is still there");
    let half: aya::maps::HashMap<_, FlowKey, FlowValue> = fx.dp.map::<HalfOpen, _>().unwrap();
    assert_eq!(half.keys().count(), 4096, "the half-open table full");
    assert_eq!(refused, 20_000 - 2048);
    assert_eq!(
        fx.dp.counter(Counter::DropFlowTableFull).unwrap(),
        refused as u64
    );
    // And each still goes where it went.
    for (client, sport) in clients.iter().step_by(7) {
        let data = tcp_seq_frame(*client, VIP, *sport, 80, "A", 1001, 5001, b"x");
        assert_eq!(fx.run(&data, fx.front).0, XDP_REDIRECT);
    }
    let values: aya::maps::HashMap<_, FlowKey, FlowValue> = fx.dp.map::<Flows, _>().unwrap();
    assert!(
        values
            .iter()
            .filter_map(Result::ok)
            .all(|(_, v)| v.state == STATE_ESTABLISHED)
    );
}

#[test]
fn auto_mode_turns_cookies_on_in_a_flood_and_off_after_it() {
    let config = config().snat_port_range(1024, 65535).firewall(
        Firewall::default()
            .syn_cookies(SynCookies::Auto)
            .syn_flood_threshold(200)
            .syn_flood_cooldown_s(1),
    );
    let Some(fx) = Fixture::with_config(&config, 65536) else {
        return;
    };
    // Handshakes that complete are no flood, however many.
    for i in 0..300u16 {
        handshake(&fx, CLIENT, 50_000 + i, 80);
    }
    assert_eq!(fx.dp.counter(Counter::SynCookieSent).unwrap(), 0);
    // SYNs that never complete: cookies come on within a few.
    let mut first_cookie = None;
    for i in 0..2000u16 {
        let frame = tcp_frame([198, 51, 100, 77], VIP, 1024 + i, 80, "S", b"");
        let (action, _) = fx.run(&frame, fx.front);
        if action == XDP_TX {
            first_cookie = Some(i);
            break;
        }
    }
    let first = first_cookie.expect("cookies came on");
    assert!(first <= 100, "after {first} half-open flows");
    assert_eq!(fx.dp.syn_flood().unwrap().activations, 1);
    // They stay on while the flood goes on, and go off a cooldown after it.
    let syn = tcp_frame([198, 51, 100, 78], VIP, 3000, 80, "S", b"");
    assert_eq!(fx.run(&syn, fx.front).0, XDP_TX);
    let off = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let syn = tcp_frame([198, 51, 100, 79], VIP, 3001, 80, "S", b"");
        fx.run(&syn, fx.front).0 == XDP_REDIRECT
    });
    assert!(off.is_some(), "cookies went off after the flood");
}

#[test]
fn a_cookie_made_on_a_peer_opens_the_flow_here() {
    let shared = b"0123456789abcdef0123456789abcdef".to_vec();
    let period = cookie::period_at(unix_now());
    // This node, its cookies off.
    let config = config().firewall(Firewall::default().syn_cookies(SynCookies::Auto));
    let Some(mut fx) = Fixture::with_config(&config, 65536) else {
        return;
    };
    fx.dp
        .rotate_cookie_keys(&syncookie::Secret::Shared(shared.clone()), period)
        .unwrap();
    // The cookie a peer with the same key made, for the previous period.
    let key = syncookie::derive(&shared, period - 1);
    let data = CookieData::of_syn(1460, 7, true, false);
    let words = cookie::words_v4(
        u32::from_ne_bytes(CLIENT),
        u32::from_ne_bytes(VIP),
        51000u16.to_be(),
        80u16.to_be(),
        ISN,
    );
    let c = cookie::make(
        cookie::siphash24(key.k0, key.k1, &words) as u32,
        period - 1,
        data,
    );
    let ack = Tcp::new(v4(CLIENT), v4(VIP), 51000, 80, ACK).seq(ISN + 1, c.wrapping_add(1));
    let (action, out) = fx.run(&ack.client_frame(), fx.front);
    assert_eq!(action, XDP_REDIRECT);
    let (syn, _, _) = seen(&out);
    assert_eq!((syn.flags, syn.seq), (SYN, ISN));
    assert_eq!(syn.opts, proxy_opts(MSS_V4[3], Some(7), true));
    // A stray ACK of no flow while cookies are off is the host's, as before.
    let stray = Tcp::new(v4(CLIENT), v4(VIP), 51001, 80, ACK).seq(5, 6);
    assert_eq!(fx.run(&stray.client_frame(), fx.front).0, XDP_PASS);
    let states: Vec<u8> = {
        let map: aya::maps::HashMap<_, FlowKey, FlowValue> = fx.dp.map::<HalfOpen, _>().unwrap();
        map.iter()
            .filter_map(Result::ok)
            .map(|(_, v)| v.state)
            .collect()
    };
    assert_eq!(states, [STATE_PROXY_SYN, STATE_PROXY_SYN]);
}

#[test]
fn a_backends_answer_for_a_flow_whose_client_key_another_flow_took_completes_nothing() {
    // Under a flood, another CPU may remove a proxied flow's forward half
    // just before its backend answers, and the client's next cookie ACK open
    // a second flow under the same key. The first backend's answer must then
    // complete nothing: not the second flow with the first's numbers, and no
    // entry of one flow under the other's key (the client's packets were once
    // sent back to it that way).
    let Some(mut fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    let sport = 44600;
    let first = proxied_syn(&fx, false, sport);
    let client_key = FlowKey {
        src: [u32::from_ne_bytes(CLIENT), 0, 0, 0],
        dst: [u32::from_ne_bytes(VIP), 0, 0, 0],
        sport_be: sport.to_be(),
        dport_be: 80u16.to_be(),
        proto: 6,
        family: 4,
        _pad: [0; 2],
    };
    {
        let mut half: aya::maps::HashMap<_, FlowKey, FlowValue> =
            fx.dp.map_mut::<HalfOpen, _>().unwrap();
        half.remove(&client_key).unwrap();
    }
    let second = proxied_syn(&fx, false, sport);
    assert_ne!(
        (second.syn.dst, second.syn.sport),
        (first.syn.dst, first.syn.sport),
        "a second backend connection"
    );
    let answer = |p: &Proxied| {
        Tcp::new(p.syn.dst, p.syn.src, p.syn.dport, p.syn.sport, SYN | ACK)
            .seq(BACKEND_ISN, ISN + 1)
            .opts(&[2, 4, 0x05, 0xb4])
            .backend_frame()
    };
    assert_eq!(fx.run(&answer(&first), fx.back).0, XDP_DROP);
    assert_eq!(fx.dp.counter(Counter::DropHalfOpenOrphan).unwrap(), 1);
    let flows = |fx: &Fixture| -> usize {
        let map: aya::maps::HashMap<_, FlowKey, FlowValue> = fx.dp.map::<Flows, _>().unwrap();
        map.keys().count()
    };
    assert_eq!(flows(&fx), 0, "nothing completed");
    // The second flow's own answer completes it, and the client's data goes
    // to its backend connection with its numbers.
    established(&fx, &second, 7);
    assert_eq!(flows(&fx), 2);
    let data = Tcp::new(second.f.client, second.f.vip, sport, 80, ACK | PSH)
        .seq(ISN + 1, second.cookie + 1)
        .payload(b"GET / HTTP/1.1\r\n\r\n");
    let (action, out) = fx.run(&data.client_frame(), fx.front);
    assert_eq!(action, XDP_REDIRECT);
    let (t, _, _) = seen(&out);
    assert_eq!(
        (t.src, t.dst, t.sport, t.ack),
        (
            second.syn.src,
            second.syn.dst,
            second.syn.sport,
            second.cookie.wrapping_add(1).wrapping_add(second.delta())
        )
    );
}

#[test]
fn a_service_of_another_port_and_udp_are_not_proxied() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    let udp = udp_frame(CLIENT, VIP, 52000, 53, b"q");
    assert_eq!(fx.run(&udp, fx.front).0, XDP_REDIRECT);
    let other = Tcp::new(v4(CLIENT), v4(VIP), 52001, 443, SYN).seq(ISN, 0);
    let frame = other.client_frame();
    assert_eq!(fx.run(&frame, fx.front), (XDP_PASS, frame));
}

#[test]
fn the_backends_segments_and_its_fin_reach_the_client_translated() {
    let Some(fx) = Fixture::with_config(&always(), 65536) else {
        return;
    };
    let p = proxied_syn(&fx, false, 44500);
    established(&fx, &p, 7);
    for (i, flags) in [ACK | PSH, ACK, ACK | FIN].into_iter().enumerate() {
        let reply = Tcp::new(p.syn.dst, p.syn.src, p.syn.dport, p.syn.sport, flags)
            .seq(BACKEND_ISN + 1 + i as u32, ISN + 20)
            .window(1000);
        let (action, out) = fx.run(&reply.backend_frame(), fx.back);
        assert_eq!(action, XDP_REDIRECT, "flags {flags:#x}");
        let (t, _, _) = seen(&out);
        assert_eq!((t.flags, t.seq), (flags, p.cookie + 1 + i as u32));
        assert_eq!(t.window, 1000, "the backend scales as the client was told");
    }
}
