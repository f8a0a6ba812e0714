//! The daemon's log: human lines on a terminal, one JSON object per record for
//! collectors, and under systemd the same JSON with a syslog priority prefix.
//!
//! Under systemd, standard error is a stream to the journal and
//! `JOURNAL_STREAM` names its device and inode (systemd.exec(5)); matching
//! them against standard error, as sd_journal_stream_fd(3) advises, tells the
//! journal apart from a pipe that merely inherited the variable. journald
//! stores each line as one entry and takes its priority from a leading `<N>`
//! (`SyslogLevelPrefix=`, on by default), so errors are errors in
//! `journalctl -p err` and every field of the event stays in the JSON.

use std::{
    fmt,
    io::IsTerminal,
    os::{fd::AsFd, unix::fs::MetadataExt},
};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{self, JsonFields, Writer},
    },
    registry::LookupSpan,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journal when standard error is the systemd journal (JOURNAL_STREAM), human otherwise.
    Auto,
    /// Lines for a person, coloured on a terminal.
    Human,
    /// One JSON object per record with the event's fields, for collectors.
    Json,
    /// json with a syslog priority prefix (<3>{...}), for journald.
    Journal,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let format = match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Human,
        chosen => chosen,
    };
    match format {
        LogFormat::Auto | LogFormat::Human => {
            builder.with_ansi(std::io::stderr().is_terminal()).init()
        }
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Journal => builder
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(SyslogPriority(format::format().json().flatten_event(true)))
            .init(),
    }
}

/// Whether standard error is the stream `JOURNAL_STREAM` (`DEVICE:INODE`) names.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(metadata) = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
    else {
        return false;
    };
    journal_stream_matches(&stream.to_string_lossy(), metadata.dev(), metadata.ino())
}

fn journal_stream_matches(stream: &str, dev: u64, ino: u64) -> bool {
    stream
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// The syslog priority journald reads from the start of a line.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// An event format that writes `<priority>` before the inner format's line.
struct SyslogPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn journal_stream_is_device_colon_inode_of_standard_error() {
        assert!(journal_stream_matches("8:4242", 8, 4242));
        assert!(!journal_stream_matches("8:4242", 8, 4243));
        assert!(!journal_stream_matches("9:4242", 8, 4242));
        assert!(!journal_stream_matches("", 8, 4242));
        assert!(!journal_stream_matches("8-4242", 8, 4242));
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_journal_line_is_a_priority_then_the_event_as_json_with_its_fields() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(SyslogPriority(format::format().json().flatten_event(true)))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "event", event = "backend_down", service = "api",
                backend = %"203.0.113.11:8080", reason = "connection refused\nby peer",
                "backend down");
            tracing::error!("cannot attach");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "one line per event:\n{text}");
        let json = lines[0].strip_prefix("<4>").expect("warning is priority 4");
        let event: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(event["event"], "backend_down");
        assert_eq!(event["service"], "api");
        assert_eq!(event["backend"], "203.0.113.11:8080");
        assert_eq!(event["reason"], "connection refused\nby peer");
        assert_eq!(event["message"], "backend down");
        assert_eq!(event["target"], "event");
        assert!(lines[1].starts_with("<3>{"), "{}", lines[1]);
    }
}
