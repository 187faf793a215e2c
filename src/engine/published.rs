//! The writer's acknowledged position, shared with followers in other processes through
//! the mapped `PUBLISHED` file ([`format::published_file`](super::format::published_file)):
//! a writer stores a few words per publish, a follower loads them, and neither makes a
//! system call for it.

use std::path::Path;
use std::sync::atomic::{Ordering, fence};

use super::Watermark;
use super::format::published_file::{
    EPOCH, EPOCH_START, LOCATION, MAGIC, PID, POSITION, PUBLISHED_FILE, SEQ, WORDS,
};
use crate::error::{Error, Result};
use crate::storage::{SharedWords, Storage};

/// What a writer last published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Published {
    /// Which writable open published it (each one takes the next epoch).
    pub epoch: u64,
    /// Where that open's recovery found the log to end.
    pub epoch_start: u64,
    /// The acknowledged position and the location just past it.
    pub acknowledged: Watermark,
}

/// The mapped `PUBLISHED` file.
#[derive(Debug)]
pub(crate) struct Board {
    words: SharedWords,
}

impl Board {
    /// A writer's board: creates `PUBLISHED` if needed and starts the next epoch at `start`
    /// (what recovery found). `None` when the storage has no shared memory (a simulated
    /// disk): followers then cannot follow this store.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        start: Watermark,
    ) -> Result<Option<Board>> {
        if !storage.shares_memory() {
            return Ok(None);
        }
        let path = dir.join(PUBLISHED_FILE);
        let file = match storage.open(&path, true) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => storage
                .create(&path)
                .map_err(|e| Error::io("create", &path, e))?,
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let len = (WORDS * 8) as u64;
        if file.len().map_err(|e| Error::io("stat", &path, e))? < len {
            file.set_len(len)
                .map_err(|e| Error::io("set length", &path, e))?;
        }
        let Some(words) = file
            .shared_words(WORDS)
            .map_err(|e| Error::io("mmap", &path, e))?
        else {
            return Ok(None);
        };
        let board = Board::new(words, &path)?;
        let w = |i| board.word(i);
        let fresh = w(0).load(Ordering::Acquire) != MAGIC;
        let epoch = if fresh {
            0
        } else {
            w(EPOCH).load(Ordering::Acquire)
        };
        // A writer that died inside an update left `seq` odd: make it even first.
        let seq = w(SEQ).load(Ordering::Acquire);
        if seq % 2 == 1 {
            w(SEQ).store(seq + 1, Ordering::Release);
        }
        board.update(|b| {
            b.word(EPOCH).store(epoch + 1, Ordering::Relaxed);
            b.word(EPOCH_START).store(start.position, Ordering::Relaxed);
            b.word(POSITION).store(start.position, Ordering::Relaxed);
            b.word(LOCATION).store(start.location, Ordering::Relaxed);
            b.word(PID)
                .store(u64::from(std::process::id()), Ordering::Relaxed);
        });
        if fresh {
            w(0).store(MAGIC, Ordering::Release);
        }
        Ok(Some(board))
    }

    /// A follower's board: `None` while there is no `PUBLISHED` (no writer has opened the
    /// store with this version yet), or the storage has no shared memory.
    pub(crate) fn open(storage: &dyn Storage, dir: &Path) -> Result<Option<Board>> {
        let path = dir.join(PUBLISHED_FILE);
        let file = match storage.open(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        if file.len().map_err(|e| Error::io("stat", &path, e))? < (WORDS * 8) as u64 {
            // Being created by a writer right now: try again later.
            return Ok(None);
        }
        match file
            .shared_words(WORDS)
            .map_err(|e| Error::io("mmap", &path, e))?
        {
            Some(words) => Board::new(words, &path).map(Some),
            None => Ok(None),
        }
    }

    fn new(words: SharedWords, path: &Path) -> Result<Board> {
        if words.word(WORDS - 1).is_none() {
            return Err(Error::corruption(
                path,
                0,
                "PUBLISHED is mapped shorter than its words",
            ));
        }
        Ok(Board { words })
    }

    fn word(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        // Every index used is a constant below WORDS, all of which `new` checked are mapped.
        match self.words.word(i) {
            Some(w) => w,
            None => unreachable_word(),
        }
    }

    /// Writes under the seqlock.
    fn update(&self, write: impl FnOnce(&Board)) {
        let seq = self.word(SEQ);
        seq.fetch_add(1, Ordering::AcqRel);
        fence(Ordering::Release);
        write(self);
        seq.fetch_add(1, Ordering::Release);
    }

    /// A writer publishes what its readers may now read.
    pub(crate) fn publish(&self, wm: Watermark) {
        self.update(|b| {
            b.word(POSITION).store(wm.position, Ordering::Relaxed);
            b.word(LOCATION).store(wm.location, Ordering::Relaxed);
        });
    }

    /// What the writer last published; `None` when it is being written right now (or never
    /// was: no magic yet).
    pub(crate) fn read(&self) -> Option<Published> {
        for _ in 0..64 {
            let before = self.word(SEQ).load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let magic = self.word(0).load(Ordering::Relaxed);
            let epoch = self.word(EPOCH).load(Ordering::Relaxed);
            let epoch_start = self.word(EPOCH_START).load(Ordering::Relaxed);
            let position = self.word(POSITION).load(Ordering::Relaxed);
            let location = self.word(LOCATION).load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.word(SEQ).load(Ordering::Relaxed) == before {
                return (magic == MAGIC).then_some(Published {
                    epoch,
                    epoch_start,
                    acknowledged: Watermark { position, location },
                });
            }
        }
        None
    }
}

/// `word` is only called with constant indices below `WORDS`.
#[cold]
fn unreachable_word() -> &'static std::sync::atomic::AtomicU64 {
    static ZERO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    &ZERO
}
