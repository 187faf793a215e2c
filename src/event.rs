//! The values an application hands to and gets from the store.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// An event to append: its type, payload, optional metadata and optional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    /// The event's type, such as `"ItemAdded"`. Non-empty, at most
    /// [`MAX_EVENT_TYPE_LEN`](crate::MAX_EVENT_TYPE_LEN) bytes.
    pub event_type: String,
    /// The event's body, in whatever encoding the application uses.
    pub payload: Bytes,
    /// Free-form metadata (correlation ids, causation, user, ...).
    pub metadata: Bytes,
    /// An optional 128-bit id. Ids make retried appends idempotent; see
    /// [`Store::append`](crate::Store::append). A UUID is its `u128`
    /// (`uuid::Uuid::as_u128`, which `Uuid::from_u128` turns back): with feature `uuid`,
    /// [`EventData::with_uuid`] and [`RecordedEvent::uuid`] do that, and the CLI prints and
    /// reads ids in the same form, as `0190a5e4-7c3b-7d2e-8f41-2b6c9d0e1f23`.
    pub id: Option<u128>,
    /// When it happened, in microseconds since the Unix epoch (UTC); `None` (the default)
    /// stamps it with the time of the append. Give it to keep an event's original time, as
    /// restoring a backup does. The store does not need timestamps in order, and never
    /// looks at them.
    pub timestamp: Option<u64>,
    /// Tags: what the event is about beyond its stream (`"course:c1"`, `"student:s7"`), for
    /// reads and append conditions that select events by tag. Each 1 to
    /// [`MAX_TAG_LEN`](crate::MAX_TAG_LEN) bytes, at most
    /// [`MAX_TAGS`](crate::MAX_TAGS) per event, no tag twice.
    pub tags: Vec<String>,
}

/// Bytes for a payload or metadata: anything [`EventData::new`] and
/// [`EventData::with_metadata`] take. Owned bytes (`Vec<u8>`, `String`, [`Bytes`]) are
/// taken without a copy; borrowed ones (`&[u8]`, `b"..."`, `&str`), of any lifetime, are
/// copied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload(pub Bytes);

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload(b)
    }
}
impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(Bytes::from(v))
    }
}
impl From<String> for Payload {
    fn from(s: String) -> Self {
        Payload(Bytes::from(s))
    }
}
impl From<&[u8]> for Payload {
    fn from(b: &[u8]) -> Self {
        Payload(Bytes::copy_from_slice(b))
    }
}
impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(b: &[u8; N]) -> Self {
        Payload(Bytes::copy_from_slice(b))
    }
}
impl From<&str> for Payload {
    fn from(s: &str) -> Self {
        Payload(Bytes::copy_from_slice(s.as_bytes()))
    }
}
impl From<&String> for Payload {
    fn from(s: &String) -> Self {
        Payload(Bytes::copy_from_slice(s.as_bytes()))
    }
}
impl From<&Vec<u8>> for Payload {
    fn from(v: &Vec<u8>) -> Self {
        Payload(Bytes::copy_from_slice(v))
    }
}

impl EventData {
    /// An event with a type and a payload, no metadata and no id.
    ///
    /// ```
    /// use annal::EventData;
    /// let json = String::from(r#"{"sku":"A-1"}"#);
    /// let a = EventData::new("ItemAdded", b"{}");          // a byte string
    /// let b = EventData::new("ItemAdded", json.as_str());   // borrowed: copied
    /// let c = EventData::new("ItemAdded", json.clone());    // owned: not copied
    /// assert_eq!(b.payload, c.payload);
    /// # let _ = a;
    /// ```
    pub fn new(event_type: impl Into<String>, payload: impl Into<Payload>) -> Self {
        EventData {
            event_type: event_type.into(),
            payload: payload.into().0,
            metadata: Bytes::new(),
            id: None,
            timestamp: None,
            tags: Vec::new(),
        }
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: impl Into<Payload>) -> Self {
        self.metadata = metadata.into().0;
        self
    }

    /// Sets the event id.
    pub fn with_id(mut self, id: u128) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the tags (a tag given twice is kept once), replacing any set before.
    ///
    /// ```
    /// use annal::EventData;
    /// let e = EventData::new("StudentSubscribed", "{}").with_tags(["course:c1", "student:s7"]);
    /// assert_eq!(e.tags, ["course:c1", "student:s7"]);
    /// ```
    pub fn with_tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags.clear();
        for tag in tags {
            let tag = tag.into();
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
        self
    }

    /// Sets the event id to a UUID (feature `uuid`): its `as_u128`.
    #[cfg(feature = "uuid")]
    pub fn with_uuid(self, id: uuid::Uuid) -> Self {
        self.with_id(id.as_u128())
    }

    /// Sets the timestamp (microseconds since the Unix epoch) instead of the time of the
    /// append: see [`EventData::timestamp`].
    pub fn with_timestamp(mut self, micros: u64) -> Self {
        self.timestamp = Some(micros);
        self
    }
}

/// An event as stored, read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream: Arc<str>,
    /// Its version within the stream: 1 for the stream's first event, dense.
    pub version: u64,
    /// Its global position: N for the N-th event ever appended to the store, dense.
    pub position: u64,
    /// The event's type.
    pub event_type: String,
    /// The payload. Where the segment is memory-mapped this is a view of the map, not a copy.
    pub payload: Bytes,
    /// The metadata, likewise zero-copy where mapped.
    pub metadata: Bytes,
    /// The id given at append time, if any.
    pub id: Option<u128>,
    /// Its tags, in the order given at append time (none for events appended without): a
    /// view of the record's bytes, like the payload.
    pub tags: Tags,
    /// When the store appended it, or the time given with
    /// [`EventData::with_timestamp`]: microseconds since the Unix epoch (UTC).
    pub timestamp: u64,
}

impl RecordedEvent {
    /// The id as a UUID (feature `uuid`), if it has one.
    #[cfg(feature = "uuid")]
    pub fn uuid(&self) -> Option<uuid::Uuid> {
        self.id.map(uuid::Uuid::from_u128)
    }
}

/// The tags of a [`RecordedEvent`]: a view of the record's bytes (no copy, no allocation),
/// decoded as they are iterated. Compares equal to a slice, array or `Vec` of strings.
///
/// ```
/// # fn main() -> annal::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let store = annal::Store::open(tmp.path(), annal::Options::default())?;
/// use annal::{EventData, ExpectedVersion, ReadOptions};
/// store.append("s", ExpectedVersion::Any, &[EventData::new("T", "{}").with_tags(["a", "b"])])?;
/// let e = store.read_stream("s", ReadOptions::forward())?.next().unwrap()?;
/// assert_eq!(e.tags, ["a", "b"]);
/// assert!(e.tags.contains("b") && e.tags.len() == 2);
/// assert_eq!(e.tags.iter().collect::<Vec<&str>>(), ["a", "b"]);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Tags {
    section: Bytes,
    count: u16,
}

impl Tags {
    pub(crate) fn from_section(section: Bytes, count: u16) -> Tags {
        Tags { section, count }
    }

    /// Each tag, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        crate::engine::format::frame::tags_in(&self.section, self.count)
    }

    /// How many.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether `tag` is one of them.
    pub fn contains(&self, tag: &str) -> bool {
        self.iter().any(|t| t == tag)
    }

    /// Copies them out.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Tags {
    fn eq(&self, other: &Tags) -> bool {
        self.iter().eq(other.iter())
    }
}
impl Eq for Tags {}

impl<S: AsRef<str>> PartialEq<[S]> for Tags {
    fn eq(&self, other: &[S]) -> bool {
        self.iter().eq(other.iter().map(AsRef::as_ref))
    }
}
impl<S: AsRef<str>, const N: usize> PartialEq<[S; N]> for Tags {
    fn eq(&self, other: &[S; N]) -> bool {
        *self == other[..]
    }
}
impl<S: AsRef<str>> PartialEq<Vec<S>> for Tags {
    fn eq(&self, other: &Vec<S>) -> bool {
        *self == other[..]
    }
}

/// What the caller believes about a stream's version before an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have exactly this version. `Exact(0)` means the stream
    /// has no events, like [`ExpectedVersion::NoStream`], so a loop can pass the version it
    /// last saw without a special case for a new stream.
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `actual` (`None`: no events) satisfies this.
    pub fn matches(self, actual: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(v) => actual.unwrap_or(0) == v,
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendResult {
    /// Stream version of the first appended event.
    pub first_version: u64,
    /// Stream version of the last appended event (the stream's new version).
    pub last_version: u64,
    /// Global position of the first appended event.
    pub first_position: u64,
    /// Global position of the last appended event.
    pub last_position: u64,
    /// The append was a retry of one already in the log (the same ids, types, payloads and
    /// metadata where a retry would be): nothing was written, and the positions and versions
    /// are the original's.
    pub deduplicated: bool,
}
