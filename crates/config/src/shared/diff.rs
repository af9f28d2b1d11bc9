//! What changed between two shared documents, per object and per field: the output of
//! `portcullis config diff`, the summary of every history entry, and what `suspect_change`
//! looks at to know which routes a change touched.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};

use serde::Serialize;
use serde_json::Value;

use super::{KINDS, Kind, SharedDoc};

/// How one object changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Only in the new document.
    Added,
    /// Only in the old document.
    Removed,
    /// In both, with different content.
    Changed,
}

/// One field that differs, by its path inside the object (`targets[0].address`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// Path inside the object; empty for the whole object.
    pub path: String,
    /// Value before (absent when the field is new).
    pub old: Option<Value>,
    /// Value after (absent when the field was removed).
    pub new: Option<Value>,
}

/// One object that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectChange {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Added, removed or changed.
    pub op: Op,
    /// For `changed`: the fields, secrets redacted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.singular())
    }
}

/// Every difference between `old` and `new`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Diff {
    /// Objects that differ, kinds in order, names sorted.
    pub objects: Vec<ObjectChange>,
    /// Route order before and after, when only the order of routes changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_order: Option<(Vec<String>, Vec<String>)>,
}

impl Diff {
    /// Compares two documents.
    pub fn between(old: &SharedDoc, new: &SharedDoc) -> Diff {
        let mut objects = Vec::new();
        // Objects by kind and name, indexed once: looking each name up in the lists would make
        // a diff of 10,000 routes quadratic.
        fn index(d: &SharedDoc) -> HashMap<(Kind, &str), &Value> {
            d.objects()
                .into_iter()
                .map(|(k, n, v)| ((k, n), v))
                .collect()
        }
        let (old_ix, new_ix) = (index(old), index(new));
        for kind in KINDS {
            let mut names: Vec<&str> = old
                .objects()
                .into_iter()
                .chain(new.objects())
                .filter(|(k, _, _)| *k == kind)
                .map(|(_, n, _)| n)
                .collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                let (a, b) = (
                    old_ix.get(&(kind, name)).copied(),
                    new_ix.get(&(kind, name)).copied(),
                );
                let change = match (a, b) {
                    (None, Some(_)) => Op::Added,
                    (Some(_), None) => Op::Removed,
                    (Some(a), Some(b)) if a != b => Op::Changed,
                    _ => continue,
                };
                let mut fields = Vec::new();
                if let (Op::Changed, Some(a), Some(b)) = (&change, a, b) {
                    field_diff("", a, b, &mut fields);
                }
                objects.push(ObjectChange {
                    kind,
                    name: name.to_owned(),
                    op: change,
                    fields,
                });
            }
        }
        let order = |d: &SharedDoc| -> Vec<String> {
            d.order(Kind::Route)
                .into_iter()
                .map(str::to_owned)
                .collect()
        };
        let (a, b) = (order(old), order(new));
        // Compare the order of routes present in both: additions and removals are listed above.
        let common = |x: &[String], y: &[String]| -> Vec<String> {
            let y: HashSet<&String> = y.iter().collect();
            x.iter().filter(|n| y.contains(n)).cloned().collect()
        };
        let route_order = (common(&a, &b) != common(&b, &a)).then_some((a, b));
        Diff {
            objects,
            route_order,
        }
    }

    /// Whether the documents are equal.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.route_order.is_none()
    }

    /// Counts of added, changed and removed objects.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |op: Op| self.objects.iter().filter(|o| o.op == op).count();
        (n(Op::Added), n(Op::Changed), n(Op::Removed))
    }

    /// One line: `2 added, 1 changed, 0 removed` (and the route order when it moved).
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no changes".into();
        }
        let (a, c, r) = self.counts();
        let mut s = format!("{a} added, {c} changed, {r} removed");
        if self.route_order.is_some() {
            s.push_str(", route order changed");
        }
        s
    }

    /// Short per-object list for history: `+route users`, `~upstream api`, `-plugin cors`.
    pub fn brief(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|o| {
                let sign = match o.op {
                    Op::Added => '+',
                    Op::Changed => '~',
                    Op::Removed => '-',
                };
                format!("{sign}{} {}", o.kind, o.name)
            })
            .collect()
    }

    /// Whether the change touched this kind and name.
    pub fn touches(&self, kind: Kind, name: &str) -> bool {
        self.objects
            .iter()
            .any(|o| o.kind == kind && o.name == name)
    }

    /// Whether any global plugin changed (which touches every route).
    pub fn touches_plugins(&self) -> bool {
        self.objects.iter().any(|o| o.kind == Kind::Plugin)
    }
}

impl fmt::Display for Diff {
    /// The readable form `config diff` prints: one line per object, its changed fields
    /// indented below, secrets redacted; then the summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.objects {
            match o.op {
                Op::Added => writeln!(f, "+ {} {}: added", o.kind, o.name)?,
                Op::Removed => writeln!(f, "- {} {}: removed", o.kind, o.name)?,
                Op::Changed => {
                    writeln!(f, "~ {} {}: changed", o.kind, o.name)?;
                    for c in &o.fields {
                        let show = |v: &Option<Value>| match v {
                            Some(v) => short(v),
                            None => "(absent)".into(),
                        };
                        let path = if c.path.is_empty() { "." } else { &c.path };
                        writeln!(f, "    {path}: {} -> {}", show(&c.old), show(&c.new))?;
                    }
                }
            }
        }
        if let Some((a, b)) = &self.route_order {
            writeln!(f, "~ route order: [{}] -> [{}]", a.join(", "), b.join(", "))?;
        }
        write!(f, "{}", self.summary())
    }
}

/// Compact JSON of a value, secrets redacted, cut at 120 characters.
fn short(v: &Value) -> String {
    let mut v = v.clone();
    crate::redact_value(&mut v);
    let mut s = v.to_string();
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Appends the leaf fields where `a` and `b` differ; secrets in the values are redacted.
fn field_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    if a == b {
        return;
    }
    let secret = is_secret_path(path);
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if !secret => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = join(path, k);
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => field_diff(&p, va, vb, out),
                    (va, vb) => out.push(change(&p, va, vb)),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() && !secret => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                field_diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ => out.push(change(path, Some(a), Some(b))),
    }
}

fn change(path: &str, a: Option<&Value>, b: Option<&Value>) -> FieldChange {
    let redact = |v: Option<&Value>| {
        v.map(|v| {
            if is_secret_path(path) {
                Value::String("<redacted>".into())
            } else {
                let mut v = v.clone();
                crate::redact_value(&mut v);
                v
            }
        })
    };
    FieldChange {
        path: path.to_owned(),
        old: redact(a),
        new: redact(b),
    }
}

/// Whether a field path names a secret (its last key is one the config redacts).
fn is_secret_path(path: &str) -> bool {
    let last = path.rsplit(['.', '[']).next().unwrap_or("");
    crate::SECRET_KEYS.contains(&last) || (last == "key" && path.contains("consumers"))
}

/// Appends a change list as text lines (for logs): `+route a, ~upstream b`.
pub fn brief_line(d: &Diff) -> String {
    let mut s = String::new();
    for (i, b) in d.brief().iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{b}");
    }
    s
}
