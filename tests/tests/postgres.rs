//! PostgreSQL in HA behind the balancer, end to end: the worked example of
//! `examples/postgres-ha` (README, "Worked example: PostgreSQL in HA") driven
//! through its own script (`pgha.sh`), role endpoint and `balancer.toml`, on a
//! harness topology: one primary and two asynchronous streaming replicas
//! (PostgreSQL 15, as user `postgres`), writes through VIP:5432 (`db-rw`),
//! reads through VIP:5433 (`db-ro`), pgbench on both, a promotion, and a
//! client that the allow list keeps out.

mod postgres_common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use aya::maps::{MapData, PerCpuArray};
use balancer_common::{
    maps::ServiceDrops,
    service::ServiceId,
    stats::{Counter, service_drop_index},
};
use balancer_tests::{Balancer, Netns, Process, Topology, balancer_bin, poll_until};
use balancer_user::dataplane::PinnedMaps;
use postgres_common::*;
use toml_edit::{DocumentMut, Item};

const OUTSIDER: &str = "192.0.2.50";

/// A psql session held open through the VIP: statements go in over a pipe,
/// one line of answer comes back for each.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    fn open(example: &Example, port: u16) -> Result<Session> {
        let mut cmd =
            example.command(&["client", "psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"]);
        cmd.args(["-p", &port.to_string()])
            .env("PGCONNECT_TIMEOUT", "3")
            .env("PGOPTIONS", "-c statement_timeout=10s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("starting psql")?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Session {
            child,
            stdin,
            stdout,
        })
    }

    /// Runs `sql` (one row, psql's unaligned output); an error ends psql, and
    /// with it the answer.
    fn query(&mut self, sql: &str) -> Result<String> {
        writeln!(self.stdin, "{sql};")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        ensure!(!line.is_empty(), "psql ended without answering {sql:?}");
        Ok(line.trim().to_string())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a write through 5432 every 50 ms, each on a connection of its own,
/// and returns once one lands on `node` and commits: how long after `since`
/// that was seen, and how many attempts were started. The attempts overlap
/// because one whose SYN arrives while no backend is up at all is dropped
/// and waits for TCP's retransmission a second later; a later attempt shows
/// when new connections moved. Outcomes are looked at every 5 ms, which
/// bounds the measurement's error.
fn first_write_on(
    example: &Example,
    node: usize,
    since: Instant,
    limit: Duration,
) -> Result<(Duration, usize)> {
    let mut probes = Probes {
        example,
        running: Vec::new(),
        started: 0,
        next: Instant::now(),
    };
    let mut failure = None;
    let landed = poll_until(
        limit.saturating_sub(since.elapsed()),
        Duration::from_millis(5),
        // An error ends the wait, and is returned below.
        || {
            probes.step(node).unwrap_or_else(|e| {
                failure = Some(e);
                true
            })
        },
    );
    if let Some(e) = failure {
        return Err(e);
    }
    ensure!(
        landed.is_some(),
        "no write reached be{node} within {limit:?}"
    );
    Ok((since.elapsed(), probes.started))
}

/// The writes of [`first_write_on`], 50 ms apart, at most 40 at a time.
struct Probes<'a> {
    example: &'a Example,
    running: Vec<Process>,
    started: usize,
    next: Instant,
}

impl Probes<'_> {
    /// Starts a write if one is due; whether one has committed on `node`.
    fn step(&mut self, node: usize) -> Result<bool> {
        if Instant::now() >= self.next && self.running.len() < 40 {
            let mut cmd = self
                .example
                .command(&["client", "psql", "-X", "-q", "-tA", "-p", "5432"]);
            cmd.args([
                "-c",
                "INSERT INTO notes (body) VALUES ('failover probe') RETURNING inet_server_addr()",
            ])
            .env("PGCONNECT_TIMEOUT", "3")
            .env("PGOPTIONS", "-c statement_timeout=10s");
            self.running.push(Process::start(cmd)?);
            self.started += 1;
            self.next += Duration::from_millis(50);
        }
        for p in &mut self.running {
            if p.try_status()?.is_some_and(|s| s.success())
                && p.output_so_far().trim() == node_addr(node)
            {
                return Ok(true);
            }
        }
        self.running.retain_mut(|p| p.is_running());
        Ok(false)
    }
}

/// New connections to `service_id` dropped by the firewall, summed over the
/// CPUs, read from the daemon's pinned map itself: what `pgha.sh drops`
/// (`balancer stats`) must agree with.
fn firewall_drops(pin_dir: &Path, service_id: ServiceId) -> Result<u64> {
    let drops: PerCpuArray<MapData, u64> = PinnedMaps::new(pin_dir).open::<ServiceDrops, _>()?;
    Ok(drops
        .get(&service_drop_index(service_id, Counter::DropFirewall), 0)?
        .iter()
        .sum())
}

/// The example's configuration with `net` added to service `service`'s allow
/// list: a structured edit that fails when the service or its list is not
/// there, rather than a text replacement that would silently do nothing.
fn allow_also(config: &str, service: &str, net: &str) -> Result<DocumentMut> {
    let mut doc: DocumentMut = config.parse().context("the example's configuration")?;
    let services = doc
        .get_mut("service")
        .and_then(Item::as_array_of_tables_mut)
        .context("no [[service]] in the example's configuration")?;
    let table = services
        .iter_mut()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(service))
        .with_context(|| format!("no service {service:?} in the example's configuration"))?;
    let allow = table
        .get_mut("allow")
        .and_then(Item::as_array_mut)
        .with_context(|| format!("service {service:?} has no `allow` list"))?;
    allow.push(net);
    Ok(doc)
}

#[test]
fn postgres_ha_writes_reads_pgbench_failover_and_a_refused_client() {
    if !require_postgres() {
        return;
    }
    let started = Instant::now();

    // The configuration: the reference's db-rw and db-ro, which `check` takes
    // without a warning.
    let config_path = Path::new(EXAMPLE).join("balancer.toml");
    let config_text = std::fs::read_to_string(&config_path).unwrap();
    let out = Command::new(balancer_bin())
        .args(["check", "--config"])
        .arg(&config_path)
        .output()
        .expect("running balancer check (cargo build -p balancer-user builds it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !said.contains("warning"),
        "balancer check: {said}"
    );
    let config = balancer_user::config::parse(&config_text).unwrap().config;
    let rw = config.services.iter().find(|s| s.name == "db-rw").unwrap();
    let (interval, fall) = (
        Duration::from_millis(rw.health.interval_ms.into()),
        rw.health.fall,
    );

    // Topology: the harness's, with the example's three nodes (one primary,
    // two replicas, a role endpoint on each) and its outsider; the balancer
    // on the example's configuration, with a socket and pin directory of its
    // own in `[control]` (Balancer::start puts them there).
    let topo = Topology::builder()
        .hint("pgha")
        .backends(3)
        .ipv6(false)
        .build()
        .unwrap();
    let cluster = Cluster::start(&topo).unwrap();
    let example = &cluster.example;
    // Created here so that the harness removes it; the script wires it.
    let _outside = Netns::with_label(&format!("{}-outside", topo.prefix()), "outside").unwrap();
    example.run(&["outsider"]).unwrap();
    let lb = Balancer::start(topo.lb(), &config_text).unwrap();
    let pin_dir = lb.home().pin_dir();
    example.config.set(lb.config_path()).unwrap();
    wait_states(&lb, &PRIMARY_BE1);

    // Writes through 5432 reach the primary.
    example
        .client_sql(
            5432,
            "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)",
        )
        .unwrap();
    for i in 1..=5 {
        let server = example
            .client_sql(
                5432,
                &format!(
                    "INSERT INTO notes (body) VALUES ('note {i}') RETURNING inet_server_addr()"
                ),
            )
            .unwrap();
        assert_eq!(server, node_addr(1), "write {i} went to the primary");
    }

    // Reads through 5433: held sessions split evenly over the replicas by
    // least connections, none on the primary, and each sees the writes.
    example.wait_replicated(1, &[2, 3]).unwrap();
    let mut sessions = Vec::new();
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        let mut s = Session::open(example, 5433).unwrap();
        let answer = s
            .query("SELECT host(inet_server_addr()) || ' ' || count(*) FROM notes")
            .unwrap();
        let (server, rows) = answer.split_once(' ').unwrap();
        assert_eq!(rows, "5", "{server} sees the five rows");
        *spread.entry(server.to_string()).or_default() += 1;
        sessions.push(s);
    }
    eprintln!("10 sessions held through 5433: {spread:?}");
    assert_eq!(
        spread,
        BTreeMap::from([(node_addr(2), 5), (node_addr(3), 5)]),
        "evenly over the replicas, none on the primary"
    );
    let seen = backends(&lb);
    for (n, want) in [(1, 0), (2, 5), (3, 5)] {
        assert_eq!(
            seen[&("db-ro".to_string(), backend(n))].1,
            want,
            "db-ro active on be{n}: {seen:?}"
        );
    }
    drop(sessions);

    // pgbench: read-only through 5433, TPC-B through 5432, no failures.
    example
        .pgbench(&["-i", "-s", "1", "-q", "-p", "5432"])
        .unwrap();
    example.wait_replicated(1, &[2, 3]).unwrap();
    let ro = example
        .bench(&["-S", "-T", "5", "-c", "4", "-p", "5433"])
        .unwrap();
    eprintln!(
        "pgbench -S -T 5 -c 4 through 5433: {} transactions, {} failed, {:.0} tps",
        ro.processed, ro.failed, ro.tps
    );
    assert!(ro.processed > 0 && ro.failed == 0, "{ro:?}");
    let rw_bench = example
        .bench(&["-T", "5", "-c", "4", "-p", "5432"])
        .unwrap();
    eprintln!(
        "pgbench -T 5 -c 4 through 5432: {} transactions, {} failed, {:.0} tps",
        rw_bench.processed, rw_bench.failed, rw_bench.tps
    );
    assert!(
        rw_bench.processed > 0 && rw_bench.failed == 0,
        "{rw_bench:?}"
    );

    // Failover: the primary stops, be2 is promoted. New write connections
    // reach be2 within one interval after the promotion (rise = 1); the
    // bound stated for a change of role is interval x fall + interval.
    let mark = lb.log_mark();
    example.run(&["stop", "1"]).unwrap();
    example.run(&["promote", "2"]).unwrap();
    let promoted = Instant::now();
    let (moved, attempts) = first_write_on(example, 2, promoted, Duration::from_secs(10)).unwrap();
    let bound = interval * fall + interval;
    eprintln!(
        "after the promotion, the first new write through 5432 landed on be2 in {moved:?} ({attempts} attempts started; bound {bound:?} + 200 ms)"
    );
    assert!(
        moved <= bound + Duration::from_millis(200),
        "took {moved:?}"
    );
    let t = Duration::from_secs(5);
    lb.wait_for_log_since(mark, &["backend up", "service=\"db-rw\"", &backend(2)], t)
        .unwrap();
    lb.wait_for_log_since(mark, &["backend down", "service=\"db-rw\"", &backend(1)], t)
        .unwrap();
    lb.wait_for_log_since(mark, &["backend down", "service=\"db-ro\"", &backend(2)], t)
        .unwrap();
    for i in 0..5 {
        let server = example
            .client_sql(
                5432,
                "INSERT INTO notes (body) VALUES ('after failover') RETURNING inet_server_addr()",
            )
            .unwrap();
        assert_eq!(server, node_addr(2), "write connection {i} after failover");
    }
    // be3 follows the new primary and serves the reads with what was written
    // after the failover.
    example.run(&["follow", "3", "2"]).unwrap();
    wait_states(&lb, &[("db-ro", 2, "down"), ("db-ro", 3, "up")]);
    example.wait_replicated(2, &[3]).unwrap();
    let read = example
        .client_sql(
            5433,
            "SELECT host(inet_server_addr()) || ' ' || count(*) FROM notes WHERE body = 'after failover'",
        )
        .unwrap();
    assert_eq!(read, format!("{} 5", node_addr(3)));

    // A source outside the allow list: its SYNs are dropped in XDP and
    // counted; a client inside it still connects.
    let before = firewall_drops(&pin_dir, ServiceId(0)).unwrap();
    let t = Instant::now();
    let refused = example.vip_sql("outside", 5432, "SELECT 1", 2);
    let err = format!(
        "{:#}",
        refused.expect_err("192.0.2.50 is not in the allow list")
    );
    assert!(
        err.contains("timeout expired"),
        "dropped, not refused: {err}"
    );
    eprintln!("the outsider's psql gave up after {:?}: {err}", t.elapsed());
    let dropped = firewall_drops(&pin_dir, ServiceId(0)).unwrap() - before;
    assert!(dropped >= 1, "the drop is counted");
    assert_eq!(
        firewall_drops(&pin_dir, ServiceId(1)).unwrap(),
        0,
        "none on db-ro"
    );
    let shown = example.run(&["drops"]).unwrap();
    assert!(
        shown.contains(&format!("db-rw: {} dropped", before + dropped)),
        "pgha.sh drops reads the same counter: {shown}"
    );
    assert_eq!(
        example.client_sql(5432, "SELECT 1").unwrap(),
        "1",
        "inside the list"
    );
    // With its network allowed, the same outsider connects: the route back
    // to it works, and what kept it out was the allow list.
    lb.home()
        .write_config(&allow_also(&config_text, "db-rw", "192.0.2.0/24").unwrap())
        .unwrap();
    let out = lb.cli(&["reload"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        example.vip_sql("outside", 5432, "SELECT 1", 3).unwrap(),
        "1",
        "{OUTSIDER} once allowed"
    );

    lb.stop().unwrap();
    eprintln!("postgres end-to-end test took {:?}", started.elapsed());
}

#[test]
fn the_allow_list_edit_fails_loudly_where_the_example_has_no_such_key() {
    let text = std::fs::read_to_string(Path::new(EXAMPLE).join("balancer.toml")).unwrap();
    let doc = allow_also(&text, "db-rw", "192.0.2.0/24").unwrap();
    let config = balancer_user::config::parse(&doc.to_string())
        .unwrap()
        .config;
    let allowed = |name: &str| {
        let service = config.services.iter().find(|s| s.name == name).unwrap();
        service
            .allow
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(allowed("db-rw"), ["198.51.100.0/24", "192.0.2.0/24"]);
    assert_eq!(allowed("db-ro"), ["198.51.100.0/24"], "db-ro is left alone");
    let err = allow_also(&text, "db-wr", "192.0.2.0/24").unwrap_err();
    assert!(
        format!("{err:#}").contains("no service \"db-wr\""),
        "{err:#}"
    );
    let no_list = text.replace("allow = [\"198.51.100.0/24\"]\n", "");
    let err = allow_also(&no_list, "db-rw", "192.0.2.0/24").unwrap_err();
    assert!(
        format!("{err:#}").contains("has no `allow` list"),
        "{err:#}"
    );
}
