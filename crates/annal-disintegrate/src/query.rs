//! Disintegrate's stream queries as annal queries: per filter and event type, one query item
//! of that type with a tag for each of the filter's identifiers that the type declares.

use annal::{Query, QueryItem};
use disintegrate::{Event, EventId, StreamFilter, StreamQuery};

/// The tag of a domain identifier.
pub(crate) fn tag(ident: impl std::fmt::Display, value: impl std::fmt::Display) -> String {
    format!("{ident}={value}")
}

/// One filter's items: an item per event type it selects (its types less the excluded).
fn filter_items<ID: EventId, E: Event + Clone>(filter: &StreamFilter<ID, E>) -> Vec<QueryItem> {
    let excluded = filter.excluded_events();
    filter
        .events()
        .iter()
        .filter(|name| excluded.is_none_or(|x| !x.contains(name)))
        .map(|name| {
            let declared = E::SCHEMA.event_info(name);
            let tags: Vec<String> = filter
                .identifiers()
                .iter()
                .filter(|(ident, _)| declared.is_some_and(|info| info.has_domain_id(ident)))
                .map(|(ident, value)| tag(ident, value))
                .collect();
            QueryItem::new().types([*name]).tags(tags)
        })
        .collect()
}

/// The annal query selecting what `query` selects, origins aside.
pub(crate) fn to_annal<ID: EventId, E: Event + Clone>(query: &StreamQuery<ID, E>) -> Query {
    Query::items(query.filters().iter().flat_map(filter_items))
}

/// Whether an event of `event_type` with `tags` at `id` matches one of `query`'s filters,
/// origins included.
pub(crate) fn matches<ID: EventId, E: Event + Clone>(
    query: &StreamQuery<ID, E>,
    id: ID,
    event_type: &str,
    tags: &[&str],
) -> bool {
    query.filters().iter().any(|f| {
        id > f.origin()
            && filter_items(f)
                .iter()
                .any(|item| item.matches(event_type, tags))
    })
}
