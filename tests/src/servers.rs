//! Small TCP/UDP servers and clients that run inside a namespace (no external programs).
//!
//! The servers answer with their name, so a client learns which backend answered:
//! - TCP: for every line received, `"{name} {line}\n"` (the connection stays open until the
//!   client closes it, so tests can hold connections);
//! - UDP: for every datagram, `"{name} " + payload`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::{Pace, netns::Netns, wait_until};

/// How often server threads look at their stop flag.
pub(crate) const POLL: Duration = Duration::from_millis(50);
/// Upper bound on concurrently open connections per TCP server (more are closed at once).
const MAX_CONNS: usize = 4096;
/// Longest accepted line; longer input is answered when it reaches this length.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicUsize,
    active: AtomicUsize,
    requests: AtomicUsize,
}

/// A running test server; its threads stop (within about 50 ms) and its sockets close on
/// drop.
#[derive(Debug)]
pub struct ServerHandle {
    name: String,
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    main: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl ServerHandle {
    /// The name the server puts in front of its answers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address (with the actual port if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP: connections accepted so far. UDP: datagrams received so far.
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// TCP: connections currently open. UDP: always 0.
    pub fn active(&self) -> usize {
        self.counters.active.load(Ordering::SeqCst)
    }

    /// Lines (TCP) or datagrams (UDP) answered so far.
    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Stops the server and waits for its threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.main.take() {
            let _ = h.join();
        }
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for h in conns {
            let _ = h.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds a TCP listener inside `ns` (SO_REUSEADDR; IP_FREEBIND, so the address need not be
/// configured yet, e.g. a VIP added later).
pub fn tcp_listener(ns: &Netns, addr: SocketAddr) -> Result<TcpListener> {
    ns.try_run(move || -> Result<TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        set_freebind(&s, addr)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        Ok(s.into())
    })?
    .with_context(|| format!("TCP listen on {addr} in {}", ns.name()))
}

/// A TCP echo-with-name server on `addr` inside `ns`, named after the namespace's label
/// (e.g. `"be1"` in a [`crate::Topology`]).
pub fn tcp_server(ns: &Netns, addr: SocketAddr) -> Result<ServerHandle> {
    tcp_server_named(ns, addr, ns.label())
}

/// [`tcp_server`] with an explicit name.
pub fn tcp_server_named(ns: &Netns, addr: SocketAddr, name: &str) -> Result<ServerHandle> {
    let listener = tcp_listener(ns, addr)?;
    let local = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let main = {
        let (counters, stop, conns, name) = (
            counters.clone(),
            stop.clone(),
            conns.clone(),
            name.to_string(),
        );
        std::thread::Builder::new()
            .name(format!("tcp-{name}"))
            .spawn(move || accept_loop(listener, name, counters, stop, conns))?
    };
    Ok(ServerHandle {
        name: name.to_string(),
        addr: local,
        counters,
        stop,
        main: Some(main),
        conns,
    })
}

fn accept_loop(
    listener: TcpListener,
    name: String,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    // Nonblocking, so that a connection that vanishes between poll and accept cannot block
    // the loop (accepted sockets do not inherit the flag).
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::SeqCst) {
        if !poll_readable(&listener, POLL) {
            continue;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) => continue,
        };
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        let mut list = conns.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|h| !h.is_finished());
        if list.len() >= MAX_CONNS {
            drop(stream);
            continue;
        }
        counters.active.fetch_add(1, Ordering::SeqCst);
        let (c, st, n) = (counters.clone(), stop.clone(), name.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("tcp-{name}-conn"))
            .spawn(move || {
                serve_conn(stream, &n, &c, &st);
                c.active.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(h) => list.push(h),
            Err(_) => {
                counters.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

fn serve_conn(mut stream: TcpStream, name: &str, counters: &Counters, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        loop {
            let line_end = pending.iter().position(|&b| b == b'\n');
            let take = match line_end {
                Some(p) => p + 1,
                None if pending.len() >= MAX_LINE => pending.len(),
                None => break,
            };
            let line: Vec<u8> = pending.drain(..take).collect();
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            let mut reply = Vec::with_capacity(name.len() + body.len() + 2);
            reply.extend_from_slice(name.as_bytes());
            reply.push(b' ');
            reply.extend_from_slice(body);
            reply.push(b'\n');
            if stream.write_all(&reply).is_err() {
                return;
            }
            counters.requests.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A UDP server on `addr` inside `ns` answering `"{label} " + payload`.
pub fn udp_server(ns: &Netns, addr: SocketAddr) -> Result<ServerHandle> {
    udp_server_named(ns, addr, ns.label())
}

/// [`udp_server`] with an explicit name.
pub fn udp_server_named(ns: &Netns, addr: SocketAddr, name: &str) -> Result<ServerHandle> {
    let sock = ns
        .try_run(move || -> Result<UdpSocket> {
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            s.set_reuse_address(true)?;
            set_freebind(&s, addr)?;
            s.bind(&addr.into())?;
            Ok(s.into())
        })?
        .with_context(|| format!("UDP bind {addr} in {}", ns.name()))?;
    sock.set_read_timeout(Some(POLL))?;
    let local = sock.local_addr()?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let main = {
        let (counters, stop, name) = (counters.clone(), stop.clone(), name.to_string());
        std::thread::Builder::new()
            .name(format!("udp-{name}"))
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::SeqCst) {
                    let (n, peer) = match sock.recv_from(&mut buf) {
                        Ok(r) => r,
                        Err(_) => continue,
                    };
                    counters.accepted.fetch_add(1, Ordering::SeqCst);
                    let mut reply = Vec::with_capacity(name.len() + 1 + n);
                    reply.extend_from_slice(name.as_bytes());
                    reply.push(b' ');
                    reply.extend_from_slice(&buf[..n]);
                    if sock.send_to(&reply, peer).is_ok() {
                        counters.requests.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })?
    };
    Ok(ServerHandle {
        name: name.to_string(),
        addr: local,
        counters,
        stop,
        main: Some(main),
        conns: Arc::default(),
    })
}

/// A TCP connection opened inside a namespace (the socket stays in that namespace).
#[derive(Debug)]
pub struct TcpClient {
    stream: TcpStream,
    pending: Vec<u8>,
    timeout: Duration,
}

impl TcpClient {
    /// Sends `line` + `"\n"` and returns the answer line without its `"\n"` (for the test
    /// servers: `"{name} {line}"`). Waits at most the timeout given at connect time.
    pub fn request(&mut self, line: &str) -> Result<String> {
        let mut msg = Vec::with_capacity(line.len() + 1);
        msg.extend_from_slice(line.as_bytes());
        msg.push(b'\n');
        self.stream.write_all(&msg).context("sending request")?;
        self.read_line()
    }

    /// Reads one line (without `"\n"`), waiting at most the timeout.
    pub fn read_line(&mut self) -> Result<String> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(p) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=p).collect();
                return Ok(String::from_utf8_lossy(&line[..p]).into_owned());
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "no answer line within {:?} (got {} bytes without newline)",
                    self.timeout,
                    self.pending.len()
                );
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
            match self.stream.read(&mut buf) {
                Ok(0) => bail!(
                    "connection closed by peer before a full line ({} bytes)",
                    self.pending.len()
                ),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e).context("reading answer"),
            }
        }
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.stream.local_addr()?)
    }

    pub fn peer_addr(&self) -> Result<SocketAddr> {
        Ok(self.stream.peer_addr()?)
    }

    /// The underlying stream.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Closes the connection (sends FIN, then closes the socket).
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Opens a TCP connection from `ns` to `target` (connect time limited by `timeout`, which
/// also limits each later [`TcpClient::request`]).
pub fn tcp_connect(ns: &Netns, target: SocketAddr, timeout: Duration) -> Result<TcpClient> {
    tcp_connect_inner(ns, None, target, timeout)
}

/// Like [`tcp_connect`], bound to `source` first (port 0 = any port), e.g. a second client
/// address added with [`crate::Topology::add_client_addr`].
pub fn tcp_connect_from(
    ns: &Netns,
    source: SocketAddr,
    target: SocketAddr,
    timeout: Duration,
) -> Result<TcpClient> {
    tcp_connect_inner(ns, Some(source), target, timeout)
}

fn tcp_connect_inner(
    ns: &Netns,
    source: Option<SocketAddr>,
    target: SocketAddr,
    timeout: Duration,
) -> Result<TcpClient> {
    let stream = ns
        .try_run(move || -> Result<TcpStream> {
            let s = Socket::new(
                Domain::for_address(target),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            if let Some(src) = source {
                s.set_reuse_address(true)?;
                s.bind(&src.into())?;
            }
            s.connect_timeout(&target.into(), timeout)?;
            s.set_tcp_nodelay(true)?;
            Ok(s.into())
        })?
        .with_context(|| {
            let from = source.map(|s| format!(" from {s}")).unwrap_or_default();
            format!("TCP connect to {target}{from} in {}", ns.name())
        })?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(TcpClient {
        stream,
        pending: Vec::new(),
        timeout,
    })
}

/// Connects from `ns` to `target`, sends `line`, returns the answer line (without `"\n"`)
/// and closes the connection.
pub fn tcp_request(
    ns: &Netns,
    target: SocketAddr,
    line: &str,
    timeout: Duration,
) -> Result<String> {
    let mut c = tcp_connect(ns, target, timeout)?;
    let r = c
        .request(line)
        .with_context(|| format!("TCP request to {target} from {}", ns.name()));
    c.close();
    r
}

/// The time from `since` (a failure) until new connections from `ns` to
/// `target` are served again: the start of the first attempt of a run of 20
/// answered in a row (one attempt every 20 ms at most, each with a 200 ms
/// connect limit), within 10 s.
pub fn served_again_after(ns: &Netns, target: SocketAddr, since: Instant) -> Option<Duration> {
    probe_until_served(ns, target, since).served
}

/// What [`probe_until_served`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Probed {
    /// From `since` to the start of the first attempt of the run of 20
    /// answered in a row; `None` if there was none within 10 s.
    pub served: Option<Duration>,
    /// From `since` to the start of the first attempt of all.
    pub first_attempt: Duration,
    /// Attempts made, and those not answered.
    pub attempts: u32,
    pub failed: u32,
}

/// [`served_again_after`], with what the prober did on the way.
pub fn probe_until_served(ns: &Netns, target: SocketAddr, since: Instant) -> Probed {
    let mut probed = Probed {
        first_attempt: since.elapsed(),
        ..Probed::default()
    };
    let mut run_started: Option<Instant> = None;
    let mut run = 0;
    let mut pace = Pace::new(Duration::from_millis(20));
    while since.elapsed() < Duration::from_secs(10) {
        let attempt = Instant::now();
        let k = probed.attempts;
        let ok = tcp_connect(ns, target, Duration::from_millis(200))
            .and_then(|mut c| c.request(&format!("probe {k}")))
            .is_ok();
        probed.attempts += 1;
        if ok {
            run_started.get_or_insert(attempt);
            run += 1;
            if run == 20 {
                probed.served = run_started.map(|t| t - since);
                return probed;
            }
        } else {
            probed.failed += 1;
            run_started = None;
            run = 0;
        }
        pace.wait();
    }
    probed
}

/// A UDP socket opened inside a namespace, "connected" to one target.
#[derive(Debug)]
pub struct UdpClient {
    sock: UdpSocket,
    timeout: Duration,
}

impl UdpClient {
    /// Sends `payload` and returns the first answer datagram (lossy UTF-8).
    pub fn request(&self, payload: &str) -> Result<String> {
        let r = self.request_bytes(payload.as_bytes())?;
        Ok(String::from_utf8_lossy(&r).into_owned())
    }

    /// Sends `payload` and returns the first answer datagram.
    pub fn request_bytes(&self, payload: &[u8]) -> Result<Vec<u8>> {
        self.sock.send(payload).context("sending datagram")?;
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + self.timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                bail!("no answer datagram within {:?}", self.timeout);
            }
            self.sock.set_read_timeout(Some(deadline - now))?;
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e).context("receiving answer datagram"),
            }
        }
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.sock.local_addr()?)
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }
}

/// Opens a UDP socket in `ns` (bound to `source` if given, e.g. to keep one 5-tuple over
/// several requests) connected to `target`; `timeout` limits each request.
pub fn udp_connect(
    ns: &Netns,
    source: Option<SocketAddr>,
    target: SocketAddr,
    timeout: Duration,
) -> Result<UdpClient> {
    let sock = ns
        .try_run(move || -> Result<UdpSocket> {
            let s = Socket::new(
                Domain::for_address(target),
                Type::DGRAM,
                Some(Protocol::UDP),
            )?;
            if let Some(src) = source {
                s.set_reuse_address(true)?;
                s.bind(&src.into())?;
            }
            s.connect(&SockAddr::from(target))?;
            Ok(s.into())
        })?
        .with_context(|| format!("UDP socket to {target} in {}", ns.name()))?;
    Ok(UdpClient { sock, timeout })
}

/// Sends one datagram from `ns` to `target` and returns the answer (lossy UTF-8).
pub fn udp_request(
    ns: &Netns,
    target: SocketAddr,
    payload: &str,
    timeout: Duration,
) -> Result<String> {
    udp_connect(ns, None, target, timeout)?
        .request(payload)
        .with_context(|| format!("UDP request to {target} from {}", ns.name()))
}

/// Waits (at most `timeout`) until a TCP connection from `ns` to `target` succeeds.
pub fn wait_tcp_ready(ns: &Netns, target: SocketAddr, timeout: Duration) -> Result<()> {
    let mut last = None;
    let ready = wait_until(timeout, || {
        match tcp_connect(ns, target, Duration::from_millis(200)) {
            Ok(c) => {
                c.close();
                true
            }
            Err(e) => {
                last = Some(e);
                false
            }
        }
    });
    match (ready, last) {
        (true, _) => Ok(()),
        (false, Some(e)) => Err(e.context(format!("{target} not ready within {timeout:?}"))),
        (false, None) => bail!("{target} not ready within {timeout:?}"),
    }
}

fn set_freebind(s: &Socket, addr: SocketAddr) -> Result<()> {
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_freebind_v6(true)?;
    }
    Ok(())
}

/// Whether `fd` becomes readable (a connection to accept, data to read) within `timeout`.
pub(crate) fn poll_readable(fd: &impl AsRawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    r > 0 && pfd.revents & libc::POLLIN != 0
}
