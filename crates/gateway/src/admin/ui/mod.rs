//! The dashboard: static files built into the binary, served at `/ui/` on the admin listener.
//!
//! The files hold no data: the page asks the admin API for everything, with the admin token
//! when one is set, so they are served without it. A strict Content-Security-Policy allows
//! only the page's own scripts, styles and API calls (no inline code, no other origin).

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::control::Control;

/// The policy sent with every dashboard file.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'none'";

/// Name, content type and content of every file.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("style.css"),
    ),
    (
        "main.js",
        "text/javascript; charset=utf-8",
        include_str!("main.js"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("app.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("charts.js"),
    ),
    (
        "pages.js",
        "text/javascript; charset=utf-8",
        include_str!("pages.js"),
    ),
    (
        "more.js",
        "text/javascript; charset=utf-8",
        include_str!("more.js"),
    ),
    (
        "edit.js",
        "text/javascript; charset=utf-8",
        include_str!("edit.js"),
    ),
    ("favicon.svg", "image/svg+xml", include_str!("favicon.svg")),
];

/// The dashboard's routes.
pub fn router() -> Router<Arc<Control>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { file("index.html") }))
        .route(
            "/ui/{name}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
}

fn file(name: &str) -> Response {
    let Some((_, kind, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return super::error(StatusCode::NOT_FOUND, "not_found", "no such dashboard file");
    };
    let mut r = (*body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
