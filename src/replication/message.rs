//! The relay's messages, built from the log and read back by a replica: the layout is in
//! `engine::format::relay_message` (and FORMAT.md); this module puts it into NATS's types.

use async_nats::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;

use crate::engine::format::frame::ErasedPart;
use crate::engine::format::relay_message as m;
use crate::event::{EventData, RecordedEvent};

/// A message to publish: subject, headers and payload.
pub(crate) struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// `Nats-Msg-Id` of the message whose (first) position is `position`.
pub(crate) fn msg_id(prefix: &str, position: u64) -> String {
    format!("{prefix}:{position}")
}

/// The message of one event; `commit_end` on the last event of its commit (its frame).
pub(crate) fn event(prefix: &str, e: &RecordedEvent, commit_end: bool) -> Outgoing {
    let mut h = HeaderMap::new();
    h.insert(m::MSG_ID, msg_id(prefix, e.position));
    h.insert(m::POSITION, e.position.to_string());
    let stream = m::token(&e.stream);
    h.insert(m::STREAM, stream.as_str());
    h.insert(m::VERSION, e.version.to_string());
    h.insert(m::TYPE, m::token(&e.event_type));
    if let Some(id) = e.id {
        h.insert(m::ID, format!("{id:032x}"));
    }
    h.insert(m::TIMESTAMP, e.timestamp.to_string());
    if !e.metadata.is_empty() {
        h.insert(
            m::METADATA,
            base64::engine::general_purpose::STANDARD.encode(&e.metadata),
        );
    }
    if !e.tags.is_empty() {
        h.insert(m::TAGS, m::tags_value(e.tags.iter()));
    }
    if !commit_end {
        h.insert(m::COMMIT_MORE, "1");
    }
    Outgoing {
        subject: format!("{prefix}.{stream}"),
        headers: h,
        payload: e.payload.clone(),
    }
}

/// The message of a run of erased events from `first_position` on.
pub(crate) fn erased(prefix: &str, first_position: u64, parts: &[ErasedPart]) -> Outgoing {
    let n: u64 = parts.iter().map(|p| u64::from(p.count)).sum();
    let mut h = HeaderMap::new();
    h.insert(m::MSG_ID, msg_id(prefix, first_position));
    h.insert(m::POSITION, first_position.to_string());
    h.insert(m::ERASED, n.to_string());
    Outgoing {
        subject: format!("{prefix}.{}", m::ERASED_SUBJECT),
        headers: h,
        payload: Bytes::from(m::encode_erased(parts)),
    }
}

/// A message read back.
#[derive(Debug)]
pub(crate) enum Incoming {
    Event {
        position: u64,
        stream: String,
        version: u64,
        event: EventData,
        commit_end: bool,
    },
    Erased {
        first_position: u64,
        parts: Vec<ErasedPart>,
    },
}

impl Incoming {
    /// Its first position.
    pub(crate) fn position(&self) -> u64 {
        match self {
            Incoming::Event { position, .. } => *position,
            Incoming::Erased { first_position, .. } => *first_position,
        }
    }

    /// The position after its last one.
    pub(crate) fn end(&self) -> u64 {
        match self {
            Incoming::Event { position, .. } => position.saturating_add(1),
            Incoming::Erased {
                first_position,
                parts,
            } => parts.iter().fold(*first_position, |end, p| {
                end.saturating_add(u64::from(p.count))
            }),
        }
    }
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Result<&'h str, String> {
    h.get(name)
        .map(|v| v.as_str())
        .ok_or_else(|| format!("it has no {name} header"))
}

fn number(h: &HeaderMap, name: &str) -> Result<u64, String> {
    let v = header(h, name)?;
    v.parse()
        .map_err(|_| format!("its {name} header {v:?} is not a number"))
}

/// Reads a message a relay with subject prefix `prefix` published; the error says what is
/// wrong with it.
pub(crate) fn parse(
    prefix: &str,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &Bytes,
) -> Result<Incoming, String> {
    let h = headers.ok_or("it has no headers: not a message of annal's relay")?;
    let position = number(h, m::POSITION)?;
    // Positions leave room to count past them (no store gets near).
    if position == 0 || position > u64::MAX / 4 {
        return Err(format!("its position {position} is out of range"));
    }
    let id = header(h, m::MSG_ID)?;
    if id != msg_id(prefix, position) {
        return Err(format!(
            "its {} {id:?} is not {:?}: another relay's message",
            m::MSG_ID,
            msg_id(prefix, position)
        ));
    }
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(|| format!("its subject {subject:?} is not under {prefix}.>"))?;
    if h.get(m::ERASED).is_some() {
        if rest != m::ERASED_SUBJECT {
            return Err(format!("an erased run on subject {subject:?}"));
        }
        let n = number(h, m::ERASED)?;
        let parts = m::decode_erased(payload).map_err(str::to_owned)?;
        let listed: u64 = parts.iter().map(|p| u64::from(p.count)).sum();
        if listed != n || n > u64::MAX / 4 {
            return Err(format!("an erased run of {n} events lists {listed}"));
        }
        return Ok(Incoming::Erased {
            first_position: position,
            parts,
        });
    }
    let token = header(h, m::STREAM)?;
    if token != rest {
        return Err(format!(
            "its {} header {token:?} is not its subject's {rest:?}",
            m::STREAM
        ));
    }
    let stream = m::untoken(token).ok_or_else(|| format!("bad stream token {token:?}"))?;
    let version = number(h, m::VERSION)?;
    if version == 0 {
        return Err("its version is 0".into());
    }
    let type_token = header(h, m::TYPE)?;
    let event_type =
        m::untoken(type_token).ok_or_else(|| format!("bad event type token {type_token:?}"))?;
    let mut event =
        EventData::new(event_type, payload.clone()).with_timestamp(number(h, m::TIMESTAMP)?);
    if let Some(id) = h.get(m::ID) {
        let id = u128::from_str_radix(id.as_str(), 16)
            .map_err(|_| format!("its {} header {:?} is not hex", m::ID, id.as_str()))?;
        event = event.with_id(id);
    }
    if let Some(meta) = h.get(m::METADATA) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(meta.as_str())
            .map_err(|_| format!("its {} header is not base64", m::METADATA))?;
        event = event.with_metadata(bytes);
    }
    if let Some(tags) = h.get(m::TAGS) {
        let tags = m::tags_of(tags.as_str())
            .ok_or_else(|| format!("bad {} header {:?}", m::TAGS, tags.as_str()))?;
        event = event.with_tags(tags);
    }
    Ok(Incoming::Event {
        position,
        stream,
        version,
        event,
        commit_end: h.get(m::COMMIT_MORE).is_none(),
    })
}
