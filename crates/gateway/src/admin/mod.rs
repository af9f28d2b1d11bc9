//! The admin API: health, readiness, metrics, the running config, routes, upstreams, reload,
//! the live stream, and the dashboard (`ui/`).

mod ui;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::control::{Control, unix_seconds};
use crate::snapshot::RouteAction;

/// Builds the admin router.
pub fn router(control: Arc<Control>) -> Router {
    let admin = Router::new()
        .route("/admin/config", get(config))
        .route("/admin/routes", get(routes))
        .route("/admin/upstreams", get(upstreams))
        .route("/admin/reload", post(reload))
        .route("/admin/config/history", get(crate::fleet::admin::history))
        .route(
            "/admin/config/history/{generation}",
            get(crate::fleet::admin::history_entry),
        )
        .route("/admin/fleet", get(crate::fleet::admin::fleet))
        .route(
            "/admin/{kind}/{name}",
            get(crate::fleet::admin::read)
                .put(crate::fleet::admin::write)
                .delete(crate::fleet::admin::write),
        )
        .route("/admin/slo", get(slo))
        .route("/admin/policies", get(policies))
        .route("/admin/topology", get(topology))
        .route("/admin/stream", get(crate::live::sse::stream))
        .route("/admin/series", get(crate::live::sse::series))
        .route("/admin/status", get(status))
        .route("/admin/log_level", get(get_log_level).put(set_log_level))
        .route_layer(middleware::from_fn_with_state(
            control.clone(),
            require_token,
        ));
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json200(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(admin)
        .merge(ui::router())
        .with_state(control)
}

struct Json200(Value);

impl IntoResponse for Json200 {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self.0)
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, serde_json::to_string_pretty(v).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The contract's JSON error.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"status": status.as_u16(), "code": code, "message": message, "request_id": ""}}),
    )
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(c): State<Arc<Control>>, req: Request, next: Next) -> Response {
    let snap = c.shared.snapshot.load();
    if let Some(token) = &snap.config.admin.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), token.as_bytes()) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin bearer token is required",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
            );
            return r;
        }
    }
    drop(snap);
    next.run(req).await
}

async fn readyz(State(c): State<Arc<Control>>) -> Response {
    if c.shared.ready.load(Ordering::Acquire) {
        json_response(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not ready"}),
        )
    }
}

async fn metrics(State(c): State<Arc<Control>>) -> Response {
    let snap = c.shared.snapshot.load_full();
    let mut body = c.shared.metrics.render(&snap);
    c.shared.mirrors.render(&mut body);
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn config(State(c): State<Arc<Control>>) -> Response {
    let snap = c.shared.snapshot.load_full();
    let cfg = &snap.config;
    Json200(json!({
        "hash": cfg.hash,
        "loaded_at": unix_seconds(snap.loaded_at),
        "source": cfg.file.as_ref().map(|f| f.display().to_string()),
        "shared_hash": cfg.shared_hash,
        "generation": c.shared.history.latest().map(|e| e.generation),
        "etcd": c.shared.fleet.as_ref().map(|f| json!({
            "prefix": f.layout.prefix(),
            "node_id": f.node_id,
            "reachable": f.store_up.load(Ordering::Relaxed),
            "revision": f.revision.load(Ordering::Relaxed),
            "rejected": f.rejected.lock().ok().and_then(|r| r.clone()),
        })),
        "listeners": c.addresses().await,
        "config": cfg.redacted,
    }))
    .into_response()
}

async fn routes(State(c): State<Arc<Control>>) -> Response {
    let snap = c.shared.snapshot.load_full();
    let list: Vec<Value> = snap
        .router
        .precedence_order()
        .iter()
        .map(|&i| {
            let spec = &snap.router.specs()[i];
            let rt = &snap.routes[i];
            let action = match &rt.action {
                RouteAction::Upstream(u) => json!({"upstream": snap.upstreams[*u].name()}),
                RouteAction::Split(legs, _) => {
                    let mut prev = 0;
                    json!({"split": legs.iter().map(|(u, acc)| {
                        let w = acc - prev;
                        prev = *acc;
                        json!({"upstream": snap.upstreams[*u].name(), "weight": w})
                    }).collect::<Vec<_>>()})
                }
                RouteAction::Direct(d) => json!({"direct_response": {"status": d.status.as_u16()}}),
            };
            let operations: Vec<Value> = rt
                .plugins
                .iter()
                .filter_map(|p| p.describe())
                .flat_map(|d| match d {
                    Value::Array(a) => a,
                    other => vec![other],
                })
                .collect();
            let mut route = json!({
                "name": &*rt.name,
                "priority": spec.priority,
                "hosts": spec.hosts.iter().map(|h| match h {
                    portcullis_router::HostMatch::Exact(e) => e.clone(),
                    portcullis_router::HostMatch::Wildcard(w) => format!("*.{w}"),
                }).collect::<Vec<_>>(),
                "path": spec.path.describe(),
                "methods": spec.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "headers": spec.headers.iter().map(|(n, v)| json!({"name": n.as_str(), "value": v.to_str().unwrap_or("")})).collect::<Vec<_>>(),
                "query": spec.query.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                "action": action,
                "plugins": rt.plugins.iter().map(|p| p.name()).collect::<Vec<_>>(),
            });
            if !operations.is_empty() {
                route["operations"] = Value::Array(operations);
            }
            route
        })
        .collect();
    Json200(Value::Array(list)).into_response()
}

async fn upstreams(State(c): State<Arc<Control>>) -> Response {
    let snap = c.shared.snapshot.load_full();
    let list: Vec<Value> = snap
        .upstreams
        .iter()
        .zip(&snap.config.upstreams)
        .map(|(u, cfg)| {
            json!({
                "name": u.name(),
                "protocol": format!("{:?}", cfg.protocol).to_lowercase(),
                "load_balancer": format!("{:?}", u.config().policy),
                "retries": u.stats().retries().map(|(r, n)| (r.to_string(), json!(n))).collect::<serde_json::Map<String, Value>>(),
                "retry_budget_exhausted": u.stats().budget_exhausted.load(Ordering::Relaxed),
                "tls_verify": cfg.tls.as_ref().map(|t| !t.insecure_skip_verify),
                "zones": u.zone_shares().iter().map(|z| json!({
                    "zone": z.zone,
                    "local": z.local,
                    "targets": z.targets,
                    "healthy": z.healthy,
                    "healthy_percent": z.healthy_percent,
                    "traffic_percent": (z.traffic_percent * 10.0).round() / 10.0,
                })).collect::<Vec<_>>(),
                "targets": u.targets().iter().map(|t| {
                    let s = &t.stats;
                    json!({
                        "address": &*t.authority,
                        "weight": t.weight,
                        "zone": (!t.zone.is_empty()).then(|| &*t.zone),
                        "health": t.health.describe(),
                        "circuit": t.circuit(),
                        "ejections": t.health.ejections_total.load(Ordering::Relaxed),
                        "negotiated": t.negotiated(),
                        "in_flight": s.in_flight.load(Ordering::Relaxed),
                        "requests": s.requests.load(Ordering::Relaxed),
                        "pool": {
                            "idle": t.idle_connections(),
                            "open": s.open_connections.load(Ordering::Relaxed),
                            "connects": s.connects.load(Ordering::Relaxed),
                            "reused": s.reused.load(Ordering::Relaxed),
                        },
                        "errors": s.errors().filter(|(_, n)| *n > 0)
                            .map(|(k, n)| (k.reason().to_string(), json!(n)))
                            .collect::<serde_json::Map<String, Value>>(),
                    })
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json200(Value::Array(list)).into_response()
}

async fn reload(State(c): State<Arc<Control>>) -> Response {
    match c.reload("admin API").await {
        Ok(hash) => Json200(json!({"status": "reloaded", "hash": hash})).into_response(),
        Err(refused) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": {
                    "status": 400,
                    "code": "invalid_config",
                    "message": "the new config was refused; the previous one keeps serving",
                    "request_id": "",
                },
                "problems": refused.0,
            }),
        ),
    }
}

async fn slo(State(c): State<Arc<Control>>) -> Response {
    let snap = c.shared.snapshot.load_full();
    let mut v = crate::topology::slo_json(&snap);
    crate::suspect::annotate(&mut v, &snap, &c.shared.history);
    Json200(v).into_response()
}

async fn policies(State(c): State<Arc<Control>>) -> Response {
    let snap = c.shared.snapshot.load_full();
    Json200(crate::policy::admin_json(&snap)).into_response()
}

async fn topology(State(c): State<Arc<Control>>) -> Response {
    let snap = c.shared.snapshot.load_full();
    let listeners = c.addresses().await;
    Json200(crate::topology::topology_json(
        &snap,
        &c.sampler,
        &listeners,
        c.started_ms,
    ))
    .into_response()
}

/// `GET /admin/status`: what the dashboard's overview shows.
async fn status(State(c): State<Arc<Control>>) -> Response {
    let snap = c.shared.snapshot.load_full();
    let now_ms = (unix_seconds(std::time::SystemTime::now()) * 1000.0) as u64;
    let (mut requests, mut errors) = (0u64, 0u64);
    for r in &snap.routes {
        let (n, e) = r.metrics.stats.totals();
        requests += n;
        errors += e;
    }
    let targets: Vec<_> = snap.upstreams.iter().flat_map(|u| u.targets()).collect();
    let healthy = targets
        .iter()
        .filter(|t| t.health.describe() == "healthy")
        .count();
    let reloads = |result: &str| c.shared.metrics.reloads.with_label_values(&[result]).get();
    let latest = c.shared.history.latest();
    Json200(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": c.started_ms as f64 / 1000.0,
        "uptime_seconds": now_ms.saturating_sub(c.started_ms) as f64 / 1000.0,
        "config": {
            "hash": snap.config.hash,
            "generation": latest.as_ref().map(|e| e.generation),
            "loaded_at": unix_seconds(snap.loaded_at),
        },
        "last_change": latest.as_ref().map(|e| {
            let mut v = e.summary_json();
            // The list of changed objects can be long (10,000 routes added at start).
            if let Some(o) = v.as_object_mut() {
                o.remove("changes");
            }
            v
        }),
        "last_reload": c.last_reload.lock().ok().and_then(|r| r.clone()),
        "reloads": {"ok": reloads("ok"), "failed": reloads("failed")},
        "etcd": c.shared.fleet.is_some(),
        "totals": {
            "routes": snap.routes.len(),
            "upstreams": snap.upstreams.len(),
            "targets": targets.len(),
            "healthy_targets": healthy,
            "listeners": snap.config.listeners.len(),
            "requests": requests,
            "errors": errors,
            "open_connections": c.shared.drain.live(),
        },
    }))
    .into_response()
}

async fn get_log_level() -> Response {
    Json200(json!({ "filter": crate::logging::current() })).into_response()
}

/// Body: a filter such as `debug` or `portcullis=debug,info`, as text or `{"filter": "..."}`.
async fn set_log_level(body: String) -> Response {
    let spec = match serde_json::from_str::<Value>(&body) {
        Ok(v) => v
            .get("filter")
            .or_else(|| v.get("level"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        Err(_) => body.trim().to_owned(),
    };
    match crate::logging::set(&spec) {
        Ok(()) => Json200(json!({ "filter": spec })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_request", &e),
    }
}
