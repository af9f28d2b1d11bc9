//! YAML text → JSON value tree, with a map from every field path to its position in the file.
//!
//! Why not deserialize the YAML straight into the config structs: the contract wants every
//! error — a parse error, an unknown key, a bad duration found during validation, a plugin
//! config rejected by the plugin itself — to name the file, line and column of the field. Serde
//! deserializers report positions only for their own errors, so we keep a side table keyed by
//! the same path syntax `serde_path_to_error` prints (`routes[2].match.path_prefix`) and look
//! any later error up in it. `${NAME}` interpolation happens here too, on scalar values only, so
//! a secret containing YAML punctuation cannot change the document's structure.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

use crate::error::{ConfigError, Pos};

/// Positions of every node of a parsed document, keyed by field path.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    positions: HashMap<String, Pos>,
}

impl SourceMap {
    /// Position of the node at `path`, or of its nearest ancestor that has one.
    pub fn locate(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    /// Position of the node at exactly `path`.
    pub fn exact(&self, path: &str) -> Option<Pos> {
        self.positions.get(path).copied()
    }
}

/// Resolves `${NAME}`; `None` means unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Parses one YAML document into a JSON value and its source map.
pub fn parse(text: &str, env: EnvLookup<'_>) -> Result<(Value, SourceMap), Vec<ConfigError>> {
    let mut b = Builder {
        map: SourceMap::default(),
        anchors: HashMap::new(),
        errors: Vec::new(),
        env,
    };
    let mut events = Parser::new_from_str(text).peekable();
    let mut root = Value::Null;
    let mut seen_doc = false;
    while let Some(next) = events.next() {
        match next {
            Err(e) => {
                let m = e.marker();
                b.errors.push(ConfigError::at(
                    Pos::new(m.line(), m.col() + 1),
                    "",
                    format!("YAML syntax error: {}", e.info()),
                ));
                return Err(b.errors);
            }
            Ok((Event::DocumentStart(_), _)) => {
                if seen_doc {
                    b.errors.push(ConfigError::new(
                        "",
                        "the file holds several YAML documents; put the whole config in one",
                    ));
                    return Err(b.errors);
                }
                seen_doc = true;
                root = match b.node(&mut events, String::new()) {
                    Ok(v) => v,
                    Err(e) => {
                        b.errors.push(e);
                        return Err(b.errors);
                    }
                };
            }
            Ok(_) => {}
        }
    }
    if b.errors.is_empty() {
        Ok((root, b.map))
    } else {
        Err(b.errors)
    }
}

struct Builder<'e> {
    map: SourceMap,
    anchors: HashMap<usize, Value>,
    errors: Vec<ConfigError>,
    env: EnvLookup<'e>,
}

type Events<'i> = std::iter::Peekable<Parser<'i, saphyr_parser::StrInput<'i>>>;

fn pos_of(span: &Span) -> Pos {
    Pos::new(span.start.line(), span.start.col() + 1)
}

impl Builder<'_> {
    fn next(&mut self, events: &mut Events<'_>) -> Result<(Event<'static>, Span), ConfigError> {
        match events.next() {
            Some(Ok((ev, span))) => Ok((into_owned(ev), span)),
            Some(Err(e)) => {
                let m = e.marker();
                Err(ConfigError::at(
                    Pos::new(m.line(), m.col() + 1),
                    "",
                    format!("YAML syntax error: {}", e.info()),
                ))
            }
            None => Err(ConfigError::new("", "unexpected end of YAML input")),
        }
    }

    /// Reads one node (scalar, sequence or mapping) whose path is `path`.
    fn node(&mut self, events: &mut Events<'_>, path: String) -> Result<Value, ConfigError> {
        let (ev, span) = self.next(events)?;
        let pos = pos_of(&span);
        self.map.positions.entry(path.clone()).or_insert(pos);
        let (value, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let forced_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let text = self.interpolate(&text, pos, &path);
                (scalar(text, style, forced_str), anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    if matches!(events.peek(), Some(Ok((Event::SequenceEnd, _)))) {
                        events.next();
                        break;
                    }
                    let item_path = format!("{path}[{}]", items.len());
                    items.push(self.node(events, item_path)?);
                }
                (Value::Array(items), anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut obj = Map::new();
                loop {
                    if matches!(events.peek(), Some(Ok((Event::MappingEnd, _)))) {
                        events.next();
                        break;
                    }
                    let (kev, kspan) = self.next(events)?;
                    let kpos = pos_of(&kspan);
                    let key = match kev {
                        Event::Scalar(k, _, _, _) => k.into_owned(),
                        _ => {
                            return Err(ConfigError::at(
                                kpos,
                                &path,
                                "mapping keys must be plain strings",
                            ));
                        }
                    };
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if obj.contains_key(&key) {
                        self.errors.push(ConfigError::at(
                            kpos,
                            &child,
                            format!("duplicate key `{key}`"),
                        ));
                    }
                    // The key's position is what users look for: it is where the field starts.
                    self.map.positions.insert(child.clone(), kpos);
                    let v = self.node(events, child)?;
                    obj.insert(key, v);
                }
                (Value::Object(obj), anchor)
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(v) => (v.clone(), 0),
                None => return Err(ConfigError::at(pos, &path, "unknown YAML alias")),
            },
            other => {
                return Err(ConfigError::at(
                    pos,
                    &path,
                    format!("unexpected YAML event {other:?}"),
                ));
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        Ok(value)
    }

    /// Replaces `${NAME}` with the environment variable NAME; `$${` is a literal `${`.
    fn interpolate(&mut self, text: &str, pos: Pos, path: &str) -> String {
        if !text.contains("${") {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(t) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = t;
            } else if let Some(t) = tail.strip_prefix("${") {
                match t.find('}') {
                    Some(end) => {
                        let name = &t[..end];
                        match (self.env)(name) {
                            Some(v) => out.push_str(&v),
                            None => self.errors.push(ConfigError::at(
                                pos,
                                path,
                                format!("environment variable `{name}` is not set"),
                            )),
                        }
                        rest = &t[end + 1..];
                    }
                    None => {
                        self.errors.push(ConfigError::at(
                            pos,
                            path,
                            "unterminated `${` (write `$${` for a literal)",
                        ));
                        out.push_str(t);
                        rest = "";
                    }
                }
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out
    }
}

fn into_owned(ev: Event<'_>) -> Event<'static> {
    match ev {
        Event::Scalar(s, st, a, t) => Event::Scalar(
            s.into_owned().into(),
            st,
            a,
            t.map(|t| std::borrow::Cow::Owned(t.into_owned())),
        ),
        Event::SequenceStart(a, t) => {
            Event::SequenceStart(a, t.map(|t| std::borrow::Cow::Owned(t.into_owned())))
        }
        Event::MappingStart(a, t) => {
            Event::MappingStart(a, t.map(|t| std::borrow::Cow::Owned(t.into_owned())))
        }
        Event::Alias(a) => Event::Alias(a),
        Event::Nothing => Event::Nothing,
        Event::StreamStart => Event::StreamStart,
        Event::StreamEnd => Event::StreamEnd,
        Event::DocumentStart(b) => Event::DocumentStart(b),
        Event::DocumentEnd => Event::DocumentEnd,
        Event::SequenceEnd => Event::SequenceEnd,
        Event::MappingEnd => Event::MappingEnd,
    }
}

/// Resolves a scalar by the YAML 1.2 core schema: plain `null`/`true`/numbers get their type,
/// quoted scalars are always strings.
fn scalar(text: String, style: ScalarStyle, forced_str: bool) -> Value {
    if style != ScalarStyle::Plain || forced_str {
        return Value::String(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let looks_numeric = text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.');
    if looks_numeric {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Number(i.into());
        }
        if let Ok(u) = text.parse::<u64>() {
            return Value::Number(u.into());
        }
        if text
            .bytes()
            .all(|b| b.is_ascii_digit() || b".+-eE".contains(&b))
            && let Ok(f) = text.parse::<f64>()
            && let Some(n) = Number::from_f64(f)
        {
            return Value::Number(n);
        }
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn paths_point_at_keys() {
        let text = "a:\n  b: 1\nlist:\n  - x: y\n  - z\n";
        let (v, map) = parse(text, &no_env).unwrap();
        assert_eq!(v["a"]["b"], 1);
        assert_eq!(map.exact("a.b"), Some(Pos::new(2, 3)));
        assert_eq!(map.exact("list[0].x"), Some(Pos::new(4, 5)));
        assert_eq!(map.exact("list[1]"), Some(Pos::new(5, 5)));
        assert_eq!(map.locate("list[0].x.nothing"), Some(Pos::new(4, 5)));
    }

    /// A lone carriage return is a line break in YAML (found by the yaml_source fuzz target):
    /// positions count it, as an editor that honours it would.
    #[test]
    fn lone_carriage_returns_break_lines() {
        let (_, map) = parse("a: 1\r\rb: 2\r\nc: 3\n", &no_env).unwrap();
        assert_eq!(map.exact("b"), Some(Pos::new(3, 1)));
        assert_eq!(map.exact("c"), Some(Pos::new(4, 1)));
    }

    #[test]
    fn scalars_follow_core_schema() {
        let (v, _) = parse(
            "a: 1\nb: '1'\nc: 1.5\nd: true\ne: ~\nf: 127.0.0.1:80\ng: 1s",
            &no_env,
        )
        .unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"], "1");
        assert_eq!(v["c"], 1.5);
        assert_eq!(v["d"], true);
        assert!(v["e"].is_null());
        assert_eq!(v["f"], "127.0.0.1:80");
        assert_eq!(v["g"], "1s");
    }

    #[test]
    fn interpolates_env_in_quoted_and_plain_scalars() {
        let env = |n: &str| (n == "SECRET").then(|| "s3: #cret".to_string());
        let (v, _) = parse("a: ${SECRET}\nb: \"x-${SECRET}\"\nc: $${LIT}", &env).unwrap();
        assert_eq!(v["a"], "s3: #cret");
        assert_eq!(v["b"], "x-s3: #cret");
        assert_eq!(v["c"], "${LIT}");
    }

    #[test]
    fn unset_env_is_an_error_with_position() {
        let errs = parse("x: 1\ntoken: ${NOPE}\n", &no_env).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].pos, Some(Pos::new(2, 8)));
        assert!(errs[0].message.contains("NOPE"));
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_are_reported() {
        let errs = parse("a: 1\na: 2\n", &no_env).unwrap_err();
        assert!(errs[0].message.contains("duplicate key"));
        assert_eq!(errs[0].pos, Some(Pos::new(2, 1)));
        let errs = parse("a: [1, 2\nb: 3", &no_env).unwrap_err();
        assert!(errs[0].message.contains("YAML syntax error"));
    }

    #[test]
    fn anchors_and_aliases_resolve() {
        let (v, _) = parse("base: &t { connect: 1s }\nother: *t\n", &no_env).unwrap();
        assert_eq!(v["other"]["connect"], "1s");
    }
}
