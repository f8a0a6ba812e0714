//! Medians per mode, the tables, and the `## End to end` section of BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::measure::MachineCpu;
use super::modes::Mode;

/// The three load tests of a mode slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    KeepAlive,
    Close,
    Iperf,
}

impl Test {
    pub const ALL: [Test; 3] = [Test::KeepAlive, Test::Close, Test::Iperf];

    pub fn label(self) -> &'static str {
        match self {
            Test::KeepAlive => "keep-alive",
            Test::Close => "new connection per request",
            Test::Iperf => "iperf3",
        }
    }
}

/// One run of one test in one mode.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Requests per second (wrk) or Gbit/s (iperf3).
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Requests (wrk) or GB received (iperf3): what CPU time is divided by.
    pub work: f64,
    /// Whole machine, during the run.
    pub cpu: MachineCpu,
    /// Processes outside the benchmark (other work on the machine), during the run.
    pub others: f64,
    /// Wall-clock length of the run, seconds.
    pub wall_s: f64,
    /// The balancer daemon's or HAProxy's process.
    pub lb_cpu: f64,
    /// wrk or the iperf3 client.
    pub client_cpu: f64,
    /// nginx (or the iperf3 server) in the backends.
    pub backend_cpu: f64,
    /// wrk socket errors + non-2xx answers; iperf3 retransmits.
    pub errors: u64,
}

impl Sample {
    /// CPU seconds per 1,000 requests (wrk) or per GB (iperf3).
    fn per(&self, test: Test, cpu: f64) -> f64 {
        let unit = if test == Test::Iperf { 1.0 } else { 1000.0 };
        if self.work > 0.0 {
            cpu / self.work * unit
        } else {
            f64::NAN
        }
    }
}

pub struct Run {
    pub round: usize,
    pub mode: Mode,
    pub test: Test,
    pub result: Result<Sample, String>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians of one mode in one test.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub ok: usize,
    pub failed: Vec<String>,
    pub rate: Option<f64>,
    pub rate_min: Option<f64>,
    pub rate_max: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// Whole machine less other work, per unit.
    pub cpu: Option<f64>,
    pub cpu_min: Option<f64>,
    pub cpu_max: Option<f64>,
    /// Whole machine as measured, per unit.
    pub machine: Option<f64>,
    /// Other work on the machine, CPU-s per second of run.
    pub other_load: Option<f64>,
    pub softirq: Option<f64>,
    pub lb: Option<f64>,
    pub client: Option<f64>,
    pub backends: Option<f64>,
    pub errors: u64,
}

pub fn summarise(runs: &[Run], mode: Mode, test: Test) -> Summary {
    let mut s = Summary::default();
    let ok: Vec<&Sample> = runs
        .iter()
        .filter(|r| r.mode == mode && r.test == test)
        .filter_map(|r| match &r.result {
            Ok(sample) => Some(sample),
            Err(e) => {
                s.failed.push(format!("round {}: {e}", r.round + 1));
                None
            }
        })
        .collect();
    s.ok = ok.len();
    let col = |f: &dyn Fn(&Sample) -> f64| median(ok.iter().map(|x| f(x)).collect());
    s.rate = col(&|x| x.rate);
    s.rate_min = ok.iter().map(|x| x.rate).reduce(f64::min);
    s.rate_max = ok.iter().map(|x| x.rate).reduce(f64::max);
    s.p50 = col(&|x| x.p50_ms);
    s.p99 = col(&|x| x.p99_ms);
    s.cpu = col(&|x| x.per(test, x.cpu.busy - x.others));
    let cpus: Vec<f64> = ok
        .iter()
        .map(|x| x.per(test, x.cpu.busy - x.others))
        .filter(|v| v.is_finite())
        .collect();
    s.cpu_min = cpus.iter().copied().reduce(f64::min);
    s.cpu_max = cpus.iter().copied().reduce(f64::max);
    s.machine = col(&|x| x.per(test, x.cpu.busy));
    s.other_load = col(&|x| x.others / x.wall_s);
    s.softirq = col(&|x| x.per(test, x.cpu.softirq));
    s.lb = col(&|x| x.per(test, x.lb_cpu));
    s.client = col(&|x| x.per(test, x.client_cpu));
    s.backends = col(&|x| x.per(test, x.backend_cpu));
    s.errors = ok.iter().map(|x| x.errors).sum();
    s
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "–".to_string(), f)
}

/// Three significant digits, at most 4 decimals.
fn sig3(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let digits = (2 - x.abs().log10().floor() as i32).clamp(0, 4) as usize;
    format!("{x:.digits$}")
}

/// A Markdown table for `test`: one row per figure, one column per mode.
pub fn table(runs: &[Run], test: Test) -> String {
    let sums: Vec<Summary> = Mode::ALL
        .iter()
        .map(|&m| summarise(runs, m, test))
        .collect();
    let mut out = String::new();
    out.push_str("| median of the rounds |");
    for m in Mode::ALL {
        let _ = write!(out, " {} |", m.label());
    }
    out.push_str("\n|---|");
    for _ in Mode::ALL {
        out.push_str("---:|");
    }
    out.push('\n');
    let mut row = |name: &str, f: &dyn Fn(&Summary) -> String| {
        let _ = write!(out, "| {name} |");
        for s in &sums {
            let cell = if s.ok == 0 && s.failed.is_empty() {
                "not run".to_string()
            } else if s.ok == 0 {
                "failed".to_string()
            } else {
                f(s)
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    };
    let per = if test == Test::Iperf {
        "GB"
    } else {
        "1,000 requests"
    };
    if test == Test::Iperf {
        row("Gbit/s (min–max)", &|s| {
            format!(
                "**{}** ({}–{})",
                fmt_opt(s.rate, sig3),
                fmt_opt(s.rate_min, sig3),
                fmt_opt(s.rate_max, sig3)
            )
        });
    } else {
        row("requests/s (min–max)", &|s| {
            format!(
                "**{}** ({}–{})",
                fmt_opt(s.rate, |x| format!("{x:.0}")),
                fmt_opt(s.rate_min, |x| format!("{x:.0}")),
                fmt_opt(s.rate_max, |x| format!("{x:.0}"))
            )
        });
        row("latency p50 / p99, ms", &|s| {
            format!("{} / {}", fmt_opt(s.p50, sig3), fmt_opt(s.p99, sig3))
        });
    }
    row(
        &format!("CPU s per {per}, whole machine less other work"),
        &|s| format!("**{}**", fmt_opt(s.cpu, sig3)),
    );
    row("… whole machine as measured", &|s| {
        fmt_opt(s.machine, sig3)
    });
    row("… of which softirq", &|s| fmt_opt(s.softirq, sig3));
    row("… load balancer process", &|s| fmt_opt(s.lb, sig3));
    row(
        if test == Test::Iperf {
            "… iperf3 client"
        } else {
            "… wrk"
        },
        &|s| fmt_opt(s.client, sig3),
    );
    row(
        if test == Test::Iperf {
            "… iperf3 server"
        } else {
            "… nginx"
        },
        &|s| fmt_opt(s.backends, sig3),
    );
    row(
        if test == Test::Iperf {
            "TCP retransmits (all rounds)"
        } else {
            "errors (all rounds)"
        },
        &|s| s.errors.to_string(),
    );
    row("other work on the machine, CPU-s/s", &|s| {
        fmt_opt(s.other_load, |x| format!("{x:.2}"))
    });
    row("rounds measured", &|s| s.ok.to_string());
    out
}

/// Median other work (CPU-s/s) above which the reading warns.
const NOISY_NOTE: f64 = 0.2;

/// `+12 %` for `a` against `b`, with "(rounds overlap)" when the per-round ranges do.
fn compare(
    a: (Option<f64>, Option<f64>, Option<f64>),
    b: (Option<f64>, Option<f64>, Option<f64>),
) -> String {
    let (Some(am), Some(bm)) = (a.0, b.0) else {
        return "n/a".into();
    };
    let overlap = match (a.1, a.2, b.1, b.2) {
        (Some(alo), Some(ahi), Some(blo), Some(bhi)) => alo <= bhi && blo <= ahi,
        _ => false,
    };
    format!(
        "{:+.0} %{}",
        (am / bm - 1.0) * 100.0,
        if overlap { " (rounds overlap)" } else { "" }
    )
}

/// Who wins where, computed from the medians (so it never says more than they do).
pub fn reading(runs: &[Run]) -> String {
    let mut out = String::new();
    for test in Test::ALL {
        let s = |m| summarise(runs, m, test);
        let (b, h, n, d) = (
            s(Mode::Balancer),
            s(Mode::Haproxy),
            s(Mode::Nftables),
            s(Mode::Direct),
        );
        let unit = if test == Test::Iperf {
            "Gbit/s"
        } else {
            "requests/s"
        };
        let Some(br) = b.rate else {
            let _ = writeln!(
                out,
                "- {}: the balancer has no successful run.",
                test.label()
            );
            continue;
        };
        let rate = |x: &Summary| (x.rate, x.rate_min, x.rate_max);
        let cpu = |x: &Summary| (x.cpu, x.cpu_min, x.cpu_max);
        let faster = [h.rate, n.rate].iter().all(|o| o.is_some_and(|o| br > o));
        let cheaper = [h.cpu, n.cpu]
            .iter()
            .all(|o| matches!((b.cpu, o), (Some(x), Some(o)) if x < *o));
        let _ = writeln!(
            out,
            "- **{}**: balancer vs HAProxy {} {unit}, {} CPU per unit; vs nftables {} {unit}, \
             {} CPU per unit; vs direct {} {unit}, {} CPU per unit. {}",
            test.label(),
            compare(rate(&b), rate(&h)),
            compare(cpu(&b), cpu(&h)),
            compare(rate(&b), rate(&n)),
            compare(cpu(&b), cpu(&n)),
            compare(rate(&b), rate(&d)),
            compare(cpu(&b), cpu(&d)),
            match (faster, cheaper) {
                (true, true) => "By the medians, faster and cheaper than both.",
                (true, false) => "By the medians, faster than both but not cheaper than both.",
                (false, true) => "By the medians, cheaper than both but not faster than both.",
                (false, false) => "By the medians, neither faster nor cheaper than both.",
            }
        );
        let noisy: Vec<String> = [
            (&b, Mode::Balancer),
            (&h, Mode::Haproxy),
            (&n, Mode::Nftables),
            (&d, Mode::Direct),
        ]
        .iter()
        .filter_map(|(x, m)| {
            x.other_load
                .filter(|&l| l > NOISY_NOTE)
                .map(|l| format!("{} ({l:.2} CPU-s/s)", m.label()))
        })
        .collect();
        if !noisy.is_empty() {
            let _ = writeln!(
                out,
                "  Caution: other work on the machine overlapped the runs of {}, by the median; \
                 their {unit} are understated (fewer CPUs left), their CPU per unit less so.",
                noisy.join(", ")
            );
        }
    }
    out
}

/// Replaces the `## End to end` section of `path` (up to the next `## ` heading or the
/// end) with `section`, or appends it; creates the file with `# Benchmarks` if missing.
/// Replaces the section under `heading` (up to the next `## `) with `section`,
/// or appends it.
pub fn write_section(path: &Path, heading: &str, section: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n\n".to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let section = format!("{}\n", section.trim_end());
    let new = match find_heading(&old, heading) {
        Some(start) => {
            let after = start + heading.len();
            let end = find_next_h2(&old, after).unwrap_or(old.len());
            let rest = &old[end..];
            if rest.is_empty() {
                format!("{}{section}", &old[..start])
            } else {
                format!("{}{section}\n{rest}", &old[..start])
            }
        }
        None => {
            let mut s = old.trim_end().to_string();
            s.push_str("\n\n");
            s.push_str(&section);
            s
        }
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// Byte offset of a line that is exactly `heading`.
fn find_heading(text: &str, heading: &str) -> Option<usize> {
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == heading {
            return Some(pos);
        }
        pos += line.len();
    }
    None
}

/// Byte offset of the first `## ` line at or after `from` (outside code fences).
fn find_next_h2(text: &str, from: usize) -> Option<usize> {
    let mut pos = 0;
    let mut fenced = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if pos >= from && !fenced && line.starts_with("## ") {
            return Some(pos);
        }
        pos += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
    }

    #[test]
    fn section_replaced_in_place() {
        let dir = std::env::temp_dir().join(format!("e2e-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("B.md");
        let _ = std::fs::remove_file(&p);
        write_section(&p, "## End to end", "## End to end\n\nfirst\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "# Benchmarks\n\n## End to end\n\nfirst\n"
        );
        std::fs::write(
            &p,
            "# Benchmarks\n\n## Per packet\n\nx\n\n## End to end\n\nold\n\n## Later\n\ny\n",
        )
        .unwrap();
        write_section(&p, "## End to end", "## End to end\n\nnew\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "# Benchmarks\n\n## Per packet\n\nx\n\n## End to end\n\nnew\n\n## Later\n\ny\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
