//! `grpc_transcode`: a gRPC service served as a JSON/HTTP API from its `google.api.http`
//! annotations, with one route.
//!
//! The request head is matched against the bindings (`on_request`: 404 `no_operation` when
//! none matches, 400 for a bad query), the head sent upstream becomes a gRPC call
//! (`on_upstream_request`), the body is read whole and turned into framed protobuf
//! (`on_request_body`), and the answer comes back as JSON: buffered for unary methods, streamed
//! message by message for server streaming. Requests that already are gRPC pass untouched.

pub mod descriptors;
pub mod request;
pub mod response;
pub mod stream;
pub mod template;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use self::descriptors::{Api, Binding, Source};
use self::response::{Print, grpc_status, http_status, next_frame, render_message, status_json};
use self::stream::{JsonStream, StreamFormat};
use crate::body::{BodyAccess, BodyTransform};
use crate::{BuildCtx, Flow, Plugin, PluginConfigError, Reply, RequestCtx, Step};

/// Largest upstream answer to a unary call turned into JSON.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static TE: HeaderName = HeaderName::from_static("te");

/// Headers of the gRPC protocol that do not go to a JSON client.
const GRPC_HEADERS: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
    "grpc-accept-encoding",
    "trailer",
];

/// `proto:` — `.proto` files compiled at load.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtoConf {
    /// Files to compile, relative to the config file.
    files: Vec<String>,
    /// Import directories, relative to the config file (default: the config's directory).
    #[serde(default)]
    include: Vec<String>,
}

/// What to do with a query parameter that names no field.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum UnknownQuery {
    /// 400.
    #[default]
    Reject,
    /// Leave it out.
    Ignore,
}

/// The `grpc_transcode` config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    /// A FileDescriptorSet file (`protoc --include_imports -o`).
    #[serde(default)]
    descriptor: Option<String>,
    /// Or `.proto` files.
    #[serde(default)]
    proto: Option<ProtoConf>,
    /// Services whose annotations make the HTTP API.
    services: Vec<String>,
    /// Print options.
    #[serde(default)]
    print: Print,
    /// Server streaming format.
    #[serde(default)]
    stream: StreamFormat,
    /// Unknown query parameters.
    #[serde(default)]
    unknown_query: UnknownQuery,
}

/// The plugin instance of one route.
#[derive(Debug)]
pub struct GrpcTranscode {
    api: Api,
    print: Print,
    stream: StreamFormat,
    ignore_unknown: bool,
}

/// The transcoding of one request, kept in the request context between phases.
#[derive(Debug, Clone)]
struct Call {
    binding: Arc<Binding>,
    head: Arc<Map<String, Value>>,
    deadline: Option<Duration>,
    format: StreamFormat,
    content_type: String,
}

/// Builds the plugin: loads and checks the descriptors and the bindings.
pub fn build(v: &Value, bctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, PluginConfigError> {
    let c: Conf = crate::parse_config(v)?;
    let source = match (&c.descriptor, &c.proto) {
        (Some(d), None) => Source::Set(descriptors::resolve(bctx.base_dir, d)),
        (None, Some(p)) => {
            let include = if p.include.is_empty() {
                vec![bctx.base_dir.to_path_buf()]
            } else {
                p.include
                    .iter()
                    .map(|i| descriptors::resolve(bctx.base_dir, i))
                    .collect()
            };
            Source::Protos {
                files: p
                    .files
                    .iter()
                    .map(|f| descriptors::resolve(bctx.base_dir, f))
                    .collect(),
                include,
            }
        }
        _ => {
            return Err(PluginConfigError::new(
                "set exactly one of `descriptor` (a FileDescriptorSet) or `proto` (.proto files)",
            ));
        }
    };
    let field = if c.descriptor.is_some() {
        "descriptor"
    } else {
        "proto"
    };
    let pool = descriptors::load_pool(&source).map_err(|m| PluginConfigError {
        path: field.into(),
        message: m,
    })?;
    if c.services.is_empty() {
        return Err(PluginConfigError {
            path: "services".into(),
            message: "name at least one service (`package.Service`)".into(),
        });
    }
    let bindings = descriptors::bindings(&pool, &c.services).map_err(|m| PluginConfigError {
        path: "services".into(),
        message: m,
    })?;
    Ok(Arc::new(GrpcTranscode {
        api: Api { pool, bindings },
        print: c.print,
        stream: c.stream,
        ignore_unknown: c.unknown_query == UnknownQuery::Ignore,
    }))
}

fn is_grpc(h: &http::HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Parses a `grpc-timeout` value (`100m`, `5S`, ...).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    if n.is_empty() || n.len() > 8 {
        return None;
    }
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a deadline as `grpc-timeout` (at most 8 digits).
pub fn format_grpc_timeout(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 100_000_000 {
        format!("{}m", ms.max(1))
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    }
}

fn bad_request(msg: String) -> Flow {
    Flow::Respond(Reply::error(StatusCode::BAD_REQUEST, "bad_request", msg))
}

fn json_reply(status: StatusCode, body: Value) -> Reply {
    Reply::Raw {
        status,
        headers: vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body: Bytes::from(body.to_string()),
    }
}

fn clean_head(h: &mut http::HeaderMap) {
    for n in GRPC_HEADERS {
        h.remove(*n);
    }
    h.remove(header::CONTENT_LENGTH);
}

impl GrpcTranscode {
    fn route(&self, ctx: &mut RequestCtx, req: &http::request::Parts) -> Flow {
        let path = req.uri.path();
        let mut allowed: Vec<&Method> = Vec::new();
        let mut hit = None;
        for b in &self.api.bindings {
            let Some(vars) = b.template.matches(path) else {
                continue;
            };
            match &b.method {
                Some(m) if *m != req.method => allowed.push(m),
                _ => {
                    hit = Some((b, vars));
                    break;
                }
            }
        }
        let Some((b, vars)) = hit else {
            if !allowed.is_empty() {
                let allow: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
                let mut headers = Vec::new();
                if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                    headers.push((header::ALLOW, v));
                }
                return Flow::Respond(Reply::Error {
                    status: StatusCode::METHOD_NOT_ALLOWED,
                    code: "method_not_allowed",
                    message: format!("{} is not allowed on {path}", req.method),
                    headers,
                });
            }
            return Flow::Respond(Reply::error(
                StatusCode::NOT_FOUND,
                "no_operation",
                format!("no gRPC method is bound to {} {path}", req.method),
            ));
        };
        let head = match request::head_fields(b, &vars, req.uri.query(), self.ignore_unknown) {
            Ok(h) => h,
            Err(e) => return bad_request(e.0),
        };
        let client_deadline = req
            .headers
            .get(&GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let deadline = match (client_deadline, ctx.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let format = req
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .and_then(StreamFormat::from_accept)
            .unwrap_or(self.stream);
        let content_type = req
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        ctx.extensions.insert(Call {
            binding: b.clone(),
            head: Arc::new(head),
            deadline,
            format,
            content_type,
        });
        Flow::Continue
    }

    /// The bindings as `[{method, path, grpc}]`, for the admin API.
    pub fn operations(&self) -> Vec<Value> {
        self.api
            .bindings
            .iter()
            .map(|b| {
                let (m, p) = b.describe();
                serde_json::json!({"method": m, "path": p, "grpc": b.rpc.full_name()})
            })
            .collect()
    }
}

impl Plugin for GrpcTranscode {
    fn name(&self) -> &'static str {
        "grpc_transcode"
    }

    fn on_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        if is_grpc(&req.headers) {
            return Step::CONTINUE;
        }
        Step::Done(self.route(ctx, req))
    }

    fn on_upstream_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        let Some(call) = ctx.extensions.get::<Call>() else {
            return Step::CONTINUE;
        };
        req.method = Method::POST;
        let mut uri = std::mem::take(&mut req.uri).into_parts();
        uri.path_and_query = Some(call.binding.grpc_path.clone());
        req.uri = http::Uri::from_parts(uri)
            .unwrap_or_else(|_| http::Uri::from(call.binding.grpc_path.clone()));
        let h = &mut req.headers;
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(TE.clone(), HeaderValue::from_static("trailers"));
        h.remove(header::ACCEPT);
        h.remove(header::ACCEPT_ENCODING);
        h.remove(header::CONTENT_LENGTH);
        h.remove(&GRPC_TIMEOUT);
        if let Some(d) = call.deadline
            && let Ok(v) = HeaderValue::from_str(&format_grpc_timeout(d))
        {
            h.insert(GRPC_TIMEOUT.clone(), v);
        }
        Step::CONTINUE
    }

    fn has_body_phases(&self) -> bool {
        true
    }

    fn request_body(&self, ctx: &RequestCtx, _req: &http::request::Parts) -> Option<BodyAccess> {
        ctx.extensions
            .get::<Call>()
            .map(|_| BodyAccess::Buffered { limit: u64::MAX })
    }

    fn on_request_body<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        _req: &'a mut http::request::Parts,
        body: &'a mut Bytes,
    ) -> Step<'a> {
        let Some(call) = ctx.extensions.get::<Call>() else {
            return Step::CONTINUE;
        };
        match request::build(&call.binding, &call.head, body, &call.content_type) {
            Ok(framed) => {
                *body = framed;
                Step::CONTINUE
            }
            Err(e) => Step::Done(bad_request(e.0)),
        }
    }

    fn response_body(&self, ctx: &RequestCtx, resp: &http::response::Parts) -> Option<BodyAccess> {
        let call = ctx.extensions.get::<Call>()?;
        let trailers_only = resp.headers.contains_key("grpc-status");
        if call.binding.rpc.is_server_streaming() && !trailers_only && is_grpc(&resp.headers) {
            Some(BodyAccess::Stream)
        } else {
            Some(BodyAccess::Buffered {
                limit: MAX_RESPONSE_BYTES,
            })
        }
    }

    fn on_response_body(
        &self,
        ctx: &mut RequestCtx,
        resp: &mut http::response::Parts,
        body: &mut Bytes,
        trailers: &mut Option<http::HeaderMap>,
    ) -> Flow {
        let Some(call) = ctx.extensions.get::<Call>() else {
            return Flow::Continue;
        };
        let upstream_error = |msg: String| {
            Flow::Respond(Reply::error(StatusCode::BAD_GATEWAY, "upstream_error", msg))
        };
        let Some((code, h)) = grpc_status(&resp.headers, trailers.as_ref()) else {
            return upstream_error(format!(
                "the upstream answered HTTP {} without a gRPC status",
                resp.status.as_u16()
            ));
        };
        if code != 0 {
            let st = status_json(&self.api.pool, code, &h, self.print);
            return Flow::Respond(json_reply(http_status(code), st));
        }
        let mut buf = BytesMut::from(&body[..]);
        let mut out: Vec<(Bytes, Option<String>)> = Vec::new();
        loop {
            match next_frame(&mut buf) {
                Ok(Some(f)) => match render_message(&call.binding, self.print, &f) {
                    Ok(m) => out.push(m),
                    Err(e) => return upstream_error(e.0),
                },
                Ok(None) => break,
                Err(e) => return upstream_error(e.0),
            }
        }
        let streaming = call.binding.rpc.is_server_streaming();
        let (data, ct) = if streaming {
            // Only reached for a complete, buffered stream: an array of its messages.
            let items: Vec<&[u8]> = out.iter().map(|(b, _)| &b[..]).collect();
            let mut v = b"[".to_vec();
            v.extend_from_slice(&items.join(&b","[..]));
            v.push(b']');
            (Bytes::from(v), None)
        } else {
            match out.pop() {
                Some(m) if out.is_empty() => m,
                _ => {
                    return upstream_error(
                        "the upstream did not answer exactly one message".into(),
                    );
                }
            }
        };
        clean_head(&mut resp.headers);
        resp.status = StatusCode::OK;
        let ct = ct.unwrap_or_else(|| "application/json".into());
        resp.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&ct)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
        *body = data;
        *trailers = None;
        Flow::Continue
    }

    fn response_body_transform(
        &self,
        ctx: &mut RequestCtx,
        resp: &mut http::response::Parts,
    ) -> Option<Box<dyn BodyTransform>> {
        let call = ctx.extensions.get::<Call>()?;
        let head = resp.headers.clone();
        clean_head(&mut resp.headers);
        resp.status = StatusCode::OK;
        resp.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(call.format.content_type()),
        );
        if call.format == StreamFormat::Sse {
            resp.headers
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        Some(Box::new(JsonStream {
            binding: call.binding.clone(),
            pool: self.api.pool.clone(),
            print: self.print,
            format: call.format,
            head,
            buf: BytesMut::new(),
            count: 0,
        }))
    }

    fn describe(&self) -> Option<Value> {
        Some(Value::Array(self.operations()))
    }
}

#[cfg(test)]
mod tests;
