//! Real stores for end-to-end tests, each on ephemeral loopback ports with its own temp data
//! dir and killed on drop: `etcd` (Debian's `etcd-server`), a Redis Cluster of three masters
//! from `redis-server`, and a TCP proxy a test can cut to disconnect one client.

#![allow(dead_code, clippy::disallowed_methods)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A single-member etcd on loopback.
pub struct Etcd {
    child: Option<Child>,
    /// Client port.
    pub port: u16,
    peer: u16,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Etcd {
        let mut e = Etcd {
            child: None,
            port: free_port(),
            peer: free_port(),
            dir: tempfile::tempdir().expect("tmp"),
        };
        e.restart();
        e
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// (Re)starts on the same ports and data dir; waits until it answers.
    pub fn restart(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(self.data())
            .args(["--name", "default"])
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            // A push of many objects is one transaction.
            .args(["--max-txn-ops", "10000"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (Debian etcd-server; scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ctl(&["endpoint", "health"]).0 != 0 {
            assert!(Instant::now() < deadline, "etcd did not start on {client}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (data kept).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server, deletes its data and starts it empty (new cluster id, revision 1).
    pub fn wipe(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.data());
        self.restart();
    }

    /// Runs `etcdctl` against this server: (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url(), "--dial-timeout", "1s"])
            .args(args)
            .output()
            .expect("etcdctl is installed (Debian etcd-client)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let (code, out, err) = self.ctl(&["endpoint", "status", "-w", "json"]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v[0]["Status"]["header"]["revision"]
            .as_i64()
            .expect("revision")
    }

    /// Compacts the history up to the current revision.
    pub fn compact(&self) {
        let rev = self.revision().to_string();
        let (code, _, err) = self.ctl(&["compact", &rev]);
        assert_eq!(code, 0, "compaction failed: {err}");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters on loopback (no replicas).
pub struct RedisCluster {
    children: Vec<Child>,
    /// Ports of the masters.
    pub ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts three `redis-server --cluster-enabled yes` and joins them with
    /// `redis-cli --cluster create`; waits until the cluster state is ok.
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("tmp");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut children = Vec::new();
        for p in &ports {
            let d = dir.path().join(p.to_string());
            std::fs::create_dir_all(&d).expect("dir");
            children.push(
                Command::new("redis-server")
                    .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                    ])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&d)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server is installed"),
            );
        }
        let c = RedisCluster {
            children,
            ports,
            dir,
        };
        for p in &c.ports {
            wait_until(Duration::from_secs(10), || {
                c.cli(*p, &["ping"]).trim() == "PONG"
            });
        }
        let nodes: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.push("--cluster-yes");
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        wait_until(Duration::from_secs(20), || {
            c.ports
                .iter()
                .all(|p| c.cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
        });
        c
    }

    /// `redis://127.0.0.1:PORT` of each master.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// `redis-cli -p PORT ARGS...` output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys matching `pattern` on each master.
    pub fn keys_per_master(&self, pattern: &str) -> Vec<usize> {
        self.ports
            .iter()
            .map(|p| {
                self.cli(*p, &["--scan", "--pattern", pattern])
                    .lines()
                    .count()
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP proxy on loopback to `target`; `cut` drops every connection and refuses new ones
/// until `restore`, to disconnect one client from a server the others still reach.
pub struct CutProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (o, g) = (open.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let (o, g) = (o.clone(), g.clone());
                let born = g.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let watch = async {
                        while o.load(Ordering::SeqCst) && g.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = watch => {}
                    }
                });
            }
        });
        CutProxy {
            addr,
            open,
            generation,
            task,
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One Redis master watched by one Redis Sentinel (`redis-server --sentinel`), as master `mymaster`.
pub struct RedisSentinel {
    children: Vec<Child>,
    /// The master's port.
    pub master_port: u16,
    /// The sentinel's port.
    pub sentinel_port: u16,
    dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// Starts the master and the sentinel; waits until the sentinel knows the master.
    pub fn start() -> RedisSentinel {
        let dir = tempfile::tempdir().expect("tmp");
        let (master_port, sentinel_port) = (free_port(), free_port());
        let master = Command::new("redis-server")
            .args(["--port", &master_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n",
                dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let s = RedisSentinel {
            children: vec![master, sentinel],
            master_port,
            sentinel_port,
            dir,
        };
        wait_until(Duration::from_secs(10), || {
            s.cli(
                sentinel_port,
                &["sentinel", "get-master-addr-by-name", "mymaster"],
            )
            .contains(&master_port.to_string())
        });
        s
    }

    /// `redis://127.0.0.1:PORT` of the sentinel.
    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// `redis-cli -p PORT ARGS...` output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
