//! Long-lived connections that keep talking while a test breaks things: each
//! sends a line every 100 ms and checks that the same backend echoes it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{Netns, Pace, TcpClient, tcp_connect, wait_until};

/// How long one answer may take (a connection waits this long through a
/// failover before it counts as broken).
const ANSWER: Duration = Duration::from_secs(5);

/// Every connection stops by itself after this, whatever the test does.
const LIFETIME: Duration = Duration::from_secs(240);

/// `n` connections through `target`, each sending `c<i> l<k>` every 100 ms
/// and expecting `<backend> c<i> l<k>` from the backend that answered its
/// first line, until [`Chatter::stop`] (or [`LIFETIME`]).
pub struct Chatter {
    stop: Arc<AtomicBool>,
    /// Lines answered, per connection.
    lines: Vec<Arc<AtomicU64>>,
    backends: Vec<String>,
    threads: Vec<JoinHandle<Result<u64, String>>>,
}

impl Chatter {
    /// Opens the connections from `client` (one by one, each answered once)
    /// and starts them talking.
    pub fn start(client: &Netns, target: SocketAddr, n: usize) -> Result<Chatter> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut chatter = Chatter {
            stop: stop.clone(),
            lines: Vec::with_capacity(n),
            backends: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let mut c = tcp_connect(client, target, ANSWER)
                .with_context(|| format!("opening connection {i}"))?;
            let first = c
                .request(&format!("c{i} hello"))
                .with_context(|| format!("connection {i}'s first line"))?;
            let backend = first
                .split_once(' ')
                .map(|(b, _)| b.to_string())
                .with_context(|| format!("connection {i}: answer {first:?}"))?;
            let lines = Arc::new(AtomicU64::new(0));
            let (stop, count, name) = (stop.clone(), lines.clone(), backend.clone());
            chatter
                .threads
                .push(std::thread::spawn(move || talk(i, c, &name, &stop, &count)));
            chatter.lines.push(lines);
            chatter.backends.push(backend);
        }
        Ok(chatter)
    }

    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// The backend (its server's name) each connection talks to.
    pub fn backends(&self) -> &[String] {
        &self.backends
    }

    /// Lines answered so far, all connections together.
    pub fn lines(&self) -> u64 {
        self.lines.iter().map(|l| l.load(Ordering::Relaxed)).sum()
    }

    /// Waits until every connection has answered `more` lines after now (so
    /// that each has talked through whatever just happened). Fails at once,
    /// with why, if a connection broke; after `timeout` if one stalled.
    pub fn wait_for_more(&self, more: u64, timeout: Duration) -> Result<()> {
        let want: Vec<u64> = self
            .lines
            .iter()
            .map(|l| l.load(Ordering::Relaxed) + more)
            .collect();
        let mut broke = false;
        let done = wait_until(timeout, || {
            broke = self.threads.iter().any(|t| t.is_finished());
            broke
                || self
                    .lines
                    .iter()
                    .zip(&want)
                    .all(|(l, w)| l.load(Ordering::Relaxed) >= *w)
        });
        if broke {
            bail!("a connection ended (see Chatter::stop for why)");
        }
        if !done {
            let stalled: Vec<usize> = self
                .lines
                .iter()
                .zip(&want)
                .enumerate()
                .filter(|(_, (l, w))| l.load(Ordering::Relaxed) < **w)
                .map(|(i, _)| i)
                .collect();
            bail!("connections {stalled:?} answered fewer than {more} more lines in {timeout:?}");
        }
        Ok(())
    }

    /// Stops every connection; each one that broke, with why.
    pub fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .enumerate()
            .filter_map(|(i, t)| match t.join() {
                Ok(Ok(_)) => None,
                Ok(Err(why)) => Some(why),
                Err(_) => Some(format!("connection {i}: its thread panicked")),
            })
            .collect()
    }
}

fn talk(
    i: usize,
    mut c: TcpClient,
    backend: &str,
    stop: &AtomicBool,
    lines: &AtomicU64,
) -> Result<u64, String> {
    let started = Instant::now();
    let mut pace = Pace::new(Duration::from_millis(100));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < LIFETIME {
        let line = format!("c{i} l{n}");
        match c.request(&line) {
            Ok(reply) if reply == format!("{backend} {line}") => {}
            Ok(reply) => return Err(format!("connection {i} line {n}: {reply:?}")),
            Err(e) => {
                return Err(format!(
                    "connection {i} line {n} after {:?}: {e:#}",
                    started.elapsed()
                ));
            }
        }
        n += 1;
        lines.fetch_add(1, Ordering::Relaxed);
        pace.wait();
    }
    Ok(n)
}
