//! The two programs of `bench/soak.sh`, the chaos soak:
//!
//! - `soak upstream --listen IP:PORT --log FILE [--name NAME]`: an HTTP/1.1 + h2c server that
//!   answers every request 200 and appends the `idempotency-key` of every POST it receives to
//!   FILE (one line each, appended before the answer). The files of all targets together, across
//!   their restarts, tell whether any POST reached an upstream twice.
//! - `soak load --url URL --rate N --duration SECS [--h2] [--post-percent P] [--run ID]`: an
//!   open-loop load (N requests per second whatever the answers do, up to 2,000 in flight) of
//!   GET `/api/items/K` and POST `/api/orders` with a unique `idempotency-key`, over HTTP/1.1
//!   keep-alive or h2c. Prints one progress line a minute on stderr and a JSON summary on stdout:
//!   outcomes by cause (status and the gateway's `error` field, or the socket error), idempotent
//!   requests lost (a GET without a 2xx answer) and latency percentiles.
//!
//! Run: `cargo run --release -p portcullis --example soak -- upstream ...` (see bench/soak.sh).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args.split_first().ok_or(USAGE)?;
    let opts = Opts::parse(rest)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match cmd.as_str() {
        "upstream" => rt.block_on(upstream(opts)),
        "load" => rt.block_on(load(opts)),
        _ => Err(USAGE.into()),
    }
}

const USAGE: &str = "usage: soak upstream --listen IP:PORT --log FILE [--name NAME] | \
                     soak load --url URL --rate N --duration SECS [--h2] [--post-percent P] [--run ID]";

/// `--key value` options and `--flag`s.
struct Opts(BTreeMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Result<Self, Error> {
        let mut map = BTreeMap::new();
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            let key = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected {a}"))?;
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().cloned().unwrap_or_default(),
                _ => "true".to_owned(),
            };
            map.insert(key.to_owned(), value);
        }
        Ok(Self(map))
    }

    fn get(&self, key: &str) -> Result<&str, Error> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} missing; {USAGE}").into())
    }

    fn or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.0.get(key).map(String::as_str).unwrap_or(default)
    }
}

async fn upstream(opts: Opts) -> Result<(), Error> {
    let listen: SocketAddr = opts.get("listen")?.parse()?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(opts.get("log")?)?;
    let log = Arc::new(Mutex::new(log));
    let name: Arc<str> = opts.or("name", "upstream").into();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (log, name) = (log.clone(), name.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, log.clone(), name.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    log: Arc<Mutex<File>>,
    name: Arc<str>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if parts.method == Method::POST {
        let key = parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        // A small append under a lock is fine for a test upstream at a few hundred POSTs/s; it
        // is written before the answer, so an answered POST is always on record.
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{key}");
        }
    }
    let text = format!(
        "{{\"upstream\":\"{name}\",\"path\":\"{}\",\"received\":{}}}",
        parts.uri.path(),
        body.len()
    );
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_default())
}

/// What the load generator counts, shared by the request tasks.
#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    ok: AtomicU64,
    get_sent: AtomicU64,
    get_lost: AtomicU64,
    post_sent: AtomicU64,
    post_failed: AtomicU64,
    overload_skipped: AtomicU64,
    /// Non-2xx answers and errors by cause, and latencies in microseconds (ok answers only).
    detail: Mutex<(BTreeMap<String, u64>, Vec<u32>)>,
}

impl Stats {
    fn failure(&self, cause: String) {
        if let Ok(mut d) = self.detail.lock() {
            *d.0.entry(cause).or_default() += 1;
        }
    }
}

async fn load(opts: Opts) -> Result<(), Error> {
    let url = opts.get("url")?.trim_end_matches('/').to_owned();
    let rate: f64 = opts.get("rate")?.parse()?;
    let duration = Duration::from_secs(opts.get("duration")?.parse()?);
    let h2 = opts.or("h2", "false") == "true";
    let post_percent: u64 = opts.or("post-percent", "30").parse()?;
    let run = opts.or("run", "soak").to_owned();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let stats = Arc::new(Stats::default());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(2000));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut seq: u64 = 0;
    let mut next_report = Duration::from_secs(60);
    let pad = "x".repeat(400);
    while started.elapsed() < duration {
        tick.tick().await;
        seq += 1;
        if started.elapsed() >= next_report {
            report_progress(&stats, started.elapsed(), h2);
            next_report += Duration::from_secs(60);
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            stats.overload_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let post = seq % 100 < post_percent;
        let req = if post {
            Request::post(format!("{url}/api/orders"))
                .header("content-type", "application/json")
                .header("idempotency-key", format!("{run}-{seq}"))
                .body(Full::new(Bytes::from(format!(
                    "{{\"seq\":{seq},\"pad\":\"{pad}\"}}"
                ))))?
        } else {
            Request::get(format!("{url}/api/items/{}", seq % 1000)).body(Full::default())?
        };
        let (client, stats) = (client.clone(), stats.clone());
        stats.sent.fetch_add(1, Ordering::Relaxed);
        if post {
            stats.post_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.get_sent.fetch_add(1, Ordering::Relaxed);
        }
        tokio::spawn(async move {
            let t0 = Instant::now();
            let cause =
                match tokio::time::timeout(Duration::from_secs(15), call(&client, req)).await {
                    Ok(Ok(None)) => None,
                    Ok(Ok(Some(cause))) => Some(cause),
                    Ok(Err(e)) => Some(format!("socket: {}", error_kind(&*e))),
                    Err(_) => Some("client timeout (15s)".to_owned()),
                };
            match cause {
                None => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                    let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                    if let Ok(mut d) = stats.detail.lock() {
                        d.1.push(us);
                    }
                }
                Some(cause) => {
                    let counter = if post {
                        &stats.post_failed
                    } else {
                        &stats.get_lost
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let what = if post { "POST" } else { "GET" };
                    stats.failure(format!("{what} {cause}"));
                }
            }
            drop(permit);
        });
    }
    // Let what is in flight finish (each call is bounded by its 15 s timeout).
    let _ = tokio::time::timeout(Duration::from_secs(20), in_flight.acquire_many(2000)).await;
    report_progress(&stats, started.elapsed(), h2);
    println!("{}", summary(&stats, h2, started.elapsed()));
    Ok(())
}

/// One call: `None` for a 2xx answer read to its end, else the cause (status and the gateway's
/// JSON `error` code when there is one).
async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Option<String>, Error> {
    let resp = client.request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status.is_success() {
        return Ok(None);
    }
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?.as_str()?.to_owned();
            let reason = v.get("reason").and_then(|r| r.as_str());
            Some(match reason {
                Some(r) => format!("{error}/{r}"),
                None => error,
            })
        })
        .unwrap_or_default();
    Ok(Some(format!("{} {code}", status.as_u16())))
}

/// The innermost error's text, without addresses, so causes group.
fn error_kind(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(src) = inner.source() {
        inner = src;
    }
    inner.to_string().chars().take(80).collect()
}

fn report_progress(stats: &Stats, elapsed: Duration, h2: bool) {
    eprintln!(
        "[soak load {}] {:>5}s sent {} ok {} get_lost {} post_failed {} skipped {}",
        if h2 { "h2c" } else { "h1" },
        elapsed.as_secs(),
        stats.sent.load(Ordering::Relaxed),
        stats.ok.load(Ordering::Relaxed),
        stats.get_lost.load(Ordering::Relaxed),
        stats.post_failed.load(Ordering::Relaxed),
        stats.overload_skipped.load(Ordering::Relaxed),
    );
}

fn summary(stats: &Stats, h2: bool, elapsed: Duration) -> serde_json::Value {
    let (causes, mut lat) = match stats.detail.lock() {
        Ok(d) => (d.0.clone(), d.1.clone()),
        Err(_) => (BTreeMap::new(), Vec::new()),
    };
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        f64::from(lat[i.min(lat.len() - 1)]) / 1000.0
    };
    serde_json::json!({
        "protocol": if h2 { "h2c" } else { "http/1.1" },
        "seconds": elapsed.as_secs(),
        "sent": stats.sent.load(Ordering::Relaxed),
        "ok": stats.ok.load(Ordering::Relaxed),
        "get_sent": stats.get_sent.load(Ordering::Relaxed),
        "get_lost": stats.get_lost.load(Ordering::Relaxed),
        "post_sent": stats.post_sent.load(Ordering::Relaxed),
        "post_failed": stats.post_failed.load(Ordering::Relaxed),
        "overload_skipped": stats.overload_skipped.load(Ordering::Relaxed),
        "failures_by_cause": causes,
        "latency_ms": { "p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "max": pct(1.0) },
    })
}
