//! Name resolution with hickory-resolver: answers cached by TTL, a timeout of its own, and
//! explicit name servers for tests and split-horizon setups.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::error::{Error, ErrorKind};

/// Resolver settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Name servers (`IP:PORT`); the system's (`/etc/resolv.conf`) when empty.
    pub nameservers: Vec<SocketAddr>,
    /// Time allowed for one resolution.
    pub timeout: Duration,
    /// How long the last good answer is kept while resolution fails.
    pub stale_for: Duration,
    /// Shortest and longest time between background re-resolutions (TTLs are clamped).
    pub min_refresh: Duration,
    /// See `min_refresh`.
    pub max_refresh: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
            stale_for: Duration::from_secs(300),
            min_refresh: Duration::from_secs(1),
            max_refresh: Duration::from_secs(300),
        }
    }
}

/// A shared resolver with counters.
#[derive(Debug)]
pub struct Dns {
    resolver: TokioResolver,
    /// Settings.
    pub cfg: DnsConfig,
    /// Resolutions done (initial and background).
    pub resolutions: AtomicU64,
    /// Resolutions that failed.
    pub failures: AtomicU64,
}

/// A resolution: addresses and how long they may be used.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Addresses, in the resolver's order.
    pub ips: Vec<IpAddr>,
    /// When to resolve again.
    pub refresh_in: Duration,
}

impl Dns {
    /// Builds a resolver.
    pub fn new(cfg: DnsConfig) -> Result<Self, Error> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if cfg.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| Error::new(ErrorKind::Dns).with_source(e))?
        } else {
            let servers = cfg
                .nameservers
                .iter()
                .map(|sa| {
                    let mut ns = NameServerConfig::udp_and_tcp(sa.ip());
                    for c in &mut ns.connections {
                        c.port = sa.port();
                    }
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = cfg.timeout;
        opts.attempts = 1;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = ResolveHosts::Always;
        let resolver = builder
            .build()
            .map_err(|e| Error::new(ErrorKind::Dns).with_source(e))?;
        Ok(Self {
            resolver,
            cfg,
            resolutions: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Resolves `host` within the configured timeout.
    pub async fn resolve(&self, host: &str) -> Result<Answer, Error> {
        self.resolutions.fetch_add(1, Ordering::Relaxed);
        let fail = |e: Error| {
            self.failures.fetch_add(1, Ordering::Relaxed);
            e
        };
        let lookup = tokio::time::timeout(self.cfg.timeout, self.resolver.lookup_ip(host))
            .await
            .map_err(|_| {
                fail(
                    Error::new(ErrorKind::Dns)
                        .with_source(format!("resolving `{host}` timed out"))
                        .with_timeout(self.cfg.timeout),
                )
            })?
            .map_err(|e| fail(Error::new(ErrorKind::Dns).with_source(e)))?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(fail(
                Error::new(ErrorKind::Dns).with_source(format!("`{host}` has no addresses")),
            ));
        }
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(Instant::now())
            .clamp(self.cfg.min_refresh, self.cfg.max_refresh);
        Ok(Answer {
            ips,
            refresh_in: ttl,
        })
    }
}
