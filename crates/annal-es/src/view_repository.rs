//! [`AnnalViewRepository`]: cqrs-es's [`ViewRepository`] on an annal [`Store`].

use std::marker::PhantomData;
use std::sync::Arc;

use annal::{EventData, ExpectedVersion, ReadOptions, Store};
use cqrs_es::persist::{PersistenceError, ViewContext, ViewRepository};
use cqrs_es::{Aggregate, View};

use crate::error::AnnalAggregateError;
use crate::names;

/// The event type of a view's updates.
const VIEW_UPDATED: &str = "ViewUpdated";

/// cqrs-es's view repository on annal: each view instance is a stream, `view~NAME-ID`,
/// whose last event holds the view (JSON) and whose version is the view's version. An
/// update appends the whole view with the version it was loaded at as the expected version,
/// so a concurrent update fails with [`PersistenceError::OptimisticLockError`], as with
/// postgres-es.
///
/// Every update adds an event to the log: a view's history is kept, and the log grows by a
/// view's size per update (annal cannot drop old events yet).
pub struct AnnalViewRepository<V, A> {
    view_name: String,
    store: Arc<Store>,
    _types: PhantomData<fn() -> (V, A)>,
}

impl<V, A> std::fmt::Debug for AnnalViewRepository<V, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnalViewRepository")
            .field("view_name", &self.view_name)
            .finish_non_exhaustive()
    }
}

impl<V: View<A>, A: Aggregate> AnnalViewRepository<V, A> {
    /// The views named `view_name` (the table's name, in postgres-es) in `store`.
    pub fn new(view_name: &str, store: Arc<Store>) -> Self {
        AnnalViewRepository {
            view_name: view_name.to_string(),
            store,
            _types: PhantomData,
        }
    }

    fn load_now(&self, view_id: &str) -> Result<Option<(V, ViewContext)>, AnnalAggregateError> {
        let stream = names::view_stream(&self.view_name, view_id);
        let last = self
            .store
            .read_stream(&stream, ReadOptions::backward().limit(1))?
            .next()
            .transpose()?;
        let Some(last) = last else {
            return Ok(None);
        };
        let view: V = serde_json::from_slice(&last.payload)?;
        let version = i64::try_from(last.version).map_err(|_| {
            AnnalAggregateError::unknown(format!(
                "view {stream}: version {} out of range",
                last.version
            ))
        })?;
        Ok(Some((view, ViewContext::new(view_id.to_string(), version))))
    }
}

impl<V: View<A>, A: Aggregate> ViewRepository<V, A> for AnnalViewRepository<V, A> {
    async fn load(&self, view_id: &str) -> Result<Option<V>, PersistenceError> {
        Ok(self.load_now(view_id)?.map(|(view, _)| view))
    }

    async fn load_with_context(
        &self,
        view_id: &str,
    ) -> Result<Option<(V, ViewContext)>, PersistenceError> {
        Ok(self.load_now(view_id)?)
    }

    async fn update_view(&self, view: V, context: ViewContext) -> Result<(), PersistenceError> {
        let stream = names::view_stream(&self.view_name, &context.view_instance_id);
        let expected = u64::try_from(context.version).map_err(|_| {
            AnnalAggregateError::unknown(format!(
                "view {stream}: version {} is negative",
                context.version
            ))
        })?;
        let payload = serde_json::to_vec(&view).map_err(AnnalAggregateError::from)?;
        self.store
            .append_async(
                &stream,
                ExpectedVersion::Exact(expected),
                &[EventData::new(VIEW_UPDATED, payload)],
            )
            .await
            .map_err(AnnalAggregateError::from)?;
        Ok(())
    }
}
