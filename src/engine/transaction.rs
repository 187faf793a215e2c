//! Committing a [`Transaction`]: appends to several streams, checks on streams it does not
//! write, and a DCB condition, decided under the writer lock and written as one frame, so it
//! is all or nothing, in one contiguous range of positions, with one sync.

use std::collections::HashSet;
use std::sync::Arc;

use super::Engine;
use super::append::{check_expected, whole_frame};
use super::format::frame::{self, TxPart};
use super::query_read::{QueryEvents, Selection};
use super::read::ReadOptions;
use crate::error::{Error, Result};
use crate::event::AppendResult;
use crate::transaction::{AppendCondition, CommitResult, Transaction};

impl Engine {
    /// Commits `tx`; see [`Store::commit`](crate::Store::commit).
    /// With the result, the timestamp of the events that bring none of their own (`None`
    /// for a recognised retry).
    pub(crate) fn commit_transaction(
        self: &Arc<Self>,
        tx: &Transaction,
    ) -> Result<(CommitResult, Option<u64>)> {
        self.validate_transaction(tx)?;
        let written = self.write_transaction(tx);
        let (result, stamped) = self.after_conflict(written)?;
        self.settle(result.last_position, stamped.is_none())?;
        Ok((result, stamped))
    }

    pub(crate) fn validate_transaction(&self, tx: &Transaction) -> Result<()> {
        let invalid = |why: String| Err(Error::InvalidArgument(why));
        if tx.appends.is_empty() {
            return invalid("a transaction must append to at least one stream".into());
        }
        // One append (a conditional append, most often) needs no sets: `validate` checked
        // it, and its frame is a plain one.
        let single = tx.appends.len() == 1;
        // (ids, streams) seen so far, for several appends.
        let mut seen =
            (!single).then(|| (HashSet::new(), HashSet::with_capacity(tx.appends.len())));
        for (stream, _, events) in &tx.appends {
            self.validate(stream, events)?;
            let Some((ids, streams)) = &mut seen else {
                continue;
            };
            if !streams.insert(stream.as_str()) {
                return invalid(format!(
                    "the transaction appends to stream {stream:?} twice: give its events in one append"
                ));
            }
            // Within one append, `validate` found any id given twice.
            for e in events {
                if let Some(id) = e.id
                    && !ids.insert(id)
                {
                    return invalid(format!(
                        "the transaction has the id {id:032x} twice: an id names one event"
                    ));
                }
            }
        }
        let appends_to = |stream: &str| match &seen {
            None => tx.appends.iter().any(|(s, _, _)| s == stream),
            Some((_, streams)) => streams.contains(stream),
        };
        for (stream, kind, _) in &tx.snapshots {
            if !appends_to(stream) {
                return invalid(format!(
                    "the transaction snapshots stream {stream:?} (as {kind:?}) but does not append to it"
                ));
            }
        }
        for (stream, _) in &tx.expects {
            if appends_to(stream) {
                return invalid(format!(
                    "the transaction both appends to and expects stream {stream:?}: the append's \
                     expected version is the check"
                ));
            }
        }
        if tx.appends.len() > usize::from(u16::MAX) {
            return invalid("a transaction appends to at most 65,535 streams".into());
        }
        if single {
            return Ok(());
        }
        let parts: Vec<TxPart<'_>> = tx
            .appends
            .iter()
            .map(|(stream, _, events)| TxPart {
                stream,
                first_version: 1,
                events,
            })
            .collect();
        let len = frame::tx_frame_len(&parts);
        let count: usize = parts.iter().map(|p| p.events.len()).sum();
        if u32::try_from(len).is_err() || u32::try_from(count).is_err() {
            return invalid(format!(
                "the transaction is {len} bytes, more than one frame holds (4 GiB)"
            ));
        }
        Ok(())
    }

    /// Under the writer lock: the checks, then the frame. Returns the result and whether it
    /// was a recognised retry (nothing written).
    pub(crate) fn write_transaction(
        self: &Arc<Self>,
        tx: &Transaction,
    ) -> Result<(CommitResult, Option<u64>)> {
        if let [(stream, expected, events)] = tx.appends.as_slice() {
            let (r, stamped) = self.write_one(
                stream,
                *expected,
                events,
                &tx.expects,
                tx.condition.as_ref(),
            )?;
            let result = CommitResult {
                first_position: r.first_position,
                last_position: r.last_position,
                appends: vec![r],
                deduplicated: stamped.is_none(),
            };
            return Ok((result, stamped));
        }
        self.check_appendable()?;
        let mut guard = self.writer.lock();
        self.commit.check()?;
        for (stream, _, _) in &tx.appends {
            self.check_stream_live(stream)?;
        }
        let currents: Vec<Option<u64>> = {
            let ix = self.index.read();
            tx.appends.iter().map(|(s, _, _)| ix.version(s)).collect()
        };
        if let Some(original) = self.find_transaction_retry(tx, &currents)? {
            return Ok((original, None));
        }
        for ((stream, expected, _), &current) in tx.appends.iter().zip(&currents) {
            check_expected(stream, *expected, current)?;
        }
        self.check_expects(&tx.expects)?;
        let w = &mut *guard;
        if let Some(condition) = &tx.condition {
            self.check_condition(condition, w.written)?;
        }
        let parts: Vec<TxPart<'_>> = tx
            .appends
            .iter()
            .zip(&currents)
            .map(|((stream, _, events), current)| TxPart {
                stream,
                first_version: current.unwrap_or(0) + 1,
                events,
            })
            .collect();
        let (first_position, last_position, timestamp) = self.put(w, &parts)?;
        let mut position = first_position;
        let appends = parts
            .iter()
            .map(|p| {
                let n = p.events.len() as u64;
                let r = AppendResult {
                    first_version: p.first_version,
                    last_version: p.first_version + n - 1,
                    first_position: position,
                    last_position: position + n - 1,
                    deduplicated: false,
                };
                position += n;
                r
            })
            .collect();
        Ok((
            CommitResult {
                first_position,
                last_position,
                appends,
                deduplicated: false,
            },
            Some(timestamp),
        ))
    }

    /// Under the writer lock: [`Error::AppendConditionFailed`] if an event `condition`'s
    /// query selects was written after its position.
    pub(crate) fn check_condition(
        self: &Arc<Self>,
        condition: &AppendCondition,
        written: super::Watermark,
    ) -> Result<()> {
        match self.first_match(condition, written)? {
            Some(position) => Err(Error::AppendConditionFailed {
                position,
                after: condition.after,
            }),
            None => Ok(()),
        }
    }

    /// The position of the first event the condition's query selects after its position,
    /// among every event written (acknowledged or about to be).
    fn first_match(
        self: &Arc<Self>,
        condition: &AppendCondition,
        written: super::Watermark,
    ) -> Result<Option<u64>> {
        let after = condition.after.unwrap_or(0);
        if condition.query.is_all() {
            return Ok((written.position > after).then_some(after + 1));
        }
        // Written events not yet published are only in the index.
        self.check_query_index()?;
        // The newest matching event after `after`, from the lists (a record read at most).
        if super::query_read::newest_match_after(self, &condition.query, written, after)?.is_none()
        {
            return Ok(None);
        }
        let selection = || Selection::Query(condition.query.clone());
        // It failed: find the first one after `after`, for the error.
        let opts = ReadOptions::forward_from(after + 1).limit(1);
        let mut found = QueryEvents::upto(Arc::clone(self), selection(), opts, written);
        found.next().transpose().map(|e| e.map(|e| e.position))
    }

    /// The original result, if `tx` (every event with an id) is a retry of a transaction
    /// already written: each append's events at the versions it expected, together exactly
    /// one frame.
    fn find_transaction_retry(
        &self,
        tx: &Transaction,
        currents: &[Option<u64>],
    ) -> Result<Option<CommitResult>> {
        // Only events that all carry ids can be recognised.
        if !tx
            .appends
            .iter()
            .all(|(_, _, events)| events.iter().all(|e| e.id.is_some()))
        {
            return Ok(None);
        }
        let mut matched = Vec::with_capacity(tx.appends.len());
        for ((stream, expected, events), &current) in tx.appends.iter().zip(currents) {
            let Some((r, e)) = self.match_retry(stream, *expected, current, events)? else {
                return Ok(None);
            };
            matched.push((r, e));
        }
        // In the log's order (a retry may list its streams in another): together they must
        // be one range of positions, exactly one frame.
        let mut in_log: Vec<&(AppendResult, Vec<u8>)> = matched.iter().collect();
        in_log.sort_unstable_by_key(|(r, _)| r.first_position);
        let contiguous = in_log
            .windows(2)
            .all(|w| w[1].0.first_position == w[0].0.last_position + 1);
        let edges: Vec<u8> = in_log.iter().flat_map(|(_, e)| e.iter().copied()).collect();
        let (Some(first), Some(last)) = (in_log.first(), in_log.last()) else {
            return Ok(None);
        };
        if !contiguous || !whole_frame(&edges) {
            return Ok(None);
        }
        Ok(Some(CommitResult {
            first_position: first.0.first_position,
            last_position: last.0.last_position,
            appends: matched.iter().map(|(r, _)| *r).collect(),
            deduplicated: true,
        }))
    }
}
