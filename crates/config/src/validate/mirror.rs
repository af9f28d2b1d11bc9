//! A route's `mirror` entries.

use std::collections::HashMap;

use http::Method;

use super::Validator;
use crate::model::Mirror;
use crate::raw::RawMirror;

impl Validator<'_> {
    pub(crate) fn mirrors(
        &mut self,
        p: &str,
        raw: &[RawMirror],
        upstreams: &HashMap<&str, usize>,
    ) -> Vec<Mirror> {
        let mut out = Vec::new();
        for (i, m) in raw.iter().enumerate() {
            let mp = format!("{p}.mirror[{i}]");
            let Some(upstream) = upstreams.get(m.upstream.as_str()).copied() else {
                self.err(
                    format!("{mp}.upstream"),
                    format!("no upstream named `{}`", m.upstream),
                );
                continue;
            };
            let fraction = m.fraction.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&fraction) {
                self.err(
                    format!("{mp}.fraction"),
                    "a share between 0 and 1, e.g. 0.1",
                );
            }
            let key = match m.key.as_deref() {
                None => None,
                Some(k) => match k.strip_prefix("header:") {
                    Some(n) => self.header_name(&format!("{mp}.key"), n),
                    None => {
                        self.err(
                            format!("{mp}.key"),
                            format!("invalid key `{k}`: use header:NAME (random when absent)"),
                        );
                        None
                    }
                },
            };
            let mut methods = Vec::new();
            for (j, name) in m.methods.iter().enumerate() {
                match Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
                    Ok(x) => methods.push(x),
                    Err(_) => self.err(
                        format!("{mp}.methods[{j}]"),
                        format!("`{name}` is not an HTTP method"),
                    ),
                }
            }
            if methods.is_empty() {
                methods = vec![Method::GET, Method::HEAD];
            }
            out.push(Mirror {
                upstream,
                fraction: fraction.clamp(0.0, 1.0),
                key,
                methods,
                max_body_bytes: m.max_body_bytes.unwrap_or(64 * 1024),
            });
        }
        out
    }
}
