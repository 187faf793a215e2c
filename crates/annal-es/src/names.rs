//! How aggregates and views are named in annal: one stream per aggregate instance,
//! `TYPE-ID`, so that the aggregate type is the stream's category (annal's category index
//! serves `stream_all_events`), and one stream per view instance, `view~NAME-ID`.
//!
//! The type (or view name) is escaped so that it never contains a `-` (the category ends at
//! the first one) nor a `~`, and never starts with annal's reserved `$`: every character
//! outside `A-Z a-z 0-9 _ . :` becomes `%XX` per UTF-8 byte. Two different types or views
//! can then never share a stream, and an aggregate type never looks like a view.

use std::fmt::Write;

/// The category (the escaped aggregate type) of an aggregate type's streams.
pub(crate) fn category(aggregate_type: &str) -> String {
    escape(aggregate_type)
}

/// The stream of one aggregate instance.
pub(crate) fn aggregate_stream(aggregate_type: &str, aggregate_id: &str) -> String {
    // Built in one allocation: it is made several times per command.
    let mut out = String::with_capacity(aggregate_type.len() * 3 + 1 + aggregate_id.len());
    escape_into(&mut out, aggregate_type);
    out.push('-');
    out.push_str(aggregate_id);
    out
}

/// The aggregate id of a stream of `category`, if the stream is one of it.
pub(crate) fn aggregate_id<'s>(category: &str, stream: &'s str) -> Option<&'s str> {
    stream.strip_prefix(category)?.strip_prefix('-')
}

/// The stream of one view instance.
pub(crate) fn view_stream(view_name: &str, view_id: &str) -> String {
    format!("view~{}-{view_id}", escape(view_name))
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    escape_into(&mut out, name);
    out
}

fn escape_into(out: &mut String, name: &str) {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':'))
    {
        out.push_str(name);
        return;
    }
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':') {
            out.push(c);
        } else {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_with_dashes_cannot_collide_with_ids_with_dashes() {
        assert_eq!(aggregate_stream("account", "42"), "account-42");
        assert_ne!(aggregate_stream("a", "b-c"), aggregate_stream("a-b", "c"));
        assert_eq!(aggregate_stream("a-b", "c"), "a%2Db-c");
        assert_eq!(aggregate_id(&category("a-b"), "a%2Db-c"), Some("c"));
        assert_eq!(aggregate_id(&category("a"), "a%2Db-c"), None);
        assert_eq!(aggregate_id(&category("a"), "a-b-c"), Some("b-c"));
    }

    #[test]
    fn names_never_start_with_the_reserved_dollar_nor_look_like_views() {
        assert_eq!(category("$all"), "%24all");
        assert_eq!(category("view~x"), "view%7Ex");
        assert!(view_stream("v", "1").starts_with("view~v-"));
        assert_eq!(category("Ünï"), "%C3%9Cn%C3%AF");
    }
}
