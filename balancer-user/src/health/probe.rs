//! One probe of each kind, bounded by the check's timeout. A probe returns
//! `Err(reason)` with text that names what failed, for the daemon's log.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    net::{TcpStream, UdpSocket},
    process::Command,
    sync::Semaphore,
    time::Instant,
};

use super::{
    Target, http,
    reason::{connect_error, describe_io},
};
use crate::config::HealthKind;

/// Sent when a UDP check names no payload.
pub const DEFAULT_UDP_PAYLOAD: &str = "balancer-health\n";
const DEFAULT_HTTP_STATUS: u16 = 200;
/// Enough of a command's stderr to hold the line that explains a failure.
const STDERR_KEPT: usize = 4096;

/// A check made ready to run: addresses resolved from the target once, not at
/// every probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp(SocketAddr),
    Http(SocketAddr, http::Expect),
    Udp(SocketAddr, Vec<u8>),
    Exec(Exec),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    argv: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl Probe {
    /// `None` for `kind = "none"`, which is never probed.
    pub fn new(target: &Target) -> Option<Self> {
        let health = &target.health;
        let backend = target.backend;
        let checked = SocketAddr::new(backend.ip(), health.port.unwrap_or(backend.port()));
        Some(match health.kind {
            HealthKind::None => return None,
            HealthKind::Tcp => Self::Tcp(checked),
            HealthKind::Http => Self::Http(
                checked,
                http::Expect {
                    path: health.path.clone().unwrap_or_else(|| "/".to_owned()),
                    status: health.expect_status.unwrap_or(DEFAULT_HTTP_STATUS),
                    body: health.expect_body.clone(),
                },
            ),
            HealthKind::Udp => Self::Udp(
                checked,
                health
                    .payload
                    .as_deref()
                    .unwrap_or(DEFAULT_UDP_PAYLOAD)
                    .as_bytes()
                    .to_vec(),
            ),
            HealthKind::Exec => Self::Exec(Exec {
                // Validation requires a command; without one every probe fails.
                argv: health.command.clone().unwrap_or_default(),
                env: vec![
                    ("BALANCER_SERVICE", target.service.clone()),
                    ("BALANCER_BACKEND", backend.to_string()),
                    ("BALANCER_BACKEND_IP", backend.ip().to_string()),
                    ("BALANCER_BACKEND_PORT", backend.port().to_string()),
                ],
            }),
        })
    }

    /// Runs one probe within `timeout`; returns its result and how long it took.
    /// Waiting for one of `exec_slots` is not part of either: a queue on our
    /// side says nothing about the backend.
    pub async fn run(
        &self,
        timeout: Duration,
        exec_slots: &Semaphore,
    ) -> (Result<(), String>, Duration) {
        let _slot = match self {
            Self::Exec(_) => match exec_slots.acquire().await {
                Ok(permit) => Some(permit),
                Err(_) => return (Err("exec probes are shut down".to_owned()), Duration::ZERO),
            },
            _ => None,
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, self.attempt()).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
        };
        (result, started.elapsed())
    }

    async fn attempt(&self) -> Result<(), String> {
        match self {
            Self::Tcp(addr) => tcp(*addr).await,
            Self::Http(addr, expect) => http::probe(*addr, expect).await,
            Self::Udp(addr, payload) => udp(*addr, payload).await,
            Self::Exec(exec) => exec.run().await,
        }
    }
}

async fn tcp(addr: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_error(addr, &e))?;
    // Closing with a reset leaves no TIME_WAIT behind: a thousand targets
    // checked every second would otherwise hold tens of thousands of local ports.
    if let Err(e) = stream.set_zero_linger() {
        tracing::debug!(%addr, "SO_LINGER on a TCP check: {e}");
    }
    Ok(())
}

async fn udp(addr: SocketAddr, payload: &[u8]) -> Result<(), String> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("UDP socket for {addr}: {}", describe_io(&e)))?;
    // Connected, so that the kernel hands us the ICMP error of this peer.
    socket
        .connect(addr)
        .await
        .map_err(|e| connect_error(addr, &e))?;
    let udp_error = |e: io::Error| match e.kind() {
        io::ErrorKind::ConnectionRefused => format!("UDP {addr}: port unreachable"),
        _ => format!("UDP {addr}: {}", describe_io(&e)),
    };
    socket.send(payload).await.map_err(udp_error)?;
    let mut reply = [0u8; 1500];
    socket.recv(&mut reply).await.map_err(udp_error)?;
    Ok(())
}

impl Exec {
    async fn run(&self) -> Result<(), String> {
        let Some(program) = self.argv.first() else {
            return Err("no command to run".to_owned());
        };
        let mut command = Command::new(program);
        command
            .args(&self.argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own group, so that a timeout also stops what it started.
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {program}: {}", describe_io(&e)))?;
        let mut group = child.id().map(Group);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut kept = Vec::new();
        let (status, _, _) =
            tokio::join!(child.wait(), discard(stdout), keep_start(stderr, &mut kept));
        // Everything it wrote has been read and it has exited: nothing is left to stop.
        if let Some(group) = group.as_mut() {
            group.disarm();
        }
        let status = status.map_err(|e| format!("waiting for {program}: {}", describe_io(&e)))?;
        if status.success() {
            return Ok(());
        }
        let mut reason = format!("{program} {}", exit_text(status));
        let first_line = String::from_utf8_lossy(&kept);
        if let Some(line) = first_line.lines().map(str::trim).find(|l| !l.is_empty()) {
            reason.push_str(": ");
            reason.push_str(line);
        }
        Err(reason)
    }
}

fn exit_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Kills an exec probe's process group when the probe is abandoned (timed out
/// or its target removed); `kill_on_drop` alone reaches only the direct child.
struct Group(u32);

impl Group {
    fn disarm(&mut self) {
        self.0 = 0;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let Ok(pgid) = libc::pid_t::try_from(self.0) else {
            return;
        };
        if pgid > 0 {
            // SAFETY: killpg takes plain integers; the group is the one the
            // child leads, which cannot be reused while any member is alive.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
    }
}

/// Reads a pipe to its end so that the command never blocks on a full pipe.
async fn discard(pipe: Option<impl AsyncRead + Unpin>) {
    if let Some(mut pipe) = pipe {
        let mut sink = tokio::io::sink();
        if let Err(e) = tokio::io::copy(&mut pipe, &mut sink).await {
            tracing::debug!("reading a check command's output: {e}");
        }
    }
}

/// Like [`discard`], keeping the first [`STDERR_KEPT`] bytes in `kept`.
async fn keep_start(pipe: Option<impl AsyncRead + Unpin>, kept: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut buf = [0u8; 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) => {
                tracing::debug!("reading a check command's stderr: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Health;

    fn target(health: Health) -> Target {
        Target {
            service: "db-rw".to_owned(),
            backend: "203.0.113.41:5432".parse().unwrap(),
            health,
        }
    }

    #[test]
    fn checks_use_the_health_port_on_the_backend_ip() {
        let http = Probe::new(&target(Health {
            kind: HealthKind::Http,
            port: Some(8008),
            path: Some("/primary".to_owned()),
            ..Health::default()
        }));
        assert_eq!(
            http,
            Some(Probe::Http(
                "203.0.113.41:8008".parse().unwrap(),
                http::Expect {
                    path: "/primary".to_owned(),
                    status: 200,
                    body: None,
                }
            ))
        );
        let tcp = Probe::new(&target(Health::default()));
        assert_eq!(tcp, Some(Probe::Tcp("203.0.113.41:5432".parse().unwrap())));
        let udp = Probe::new(&target(Health {
            kind: HealthKind::Udp,
            ..Health::default()
        }));
        assert_eq!(
            udp,
            Some(Probe::Udp(
                "203.0.113.41:5432".parse().unwrap(),
                b"balancer-health\n".to_vec()
            ))
        );
    }

    #[test]
    fn none_is_not_probed() {
        let none = Health {
            kind: HealthKind::None,
            ..Health::default()
        };
        assert_eq!(Probe::new(&target(none)), None);
    }

    #[test]
    fn exec_gets_the_backend_in_its_environment() {
        let probe = Probe::new(&target(Health {
            kind: HealthKind::Exec,
            command: Some(vec!["/usr/bin/check".to_owned(), "-q".to_owned()]),
            ..Health::default()
        }));
        let Some(Probe::Exec(exec)) = probe else {
            panic!("{probe:?}");
        };
        assert_eq!(exec.argv, ["/usr/bin/check", "-q"]);
        let env: Vec<(&str, &str)> = exec.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            env,
            [
                ("BALANCER_SERVICE", "db-rw"),
                ("BALANCER_BACKEND", "203.0.113.41:5432"),
                ("BALANCER_BACKEND_IP", "203.0.113.41"),
                ("BALANCER_BACKEND_PORT", "5432"),
            ]
        );
    }
}
