//! `portcullis config push|diff|pull|history|rollback`: the shared config in etcd, managed
//! from files the way GitOps pipelines do (validate, diff in review, push on merge).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use portcullis_config::shared::diff::{Diff, Op};
use portcullis_config::shared::etcd::StoreDoc;
use portcullis_config::shared::yaml::to_yaml;
use portcullis_config::{ConfigErrors, SharedDoc};

use crate::fleet::store::{Change, Endpoint, Store, StoreError, StoreRead, decode};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// The `config` subcommands.
#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Validate FILE's shared part and write it to the store as one atomic change.
    Push {
        /// File with upstreams, routes, plugins, policies.
        #[arg(short, long)]
        config: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Who makes the change (default: $USER).
        #[arg(long)]
        author: Option<String>,
        /// Why (shown in the history).
        #[arg(short, long, default_value = "")]
        message: String,
        /// Also remove objects that are in the store but not in FILE.
        #[arg(long)]
        prune: bool,
        /// Print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Refuse unless the store is still at this generation (the one a reviewed diff saw).
        #[arg(long)]
        if_generation: Option<u64>,
    },
    /// What push would change; exit 0 when the store equals FILE, 3 when they differ.
    Diff {
        /// File with upstreams, routes, plugins, policies.
        #[arg(short, long)]
        config: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The shared config in the store, as YAML that push accepts unchanged.
    Pull {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Every change made through push, the admin API or rollback, newest first.
    History {
        #[command(flatten)]
        store: StoreArgs,
        /// Print the entries as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the shared config of GENERATION back as a new change.
    Rollback {
        /// The generation to return to.
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        store: StoreArgs,
        /// Who makes the change (default: $USER).
        #[arg(long)]
        author: Option<String>,
        /// Why.
        #[arg(short, long, default_value = "")]
        message: String,
    },
}

/// Where the store is.
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// etcd client URLs, comma-separated.
    #[arg(long, env = "PORTCULLIS_ETCD", value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// Key prefix of the fleet.
    #[arg(long, env = "PORTCULLIS_ETCD_PREFIX", default_value = "/portcullis")]
    prefix: String,
    /// etcd user (with --etcd-password).
    #[arg(long, env = "PORTCULLIS_ETCD_USER")]
    etcd_user: Option<String>,
    /// etcd password.
    #[arg(long, env = "PORTCULLIS_ETCD_PASSWORD", hide_env_values = true)]
    etcd_password: Option<String>,
}

/// Failure of a command: the message and the exit code.
struct Fail(String, u8);

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail(e.to_string(), 1)
    }
}

/// Runs a `config` subcommand.
pub fn main(cmd: ConfigCmd) -> ExitCode {
    match run(cmd) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(msg, code)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(cmd: ConfigCmd) -> Result<u8, Fail> {
    match cmd {
        ConfigCmd::Push {
            config,
            store,
            author,
            message,
            prune,
            dry_run,
            if_generation,
        } => {
            let file = load(&config)?;
            block_on(async {
                let (st, read, old) = open(&store).await?;
                let result = if prune {
                    file.clone()
                } else {
                    old.doc.overlay(&file)
                };
                if result != file {
                    check(&result, &format!("etcd:{}", st.layout.prefix()))
                        .map_err(|e| Fail(format!("the result would be invalid:\n{e}"), 1))?;
                }
                let diff = Diff::between(&old.doc, &result);
                println!(
                    "store {} at generation {}",
                    st.layout.prefix(),
                    old.generation
                );
                print_diff(&diff, &Diff::between(&old.doc, &file), prune);
                if diff.is_empty() {
                    println!("nothing to push");
                    return Ok(0);
                }
                if dry_run {
                    println!("dry run: nothing written");
                    return Ok(0);
                }
                if let Some(g) = if_generation
                    && g != old.generation
                {
                    return Err(Fail(
                        format!(
                            "the store is at generation {}, not {g}: it changed since the diff; diff again",
                            old.generation
                        ),
                        1,
                    ));
                }
                let author = author.unwrap_or_else(default_author);
                let c = st
                    .commit(
                        &read,
                        &old,
                        &result,
                        &Change {
                            author: &author,
                            message: &message,
                            via: "push",
                        },
                    )
                    .await?;
                println!("pushed generation {} ({})", c.generation, c.entry.hash);
                Ok(0)
            })
        }
        ConfigCmd::Diff { config, store } => {
            let file = load(&config)?;
            block_on(async {
                let (st, _, old) = open(&store).await?;
                let diff = Diff::between(&old.doc, &file);
                println!(
                    "store {} at generation {}",
                    st.layout.prefix(),
                    old.generation
                );
                print_diff(&diff, &diff, true);
                Ok(if diff.is_empty() { 0 } else { 3 })
            })
        }
        ConfigCmd::Pull { store } => block_on(async {
            let st = connect(&store).await?;
            let read = st.read().await?;
            let doc = decode(&st.layout, &read)
                .map_err(|e| Fail(format!("the store holds invalid objects:\n{e}"), 1))?;
            print!("{}", to_yaml(&doc.doc.to_value()));
            Ok(0)
        }),
        ConfigCmd::History { store, json } => block_on(async {
            let st = connect(&store).await?;
            let mut entries = st.history().await?;
            entries.reverse();
            if json {
                for e in &mut entries {
                    portcullis_config::redact_value(&mut e.config);
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).unwrap_or_default()
                );
                return Ok(0);
            }
            if entries.is_empty() {
                println!("no history under {}", st.layout.prefix());
            }
            for e in entries {
                let time =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(e.time.max(0.0));
                println!(
                    "{:>6}  {}  {:<12} {:<8} {}{}",
                    e.generation,
                    humantime::format_rfc3339_seconds(time),
                    e.author,
                    e.via,
                    e.summary,
                    if e.message.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", e.message)
                    }
                );
                if !e.changes.is_empty() {
                    println!("        {}", e.changes.join(" "));
                }
            }
            Ok(0)
        }),
        ConfigCmd::Rollback {
            to,
            store,
            author,
            message,
        } => block_on(async {
            let st = connect(&store).await?;
            let entry = st.history_entry(to).await?.ok_or_else(|| {
                Fail(
                    format!(
                        "generation {to} is not in the history of {} (see `portcullis config history`)",
                        st.layout.prefix()
                    ),
                    1,
                )
            })?;
            let (doc, errs) = SharedDoc::from_value(&entry.config);
            if !errs.is_empty() {
                return Err(Fail(format!("history entry {to} is unreadable"), 1));
            }
            check(&doc, &format!("etcd:{}", st.layout.prefix())).map_err(|e| {
                Fail(
                    format!("generation {to} is not valid any more (refused):\n{e}"),
                    1,
                )
            })?;
            let read = st.read().await?;
            let old = lenient_decode(&st, &read);
            let diff = Diff::between(&old.doc, &doc);
            print_diff(&diff, &diff, true);
            if diff.is_empty() {
                println!("the store already holds generation {to}'s config");
                return Ok(0);
            }
            let author = author.unwrap_or_else(default_author);
            let message = if message.is_empty() {
                format!("rollback to generation {to}")
            } else {
                format!("rollback to generation {to}: {message}")
            };
            let c = st
                .commit(
                    &read,
                    &old,
                    &doc,
                    &Change {
                        author: &author,
                        message: &message,
                        via: "rollback",
                    },
                )
                .await?;
            println!(
                "rolled back to generation {to} as generation {}",
                c.generation
            );
            Ok(0)
        }),
    }
}

fn block_on(f: impl Future<Output = Result<u8, Fail>>) -> Result<u8, Fail> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail(format!("cannot start the async runtime: {e}"), 1))?;
    rt.block_on(f)
}

fn default_author() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Reads and validates FILE's shared part, plugins included.
fn load(path: &Path) -> Result<SharedDoc, Fail> {
    let (doc, cfg) = portcullis_config::load_shared_file(path).map_err(invalid)?;
    for w in &cfg.warnings {
        eprintln!("{w}");
    }
    let snap = Snapshot::build(cfg, None, &Metrics::new()).map_err(invalid)?;
    for w in &snap.lints {
        eprintln!("{w}");
    }
    Ok(doc)
}

/// Validates a shared document alone, plugins included. Blocking (reads plugin files).
pub fn check(doc: &SharedDoc, origin: &str) -> Result<(), ConfigErrors> {
    let cfg = portcullis_config::check_shared(doc, origin, Path::new("."))?;
    Snapshot::build(cfg, None, &Metrics::new()).map(|_| ())
}

fn invalid(e: ConfigErrors) -> Fail {
    Fail(format!("invalid config:\n{e}"), 1)
}

async fn connect(args: &StoreArgs) -> Result<Store, Fail> {
    let ep = Endpoint {
        endpoints: args
            .etcd
            .iter()
            .map(|u| {
                if u.contains("://") {
                    u.clone()
                } else {
                    format!("http://{u}")
                }
            })
            .collect(),
        credentials: args.etcd_user.clone().zip(args.etcd_password.clone()),
        ca: None,
        client_cert: None,
    };
    Store::connect(&ep, &args.prefix).await.map_err(|e| {
        Fail(
            format!("cannot reach etcd at {}: {e}", args.etcd.join(",")),
            1,
        )
    })
}

async fn open(args: &StoreArgs) -> Result<(Store, StoreRead, StoreDoc), Fail> {
    let st = connect(args).await?;
    let read = st.read().await.map_err(|e| {
        Fail(
            format!("cannot read etcd at {}: {e}", args.etcd.join(",")),
            1,
        )
    })?;
    let old = lenient_decode(&st, &read);
    Ok((st, read, old))
}

/// The store's document; invalid objects (written by hand) are reported and left out, so a
/// push can replace them.
fn lenient_decode(st: &Store, read: &StoreRead) -> StoreDoc {
    match decode(&st.layout, read) {
        Ok(d) => d,
        Err(errs) => {
            eprintln!("warning: the store holds invalid objects (a push replaces them):\n{errs}");
            let bad: Vec<String> = errs
                .0
                .iter()
                .filter_map(|e| e.file.as_ref())
                .map(|f| {
                    f.display()
                        .to_string()
                        .trim_start_matches("etcd:")
                        .to_owned()
                })
                .collect();
            st.layout
                .decode(
                    read.config
                        .iter()
                        .filter(|(k, _)| !bad.contains(k))
                        .map(|(k, v)| (k.as_str(), v.as_slice())),
                )
                .unwrap_or_default()
        }
    }
}

/// Prints the diff; removals that push would not make (no `--prune`) are marked as kept.
fn print_diff(diff: &Diff, against_file: &Diff, prune: bool) {
    if !diff.is_empty() {
        println!("{diff}");
    }
    if !prune {
        for o in against_file.objects.iter().filter(|o| o.op == Op::Removed) {
            println!(
                "  {} {}: only in the store, kept (--prune removes it)",
                o.kind, o.name
            );
        }
    }
    if diff.is_empty() {
        println!("no changes");
    }
}
