//! An immutable, fully built runtime config: router, plugin chains, upstream clients, TLS
//! configs, metric handles. A reload builds a whole new one before it is swapped in; requests
//! keep the one they started with.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use portcullis_client::{
    ActiveHealthConfig, BreakerConfig, Dns, DnsConfig, PassiveHealthConfig, Policy, PoolConfig,
    Protocol, RetryOn, RetryPolicy, StatusSet, TargetConfig, Timeouts, TlsSettings, Upstream,
    UpstreamConfig,
};
use portcullis_config::{
    Action, Config, ConfigError, ConfigErrors, DirectResponse, HashKey, Limits, LoadBalancer,
    Rewrite,
};
use portcullis_plugins::builtin::{HeaderOps, HeaderTransform, RequestId};
use portcullis_plugins::{BuildCtx, Plugin};
use portcullis_router::Router;
use rustls::pki_types::ServerName;

use crate::body::ReqBody;
use crate::metrics::{Metrics, RouteMetrics};

/// What a route does, resolved.
pub enum RouteAction {
    /// Proxy to `upstreams[i]`.
    Upstream(usize),
    /// Weighted choice: (upstream index, cumulative weight), and the total.
    Split(Vec<(usize, u64)>, u64),
    /// Answer directly (boxed: the rare case pays for its size).
    Direct(Box<DirectResponse>),
}

/// A route ready to serve.
pub struct RouteRuntime {
    /// Name.
    pub name: Arc<str>,
    /// Action.
    pub action: RouteAction,
    /// Path and host rewrites, if any.
    pub rewrite: Option<Box<Rewrite>>,
    /// The plugin chain, in run order (request ID first, header transforms last).
    pub plugins: Box<[Arc<dyn Plugin>]>,
    /// Whole-request deadline.
    pub timeout: Option<Duration>,
    /// Answer when the upstream is unavailable.
    pub fallback: Option<Box<DirectResponse>>,
    /// Largest body buffered so the request can be replayed on another try.
    pub max_replay_body_bytes: u64,
    /// Some plugin of the route has body phases: only then are plugins asked about bodies.
    pub bodies: bool,
    /// Metric handles.
    pub metrics: RouteMetrics,
    /// Mirrors of this route's requests (usually none).
    pub mirrors: Box<[portcullis_config::Mirror]>,
    /// Traffic policies acting on this route (usually none).
    pub policies: Box<[crate::policy::RoutePolicy]>,
    /// Requests a policy answered, left out of the route's signals.
    pub answered: Arc<crate::policy::Answered>,
}

/// A listener's per-connection settings.
pub struct ListenerRuntime {
    /// Name.
    pub name: Arc<str>,
    /// TLS state when it terminates TLS (kept across reloads while unchanged).
    pub tls: Option<Arc<crate::server::tls::TlsListener>>,
    /// Limits.
    pub limits: Limits,
    /// Trusted proxy ranges.
    pub trusted_proxies: Vec<IpNet>,
}

/// A fully built config.
pub struct Snapshot {
    /// The validated config it was built from.
    pub config: Arc<Config>,
    /// Route table; values are indexes into `routes`.
    pub router: Router<usize>,
    /// Routes in file order.
    pub routes: Vec<RouteRuntime>,
    /// Upstream clients, in `config.upstreams` order.
    pub upstreams: Vec<Upstream<ReqBody>>,
    /// Consistent-hash key of each upstream, if it uses one.
    pub hash_keys: Vec<Option<HashKey>>,
    fingerprints: Vec<String>,
    /// Listener settings by name.
    pub listeners: HashMap<String, Arc<ListenerRuntime>>,
    /// Metrics of requests that matched no route.
    pub no_route: RouteMetrics,
    /// Headers plugins fill from verified data (`client_cert` identity headers): client-sent
    /// copies are removed on every route, before any plugin runs.
    pub reserved_headers: Vec<http::HeaderName>,
    /// The access log, when on.
    pub access_log: Option<Arc<crate::telemetry::AccessLogger>>,
    /// The tracer, when tracing is on.
    pub tracer: Option<Arc<crate::otel::Tracer>>,
    /// The shared resolver and the settings it was built with.
    pub dns: Option<(portcullis_config::Dns, Arc<Dns>)>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Warnings plugins found in their config (printed by `validate`, logged when applied).
    pub lints: Vec<crate::lints::PluginLint>,
    /// Traffic policy states, in `config.policies` order (kept across reloads when unchanged).
    pub policies: Vec<Arc<crate::policy::PolicyRuntime>>,
}

impl Snapshot {
    /// Builds a snapshot. Blocking (reads certificate files): run it off the async threads.
    /// Upstreams whose config did not change are carried over from `prev` with their pools.
    pub fn build(
        config: Config,
        prev: Option<&Snapshot>,
        metrics: &Metrics,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut errors: Vec<ConfigError> = Vec::new();
        let at = |path: &str, msg: String| config.error_at(path, msg);
        let mut lints = Vec::new();
        let mut lint =
            |conf: &portcullis_config::PluginConf, route: Option<&str>, p: &dyn Plugin| {
                for (policy, msg) in p.lints() {
                    lints.push(crate::lints::PluginLint {
                        plugin: conf.name.clone(),
                        route: route.map(str::to_owned),
                        lint: portcullis_config::Lint {
                            severity: portcullis_config::Severity::Warning,
                            policy,
                            error: config.error_at(&conf.field, msg),
                        },
                    });
                }
            };

        let mut listeners = HashMap::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let tls = match &l.tls {
                Some(t) => {
                    let field = format!("listeners[{i}].tls");
                    let prev_tls = prev
                        .and_then(|p| p.listeners.get(&l.name))
                        .and_then(|p| p.tls.clone());
                    match prev_tls {
                        // Same settings, same files: the same state, sessions and all.
                        Some(p) if p.serves(&field, t) => Some(p),
                        p => match crate::server::tls::TlsListener::build(
                            &l.name,
                            &field,
                            t,
                            p.as_deref(),
                            metrics,
                            &at,
                        ) {
                            Ok(c) => Some(Arc::new(c)),
                            Err(e) => {
                                errors.push(e);
                                None
                            }
                        },
                    }
                }
                None => None,
            };
            listeners.insert(
                l.name.clone(),
                Arc::new(ListenerRuntime {
                    name: l.name.as_str().into(),
                    tls,
                    limits: l.limits.clone(),
                    trusted_proxies: l.trusted_proxies.clone(),
                }),
            );
        }

        let mut upstreams = Vec::new();
        let mut fingerprints = Vec::new();
        let mut hash_keys = Vec::new();
        let uses_dns = config
            .upstreams
            .iter()
            .flat_map(|u| &u.targets)
            .any(|t| t.host.parse::<std::net::IpAddr>().is_err());
        // The resolver lives on the runtime; `validate` builds snapshots without one.
        let dns = if uses_dns && tokio::runtime::Handle::try_current().is_ok() {
            let reused = prev
                .and_then(|p| p.dns.clone())
                .filter(|(c, _)| *c == config.dns);
            match reused {
                Some(d) => Some(d),
                None => match Dns::new(DnsConfig {
                    nameservers: config.dns.nameservers.clone(),
                    timeout: config.dns.timeout,
                    stale_for: config.dns.stale_for,
                    ..DnsConfig::default()
                }) {
                    Ok(d) => Some((config.dns.clone(), Arc::new(d))),
                    Err(e) => {
                        errors.push(at("dns", format!("cannot set up name resolution: {e}")));
                        None
                    }
                },
            }
        } else {
            None
        };
        let zone = local_zone(&config);
        for u in &config.upstreams {
            let fp = format!("{u:?}{:?}{zone:?}", config.dns);
            let reused = prev.and_then(|p| {
                p.fingerprints
                    .iter()
                    .position(|f| *f == fp)
                    .map(|i| p.upstreams[i].clone())
            });
            let client = match reused {
                Some(c) => c,
                None => {
                    match upstream_client(u, dns.as_ref().map(|(_, d)| d.clone()), zone.as_deref())
                    {
                        Ok(c) => Upstream::new(c),
                        Err(msg) => {
                            errors.push(at(&format!("upstreams.{}.tls", u.name), msg));
                            continue;
                        }
                    }
                }
            };
            if u.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
                tracing::warn!(upstream = %u.name, "TLS verification is off for this upstream (insecure_skip_verify)");
            }
            upstreams.push(client);
            fingerprints.push(fp);
            hash_keys.push(match &u.load_balancer {
                LoadBalancer::ConsistentHash(k) => Some(k.clone()),
                _ => None,
            });
        }

        let request_id: Arc<dyn Plugin> = Arc::new(RequestId);
        let base_dir = config
            .file
            .as_deref()
            .and_then(std::path::Path::parent)
            .map_or_else(
                || std::path::PathBuf::from("."),
                std::path::Path::to_path_buf,
            );
        let mut global: HashMap<String, Arc<dyn Plugin>> = HashMap::new();
        for p in &config.plugins {
            let bctx = BuildCtx {
                scope: "global",
                base_dir: &base_dir,
            };
            match build_plugin(p, &bctx) {
                Ok(inst) => {
                    lint(p, None, &*inst);
                    global.insert(p.name.clone(), inst);
                }
                Err(e) => errors.push(at(&e.0, e.1)),
            }
        }

        let mut reserved_headers: Vec<http::HeaderName> = Vec::new();
        let mut reserve = |p: &dyn Plugin| {
            for h in p.reserved_headers() {
                if !reserved_headers.contains(h) {
                    reserved_headers.push(h.clone());
                }
            }
        };
        for p in global.values() {
            reserve(&**p);
        }
        let prev_policies = prev.map_or(&[][..], |p| &p.policies[..]);
        let policies: Vec<Arc<crate::policy::PolicyRuntime>> = config
            .policies
            .iter()
            .map(|def| crate::policy::PolicyRuntime::carry(def, prev_policies))
            .collect();
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let name: Arc<str> = r.name.as_str().into();
            let mut chain: Vec<(i32, Arc<dyn Plugin>)> = Vec::new();
            for p in config.plugins_for(r) {
                let prio = portcullis_plugins::find(&p.name).map_or(0, |s| s.priority);
                let inst = if p.field.starts_with("plugins.") {
                    global.get(&p.name).cloned()
                } else {
                    let bctx = BuildCtx {
                        scope: &r.name,
                        base_dir: &base_dir,
                    };
                    match build_plugin(p, &bctx) {
                        Ok(i) => {
                            lint(p, Some(&r.name), &*i);
                            Some(i)
                        }
                        Err(e) => {
                            errors.push(at(&e.0, e.1));
                            None
                        }
                    }
                };
                if let Some(i) = inst {
                    reserve(&*i);
                    chain.push((prio, i));
                }
            }
            chain.sort_by_key(|(prio, _)| std::cmp::Reverse(*prio));
            let mut plugins = vec![request_id.clone()];
            plugins.extend(chain.into_iter().map(|(_, p)| p));
            if let Some(h) = &r.headers {
                plugins.push(Arc::new(HeaderTransform {
                    request: ops(&h.request),
                    response: ops(&h.response),
                }));
            }
            let action = match &r.action {
                Action::Upstream(i) => RouteAction::Upstream(*i),
                Action::Split(legs) => {
                    let mut acc = 0u64;
                    let cum = legs
                        .iter()
                        .map(|(i, w)| {
                            acc += u64::from(*w);
                            (*i, acc)
                        })
                        .collect();
                    RouteAction::Split(cum, acc)
                }
                Action::Direct(d) => RouteAction::Direct(Box::new(d.clone())),
            };
            let max_replay_body_bytes = match &r.action {
                Action::Upstream(i) => config.upstreams[*i]
                    .retry
                    .as_ref()
                    .map_or(64 * 1024, |rt| rt.max_replay_body_bytes),
                _ => 64 * 1024,
            };
            let bodies = plugins.iter().any(|p| p.has_body_phases());
            let route_index = routes.len();
            let route_policies: Vec<_> = config
                .policies
                .iter()
                .zip(&policies)
                .filter(|(def, _)| def.routes.contains(&route_index))
                .map(|(def, state)| crate::policy::RoutePolicy {
                    state: state.clone(),
                    actions: def.actions.clone(),
                })
                .collect();
            // Only routes a policy acts on count answers; the others share one idle counter.
            let answered = if route_policies.is_empty() {
                metrics.unanswered()
            } else {
                metrics.answered(&r.name)
            };
            routes.push(RouteRuntime {
                mirrors: r.mirrors.as_slice().into(),
                policies: route_policies.into(),
                answered,
                action,
                rewrite: r.rewrite.clone(),
                plugins: plugins.into(),
                bodies,
                timeout: r.timeout,
                fallback: r.fallback.clone(),
                max_replay_body_bytes,
                metrics: {
                    let legs: Vec<&str> = match &r.action {
                        Action::Upstream(i) => vec![config.upstreams[*i].name.as_str()],
                        Action::Split(l) => l
                            .iter()
                            .map(|(i, _)| config.upstreams[*i].name.as_str())
                            .collect(),
                        Action::Direct(_) => Vec::new(),
                    };
                    metrics.route(&name, &legs, config.observability.slo_window)
                },
                name,
            });
        }

        let access_log = match &config.observability.access_log {
            None => None,
            Some(cfg) => match prev
                .and_then(|p| p.access_log.clone())
                .filter(|l| l.config() == cfg)
            {
                Some(same) => Some(same),
                // `validate` checks the config without opening files or starting threads.
                None if tokio::runtime::Handle::try_current().is_err() => None,
                None => match crate::telemetry::AccessLogger::start(cfg.clone()) {
                    Ok(l) => Some(Arc::new(l)),
                    Err(e) => {
                        errors.push(at(
                            "observability.access_log.path",
                            format!("cannot open the access log: {e}"),
                        ));
                        None
                    }
                },
            },
        };
        let tracer = match &config.observability.tracing {
            None => None,
            Some(cfg) => match prev.and_then(|p| p.tracer.clone()).filter(|t| {
                let c = t.config();
                c.endpoint == cfg.endpoint
                    && c.protocol == cfg.protocol
                    && c.service_name == cfg.service_name
                    && c.sampling == cfg.sampling
            }) {
                Some(same) => Some(same),
                None if tokio::runtime::Handle::try_current().is_err() => None,
                None => match crate::otel::Tracer::start(cfg.clone()) {
                    Ok(t) => Some(Arc::new(t)),
                    Err(e) => {
                        errors.push(at("observability.tracing.otlp_endpoint", e));
                        None
                    }
                },
            },
        };
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        // Every error and lint is placed: the positions of every field are not needed again.
        let mut config = config;
        config.source_map = Default::default();
        let no_route = metrics.route(&Arc::from(""), &[], config.observability.slo_window);
        let router = Router::new(
            config
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| (r.spec.clone(), i))
                .collect(),
        );
        Ok(Snapshot {
            config: Arc::new(config),
            router,
            routes,
            upstreams,
            hash_keys,
            fingerprints,
            listeners,
            no_route,
            reserved_headers,
            access_log,
            tracer,
            dns,
            loaded_at: SystemTime::now(),
            lints,
            policies,
        })
    }
}

fn ops(o: &portcullis_config::HeaderOps) -> HeaderOps {
    HeaderOps {
        set: o.set.clone(),
        add: o.add.clone(),
        remove: o.remove.clone(),
    }
}

/// Builds a configured plugin; on failure, the field path and message.
fn build_plugin(
    p: &portcullis_config::PluginConf,
    bctx: &BuildCtx<'_>,
) -> Result<Arc<dyn Plugin>, (String, String)> {
    let Some(spec) = portcullis_plugins::find(&p.name) else {
        return Err((
            p.field.clone(),
            format!(
                "unknown plugin `{}`; known plugins: {}",
                p.name,
                portcullis_plugins::known_names().join(", ")
            ),
        ));
    };
    (spec.build)(&p.config, bctx).map_err(|e| {
        let path = if e.path.is_empty() {
            p.field.clone()
        } else {
            format!("{}.{}", p.field, e.path)
        };
        (path, e.message)
    })
}

/// Maps an upstream's config to the client's. Blocking (reads TLS files).
/// This node's zone: `runtime.zone`, else `PORTCULLIS_ZONE`.
pub fn local_zone(config: &Config) -> Option<String> {
    config.runtime.zone.clone().or_else(|| {
        std::env::var("PORTCULLIS_ZONE")
            .ok()
            .filter(|z| !z.is_empty())
    })
}

fn upstream_client(
    u: &portcullis_config::Upstream,
    dns: Option<Arc<Dns>>,
    zone: Option<&str>,
) -> Result<UpstreamConfig, String> {
    use portcullis_config::Protocol as P;
    use portcullis_config::RetryOn as R;
    let protocol = match u.protocol {
        P::Http1 => Protocol::Http1,
        P::H2c => Protocol::H2c,
        P::Auto => Protocol::Auto,
    };
    let tls = match &u.tls {
        Some(t) => {
            let alpn: &[&[u8]] = match protocol {
                Protocol::Http1 => &[b"http/1.1"],
                Protocol::H2c => &[b"h2"],
                Protocol::Auto => &[b"h2", b"http/1.1"],
            };
            let cfg = crate::server::tls::upstream_client_config(t, alpn)?;
            let server_name = match &t.server_name {
                Some(n) => Some(
                    ServerName::try_from(n.clone())
                        .map_err(|e| format!("invalid server_name `{n}`: {e}"))?,
                ),
                None => None,
            };
            Some(TlsSettings {
                connector: tokio_rustls::TlsConnector::from(cfg),
                server_name,
            })
        }
        None => None,
    };
    Ok(UpstreamConfig {
        name: u.name.clone(),
        targets: u
            .targets
            .iter()
            .map(|t| TargetConfig {
                zone: t.zone.clone(),
                host: t.host.clone(),
                port: t.port,
                weight: t.weight,
            })
            .collect(),
        protocol,
        tls,
        policy: match u.load_balancer {
            LoadBalancer::RoundRobin => Policy::RoundRobin,
            LoadBalancer::LeastRequest => Policy::LeastRequest,
            LoadBalancer::Random => Policy::Random,
            LoadBalancer::ConsistentHash(_) => Policy::ConsistentHash,
        },
        timeouts: Timeouts {
            connect: u.timeouts.connect,
            response_header: u.timeouts.response_header,
            read_idle: u.timeouts.read_idle,
        },
        pool: PoolConfig {
            max_idle_per_host: u.pool.max_idle_per_host,
            idle_timeout: u.pool.idle_timeout,
            max_connections_per_host: u.pool.max_connections_per_host,
        },
        retry: u.retry.as_ref().map(|r| RetryPolicy {
            attempts: r.attempts,
            on: RetryOn {
                connect_failure: r.on.contains(&R::ConnectFailure),
                reset: r.on.contains(&R::Reset),
                refused_stream: r.on.contains(&R::RefusedStream),
                timeout: r.on.contains(&R::Timeout),
                statuses: r
                    .on
                    .iter()
                    .filter_map(|c| match c {
                        R::Status(s) => Some(*s),
                        _ => None,
                    })
                    .collect(),
            },
            backoff_base: r.backoff_base,
            backoff_max: r.backoff_max,
            budget_percent: r.budget_percent,
            min_retries_per_sec: 10,
            per_try_timeout: r.per_try_timeout,
            max_replay_body_bytes: r.max_replay_body_bytes,
        }),
        breaker: u.circuit_breaker.as_ref().map(|b| BreakerConfig {
            failure_rate: b.failure_rate,
            window: b.window,
            min_requests: b.min_requests,
            open_for: b.open_for,
            half_open_requests: b.half_open_requests,
            slow_call_threshold: b.slow_call_threshold,
            failure_statuses: {
                let mut set = StatusSet::empty();
                for (from, to) in &b.failure_statuses {
                    set.insert_range(*from, *to);
                }
                set
            },
        }),
        active_health: u.active_health.as_ref().map(|a| ActiveHealthConfig {
            path: a.path.clone(),
            interval: a.interval,
            timeout: a.timeout,
            healthy_threshold: a.healthy_threshold,
            unhealthy_threshold: a.unhealthy_threshold,
            expected_statuses: a.expected_statuses.clone(),
        }),
        passive_health: u.passive_health.as_ref().map(|p| PassiveHealthConfig {
            consecutive_failures: p.consecutive_failures,
            eject_for: p.eject_for,
            max_ejected_percent: p.max_ejected_percent,
        }),
        dns,
        locality: match (u.locality, zone) {
            (Some(min), Some(z)) => Some(portcullis_client::Locality {
                local_zone: z.into(),
                min_healthy_percent: min,
            }),
            (Some(_), None) => {
                tracing::warn!(upstream = %u.name, "locality is set but this node has no zone (runtime.zone or PORTCULLIS_ZONE): balancing ignores zones");
                None
            }
            _ => None,
        },
    })
}
