//! Path normalisation: never panics; the result is absolute, has no dot segments, is a fixed
//! point (idempotent), never climbs above the root, and survives the trip into the URI that is
//! sent upstream unchanged (what is routed is what is sent), query untouched.
#![no_main]

use std::borrow::Cow;

use http::uri::PathAndQuery;
use libfuzzer_sys::fuzz_target;
use portcullis_router::{DotSegments, EscapedSlashes, PathPolicy, normalize_path};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // Only what the HTTP layer lets through reaches normalisation.
    let Ok(pq) = PathAndQuery::try_from(text) else {
        return;
    };
    let policy = PathPolicy {
        merge_slashes: flags & 1 == 0,
        dot_segments: if flags & 2 == 0 {
            DotSegments::Resolve
        } else {
            DotSegments::Reject
        },
        escaped_slashes: match (flags >> 2) % 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Keep,
            _ => EscapedSlashes::Decode,
        },
    };
    let Ok(out) = normalize_path(pq.path(), &policy) else {
        return;
    };
    if out == "*" {
        return;
    }
    assert!(out.starts_with('/'), "{out}");
    for seg in out.split('/') {
        assert!(seg != "." && seg != "..", "dot segment left in {out}");
    }
    if policy.merge_slashes {
        assert!(!out.contains("//"), "{out}");
    }
    if policy.escaped_slashes != EscapedSlashes::Keep {
        let upper = out.to_ascii_uppercase();
        assert!(!upper.contains("%2F") && !upper.contains("%5C"), "{out}");
    }
    let again = normalize_path(&out, &policy).expect("a normal path is accepted");
    assert!(matches!(again, Cow::Borrowed(_)), "not idempotent: {out} -> {again}");
    // Routed == sent: the normalised path with the original query makes a URI whose path is
    // exactly what was routed.
    let sent = match pq.query() {
        Some(q) => format!("{out}?{q}"),
        None => out.to_string(),
    };
    let sent = PathAndQuery::try_from(sent.as_str()).expect("the normalised path is a valid URI");
    assert_eq!(sent.path(), out);
    assert_eq!(sent.query(), pq.query());
});
