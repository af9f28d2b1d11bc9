//! The service client: fetch URLs concurrently, print what happened to each (status,
//! redirect chain, or the failure's kind, origin and timeout), then the counters of every
//! origin and their prometheus form.
//!
//! Run: `cargo run -p portcullis-client --example fetch -- URL [URL...]`, e.g. against
//! `portcullis echo --listen 127.0.0.1:9001`:
//! `cargo run -p portcullis-client --example fetch -- http://127.0.0.1:9001/a http://127.0.0.1:1/refused`
//! Set `RUST_LOG=info` to see the `http.client.request` and `http.client.try` spans.

use std::time::{Duration, Instant};

use portcullis_client::{Client, Redirects, Timeouts};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .init();
    let urls: Vec<String> = std::env::args().skip(1).collect();
    if urls.is_empty() {
        return Err("usage: fetch URL [URL...]".into());
    }
    let client = Client::builder()
        .timeouts(Timeouts {
            connect: Duration::from_secs(2),
            response_header: Duration::from_secs(10),
            read_idle: Duration::from_secs(10),
        })
        .timeout(Duration::from_secs(30))
        .redirects(Redirects::limit(5))
        .build()?;

    let calls = urls.iter().map(|url| {
        let client = client.clone();
        async move {
            let t0 = Instant::now();
            let resp = client.get(url.as_str()).send().await;
            (url, t0, resp)
        }
    });
    for (url, t0, resp) in futures_util::future::join_all(calls).await {
        match resp {
            Ok(resp) => {
                let status = resp.status();
                let hops: String = resp
                    .redirects()
                    .iter()
                    .map(|r| format!("{} {} -> ", r.from, r.status.as_u16()))
                    .collect();
                let final_url = resp.url().clone();
                let attempts = resp.attempts();
                let body = resp.bytes().await?;
                println!(
                    "{url}: {status} {hops}{final_url} ({} bytes, {attempts} tries, {:?})",
                    body.len(),
                    t0.elapsed()
                );
            }
            // Every failure says what happened and where: kind, origin, address, timeout.
            Err(e) => println!("{url}: failed [{}] {e}", e.kind().reason()),
        }
    }

    for o in client.stats().origins {
        let errors: Vec<String> = o
            .errors
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{}={n}", k.reason()))
            .collect();
        println!(
            "{}: requests={} tries={} connects={} reused={} retries={} breaker={} protocol={} errors=[{}]",
            o.origin,
            o.requests,
            o.tries,
            o.connects,
            o.reused,
            o.retries_total(),
            o.breaker.as_str(),
            o.protocol,
            errors.join(" ")
        );
    }

    let registry = prometheus::Registry::new();
    client.register_metrics(&registry)?;
    print!(
        "\n{}",
        prometheus::TextEncoder::new().encode_to_string(&registry.gather())?
    );
    Ok(())
}
