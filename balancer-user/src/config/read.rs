//! Walks the parsed TOML document into the raw shapes of `raw.rs`.
//!
//! serde stops at the first error, so the document is deserialized piece by
//! piece (each section, each service, its health, each backend; within each,
//! key by key) and every piece's error is kept. `toml_edit` rather than `toml`
//! because its document keeps the source position of every key and value.

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{ImDocument, InlineTable, Item, Value};

use super::problem::{Lines, Problem};
use super::raw::{At, Part, RawBackend, RawConfig, ServiceEntry};

/// The top-level keys, each read below.
pub(super) const SECTIONS: [&str; 6] = ["node", "control", "flows", "firewall", "ha", "service"];

/// Reads `text`; a syntax error is the only problem reported then, since nothing
/// after it can be trusted.
pub(super) fn read(text: &str, lines: &Lines) -> (Option<RawConfig>, Vec<Problem>) {
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(err) => return (None, vec![syntax_problem(&err, lines)]),
    };
    let mut reader = Reader {
        lines,
        problems: Vec::new(),
    };
    let mut raw = RawConfig {
        node: Part::Absent,
        control: Part::Absent,
        flows: Part::Absent,
        firewall: Part::Absent,
        ha: Part::Absent,
        services: Part::Absent,
    };
    let root = doc.as_table();
    for (key, item) in root.iter() {
        match key {
            "node" => raw.node = reader.table_part(key, item, None),
            "control" => raw.control = reader.table_part(key, item, None),
            "flows" => raw.flows = reader.table_part(key, item, None),
            "firewall" => raw.firewall = reader.table_part(key, item, None),
            "ha" => raw.ha = reader.table_part(key, item, None),
            "service" => raw.services = reader.services(item),
            _ => {
                let line = lines.of(root.key(key).and_then(|k| k.span()));
                let hint = if key == "services" {
                    " (services are written as [[service]] tables)"
                } else {
                    ""
                };
                let expected = SECTIONS.map(|s| format!("`{s}`")).join(", ");
                reader.problems.push(Problem::new(
                    key,
                    line,
                    format!("unknown key `{key}`, expected one of {expected}{hint}"),
                ));
            }
        }
    }
    (Some(raw), reader.problems)
}

fn syntax_problem(err: &toml_edit::TomlError, lines: &Lines) -> Problem {
    // The parser's message may span lines ("invalid key\nexpected ..."); a problem is one line.
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match err.span() {
        Some(span) => Problem::new(
            "",
            Some(lines.line(span.start)),
            format!(
                "TOML syntax error at column {}: {message}",
                lines.column(span.start)
            ),
        ),
        None => Problem::new("", None, format!("TOML syntax error: {message}")),
    }
}

struct Reader<'a> {
    lines: &'a Lines,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    /// A table read as a `T`; `fallback_line` stands for tables without a place of their own.
    fn table_part<T: DeserializeOwned>(
        &mut self,
        path: &str,
        item: &Item,
        fallback_line: Option<usize>,
    ) -> Part<T> {
        let Some((table, line)) = self.table(path, item, fallback_line) else {
            return Part::Refused;
        };
        match self.deserialize(path, table, line) {
            Some((value, refused)) => Part::Present(At::new(value, line, refused)),
            None => Part::Refused,
        }
    }

    fn services(&mut self, item: &Item) -> Part<Vec<Option<At<ServiceEntry>>>> {
        let line = self.lines.of(item.span());
        let elements: Vec<Item> = match item {
            Item::ArrayOfTables(tables) => tables.iter().cloned().map(Item::Table).collect(),
            Item::Value(Value::Array(values)) => values.iter().cloned().map(Item::Value).collect(),
            other => {
                self.problems.push(Problem::new(
                    "service",
                    line,
                    format!(
                        "must be a list of tables, each written [[service]], found {}",
                        other.type_name()
                    ),
                ));
                return Part::Refused;
            }
        };
        let services = elements
            .iter()
            .enumerate()
            .map(|(i, element)| self.service(&format!("service[{i}]"), element, line))
            .collect();
        Part::Present(At::new(services, line, Vec::new()))
    }

    fn service(
        &mut self,
        path: &str,
        item: &Item,
        fallback_line: Option<usize>,
    ) -> Option<At<ServiceEntry>> {
        let (mut table, line) = self.table(path, item, fallback_line)?;
        let health = table.remove("health").map_or(Part::Absent, |health| {
            self.table_part(&format!("{path}.health"), &Item::Value(health), line)
        });
        let backends = table.remove("backends").map_or(Part::Absent, |backends| {
            self.backends(&format!("{path}.backends"), backends, line)
        });
        let (fields, refused) = match self.deserialize(path, table, line) {
            Some((fields, refused)) => (Some(fields), refused),
            None => (None, Vec::new()),
        };
        Some(At::new(
            ServiceEntry {
                fields,
                health,
                backends,
            },
            line,
            refused,
        ))
    }

    fn backends(
        &mut self,
        path: &str,
        value: Value,
        fallback_line: Option<usize>,
    ) -> Part<Vec<Option<At<RawBackend>>>> {
        let line = self.lines.of(value.span()).or(fallback_line);
        let Value::Array(elements) = value else {
            self.problems.push(Problem::new(
                path,
                line,
                format!(
                    "must be a list of tables like [{{ address = \"203.0.113.11:8080\" }}], found {}",
                    value.type_name()
                ),
            ));
            return Part::Refused;
        };
        let backends = elements
            .into_iter()
            .enumerate()
            .map(|(i, element)| {
                let path = format!("{path}[{i}]");
                let (table, line) = self.table(&path, &Item::Value(element), line)?;
                let (value, refused) = self.deserialize(&path, table, line)?;
                Some(At::new(value, line, refused))
            })
            .collect();
        Part::Present(At::new(backends, line, Vec::new()))
    }

    /// The item as an inline table (the form serde can read from), with its line.
    fn table(
        &mut self,
        path: &str,
        item: &Item,
        fallback_line: Option<usize>,
    ) -> Option<(InlineTable, Option<usize>)> {
        let line = self.lines.of(item.span()).or(fallback_line);
        match item.clone().into_value() {
            Ok(Value::InlineTable(table)) => Some((table, line)),
            _ => {
                self.problems.push(Problem::new(
                    path,
                    line,
                    format!("must be a table, found {}", item.type_name()),
                ));
                None
            }
        }
    }

    /// Reads `table` as a `T`, one key at a time first so that every refused key
    /// is reported (serde stops at the first), then the accepted keys together.
    /// Returns the value and the names of the refused keys.
    fn deserialize<T: DeserializeOwned>(
        &mut self,
        path: &str,
        mut table: InlineTable,
        line: Option<usize>,
    ) -> Option<(T, Vec<String>)> {
        let names: Vec<String> = table.iter().map(|(name, _)| name.to_owned()).collect();
        let mut accepted = InlineTable::new();
        let mut refused = Vec::new();
        for name in names {
            let Some((key, value)) = table.remove_entry(&name) else {
                continue;
            };
            let mut single = InlineTable::new();
            single.insert_formatted(&key, value.clone());
            match self.try_deserialize::<T>(path, single, line) {
                Ok(_) => {
                    accepted.insert_formatted(&key, value);
                }
                Err(problem) => {
                    self.problems.push(problem);
                    refused.push(name);
                }
            }
        }
        match self.try_deserialize(path, accepted, line) {
            Ok(value) => Some((value, refused)),
            Err(problem) => {
                self.problems.push(problem);
                None
            }
        }
    }

    fn try_deserialize<T: DeserializeOwned>(
        &self,
        path: &str,
        table: InlineTable,
        line: Option<usize>,
    ) -> Result<T, Problem> {
        use serde_path_to_error::Segment;
        let err =
            match serde_path_to_error::deserialize(Value::InlineTable(table).into_deserializer()) {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
        let mut full_path = path.to_owned();
        for segment in err.path().iter() {
            match segment {
                Segment::Seq { index } => full_path.push_str(&format!("[{index}]")),
                // Spanned<T> reads its value through private keys; they are not the user's.
                Segment::Map { key } if key.starts_with("$__") => {}
                Segment::Map { key } => {
                    full_path.push('.');
                    full_path.push_str(key);
                }
                Segment::Enum { .. } | Segment::Unknown => {}
            }
        }
        let inner = err.into_inner();
        let mut message = inner.message().to_owned();
        // serde speaks of struct fields; a TOML user writes keys.
        if let Some(rest) = message.strip_prefix("unknown field") {
            message = format!("unknown key{rest}");
        }
        // serde names Rust types; say what to write instead.
        for (rust, toml) in [
            ("expected u8", "expected a whole number from 0 to 255"),
            ("expected u16", "expected a whole number from 0 to 65535"),
            (
                "expected u32",
                "expected a whole number from 0 to 4294967295",
            ),
            ("expected i64", "expected a whole number"),
        ] {
            if let Some(start) = message.strip_suffix(rust) {
                message = format!("{start}{toml}");
            }
        }
        let line = self.lines.of(inner.span()).or(line);
        Err(Problem::new(full_path, line, message))
    }
}
