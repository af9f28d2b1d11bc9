//! `portcullis-client` on its own: an upstream of two targets with pools, the three timeouts,
//! retries with a budget, a circuit breaker per target and passive ejection.
//!
//! Run: `cargo run -p portcullis-client --example resilient_get -- 127.0.0.1:9001 127.0.0.1:9002`
//! (start targets with `portcullis echo --listen 127.0.0.1:9001`, for instance). It sends
//! twenty GETs and prints each outcome, then the per-target counters.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use portcullis_client::{
    BreakerConfig, PassiveHealthConfig, Policy, RequestBody, RetryOn, RetryPolicy, TargetConfig,
    Timeouts, Upstream, UpstreamConfig,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let targets: Vec<TargetConfig> = std::env::args()
        .skip(1)
        .map(|a| {
            let (host, port) = a.rsplit_once(':').ok_or("targets are HOST:PORT")?;
            Ok(TargetConfig {
                host: host.to_owned(),
                port: port.parse()?,
                weight: 1,
                zone: None,
            })
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    if targets.is_empty() {
        return Err("usage: resilient_get HOST:PORT [HOST:PORT...]".into());
    }

    let mut cfg = UpstreamConfig::new("demo", targets);
    cfg.policy = Policy::LeastRequest;
    cfg.timeouts = Timeouts {
        connect: Duration::from_millis(500),
        response_header: Duration::from_secs(5),
        read_idle: Duration::from_secs(10),
    };
    cfg.pool.max_idle_per_host = 16;
    cfg.pool.max_connections_per_host = 64;
    cfg.retry = Some(RetryPolicy {
        attempts: 3,
        on: RetryOn {
            connect_failure: true,
            reset: true,
            refused_stream: true,
            timeout: true,
            statuses: vec![502, 503, 504],
        },
        budget_percent: 20.0,
        ..RetryPolicy::default()
    });
    cfg.breaker = Some(BreakerConfig {
        min_requests: 5,
        ..BreakerConfig::default()
    });
    cfg.passive_health = Some(PassiveHealthConfig {
        consecutive_failures: 3,
        eject_for: Duration::from_secs(10),
        max_ejected_percent: 50.0,
    });
    let upstream: Upstream<RequestBody> = Upstream::new(cfg);

    for i in 0..20 {
        let req = Request::get(format!("/demo/{i}")).body(RequestBody::Empty)?;
        match upstream.send(req, None).await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.into_body().collect().await?.to_bytes();
                println!("#{i}: {status} ({} bytes)", body.len());
            }
            // Every failure says what happened and where: kind, target, timeout, cause.
            Err(e) => println!("#{i}: failed [{}]: {e}", e.kind().reason()),
        }
    }
    for t in upstream.targets() {
        let s = &t.stats;
        println!(
            "{}: requests={} connects={} reused={} circuit={} health={}",
            t.authority,
            s.requests.load(Ordering::Relaxed),
            s.connects.load(Ordering::Relaxed),
            s.reused.load(Ordering::Relaxed),
            t.circuit(),
            t.health.describe()
        );
    }
    for (reason, n) in upstream.stats().retries() {
        println!("retries[{reason}]={n}");
    }
    Ok(())
}
