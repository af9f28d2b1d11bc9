//! The key layout of the shared config in etcd, and the encoding of its values. Pure: the
//! gateway does the I/O. Under a prefix `P` (default `/portcullis`):
//!
//! | key | value |
//! |---|---|
//! | `P/generation` | the generation, a decimal number bumped by every change |
//! | `P/upstreams/NAME`, `P/routes/NAME`, `P/plugins/NAME`, `P/policies/NAME` | one object, JSON |
//! | `P/order/routes`, `P/order/policies` | JSON list of names: the file order |
//! | `P/history/GENERATION` (20 digits) | a [`HistoryEntry`], JSON |
//! | `P/nodes/ID` | a [`NodeStatus`], JSON, on the node's lease |
//!
//! A change writes its objects, the order keys, the new generation and its history entry in
//! one transaction that compares the generation key's revision (compare-and-swap).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Kind, SharedDoc, canonical};
use crate::error::ConfigError;

/// History entries kept in the store (older ones are deleted by the change that passes it).
pub const HISTORY_KEEP: u64 = 100;

/// Keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKey {
    /// The generation counter.
    Generation,
    /// A shared object.
    Object(Kind, String),
    /// The order of a list kind.
    Order(Kind),
    /// A history entry.
    History(u64),
    /// A node's status.
    Node(String),
    /// Anything else (left alone).
    Other,
}

impl Layout {
    /// The layout under `prefix` (a trailing `/` is dropped; `/` is added in front if missing).
    pub fn new(prefix: &str) -> Layout {
        let p = prefix.trim_end_matches('/');
        let prefix = if p.starts_with('/') {
            p.to_owned()
        } else {
            format!("/{p}")
        };
        Layout { prefix }
    }

    /// The prefix, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every key of the layout starts with this (`P/`).
    pub fn range(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// `P/generation`.
    pub fn generation_key(&self) -> String {
        format!("{}/generation", self.prefix)
    }

    /// `P/SECTION/NAME`.
    pub fn object_key(&self, kind: Kind, name: &str) -> String {
        format!("{}/{}/{name}", self.prefix, kind.section())
    }

    /// `P/order/SECTION`.
    pub fn order_key(&self, kind: Kind) -> String {
        format!("{}/order/{}", self.prefix, kind.section())
    }

    /// `P/history/` followed by the generation in 20 digits, so keys sort by generation.
    pub fn history_key(&self, generation: u64) -> String {
        format!("{}/history/{generation:020}", self.prefix)
    }

    /// `P/history/`.
    pub fn history_prefix(&self) -> String {
        format!("{}/history/", self.prefix)
    }

    /// `P/nodes/ID`.
    pub fn node_key(&self, id: &str) -> String {
        format!("{}/nodes/{id}", self.prefix)
    }

    /// `P/nodes/`.
    pub fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// Classifies a key.
    pub fn parse(&self, key: &str) -> StoreKey {
        let Some(rest) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return StoreKey::Other;
        };
        if rest == "generation" {
            return StoreKey::Generation;
        }
        let Some((head, tail)) = rest.split_once('/') else {
            return StoreKey::Other;
        };
        match head {
            "history" => tail.parse().map_or(StoreKey::Other, StoreKey::History),
            "nodes" if !tail.is_empty() => StoreKey::Node(tail.to_owned()),
            "order" => Kind::from_section(tail)
                .filter(|k| k.is_list())
                .map_or(StoreKey::Other, StoreKey::Order),
            _ => match Kind::from_section(head) {
                Some(kind) if valid_name(tail) => StoreKey::Object(kind, tail.to_owned()),
                _ => StoreKey::Other,
            },
        }
    }

    /// Whether a key holds part of the shared config (objects, order, generation): what a
    /// node reloads for.
    pub fn is_config_key(&self, key: &str) -> bool {
        matches!(
            self.parse(key),
            StoreKey::Generation | StoreKey::Object(..) | StoreKey::Order(_)
        )
    }

    /// The keys and values that hold `doc` (objects and order keys; not the generation).
    pub fn encode(&self, doc: &SharedDoc) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = doc
            .objects()
            .into_iter()
            .map(|(kind, name, v)| (self.object_key(kind, name), v.to_string()))
            .collect();
        for kind in [Kind::Route, Kind::Policy] {
            let order = doc.order(kind);
            if !order.is_empty() {
                out.push((self.order_key(kind), Value::from(order).to_string()));
            }
        }
        out
    }

    /// Rebuilds the shared document from the keys under the prefix. A value that is not JSON,
    /// or a list object whose `name` differs from its key, is an error naming the key: the
    /// whole document is then refused, never served with a hole in it.
    pub fn decode<'a>(
        &self,
        kvs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<StoreDoc, Vec<ConfigError>> {
        let mut doc = SharedDoc::default();
        let mut generation = 0;
        let mut orders: Vec<(Kind, Vec<String>)> = Vec::new();
        let mut errors = Vec::new();
        let mut bad = |key: &str, msg: String| {
            let mut e = ConfigError::new("", msg);
            e.file = Some(format!("etcd:{key}").into());
            errors.push(e);
        };
        let mut lists: Vec<(Kind, String, Value)> = Vec::new();
        for (key, value) in kvs {
            match self.parse(key) {
                StoreKey::Generation => match std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    Some(g) => generation = g,
                    None => bad(key, "the generation is not a number".into()),
                },
                StoreKey::Object(kind, name) => match serde_json::from_slice::<Value>(value) {
                    Ok(v) if v.is_object() || (kind == Kind::Plugin && !v.is_null()) => {
                        if kind.is_list() {
                            match v.get("name") {
                                Some(Value::String(n)) if *n != name => bad(
                                    key,
                                    format!("its name `{n}` differs from the key's `{name}`"),
                                ),
                                _ => lists.push((kind, name, canonical(&v))),
                            }
                        } else {
                            doc.set(kind, &name, canonical(&v));
                        }
                    }
                    Ok(_) => bad(key, format!("a {kind} must be a JSON object")),
                    Err(e) => bad(key, format!("not valid JSON: {e}")),
                },
                StoreKey::Order(kind) => match serde_json::from_slice::<Vec<String>>(value) {
                    Ok(names) => orders.push((kind, names)),
                    Err(e) => bad(key, format!("not a JSON list of names: {e}")),
                },
                _ => {}
            }
        }
        // List objects: in the stored order, then any others (written without an order entry,
        // by etcdctl for instance) by name.
        lists.sort_by(|a, b| a.1.cmp(&b.1));
        for kind in [Kind::Route, Kind::Policy] {
            let order = orders
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, o)| o.as_slice())
                .unwrap_or(&[]);
            let rank = |n: &str| order.iter().position(|x| x == n).unwrap_or(usize::MAX);
            let mut mine: Vec<&(Kind, String, Value)> =
                lists.iter().filter(|(k, _, _)| *k == kind).collect();
            mine.sort_by_key(|(_, n, _)| rank(n));
            for (_, name, v) in mine {
                doc.set(kind, name, v.clone());
            }
        }
        if errors.is_empty() {
            Ok(StoreDoc { doc, generation })
        } else {
            Err(errors)
        }
    }
}

/// The shared document as read from the store, with its generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreDoc {
    /// The objects.
    pub doc: SharedDoc,
    /// The generation key's value (0 when absent).
    pub generation: u64,
}

/// Whether `name` can be an object name: a key segment without `/`, spaces or control
/// characters, at most 253 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| !c.is_control() && c != '/' && !c.is_whitespace())
}

/// One change as recorded under `P/history/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The generation it created.
    pub generation: u64,
    /// Unix time (seconds) of the commit, as the writer's clock saw it.
    pub time: f64,
    /// Who made it (`--author`, `$USER`, the admin token's name).
    pub author: String,
    /// Why.
    #[serde(default)]
    pub message: String,
    /// How: `push`, `admin`, `rollback`.
    pub via: String,
    /// Hash of the resulting shared document.
    pub hash: String,
    /// Summary line (`1 added, 2 changed, 0 removed`).
    pub summary: String,
    /// Per object: `+route a`, `~upstream b`, `-plugin c`.
    #[serde(default)]
    pub changes: Vec<String>,
    /// The whole shared document after the change (what `rollback --to` writes back).
    pub config: Value,
}

/// A node's status under `P/nodes/ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub id: String,
    /// Listener addresses by name.
    #[serde(default)]
    pub listeners: std::collections::BTreeMap<String, String>,
    /// The admin API address.
    #[serde(default)]
    pub admin: String,
    /// Its zone (`PORTCULLIS_ZONE`), if set.
    #[serde(default)]
    pub zone: Option<String>,
    /// Portcullis version.
    pub version: String,
    /// Generation it serves.
    pub generation: u64,
    /// Hash of the shared document it serves.
    pub hash: String,
    /// Unix time it applied that config.
    pub applied_at: f64,
    /// Unix time of this status.
    pub last_seen: f64,
    /// The store revision it has seen.
    #[serde(default)]
    pub revision: i64,
    /// The last change it refused, if any: generation and reason.
    #[serde(default)]
    pub rejected: Option<String>,
}
