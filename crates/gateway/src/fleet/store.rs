//! The etcd side of the fleet: connect, read the whole prefix at one revision, and commit a
//! change as one transaction guarded by the generation key (compare-and-swap). Used by the
//! node's watch loop, the admin API's writes and `portcullis config push|rollback`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    TlsOptions, Txn, TxnOp,
};
use portcullis_config::shared::diff::{Diff, brief_line};
use portcullis_config::shared::etcd::{HISTORY_KEEP, HistoryEntry, Layout, StoreDoc, StoreKey};
use portcullis_config::{ConfigErrors, EtcdSource, SharedDoc};

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd could not be reached or answered with an error.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A TLS file could not be read.
    #[error("etcd TLS: cannot read {0}: {1}")]
    Tls(String, std::io::Error),
    /// The store moved on since it was read (compare-and-swap failed).
    #[error(
        "the store changed since it was read (generation {expected} is no longer current); read it again and retry"
    )]
    Moved {
        /// The generation the change was based on.
        expected: u64,
    },
}

impl StoreError {
    /// Whether etcd said the credentials are not (or no longer) valid.
    pub fn unauthenticated(&self) -> bool {
        matches!(self, StoreError::Etcd(etcd_client::Error::GRpcStatus(s))
            if s.code() == tonic::Code::Unauthenticated)
    }
}

/// How to reach the store.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// User and password.
    pub credentials: Option<(String, String)>,
    /// CA bundle file.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and key files.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl From<&EtcdSource> for Endpoint {
    fn from(e: &EtcdSource) -> Self {
        Endpoint {
            endpoints: e.endpoints.clone(),
            credentials: e.credentials.clone(),
            ca: e.ca.clone(),
            client_cert: e.client_cert.clone(),
        }
    }
}

/// The whole prefix as read at one revision.
#[derive(Debug, Clone)]
pub struct StoreRead {
    /// Config keys (objects, order, generation) and their values.
    pub config: BTreeMap<String, Vec<u8>>,
    /// The store's revision of the read.
    pub revision: i64,
    /// The etcd cluster's id.
    pub cluster_id: u64,
    /// `mod_revision` of the generation key (0 when absent): what a change compares.
    pub generation_rev: i64,
}

/// A connected store under one prefix.
#[derive(Clone)]
pub struct Store {
    client: Client,
    /// Keys under the prefix.
    pub layout: Layout,
}

/// A change to commit.
pub struct Change<'a> {
    /// Who.
    pub author: &'a str,
    /// Why.
    pub message: &'a str,
    /// `push`, `admin`, `rollback`.
    pub via: &'a str,
}

/// What a committed change did.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The new generation.
    pub generation: u64,
    /// Its history entry.
    pub entry: HistoryEntry,
}

impl Store {
    /// Connects (lazily: an unreachable store fails the first call, not this one, unless it
    /// needs authentication).
    pub async fn connect(ep: &Endpoint, prefix: &str) -> Result<Store, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((u, p)) = &ep.credentials {
            opts = opts.with_user(u.clone(), p.clone());
        }
        if ep.ca.is_some() || ep.client_cert.is_some() {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| StoreError::Tls(p.display().to_string(), e))
            };
            let mut tls = TlsOptions::new();
            if let Some(ca) = &ep.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let Some((c, k)) = &ep.client_cert {
                tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&ep.endpoints, Some(opts)).await?;
        Ok(Store {
            client,
            layout: Layout::new(prefix),
        })
    }

    /// Reads every config key under the prefix at one revision.
    pub async fn read(&self) -> Result<StoreRead, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(self.layout.range(), Some(GetOptions::new().with_prefix()))
            .await?;
        let header = resp.header().cloned();
        let mut config = BTreeMap::new();
        let mut generation_rev = 0;
        for item in resp.kvs() {
            let Ok(key) = item.key_str() else { continue };
            if !self.layout.is_config_key(key) {
                continue;
            }
            if self.layout.parse(key) == StoreKey::Generation {
                generation_rev = item.mod_revision();
            }
            config.insert(key.to_owned(), item.value().to_vec());
        }
        Ok(StoreRead {
            config,
            revision: header.as_ref().map_or(0, |h| h.revision()),
            cluster_id: header.as_ref().map_or(0, |h| h.cluster_id()),
            generation_rev,
        })
    }

    /// The current revision and cluster id (a cheap read of the generation key).
    pub async fn probe(&self) -> Result<(i64, u64), StoreError> {
        let resp = self
            .client
            .kv_client()
            .get(
                self.layout.generation_key(),
                Some(GetOptions::new().with_keys_only()),
            )
            .await?;
        let h = resp.header();
        Ok((
            h.map_or(0, |h| h.revision()),
            h.map_or(0, |h| h.cluster_id()),
        ))
    }

    /// Writes `new` as the whole shared config, replacing what `read` saw: changed and new
    /// objects put, missing ones deleted, the generation bumped and a history entry written,
    /// in one transaction that fails if the generation key moved since `read`.
    pub async fn commit(
        &self,
        read: &StoreRead,
        old: &StoreDoc,
        new: &SharedDoc,
        change: &Change<'_>,
    ) -> Result<Committed, StoreError> {
        let layout = &self.layout;
        let wanted: BTreeMap<String, String> = layout.encode(new).into_iter().collect();
        let mut ops = Vec::new();
        for (k, v) in &wanted {
            let same = read.config.get(k).is_some_and(|cur| {
                serde_json::from_slice::<serde_json::Value>(cur).ok()
                    == serde_json::from_str::<serde_json::Value>(v).ok()
            });
            if !same {
                ops.push(TxnOp::put(k.as_str(), v.as_str(), None));
            }
        }
        for k in read.config.keys() {
            if !wanted.contains_key(k) && layout.parse(k) != StoreKey::Generation {
                ops.push(TxnOp::delete(k.as_str(), None));
            }
        }
        let generation = old.generation + 1;
        let diff = Diff::between(&old.doc, new);
        let entry = HistoryEntry {
            generation,
            time: unix_now(),
            author: change.author.to_owned(),
            message: change.message.to_owned(),
            via: change.via.to_owned(),
            hash: new.hash(),
            summary: diff.summary(),
            changes: diff.brief(),
            config: new.to_value(),
        };
        ops.push(TxnOp::put(
            layout.generation_key(),
            generation.to_string(),
            None,
        ));
        ops.push(TxnOp::put(
            layout.history_key(generation),
            serde_json::to_string(&entry).unwrap_or_default(),
            None,
        ));
        if generation > HISTORY_KEEP {
            ops.push(TxnOp::delete(
                layout.history_key(0),
                Some(
                    DeleteOptions::new().with_range(layout.history_key(generation - HISTORY_KEEP)),
                ),
            ));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                layout.generation_key(),
                CompareOp::Equal,
                read.generation_rev,
            )])
            .and_then(ops);
        let resp = self.client.kv_client().txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::Moved {
                expected: old.generation,
            });
        }
        tracing::info!(
            generation,
            author = change.author,
            via = change.via,
            changes = %brief_line(&diff),
            "shared config committed"
        );
        Ok(Committed { generation, entry })
    }

    /// History entries, oldest first.
    pub async fn history(&self) -> Result<Vec<HistoryEntry>, StoreError> {
        let resp = self
            .client
            .kv_client()
            .get(
                self.layout.history_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }

    /// The history entry of one generation.
    pub async fn history_entry(&self, generation: u64) -> Result<Option<HistoryEntry>, StoreError> {
        let resp = self
            .client
            .kv_client()
            .get(self.layout.history_key(generation), None)
            .await?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }

    /// Node status records.
    pub async fn nodes(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let resp = self
            .client
            .kv_client()
            .get(
                self.layout.nodes_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| Some((kv.key_str().ok()?.to_owned(), kv.value().to_vec())))
            .collect())
    }

    /// The client, for watches and leases.
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

/// Decodes a read into the shared document, errors naming their keys.
pub fn decode(layout: &Layout, read: &StoreRead) -> Result<StoreDoc, ConfigErrors> {
    layout
        .decode(read.config.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
        .map_err(ConfigErrors)
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    crate::control::unix_seconds(SystemTime::now())
}
