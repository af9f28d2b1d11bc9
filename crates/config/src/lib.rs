//! Portcullis configuration: YAML read with positions, validated into an immutable typed
//! [`Config`], checked by lint policies.
//!
//! Two stages, as the contract asks: the raw serde structs in [`raw`] (unknown keys refused),
//! then [`validate`](load_str) into [`model`] types (durations parsed, regexes compiled,
//! references resolved). Every error names the file, line, column and field.

#![warn(missing_docs)]

pub mod error;
pub mod model;
pub mod policy;
pub mod raw;
pub mod shared;
pub mod source;
mod validate;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use error::{ConfigError, ConfigErrors, Lint, Pos, Severity};
pub use model::*;
pub use policy::{Condition, Policy, PolicyAction, Signal};
pub use shared::SharedDoc;
pub use source::SourceMap;

/// Keys whose values are secrets: redacted in every read and never logged.
pub const SECRET_KEYS: &[&str] = &["token", "secret", "password", "api_key", "private_key"];

/// Where the shared part of a node's config comes from when the file names a store.
#[derive(Debug, Clone, Copy)]
pub struct SharedInput<'a> {
    /// The document.
    pub doc: &'a SharedDoc,
    /// Names it in errors, e.g. `etcd:/portcullis` (objects add `/routes/NAME`).
    pub origin: &'a str,
}

/// Reads and validates a config file. Blocking: call it off the async runtime.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    load_file_with(path, None)
}

/// Reads and validates a node's file; when it names a store (`config_source.etcd`), `shared`
/// is the shared part to serve with it (none yet: no upstreams, routes or plugins).
pub fn load_file_with(
    path: &Path,
    shared: Option<SharedInput<'_>>,
) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: Some(path.to_path_buf()),
            pos: None,
            path: String::new(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    load_str_with(&text, Some(path), &base, &|k| std::env::var(k).ok(), shared)
}

/// Validates config text. `file` names it in errors; relative paths resolve against `base_dir`.
pub fn load_str(
    text: &str,
    file: Option<&Path>,
    base_dir: &Path,
    env: source::EnvLookup<'_>,
) -> Result<Config, ConfigErrors> {
    load_str_with(text, file, base_dir, env, None)
}

/// `load_str` with the shared part from a store, used when the text names one.
pub fn load_str_with(
    text: &str,
    file: Option<&Path>,
    base_dir: &Path,
    env: source::EnvLookup<'_>,
    shared: Option<SharedInput<'_>>,
) -> Result<Config, ConfigErrors> {
    let place = |mut errs: Vec<ConfigError>, map: Option<&SourceMap>| {
        for e in &mut errs {
            e.file = file.map(Path::to_path_buf);
            if e.pos.is_none()
                && let Some(m) = map
            {
                e.pos = m.locate(&e.path);
            }
        }
        ConfigErrors(errs)
    };
    let (value, map) = source::parse(text, env).map_err(|e| place(e, None))?;
    let mut value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    };
    let from_store = value
        .get("config_source")
        .and_then(|c| c.get("etcd"))
        .is_some_and(|e| !e.is_null());
    let mut origin = None;
    if from_store {
        // The node's file must not define what the store holds: two sources of truth.
        let clash: Vec<ConfigError> = shared::KINDS
            .iter()
            .filter(|k| value.get(k.section()).is_some())
            .map(|k| {
                ConfigError::new(
                    k.section(),
                    format!(
                        "`{}` comes from etcd (config_source.etcd): define it there (portcullis config push), not in this file",
                        k.section()
                    ),
                )
            })
            .collect();
        if !clash.is_empty() {
            return Err(place(clash, Some(&map)));
        }
        if let Some(input) = shared {
            input.doc.insert_into(&mut value);
            origin = Some((input.doc, input.origin));
        }
    }
    let digest = digest(text.as_bytes());
    let errs = match load_value(value, map, file, base_dir, digest) {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    // Errors inside objects from the store name the object's key instead of this file.
    let Some((doc, origin)) = origin else {
        return Err(errs);
    };
    Err(ConfigErrors(
        errs.0
            .into_iter()
            .map(|mut e| {
                if let Some(key) = store_object_of(doc, &e.path) {
                    e.file = Some(format!("{origin}/{key}").into());
                    e.pos = None;
                }
                e
            })
            .collect(),
    ))
}

/// `routes[2].match` -> `routes/NAME` for the third route of `doc`; `upstreams.a.x` ->
/// `upstreams/a`. `None` for paths outside the shared sections.
fn store_object_of(doc: &SharedDoc, path: &str) -> Option<String> {
    let (head, rest) = path.split_at(path.find(['.', '['])?);
    let kind = shared::Kind::from_section(head)?;
    let name = if kind.is_list() {
        let idx: usize = rest.strip_prefix('[')?.split(']').next()?.parse().ok()?;
        doc.order(kind).get(idx)?.to_string()
    } else {
        let r = rest.strip_prefix('.')?;
        r.split(['.', '[']).next()?.to_owned()
    };
    Some(format!("{}/{name}", kind.section()))
}

/// Validates the shared part alone (what `config push` and admin writes check), with a
/// stand-in listener so the node-only sections need not be there. `origin` names it in errors.
pub fn check_shared(
    doc: &SharedDoc,
    origin: &str,
    base_dir: &Path,
) -> Result<Config, ConfigErrors> {
    let mut value = serde_json::json!({
        "listeners": [{"name": "_check", "address": "127.0.0.1:0"}],
    });
    doc.insert_into(&mut value);
    let digest = digest(value.to_string().as_bytes());
    load_value(value, SourceMap::default(), None, base_dir, digest).map_err(|errs| {
        ConfigErrors(
            errs.0
                .into_iter()
                .map(|mut e| {
                    let key = store_object_of(doc, &e.path);
                    e.file = Some(match key {
                        Some(k) => format!("{origin}/{k}").into(),
                        None => origin.into(),
                    });
                    e
                })
                .collect(),
        )
    })
}

/// Reads a file of shared objects (what `config push` takes: the shared sections, optionally
/// with a node's sections too) and validates it. A file without listeners gets a stand-in one.
/// Returns the shared document and the validated config. Blocking.
pub fn load_shared_file(path: &Path) -> Result<(SharedDoc, Config), ConfigErrors> {
    let one = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: Some(path.to_path_buf()),
            pos: None,
            path: String::new(),
            message,
        }])
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| one(format!("cannot read the config file: {e}")))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let env = |k: &str| std::env::var(k).ok();
    let (value, map) = source::parse(&text, &env).map_err(|mut errs| {
        for e in &mut errs {
            e.file = Some(path.to_path_buf());
        }
        ConfigErrors(errs)
    })?;
    let mut value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    };
    if let Some(obj) = value.as_object_mut() {
        // A node file that reads from the store has nothing to push.
        obj.remove("config_source");
        let no_listeners = obj
            .get("listeners")
            .and_then(Value::as_array)
            .is_none_or(|l| l.is_empty());
        if no_listeners {
            obj.insert(
                "listeners".into(),
                serde_json::json!([{"name": "_check", "address": "127.0.0.1:0"}]),
            );
        }
    }
    let (doc, errs) = SharedDoc::from_value(&value);
    if !errs.is_empty() {
        return Err(ConfigErrors(
            errs.into_iter()
                .map(|mut e| {
                    e.file = Some(path.to_path_buf());
                    e.pos = map.locate(&e.path);
                    e
                })
                .collect(),
        ));
    }
    let cfg = load_value(value, map, Some(path), &base, digest(text.as_bytes()))?;
    Ok((doc, cfg))
}

/// Deserializes and validates a parsed config value. `source_digest` identifies the text.
fn load_value(
    value: Value,
    map: SourceMap,
    file: Option<&Path>,
    base_dir: &Path,
    source_digest: u64,
) -> Result<Config, ConfigErrors> {
    let place = |mut errs: Vec<ConfigError>, map: Option<&SourceMap>| {
        for e in &mut errs {
            e.file = file.map(Path::to_path_buf);
            if e.pos.is_none()
                && let Some(m) = map
            {
                e.pos = m.locate(&e.path);
            }
        }
        ConfigErrors(errs)
    };
    let raw: raw::RawConfig = match serde_path_to_error::deserialize(&value) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let inner = e.into_inner().to_string();
            // serde names the unknown key in its message; point at the key itself.
            let pos = unknown_field(&inner)
                .and_then(|k| {
                    let child = if path.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{path}.{k}")
                    };
                    map.exact(&child)
                })
                .or_else(|| map.locate(&path));
            let mut err = ConfigError::new(path, inner);
            err.pos = pos;
            return Err(place(vec![err], Some(&map)));
        }
    };

    let mut v = validate::Validator::new(base_dir);
    let parts = v.config(&raw);
    if let Some(parts) = &parts {
        v.shadowed(&parts.routes);
    }
    let mut errors = std::mem::take(&mut v.errors);
    let mut warnings = Vec::new();
    for mut l in std::mem::take(&mut v.lints) {
        l.error.file = file.map(Path::to_path_buf);
        l.error.pos = map.locate(&l.error.path);
        match l.severity {
            Severity::Error => errors.push(l.error),
            Severity::Warning => warnings.push(l),
        }
    }
    let parts = match parts {
        Some(p) if errors.is_empty() => p,
        _ => return Err(place(errors, Some(&map))),
    };
    let etcd = match shared::source::etcd(raw.config_source.as_ref(), base_dir) {
        Ok(e) => e,
        Err(errs) => return Err(place(errs, Some(&map))),
    };
    // What serde read is in `parts` now; free it before the copies below (a lower peak).
    drop(raw);
    let hash = content_hash(&value);
    let (shared_doc, _) = SharedDoc::from_value(&value);
    let shared_hash = shared_doc.hash();
    let mut redacted = value;
    redact(&mut redacted, false);
    let redacted = serde_json::value::to_raw_value(&redacted)
        .map_err(|e| ConfigErrors(vec![ConfigError::new("", e.to_string())]))?;
    let mut parts = parts;
    // Built by pushing: give back the slack of 10,000 routes (a third of the vector).
    parts.routes.shrink_to_fit();
    parts.upstreams.shrink_to_fit();
    Ok(Config {
        file: file.map(Path::to_path_buf),
        hash,
        source_digest,
        listeners: parts.listeners,
        admin: parts.admin,
        upstreams: parts.upstreams,
        routes: parts.routes,
        plugins: parts.plugins,
        policies: parts.policies,
        runtime: parts.runtime,
        observability: parts.observability,
        dns: parts.dns,
        source_map: map,
        redacted,
        warnings,
        shared: std::sync::Arc::new(shared_doc),
        shared_hash,
        etcd,
    })
}

impl Config {
    /// Places an error found after validation (plugin config, certificate contents) in the file.
    pub fn error_at(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            pos: self.source_map.locate(path),
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// The effective plugin list of a route: global entries overridden by the route's own.
    pub fn plugins_for<'a>(&'a self, route: &'a Route) -> Vec<&'a PluginConf> {
        let mut out: Vec<&PluginConf> = self
            .plugins
            .iter()
            .filter(|g| !route.plugins.iter().any(|r| r.name == g.name))
            .collect();
        out.extend(route.plugins.iter());
        out
    }
}

/// Extracts `x` from serde's "unknown field `x`, expected ..." message.
fn unknown_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(k, _)| k)
}

/// FNV-1a over the interpolated config as JSON: stable across processes and Rust versions, so
/// gateways of a fleet can compare the hash of what they run. Not a security boundary.
fn content_hash(value: &Value) -> String {
    format!("{:016x}", json_digest(value))
}

/// [`digest`] of `v`'s compact JSON, streamed: the text of a 10,000-route config is never
/// held in memory at once.
pub(crate) fn json_digest<T: serde::Serialize + ?Sized>(v: &T) -> u64 {
    let mut h = Fnv(FNV_OFFSET);
    // Writing into a hash cannot fail, and these values always serialize.
    let _ = serde_json::to_writer(&mut h, v);
    h.0
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64 over the bytes written to it.
struct Fnv(u64);

impl std::io::Write for Fnv {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// FNV-1a 64 of bytes.
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h: u64 = FNV_OFFSET;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Replaces secret values in `v` with "<redacted>" (tokens, secrets, passwords, consumer
/// keys), for every read of a config and every log line.
pub fn redact_value(v: &mut Value) {
    redact(v, false);
}

fn redact(v: &mut Value, in_consumers: bool) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let secret = SECRET_KEYS.contains(&k.as_str()) || (in_consumers && k == "key");
                if secret && !val.is_null() {
                    *val = Value::String("<redacted>".into());
                } else {
                    redact(val, k == "consumers");
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                redact(i, in_consumers);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
