//! Traffic policies: conditions on the signals the gateway already measures (route counters
//! and latency histograms), evaluated off the request path by one task, and actions that the
//! request path reads as a couple of atomics.
//!
//! - `engine`: the evaluator (windows, `consecutive`, the state machine, transitions).
//! - `signals`: window values from the cumulative Prometheus series.
//! - this file: the per-policy runtime shared with requests, and the per-request check.

mod engine;
mod signals;

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use portcullis_config::{Policy, PolicyAction};

use crate::body::RespBody;
use crate::errors::{GatewayError, render};

pub use engine::{admin_json, run};

/// Phase read by requests: nothing to do.
const IDLE: u8 = 0;
/// A breaker action answers every request.
const OPEN: u8 = 1;
/// A breaker action lets `pass_permille` of requests through.
const HALF_OPEN: u8 = 2;
/// Triggered, non-breaker actions apply.
const ACTIVE: u8 = 3;

/// One policy's live state; kept across reloads while the policy is unchanged.
pub struct PolicyRuntime {
    /// Name.
    pub name: Arc<str>,
    /// The policy as written, to tell whether a reload changed it.
    fingerprint: String,
    phase: AtomicU8,
    pass_permille: AtomicU32,
    /// Requests a policy answered itself (fallback, 503) or rerouted.
    pub answered: AtomicU64,
    /// Requests shed.
    pub shed: AtomicU64,
    /// Requests rerouted.
    pub rerouted: AtomicU64,
    eval: Mutex<engine::EvalState>,
}

/// A policy as one route's requests see it: its state and its actions, with the indexes of
/// the snapshot they belong to.
pub struct RoutePolicy {
    /// The shared state.
    pub state: Arc<PolicyRuntime>,
    /// The actions.
    pub actions: Vec<PolicyAction>,
}

/// Requests of one route that a policy answered, so signals can leave them out. Kept across
/// reloads by route name, like the route's counters.
#[derive(Default)]
pub struct Answered {
    /// Answered by a policy (fallback, 503).
    pub total: AtomicU64,
    /// Of which 5xx.
    pub server_errors: AtomicU64,
}

/// What a request does after the check, when it goes upstream.
#[derive(Default)]
pub struct Steer {
    /// Another upstream (index in the snapshot).
    pub reroute: Option<usize>,
    /// A tighter route timeout.
    pub timeout: Option<Duration>,
}

/// The outcome of the per-request check.
pub enum Check {
    /// Answer with this response (boxed: the common outcome is `Go`).
    Answer(Box<Response<RespBody>>),
    /// Go upstream, possibly steered.
    Go(Steer),
}

impl PolicyRuntime {
    /// A new, idle policy.
    pub fn new(def: &Policy) -> Self {
        Self {
            name: def.name.as_str().into(),
            fingerprint: def.fingerprint.clone(),
            phase: AtomicU8::new(IDLE),
            pass_permille: AtomicU32::new(1000),
            answered: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            rerouted: AtomicU64::new(0),
            eval: Mutex::new(engine::EvalState::default()),
        }
    }

    /// Takes over the state of `prev` when it is the same policy (same definition).
    pub fn carry(def: &Policy, prev: &[Arc<PolicyRuntime>]) -> Arc<PolicyRuntime> {
        match prev.iter().find(|p| *p.name == *def.name) {
            Some(p) if p.fingerprint == def.fingerprint => p.clone(),
            _ => Arc::new(PolicyRuntime::new(def)),
        }
    }
}

/// The check every request of a route with policies makes: atomic loads, and one random draw
/// when a share is involved.
pub fn check(policies: &[RoutePolicy], answered: &Answered, rid: &HeaderValue) -> Check {
    let mut steer = Steer::default();
    for rp in policies {
        let p = &*rp.state;
        let phase = p.phase.load(Ordering::Relaxed);
        if phase == IDLE {
            continue;
        }
        for a in &rp.actions {
            match a {
                PolicyAction::CircuitBreaker { fallback, .. } => {
                    let closed = phase == ACTIVE
                        || (phase == HALF_OPEN
                            && fastrand::u32(..1000) < p.pass_permille.load(Ordering::Relaxed));
                    if closed {
                        continue;
                    }
                    p.answered.fetch_add(1, Ordering::Relaxed);
                    let resp = match fallback {
                        Some(f) => {
                            let mut r = Response::new(RespBody::full(f.body.clone()));
                            *r.status_mut() = f.status;
                            for (n, v) in &f.headers {
                                r.headers_mut().append(n.clone(), v.clone());
                            }
                            r
                        }
                        None => render(
                            &GatewayError::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "upstream_unavailable",
                                format!("policy `{}` holds the circuit open", p.name),
                            ),
                            rid,
                        ),
                    };
                    count(answered, resp.status());
                    return Check::Answer(Box::new(resp));
                }
                PolicyAction::Shed {
                    percent,
                    retry_after,
                } => {
                    if fastrand::f64() * 100.0 < *percent {
                        p.shed.fetch_add(1, Ordering::Relaxed);
                        p.answered.fetch_add(1, Ordering::Relaxed);
                        let mut resp = render(
                            &GatewayError::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "load_shed",
                                format!("shed by policy `{}`", p.name),
                            ),
                            rid,
                        );
                        resp.headers_mut().insert(
                            header::RETRY_AFTER,
                            HeaderValue::from(retry_after.as_secs().max(1)),
                        );
                        count(answered, resp.status());
                        return Check::Answer(Box::new(resp));
                    }
                }
                PolicyAction::Reroute { upstream } => {
                    if steer.reroute.is_none() {
                        p.rerouted.fetch_add(1, Ordering::Relaxed);
                        steer.reroute = Some(*upstream);
                    }
                }
                PolicyAction::Timeout { timeout } => {
                    steer.timeout = Some(steer.timeout.map_or(*timeout, |t| t.min(*timeout)));
                }
            }
        }
    }
    Check::Go(steer)
}

fn count(answered: &Answered, status: StatusCode) {
    answered.total.fetch_add(1, Ordering::Relaxed);
    if status.is_server_error() {
        answered.server_errors.fetch_add(1, Ordering::Relaxed);
    }
}
