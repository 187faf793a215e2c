//! The sync leader's work under group commit: one `fdatasync` of the active segment (and of
//! the full one before it, if its roll left that for later) covering every append written
//! before it, the `STATE` record of what it made durable, and the short
//! wait that lets appends released by one sync join the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Engine;
use crate::error::Result;
use crate::options::FsyncPolicy;

impl Engine {
    /// Syncs everything written so far (group commit).
    pub(crate) fn sync(&self) -> Result<()> {
        let target = self.writer.lock().written.position;
        self.commit.sync_to(target, &mut || self.sync_written())
    }

    /// One fdatasync of the active segment, covering everything written before it started;
    /// publishes what it covered.
    pub(crate) fn sync_written(&self) -> Result<u64> {
        if self.options.fsync == FsyncPolicy::Always {
            self.gather();
        }
        let (seg, file, wm, appends) = {
            let w = self.writer.lock();
            (
                Arc::clone(&w.active.seg),
                Arc::clone(&w.active.file),
                w.written,
                self.written_appends.load(Ordering::Acquire),
            )
        };
        let started = Instant::now();
        // A full segment whose roll left its sync to the background holds part of what is
        // claimed durable here.
        self.log.sync_unsynced()?;
        self.log.sync(&file, &seg)?;
        self.gather_stats.last_sync_nanos.store(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let before = self
            .gather_stats
            .synced_appends
            .fetch_max(appends, Ordering::AcqRel);
        self.gather_stats
            .last_batch
            .store(appends.saturating_sub(before), Ordering::Relaxed);
        let every = self.options.record_durable_every;
        if every > 0 && wm.position >= self.log.recorded_floor().saturating_add(every) {
            // What was just synced goes on record, so that losing it later is detected; before
            // it is published, so a failure here fails the appends it covers.
            self.log.record(|s| {
                s.durable_floor = wm.position;
                if seg.ordinal >= s.last_ordinal {
                    s.last_ordinal = seg.ordinal;
                    s.last_len = seg.capacity;
                }
            })?;
        }
        self.publish(wm);
        Ok(wm.position)
    }

    /// Before leading a sync, waits briefly for as many appends as the previous sync covered.
    ///
    /// Threads released by one sync come back one after another; without this, the first to
    /// write would lead the next sync alone and the rest would wait a whole fdatasync more.
    /// The wait is bounded by half the last sync's duration (and 200 µs), and skipped when
    /// the last sync covered a single append, so a lone appender never waits.
    fn gather(&self) {
        let expect = self.gather_stats.last_batch.load(Ordering::Relaxed);
        if expect < 2 {
            return;
        }
        let synced = self.gather_stats.synced_appends.load(Ordering::Acquire);
        let limit =
            Duration::from_nanos(self.gather_stats.last_sync_nanos.load(Ordering::Relaxed) / 2)
                .min(MAX_GATHER);
        let start = Instant::now();
        while self
            .written_appends
            .load(Ordering::Acquire)
            .saturating_sub(synced)
            < expect
            && start.elapsed() < limit
        {
            std::thread::yield_now();
        }
    }
}

/// What the last group-commit sync covered and how long it took.
#[derive(Debug, Default)]
pub(crate) struct GatherStats {
    /// Appends (not events) the last sync covered.
    last_batch: AtomicU64,
    /// Appends covered by syncs so far.
    synced_appends: AtomicU64,
    last_sync_nanos: AtomicU64,
}

/// The longest a sync leader waits for more appends to join.
const MAX_GATHER: Duration = Duration::from_micros(200);
