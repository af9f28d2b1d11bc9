//! Tracing of service calls: a `tracing` span per call and per try, and the W3C
//! `traceparent` put on each try so the server's spans join the caller's trace.

use http::{HeaderMap, HeaderName, HeaderValue};
use tracing::field::Empty;

use crate::upstream::{AttemptHook, AttemptReport};

/// `traceparent`.
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace a call belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TraceIds {
    pub(crate) trace_id: u128,
    pub(crate) sampled: bool,
}

impl TraceIds {
    /// The request's own trace (its `traceparent`), or a new one.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        headers
            .get(&TRACEPARENT)
            .and_then(parse)
            .unwrap_or_else(|| Self {
                trace_id: fastrand::u128(1..),
                sampled: true,
            })
    }
}

/// Reads a version-00 `traceparent` (unknown versions the 00 way, as the spec asks).
fn parse(v: &HeaderValue) -> Option<TraceIds> {
    let s = v.to_str().ok()?;
    let mut parts = s.split('-');
    let version = parts.next()?;
    if version.len() != 2 || version == "ff" {
        return None;
    }
    let trace = parts.next().filter(|t| t.len() == 32)?;
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let parent = parts.next().filter(|p| p.len() == 16)?;
    u64::from_str_radix(parent, 16).ok().filter(|p| *p != 0)?;
    let flags = u8::from_str_radix(parts.next()?.get(..2)?, 16).ok()?;
    Some(TraceIds {
        trace_id,
        sampled: flags & 1 == 1,
    })
}

fn traceparent(ids: TraceIds, span_id: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = *b"00-00000000000000000000000000000000-0000000000000000-00";
    for (i, slot) in b[3..35].iter_mut().enumerate() {
        *slot = HEX[((ids.trace_id >> (124 - 4 * i)) & 15) as usize];
    }
    for (i, slot) in b[36..52].iter_mut().enumerate() {
        *slot = HEX[((span_id >> (60 - 4 * i)) & 15) as usize];
    }
    if ids.sampled {
        b[54] = b'1';
    }
    HeaderValue::from_bytes(&b).unwrap_or_else(|_| HeaderValue::from_static("00-0-0-00"))
}

/// Watches the tries of one hop of a call: spans and trace context.
pub(crate) struct CallHook<'a> {
    pub(crate) ids: TraceIds,
    pub(crate) inject: bool,
    pub(crate) call: &'a tracing::Span,
    pub(crate) hop: u32,
}

impl AttemptHook for CallHook<'_> {
    fn span(&self, n: u32) -> tracing::Span {
        tracing::info_span!(
            parent: self.call,
            "http.client.try",
            attempt = n,
            hop = self.hop,
            span_id = Empty,
            server.address = Empty,
            http.response.status_code = Empty,
            error = Empty,
        )
    }

    fn before(&self, _n: u32, headers: &mut HeaderMap) {
        if !self.inject {
            return;
        }
        let span_id = fastrand::u64(1..);
        headers.insert(TRACEPARENT.clone(), traceparent(self.ids, span_id));
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("span_id", format_args!("{span_id:016x}"));
        }
    }

    fn after(&self, _n: u32, r: &AttemptReport<'_>) {
        let span = tracing::Span::current();
        if span.is_disabled() {
            return;
        }
        span.record("server.address", r.target);
        if let Some(s) = r.status {
            span.record("http.response.status_code", s);
        }
        if let Some(e) = r.error {
            span.record("error", e.reason());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip() {
        let ids = TraceIds {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            sampled: true,
        };
        let v = traceparent(ids, 0x00f067aa0ba902b7);
        assert_eq!(
            v.to_str().expect("ascii"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let back = parse(&v).expect("parses");
        assert_eq!(back.trace_id, ids.trace_id);
        assert!(back.sampled);
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f35-00f067aa0ba902b7-01",
        ] {
            assert!(parse(&HeaderValue::from_static(bad)).is_none(), "{bad}");
        }
    }
}
