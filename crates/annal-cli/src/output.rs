//! Writing results: JSON lines or a table on stdout, events in either form.

use std::io::{self, BufWriter, StdoutLock, Write};

use annal::RecordedEvent;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::common::{CliResult, Fail, format_uuid};

/// Buffered stdout; every write error is a [`Fail`] (a closed pipe a quiet one).
pub struct Out {
    w: BufWriter<StdoutLock<'static>>,
}

impl Out {
    /// Stdout, locked for the life of the command.
    pub fn new() -> Out {
        Out {
            w: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        }
    }

    /// Writes one line.
    pub fn line(&mut self, s: &str) -> CliResult {
        writeln!(self.w, "{s}").map_err(|e| Fail::io("writing output", e))
    }

    /// Writes one value as a JSON line.
    pub fn json<T: Serialize>(&mut self, value: &T) -> CliResult {
        serde_json::to_writer(&mut self.w, value)
            .map_err(|e| Fail::io("writing output", io::Error::from(e)))?;
        self.w
            .write_all(b"\n")
            .map_err(|e| Fail::io("writing output", e))
    }

    /// Hands everything written so far to the reader.
    pub fn flush(&mut self) -> CliResult {
        self.w.flush().map_err(|e| Fail::io("writing output", e))
    }
}

/// Bytes as JSON when they parse as JSON: the text as stored, re-serialized only if it
/// spans lines (which would break JSON lines).
pub fn as_json(bytes: &[u8]) -> Option<Box<RawValue>> {
    let raw: &RawValue = serde_json::from_slice(bytes).ok()?;
    if raw.get().contains(['\n', '\r']) {
        let value: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
        RawValue::from_string(value.to_string()).ok()
    } else {
        Some(raw.to_owned())
    }
}

/// `bytes` as JSON when they are exactly one JSON value on one line, nothing around it: what
/// `--json` prints as JSON, so that `import` stores every byte back as it was.
fn exact_json(bytes: &[u8]) -> Option<Box<RawValue>> {
    let raw: &RawValue = serde_json::from_slice(bytes).ok()?;
    (raw.get().as_bytes() == bytes && !raw.get().contains(['\n', '\r'])).then(|| raw.to_owned())
}

/// An event as one JSON line: data and metadata as JSON when they are exactly a one-line
/// JSON value, else base64, so that `import` restores every byte.
#[derive(Serialize)]
struct EventJson<'a> {
    stream: &'a str,
    version: u64,
    position: u64,
    #[serde(rename = "type")]
    event_type: &'a str,
    /// Microseconds since the Unix epoch (UTC).
    timestamp: u64,
    id: Option<String>,
    /// Absent when the event has none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<&'a str>,
    /// Absent when the metadata is in `metadata_b64`; `null` when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Option<Box<RawValue>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_b64: Option<String>,
}

fn event_json(e: &RecordedEvent) -> EventJson<'_> {
    let (metadata, metadata_b64) = if e.metadata.is_empty() {
        (Some(None), None)
    } else {
        // Metadata `null` reads back as none: the bytes `null` go as base64.
        match exact_json(&e.metadata).filter(|raw| raw.get() != "null") {
            Some(raw) => (Some(Some(raw)), None),
            None => (None, Some(BASE64.encode(&e.metadata))),
        }
    };
    let data = exact_json(&e.payload);
    let data_b64 = data.is_none().then(|| BASE64.encode(&e.payload));
    EventJson {
        stream: &e.stream,
        version: e.version,
        position: e.position,
        event_type: &e.event_type,
        timestamp: e.timestamp,
        id: e.id.map(format_uuid),
        tags: e.tags.iter().collect(),
        metadata,
        metadata_b64,
        data,
        data_b64,
    }
}

/// A table whose column widths come from the rows seen before it is first printed, so that
/// long outputs stream instead of waiting for the last row.
pub struct Table {
    headers: Vec<&'static str>,
    widths: Vec<usize>,
    rows: Vec<Vec<String>>,
    printed_header: bool,
    show_header: bool,
}

/// Longest cell of a table column but the last, in characters; longer ones end in `…`.
const MAX_CELL: usize = 64;
/// Longest cell of the last column (payloads).
const MAX_LAST_CELL: usize = 256;

/// `text` for a table cell: control characters escaped as in Rust strings (`\n`, `\t`,
/// `\u{1b}`), and cut to `max` characters with `…` when longer. `--json` shows every byte.
pub fn cell(text: &str, max: usize) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_debug());
        } else {
            escaped.push(c);
        }
    }
    if escaped.chars().count() <= max {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Rows buffered before a table starts printing.
const TABLE_CHUNK: usize = 256;

impl Table {
    /// A table with these column headers.
    pub fn new(headers: Vec<&'static str>) -> Table {
        Table {
            widths: headers.iter().map(|h| h.chars().count()).collect(),
            headers,
            rows: Vec::new(),
            printed_header: false,
            show_header: true,
        }
    }

    /// A table of `columns` columns that prints no header line (a list of key-value pairs).
    pub fn without_header(columns: usize) -> Table {
        let mut t = Table::new(vec![""; columns]);
        t.show_header = false;
        t
    }

    /// Adds a row, printing the buffered ones once there are enough. Control characters
    /// are escaped (a row stays one line) and long cells are cut (one long stream name must
    /// not pad every row): see [`cell`].
    pub fn row(&mut self, out: &mut Out, row: Vec<String>) -> CliResult {
        let last = row.len().saturating_sub(1);
        let row = row
            .into_iter()
            .enumerate()
            .map(|(i, c)| cell(&c, if i == last { MAX_LAST_CELL } else { MAX_CELL }))
            .collect();
        self.rows.push(row);
        if self.rows.len() >= TABLE_CHUNK {
            self.print(out)?;
        }
        Ok(())
    }

    /// Prints the buffered rows (and the header, the first time).
    pub fn print(&mut self, out: &mut Out) -> CliResult {
        if self.rows.is_empty() {
            return Ok(());
        }
        for row in &self.rows {
            for (w, cell) in self.widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        if !self.printed_header {
            if self.show_header {
                let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
                out.line(&self.format(&header))?;
            }
            self.printed_header = true;
        }
        for row in std::mem::take(&mut self.rows) {
            out.line(&self.format(&row))?;
        }
        Ok(())
    }

    /// Whether nothing has been added yet.
    pub fn is_empty(&self) -> bool {
        !self.printed_header && self.rows.is_empty()
    }

    fn format(&self, row: &[String]) -> String {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&self.widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                let pad = w.saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        line.trim_end().to_string()
    }
}

/// Prints events as JSON lines or as a table.
pub struct EventPrinter {
    out: Out,
    table: Option<Table>,
}

impl EventPrinter {
    /// JSON lines when `json`, else a table.
    pub fn new(json: bool) -> EventPrinter {
        let headers = vec![
            "POSITION",
            "STREAM",
            "VERSION",
            "TYPE",
            "TIME (UTC)",
            "DATA",
        ];
        EventPrinter {
            out: Out::new(),
            table: (!json).then(|| Table::new(headers)),
        }
    }

    /// Prints one event.
    pub fn event(&mut self, e: &RecordedEvent) -> CliResult {
        match &mut self.table {
            None => self.out.json(&event_json(e)),
            Some(t) => {
                let row = vec![
                    e.position.to_string(),
                    e.stream.to_string(),
                    e.version.to_string(),
                    e.event_type.clone(),
                    format_timestamp(e.timestamp),
                    preview(&e.payload),
                ];
                t.row(&mut self.out, row)
            }
        }
    }

    /// Prints what is buffered and flushes stdout.
    pub fn flush(&mut self) -> CliResult {
        if let Some(t) = &mut self.table {
            t.print(&mut self.out)?;
        }
        self.out.flush()
    }

    /// Flushes; a table that got no rows says so.
    pub fn finish(mut self) -> CliResult {
        if self.table.as_ref().is_some_and(Table::is_empty) {
            self.out.line("(no events)")?;
        }
        self.flush()
    }
}

/// A short, one-line view of a payload for the table.
pub fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 60;
    if bytes.is_empty() {
        return String::new();
    }
    match as_json(bytes) {
        Some(raw) => {
            let text = raw.get();
            if text.chars().count() <= MAX {
                text.to_string()
            } else {
                let cut: String = text.chars().take(MAX - 1).collect();
                format!("{cut}…")
            }
        }
        None => format!("<{} bytes>", bytes.len()),
    }
}

/// Microseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm`, UTC.
pub fn format_timestamp(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let millis = (micros % 1_000_000) / 1_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{millis:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both are small by construction: a day 1..=31, a month 1..=12.
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {

    #[test]
    fn cells_stay_on_one_line_and_within_their_width() {
        assert_eq!(cell("a\nb\tc\u{1b}", 64), "a\\nb\\tc\\u{1b}");
        assert_eq!(cell("abcdef", 6), "abcdef");
        assert_eq!(cell("abcdefg", 6), "abcde…");
        assert_eq!(cell(&"é".repeat(100), 10).chars().count(), 10);
        assert_eq!(cell("", 3), "");
    }

    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00.000");
        // 2024-02-29 12:34:56.789 UTC
        assert_eq!(
            format_timestamp(1_709_210_096_789_000),
            "2024-02-29 12:34:56.789"
        );
    }

    #[test]
    fn json_detection() {
        assert_eq!(
            as_json(br#" {"a": 1} "#).map(|r| r.get().to_string()),
            Some(r#"{"a": 1}"#.to_string())
        );
        assert_eq!(
            as_json(b"{\n\"a\": 1}").map(|r| r.get().to_string()),
            Some(r#"{"a":1}"#.to_string())
        );
        assert!(as_json(b"hello").is_none());
        assert!(as_json(b"").is_none());
        assert!(as_json(&[0xff, 0x00]).is_none());
    }

    #[test]
    fn only_exact_one_line_json_is_printed_as_json() {
        assert!(exact_json(br#"{"a": 1}"#).is_some());
        assert!(exact_json(b"null").is_some());
        for inexact in [&br#" {"a": 1}"#[..], b"{\n\"a\": 1}", b"1\n", b"", b"x"] {
            assert!(exact_json(inexact).is_none(), "{inexact:?}");
        }
    }
}
