//! Following a writer in another process: a read-only engine that takes in the frames the
//! writer acknowledges, as the writer publishes them (see [`published`](super::published)).
//!
//! The follower indexes frames up to the published location and only then publishes that
//! position to its own readers, so it never shows an event the writer has not acknowledged.
//! It reads the new bytes with `pread` (nothing it has not checked is ever viewed), takes in
//! segments as the writer rolls to them, and survives a writer restart: a new writer starts a
//! new epoch at the end its recovery found, and a follower that had indexed past that end
//! stops with [`Error::Diverged`] instead of showing a log that changed under it.

use std::sync::Arc;
use std::time::Duration;

use super::format::segment_header::SEGMENT_HEADER_LEN;
use super::index::unpack;
use super::log::Active;
use super::published::Board;
use super::segment::Segment;
use super::{Engine, Watermark, Writer, checkpoint, recovery};
use crate::error::{Error, Result};

/// How long the follower sleeps between looks at the board while nothing changes, and right
/// after something did (it polls faster while the writer is busy).
const IDLE_POLL: Duration = Duration::from_millis(1);
const BUSY_POLL: Duration = Duration::from_micros(20);
/// Polls at the busy rate after the last change.
const BUSY_POLLS: u32 = 2000;

impl Engine {
    /// Takes in every frame up to `target` (the writer's acknowledged position and the
    /// location just past it), then makes it visible.
    pub(crate) fn follow_to(&self, target: Watermark) -> Result<()> {
        let (ordinal, offset) = unpack(target.location);
        {
            let mut w = self.writer.lock();
            loop {
                let seg = Arc::clone(&w.active.seg);
                if seg.ordinal > ordinal {
                    // Recovery at open read into a segment the writer had not published yet:
                    // everything published is indexed already.
                    break;
                }
                if seg.capacity == 0 {
                    // A placeholder for a first segment that did not exist at open.
                    self.take_segment(&mut w, seg.ordinal)?;
                    continue;
                }
                let upto = if seg.ordinal == ordinal {
                    offset
                } else {
                    seg.data_end()?
                };
                if upto > seg.end() {
                    let taken = self.take_in(&seg, seg.end(), upto, w.next_position)?;
                    w.next_position += taken;
                }
                if seg.ordinal >= ordinal {
                    break;
                }
                // The writer rolled: `seg` is sealed, the next one holds what follows.
                seg.seal();
                let next = self.take_segment(&mut w, seg.ordinal + 1)?;
                recovery::check_base(&next, w.next_position)?;
            }
            if w.next_position <= target.position {
                return Err(Error::corruption(
                    &w.active.seg.path,
                    w.active.seg.end(),
                    format!(
                        "the writer published position {} but the log ends at {}",
                        target.position,
                        w.next_position - 1
                    ),
                ));
            }
            w.written = target;
        }
        self.publish(target);
        Ok(())
    }

    /// Opens segment `ordinal`, which the writer created, and makes it the one followed.
    fn take_segment(&self, w: &mut Writer, ordinal: u32) -> Result<Arc<Segment>> {
        let (seg, file) = Segment::open(self.storage(), &self.dir, ordinal, false)?;
        let seg = Arc::new(seg);
        self.log.adopt(Arc::clone(&seg))?;
        w.active = Active::new(Arc::clone(&seg), file, SEGMENT_HEADER_LEN, false);
        w.checkpoint = super::checkpoint::Builder::given_up();
        Ok(seg)
    }

    /// Indexes the frames of `seg` in `[from, to)`, the first holding `position`; returns how
    /// many events they hold.
    fn take_in(&self, seg: &Segment, from: u64, to: u64, position: u64) -> Result<u64> {
        let window = seg.pread(from, to - from)?;
        let (ix, stop) = checkpoint::scan_from(seg, &window, 0, position)?;
        if let Some(stop) = stop {
            // The writer published these bytes: they must be whole frames.
            return Err(Error::corruption(
                &seg.path,
                from + stop.offset,
                stop.reason,
            ));
        }
        ix.push_into(seg, &mut self.index.write(), from)?;
        for run in &ix.runs {
            self.load_metadata(&run.stream)?;
        }
        for s in &ix.samples {
            seg.note_frame(s.position, from + s.offset);
        }
        // A sealed segment a scavenge rewrote before this follower reached it.
        seg.set_erased(
            ix.erased
                .iter()
                .map(|&(a, b)| (from + a, from + b))
                .collect(),
        );
        seg.set_end(from + ix.end);
        Ok(ix.events)
    }

    /// The position up to which this engine has indexed the log.
    fn indexed_position(&self) -> u64 {
        self.writer.lock().next_position - 1
    }

    /// Why following stopped, if it did.
    pub(crate) fn follow_failure(&self) -> Option<Error> {
        self.follow_failure
            .lock()
            .as_ref()
            .map(|reason| Error::Diverged {
                path: self.dir.clone(),
                reason: reason.clone(),
            })
    }

    /// Stops following for `reason`: subscriptions end with [`Error::Diverged`].
    fn stop_following(&self, reason: String) {
        *self.follow_failure.lock() = Some(reason);
        self.close_subscriptions();
    }
}

/// Where following stands: the writer epoch this follower last agreed with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    /// The epoch of the writer whose log the follower's open read (from the board, even a
    /// half-written one), or `None` when there was no board: no writer of this version had
    /// run, so the first one to appear is a restart to check.
    pub epoch: Option<u64>,
}

/// The follower thread's loop: looks at the board, takes in what the writer published, and
/// stops when the engine closes or following fails.
pub(crate) fn run(engine: &Arc<Engine>, mut board: Option<Board>, start: Start) {
    let mut agreed = start.epoch;
    let mut busy = 0u32;
    while !engine.is_closed() {
        if board.is_none() {
            board = Board::open(engine.storage(), &engine.dir).ok().flatten();
        }
        let Some(p) = board.as_ref().and_then(Board::read) else {
            std::thread::sleep(IDLE_POLL);
            continue;
        };
        if agreed != Some(p.epoch) {
            // A writer (re)started: its recovery must have kept all this follower took in.
            let indexed = engine.indexed_position();
            if p.epoch_start < indexed {
                engine.stop_following(format!(
                    "the writer restarted with its log ending at position {}, but this \
                     follower had read up to position {indexed}: reopen the follower",
                    p.epoch_start
                ));
                return;
            }
            agreed = Some(p.epoch);
        }
        // Compared on every poll, not only when the board changes: an open that read the
        // board while the writer was publishing starts behind it.
        if p.acknowledged.position > engine.last_position() {
            match engine.follow_to(p.acknowledged) {
                Ok(()) => busy = BUSY_POLLS,
                // A passing failure (too many open files, say): try again next poll.
                Err(Error::Io { .. }) => {}
                Err(e) => {
                    engine.stop_following(e.to_string());
                    return;
                }
            }
        }
        if busy > 0 {
            busy -= 1;
            std::thread::sleep(BUSY_POLL);
        } else {
            std::thread::sleep(IDLE_POLL);
        }
    }
}
