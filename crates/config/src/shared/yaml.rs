//! A small YAML writer for config values (what `portcullis config pull` prints). Block style,
//! strings always double-quoted with JSON escapes (a subset of YAML's), `${` written as `$${`
//! so that reading the output back gives the same values, not environment lookups.

use std::fmt::Write as _;

use serde_json::Value;

/// The value as a YAML document.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => block_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => block_list(&mut out, a, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn block_map(out: &mut String, m: &serde_json::Map<String, Value>, level: usize) {
    for (k, v) in m {
        indent(out, level);
        out.push_str(&key(k));
        out.push(':');
        value_after(out, v, level);
    }
}

fn block_list(out: &mut String, a: &[Value], level: usize) {
    for v in a {
        indent(out, level);
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                // `- first: x` then the other keys aligned under it.
                let mut first = true;
                // `name` first: it is what a reader looks for in a list of objects.
                let named = m.get_key_value("name").into_iter();
                for (k, inner) in named.chain(m.iter().filter(|(k, _)| *k != "name")) {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, level + 2);
                    }
                    out.push_str(&key(k));
                    out.push(':');
                    value_after(out, inner, level + 2);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                block_list(out, inner, level + 2);
            }
            other => {
                out.push(' ');
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

/// Writes what follows `key:`: a scalar on the same line or a nested block.
fn value_after(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            block_map(out, m, level + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            block_list(out, a, level + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn quote(s: &str) -> String {
    let escaped = s.replace("${", "$${");
    serde_json::to_string(&escaped).unwrap_or_else(|_| "\"\"".into())
}

/// Keys are plain when they cannot be read as anything but that string.
fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./".contains(&b))
        && k.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'/')
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        k.to_owned()
    } else {
        let mut s = String::new();
        let _ = write!(s, "{}", quote(k));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(v: Value) {
        let text = to_yaml(&v);
        let (back, _) =
            crate::source::parse(&text, &|_| None).unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        assert_eq!(back, v, "{text}");
    }

    #[test]
    fn values_survive_a_round_trip() {
        round_trip(json!({
            "upstreams": {"a-b": {"targets": [{"address": "127.0.0.1:80", "weight": 2}], "retry": {"on": [502, "reset"]}}},
            "routes": [{"name": "r", "match": {"path_prefix": "/x", "headers": {}}, "plugins": {}, "x": [[1, 2], []]}],
            "plugins": {"cors": {"origins": ["*"], "credentials": true, "max": 1.5, "none": null}},
            "weird": {"yes": "no", "1": "${HOME} $${X} \"q\" \n\t#", "": "empty key", "true": false},
        }));
    }

    #[test]
    fn empty_document() {
        assert_eq!(to_yaml(&json!({})), "{}\n");
    }
}
