//! The shared part of a config: `upstreams`, `routes`, `plugins` and `policies`, the objects a
//! fleet of gateways serves alike. In file mode they sit in the node's file; with
//! `config_source.etcd` they come from the store, one object per key ([`etcd`]). The same
//! document type is what `portcullis config push|diff|pull` compare, what the change history
//! records, and what [`diff`] compares field by field.

pub mod diff;
pub mod etcd;
pub mod source;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::error::ConfigError;

/// A kind of shared object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An entry of `upstreams` (a map in the file).
    Upstream,
    /// An entry of `routes` (a list in the file, ordered).
    Route,
    /// A global plugin, an entry of `plugins` (a map).
    Plugin,
    /// An entry of `policies` (a list, ordered).
    Policy,
}

/// Every kind, in the order changes are listed.
pub const KINDS: [Kind; 4] = [Kind::Upstream, Kind::Route, Kind::Plugin, Kind::Policy];

impl Kind {
    /// The top-level key of the file: `upstreams`, `routes`, `plugins`, `policies`.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Upstream => "upstreams",
            Kind::Route => "routes",
            Kind::Plugin => "plugins",
            Kind::Policy => "policies",
        }
    }

    /// One object's kind in messages: `upstream`, `route`, `plugin`, `policy`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Upstream => "upstream",
            Kind::Route => "route",
            Kind::Plugin => "plugin",
            Kind::Policy => "policy",
        }
    }

    /// Whether the file holds this kind as an ordered list of objects with a `name`.
    pub fn is_list(self) -> bool {
        matches!(self, Kind::Route | Kind::Policy)
    }

    /// The kind whose section is `s`.
    pub fn from_section(s: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.section() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.singular())
    }
}

/// The shared objects of a config, keys sorted inside every object so two files that say the
/// same thing in another key order compare (and hash) equal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedDoc {
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, Value>,
    /// Routes in order, each with its `name` field.
    pub routes: Vec<(String, Value)>,
    /// Global plugin config by plugin name.
    pub plugins: BTreeMap<String, Value>,
    /// Policies in order, each with its `name` field.
    pub policies: Vec<(String, Value)>,
}

impl SharedDoc {
    /// Reads the shared sections of a config value (the whole file as JSON). Objects without a
    /// usable name are left out and reported; the config's own validation says more.
    pub fn from_value(v: &Value) -> (SharedDoc, Vec<ConfigError>) {
        let mut doc = SharedDoc::default();
        let mut errors = Vec::new();
        for kind in KINDS {
            let Some(section) = v.get(kind.section()) else {
                continue;
            };
            match (kind.is_list(), section) {
                (_, Value::Null) => {}
                (false, Value::Object(m)) => {
                    for (name, obj) in m {
                        doc.set(kind, name, canonical(obj));
                    }
                }
                (true, Value::Array(items)) => {
                    // Names seen so far: a set, not a search of the list, so 10,000 routes
                    // read in linear time.
                    let mut seen = std::collections::HashSet::with_capacity(items.len());
                    for (i, obj) in items.iter().enumerate() {
                        let path = || format!("{}[{i}]", kind.section());
                        match obj.get("name").and_then(Value::as_str) {
                            Some(name) if !seen.insert(name) => errors.push(ConfigError::new(
                                format!("{}.name", path()),
                                format!("duplicate {kind} name `{name}`"),
                            )),
                            // The object carries its `name` already: appended as it is.
                            Some(name) => {
                                doc.list_mut(kind).push((name.to_owned(), canonical(obj)))
                            }
                            None => errors.push(ConfigError::new(
                                path(),
                                format!("every {kind} needs a `name`"),
                            )),
                        }
                    }
                }
                (list, _) => errors.push(ConfigError::new(
                    kind.section(),
                    if list {
                        format!("`{}` is a list of objects", kind.section())
                    } else {
                        format!("`{}` is a map keyed by name", kind.section())
                    },
                )),
            }
        }
        (doc, errors)
    }

    /// The sections as a config value would hold them (empty sections left out).
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        if !self.upstreams.is_empty() {
            m.insert("upstreams".into(), map_value(&self.upstreams));
        }
        if !self.routes.is_empty() {
            m.insert("routes".into(), list_value(&self.routes));
        }
        if !self.plugins.is_empty() {
            m.insert("plugins".into(), map_value(&self.plugins));
        }
        if !self.policies.is_empty() {
            m.insert("policies".into(), list_value(&self.policies));
        }
        Value::Object(m)
    }

    /// Puts the sections into a config value, replacing what it had there.
    pub fn insert_into(&self, v: &mut Value) {
        if let (Value::Object(target), Value::Object(sections)) = (v, self.to_value()) {
            for kind in KINDS {
                target.remove(kind.section());
            }
            target.extend(sections);
        }
    }

    /// Stable hash of the content (hex), equal on every node serving the same objects.
    pub fn hash(&self) -> String {
        format!("{:016x}", crate::json_digest(&Sections(self)))
    }

    /// Whether there is no object at all.
    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
            && self.routes.is_empty()
            && self.plugins.is_empty()
            && self.policies.is_empty()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.upstreams.len() + self.routes.len() + self.plugins.len() + self.policies.len()
    }

    /// One object.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Value> {
        match kind {
            Kind::Upstream => self.upstreams.get(name),
            Kind::Plugin => self.plugins.get(name),
            Kind::Route => find(&self.routes, name),
            Kind::Policy => find(&self.policies, name),
        }
    }

    /// Adds or replaces an object; a new route or policy goes last. A list object's `name`
    /// field is set to `name`.
    pub fn set(&mut self, kind: Kind, name: &str, mut value: Value) {
        match kind {
            Kind::Upstream => {
                self.upstreams.insert(name.to_owned(), value);
            }
            Kind::Plugin => {
                self.plugins.insert(name.to_owned(), value);
            }
            Kind::Route | Kind::Policy => {
                if let Value::Object(m) = &mut value {
                    m.insert("name".into(), Value::String(name.to_owned()));
                    // Keep keys sorted after the insert.
                    value = canonical(&value);
                }
                let list = self.list_mut(kind);
                match list.iter_mut().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = value,
                    None => list.push((name.to_owned(), value)),
                }
            }
        }
    }

    /// Removes an object; returns whether it was there.
    pub fn remove(&mut self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Upstream => self.upstreams.remove(name).is_some(),
            Kind::Plugin => self.plugins.remove(name).is_some(),
            Kind::Route | Kind::Policy => {
                let list = self.list_mut(kind);
                let before = list.len();
                list.retain(|(n, _)| n != name);
                list.len() != before
            }
        }
    }

    /// Every object as (kind, name, value), kinds in [`KINDS`] order, lists in their order.
    pub fn objects(&self) -> Vec<(Kind, &str, &Value)> {
        let mut out = Vec::with_capacity(self.len());
        out.extend(
            self.upstreams
                .iter()
                .map(|(n, v)| (Kind::Upstream, n.as_str(), v)),
        );
        out.extend(
            self.routes
                .iter()
                .map(|(n, v)| (Kind::Route, n.as_str(), v)),
        );
        out.extend(
            self.plugins
                .iter()
                .map(|(n, v)| (Kind::Plugin, n.as_str(), v)),
        );
        out.extend(
            self.policies
                .iter()
                .map(|(n, v)| (Kind::Policy, n.as_str(), v)),
        );
        out
    }

    /// Names of a list kind in order (empty for map kinds).
    pub fn order(&self, kind: Kind) -> Vec<&str> {
        match kind {
            Kind::Route => self.routes.iter().map(|(n, _)| n.as_str()).collect(),
            Kind::Policy => self.policies.iter().map(|(n, _)| n.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// This document with the objects of `other` added or replacing its own (what `push`
    /// without `--prune` writes). List order: ours, then the new ones in `other`'s order.
    pub fn overlay(&self, other: &SharedDoc) -> SharedDoc {
        let mut out = self.clone();
        for (kind, name, v) in other.objects() {
            out.set(kind, name, v.clone());
        }
        // Objects both have keep `other`'s relative order, the file being the intent.
        for kind in [Kind::Route, Kind::Policy] {
            let wanted: Vec<&str> = other.order(kind);
            let list = out.list_mut(kind);
            let mut theirs: Vec<(String, Value)> = Vec::new();
            let mut slots = Vec::new();
            for (i, (n, _)) in list.iter().enumerate() {
                if wanted.contains(&n.as_str()) {
                    slots.push(i);
                }
            }
            for n in &wanted {
                if let Some(e) = list.iter().find(|(x, _)| x == n) {
                    theirs.push(e.clone());
                }
            }
            for (slot, e) in slots.into_iter().zip(theirs) {
                list[slot] = e;
            }
        }
        out
    }

    fn list_mut(&mut self, kind: Kind) -> &mut Vec<(String, Value)> {
        match kind {
            Kind::Policy => &mut self.policies,
            _ => &mut self.routes,
        }
    }
}

fn find<'a>(list: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    list.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// The JSON of [`SharedDoc::to_value`], written from the document without copying it.
struct Sections<'a>(&'a SharedDoc);

impl serde::Serialize for Sections<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        struct List<'a>(&'a [(String, Value)]);
        impl serde::Serialize for List<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|(_, v)| v))
            }
        }
        let d = self.0;
        let mut m = s.serialize_map(None)?;
        if !d.upstreams.is_empty() {
            m.serialize_entry("upstreams", &d.upstreams)?;
        }
        if !d.routes.is_empty() {
            m.serialize_entry("routes", &List(&d.routes))?;
        }
        if !d.plugins.is_empty() {
            m.serialize_entry("plugins", &d.plugins)?;
        }
        if !d.policies.is_empty() {
            m.serialize_entry("policies", &List(&d.policies))?;
        }
        m.end()
    }
}

fn map_value(m: &BTreeMap<String, Value>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn list_value(l: &[(String, Value)]) -> Value {
    Value::Array(l.iter().map(|(_, v)| v.clone()).collect())
}

/// A copy of `v` with every object's keys sorted.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&m[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
