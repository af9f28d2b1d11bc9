//! `request_termination`: answers matching requests from the gateway with a fixed response,
//! without calling the upstream (maintenance windows, blocking a route quickly). As Kong's
//! plugin of the same name.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;

use crate::{Flow, Plugin, PluginConfigError, Reply, RequestCtx, Step, parse_config};

/// Config of `request_termination`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Status to answer with; default 503.
    #[serde(default)]
    pub status: Option<u16>,
    /// A message: the answer is then the contract's JSON error with code `terminated`.
    #[serde(default)]
    pub message: Option<String>,
    /// A raw body instead of the JSON error.
    #[serde(default)]
    pub body: Option<String>,
    /// Headers of a raw body answer.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The plugin instance.
#[derive(Debug)]
pub struct RequestTermination {
    reply: Reply,
}

/// Builds the plugin from its config.
pub fn build(
    v: &serde_json::Value,
    _ctx: &crate::BuildCtx<'_>,
) -> Result<Arc<dyn Plugin>, PluginConfigError> {
    let c: Config = parse_config(v)?;
    let status = StatusCode::from_u16(c.status.unwrap_or(503)).map_err(|_| PluginConfigError {
        path: "status".into(),
        message: "not an HTTP status".into(),
    })?;
    let reply = match c.body {
        Some(body) => {
            let mut headers = Vec::new();
            for (k, v) in &c.headers {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| PluginConfigError {
                    path: format!("headers.{k}"),
                    message: "not a valid header name".into(),
                })?;
                let value = HeaderValue::from_str(v).map_err(|_| PluginConfigError {
                    path: format!("headers.{k}"),
                    message: "not a valid header value".into(),
                })?;
                headers.push((name, value));
            }
            Reply::Raw {
                status,
                headers,
                body: Bytes::from(body),
            }
        }
        None => Reply::error(
            status,
            "terminated",
            c.message
                .unwrap_or_else(|| "this route is not serving requests".into()),
        ),
    };
    Ok(Arc::new(RequestTermination { reply }))
}

impl Plugin for RequestTermination {
    fn name(&self) -> &'static str {
        "request_termination"
    }

    fn on_request<'a>(
        &'a self,
        _ctx: &'a mut RequestCtx,
        _req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        Step::Done(Flow::Respond(self.reply.clone()))
    }
}
