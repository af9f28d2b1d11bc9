//! `rate_limit`: GCRA limits per key (client IP, header, consumer, JWT claim, or route), kept in
//! the process (`policy: local`, governor) or shared by every gateway through Redis
//! (`policy: redis`: one atomic server-side script per decision, one key per limit and client,
//! never one per gateway node).
//!
//! Semantics, both policies: requests flow at `limit` per `per`; a key idle for `per` may send
//! `limit + burst` back to back. GCRA, not fixed windows, so there is no 2x burst at window
//! edges. Every response of a limited route carries `RateLimit-Limit`, `RateLimit-Remaining`
//! and `RateLimit-Reset`; refusals are 429 with `Retry-After`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;

use crate::metrics::{Counter, counter};
use crate::{BuildCtx, Flow, Plugin, PluginConfigError, Reply, RequestCtx, Step, parse_config};

/// Config of `rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Requests per `per`.
    pub limit: u64,
    /// The period: `1s`, `1m`, `1h` (any duration).
    pub per: String,
    /// Extra requests an idle key may send at once.
    #[serde(default)]
    pub burst: u64,
    /// `ip` (default) | `header:NAME` | `consumer` | `claim:NAME` | `route`.
    #[serde(default)]
    pub key: Option<String>,
    /// `local` (default) or `redis`.
    #[serde(default)]
    pub policy: Option<String>,
    /// Redis settings for `policy: redis`.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// `allow` (default) or `deny` when Redis cannot be reached.
    #[serde(default)]
    pub on_failure: Option<String>,
}

/// Redis settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` of a single Redis.
    #[serde(default)]
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// Redis Sentinel nodes (`redis://host:26379`); with `master`.
    #[serde(default)]
    pub sentinel: Vec<String>,
    /// Name of the master the sentinels watch.
    #[serde(default)]
    pub master: Option<String>,
    /// Time allowed for one decision (default 100ms); past it, `on_failure` applies.
    #[serde(default)]
    pub timeout: Option<String>,
}

enum KeyKind {
    Ip,
    Header(HeaderName),
    Consumer,
    Claim(String),
    Route,
}

/// One decision.
#[derive(Debug, Clone, Copy)]
struct Decision {
    allowed: bool,
    remaining: u64,
    reset_secs: u64,
    retry_after_secs: u64,
}

type Local =
    RateLimiter<String, DashMapStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The in-process limiter, shared across reloads, with its stale keys evicted periodically.
struct LocalLimiter {
    limiter: Local,
    cleaning: AtomicBool,
}

/// The Redis limiter, shared across reloads by URL.
struct RedisLimiter {
    target: RedisTarget,
    conn: arc_swap::ArcSwapOption<RedisConn>,
    connecting: tokio::sync::Mutex<()>,
    script: redis::Script,
    last_log: AtomicU64,
    /// Unix ms until which Redis counts as down after a lost connection (0: not down). While
    /// down, decisions take `on_failure` at once instead of each waiting for a reconnect that
    /// will fail (under load they would queue behind the reconnect and each pay the timeout);
    /// after it, one decision tries again.
    down_until_ms: AtomicU64,
}

/// How long Redis counts as down after a lost connection before one decision tries again.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum RedisTarget {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
    /// Asks the sentinels for the current master at every (re)connect, so a failover is
    /// followed on the next decision after the old connection fails.
    Sentinel(Box<tokio::sync::Mutex<redis::sentinel::SentinelClient>>),
}

#[derive(Clone)]
enum RedisConn {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

enum Backend {
    Local(Arc<LocalLimiter>),
    Redis(Arc<RedisLimiter>),
}

/// The plugin instance.
pub struct RateLimit {
    backend: Backend,
    key: KeyKind,
    scope: String,
    /// Emission interval and tolerance of the GCRA, in microseconds.
    t_us: u64,
    tau_us: u64,
    limit_header: HeaderValue,
    deny_on_failure: bool,
    timeout: Duration,
    limited: Counter,
    /// Redis failures of this scope (the redis policy only).
    redis_errors: Option<Counter>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// GCRA in Redis, timed by Redis itself so gateways with skewed clocks agree. Returns
/// {allowed, retry_after_us, tat_minus_now_us}.
const GCRA_LUA: &str = r"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + t
local allow_at = new_tat - tau - t
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, 0, new_tat - now}
";

fn err(path: &str, message: impl Into<String>) -> PluginConfigError {
    PluginConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// Builds the plugin from its config.
pub fn build(
    v: &serde_json::Value,
    ctx: &BuildCtx<'_>,
) -> Result<Arc<dyn Plugin>, PluginConfigError> {
    let c: Config = parse_config(v)?;
    if c.limit == 0 {
        return Err(err("limit", "must be at least 1"));
    }
    let per = humantime::parse_duration(&c.per)
        .map_err(|_| err("per", format!("invalid duration `{}`", c.per)))?;
    if per.is_zero() {
        return Err(err("per", "must be longer than 0"));
    }
    let capacity = c.limit.saturating_add(c.burst);
    let capacity32 = u32::try_from(capacity)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| err("limit", "limit + burst is too large"))?;
    let t = per / u32::try_from(c.limit).map_err(|_| err("limit", "too large"))?;
    if t.is_zero() {
        return Err(err(
            "limit",
            "more than one request per nanosecond cannot be limited",
        ));
    }
    let t_us = (t.as_micros() as u64).max(1);
    let tau_us = t_us * (capacity - 1);
    let key = match c.key.as_deref().unwrap_or("ip") {
        "ip" => KeyKind::Ip,
        "consumer" => KeyKind::Consumer,
        "route" => KeyKind::Route,
        k => match k.split_once(':') {
            Some(("header", n)) => KeyKind::Header(
                HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                    .map_err(|_| err("key", format!("`{n}` is not a header name")))?,
            ),
            Some(("claim", n)) if !n.is_empty() => KeyKind::Claim(n.to_owned()),
            _ => {
                return Err(err(
                    "key",
                    format!("unknown key `{k}`: ip, header:NAME, consumer, claim:NAME or route"),
                ));
            }
        },
    };
    let deny_on_failure = match c.on_failure.as_deref() {
        None | Some("allow") => false,
        Some("deny") => true,
        Some(o) => return Err(err("on_failure", format!("`{o}`: use allow or deny"))),
    };
    let fingerprint = format!("{}:{}:{}:{}", ctx.scope, c.limit, per.as_nanos(), capacity);
    let (backend, timeout) = match c.policy.as_deref() {
        None | Some("local") => {
            let quota = Quota::with_period(t)
                .ok_or_else(|| err("per", "period too short"))?
                .allow_burst(capacity32);
            let local =
                crate::shared::shared(&format!("rl-local:{fingerprint}"), || LocalLimiter {
                    limiter: RateLimiter::dashmap(quota)
                        .with_middleware::<StateInformationMiddleware>(),
                    cleaning: AtomicBool::new(false),
                });
            (Backend::Local(local), Duration::ZERO)
        }
        Some("redis") => {
            let r = c
                .redis
                .as_ref()
                .ok_or_else(|| err("redis", "policy redis needs `redis: { url: ... }`"))?;
            let timeout = match &r.timeout {
                Some(s) => humantime::parse_duration(s)
                    .map_err(|_| err("redis.timeout", format!("invalid duration `{s}`")))?,
                None => Duration::from_millis(100),
            };
            let target_key = match (&r.url, r.cluster.is_empty(), r.sentinel.is_empty()) {
                (Some(u), true, true) => format!("single:{u}"),
                (None, false, true) => format!("cluster:{}", r.cluster.join(",")),
                (None, true, false) => {
                    let master =
                        r.master
                            .as_deref()
                            .filter(|m| !m.is_empty())
                            .ok_or_else(|| {
                                err(
                                    "redis.master",
                                    "`sentinel` needs the `master` name the sentinels watch",
                                )
                            })?;
                    format!("sentinel:{master}@{}", r.sentinel.join(","))
                }
                _ => {
                    return Err(err(
                        "redis",
                        "give one of `url` (one Redis), `cluster` (seed nodes) or `sentinel` (with `master`)",
                    ));
                }
            };
            let limiter = crate::shared::try_shared(&format!("rl-redis:{target_key}"), || {
                let target = if let Some(u) = &r.url {
                    RedisTarget::Single(Box::new(
                        redis::Client::open(u.as_str())
                            .map_err(|e| err("redis.url", e.to_string()))?,
                    ))
                } else if !r.cluster.is_empty() {
                    RedisTarget::Cluster(Box::new(
                        redis::cluster::ClusterClient::builder(r.cluster.clone())
                            .connection_timeout(timeout.max(Duration::from_millis(50)))
                            .response_timeout(timeout)
                            .build()
                            .map_err(|e| err("redis.cluster", e.to_string()))?,
                    ))
                } else {
                    RedisTarget::Sentinel(Box::new(tokio::sync::Mutex::new(
                        redis::sentinel::SentinelClient::build(
                            r.sentinel.clone(),
                            r.master.clone().unwrap_or_default(),
                            None,
                            redis::sentinel::SentinelServerType::Master,
                        )
                        .map_err(|e| err("redis.sentinel", e.to_string()))?,
                    )))
                };
                Ok::<_, PluginConfigError>(RedisLimiter {
                    target,
                    conn: arc_swap::ArcSwapOption::empty(),
                    connecting: tokio::sync::Mutex::new(()),
                    script: redis::Script::new(GCRA_LUA),
                    last_log: AtomicU64::new(0),
                    down_until_ms: AtomicU64::new(0),
                })
            })?;
            (Backend::Redis(limiter), timeout)
        }
        Some(p) => return Err(err("policy", format!("`{p}`: use local or redis"))),
    };
    let redis_errors = matches!(backend, Backend::Redis(_)).then(|| {
        counter(
            "portcullis_rate_limit_redis_errors_total",
            "Rate-limit decisions Redis could not make (unreachable, slow, failing).",
            &[("scope", ctx.scope)],
        )
    });
    Ok(Arc::new(RateLimit {
        backend,
        key,
        scope: fingerprint,
        t_us,
        tau_us,
        limit_header: HeaderValue::from(c.limit),
        deny_on_failure,
        timeout,
        limited: counter(
            "portcullis_rate_limited_total",
            "Requests refused by rate_limit.",
            &[("scope", ctx.scope)],
        ),
        redis_errors,
    }))
}

impl RateLimit {
    /// The key value for a request. A request without the configured key (no such header,
    /// no consumer, no such claim) is limited by client address instead, as in Kong: leaving
    /// the header out must not be a way around the limit.
    fn key_of(&self, ctx: &RequestCtx, req: &http::request::Parts) -> String {
        self.configured_key(ctx, req)
            .unwrap_or_else(|| format!("ip:{}", ctx.client_ip))
    }

    /// The configured key's value, when the request has it.
    fn configured_key(&self, ctx: &RequestCtx, req: &http::request::Parts) -> Option<String> {
        match &self.key {
            KeyKind::Ip => Some(ctx.client_ip.to_string()),
            KeyKind::Route => Some(String::new()),
            KeyKind::Consumer => ctx.consumer.clone(),
            KeyKind::Header(h) => req
                .headers
                .get(h)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            KeyKind::Claim(c) => ctx
                .extensions
                .get::<crate::jwt::JwtClaims>()
                .and_then(|claims| {
                    claims
                        .0
                        .get(c)
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                }),
        }
    }

    fn local(&self, l: &Arc<LocalLimiter>, key: &String) -> Decision {
        if l.limiter.len() > 100_000 && !l.cleaning.swap(true, Ordering::AcqRel) {
            // Evict keys back at full capacity, off the request path.
            let l2 = l.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn_blocking(move || {
                    l2.limiter.retain_recent();
                    l2.limiter.shrink_to_fit();
                    l2.cleaning.store(false, Ordering::Release);
                });
            }
        }
        match l.limiter.check_key(key) {
            Ok(snap) => {
                let remaining = u64::from(snap.remaining_burst_capacity());
                let capacity = self.tau_us / self.t_us + 1;
                let reset_us = (capacity - remaining) * self.t_us;
                Decision {
                    allowed: true,
                    remaining,
                    reset_secs: reset_us.div_ceil(1_000_000),
                    retry_after_secs: 0,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    reset_secs: (self.tau_us + self.t_us).div_ceil(1_000_000),
                    retry_after_secs: wait.as_micros().div_ceil(1_000_000).max(1) as u64,
                }
            }
        }
    }

    async fn redis(&self, r: &RedisLimiter, key: &str) -> Result<Decision, String> {
        let conn = match r.conn.load_full() {
            Some(c) => (*c).clone(),
            None => {
                let _g = r.connecting.lock().await;
                match r.conn.load_full() {
                    Some(c) => (*c).clone(),
                    None => {
                        let cfg = redis::aio::ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(
                                self.timeout.max(Duration::from_millis(50)),
                            ))
                            .set_response_timeout(Some(self.timeout))
                            .set_number_of_retries(1);
                        let c = match &r.target {
                            RedisTarget::Single(client) => RedisConn::Single(
                                redis::aio::ConnectionManager::new_with_config(
                                    (**client).clone(),
                                    cfg,
                                )
                                .await
                                .map_err(|e| e.to_string())?,
                            ),
                            RedisTarget::Sentinel(s) => {
                                let master = s
                                    .lock()
                                    .await
                                    .async_get_client()
                                    .await
                                    .map_err(|e| format!("sentinel: {e}"))?;
                                RedisConn::Single(
                                    redis::aio::ConnectionManager::new_with_config(master, cfg)
                                        .await
                                        .map_err(|e| e.to_string())?,
                                )
                            }
                            RedisTarget::Cluster(c) => RedisConn::Cluster(
                                c.get_async_connection().await.map_err(|e| e.to_string())?,
                            ),
                        };
                        r.conn.store(Some(Arc::new(c.clone())));
                        c
                    }
                }
            }
        };
        let full_key = format!("portcullis:rl:{}:{key}", self.scope);
        let mut inv = r.script.key(full_key);
        inv.arg(self.t_us).arg(self.tau_us);
        let out: Vec<i64> = match conn {
            RedisConn::Single(mut c) => inv.invoke_async(&mut c).await,
            RedisConn::Cluster(mut c) => inv.invoke_async(&mut c).await,
        }
        .map_err(|e| e.to_string())?;
        let (allowed, retry_us, diff_us) = match out.as_slice() {
            [a, r, d] => (*a == 1, (*r).max(0) as u64, (*d).max(0) as u64),
            _ => return Err("unexpected script reply".into()),
        };
        Ok(if allowed {
            Decision {
                allowed: true,
                remaining: (self.tau_us + self.t_us).saturating_sub(diff_us) / self.t_us,
                reset_secs: diff_us.div_ceil(1_000_000),
                retry_after_secs: 0,
            }
        } else {
            Decision {
                allowed: false,
                remaining: 0,
                reset_secs: diff_us.div_ceil(1_000_000),
                retry_after_secs: retry_us.div_ceil(1_000_000).max(1),
            }
        })
    }

    fn redis_failed(&self, r: &RedisLimiter, e: &str) {
        if let Some(c) = &self.redis_errors {
            c.inc();
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = r.last_log.load(Ordering::Relaxed);
        if now >= last + 10
            && r.last_log
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error = %e,
                on_failure = if self.deny_on_failure { "deny" } else { "allow" },
                "rate limit: Redis unavailable (logged once per 10s; see portcullis_rate_limit_redis_errors_total)"
            );
        }
    }

    fn apply(&self, d: Decision, ctx: &mut RequestCtx) -> Flow {
        ctx.response_headers
            .push((RATELIMIT_LIMIT.clone(), self.limit_header.clone()));
        ctx.response_headers
            .push((RATELIMIT_REMAINING.clone(), HeaderValue::from(d.remaining)));
        ctx.response_headers
            .push((RATELIMIT_RESET.clone(), HeaderValue::from(d.reset_secs)));
        if d.allowed {
            return Flow::Continue;
        }
        self.limited.inc();
        Flow::Respond(Reply::Error {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: format!("rate limit exceeded; retry in {} s", d.retry_after_secs),
            headers: vec![(
                http::header::RETRY_AFTER,
                HeaderValue::from(d.retry_after_secs),
            )],
        })
    }

    async fn decide_redis(&self, r: &RedisLimiter, key: String, ctx: &mut RequestCtx) -> Flow {
        // One atomic load while Redis is fine; the clock is read only while it is marked down.
        let down = r.down_until_ms.load(Ordering::Acquire);
        if down != 0 {
            let now = unix_ms();
            let retry = now + REDIS_RETRY_AFTER.as_millis() as u64;
            // Past the mark, exactly one decision (the one that moves the mark) tries Redis.
            if now < down
                || r.down_until_ms
                    .compare_exchange(down, retry, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                return self.unavailable(r, "Redis is down (retried once a second)", ctx);
            }
        }
        let res = tokio::time::timeout(self.timeout, self.redis(r, &key)).await;
        let res = match res {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        match res {
            Ok(d) => {
                if down != 0 {
                    r.down_until_ms.store(0, Ordering::Release);
                }
                self.apply(d, ctx)
            }
            Err(e) => {
                // READONLY: the master we knew was demoted by a failover; ask again.
                if e.contains("connection")
                    || e.contains("refused")
                    || e.contains("broken")
                    || e.contains("READONLY")
                    || e.contains("sentinel")
                {
                    // Drop the connection so the next decision reconnects, and mark Redis down
                    // so the decisions until then do not queue behind that reconnect.
                    r.conn.store(None);
                    r.down_until_ms.store(
                        unix_ms() + REDIS_RETRY_AFTER.as_millis() as u64,
                        Ordering::Release,
                    );
                }
                self.unavailable(r, &e, ctx)
            }
        }
    }

    /// A decision Redis could not make: counted, logged now and then, and `on_failure` applied.
    fn unavailable(&self, r: &RedisLimiter, e: &str, ctx: &mut RequestCtx) -> Flow {
        self.redis_failed(r, e);
        if self.deny_on_failure {
            // A 429 comes with Retry-After and the RateLimit headers (contract).
            let one = HeaderValue::from_static("1");
            ctx.response_headers
                .push((RATELIMIT_LIMIT.clone(), self.limit_header.clone()));
            ctx.response_headers
                .push((RATELIMIT_REMAINING.clone(), HeaderValue::from_static("0")));
            ctx.response_headers
                .push((RATELIMIT_RESET.clone(), one.clone()));
            Flow::Respond(Reply::Error {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "rate_limited",
                message: "the rate limiter is unavailable".into(),
                headers: vec![(http::header::RETRY_AFTER, one)],
            })
        } else {
            Flow::Continue
        }
    }
}

impl Plugin for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn on_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        let key = self.key_of(ctx, req);
        match &self.backend {
            Backend::Local(l) => Step::Done(self.apply(self.local(l, &key), ctx)),
            Backend::Redis(r) => Step::Pending(Box::pin(self.decide_redis(r, key, ctx))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(v: serde_json::Value) -> Arc<dyn Plugin> {
        build(
            &v,
            &BuildCtx {
                scope: &format!("t{}", fastrand::u64(..)),
                base_dir: std::path::Path::new("."),
            },
        )
        .unwrap()
    }

    fn hit(p: &Arc<dyn Plugin>, ip: &str) -> (bool, Vec<(HeaderName, HeaderValue)>) {
        let mut ctx = RequestCtx::new(
            HeaderValue::from_static("r"),
            ip.parse().unwrap(),
            Arc::from("l"),
        );
        let (mut parts, _) = http::Request::get("/").body(()).unwrap().into_parts();
        let flow = match p.on_request(&mut ctx, &mut parts) {
            Step::Done(f) => f,
            Step::Pending(_) => panic!("local decisions are synchronous"),
        };
        (matches!(flow, Flow::Continue), ctx.response_headers)
    }

    #[test]
    fn an_idle_key_gets_limit_plus_burst_then_the_rate() {
        let p = limiter(serde_json::json!({"limit": 5, "per": "1h", "burst": 2}));
        let passed = (0..20).filter(|_| hit(&p, "10.0.0.1").0).count();
        assert_eq!(passed, 7);
        // Another key has its own budget.
        assert!(hit(&p, "10.0.0.2").0);
    }

    #[test]
    fn headers_count_down() {
        let p = limiter(serde_json::json!({"limit": 3, "per": "1h"}));
        let remaining = |h: &[(HeaderName, HeaderValue)]| {
            h.iter()
                .find(|(n, _)| n == "ratelimit-remaining")
                .unwrap()
                .1
                .to_str()
                .unwrap()
                .to_owned()
        };
        let (_, h) = hit(&p, "1.1.1.1");
        assert_eq!(remaining(&h), "2");
        assert_eq!(
            h.iter().find(|(n, _)| n == "ratelimit-limit").unwrap().1,
            "3"
        );
        let (_, h) = hit(&p, "1.1.1.1");
        assert_eq!(remaining(&h), "1");
        hit(&p, "1.1.1.1");
        let (ok, h) = hit(&p, "1.1.1.1");
        assert!(!ok);
        assert_eq!(remaining(&h), "0");
    }

    #[test]
    fn config_errors() {
        let b = |v: serde_json::Value| {
            build(
                &v,
                &BuildCtx {
                    scope: "x",
                    base_dir: std::path::Path::new("."),
                },
            )
            .unwrap_err()
            .path
        };
        assert_eq!(b(serde_json::json!({"limit": 0, "per": "1s"})), "limit");
        assert_eq!(b(serde_json::json!({"limit": 1, "per": "soon"})), "per");
        assert_eq!(
            b(serde_json::json!({"limit": 1, "per": "1s", "key": "cookie:x"})),
            "key"
        );
        assert_eq!(
            b(serde_json::json!({"limit": 1, "per": "1s", "policy": "redis"})),
            "redis"
        );
    }
}
