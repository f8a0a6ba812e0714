//! What a refused or accepted-with-remarks configuration reports back.

use std::fmt;

use serde::Serialize;

/// One reason a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Key path such as `service[2].backends[0].address`; empty for syntax errors,
    /// which happen before any key is known.
    pub path: String,
    /// 1-based line in the file, where the parser could tell.
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
        }
    }
}

/// Something accepted that the user should know about; never a reason to refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

impl Warning {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "warning: {}: {}", self.path, self.message)
    }
}

/// A refused configuration, with every problem found rather than only the first,
/// so that one round of editing can fix them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Maps byte offsets (as in parser spans) to 1-based line numbers.
pub(super) struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub(super) fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { starts }
    }

    pub(super) fn line(&self, offset: usize) -> usize {
        // partition_point counts the lines starting at or before `offset`.
        self.starts.partition_point(|&start| start <= offset)
    }

    pub(super) fn column(&self, offset: usize) -> usize {
        offset - self.starts[self.line(offset) - 1] + 1
    }

    pub(super) fn of(&self, span: Option<std::ops::Range<usize>>) -> Option<usize> {
        span.map(|span| self.line(span.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        let lines = Lines::new("a\nbc\n\nd");
        assert_eq!(lines.line(0), 1);
        assert_eq!(lines.line(1), 1);
        assert_eq!(lines.line(2), 2);
        assert_eq!(lines.line(5), 3);
        assert_eq!(lines.line(6), 4);
        assert_eq!(lines.column(3), 2);
    }

    #[test]
    fn display_forms() {
        let p = Problem::new("node.name", Some(3), "must not be empty");
        assert_eq!(p.to_string(), "node.name (line 3): must not be empty");
        assert_eq!(Problem::new("", Some(2), "x").to_string(), "line 2: x");
        let w = Warning::new("ha.enabled", "later");
        assert_eq!(w.to_string(), "warning: ha.enabled: later");
        let e = ConfigError {
            problems: vec![p, Problem::new("node", None, "missing")],
        };
        assert_eq!(
            e.to_string(),
            "node.name (line 3): must not be empty\nnode: missing"
        );
    }
}
