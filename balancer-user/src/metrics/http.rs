//! The metrics endpoint at `[control].metrics`: a minimal HTTP/1.1 server for
//! `GET /metrics`. Each scrape goes to the daemon's loop as a [`Scrape`], which
//! reads the kernel's counters there and answers with the rendered text; this
//! task only parses requests and writes replies. One request per connection.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
    task::JoinHandle,
};
use tracing::{debug, warn};

use super::text::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, wants_openmetrics};

/// A scrape for the daemon's loop to answer.
#[derive(Debug)]
pub struct Scrape {
    /// OpenMetrics rather than the Prometheus text format.
    pub openmetrics: bool,
    /// The exposition, or why the counters could not be read.
    pub reply: oneshot::Sender<Result<String, String>>,
}

const MAX_HEADER: usize = 16 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;
/// Scrapes waiting for the daemon's loop.
const QUEUE: usize = 16;

/// The listener; dropping it stops it.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Endpoint {
    /// Listens on `addr`; scrapes arrive on the returned channel.
    pub fn bind(addr: SocketAddr) -> Result<(Self, mpsc::Receiver<Scrape>)> {
        let listener = std::net::TcpListener::bind(addr).with_context(|| {
            format!("listening for metrics on {addr} (control.metrics; \"off\" disables it)")
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = TcpListener::from_std(listener)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(accept(listener, tx));
        Ok((Self { addr, task }, rx))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, scrapes: mpsc::Sender<Scrape>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let scrapes = scrapes.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, scrapes).await {
                        debug!(%peer, "metrics: {e:#}");
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics { openmetrics: bool, head: bool },
    Index,
    NotFound,
    BadMethod,
}

async fn serve(mut stream: TcpStream, scrapes: mpsc::Sender<Scrape>) -> Result<()> {
    let asked = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream))
        .await
        .context("no request within 5 s")??;
    let (status, content_type, body, head) = match asked {
        Asked::Metrics { openmetrics, head } => {
            let (tx, rx) = oneshot::channel();
            let sent = scrapes
                .send(Scrape {
                    openmetrics,
                    reply: tx,
                })
                .await;
            match (sent, rx.await) {
                (Ok(()), Ok(Ok(body))) => {
                    let ct = if openmetrics {
                        OPENMETRICS_CONTENT_TYPE
                    } else {
                        PROMETHEUS_CONTENT_TYPE
                    };
                    ("200 OK", ct, body, head)
                }
                (Ok(()), Ok(Err(why))) => (
                    "500 Internal Server Error",
                    "text/plain",
                    format!("{why}\n"),
                    head,
                ),
                _ => (
                    "503 Service Unavailable",
                    "text/plain",
                    "the daemon is stopping\n".into(),
                    head,
                ),
            }
        }
        Asked::Index => (
            "200 OK",
            "text/plain",
            "balancer: metrics at /metrics\n".into(),
            false,
        ),
        Asked::NotFound => ("404 Not Found", "text/plain", "not found\n".into(), false),
        Asked::BadMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".into(),
            false,
        ),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await?;
    Ok(())
}

async fn read_request(stream: &mut TcpStream) -> Result<Asked> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            anyhow::bail!("connection closed before a whole request");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(asked) = parse(&buf)? {
            return Ok(asked);
        }
        if buf.len() > MAX_HEADER {
            anyhow::bail!("request header over {MAX_HEADER} bytes");
        }
    }
}

/// `None` until the request's header is complete.
fn parse(buf: &[u8]) -> Result<Option<Asked>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(buf).context("not an HTTP request")?.is_partial() {
        return Ok(None);
    }
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Ok(Some(Asked::BadMethod)),
    };
    let path = req.path.unwrap_or("/");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Ok(Some(match path {
        "/metrics" => {
            let accept = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("accept"))
                .and_then(|h| std::str::from_utf8(h.value).ok());
            Asked::Metrics {
                openmetrics: wants_openmetrics(accept),
                head,
            }
        }
        "/" => Asked::Index,
        _ => Asked::NotFound,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x").unwrap(), None);
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap(),
            Some(Asked::Metrics {
                openmetrics: false,
                head: false
            })
        );
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n")
                .unwrap(),
            Some(Asked::Metrics {
                openmetrics: true,
                head: false
            })
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap(),
            Some(Asked::BadMethod)
        );
        assert_eq!(
            parse(b"GET /other HTTP/1.1\r\n\r\n").unwrap(),
            Some(Asked::NotFound)
        );
        assert!(parse(b"\x00\x01 garbage\r\n\r\n").is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_scrape_is_answered_by_whoever_holds_the_channel() {
        let (endpoint, mut scrapes) = Endpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.addr();
        tokio::spawn(async move {
            while let Some(s) = scrapes.recv().await {
                let _ = s.reply.send(Ok(format!("om={}\n", s.openmetrics)));
            }
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.contains("version=0.0.4"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nom=false\n"), "{reply}");
    }
}
