//! Subscriptions as [`Stream`]s, for async code (feature `async`).

use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::error::Result;
use crate::es::durable::DurableSubscription;
use crate::es::subscription::Subscription;
use crate::event::RecordedEvent;

/// A [`Subscription`] or [`DurableSubscription`] as a [`Stream`] of events, from their
/// `into_stream`: the same events, order and end (once the store is closed and drained).
/// A task waiting for the next event registers its waker with the store; no thread waits.
/// It dereferences to the subscription, for [`DurableSubscription::ack`] and
/// `last_position`.
///
/// (The subscriptions themselves are blocking [`Iterator`]s; a separate type keeps
/// `StreamExt::next` and `Iterator::next` from both applying to one value.)
#[derive(Debug)]
pub struct EventStream<S> {
    inner: S,
}

impl<S> EventStream<S> {
    pub(crate) fn new(inner: S) -> Self {
        EventStream { inner }
    }

    /// The subscription back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Deref for EventStream<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.inner
    }
}

impl<S> DerefMut for EventStream<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl Stream for EventStream<Subscription> {
    type Item = Result<RecordedEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_event(cx)
    }
}

impl Stream for EventStream<DurableSubscription> {
    type Item = Result<RecordedEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_event(cx)
    }
}
