//! Scavenge: erases the events stream metadata no longer keeps (deleted, truncated, past
//! `max_count` or `max_age`, metadata overwritten by newer metadata), and gives their disk
//! space back.
//!
//! Each sealed segment holding newly dead events is rewritten whole into a new file, with
//! every live record at the offset it had: the index (every stream's locations, the query
//! index's lists) stays valid through the swap, and a reader holding the old file's map goes
//! on reading the old bytes. In the new file:
//!
//! - a frame whose events are all dead, together with its dead neighbours, becomes one
//!   *erased frame*: a header, the list of the streams and versions it held, and zeros,
//!   which are never written, so the file system gives their blocks back (a sparse file);
//! - in a frame that keeps some events, each dead record becomes an *erased record* of the
//!   same length: its position, version and edges, then zeros.
//!
//! Positions, versions, ids and timestamps of live events do not change. A read skips an
//! erased event as if it were not there: `$all` then has gaps, stream versions too.
//!
//! A scavenge is background work: its threads run at a lower priority, and while appends
//! come in it rests between segments (four times as long as it worked on the last one).
//!
//! Crash safety: the new file is written as `NNNNNNNNNN.seg.tmp` and synced; the segment's
//! index checkpoint is removed (directory synced) before the new file is renamed over the old
//! one (directory synced), and the sealer writes a new checkpoint after, in the background. A crash at any point leaves
//! the old segment or the new one (a leftover `.tmp` is removed on open), and never a
//! checkpoint of the other. A scavenge stopped, or crashed, is resumed by running it again:
//! segments already rewritten have nothing newly dead and are skipped.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};

use super::Engine;
use super::SealJob;
use super::Watermark;
use super::checkpoint;
use super::format::frame::{self, ErasedPart, Frame, FrameRead, Part};
use super::format::segment_header::{SEGMENT_HEADER_BYTES, encode_scavenged_header, file_name};
use super::index::pack;
use super::lifecycle::{Rules, now_micros};
use super::segment::{SEGMENT_HEADER_LEN, Sample, Segment};
use crate::error::{Error, Result};
use crate::storage::{Storage, remove_if_exists};

/// Disk blocks are counted in units of this many bytes.
const BLOCK: usize = 4096;

/// What a scavenge did, from [`Store::scavenge`](crate::Store::scavenge).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScavengeReport {
    /// Sealed segments looked at.
    pub segments_scanned: u64,
    /// Segments rewritten (the others had nothing newly dead).
    pub segments_rewritten: u64,
    /// Segments whose events retention ([`Options::retention`](crate::Options::retention))
    /// dropped, first thing.
    pub segments_retired: u64,
    /// Events erased by this scavenge.
    pub events_erased: u64,
    /// Bytes of disk blocks (4 KiB each) the rewritten segments' data took before.
    pub bytes_before: u64,
    /// Bytes of disk blocks they take now.
    pub bytes_after: u64,
    /// Projection checkpoints removed because they had folded erased events (those
    /// projections rebuild from the log when next opened).
    pub projection_checkpoints_removed: u64,
    /// The progress callback stopped it before the last segment: run it again to resume.
    pub stopped: bool,
    /// The position of the first event erased, if any was.
    pub first_erased: Option<u64>,
}

impl ScavengeReport {
    /// Disk space given back, in bytes.
    pub fn bytes_reclaimed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// How far a scavenge is, handed to the callback of
/// [`Store::scavenge_with`](crate::Store::scavenge_with) before each segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScavengeProgress {
    /// Sealed segments done so far.
    pub done: u64,
    /// Sealed segments in all.
    pub total: u64,
    /// Events erased so far.
    pub events_erased: u64,
    /// Disk space given back so far, in bytes.
    pub bytes_reclaimed: u64,
}

/// Which events are live: each stream's rules, looked up once per scavenge, as of `floor`.
///
/// Only what is durable decides: a stream's last version counts the events up to `floor`
/// (every one of them synced), and metadata written after it is not applied yet (its
/// stream is left as it is). A crash can then take back nothing a scavenge relied on.
struct Judge<'e> {
    engine: &'e Engine,
    now: u64,
    floor: Watermark,
    rules: HashMap<Box<str>, Verdict>,
    /// The segment is retention's: every event is dead but the live metadata (which the
    /// stream's rules still need).
    retire: bool,
}

impl<'e> Judge<'e> {
    fn new(engine: &'e Engine, floor: Watermark) -> Self {
        Judge {
            engine,
            now: now_micros(),
            floor,
            rules: HashMap::new(),
            retire: false,
        }
    }
}

/// What a judge says of one stream's events.
#[derive(Clone, Copy)]
enum Verdict {
    /// All live.
    Live,
    /// Live as these rules say.
    Rules(Rules),
    /// All dead.
    Dead,
}

impl Verdict {
    fn keeps(self, version: u64, timestamp: u64) -> bool {
        match self {
            Verdict::Live => true,
            Verdict::Rules(r) => r.keeps(version, timestamp),
            Verdict::Dead => false,
        }
    }
}

impl Judge<'_> {
    /// The verdict on the events of `stream` (looked up once per stream and scavenge).
    fn of(&mut self, stream: &str) -> Verdict {
        let system = super::lifecycle::is_system(stream);
        if self.retire && !system {
            return Verdict::Dead;
        }
        if let Some(v) = self.rules.get(stream) {
            return *v;
        }
        let last = self
            .engine
            .index
            .read()
            .visible_version(stream, self.floor.location)
            .unwrap_or(0);
        let verdict = if system {
            // A metadata stream keeps its last event up to the floor, and those after.
            Verdict::Rules(Rules::last_only(last))
        } else {
            match self.engine.metadata_with_position(stream) {
                None => Verdict::Live,
                // Not durable yet: this scavenge leaves the stream alone.
                Some((position, _)) if position > self.floor.position => Verdict::Live,
                Some((_, m)) => Verdict::Rules(Rules::of(&m, last, self.now)),
            }
        };
        self.rules.insert(stream.into(), verdict);
        verdict
    }
}

/// A dead record of a frame that keeps others.
struct DeadRecord {
    start: usize,
    end: usize,
    position: u64,
    version: u64,
    edges: u8,
}

/// One frame of a segment, judged; borrowed from the segment's bytes.
struct Judged {
    offset: usize,
    end: usize,
    first_position: u64,
    durable: u64,
    /// Its events.
    count: u64,
    /// Its streams (where their names are in the segment's bytes), first versions and
    /// counts, for an erased frame that takes it in.
    parts: Vec<(std::ops::Range<usize>, u64, u32)>,
    /// It is an erased frame already.
    erased: bool,
    /// Live events.
    live: u64,
    /// Dead records not erased yet.
    dead: Vec<DeadRecord>,
    /// Records erased already.
    erased_records: u64,
}

impl Judged {
    /// Events that die in this scavenge.
    fn newly_dead(&self) -> u64 {
        if self.erased {
            0
        } else {
            self.dead.len() as u64
        }
    }
}

/// A rewritten segment's image, where its frames are, and what rewriting it erased.
struct Image {
    bytes: Vec<u8>,
    /// Bytes of the disk blocks the data took before, and takes in the image.
    bytes_before: u64,
    bytes_after: u64,
    layout: Layout,
    erased: u64,
    first_erased: u64,
    /// The offsets of the frames the rewrite wrote (for a test that they are all of them).
    #[cfg(test)]
    changed: Vec<usize>,
}

/// What a segment's reads need of its frames: the sparse position samples and the erased
/// frames' ranges.
struct Layout {
    samples: Vec<Sample>,
    erased: Vec<(u64, u64)>,
}

impl Engine {
    /// The rules of `stream` at version `last` and time `now` (see [`Engine::rules`]).
    pub(crate) fn rules_at(&self, stream: &str, last: u64, now: u64) -> Option<Rules> {
        if super::lifecycle::is_system(stream) {
            return self.rules(stream, last, u64::MAX);
        }
        let m = self.metadata_of(stream)?;
        Some(Rules::of(&m, last, now))
    }

    /// `Store::scavenge_with`: seals the active segment (so that its events can be erased
    /// too), then rewrites each sealed segment that holds newly dead events. `progress` is
    /// called before each segment; returning `false` stops the scavenge there.
    pub(crate) fn scavenge(
        &self,
        progress: &mut dyn FnMut(&ScavengeProgress) -> bool,
    ) -> Result<ScavengeReport> {
        self.check_writable()?;
        let _one = self.scavenging.lock();
        self.seal_active()?;
        // Only synced segments are rewritten.
        if let Some(position) = self.log.sync_unsynced()? {
            self.commit.advance(position);
        }
        let floor = self.durable_floor()?;
        let report = ScavengeReport {
            segments_retired: self.retain(Some(floor))?,
            ..ScavengeReport::default()
        };
        // Listed after retention, which replaced the segments it retired.
        let active = self.writer.lock().active.seg.ordinal;
        let unsynced = self.log.unsynced().map(|u| u.seg.ordinal);
        let sealed: Vec<Arc<Segment>> = self
            .log
            .segments()
            .into_iter()
            .filter(|s| s.ordinal < active && Some(s.ordinal) != unsynced)
            .collect();
        // Three threads of lower priority (background work: appends and reads come first):
        // one judges each segment and builds its image, the next writes the image before
        // (to its `.tmp` file), the last syncs the one before that and renames it over its
        // segment: the disk writes one while the CPU works on the next two, and swaps stay
        // in order, one at a time. This thread answers the progress callback.
        let (to_swap, swaps) = std::sync::mpsc::sync_channel::<(Arc<Segment>, Image)>(1);
        let (to_install, installs) = std::sync::mpsc::sync_channel::<(Arc<Segment>, Written)>(0);
        // The images' buffers come back once written, for the next segments' bytes: reused,
        // their pages are neither zeroed nor faulted in again (a fifth of the judge's time).
        let (give_back, spares) = std::sync::mpsc::channel::<Vec<u8>>();
        let (ask, questions) = std::sync::mpsc::sync_channel::<ScavengeProgress>(0);
        let (answer, answers) = std::sync::mpsc::sync_channel::<bool>(0);
        let spawn_error = |e| Error::io("spawn a scavenge thread", &self.dir, e);
        let panicked = || {
            Error::io(
                "scavenge",
                &self.dir,
                std::io::Error::other("a scavenge thread panicked"),
            )
        };
        let total = sealed.len() as u64;
        std::thread::scope(|scope| -> Result<ScavengeReport> {
            // Owned here, so that a panicking callback drops it and the judge stops waiting.
            let answer = answer;
            let installer = std::thread::Builder::new()
                .name("annal-scavenge-sync".into())
                .spawn_scoped(scope, move || -> Result<()> {
                    crate::engine::background_priority();
                    for (seg, written) in installs {
                        self.install(&seg, written)?;
                    }
                    Ok(())
                })
                .map_err(spawn_error)?;
            let writer = std::thread::Builder::new()
                .name("annal-scavenge-io".into())
                .spawn_scoped(scope, move || -> Result<()> {
                    crate::engine::background_priority();
                    for (seg, image) in swaps {
                        let (written, bytes) = self.write_image(&seg, image)?;
                        // The judge may be done with it: then it is dropped.
                        let _ = give_back.send(bytes);
                        if let Err(std::sync::mpsc::SendError((_, w))) =
                            to_install.send((seg, written))
                        {
                            // The installer stopped on an error, which it returns. The
                            // `.tmp` would hold its blocks (on a full disk, perhaps) until
                            // the next open.
                            drop(w.file);
                            let _ = self.while_open(|| remove_if_exists(self.storage(), &w.tmp));
                            break;
                        }
                    }
                    Ok(())
                })
                .map_err(spawn_error)?;
            let judge = std::thread::Builder::new()
                .name("annal-scavenge".into())
                .spawn_scoped(scope, move || -> Result<ScavengeReport> {
                    crate::engine::background_priority();
                    let images = Images { to_swap, spares };
                    self.judge_all(&sealed, floor, report, &ask, &answers, &images)
                })
                .map_err(spawn_error)?;
            for at in questions {
                // The judge has gone when it stopped (an error, or the writer's): it returns why.
                if answer.send(progress(&at)).is_err() {
                    break;
                }
            }
            let judged = judge.join().unwrap_or_else(|_| Err(panicked()));
            let written = writer.join().unwrap_or_else(|_| Err(panicked()));
            let installed = installer.join().unwrap_or_else(|_| Err(panicked()));
            // The installer's error first: the others stop because of it.
            installed?;
            let report = judged?;
            written?;
            if !report.stopped {
                progress(&ScavengeProgress {
                    done: total,
                    total,
                    events_erased: report.events_erased,
                    bytes_reclaimed: report.bytes_reclaimed(),
                });
            }
            Ok(report)
        })
    }

    /// The judging thread of a scavenge: asks before each segment whether to go on, builds
    /// the images of those with newly dead events and hands them to the writer.
    fn judge_all(
        &self,
        sealed: &[Arc<Segment>],
        floor: Watermark,
        mut report: ScavengeReport,
        ask: &std::sync::mpsc::SyncSender<ScavengeProgress>,
        answers: &std::sync::mpsc::Receiver<bool>,
        images: &Images,
    ) -> Result<ScavengeReport> {
        let mut judge = Judge::new(self, floor);
        let mut appends = self
            .written_appends
            .load(std::sync::atomic::Ordering::Acquire);
        let mut data = Vec::new();
        for (done, seg) in sealed.iter().enumerate() {
            let at = ScavengeProgress {
                done: done as u64,
                total: sealed.len() as u64,
                events_erased: report.events_erased,
                bytes_reclaimed: report.bytes_reclaimed(),
            };
            let go = ask.send(at).is_ok() && answers.recv().unwrap_or(false);
            if !go {
                report.stopped = true;
                break;
            }
            if self.is_closed() {
                return Err(Error::Closed);
            }
            report.segments_scanned += 1;
            let started = std::time::Instant::now();
            // Read, not viewed: a view would fault in the holes of erased frames (on tmpfs,
            // allocating them again).
            if data.capacity() == 0 {
                data = images.spares.try_recv().unwrap_or_default();
            }
            seg.pread_into(0, seg.end(), &mut data)?;
            judge.retire = seg.retired;
            let Some(image) = rewrite(seg, &mut data, &mut judge, seg.retired, false)? else {
                continue;
            };
            report.bytes_before += image.bytes_before;
            report.bytes_after += image.bytes_after;
            report.events_erased += image.erased;
            report.segments_rewritten += 1;
            report.first_erased = Some(
                report
                    .first_erased
                    .map_or(image.first_erased, |f| f.min(image.first_erased)),
            );
            if images.to_swap.send((Arc::clone(seg), image)).is_err() {
                // The writer stopped on an error, which it returns.
                break;
            }
            // Background work gives way to a busy writer: while appends come in, it rests
            // four times as long as it worked (with none, it runs at full speed). Twice was
            // not enough once appends stopped taking page faults (the writer map's pages
            // faulted in ahead by a thread that a scavenge's threads then also compete with).
            let now = self
                .written_appends
                .load(std::sync::atomic::Ordering::Acquire);
            if now != appends {
                std::thread::sleep((started.elapsed() * 4).min(Duration::from_secs(2)));
            }
            appends = self
                .written_appends
                .load(std::sync::atomic::Ordering::Acquire);
        }
        Ok(report)
    }

    /// After a roll (on the sealer's thread): applies retention, unless a scavenge is
    /// running (it applies retention first thing). A failure is only retention put off to
    /// the next roll.
    pub(crate) fn retain_in_background(&self) {
        if self.options.retention.keeps_all() || self.options.read_only {
            return;
        }
        if let Some(_one) = self.scavenging.try_lock() {
            let _ = self.retain(None);
        }
    }

    /// Applies [`Options::retention`](crate::Options::retention): retires the oldest sealed
    /// segments past it (each rewritten as one erased frame, its header flagged), oldest
    /// first, stopping at the first one kept. The newest sealed segment, and one whose sync
    /// a roll left for later, are kept. Each segment's current metadata events stay (the
    /// rules of their streams need them). Returns how many it retired. The caller holds
    /// `scavenging`; `floor` is [`Engine::durable_floor`], taken here when first needed if
    /// not given.
    fn retain(&self, floor: Option<Watermark>) -> Result<u64> {
        let retention = self.options.retention;
        if retention.keeps_all() {
            return Ok(0);
        }
        let active = self.writer.lock().active.seg.ordinal;
        let unsynced = self.log.unsynced().map(|u| u.seg.ordinal);
        let segments = self.log.segments();
        let mut kept_bytes: u64 = segments
            .iter()
            .filter(|s| !s.retired)
            .map(|s| s.end())
            .sum();
        let now = now_micros();
        let mut retired = 0;
        let mut judge = None;
        for seg in &segments {
            // The active segment and the newest sealed one stay, as does one not synced.
            if seg.ordinal + 1 >= active || Some(seg.ordinal) == unsynced {
                break;
            }
            if seg.retired {
                continue;
            }
            // A view (no copy) to decide; a copy only to retire.
            let view = seg.read(0, seg.end())?;
            let too_big = retention.max_bytes.is_some_and(|max| kept_bytes > max);
            let too_old = retention.max_age.is_some_and(|age| {
                let age = u64::try_from(age.as_micros()).unwrap_or(u64::MAX);
                newest_timestamp(seg, &view).is_ok_and(|t| t < now.saturating_sub(age))
            });
            if !too_big && !too_old {
                break;
            }
            let judge = match &mut judge {
                Some(j) => j,
                None => {
                    let floor = match floor {
                        Some(f) => f,
                        None => self.durable_floor()?,
                    };
                    judge.insert(Judge::new(self, floor))
                }
            };
            judge.retire = true;
            let mut data = seg.pread(0, seg.end())?;
            let Some(image) = rewrite(seg, &mut data, judge, true, true)? else {
                continue;
            };
            self.swap(seg, image)?;
            kept_bytes = kept_bytes.saturating_sub(seg.end());
            retired += 1;
        }
        Ok(retired)
    }

    /// A watermark everything up to which is durable: the published one, then synced.
    fn durable_floor(&self) -> Result<Watermark> {
        let floor = self.watermark();
        self.sync_all()?;
        Ok(floor)
    }

    /// The first position retention kept: after the leading segments it retired (1 when it
    /// retired none).
    pub(crate) fn retained_from(&self) -> u64 {
        self.log.with_segments(|segments| {
            let kept = segments.iter().position(|s| !s.retired);
            match kept.and_then(|i| segments.get(i)) {
                Some(seg) => seg.base_position,
                None => segments.last().map_or(1, |s| s.base_position),
            }
        })
    }

    /// Fails with [`Error::BehindRetention`] when `next` (the next position `what` would
    /// read, past 1: it has read something) is before what retention kept.
    pub(crate) fn check_retained(&self, what: impl FnOnce() -> String, next: u64) -> Result<()> {
        if next <= 1 || self.options.retention.keeps_all() {
            return Ok(());
        }
        let retained_from = self.retained_from();
        if next < retained_from {
            return Err(Error::BehindRetention {
                name: what(),
                position: next - 1,
                retained_from,
            });
        }
        Ok(())
    }

    /// Fails with [`Error::BehindRetention`] when retention dropped live events of `stream`
    /// (its first live one, by its metadata, is in a retired segment): an aggregate loaded
    /// from what is left would be wrong.
    pub(crate) fn check_stream_retained(&self, stream: &str) -> Result<()> {
        if self.options.retention.keeps_all() {
            return Ok(());
        }
        let last = self.index.read().version(stream).unwrap_or(0);
        let from = self
            .rules(stream, last, self.watermark().position)
            .map_or(1, |r| r.first_live);
        let first = self
            .index
            .read()
            .locations(stream, from, 1, u64::MAX)
            .and_then(|(_, locs)| locs.first().copied());
        let Some(loc) = first else {
            return Ok(());
        };
        let (ordinal, _) = super::index::unpack(loc);
        if self.log.segment(ordinal).is_some_and(|s| s.retired) {
            return Err(Error::BehindRetention {
                name: format!("stream {stream:?}"),
                position: 0,
                retained_from: self.retained_from(),
            });
        }
        Ok(())
    }

    /// Seals the active segment if it holds any frame (synced first: as a roll under
    /// `Always`), so that a scavenge can rewrite it.
    fn seal_active(&self) -> Result<()> {
        let mut guard = self.writer.lock();
        self.commit.check()?;
        let w = &mut *guard;
        if w.active.offset <= SEGMENT_HEADER_LEN {
            return Ok(());
        }
        let sealed = Arc::clone(&w.active.seg);
        let settled = match self.log.seal_now(&mut w.active, w.next_position) {
            Ok(s) => s,
            Err(e) => {
                self.commit.poison(e.to_string());
                return Err(e);
            }
        };
        if let Some(settled) = settled {
            self.commit.advance(settled);
        }
        // Sealing synced everything written: it is durable, and visible.
        let wm = Watermark {
            position: w.next_position - 1,
            location: pack(sealed.ordinal, sealed.end()),
        };
        self.publish(wm);
        self.commit.advance(wm.position);
        let ix = Some(Box::new(w.take_checkpoint()));
        if let Some(tx) = &w.to_seal {
            let _ = tx.send(SealJob::Sealed(sealed, ix));
        }
        Ok(())
    }

    /// Puts the rewritten image of `old` in its place, durably (see the module's comment),
    /// and in the log's list of segments.
    fn swap(&self, old: &Segment, image: Image) -> Result<()> {
        let (written, _) = self.write_image(old, image)?;
        self.install(old, written)
    }

    /// Writes the image of `old` to its `.tmp` file, not synced yet (a scavenge's writing
    /// thread: the syncing one installs it, while this one writes the next); hands back the
    /// image's buffer.
    fn write_image(&self, old: &Segment, image: Image) -> Result<(Written, Vec<u8>)> {
        let tmp = self.dir.join(format!("{}.tmp", file_name(old.ordinal)));
        // Only while the store is open: once `close` let the directory lock go, another
        // process may be scavenging the same segment.
        let file = self.while_open(|| {
            write_sparse(
                self.storage(),
                &tmp,
                &image.bytes,
                old.capacity,
                &image.layout.erased,
            )
        })?;
        let written = Written {
            file,
            tmp,
            len: image.bytes.len() as u64,
            layout: image.layout,
        };
        Ok((written, image.bytes))
    }

    /// Syncs a written image of `old`, and renames it over `old` (see the module's comment).
    fn install(&self, old: &Segment, written: Written) -> Result<()> {
        let storage = self.storage();
        let Written {
            file,
            tmp,
            len,
            layout,
        } = written;
        if let Err(e) = file.sync_data() {
            // The first error is the one worth reporting; the next open removes a leftover.
            let _ = storage.remove(&tmp);
            return Err(Error::io("fdatasync", &tmp, e));
        }
        drop(file);
        let dir = &self.dir;
        let path = dir.join(file_name(old.ordinal));
        // Only while the store is open: once `close` let the directory lock go, another
        // process may have the store.
        let seg = self.while_open(|| {
            let _checkpoints = self.checkpoint_lock.lock();
            // Gone for good before the new file takes the name: a crash in between then
            // leaves the old segment without a checkpoint (rebuilt on open), never the new
            // one with the old checkpoint.
            remove_if_exists(storage, &dir.join(checkpoint::file_name(old.ordinal)))?;
            sync_dir(storage, dir)?;
            storage
                .rename(&tmp, &path)
                .map_err(|e| Error::io("rename", &tmp, e))?;
            sync_dir(storage, dir)?;
            let (seg, _) = Segment::open(storage, dir, old.ordinal, false)?;
            seg.set_samples(layout.samples);
            seg.set_end(len);
            seg.set_erased(layout.erased);
            seg.seal();
            let seg = Arc::new(seg);
            self.log.replace(Arc::clone(&seg));
            Ok(seg)
        })?;
        // Its checkpoint is the sealer's to write, as for a segment a roll sealed (a next
        // open without one scans the segment and writes it).
        if let Some(tx) = &self.writer.lock().to_seal {
            let _ = tx.send(SealJob::Sealed(seg, None));
        }
        Ok(())
    }
}

/// Where the frames of `image` are; fails unless they are whole and hold the positions of
/// `frames` (`len` bytes of them), at the same offsets. Walks frame headers, and checksums
/// those at the offsets of `changed` (the frames the rewrite wrote, in order): the others
/// are the old file's bytes, whose checksums `judge_frames` checked, and the records inside
/// are those of the old file, or erased by this scavenge.
fn check_image(
    seg: &Segment,
    frames: &[Judged],
    len: usize,
    image: &[u8],
    changed: &[usize],
) -> Result<Layout> {
    let bad = || {
        Error::corruption(
            &seg.path,
            0,
            "internal: a scavenge's rewrite of this segment does not read back as its events",
        )
    };
    let mut layout = Layout {
        samples: Vec::new(),
        erased: Vec::new(),
    };
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut position = seg.base_position;
    let mut changed = changed.iter().peekable();
    loop {
        let read = if changed.next_if(|&&at| at == offset).is_some() {
            frame::read_frame(image, offset)
        } else {
            frame::read_frame_checked_before(image, offset)
        };
        let f = match read {
            FrameRead::End => break,
            FrameRead::Frame(f) => f,
            FrameRead::Bad(_) | FrameRead::Malformed(_) => return Err(bad()),
        };
        if f.first_position != position {
            return Err(bad());
        }
        if super::segment::sample_due(&layout.samples, f.offset as u64) {
            layout.samples.push(Sample {
                position,
                offset: f.offset as u64,
            });
        }
        if f.erased {
            layout.erased.push((f.offset as u64, f.end() as u64));
        }
        position += u64::from(f.count);
        offset = f.end();
    }
    let events: u64 = frames.iter().map(|f| f.count).sum();
    // A frame written where the walk found none is a rewrite gone wrong too.
    if offset != len || position != seg.base_position + events || changed.next().is_some() {
        return Err(bad());
    }
    Ok(layout)
}

/// The newest timestamp of the events of `data` (the segment's bytes); 0 when it has none.
fn newest_timestamp(seg: &Segment, data: &[u8]) -> Result<u64> {
    let mut newest = 0;
    for f in frames(seg, data) {
        let f = f?;
        if !f.erased {
            for part in f.parts() {
                for r in records(seg, data, &part) {
                    newest = newest.max(r?.1.timestamp);
                }
            }
        }
    }
    Ok(newest)
}

/// The frames of a segment's bytes `data`, from the first to empty space; one that fails
/// its check is corruption (the bytes of a sealed segment).
fn frames<'a>(seg: &'a Segment, data: &'a [u8]) -> impl Iterator<Item = Result<Frame<'a>>> {
    let mut offset = Some(SEGMENT_HEADER_BYTES);
    std::iter::from_fn(move || {
        let at = offset?;
        match frame::read_frame(data, at) {
            FrameRead::End => {
                offset = None;
                None
            }
            FrameRead::Frame(f) => {
                offset = Some(f.end());
                Some(Ok(f))
            }
            FrameRead::Bad(reason) | FrameRead::Malformed(reason) => {
                offset = None;
                Some(Err(Error::corruption(&seg.path, at as u64, reason)))
            }
        }
    })
}

/// The records of `part` (of a frame of `data` that is not erased), each with its offset.
fn records<'a>(
    seg: &'a Segment,
    data: &'a [u8],
    part: &Part<'_>,
) -> impl Iterator<Item = Result<(usize, frame::Record<'a>)>> {
    let mut at = part.records_offset;
    (0..part.count).map(move |_| {
        let r = frame::read_record(data, at, false)
            .map_err(|reason| Error::corruption(&seg.path, at as u64, reason))?;
        let start = std::mem::replace(&mut at, r.end);
        Ok((start, r))
    })
}

/// Bytes of the 4 KiB blocks of `data` that hold anything but zeros.
fn blocks(data: &[u8]) -> u64 {
    data.chunks(BLOCK)
        .filter(|b| b.iter().any(|&x| x != 0))
        .count() as u64
        * BLOCK as u64
}

/// Whether the block of `image` at `at` is left a hole: all zeros, inside one erased frame
/// (whose zeros nothing reads). Zeros anywhere else (an erased record's) are read with
/// their frame, so they are written: reading a hole through a map would allocate it again.
fn is_hole(block: &[u8], at: usize, erased: &[(u64, u64)]) -> bool {
    let (start, end) = (at as u64, (at + block.len()) as u64);
    let i = erased.partition_point(|&(s, _)| s <= start);
    let inside = i
        .checked_sub(1)
        .and_then(|i| erased.get(i))
        .is_some_and(|&(_, e)| end <= e);
    inside && block.iter().all(|&b| b == 0)
}

/// Bytes of the blocks of `image` a rewrite writes: all but its holes (`is_hole`).
fn written_blocks(image: &[u8], erased: &[(u64, u64)]) -> u64 {
    image
        .chunks(BLOCK)
        .enumerate()
        .filter(|(i, b)| !is_hole(b, i * BLOCK, erased))
        .count() as u64
        * BLOCK as u64
}

fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Where a scavenge's judge sends the images it builds, and gets their buffers back.
struct Images {
    to_swap: std::sync::mpsc::SyncSender<(Arc<Segment>, Image)>,
    spares: std::sync::mpsc::Receiver<Vec<u8>>,
}

/// A segment's image written to its `.tmp` file, to sync and rename.
struct Written {
    file: Box<dyn crate::storage::StorageFile>,
    tmp: std::path::PathBuf,
    /// The image's length: the new segment's data end.
    len: u64,
    layout: Layout,
}

/// Creates `path` at `len` bytes holding `image`, writing only its 4 KiB blocks that are not
/// all zeros (the others stay holes) and its last one; not synced.
fn write_sparse(
    storage: &dyn Storage,
    path: &Path,
    image: &[u8],
    len: u64,
    erased: &[(u64, u64)],
) -> Result<Box<dyn crate::storage::StorageFile>> {
    remove_if_exists(storage, path)?;
    let file = storage
        .create(path)
        .map_err(|e| Error::io("create", path, e))?;
    let written = (|| {
        file.set_len(len.max(image.len() as u64))
            .map_err(|e| Error::io("preallocate", path, e))?;
        let mut start: Option<usize> = None;
        let flush = |from: usize, to: usize| {
            file.write_all_at(image.get(from..to).unwrap_or_default(), from as u64)
                .map_err(|e| Error::io("write", path, e))
        };
        for (i, block) in image.chunks(BLOCK).enumerate() {
            let at = i * BLOCK;
            match (!is_hole(block, at, erased), start) {
                (true, None) => start = Some(at),
                (false, Some(s)) => {
                    flush(s, at)?;
                    start = None;
                }
                _ => {}
            }
        }
        // The last block is written even when it is zeros (the end of an erased frame): an
        // open finds the end of a segment's data by its last data region.
        let tail = image.len().saturating_sub(1) / BLOCK * BLOCK;
        flush(start.map_or(tail, |s| s.min(tail)), image.len())
    })();
    match written {
        Ok(()) => Ok(file),
        Err(e) => {
            // The first error is the one worth reporting; the next open removes a leftover.
            let _ = storage.remove(path);
            Err(e)
        }
    }
}

/// The image of `seg` (whose bytes are `data`, up to its end) with its newly dead events
/// erased, its header flagged `retired` (retention's); `None` when it has none, unless
/// `force` (retention retiring a segment whose events were all erased before). The image
/// takes `data`'s buffer (rewritten in place); with `None` it is left to the caller.
fn rewrite(
    seg: &Segment,
    data: &mut Vec<u8>,
    judge: &mut Judge<'_>,
    retired: bool,
    force: bool,
) -> Result<Option<Image>> {
    let frames = judge_frames(seg, data, judge)?;
    let newly: u64 = frames.iter().map(Judged::newly_dead).sum();
    if newly == 0 && !force {
        return Ok(None);
    }
    let first_erased = frames
        .iter()
        .filter(|f| !f.erased)
        .flat_map(|f| f.dead.iter().map(|d| d.position))
        .min()
        .unwrap_or(0);
    let (len, bytes_before) = (data.len(), blocks(data));
    // Rewritten in place: each run's names are copied out before its frames are erased.
    let mut out = std::mem::take(data);
    if let Some(h) = out.get_mut(..SEGMENT_HEADER_BYTES) {
        h.copy_from_slice(&encode_scavenged_header(
            seg.ordinal,
            seg.base_position,
            retired,
            seg.generation.saturating_add(1),
        ));
    }
    // Runs of frames with no live event become one erased frame each. `changed`: the
    // offsets of the frames written, in order.
    let mut run: Vec<&Judged> = Vec::new();
    let mut changed = Vec::new();
    for f in &frames {
        if f.live == 0 {
            run.push(f);
            continue;
        }
        erase_run(&mut out, &run, &mut changed);
        run.clear();
        erase_records(&mut out, f, &mut changed);
    }
    erase_run(&mut out, &run, &mut changed);
    let layout = check_image(seg, &frames, len, &out, &changed)?;
    Ok(Some(Image {
        #[cfg(test)]
        changed,
        bytes_after: written_blocks(&out, &layout.erased),
        bytes: out,
        bytes_before,
        layout,
        erased: newly,
        first_erased,
    }))
}

/// Writes one erased frame over a run of frames with no live event; when the run's list of
/// streams does not fit in it (it always does for whole frames), erases each record instead.
/// Notes the offset of each frame it writes in `changed`.
fn erase_run(out: &mut [u8], run: &[&Judged], changed: &mut Vec<usize>) {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return;
    };
    if run.len() == 1 && first.erased {
        return;
    }
    let mut parts: Vec<ErasedPart> = Vec::new();
    for (name, first_version, count) in run.iter().flat_map(|f| f.parts.iter()) {
        let (first_version, count) = (*first_version, *count);
        let stream = std::str::from_utf8(out.get(name.clone()).unwrap_or_default()).unwrap_or("");
        match parts.last_mut() {
            Some(q)
                if q.stream == stream
                    && q.first_version + u64::from(q.count) == first_version
                    && q.count.checked_add(count).is_some() =>
            {
                q.count += count;
            }
            _ => parts.push(ErasedPart {
                stream: stream.to_string(),
                first_version,
                count,
            }),
        }
    }
    let len = last.end - first.offset;
    if frame::erased_frame_fits(len, &parts) {
        if let Some(span) = out.get_mut(first.offset..last.end) {
            frame::erase_frame(span, first.first_position, first.durable, &parts);
            changed.push(first.offset);
        }
    } else {
        for f in run {
            erase_records(out, f, changed);
        }
    }
}

/// Erases the dead records of a frame that keeps others, and seals the frame again (its
/// offset noted in `changed`).
fn erase_records(out: &mut [u8], f: &Judged, changed: &mut Vec<usize>) {
    if f.erased || f.dead.is_empty() {
        return;
    }
    for d in &f.dead {
        if let Some(span) = out.get_mut(d.start..d.end) {
            frame::erase_record(span, d.position, d.version, d.edges);
        }
    }
    if let Some(span) = out.get_mut(f.offset..f.end) {
        frame::reseal_frame(span);
        changed.push(f.offset);
    }
}

/// Every frame of `data`, each event judged live or dead.
fn judge_frames(seg: &Segment, data: &[u8], judge: &mut Judge<'_>) -> Result<Vec<Judged>> {
    let mut judged = Vec::new();
    for f in frames(seg, data) {
        let f = f?;
        let mut j = Judged {
            offset: f.offset,
            end: f.end(),
            first_position: f.first_position,
            durable: f.durable,
            count: u64::from(f.count),
            parts: f
                .parts()
                .map(|p| {
                    let at = p.stream.as_ptr().addr() - data.as_ptr().addr();
                    (at..at + p.stream.len(), p.first_version, p.count)
                })
                .collect(),
            erased: f.erased,
            live: 0,
            dead: Vec::new(),
            erased_records: 0,
        };
        if !f.erased {
            for part in f.parts() {
                let verdict = judge.of(part.stream);
                for r in records(seg, data, &part) {
                    let (at, r) = r?;
                    if r.erased {
                        j.erased_records += 1;
                    } else if verdict.keeps(r.version, r.timestamp) {
                        j.live += 1;
                    } else {
                        j.dead.push(DeadRecord {
                            start: at,
                            end: r.end,
                            position: r.position,
                            version: r.version,
                            edges: r.edges,
                        });
                    }
                }
            }
        }
        judged.push(j);
    }
    Ok(judged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing;
    use crate::event::ExpectedVersion;
    use crate::lifecycle::DeleteMode;

    /// A sealed segment whose frames alternate between a live and a hard-deleted stream, its
    /// bytes, its image with the deleted stream erased, and the offsets of the image's
    /// frames whose bytes the rewrite changed.
    fn rewritten() -> (Arc<Engine>, Arc<Segment>, Vec<u8>, Image, Vec<usize>) {
        let (_disk, engine) = testing::fresh();
        for i in 0..200 {
            testing::append(&engine, "live-1", 3);
            testing::append(&engine, "dead-1", 3);
            if i % 10 == 0 {
                // A frame of both: its dead records are erased, the frame resealed.
                let e = || vec![crate::event::EventData::new("T", "both")];
                let tx = crate::transaction::Transaction::new()
                    .append("live-1", ExpectedVersion::Any, e())
                    .append("dead-1", ExpectedVersion::Any, e());
                engine.commit_transaction(&tx).unwrap();
            }
        }
        engine
            .delete_stream("dead-1", ExpectedVersion::Any, DeleteMode::Hard)
            .unwrap();
        let seg = Arc::clone(&engine.log.segments()[0]);
        assert!(seg.ordinal < engine.writer.lock().active.seg.ordinal);
        let floor = engine.durable_floor().unwrap();
        let data = seg.pread(0, seg.end()).unwrap();
        let mut buf = data.clone();
        let image = rewrite(
            &seg,
            &mut buf,
            &mut Judge::new(&engine, floor),
            false,
            false,
        )
        .unwrap()
        .unwrap();
        assert!(buf.is_empty(), "the image took the buffer");
        let changed: Vec<usize> = frames(&seg, &image.bytes)
            .map(|f| f.unwrap())
            .filter(|f| data.get(f.offset..f.end()) != image.bytes.get(f.offset..f.end()))
            .map(|f| f.offset)
            .collect();
        assert!(changed.len() > 10, "{changed:?}");
        let resealed = frames(&seg, &image.bytes)
            .map(|f| f.unwrap())
            .filter(|f| !f.erased && changed.contains(&f.offset))
            .count();
        assert!(resealed > 3, "frames with erased records: {resealed}");
        // What the rewrite noted is every frame it changed, and only those: `check_image`
        // checksums exactly these.
        assert_eq!(image.changed, changed);
        (engine, seg, data, image, changed)
    }

    #[test]
    fn an_image_is_checked_by_its_changed_frames_checksums_and_its_walk() {
        let (engine, seg, data, image, changed) = rewritten();
        let frames =
            judge_frames(&seg, &data, &mut Judge::new(&engine, engine.watermark())).unwrap();
        let len = data.len();
        let check =
            |bytes: &[u8], changed: &[usize]| check_image(&seg, &frames, len, bytes, changed);
        assert!(check(&image.bytes, &changed).is_ok());
        // A changed frame is checksummed: a flipped byte in its list of erased streams fails.
        let mut bad = image.bytes.clone();
        bad[changed[3] + 40] ^= 1;
        assert!(check(&bad, &changed).is_err());
        // A frame the rewrite says it wrote, where the walk finds none, fails.
        let mut extra = changed.clone();
        extra.push(len - 1);
        assert!(check(&image.bytes, &extra).is_err());
        // An unchanged frame is the old file's bytes, checked when they were judged: its
        // checksum is not computed again (a flipped payload byte goes unseen here).
        let kept = frames.iter().find(|f| f.live > 0).unwrap();
        let mut flipped = image.bytes.clone();
        flipped[kept.end - 1] ^= 1;
        assert!(check(&flipped, &changed).is_ok());
        let mut all: Vec<usize> = frames.iter().map(|f| f.offset).collect();
        all.retain(|o| changed.contains(o) || *o == kept.offset);
        assert!(check(&flipped, &all).is_err());
    }
}
