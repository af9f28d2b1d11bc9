//! The evaluator: one task reads every policy's signals once per its shortest window, counts
//! how long conditions held, and moves the policy between idle and triggered (for a breaker
//! action: open, then half-open with a growing share let through, then idle).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portcullis_config::{Policy, PolicyAction};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use super::signals::{Sample, sample, value};
use super::{ACTIVE, HALF_OPEN, IDLE, OPEN, PolicyRuntime};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::state::Shared;

/// How often the task looks for policies due an evaluation.
const TICK: Duration = Duration::from_millis(20);
/// Share let through when a breaker action turns half-open, in permille; doubled each window.
const FIRST_PASS: u32 = 100;
/// Transitions kept for the admin API.
const KEPT: usize = 20;

/// The reported state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Idle,
    Triggered,
    DryRun,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Triggered => "triggered",
            State::DryRun => "dry_run_triggered",
        }
    }
}

/// What the evaluator keeps between ticks (only it and the admin API lock it).
#[derive(Default)]
pub struct EvalState {
    samples: VecDeque<Sample>,
    held: Vec<u32>,
    clear: u32,
    state: State,
    opened_at: Option<Instant>,
    last_tick: Option<Instant>,
    values: Map<String, Value>,
    triggered_values: Map<String, Value>,
    triggered_at: Option<f64>,
    triggered: u64,
    history: VecDeque<Value>,
}

/// Evaluates the policies of the running snapshot until the process ends.
pub async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let snap = shared.snapshot.load_full();
        let now = Instant::now();
        for (def, rt) in snap.config.policies.iter().zip(&snap.policies) {
            evaluate(def, rt, &snap, &shared.metrics, now);
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ticks(window: Duration, period: Duration) -> u32 {
    (window.as_secs_f64() / period.as_secs_f64())
        .ceil()
        .max(1.0) as u32
}

fn evaluate(def: &Policy, rt: &PolicyRuntime, snap: &Snapshot, metrics: &Metrics, now: Instant) {
    let Some(period) = def.conditions.iter().map(|c| c.window).min() else {
        return;
    };
    let longest = def
        .conditions
        .iter()
        .map(|c| c.window)
        .max()
        .unwrap_or(period);
    let mut st = rt.eval.lock().unwrap_or_else(|p| p.into_inner());
    if st
        .last_tick
        .is_some_and(|t| now.duration_since(t) + TICK / 2 < period)
    {
        return;
    }
    st.last_tick = Some(now);
    let s = sample(def, snap);
    st.samples.push_back(s.clone());
    while st.samples.len() > 2 && now.duration_since(st.samples[1].at) >= longest + period {
        st.samples.pop_front();
    }
    if st.held.len() != def.conditions.len() {
        st.held = vec![0; def.conditions.len()];
    }
    let mut all = true;
    let mut all_now = true;
    let mut values = Map::new();
    for (i, c) in def.conditions.iter().enumerate() {
        let reach = c.window.saturating_sub(period / 2);
        let base = st
            .samples
            .iter()
            .rev()
            .skip(1)
            .find(|x| now.duration_since(x.at) >= reach);
        let holds = match base {
            None => false,
            Some(b) => {
                let (v, w) = value(c.signal, b, &s);
                let shown = if matches!(c.signal, portcullis_config::Signal::Latency(_)) {
                    v * 1000.0
                } else {
                    v
                };
                let key = if matches!(c.signal, portcullis_config::Signal::Latency(_)) {
                    format!("{}_ms", c.signal.name())
                } else {
                    c.signal.name().to_owned()
                };
                values.insert(key, json!((shown * 1000.0).round() / 1000.0));
                values.insert("requests".into(), json!(w.forwarded));
                let enough = !c.signal.needs_volume() || w.forwarded >= def.min_requests;
                enough
                    && if c.above {
                        v > c.threshold
                    } else {
                        v < c.threshold
                    }
            }
        };
        st.held[i] = if holds { st.held[i] + 1 } else { 0 };
        all &= st.held[i] >= c.consecutive * ticks(c.window, period);
        all_now &= holds;
    }
    st.values = values;
    let breaker = def.actions.iter().find_map(|a| match a {
        PolicyAction::CircuitBreaker { open_for, .. } => Some(*open_for),
        _ => None,
    });
    let clear_after = ticks(longest, period);
    match st.state {
        State::Idle => {
            if all {
                let to = if def.dry_run {
                    State::DryRun
                } else {
                    State::Triggered
                };
                st.state = to;
                st.triggered += 1;
                st.triggered_values = st.values.clone();
                st.triggered_at = Some(unix_now());
                st.clear = 0;
                if to == State::Triggered {
                    if breaker.is_some() {
                        st.opened_at = Some(now);
                        rt.phase.store(OPEN, Ordering::Relaxed);
                    } else {
                        rt.phase.store(ACTIVE, Ordering::Relaxed);
                    }
                }
                transition(def, &mut st, metrics, to.as_str());
            }
        }
        State::Triggered if breaker.is_some() => {
            let open_for = breaker.unwrap_or_default();
            match rt.phase.load(Ordering::Relaxed) {
                OPEN => {
                    if st
                        .opened_at
                        .is_some_and(|t| now.duration_since(t) >= open_for)
                    {
                        rt.pass_permille.store(FIRST_PASS, Ordering::Relaxed);
                        rt.phase.store(HALF_OPEN, Ordering::Relaxed);
                        st.clear = 0;
                        transition(def, &mut st, metrics, "half_open");
                    }
                }
                _ => {
                    if all_now {
                        st.opened_at = Some(now);
                        st.clear = 0;
                        rt.phase.store(OPEN, Ordering::Relaxed);
                        st.triggered_values = st.values.clone();
                        transition(def, &mut st, metrics, "open");
                    } else {
                        st.clear += 1;
                        if st.clear >= clear_after {
                            st.clear = 0;
                            let pass = rt.pass_permille.load(Ordering::Relaxed);
                            if pass >= 1000 {
                                idle(def, rt, &mut st, metrics);
                            } else {
                                rt.pass_permille
                                    .store((pass * 2).min(1000), Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        }
        State::Triggered | State::DryRun => {
            if all_now {
                st.clear = 0;
            } else {
                st.clear += 1;
                if st.clear >= clear_after {
                    idle(def, rt, &mut st, metrics);
                }
            }
        }
    }
}

fn idle(def: &Policy, rt: &PolicyRuntime, st: &mut EvalState, metrics: &Metrics) {
    st.state = State::Idle;
    st.clear = 0;
    st.opened_at = None;
    st.held.iter_mut().for_each(|h| *h = 0);
    rt.phase.store(IDLE, Ordering::Relaxed);
    rt.pass_permille.store(1000, Ordering::Relaxed);
    transition(def, st, metrics, "idle");
}

fn transition(def: &Policy, st: &mut EvalState, metrics: &Metrics, to: &str) {
    let values = Value::Object(st.values.clone()).to_string();
    if to == "idle" {
        info!(policy = %def.name, to, values = %values, "policy transition");
    } else {
        warn!(policy = %def.name, to, dry_run = def.dry_run, values = %values, "policy transition");
    }
    metrics
        .policy_transitions
        .with_label_values(&[&def.name, to])
        .inc();
    metrics
        .policy_state
        .with_label_values(&[&def.name])
        .set(match st.state {
            State::Idle => 0,
            State::Triggered => 1,
            State::DryRun => 2,
        });
    if st.history.len() == KEPT {
        st.history.pop_back();
    }
    st.history.push_front(json!({
        "to": to,
        "at": unix_now(),
        "values": st.values.clone(),
    }));
}

/// `GET /admin/policies`: each policy with its state, the values that last triggered it, the
/// values of the last evaluation, its counts and its recent transitions.
pub fn admin_json(snap: &Snapshot) -> Value {
    let list: Vec<Value> = snap
        .config
        .policies
        .iter()
        .zip(&snap.policies)
        .map(|(def, rt)| {
            let st = rt.eval.lock().unwrap_or_else(|p| p.into_inner());
            let phase = match rt.phase.load(Ordering::Relaxed) {
                OPEN => Some("open"),
                HALF_OPEN => Some("half_open"),
                ACTIVE => Some("active"),
                _ => None,
            };
            json!({
                "name": def.name,
                "mode": if def.dry_run { "dry_run" } else { "enforce" },
                "state": st.state.as_str(),
                "phase": phase,
                "pass_percent": rt.pass_permille.load(Ordering::Relaxed) as f64 / 10.0,
                "routes": def.routes.iter().filter_map(|r| snap.config.routes.get(*r).map(|r| r.name.clone())).collect::<Vec<_>>(),
                "values": st.values,
                "triggered_values": st.triggered_values,
                "triggered_at": st.triggered_at,
                "counts": {
                    "triggered": st.triggered,
                    "answered": rt.answered.load(Ordering::Relaxed),
                    "shed": rt.shed.load(Ordering::Relaxed),
                    "rerouted": rt.rerouted.load(Ordering::Relaxed),
                },
                "transitions": st.history,
            })
        })
        .collect();
    json!({ "policies": list })
}
