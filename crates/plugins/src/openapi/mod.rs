//! `openapi`: requests (and sampled responses) validated against an OpenAPI 3.0 or 3.1 spec.
//!
//! The spec is read once when the config is built, with every `$ref` resolved (inside the
//! spec and to files beside it) and every schema compiled; a spec that does not load refuses
//! the config. Per request: the operation is matched (404 `no_operation`, 405
//! `method_not_allowed`), parameters are read by their style, coerced to their schema types
//! and validated, the content type is checked (415), and when the operation has a body schema
//! the body is read (up to `max_body_bytes`) and validated. Failures answer 400 (or 422)
//! `request_invalid` with `errors: [{in, name, pointer, message}]`, or in `report` mode are
//! logged and counted while the request goes on.

mod bodies;
mod convert;
mod load;
mod params;
mod spec;
pub mod tape;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use jsonschema::json::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::metrics::counter;
use crate::{
    BodyAccess, BuildCtx, Flow, Plugin, PluginConfigError, Reply, RequestCtx, Step, parse_config,
};
pub use load::SpecError;
use spec::{In, Operation, Seg, Spec};

/// Most failures listed in one error answer.
const MAX_ERRORS: usize = 10;

/// Config of `openapi`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The spec file (OpenAPI 3.0 or 3.1, YAML or JSON), relative to the config file.
    pub spec: String,
    /// `enforce` answers failures; `report` forwards, logs and counts them.
    #[serde(default)]
    pub mode: Mode,
    /// What is validated (default all): path, query, headers, cookies, body.
    #[serde(default = "all_parts")]
    pub validate: Vec<Part>,
    /// Query parameters the operation does not declare: `allow` or `reject`.
    #[serde(default)]
    pub unknown_query: UnknownQuery,
    /// Response validation.
    #[serde(default)]
    pub response: ResponseConfig,
    /// Status of validation failures: 400 or 422.
    #[serde(default = "default_status")]
    pub status: u16,
    /// Largest request body read for validation (413 beyond); default 1 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
}

/// Enforce or only report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Answer failures.
    #[default]
    Enforce,
    /// Forward, log and count failures.
    Report,
}

/// A part of the request to validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Path parameters.
    Path,
    /// Query parameters.
    Query,
    /// Header parameters.
    Headers,
    /// Cookie parameters.
    Cookies,
    /// Content type and body.
    Body,
}

fn all_parts() -> Vec<Part> {
    vec![
        Part::Path,
        Part::Query,
        Part::Headers,
        Part::Cookies,
        Part::Body,
    ]
}

/// Undeclared query parameters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownQuery {
    /// Let them through.
    #[default]
    Allow,
    /// Refuse the request.
    Reject,
}

/// `response:` of the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    /// `off`, `report` (default when the block is given) or `enforce` (502 on failure).
    #[serde(default = "report_mode")]
    pub mode: ResponseMode,
    /// Share of responses validated, 0.0 to 1.0 (default 1.0).
    #[serde(default = "one")]
    pub sample: f64,
    /// Largest response body validated; larger ones declared by `Content-Length` are skipped.
    #[serde(default = "default_max_response")]
    pub max_body_bytes: u64,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        Self {
            mode: ResponseMode::Off,
            sample: 1.0,
            max_body_bytes: default_max_response(),
        }
    }
}

/// What response validation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// Not at all.
    Off,
    /// Log and count failures.
    Report,
    /// Replace a failing response with 502 `upstream_error`.
    Enforce,
}

fn report_mode() -> ResponseMode {
    ResponseMode::Report
}
fn one() -> f64 {
    1.0
}
fn default_status() -> u16 {
    400
}
fn default_max_body() -> u64 {
    1 << 20
}
fn default_max_response() -> u64 {
    8 << 20
}

/// Which parts are validated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checks {
    path: bool,
    query: bool,
    headers: bool,
    cookies: bool,
    body: bool,
}

impl Checks {
    fn wants(&self, loc: In) -> bool {
        match loc {
            In::Path => self.path,
            In::Query => self.query,
            In::Header => self.headers,
            In::Cookie => self.cookies,
        }
    }
}

/// One validation failure.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    loc: &'static str,
    name: String,
    pointer: String,
    message: String,
}

/// Runs a schema over a value and records its failures (at most [`MAX_ERRORS`] in all).
/// `secret`: the value came from a header or cookie and must not appear in messages.
pub(crate) fn schema_failures<'i, F: Json>(
    schema: &'i Validator<F>,
    value: F::Node<'i>,
    loc: &'static str,
    name: &str,
    secret: bool,
    out: &mut Vec<Failure>,
) {
    // The common case, a valid value, on the validator's fast path; errors are only collected
    // (a slower walk) for a value that fails.
    if schema.is_valid(value.clone()) {
        return;
    }
    for e in schema.iter_errors(value) {
        if out.len() >= MAX_ERRORS {
            return;
        }
        let message = match e.kind() {
            ValidationErrorKind::Not { schema }
                if schema.get(convert::FORBIDDEN_MARK).is_some() =>
            {
                let why = schema[convert::FORBIDDEN_MARK].as_str().unwrap_or("");
                format!("the property is {why}")
            }
            _ if secret => e.masked().to_string(),
            _ => e.to_string(),
        };
        out.push(Failure {
            loc,
            name: name.to_owned(),
            pointer: e.instance_path().as_str().to_owned(),
            message,
        });
    }
}

/// The plugin instance.
pub struct OpenApi {
    spec: Spec,
    mode: Mode,
    checks: Checks,
    reject_unknown_query: bool,
    status: StatusCode,
    max_body: u64,
    response: ResponseConfig,
}

/// What the request phase found, for the body and response phases.
struct Matched {
    op: Arc<Operation>,
    /// Index of the request body's media type, when there is a body to validate.
    media: Option<usize>,
    /// The request's `Content-Type` as sent (empty when none).
    content_type: http::HeaderValue,
    method: http::Method,
    /// The request target (a shared copy: no allocation), for log lines.
    uri: http::Uri,
}

impl Matched {
    /// The operation's request body and the media type the request's content type chose.
    fn request_media(&self) -> Option<(&spec::RequestBody, &spec::Media)> {
        let rb = self.op.body.as_ref()?;
        Some((rb, rb.media.get(self.media?)?))
    }
}

/// Builds the plugin from its config.
pub fn build(
    v: &serde_json::Value,
    ctx: &BuildCtx<'_>,
) -> Result<Arc<dyn Plugin>, PluginConfigError> {
    Ok(Arc::new(OpenApi::new(v, ctx)?))
}

impl OpenApi {
    /// Builds the instance (the spec is read and compiled here).
    pub fn new(v: &serde_json::Value, ctx: &BuildCtx<'_>) -> Result<Self, PluginConfigError> {
        let c: Config = parse_config(v)?;
        let err = |path: &str, message: String| PluginConfigError {
            path: path.into(),
            message,
        };
        let status = match c.status {
            400 => StatusCode::BAD_REQUEST,
            422 => StatusCode::UNPROCESSABLE_ENTITY,
            n => return Err(err("status", format!("{n}: give 400 or 422"))),
        };
        if !(0.0..=1.0).contains(&c.response.sample) {
            return Err(err(
                "response.sample",
                "give a share from 0.0 to 1.0".into(),
            ));
        }
        let spec = spec::compile(&ctx.base_dir.join(&c.spec)).map_err(|e| err("spec", e.0))?;
        let has = |p: Part| c.validate.contains(&p);
        Ok(Self {
            spec,
            mode: c.mode,
            checks: Checks {
                path: has(Part::Path),
                query: has(Part::Query),
                headers: has(Part::Headers),
                cookies: has(Part::Cookies),
                body: has(Part::Body),
            },
            reject_unknown_query: c.unknown_query == UnknownQuery::Reject,
            status,
            max_body: c.max_body_bytes,
            response: c.response,
        })
    }

    /// Lint findings about the spec: operations whose body is not validated, internal
    /// properties in response schemas.
    pub fn findings(&self) -> Vec<&str> {
        self.spec
            .findings
            .iter()
            .map(|f| f.message.as_str())
            .collect()
    }

    /// The operation for a path (after the servers' base paths) and method.
    fn find(&self, path: &str, method: &http::Method) -> Found {
        let Some(rest) = self.spec.base_paths.iter().find_map(|b| {
            let r = path.strip_prefix(b.as_str())?;
            (r.is_empty() || r.starts_with('/')).then_some(r)
        }) else {
            return Found::NoPath;
        };
        let rest = rest.trim_start_matches('/');
        let count = rest.split('/').count();
        for entry in &self.spec.paths {
            if entry.segs.len() != count {
                continue;
            }
            let Some(vars) = match_segs(&entry.segs, rest.split('/')) else {
                continue;
            };
            let op = entry.ops.iter().find(|(m, _)| m == method).or_else(|| {
                (method == http::Method::HEAD)
                    .then(|| entry.ops.iter().find(|(m, _)| m == http::Method::GET))
                    .flatten()
            });
            return match op {
                Some((_, op)) => Found::Op(op.clone(), vars),
                None => Found::NoMethod(entry.allow.clone()),
            };
        }
        Found::NoPath
    }

    /// Answers or reports failures; `Continue` when there are none or in report mode.
    fn conclude(&self, ctx: &RequestCtx, what: &str, mut failures: Vec<Failure>) -> Flow {
        if failures.is_empty() {
            return Flow::Continue;
        }
        failures.truncate(MAX_ERRORS);
        if self.mode == Mode::Report {
            report(ctx, what, &failures);
            return Flow::Continue;
        }
        let errors: Vec<Value> = failures
            .iter()
            .map(|f| json!({"in": f.loc, "name": f.name, "pointer": f.pointer, "message": f.message}))
            .collect();
        let body = json!({"error": {
            "status": self.status.as_u16(),
            "code": "request_invalid",
            "message": format!("the request does not match the API spec: {}", failures[0].message),
            "request_id": ctx.request_id.to_str().unwrap_or(""),
            "errors": errors,
        }});
        Flow::Respond(Reply::Raw {
            status: self.status,
            headers: vec![
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body: Bytes::from(body.to_string()),
        })
    }

    /// Answers (or reports) a contract error without an errors list.
    fn refuse(&self, ctx: &RequestCtx, what: &str, reply: Reply, loc: &'static str) -> Flow {
        if self.mode == Mode::Report {
            if let Reply::Error { message, .. } = &reply {
                report(
                    ctx,
                    what,
                    &[Failure {
                        loc,
                        name: String::new(),
                        pointer: String::new(),
                        message: message.clone(),
                    }],
                );
            }
            return Flow::Continue;
        }
        Flow::Respond(reply)
    }
}

/// Logs one line per failure and counts them.
fn report(ctx: &RequestCtx, what: &str, failures: &[Failure]) {
    for f in failures {
        counter(
            "portcullis_openapi_failures_total",
            "Requests and responses that did not match the route's OpenAPI spec, by where",
            &[("route", &ctx.route), ("in", f.loc)],
        )
        .inc();
        tracing::warn!(
            route = %ctx.route,
            request_id = ctx.request_id.to_str().unwrap_or(""),
            what,
            r#in = f.loc,
            name = %f.name,
            pointer = %f.pointer,
            message = %f.message,
            "openapi: does not match the spec"
        );
    }
}

enum Found {
    Op(Arc<Operation>, Vec<(String, String)>),
    NoMethod(HeaderValue),
    NoPath,
}

/// The path variables when `segs` (as many as `pattern` has) match `pattern`.
fn match_segs<'s>(
    pattern: &[Seg],
    segs: impl Iterator<Item = &'s str>,
) -> Option<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (p, s) in pattern.iter().zip(segs) {
        match p {
            Seg::Lit(l) => {
                if l != s {
                    return None;
                }
            }
            Seg::Var {
                prefix,
                name,
                suffix,
            } => {
                let v = s
                    .strip_prefix(prefix.as_str())?
                    .strip_suffix(suffix.as_str())?;
                if v.is_empty() {
                    return None;
                }
                vars.push((name.clone(), v.to_owned()));
            }
        }
    }
    Some(vars)
}

/// Whether the request head announces a body.
fn has_body(h: &http::HeaderMap) -> bool {
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

impl Plugin for OpenApi {
    fn name(&self) -> &'static str {
        "openapi"
    }

    fn on_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        let path = req.uri.path();
        let (op, vars) = match self.find(path, &req.method) {
            Found::Op(op, vars) => (op, vars),
            Found::NoPath => {
                let reply = Reply::error(
                    StatusCode::NOT_FOUND,
                    "no_operation",
                    format!("no operation of the API spec matches {path}"),
                );
                return Step::Done(self.refuse(ctx, "request", reply, "path"));
            }
            Found::NoMethod(allow) => {
                let reply = Reply::Error {
                    status: StatusCode::METHOD_NOT_ALLOWED,
                    code: "method_not_allowed",
                    message: format!("{} is not allowed on {path}", req.method),
                    headers: vec![(header::ALLOW, allow)],
                };
                return Step::Done(self.refuse(ctx, "request", reply, "path"));
            }
        };
        let mut failures = Vec::new();
        params::check(
            &op,
            &vars,
            req.uri.query(),
            &req.headers,
            &self.checks,
            self.reject_unknown_query,
            &mut failures,
        );
        let content_type_value = req
            .headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or_else(|| http::HeaderValue::from_static(""));
        let content_type = content_type_value.to_str().unwrap_or("");
        let mut media = None;
        if let (Some(body), true) = (&op.body, self.checks.body) {
            if has_body(&req.headers) || !content_type.is_empty() {
                match bodies::find_media(&body.media, content_type) {
                    Some(m) => {
                        media = body.media.iter().position(|x| std::ptr::eq(x, m));
                    }
                    None if !body.media.is_empty() => {
                        let declared: Vec<&str> =
                            body.media.iter().map(|m| m.range.as_str()).collect();
                        let shown = if content_type.is_empty() {
                            "none".to_owned()
                        } else {
                            bodies::essence(content_type)
                        };
                        let reply = Reply::error(
                            StatusCode::UNSUPPORTED_MEDIA_TYPE,
                            "unsupported_media_type",
                            format!(
                                "content type {shown} is not declared for this operation; declared: {}",
                                declared.join(", ")
                            ),
                        );
                        return Step::Done(self.refuse(ctx, "request", reply, "header"));
                    }
                    None => {}
                }
            } else if body.required {
                failures.push(bodies::body_failure("the request body is required".into()));
            }
        }
        let flow = self.conclude(ctx, "request", failures);
        if matches!(flow, Flow::Continue) {
            ctx.extensions.insert(Arc::new(Matched {
                op,
                media,
                content_type: content_type_value,
                method: req.method.clone(),
                uri: req.uri.clone(),
            }));
        }
        Step::Done(flow)
    }

    fn has_body_phases(&self) -> bool {
        true
    }

    fn lints(&self) -> Vec<(&'static str, String)> {
        self.spec
            .findings
            .iter()
            .map(|f| (f.policy, f.message.clone()))
            .collect()
    }

    fn request_body(&self, ctx: &RequestCtx, _req: &http::request::Parts) -> Option<BodyAccess> {
        let m = ctx.extensions.get::<Arc<Matched>>()?;
        let media = &m.op.body.as_ref()?.media[m.media?];
        (media.schema.is_some() && media.kind != spec::BodyKind::Other).then_some(
            BodyAccess::Buffered {
                limit: self.max_body,
            },
        )
    }

    fn on_request_body<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        _req: &'a mut http::request::Parts,
        body: &'a mut Bytes,
    ) -> Step<'a> {
        let Some(m) = ctx.extensions.get::<Arc<Matched>>().cloned() else {
            return Step::CONTINUE;
        };
        let Some((rb, media)) = m.request_media() else {
            return Step::CONTINUE;
        };
        let mut failures = Vec::new();
        if body.is_empty() {
            if rb.required {
                failures.push(bodies::body_failure("the request body is required".into()));
            }
        } else if !bodies::check_json(media, body, &mut failures) {
            // Forms and multipart bodies: the multipart reader is asynchronous.
            let data = body.clone();
            return Step::Pending(Box::pin(async move {
                if let Some((_, media)) = m.request_media() {
                    let ct = m.content_type.to_str().unwrap_or("");
                    bodies::check(media, ct, data, &mut failures).await;
                }
                self.conclude(ctx, "request", failures)
            }));
        }
        Step::Done(self.conclude(ctx, "request", failures))
    }

    fn response_body(&self, ctx: &RequestCtx, resp: &http::response::Parts) -> Option<BodyAccess> {
        if self.response.mode == ResponseMode::Off {
            return None;
        }
        ctx.extensions.get::<Arc<Matched>>()?;
        if self.response.sample < 1.0 && fastrand::f64() >= self.response.sample {
            return None;
        }
        let declared = resp
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.response.max_body_bytes) {
            return None;
        }
        Some(BodyAccess::Buffered {
            limit: self.response.max_body_bytes,
        })
    }

    fn on_response_body(
        &self,
        ctx: &mut RequestCtx,
        resp: &mut http::response::Parts,
        body: &mut Bytes,
        _trailers: &mut Option<http::HeaderMap>,
    ) -> Flow {
        let Some(m) = ctx.extensions.get::<Arc<Matched>>().cloned() else {
            return Flow::Continue;
        };
        let failures = check_response(&m.op, resp, body);
        if failures.is_empty() {
            return Flow::Continue;
        }
        for f in &failures {
            counter(
                "portcullis_openapi_failures_total",
                "Requests and responses that did not match the route's OpenAPI spec, by where",
                &[("route", &ctx.route), ("in", "response")],
            )
            .inc();
            tracing::warn!(
                route = %ctx.route,
                request_id = ctx.request_id.to_str().unwrap_or(""),
                method = %m.method,
                path = %m.uri.path(),
                operation = %m.op.template,
                status = resp.status.as_u16(),
                pointer = %f.pointer,
                message = %f.message,
                "openapi: the upstream response does not match the spec"
            );
        }
        if self.response.mode == ResponseMode::Enforce {
            return Flow::Respond(Reply::error(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "the upstream response does not match the API spec (response_invalid)",
            ));
        }
        Flow::Continue
    }
}

/// Status, content type and JSON body of a response against the operation.
fn check_response(op: &Operation, resp: &http::response::Parts, body: &Bytes) -> Vec<Failure> {
    let mut out = Vec::new();
    let fail = |message: String| Failure {
        loc: "response",
        name: String::new(),
        pointer: String::new(),
        message,
    };
    let Some(spec) = op.response(resp.status.as_u16()) else {
        out.push(fail(format!(
            "status {} is not declared",
            resp.status.as_u16()
        )));
        return out;
    };
    if body.is_empty() || spec.media.is_empty() {
        return out;
    }
    let ct = resp
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(media) = bodies::find_media(&spec.media, ct) else {
        out.push(fail(format!(
            "content type {} is not declared for status {}",
            if ct.is_empty() { "none" } else { ct },
            resp.status.as_u16()
        )));
        return out;
    };
    if media.kind != spec::BodyKind::Json {
        return out;
    }
    let Some(spec::BodySchema::Json(schema)) = &media.schema else {
        return out;
    };
    match tape::Tape::parse(body) {
        Ok(t) => schema_failures(schema, t.root(), "response", "", false, &mut out),
        Err(e) => out.push(fail(format!("the body is not valid JSON: {e}"))),
    }
    out
}
