//! Path templates: `/users/{id}/posts/{post}`.
//!
//! Each `{name}` stands for exactly one non-empty path segment. Partial segments
//! (`/files/{name}.json`) are refused: they make precedence between templates ambiguous.

use std::fmt;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Must equal this text.
    Literal(String),
    /// Any non-empty segment, captured under this name.
    Param(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template `{template}`: {reason}")]
pub struct TemplateError {
    /// The template text.
    pub template: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Template {
    /// Parses a template; it must start with `/`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let err = |reason: &str| TemplateError {
            template: source.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = source
            .strip_prefix('/')
            .ok_or_else(|| err("must start with `/`"))?;
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for seg in rest.split('/') {
            if let Some(inner) = seg.strip_prefix('{') {
                let name = inner
                    .strip_suffix('}')
                    .ok_or_else(|| err("a `{` must close at the end of its segment"))?;
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid {
                    return Err(err(
                        "parameter names are letters, digits, `_` and `-` (e.g. `{id}`)",
                    ));
                }
                if names.contains(&name) {
                    return Err(err(&format!("parameter `{name}` appears twice")));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_owned()));
            } else if seg.contains(['{', '}']) {
                return Err(err(
                    "`{name}` must be a whole segment, as in `/users/{id}/posts`",
                ));
            } else {
                segments.push(Segment::Literal(seg.to_owned()));
            }
        }
        if names.is_empty() {
            return Err(err("has no `{name}` segment; use `path` for an exact path"));
        }
        Ok(Self {
            source: source.to_owned(),
            segments,
        })
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// More literal segments is more specific; then longer.
    pub(crate) fn specificity(&self) -> u32 {
        let lits = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count() as u32;
        lits * 1024 + self.segments.len() as u32
    }

    /// The text every matching path starts with (up to the first parameter).
    pub(crate) fn literal_prefix(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            match s {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(_) => break,
            }
        }
        out
    }

    /// Shape with parameter names erased: two templates with the same shape match the same paths.
    pub(crate) fn shape(&self) -> Vec<Option<&str>> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => Some(l.as_str()),
                Segment::Param(_) => None,
            })
            .collect()
    }

    /// Whether `path` matches this template.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for seg in &self.segments {
            match (seg, parts.next()) {
                (Segment::Literal(l), Some(p)) if l == p => {}
                (Segment::Param(_), Some(p)) if !p.is_empty() => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let t = Template::parse("/users/{id}/posts/{post}").unwrap();
        assert!(t.matches("/users/7/posts/9"));
        assert!(!t.matches("/users/7/posts"));
        assert!(!t.matches("/users//posts/9"));
        assert!(!t.matches("/users/7/posts/9/x"));
        assert_eq!(t.literal_prefix(), "/users/");
    }

    #[test]
    fn refuses_bad_templates() {
        for bad in [
            "users/{id}",
            "/users/{id",
            "/files/{name}.json",
            "/a/{x}/{x}",
            "/a/{}",
            "/plain",
            "/a/{b c}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
