//! The tape's own JSON reader, for the bodies almost every API call sends.
//!
//! Why our own: `serde_json` drives a visitor per value, checks UTF-8 string by string and goes
//! through a seed per key; for a 1 KiB body that was half of what validating it cost. This
//! reader makes one pass over bytes already known to be UTF-8 and writes slots directly. It
//! refuses more than `serde_json` does, never less: anything it does not take (a syntax error, a
//! lone surrogate, deep nesting, a number it cannot read exactly as `serde_json` would) sends
//! the caller back to `serde_json`, which then decides and words the error. The fuzz target
//! `openapi_tape` holds the two to the same answers.

use std::borrow::Cow;
use std::str::FromStr;

use serde_json::Number;

use super::Slot;

/// Deepest nesting read here; deeper documents go to `serde_json` (whose limit is 127).
const MAX_DEPTH: usize = 64;

/// Reads `src` onto `slots`, or `None` when `serde_json` must decide (`slots` is then garbage).
pub(super) fn read<'a>(src: &'a [u8], slots: &mut Vec<Slot<'a>>) -> Option<()> {
    let src = std::str::from_utf8(src).ok()?;
    let b = src.as_bytes();
    // Open containers: (slot index, members or elements so far, is an object).
    let mut stack = [(0u32, 0u32, false); MAX_DEPTH];
    let mut depth = 0usize;
    let mut i = ws(b, 0);
    'value: loop {
        // A value starts at `i`.
        match *b.get(i)? {
            open @ (b'{' | b'[') => {
                let is_obj = open == b'{';
                let at = u32::try_from(slots.len()).ok()?;
                slots.push(Slot::Null);
                i = ws(b, i + 1);
                if b.get(i) == Some(if is_obj { &b'}' } else { &b']' }) {
                    slots[at as usize] = container(is_obj, 0, slots.len())?;
                    i += 1;
                } else {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    stack[depth] = (at, 0, is_obj);
                    depth += 1;
                    if is_obj {
                        i = key(src, i, slots)?;
                    }
                    continue 'value;
                }
            }
            b'"' => {
                i = string(src, i + 1, slots, Slot::Str)?;
            }
            b't' => i = literal(b, i, b"true", Slot::Bool(true), slots)?,
            b'f' => i = literal(b, i, b"false", Slot::Bool(false), slots)?,
            b'n' => i = literal(b, i, b"null", Slot::Null, slots)?,
            b'-' | b'0'..=b'9' => {
                i = number(src, i, slots)?;
            }
            _ => return None,
        }
        // A value ended just before `i`: close what it ends, or go on to the next one.
        loop {
            i = ws(b, i);
            if depth == 0 {
                break 'value;
            }
            let top = &mut stack[depth - 1];
            top.1 += 1;
            match *b.get(i)? {
                b',' => {
                    i = ws(b, i + 1);
                    if top.2 {
                        i = key(src, i, slots)?;
                    }
                    continue 'value;
                }
                b'}' if top.2 => {}
                b']' if !top.2 => {}
                _ => return None,
            }
            slots[top.0 as usize] = container(top.2, top.1, slots.len())?;
            depth -= 1;
            i += 1;
        }
    }
    (i == b.len()).then_some(())
}

fn container(is_obj: bool, len: u32, end: usize) -> Option<Slot<'static>> {
    let end = u32::try_from(end).ok()?;
    Some(if is_obj {
        Slot::Obj { len, end }
    } else {
        Slot::Arr { len, end }
    })
}

/// Index of the first byte at or after `i` that is not JSON whitespace.
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// A member name at `i` and its colon: pushes the key, returns where its value starts.
fn key<'a>(src: &'a str, i: usize, slots: &mut Vec<Slot<'a>>) -> Option<usize> {
    let b = src.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let end = string(src, i + 1, slots, Slot::Key)?;
    let colon = ws(b, end);
    (b.get(colon) == Some(&b':')).then(|| ws(b, colon + 1))
}

fn literal<'a>(
    b: &[u8],
    i: usize,
    word: &[u8],
    slot: Slot<'a>,
    slots: &mut Vec<Slot<'a>>,
) -> Option<usize> {
    let end = i + word.len();
    (b.get(i..end)? == word).then(|| {
        slots.push(slot);
        end
    })
}

/// Pushes the string whose contents start at `i` (just past its opening quote) as `make` makes
/// its slot, and returns the index past its closing quote. Borrowed unless it has escapes.
///
/// The slot is written here rather than returned: handing a `Cow` back through the stack cost
/// a store-forwarding stall per string in profiles, a third of the reader's time.
#[inline(always)]
fn string<'a>(
    src: &'a str,
    i: usize,
    slots: &mut Vec<Slot<'a>>,
    make: fn(Cow<'a, str>) -> Slot<'a>,
) -> Option<usize> {
    let b = src.as_bytes();
    let j = special(b, i);
    if b.get(j) == Some(&b'"') {
        slots.push(make(Cow::Borrowed(src.get(i..j)?)));
        return Some(j + 1);
    }
    let (s, end) = escaped(src, i, j)?;
    slots.push(make(Cow::Owned(s)));
    Some(end)
}

/// The rest of a string whose contents start at `i` and whose first backslash (or control
/// character, refused) is at `j`: its unescaped text and the index past its closing quote.
#[cold]
#[inline(never)]
fn escaped(src: &str, i: usize, mut j: usize) -> Option<(String, usize)> {
    let b = src.as_bytes();
    if *b.get(j)? != b'\\' {
        return None;
    }
    let mut out = String::with_capacity(j - i + 16);
    out.push_str(src.get(i..j)?);
    loop {
        // At a backslash.
        let c = match *b.get(j + 1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(b, j + 2)?;
                j += 4;
                if (0xD800..0xDC00).contains(&hi) {
                    // A leading surrogate must be followed by a trailing one as `\uXXXX`.
                    if b.get(j + 2..j + 4)? != b"\\u" {
                        return None;
                    }
                    let lo = hex4(b, j + 4)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    j += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                } else {
                    char::from_u32(hi)?
                }
            }
            _ => return None,
        };
        out.push(c);
        j += 2;
        let start = j;
        j = special(b, j);
        out.push_str(src.get(start..j)?);
        match *b.get(j)? {
            b'"' => return Some((out, j + 1)),
            b'\\' => {}
            _ => return None,
        }
    }
}

/// Index of the first byte at or after `i` that ends a run of plain string contents: a quote, a
/// backslash or a control character (`b.len()` if none). Eight bytes at a time, in a `u64`
/// (the "has a byte below n" bit trick: the lowest flagged byte is always a true match), since
/// string contents are most of an API body's bytes.
fn special(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    while let Some(chunk) = b.get(i..i + 8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(word);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let found = (w.wrapping_sub(ONES * 0x20) & !w)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash);
        let found = found & HIGH;
        if found != 0 {
            return i + found.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

/// Four hex digits at `i`.
fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let mut v = 0u32;
    for &c in b.get(i..i + 4)? {
        v = v * 16 + char::from(c).to_digit(16)?;
    }
    Some(v)
}

/// Pushes the number at `i` and returns the index past it. Small integers are read here;
/// everything else (fractions, exponents, `-0`, integers beyond 18 digits) by `serde_json`'s own
/// number reader, so every value is the one `serde_json` would make.
#[inline(always)]
fn number<'a>(src: &str, i: usize, slots: &mut Vec<Slot<'a>>) -> Option<usize> {
    let b = src.as_bytes();
    let neg = b[i] == b'-';
    let digits_from = i + usize::from(neg);
    let mut j = digits_from;
    match *b.get(j)? {
        b'0' => j += 1,
        b'1'..=b'9' => j = digits_end(b, j),
        _ => return None,
    }
    let int_end = j;
    if b.get(j) == Some(&b'.') {
        j = some_digits_end(b, j + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(j) {
        j += 1;
        if let Some(b'+' | b'-') = b.get(j) {
            j += 1;
        }
        j = some_digits_end(b, j)?;
    }
    let digits = &b[digits_from..int_end];
    if j == int_end && digits.len() <= 18 {
        let v = digits
            .iter()
            .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
        if !neg {
            slots.push(Slot::Num(Number::from(v)));
            return Some(j);
        }
        if v != 0 {
            // At most 18 digits: always fits, negated, in an i64.
            slots.push(Slot::Num(Number::from(-i64::try_from(v).ok()?)));
            return Some(j);
        }
    }
    slots.push(Slot::Num(Number::from_str(src.get(i..j)?).ok()?));
    Some(j)
}

/// Index past the run of digits starting at `i`.
fn digits_end(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Index past the run of digits starting at `i`, which must hold at least one.
fn some_digits_end(b: &[u8], i: usize) -> Option<usize> {
    let end = digits_end(b, i);
    (end > i).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(doc: &str) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
        let mut slots = Vec::new();
        let fast = read(doc.as_bytes(), &mut slots).map(|()| super::super::value_at(&slots, 0));
        (fast, serde_json::from_str(doc).ok())
    }

    #[test]
    fn reads_what_api_bodies_send_as_serde_json_does() {
        let order = include_str!("../../../../../bench/openapi/order.json");
        for doc in [
            order,
            r#" { "a" : [ 1 , -2 , 3.5e2 , { "b" : null } ] , "c" : {} , "d" : [] } "#,
            r#"{"s":"tab\tquote\"slash\/uni\u00e9 pair\ud83d\ude00 end","t":true,"f":false}"#,
            "[0, -0, 18446744073709551615, 18446744073709551616, -9223372036854775808, 1E-2]",
            "123456789012345678",
            "\"x\"",
        ] {
            let (fast, serde) = both(doc);
            assert!(fast.is_some(), "the fast reader took {doc}");
            assert_eq!(fast, serde, "{doc}");
        }
    }

    #[test]
    fn leaves_to_serde_json_what_it_does_not_take() {
        for doc in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "{\"a\" 1}",
            "[1] x",
            "\"\\ud800\"",
            "\"\\udc00x\"",
            "\"a\nb\"",
            "\"\\x\"",
            "1e400",
            "{1:2}",
            "[\"a\"",
        ] {
            let mut slots = Vec::new();
            assert!(read(doc.as_bytes(), &mut slots).is_none(), "{doc:?}");
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(read(deep.as_bytes(), &mut Vec::new()).is_none());
        assert!(serde_json::from_str::<serde_json::Value>(&deep).is_ok());
        let invalid_utf8 = b"\"\xff\"";
        assert!(read(invalid_utf8, &mut Vec::new()).is_none());
    }
}
