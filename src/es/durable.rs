//! Durable subscriptions: a named subscription to the whole log whose acknowledged position
//! is kept in the store, so delivery resumes after it following a restart or a crash.
//!
//! Delivery is **at least once, in order**: events after the last acknowledged position are
//! delivered again after a restart, including any the consumer had handled but not yet
//! acknowledged. A consumer that must not act twice deduplicates by event id or position.
//!
//! The position lives in `NAME.sub`: two 32-byte slots written alternately, each with a
//! sequence number and a CRC, so a torn write can only ever cost the newest ack. Under
//! [`FsyncPolicy::Always`](crate::FsyncPolicy::Always) an ack is synced before `ack` returns;
//! under the other policies it is synced when the subscription is dropped and may otherwise be
//! lost in a power failure (never in a process crash), which means redelivery, not loss.
#![deny(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::engine::Engine;
use crate::engine::format::ack_file::{
    FOLLOWERS_DIR, LOCK_SUFFIX, SLOT_LEN, SUFFIX, decode_slots, encode_file, encode_slot,
};
use crate::error::{Error, Result};
use crate::es::subscription::Subscription;
use crate::event::RecordedEvent;
use crate::options::FsyncPolicy;
use crate::storage::{Storage, StorageFile};

/// A durable subscription as listed by [`Store::durable_subscriptions`](crate::Store::durable_subscriptions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableInfo {
    /// Its name.
    pub name: String,
    /// The last acknowledged position (0: none).
    pub acked_position: u64,
    /// Events appended after the acknowledged position: last position minus acknowledged.
    pub lag: u64,
}

/// Checks a name for a durable subscription or projection: 1 to 128 ASCII letters, digits,
/// `-`, `_` or `.`, not starting with `.`.
pub(crate) fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} name {name:?}: use 1 to 128 of A-Z a-z 0-9 - _ . (not starting with .)"
        )))
    }
}

/// The registry of durable subscriptions of an open store.
#[derive(Debug)]
pub(crate) struct Registry {
    /// Name to (acknowledged position, whether a handle is open).
    subs: BTreeMap<String, (u64, bool)>,
    /// Where the ack files are: the store directory, or a follower's `followers/` in it.
    dir: PathBuf,
    /// Shared with other processes (a follower's): each open handle holds `NAME.lock`, and
    /// the files on disk, not this registry, say what exists.
    shared: bool,
    /// The `NAME.lock`s this process holds (a follower's), released when the store closes
    /// even if their handles live on.
    held: BTreeMap<String, HeldLock>,
}

/// A follower's hold on `NAME.lock`, shared by its handle and the registry.
type HeldLock = Arc<Mutex<Option<Box<dyn std::any::Any + Send + Sync>>>>;

fn path_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{SUFFIX}"))
}

/// Reads an ack file: (sequence, position); a file with no valid slot reads as position 0.
fn read_ack(
    storage: &dyn Storage,
    path: &Path,
    write: bool,
) -> Result<(Arc<dyn StorageFile>, u64, u64)> {
    let file: Arc<dyn StorageFile> = Arc::from(
        storage
            .open(path, write)
            .map_err(|e| Error::io("open", path, e))?,
    );
    let mut buf = [0u8; 2 * SLOT_LEN];
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    let n = crate::cast::usize_from(len).min(buf.len());
    if let Some(b) = buf.get_mut(..n) {
        file.read_exact_at(b, 0)
            .map_err(|e| Error::io("read", path, e))?;
    }
    let (seq, position) = decode_slots(&buf).unwrap_or((0, 0));
    Ok((file, seq, position))
}

fn write_slot(
    file: &dyn StorageFile,
    path: &Path,
    seq: u64,
    position: u64,
    sync: bool,
) -> Result<()> {
    let at = (seq % 2) * SLOT_LEN as u64;
    file.write_all_at(&encode_slot(seq, position), at)
        .map_err(|e| Error::io("write", path, e))?;
    if sync {
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", path, e))?;
    }
    Ok(())
}

impl Registry {
    /// Loads every `NAME.sub` in `dir`. Positions past `last_position` (the end of the log
    /// after recovery) are pulled back to it and rewritten: those events were lost with the
    /// log's tail, and new events will take their positions.
    pub(crate) fn open(
        storage: &dyn Storage,
        dir: &Path,
        last_position: u64,
        write: bool,
    ) -> Result<Self> {
        Ok(Registry {
            subs: load(storage, dir, last_position, write)?,
            dir: dir.to_path_buf(),
            shared: false,
            held: BTreeMap::new(),
        })
    }

    /// A follower's registry, in `store_dir/followers`: read when listed, not at open, so
    /// that nothing in that folder (which other followers change) can fail a follower's open.
    pub(crate) fn open_shared(store_dir: &Path) -> Self {
        Registry {
            subs: BTreeMap::new(),
            dir: store_dir.join(FOLLOWERS_DIR),
            shared: true,
            held: BTreeMap::new(),
        }
    }

    /// Reads again what other processes may have changed (a follower's registry).
    fn refresh(&mut self, storage: &dyn Storage, last_position: u64) -> Result<()> {
        if !self.shared {
            return Ok(());
        }
        let on_disk = match storage.list(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            _ => load(storage, &self.dir, last_position, false)?,
        };
        let open: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, (_, open))| *open)
            .map(|(name, _)| name.clone())
            .collect();
        let mut subs = on_disk;
        for name in open {
            // This process's own handles know their acks best.
            if let Some(&(acked, _)) = self.subs.get(&name) {
                subs.insert(name, (acked, true));
            }
        }
        self.subs = subs;
        Ok(())
    }
}

/// The followers' durable subscriptions, read from `followers/` by a store that is not a
/// follower (changing nothing); none on a follower.
pub(crate) fn list_followers(inner: &Engine) -> Result<Vec<DurableInfo>> {
    if inner.options.follow {
        return Ok(Vec::new());
    }
    let dir = inner.dir.join(FOLLOWERS_DIR);
    if inner.storage().list(&dir).is_err() {
        return Ok(Vec::new());
    }
    let last = inner.last_position();
    Ok(infos(&load(inner.storage(), &dir, last, false)?, last))
}

/// Subscriptions by name (with their acked positions) as listed, with their lag behind
/// `last_position`.
fn infos(subs: &BTreeMap<String, (u64, bool)>, last_position: u64) -> Vec<DurableInfo> {
    subs.iter()
        .map(|(name, &(acked, _))| DurableInfo {
            name: name.clone(),
            acked_position: acked,
            lag: last_position.saturating_sub(acked),
        })
        .collect()
}

/// The ack files in `dir`, by name, with positions past `last_position` pulled back (and,
/// with `write`, rewritten).
fn load(
    storage: &dyn Storage,
    dir: &Path,
    last_position: u64,
    write: bool,
) -> Result<BTreeMap<String, (u64, bool)>> {
    let mut subs = BTreeMap::new();
    for name in storage.list(dir).map_err(|e| Error::io("list", dir, e))? {
        let Some(sub) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        if validate_name("subscription", sub).is_err() {
            continue;
        }
        let path = path_of(dir, sub);
        let (file, seq, mut position) = match read_ack(storage, &path, write) {
            Ok(read) => read,
            // Deleted since the listing (by another follower): not there.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(e),
        };
        if position > last_position {
            position = last_position;
            if write {
                write_slot(file.as_ref(), &path, seq + 1, position, true)?;
            }
        }
        subs.insert(sub.to_string(), (position, false));
    }
    Ok(subs)
}

impl Registry {
    pub(crate) fn list(&self, last_position: u64) -> Vec<DurableInfo> {
        infos(&self.subs, last_position)
    }
}

/// Opens (creating if needed) the durable subscription `name`.
pub(crate) fn open(
    inner: &Arc<Engine>,
    registry: &Arc<Mutex<Registry>>,
    name: &str,
) -> Result<DurableSubscription> {
    validate_name("subscription", name)?;
    let (dir, shared) = {
        let reg = registry.lock();
        (reg.dir.clone(), reg.shared)
    };
    if !shared {
        inner.check_writable()?;
    }
    let path = path_of(&dir, name);
    let known = {
        let mut reg = registry.lock();
        match reg.subs.get_mut(name) {
            Some((_, true)) => {
                return Err(Error::InvalidArgument(format!(
                    "durable subscription {name:?} is already open"
                )));
            }
            Some((_, open)) => {
                *open = true;
                true
            }
            None => {
                reg.subs.insert(name.to_string(), (0, true));
                false
            }
        }
    };
    let opened = open_file(inner, &dir, shared, name, &path);
    let (file, seq, acked, lock) = match opened {
        Ok(x) => x,
        Err(e) => {
            let exists = known || inner.storage().open(&path, false).is_ok();
            let mut reg = registry.lock();
            if !exists {
                reg.subs.remove(name);
            } else if let Some((_, open)) = reg.subs.get_mut(name) {
                *open = false;
            }
            return Err(e);
        }
    };
    let lock = lock.map(|l| Arc::new(Mutex::new(Some(l))));
    {
        let mut reg = registry.lock();
        if let Some(entry) = reg.subs.get_mut(name) {
            entry.0 = acked;
        }
        if let Some(l) = &lock {
            reg.held.insert(name.to_string(), Arc::clone(l));
        }
    }
    let mut sub = Subscription::all(Arc::clone(inner), acked + 1);
    sub.guard_retention(format!("durable subscription {name:?}"));
    Ok(DurableSubscription {
        name: name.to_string(),
        sub,
        inner: Arc::clone(inner),
        registry: Arc::clone(registry),
        file,
        path,
        seq,
        acked,
        synced: true,
        _lock: lock,
    })
}

type Opened = (
    Arc<dyn StorageFile>,
    u64,
    u64,
    Option<Box<dyn std::any::Any + Send + Sync>>,
);

/// Opens `name`'s ack file, creating it at position 0 if it does not exist. In a shared
/// registry, first takes `NAME.lock`, so one process at a time has the subscription open,
/// and pulls back an ack past the end of the log.
fn open_file(inner: &Engine, dir: &Path, shared: bool, name: &str, path: &Path) -> Result<Opened> {
    let storage = inner.storage();
    let lock = if shared {
        create_dir(storage, dir)?;
        Some(lock_name(storage, dir, name)?)
    } else {
        None
    };
    match storage.open(path, false) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::storage::replace_file(
                storage,
                dir,
                &format!("{name}{SUFFIX}"),
                &encode_file(0),
            )?;
        }
        // An ack file that is there but cannot be read is never replaced by a new one.
        Err(e) => return Err(Error::io("open", path, e)),
    }
    let (file, mut seq, mut acked) = read_ack(storage, path, true)?;
    let last = inner.last_position();
    if shared && acked > last {
        seq += 1;
        acked = last;
        write_slot(file.as_ref(), path, seq, acked, true)?;
    }
    Ok((file, seq, acked, lock))
}

/// Creates a follower's `followers/` folder, durably, if it is not there.
fn create_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    if storage.list(dir).is_ok() {
        return Ok(());
    }
    storage
        .create_dir_all(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    if let Some(parent) = dir.parent() {
        storage
            .sync_dir(parent)
            .map_err(|e| Error::io("fsync directory", parent, e))?;
    }
    Ok(())
}

/// Takes `NAME.lock` in a shared registry's folder.
fn lock_name(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
) -> Result<Box<dyn std::any::Any + Send + Sync>> {
    let path = dir.join(format!("{name}{LOCK_SUFFIX}"));
    storage.lock(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => {
            Error::InvalidArgument(match crate::storage::lock_holder(storage, &path) {
                Some(pid) => format!(
                    "durable subscription {name:?} is already open, in process {pid} ({})",
                    path.display()
                ),
                None => format!(
                    "durable subscription {name:?} is already open, in another process ({})",
                    path.display()
                ),
            })
        }
        _ => Error::io("lock", &path, e),
    })
}

/// Deletes the durable subscription `name`; false if there was none.
pub(crate) fn delete(inner: &Engine, registry: &Mutex<Registry>, name: &str) -> Result<bool> {
    validate_name("subscription", name)?;
    let mut reg = registry.lock();
    if !reg.shared {
        inner.check_writable()?;
    }
    reg.refresh(inner.storage(), inner.last_position())?;
    match reg.subs.get(name) {
        None => return Ok(false),
        Some((_, true)) => {
            return Err(Error::InvalidArgument(format!(
                "durable subscription {name:?} is open; drop it first"
            )));
        }
        Some(_) => {}
    }
    let dir = reg.dir.clone();
    let storage = inner.storage();
    let lock = if reg.shared {
        Some(lock_name(storage, &dir, name)?)
    } else {
        None
    };
    let path = path_of(&dir, name);
    storage
        .remove(&path)
        .map_err(|e| Error::io("remove", &path, e))?;
    // `NAME.lock` stays: unlinking a lock file that another process may have opened but not
    // yet locked would let that one and a newcomer both hold the name.
    storage
        .sync_dir(&dir)
        .map_err(|e| Error::io("fsync directory", &dir, e))?;
    reg.subs.remove(name);
    drop(lock);
    Ok(true)
}

/// Every durable subscription with its acknowledged position and lag; a follower's read
/// again from its folder, where other followers may have added some.
pub(crate) fn list(inner: &Engine, registry: &Mutex<Registry>) -> Result<Vec<DurableInfo>> {
    let last = inner.last_position();
    let mut reg = registry.lock();
    reg.refresh(inner.storage(), last)?;
    Ok(reg.list(last))
}

/// A named subscription to the whole log that resumes after its last acknowledged position;
/// from [`Store::durable_subscription`](crate::Store::durable_subscription).
///
/// Only one handle per name can be open at a time. See the module docs for the guarantee.
#[derive(Debug)]
pub struct DurableSubscription {
    name: String,
    sub: Subscription,
    inner: Arc<Engine>,
    registry: Arc<Mutex<Registry>>,
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    seq: u64,
    acked: u64,
    synced: bool,
    /// A follower's hold on `NAME.lock`, released on drop or when the store closes.
    _lock: Option<HeldLock>,
}

impl DurableSubscription {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last acknowledged position (0: none).
    pub fn acked_position(&self) -> u64 {
        self.acked
    }

    /// Only the events `query` selects, found through the query index (others are never
    /// read). Like the other filters it is not stored: give it each time the subscription is
    /// opened. An ack still means "everything up to here is handled".
    pub fn query(mut self, query: crate::query::Query) -> Self {
        self.sub.set_query(query);
        self
    }

    /// Only events of streams whose name starts with `prefix`. Filters are not stored: give
    /// them each time the subscription is opened.
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.sub.set_prefix(prefix.into());
        self
    }

    /// Only events of these types.
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sub
            .set_types(types.into_iter().map(Into::into).collect());
        self
    }

    /// The next event, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the store has closed and everything acknowledged before was
    /// delivered; [`Error::Corruption`] or [`Error::Io`] from reading the log.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<RecordedEvent>> {
        self.sub.next_timeout(timeout)
    }

    /// Records that every event up to `position` has been handled. Acknowledging a position
    /// at or below the current one does nothing; one beyond the last delivered event is
    /// refused.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a position past the last one delivered; [`Error::Io`]
    /// when the ack file cannot be written (or synced, under [`FsyncPolicy::Always`]);
    /// [`Error::Closed`] once the store is closed.
    pub fn ack(&mut self, position: u64) -> Result<()> {
        if position > self.sub.last_position() && position > self.acked {
            return Err(Error::InvalidArgument(format!(
                "durable subscription {:?}: cannot acknowledge position {position}, only {} was delivered",
                self.name,
                self.sub.last_position()
            )));
        }
        self.record_ack(position)
    }

    /// Acknowledges `position`, handled by the caller without reading it from this
    /// subscription (the relay reads the log itself); at most the last published position.
    #[cfg(feature = "nats")]
    pub(crate) fn ack_handled(&mut self, position: u64) -> Result<()> {
        self.record_ack(position.min(self.inner.last_position()))
    }

    fn record_ack(&mut self, position: u64) -> Result<()> {
        if position <= self.acked {
            return Ok(());
        }
        let sync = self.inner.options.fsync == FsyncPolicy::Always;
        self.inner.while_open(|| {
            write_slot(self.file.as_ref(), &self.path, self.seq + 1, position, sync)
        })?;
        self.seq += 1;
        self.acked = position;
        self.synced = sync;
        if let Some(entry) = self.registry.lock().subs.get_mut(&self.name) {
            entry.0 = position;
        }
        Ok(())
    }
}

impl Iterator for DurableSubscription {
    type Item = Result<RecordedEvent>;

    /// Blocks until the next event; `None` once the store is closed and drained.
    fn next(&mut self) -> Option<Self::Item> {
        self.sub.next()
    }
}

#[cfg(feature = "async")]
impl DurableSubscription {
    /// The next event, awaited (feature `async`), as
    /// [`Subscription::next_async`]; `None` once the store is closed and drained.
    /// [`ack`](DurableSubscription::ack) stays a plain call: it writes a few bytes to the
    /// subscription's file (and syncs it under `Always`).
    pub async fn next_async(&mut self) -> Option<Result<RecordedEvent>> {
        self.sub.next_async().await
    }

    /// This subscription as a [`Stream`](futures_core::Stream) (feature `async`); acks go
    /// through the stream (it dereferences to the subscription).
    pub fn into_stream(self) -> crate::es::event_stream::EventStream<Self> {
        crate::es::event_stream::EventStream::new(self)
    }

    pub(crate) fn poll_event(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<RecordedEvent>>> {
        self.sub.poll_event(cx)
    }
}

impl Drop for DurableSubscription {
    fn drop(&mut self) {
        if !self.synced {
            let _ = self.file.sync_data();
        }
        let mut reg = self.registry.lock();
        if let Some(entry) = reg.subs.get_mut(&self.name) {
            entry.1 = false;
        }
        reg.held.remove(&self.name);
    }
}

/// Lets go of every `NAME.lock` this process holds, when its store closes: its handles
/// cannot ack any more, and another process may take the names over.
pub(crate) fn release_held(registry: &Mutex<Registry>) {
    for (_, lock) in std::mem::take(&mut registry.lock().held) {
        lock.lock().take();
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::engine::testing::{self, DIR};
    use crate::es::EsState;

    #[test]
    fn names() {
        assert!(validate_name("s", "shipping-v2.eu_1").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_name("s", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resumes_after_the_last_ack_when_the_engine_reopens() {
        let (disk, engine) = testing::fresh();
        testing::append(&engine, "a", 3);
        let es = EsState::open(&engine).unwrap();
        let mut sub = open(&engine, &es.durables, "mailer").unwrap();
        let e = sub.next_timeout(Duration::ZERO).unwrap().unwrap();
        sub.ack(e.position).unwrap();
        drop(sub);
        engine.close().unwrap();
        drop(engine);
        let engine = testing::open(&disk, testing::options());
        let es = EsState::open(&engine).unwrap();
        assert_eq!(es.durables.lock().list(3)[0].acked_position, 1);
        let mut sub = open(&engine, &es.durables, "mailer").unwrap();
        let next = sub.next_timeout(Duration::ZERO).unwrap().unwrap();
        assert_eq!(next.position, 2);
    }

    #[test]
    fn one_handle_per_name_and_delete_only_when_closed() {
        let (_disk, engine) = testing::fresh();
        let es = EsState::open(&engine).unwrap();
        let sub = open(&engine, &es.durables, "x").unwrap();
        assert!(matches!(
            open(&engine, &es.durables, "x"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            delete(&engine, &es.durables, "x"),
            Err(Error::InvalidArgument(_))
        ));
        drop(sub);
        assert!(delete(&engine, &es.durables, "x").unwrap());
        assert!(!delete(&engine, &es.durables, "x").unwrap());
        assert!(es.durables.lock().list(0).is_empty());
    }

    /// A follower's registry, as two follower processes would each have one.
    fn shared() -> Arc<Mutex<Registry>> {
        Arc::new(Mutex::new(Registry::open_shared(Path::new(DIR))))
    }

    #[test]
    fn a_followers_subscription_is_its_own_one_process_at_a_time_and_resumes() {
        let (disk, engine) = testing::fresh();
        testing::append(&engine, "a", 4);
        let writers = EsState::open(&engine).unwrap().durables;
        let (one, two) = (shared(), shared());
        let mut sub = open(&engine, &one, "proj").unwrap();
        assert!(
            disk.contents(&Path::new(DIR).join("followers/proj.sub"))
                .is_some()
        );
        // The other follower sees it, and cannot open it while this one has it.
        assert_eq!(list(&engine, &two).unwrap()[0].name, "proj");
        let refused = open(&engine, &two, "proj").unwrap_err();
        assert!(refused.to_string().contains("already open"), "{refused}");
        assert!(matches!(
            delete(&engine, &two, "proj"),
            Err(Error::InvalidArgument(_))
        ));
        let e = sub.next_timeout(Duration::ZERO).unwrap().unwrap();
        sub.next_timeout(Duration::ZERO).unwrap().unwrap();
        sub.ack(e.position + 1).unwrap();
        drop(sub);
        // Released: the other follower resumes after the ack.
        let mut sub = open(&engine, &two, "proj").unwrap();
        assert_eq!(sub.acked_position(), 2);
        assert_eq!(
            sub.next_timeout(Duration::ZERO).unwrap().unwrap().position,
            3
        );
        drop(sub);
        // The writer's subscriptions are apart.
        assert!(list(&engine, &writers).unwrap().is_empty());
        assert!(open(&engine, &writers, "proj").unwrap().acked_position() == 0);
        assert!(delete(&engine, &one, "proj").unwrap());
        assert!(list(&engine, &two).unwrap().is_empty());
        assert!(
            disk.contents(&Path::new(DIR).join("followers/proj.lock"))
                .is_none()
        );
        assert_eq!(open(&engine, &two, "proj").unwrap().acked_position(), 0);
    }

    #[test]
    fn a_followers_ack_past_the_writers_log_is_pulled_back_when_opened() {
        let (disk, engine) = testing::fresh();
        testing::append(&engine, "a", 2);
        let dir = Path::new(DIR).join(FOLLOWERS_DIR);
        disk.create_dir_all(&dir).unwrap();
        crate::storage::replace_file(&disk, &dir, "late.sub", &encode_file(9)).unwrap();
        let reg = shared();
        // Listed as pulled back, left alone on disk until a handle opens it.
        assert_eq!(list(&engine, &reg).unwrap()[0].acked_position, 2);
        let on_disk = || decode_slots(&disk.contents(&dir.join("late.sub")).unwrap());
        assert_eq!(on_disk().map(|(_, p)| p), Some(9));
        let sub = open(&engine, &reg, "late").unwrap();
        assert_eq!(sub.acked_position(), 2);
        assert_eq!(on_disk().map(|(_, p)| p), Some(2));
    }

    #[test]
    fn an_ack_past_the_end_of_the_log_is_pulled_back_at_open() {
        let (disk, engine) = testing::fresh();
        testing::append(&engine, "a", 2);
        crate::storage::replace_file(&disk, Path::new(DIR), "late.sub", &encode_file(9)).unwrap();
        let es = EsState::open(&engine).unwrap();
        assert_eq!(es.durables.lock().list(2)[0].acked_position, 2);
        let bytes = disk.contents(&Path::new(DIR).join("late.sub")).unwrap();
        assert_eq!(decode_slots(&bytes).map(|(_, p)| p), Some(2));
    }
}
