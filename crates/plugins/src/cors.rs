//! `cors`: answers CORS preflight requests from the gateway and adds the CORS headers to
//! responses for allowed origins. Origins are exact (`https://app.example.com`), `*`, or
//! patterns with `*` standing for one or more DNS labels (`https://*.example.com`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use regex::Regex;
use serde::Deserialize;

use crate::{BuildCtx, Flow, Plugin, PluginConfigError, Reply, RequestCtx, Step, parse_config};

/// Config of `cors`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Allowed origins: exact, `*`, or with `*` wildcards.
    pub origins: Vec<String>,
    /// Allowed methods; default GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Allowed request headers; when empty, the preflight's requested headers are allowed.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers exposed to scripts.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Whether credentials (cookies, Authorization) are allowed.
    #[serde(default)]
    pub credentials: bool,
    /// How long browsers may cache a preflight answer (e.g. `10m`).
    #[serde(default)]
    pub max_age: Option<String>,
}

enum OriginRule {
    Any,
    Exact(String),
    Pattern(Regex),
}

/// The plugin instance.
pub struct Cors {
    origins: Vec<OriginRule>,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

impl std::fmt::Debug for Cors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cors").finish_non_exhaustive()
    }
}

/// Marks a request whose origin was allowed, for the response phase.
#[derive(Clone)]
struct AllowedOrigin(HeaderValue);

fn join(list: &[String], field: &str) -> Result<Option<HeaderValue>, PluginConfigError> {
    if list.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&list.join(", "))
        .map(Some)
        .map_err(|_| PluginConfigError {
            path: field.into(),
            message: "not valid in a header".into(),
        })
}

/// Builds the plugin from its config.
pub fn build(
    v: &serde_json::Value,
    _ctx: &BuildCtx<'_>,
) -> Result<Arc<dyn Plugin>, PluginConfigError> {
    let c: Config = parse_config(v)?;
    if c.origins.is_empty() {
        return Err(PluginConfigError {
            path: "origins".into(),
            message: "list at least one origin (or `*`)".into(),
        });
    }
    let mut origins = Vec::new();
    for (i, o) in c.origins.iter().enumerate() {
        let rule = if o == "*" {
            OriginRule::Any
        } else if o.contains('*') {
            let re = format!(
                "^{}$",
                regex::escape(o).replace("\\*", "[a-zA-Z0-9-]+(?:\\.[a-zA-Z0-9-]+)*")
            );
            OriginRule::Pattern(Regex::new(&re).map_err(|e| PluginConfigError {
                path: format!("origins[{i}]"),
                message: e.to_string(),
            })?)
        } else {
            OriginRule::Exact(o.trim_end_matches('/').to_ascii_lowercase())
        };
        origins.push(rule);
    }
    if c.credentials && origins.iter().any(|o| matches!(o, OriginRule::Any)) {
        // Browsers refuse `*` with credentials; the origin is echoed instead, which allows any
        // site to make credentialed calls. Say so rather than allow it silently.
        return Err(PluginConfigError {
            path: "credentials".into(),
            message: "credentials with origin `*` would let any site call with the user's cookies; list the origins".into(),
        });
    }
    let methods = if c.methods.is_empty() {
        "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS".to_owned()
    } else {
        for (i, m) in c.methods.iter().enumerate() {
            Method::from_bytes(m.as_bytes()).map_err(|_| PluginConfigError {
                path: format!("methods[{i}]"),
                message: format!("`{m}` is not an HTTP method"),
            })?;
        }
        c.methods.join(", ")
    };
    let max_age = match &c.max_age {
        Some(s) => {
            let d: Duration = humantime::parse_duration(s).map_err(|_| PluginConfigError {
                path: "max_age".into(),
                message: format!("invalid duration `{s}`"),
            })?;
            Some(HeaderValue::from(d.as_secs()))
        }
        None => None,
    };
    Ok(Arc::new(Cors {
        origins,
        methods: HeaderValue::from_str(&methods).map_err(|_| PluginConfigError::new("methods"))?,
        headers: join(&c.headers, "headers")?,
        expose: join(&c.expose_headers, "expose_headers")?,
        credentials: c.credentials,
        max_age,
    }))
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for `origin`, if allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let o = origin.to_str().ok()?;
        let lower = o.to_ascii_lowercase();
        for rule in &self.origins {
            match rule {
                OriginRule::Any => {
                    return Some(HeaderValue::from_static("*"));
                }
                OriginRule::Exact(e) if *e == lower => return Some(origin.clone()),
                OriginRule::Pattern(re) if re.is_match(o) => return Some(origin.clone()),
                _ => {}
            }
        }
        None
    }
}

static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// Adds `Vary: Origin` unless the upstream's `Vary` already names Origin (or `*`), so caches
/// key on the origin without the response carrying the token twice.
fn add_vary_origin(headers: &mut http::HeaderMap) {
    let named = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
        })
    });
    if !named {
        headers.append(header::VARY, VARY_ORIGIN.clone());
    }
}

impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn on_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        let Some(origin) = req.headers.get(header::ORIGIN).cloned() else {
            return Step::CONTINUE;
        };
        let allowed = self.allow(&origin);
        let preflight = req.method == Method::OPTIONS
            && req
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            if let Some(a) = allowed {
                ctx.extensions.insert(AllowedOrigin(a));
            }
            return Step::CONTINUE;
        }
        let Some(allow_origin) = allowed else {
            return Step::Done(Flow::Respond(Reply::error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "origin not allowed by the CORS policy",
            )));
        };
        let mut headers: Vec<(HeaderName, HeaderValue)> = vec![
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin),
            (header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone()),
            (header::VARY, VARY_ORIGIN.clone()),
        ];
        let requested = req
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned();
        if let Some(h) = self.headers.clone().or(requested) {
            headers.push((header::ACCESS_CONTROL_ALLOW_HEADERS, h));
        }
        if self.credentials {
            headers.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        if let Some(m) = &self.max_age {
            headers.push((header::ACCESS_CONTROL_MAX_AGE, m.clone()));
        }
        Step::Done(Flow::Respond(Reply::Raw {
            status: StatusCode::NO_CONTENT,
            headers,
            body: Bytes::new(),
        }))
    }

    fn on_response(&self, ctx: &mut RequestCtx, resp: &mut http::response::Parts) {
        add_vary_origin(&mut resp.headers);
        let Some(AllowedOrigin(origin)) = ctx.extensions.get::<AllowedOrigin>().cloned() else {
            return;
        };
        resp.headers
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            resp.headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(e) = &self.expose {
            resp.headers
                .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(v: serde_json::Value) -> Arc<dyn Plugin> {
        build(
            &v,
            &BuildCtx {
                scope: "t",
                base_dir: std::path::Path::new("."),
            },
        )
        .unwrap()
    }

    #[test]
    fn patterns_match_subdomains_only() {
        let c: Config = parse_config(
            &serde_json::json!({"origins": ["https://*.example.com", "https://app.test"]}),
        )
        .unwrap();
        let _ = c;
        let p = Cors {
            origins: vec![
                OriginRule::Pattern(
                    Regex::new(&format!(
                        "^{}$",
                        regex::escape("https://*.example.com")
                            .replace("\\*", "[a-zA-Z0-9-]+(?:\\.[a-zA-Z0-9-]+)*")
                    ))
                    .unwrap(),
                ),
                OriginRule::Exact("https://app.test".into()),
            ],
            methods: HeaderValue::from_static("GET"),
            headers: None,
            expose: None,
            credentials: false,
            max_age: None,
        };
        let ok = |o: &str| p.allow(&HeaderValue::from_str(o).unwrap()).is_some();
        assert!(ok("https://a.example.com"));
        assert!(ok("https://a.b.example.com"));
        assert!(!ok("https://example.com"));
        assert!(!ok("https://evil-example.com"));
        assert!(!ok("http://a.example.com"));
        assert!(ok("https://APP.test"));
        assert!(!ok("https://app.test.evil"));
    }

    #[test]
    fn credentials_with_any_origin_is_refused() {
        let e = build(
            &serde_json::json!({"origins": ["*"], "credentials": true}),
            &BuildCtx {
                scope: "t",
                base_dir: std::path::Path::new("."),
            },
        )
        .unwrap_err();
        assert_eq!(e.path, "credentials");
        let _ = cors(serde_json::json!({"origins": ["*"]}));
    }

    #[test]
    fn vary_origin_is_added_once() {
        let mut h = http::HeaderMap::new();
        add_vary_origin(&mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
        add_vary_origin(&mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 1, "not added twice");

        let mut h = http::HeaderMap::new();
        h.insert(
            header::VARY,
            HeaderValue::from_static("Accept-Encoding, origin"),
        );
        add_vary_origin(&mut h);
        assert_eq!(
            h.get_all(header::VARY).iter().count(),
            1,
            "upstream already varies on it"
        );

        let mut h = http::HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        add_vary_origin(&mut h);
        let all: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(all, ["Accept-Encoding", "Origin"]);
    }
}
