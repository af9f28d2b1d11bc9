//! The compiled spec: operations by path template and method, each parameter and body with
//! its schema compiled once, and the responses declared.

use std::path::Path;
use std::sync::Arc;

use http::{HeaderValue, Method};
use jsonschema::json::Json;
use jsonschema::{Draft, Registry, Validator};

use super::tape::TapeJson;
use serde_json::{Value, json};

use super::convert;
use super::load::{Docs, Loc, SpecError};

/// Where a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    /// A path template variable.
    Path,
    /// A query parameter.
    Query,
    /// A request header.
    Header,
    /// A cookie.
    Cookie,
}

impl In {
    /// The name errors and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
            In::Cookie => "cookie",
        }
    }
}

/// A scalar type values in text are coerced to before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// Whole numbers.
    Integer,
    /// Any number.
    Number,
    /// `true` / `false`.
    Boolean,
    /// Kept as text.
    String,
}

/// The shape of a parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// One value.
    Scalar(Scalar),
    /// A list of values.
    Array(Scalar),
    /// Named fields with their types (unknown fields are text).
    Object(Vec<(String, Scalar)>),
}

/// How a parameter is serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `simple` (path, header) or `form` (query, cookie).
    Default,
    /// `a|b`.
    Pipe,
    /// `a b`.
    Space,
    /// `name[field]=value`.
    DeepObject,
    /// `.a,b` (path; exploded `.a.b`).
    Label,
    /// `;name=a,b` (path; exploded `;name=a;name=b`, objects `;k=v;k=v`).
    Matrix,
}

/// A declared parameter.
pub struct Param {
    /// Its name (lower case for headers).
    pub name: String,
    /// Where it is.
    pub loc: In,
    /// Must be present.
    pub required: bool,
    /// Query only: `allowEmptyValue: true`, an empty value (`?q=`, `?q`) is accepted unchecked.
    pub allow_empty: bool,
    /// Serialization style.
    pub style: Style,
    /// Exploded form.
    pub explode: bool,
    /// Value shape, for coercion.
    pub shape: Shape,
    /// Its schema.
    pub schema: Option<Validator>,
}

/// What kind of body a media type holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`, `*/*+json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `multipart/form-data`.
    Multipart,
    /// Anything else: not inspected.
    Other,
}

/// One declared media type of a body.
pub struct Media {
    /// The media range as declared, lower case, without parameters (`application/json`,
    /// `image/*`, `*/*`).
    pub range: String,
    /// How its body is read.
    pub kind: BodyKind,
    /// Field types of form and multipart bodies, for coercion.
    pub fields: Vec<(String, Shape)>,
    /// Its schema.
    pub schema: Option<BodySchema>,
}

/// A body schema, compiled for the representation its bodies are read into.
pub enum BodySchema {
    /// JSON bodies, validated on a [`Tape`] (no `serde_json::Value` built per request).
    Json(Validator<TapeJson>),
    /// Form and multipart bodies, whose fields are gathered into a `Value`.
    Fields(Validator),
}

/// A request body declaration.
pub struct RequestBody {
    /// Must be present.
    pub required: bool,
    /// Declared media types.
    pub media: Vec<Media>,
}

/// A declared response.
pub struct ResponseSpec {
    /// Declared media types (empty: no body expected).
    pub media: Vec<Media>,
}

/// One operation (path template + method).
pub struct Operation {
    /// The path template it belongs to.
    pub template: String,
    /// Parameters, path-item level ones merged in.
    pub params: Vec<Param>,
    /// The request body, if declared.
    pub body: Option<RequestBody>,
    /// Responses by status code or class (`200`, `2XX`).
    pub responses: Vec<(String, ResponseSpec)>,
    /// The `default` response.
    pub default_response: Option<ResponseSpec>,
}

impl Operation {
    /// The response declared for `status`.
    pub fn response(&self, status: u16) -> Option<&ResponseSpec> {
        let exact = status.to_string();
        let class = format!("{}XX", status / 100);
        self.responses
            .iter()
            .find(|(k, _)| *k == exact)
            .or_else(|| {
                self.responses
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&class))
            })
            .map(|(_, r)| r)
            .or(self.default_response.as_ref())
    }
}

/// A segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// Literal text.
    Lit(String),
    /// `prefix{name}suffix`.
    Var {
        /// Text before the variable.
        prefix: String,
        /// Variable name.
        name: String,
        /// Text after it.
        suffix: String,
    },
}

/// A path template and its operations.
pub struct PathEntry {
    /// Its segments.
    pub segs: Vec<Seg>,
    /// Operations by method.
    pub ops: Vec<(Method, Arc<Operation>)>,
    /// The `Allow` value for 405s.
    pub allow: HeaderValue,
}

/// A lint finding about the spec (reported by `validate`).
pub struct Finding {
    /// Lint policy name.
    pub policy: &'static str,
    /// Where in the spec and what.
    pub message: String,
}

/// A compiled spec.
pub struct Spec {
    /// Path prefixes of the `servers` (`""` when none has a path).
    pub base_paths: Vec<String>,
    /// Path templates, concrete ones first.
    pub paths: Vec<PathEntry>,
    /// Lint findings.
    pub findings: Vec<Finding>,
}

const METHODS: &[(&str, Method)] = &[
    ("get", Method::GET),
    ("put", Method::PUT),
    ("post", Method::POST),
    ("delete", Method::DELETE),
    ("options", Method::OPTIONS),
    ("head", Method::HEAD),
    ("patch", Method::PATCH),
    ("trace", Method::TRACE),
];

/// Characters escaped in a JSON pointer used as a URI fragment.
const FRAGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'~')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// The spec's views compiled into registries.
struct Compiler<'d> {
    docs: &'d Docs,
    request: Registry<'static>,
    response: Registry<'static>,
}

impl Compiler<'_> {
    fn validator<F: Json>(&self, loc: &Loc, response: bool) -> Result<Validator<F>, SpecError> {
        let uri = &self.docs.docs[loc.doc].uri;
        let frag = percent_encoding::utf8_percent_encode(&loc.ptr, FRAGMENT);
        let schema = json!({ "$ref": format!("{uri}#{frag}") });
        let reg = if response {
            &self.response
        } else {
            &self.request
        };
        jsonschema::options_for::<F>()
            .with_draft(Draft::Draft202012)
            .with_registry(reg)
            .offline()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| {
                SpecError(format!(
                    "{}: the schema does not compile: {e}",
                    self.docs.describe(loc)
                ))
            })
    }
}

fn registry(docs: &Docs, flag: &str) -> Result<Registry<'static>, SpecError> {
    let mut b = Registry::new().draft(Draft::Draft202012);
    for (i, d) in docs.docs.iter().enumerate() {
        b = b
            .add(&d.uri, convert::view(docs, i, flag))
            .map_err(|e| SpecError(format!("{}: {e}", d.path.display())))?;
    }
    b.prepare()
        .map_err(|e| SpecError(format!("{}: {e}", docs.docs[0].path.display())))
}

/// The coercion type of a (dereferenced) schema.
fn scalar_of(docs: &Docs, doc: usize, schema: &Value) -> Scalar {
    let (_, s) = docs.deref_value(doc, schema);
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"integer") {
        Scalar::Integer
    } else if types.contains(&"number") {
        Scalar::Number
    } else if types.contains(&"boolean") {
        Scalar::Boolean
    } else {
        Scalar::String
    }
}

fn shape_of(docs: &Docs, doc: usize, schema: &Value) -> Shape {
    let (doc, s) = docs.deref_value(doc, schema);
    let ty = |t: &str| {
        s.get("type").is_some_and(|v| match v {
            Value::String(x) => x == t,
            Value::Array(a) => a.iter().any(|x| x == t),
            _ => false,
        })
    };
    if ty("array") || (s.get("items").is_some() && s.get("type").is_none()) {
        let item = s
            .get("items")
            .map_or(Scalar::String, |i| scalar_of(docs, doc, i));
        Shape::Array(item)
    } else if ty("object") || (s.get("properties").is_some() && s.get("type").is_none()) {
        let fields = s
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| {
                p.iter()
                    .map(|(k, v)| (k.clone(), scalar_of(docs, doc, v)))
                    .collect()
            })
            .unwrap_or_default();
        Shape::Object(fields)
    } else {
        Shape::Scalar(scalar_of(docs, doc, s))
    }
}

fn kind_of(range: &str) -> BodyKind {
    if range == "application/json" || range.ends_with("+json") {
        BodyKind::Json
    } else if range == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else if range == "multipart/form-data" {
        BodyKind::Multipart
    } else {
        BodyKind::Other
    }
}

/// Splits a path template into segments.
fn segments(template: &str) -> Vec<Seg> {
    template
        .trim_start_matches('/')
        .split('/')
        .map(|s| match (s.find('{'), s.rfind('}')) {
            (Some(a), Some(b)) if a < b => Seg::Var {
                prefix: s[..a].to_owned(),
                name: s[a + 1..b].to_owned(),
                suffix: s[b + 1..].to_owned(),
            },
            _ => Seg::Lit(s.to_owned()),
        })
        .collect()
}

/// The path of a server URL (`https://h/v1` → `/v1`, `/v1/` → `/v1`, `{var}` → the default).
fn server_path(docs: &Docs, server: &Value) -> Option<String> {
    let mut url = server.get("url")?.as_str()?.to_owned();
    if let Some(vars) = server.get("variables").and_then(Value::as_object) {
        for (k, v) in vars {
            if let Some(d) = v.get("default").and_then(Value::as_str) {
                url = url.replace(&format!("{{{k}}}"), d);
            }
        }
    }
    let _ = docs;
    let path = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("", |j| &url[i + 3 + j..]),
        None => url.as_str(),
    };
    Some(path.trim_end_matches('/').to_owned())
}

/// Loads and compiles the spec at `path`.
pub fn compile(path: &Path) -> Result<Spec, SpecError> {
    let mut docs = Docs::load(path)?;
    let version = docs.docs[0]
        .value
        .get("openapi")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let root = docs.docs[0].path.display().to_string();
    if version.starts_with("3.0") {
        for d in &mut docs.docs {
            convert::from_30(&mut d.value);
        }
    } else if !version.starts_with("3.1") {
        return Err(SpecError(format!(
            "{root}: `openapi: {version}` is not supported; give an OpenAPI 3.0.x or 3.1.x spec"
        )));
    }
    let c = Compiler {
        docs: &docs,
        request: registry(&docs, "readOnly")?,
        response: registry(&docs, "writeOnly")?,
    };
    let rootv = &docs.docs[0].value;
    let mut base_paths: Vec<String> = rootv
        .get("servers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| server_path(&docs, s)).collect())
        .unwrap_or_default();
    if base_paths.is_empty() {
        base_paths.push(String::new());
    }
    base_paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    base_paths.dedup();
    let mut findings = Vec::new();
    let mut paths = Vec::new();
    let paths_loc = Loc {
        doc: 0,
        ptr: "/paths".into(),
    };
    if let Some(Value::Object(ps)) = docs.get(&paths_loc) {
        for template in ps.keys() {
            let Some((item_loc, item)) = docs.deref(&paths_loc.child(template)) else {
                continue;
            };
            let common = item.get("parameters").and_then(Value::as_array);
            let mut ops = Vec::new();
            for (key, method) in METHODS {
                if item.get(*key).is_none() {
                    continue;
                }
                let op_loc = item_loc.child(key);
                let op = c.operation(
                    template,
                    &item_loc,
                    common.is_some(),
                    &op_loc,
                    &mut findings,
                )?;
                ops.push((method.clone(), Arc::new(op)));
            }
            let allow = ops
                .iter()
                .map(|(m, _)| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            paths.push(PathEntry {
                segs: segments(template),
                allow: HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("")),
                ops,
            });
        }
    }
    // Concrete paths before templated ones (`/pets/mine` before `/pets/{id}`).
    paths.sort_by_key(|p| {
        std::cmp::Reverse(
            p.segs
                .iter()
                .map(|s| u32::from(matches!(s, Seg::Lit(_))))
                .sum::<u32>(),
        )
    });
    Ok(Spec {
        base_paths,
        paths,
        findings,
    })
}

impl Compiler<'_> {
    fn operation(
        &self,
        template: &str,
        item_loc: &Loc,
        has_common: bool,
        op_loc: &Loc,
        findings: &mut Vec<Finding>,
    ) -> Result<Operation, SpecError> {
        let docs = self.docs;
        let mut params: Vec<Param> = Vec::new();
        let op_params = op_loc.child("parameters");
        let mut lists = vec![op_params];
        if has_common {
            lists.push(item_loc.child("parameters"));
        }
        for list in lists {
            let n = docs
                .get(&list)
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            for i in 0..n {
                let Some((ploc, p)) = docs.deref(&list.child(&i.to_string())) else {
                    continue;
                };
                let param = self.param(&ploc, p)?;
                // Operation-level parameters override path-item ones of the same name.
                if !params
                    .iter()
                    .any(|q| q.name == param.name && q.loc == param.loc)
                {
                    params.push(param);
                }
            }
        }
        let op = docs.get(op_loc).cloned().unwrap_or(Value::Null);
        let method = op_loc.ptr.rsplit('/').next().unwrap_or("").to_uppercase();
        let body = match docs.deref(&op_loc.child("requestBody")) {
            Some((bloc, b)) => {
                let media = self.media_list(&bloc.child("content"), false)?;
                if media.iter().any(|m| m.schema.is_none()) {
                    findings.push(Finding {
                        policy: "openapi-unvalidated-body",
                        message: format!(
                            "{}: {method} {template}: a request body media type has no schema, so its body is not validated",
                            docs.describe(&bloc)
                        ),
                    });
                }
                Some(RequestBody {
                    required: b.get("required") == Some(&Value::Bool(true)),
                    media,
                })
            }
            None => {
                if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
                    findings.push(Finding {
                        policy: "openapi-unvalidated-body",
                        message: format!(
                            "{}: {method} {template} declares no request body schema, so its body is not validated",
                            docs.describe(op_loc)
                        ),
                    });
                }
                None
            }
        };
        let mut responses = Vec::new();
        let mut default_response = None;
        let rloc = op_loc.child("responses");
        if let Some(Value::Object(rs)) = op.get("responses") {
            for code in rs.keys() {
                let Some((loc, _)) = docs.deref(&rloc.child(code)) else {
                    continue;
                };
                let media = self.media_list(&loc.child("content"), true)?;
                for m in &media {
                    if let Some(Value::Object(s)) =
                        docs.get(&loc.child("content").child(&m.range).child("schema"))
                    {
                        internal_props(
                            docs,
                            loc.doc,
                            &Value::Object(s.clone()),
                            &mut |name| {
                                findings.push(Finding {
                                policy: "openapi-internal-property",
                                message: format!(
                                    "{}: {method} {template}: response {code} schema has property `{name}` marked x-internal: true; it must not reach callers",
                                    docs.describe(&loc)
                                ),
                            });
                            },
                            0,
                        );
                    }
                }
                let spec = ResponseSpec { media };
                if code == "default" {
                    default_response = Some(spec);
                } else {
                    responses.push((code.clone(), spec));
                }
            }
        }
        Ok(Operation {
            template: template.to_owned(),
            params,
            body,
            responses,
            default_response,
        })
    }

    fn param(&self, loc: &Loc, p: &Value) -> Result<Param, SpecError> {
        let docs = self.docs;
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let where_ = match p.get("in").and_then(Value::as_str) {
            Some("path") => In::Path,
            Some("query") => In::Query,
            Some("header") => In::Header,
            Some("cookie") => In::Cookie,
            other => {
                return Err(SpecError(format!(
                    "{}: parameter `{name}` has `in: {}`; expected path, query, header or cookie",
                    docs.describe(loc),
                    other.unwrap_or("(missing)")
                )));
            }
        };
        let style = match p.get("style").and_then(Value::as_str) {
            Some("pipeDelimited") => Style::Pipe,
            Some("spaceDelimited") => Style::Space,
            Some("deepObject") => Style::DeepObject,
            Some("label") => Style::Label,
            Some("matrix") => Style::Matrix,
            _ => Style::Default,
        };
        let default_explode = matches!(where_, In::Query | In::Cookie) && style == Style::Default;
        let explode = p
            .get("explode")
            .and_then(Value::as_bool)
            .unwrap_or(default_explode);
        // A parameter's schema is under `schema`, or under `content.<type>.schema`.
        let schema_loc = if p.get("schema").is_some() {
            Some(loc.child("schema"))
        } else {
            p.get("content")
                .and_then(Value::as_object)
                .and_then(|c| c.keys().next())
                .map(|k| loc.child("content").child(k).child("schema"))
        };
        let (shape, schema) = match &schema_loc {
            Some(sl) => {
                let sv = docs.get(sl).cloned().unwrap_or(Value::Null);
                (
                    shape_of(docs, sl.doc, &sv),
                    Some(self.validator(sl, false)?),
                )
            }
            None => (Shape::Scalar(Scalar::String), None),
        };
        Ok(Param {
            name: if where_ == In::Header {
                name.to_ascii_lowercase()
            } else {
                name
            },
            required: where_ == In::Path || p.get("required") == Some(&Value::Bool(true)),
            allow_empty: where_ == In::Query
                && p.get("allowEmptyValue") == Some(&Value::Bool(true)),
            loc: where_,
            style,
            explode,
            shape,
            schema,
        })
    }

    fn media_list(&self, content: &Loc, response: bool) -> Result<Vec<Media>, SpecError> {
        let docs = self.docs;
        let Some(Value::Object(c)) = docs.get(content) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for range in c.keys() {
            let mloc = content.child(range);
            let norm = range
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let kind = kind_of(&norm);
            let sloc = mloc.child("schema");
            let (schema, fields) = match docs.get(&sloc) {
                Some(sv) if kind != BodyKind::Other => {
                    let fields = match shape_of(docs, sloc.doc, sv) {
                        Shape::Object(_) => {
                            let (d, s) = docs.deref_value(sloc.doc, sv);
                            s.get("properties")
                                .and_then(Value::as_object)
                                .map(|p| {
                                    p.iter()
                                        .map(|(k, v)| (k.clone(), shape_of(docs, d, v)))
                                        .collect()
                                })
                                .unwrap_or_default()
                        }
                        _ => Vec::new(),
                    };
                    let schema = if kind == BodyKind::Json {
                        BodySchema::Json(self.validator(&sloc, response)?)
                    } else {
                        BodySchema::Fields(self.validator(&sloc, response)?)
                    };
                    (Some(schema), fields)
                }
                _ => (None, Vec::new()),
            };
            out.push(Media {
                range: norm,
                kind,
                fields,
                schema,
            });
        }
        Ok(out)
    }
}

/// Calls `found` with each property name marked `x-internal: true` in a schema (a few levels
/// deep, through `$ref`s).
fn internal_props(docs: &Docs, doc: usize, schema: &Value, found: &mut dyn FnMut(&str), depth: u8) {
    if depth > 8 {
        return;
    }
    let (doc, s) = docs.deref_value(doc, schema);
    if let Some(Value::Object(props)) = s.get("properties") {
        for (name, p) in props {
            let (_, p) = docs.deref_value(doc, p);
            if p.get("x-internal") == Some(&Value::Bool(true)) {
                found(name);
            }
            internal_props(docs, doc, p, found, depth + 1);
        }
    }
    if let Some(items) = s.get("items") {
        internal_props(docs, doc, items, found, depth + 1);
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(a)) = s.get(k) {
            for sub in a {
                internal_props(docs, doc, sub, found, depth + 1);
            }
        }
    }
}
