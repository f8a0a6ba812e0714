//! The load-reporting agent on a backend (HAProxy agent-check style): one line
//! over TCP, read on the main check's schedule.

use std::{net::SocketAddr, time::Duration};

use tokio::{io::AsyncReadExt, net::TcpStream};

use super::reason::describe_io;

/// The longest agent line read; anything past it is ignored.
pub const MAX_LINE: usize = 512;

/// What the agent said in its last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReport {
    /// 0 (idle) to 100 (full).
    pub load_pct: Option<u32>,
    pub state: Option<AgentState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Up,
    /// Keep established flows, take no new ones.
    Drain,
    Down,
}

/// Parses one agent line: words separated by commas or spaces, in any case.
/// Unknown words are skipped so that agents written for HAProxy (`maxconn:30`)
/// still work; where several state words appear the last one counts. Text after
/// `#` is a description for people and is not read.
pub fn parse(line: &str) -> AgentReport {
    let line = line.split('#').next().unwrap_or_default();
    let mut report = AgentReport {
        load_pct: None,
        state: None,
    };
    for word in line
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_ascii_lowercase();
        if let Some(number) = word.strip_suffix('%') {
            if let Some(pct) = percentage(number) {
                report.load_pct = Some(pct);
            }
            continue;
        }
        let state = match word.as_str() {
            "up" | "ready" => AgentState::Up,
            "drain" => AgentState::Drain,
            "down" | "fail" | "stopped" | "maint" => AgentState::Down,
            _ => continue,
        };
        report.state = Some(state);
    }
    report
}

/// `number` clamped to 0..=100; a run of digits too long for any integer is
/// still a (huge) load, so it saturates instead of being dropped.
fn percentage(number: &str) -> Option<u32> {
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        return Some(0);
    }
    Some(digits.parse::<u32>().map_or(100, |n| n.min(100)))
}

/// Connects to the agent and reads its line, all within `timeout`.
pub async fn query(addr: SocketAddr, timeout: Duration) -> Result<AgentReport, String> {
    let read = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to agent {addr}: {}", describe_io(&e)))?;
        let mut line = Vec::with_capacity(64);
        let mut buf = [0u8; MAX_LINE];
        while line.len() < MAX_LINE && !line.contains(&b'\n') {
            let room = MAX_LINE - line.len();
            let n = stream
                .read(&mut buf[..room])
                .await
                .map_err(|e| format!("read from agent {addr}: {}", describe_io(&e)))?;
            if n == 0 {
                break;
            }
            line.extend_from_slice(&buf[..n]);
        }
        if line.is_empty() {
            return Err(format!("agent {addr} closed without a line"));
        }
        let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
        Ok(parse(&String::from_utf8_lossy(&line[..end])))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "agent {addr} timed out after {} ms",
            timeout.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(load_pct: Option<u32>, state: Option<AgentState>) -> AgentReport {
        AgentReport { load_pct, state }
    }

    #[test]
    fn words_of_the_format() {
        use AgentState::*;
        let cases: &[(&str, AgentReport)] = &[
            ("75%", report(Some(75), None)),
            ("75%\r", report(Some(75), None)),
            ("drain", report(None, Some(Drain))),
            ("up", report(None, Some(Up))),
            ("READY", report(None, Some(Up))),
            ("down", report(None, Some(Down))),
            ("fail", report(None, Some(Down))),
            ("Stopped", report(None, Some(Down))),
            ("maint", report(None, Some(Down))),
            ("up, 20%", report(Some(20), Some(Up))),
            ("50% drain", report(Some(50), Some(Drain))),
            ("  ,, 0% ,up ", report(Some(0), Some(Up))),
            ("", report(None, None)),
            ("maxconn:30 hello", report(None, None)),
        ];
        for (line, want) in cases {
            assert_eq!(&parse(line), want, "{line:?}");
        }
    }

    #[test]
    fn percentages_are_clamped() {
        assert_eq!(parse("250%").load_pct, Some(100));
        assert_eq!(parse("100%").load_pct, Some(100));
        assert_eq!(parse("-5%").load_pct, Some(0));
        assert_eq!(parse("+30%").load_pct, Some(30));
        assert_eq!(parse("99999999999999999999%").load_pct, Some(100));
    }

    #[test]
    fn malformed_percentages_are_ignored() {
        for line in ["%", "x%", "1.5%", "5%%", "-%", "2%3%"] {
            assert_eq!(parse(line).load_pct, None, "{line:?}");
        }
    }

    #[test]
    fn the_last_state_word_wins() {
        assert_eq!(parse("down up").state, Some(AgentState::Up));
        assert_eq!(parse("up,drain").state, Some(AgentState::Drain));
        assert_eq!(parse("10% 20%").load_pct, Some(20));
    }

    #[test]
    fn a_description_after_hash_is_not_read() {
        assert_eq!(
            parse("down#replica is up to date"),
            report(None, Some(AgentState::Down))
        );
        assert_eq!(parse("#up 50%"), report(None, None));
    }
}
