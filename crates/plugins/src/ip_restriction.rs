//! `ip_restriction`: allow and deny lists of CIDRs (IPv4 and IPv6), checked against the real
//! client address (after `trusted_proxies`). Deny wins; with an allow list, anything not on it
//! is refused. Refusals are 403 `forbidden`.

use std::net::IpAddr;
use std::sync::Arc;

use http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;

use crate::metrics::{Counter, counter};
use crate::{BuildCtx, Flow, Plugin, PluginConfigError, Reply, RequestCtx, Step, parse_config};

/// Config of `ip_restriction`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Only these may pass (any when empty).
    #[serde(default)]
    pub allow: Vec<String>,
    /// These never pass.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// The plugin instance.
#[derive(Debug)]
pub struct IpRestriction {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    refused: Counter,
}

fn nets(list: &[String], field: &str) -> Result<Vec<IpNet>, PluginConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| PluginConfigError {
                    path: format!("{field}[{i}]"),
                    message: format!(
                        "`{s}` is not an IP address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)"
                    ),
                })
        })
        .collect()
}

/// Builds the plugin from its config.
pub fn build(
    v: &serde_json::Value,
    ctx: &BuildCtx<'_>,
) -> Result<Arc<dyn Plugin>, PluginConfigError> {
    let c: Config = parse_config(v)?;
    if c.allow.is_empty() && c.deny.is_empty() {
        return Err(PluginConfigError::new("give `allow`, `deny` or both"));
    }
    Ok(Arc::new(IpRestriction {
        allow: nets(&c.allow, "allow")?,
        deny: nets(&c.deny, "deny")?,
        refused: counter(
            "portcullis_ip_restriction_refused_total",
            "Requests refused by ip_restriction.",
            &[("scope", ctx.scope)],
        ),
    }))
}

impl IpRestriction {
    /// Whether `ip` may pass.
    pub fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

impl Plugin for IpRestriction {
    fn name(&self) -> &'static str {
        "ip_restriction"
    }

    fn on_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        _req: &'a mut http::request::Parts,
    ) -> Step<'a> {
        if self.allows(ctx.client_ip) {
            return Step::CONTINUE;
        }
        self.refused.inc();
        Step::Done(Flow::Respond(Reply::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your IP address is not allowed",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(v: serde_json::Value) -> IpRestriction {
        let c: Config = parse_config(&v).unwrap();
        IpRestriction {
            allow: nets(&c.allow, "allow").unwrap(),
            deny: nets(&c.deny, "deny").unwrap(),
            refused: counter("t", "t", &[]),
        }
    }

    #[test]
    fn deny_wins_and_allow_lists_close_everything_else() {
        let p = plugin(
            serde_json::json!({"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.0.0.9"]}),
        );
        assert!(p.allows("10.1.2.3".parse().unwrap()));
        assert!(!p.allows("10.0.0.9".parse().unwrap()));
        assert!(!p.allows("192.168.1.1".parse().unwrap()));
        assert!(p.allows("2001:db8::1".parse().unwrap()));
        assert!(!p.allows("2001:db9::1".parse().unwrap()));
        assert!(p.allows("::ffff:10.1.1.1".parse().unwrap()));
        let d = plugin(serde_json::json!({"deny": ["127.0.0.0/8"]}));
        assert!(!d.allows("127.0.0.1".parse().unwrap()));
        assert!(d.allows("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn bad_cidrs_name_the_entry() {
        let e = nets(&["10.0.0.0/8".into(), "nope".into()], "allow").unwrap_err();
        assert_eq!(e.path, "allow[1]");
    }
}
