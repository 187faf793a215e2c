//! Writing commands: `append` (one event) and `import` (JSON lines from stdin).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use annal::{Error, EventData, ExpectedVersion, FsyncPolicy, Options, Store};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::common::{
    CliResult, Counting, Fail, counted, exit, exit_status, parse_expected, parse_uuid, plural,
    progress_bar, rate_summary, spinner,
};
use crate::output::{Out, Table};

/// What `append` and `import` print for each event once its append was acknowledged.
#[derive(Serialize)]
struct Ack<'a> {
    stream: &'a str,
    version: u64,
    position: u64,
    /// A retry of an append already in the log: nothing was written.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deduplicated: bool,
}

/// The arguments of `annal append`.
#[derive(Debug, Clone)]
pub struct AppendArgs {
    /// The stream appended to.
    pub stream: String,
    /// The event's type.
    pub event_type: String,
    /// The payload, already checked to be JSON.
    pub data: Option<String>,
    /// A file whose bytes are the payload (`-`: stdin).
    pub data_file: Option<PathBuf>,
    /// The metadata, already checked to be JSON.
    pub metadata: Option<String>,
    /// The event id.
    pub id: Option<u128>,
    /// The version the stream must be at.
    pub expected: ExpectedVersion,
    /// Segment and event store_args for the store.
    pub store_args: crate::common::StoreArgs,
    /// JSON instead of a table.
    pub json: bool,
}

/// Prints acknowledgements as JSON lines or as a table, each row as soon as it is known.
struct Acks {
    out: Out,
    table: Option<Table>,
}

impl Acks {
    fn new(json: bool) -> Acks {
        Acks {
            out: Out::new(),
            table: (!json).then(|| Table::new(vec!["STREAM", "VERSION", "POSITION", "NOTE"])),
        }
    }

    fn ack(&mut self, ack: &Ack<'_>) -> CliResult {
        match &mut self.table {
            None => self.out.json(ack),
            Some(t) => t.row(
                &mut self.out,
                vec![
                    ack.stream.to_string(),
                    ack.version.to_string(),
                    ack.position.to_string(),
                    if ack.deduplicated {
                        "deduplicated: a retry of an append already stored".into()
                    } else {
                        String::new()
                    },
                ],
            ),
        }
    }

    /// Hands every acknowledgement so far to the reader.
    fn flush(&mut self) -> CliResult {
        if let Some(t) = &mut self.table {
            t.print(&mut self.out)?;
        }
        self.out.flush()
    }
}

/// `annal append`: appends one event and prints where it landed.
pub fn append(dir: &Path, args: AppendArgs) -> CliResult {
    // Read the payload before opening the store, so a bad file changes nothing.
    let payload = match (&args.data, &args.data_file) {
        (Some(d), _) => d.clone().into_bytes(),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut b = Vec::new();
            io::stdin()
                .read_to_end(&mut b)
                .map_err(|e| Fail::io("reading data from stdin", e))?;
            b
        }
        (None, Some(f)) => std::fs::read(f)
            .map_err(|e| Fail::io(format!("cannot read data file {}", f.display()), e))?,
        (None, None) => Vec::new(),
    };
    let mut event = EventData::new(args.event_type, payload);
    if let Some(m) = args.metadata {
        event = event.with_metadata(m.into_bytes());
    }
    if let Some(id) = args.id {
        event = event.with_id(id);
    }
    let store = crate::common::open_store(
        dir,
        args.store_args.apply(Options::default()),
        args.store_args.create,
    )?;
    let r = store.append(&args.stream, args.expected, &[event])?;
    let mut acks = Acks::new(args.json);
    acks.ack(&Ack {
        stream: &args.stream,
        version: r.last_version,
        position: r.last_position,
        deduplicated: r.deduplicated,
    })?;
    acks.flush()?;
    Ok(store.close()?)
}

/// The arguments of `annal import`.
#[derive(Debug, Clone, Copy)]
pub struct ImportArgs {
    /// The store's durability policy while importing.
    pub fsync: FsyncPolicy,
    /// Most events per append (consecutive lines of one stream).
    pub batch: usize,
    /// Stop at the first line that fails.
    pub stop_on_error: bool,
    /// Segment and event store_args for the store.
    pub store_args: crate::common::StoreArgs,
    /// JSON instead of a table.
    pub json: bool,
}

/// One parsed input line.
struct Line {
    number: u64,
    stream: String,
    expected: Option<ExpectedVersion>,
    event: EventData,
}

/// Parses one input line: `{"stream","type","data"|"data_b64","metadata"|"metadata_b64",
/// "id","tags","timestamp","expected_version"}`. Other keys are ignored, so `read --json` output
/// imports back with its ids, timestamps and metadata.
fn parse_line(text: &str) -> Result<(String, Option<ExpectedVersion>, EventData), String> {
    let fields: HashMap<String, Box<RawValue>> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let get = |key: &str| fields.get(key).filter(|raw| raw.get() != "null");
    let string = |key: &str| -> Result<Option<String>, String> {
        get(key)
            .map(|raw| {
                serde_json::from_str::<String>(raw.get()).map_err(|e| {
                    if raw.get().starts_with('"') {
                        // A string, but not one of Unicode text: a lone surrogate, say.
                        format!(
                            "\"{key}\" is not valid Unicode text (a \\uD800-\\uDFFF escape \
                             must be half of a surrogate pair): {e}"
                        )
                    } else {
                        format!("\"{key}\" must be a string")
                    }
                })
            })
            .transpose()
    };
    let base64 = |key: &str| -> Result<Option<Vec<u8>>, String> {
        string(key)?
            .map(|s| {
                BASE64
                    .decode(s)
                    .map_err(|e| format!("\"{key}\" is not base64: {e}"))
            })
            .transpose()
    };
    let stream = string("stream")?.ok_or("missing \"stream\"")?;
    let event_type = string("type")?.ok_or("missing \"type\"")?;
    // JSON data is stored as the text it was given in; data_b64 carries any bytes.
    let data = match (fields.get("data"), base64("data_b64")?) {
        (Some(_), Some(_)) => return Err("give \"data\" or \"data_b64\", not both".into()),
        (Some(raw), None) => raw.get().as_bytes().to_vec(),
        (None, Some(bytes)) => bytes,
        (None, None) => Vec::new(),
    };
    let metadata = match (get("metadata"), base64("metadata_b64")?) {
        (Some(_), Some(_)) => {
            return Err("give \"metadata\" or \"metadata_b64\", not both".into());
        }
        (Some(raw), None) => raw.get().as_bytes().to_vec(),
        (None, Some(bytes)) => bytes,
        (None, None) => Vec::new(),
    };
    let mut event = EventData::new(event_type, data).with_metadata(metadata);
    if let Some(id) = string("id")? {
        event = event.with_id(parse_uuid(&id)?);
    }
    if let Some(raw) = get("tags") {
        let tags = serde_json::from_str::<Vec<String>>(raw.get())
            .map_err(|_| "\"tags\" must be an array of strings")?;
        event = event.with_tags(tags);
    }
    if let Some(raw) = get("timestamp") {
        let micros = serde_json::from_str::<u64>(raw.get()).map_err(
            |_| "\"timestamp\" must be a whole number of microseconds since the Unix epoch",
        )?;
        event = event.with_timestamp(micros);
    }
    let expected = match get("expected_version") {
        None => None,
        Some(raw) => {
            let text = match serde_json::from_str::<String>(raw.get()) {
                Ok(s) => s,
                Err(_) => raw.get().to_string(),
            };
            Some(parse_expected(&text)?)
        }
    };
    Ok((stream, expected, event))
}

/// The size of stdin when it is a regular file (for a progress bar with an end).
fn stdin_len() -> Option<u64> {
    let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    meta.is_file().then_some(meta.len())
}

/// Appends batches and reports what happened to each line.
struct Importer {
    store: Store,
    acks: Acks,
    /// Progress on stderr: hidden while a failed line is reported.
    pb: ProgressBar,
    stop_on_error: bool,
    events: u64,
    failed_lines: u64,
}

impl Importer {
    /// Reports a failed line (or batch of lines): fatal with `--stop-on-error`.
    fn failed(&mut self, lines: &str, lines_count: u64, why: &Refusal) -> CliResult {
        self.failed_lines += lines_count;
        let message = format!("{lines}: {}", why.1);
        if self.stop_on_error {
            return Err(Fail::exit(why.0, message));
        }
        self.pb.suspend(|| crate::warn(&message));
        Ok(())
    }

    /// Appends `batch` (lines of one stream) as one frame, then prints and flushes one
    /// acknowledgement per event: only after `append` returned, so whatever was printed is
    /// in the store even if the process is killed right after. When the store refuses a
    /// batch of several lines (a version conflict, an invalid event), each line is appended
    /// alone, as without batching, so only the lines at fault fail.
    fn flush(&mut self, batch: &mut Vec<Line>) -> CliResult {
        if batch.is_empty() {
            return Ok(());
        }
        let lines: Vec<Line> = std::mem::take(batch);
        match self.append(&lines)? {
            None => Ok(()),
            Some(refusal) if lines.len() == 1 => self.failed(&describe(&lines), 1, &refusal),
            Some(_) => {
                for line in lines {
                    let one = [line];
                    if let Some(refusal) = self.append(&one)? {
                        self.failed(&describe(&one), 1, &refusal)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Appends `lines` as one frame and acknowledges them; the store's refusal, if it
    /// refused them (anything else, such as I/O or a poisoned store, ends the import).
    fn append(&mut self, lines: &[Line]) -> CliResult<Option<Refusal>> {
        let Some(first) = lines.first() else {
            return Ok(None);
        };
        let stream = first.stream.clone();
        let expected = first.expected.unwrap_or(ExpectedVersion::Any);
        let count = lines.len() as u64;
        let events: Vec<EventData> = lines.iter().map(|l| l.event.clone()).collect();
        match self.store.append(&stream, expected, &events) {
            Ok(r) => {
                for i in 0..count {
                    self.acks.ack(&Ack {
                        stream: &stream,
                        version: r.first_version + i,
                        position: r.first_position + i,
                        deduplicated: r.deduplicated,
                    })?;
                }
                self.acks.flush()?;
                self.events += count;
                Ok(None)
            }
            Err(
                e @ (Error::WrongExpectedVersion { .. }
                | Error::InvalidArgument(_)
                | Error::IdReused { .. }),
            ) => Ok(Some((exit_status(&e), e.to_string()))),
            Err(e) => Err(Fail::from(e).context(&describe(lines))),
        }
    }
}

/// Why lines failed: the exit status it calls for, and the message.
type Refusal = (u8, String);

/// "line 7" or "lines 7-9".
fn describe(lines: &[Line]) -> String {
    match (lines.first(), lines.last()) {
        (Some(a), Some(b)) if a.number != b.number => format!("lines {}-{}", a.number, b.number),
        (Some(a), _) => format!("line {}", a.number),
        _ => String::new(),
    }
}

/// `annal import`: appends JSON lines from stdin, printing an acknowledgement per event.
pub fn import(dir: &Path, args: ImportArgs) -> CliResult {
    let options = args.store_args.apply(Options {
        fsync: args.fsync,
        ..Options::default()
    });
    let store = crate::common::open_store(dir, options, args.store_args.create)?;
    let started = std::time::Instant::now();
    let pb = match stdin_len() {
        Some(len) => progress_bar(len, "importing", Counting::Bytes),
        None => spinner("importing", Counting::Lines),
    };
    let mut imp = Importer {
        store,
        acks: Acks::new(args.json),
        pb: pb.clone(),
        stop_on_error: args.stop_on_error,
        events: 0,
        failed_lines: 0,
    };
    let mut reader = BufReader::with_capacity(256 * 1024, io::stdin().lock());
    let mut pending: Vec<Line> = Vec::new();
    let mut buf = Vec::new();
    let (mut number, mut bytes_read) = (0u64, 0u64);
    loop {
        // Append what is pending before a read that would wait for input: a slow producer
        // then gets its acknowledgements without waiting for a batch to fill.
        if !pending.is_empty() && !reader.buffer().contains(&b'\n') {
            imp.flush(&mut pending)?;
        }
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Fail::io("reading stdin", e))?;
        if n == 0 {
            break;
        }
        number += 1;
        bytes_read += n as u64;
        if pb.length().is_some() {
            pb.set_position(bytes_read);
            if number.is_multiple_of(1024) {
                pb.set_message(counted(imp.events, "event"));
            }
        } else {
            pb.set_position(number);
        }
        let parsed = std::str::from_utf8(&buf)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|text| {
                if text.trim().is_empty() {
                    Ok(None)
                } else {
                    parse_line(text).map(Some)
                }
            });
        let (stream, expected, event) = match parsed {
            Ok(Some(line)) => line,
            Ok(None) => continue,
            Err(why) => {
                // Lines before the bad one go in first, as they would without batching.
                if args.stop_on_error {
                    imp.flush(&mut pending)?;
                }
                imp.failed(&format!("line {number}"), 1, &(exit::FAILURE, why))?;
                continue;
            }
        };
        let starts_batch = pending.first().is_some_and(|p| p.stream != stream)
            || expected.is_some()
            || pending.len() >= args.batch;
        if starts_batch {
            imp.flush(&mut pending)?;
        }
        pending.push(Line {
            number,
            stream,
            expected,
            event,
        });
        if pending.len() >= args.batch {
            imp.flush(&mut pending)?;
        }
    }
    imp.flush(&mut pending)?;
    pb.finish_and_clear();
    imp.acks.flush()?;
    imp.store.close()?;
    if imp.failed_lines > 0 {
        // The good lines are stored; the status says that not every line was.
        return Err(Fail::exit(
            exit::SOME_LINES_FAILED,
            format!(
                "imported {}; {} failed",
                plural(imp.events, "event"),
                plural(imp.failed_lines, "line")
            ),
        ));
    }
    // The acknowledgements are on stdout: the summary goes with the progress, on stderr.
    crate::warn(&format!(
        "imported {}",
        rate_summary(imp.events, "event", started.elapsed())
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let (stream, expected, e) = parse_line(
            r#"{"stream":"s-1","type":"T","data":{"a": [1, 2]},"metadata":null,"id":"0190a5e4-7c3b-7d2e-8f41-2b6c9d0e1f23","expected_version":3}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stream, "s-1");
        assert_eq!(expected, Some(ExpectedVersion::Exact(3)));
        assert_eq!(&e.payload[..], br#"{"a": [1, 2]}"#);
        assert!(e.metadata.is_empty());
        assert!(e.id.is_some());
        let (_, expected, e) = parse_line(
            r#"{"stream":"s","type":"T","data_b64":"AAE=","expected_version":"no-stream"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(expected, Some(ExpectedVersion::NoStream));
        assert_eq!(&e.payload[..], &[0, 1]);
        for bad in [
            "[1]",
            "{",
            r#"{"type":"T"}"#,
            r#"{"stream":1,"type":"T"}"#,
            r#"{"stream":"\ud800","type":"T"}"#,
            r#"{"stream":"s","type":"T","data":1,"data_b64":"AA=="}"#,
            r#"{"stream":"s","type":"T","id":"nope"}"#,
            r#"{"stream":"s","type":"T","expected_version":"soon"}"#,
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
        let Err(why) = parse_line(r#"{"stream":"a\ud800b","type":"T"}"#) else {
            panic!("a lone surrogate is no stream name");
        };
        assert!(
            why.contains("\"stream\" is not valid Unicode text"),
            "{why}"
        );
    }
}
