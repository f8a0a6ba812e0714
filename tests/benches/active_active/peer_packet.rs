//! A peer's flow, per packet: the same established client packet (an ACK
//! with 16 bytes) of a flow this node owns and of a flow whose two entries
//! say a peer owns it (`FlowValue.owner` = `node_id(b"peer")`, as a peer's
//! sync installs them), through BPF_PROG_TEST_RUN on the packet fixture of
//! `tests/benches/packet_cost.rs` (the program loaded in a private network
//! namespace, its maps written by the daemon's own code, static neighbours).
//!
//! Two flows, A and B, each opened by its SYN and established by its
//! backend's SYN-ACK. For the first half of the rounds A is this node's and B
//! the peer's, for the second half the other way round, so that neither
//! flow's place in the table favours one case. In every round both cases and
//! the XDP_PASS program run 20,000 times each (`repeat = 1`), in an order
//! that alternates from round to round; the figure is the median of the round
//! means.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use aya::{maps::HashMap, programs::Xdp};
use balancer_common::{
    flow::{FlowKey, FlowValue, OWNER_SELF, node_id},
    maps::Flows,
};
use balancer_user::dataplane::test_run;

use crate::{
    common::{
        BACKENDS, CLIENT, Fixture, SNAT, VIP, XDP_PASS, XDP_REDIRECT, baseline_programs, handshake,
        pin_to_cpu0, tcp_frame,
    },
    support::{Segment, load_average, median},
};

const ROUNDS: usize = 20;
const RUNS_PER_ROUND: usize = 20_000;
/// The two flows' client ports.
const PORTS: [u16; 2] = [51000, 51001];

#[derive(Debug, Default)]
pub struct PeerPacket {
    /// Round means, ns per packet.
    pub own: Vec<f64>,
    pub peer: Vec<f64>,
    pub pass: Vec<f64>,
    pub load_before: String,
    pub load_after: String,
}

/// Measures on a thread of its own: the fixture moves its thread into a
/// network namespace of its own and pins it to CPU 0.
pub fn measure() -> Result<PeerPacket> {
    std::thread::spawn(measure_here)
        .join()
        .map_err(|_| anyhow::anyhow!("the per-packet measurement panicked"))?
}

fn measure_here() -> Result<PeerPacket> {
    pin_to_cpu0();
    let Some(mut fx) = Fixture::new() else {
        bail!("the packet fixture cannot run here");
    };
    let baseline = baseline_programs(&["baseline_pass"]);
    let pass: &Xdp = baseline
        .program("baseline_pass")
        .context("baseline_pass")?
        .try_into()?;

    // Both flows opened and established; their entries' keys.
    let mut keys = Vec::new();
    for port in PORTS {
        // The whole handshake: a SYN alone leaves a half-open flow, which
        // is not in the flow table.
        let fwd = handshake(&fx, CLIENT, port, 80);
        ensure!(BACKENDS.contains(&fwd.dst), "to {:?}", fwd.dst);
        let key = |src, dst, sport, dport| {
            Segment {
                src,
                dst,
                sport,
                dport,
                seq: 0,
                ack: 0,
                flags: 0,
            }
            .key()
        };
        keys.push([
            key(CLIENT, VIP, port, 80),
            key(fwd.dst, SNAT, fwd.dport, fwd.sport),
        ]);
    }
    let frames: Vec<Vec<u8>> = PORTS
        .iter()
        .map(|&port| tcp_frame(CLIENT, VIP, port, 80, "A", b"0123456789abcdef"))
        .collect();
    let peer = node_id(b"peer");

    let mut m = PeerPacket {
        load_before: load_average(),
        ..PeerPacket::default()
    };
    for round in 0..ROUNDS {
        // Which flow is the peer's: B, then A.
        let peers = usize::from(round >= ROUNDS / 2);
        if round == 0 || round == ROUNDS / 2 {
            for (f, flow_keys) in keys.iter().enumerate() {
                set_owner(
                    &mut fx,
                    flow_keys,
                    if f == peers { peer } else { OWNER_SELF },
                )?;
            }
        }
        let own = 1 - peers;
        // The order of the cases alternates.
        let mut cases: [(usize, Option<usize>); 3] = [(0, Some(own)), (1, Some(peers)), (2, None)];
        if round % 2 == 1 {
            cases.reverse();
        }
        for (case, flow) in cases {
            let mut total = Duration::ZERO;
            for _ in 0..RUNS_PER_ROUND {
                let run = match flow {
                    Some(f) => fx.dp.test_run(&frames[f], fx.front)?,
                    None => test_run(pass, &frames[0], fx.front)?,
                };
                let want = if flow.is_some() {
                    XDP_REDIRECT
                } else {
                    XDP_PASS
                };
                ensure!(run.action == want, "case {case}: action {}", run.action);
                total += run.duration;
            }
            let mean = total.as_nanos() as f64 / RUNS_PER_ROUND as f64;
            [&mut m.own, &mut m.peer, &mut m.pass][case].push(mean);
        }
    }
    m.load_after = load_average();
    Ok(m)
}

/// Sets the owner of both entries of a flow.
fn set_owner(fx: &mut Fixture, keys: &[FlowKey; 2], owner: u32) -> Result<()> {
    let mut flows = fx.dp.map_mut::<Flows, HashMap<_, FlowKey, FlowValue>>()?;
    for key in keys {
        let mut v = flows.get(key, 0).context("a flow entry is missing")?;
        v.owner = owner;
        flows.insert(key, v, 0)?;
    }
    Ok(())
}

pub fn render(out: &mut String, m: &PeerPacket) {
    use std::fmt::Write as _;
    let (own, peer, pass) = (median(&m.own), median(&m.peer), median(&m.pass));
    let diffs: Vec<f64> = m.peer.iter().zip(&m.own).map(|(p, o)| p - o).collect();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.0}–{hi:.0}")
    };
    let _ = writeln!(out, "### A peer's flow, per packet\n");
    let _ = writeln!(
        out,
        "BPF_PROG_TEST_RUN of an established client packet (ACK, 16 bytes) of a flow this node opened, and of one whose two entries say a peer opened it (`owner` = `node_id(b\"peer\")`, as a peer's sync installs them), on the fixture of `## Per packet` (the program in a private namespace, maps written by the daemon's own code, the thread on CPU 0). Two flows, each this node's for half of the {ROUNDS} rounds and the peer's for the other half; every round runs each case {RUNS_PER_ROUND} times (`repeat = 1`) in an order that alternates. Load average {} before, {} after.\n",
        m.load_before, m.load_after
    );
    let _ = writeln!(
        out,
        "| established packet, client to backend | ns/packet, median of the round means | net of XDP_PASS | range of the round means |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (label, v, x) in [
        ("XDP_PASS program (baseline)", &m.pass, pass),
        ("**a flow of this node's**", &m.own, own),
        ("**a peer's flow**", &m.peer, peer),
    ] {
        let _ = writeln!(out, "| {label} | {x:.0} | {:.0} | {} |", x - pass, range(v));
    }
    let _ = writeln!(
        out,
        "| a peer's less this node's, same round (median; range) | {:.0} | | {} |",
        median(&diffs),
        range(&diffs)
    );
    let _ = writeln!(out);
}
