//! Issue 13: pgbench (4 clients, 20 s) through the read/write VIP while the
//! active balancer host dies, its replacement joins, and then the other host
//! dies: 0 failed transactions and no aborted client.
//!
//! The PostgreSQL example (`examples/postgres-ha`: one primary, two streaming
//! replicas, role endpoints, `balancer.toml`) behind two balancer hosts: lb-a
//! (`lb`, priority 200) and lb-b (`lb2`, priority 100), each running the
//! example's configuration with an `[ha]` section added (flow sync on, preempt
//! off, so that a replaced host joins as the standby). pgbench's four
//! connections are opened once and kept (no `-C`): every one of them must
//! live through both failovers.

mod ha_common;
mod postgres_common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, ensure};
use balancer_tests::{
    Balancer, LbHost, Netns, Process, TempDir, Topology, balancer_bin,
    config::{Config, Ha},
    poll_until, wait_until,
};
use ha_common::{ha, key_file, role};
use postgres_common::*;
use serde_json::Value;
use toml_edit::DocumentMut;

/// pgbench's clients and run time, as issue 13 states them.
const CLIENTS: usize = 4;
const SECONDS: u64 = 20;
/// How long a step may take to show (a role change, a copy, progress).
const WAIT: Duration = Duration::from_secs(15);
/// pgbench must still have this long to run after the last failover has
/// shown, so that the run says something about the connections after it.
const AFTER_LAST: Duration = Duration::from_secs(3);

/// The example's configuration for node `name`, with an `[ha]` section built
/// by the typed builder. The example has none: one already there is an error,
/// not something to merge with.
fn node_config(example: &str, name: &str, priority: u8, peer: &str, key: &str) -> DocumentMut {
    let mut doc: DocumentMut = example
        .parse()
        .expect("the example's configuration is TOML");
    assert!(
        !doc.contains_key("ha"),
        "the example's configuration has an [ha] section of its own"
    );
    doc.get_mut("node")
        .and_then(|n| n.as_table_like_mut())
        .expect("the example's configuration has a [node] table")
        .insert("name", toml_edit::value(name));
    let ha = Config::new(name)
        .ha(Ha::enabled()
            .interface("front")
            .peers([peer])
            .priority(priority)
            .preempt(false)
            .auth_key_file(key)
            .sync_flows(true)
            .track_interfaces(["front", "back"]))
        .to_document()
        .remove("ha")
        .expect("the builder writes [ha]");
    doc.insert("ha", ha);
    doc
}

/// The state of `lb`'s copy of `peer`'s flow table (`none`, `in_progress`,
/// `complete`).
fn copy_state(lb: &Balancer, peer: &str) -> String {
    ha(lb)["sync_copies"][peer]["state"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

fn holds_vip(ns: &Netns) -> bool {
    ns.ip(&["-j", "addr", "show", "dev", "front"])
        .is_ok_and(|out| out.contains(&format!("\"{VIP}\"")))
}

/// `balancer flows --json` of `lb`'s pinned table (readable also after its
/// host died: the pins live in the test's BPF file system).
fn flows(lb: &Balancer) -> Vec<Value> {
    let out = Command::new(balancer_bin())
        .args(["flows", "--json", "--service", "db-rw", "--config"])
        .arg(lb.config_path())
        .output()
        .expect("running balancer flows");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect()
}

/// The clients of the db-rw flows in `lb`'s table that are in one of
/// `states` (all of them when empty), each with its state.
fn clients(lb: &Balancer, states: &[&str]) -> BTreeMap<String, String> {
    flows(lb)
        .iter()
        .filter(|f| states.is_empty() || states.iter().any(|s| f["state"] == *s))
        .filter_map(|f| {
            let client = f["client"].as_str()?.to_string();
            Some((client, f["state"].as_str()?.to_string()))
        })
        .collect()
}

/// The clients of the established db-rw flows of the node that serves:
/// pgbench's connections.
fn established(lb: &Balancer) -> BTreeSet<String> {
    clients(lb, &["established"]).into_keys().collect()
}

/// Whether `lb` (a standby) holds a flow of each of `connections`. A flow
/// synced live is held in the state in which it was sent, `new` (the sync
/// sends a flow when it opens and when it ends); one from a bulk copy in its
/// state then.
fn holds(lb: &Balancer, connections: &BTreeSet<String>) -> bool {
    let held = clients(lb, &[]);
    connections.iter().all(|c| held.contains_key(c))
}

/// The events a daemon logged (health verdicts, resets, HA transitions,
/// copies), for the report and for evidence.
fn events_of(lb: &Balancer) -> Vec<String> {
    lb.output_so_far()
        .lines()
        .filter(|l| l.contains(" event: "))
        .map(str::to_string)
        .collect()
}

/// Health verdicts other than a role's 503 (a check that timed out, a reset
/// of a backend's flows): none is expected, and one explains an aborted
/// client that no failover did.
fn other_verdicts(nodes: &[(&str, &Balancer)]) -> String {
    let mut text = String::new();
    for (name, lb) in nodes {
        for e in events_of(lb) {
            if (e.contains("backend_down") || e.contains("flows_reset")) && !e.contains("HTTP 503")
            {
                text += &format!("{name}: {e}\n");
            }
        }
    }
    text
}

/// What the test shows when something breaks: health verdicts other than a
/// role's 503 first (a connection ended by a reset after checks that timed
/// out is no failover's doing), then each node's HA state (if it still
/// answers), its db-rw flows (the pinned table, readable also after its host
/// died) and its last events, and what pgbench said.
fn evidence(nodes: &[(&str, &Balancer)], pgbench: &Process) -> String {
    let mut text = format!(
        "--- health verdicts other than a role's 503:\n{}",
        other_verdicts(nodes)
    );
    for (name, lb) in nodes {
        let ha = lb
            .cli(&["status", "--json"])
            .ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
            .map(|v| v["status"]["ha"].to_string())
            .unwrap_or_else(|| "(no answer)".into());
        text += &format!("--- {name}: ha {ha}\n--- {name}: db-rw flows\n");
        for f in flows(lb) {
            text += &format!("{f}\n");
        }
        text += &format!("--- {name}: last events\n");
        let events = events_of(lb);
        for e in &events[events.len().saturating_sub(30)..] {
            text += &format!("{e}\n");
        }
    }
    text + &format!("--- pgbench:\n{}", pgbench.output_so_far())
}

/// How many of pgbench's server processes on the primary began a statement
/// after `t` (`query_start`, which stays set between statements): when all
/// have, every client's statements reach the primary again.
fn clients_on_since(example: &Example, t: SystemTime) -> usize {
    let epoch = t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name = 'pgbench' AND query_start > to_timestamp({epoch:.6})"
    );
    example
        .sql(1, &sql)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A failover as [`fail_over`] saw it: when the host died, how long until
/// the heir was active and held the VIP, and until every pgbench client's
/// statements reached the primary again after that.
struct Failover {
    killed: SystemTime,
    active_after: Duration,
    clients_after: Duration,
}

/// Host `dying` dies while `heir` is its standby. `nodes` and `pgbench` are
/// for the evidence when it fails.
fn fail_over(
    topo: &Topology,
    dying: LbHost,
    heir: &Balancer,
    example: &Example,
    nodes: &[(&str, &Balancer)],
    pgbench: &Process,
) -> Failover {
    let heir_ns = match dying {
        LbHost::Lb => topo.lb2(),
        LbHost::Lb2 => topo.lb(),
    };
    let killed = SystemTime::now();
    let t = Instant::now();
    topo.kill_lb(dying).unwrap();
    let active = poll_until(WAIT, Duration::from_millis(10), || {
        role(heir) == "active" && holds_vip(heir_ns)
    });
    let Some(active_after) = active else {
        panic!(
            "no takeover after {dying:?} died\n{}",
            evidence(nodes, pgbench)
        );
    };
    let took_over = SystemTime::now();
    let on = wait_until(WAIT, || clients_on_since(example, took_over) == CLIENTS);
    assert!(
        on,
        "not every pgbench client went on after the takeover\n{}",
        evidence(nodes, pgbench)
    );
    Failover {
        killed,
        active_after,
        clients_after: t.elapsed(),
    }
}

/// One transaction of pgbench's log (`-l`): which client, its latency, and
/// when it ended (Unix time, seconds).
struct Txn {
    client: usize,
    latency: Duration,
    ended: f64,
}

/// pgbench's per-transaction log files in `dir`: `client_id transaction_no
/// time script_no time_epoch time_us`, `time` in microseconds (or a word for
/// a transaction that failed or was skipped, counted in the second number).
fn read_log(dir: &Path) -> Result<(Vec<Txn>, usize)> {
    let (mut txns, mut failed) = (Vec::new(), 0);
    for entry in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            ensure!(f.len() >= 6, "a short line in pgbench's log: {line:?}");
            let Ok(us) = f[2].parse::<u64>() else {
                failed += 1;
                continue;
            };
            txns.push(Txn {
                client: f[0].parse()?,
                latency: Duration::from_micros(us),
                ended: f[4].parse::<f64>()? + f[5].parse::<f64>()? / 1e6,
            });
        }
    }
    txns.sort_by(|a, b| a.ended.total_cmp(&b.ended));
    Ok((txns, failed))
}

/// What pgbench's clients saw of an event at `t`, among the transactions
/// that ended from 200 ms before it until 3 s after it or `until` (the next
/// event), whichever is first: the longest time in which none ended (its
/// start and end relative to `t`, in seconds), and the longest latency of
/// those that ended after `t`. Bounded so that a stall of the loaded machine
/// long after the event is not counted as the event's.
struct Stall {
    from: f64,
    to: f64,
    longest: Duration,
}

fn stall(txns: &[Txn], t: SystemTime, until: SystemTime) -> Option<Stall> {
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let (t, until) = (unix(t), unix(until).min(unix(t) + 3.0));
    let first = txns.partition_point(|x| x.ended < t - 0.2);
    let last = txns.partition_point(|x| x.ended <= until);
    let window = &txns[first..last];
    let (from, to) = window
        .windows(2)
        .map(|w| (w[0].ended, w[1].ended))
        .max_by(|a, b| (a.1 - a.0).total_cmp(&(b.1 - b.0)))?;
    let longest = window
        .iter()
        .filter(|x| x.ended > t)
        .map(|x| x.latency)
        .max()?;
    Some(Stall {
        from: from - t,
        to: to - t,
        longest,
    })
}

fn ms(s: f64) -> String {
    format!("{:+.0} ms", s * 1000.0)
}

#[test]
fn pgbench_through_the_rw_vip_survives_a_host_death_a_replacement_and_a_second_death() {
    if !require_postgres() {
        return;
    }
    let begun = Instant::now();
    let example_config = std::fs::read_to_string(Path::new(EXAMPLE).join("balancer.toml")).unwrap();

    // Two balancer hosts, the example's three nodes.
    let mut topo = Topology::builder()
        .hint("pgh2")
        .backends(3)
        .ipv6(false)
        .standby(true)
        .build()
        .unwrap();
    let cluster = Cluster::start(&topo).unwrap();
    let example = &cluster.example;
    let keys = TempDir::new("pghakey").unwrap();
    let key = key_file(&keys, 0o600);
    let config_a = node_config(&example_config, "lb-a", 200, "198.51.100.3", &key);
    let config_b = node_config(&example_config, "lb-b", 100, "198.51.100.1", &key);
    let a = Balancer::start(topo.lb(), &config_a).unwrap();
    let b = Balancer::start(topo.lb2(), &config_b).unwrap();
    let up = wait_until(WAIT, || role(&a) == "active" && role(&b) == "standby");
    assert!(up, "roles a={} b={}", role(&a), role(&b));
    let copied = wait_until(WAIT, || copy_state(&b, "lb-a") == "complete");
    assert!(
        copied,
        "lb-b has no complete copy of lb-a's table: {}",
        ha(&b)
    );
    wait_states(&a, &PRIMARY_BE1);
    wait_states(&b, &PRIMARY_BE1);

    // pgbench's tables, through the VIP.
    example
        .pgbench(&["-i", "-s", "1", "-q", "-p", "5432"])
        .unwrap();

    // The run: four connections kept for 20 s, a progress line a second,
    // every transaction in the log.
    let logs = TempDir::new("pgbench-log").unwrap();
    let mut cmd = example.command(&["client", "pgbench"]);
    cmd.args(["-c", &CLIENTS.to_string(), "-T", &SECONDS.to_string()])
        .args(["-P", "1", "-l", "--log-prefix"])
        .arg(logs.join("pgbench"))
        .args(["-p", "5432"]);
    let mut pgbench = Process::start(cmd).unwrap();
    let bench_started = Instant::now();
    let at = || format!("{:4.1} s", bench_started.elapsed().as_secs_f64());

    // Its connections are in lb-a's table and, synced, in lb-b's.
    let synced = wait_until(WAIT, || {
        let on_a = established(&a);
        on_a.len() == CLIENTS && holds(&b, &on_a)
    });
    assert!(
        synced,
        "pgbench's {CLIENTS} connections not in both tables\n{}",
        evidence(&[("lb-a", &a), ("lb-b", &b)], &pgbench)
    );
    let connections = established(&a);
    eprintln!(
        "{}: pgbench's connections, established on lb-a, on lb-b: {:?}",
        at(),
        clients(&b, &[])
    );

    // 1. lb-a's host dies; lb-b takes over, and every client goes on.
    let first = fail_over(
        &topo,
        LbHost::Lb,
        &b,
        example,
        &[("lb-a", &a), ("lb-b", &b)],
        &pgbench,
    );
    eprintln!(
        "{}: lb-a's host died; lb-b active with the VIP {:?} later, every client's \
         statements reaching the primary {:?} later",
        at(),
        first.active_after,
        first.clients_after
    );

    // 2. A fresh host takes lb-a's place: it joins as the standby (preempt
    // off) and copies lb-b's table, pgbench's connections in it.
    topo.replace_lb(LbHost::Lb).unwrap();
    let a2 = Balancer::start(topo.lb(), &config_a).unwrap();
    let joined = wait_until(WAIT, || {
        role(&a2) == "standby" && copy_state(&a2, "lb-b") == "complete"
    });
    assert!(
        joined,
        "the replacement did not join with a complete copy: {}\n{}",
        ha(&a2),
        a2.output_so_far()
    );
    assert_eq!(role(&b), "active", "lb-b stays active (preempt off)");
    let nodes = [("lb-a", &a), ("lb-b", &b), ("lb-a's replacement", &a2)];
    let on_a2 = wait_until(WAIT, || holds(&a2, &connections));
    assert!(
        on_a2,
        "pgbench's connections not in the replacement's copy\n{}",
        evidence(&nodes, &pgbench)
    );
    eprintln!(
        "{}: the replacement joined as standby with a complete copy of lb-b's table: {:?} \
         (its check of db-rw's be1: {:?})",
        at(),
        clients(&a2, &[]),
        backends(&a2).get(&("db-rw".to_string(), backend(1)))
    );

    // 3. lb-b's host dies; the replacement takes over.
    let left = Duration::from_secs(SECONDS).saturating_sub(bench_started.elapsed());
    assert!(
        left >= AFTER_LAST + Duration::from_secs(1),
        "the steps took too long for a {SECONDS} s run: {left:?} of it left before the second death"
    );
    let second = fail_over(&topo, LbHost::Lb2, &a2, example, &nodes, &pgbench);
    eprintln!(
        "{}: lb-b's host died; the replacement active with the VIP {:?} later, every client's \
         statements reaching the primary {:?} later",
        at(),
        second.active_after,
        second.clients_after
    );
    let left = Duration::from_secs(SECONDS).saturating_sub(bench_started.elapsed());
    assert!(
        left >= AFTER_LAST,
        "pgbench ends {left:?} after the clients went on: too little to count"
    );

    // pgbench's verdict: every client finished, no transaction failed.
    let status = pgbench
        .wait_timeout(Duration::from_secs(SECONDS + 30))
        .unwrap();
    let Some(status) = status else {
        panic!(
            "pgbench still running 30 s after its end: a client hangs\n{}",
            evidence(&nodes, &pgbench)
        );
    };
    let said = pgbench.output_so_far();
    let verdicts = other_verdicts(&nodes);
    if !verdicts.is_empty() {
        eprintln!("health verdicts other than a role's 503:\n{verdicts}");
    }
    let aborted: Vec<&str> = said.lines().filter(|l| l.contains("aborted")).collect();
    assert!(
        aborted.is_empty() && status.success(),
        "pgbench exited with {status}, {} client(s) aborted:\n{}\n{}",
        aborted.len(),
        aborted.join("\n"),
        evidence(&nodes, &pgbench)
    );
    let bench = Bench::parse(&said).unwrap();
    eprintln!(
        "pgbench -c {CLIENTS} -T {SECONDS}: {} transactions, {} failed, {:.0} tps",
        bench.processed, bench.failed, bench.tps
    );
    assert!(
        said.contains(&format!("number of clients: {CLIENTS}")),
        "{said}"
    );
    assert_eq!(bench.failed, 0, "failed transactions:\n{said}");
    assert!(bench.processed > 0, "{said}");

    // The log: every client's transactions, also after the second death,
    // and how long the failovers stalled them.
    let (txns, failed_in_log) = read_log(logs.path()).unwrap();
    assert_eq!(failed_in_log, 0, "failed transactions in pgbench's log");
    assert_eq!(
        txns.len() as u64,
        bench.processed,
        "the log has every transaction"
    );
    let last = second
        .killed
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut per_client: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    for x in &txns {
        let e = per_client.entry(x.client).or_default();
        e.0 += 1;
        e.1 += u64::from(x.ended > last);
    }
    eprintln!("transactions per client (in all, after the second death): {per_client:?}");
    assert_eq!(per_client.len(), CLIENTS, "{per_client:?}");
    assert!(
        per_client.values().all(|&(_, after)| after > 0),
        "a client did nothing after the second death: {per_client:?}"
    );
    let end = SystemTime::now();
    for (what, t, until) in [
        ("lb-a's death", first.killed, second.killed),
        ("lb-b's death", second.killed, end),
    ] {
        let s = stall(&txns, t, until)
            .with_context(|| format!("no transactions around {what}"))
            .unwrap();
        eprintln!(
            "{what}: no transaction ended from {} to {} ({:.0} ms); the longest that ended \
             in the 3 s after it took {:?}",
            ms(s.from),
            ms(s.to),
            (s.to - s.from) * 1000.0,
            s.longest
        );
    }
    let slowest = txns.iter().map(|x| x.latency).max().unwrap();
    eprintln!("the slowest transaction of the run took {slowest:?}");
    let progress: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("progress:"))
        .collect();
    eprintln!("{}", progress.join("\n"));

    a2.stop().unwrap();
    eprintln!("postgres HA test took {:?}", begun.elapsed());
}
