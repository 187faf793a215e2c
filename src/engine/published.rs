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
        let fresh = board.load(0) != MAGIC;
        let epoch = if fresh { 0 } else { board.load(EPOCH) };
        // A writer that died inside an update left `seq` odd: make it even first.
        let seq = board.load(SEQ);
        if seq % 2 == 1 {
            board.words.store(SEQ, seq + 1);
        }
        board.update(|b| {
            b.words.store(EPOCH, epoch + 1);
            b.words.store(EPOCH_START, start.position);
            b.words.store(POSITION, start.position);
            b.words.store(LOCATION, start.location);
            b.words.store(PID, u64::from(std::process::id()));
        });
        if fresh {
            board.words.store(0, MAGIC);
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
        if words.load(WORDS - 1).is_none() {
            return Err(Error::corruption(
                path,
                0,
                "PUBLISHED is mapped shorter than its words",
            ));
        }
        Ok(Board { words })
    }

    /// Word `i`: every index used is a constant below `WORDS`, all mapped (checked by `new`).
    fn load(&self, i: usize) -> u64 {
        self.words.load(i).unwrap_or(0)
    }

    /// Writes under the seqlock: `seq` odd, the words, `seq` even (release stores).
    fn update(&self, write: impl FnOnce(&Board)) {
        let seq = self.load(SEQ);
        self.words.store(SEQ, seq | 1);
        fence(Ordering::Release);
        write(self);
        self.words.store(SEQ, (seq | 1) + 1);
    }

    /// A writer publishes what its readers may now read.
    pub(crate) fn publish(&self, wm: Watermark) {
        self.update(|b| {
            b.words.store(POSITION, wm.position);
            b.words.store(LOCATION, wm.location);
        });
    }

    /// The epoch word as it is, without the seqlock: which writer wrote last, even when its
    /// update never finished.
    pub(crate) fn raw_epoch(&self) -> u64 {
        self.load(EPOCH)
    }

    /// What the writer last published; `None` when it is being written right now, a writer
    /// died in the middle of writing it, or no writer has (no magic yet).
    pub(crate) fn read(&self) -> Option<Published> {
        for _ in 0..64 {
            if let Some(p) = self.try_read() {
                return p;
            }
            std::hint::spin_loop();
        }
        None
    }

    /// [`read`](Self::read), retried for up to `patience` while the writer is inside an
    /// update (it takes nanoseconds, unless the writer was preempted or died there).
    pub(crate) fn read_patiently(&self, patience: std::time::Duration) -> Option<Published> {
        let until = std::time::Instant::now() + patience;
        loop {
            if let Some(p) = self.try_read() {
                return p;
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// One attempt: `None` when `seq` was odd or moved; `Some(None)` when no writer has
    /// written the board yet.
    fn try_read(&self) -> Option<Option<Published>> {
        let before = self.load(SEQ);
        if before % 2 == 1 {
            return None;
        }
        let magic = self.words.load(0).unwrap_or(0);
        let epoch = self.words.load(EPOCH).unwrap_or(0);
        let epoch_start = self.words.load(EPOCH_START).unwrap_or(0);
        let position = self.words.load(POSITION).unwrap_or(0);
        let location = self.words.load(LOCATION).unwrap_or(0);
        (self.load(SEQ) == before).then(|| {
            (magic == MAGIC).then_some(Published {
                epoch,
                epoch_start,
                acknowledged: Watermark { position, location },
            })
        })
    }
}
