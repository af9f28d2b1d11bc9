//! The plugin pipeline of Portcullis: the [`Plugin`] trait, the per-request [`RequestCtx`], and
//! the built-in plugins, one module each.
//!
//! A plugin overrides only the phases it needs; all have no-op defaults:
//!
//! 1. [`Plugin::on_request`] — the client's request head, after routing, before anything is
//!    sent upstream (authentication, rate limits, IP rules). May answer the request itself.
//! 2. [`Plugin::on_upstream_request`] — the request about to be forwarded, after rewrites
//!    (add headers derived from auth, etc.). May answer the request itself.
//! 3. [`Plugin::on_response`] — the response head on its way to the client.
//! 4. Body phases, only for plugins that have them ([`Plugin::has_body_phases`]): the request
//!    body buffered ([`Plugin::on_request_body`]) or streamed through a transform
//!    ([`Plugin::request_body_transform`]) before it is sent upstream, and the same for the
//!    upstream's response body and trailers. See [`body`].
//!
//! Plugins run in a defined order: by [`PluginSpec::priority`] (higher first), like Kong. A
//! phase that needs I/O returns [`Step::Pending`] with a future; one that does not returns
//! [`Step::Done`] and costs no allocation.
//!
//! Adding a plugin means adding a module with its config struct and one line to [`REGISTRY`].

#![warn(missing_docs)]

pub mod body;
pub mod builtin;
pub mod client_cert;
pub mod cors;
mod ctx;
pub mod ip_restriction;
pub mod jwt;
pub mod key_auth;
pub mod metrics;
pub mod openapi;
pub mod rate_limit;
mod reply;
pub mod request_termination;
pub mod shared;
pub mod transcode;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use body::{BodyAccess, BodyEnd, BodyError, BodyTransform};
use bytes::Bytes;
pub use client_cert::ClientIdentity;
pub use ctx::RequestCtx;
pub use reply::Reply;

/// What a phase decided.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next plugin and then the upstream.
    Continue,
    /// Answer the client with this and stop.
    Respond(Reply),
}

/// A phase's result: decided now, or a future to await (for plugins doing I/O).
pub enum Step<'a> {
    /// Decided without waiting.
    Done(Flow),
    /// Await this to get the decision.
    Pending(Pin<Box<dyn Future<Output = Flow> + Send + 'a>>),
}

impl Step<'_> {
    /// Continue without waiting.
    pub const CONTINUE: Step<'static> = Step::Done(Flow::Continue);

    /// Resolves the step.
    pub async fn resolve(self) -> Flow {
        match self {
            Step::Done(f) => f,
            Step::Pending(fut) => fut.await,
        }
    }
}

/// A request-processing plugin. One instance serves every request of the routes it is
/// configured on, concurrently; per-request state lives in [`RequestCtx`].
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's config name.
    fn name(&self) -> &'static str;

    /// Client request head, after routing. May answer the request.
    fn on_request<'a>(
        &'a self,
        _ctx: &'a mut RequestCtx,
        _req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        Step::CONTINUE
    }

    /// Request head about to be sent upstream, after rewrites. May answer the request.
    fn on_upstream_request<'a>(
        &'a self,
        _ctx: &'a mut RequestCtx,
        _req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        Step::CONTINUE
    }

    /// Response head on its way to the client (also for responses the gateway made).
    fn on_response(&self, _ctx: &mut RequestCtx, _resp: &mut http::response::Parts) {}

    /// Whether this plugin has body phases at all. Asked once when a config is built: a route
    /// whose plugins all say no never buffers, wraps or inspects a body (see [`body`]).
    fn has_body_phases(&self) -> bool {
        false
    }

    /// How this request's body is wanted, decided from the head after the request phases (and
    /// the rewrites); `None`: not at all.
    fn request_body(&self, _ctx: &RequestCtx, _req: &http::request::Parts) -> Option<BodyAccess> {
        None
    }

    /// The whole request body, when [`Plugin::request_body`] asked for it buffered. May
    /// replace it and change the head (the gateway sets `Content-Length`), or answer.
    fn on_request_body<'a>(
        &'a self,
        _ctx: &'a mut RequestCtx,
        _req: &'a mut http::request::Parts,
        _body: &'a mut Bytes,
    ) -> Step<'a> {
        Step::CONTINUE
    }

    /// The transform of a streamed request body, when [`Plugin::request_body`] asked for a
    /// stream. The head may be changed (the gateway drops `Content-Length`).
    fn request_body_transform(
        &self,
        _ctx: &mut RequestCtx,
        _req: &mut http::request::Parts,
    ) -> Option<Box<dyn BodyTransform>> {
        None
    }

    /// How this response's body is wanted, decided from its head after
    /// [`Plugin::on_response`]; only asked for upstream responses, never for answers the
    /// gateway made itself.
    fn response_body(
        &self,
        _ctx: &RequestCtx,
        _resp: &http::response::Parts,
    ) -> Option<BodyAccess> {
        None
    }

    /// The whole response body and its trailers, when buffered. May replace them and change
    /// the head (the gateway sets `Content-Length`), or answer instead with a reply.
    fn on_response_body(
        &self,
        _ctx: &mut RequestCtx,
        _resp: &mut http::response::Parts,
        _body: &mut Bytes,
        _trailers: &mut Option<http::HeaderMap>,
    ) -> Flow {
        Flow::Continue
    }

    /// The transform of a streamed response body. The head may be changed (the gateway drops
    /// `Content-Length`).
    fn response_body_transform(
        &self,
        _ctx: &mut RequestCtx,
        _resp: &mut http::response::Parts,
    ) -> Option<Box<dyn BodyTransform>> {
        None
    }

    /// Warnings about this instance's config for `validate`, each as a lint policy name and a
    /// message (e.g. parts of an API spec that cannot be enforced).
    fn lints(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// What the admin API shows of this plugin beside its name (`grpc_transcode`: each HTTP
    /// method and template with the gRPC method it calls); `None`: nothing.
    fn describe(&self) -> Option<serde_json::Value> {
        None
    }

    /// Request headers this plugin fills from verified data (identity headers). The gateway
    /// removes client-sent copies of them on every route, whether or not this plugin runs
    /// there, so no client can choose their value.
    fn reserved_headers(&self) -> &[http::HeaderName] {
        &[]
    }
}

impl std::fmt::Debug for dyn Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plugin({})", self.name())
    }
}

/// A plugin config was rejected; `path` is relative to the plugin's config entry.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PluginConfigError {
    /// Field path inside the plugin's config (empty for the whole entry).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl PluginConfigError {
    /// An error about the whole plugin entry.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            path: String::new(),
            message: message.into(),
        }
    }
}

/// Deserializes a plugin's config struct, keeping the path of a bad field.
pub fn parse_config<T: serde::de::DeserializeOwned>(
    v: &serde_json::Value,
) -> Result<T, PluginConfigError> {
    let v = if v.is_null() {
        &serde_json::Value::Object(Default::default())
    } else {
        v
    };
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        PluginConfigError {
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// What a plugin may need to know when it is built.
#[derive(Debug, Clone)]
pub struct BuildCtx<'a> {
    /// `global` or the route's name: the scope of state such as rate-limit counters.
    pub scope: &'a str,
    /// Directory relative file paths in the plugin's config resolve against.
    pub base_dir: &'a std::path::Path,
}

/// Builds a plugin instance from its config. Must not block on I/O or spawn tasks: `validate`
/// builds plugins without a runtime; plugins that need I/O start it on first use.
pub type Factory =
    fn(&serde_json::Value, &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, PluginConfigError>;

/// A plugin known to the gateway.
#[derive(Debug, Clone, Copy)]
pub struct PluginSpec {
    /// Config name.
    pub name: &'static str,
    /// Run order: higher runs first in every phase.
    pub priority: i32,
    /// Constructor.
    pub build: Factory,
}

/// Every plugin the gateway knows, by config name. Order of execution is by priority (higher
/// first), as in Kong: IP rules, then CORS preflights, then authentication (client certificates
/// first), then rate limits, then OpenAPI validation.
pub static REGISTRY: &[PluginSpec] = &[
    PluginSpec {
        name: "ip_restriction",
        priority: 3000,
        build: ip_restriction::build,
    },
    PluginSpec {
        name: "cors",
        priority: 2000,
        build: cors::build,
    },
    PluginSpec {
        name: "client_cert",
        priority: 1600,
        build: client_cert::build,
    },
    PluginSpec {
        name: "jwt",
        priority: 1450,
        build: jwt::build,
    },
    PluginSpec {
        name: "key_auth",
        priority: 1250,
        build: key_auth::build,
    },
    PluginSpec {
        name: "rate_limit",
        priority: 910,
        build: rate_limit::build,
    },
    PluginSpec {
        name: "openapi",
        priority: 800,
        build: openapi::build,
    },
    PluginSpec {
        name: "grpc_transcode",
        priority: 500,
        build: transcode::build,
    },
    PluginSpec {
        name: "request_termination",
        priority: 2,
        build: request_termination::build,
    },
];

/// Looks a plugin up by name.
pub fn find(name: &str) -> Option<&'static PluginSpec> {
    REGISTRY.iter().find(|p| p.name == name)
}

/// Names of all known plugins (for error messages).
pub fn known_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|p| p.name).collect()
}
