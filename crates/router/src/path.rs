//! Path normalisation at the edge: the one form of a request path that is routed, checked by
//! plugins and sent upstream.
//!
//! Why: a gateway that routes on the raw path and forwards it unchanged lets `/api/../admin`,
//! `/api/%2e%2e/admin` or `//admin` pick a route (and its auth plugins) that the upstream, after
//! normalising the path itself, does not serve. Envoy's `normalize_path`, `merge_slashes` and
//! `path_with_escaped_slashes_action` exist for the same reason. No crate does exactly this
//! (RFC 3986 §6.2.2 normalisation plus policies for escaped slashes and climbing above the
//! root on an `http::Uri` path), so it is written here, small and fuzzed.
//!
//! Steps, in order:
//! 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, every other
//!    escape is written with upper-case hex; a `%` not followed by two hex digits is refused;
//! 2. `%2F` and `%5C` (and a raw `\`) follow [`EscapedSlashes`];
//! 3. repeated slashes are merged (when [`PathPolicy::merge_slashes`]);
//! 4. `.` and `..` segments are resolved as RFC 3986 `remove_dot_segments` does, except that a
//!    path climbing above the root is refused instead of clamped ([`DotSegments`]).
//!
//! The result is idempotent: normalising a normalised path returns it unchanged (borrowed).

use std::borrow::Cow;

/// What to do with escaped slashes (`%2F`, `%5C`) and raw backslashes in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Refuse the request (400).
    #[default]
    Reject,
    /// Route and forward them encoded (`%2F`, `%5C`); a raw `\` is kept.
    Keep,
    /// Decode them to `/` (a backslash counts as a slash), then merge and resolve as usual.
    Decode,
}

/// What to do with `.` and `..` segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DotSegments {
    /// Resolve them (RFC 3986); a path that climbs above the root is refused.
    #[default]
    Resolve,
    /// Refuse any path that has one (400).
    Reject,
}

/// How a listener normalises request paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    /// `//a///b` becomes `/a/b`.
    pub merge_slashes: bool,
    /// Dot segments.
    pub dot_segments: DotSegments,
    /// Escaped slashes and backslashes.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathPolicy {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            dot_segments: DotSegments::Resolve,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `..` segments lead above the root (`/../etc/passwd`).
    #[error("the path climbs above the root")]
    AboveRoot,
    /// A `.` or `..` segment where the listener refuses them.
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    /// `%2F`, `%5C` or `\` where the listener refuses them.
    #[error("the path has an escaped slash or a backslash")]
    EscapedSlash,
    /// A `%` not followed by two hex digits.
    #[error("the path has an invalid percent-encoding")]
    BadEscape,
    /// The path does not start with `/`.
    #[error("the path is not absolute")]
    NotAbsolute,
}

impl PathError {
    /// A stable label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::AboveRoot => "path_above_root",
            PathError::DotSegment => "path_dot_segment",
            PathError::EscapedSlash => "path_escaped_slash",
            PathError::BadEscape => "path_bad_escape",
            PathError::NotAbsolute => "path_not_absolute",
        }
    }
}

/// Normalises `path` (without query) by `policy`; borrows when it is already normal.
pub fn normalize_path<'a>(path: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, PathError> {
    if path == "*" {
        // asterisk-form (`OPTIONS *`): not a path.
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path.as_bytes(), policy) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path.as_bytes(), policy.escaped_slashes)?;
    let out = segments(&decoded, policy)?;
    if out == path.as_bytes() {
        // Escapes that stay (`%2F` kept, `%20`) make the scan say "maybe"; nothing changed.
        return Ok(Cow::Borrowed(path));
    }
    // Only ASCII goes in (http::Uri paths are ASCII) and decoding yields unreserved ASCII.
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError::BadEscape)
}

/// One pass that finds whether anything would change: the common case costs a scan and no
/// allocation.
fn is_normal(p: &[u8], policy: &PathPolicy) -> bool {
    let mut prev = 0u8;
    for (i, &b) in p.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b'/' if prev == b'/' && policy.merge_slashes => return false,
            b'.' if prev == b'/' => {
                // `/.` or `/..` followed by `/` or the end is a dot segment.
                let rest = &p[i + 1..];
                let rest = rest.strip_prefix(b".").unwrap_or(rest);
                if rest.is_empty() || rest[0] == b'/' {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Step 1 and 2: escapes decoded or canonicalised, slashes by policy.
fn decode(p: &[u8], slashes: EscapedSlashes) -> Result<Vec<u8>, PathError> {
    const UPPER: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    p.get(i + 1).copied().and_then(hex),
                    p.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi << 4 | lo;
                if unreserved(v) {
                    out.push(v);
                } else if v == b'/' || v == b'\\' {
                    match slashes {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Keep => {
                            out.extend_from_slice(&[b'%', UPPER[hi as usize], UPPER[lo as usize]])
                        }
                        EscapedSlashes::Decode => out.push(b'/'),
                    }
                } else {
                    out.extend_from_slice(&[b'%', UPPER[hi as usize], UPPER[lo as usize]]);
                }
                i += 3;
            }
            b'\\' => {
                match slashes {
                    EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                    EscapedSlashes::Keep => out.push(b'\\'),
                    EscapedSlashes::Decode => out.push(b'/'),
                }
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Steps 3 and 4 on a decoded path that starts with `/`.
fn segments(p: &[u8], policy: &PathPolicy) -> Result<Vec<u8>, PathError> {
    // Segment boundaries as (start, end) into `p`; the output is built from them.
    let mut kept: Vec<(usize, usize)> = Vec::new();
    let mut trailing = false;
    let mut start = 1;
    loop {
        let end = p[start..]
            .iter()
            .position(|b| *b == b'/')
            .map_or(p.len(), |n| start + n);
        let seg = &p[start..end];
        let last = end == p.len();
        match seg {
            b"." | b".." => {
                if policy.dot_segments == DotSegments::Reject {
                    return Err(PathError::DotSegment);
                }
                if seg == b".." && kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                // `/a/.` and `/a/b/..` end with a slash (RFC 3986 §5.2.4).
                trailing = last;
            }
            b"" if last => trailing = true,
            b"" if policy.merge_slashes => {}
            _ => {
                kept.push((start, end));
                trailing = false;
            }
        }
        if last {
            break;
        }
        start = end + 1;
    }
    let mut out = Vec::with_capacity(p.len());
    for (s, e) in kept {
        out.push(b'/');
        out.extend_from_slice(&p[s..e]);
    }
    if trailing || out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize_path(p, &PathPolicy::default()).map(Cow::into_owned)
    }

    fn with(p: &str, policy: PathPolicy) -> Result<String, PathError> {
        normalize_path(p, &policy).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b/", "/a.b/c..d/.e/f.", "/~user/x-y_z", "*"] {
            assert!(
                matches!(
                    normalize_path(p, &PathPolicy::default()),
                    Ok(Cow::Borrowed(_))
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn the_bypass_attempts_of_the_issue() {
        assert_eq!(norm("/api/../admin").as_deref(), Ok("/admin"));
        assert_eq!(norm("/api/%2e%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(norm("/api/%2E%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(norm("/api/.%2E/admin").as_deref(), Ok("/admin"));
        assert_eq!(norm("//admin").as_deref(), Ok("/admin"));
        assert_eq!(norm("/api%2F..%2Fadmin"), Err(PathError::EscapedSlash));
        assert_eq!(norm("/../../etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(norm("/a/%2e%2e/%2e%2e/b"), Err(PathError::AboveRoot));
        assert_eq!(norm("/api\\..\\admin"), Err(PathError::EscapedSlash));
    }

    #[test]
    fn dot_segments_follow_rfc_3986() {
        for (p, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("/.", "/"),
            ("/./a", "/a"),
            ("/a/./b/", "/a/b/"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/c", "/a/..b/c"),
        ] {
            assert_eq!(norm(p).as_deref(), Ok(want), "{p}");
        }
        assert_eq!(norm("/.."), Err(PathError::AboveRoot));
        let reject = PathPolicy {
            dot_segments: DotSegments::Reject,
            ..PathPolicy::default()
        };
        assert_eq!(with("/a/./b", reject), Err(PathError::DotSegment));
        assert_eq!(with("/a/%2e/b", reject), Err(PathError::DotSegment));
        assert_eq!(with("/a/.b", reject).as_deref(), Ok("/a/.b"));
    }

    #[test]
    fn slashes_merge_unless_told_not_to() {
        assert_eq!(norm("//a///b//").as_deref(), Ok("/a/b/"));
        let keep = PathPolicy {
            merge_slashes: false,
            ..PathPolicy::default()
        };
        assert_eq!(with("//a///b", keep).as_deref(), Ok("//a///b"));
        assert_eq!(with("/a//../b", keep).as_deref(), Ok("/a/b"));
    }

    #[test]
    fn escapes_are_canonical() {
        assert_eq!(norm("/%7euser/%41%42").as_deref(), Ok("/~user/AB"));
        assert_eq!(norm("/a%20b/%c3%a9").as_deref(), Ok("/a%20b/%C3%A9"));
        // `%25` stays: no double decoding.
        assert_eq!(norm("/%252e%252e/x").as_deref(), Ok("/%252e%252e/x"));
        assert_eq!(norm("/a%2"), Err(PathError::BadEscape));
        assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("a/b"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn escaped_slash_policies() {
        let keep = PathPolicy {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathPolicy::default()
        };
        assert_eq!(
            with("/api%2f..%2Fadmin", keep).as_deref(),
            Ok("/api%2F..%2Fadmin")
        );
        let decode = PathPolicy {
            escaped_slashes: EscapedSlashes::Decode,
            ..PathPolicy::default()
        };
        assert_eq!(with("/api%2F..%2Fadmin", decode).as_deref(), Ok("/admin"));
        assert_eq!(with("/api%5c..%5Cadmin", decode).as_deref(), Ok("/admin"));
        assert_eq!(with("/a\\b", decode).as_deref(), Ok("/a/b"));
        assert_eq!(with("/%2F..%2F..%2Fetc", decode), Err(PathError::AboveRoot));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        let policies = [
            PathPolicy::default(),
            PathPolicy {
                escaped_slashes: EscapedSlashes::Keep,
                merge_slashes: false,
                ..PathPolicy::default()
            },
            PathPolicy {
                escaped_slashes: EscapedSlashes::Decode,
                ..PathPolicy::default()
            },
        ];
        for p in [
            "/a/../b//c/./%2e%2E/d%2f%41",
            "//x/%5c/../y/",
            "/a/b/../../c/%7e",
            "/./../",
            "/%2E/",
        ] {
            for pol in &policies {
                if let Ok(once) = with(p, *pol) {
                    let twice = normalize_path(&once, pol).expect("a normal path is accepted");
                    assert!(
                        matches!(twice, Cow::Borrowed(_)),
                        "{p} -> {once} -> {twice}"
                    );
                }
            }
        }
    }
}
