//! Test harness: starts the real `portcullis` binary with a real config file on ephemeral
//! loopback ports, small real upstream servers, and real clients.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// A running gateway process.
pub struct Gateway {
    child: Child,
    /// Temp dir holding `portcullis.yaml` and anything else the test writes.
    pub dir: tempfile::TempDir,
    /// Bound address of each listener, by name.
    pub listeners: HashMap<String, SocketAddr>,
    /// The admin API address.
    pub admin: SocketAddr,
    logs: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Gateway {
    /// Writes `yaml` to a temp dir and starts the gateway on it; waits until every listener
    /// and the admin API are bound.
    pub fn start(yaml: &str) -> Gateway {
        Self::start_with(yaml, |_| {})
    }

    /// Like `start`, after letting the test put files in the config dir (certificates...).
    pub fn start_with(yaml: &str, prepare: impl FnOnce(&std::path::Path)) -> Gateway {
        Self::start_full(yaml, prepare, &[])
    }

    /// Like `start`, with extra environment variables for the gateway process (for `${NAME}`
    /// in the config).
    pub fn start_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_full(yaml, |_| {}, env)
    }

    /// `start_with` and `start_env` together.
    pub fn start_full(
        yaml: &str,
        prepare: impl FnOnce(&std::path::Path),
        env: &[(&str, &str)],
    ) -> Gateway {
        Self::start_within(yaml, prepare, env, Duration::from_secs(20))
    }

    /// `start_full` allowing `timeout` to come up (large configs on a debug build).
    pub fn start_within(
        yaml: &str,
        prepare: impl FnOnce(&std::path::Path),
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        prepare(dir.path());
        std::fs::write(dir.path().join("portcullis.yaml"), yaml).expect("write config");
        let expected = yaml.matches("- name:").count().max(1);
        let mut child = Command::new(bin())
            .args(["run", "-c"])
            .arg(dir.path().join("portcullis.yaml"))
            .current_dir(dir.path())
            .env("PORTCULLIS_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start portcullis");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let l2 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("E2E_VERBOSE").is_some() {
                    eprintln!("[gw] {line}");
                }
                let (m, cv) = &*l2;
                m.lock().expect("logs").push(line);
                cv.notify_all();
            }
        });
        let mut gw = Gateway {
            child,
            dir,
            listeners: HashMap::new(),
            admin: "127.0.0.1:0".parse().expect("addr"),
            logs,
        };
        let deadline = Instant::now() + timeout;
        loop {
            let lines = gw.log_lines();
            for line in &lines {
                if let Some((name, addr)) = parse_listening(line) {
                    gw.listeners.insert(name, addr);
                }
                if let Some(a) = field(line, "admin listening", "address") {
                    gw.admin = a.parse().expect("admin addr");
                }
            }
            let listeners_in_yaml = count_listeners(yaml).max(1);
            if gw.admin.port() != 0 && gw.listeners.len() >= listeners_in_yaml {
                break;
            }
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!("gateway exited early ({status}):\n{}", lines.join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not come up (expected {expected} lines):\n{}",
                lines.join("\n")
            );
            gw.wait_log_change(lines.len(), Duration::from_millis(200));
        }
        gw
    }

    /// Address of the listener named `http` (or the only one).
    pub fn http(&self) -> SocketAddr {
        self.listeners
            .get("http")
            .or_else(|| self.listeners.values().next())
            .copied()
            .expect("a listener")
    }

    /// `http://<http listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http())
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `POST /admin/reload`: the gateway re-reads its config (and the files it names).
    pub async fn reload(&self) -> Got {
        send(
            &h1_client(),
            req("POST", &self.admin_url("/admin/reload"))
                .body(Full::default())
                .expect("request"),
        )
        .await
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("portcullis.yaml")
    }

    /// Replaces the config file (for reload tests).
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.path().join(".portcullis.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("rename config");
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. "HUP", "TERM").
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; returns its exit code. (Sync code: a thread sleep is fine.)
    #[allow(clippy::disallowed_methods)]
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Log lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.0.lock().expect("logs").clone()
    }

    /// All logs as one string.
    pub fn logs(&self) -> String {
        self.log_lines().join("\n")
    }

    fn wait_log_change(&self, seen: usize, timeout: Duration) {
        let (m, cv) = &*self.logs;
        let guard = m.lock().expect("logs");
        if guard.len() > seen {
            return;
        }
        let _ = cv.wait_timeout(guard, timeout).expect("logs");
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.log_lines();
            if lines.iter().any(|l| l.contains(needle)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.wait_log_change(lines.len(), Duration::from_millis(100));
        }
    }

    /// The address of listener `name` from the most recent `listening` log line naming it
    /// (listeners added by a reload are not in `self.listeners`).
    pub fn listener_from_logs(&self, name: &str) -> Option<SocketAddr> {
        self.log_lines()
            .iter()
            .rev()
            .filter_map(|l| parse_listening(l))
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Resident set size in KiB (VmRSS) and its peak (VmHWM).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let get = |k: &str| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (get("VmRSS:"), get("VmHWM:"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count_listeners(yaml: &str) -> usize {
    // Listener entries are `- name: X` or `- { name: X` under `listeners:` until the next
    // top-level key.
    let mut in_listeners = false;
    let mut n = 0;
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_listeners = line.starts_with("listeners:");
            continue;
        }
        let t = line.trim_start();
        if in_listeners && (t.starts_with("- name:") || t.starts_with("- { name:")) {
            n += 1;
        }
    }
    n
}

fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains(" listening ") || !line.contains("listener=") {
        return None;
    }
    let name = field(line, "listening", "listener")?;
    let addr = field(line, "listening", "address")?.parse().ok()?;
    Some((name, addr))
}

/// The value of `key=` on a log line containing `marker`.
fn field(line: &str, marker: &str, key: &str) -> Option<String> {
    if !line.contains(marker) {
        return None;
    }
    let pat = format!("{key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

/// A hyper client for HTTP/1.1.
pub fn h1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A hyper client speaking HTTP/2 with prior knowledge (h2c).
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A finished response: status, headers, body.
pub struct Got {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Trailers, if any.
    pub trailers: Option<HeaderMap>,
}

impl Got {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request with a client and collects the response.
pub async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Got {
    let resp = client.request(req).await.expect("request failed");
    collect(resp).await
}

/// Collects a response.
pub async fn collect(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// GET with HTTP/1.1.
pub async fn get(url: &str) -> Got {
    send(
        &h1_client(),
        Request::get(url).body(Full::default()).expect("request"),
    )
    .await
}

/// A request builder shortcut.
pub fn req(method: &str, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

/// Runs `curl` with args; returns (exit code, stdout, stderr).
pub fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `openssl s_client -connect <addr>` with `args`, writing `input` to it and then
/// closing its stdin (without `-ign_eof` it quits at that point; with it, it reads until the
/// server closes). Returns the exit code and stdout and stderr together (the session summary,
/// `New`/`Reused`, alerts).
pub fn s_client(addr: SocketAddr, args: &[&str], input: &[u8]) -> (i32, String) {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().expect("stdin");
    // s_client may be gone already (a refused handshake): a failed write is not an error.
    let _ = stdin.write_all(input);
    drop(stdin);
    let out = child.wait_with_output().expect("openssl s_client");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Replaces `path` by writing a temporary file beside it and renaming it over (what
/// deployment tools and Kubernetes do), so a reader never sees half a file.
pub fn write_atomically(path: &std::path::Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// A running in-process upstream server.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// `host:port` for configs.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an HTTP/1.1 + h2c upstream on an ephemeral loopback port with `handler`.
pub async fn upstream<F, Fut, B>(handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    upstream_on("127.0.0.1", handler).await
}

/// Like [`upstream`], on another loopback address (`127.0.0.2`, ...), for tests that tell
/// targets apart by address.
pub async fn upstream_on<F, Fut, B>(ip: &str, handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind((ip, 0)).await.expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        connections,
        task,
    }
}

/// What a [`GrpcRoutes`] call returns: the HTTP response of the gRPC call.
pub type GrpcFuture = tonic::codegen::BoxFuture<http::Response<tonic::body::Body>, Infallible>;

/// A hand-written gRPC service for tests (what tonic-build would generate): its full name and
/// how it answers each call, by path.
pub trait GrpcRoutes: Clone + Send + Sync + 'static {
    /// The service name, `package.Service`.
    const NAME: &'static str;
    /// Answers one call.
    fn route(&mut self, req: http::Request<tonic::body::Body>) -> GrpcFuture;
}

/// Adapts a [`GrpcRoutes`] to the service tonic's server takes.
#[derive(Clone)]
struct GrpcService<R>(R);

impl<R: GrpcRoutes> tonic::server::NamedService for GrpcService<R> {
    const NAME: &'static str = R::NAME;
}

impl<R: GrpcRoutes> tonic::codegen::Service<http::Request<tonic::body::Body>> for GrpcService<R> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = GrpcFuture;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.0.route(req)
    }
}

/// The answer to a method the service does not have: status Unimplemented.
pub fn grpc_unimplemented() -> GrpcFuture {
    Box::pin(async { Ok(tonic::Status::unimplemented("no such method").into_http()) })
}

/// Serves `routes` with tonic's own server on an ephemeral loopback port; returns its address
/// and the server task.
pub async fn start_grpc_upstream<R: GrpcRoutes>(
    routes: R,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(GrpcService(routes))
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, task)
}

/// An upstream that answers every request with a JSON echo of method, path, query, headers
/// and body length (like `portcullis echo`), plus a `x-upstream` header naming itself.
pub async fn echo_upstream(name: &'static str) -> Upstream {
    upstream(move |req: Request<Incoming>| async move {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut headers = serde_json::Map::new();
        for (k, v) in &parts.headers {
            headers.insert(
                k.as_str().to_owned(),
                serde_json::Value::String(v.to_str().unwrap_or("").to_owned()),
            );
        }
        let out = serde_json::json!({
            "upstream": name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body_length": body.len(),
        });
        Response::builder()
            .header("content-type", "application/json")
            .header("x-upstream", name)
            .body(Full::new(Bytes::from(out.to_string())))
            .expect("response")
    })
    .await
}

/// Retries `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal config: one `http` listener, admin, and the given upstreams/routes YAML appended.
pub fn config(rest: &str) -> String {
    format!(
        "listeners:\n  - name: http\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nruntime:\n  watch_interval: 200ms\n{rest}"
    )
}

/// Sums the series of metric `name` whose labels include every `(label, value)` of `want`
/// (Prometheus text format); `None` when no series matches.
pub fn metric_sum(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let matches = want
            .iter()
            .all(|(k, v)| labels.split(',').any(|p| p == format!("{k}=\"{v}\"")));
        if matches && let Ok(v) = value.trim().parse::<f64>() {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// Runs `portcullis validate -c` on `yaml`, written to a fresh directory that `prepare` may
/// fill first (certificates, key files). Returns the exit code, stdout and stderr.
pub fn validate_in(yaml: &str, prepare: impl FnOnce(&std::path::Path)) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    prepare(dir.path());
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = Command::new(bin())
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .expect("run validate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `validate_in` with nothing beside the config.
pub fn validate(yaml: &str) -> (i32, String, String) {
    validate_in(yaml, |_| {})
}

/// The admin listener's `/metrics` text (asserting a 200).
pub async fn metrics_text(gw: &Gateway) -> String {
    let got = get(&gw.admin_url("/metrics")).await;
    assert_eq!(got.status, 200);
    String::from_utf8(got.body.to_vec()).expect("metrics are UTF-8")
}

/// `promtool check metrics` on `text`. CI installs promtool (scripts/test.sh), so a missing
/// promtool is a failure, not a skip.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package `prometheus`; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads one HTTP/1.1 response (head and a Content-Length body) from a raw connection, up to
/// 10 s; returns what arrived as text.
pub fn read_response(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Writes `bytes` on a new connection to `addr` and reads one response.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(bytes).expect("write");
    read_response(&mut s)
}

/// Asserts a raw response is the contract's JSON error with `status` and `code`.
pub fn assert_json_error(resp: &str, status: &str, code: &str) {
    assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")), "{resp}");
    let (head, body) = resp.split_once("\r\n\r\n").expect("a head");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("\r\ncontent-type: application/json"),
        "{resp}"
    );
    let rid = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no x-request-id: {resp}"));
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(v["error"]["code"], code, "{resp}");
    assert_eq!(v["error"]["status"].to_string(), status, "{resp}");
    assert_eq!(v["error"]["request_id"], rid, "{resp}");
}
