//! Descriptors: a FileDescriptorSet or `.proto` files compiled at load, with the Google API
//! annotations embedded, and the HTTP bindings their `google.api.http` options declare.

use std::path::Path;
use std::sync::Arc;

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use super::template::Template;

/// The Google API files every user gets without shipping them.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "google/api/annotations.proto",
        include_str!("protos/google/api/annotations.proto"),
    ),
    (
        "google/api/http.proto",
        include_str!("protos/google/api/http.proto"),
    ),
    (
        "google/api/httpbody.proto",
        include_str!("protos/google/api/httpbody.proto"),
    ),
    (
        "google/rpc/status.proto",
        include_str!("protos/google/rpc/status.proto"),
    ),
];

/// Full name of `google.api.HttpBody`.
pub const HTTP_BODY: &str = "google.api.HttpBody";

/// Resolves the embedded Google API files.
struct Embedded;

impl FileResolver for Embedded {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match EMBEDDED.iter().find(|(n, _)| *n == name) {
            Some((n, src)) => File::from_source(n, src),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Where the request message comes from.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body: every field not in the path from the query.
    None,
    /// `body: "*"`: the whole message from the body.
    All,
    /// `body: "field"`: that field from the body, the rest from the query.
    Field(FieldDescriptor),
}

/// One HTTP binding of a gRPC method.
#[derive(Debug)]
pub struct Binding {
    /// HTTP method; `None` for a custom `*` pattern (any method).
    pub method: Option<Method>,
    /// Path template.
    pub template: Template,
    /// The fields the template's variables set, resolved.
    pub var_fields: Vec<Vec<FieldDescriptor>>,
    /// Body mapping.
    pub body: BodyRule,
    /// `response_body`: the response field sent as the body.
    pub response_body: Option<FieldDescriptor>,
    /// The gRPC method.
    pub rpc: MethodDescriptor,
    /// `/package.Service/Method`.
    pub grpc_path: http::uri::PathAndQuery,
}

impl Binding {
    /// `GET /v1/x/{id}` for the admin API.
    pub fn describe(&self) -> (String, String) {
        (
            self.method
                .as_ref()
                .map_or_else(|| "*".to_owned(), |m| m.as_str().to_owned()),
            self.template.display(),
        )
    }
}

/// The descriptors of a route: the pool and the bindings of its services.
#[derive(Debug)]
pub struct Api {
    /// Every descriptor loaded (for `Any` in error details).
    pub pool: DescriptorPool,
    /// Bindings, most specific first.
    pub bindings: Vec<Arc<Binding>>,
}

/// Where the descriptors come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A FileDescriptorSet file.
    Set(std::path::PathBuf),
    /// `.proto` files and include directories.
    Protos {
        /// Files to compile.
        files: Vec<std::path::PathBuf>,
        /// Include directories.
        include: Vec<std::path::PathBuf>,
    },
}

/// The embedded Google API files and the well-known types they import.
fn embedded_compiler() -> Result<protox::Compiler, String> {
    let mut chain = ChainFileResolver::new();
    chain.add(Embedded);
    chain.add(GoogleFileResolver::new());
    let mut c = protox::Compiler::with_file_resolver(chain);
    let names: Vec<&str> = EMBEDDED.iter().map(|(n, _)| *n).collect();
    c.open_files(names)
        .map_err(|e| format!("the built-in Google API files: {e}"))?;
    Ok(c)
}

/// Loads the pool, with the Google API files always in it (so `google.rpc.Status` details and
/// `HttpBody` are known). Errors name the file and the reason.
pub fn load_pool(source: &Source) -> Result<DescriptorPool, String> {
    match source {
        Source::Set(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read descriptor set {}: {e}", path.display()))?;
            // Decoded by prost-reflect itself so that options (the http annotations) survive;
            // files the set repeats from the built-in ones are skipped.
            let mut pool = embedded_compiler()?.descriptor_pool();
            pool.decode_file_descriptor_set(bytes.as_slice())
                .map_err(|e| format!("descriptor set {}: {e}", path.display()))?;
            Ok(pool)
        }
        Source::Protos { files, include } => {
            let mut chain = ChainFileResolver::new();
            for i in include {
                chain.add(protox::file::IncludeFileResolver::new(i.clone()));
            }
            chain.add(Embedded);
            chain.add(GoogleFileResolver::new());
            let mut c = protox::Compiler::with_file_resolver(chain);
            for f in files {
                c.open_file(f)
                    .map_err(|e| format!("{}: {e}", f.display()))?;
            }
            for (name, _) in EMBEDDED {
                c.open_file(name)
                    .map_err(|e| format!("the built-in {name}: {e}"))?;
            }
            Ok(c.descriptor_pool())
        }
    }
}

/// The bindings of `services` in `pool`.
pub fn bindings(pool: &DescriptorPool, services: &[String]) -> Result<Vec<Arc<Binding>>, String> {
    let ext = pool
        .get_extension_by_name("google.api.http")
        .ok_or("google/api/annotations.proto is not loaded")?;
    let mut out = Vec::new();
    for name in services {
        let svc = pool.get_service_by_name(name).ok_or_else(|| {
            let known: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
            format!(
                "unknown service `{name}`; the descriptors have: {}",
                known.join(", ")
            )
        })?;
        let file = svc.parent_file().name().to_owned();
        for m in svc.methods() {
            let opts = m.options();
            if !opts.has_extension(&ext) {
                continue;
            }
            let Value::Message(rule) = opts.get_extension(&ext).into_owned() else {
                continue;
            };
            let at = |e: String| format!("{file}: {}: {e}", m.full_name());
            out.push(Arc::new(binding(&rule, &m).map_err(at)?));
            if let Some(Value::List(extra)) =
                rule.get_field_by_name("additional_bindings").as_deref()
            {
                for r in extra {
                    if let Value::Message(r) = r {
                        out.push(Arc::new(binding(r, &m).map_err(at)?));
                    }
                }
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no method of {} has a google.api.http option",
            services.join(", ")
        ));
    }
    out.sort_by_key(|b| std::cmp::Reverse(b.template.specificity()));
    Ok(out)
}

fn str_field(m: &DynamicMessage, name: &str) -> String {
    m.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn binding(rule: &DynamicMessage, m: &MethodDescriptor) -> Result<Binding, String> {
    let mut pattern = None;
    for (name, method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(name) {
            pattern = Some((Some(method), str_field(rule, name)));
        }
    }
    if let Some(Value::Message(c)) = rule
        .has_field_by_name("custom")
        .then(|| rule.get_field_by_name("custom"))
        .flatten()
        .as_deref()
    {
        let kind = str_field(c, "kind");
        let method = if kind == "*" {
            None
        } else {
            Some(
                Method::from_bytes(kind.as_bytes())
                    .map_err(|_| format!("bad custom HTTP method `{kind}`"))?,
            )
        };
        pattern = Some((method, str_field(c, "path")));
    }
    let (method, path) = pattern.ok_or("the http rule has no pattern (get, post, ...)")?;
    let template = Template::parse(&path).map_err(|e| e.to_string())?;
    let input = m.input();
    let mut var_fields = Vec::new();
    for v in &template.vars {
        let fields = field_path(&input, &v.field_path)?;
        if let Some(last) = fields.last()
            && (last.is_list() || last.is_map() || matches!(last.kind(), Kind::Message(_)))
        {
            return Err(format!(
                "path variable `{}` must name a scalar field",
                v.field_path.join(".")
            ));
        }
        var_fields.push(fields);
    }
    let body = match str_field(rule, "body").as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::All,
        f => BodyRule::Field(
            input
                .get_field_by_name(f)
                .ok_or_else(|| format!("body field `{f}` is not in {}", input.full_name()))?,
        ),
    };
    let response_body = match str_field(rule, "response_body").as_str() {
        "" => None,
        f => Some(m.output().get_field_by_name(f).ok_or_else(|| {
            format!(
                "response_body field `{f}` is not in {}",
                m.output().full_name()
            )
        })?),
    };
    let grpc_path = format!("/{}/{}", m.parent_service().full_name(), m.name())
        .parse()
        .map_err(|_| format!("method name `{}` is not a valid path", m.full_name()))?;
    Ok(Binding {
        method,
        template,
        var_fields,
        body,
        response_body,
        rpc: m.clone(),
        grpc_path,
    })
}

/// Resolves `a.b.c` in `msg`: every step but the last a singular message field.
pub fn field_path(
    msg: &MessageDescriptor,
    path: &[String],
) -> Result<Vec<FieldDescriptor>, String> {
    let mut cur = msg.clone();
    let mut out = Vec::new();
    for (i, name) in path.iter().enumerate() {
        let f = cur
            .get_field_by_name(name)
            .or_else(|| cur.get_field_by_json_name(name))
            .ok_or_else(|| {
                format!(
                    "field `{}` is not in {}",
                    path[..=i].join("."),
                    msg.full_name()
                )
            })?;
        if i + 1 < path.len() {
            match f.kind() {
                Kind::Message(m) if !f.is_list() && !f.is_map() => cur = m,
                _ => {
                    return Err(format!(
                        "`{}` is not a singular message field",
                        path[..=i].join(".")
                    ));
                }
            }
        }
        out.push(f);
    }
    Ok(out)
}

/// Whether `path` is a file a base directory should resolve.
pub fn resolve(base: &Path, p: &str) -> std::path::PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
