//! Small helpers shared by the harness: unique names, temporary directories, bounded waits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Directory where `ip netns add` keeps its namespace handles.
pub(crate) const NETNS_RUN_DIR: &str = "/run/netns";

/// A per-process, per-call unique name prefix: `{hint}{pid % 10000:04}{counter}`.
///
/// `hint` is reduced to at most 4 lower-case ASCII letters/digits (`"lbt"` when empty), the
/// pid part has a fixed width and the counter is written in base 36, so two prefixes never
/// share a name with one another when a role suffix is separated by `-`. Prefixes that are
/// already in use by a namespace (`/run/netns/{prefix}-*`, e.g. from another process whose
/// pid has the same last four digits) are skipped.
pub fn unique_prefix(hint: &str) -> String {
    let mut h: String = hint
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(4)
        .collect();
    if h.is_empty() {
        h.push_str("lbt");
    }
    let pid = std::process::id() % 10_000;
    let mut candidate = String::new();
    for _ in 0..1000 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        candidate = format!("{h}{pid:04}{}", base36(n));
        if !prefix_in_use(&candidate) {
            return candidate;
        }
    }
    candidate
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

fn prefix_in_use(prefix: &str) -> bool {
    let with_dash = format!("{prefix}-");
    netns_names()
        .iter()
        .any(|n| n == prefix || n.starts_with(&with_dash))
}

/// Names of all namespaces known to `ip netns` (entries of `/run/netns`).
pub fn netns_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Names of the namespaces (as listed by `ip netns list`) that start with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    netns_names()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Polls `cond` until it returns true or `timeout` has passed; returns whether it succeeded.
///
/// The poll interval starts at 1 ms and doubles up to 50 ms, so quick conditions are seen
/// quickly and slow ones do not spin.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(1);
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

/// Polls `cond` every `every` until it returns true or `timeout` has passed; returns how
/// long that took (`None`: it never held).
///
/// For waits whose length the test measures (a failover gap, a refill), where the step
/// bounds the measurement's error and so is the test's to choose.
pub fn poll_until(
    timeout: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    let mut pace = Pace::new(every);
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        pace.wait();
    }
}

/// The rate of a client that acts every `interval` (a load loop's request rate, a
/// prober's step): pacing is the client's behaviour, not a wait for a condition,
/// which [`wait_until`] and [`poll_until`] are for.
#[derive(Debug)]
pub struct Pace {
    interval: Duration,
    next: Instant,
}

impl Pace {
    /// The first tick is `interval` from now.
    pub fn new(interval: Duration) -> Pace {
        Pace {
            interval,
            next: Instant::now() + interval,
        }
    }

    /// Blocks until the next tick. Ticks missed by a client slower than its rate are
    /// dropped, not made up in a burst.
    pub fn wait(&mut self) {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        }
        self.next = (self.next + self.interval).max(Instant::now());
    }
}

/// A temporary directory that is removed (recursively) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/balancer-tests-{hint}-{pid}-{counter}` (mode 0755).
    pub fn new(hint: &str) -> Result<TempDir> {
        let pid = std::process::id();
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("balancer-tests-{hint}-{pid}-{n}"));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
        bail!("could not create a temporary directory for {hint}")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Creates a temporary file path `$TMPDIR/balancer-tests-{hint}-{pid}-{counter}.log` (not the
/// file itself).
pub(crate) fn temp_file_path(hint: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let safe: String = hint
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(32)
        .collect();
    std::env::temp_dir().join(format!(
        "balancer-tests-{safe}-{}-{n}.log",
        std::process::id()
    ))
}

/// Keeps the last `max` bytes of `s` (on a char boundary), prefixed with `...` when cut.
pub(crate) fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// CPU time (user + system, every thread) that process `pid` has used so far
/// (`/proc/PID/stat`, in clock ticks: 10 ms steps at the usual USER_HZ of 100).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces; after it come
    // state(3) ... utime(14) stime(15).
    let fields: Vec<u64> = stat
        .rfind(')')
        .map(|close| &stat[close + 1..])
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let (Some(utime), Some(stime)) = (fields.get(10), fields.get(11)) else {
        bail!("short /proc/{pid}/stat: {stat}");
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros((utime + stime) * 1_000_000 / hz))
}

/// Resident memory of process `pid` now and at its peak (`VmRSS`, `VmHWM` of
/// `/proc/PID/status`), KiB.
pub fn resident_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// `n` with its thousands grouped, for reports: 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `promtool check metrics` on a scrape (Debian's prometheus package): what
/// it objects to, if anything.
pub fn promtool_check_metrics(text: &str) -> Result<()> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting promtool")?;
    promtool
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(text.as_bytes())?;
    let out = promtool.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }

    #[test]
    fn prefixes_are_short_and_distinct() {
        let a = unique_prefix("Hello-World");
        let b = unique_prefix("Hello-World");
        assert_ne!(a, b);
        assert!(a.starts_with("hell"));
        assert!(a.len() <= 10, "{a}");
        assert!(unique_prefix("").starts_with("lbt"));
    }

    #[test]
    fn poll_until_measures_and_gives_up() {
        let start = Instant::now();
        let mut tries = 0;
        let took = poll_until(Duration::from_secs(5), Duration::from_millis(10), || {
            tries += 1;
            tries == 4
        })
        .expect("held at the fourth try");
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(took <= start.elapsed());
        let never = poll_until(Duration::from_millis(30), Duration::from_millis(10), || {
            false
        });
        assert_eq!(never, None);
    }

    #[test]
    fn reads_its_own_cpu_time_and_memory() {
        let me = std::process::id();
        let before = cpu_time(me).unwrap();
        // Busy until the next clock tick is charged (bounded).
        let start = Instant::now();
        let mut x = 0u64;
        while cpu_time(me).unwrap() == before && start.elapsed() < Duration::from_secs(5) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(cpu_time(me).unwrap() > before, "no CPU time charged in 5 s");
        let (rss, hwm) = resident_kib(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss, "{rss} {hwm}");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn tail_cuts_on_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "...def");
        assert_eq!(tail("aé", 1), "...");
    }
}
