//! `key_auth`: API keys in a header or query parameter, mapped to named consumers. Keys may be
//! stored as SHA-256 hashes in the config. The consumer's name is forwarded upstream (and any
//! client-sent header of that name removed first, so it cannot be spoofed) and becomes the
//! request's consumer for rate limits and logs.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::metrics::{Counter, counter};
use crate::{BuildCtx, Flow, Plugin, PluginConfigError, Reply, RequestCtx, Step, parse_config};

/// Config of `key_auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Header carrying the key (default `X-API-Key` when no `query` is given).
    #[serde(default)]
    pub header: Option<String>,
    /// Query parameter carrying the key.
    #[serde(default)]
    pub query: Option<String>,
    /// Known consumers.
    pub consumers: Vec<Consumer>,
    /// Remove the key from the request before forwarding it (default true).
    #[serde(default = "yes")]
    pub hide_credentials: bool,
    /// Header the consumer's name is sent upstream in (default `X-Consumer`).
    #[serde(default)]
    pub consumer_header: Option<String>,
}

fn yes() -> bool {
    true
}

/// A consumer and its key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Name, forwarded upstream and used as rate-limit key.
    pub name: String,
    /// The key in clear text.
    #[serde(default)]
    pub key: Option<String>,
    /// The key's SHA-256, hex: keeps the key itself out of the config.
    #[serde(default)]
    pub key_sha256: Option<String>,
}

/// The plugin instance.
#[derive(Debug)]
pub struct KeyAuth {
    header: Option<HeaderName>,
    query: Option<String>,
    by_hash: HashMap<[u8; 32], String>,
    hide: bool,
    consumer_header: HeaderName,
    missing: Counter,
    invalid: Counter,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = Sha256::digest(b);
    let mut out = [0u8; 32];
    out.copy_from_slice(&d);
    out
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Builds the plugin from its config.
pub fn build(
    v: &serde_json::Value,
    ctx: &BuildCtx<'_>,
) -> Result<Arc<dyn Plugin>, PluginConfigError> {
    let c: Config = parse_config(v)?;
    let header_name = |field: &str, s: &str| {
        HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()).map_err(|_| PluginConfigError {
            path: field.into(),
            message: format!("`{s}` is not a header name"),
        })
    };
    let header = match (&c.header, &c.query) {
        (Some(h), _) => Some(header_name("header", h)?),
        (None, None) => Some(HeaderName::from_static("x-api-key")),
        (None, Some(_)) => None,
    };
    let mut by_hash = HashMap::new();
    for (i, cons) in c.consumers.iter().enumerate() {
        let hash = match (&cons.key, &cons.key_sha256) {
            (Some(k), None) if !k.is_empty() => sha256(k.as_bytes()),
            (None, Some(h)) => parse_hex(h).ok_or_else(|| PluginConfigError {
                path: format!("consumers[{i}].key_sha256"),
                message: "64 hex digits (sha256sum of the key)".into(),
            })?,
            _ => {
                return Err(PluginConfigError {
                    path: format!("consumers[{i}]"),
                    message: "give exactly one of `key` and `key_sha256`".into(),
                });
            }
        };
        if by_hash.insert(hash, cons.name.clone()).is_some() {
            return Err(PluginConfigError {
                path: format!("consumers[{i}]"),
                message: "two consumers share this key".into(),
            });
        }
    }
    if by_hash.is_empty() {
        return Err(PluginConfigError {
            path: "consumers".into(),
            message: "at least one consumer is needed".into(),
        });
    }
    let consumer_header = header_name(
        "consumer_header",
        c.consumer_header.as_deref().unwrap_or("x-consumer"),
    )?;
    let reason = |r: &str| {
        counter(
            "portcullis_auth_failures_total",
            "Requests refused by an authentication plugin, by reason.",
            &[("plugin", "key_auth"), ("scope", ctx.scope), ("reason", r)],
        )
    };
    Ok(Arc::new(KeyAuth {
        header,
        query: c.query,
        by_hash,
        hide: c.hide_credentials,
        consumer_header,
        missing: reason("missing_key"),
        invalid: reason("invalid_key"),
    }))
}

fn refuse(message: &str) -> Step<'static> {
    Step::Done(Flow::Respond(Reply::Error {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message: message.to_owned(),
        headers: vec![(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("ApiKey realm=\"portcullis\""),
        )],
    }))
}

impl KeyAuth {
    fn find_key(&self, req: &http::request::Parts) -> Option<Vec<u8>> {
        if let Some(h) = &self.header
            && let Some(v) = req.headers.get(h)
        {
            return Some(v.as_bytes().to_vec());
        }
        let q = self.query.as_deref()?;
        req.uri.query()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == q).then(|| percent_decode(v))
        })
    }

    fn strip(&self, req: &mut http::request::Parts) {
        if let Some(h) = &self.header {
            req.headers.remove(h);
        }
        if let (Some(q), Some(query)) = (&self.query, req.uri.query()) {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|kv| kv.split('=').next() != Some(q.as_str()))
                .collect();
            let path = req.uri.path();
            let pq = if kept.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            if let Ok(uri) = http::Uri::builder().path_and_query(pq).build() {
                req.uri = uri;
            }
        }
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

impl Plugin for KeyAuth {
    fn name(&self) -> &'static str {
        "key_auth"
    }

    fn on_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        // Whatever happens next, a client cannot choose the consumer header.
        req.headers.remove(&self.consumer_header);
        let Some(key) = self.find_key(req) else {
            self.missing.inc();
            return refuse("no API key in the request");
        };
        let Some(name) = self.by_hash.get(&sha256(&key)) else {
            self.invalid.inc();
            return refuse("invalid API key");
        };
        if self.hide {
            self.strip(req);
        }
        if let Ok(v) = HeaderValue::from_str(name) {
            req.headers.insert(self.consumer_header.clone(), v);
        }
        ctx.consumer = Some(name.clone());
        Step::CONTINUE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_query_decoding() {
        let h = sha256(b"secret");
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_hex(&hex), Some(h));
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(percent_decode("a%2Bb+c"), b"a+b c");
    }
}
