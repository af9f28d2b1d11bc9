//! `google.api.HttpRule` path templates: parsing and matching.
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `{var}` is `{var=*}`. `**` matches zero or more segments and must be the last segment.
//! Variables do not nest.

use percent_encoding::percent_decode_str;

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The segments, in order.
    pub segments: Vec<Segment>,
    /// Variables: field path and the range of segments they bind.
    pub vars: Vec<Variable>,
    /// Custom verb (`:cancel`), without the colon.
    pub verb: Option<String>,
}

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches this text exactly.
    Literal(String),
    /// `*`: any one segment.
    Single,
    /// `**`: zero or more segments (last only).
    Multi,
}

/// A variable of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Field path, e.g. `["book", "name"]`.
    pub field_path: Vec<String>,
    /// First segment bound.
    pub start: usize,
    /// One past the last segment bound.
    pub end: usize,
}

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad path template `{template}`: {reason}")]
pub struct TemplateError {
    /// The template text.
    pub template: String,
    /// What is wrong.
    pub reason: String,
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    segments: Vec<Segment>,
    vars: Vec<Variable>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn segments(&mut self, in_var: bool) -> Result<(), String> {
        loop {
            self.segment(in_var)?;
            if !self.eat(b'/') {
                return Ok(());
            }
        }
    }

    fn segment(&mut self, in_var: bool) -> Result<(), String> {
        match self.peek() {
            Some(b'*') => {
                self.pos += 1;
                if self.eat(b'*') {
                    self.segments.push(Segment::Multi);
                } else {
                    self.segments.push(Segment::Single);
                }
                Ok(())
            }
            Some(b'{') => {
                if in_var {
                    return Err("variables cannot nest".into());
                }
                self.pos += 1;
                self.variable()
            }
            _ => {
                let lit = self.literal();
                if lit.is_empty() {
                    return Err(format!("empty segment at byte {}", self.pos));
                }
                self.segments.push(Segment::Literal(lit));
                Ok(())
            }
        }
    }

    /// Literal text up to `/`, `:`, `{`, `}`, `=` or `*`.
    fn literal(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(c, b'/' | b':' | b'{' | b'}' | b'=' | b'*') {
                break;
            }
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    fn variable(&mut self) -> Result<(), String> {
        let mut path = Vec::new();
        loop {
            let start = self.pos;
            while let Some(c) = self.peek() {
                if c.is_ascii_alphanumeric() || c == b'_' {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            let ident = &self.s[start..self.pos];
            if ident.is_empty() || ident[0].is_ascii_digit() {
                return Err(format!("bad field name in variable at byte {start}"));
            }
            path.push(String::from_utf8_lossy(ident).into_owned());
            if !self.eat(b'.') {
                break;
            }
        }
        let start = self.segments.len();
        if self.eat(b'=') {
            self.segments(true)?;
        } else {
            self.segments.push(Segment::Single);
        }
        if !self.eat(b'}') {
            return Err(format!("variable not closed at byte {}", self.pos));
        }
        if self.vars.iter().any(|v| v.field_path == path) {
            return Err(format!("variable `{}` bound twice", path.join(".")));
        }
        self.vars.push(Variable {
            field_path: path,
            start,
            end: self.segments.len(),
        });
        Ok(())
    }
}

impl Template {
    /// Parses a template.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let err = |reason: String| TemplateError {
            template: text.to_owned(),
            reason,
        };
        let mut p = Parser {
            s: text.as_bytes(),
            pos: 0,
            segments: Vec::new(),
            vars: Vec::new(),
        };
        if !p.eat(b'/') {
            return Err(err("must start with `/`".into()));
        }
        p.segments(false).map_err(&err)?;
        let verb = if p.eat(b':') {
            let v = p.literal();
            if v.is_empty() {
                return Err(err("empty verb after `:`".into()));
            }
            Some(v)
        } else {
            None
        };
        if p.pos != p.s.len() {
            return Err(err(format!(
                "unexpected `{}` at byte {}",
                p.s[p.pos] as char, p.pos
            )));
        }
        if let Some(i) = p.segments.iter().position(|s| *s == Segment::Multi)
            && i + 1 != p.segments.len()
        {
            return Err(err("`**` must be the last segment".into()));
        }
        Ok(Template {
            segments: p.segments,
            vars: p.vars,
            verb,
        })
    }

    /// How specific the template is, for choosing among several that match: more literal
    /// segments first, then a verb, then no `**`.
    pub fn specificity(&self) -> (usize, bool, bool) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (
            literals,
            self.verb.is_some(),
            !self.segments.contains(&Segment::Multi),
        )
    }

    /// Matches a request path (no query); on success the variables' values, percent-decoded,
    /// in the order of [`Template::vars`].
    pub fn matches(&self, path: &str) -> Option<Vec<String>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(v) => {
                let r = rest.strip_suffix(v.as_str())?;
                r.strip_suffix(':')?
            }
            None => rest,
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let multi = self.segments.last() == Some(&Segment::Multi);
        let fixed = self.segments.len() - usize::from(multi);
        if parts.len() < fixed || (!multi && parts.len() != fixed) {
            return None;
        }
        for (seg, part) in self.segments[..fixed].iter().zip(&parts) {
            match seg {
                Segment::Literal(l) if l != part => return None,
                Segment::Single if part.is_empty() => return None,
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(self.vars.len());
        for v in &self.vars {
            let end = if multi && v.end == self.segments.len() {
                parts.len()
            } else {
                v.end
            };
            let raw = &parts[v.start.min(parts.len())..end.min(parts.len())];
            let decoded: Vec<String> = raw
                .iter()
                .map(|p| percent_decode_str(p).decode_utf8_lossy().into_owned())
                .collect();
            out.push(decoded.join("/"));
        }
        Some(out)
    }

    /// The template as text again (for the admin API).
    pub fn display(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.segments.len() {
            out.push('/');
            if let Some(v) = self.vars.iter().find(|v| v.start == i) {
                out.push('{');
                out.push_str(&v.field_path.join("."));
                let inner = &self.segments[v.start..v.end];
                if inner != [Segment::Single] {
                    out.push('=');
                    let parts: Vec<String> = inner.iter().map(seg_text).collect();
                    out.push_str(&parts.join("/"));
                }
                out.push('}');
                i = v.end.max(i + 1);
            } else {
                out.push_str(&seg_text(&self.segments[i]));
                i += 1;
            }
        }
        if let Some(v) = &self.verb {
            out.push(':');
            out.push_str(v);
        }
        out
    }
}

fn seg_text(s: &Segment) -> String {
    match s {
        Segment::Literal(l) => l.clone(),
        Segment::Single => "*".into(),
        Segment::Multi => "**".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str, p: &str) -> Option<Vec<String>> {
        Template::parse(t).unwrap().matches(p)
    }

    #[test]
    fn literals_and_simple_variables() {
        assert_eq!(m("/v1/books", "/v1/books"), Some(vec![]));
        assert_eq!(m("/v1/books", "/v1/book"), None);
        assert_eq!(m("/v1/books/{id}", "/v1/books/7"), Some(vec!["7".into()]));
        assert_eq!(m("/v1/books/{id}", "/v1/books/7/x"), None);
        assert_eq!(m("/v1/books/{id}", "/v1/books/"), None);
        assert_eq!(
            m("/v1/books/{id}", "/v1/books/a%20b"),
            Some(vec!["a b".into()])
        );
    }

    #[test]
    fn wildcards_and_nested_fields() {
        let t = Template::parse("/v1/{name=shelves/*/books/*}").unwrap();
        assert_eq!(t.vars[0].field_path, ["name"]);
        assert_eq!(
            t.matches("/v1/shelves/1/books/2"),
            Some(vec!["shelves/1/books/2".into()])
        );
        assert_eq!(t.matches("/v1/shelves/1/books"), None);
        assert_eq!(
            m("/v1/{book.name=**}", "/v1/a/b/c"),
            Some(vec!["a/b/c".into()])
        );
        assert_eq!(m("/v1/{book.name=**}", "/v1"), Some(vec!["".into()]));
        assert_eq!(m("/files/{path=**}", "/files/x"), Some(vec!["x".into()]));
        assert_eq!(
            Template::parse("/v1/{a.b.c}").unwrap().vars[0].field_path,
            ["a", "b", "c"]
        );
        assert_eq!(m("/v1/*/x", "/v1/q/x"), Some(vec![]));
    }

    #[test]
    fn verbs() {
        assert_eq!(
            m("/v1/{name=ops/*}:cancel", "/v1/ops/3:cancel"),
            Some(vec!["ops/3".into()])
        );
        assert_eq!(m("/v1/{name=ops/*}:cancel", "/v1/ops/3"), None);
        assert_eq!(m("/v1/{name=ops/*}:cancel", "/v1/ops/3:undo"), None);
        assert_eq!(m("/v1/ops:batch", "/v1/ops:batch"), Some(vec![]));
        assert_eq!(m("/v1/{id}:x", "/v1/:x"), None);
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "v1/books",
            "/v1//books",
            "/v1/{id",
            "/v1/{}",
            "/v1/{1a}",
            "/v1/{a={b}}",
            "/v1/**/x",
            "/v1/{a}/{a}",
            "/v1/x:",
            "/v1/x}",
            "/v1/{a.}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn display_round_trips() {
        for t in [
            "/v1/books/{id}",
            "/v1/{name=shelves/*/books/*}",
            "/v1/{a.b=**}",
            "/v1/ops/{name}:cancel",
            "/v1/*/x",
        ] {
            let p = Template::parse(t).unwrap();
            assert_eq!(p.display(), t);
            assert_eq!(Template::parse(&p.display()).unwrap(), p);
        }
    }

    #[test]
    fn specificity_prefers_literals() {
        let a = Template::parse("/v1/books/special").unwrap();
        let b = Template::parse("/v1/books/{id}").unwrap();
        assert!(a.specificity() > b.specificity());
    }
}
