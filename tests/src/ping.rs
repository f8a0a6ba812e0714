//! ICMP echo over a raw socket (needs CAP_NET_RAW), so no `ping` binary is needed.

use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use balancer_common::csum;
use socket2::{Domain, Protocol, Socket, Type};

static SEQ: AtomicU16 = AtomicU16::new(1);

/// Sends one echo request to `target` from the calling thread's namespace and waits for the
/// matching reply. Returns the round-trip time.
pub(crate) fn ping(target: IpAddr, timeout: Duration) -> Result<Duration> {
    let (domain, proto, req_type, rep_type) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    let sock = Socket::new(domain, Type::RAW, Some(proto)).context("raw ICMP socket")?;
    let id = (std::process::id() as u16) ^ 0x4c42;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut pkt = vec![req_type, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"balancer-tests ping payload.....");
    if target.is_ipv4() {
        let c = csum::checksum(0, &pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    } // the kernel fills in the ICMPv6 checksum of raw ICMPv6 sockets
    let dest = SocketAddr::new(target, 0);
    let start = Instant::now();
    sock.send_to(&pkt, &dest.into())
        .with_context(|| format!("sending echo request to {target}"))?;
    let deadline = start + timeout;
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    loop {
        let now = Instant::now();
        if now >= deadline {
            bail!("no echo reply from {target} within {timeout:?}");
        }
        sock.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("receiving echo reply"),
        };
        // SAFETY: recv_from initialised the first n bytes.
        let data: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        let icmp = if target.is_ipv4() {
            // Raw IPv4 sockets deliver the IP header too.
            let ihl = data.first().map(|b| usize::from(b & 0x0f) * 4).unwrap_or(0);
            if ihl < 20 || data.len() < ihl {
                continue;
            }
            &data[ihl..]
        } else {
            data
        };
        let from_ip = from.as_socket().map(|s| s.ip());
        if icmp.len() >= 8
            && icmp[0] == rep_type
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
            && from_ip == Some(target)
        {
            return Ok(start.elapsed());
        }
    }
}
