//! Admin API of the config plane: `GET /admin/config/history[/GENERATION]`, `GET /admin/fleet`,
//! and `GET`/`PUT`/`DELETE /admin/{routes,upstreams,plugins,policies}/NAME` (with etcd).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_config::shared::Kind;
use portcullis_config::shared::diff::Diff;
use portcullis_config::shared::etcd::{NodeStatus, valid_name};
use serde_json::{Value, json};

use super::store::{Change, StoreError, decode, unix_now};
use crate::admin::{error, json_response};
use crate::control::Control;

/// `GET /admin/config/history`: applied configs, newest first.
pub async fn history(State(c): State<Arc<Control>>) -> Response {
    let entries: Vec<Value> = c
        .shared
        .history
        .entries()
        .iter()
        .map(|e| e.summary_json())
        .collect();
    json_response(StatusCode::OK, &json!({ "entries": entries }))
}

/// `GET /admin/config/history/GENERATION`: one entry with its field-level diff.
pub async fn history_entry(State(c): State<Arc<Control>>, Path(generation): Path<u64>) -> Response {
    match c
        .shared
        .history
        .entries()
        .iter()
        .find(|e| e.generation == generation)
    {
        Some(e) => json_response(StatusCode::OK, &e.detail_json()),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("generation {generation} is not in this node's history"),
        ),
    }
}

/// `GET /admin/fleet`: every registered node, the generation and hash it serves, which lag.
pub async fn fleet(State(c): State<Arc<Control>>) -> Response {
    let Some(f) = c.shared.fleet.clone() else {
        return error(
            StatusCode::CONFLICT,
            "no_fleet",
            "this gateway reads its config from a file; the fleet view needs config_source.etcd",
        );
    };
    let res: Result<Response, StoreError> = async {
        let st = f.connect().await?;
        let read = st.read().await?;
        let generation = decode(&st.layout, &read).map_or(0, |d| d.generation);
        let now = unix_now();
        let mut nodes: Vec<Value> = Vec::new();
        let mut lagging = Vec::new();
        for (_, v) in st.nodes().await? {
            let Ok(n) = serde_json::from_slice::<NodeStatus>(&v) else {
                continue;
            };
            let lag = n.generation < generation;
            if lag {
                lagging.push(n.id.clone());
            }
            let mut j = serde_json::to_value(&n).unwrap_or(Value::Null);
            j["lagging"] = json!(lag);
            j["seconds_since_seen"] = json!((now - n.last_seen).max(0.0));
            nodes.push(j);
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "prefix": st.layout.prefix(),
                "generation": generation,
                "revision": read.revision,
                "this_node": f.node_id,
                "nodes": nodes,
                "lagging": lagging,
            }),
        ))
    }
    .await;
    res.unwrap_or_else(|e| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            &format!("cannot read the fleet from etcd: {e}"),
        )
    })
}

/// `GET /admin/{kind}/NAME` (with etcd): the object as stored, as JSON and as YAML, with the
/// store's generation (also as `ETag`, for `If-Match` on the change that follows).
pub async fn read(
    State(c): State<Arc<Control>>,
    Path((section, name)): Path<(String, String)>,
) -> Response {
    let Some(kind) = Kind::from_section(&section) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such admin resource");
    };
    let Some(f) = c.shared.fleet.clone() else {
        return error(
            StatusCode::CONFLICT,
            "read_only_config",
            "this gateway reads its config from a file; objects are read and changed through the admin API with config_source.etcd",
        );
    };
    let res: Result<Response, StoreError> = async {
        let st = f.connect().await?;
        let read = st.read().await?;
        let d = match decode(&st.layout, &read) {
            Ok(d) => d,
            Err(e) => {
                return Ok(error(
                    StatusCode::CONFLICT,
                    "store_invalid",
                    &format!("the store holds invalid objects: {e}"),
                ));
            }
        };
        let Some(v) = d.doc.get(kind, &name) else {
            return Ok(error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no {kind} `{name}` in the store"),
            ));
        };
        let mut r = json_response(
            StatusCode::OK,
            &json!({
                "kind": kind.to_string(),
                "name": name,
                "generation": d.generation,
                "object": v,
                "yaml": portcullis_config::shared::yaml::to_yaml(v),
            }),
        );
        r.headers_mut().insert(header::ETAG, etag(d.generation));
        Ok(r)
    }
    .await;
    res.unwrap_or_else(|e| unavailable(&e))
}

/// The body of a `PUT`: a JSON object, or YAML with `Content-Type: application/yaml`.
fn object_of(headers: &HeaderMap, body: &[u8]) -> Result<Value, String> {
    let yaml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("yaml"));
    let v = if yaml {
        let text = std::str::from_utf8(body).map_err(|_| "the YAML is not UTF-8".to_owned())?;
        // No environment lookups: `${NAME}` from an API client must not read the node's env.
        portcullis_config::source::parse(text, &|_| None)
            .map(|(v, _)| v)
            .map_err(|errs| {
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })?
    } else {
        serde_json::from_slice::<Value>(body)
            .map_err(|_| "the body must be the object as a JSON object".to_owned())?
    };
    if v.is_object() {
        Ok(v)
    } else {
        Err("the body must be one object (a mapping)".to_owned())
    }
}

/// `PUT`/`DELETE /admin/{kind}/NAME`: one object changed in the store, the whole result
/// validated first, `If-Match: GENERATION` honoured (412 when the store moved on).
/// `?dry_run=true` validates and answers the diff without writing.
pub async fn write(
    State(c): State<Arc<Control>>,
    method: Method,
    Path((section, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let dry_run = q.get("dry_run").is_some_and(|v| v == "true" || v == "1");
    let Some(kind) = Kind::from_section(&section) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such admin resource");
    };
    let Some(f) = c.shared.fleet.clone() else {
        let file = match &c.shared.source {
            crate::state::ConfigSource::File(p) => p.display().to_string(),
            crate::state::ConfigSource::Embedded(_) => "the embedded quick-start".into(),
        };
        return error(
            StatusCode::CONFLICT,
            "read_only_config",
            &format!(
                "this gateway reads its config from {file}: change that file (it is reloaded), or set config_source.etcd to manage objects through the admin API"
            ),
        );
    };
    if !valid_name(&name) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid object name",
        );
    }
    let value = if method == Method::PUT {
        match object_of(&headers, &body) {
            Ok(v) => Some(v),
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e),
        }
    } else {
        None
    };
    let if_match = match headers.get(header::IF_MATCH).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => match v.trim().trim_matches('"').parse::<u64>() {
            Ok(g) => Some(g),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "If-Match takes a generation number",
                );
            }
        },
        Some(Err(_)) => {
            return error(StatusCode::BAD_REQUEST, "bad_request", "bad If-Match");
        }
    };
    let author = headers
        .get("x-portcullis-author")
        .and_then(|v| v.to_str().ok())
        .filter(|a| !a.is_empty())
        .unwrap_or("admin")
        .to_owned();
    let message = headers
        .get("x-portcullis-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let st = match f.connect().await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    let read = match st.read().await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let old = match decode(&st.layout, &read) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::CONFLICT,
                "store_invalid",
                &format!(
                    "the store holds invalid objects; fix them with `portcullis config push` first:\n{e}"
                ),
            );
        }
    };
    if let Some(g) = if_match
        && g != old.generation
    {
        let mut r = error(
            StatusCode::PRECONDITION_FAILED,
            "stale_generation",
            &format!(
                "If-Match: {g}, but the store is at generation {}",
                old.generation
            ),
        );
        r.headers_mut().insert(header::ETAG, etag(old.generation));
        return r;
    }
    let mut new = old.doc.clone();
    match value {
        Some(v) => new.set(kind, &name, portcullis_config::shared::canonical(&v)),
        None => {
            if !new.remove(kind, &name) {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no {kind} `{name}` in the store"),
                );
            }
        }
    }
    let diff = Diff::between(&old.doc, &new);
    if diff.is_empty() {
        let mut r = json_response(
            StatusCode::OK,
            &json!({"generation": old.generation, "changes": [], "summary": "no changes"}),
        );
        r.headers_mut().insert(header::ETAG, etag(old.generation));
        return r;
    }
    let origin = f.origin.clone();
    let candidate = new.clone();
    let checked =
        tokio::task::spawn_blocking(move || crate::config_cli::check(&candidate, &origin)).await;
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(errs)) => {
            return json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({
                    "error": {"status": 422, "code": "invalid_config", "message": "the change would make the shared config invalid; nothing was written", "request_id": ""},
                    "problems": errs.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }),
            );
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
            );
        }
    }
    if dry_run {
        let mut r = json_response(
            StatusCode::OK,
            &json!({
                "dry_run": true,
                "generation": old.generation,
                "summary": diff.summary(),
                "changes": diff.brief(),
                "diff_text": diff.to_string(),
            }),
        );
        r.headers_mut().insert(header::ETAG, etag(old.generation));
        return r;
    }
    let change = Change {
        author: &author,
        message: &message,
        via: "admin",
    };
    match st.commit(&read, &old, &new, &change).await {
        Ok(done) => {
            let mut r = json_response(
                StatusCode::OK,
                &json!({
                    "generation": done.generation,
                    "hash": done.entry.hash,
                    "summary": done.entry.summary,
                    "changes": done.entry.changes,
                }),
            );
            r.headers_mut().insert(header::ETAG, etag(done.generation));
            r
        }
        Err(StoreError::Moved { expected }) => error(
            StatusCode::PRECONDITION_FAILED,
            "stale_generation",
            &format!(
                "the store moved past generation {expected} while this change was checked; retry"
            ),
        ),
        Err(e) => unavailable(&e),
    }
}

fn etag(generation: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{generation}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn unavailable(e: &StoreError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        &format!("etcd: {e}"),
    )
    .into_response()
}
