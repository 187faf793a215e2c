//! `annal`: the command-line tool of the annal event store.
//!
//! Every command works on one store directory (`--dir`, default `./annal-data`). Results go to
//! stdout, as a table or, with `--json`, as JSON lines; an error is one line on stderr, with
//! an exit status per kind of failure (`common::exit`, and the README's table).

mod bench;
mod cart;
mod common;
mod demo;
mod inspect;
mod lifecycle;
mod output;
mod replication;
mod verify;
mod write;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use annal::{ExpectedVersion, FsyncPolicy};
use clap::{Parser, Subcommand};

use crate::common::{
    CliResult, Fail, dir_or_default, parse_expected, parse_fsync, parse_json, parse_uuid,
};

/// annal: an embedded, append-only event store.
#[derive(Debug, Parser)]
#[command(name = "annal", version, about, long_about = None)]
struct Cli {
    /// The store directory [default: ./annal-data; for bench and demo, a temporary one].
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Print JSON lines instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Append one event to a stream; prints where it landed (with --json,
    /// {"stream","version","position"}).
    Append {
        /// The stream.
        stream: String,
        /// The event type, such as ItemAdded.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: String,
        /// The payload, as JSON.
        #[arg(long, value_name = "JSON", value_parser = parse_json, conflicts_with = "data_file")]
        data: Option<String>,
        /// A file whose bytes are the payload (any bytes; - for stdin).
        #[arg(long, value_name = "FILE")]
        data_file: Option<PathBuf>,
        /// Metadata, as JSON.
        #[arg(long, value_name = "JSON", value_parser = parse_json)]
        metadata: Option<String>,
        /// An event id (a UUID). Retrying this same append (same id, type and data) when it
        /// is still the stream's last, or with the same --expected-version, writes nothing and
        /// prints "deduplicated": true; the same id with other content is an error. See the
        /// README for what is not detected.
        #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
        id: Option<u128>,
        /// The stream's version the append requires: any, no-stream, exists or a number.
        #[arg(long, value_name = "VERSION", value_parser = parse_expected, default_value = "any")]
        expected_version: ExpectedVersion,
        #[command(flatten)]
        store_args: common::StoreArgs,
    },
    /// Append JSON lines from stdin, printing each event's position once acknowledged.
    ///
    /// Each line: {"stream","type","data"}, optionally "metadata", "id" (a UUID), "tags" (an
    /// array of strings),
    /// "timestamp" (microseconds since the Unix epoch, kept instead of the time of the import)
    /// and "expected_version" (of the append the line starts); "data_b64"/"metadata_b64"
    /// carry bytes that aren't JSON. Other keys are ignored, so `read-all --json` output
    /// imports back as it was: a backup.
    /// Prints a row per event (with --json, {"stream","version","position"}), flushed as soon
    /// as its append was acknowledged. A line that fails is reported on stderr with its number, and the import
    /// goes on; it then ends with a summary and exit status 8.
    Import {
        /// When appends are synced: always, never, interval:MS or every:N.
        #[arg(long, value_name = "POLICY", value_parser = parse_fsync, default_value = "always")]
        fsync: FsyncPolicy,
        /// Append up to N consecutive lines of the same stream as one atomic frame (when the
        /// store refuses one, its lines are appended one by one, so only those at fault fail).
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        batch: u64,
        /// Stop at the first line that fails (with that failure's exit status) instead of
        /// reporting it and going on.
        #[arg(long)]
        stop_on_error: bool,
        #[command(flatten)]
        store_args: common::StoreArgs,
    },
    /// Print the events of one stream.
    Read {
        /// The stream.
        stream: String,
        /// First version [default: 1, or the last one with --backward].
        #[arg(long, value_name = "VERSION")]
        from: Option<u64>,
        /// Newest first.
        #[arg(long)]
        backward: bool,
        /// At most N events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Print every event of the store, in position order.
    ReadAll {
        /// First position [default: 1, or the last one with --backward].
        #[arg(long, value_name = "POSITION")]
        from: Option<u64>,
        /// Newest first.
        #[arg(long)]
        backward: bool,
        /// At most N events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Follow events as they are appended, until interrupted (Ctrl-C).
    ///
    /// Prints the history from --from, then waits for new events. It holds the store's lock
    /// while it runs (annal allows one process per store): other processes can't append
    /// meanwhile.
    Tail {
        /// Start at this position (with --stream: version) [default: after the last event,
        /// waiting for new ones]. Works beside a running writer: tail takes no lock.
        #[arg(long, value_name = "POSITION")]
        from: Option<u64>,
        /// Only this stream.
        #[arg(long, value_name = "STREAM", conflicts_with = "prefix")]
        stream: Option<String>,
        /// Only streams whose names start with this.
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
    },
    /// List the streams with their versions.
    Streams {
        /// Only streams whose names start with this.
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
    },
    /// Counters: events, streams, segments, bytes, snapshots, subscriptions, index memory,
    /// and what a scavenge would erase.
    Stats,
    /// Delete a stream: soft (it reads as empty; a later append continues its versions) or,
    /// with --hard, for good (a tombstone: every later append or metadata change fails,
    /// exit status 9). Its events stay in the files until `annal scavenge`.
    Delete {
        /// The stream.
        stream: String,
        /// A tombstone: the stream takes no more appends, ever.
        #[arg(long)]
        hard: bool,
        /// The stream's version the delete requires: any, no-stream, exists or a number.
        #[arg(long, value_name = "VERSION", value_parser = parse_expected, default_value = "any")]
        expected_version: ExpectedVersion,
    },
    /// Print a stream's metadata, or set it with --set.
    ///
    /// The JSON has max_count (keep the newest N events), max_age (seconds: keep events at
    /// most this old), truncate_before (keep versions from this one on), and custom (your
    /// own text) or custom_b64 (your own bytes); a key left out is not set. Printed, it also
    /// has "version", the metadata's own version, which --expected-version of the next --set
    /// can name, and "deleted" after a hard delete.
    Metadata {
        /// The stream.
        stream: String,
        /// Replace the stream's metadata with this JSON, such as '{"max_count":100}'.
        #[arg(long, value_name = "JSON")]
        set: Option<String>,
        /// With --set: the metadata's version it requires (any, no-stream or a number).
        #[arg(long, value_name = "VERSION", value_parser = parse_expected, default_value = "any",
              requires = "set")]
        expected_version: ExpectedVersion,
    },
    /// Erase what stream metadata hides (deleted streams, truncated, too many or too old
    /// events, replaced metadata) from the files, giving the disk space back.
    ///
    /// It runs while nothing else has the store open for writing, with a progress bar, and
    /// reports what it erased. Interrupted (Ctrl-C, a crash), it leaves every segment as it
    /// was or rewritten: run it again to finish.
    Scavenge,
    /// Publish every event of the log, in order, to a NATS JetStream stream (created if
    /// missing), until SIGINT or SIGTERM; its progress and lag go to stderr every 5 s, and
    /// its durable subscription (--name) shows the lag in `annal stats`. Beside a process
    /// that writes the store, it follows that writer.
    Relay {
        /// NATS servers, comma-separated, such as nats://127.0.0.1:4222.
        #[arg(long, value_name = "URL")]
        nats_url: String,
        /// The JetStream stream.
        #[arg(long, value_name = "NAME")]
        js_stream: String,
        /// Subjects are PREFIX.<stream>; the JetStream stream takes PREFIX.>.
        #[arg(long, value_name = "PREFIX")]
        subject_prefix: String,
        /// The durable subscription recording what JetStream acknowledged.
        #[arg(long, value_name = "N", default_value = "relay")]
        name: String,
        /// Replicas of the JetStream stream, when the relay creates it.
        #[arg(long, value_name = "R", default_value_t = 1)]
        replicas: usize,
        /// Messages published and not yet acknowledged, at most.
        #[arg(long, value_name = "N", default_value_t = 4096)]
        max_in_flight: usize,
        /// Only events of this type (repeat for several): a relay of part of the log, for
        /// consumers; no replica can be built from it.
        #[arg(long = "event-type", value_name = "TYPE")]
        event_types: Vec<String>,
        /// Only events carrying this tag (repeat: all of them), as --event-type.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Build (or bring up to date) a read-only replica in --dir from a relay's JetStream
    /// stream; with --follow, keep applying new messages until SIGINT or SIGTERM.
    /// Applications read the replica (as followers: `annal tail`, `Store::open_follower`);
    /// only the replication writes to it.
    Replica {
        /// NATS servers, comma-separated.
        #[arg(long, value_name = "URL")]
        nats_url: String,
        /// The relay's JetStream stream.
        #[arg(long, value_name = "NAME")]
        js_stream: String,
        /// Keep following the stream.
        #[arg(long)]
        follow: bool,
        /// When the replica's writes are synced: always, never, interval:MS or every:N.
        #[arg(long, value_name = "POLICY", value_parser = parse_fsync, default_value = "always")]
        fsync: FsyncPolicy,
    },
    /// Check every checksum and invariant of the store's files, changing nothing.
    ///
    /// Exit status: 0 healthy; 3 synced data damaged or lost (opens refuse the store: see
    /// `repair`); 4 only torn tails or damaged rebuildable files (an open fixes them by
    /// itself); 1 verify could not run.
    Verify,
    /// Fix what verify found: rebuildable files and torn tails; with --accept-loss, cut the
    /// log at the first damage in synced data, after copying it to a quarantine folder.
    ///
    /// Without --accept-loss it changes nothing that holds events and says what it would
    /// cut. Exit status as for verify, of the store as the repair leaves it.
    Repair {
        /// Cut the log at the first damage in synced data (every byte cut is copied to
        /// DIR/quarantine-TIME/ first, with a report of the positions and streams lost).
        #[arg(long)]
        accept_loss: bool,
    },
    /// Measure annal on this machine, in a temporary directory.
    Bench {
        /// Events to append.
        #[arg(long, value_name = "N", default_value_t = 1_000_000,
              value_parser = clap::value_parser!(u64).range(1..))]
        events: u64,
        /// Payload size in bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 200)]
        payload: usize,
        /// Streams the events are spread over (order-0, order-1, ...).
        #[arg(long, value_name = "S", default_value_t = 10_000,
              value_parser = clap::value_parser!(u64).range(1..))]
        streams: u64,
        /// Events per append.
        #[arg(long, value_name = "B", default_value_t = 100,
              value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        batch: u64,
        /// When appends are synced: always, never, interval:MS or every:N.
        #[arg(long, value_name = "POLICY", value_parser = parse_fsync, default_value = "never")]
        fsync: FsyncPolicy,
    },
    /// The shopping-cart example end to end: commands, snapshots, a projection, timings.
    Demo {
        /// When appends are synced: always, never, interval:MS or every:N.
        #[arg(long, value_name = "POLICY", value_parser = parse_fsync, default_value = "always")]
        fsync: FsyncPolicy,
        /// Keep the temporary store at the end and say where it is (a --dir is always kept).
        #[arg(long)]
        keep: bool,
    },
}

/// Prints a message on stderr as one line; a failure to write to stderr has nowhere to go.
pub fn warn(message: &str) {
    // Also a command's closing summary: anything on stderr is prefixed alike.
    let _ = writeln!(std::io::stderr(), "annal: {message}");
}

fn run(cli: Cli) -> CliResult {
    let dir = dir_or_default(cli.dir.as_deref());
    let json = cli.json;
    match cli.command {
        Command::Append {
            stream,
            event_type,
            data,
            data_file,
            metadata,
            id,
            expected_version,
            store_args,
        } => write::append(
            &dir,
            write::AppendArgs {
                stream,
                event_type,
                data,
                data_file,
                metadata,
                id,
                expected: expected_version,
                store_args,
                json,
            },
        ),
        Command::Import {
            fsync,
            batch,
            stop_on_error,
            store_args,
        } => write::import(
            &dir,
            write::ImportArgs {
                fsync,
                batch: usize::try_from(batch).unwrap_or(usize::MAX),
                stop_on_error,
                store_args,
                json,
            },
        ),
        Command::Read {
            stream,
            from,
            backward,
            limit,
        } => inspect::read_stream(
            &dir,
            json,
            &stream,
            inspect::Range {
                from,
                backward,
                limit,
            },
        ),
        Command::ReadAll {
            from,
            backward,
            limit,
        } => inspect::read_all(
            &dir,
            json,
            inspect::Range {
                from,
                backward,
                limit,
            },
        ),
        Command::Tail {
            from,
            stream,
            prefix,
        } => inspect::tail(
            &dir,
            json,
            inspect::TailArgs {
                from,
                stream,
                prefix,
            },
        ),
        Command::Streams { prefix } => inspect::streams(&dir, json, prefix.as_deref()),
        Command::Stats => inspect::stats(&dir, json),
        Command::Delete {
            stream,
            hard,
            expected_version,
        } => lifecycle::delete(&dir, json, &stream, hard, expected_version),
        Command::Metadata {
            stream,
            set,
            expected_version,
        } => lifecycle::metadata(&dir, json, &stream, set.as_deref(), expected_version),
        Command::Scavenge => lifecycle::scavenge(&dir, json),
        Command::Relay {
            nats_url,
            js_stream,
            subject_prefix,
            name,
            replicas,
            max_in_flight,
            event_types,
            tags,
        } => replication::relay(
            &dir,
            json,
            replication::RelayArgs {
                nats_url,
                js_stream,
                subject_prefix,
                name,
                replicas,
                max_in_flight,
                event_types,
                tags,
            },
        ),
        Command::Replica {
            nats_url,
            js_stream,
            follow,
            fsync,
        } => replication::replica(&dir, json, nats_url, js_stream, follow, fsync),
        Command::Verify => verify::verify(&dir, json),
        Command::Repair { accept_loss } => verify::repair(&dir, json, accept_loss),
        Command::Bench {
            events,
            payload,
            streams,
            batch,
            fsync,
        } => bench::bench(
            cli.dir.as_deref(),
            json,
            bench::BenchArgs {
                events,
                payload,
                streams,
                batch,
                fsync,
            },
        ),
        Command::Demo { fsync, keep } => demo::demo(cli.dir.as_deref(), fsync, keep, json),
    }
}

/// `annal help --help` (and `-h`) shows the help, as `annal --help` does: clap's `help`
/// subcommand would call `--help` an unknown command.
fn help_for_help(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let asks_help = |a: &std::ffi::OsString| a == "--help" || a == "-h";
    // The command is the first word that is neither an option nor `--dir`'s value.
    let mut i = 1;
    while let Some(a) = args.get(i) {
        if a == "--dir" {
            i += 2;
        } else if a.to_string_lossy().starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    if args.get(i).is_some_and(|a| a == "help") && args.iter().skip(i + 1).any(asks_help) {
        args.truncate(i);
        args.push("--help".into());
    }
    args
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        warn(&format!("internal error: {info}").replace('\n', " "));
    }));
    let cli = Cli::parse_from(help_for_help(std::env::args_os().collect()));
    match run(cli) {
        Ok(()) | Err(Fail::BrokenPipe) => ExitCode::SUCCESS,
        Err(Fail::Exit(code, m)) => {
            warn(&m);
            ExitCode::from(code)
        }
    }
}
