//! `portcullis-client` against `reqwest` on the same local hyper server: same concurrency,
//! keep-alive, same number of requests. Prints requests/s and the client's CPU time per
//! request.
//!
//! Run: `cargo run --release -p portcullis-client --example vs_reqwest [REQUESTS] [CONCURRENCY]`
//! (defaults 100000 and 32).
//!
//! The server runs in a child process (this same program, re-executed), so the CPU time
//! measured here is the client's alone: the sum of the on-CPU nanoseconds the scheduler
//! reports for every thread of this process (`/proc/self/task/*/schedstat`). Each client
//! runs on a one-thread runtime; the rounds alternate between the clients, and the best
//! round of each is reported (the least disturbed by the rest of the machine).

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const SERVER_ENV: &str = "VS_REQWEST_SERVER";
const ROUNDS: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(SERVER_ENV).is_some() {
        return serve();
    }
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(32), |a| a.parse())?;

    let mut child = Command::new(std::env::current_exe()?)
        .env(SERVER_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no server stdout")?).read_line(&mut line)?;
    let url = format!("http://{}/bench", line.trim());
    println!("server {url}; {requests} requests, concurrency {concurrency}, keep-alive\n");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let portcullis = rt.block_on(async { portcullis_client::Client::builder().build() })?;
    let lean = portcullis_client::Client::builder()
        .trace_context(false)
        .build()?;
    let reqwest = reqwest::Client::builder().build()?;

    let mut results: Vec<(&str, Vec<(f64, f64)>)> = vec![
        ("reqwest 0.12", Vec::new()),
        ("portcullis-client (defaults)", Vec::new()),
        ("portcullis-client (no traceparent)", Vec::new()),
    ];
    for round in 0..=ROUNDS {
        for (i, (_, out)) in results.iter_mut().enumerate() {
            // Round 0 warms up (connections, allocator) and is not counted.
            let n = if round == 0 { requests / 10 } else { requests };
            let r = rt.block_on(async {
                match i {
                    0 => {
                        let c = reqwest.clone();
                        let url = url.clone();
                        run(n, concurrency, move || {
                            let c = c.clone();
                            let url = url.clone();
                            async move {
                                let r = c.get(url).send().await.map_err(|e| e.to_string())?;
                                let b = r.bytes().await.map_err(|e| e.to_string())?;
                                Ok(b.len())
                            }
                        })
                        .await
                    }
                    _ => {
                        let c = if i == 1 {
                            portcullis.clone()
                        } else {
                            lean.clone()
                        };
                        let url = url.clone();
                        run(n, concurrency, move || {
                            let c = c.clone();
                            let url = url.clone();
                            async move {
                                let r = c.get(url).send().await.map_err(|e| e.to_string())?;
                                let b = r.bytes().await.map_err(|e| e.to_string())?;
                                Ok(b.len())
                            }
                        })
                        .await
                    }
                }
            })?;
            if round > 0 {
                out.push(r);
            }
        }
    }
    println!(
        "{:<38} {:>12} {:>16}",
        "client", "requests/s", "CPU µs/request"
    );
    for (name, rounds) in &results {
        let best_rps = rounds.iter().map(|r| r.0).fold(0.0, f64::max);
        let best_cpu = rounds.iter().map(|r| r.1).fold(f64::MAX, f64::min);
        println!("{name:<38} {best_rps:>12.0} {best_cpu:>16.2}");
    }
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(())
}

/// Sends `n` requests with `concurrency` tasks; returns (requests/s, CPU µs per request).
async fn run<F, Fut>(
    n: usize,
    concurrency: usize,
    call: F,
) -> Result<(f64, f64), Box<dyn std::error::Error>>
where
    F: Fn() -> Fut + Clone + 'static,
    Fut: Future<Output = Result<usize, String>> + 'static,
{
    let cpu0 = cpu_time()?;
    let t0 = Instant::now();
    let local = tokio::task::LocalSet::new();
    let per_task = n / concurrency;
    for _ in 0..concurrency {
        let call = call.clone();
        local.spawn_local(async move {
            for _ in 0..per_task {
                if let Err(e) = call().await {
                    eprintln!("request failed: {e}");
                    std::process::exit(1);
                }
            }
        });
    }
    local.await;
    let wall = t0.elapsed();
    let cpu = cpu_time()? - cpu0;
    let done = (per_task * concurrency) as f64;
    Ok((done / wall.as_secs_f64(), cpu.as_secs_f64() * 1e6 / done))
}

/// CPU time of every thread of this process, from the scheduler's accounting.
fn cpu_time() -> Result<Duration, Box<dyn std::error::Error>> {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task")? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        ns += stat
            .split_whitespace()
            .next()
            .ok_or("empty schedstat")?
            .parse::<u64>()?;
    }
    Ok(Duration::from_nanos(ns))
}

/// The server: HTTP/1.1 with keep-alive, a small fixed answer; prints its address and runs
/// until its stdin closes.
fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", l.local_addr()?);
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"{\"ok\":true,\"items\":[1,2,3]}",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        // Until the parent closes our stdin.
        let mut buf = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut buf)).await;
        Ok(())
    })
}
