//! What the PostgreSQL tests share: the worked example of
//! `examples/postgres-ha` (its script `pgha.sh`, role endpoint and
//! `balancer.toml`) driven on a harness topology, its three nodes (one
//! primary, two asynchronous streaming replicas, PostgreSQL 15 as user
//! `postgres`), pgbench's report, and the daemon's view of the backends.
//!
//! The harness names the namespaces (`{prefix}-be1` ...) as the script does;
//! its backends get the example's addresses 203.0.113.41-43 beside their own.
// Each including test file uses a part of it.
#![allow(dead_code)]

use std::{
    cell::OnceCell,
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use balancer_tests::{
    Balancer, Process, TempDir, Topology, balancer_bin, require_file, require_program,
    require_root, run_command, wait_until,
};
use serde_json::Value;

pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/postgres-ha");
/// The role endpoint as cargo built it; `pgha.sh` runs it from a copy that the
/// `postgres` user can reach (see its `stage_role_endpoint`).
pub const ROLE_ENDPOINT: &str = env!("CARGO_BIN_EXE_pg-role-endpoint");
pub const PGBIN: &str = "/usr/lib/postgresql/15/bin";
/// The read/write and read-only services' VIP (the example's).
pub const VIP: &str = "198.51.100.20";
/// Time limit of one script step (initdb, pg_basebackup, a psql call).
pub const STEP: Duration = Duration::from_secs(60);

/// Whether the PostgreSQL tests can run here (as [`require_root`]: under
/// `CI=true` a missing piece is a failure, otherwise a skip).
pub fn require_postgres() -> bool {
    require_root()
        && require_program("runuser")
        && require_program("bpftool")
        && require_file(
            &Path::new(PGBIN).join("initdb"),
            "apt-get install -y postgresql-15, or cargo xtask setup",
        )
        && require_file(
            &Path::new(PGBIN).join("pgbench"),
            "apt-get install -y postgresql-client-15, or cargo xtask setup",
        )
}

/// Node `n`'s address in the example: 203.0.113.4N.
pub fn node_addr(n: usize) -> String {
    format!("203.0.113.{}", 40 + n)
}

/// Node `n` as a backend of the example's services.
pub fn backend(n: usize) -> String {
    format!("{}:5432", node_addr(n))
}

/// The example's script, pointed at a test's namespaces, directory and
/// daemon (whose configuration is known once it runs).
pub struct Example {
    pub prefix: String,
    pub dir: PathBuf,
    pub config: OnceCell<PathBuf>,
}

impl Example {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(Path::new(EXAMPLE).join("pgha.sh"));
        c.args(args)
            .env("PGHA_PREFIX", &self.prefix)
            .env("PGHA_DIR", &self.dir)
            .env("PGHA_ROLE_ENDPOINT", ROLE_ENDPOINT)
            .env("PGHA_BALANCER", balancer_bin())
            .env("PGBIN", PGBIN);
        if let Some(p) = self.config.get() {
            c.env("PGHA_CONFIG", p);
        }
        c
    }

    /// `pgha.sh ARGS`, which must succeed; its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
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

    /// `sql` on node `node` through its local socket (psql's unaligned output).
    pub fn sql(&self, node: usize, sql: &str) -> Result<String> {
        self.run(&["sql", &node.to_string(), sql])
    }

    /// One statement through the VIP from `host` (`client` or `outside`),
    /// every part of it bounded: the connection by `connect_timeout_s`, the
    /// statement by statement_timeout.
    pub fn vip_sql(
        &self,
        host: &str,
        port: u16,
        sql: &str,
        connect_timeout_s: u32,
    ) -> Result<String> {
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

    pub fn client_sql(&self, port: u16, sql: &str) -> Result<String> {
        self.vip_sql("client", port, sql, 3)
    }

    /// Waits until every one of `replicas` has replayed what `primary` has
    /// written so far (replication is asynchronous).
    pub fn wait_replicated(&self, primary: usize, replicas: &[usize]) -> Result<()> {
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
    pub fn pgbench(&self, args: &[&str]) -> Result<String> {
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

    pub fn bench(&self, args: &[&str]) -> Result<Bench> {
        Bench::parse(&self.pgbench(args)?)
    }
}

/// The example's three nodes on a topology's three backends: be1 the
/// primary, be2 and be3 its replicas, a role endpoint on each. On drop (also
/// when the test fails) every started node's PostgreSQL is stopped before
/// their directory goes, and the topology, declared before the cluster, goes
/// after it: a postmaster killed by its namespace's removal would leave its
/// shared memory segment behind.
pub struct Cluster {
    pub example: Example,
    started: Vec<usize>,
    roles: Vec<Process>,
    dir: TempDir,
}

impl Cluster {
    /// Gives `topo`'s backends the example's addresses, makes a directory
    /// that the `postgres` user owns, and starts the nodes and their role
    /// endpoints through `pgha.sh`.
    pub fn start(topo: &Topology) -> Result<Cluster> {
        ensure!(topo.n_backends() == 3, "the example has three nodes");
        for n in 1..=3 {
            topo.backend(n)
                .add_addr("eth0", &format!("{}/24", node_addr(n)))?;
        }
        let dir = TempDir::new("pgha")?;
        let chown = Command::new("chown")
            .arg("postgres:")
            .arg(dir.path())
            .status()?;
        ensure!(chown.success(), "chown postgres: {}", dir.path().display());
        let mut cluster = Cluster {
            example: Example {
                prefix: topo.prefix().to_string(),
                dir: dir.path().to_path_buf(),
                config: OnceCell::new(),
            },
            started: Vec::new(),
            roles: Vec::new(),
            dir,
        };
        let t = std::time::Instant::now();
        cluster.primary(1)?;
        cluster.replica(2, 1)?;
        cluster.replica(3, 1)?;
        eprintln!("three nodes up in {:?}", t.elapsed());
        for n in 1..=3 {
            let endpoint =
                Process::start(cluster.example.command(&["role-endpoint", &n.to_string()]))?;
            cluster.roles.push(endpoint);
        }
        Ok(cluster)
    }

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

    /// The directory holding the nodes' files (`be1` ...) and the
    /// role endpoint's copy (`bin`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.started {
            let mut stop = self.example.command(&["stop", &n.to_string(), "immediate"]);
            let _ = run_command(&mut stop, Duration::from_secs(30));
        }
    }
}

/// What pgbench reports.
#[derive(Debug)]
pub struct Bench {
    pub processed: u64,
    pub failed: u64,
    pub tps: f64,
}

impl Bench {
    pub fn parse(text: &str) -> Result<Bench> {
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

/// (service, backend) -> (state, active connections), from `balancer status --json`.
pub fn backends(lb: &Balancer) -> BTreeMap<(String, String), (String, u64)> {
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

/// The states the example's checks give the nodes while be1 is the primary.
pub const PRIMARY_BE1: [(&str, usize, &str); 6] = [
    ("db-rw", 1, "up"),
    ("db-rw", 2, "down"),
    ("db-rw", 3, "down"),
    ("db-ro", 1, "down"),
    ("db-ro", 2, "up"),
    ("db-ro", 3, "up"),
];

/// Waits until every backend of `want` (service, node, state) is in its state.
pub fn wait_states(lb: &Balancer, want: &[(&str, usize, &str)]) {
    let ok = wait_until(Duration::from_secs(10), || {
        let seen = backends(lb);
        want.iter().all(|(svc, n, state)| {
            seen.get(&(svc.to_string(), backend(*n)))
                .is_some_and(|(s, _)| s == state)
        })
    });
    assert!(ok, "wanted {want:?}, have {:?}", backends(lb));
}
