//! Beyond one machine (feature `nats`): the [`Relay`] publishes every position of a store's
//! log, in order, to a NATS JetStream stream; a [`Replica`] builds a store of its own from
//! that stream alone, event for event the same.
//!
//! This layer sits beside the facade: it reads the log through the engine (every position,
//! erased runs included) and writes a replica through the engine's import, which checks
//! positions and versions again under the writer lock.

mod message;
mod relay;
mod replica;

pub use relay::{Relay, RelayOptions, RelayProgress, RelayReport};
pub use replica::{Replica, ReplicaOptions, ReplicaReport};

use async_nats::jetstream;

use crate::error::{Error, Result};

/// A failure of a relay's or replica's session: one to start again after, or one to stop at.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The connection or the server (a lost leader, a timeout): start again from what
    /// JetStream holds.
    Transient(String),
    /// Going on would break an ordering or lose an event.
    Fatal(Error),
}

pub(crate) fn transient(why: String) -> Fault {
    Fault::Transient(why)
}

pub(crate) fn failed(js_stream: &str, reason: String) -> Error {
    Error::Replication {
        js_stream: js_stream.to_string(),
        sequence: 0,
        reason,
    }
}

pub(crate) fn fatal(js_stream: &str, sequence: u64, reason: String) -> Fault {
    Fault::Fatal(Error::Replication {
        js_stream: js_stream.to_string(),
        sequence,
        reason,
    })
}

/// A subject prefix must be one or more tokens of a subject, with no wildcard.
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    let bad = prefix.is_empty()
        || prefix
            .split('.')
            .any(|t| t.is_empty() || t.contains(['*', '>']) || t.chars().any(char::is_whitespace));
    if bad {
        return Err(Error::InvalidArgument(format!(
            "subject prefix {prefix:?}: give one or more dot-separated tokens, without wildcards or spaces"
        )));
    }
    Ok(())
}

/// Connects to the servers of `url` (comma-separated) as `name`, for JetStream, with room
/// for `in_flight` publishes waiting for their acknowledgements (the client's own limit
/// would otherwise hold a publish back while the relay waits to send it).
pub(crate) async fn connect(
    url: &str,
    js_stream: &str,
    name: &str,
    in_flight: usize,
) -> Result<jetstream::Context> {
    let servers: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::InvalidArgument(format!("NATS URL {url:?}: {e}")))?;
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connect(servers)
        .await
        .map_err(|e| failed(js_stream, format!("cannot connect to NATS at {url}: {e}")))?;
    Ok(jetstream::ContextBuilder::new()
        .timeout(std::time::Duration::from_secs(5))
        .max_ack_inflight(in_flight.saturating_add(16))
        .backpressure_on_inflight(true)
        .build(client))
}
