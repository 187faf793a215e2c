//! disintegrate-postgres's event store tests (`src/event_store/tests.rs`), rewritten for
//! annal: the same events, ids, `End` items and concurrency errors; and its two tests of
//! concurrent writers, as annal's writers and readers can interleave.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annal::storage::{FsStorage, Storage, StorageFile};
use annal::{FsyncPolicy, Options, ReadOptions, Store};
use annal_disintegrate::{AnnalEventStore, Error};
use disintegrate::serde::json::Json;
use disintegrate::{
    DomainIdInfo, DomainIdSet, Event, EventInfo, EventSchema, EventStore, IdentifierType,
    StreamItem, domain_ids, ident, query,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", rename_all = "snake_case")]
enum ShoppingCartEvent {
    Added { product_id: String, cart_id: String },
    Removed { product_id: String, cart_id: String },
}

fn added_event(product_id: &str, cart_id: &str) -> ShoppingCartEvent {
    ShoppingCartEvent::Added {
        product_id: product_id.to_string(),
        cart_id: cart_id.to_string(),
    }
}

fn removed_event(product_id: &str, cart_id: &str) -> ShoppingCartEvent {
    ShoppingCartEvent::Removed {
        product_id: product_id.to_string(),
        cart_id: cart_id.to_string(),
    }
}

impl Event for ShoppingCartEvent {
    const SCHEMA: EventSchema = EventSchema {
        events: &["ShoppingCartAdded", "ShoppingCartRemoved"],
        events_info: &[
            &EventInfo {
                name: "ShoppingCartAdded",
                domain_ids: &[&ident!(#product_id), &ident!(#cart_id)],
            },
            &EventInfo {
                name: "ShoppingCartRemoved",
                domain_ids: &[&ident!(#product_id), &ident!(#cart_id)],
            },
        ],
        domain_ids: &[
            &DomainIdInfo {
                ident: ident!(#cart_id),
                type_info: IdentifierType::String,
            },
            &DomainIdInfo {
                ident: ident!(#product_id),
                type_info: IdentifierType::String,
            },
        ],
    };
    fn name(&self) -> &'static str {
        match self {
            ShoppingCartEvent::Added { .. } => "ShoppingCartAdded",
            ShoppingCartEvent::Removed { .. } => "ShoppingCartRemoved",
        }
    }
    fn domain_ids(&self) -> DomainIdSet {
        let (product_id, cart_id) = match self {
            ShoppingCartEvent::Added {
                product_id,
                cart_id,
            }
            | ShoppingCartEvent::Removed {
                product_id,
                cart_id,
            } => (product_id, cart_id),
        };
        domain_ids! {product_id: product_id, cart_id: cart_id}
    }
}

type Carts = AnnalEventStore<ShoppingCartEvent, Json<ShoppingCartEvent>>;

fn event_store() -> (tempfile::TempDir, Carts) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(
        tmp.path(),
        Options {
            fsync: FsyncPolicy::Always,
            ..Options::default()
        },
    )
    .unwrap();
    (tmp, AnnalEventStore::new(Arc::new(store), Json::default()))
}

/// The rows of the upstream tests' `event` table: (id, type, payload).
fn rows(events: &Carts) -> Vec<(u64, String, ShoppingCartEvent)> {
    events
        .store()
        .read_stream("disintegrate", ReadOptions::forward())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.position,
                e.event_type.clone(),
                serde_json::from_slice(&e.payload).unwrap(),
            )
        })
        .collect()
}

async fn insert_events(events: &Carts, list: &[ShoppingCartEvent]) {
    events
        .append_without_validation(list.to_vec())
        .await
        .unwrap();
}

#[tokio::test]
async fn it_queries_events() {
    let (_tmp, event_store) = event_store();
    insert_events(
        &event_store,
        &[
            added_event("product_1", "cart_1"),
            removed_event("product_1", "cart_1"),
            added_event("product_2", "cart_1"),
            added_event("product_2", "cart_1"),
        ],
    )
    .await;
    let query = query!(ShoppingCartEvent; product_id == "product_1");
    let result: Vec<_> = event_store.stream(&query).collect().await;
    assert_eq!(result.len(), 3);
    let ids: Vec<i64> = result.iter().map(|r| r.as_ref().unwrap().id()).collect();
    assert_eq!(
        ids,
        [1, 2, 4],
        "two events, then End at the store's position"
    );
    assert!(matches!(result.last(), Some(Ok(StreamItem::End(4)))));
}

#[tokio::test]
async fn it_appends_events() {
    let (_tmp, event_store) = event_store();
    let events = vec![
        added_event("product_1", "cart_1"),
        removed_event("product_2", "cart_1"),
    ];
    let persisted = event_store
        .append(
            events.clone(),
            query!(ShoppingCartEvent; cart_id == "cart_1"),
            0,
        )
        .await
        .unwrap();
    assert_eq!(persisted.iter().map(|p| p.id()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        rows(&event_store),
        [
            (1, "ShoppingCartAdded".to_string(), events[0].clone()),
            (2, "ShoppingCartRemoved".to_string(), events[1].clone()),
        ]
    );
}

#[tokio::test]
async fn it_appends_unchecked() {
    let (_tmp, event_store) = event_store();
    let events = vec![
        added_event("product_1", "cart_1"),
        removed_event("product_2", "cart_1"),
    ];
    let persisted = event_store
        .append_without_validation(events.clone())
        .await
        .unwrap();
    assert_eq!(persisted.iter().map(|p| p.id()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        rows(&event_store),
        [
            (1, "ShoppingCartAdded".to_string(), events[0].clone()),
            (2, "ShoppingCartRemoved".to_string(), events[1].clone()),
        ]
    );
}

#[tokio::test]
async fn it_returns_a_concurrency_error_when_it_appends_events_of_a_query_whose_events_have_been_changed_and_the_event_store_is_empty()
 {
    let (_tmp, event_store) = event_store();
    let query = query!(ShoppingCartEvent; product_id == "product_1", cart_id == "cart_1");
    event_store
        .append(vec![added_event("product_1", "cart_1")], query.clone(), 0)
        .await
        .unwrap();
    let result = event_store
        .append(vec![removed_event("product_1", "cart_1")], query, 0)
        .await;
    assert!(matches!(result, Err(Error::Concurrency)), "{result:?}");
    assert_eq!(rows(&event_store).len(), 1);
}

#[tokio::test]
async fn it_returns_a_concurrency_error_when_it_appends_events_of_a_query_whose_events_have_been_changed()
 {
    let (_tmp, event_store) = event_store();
    insert_events(
        &event_store,
        &[
            added_event("product_1", "cart_1"),
            removed_event("product_1", "cart_1"),
        ],
    )
    .await;
    let query1 = query!(ShoppingCartEvent; cart_id == "cart_1");
    let query2 = query!(ShoppingCartEvent; product_id == "product_1", cart_id == "cart_1");
    let last1 = event_store.stream(&query1).collect::<Vec<_>>().await;
    let last2 = event_store.stream(&query2).collect::<Vec<_>>().await;
    let version1 = last1.last().unwrap().as_ref().unwrap().id();
    let version2 = last2.last().unwrap().as_ref().unwrap().id();
    assert_eq!((version1, version2), (2, 2));
    event_store
        .append(vec![removed_event("product_1", "cart_1")], query1, version1)
        .await
        .unwrap();
    let result = event_store
        .append(vec![removed_event("product_1", "cart_1")], query2, version2)
        .await;
    assert!(matches!(result, Err(Error::Concurrency)), "{result:?}");
}

/// An event of another cart, or another product, appended after the version read: no
/// conflict for a query about this cart and product.
#[tokio::test]
async fn events_the_query_does_not_select_do_not_conflict() {
    let (_tmp, event_store) = event_store();
    let query = query!(ShoppingCartEvent; product_id == "product_1", cart_id == "cart_1");
    insert_events(
        &event_store,
        &[
            added_event("product_2", "cart_1"),
            added_event("product_1", "cart_2"),
        ],
    )
    .await;
    let persisted = event_store
        .append(vec![added_event("product_1", "cart_1")], query, 0)
        .await
        .unwrap();
    assert_eq!(persisted[0].id(), 3);
}

/// Upstream's `stream_does_not_skip_events_when_writers_commit_out_of_order`: with writers
/// appending concurrently, a reader that read up to some id never later finds an event with
/// a lower id that it did not see (annal publishes appends in position order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_does_not_skip_events_when_writers_commit_concurrently() {
    let (_tmp, event_store) = event_store();
    event_store
        .append_without_validation(vec![added_event("product_0", "cart_1")])
        .await
        .unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let event_store = event_store.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    event_store
                        .append_without_validation(vec![added_event(
                            &format!("p{w}-{i}"),
                            "cart_1",
                        )])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let query = query!(ShoppingCartEvent);
    let mut seen: Vec<i64> = Vec::new();
    for _ in 0..50 {
        let items: Vec<_> = event_store.stream(&query).collect().await;
        let (end, events) = items.split_last().unwrap();
        let ids: Vec<i64> = events.iter().map(|e| e.as_ref().unwrap().id()).collect();
        let end = end.as_ref().unwrap().id();
        // Every id up to the end is there, and nothing seen before went missing.
        assert_eq!(ids, (1..=end).collect::<Vec<_>>());
        assert!(ids.len() >= seen.len() && ids[..seen.len()] == seen[..]);
        seen = ids;
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let items: Vec<_> = event_store.stream(&query).collect().await;
    assert_eq!(items.len(), 102);
}

/// Upstream's `epoch_does_not_exceed_max_committed_event_id`: `End` never names an event that
/// is not yet acknowledged: here one written whose sync is held back.
#[tokio::test(flavor = "current_thread")]
async fn end_does_not_exceed_the_acknowledged_position() {
    let tmp = tempfile::tempdir().unwrap();
    let hold = Arc::new(AtomicBool::new(false));
    let storage = HoldSync {
        hold: Arc::clone(&hold),
    };
    let store =
        Store::open_with_storage(Arc::new(storage), tmp.path(), Options::default()).unwrap();
    let event_store: Carts = AnnalEventStore::new(Arc::new(store), Json::default());
    event_store
        .append_without_validation(vec![added_event("product_1", "cart_1")])
        .await
        .unwrap();
    hold.store(true, Ordering::SeqCst);
    let pending = {
        let event_store = event_store.clone();
        tokio::spawn(async move {
            event_store
                .append(
                    vec![added_event("product_2", "cart_1")],
                    query!(ShoppingCartEvent),
                    1,
                )
                .await
        })
    };
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(!pending.is_finished());
    let items: Vec<_> = event_store
        .stream(&query!(ShoppingCartEvent))
        .collect()
        .await;
    let ids: Vec<i64> = items.iter().map(|i| i.as_ref().unwrap().id()).collect();
    assert_eq!(
        ids,
        [1, 1],
        "the event and End(1): the written, unsynced one is not there"
    );
    hold.store(false, Ordering::SeqCst);
    assert_eq!(pending.await.unwrap().unwrap()[0].id(), 2);
    let items: Vec<_> = event_store
        .stream(&query!(ShoppingCartEvent))
        .collect()
        .await;
    assert!(matches!(items.last(), Some(Ok(StreamItem::End(2)))));
}

/// The real file system, with fdatasyncs that wait while `hold` is set.
#[derive(Debug)]
struct HoldSync {
    hold: Arc<AtomicBool>,
}

#[derive(Debug)]
struct HoldFile {
    inner: Box<dyn StorageFile>,
    hold: Arc<AtomicBool>,
}

impl HoldSync {
    fn wrap(&self, inner: Box<dyn StorageFile>) -> Box<dyn StorageFile> {
        Box::new(HoldFile {
            inner,
            hold: Arc::clone(&self.hold),
        })
    }
}

impl Storage for HoldSync {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage::default().create_dir_all(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(self.wrap(FsStorage::default().create(path)?))
    }
    fn open(&self, path: &Path, write: bool) -> io::Result<Box<dyn StorageFile>> {
        Ok(self.wrap(FsStorage::default().open(path, write)?))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        FsStorage::default().remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FsStorage::default().rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        FsStorage::default().sync_dir(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        FsStorage::default().list(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        FsStorage::default().lock(path)
    }
}

impl StorageFile for HoldFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        while self.hold.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.inner.sync_data()
    }
    fn map(&self) -> io::Result<Option<annal::storage::FileMap>> {
        self.inner.map()
    }
}
