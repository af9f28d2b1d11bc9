//! The `portcullis` binary: `run`, `validate`, `echo`, `version`, `config`.

use std::io::Write;

/// With the `mimalloc` feature: mimalloc instead of the system allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// With the `jemalloc` feature (the default): jemalloc instead of the system allocator.
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

mod admin;
mod body;
mod config_cli;
mod config_thread;
mod control;
mod echo;
mod errors;
mod fleet;
mod history;
mod lints;
mod live;
mod logging;
mod metrics;
mod mirror;
mod otel;
mod policy;
mod proxy;
mod server;
mod slo;
mod snapshot;
mod state;
mod suspect;
mod telemetry;
mod topology;

use control::Control;
use metrics::Metrics;
use snapshot::Snapshot;
use state::ConfigSource;

const QUICKSTART: &str = include_str!("quickstart.yaml");

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An API gateway",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (./portcullis.yaml, or the embedded quick-start when absent).
    Run {
        /// Config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Check a config and run the lint policies; exit 1 when invalid.
    Validate {
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the echo upstream.
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
    },
    /// Print version and build info.
    Version,
    /// Manage the shared config of a fleet in etcd: push, diff, pull, history, rollback.
    Config {
        #[command(subcommand)]
        cmd: config_cli::ConfigCmd,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.cmd {
        Cmd::Run { config } => run(config),
        Cmd::Validate { config } => return validate(&config),
        Cmd::Echo { listen } => echo_main(listen),
        Cmd::Config { cmd } => return config_cli::main(cmd),
        Cmd::Version => {
            println!(
                "portcullis {} ({} {}, rustls with ring)",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    logging::init();
}

fn validate(path: &Path) -> ExitCode {
    let cfg = match portcullis_config::load_file(path) {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    for w in &cfg.warnings {
        eprintln!("{w}");
    }
    let (routes, upstreams, warnings) = (cfg.routes.len(), cfg.upstreams.len(), cfg.warnings.len());
    // Plugin configs and certificate files are checked by building the runtime snapshot.
    let warnings = match Snapshot::build(cfg, None, &Metrics::new()) {
        Ok(snap) => {
            for w in &snap.lints {
                eprintln!("{w}");
            }
            warnings + snap.lints.len()
        }
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    println!(
        "{}: ok ({routes} routes, {upstreams} upstreams, {warnings} warnings)",
        path.display()
    );
    ExitCode::SUCCESS
}

fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if workers > 1 {
            b.worker_threads(workers);
        }
        b.enable_all().build()
    };
    rt.context("cannot start the async runtime")
}

fn echo_main(listen: SocketAddr) -> anyhow::Result<()> {
    runtime(1)?.block_on(async {
        let (l, addr) = echo::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        info!(address = %addr, "echo upstream listening");
        echo::serve(l).await;
        Ok(())
    })
}

fn run(config: Option<PathBuf>) -> anyhow::Result<()> {
    let mut echo_listener = None;
    let source = match config {
        Some(p) => ConfigSource::File(p),
        None if Path::new("portcullis.yaml").is_file() => {
            ConfigSource::File("portcullis.yaml".into())
        }
        None => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")
                .context("cannot start the echo upstream")?;
            let addr = l.local_addr()?;
            l.set_nonblocking(true)?;
            echo_listener = Some(l);
            ConfigSource::Embedded(QUICKSTART.replace("${PORTCULLIS_ECHO_ADDR}", &addr.to_string()))
        }
    };
    // Loaded on the config thread, like every later reload (see `config_thread`).
    let src = source.clone();
    let cfg = config_thread::block_on(move || control::load(&src, None))?
        .map_err(|errs| anyhow::anyhow!("invalid config:\n{errs}"))?;
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let rt = runtime(cfg.runtime.worker_threads)?;
    rt.block_on(async move {
        // Signal handlers first: a SIGTERM that arrives while starting must drain, not kill.
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let metrics = Arc::new(Metrics::new());
        let fleet = cfg.etcd.clone().map(|e| Arc::new(fleet::Fleet::new(e)));
        let (snap, ready, meta, watch_state) = match &fleet {
            Some(f) => fleet::first_snapshot(f, &source, &metrics)
                .await
                .map_err(|errs| anyhow::anyhow!("invalid config:\n{errs}"))?,
            None => {
                let m = metrics.clone();
                let src = source.clone();
                config_thread::run(move || {
                    let meta = match &src {
                        ConfigSource::File(p) => history::file_meta(p),
                        ConfigSource::Embedded(_) => history::Meta {
                            source: "<quick-start>".into(),
                            via: "embedded".into(),
                            ..Default::default()
                        },
                    };
                    Snapshot::build(cfg, None, &m).map(|s| (s, true, meta, None))
                })
                .await?
                .map_err(|errs| anyhow::anyhow!("invalid config:\n{errs}"))?
            }
        };
        let admin_addr = snap.config.admin.address;
        let quickstart = echo_listener.is_some();
        if let Some(l) = echo_listener {
            let l = tokio::net::TcpListener::from_std(l)?;
            info!(address = %l.local_addr()?, "built-in echo upstream listening");
            tokio::spawn(echo::serve(l));
        }
        let control = Control::start(snap, source, metrics, fleet.clone(), ready, meta).await?;
        let admin_listener = tokio::net::TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("cannot bind the admin API on {admin_addr}"))?;
        let _ = control.admin_addr.set(admin_listener.local_addr()?);
        info!(address = %admin_listener.local_addr()?, "admin listening");
        let app = admin::router(control.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(admin_listener, app).await {
                error!(error = %e, "admin API stopped");
            }
        });
        if quickstart {
            let addrs = control.addresses().await;
            if let Some(http) = addrs.get("http") {
                // Not eprintln!: a closed stderr must never bring the gateway down.
                let _ = writeln!(
                    std::io::stderr(),
                    "\nPortcullis quick-start is running (no portcullis.yaml found). Try:\n  curl http://{http}/hello\n  curl http://{http}/api/users/7?debug=1\n  curl http://{admin_addr}/admin/routes\n  curl http://{admin_addr}/metrics\n"
                );
            }
        }
        tokio::spawn(control.clone().watch_file());
        tokio::spawn(policy::run(control.shared.clone()));
        tokio::spawn(control.clone().watch_tls_files());
        if let Some(f) = fleet {
            info!(node = %f.node_id, prefix = %f.layout.prefix(), "shared config from etcd");
            tokio::spawn(fleet::watch::run(control.clone(), f.clone(), watch_state));
            tokio::spawn(fleet::node::run(control.clone(), f));
        }

        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let _ = control.reload("SIGHUP").await;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        let deadline = control.shared.snapshot.load().config.runtime.shutdown_timeout;
        if control.shutdown(deadline).await {
            info!("all connections drained; exiting");
        } else {
            warn!(
                open = control.shared.drain.live(),
                "shutdown deadline passed with connections still open; exiting"
            );
        }
        Ok(())
    })
}
