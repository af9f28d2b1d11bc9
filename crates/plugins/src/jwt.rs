//! `jwt`: validates JSON Web Tokens and forwards chosen claims upstream as headers.
//!
//! Keys come from the config (PEM files, inline PEM, secrets, inline JWKs) or from a JWKS URL
//! fetched in the background and refreshed when a token names an unknown `kid` (at most once
//! per `jwks_min_refresh`, so a flood of random kids cannot hammer the JWKS endpoint). Every
//! key carries the algorithms it may verify: `alg: none` and HS/RS confusion are impossible by
//! construction (HMAC keys are never taken from a JWKS; a token's `alg` must be on its key's
//! list). `exp` is required; `nbf`, `iss` and `aud` are checked with a leeway.
//!
//! Verified tokens are cached (up to their expiry, at most a minute) because an RS256
//! verification costs more than proxying the request itself.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use http::{HeaderName, HeaderValue, StatusCode, header};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::metrics::{Counter, counter};
use crate::{BuildCtx, Flow, Plugin, PluginConfigError, Reply, RequestCtx, Step, parse_config};

/// Config of `jwt`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Static keys.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// A JWKS URL (http or https).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often the JWKS is refetched (default 5m).
    #[serde(default)]
    pub jwks_refresh: Option<String>,
    /// Shortest time between refetches caused by unknown `kid`s (default 10s).
    #[serde(default)]
    pub jwks_min_refresh: Option<String>,
    /// Algorithms allowed for JWKS keys without an `alg` (default by key type).
    #[serde(default)]
    pub jwks_algorithms: Vec<String>,
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values (one must match); not checked when empty.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 0s).
    #[serde(default)]
    pub leeway: Option<String>,
    /// Scopes the token must carry (`scope` string or `scp` list); missing ones get 403.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Claims the token must carry.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claim name → header sent upstream.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Header holding the token (default `Authorization`, with the `Bearer` scheme).
    #[serde(default)]
    pub header: Option<String>,
    /// Query parameter holding the token.
    #[serde(default)]
    pub query: Option<String>,
    /// Cookie holding the token.
    #[serde(default)]
    pub cookie: Option<String>,
}

/// A static key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id matched against the token's `kid`; any token when absent.
    #[serde(default)]
    pub kid: Option<String>,
    /// The one algorithm this key verifies, e.g. RS256.
    pub algorithm: String,
    /// PEM public key file (RS/PS/ES/EdDSA).
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// Inline PEM public key.
    #[serde(default)]
    pub public_key: Option<String>,
    /// HMAC secret (HS256/384/512).
    #[serde(default)]
    pub secret: Option<String>,
    /// Inline JWK.
    #[serde(default)]
    pub jwk: Option<Value>,
}

/// A key and the algorithms it may verify.
#[derive(Clone)]
struct KeyEntry {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// Claims of the verified token, for later plugins (`rate_limit` with `claim:NAME`).
#[derive(Debug, Clone)]
pub struct JwtClaims(pub Arc<Map<String, Value>>);

/// A verified token, cached.
struct Verified {
    claims: Arc<Map<String, Value>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    subject: Option<String>,
    not_after: u64,
    not_before: u64,
    missing_scope: Option<String>,
}

/// A JWKS endpoint and its keys, shared across reloads.
struct Jwks {
    url: http::Uri,
    host_header: HeaderValue,
    upstream: portcullis_client::Upstream<portcullis_client::RequestBody>,
    keys: ArcSwap<Vec<KeyEntry>>,
    fetched_at: AtomicU64,
    last_attempt: AtomicU64,
    refreshing: AtomicBool,
    lock: tokio::sync::Mutex<()>,
    fetches: Counter,
    fetch_failures: Counter,
}

const CACHE_MAX: usize = 100_000;
const CACHE_TTL_SECS: u64 = 60;

/// The plugin instance.
pub struct JwtAuth {
    static_keys: Vec<KeyEntry>,
    jwks: Option<Arc<Jwks>>,
    jwks_algorithms: Vec<Algorithm>,
    refresh: Duration,
    min_refresh: Duration,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: u64,
    required_scopes: Vec<String>,
    required_claims: Vec<String>,
    claims_to_headers: Vec<(String, HeaderName)>,
    header: HeaderName,
    bearer: bool,
    query: Option<String>,
    cookie: Option<String>,
    cache: DashMap<Box<str>, Arc<Verified>>,
    failures: Failures,
}

struct Failures {
    missing: Counter,
    malformed: Counter,
    unknown_key: Counter,
    signature: Counter,
    expired: Counter,
    claims: Counter,
    scope: Counter,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth").finish_non_exhaustive()
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> PluginConfigError {
    PluginConfigError {
        path: path.into(),
        message: message.into(),
    }
}

fn duration(
    field: &str,
    v: &Option<String>,
    default: Duration,
) -> Result<Duration, PluginConfigError> {
    match v {
        None => Ok(default),
        Some(s) => {
            humantime::parse_duration(s).map_err(|_| err(field, format!("invalid duration `{s}`")))
        }
    }
}

fn algorithm(field: &str, s: &str) -> Result<Algorithm, PluginConfigError> {
    Algorithm::from_str(s).map_err(|_| {
        err(
            field,
            format!("unknown algorithm `{s}`: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA"),
        )
    })
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn static_key(
    i: usize,
    k: &KeyConfig,
    base: &std::path::Path,
) -> Result<KeyEntry, PluginConfigError> {
    let p = format!("keys[{i}]");
    let alg = algorithm(&format!("{p}.algorithm"), &k.algorithm)?;
    let given = usize::from(k.public_key_file.is_some())
        + usize::from(k.public_key.is_some())
        + usize::from(k.secret.is_some())
        + usize::from(k.jwk.is_some());
    if given != 1 {
        return Err(err(
            &p,
            "give exactly one of public_key_file, public_key, secret, jwk",
        ));
    }
    let key = if let Some(secret) = &k.secret {
        if !is_hmac(alg) {
            return Err(err(
                format!("{p}.secret"),
                format!("a secret is for HS256/384/512, not {alg:?}"),
            ));
        }
        if secret.len() < 32 {
            return Err(err(
                format!("{p}.secret"),
                "use a secret of at least 32 bytes",
            ));
        }
        DecodingKey::from_secret(secret.as_bytes())
    } else {
        if is_hmac(alg) {
            return Err(err(
                &p,
                format!("{alg:?} needs a `secret`, not a public key"),
            ));
        }
        if let Some(jwk) = &k.jwk {
            let jwk: Jwk = serde_json::from_value(jwk.clone())
                .map_err(|e| err(format!("{p}.jwk"), format!("invalid JWK: {e}")))?;
            DecodingKey::from_jwk(&jwk)
                .map_err(|e| err(format!("{p}.jwk"), format!("unusable JWK: {e}")))?
        } else {
            let (pem, field) = match (&k.public_key, &k.public_key_file) {
                (Some(pem), _) => (pem.as_bytes().to_vec(), format!("{p}.public_key")),
                (None, Some(f)) => {
                    let path = base.join(f);
                    let bytes = std::fs::read(&path).map_err(|e| {
                        err(
                            format!("{p}.public_key_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    (bytes, format!("{p}.public_key_file"))
                }
                _ => unreachable!("one key source was checked above"),
            };
            let parsed = match alg {
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                _ => return Err(err(&p, format!("{alg:?} is not supported"))),
            };
            parsed.map_err(|e| err(field, format!("not a PEM public key for {alg:?}: {e}")))?
        }
    };
    Ok(KeyEntry {
        kid: k.kid.clone(),
        algorithms: vec![alg],
        key,
    })
}

/// Keys of a JWKS document: signing keys only, never symmetric ones.
fn jwks_keys(set: &JwkSet, default_algs: &[Algorithm]) -> Vec<KeyEntry> {
    let mut out = Vec::new();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let by_type: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => {
                if default_algs.is_empty() {
                    vec![Algorithm::RS256]
                } else {
                    default_algs
                        .iter()
                        .copied()
                        .filter(|a| !is_hmac(*a))
                        .collect()
                }
            }
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            // Symmetric keys are never trusted from a JWKS: that is how HS/RS confusion starts.
            _ => continue,
        };
        let algorithms = match &jwk.common.key_algorithm {
            Some(a) => match Algorithm::from_str(&format!("{a:?}")) {
                Ok(alg)
                    if by_type.contains(&alg)
                        || (!is_hmac(alg)
                            && matches!(jwk.algorithm, AlgorithmParameters::RSA(_))) =>
                {
                    vec![alg]
                }
                _ => continue,
            },
            None => by_type,
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        out.push(KeyEntry {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    out
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Jwks {
    fn new(url: &str, scope: &str) -> Result<Self, PluginConfigError> {
        use portcullis_client::{Protocol, TargetConfig, TlsSettings, UpstreamConfig};
        let uri: http::Uri = url
            .parse()
            .map_err(|_| err("jwks_url", format!("`{url}` is not a URL")))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(err("jwks_url", "use an http:// or https:// URL")),
        };
        let host = uri
            .host()
            .ok_or_else(|| err("jwks_url", "the URL has no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let mut cfg = UpstreamConfig::new(
            format!("jwks:{host}"),
            vec![TargetConfig {
                host: host.clone(),
                port,
                weight: 1,
                zone: None,
            }],
        );
        cfg.protocol = Protocol::Http1;
        if tls {
            let client = portcullis_client::tls_client_config(None, None, false, &[b"http/1.1"])
                .map_err(|e| err("jwks_url", e.to_string()))?;
            cfg.tls = Some(TlsSettings {
                connector: tokio_rustls::TlsConnector::from(client),
                server_name: None,
            });
        }
        let authority = uri
            .authority()
            .map_or(host.clone(), |a| a.as_str().to_owned());
        Ok(Self {
            host_header: HeaderValue::from_str(&authority)
                .map_err(|_| err("jwks_url", "invalid host"))?,
            url: uri,
            upstream: portcullis_client::Upstream::new(cfg),
            keys: ArcSwap::from_pointee(Vec::new()),
            fetched_at: AtomicU64::new(0),
            last_attempt: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            lock: tokio::sync::Mutex::new(()),
            fetches: counter(
                "portcullis_jwks_fetches_total",
                "JWKS fetches.",
                &[("scope", scope)],
            ),
            fetch_failures: counter(
                "portcullis_jwks_fetch_failures_total",
                "JWKS fetches that failed.",
                &[("scope", scope)],
            ),
        })
    }

    /// Fetches the JWKS now (one fetch at a time; a caller that waited for another's fetch
    /// returns without fetching again).
    async fn fetch(&self, default_algs: &[Algorithm]) {
        let started = now_ms();
        let _guard = self.lock.lock().await;
        if self.last_attempt.load(Ordering::Acquire) >= started {
            return;
        }
        self.last_attempt.store(now_ms(), Ordering::Release);
        self.fetches.inc();
        let pq = self
            .url
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let req = http::Request::get(pq)
            .header(header::HOST, self.host_header.clone())
            .header(header::ACCEPT, "application/json")
            .body(portcullis_client::RequestBody::Empty);
        let Ok(req) = req else { return };
        let result = async {
            let resp = self
                .upstream
                .send(req, None)
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("status {}", resp.status()));
            }
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let set: JwkSet =
                serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
            Ok(jwks_keys(&set, default_algs))
        };
        match tokio::time::timeout(Duration::from_secs(5), result).await {
            Ok(Ok(keys)) => {
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys));
                self.fetched_at.store(now_ms(), Ordering::Release);
            }
            Ok(Err(e)) => {
                self.fetch_failures.inc();
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the keys we have");
            }
            Err(_) => {
                self.fetch_failures.inc();
                tracing::warn!(url = %self.url, "JWKS fetch timed out; keeping the keys we have");
            }
        }
    }
}

/// Builds the plugin from its config.
pub fn build(v: &Value, ctx: &BuildCtx<'_>) -> Result<Arc<dyn Plugin>, PluginConfigError> {
    let c: Config = parse_config(v)?;
    let static_keys = c
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| static_key(i, k, ctx.base_dir))
        .collect::<Result<Vec<_>, _>>()?;
    if static_keys.is_empty() && c.jwks_url.is_none() {
        return Err(err("", "give `keys` or a `jwks_url`"));
    }
    let jwks_algorithms = c
        .jwks_algorithms
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let alg = algorithm(&format!("jwks_algorithms[{i}]"), a)?;
            if is_hmac(alg) {
                return Err(err(
                    format!("jwks_algorithms[{i}]"),
                    "HMAC keys are never taken from a JWKS",
                ));
            }
            Ok(alg)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let jwks = match &c.jwks_url {
        Some(url) => Some(crate::shared::try_shared(&format!("jwks:{url}"), || {
            Jwks::new(url, ctx.scope)
        })?),
        None => None,
    };
    let mut claims_to_headers = Vec::new();
    for (claim, h) in &c.claims_to_headers {
        let name = HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
            err(
                format!("claims_to_headers.{claim}"),
                format!("`{h}` is not a header name"),
            )
        })?;
        claims_to_headers.push((claim.clone(), name));
    }
    let header = HeaderName::from_bytes(
        c.header
            .as_deref()
            .unwrap_or("authorization")
            .to_ascii_lowercase()
            .as_bytes(),
    )
    .map_err(|_| err("header", "not a header name"))?;
    let reason = |r: &str| {
        counter(
            "portcullis_auth_failures_total",
            "Requests refused by an authentication plugin, by reason.",
            &[("plugin", "jwt"), ("scope", ctx.scope), ("reason", r)],
        )
    };
    Ok(Arc::new(JwtAuth {
        static_keys,
        jwks,
        jwks_algorithms,
        refresh: duration("jwks_refresh", &c.jwks_refresh, Duration::from_secs(300))?,
        min_refresh: duration(
            "jwks_min_refresh",
            &c.jwks_min_refresh,
            Duration::from_secs(10),
        )?,
        issuer: c.issuer,
        audience: c.audience,
        leeway: duration("leeway", &c.leeway, Duration::ZERO)?.as_secs(),
        required_scopes: c.required_scopes,
        required_claims: c.required_claims,
        claims_to_headers,
        bearer: header == header::AUTHORIZATION,
        header,
        query: c.query,
        cookie: c.cookie,
        cache: DashMap::new(),
        failures: Failures {
            missing: reason("missing_token"),
            malformed: reason("malformed"),
            unknown_key: reason("unknown_key"),
            signature: reason("bad_signature"),
            expired: reason("expired"),
            claims: reason("invalid_claims"),
            scope: reason("insufficient_scope"),
        },
    }))
}

/// Why a token was refused.
enum Refusal {
    Missing,
    Invalid(&'static str, String, bool),
    Scope(String),
}

impl JwtAuth {
    /// The token from the configured places, in order: header, query, cookie.
    fn token<'r>(&self, req: &'r http::request::Parts) -> Option<&'r str> {
        if let Some(v) = req.headers.get(&self.header).and_then(|v| v.to_str().ok()) {
            let t = if self.bearer {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))?
            } else {
                v
            };
            return Some(t.trim());
        }
        if let Some(q) = &self.query
            && let Some(t) = req.uri.query().and_then(|qs| {
                qs.split('&')
                    .find_map(|kv| kv.strip_prefix(q.as_str())?.strip_prefix('='))
            })
        {
            return Some(t);
        }
        let name = self.cookie.as_deref()?;
        req.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(';'))
            .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
    }

    fn keys_for(&self, kid: Option<&str>, alg: Algorithm) -> Vec<KeyEntry> {
        let jwks = self.jwks.as_ref().map(|j| j.keys.load_full());
        self.static_keys
            .iter()
            .chain(jwks.iter().flat_map(|k| k.iter()))
            .filter(|k| k.algorithms.contains(&alg))
            .filter(|k| match (kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => true,
                (None, _) => true,
            })
            .cloned()
            .collect()
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        // A configured issuer or audience must be present, not only right when present.
        let mut required = vec!["exp"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if !self.audience.is_empty() {
            required.push("aud");
        }
        v.set_required_spec_claims(&required);
        match &self.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        if self.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.audience);
        }
        v
    }

    /// Verifies a token against the keys it may use.
    fn verify(&self, token: &str, keys: &[KeyEntry], alg: Algorithm) -> Result<Verified, Refusal> {
        use jsonwebtoken::errors::ErrorKind as K;
        let validation = self.validation(alg);
        let mut last = Refusal::Invalid("bad_signature", "signature does not verify".into(), false);
        for k in keys {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
                Ok(data) => return self.accept(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        K::ExpiredSignature => {
                            Refusal::Invalid("expired", "the token has expired".into(), true)
                        }
                        K::ImmatureSignature => Refusal::Invalid(
                            "expired",
                            "the token is not valid yet (nbf)".into(),
                            true,
                        ),
                        K::InvalidIssuer => {
                            Refusal::Invalid("invalid_claims", "wrong issuer".into(), true)
                        }
                        K::InvalidAudience => {
                            Refusal::Invalid("invalid_claims", "wrong audience".into(), true)
                        }
                        K::MissingRequiredClaim(c) => {
                            Refusal::Invalid("invalid_claims", format!("missing claim `{c}`"), true)
                        }
                        K::InvalidSignature => last,
                        _ => Refusal::Invalid("malformed", format!("invalid token: {e}"), false),
                    };
                    // A claim problem was found after the signature verified: that is the answer.
                    if matches!(last, Refusal::Invalid(_, _, true)) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn accept(&self, claims: Map<String, Value>) -> Result<Verified, Refusal> {
        for c in &self.required_claims {
            if !claims.contains_key(c) {
                return Err(Refusal::Invalid(
                    "invalid_claims",
                    format!("missing claim `{c}`"),
                    true,
                ));
            }
        }
        let scopes: Vec<&str> = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) => s.split_whitespace().collect(),
            (_, Some(Value::Array(a))) => a.iter().filter_map(Value::as_str).collect(),
            (_, Some(Value::String(s))) => s.split_whitespace().collect(),
            _ => Vec::new(),
        };
        let missing_scope = self
            .required_scopes
            .iter()
            .find(|s| !scopes.contains(&s.as_str()))
            .cloned();
        let mut headers = Vec::new();
        for (claim, name) in &self.claims_to_headers {
            let text = match claims.get(claim) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(" "),
                Some(Value::Null) | None => continue,
                Some(other) => other.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&text) {
                headers.push((name.clone(), v));
            }
        }
        let num = |k: &str| claims.get(k).and_then(Value::as_u64);
        Ok(Verified {
            not_after: num("exp").unwrap_or(u64::MAX).saturating_add(self.leeway),
            not_before: num("nbf").unwrap_or(0).saturating_sub(self.leeway),
            subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            claims: Arc::new(claims),
            headers,
            missing_scope,
        })
    }

    /// Applies a verified token to the request, or refuses it.
    fn apply(&self, v: &Verified, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        if let Some(s) = &v.missing_scope {
            self.failures.scope.inc();
            return self.refuse(Refusal::Scope(s.clone()));
        }
        for (n, val) in &v.headers {
            req.headers.insert(n.clone(), val.clone());
        }
        if ctx.consumer.is_none() {
            ctx.consumer = v.subject.clone();
        }
        ctx.extensions.insert(JwtClaims(v.claims.clone()));
        Flow::Continue
    }

    fn refuse(&self, r: Refusal) -> Flow {
        let (status, code, message, challenge) = match r {
            Refusal::Missing => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required".to_owned(),
                "Bearer realm=\"portcullis\"".to_owned(),
            ),
            Refusal::Invalid(_, msg, _) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                msg.clone(),
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    msg.replace('"', "'")
                ),
            ),
            Refusal::Scope(scope) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the token lacks the `{scope}` scope"),
                format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\""),
            ),
        };
        let mut headers = Vec::new();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            headers.push((header::WWW_AUTHENTICATE, v));
        }
        Flow::Respond(Reply::Error {
            status,
            code,
            message,
            headers,
        })
    }

    fn count(&self, r: &Refusal) {
        let c = match r {
            Refusal::Missing => &self.failures.missing,
            Refusal::Scope(_) => &self.failures.scope,
            Refusal::Invalid(reason, _, _) => match *reason {
                "expired" => &self.failures.expired,
                "invalid_claims" => &self.failures.claims,
                "unknown_key" => &self.failures.unknown_key,
                "malformed" => &self.failures.malformed,
                _ => &self.failures.signature,
            },
        };
        c.inc();
    }

    /// The whole check: cache, header, keys (refreshing the JWKS when needed), verification.
    async fn check(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        for (_, name) in &self.claims_to_headers {
            req.headers.remove(name);
        }
        let Some(token) = self.token(req).map(str::to_owned) else {
            self.failures.missing.inc();
            return self.refuse(Refusal::Missing);
        };
        let now = now_secs();
        if let Some(hit) = self.cache.get(token.as_str()).map(|e| e.clone()) {
            if now < hit.not_after && now >= hit.not_before {
                return self.apply(&hit, ctx, req);
            }
            self.cache.remove(token.as_str());
        }
        let head = match jsonwebtoken::decode_header(&token) {
            Ok(h) => h,
            Err(e) => {
                let r = Refusal::Invalid("malformed", format!("malformed token: {e}"), false);
                self.count(&r);
                return self.refuse(r);
            }
        };
        if let Some(j) = &self.jwks {
            let age = now_ms().saturating_sub(j.fetched_at.load(Ordering::Acquire));
            if j.fetched_at.load(Ordering::Acquire) == 0 {
                // Never fetched: try now, but while the endpoint fails, no more often than
                // `jwks_min_refresh` (every request would otherwise make a fetch).
                let since = now_ms().saturating_sub(j.last_attempt.load(Ordering::Acquire));
                if since >= self.min_refresh.as_millis() as u64 {
                    j.fetch(&self.jwks_algorithms).await;
                }
            } else if age > self.refresh.as_millis() as u64
                && !j.refreshing.swap(true, Ordering::AcqRel)
            {
                // Stale: refresh in the background; this request uses the keys we have.
                let j2 = j.clone();
                let algs = self.jwks_algorithms.clone();
                tokio::spawn(async move {
                    j2.fetch(&algs).await;
                    j2.refreshing.store(false, Ordering::Release);
                });
            }
        }
        let mut keys = self.keys_for(head.kid.as_deref(), head.alg);
        if keys.is_empty()
            && let (Some(j), Some(_)) = (&self.jwks, head.kid.as_deref())
        {
            // An unknown kid may be a rotated key: refetch, but not more often than allowed.
            let since = now_ms().saturating_sub(j.last_attempt.load(Ordering::Acquire));
            if since >= self.min_refresh.as_millis() as u64 {
                j.fetch(&self.jwks_algorithms).await;
                keys = self.keys_for(head.kid.as_deref(), head.alg);
            }
        }
        if keys.is_empty() {
            let r = Refusal::Invalid(
                "unknown_key",
                format!(
                    "no key for kid {:?} and algorithm {:?}",
                    head.kid.as_deref().unwrap_or("-"),
                    head.alg
                ),
                false,
            );
            self.count(&r);
            return self.refuse(r);
        }
        match self.verify(&token, &keys, head.alg) {
            Ok(v) => {
                let v = Arc::new(Verified {
                    not_after: v.not_after.min(now + CACHE_TTL_SECS),
                    ..v
                });
                if self.cache.len() >= CACHE_MAX {
                    self.cache.clear();
                }
                self.cache.insert(token.into_boxed_str(), v.clone());
                self.apply(&v, ctx, req)
            }
            Err(r) => {
                self.count(&r);
                self.refuse(r)
            }
        }
    }
}

impl Plugin for JwtAuth {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn on_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        // The common case, a token seen before, is answered without a future.
        if let Some(flow) = self.cached(ctx, req) {
            return Step::Done(flow);
        }
        Step::Pending(Box::pin(self.check(ctx, req)))
    }
}

impl JwtAuth {
    /// Answers from the cache of verified tokens, when the token is there and still valid.
    fn cached(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Option<Flow> {
        let token = self.token(req)?;
        let now = now_secs();
        let hit = self.cache.get(token).map(|e| e.clone())?;
        if now >= hit.not_after || now < hit.not_before {
            return None;
        }
        for (_, name) in &self.claims_to_headers {
            req.headers.remove(name);
        }
        Some(self.apply(&hit, ctx, req))
    }
}

#[cfg(test)]
mod tests;
