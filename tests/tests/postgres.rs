//! PostgreSQL in HA behind the balancer, end to end: the worked example of
//! `examples/postgres-ha` (README, "Worked example: PostgreSQL in HA") driven
//! through its own script (`pgha.sh`), role endpoint and `balancer.toml`, on a
//! harness topology: one primary and two asynchronous streaming replicas
//! (PostgreSQL 15, as user `postgres`), writes through VIP:5432 (`db-rw`),
//! reads through VIP:5433 (`db-ro`), pgbench on both, a promotion, and a
//! client that the allow list keeps out.
//!
//! The harness names the namespaces (`{prefix}-be1` ...) as the script does;
//! its backends get the example's addresses 203.0.113.41-43 beside their own.

use std::{
    cell::OnceCell,
    collections::BTreeMap,
    fs::Permissions,
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use aya::maps::{MapData, PerCpuArray};
use balancer_common::{
    maps::ServiceDrops,
    service::ServiceId,
    stats::{Counter, service_drop_index},
};
use balancer_tests::{
    Balancer, Netns, Process, TempDir, Topology, balancer_bin, require_file, require_program,
    require_root, run_command, wait_until,
};
use balancer_user::dataplane::PinnedMaps;
use serde_json::Value;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/postgres-ha");
const ROLE_ENDPOINT: &str = env!("CARGO_BIN_EXE_pg-role-endpoint");
const PGBIN: &str = "/usr/lib/postgresql/15/bin";
const OUTSIDER: &str = "192.0.2.50";
/// Time limit of one script step (initdb, pg_basebackup, a psql call).
const STEP: Duration = Duration::from_secs(60);

fn node_addr(n: usize) -> String {
    format!("203.0.113.{}", 40 + n)
}

fn backend(n: usize) -> String {
    format!("{}:5432", node_addr(n))
}

/// The example's script, pointed at this test's namespaces, directory and
/// daemon (whose pin directory is known once it runs).
struct Example {
    prefix: String,
    dir: PathBuf,
    /// The role endpoint's copy that the `postgres` user can run ([`stage_role_endpoint`]).
    role_endpoint: PathBuf,
    pin_dir: OnceCell<PathBuf>,
}

impl Example {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(Path::new(EXAMPLE).join("pgha.sh"));
        c.args(args)
            .env("PGHA_PREFIX", &self.prefix)
            .env("PGHA_DIR", &self.dir)
            .env("PGHA_ROLE_ENDPOINT", &self.role_endpoint)
            .env("PGHA_BALANCER", balancer_bin())
            .env("PGBIN", PGBIN);
        if let Some(p) = self.pin_dir.get() {
            c.env("PGHA_PIN_DIR", p);
        }
        c
    }

    /// `pgha.sh ARGS`, which must succeed; its stdout.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = run_command(&mut self.command(args), STEP)
            .with_context(|| format!("pgha.sh {}", args.join(" ")))?;
        ensure!(
            out.status.success(),
            "pgha.sh {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn sql(&self, node: usize, sql: &str) -> Result<String> {
        self.run(&["sql", &node.to_string(), sql])
    }

    /// One statement through the VIP from `host` (`client` or `outside`),
    /// every part of it bounded: the connection by `connect_timeout_s`, the
    /// statement by statement_timeout.
    fn vip_sql(&self, host: &str, port: u16, sql: &str, connect_timeout_s: u32) -> Result<String> {
        let mut cmd = self.command(&[host, "psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"]);
        cmd.args(["-p", &port.to_string(), "-c", sql])
            .env("PGCONNECT_TIMEOUT", connect_timeout_s.to_string())
            .env("PGOPTIONS", "-c statement_timeout=10s");
        let out = run_command(&mut cmd, STEP)?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn client_sql(&self, port: u16, sql: &str) -> Result<String> {
        self.vip_sql("client", port, sql, 3)
    }

    /// Waits until every one of `replicas` has replayed what `primary` has
    /// written so far (replication is asynchronous).
    fn wait_replicated(&self, primary: usize, replicas: &[usize]) -> Result<()> {
        let lsn = self.sql(primary, "SELECT pg_current_wal_lsn()")?;
        for &r in replicas {
            let query = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
            let caught_up = wait_until(Duration::from_secs(10), || {
                self.sql(r, &query).is_ok_and(|s| s == "t")
            });
            ensure!(caught_up, "be{r} did not replay up to {lsn} within 10 s");
        }
        Ok(())
    }

    /// `pgbench ARGS` on the client, which must succeed; all it said.
    fn pgbench(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.command(&["client", "pgbench"]);
        cmd.args(args);
        let out = run_command(&mut cmd, STEP)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(out.status.success(), "pgbench {args:?} failed:\n{text}");
        Ok(text)
    }

    fn bench(&self, args: &[&str]) -> Result<Bench> {
        Bench::parse(&self.pgbench(args)?)
    }
}

/// Stops every started node's PostgreSQL on drop (also when the test fails),
/// before their directory and namespaces go: a postmaster killed by the
/// namespace's removal would leave its shared memory segment behind.
struct Nodes<'a> {
    example: &'a Example,
    started: Vec<usize>,
}

impl Nodes<'_> {
    fn primary(&mut self, n: usize) -> Result<()> {
        self.started.push(n);
        self.example.run(&["primary", &n.to_string()]).map(drop)
    }

    fn replica(&mut self, n: usize, from: usize) -> Result<()> {
        self.started.push(n);
        self.example
            .run(&["replica", &n.to_string(), &from.to_string()])
            .map(drop)
    }
}

impl Drop for Nodes<'_> {
    fn drop(&mut self) {
        for n in &self.started {
            let mut stop = self.example.command(&["stop", &n.to_string(), "immediate"]);
            let _ = run_command(&mut stop, Duration::from_secs(30));
        }
    }
}

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

/// What pgbench reports.
#[derive(Debug)]
struct Bench {
    processed: u64,
    failed: u64,
    tps: f64,
}

impl Bench {
    fn parse(text: &str) -> Result<Bench> {
        let field = |prefix: &str| -> Result<&str> {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .with_context(|| format!("no {prefix:?} in pgbench's output:\n{text}"))
        };
        Ok(Bench {
            processed: field("number of transactions actually processed: ")?.parse()?,
            failed: field("number of failed transactions: ")?.parse()?,
            tps: field("tps = ")?.parse()?,
        })
    }
}

/// Starts a write through 5432 every 50 ms, each on a connection of its own,
/// and returns once one lands on `node` and commits: how long after `since`
/// that was seen, and how many attempts were started. The attempts overlap
/// because one whose SYN arrives while no backend is up at all is dropped
/// and waits for TCP's retransmission a second later; a later attempt shows
/// when new connections moved.
fn first_write_on(
    example: &Example,
    node: usize,
    since: Instant,
    limit: Duration,
) -> Result<(Duration, usize)> {
    let mut running: Vec<Process> = Vec::new();
    let (mut started, mut next) = (0, Instant::now());
    loop {
        if Instant::now() >= next && running.len() < 40 {
            let mut cmd = example.command(&["client", "psql", "-X", "-q", "-tA", "-p", "5432"]);
            cmd.args([
                "-c",
                "INSERT INTO notes (body) VALUES ('failover probe') RETURNING inet_server_addr()",
            ])
            .env("PGCONNECT_TIMEOUT", "3")
            .env("PGOPTIONS", "-c statement_timeout=10s");
            running.push(Process::start(cmd)?);
            started += 1;
            next += Duration::from_millis(50);
        }
        for p in &mut running {
            if p.try_status()?.is_some_and(|s| s.success())
                && p.output_so_far().trim() == node_addr(node)
            {
                return Ok((since.elapsed(), started));
            }
        }
        running.retain_mut(|p| p.is_running());
        ensure!(
            since.elapsed() < limit,
            "no write reached be{node} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// (service, backend) -> (state, active connections), from `balancer status --json`.
fn backends(lb: &Balancer) -> BTreeMap<(String, String), (String, u64)> {
    let out = lb.cli(&["status", "--json"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut seen = BTreeMap::new();
    for svc in reply["status"]["services"].as_array().unwrap() {
        for b in svc["backends"].as_array().unwrap() {
            seen.insert(
                (
                    svc["name"].as_str().unwrap().to_string(),
                    b["address"].as_str().unwrap().to_string(),
                ),
                (
                    b["state"].as_str().unwrap().to_string(),
                    b["active"].as_u64().unwrap(),
                ),
            );
        }
    }
    seen
}

/// Waits until every backend of `want` (service, node, state) is in its state.
fn wait_states(lb: &Balancer, want: &[(&str, usize, &str)]) {
    let ok = wait_until(Duration::from_secs(10), || {
        let seen = backends(lb);
        want.iter().all(|(svc, n, state)| {
            seen.get(&(svc.to_string(), backend(*n)))
                .is_some_and(|(s, _)| s == state)
        })
    });
    assert!(ok, "wanted {want:?}, have {:?}", backends(lb));
}

/// New connections to `service_id` dropped by the firewall, summed over the
/// CPUs, read from the daemon's pinned map (it has no stats command yet).
fn firewall_drops(pin_dir: &Path, service_id: ServiceId) -> Result<u64> {
    let drops: PerCpuArray<MapData, u64> = PinnedMaps::new(pin_dir).open::<ServiceDrops, _>()?;
    Ok(drops
        .get(&service_drop_index(service_id, Counter::DropFirewall), 0)?
        .iter()
        .sum())
}

/// A copy of the role endpoint that the `postgres` user can execute, in a
/// directory of its own (removed with the returned guard).
///
/// The example runs the endpoint as `postgres`, as it runs PostgreSQL: it is a
/// network-facing server that needs no privilege, and it asks for the role with
/// `psql -U postgres` over the node's socket, which Debian's default rule
/// (`local all postgres peer`) admits for that OS user only (the example's own
/// pg_hba.conf trusts local connections, so the test does not depend on it). But cargo builds the
/// endpoint under `target/` inside the clone, and a clone in a directory that
/// other users cannot enter (root's home and `mktemp -d` are 0700) leaves it out
/// of `postgres`'s reach: runuser fails with "Permission denied".
fn stage_role_endpoint() -> Result<(TempDir, PathBuf)> {
    let dir = TempDir::new("pgha-bin")?;
    // Explicit rather than whatever the umask gives.
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o755))?;
    let bin = dir.join("pg-role-endpoint");
    std::fs::copy(ROLE_ENDPOINT, &bin)
        .with_context(|| format!("copying {ROLE_ENDPOINT} to {}", bin.display()))?;
    std::fs::set_permissions(&bin, Permissions::from_mode(0o755))?;
    // The directories above it ($TMPDIR) must be enterable too: asked of the user itself.
    let mut probe = Command::new("runuser");
    probe.args(["-u", "postgres", "--", "test", "-x"]).arg(&bin);
    let out = run_command(&mut probe, STEP)?;
    ensure!(
        out.status.success(),
        "the postgres user cannot execute {} (is {} enterable by other users?)",
        bin.display(),
        std::env::temp_dir().display()
    );
    Ok((dir, bin))
}

/// The example's configuration for [`Balancer::start`], which gives each
/// daemon a socket and pin directory of its own in `[control]`.
fn harness_config(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("socket =") && !l.starts_with("pin_dir ="))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn postgres_ha_writes_reads_pgbench_failover_and_a_refused_client() {
    if !require_root()
        || !require_program("runuser")
        || !require_program("bpftool")
        || !require_file(
            &Path::new(PGBIN).join("initdb"),
            "apt-get install -y postgresql-15, or cargo xtask setup",
        )
        || !require_file(
            &Path::new(PGBIN).join("pgbench"),
            "apt-get install -y postgresql-client-15, or cargo xtask setup",
        )
    {
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

    // Topology: the harness's, with the example's node addresses and its
    // outsider; a directory that the postgres user owns.
    let topo = Topology::builder()
        .hint("pgha")
        .backends(3)
        .ipv6(false)
        .build()
        .unwrap();
    for n in 1..=3 {
        topo.backend(n)
            .add_addr("eth0", &format!("{}/24", node_addr(n)))
            .unwrap();
    }
    // Created here so that the harness removes it; the script wires it.
    let _outside = Netns::with_label(&format!("{}-outside", topo.prefix()), "outside").unwrap();
    let dir = TempDir::new("pgha").unwrap();
    let chown = Command::new("chown")
        .arg("postgres:")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(chown.success(), "chown postgres: {}", dir.path().display());
    let (_role_endpoint_dir, role_endpoint) = stage_role_endpoint().unwrap();
    let example = Example {
        prefix: topo.prefix().to_string(),
        dir: dir.path().to_path_buf(),
        role_endpoint,
        pin_dir: OnceCell::new(),
    };
    example.run(&["outsider"]).unwrap();

    // One primary, two replicas, a role endpoint on each, the balancer.
    let t = Instant::now();
    let mut nodes = Nodes {
        example: &example,
        started: Vec::new(),
    };
    nodes.primary(1).unwrap();
    nodes.replica(2, 1).unwrap();
    nodes.replica(3, 1).unwrap();
    eprintln!("three nodes up in {:?}", t.elapsed());
    let _roles: Vec<Process> = (1..=3)
        .map(|n| Process::start(example.command(&["role-endpoint", &n.to_string()])).unwrap())
        .collect();
    let lb = Balancer::start(topo.lb(), &harness_config(&config_text)).unwrap();
    let pin_dir = lb.home().pin_dir();
    example.pin_dir.set(pin_dir.clone()).unwrap();
    wait_states(
        &lb,
        &[
            ("db-rw", 1, "up"),
            ("db-rw", 2, "down"),
            ("db-rw", 3, "down"),
            ("db-ro", 1, "down"),
            ("db-ro", 2, "up"),
            ("db-ro", 3, "up"),
        ],
    );

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
        let mut s = Session::open(&example, 5433).unwrap();
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
    let (moved, attempts) = first_write_on(&example, 2, promoted, Duration::from_secs(10)).unwrap();
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
        .write_config(&harness_config(&config_text).replace(
            "allow = [\"198.51.100.0/24\"]",
            "allow = [\"198.51.100.0/24\", \"192.0.2.0/24\"]",
        ))
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
