//! Network-namespace harness for the balancer's integration tests and the demo.
//!
//! Everything a test builds lives in network namespaces that the harness creates and always
//! removes (on drop, also when a test panics), with names that carry a unique prefix so
//! tests can run in parallel. Nothing is configured in the root namespace. Addresses come
//! from the documentation ranges: 198.51.100.0/24 (client side), 203.0.113.0/24 (backend
//! side), 192.0.2.0/24 (spare) and 2001:db8::/32.
//!
//! ```no_run
//! use std::time::Duration;
//! use balancer_tests::*;
//!
//! if !require_root() { return; }
//! let topo = Topology::balanced("demo", 2).unwrap();
//! let _srv = tcp_server(topo.backend(1), "203.0.113.11:8080".parse().unwrap()).unwrap();
//! let reply = tcp_request(topo.lb(), "203.0.113.11:8080".parse().unwrap(), "hi",
//!                         Duration::from_secs(2)).unwrap();
//! assert_eq!(reply, "be1 hi");
//! ```

mod balancer;
mod bird;
mod chatter;
pub mod config;
pub mod flood;
mod netns;
mod nginx;
mod ping;
mod role;
pub mod routed;
mod servers;
mod topology;
mod util;
mod xdp_pass;

use std::sync::OnceLock;

pub use balancer::{BALANCER_START_TIMEOUT, Balancer, Home, Launch, balancer_bin};
pub use bird::{BIRD_START_TIMEOUT, Bird, BirdProtocol, example_path, with_defines};
pub use chatter::Chatter;
pub use netns::{EXEC_TIMEOUT, Netns, Process, run_command};
pub use nginx::{NGINX_START_TIMEOUT, Nginx, nginx};
/// For [`Process::signal`].
pub use nix::sys::signal::Signal;
pub use role::{AgentEndpoint, RoleEndpoint, agent_endpoint, role_endpoint};
pub use routed::{Routed, RoutedBuilder};
pub use servers::{
    Probed, ServerHandle, TcpClient, UdpClient, probe_until_served, served_again_after,
    tcp_connect, tcp_connect_from, tcp_listener, tcp_request, tcp_server, tcp_server_named,
    udp_connect, udp_request, udp_server, udp_server_named, wait_tcp_ready,
};
pub use topology::{LbHost, Topology, TopologyBuilder, addrs, ifnames};
pub use util::{
    Pace, TempDir, cpu_time, netns_names, netns_with_prefix, poll_until, promtool_check_metrics,
    resident_kib, thousands, unique_prefix, wait_until,
};

/// Whether the namespace tests can run here (root, `ip`, namespaces can be created).
///
/// If they cannot: with `CI=true` in the environment this panics with the reason;
/// otherwise it prints `SKIPPED: needs root: <why>` to stderr (uncaptured, so it shows even
/// for a passing test) and returns false, and the caller should return early. The check
/// runs once per process.
pub fn require_root() -> bool {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let res = CHECK.get_or_init(check_root);
    skip_or_panic(res, "needs root")
}

/// Whether program `name` can be found in `PATH`; otherwise behaves like
/// [`require_root`] (panic under `CI=true`, else print `SKIPPED: needs NAME` and return
/// false).
pub fn require_program(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| is_executable(&d.join(name))))
        .unwrap_or(false);
    let res = if found {
        Ok(())
    } else {
        Err(format!(
            "{name} not found in PATH (apt-get install -y {name})"
        ))
    };
    skip_or_panic(&res, &format!("needs {name}"))
}

/// Whether the executable `path` exists (a program outside `PATH`, such as
/// PostgreSQL's `/usr/lib/postgresql/15/bin/initdb`); otherwise behaves like
/// [`require_root`], with `install` (e.g. `apt-get install -y postgresql-15`)
/// in the message.
pub fn require_file(path: &std::path::Path, install: &str) -> bool {
    let res = if is_executable(path) {
        Ok(())
    } else {
        Err(format!("{} not found ({install})", path.display()))
    };
    skip_or_panic(&res, &format!("needs {}", path.display()))
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn skip_or_panic(res: &Result<(), String>, what: &str) -> bool {
    match res {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{what}: {why} (CI=true, so this is a failure, not a skip)");
            }
            // Written to fd 2 directly, not with eprintln!, which the test harness captures
            // (and hides for passing tests): a skip must always be visible.
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {what}: {why}");
            false
        }
    }
}

fn check_root() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!("running as uid {euid}, not root"));
    }
    let name = format!("{}-probe", unique_prefix("lbt"));
    let ns = Netns::new(&name).map_err(|e| format!("cannot create a network namespace: {e:#}"))?;
    ns.try_run(|| ())
        .map_err(|e| format!("cannot enter a network namespace: {e:#}"))?;
    Ok(())
}
