//! Subscriptions: the history from a starting point, then live events as they are
//! acknowledged, in position order, with no gap and no duplicate.
//!
//! A subscription reads the log itself, in bounded batches, and waits for the store's
//! published position to move when it has caught up. Catch-up and live delivery are the same
//! code path, so there is no switch-over to get wrong, and a slow subscriber holds no queue:
//! it only holds its position. Appends never wait for subscribers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::engine::query_read::{QueryEvents, Selection};
use crate::engine::read::{AllEvents, ReadOptions, StreamEvents};
use crate::error::{Error, Result};
use crate::event::RecordedEvent;
use crate::query::Query;

/// How many events a subscription reads from the log at a time.
const BATCH: u64 = 512;

#[derive(Debug, Clone)]
enum Source {
    All,
    Stream(String),
    /// The events a query selects, found through the query index: others are never read.
    Query(Query),
}

/// A live feed of events; from [`Store::subscribe_all`](crate::Store::subscribe_all),
/// [`Store::subscribe_stream`](crate::Store::subscribe_stream) or
/// [`Store::subscribe_query`](crate::Store::subscribe_query).
///
/// Iterating blocks until the next event arrives and ends when the store is closed (after the
/// events that were acknowledged before the close). [`next_timeout`](Self::next_timeout)
/// waits at most a given time.
#[derive(Debug)]
pub struct Subscription {
    inner: Arc<Engine>,
    source: Source,
    prefix: Option<String>,
    types: Option<Vec<String>>,
    /// Next position (for `$all`) or version (for one stream) to read.
    next: u64,
    /// The store's published position when the log was last read.
    seen: u64,
    buf: VecDeque<RecordedEvent>,
    /// Position of the last event handed out.
    delivered: u64,
    /// This subscription's waker registration with the store, while a task waits.
    #[cfg(feature = "async")]
    waker_slot: Option<u64>,
    /// A durable subscription's or projection's name: it is told when it falls behind
    /// retention ([`Error::BehindRetention`]) instead of moving on past dropped events.
    guard: Option<String>,
}

/// How many batches a `poll_next` reads before it yields, when filters reject them whole:
/// a subscription with few matches over a long history must not hold its thread.
#[cfg(feature = "async")]
const BATCHES_PER_POLL: u32 = 16;

/// What one attempt at the next event found.
#[allow(
    clippy::large_enum_variant,
    reason = "returned and taken apart at once, never stored"
)]
enum Next {
    Event(RecordedEvent),
    /// Nothing before the deadline.
    Nothing,
    /// The budget of batches was read, all rejected: more may follow.
    Budget,
}

impl Subscription {
    pub(crate) fn all(inner: Arc<Engine>, from_position: u64) -> Self {
        Self::new(inner, Source::All, from_position)
    }

    pub(crate) fn stream(inner: Arc<Engine>, stream: &str, from_version: u64) -> Self {
        Self::new(inner, Source::Stream(stream.to_string()), from_version)
    }

    pub(crate) fn query(inner: Arc<Engine>, query: Query, from_position: u64) -> Self {
        let source = if query.is_all() {
            Source::All
        } else {
            Source::Query(query)
        };
        Self::new(inner, source, from_position)
    }

    /// Narrows a subscription to the whole log to the events `query` selects, from the
    /// same position on.
    pub(crate) fn set_query(&mut self, query: Query) {
        if matches!(self.source, Source::All) && !query.is_all() {
            self.source = Source::Query(query);
        }
    }

    fn new(inner: Arc<Engine>, source: Source, from: u64) -> Self {
        Subscription {
            inner,
            source,
            prefix: None,
            types: None,
            next: from.max(1),
            seen: 0,
            buf: VecDeque::new(),
            delivered: 0,
            #[cfg(feature = "async")]
            waker_slot: None,
            guard: None,
        }
    }

    /// Fails its reads with [`Error::BehindRetention`] naming `what` once it has read
    /// something and retention dropped events it had not reached.
    pub(crate) fn guard_retention(&mut self, what: String) {
        self.guard = Some(what);
    }

    /// Only events of streams whose name starts with `prefix` (a category, such as `cart-`).
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.set_prefix(prefix.into());
        self
    }

    pub(crate) fn set_prefix(&mut self, prefix: String) {
        self.prefix = Some(prefix);
    }

    pub(crate) fn set_types(&mut self, types: Vec<String>) {
        self.types = Some(types);
    }

    /// Only events of these types.
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.set_types(types.into_iter().map(Into::into).collect());
        self
    }

    /// Position of the last event this subscription handed out (0: none yet).
    pub fn last_position(&self) -> u64 {
        self.delivered
    }

    /// The next event, waiting at most `timeout`; `Ok(None)` when none came in time.
    /// Fails with [`Error::Closed`] once the store is closed and every event acknowledged
    /// before that has been delivered.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the store has closed and everything acknowledged before was
    /// delivered; [`Error::Corruption`] or [`Error::Io`] from reading the log.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<RecordedEvent>> {
        self.next_until(Instant::now().checked_add(timeout))
    }

    /// The next event if one is available now, without waiting.
    ///
    /// # Errors
    ///
    /// As [`next_timeout`](Self::next_timeout).
    pub fn try_next(&mut self) -> Result<Option<RecordedEvent>> {
        self.next_until(Some(Instant::now()))
    }

    /// Waits until the store publishes something past what was seen, the store closes, or
    /// `deadline` passes. Returns whether there may be something new.
    pub(crate) fn wait_for_more(&self, deadline: Option<Instant>) -> Result<bool> {
        let mut wm = self.inner.watermark_guard();
        loop {
            if wm.position > self.seen {
                return Ok(true);
            }
            if self.inner.is_closed() {
                return Err(self.inner.follow_failure().unwrap_or(Error::Closed));
            }
            match deadline {
                Some(d) => {
                    if Instant::now() >= d || self.inner.wait_published(&mut wm, d) {
                        return Ok(wm.position > self.seen);
                    }
                }
                None => self.inner.wait_published_forever(&mut wm),
            }
        }
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Result<Option<RecordedEvent>> {
        match self.next_within(deadline, None)? {
            Next::Event(e) => Ok(Some(e)),
            Next::Nothing | Next::Budget => Ok(None),
        }
    }

    /// The next event, waiting until `deadline`, reading at most `max_fills` batches.
    fn next_within(&mut self, deadline: Option<Instant>, max_fills: Option<u32>) -> Result<Next> {
        let mut fills = 0;
        loop {
            if let Some(e) = self.buf.pop_front() {
                self.delivered = e.position;
                return Ok(Next::Event(e));
            }
            // A batch the filters rejected whole still moved the position on: read the next.
            if self.fill()? {
                fills += 1;
                if max_fills.is_some_and(|m| fills >= m) && self.buf.is_empty() {
                    return Ok(Next::Budget);
                }
                continue;
            }
            match self.wait_for_more(deadline) {
                Ok(true) => continue,
                Ok(false) => return Ok(Next::Nothing),
                Err(Error::Closed) => {
                    // Deliver what was acknowledged before the close, then end.
                    while self.buf.is_empty() {
                        if !self.fill()? {
                            return Err(Error::Closed);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the next batch from the log into the buffer, keeping the events that pass the
    /// filters. Returns whether it read anything (kept or not).
    fn fill(&mut self) -> Result<bool> {
        if let Some(what) = &self.guard {
            self.inner.check_retained(|| what.clone(), self.next)?;
        }
        let before = self.next;
        self.seen = self.inner.watermark().position;
        let opts = ReadOptions::forward_from(self.next).limit(BATCH);
        match &self.source {
            // Past what the read covered, not only past the last event it returned: events
            // hidden by stream metadata or erased by a scavenge are not returned, and a
            // batch of nothing else must still move the subscription on.
            Source::All => {
                let mut read = AllEvents::new(&self.inner, opts);
                for e in &mut read {
                    let e = e?;
                    self.next = e.position + 1;
                    self.keep(e);
                }
                self.next = self.next.max(read.next_position());
            }
            Source::Stream(s) => {
                let mut read = StreamEvents::new(Arc::clone(&self.inner), s, opts);
                for e in &mut read {
                    let e = e?;
                    self.next = e.version + 1;
                    self.keep(e);
                }
                self.next = self.next.max(read.next_version());
            }
            Source::Query(q) => {
                let selection = Selection::Query(q.clone());
                let mut read = 0;
                for e in QueryEvents::new(Arc::clone(&self.inner), selection, opts) {
                    let e = e?;
                    read += 1;
                    self.next = e.position + 1;
                    self.keep(e);
                }
                // Fewer than a batch: nothing else matched up to what was published.
                if read < BATCH {
                    self.next = self.next.max(self.seen + 1);
                }
            }
        }
        Ok(self.next != before)
    }

    fn keep(&mut self, e: RecordedEvent) {
        let prefix_ok = self
            .prefix
            .as_ref()
            .is_none_or(|p| e.stream.starts_with(p.as_str()));
        let type_ok = self
            .types
            .as_ref()
            .is_none_or(|t| t.contains(&e.event_type));
        if prefix_ok && type_ok {
            self.buf.push_back(e);
        }
    }
}

impl Iterator for Subscription {
    type Item = Result<RecordedEvent>;

    /// Blocks until the next event; `None` once the store is closed and drained.
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_until(None) {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) | Err(Error::Closed) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(feature = "async")]
impl Subscription {
    /// The next event, awaited (feature `async`): the task waits for new events by
    /// registering its waker with the store, no thread waits. `None` once the store is
    /// closed and drained, where the iterator ends. Reading a batch from the log is done
    /// inline: reads from the segments' maps, which block only on a page fault, never on a
    /// writer.
    pub async fn next_async(&mut self) -> Option<Result<RecordedEvent>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// This subscription as a [`Stream`](futures_core::Stream) (feature `async`).
    pub fn into_stream(self) -> crate::es::event_stream::EventStream<Self> {
        crate::es::event_stream::EventStream::new(self)
    }

    pub(crate) fn poll_event(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<RecordedEvent>>> {
        use std::task::Poll;
        loop {
            match self.next_within(Some(Instant::now()), Some(BATCHES_PER_POLL)) {
                Ok(Next::Event(e)) => return Poll::Ready(Some(Ok(e))),
                Ok(Next::Budget) => {
                    // Let the runtime run others, and come back for the rest.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Ok(Next::Nothing) => {
                    // Registered under the published position's lock: a publish after the
                    // read above either came first (then look again) or wakes this task.
                    if self
                        .inner
                        .register_published(self.seen, cx.waker(), &mut self.waker_slot)
                    {
                        return Poll::Pending;
                    }
                }
                Err(Error::Closed) => return Poll::Ready(None),
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

#[cfg(feature = "async")]
impl Drop for Subscription {
    fn drop(&mut self) {
        self.inner.forget_published(&mut self.waker_slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing;

    fn positions(sub: &mut Subscription) -> Vec<u64> {
        let mut v = Vec::new();
        while let Some(e) = sub.try_next().unwrap() {
            v.push(e.position);
        }
        v
    }

    #[test]
    fn history_then_live_events_in_order_without_gap_or_duplicate() {
        let (_disk, engine) = testing::fresh();
        testing::append(&engine, "a", 2);
        let mut sub = Subscription::all(Arc::clone(&engine), 2);
        assert_eq!(positions(&mut sub), [2]);
        testing::append(&engine, "b", 2);
        assert_eq!(positions(&mut sub), [3, 4]);
        assert_eq!(sub.last_position(), 4);
        assert_eq!(sub.next_timeout(Duration::from_millis(1)).unwrap(), None);
    }

    #[test]
    fn filters_keep_a_category_and_event_types() {
        let (_disk, engine) = testing::fresh();
        testing::append(&engine, "cart-1", 1);
        testing::append(&engine, "user-1", 1);
        testing::append(&engine, "cart-2", 1);
        let mut sub = Subscription::all(Arc::clone(&engine), 1).stream_prefix("cart-");
        assert_eq!(positions(&mut sub), [1, 3]);
        let mut none = Subscription::all(Arc::clone(&engine), 1).event_types(["Other"]);
        assert_eq!(positions(&mut none), Vec::<u64>::new());
    }

    #[test]
    fn a_stream_subscription_counts_versions() {
        let (_disk, engine) = testing::fresh();
        testing::append(&engine, "a", 3);
        testing::append(&engine, "b", 1);
        let mut sub = Subscription::stream(Arc::clone(&engine), "a", 2);
        let versions: Vec<u64> = std::iter::from_fn(|| sub.try_next().unwrap())
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, [2, 3]);
    }

    #[test]
    fn a_live_event_wakes_a_waiting_subscriber() {
        let (_disk, engine) = testing::fresh();
        let mut sub = Subscription::all(Arc::clone(&engine), 1);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            // Without a wake-up this waits the whole minute and gets nothing: the test fails.
            let got = sub.next_timeout(Duration::from_secs(60)).unwrap();
            tx.send(got.map(|e| e.position)).unwrap();
            sub
        });
        // Most often the subscriber is waiting by now; either way it must get the event.
        std::thread::sleep(Duration::from_millis(20));
        testing::append(&engine, "a", 1);
        assert_eq!(rx.recv().unwrap(), Some(1));
        let mut sub = waiter.join().unwrap();
        engine.close().unwrap();
        // Closed and drained: the end, as an error for `next_timeout`, `None` for the iterator.
        assert!(matches!(sub.try_next(), Err(Error::Closed)));
        assert!(sub.next().is_none());
    }

    #[test]
    fn close_delivers_what_was_acknowledged_before_it_then_ends() {
        let (_disk, engine) = testing::fresh();
        let mut sub = Subscription::all(Arc::clone(&engine), 1);
        testing::append(&engine, "a", 2);
        engine.close().unwrap();
        let positions: Vec<u64> = sub.by_ref().map(|e| e.unwrap().position).collect();
        assert_eq!(positions, [1, 2]);
        assert!(matches!(sub.try_next(), Err(Error::Closed)));
    }

    /// Counts its wake-ups.
    #[cfg(feature = "async")]
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    #[cfg(feature = "async")]
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[cfg(feature = "async")]
    #[test]
    fn a_waiting_subscription_holds_one_registration_and_drops_it_with_itself() {
        use std::sync::atomic::Ordering;
        use std::task::{Context, Poll, Waker};
        let (_disk, engine) = testing::fresh();
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut subs: Vec<Subscription> = (0..3)
            .map(|_| Subscription::all(Arc::clone(&engine), 1))
            .collect();
        for _ in 0..5 {
            for sub in &mut subs {
                assert!(sub.poll_event(&mut cx).is_pending());
            }
        }
        // Five polls each, one registration each.
        assert_eq!(engine.published_waiters(), 3);
        drop(subs.pop());
        assert_eq!(engine.published_waiters(), 2);
        // A publish wakes the waiting ones and empties the list.
        testing::append(&engine, "a", 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(engine.published_waiters(), 0);
        for sub in &mut subs {
            assert!(matches!(sub.poll_event(&mut cx), Poll::Ready(Some(Ok(_)))));
        }
    }

    #[cfg(feature = "async")]
    #[test]
    fn a_filtered_subscription_over_a_long_history_yields_between_polls() {
        use std::sync::atomic::Ordering;
        use std::task::{Context, Poll, Waker};
        let (_disk, engine) = testing::fresh();
        for _ in 0..20 {
            testing::append(&engine, "busy", 1000);
        }
        let rare = engine
            .append(
                "rare",
                crate::event::ExpectedVersion::Any,
                &[crate::event::EventData::new("Rare", "x")],
            )
            .unwrap();
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut sub = Subscription::all(Arc::clone(&engine), 1).event_types(["Rare"]);
        let mut polls = 0;
        let found = loop {
            polls += 1;
            match sub.poll_event(&mut cx) {
                Poll::Ready(e) => break e.unwrap().unwrap(),
                // Pending only to yield: it woke itself to be polled again.
                Poll::Pending => assert_eq!(count.0.load(Ordering::SeqCst), polls),
            }
        };
        assert_eq!(found.position, rare.first_position);
        // 20,001 events in batches of 512, 16 batches a poll: 3 polls.
        assert_eq!(polls, 3);
    }
}
