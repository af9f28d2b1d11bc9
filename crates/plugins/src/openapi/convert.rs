//! Schema rewrites done once at load: OpenAPI 3.0's schema dialect to JSON Schema 2020-12, and
//! the request and response views (`readOnly` properties refused in requests, `writeOnly` in
//! responses).

use serde_json::{Map, Value, json};

use super::load::Docs;

/// The marker inside the `not` that forbids a property: lets error messages say why.
pub const FORBIDDEN_MARK: &str = "x-portcullis-forbidden";

/// Keys whose value is a map from names to schemas or other objects, not a schema itself.
fn is_map_key(k: &str) -> bool {
    matches!(
        k,
        "properties"
            | "patternProperties"
            | "$defs"
            | "definitions"
            | "dependentSchemas"
            | "schemas"
            | "paths"
            | "responses"
            | "content"
            | "parameters"
            | "headers"
            | "requestBodies"
            | "securitySchemes"
            | "callbacks"
            | "links"
            | "encoding"
            | "variables"
            | "webhooks"
            | "pathItems"
    )
}

/// Keys whose value is data (examples, defaults) or an extension, never a schema.
fn is_data_key(k: &str) -> bool {
    matches!(k, "example" | "examples" | "enum" | "const" | "default") || k.starts_with("x-")
}

/// Calls `f` on every object that may be a schema, children after their parent.
fn walk(v: &mut Value, is_map: bool, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(m) => {
            if !is_map {
                f(m);
            }
            for (k, child) in m.iter_mut() {
                if !is_map && is_data_key(k) {
                    continue;
                }
                walk(child, !is_map && is_map_key(k), f);
            }
        }
        Value::Array(a) => {
            for child in a {
                walk(child, false, f);
            }
        }
        _ => {}
    }
}

/// Rewrites OpenAPI 3.0 schemas as JSON Schema: `nullable`, boolean `exclusiveMinimum` /
/// `exclusiveMaximum`, `example` (dropped).
pub fn from_30(doc: &mut Value) {
    walk(doc, false, &mut |m| {
        m.remove("example");
        for (flag, bound) in [
            ("exclusiveMinimum", "minimum"),
            ("exclusiveMaximum", "maximum"),
        ] {
            if let Some(Value::Bool(b)) = m.get(flag).cloned() {
                m.remove(flag);
                if b && let Some(n) = m.remove(bound) {
                    m.insert(flag.into(), n);
                }
            }
        }
        if m.get("nullable") == Some(&Value::Bool(true)) {
            m.remove("nullable");
            match m.get_mut("type") {
                Some(Value::String(t)) => {
                    let t = t.clone();
                    m.insert("type".into(), json!([t, "null"]));
                    if let Some(Value::Array(e)) = m.get_mut("enum")
                        && !e.contains(&Value::Null)
                    {
                        e.push(Value::Null);
                    }
                }
                _ => {
                    let rest = Value::Object(std::mem::take(m));
                    m.insert("anyOf".into(), json!([rest, {"type": "null"}]));
                }
            }
        } else {
            m.remove("nullable");
        }
    });
}

/// The schema that refuses any value, marked with why.
fn forbidden(why: &str) -> Value {
    json!({ "not": { FORBIDDEN_MARK: why } })
}

/// A copy of document `doc` in which properties flagged `flag` (`readOnly` or `writeOnly`)
/// are refused and no longer required. Flags behind a `$ref` count too.
pub fn view(docs: &Docs, doc: usize, flag: &str) -> Value {
    let mut v = docs.docs[doc].value.clone();
    let why = if flag == "readOnly" {
        "read-only: not allowed in a request"
    } else {
        "write-only: not allowed in a response"
    };
    walk(&mut v, false, &mut |m| {
        let Some(Value::Object(props)) = m.get_mut("properties") else {
            return;
        };
        let mut names = Vec::new();
        for (name, schema) in props.iter_mut() {
            let (_, target) = docs.deref_value(doc, schema);
            if target.get(flag) == Some(&Value::Bool(true)) {
                *schema = forbidden(why);
                names.push(name.clone());
            }
        }
        if names.is_empty() {
            return;
        }
        if let Some(Value::Array(req)) = m.get_mut("required") {
            req.retain(|r| !r.as_str().is_some_and(|r| names.iter().any(|n| n == r)));
            if req.is_empty() {
                m.remove("required");
            }
        }
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_and_exclusive_bounds_become_json_schema() {
        let mut v = json!({"components": {"schemas": {
            "A": {"type": "integer", "nullable": true, "minimum": 1, "exclusiveMinimum": true,
                  "maximum": 9, "exclusiveMaximum": false, "example": 3},
            "B": {"allOf": [{"$ref": "#/components/schemas/A"}], "nullable": true},
            "C": {"type": "object", "properties": {"example": {"type": "string"}, "nullable": {"type": "boolean"}}},
            "E": {"type": "string", "enum": ["a"], "nullable": true}
        }}});
        from_30(&mut v);
        let s = &v["components"]["schemas"];
        assert_eq!(
            s["A"],
            json!({"type": ["integer", "null"], "exclusiveMinimum": 1, "maximum": 9})
        );
        assert_eq!(s["B"]["anyOf"][1], json!({"type": "null"}));
        assert_eq!(
            s["B"]["anyOf"][0]["allOf"][0]["$ref"],
            "#/components/schemas/A"
        );
        // Property names are not keywords.
        assert_eq!(s["C"]["properties"]["example"], json!({"type": "string"}));
        assert_eq!(s["C"]["properties"]["nullable"], json!({"type": "boolean"}));
        assert_eq!(s["E"]["enum"], json!(["a", null]));
    }
}
