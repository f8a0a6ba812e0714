//! The role API that Patroni offers, for a PostgreSQL node without Patroni:
//! `GET /primary` answers 200 when the node is a primary and 503 otherwise,
//! `GET /replica` the other way round, `GET /health` 200 whenever PostgreSQL
//! answers at all. The role is asked afresh for every request with
//! `SELECT pg_is_in_recovery()` through the node's local socket, on one psql
//! session kept open, so a promotion shows at the next health check, and a
//! node whose PostgreSQL is down is neither primary nor replica.
//!
//! ```text
//! pg-role-endpoint --listen 203.0.113.41:8008 --pghost /tmp/pgha/be1 [--pgport 5432] [--psql PATH]
//! ```
//!
//! Only the standard library: the example needs nothing but this file and
//! PostgreSQL's own `psql`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    time::{Duration, Instant},
};

/// The balancer's checks time out after a few hundred milliseconds; a query
/// that takes longer than this is a failure anyway, and its psql is killed.
const QUERY_DEADLINE: Duration = Duration::from_secs(1);
/// Requests answered at once; more are refused, so that a flood of checks
/// cannot pile up threads waiting for the one session.
const MAX_IN_FLIGHT: usize = 16;

struct Options {
    listen: SocketAddr,
    pghost: String,
    pgport: u16,
    psql: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Primary,
    Replica,
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pg-role-endpoint: {e}");
            eprintln!(
                "usage: pg-role-endpoint --listen ADDR:PORT --pghost SOCKET_DIR [--pgport 5432] [--psql PATH]"
            );
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(opts.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pg-role-endpoint: cannot listen on {}: {e}", opts.listen);
            std::process::exit(1);
        }
    };
    eprintln!(
        "pg-role-endpoint: listening on {}, asking PostgreSQL at {} port {}",
        opts.listen, opts.pghost, opts.pgport
    );
    let opts = Arc::new(opts);
    // What the last request saw, so that the log shows each change once.
    let last_seen = Arc::new(Mutex::new(String::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let session = Arc::new(Mutex::new(None));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = respond(&mut stream, 503, "{\"error\":\"busy\"}");
            continue;
        }
        let (opts, last_seen, in_flight, session) = (
            opts.clone(),
            last_seen.clone(),
            in_flight.clone(),
            session.clone(),
        );
        std::thread::spawn(move || {
            serve(&mut stream, &opts, &session, &last_seen);
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let (mut listen, mut pghost) = (None, None);
    let (mut pgport, mut psql) = (5432, "psql".to_string());
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--pghost" => pghost = Some(value()?),
            "--pgport" => {
                let v = value()?;
                pgport = v.parse().map_err(|e| format!("--pgport {v}: {e}"))?;
            }
            "--psql" => psql = value()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Options {
        listen: listen.ok_or("--listen is required")?,
        pghost: pghost.ok_or("--pghost is required")?,
        pgport,
        psql,
    })
}

fn serve(
    stream: &mut TcpStream,
    opts: &Options,
    session: &Mutex<Option<Session>>,
    last_seen: &Mutex<String>,
) {
    let Some(path) = request_path(stream) else {
        return;
    };
    let role = ask_role(opts, session);
    let seen = match &role {
        Ok(Role::Primary) => "primary".to_string(),
        Ok(Role::Replica) => "replica".to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    {
        let mut last = last_seen.lock().unwrap_or_else(|e| e.into_inner());
        if *last != seen {
            eprintln!("pg-role-endpoint: role is now {seen}");
            *last = seen;
        }
    }
    let wanted = match path.as_str() {
        "/primary" => Some(Role::Primary),
        "/replica" => Some(Role::Replica),
        "/health" => None,
        _ => {
            let _ = respond(stream, 404, "{\"error\":\"not found\"}");
            return;
        }
    };
    let (status, body) = match role {
        Ok(r) => {
            let name = if r == Role::Primary {
                "primary"
            } else {
                "replica"
            };
            let ok = wanted.is_none_or(|w| w == r);
            (
                if ok { 200 } else { 503 },
                format!("{{\"role\":\"{name}\"}}"),
            )
        }
        Err(e) => (
            503,
            format!(
                "{{\"role\":\"unknown\",\"error\":\"{}\"}}",
                e.replace('"', "'")
            ),
        ),
    };
    let _ = respond(stream, status, &body);
}

/// The path of an HTTP request's first line, once the headers are in.
fn request_path(stream: &mut TcpStream) -> Option<String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if Instant::now() > deadline || request.len() > 8192 {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => Some(path.to_string()),
        _ => None,
    }
}

/// One psql kept open for the endpoint's whole life. Starting psql for each
/// check cost a process start and a connection, which under load took longer
/// than the balancer's check timeout (a live primary seen as down).
struct Session {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
    /// psql's last line on standard error: why the session ended.
    last_error: Arc<Mutex<String>>,
}

impl Session {
    fn start(opts: &Options) -> Result<Session, String> {
        let mut child = Command::new(&opts.psql)
            .args([
                "-X", "-q", "-A", "-t", "-w", "-d", "postgres", "-U", "postgres",
            ])
            .args(["-h", &opts.pghost, "-p", &opts.pgport.to_string()])
            // A lost connection ends psql rather than leaving it to answer
            // nothing; the next check starts another.
            .args(["-v", "ON_ERROR_STOP=1"])
            .env("PGCONNECT_TIMEOUT", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", opts.psql))?;
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => return Err("psql without pipes".into()),
            };
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let last_error = Arc::new(Mutex::new(String::new()));
        let errors = last_error.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !line.trim().is_empty() {
                    *errors.lock().unwrap_or_else(|e| e.into_inner()) = line.trim().to_string();
                }
            }
        });
        Ok(Session {
            child,
            stdin,
            answers,
            last_error,
        })
    }

    fn ask(&mut self) -> Result<Role, String> {
        // Answers left over from a query that timed out are stale.
        while self.answers.try_recv().is_ok() {}
        self.stdin
            .write_all(b"SELECT pg_is_in_recovery();\n")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("psql: {e}"))?;
        match self.answers.recv_timeout(QUERY_DEADLINE) {
            Ok(answer) => match answer.trim() {
                "f" => Ok(Role::Primary),
                "t" => Ok(Role::Replica),
                other => Err(format!("unexpected answer {other:?}")),
            },
            Err(RecvTimeoutError::Timeout) => Err(format!("no answer within {QUERY_DEADLINE:?}")),
            Err(RecvTimeoutError::Disconnected) => {
                // psql ended; its reader saw the end of its output before
                // the error reader may have stored the last line.
                let _ = self.child.wait();
                let error = self
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                Err(if error.is_empty() {
                    "psql ended".to_string()
                } else {
                    error
                })
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks over the open session; a session that fails is dropped and, if it
/// had answered before (PostgreSQL may have restarted since), one fresh
/// session is tried at once, so that a restart costs no failed check.
fn ask_role(opts: &Options, session: &Mutex<Option<Session>>) -> Result<Role, String> {
    let mut session = session.lock().unwrap_or_else(|e| e.into_inner());
    let reused = session.is_some();
    if session.is_none() {
        *session = Some(Session::start(opts)?);
    }
    let answer = session
        .as_mut()
        .map_or(Err("no session".into()), Session::ask);
    if answer.is_ok() {
        return answer;
    }
    *session = None;
    if !reused {
        return answer;
    }
    let mut fresh = Session::start(opts)?;
    let answer = fresh.ask();
    if answer.is_ok() {
        *session = Some(fresh);
    }
    answer
}

fn respond(stream: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
