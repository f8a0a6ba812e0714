//! The Prometheus text format (version 0.0.4) from the OpenMetrics text that
//! prometheus-client writes, for scrapers that do not ask for OpenMetrics
//! (curl, `promtool check metrics`, older Prometheus servers).
//!
//! The two differ, for what the daemon exports, only in the metadata: a
//! counter's family is named with its `_total` suffix, an info family is a
//! gauge named with `_info`, and there are no `# UNIT` or `# EOF` lines.
//! Samples are written the same in both.

/// `Content-Type` of each format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Converts an OpenMetrics exposition as prometheus-client writes it (each
/// family's `# HELP` line, then its `# TYPE` line, then its samples).
pub fn prometheus_from_openmetrics(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut w = PrometheusText::new(&mut out);
    std::fmt::Write::write_str(&mut w, openmetrics).expect("writing to a String");
    out
}

/// A writer that turns the OpenMetrics text written into it into the
/// Prometheus text format as it goes: sample lines pass straight through,
/// metadata lines are rewritten. No second copy of the exposition is made.
pub struct PrometheusText<'a> {
    out: &'a mut String,
    state: Line,
    /// The metadata line being written.
    meta: String,
    /// A family's HELP line (name, text), held until its TYPE line says what
    /// to call the family.
    help: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Start,
    Sample,
    Meta,
}

impl<'a> PrometheusText<'a> {
    pub fn new(out: &'a mut String) -> Self {
        Self {
            out,
            state: Line::Start,
            meta: String::new(),
            help: None,
        }
    }

    fn meta_line(&mut self) {
        let line = std::mem::take(&mut self.meta);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            self.help = Some((name.to_string(), text.to_string()));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), "counter"),
                "info" => (format!("{family}_info"), "gauge"),
                "gaugehistogram" | "stateset" => (family.to_string(), "gauge"),
                "unknown" => (family.to_string(), "untyped"),
                other => (family.to_string(), other),
            };
            if let Some((_, text)) = self.help.take().filter(|(n, _)| n == family) {
                for part in ["# HELP ", &name, " ", &text, "\n"] {
                    self.out.push_str(part);
                }
            }
            for part in ["# TYPE ", &name, " ", kind, "\n"] {
                self.out.push_str(part);
            }
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            // Not in this format.
        } else {
            self.out.push_str(&line);
            self.out.push('\n');
        }
        self.meta = line;
        self.meta.clear();
    }
}

impl std::fmt::Write for PrometheusText<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut rest = s;
        while !rest.is_empty() {
            if self.state == Line::Start {
                self.state = if rest.starts_with('#') {
                    Line::Meta
                } else {
                    Line::Sample
                };
            }
            let (piece, ends) = match rest.find('\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            match self.state {
                Line::Sample => {
                    self.out.push_str(piece);
                    if ends {
                        self.out.push('\n');
                    }
                }
                _ => {
                    self.meta.push_str(piece);
                    if ends {
                        self.meta_line();
                    }
                }
            }
            if ends {
                self.state = Line::Start;
                rest = &rest[piece.len() + 1..];
            } else {
                rest = "";
            }
        }
        Ok(())
    }
}

/// Whether a request's `Accept` header prefers OpenMetrics (as Prometheus
/// servers say they do) over the older text format.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let mut best: Option<(f32, bool)> = None;
    for part in accept.split(',') {
        let mut fields = part.split(';').map(str::trim);
        let media = fields.next().unwrap_or_default().to_ascii_lowercase();
        let q = fields
            .filter_map(|f| f.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let om = match media.as_str() {
            "application/openmetrics-text" => true,
            "text/plain" => false,
            _ => continue,
        };
        // The first of equal preference wins.
        if best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, om));
        }
    }
    best.is_some_and(|(q, om)| om && q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "# HELP balancer_connections New flows.\n\
# TYPE balancer_connections counter\n\
balancer_connections_total 7\n\
# HELP balancer_build The build.\n\
# TYPE balancer_build info\n\
balancer_build_info{version=\"0.1.0\"} 1\n\
# HELP balancer_check_seconds Durations.\n\
# TYPE balancer_check_seconds histogram\n\
# UNIT balancer_check_seconds seconds\n\
balancer_check_seconds_sum 0.5\n\
balancer_check_seconds_count 1\n\
balancer_check_seconds_bucket{le=\"+Inf\"} 1\n\
# HELP balancer_role Role.\n\
# TYPE balancer_role gauge\n\
balancer_role{role=\"standalone\"} 1\n\
# EOF\n";

    #[test]
    fn counters_and_infos_are_named_as_their_samples() {
        let text = prometheus_from_openmetrics(OM);
        assert_eq!(
            text,
            "# HELP balancer_connections_total New flows.\n\
# TYPE balancer_connections_total counter\n\
balancer_connections_total 7\n\
# HELP balancer_build_info The build.\n\
# TYPE balancer_build_info gauge\n\
balancer_build_info{version=\"0.1.0\"} 1\n\
# HELP balancer_check_seconds Durations.\n\
# TYPE balancer_check_seconds histogram\n\
balancer_check_seconds_sum 0.5\n\
balancer_check_seconds_count 1\n\
balancer_check_seconds_bucket{le=\"+Inf\"} 1\n\
# HELP balancer_role Role.\n\
# TYPE balancer_role gauge\n\
balancer_role{role=\"standalone\"} 1\n"
        );
    }

    #[test]
    fn the_writer_converts_whatever_the_pieces() {
        let whole = prometheus_from_openmetrics(OM);
        for size in [1, 2, 3, 7, 64] {
            let mut out = String::new();
            let mut w = PrometheusText::new(&mut out);
            let bytes = OM.as_bytes();
            let mut at = 0;
            while at < bytes.len() {
                let mut end = (at + size).min(bytes.len());
                while !OM.is_char_boundary(end) {
                    end += 1;
                }
                std::fmt::Write::write_str(&mut w, &OM[at..end]).unwrap();
                at = end;
            }
            assert_eq!(out, whole, "pieces of {size}");
        }
    }

    #[test]
    fn prometheus_servers_get_openmetrics_and_curl_gets_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some(
            "text/plain;version=0.0.4,application/openmetrics-text;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }
}
