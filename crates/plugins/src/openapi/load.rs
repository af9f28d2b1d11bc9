//! Reading a spec and the files its `$ref`s name: YAML (with positions) or JSON, every
//! reference checked at load so that a broken spec refuses the config instead of failing
//! requests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use portcullis_config::SourceMap;
use serde_json::Value;

/// A spec could not be loaded; the message names the file and, where known, line and column.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// One loaded file of a spec.
#[derive(Debug)]
pub struct Doc {
    /// Canonical path.
    pub path: PathBuf,
    /// The URI its schemas are registered under for `$ref` resolution.
    pub uri: String,
    /// Its content.
    pub value: Value,
    /// Positions of its nodes (YAML files only).
    map: Option<SourceMap>,
}

/// The root document and every file reached from it through `$ref`.
#[derive(Debug)]
pub struct Docs {
    /// Index 0 is the root.
    pub docs: Vec<Doc>,
    by_path: HashMap<PathBuf, usize>,
}

/// Where a node lives: a document and a JSON pointer into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    /// Index into [`Docs::docs`].
    pub doc: usize,
    /// JSON pointer (`""` for the root).
    pub ptr: String,
}

impl Loc {
    /// The location of a child node.
    pub fn child(&self, key: &str) -> Loc {
        Loc {
            doc: self.doc,
            ptr: format!("{}/{}", self.ptr, key.replace('~', "~0").replace('/', "~1")),
        }
    }
}

/// `file:line:col` (or just the file) of a pointer in a document, for messages.
fn describe(doc: &Doc, ptr: &str) -> String {
    let pos = doc
        .map
        .as_ref()
        .and_then(|m| m.locate(&pointer_to_path(&doc.value, ptr)));
    match pos {
        Some(p) => format!("{}:{}:{}", doc.path.display(), p.line, p.col),
        None => doc.path.display().to_string(),
    }
}

/// A JSON pointer in the source map's path syntax (`a.b[2].c`).
fn pointer_to_path(root: &Value, ptr: &str) -> String {
    let mut out = String::new();
    let mut cur = Some(root);
    for seg in ptr.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        match cur {
            Some(Value::Array(a)) => {
                out.push_str(&format!("[{seg}]"));
                cur = seg.parse::<usize>().ok().and_then(|i| a.get(i));
            }
            other => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&seg);
                cur = other.and_then(|v| v.get(&seg));
            }
        }
    }
    out
}

fn parse_file(path: &Path) -> Result<(Value, Option<SourceMap>), SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError(format!("{}: cannot read the spec: {e}", path.display())))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        return serde_json::from_str(&text).map(|v| (v, None)).map_err(|e| {
            SpecError(format!(
                "{}:{}:{}: invalid JSON: {e}",
                path.display(),
                e.line(),
                e.column()
            ))
        });
    }
    // `${...}` in a spec is text, not an environment variable: give it back unchanged.
    let keep = |name: &str| Some(format!("${{{name}}}"));
    portcullis_config::source::parse(&text, &keep)
        .map(|(v, m)| (v, Some(m)))
        .map_err(|errs| {
            let e = errs.into_iter().next();
            let (pos, msg) = match e {
                Some(e) => (e.pos, e.message),
                None => (None, "invalid YAML".into()),
            };
            match pos {
                Some(p) => SpecError(format!("{}:{}:{}: {msg}", path.display(), p.line, p.col)),
                None => SpecError(format!("{}: {msg}", path.display())),
            }
        })
}

fn file_uri(path: &Path) -> String {
    let s = path.to_string_lossy().replace('\\', "/");
    let mut out = String::from("file://");
    for c in s.chars() {
        match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '/' | '-' | '_' | '.' | '~' => out.push(c),
            _ => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

/// Follows a JSON pointer.
pub fn lookup<'v>(v: &'v Value, ptr: &str) -> Option<&'v Value> {
    if ptr.is_empty() {
        return Some(v);
    }
    let ptr = percent_encoding::percent_decode_str(ptr)
        .decode_utf8()
        .ok()?;
    v.pointer(&ptr)
}

impl Docs {
    /// Loads `path` and every file its `$ref`s reach, checking that each reference resolves.
    pub fn load(path: &Path) -> Result<Docs, SpecError> {
        let path = path
            .canonicalize()
            .map_err(|e| SpecError(format!("{}: cannot read the spec: {e}", path.display())))?;
        let mut docs = Docs {
            docs: Vec::new(),
            by_path: HashMap::new(),
        };
        docs.add(path)?;
        let mut i = 0;
        while i < docs.docs.len() {
            let mut refs = Vec::new();
            collect_refs(&docs.docs[i].value, String::new(), &mut refs);
            for (ptr, r) in refs {
                docs.check_ref(i, &ptr, &r)?;
            }
            i += 1;
        }
        Ok(docs)
    }

    fn add(&mut self, path: PathBuf) -> Result<usize, SpecError> {
        if let Some(&i) = self.by_path.get(&path) {
            return Ok(i);
        }
        let (value, map) = parse_file(&path)?;
        let i = self.docs.len();
        self.docs.push(Doc {
            uri: file_uri(&path),
            path: path.clone(),
            value,
            map,
        });
        self.by_path.insert(path, i);
        Ok(i)
    }

    /// `file:line:col` of a location, for messages.
    pub fn describe(&self, loc: &Loc) -> String {
        describe(&self.docs[loc.doc], &loc.ptr)
    }

    fn check_ref(&mut self, doc: usize, at: &str, r: &str) -> Result<(), SpecError> {
        let here_text = describe(&self.docs[doc], at);
        let here = || here_text.clone();
        let (file, frag) = r.split_once('#').unwrap_or((r, ""));
        if file.contains("://") || file.starts_with("//") {
            return Err(SpecError(format!(
                "{}: $ref `{r}`: only references inside the spec and to files beside it are supported",
                here()
            )));
        }
        let target = if file.is_empty() {
            doc
        } else {
            let dir = self.docs[doc].path.parent().unwrap_or(Path::new("/"));
            let decoded = percent_encoding::percent_decode_str(file).decode_utf8_lossy();
            let p = dir.join(decoded.as_ref());
            let p = p.canonicalize().map_err(|e| {
                SpecError(format!(
                    "{}: $ref `{r}`: cannot read {}: {e}",
                    here(),
                    p.display()
                ))
            })?;
            self.add(p)
                .map_err(|e| SpecError(format!("{}: $ref `{r}`: {}", here(), e.0)))?
        };
        // Plain-name fragments are `$anchor`s, resolved by the schema compiler.
        if (frag.is_empty() || frag.starts_with('/'))
            && lookup(&self.docs[target].value, frag).is_none()
        {
            return Err(SpecError(format!(
                "{}: $ref `{r}` does not resolve",
                here()
            )));
        }
        Ok(())
    }

    /// Resolves a `$ref` found in the document of `from` to a location.
    pub fn resolve_ref(&self, from: usize, r: &str) -> Option<Loc> {
        let (file, frag) = r.split_once('#').unwrap_or((r, ""));
        let doc = if file.is_empty() {
            from
        } else {
            let dir = self.docs[from].path.parent()?;
            let decoded = percent_encoding::percent_decode_str(file).decode_utf8_lossy();
            let p = dir.join(decoded.as_ref()).canonicalize().ok()?;
            *self.by_path.get(&p)?
        };
        Some(Loc {
            doc,
            ptr: frag.to_owned(),
        })
    }

    /// The node at `loc`.
    pub fn get(&self, loc: &Loc) -> Option<&Value> {
        lookup(&self.docs[loc.doc].value, &loc.ptr)
    }

    /// The node at `loc` with `$ref`s followed (a few levels), and where it really is.
    pub fn deref(&self, loc: &Loc) -> Option<(Loc, &Value)> {
        let mut loc = loc.clone();
        for _ in 0..16 {
            let v = self.get(&loc)?;
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => loc = self.resolve_ref(loc.doc, r)?,
                None => return Some((loc, v)),
            }
        }
        None
    }

    /// Follows `$ref`s of a schema value found in document `doc` (a few levels).
    pub fn deref_value<'a>(&'a self, doc: usize, v: &'a Value) -> (usize, &'a Value) {
        let mut cur = (doc, v);
        for _ in 0..16 {
            match cur.1.get("$ref").and_then(Value::as_str) {
                Some(r) => match self.resolve_ref(cur.0, r).and_then(|l| {
                    let d = l.doc;
                    self.get(&l).map(|v| (d, v))
                }) {
                    Some(next) => cur = next,
                    None => return cur,
                },
                None => return cur,
            }
        }
        cur
    }
}

/// Every `$ref` string in a document, with the pointer of the object holding it. Example
/// values are skipped: they are data, not references.
fn collect_refs(v: &Value, ptr: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push((ptr.clone(), r.clone()));
            }
            for (k, child) in m {
                if matches!(
                    k.as_str(),
                    "example" | "examples" | "enum" | "const" | "default"
                ) && !child.is_object()
                    || k == "example"
                    || k.starts_with("x-")
                {
                    continue;
                }
                let p = format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1"));
                collect_refs(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                collect_refs(child, format!("{ptr}/{i}"), out);
            }
        }
        _ => {}
    }
}
