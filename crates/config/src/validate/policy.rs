//! `policies`: names unique, references resolved, thresholds typed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use super::Validator;
use crate::model::{Action, DirectResponse, Route};
use crate::policy::{Condition, Policy, PolicyAction, Signal};
use crate::raw::{RawCondition, RawDirectResponse, RawPolicy, RawPolicyAction};

impl Validator<'_> {
    pub(crate) fn policies(
        &mut self,
        raw: &[RawPolicy],
        upstreams: &HashMap<&str, usize>,
        routes: &[Route],
    ) -> Vec<Policy> {
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let p = format!("policies[{i}]");
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                self.err(
                    format!("{p}.name"),
                    format!("policy name `{}` is empty or already used", r.name),
                );
            }
            // route index -> legs watched (None: all)
            let mut watched: Vec<(usize, Option<Vec<usize>>)> = Vec::new();
            for (j, name) in r.matcher.routes.iter().enumerate() {
                match routes.iter().position(|x| &x.name == name) {
                    Some(ri) if matches!(routes[ri].action, Action::Direct(_)) => self.err(
                        format!("{p}.match.routes[{j}]"),
                        format!("route `{name}` answers directly: a policy has nothing to watch"),
                    ),
                    Some(ri) => watched.push((ri, None)),
                    None => self.err(
                        format!("{p}.match.routes[{j}]"),
                        format!("no route named `{name}`"),
                    ),
                }
            }
            for (j, name) in r.matcher.upstreams.iter().enumerate() {
                let Some(ui) = upstreams.get(name.as_str()).copied() else {
                    self.err(
                        format!("{p}.match.upstreams[{j}]"),
                        format!("no upstream named `{name}`"),
                    );
                    continue;
                };
                for (ri, route) in routes.iter().enumerate() {
                    let legs: Vec<usize> = match &route.action {
                        Action::Upstream(u) if *u == ui => vec![0],
                        Action::Split(s) => s
                            .iter()
                            .enumerate()
                            .filter(|(_, (u, _))| *u == ui)
                            .map(|(k, _)| k)
                            .collect(),
                        _ => Vec::new(),
                    };
                    if legs.is_empty() || watched.iter().any(|(w, l)| *w == ri && l.is_none()) {
                        continue;
                    }
                    match watched.iter_mut().find(|(w, _)| *w == ri) {
                        Some((_, Some(l))) => l.extend(legs),
                        Some(_) => {}
                        None => watched.push((ri, Some(legs))),
                    }
                }
            }
            if r.matcher.routes.is_empty() && r.matcher.upstreams.is_empty() {
                self.err(
                    format!("{p}.match"),
                    "name the routes and/or upstreams the policy watches: match: { routes: [...] }",
                );
            }
            watched.sort_by_key(|(ri, _)| *ri);
            if r.conditions.is_empty() {
                self.err(
                    format!("{p}.conditions"),
                    "at least one condition is needed",
                );
            }
            let conditions: Vec<Condition> = r
                .conditions
                .iter()
                .enumerate()
                .filter_map(|(j, c)| self.condition(&format!("{p}.conditions[{j}]"), c))
                .collect();
            if r.actions.is_empty() {
                self.err(format!("{p}.actions"), "at least one action is needed");
            }
            let actions: Vec<PolicyAction> = r
                .actions
                .iter()
                .enumerate()
                .filter_map(|(j, a)| self.policy_action(&format!("{p}.actions[{j}]"), a, upstreams))
                .collect();
            let dry_run = match r.mode.as_deref() {
                None | Some("enforce") => false,
                Some("dry_run") => true,
                Some(m) => {
                    self.err(
                        format!("{p}.mode"),
                        format!("unknown mode `{m}`: use enforce or dry_run"),
                    );
                    false
                }
            };
            out.push(Policy {
                name: r.name.clone(),
                routes: watched.iter().map(|(ri, _)| *ri).collect(),
                legs: watched.into_iter().map(|(_, l)| l).collect(),
                conditions,
                min_requests: r.min_requests.unwrap_or(20),
                actions,
                dry_run,
                fingerprint: serde_json::to_string(r).unwrap_or_default(),
            });
        }
        out
    }

    fn condition(&mut self, p: &str, c: &RawCondition) -> Option<Condition> {
        let signal = match c.metric.as_str() {
            "p50_latency" => Signal::Latency(0.5),
            "p90_latency" => Signal::Latency(0.9),
            "p99_latency" => Signal::Latency(0.99),
            "error_rate" => Signal::ErrorRate,
            "success_rate" => Signal::SuccessRate,
            "rps" => Signal::Rps,
            "in_flight" => Signal::InFlight,
            m => {
                self.err(
                    format!("{p}.metric"),
                    format!(
                        "unknown metric `{m}`: use p50_latency, p90_latency, p99_latency, error_rate, success_rate, rps or in_flight"
                    ),
                );
                return None;
            }
        };
        let (above, v, field) = match (&c.above, &c.below) {
            (Some(v), None) => (true, v, "above"),
            (None, Some(v)) => (false, v, "below"),
            _ => {
                self.err(p.to_owned(), "give exactly one of `above` and `below`");
                return None;
            }
        };
        let fp = format!("{p}.{field}");
        let threshold = match signal {
            Signal::Latency(_) => match v {
                Value::String(s) => self.parse_duration(&fp, s)?.as_secs_f64(),
                _ => {
                    self.err(fp, "a latency threshold is a duration, e.g. 300ms");
                    return None;
                }
            },
            _ => {
                let Some(x) = v.as_f64().filter(|x| *x >= 0.0) else {
                    self.err(fp, "a number at least 0");
                    return None;
                };
                if matches!(signal, Signal::ErrorRate | Signal::SuccessRate) && x > 1.0 {
                    self.err(fp, "a ratio between 0 and 1, e.g. 0.2");
                    return None;
                }
                x
            }
        };
        let window = self.duration(&format!("{p}.window"), &c.window, Duration::from_secs(10));
        if window < Duration::from_millis(100) {
            self.err(format!("{p}.window"), "at least 100ms");
        }
        Some(Condition {
            signal,
            above,
            threshold,
            window,
            consecutive: c.consecutive.unwrap_or(1).max(1),
        })
    }

    fn policy_action(
        &mut self,
        p: &str,
        a: &RawPolicyAction,
        upstreams: &HashMap<&str, usize>,
    ) -> Option<PolicyAction> {
        let stray = |v: &mut Self, set: bool, field: &str| {
            if set {
                v.err(
                    format!("{p}.{field}"),
                    format!("`{field}` does not apply to a `{}` action", a.kind),
                );
            }
        };
        match a.kind.as_str() {
            "circuit_breaker" => {
                stray(self, a.percent.is_some(), "percent");
                stray(self, a.upstream.is_some(), "upstream");
                stray(self, a.timeout.is_some(), "timeout");
                let fallback = a
                    .fallback
                    .as_ref()
                    .and_then(|f| self.policy_fallback(&format!("{p}.fallback"), f));
                Some(PolicyAction::CircuitBreaker {
                    open_for: self.duration(
                        &format!("{p}.open_for"),
                        &a.open_for,
                        Duration::from_secs(30),
                    ),
                    fallback,
                })
            }
            "shed" => {
                stray(self, a.upstream.is_some(), "upstream");
                stray(self, a.fallback.is_some(), "fallback");
                let Some(percent) = a.percent.filter(|x| (0.0..=100.0).contains(x)) else {
                    self.err(format!("{p}.percent"), "a percentage between 0 and 100");
                    return None;
                };
                Some(PolicyAction::Shed {
                    percent,
                    retry_after: self.duration(
                        &format!("{p}.retry_after"),
                        &a.retry_after,
                        Duration::from_secs(1),
                    ),
                })
            }
            "reroute" => {
                let name = a.upstream.as_deref().unwrap_or("");
                match upstreams.get(name) {
                    Some(u) => Some(PolicyAction::Reroute { upstream: *u }),
                    None => {
                        self.err(
                            format!("{p}.upstream"),
                            format!("no upstream named `{name}`"),
                        );
                        None
                    }
                }
            }
            "timeout" => match &a.timeout {
                Some(t) => self
                    .parse_duration(&format!("{p}.timeout"), t)
                    .map(|timeout| PolicyAction::Timeout { timeout }),
                None => {
                    self.err(format!("{p}.timeout"), "a `timeout` action needs `timeout`");
                    None
                }
            },
            k => {
                self.err(
                    format!("{p}.type"),
                    format!("unknown action `{k}`: use circuit_breaker, shed, reroute or timeout"),
                );
                None
            }
        }
    }

    fn policy_fallback(&mut self, p: &str, f: &RawDirectResponse) -> Option<DirectResponse> {
        let Ok(status) = StatusCode::from_u16(f.status) else {
            self.err(
                format!("{p}.status"),
                format!("{} is not an HTTP status", f.status),
            );
            return None;
        };
        Some(DirectResponse {
            status,
            body: f.body.clone().unwrap_or_default(),
            headers: self.header_pairs(&format!("{p}.headers"), &f.headers),
        })
    }
}
