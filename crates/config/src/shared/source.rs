//! `config_source.etcd` validated into an [`EtcdSource`].

use std::path::Path;

use crate::error::ConfigError;
use crate::model::EtcdSource;
use crate::raw::RawConfigSource;

/// Validates `config_source`; `None` when the file is the only source.
pub fn etcd(
    raw: Option<&RawConfigSource>,
    base_dir: &Path,
) -> Result<Option<EtcdSource>, Vec<ConfigError>> {
    let Some(e) = raw.and_then(|s| s.etcd.as_ref()) else {
        return Ok(None);
    };
    let p = "config_source.etcd";
    let mut errors = Vec::new();
    if e.endpoints.is_empty() {
        errors.push(ConfigError::new(
            format!("{p}.endpoints"),
            "at least one endpoint is needed, e.g. http://127.0.0.1:2379",
        ));
    }
    let endpoints: Vec<String> = e
        .endpoints
        .iter()
        .map(|u| {
            if u.contains("://") {
                u.clone()
            } else {
                format!("http://{u}")
            }
        })
        .collect();
    for (i, u) in endpoints.iter().enumerate() {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            errors.push(ConfigError::new(
                format!("{p}.endpoints[{i}]"),
                format!("`{u}`: an http:// or https:// URL"),
            ));
        }
    }
    let prefix = e.prefix.clone().unwrap_or_else(|| "/portcullis".into());
    if !prefix.starts_with('/') || prefix.trim_end_matches('/').is_empty() {
        errors.push(ConfigError::new(
            format!("{p}.prefix"),
            "a key prefix starting with `/` (not `/` alone), e.g. /portcullis",
        ));
    }
    let credentials = match (&e.username, &e.password) {
        (Some(u), Some(pw)) if !u.is_empty() => Some((u.clone(), pw.clone())),
        (None, None) => None,
        _ => {
            errors.push(ConfigError::new(
                format!("{p}.username"),
                "give both `username` and `password`, or neither",
            ));
            None
        }
    };
    let file = |field: &str, f: &str, errors: &mut Vec<ConfigError>| {
        let path = base_dir.join(f);
        if !path.is_file() {
            errors.push(ConfigError::new(
                format!("{p}.tls.{field}"),
                format!("file `{}` does not exist", path.display()),
            ));
        }
        path
    };
    let (mut ca, mut client_cert) = (None, None);
    if let Some(t) = &e.tls {
        ca = t.ca.as_deref().map(|f| file("ca", f, &mut errors));
        client_cert = match (&t.cert, &t.key) {
            (Some(c), Some(k)) => Some((file("cert", c, &mut errors), file("key", k, &mut errors))),
            (None, None) => None,
            _ => {
                errors.push(ConfigError::new(
                    format!("{p}.tls"),
                    "give both `cert` and `key` for mutual TLS, or neither",
                ));
                None
            }
        };
        if endpoints.iter().any(|u| u.starts_with("http://")) {
            errors.push(ConfigError::new(
                format!("{p}.endpoints"),
                "with `tls`, endpoints are https:// URLs",
            ));
        }
    }
    if let Some(id) = &e.node_id
        && !super::etcd::valid_name(id)
    {
        errors.push(ConfigError::new(
            format!("{p}.node_id"),
            "a name without `/`, spaces or control characters",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Some(EtcdSource {
        endpoints,
        prefix: prefix.trim_end_matches('/').to_owned(),
        credentials,
        ca,
        client_cert,
        cache: e.cache.as_deref().map(|c| base_dir.join(c)),
        node_id: e.node_id.clone(),
    }))
}
