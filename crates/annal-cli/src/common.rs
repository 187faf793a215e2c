//! What every command shares: the error type, finding and opening a store, argument parsers
//! and progress bars.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

use annal::{ExpectedVersion, FsyncPolicy, Options, Store};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where commands look for a store when `--dir` is not given.
pub const DEFAULT_DIR: &str = "./annal-data";

/// Why a command failed.
#[derive(Debug)]
pub enum Fail {
    /// The reader of stdout went away (`annal read-all | head`): stop quietly.
    BrokenPipe,
    /// Printed as one line on stderr; the process exits with this status.
    Exit(u8, String),
}

/// The result of a command.
pub type CliResult<T = ()> = Result<T, Fail>;

impl Fail {
    /// A failure with this message, flattened to one line; the process exits with 1.
    pub fn msg(message: impl Into<String>) -> Fail {
        Fail::exit(exit::FAILURE, message)
    }

    /// A failure with its own exit status (`verify`'s verdicts).
    pub fn exit(code: u8, message: impl Into<String>) -> Fail {
        let m: String = message.into();
        // One line on stderr, whatever a reason or file name contains.
        Fail::Exit(code, m.replace(['\n', '\r'], " "))
    }

    /// The same failure, its message prefixed with where it happened.
    pub fn context(self, prefix: &str) -> Fail {
        match self {
            Fail::Exit(code, m) => Fail::Exit(code, format!("{prefix}: {m}")),
            other => other,
        }
    }

    /// An I/O failure while doing `what`; a closed stdout becomes [`Fail::BrokenPipe`].
    pub fn io(what: impl std::fmt::Display, e: io::Error) -> Fail {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Fail::BrokenPipe
        } else {
            Fail::msg(format!("{what}: {e}"))
        }
    }
}

/// The exit statuses, so that a script can tell a retry from a stop (README, "Exit status").
pub mod exit {
    /// Any other failure: invalid input, a missing store, a read-only store.
    pub const FAILURE: u8 = 1;
    // 2: the command line does not parse (clap's own status).
    /// Damaged or lost data: an open refused the store, or `verify` found damage.
    pub const DAMAGED: u8 = 3;
    /// `verify` found only what an open fixes by itself.
    pub const REPAIRABLE: u8 = 4;
    /// An expected version did not match: reread and retry.
    pub const CONFLICT: u8 = 5;
    /// Another process has the store open for writing: retry later.
    pub const LOCKED: u8 = 6;
    /// A file could not be read, written or synced (a full disk, permissions, a failed
    /// `fdatasync` that poisoned the store).
    pub const IO: u8 = 7;
    /// `import` stored the good lines but some lines failed.
    pub const SOME_LINES_FAILED: u8 = 8;
    /// The stream was hard-deleted: it takes no appends or metadata changes.
    pub const DELETED: u8 = 9;
}

/// The exit status a library error calls for.
pub fn exit_status(e: &annal::Error) -> u8 {
    use annal::Error as E;
    match e {
        E::Corruption { .. } => exit::DAMAGED,
        E::WrongExpectedVersion { .. } | E::AppendConditionFailed { .. } => exit::CONFLICT,
        E::StreamDeleted { .. } => exit::DELETED,
        E::Locked { .. } => exit::LOCKED,
        E::Io { .. } | E::Poisoned { .. } => exit::IO,
        _ => exit::FAILURE,
    }
}

impl From<annal::Error> for Fail {
    fn from(e: annal::Error) -> Self {
        Fail::exit(exit_status(&e), e.to_string())
    }
}

/// The store directory: `--dir`, or [`DEFAULT_DIR`].
pub fn dir_or_default(dir: Option<&Path>) -> PathBuf {
    dir.map_or_else(|| PathBuf::from(DEFAULT_DIR), Path::to_path_buf)
}

/// Checks that `dir` holds a store, so that reading commands never create one by mistake
/// ([`Store::open`] creates a store wherever it is pointed).
pub fn check_store_dir(dir: &Path) -> CliResult {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Fail::msg(format!(
                "no store at {}: the directory does not exist",
                dir.display()
            )));
        }
        Err(e) => return Err(Fail::io(format!("cannot read {}", dir.display()), e)),
    };
    let is_store = entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name == "LOCK" || name.ends_with(".seg")
    });
    if is_store {
        Ok(())
    } else {
        Err(Fail::msg(format!(
            "no annal store in {} (it has no segment files)",
            dir.display()
        )))
    }
}

/// A flag that SIGINT or SIGTERM sets, so that a long-running command ends its loop and
/// closes the store cleanly instead of being killed.
pub fn stop_flag() -> CliResult<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))
            .map_err(|e| Fail::io("installing a signal handler", e))?;
    }
    Ok(stop)
}

/// Opens the store that must already exist in `dir`.
pub fn open_existing(dir: &Path, options: Options) -> CliResult<Store> {
    check_store_dir(dir)?;
    open_store(dir, options, false)
}

/// Opens the store in `dir`, or creates one in a new or empty directory (or, with
/// `create`, in one that holds other files), warning on stderr when others can read its
/// files.
pub fn open_store(dir: &Path, options: Options, create: bool) -> CliResult<Store> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(Fail::msg(format!(
                "{} is a file, not a store directory",
                dir.display()
            )));
        }
        Ok(_) if !create => {
            let entries: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| Fail::io(format!("cannot read {}", dir.display()), e))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let is_store = entries
                .iter()
                .any(|n| n == "LOCK" || n == "STATE" || n.ends_with(".seg"));
            if !entries.is_empty() && !is_store {
                return Err(Fail::msg(format!(
                    "{} is not an annal store and not empty ({}): give a new or empty \
                     directory, or --create to make a store there anyway",
                    dir.display(),
                    plural(entries.len(), "file")
                )));
            }
        }
        _ => {}
    }
    let store = Store::open(dir, options)?;
    let exposed = &store.recovery_report().readable_by_others;
    if let Some(first) = exposed.first() {
        crate::warn(&format!(
            "warning: other users can read this store ({} of its files and directories, first \
             {}); `chmod -R go-rwx {}` makes it private",
            exposed.len(),
            first.display(),
            dir.display()
        ));
    }
    Ok(store)
}

/// A size in bytes: a number, optionally with `K`, `M` or `G` (powers of 1024), such as
/// `64M`.
///
/// # Errors
///
/// A message saying what is wrong.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => {
            return Err(format!(
                "{s:?}: a size is a number of bytes, optionally with K, M or G"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: a size is a number of bytes, optionally with K, M or G"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// What a writing command may say about the store it opens or creates.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct StoreArgs {
    /// Create the store even in a directory that holds other files (without it, a writing
    /// command creates a store only in a new or empty directory).
    #[arg(long)]
    pub create: bool,
    /// Size of segment files created from now on (existing ones keep theirs), such as 64M.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub segment_size: Option<u64>,
    /// Largest event accepted (payload plus metadata), such as 64M [default: 16M].
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_event_size: Option<u64>,
}

impl StoreArgs {
    /// `options` with these sizes.
    pub fn apply(self, mut options: Options) -> Options {
        if let Some(n) = self.segment_size {
            options.segment_size = n;
        }
        if let Some(n) = self.max_event_size {
            options.max_event_size = usize::try_from(n).unwrap_or(usize::MAX);
        }
        options
    }
}

/// A durability policy: `always`, `never`, `interval:MS` or `every:N`.
///
/// # Errors
///
/// A message saying what is wrong.
pub fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    let positive = |n: &str, what: &str| -> Result<u64, String> {
        match n.parse::<u64>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(format!("{what} must be a whole number above 0, not {n:?}")),
        }
    };
    match s {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        _ => {
            if let Some(ms) = s.strip_prefix("interval:") {
                Ok(FsyncPolicy::Interval(Duration::from_millis(positive(
                    ms,
                    "the interval in milliseconds",
                )?)))
            } else if let Some(n) = s.strip_prefix("every:") {
                Ok(FsyncPolicy::EveryEvents(positive(
                    n,
                    "the number of events",
                )?))
            } else {
                Err(format!(
                    "unknown fsync policy {s:?}: use always, never, interval:MS or every:N"
                ))
            }
        }
    }
}

/// Names a policy the way [`parse_fsync`] reads it.
pub fn fsync_name(p: FsyncPolicy) -> String {
    match p {
        FsyncPolicy::Always => "always".into(),
        FsyncPolicy::Never => "never".into(),
        FsyncPolicy::Interval(d) => format!("interval:{}", d.as_millis()),
        FsyncPolicy::EveryEvents(n) => format!("every:{n}"),
    }
}

/// Parses `any`, `no-stream`, `exists` or a version number.
pub fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    match s {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        _ => s.parse::<u64>().map(ExpectedVersion::Exact).map_err(|_| {
            format!("expected version {s:?}: use any, no-stream, exists or a version number")
        }),
    }
}

/// Parses an event id: a UUID (`8-4-4-4-12` hex digits) or 32 hex digits.
pub fn parse_uuid(s: &str) -> Result<u128, String> {
    let groups: Vec<&str> = s.split('-').collect();
    let shape_ok = match groups.len() {
        1 => s.len() == 32,
        5 => groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]),
        _ => false,
    };
    let hex: String = groups.concat();
    if !shape_ok || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "id {s:?} is not a UUID (like 0190a5e4-7c3b-7d2e-8f41-2b6c9d0e1f23)"
        ));
    }
    u128::from_str_radix(&hex, 16).map_err(|e| format!("id {s:?}: {e}"))
}

/// Formats an event id as a lowercase hyphenated UUID.
pub fn format_uuid(id: u128) -> String {
    let h = format!("{id:032x}");
    // Safe slicing: `h` is exactly 32 ASCII hex digits.
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or_default(),
        h.get(8..12).unwrap_or_default(),
        h.get(12..16).unwrap_or_default(),
        h.get(16..20).unwrap_or_default(),
        h.get(20..32).unwrap_or_default()
    )
}

/// Checks that an argument is JSON; returns it unchanged, so what is stored is what was typed.
pub fn parse_json(s: &str) -> Result<String, String> {
    serde_json::from_str::<&serde_json::value::RawValue>(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("not valid JSON: {e}"))
}

/// What a progress bar counts, for its labels and its rate.
#[derive(Debug, Clone, Copy)]
pub enum Counting {
    /// Events: "1,234/10,000 events (5,678 events/s)".
    Events,
    /// Lines of input, for a spinner with no end.
    Lines,
    /// Bytes of input: "1.2 MiB/10 MiB (3.4 MiB/s)".
    Bytes,
    /// Segments: "3/12 segments (1 segments/s)".
    Segments,
}

/// A progress bar on stderr when it is a terminal, hidden otherwise (pipes, CI, tests).
pub fn progress_bar(len: u64, what: &str, counting: Counting) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(style(
        bar_template(counting),
        counting,
        ProgressStyle::default_bar(),
    ));
    pb.set_message(what.to_string());
    pb
}

/// A spinner with a count on stderr when it is a terminal, for work of unknown length.
pub fn spinner(what: &str, counting: Counting) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    pb.set_style(style(
        SPINNER_TEMPLATE,
        counting,
        ProgressStyle::default_spinner(),
    ));
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

const SPINNER_TEMPLATE: &str = "{spinner} {msg} {human_pos} {unit} ({rate})";

fn bar_template(counting: Counting) -> &'static str {
    match counting {
        Counting::Bytes => {
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta} left)"
        }
        Counting::Events | Counting::Lines | Counting::Segments => {
            "{msg:>14} [{bar:30}] {human_pos}/{human_len} {unit} ({rate}, {eta} left)"
        }
    }
}

/// `template` with `{unit}` and `{rate}` ("5,678 events/s": indicatif's own `{per_sec}`
/// has no unit and four decimals).
fn style(template: &str, counting: Counting, fallback: ProgressStyle) -> ProgressStyle {
    let unit = match counting {
        Counting::Events => "events",
        Counting::Lines => "lines",
        Counting::Bytes => "bytes",
        Counting::Segments => "segments",
    };
    match ProgressStyle::with_template(template) {
        Ok(s) => s
            .progress_chars("=> ")
            .with_key(
                "unit",
                move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(unit);
                },
            )
            .with_key(
                "rate",
                move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let per_sec = state.per_sec();
                    let whole = if per_sec.is_finite() && per_sec > 0.0 {
                        // Rounded to a whole count; the cast saturates.
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let n = per_sec.round() as u64;
                        n
                    } else {
                        0
                    };
                    let _ = write!(w, "{} {unit}/s", thousands(whole));
                },
            ),
        Err(_) => fallback,
    }
}

/// One line for the end of a run: "12,345 events in 1.2 s (10,288 events/s)", of `count`
/// things called `what` (singular).
pub fn rate_summary(count: u64, what: &str, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return counted(count, what);
    }
    // Display only: the rate is rounded and the cast saturates.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rate = (count as f64 / secs).round() as u64;
    format!(
        "{} in {secs:.1} s ({} {what}s/s)",
        counted(count, what),
        thousands(rate)
    )
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 problem`, `2 problems`.
pub fn plural(n: impl TryInto<u64>, what: &str) -> String {
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// `1 event`, `1,200 events`.
pub fn counted(n: u64, what: &str) -> String {
    format!("{} {what}{}", thousands(n), if n == 1 { "" } else { "s" })
}

/// A duration in the unit that reads best: µs, ms or s.
pub fn human_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_templates_parse_and_summaries_have_units() {
        for t in [
            SPINNER_TEMPLATE,
            bar_template(Counting::Bytes),
            bar_template(Counting::Events),
        ] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
        assert_eq!(
            rate_summary(12_345, "event", Duration::from_millis(2000)),
            "12,345 events in 2.0 s (6,173 events/s)"
        );
        assert_eq!(rate_summary(1, "event", Duration::ZERO), "1 event");
    }

    #[test]
    fn uuids_round_trip() {
        let s = "0190a5e4-7c3b-7d2e-8f41-2b6c9d0e1f23";
        assert_eq!(parse_uuid(s).map(format_uuid), Ok(s.to_string()));
        assert_eq!(
            parse_uuid("0190A5E47C3B7D2E8F412B6C9D0E1F23").map(format_uuid),
            Ok(s.to_string())
        );
        for bad in [
            "",
            "xyz",
            "0190a5e4-7c3b-7d2e-8f412b6c9d0e1f23",
            "+190a5e47c3b7d2e8f412b6c9d0e1f23",
        ] {
            assert!(parse_uuid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policies_and_versions() {
        assert_eq!(parse_fsync("every:10"), Ok(FsyncPolicy::EveryEvents(10)));
        assert_eq!(
            parse_fsync("interval:5"),
            Ok(FsyncPolicy::Interval(Duration::from_millis(5)))
        );
        assert!(parse_fsync("every:0").is_err());
        assert!(parse_fsync("sometimes").is_err());
        assert_eq!(parse_expected("7"), Ok(ExpectedVersion::Exact(7)));
        assert_eq!(parse_expected("no-stream"), Ok(ExpectedVersion::NoStream));
        assert!(parse_expected("-1").is_err());
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
