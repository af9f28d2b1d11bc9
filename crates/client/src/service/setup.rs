//! How an origin is made from the client's settings: its `UpstreamConfig` (one target, the
//! URL's host), the TLS connector and DNS resolver shared by every origin (built on first
//! need), and the task that drops idle origins.

use std::sync::Arc;

use http::Uri;
use tokio_rustls::TlsConnector;

use super::builder::Settings;
use super::client::Client;
use super::origin::{Origin, OriginKey};
use crate::balance::Policy;
use crate::connect::{TlsSettings, tls_client_config};
use crate::dns::Dns;
use crate::error::{Error, ErrorKind};
use crate::upstream::{Protocol, TargetConfig, Upstream, UpstreamConfig};

impl Client {
    /// The origin of `uri`, created on first use.
    pub(super) fn origin_for(&self, uri: &Uri) -> Result<Arc<Origin>, Error> {
        let (https, host, port) = origin_of(uri)?;
        let key = OriginKey { https, host, port };
        let (origin, created) = self
            .inner
            .origins
            .get_or_create(&key, || self.make_origin(&key))?;
        if created {
            self.start_sweeper();
        }
        Ok(origin)
    }

    fn make_origin(&self, key: &OriginKey<'_>) -> Result<Origin, Error> {
        let s = &self.inner.s;
        let host = key
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let mut cfg = UpstreamConfig::new(
            key.name(),
            vec![TargetConfig {
                host,
                port: key.port,
                weight: 1,
                zone: None,
            }],
        );
        cfg.protocol = match (key.https, s.http2, s.http2_prior_knowledge) {
            (true, true, _) => Protocol::Auto,
            (true, false, _) | (false, _, false) => Protocol::Http1,
            (false, _, true) => Protocol::H2c,
        };
        if key.https {
            cfg.tls = Some(TlsSettings {
                connector: self.tls()?,
                server_name: None,
            });
        }
        cfg.policy = Policy::RoundRobin;
        cfg.timeouts = s.timeouts;
        cfg.pool = s.pool;
        cfg.retry = s.retry.clone();
        cfg.breaker = s.breaker.clone();
        cfg.passive_health = s.passive_health.clone();
        if !is_ip {
            cfg.dns = Some(self.dns()?);
        }
        Ok(Origin::new(*key, Upstream::new(cfg)))
    }

    fn tls(&self) -> Result<TlsConnector, Error> {
        self.inner
            .tls
            .get_or_init(|| build_tls(&self.inner.s).map_err(|e| e.to_string()))
            .clone()
            .map_err(|m| Error::new(ErrorKind::Tls).with_source(m))
    }

    fn dns(&self) -> Result<Arc<Dns>, Error> {
        self.inner
            .dns
            .get_or_init(|| {
                Dns::new(self.inner.s.dns.clone())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|m| Error::new(ErrorKind::Dns).with_source(m))
    }

    /// Starts the task that drops idle origins (once; it ends with the client).
    fn start_sweeper(&self) {
        use std::sync::atomic::Ordering;
        let origins = &self.inner.origins;
        if origins.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            origins.sweeping.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let period = origins.sweep_period();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.origins.sweep();
            }
        });
    }
}

/// Scheme, host and port of an absolute http(s) URL.
pub(super) fn origin_of(uri: &Uri) -> Result<(bool, &str, u16), Error> {
    let invalid = |m: String| Error::new(ErrorKind::InvalidRequest).with_source(m);
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => {
            return Err(invalid(format!(
                "`{uri}` is not an absolute http or https URL"
            )));
        }
    };
    let Some(auth) = uri.authority() else {
        return Err(invalid(format!("`{uri}` has no host")));
    };
    if auth.as_str().contains('@') {
        return Err(invalid(
            "credentials in the URL are not sent; use a header (e.g. bearer_auth)".into(),
        ));
    }
    let host = auth.host();
    if host.is_empty() {
        return Err(invalid(format!("`{uri}` has no host")));
    }
    Ok((
        https,
        host,
        auth.port_u16().unwrap_or(if https { 443 } else { 80 }),
    ))
}

pub(super) fn build_tls(s: &Settings) -> Result<TlsConnector, Error> {
    let alpn: &[&[u8]] = if s.http2 {
        &[b"h2", b"http/1.1"]
    } else {
        &[b"http/1.1"]
    };
    let cfg = match &s.tls.config {
        Some(c) => {
            let mut c = (**c).clone();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(c)
        }
        None => tls_client_config(
            s.tls.ca_pem.as_deref(),
            s.tls
                .identity
                .as_ref()
                .map(|(c, k)| (c.as_slice(), k.as_slice())),
            s.tls.accept_invalid_certs,
            alpn,
        )?,
    };
    Ok(TlsConnector::from(cfg))
}
