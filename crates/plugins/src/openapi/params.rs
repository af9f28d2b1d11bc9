//! Parameters in text (path, query, headers, cookies) read by their style, coerced to their
//! schema types and validated.

use std::collections::HashSet;

use http::HeaderMap;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Number, Value};

use super::spec::{In, Operation, Param, Scalar, Shape, Style};
use super::{Failure, schema_failures};

/// Text to a typed JSON value; text that does not parse stays text (the schema then says why).
pub fn coerce(s: &str, t: Scalar) -> Value {
    match t {
        Scalar::Integer => s
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .unwrap_or_else(|_| Value::String(s.to_owned())),
        Scalar::Number => s
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(s.to_owned()), Value::Number),
        Scalar::Boolean => match s {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(s.to_owned()),
        },
        Scalar::String => Value::String(s.to_owned()),
    }
}

/// A value shaped from a list of text pieces.
pub fn shape_values(pieces: &[&str], shape: &Shape) -> Value {
    match shape {
        Shape::Scalar(t) => coerce(pieces.first().copied().unwrap_or(""), *t),
        Shape::Array(t) => Value::Array(pieces.iter().map(|p| coerce(p, *t)).collect()),
        Shape::Object(fields) => {
            // `k,v,k,v`
            let mut m = Map::new();
            for kv in pieces.chunks(2) {
                let k = kv[0];
                let v = kv.get(1).copied().unwrap_or("");
                m.insert(k.to_owned(), coerce(v, field_type(fields, k)));
            }
            Value::Object(m)
        }
    }
}

fn field_type(fields: &[(String, Scalar)], k: &str) -> Scalar {
    fields
        .iter()
        .find(|(n, _)| n == k)
        .map_or(Scalar::String, |(_, t)| *t)
}

fn decode(s: &str, plus_is_space: bool) -> String {
    if plus_is_space && s.contains('+') {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    } else {
        percent_decode_str(s).decode_utf8_lossy().into_owned()
    }
}

/// `a=1&b=2` into decoded pairs.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k, true), decode(v, true))
        })
        .collect()
}

fn split_value(v: &str, style: Style) -> Vec<&str> {
    let sep = match style {
        Style::Pipe => '|',
        Style::Space => ' ',
        _ => ',',
    };
    v.split(sep).collect()
}

/// What the query holds for a parameter.
#[derive(Debug, PartialEq)]
enum QueryRead {
    /// Not there.
    Absent,
    /// There under its own name with no value in any occurrence (`?q=`, `?q`, `?q=&q=`).
    /// Styles whose fields are their own keys (`deepObject`, exploded objects) are never
    /// empty as a whole: their fields' empty values go to the schema.
    Empty,
    /// Its value, shaped and coerced.
    Value(Value),
}

/// The value of a query parameter, and marks the query keys it used.
fn query_value(p: &Param, pairs: &[(String, String)], used: &mut [bool]) -> QueryRead {
    let object = |m: Map<String, Value>| {
        if m.is_empty() {
            QueryRead::Absent
        } else {
            QueryRead::Value(Value::Object(m))
        }
    };
    if p.style == Style::DeepObject {
        let prefix = format!("{}[", p.name);
        let fields = match &p.shape {
            Shape::Object(f) => f.as_slice(),
            _ => &[],
        };
        let mut m = Map::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if let Some(field) = k.strip_prefix(&prefix).and_then(|r| r.strip_suffix(']')) {
                used[i] = true;
                m.insert(field.to_owned(), coerce(v, field_type(fields, field)));
            }
        }
        return object(m);
    }
    if p.explode
        && let Shape::Object(fields) = &p.shape
    {
        // Each field is its own query parameter.
        let mut m = Map::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if let Some((_, t)) = fields.iter().find(|(n, _)| n == k) {
                used[i] = true;
                m.insert(k.clone(), coerce(v, *t));
            }
        }
        return object(m);
    }
    let mut values: Vec<&str> = Vec::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if *k == p.name {
            used[i] = true;
            values.push(v);
        }
    }
    if values.is_empty() {
        return QueryRead::Absent;
    }
    if values.iter().all(|v| v.is_empty()) {
        return QueryRead::Empty;
    }
    let pieces: Vec<&str> = if p.explode && matches!(p.shape, Shape::Array(_)) {
        values.clone()
    } else {
        split_value(values[0], p.style)
    };
    QueryRead::Value(match p.shape {
        Shape::Scalar(t) => coerce(values[0], t),
        _ => shape_values(&pieces, &p.shape),
    })
}

fn simple_value(raw: &str, p: &Param) -> Value {
    match &p.shape {
        Shape::Scalar(t) => coerce(raw, *t),
        Shape::Object(_) if p.explode => {
            // `k=v,k=v`
            let pieces: Vec<&str> = raw
                .split(',')
                .flat_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    [k, v]
                })
                .collect();
            shape_values(&pieces, &p.shape)
        }
        _ => shape_values(&raw.split(',').collect::<Vec<_>>(), &p.shape),
    }
}

/// A `label` or `matrix` path value rewritten in `simple` style (`a,b`, exploded objects
/// `k=v,k=v`); `None` when it lacks its style's prefix.
fn path_as_simple(raw: &str, p: &Param) -> Option<String> {
    match p.style {
        Style::Label => {
            let rest = raw.strip_prefix('.')?;
            Some(if p.explode {
                rest.replace('.', ",")
            } else {
                rest.to_owned()
            })
        }
        Style::Matrix => {
            let rest = raw.strip_prefix(';')?;
            if p.explode && matches!(p.shape, Shape::Object(_)) {
                return Some(rest.replace(';', ","));
            }
            let prefix = format!("{}=", p.name);
            let mut values = Vec::new();
            for piece in rest.split(';') {
                // `;name` alone is the empty value.
                values.push(if piece == p.name {
                    ""
                } else {
                    piece.strip_prefix(prefix.as_str())?
                });
            }
            Some(values.join(","))
        }
        _ => Some(raw.to_owned()),
    }
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Validates every parameter of `op`; `vars` are the path variables the match captured.
pub fn check(
    op: &Operation,
    vars: &[(String, String)],
    query: Option<&str>,
    headers: &HeaderMap,
    which: &super::Checks,
    reject_unknown_query: bool,
    out: &mut Vec<Failure>,
) {
    let pairs = query.map(query_pairs).unwrap_or_default();
    let mut used = vec![false; pairs.len()];
    for p in &op.params {
        if !which.wants(p.loc) {
            continue;
        }
        let value = match p.loc {
            In::Path => match vars.iter().find(|(n, _)| *n == p.name) {
                Some((_, v)) => {
                    let Some(simple) = path_as_simple(v, p) else {
                        out.push(Failure {
                            loc: "path",
                            name: p.name.clone(),
                            pointer: String::new(),
                            message: format!(
                                "expected the {} style (starting with `{}`)",
                                if p.style == Style::Label {
                                    "label"
                                } else {
                                    "matrix"
                                },
                                if p.style == Style::Label { '.' } else { ';' }
                            ),
                        });
                        continue;
                    };
                    Some(simple_value(&decode(&simple, false), p))
                }
                None => None,
            },
            In::Query => match query_value(p, &pairs, &mut used) {
                QueryRead::Absent => None,
                QueryRead::Value(v) => Some(v),
                // Present (so `required` is met); with `allowEmptyValue` accepted unchecked.
                QueryRead::Empty => {
                    if !p.allow_empty {
                        out.push(Failure {
                            loc: "query",
                            name: p.name.clone(),
                            pointer: String::new(),
                            message: "must not be empty".into(),
                        });
                    }
                    continue;
                }
            },
            In::Header => {
                let vals: Vec<&str> = headers
                    .get_all(p.name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!vals.is_empty()).then(|| simple_value(&vals.join(","), p))
            }
            In::Cookie => cookie(headers, &p.name).map(|v| simple_value(&decode(v, false), p)),
        };
        let secret = matches!(p.loc, In::Header | In::Cookie);
        match value {
            None if p.required => out.push(Failure {
                loc: p.loc.as_str(),
                name: p.name.clone(),
                pointer: String::new(),
                message: "required parameter is missing".into(),
            }),
            None => {}
            Some(v) => {
                if let Some(schema) = &p.schema {
                    schema_failures(schema, &v, p.loc.as_str(), &p.name, secret, out);
                }
            }
        }
    }
    if reject_unknown_query && which.wants(In::Query) {
        let mut seen = HashSet::new();
        for (i, (k, _)) in pairs.iter().enumerate() {
            if !used[i] && seen.insert(k.as_str()) {
                out.push(Failure {
                    loc: "query",
                    name: k.clone(),
                    pointer: String::new(),
                    message: "unknown query parameter".into(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(style: Style, explode: bool, shape: Shape) -> Param {
        Param {
            name: "id".into(),
            loc: In::Query,
            required: false,
            allow_empty: false,
            style,
            explode,
            shape,
            schema: None,
        }
    }

    fn read(p: &Param, query: &str) -> QueryRead {
        let pairs = query_pairs(query);
        let mut used = vec![false; pairs.len()];
        query_value(p, &pairs, &mut used)
    }

    fn q(p: &Param, query: &str) -> Option<Value> {
        match read(p, query) {
            QueryRead::Value(v) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn label_and_matrix_path_styles() {
        let path = |style, explode, shape: Shape, raw: &str| {
            let mut p = param(style, explode, shape);
            p.loc = In::Path;
            path_as_simple(raw, &p).map(|s| simple_value(&s, &p))
        };
        let int = Shape::Scalar(Scalar::Integer);
        let arr = Shape::Array(Scalar::Integer);
        let obj = Shape::Object(vec![("a".into(), Scalar::Integer)]);
        assert_eq!(path(Style::Label, false, int.clone(), ".5"), Some(json!(5)));
        assert_eq!(
            path(Style::Label, false, arr.clone(), ".1,2"),
            Some(json!([1, 2]))
        );
        assert_eq!(
            path(Style::Label, true, arr.clone(), ".1.2"),
            Some(json!([1, 2]))
        );
        assert_eq!(path(Style::Label, false, int.clone(), "5"), None);
        assert_eq!(
            path(Style::Matrix, false, int.clone(), ";id=5"),
            Some(json!(5))
        );
        assert_eq!(
            path(Style::Matrix, false, arr.clone(), ";id=1,2"),
            Some(json!([1, 2]))
        );
        assert_eq!(
            path(Style::Matrix, true, arr, ";id=1;id=2"),
            Some(json!([1, 2]))
        );
        assert_eq!(
            path(Style::Matrix, true, obj, ";a=3;b=x"),
            Some(json!({"a": 3, "b": "x"}))
        );
        assert_eq!(path(Style::Matrix, false, int.clone(), ";other=5"), None);
        assert_eq!(path(Style::Matrix, false, int, "5"), None);
    }

    #[test]
    fn query_styles() {
        let arr = Shape::Array(Scalar::Integer);
        assert_eq!(
            q(&param(Style::Default, true, arr.clone()), "id=1&id=2"),
            Some(json!([1, 2]))
        );
        assert_eq!(
            q(&param(Style::Default, false, arr.clone()), "id=1,2"),
            Some(json!([1, 2]))
        );
        assert_eq!(
            q(&param(Style::Pipe, false, arr.clone()), "id=1|2"),
            Some(json!([1, 2]))
        );
        assert_eq!(
            q(&param(Style::Space, false, arr), "id=1%202"),
            Some(json!([1, 2]))
        );
        let obj = Shape::Object(vec![
            ("a".into(), Scalar::Integer),
            ("b".into(), Scalar::Boolean),
        ]);
        assert_eq!(
            q(
                &param(Style::DeepObject, true, obj.clone()),
                "id[a]=3&id[b]=true"
            ),
            Some(json!({"a": 3, "b": true}))
        );
        assert_eq!(
            q(&param(Style::Default, true, obj), "a=3&b=false&c=x"),
            Some(json!({"a": 3, "b": false}))
        );
        assert_eq!(
            q(
                &param(Style::Default, true, Shape::Scalar(Scalar::Number)),
                "id=1.5"
            ),
            Some(json!(1.5))
        );
        assert_eq!(
            q(
                &param(Style::Default, true, Shape::Scalar(Scalar::Integer)),
                "id=x"
            ),
            Some(json!("x"))
        );
    }

    #[test]
    fn empty_query_values() {
        let scalar = param(Style::Default, true, Shape::Scalar(Scalar::Integer));
        for query in ["id=", "id", "id=&id", "a=1&id=&b=2"] {
            assert_eq!(read(&scalar, query), QueryRead::Empty, "{query}");
        }
        assert_eq!(read(&scalar, "other="), QueryRead::Absent);
        // `+` decodes to a space: not empty.
        assert_eq!(read(&scalar, "id=+"), QueryRead::Value(json!(" ")));
        let arr = Shape::Array(Scalar::String);
        let exploded = param(Style::Default, true, arr.clone());
        assert_eq!(read(&exploded, "id=&id="), QueryRead::Empty);
        // One value among empty ones: the empty ones are items for the schema to judge.
        assert_eq!(
            read(&exploded, "id=a&id="),
            QueryRead::Value(json!(["a", ""]))
        );
        for style in [Style::Default, Style::Pipe, Style::Space] {
            assert_eq!(
                read(&param(style, false, arr.clone()), "id="),
                QueryRead::Empty
            );
        }
        // Objects read from their own keys have no empty value as a whole.
        let obj = Shape::Object(vec![("a".into(), Scalar::Integer)]);
        assert_eq!(
            read(&param(Style::DeepObject, true, obj.clone()), "id[a]="),
            QueryRead::Value(json!({"a": ""}))
        );
        assert_eq!(
            read(&param(Style::Default, true, obj.clone()), "a="),
            QueryRead::Value(json!({"a": ""}))
        );
        assert_eq!(
            read(&param(Style::Default, false, obj), "id="),
            QueryRead::Empty
        );
    }
}
