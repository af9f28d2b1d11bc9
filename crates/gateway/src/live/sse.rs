//! `GET /admin/stream` (server-sent events, one `sample` event a second) and
//! `GET /admin/series` (one route or target over the kept history).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use crate::admin::{error, json_response};
use crate::control::Control;

use super::KEEP_SECONDS;

/// `GET /admin/stream[?backfill=SECONDS]`: the kept frames of the last `backfill` seconds
/// (at most 900), then each new frame as it is made. Ends when the gateway shuts down.
pub async fn stream(
    State(c): State<Arc<Control>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let backfill = q
        .get("backfill")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0)
        .min(KEEP_SECONDS);
    let rx = c.live.subscribe();
    let old = c.live.recent(backfill);
    let shutdown = c.shared.shutdown.subscribe();
    let events = futures_util::stream::unfold(
        (old.into_iter(), rx, shutdown),
        |(mut old, mut rx, mut shutdown)| async move {
            if let Some(f) = old.next() {
                let ev = Event::default().event("sample").data(f.json());
                return Some((Ok::<_, Infallible>(ev), (old, rx, shutdown)));
            }
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                tokio::select! {
                    got = rx.recv() => match got {
                        Ok(f) => {
                            let ev = Event::default().event("sample").data(&*f);
                            return Some((Ok(ev), (old, rx, shutdown)));
                        }
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    },
                    changed = shutdown.changed() => if changed.is_err() {
                        return None;
                    },
                }
            }
        },
    );
    let mut r = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

/// `GET /admin/series?route=NAME` or `?upstream=NAME&target=ADDRESS`.
pub async fn series(
    State(c): State<Arc<Control>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(route) = q.get("route") {
        return json_response(StatusCode::OK, &c.live.route_series(route));
    }
    if let (Some(u), Some(t)) = (q.get("upstream"), q.get("target")) {
        return json_response(StatusCode::OK, &c.live.target_series(u, t));
    }
    error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "name a route (?route=NAME) or a target (?upstream=NAME&target=ADDRESS)",
    )
}
