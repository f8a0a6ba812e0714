//! A Patroni-style role endpoint: `GET /primary` answers 200 on the primary
//! and 503 elsewhere, `GET /replica` the other way round. Which role a node
//! has can be switched while it runs.

use std::{
    io::{Read, Write},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    netns::Netns,
    servers::{POLL, poll_readable, tcp_listener},
};

pub struct RoleEndpoint {
    primary: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RoleEndpoint {
    pub fn set_primary(&self, primary: bool) {
        self.primary.store(primary, Ordering::SeqCst);
    }
}

impl Drop for RoleEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the role endpoint on `addr` in `ns`, starting as primary or replica.
pub fn role_endpoint(ns: &Netns, addr: SocketAddr, primary: bool) -> Result<RoleEndpoint> {
    let listener = tcp_listener(ns, addr)?;
    listener.set_nonblocking(true)?;
    let primary = Arc::new(AtomicBool::new(primary));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (primary, stop) = (primary.clone(), stop.clone());
        std::thread::Builder::new()
            .name("role-endpoint".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if !poll_readable(&listener, POLL) {
                        continue;
                    }
                    if let Ok((mut stream, _)) = listener.accept() {
                        let _ = answer(&mut stream, primary.load(Ordering::SeqCst));
                    }
                }
            })?
    };
    Ok(RoleEndpoint {
        primary,
        stop,
        thread: Some(thread),
    })
}

fn answer(stream: &mut std::net::TcpStream, primary: bool) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/");
    let ok = match path {
        "/primary" => primary,
        "/replica" => !primary,
        _ => true,
    };
    let (status, body) = if ok {
        ("200 OK", if primary { "primary" } else { "replica" })
    } else {
        (
            "503 Service Unavailable",
            if primary { "primary" } else { "replica" },
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A load-reporting agent (HAProxy agent-check style): every connection is
/// answered with the current report line, then closed.
pub struct AgentEndpoint {
    report: Arc<std::sync::Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentEndpoint {
    pub fn report(&self, line: &str) {
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = line.to_string();
    }
}

impl Drop for AgentEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves agent reports on `addr` in `ns`, starting with `line`.
pub fn agent_endpoint(ns: &Netns, addr: SocketAddr, line: &str) -> Result<AgentEndpoint> {
    let listener = tcp_listener(ns, addr)?;
    listener.set_nonblocking(true)?;
    let report = Arc::new(std::sync::Mutex::new(line.to_string()));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (report, stop) = (report.clone(), stop.clone());
        std::thread::Builder::new()
            .name("agent-endpoint".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if !poll_readable(&listener, POLL) {
                        continue;
                    }
                    if let Ok((mut stream, _)) = listener.accept() {
                        let line = report.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let _ = stream.set_nonblocking(false);
                        let _ = writeln!(stream, "{line}");
                    }
                }
            })?
    };
    Ok(AgentEndpoint {
        report,
        stop,
        thread: Some(thread),
    })
}
