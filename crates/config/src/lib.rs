//! Portcullis configuration: YAML read with positions, validated into an immutable typed
//! [`Config`], checked by lint policies.
//!
//! Two stages, as the contract asks: the raw serde structs in [`raw`] (unknown keys refused),
//! then [`validate`](load_str) into [`model`] types (durations parsed, regexes compiled,
//! references resolved). Every error names the file, line, column and field.

#![warn(missing_docs)]

pub mod error;
pub mod model;
pub mod raw;
pub mod source;
mod validate;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use error::{ConfigError, ConfigErrors, Lint, Pos, Severity};
pub use model::*;
pub use source::SourceMap;

/// Reads and validates a config file. Blocking: call it off the async runtime.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
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
    load_str(&text, Some(path), &base, &|k| std::env::var(k).ok())
}

/// Validates config text. `file` names it in errors; relative paths resolve against `base_dir`.
pub fn load_str(
    text: &str,
    file: Option<&Path>,
    base_dir: &Path,
    env: source::EnvLookup<'_>,
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
    let value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
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
    let hash = content_hash(&value);
    let source_digest = digest(text.as_bytes());
    let mut redacted = value;
    redact(&mut redacted, false);
    Ok(Config {
        file: file.map(Path::to_path_buf),
        hash,
        source_digest,
        listeners: parts.listeners,
        admin: parts.admin,
        upstreams: parts.upstreams,
        routes: parts.routes,
        plugins: parts.plugins,
        runtime: parts.runtime,
        observability: parts.observability,
        dns: parts.dns,
        source_map: map,
        redacted,
        warnings,
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
    format!("{:016x}", digest(value.to_string().as_bytes()))
}

/// FNV-1a 64 of bytes.
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Replaces secret values with "<redacted>": tokens, secrets, passwords and consumer keys.
fn redact(v: &mut Value, in_consumers: bool) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let secret = matches!(
                    k.as_str(),
                    "token" | "secret" | "password" | "api_key" | "private_key"
                ) || (in_consumers && k == "key");
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
