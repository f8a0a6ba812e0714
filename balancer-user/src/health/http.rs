//! The HTTP check: one `GET` per probe on a fresh connection, judged by status
//! and optionally by a piece of the body.

use std::net::SocketAddr;

use httparse::Status;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::reason::{connect_error, describe_io};

/// Reading stops here: a health endpoint that answers more is misconfigured,
/// and the check must not buffer whatever a backend sends.
pub const MAX_RESPONSE: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
const CHUNK: usize = 8192;

/// What a response must look like to pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub path: String,
    pub status: u16,
    pub body: Option<String>,
}

/// The state of a response read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// More bytes may still decide it.
    Incomplete,
    Done(Result<(), String>),
}

pub fn request(path: &str, host: SocketAddr) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: balancer-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Judges `response` as read so far; `complete` says that no more will come
/// (the peer closed, or [`MAX_RESPONSE`] was reached). A verdict is given as
/// early as the bytes allow, so a probe need not wait for the connection to close.
pub fn evaluate(response: &[u8], complete: bool, expect: &Expect) -> Verdict {
    let path = &expect.path;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let header_len = match parsed.parse(response) {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) if !complete => return Verdict::Incomplete,
        Ok(Status::Partial) if response.is_empty() => {
            return fail(format!("no HTTP response from {path}"));
        }
        Ok(Status::Partial) => return fail(format!("truncated HTTP response from {path}")),
        Err(e) => return fail(format!("malformed HTTP response from {path}: {e}")),
    };
    // A complete parse always has a code: httparse fills it before the headers.
    let status = parsed.code.unwrap_or_default();
    if status != expect.status {
        return fail(format!(
            "HTTP {status} from {path} (expected {})",
            expect.status
        ));
    }
    let Some(needle) = expect.body.as_deref() else {
        return Verdict::Done(Ok(()));
    };
    let raw = &response[header_len..];
    let (body, whole) = match framing(parsed.headers) {
        Framing::Chunked => match dechunk(raw) {
            Ok(decoded) => decoded,
            Err(e) => return fail(format!("HTTP {status} from {path}: {e}")),
        },
        Framing::Length(len) => {
            let have = raw.len().min(len);
            (raw[..have].to_vec(), have == len)
        }
        Framing::UntilClose => (raw.to_vec(), false),
    };
    if contains(&body, needle.as_bytes()) {
        Verdict::Done(Ok(()))
    } else if whole || complete {
        let ended = if whole { "" } else { " (body cut short)" };
        fail(format!(
            "HTTP {status} from {path}: body does not contain {needle:?}{ended}"
        ))
    } else {
        Verdict::Incomplete
    }
}

fn fail(reason: String) -> Verdict {
    Verdict::Done(Err(reason))
}

enum Framing {
    Chunked,
    Length(usize),
    UntilClose,
}

fn framing(headers: &[httparse::Header<'_>]) -> Framing {
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    if value("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        return Framing::Chunked;
    }
    match value("content-length").and_then(|len| len.parse().ok()) {
        Some(len) => Framing::Length(len),
        None => Framing::UntilClose,
    }
}

/// The data of the chunks received so far, and whether the last chunk came:
/// matching on the raw bytes would miss text split by a chunk boundary.
fn dechunk(mut raw: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut body = Vec::new();
    loop {
        let (used, size) = match httparse::parse_chunk_size(raw) {
            Ok(Status::Complete(found)) => found,
            Ok(Status::Partial) => return Ok((body, false)),
            Err(_) => return Err("bad chunked encoding".to_owned()),
        };
        raw = &raw[used..];
        if size == 0 {
            return Ok((body, true));
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if raw.len() < size {
            body.extend_from_slice(raw);
            return Ok((body, false));
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size..];
        match raw {
            [b'\r', b'\n', rest @ ..] => raw = rest,
            [] | [b'\r'] => return Ok((body, false)),
            _ => return Err("bad chunked encoding".to_owned()),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// One request to `addr`; the caller bounds it in time.
pub async fn probe(addr: SocketAddr, expect: &Expect) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_error(addr, &e))?;
    stream
        .write_all(&request(&expect.path, addr))
        .await
        .map_err(|e| format!("send to {addr}: {}", describe_io(&e)))?;
    let mut response = Vec::with_capacity(4096);
    let mut chunk = [0u8; CHUNK];
    loop {
        let room = MAX_RESPONSE - response.len();
        let read = stream.read(&mut chunk[..room.min(CHUNK)]).await;
        let complete = match read {
            Ok(0) => true,
            Ok(n) => {
                response.extend_from_slice(&chunk[..n]);
                response.len() >= MAX_RESPONSE
            }
            // A reset after a full answer (e.g. the server closing with our
            // request unread) still leaves a response worth judging.
            Err(_) if !response.is_empty() => true,
            Err(e) => return Err(format!("read from {addr}: {}", describe_io(&e))),
        };
        match evaluate(&response, complete, expect) {
            Verdict::Done(result) => return result,
            // `evaluate` decides every complete response; this only keeps a
            // broken promise from turning into an endless loop.
            Verdict::Incomplete if complete => {
                return Err(format!("incomplete HTTP response from {}", expect.path));
            }
            Verdict::Incomplete => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(status: u16, body: Option<&str>) -> Expect {
        Expect {
            path: "/primary".to_owned(),
            status,
            body: body.map(str::to_owned),
        }
    }

    fn done(response: &str, expect: &Expect) -> Result<(), String> {
        match evaluate(response.as_bytes(), true, expect) {
            Verdict::Done(result) => result,
            Verdict::Incomplete => panic!("no verdict on a complete response: {response:?}"),
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nprimary";

    #[test]
    fn request_names_path_host_and_agent() {
        let req = request("/health", "203.0.113.11:8008".parse().unwrap());
        let text = String::from_utf8(req).unwrap();
        assert_eq!(
            text,
            "GET /health HTTP/1.1\r\nHost: 203.0.113.11:8008\r\nUser-Agent: balancer-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let v6 = request("/", "[2001:db8::1]:80".parse().unwrap());
        assert!(
            String::from_utf8(v6)
                .unwrap()
                .contains("Host: [2001:db8::1]:80\r\n")
        );
    }

    #[test]
    fn status_decides() {
        assert_eq!(done(OK, &expect(200, None)), Ok(()));
        assert_eq!(
            done(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
                &expect(200, None)
            ),
            Err("HTTP 503 from /primary (expected 200)".to_owned())
        );
        assert_eq!(
            done(
                "HTTP/1.0 503 Service Unavailable\r\n\r\n",
                &expect(503, None)
            ),
            Ok(())
        );
        assert_eq!(
            done(OK, &expect(204, None)),
            Err("HTTP 200 from /primary (expected 204)".to_owned())
        );
    }

    #[test]
    fn a_status_is_decided_before_the_body_arrives() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        assert_eq!(
            evaluate(head.as_bytes(), false, &expect(200, None)),
            Verdict::Done(Ok(()))
        );
        let head = "HTTP/1.1 503 Nope\r\nContent-Length: 100\r\n\r\n";
        assert!(matches!(
            evaluate(head.as_bytes(), false, &expect(200, Some("x"))),
            Verdict::Done(Err(_))
        ));
    }

    #[test]
    fn body_must_contain_the_expected_text() {
        assert_eq!(done(OK, &expect(200, Some("prim"))), Ok(()));
        assert_eq!(
            done(OK, &expect(200, Some("replica"))),
            Err("HTTP 200 from /primary: body does not contain \"replica\"".to_owned())
        );
        // Bytes past Content-Length are not part of the body.
        let extra = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokreplica";
        assert!(done(extra, &expect(200, Some("replica"))).is_err());
        // Without a length the body runs to the end of the connection.
        let open = "HTTP/1.1 200 OK\r\n\r\n{\"role\": \"replica\"}";
        assert_eq!(done(open, &expect(200, Some("replica"))), Ok(()));
    }

    #[test]
    fn body_match_waits_for_the_whole_body() {
        let partial = "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nrole: pri";
        let e = expect(200, Some("primary"));
        assert_eq!(evaluate(partial.as_bytes(), false, &e), Verdict::Incomplete);
        assert_eq!(
            evaluate(partial.as_bytes(), true, &e),
            Verdict::Done(Err(
                "HTTP 200 from /primary: body does not contain \"primary\" (body cut short)"
                    .to_owned()
            ))
        );
        let open = "HTTP/1.1 200 OK\r\n\r\nrole: pri";
        assert_eq!(evaluate(open.as_bytes(), false, &e), Verdict::Incomplete);
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let e = expect(200, Some("primary"));
        let split = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npri \r\n3;ext=1\r\nmar\r\n1\r\ny\r\n0\r\n\r\n";
        // "pri " + "mar" + "y": the words are split across chunks and by a space.
        assert!(done(split, &e).is_err());
        let joined = "HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n3\r\npri\r\n4\r\nmary\r\n0\r\n\r\n";
        assert_eq!(done(joined, &e), Ok(()));
        let unfinished = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\npri\r\n";
        assert_eq!(
            evaluate(unfinished.as_bytes(), false, &e),
            Verdict::Incomplete
        );
        let garbage = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(
            done(garbage, &e),
            Err("HTTP 200 from /primary: bad chunked encoding".to_owned())
        );
    }

    #[test]
    fn garbage_and_truncation_fail() {
        let e = expect(200, None);
        assert_eq!(
            done("", &e),
            Err("no HTTP response from /primary".to_owned())
        );
        assert_eq!(
            done("HTTP/1.1 20", &e),
            Err("truncated HTTP response from /primary".to_owned())
        );
        assert_eq!(
            evaluate(b"HTTP/1.1 200 OK\r\nServer: x", false, &e),
            Verdict::Incomplete
        );
        for garbage in [
            "SSH-2.0-OpenSSH_9.6\r\n",
            "hello world\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        ] {
            match done(garbage, &e) {
                Err(reason) => assert!(
                    reason.starts_with("malformed HTTP response from /primary: "),
                    "{garbage:?}: {reason}"
                ),
                Ok(()) => panic!("{garbage:?} passed"),
            }
        }
        let binary: Vec<u8> = (0..=255).collect();
        assert!(matches!(evaluate(&binary, true, &e), Verdict::Done(Err(_))));
    }

    #[test]
    fn too_many_headers_is_a_failure_not_a_panic() {
        let mut response = "HTTP/1.1 200 OK\r\n".to_owned();
        for i in 0..200 {
            response.push_str(&format!("X-{i}: y\r\n"));
        }
        response.push_str("\r\n");
        assert!(done(&response, &expect(200, None)).is_err());
    }
}
