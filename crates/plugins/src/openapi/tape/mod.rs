//! A JSON body as a flat list of slots, for validating JSON bodies without building a
//! `serde_json::Value`.
//!
//! Why our own: building a `Value` for a 1 KiB body costs about ten times its parse (one
//! allocation per string and per object, a hash map per object), and that was most of what
//! request validation cost. `jsonschema` validates any representation that implements its
//! [`Json`] traits, so a body is parsed once by `serde_json` (its parser, limits and error
//! messages) into one `Vec` whose strings borrow from the body where they have no escapes.
//! Containers record where their subtree ends, so walking an object's members skips nested
//! values in one step. Bodies are read by our own reader ([`fast`]) and handed to `serde_json`
//! only when that reader does not take them, so errors are always `serde_json`'s.

mod fast;

use std::borrow::Cow;
use std::fmt;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, JsonNumber, Node, NodeIdentity, Object};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// One slot of a [`Tape`] (public only as the scratch buffer type of [`TapeJson`]). A container is followed by its elements (an object by key, value
/// pairs), each value with its own subtree; `end` is the index just past the container's last
/// descendant.
#[derive(Debug)]
pub enum Slot<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Num(Number),
    /// A string value (borrowed from the body unless it had escapes).
    Str(Cow<'a, str>),
    /// An object member's name; its value follows.
    Key(Cow<'a, str>),
    /// An array: `len` elements, its subtree ends before `end`.
    Arr {
        /// Elements.
        len: u32,
        /// Index just past its last descendant.
        end: u32,
    },
    /// An object: `len` members (name, value), its subtree ends before `end`.
    Obj {
        /// Members.
        len: u32,
        /// Index just past its last descendant.
        end: u32,
    },
}

/// A parsed JSON document, borrowing unescaped strings from its source.
#[derive(Debug)]
pub struct Tape<'a> {
    slots: Vec<Slot<'a>>,
}

impl<'a> Tape<'a> {
    /// Parses a JSON document (`serde_json`'s grammar, nesting limit and error messages).
    pub fn parse(src: &'a [u8]) -> Result<Tape<'a>, serde_json::Error> {
        // About one slot per 8 bytes of a typical API body; growth covers the rest.
        let mut slots = Vec::with_capacity(src.len() / 8 + 4);
        if fast::read(src, &mut slots).is_some() {
            return Ok(Tape { slots });
        }
        slots.clear();
        let mut de = serde_json::Deserializer::from_slice(src);
        SlotSeed(&mut slots).deserialize(&mut de)?;
        de.end()?;
        Ok(Tape { slots })
    }

    /// The document as a `serde_json::Value` (tests and diagnostics; validation reads the tape).
    pub fn to_value(&self) -> Value {
        value_at(&self.slots, 0)
    }

    /// The document's root value.
    pub fn root(&self) -> TapeNode<'_> {
        TapeNode {
            slots: &self.slots,
            at: 0,
        }
    }
}

/// Index just past the subtree starting at `at`.
fn next(slots: &[Slot<'_>], at: usize) -> usize {
    match slots[at] {
        Slot::Arr { end, .. } | Slot::Obj { end, .. } => end as usize,
        _ => at + 1,
    }
}

fn too_big<E: serde::de::Error>() -> E {
    E::custom("the JSON document is too large")
}

fn index<E: serde::de::Error>(n: usize) -> Result<u32, E> {
    u32::try_from(n).map_err(|_| too_big())
}

/// Deserializes one value onto the end of the slot list.
struct SlotSeed<'s, 'a>(&'s mut Vec<Slot<'a>>);

impl<'de> DeserializeSeed<'de> for SlotSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SlotSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(Slot::Null);
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Slot::Bool(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(Slot::Num(v.into()));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Slot::Num(v.into()));
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        let n = Number::from_f64(v).ok_or_else(|| E::custom("a number is not finite"))?;
        self.0.push(Slot::Num(n));
        Ok(())
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.push(Slot::Str(Cow::Borrowed(v)));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Slot::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push(Slot::Str(Cow::Owned(v)));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.0.len();
        self.0.push(Slot::Arr { len: 0, end: 0 });
        let mut len = 0usize;
        while seq.next_element_seed(SlotSeed(self.0))?.is_some() {
            len += 1;
        }
        let (len, end) = (index(len)?, index(self.0.len())?);
        self.0[at] = Slot::Arr { len, end };
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.0.len();
        self.0.push(Slot::Obj { len: 0, end: 0 });
        let mut len = 0usize;
        while map.next_key_seed(KeySeed(self.0))?.is_some() {
            map.next_value_seed(SlotSeed(self.0))?;
            len += 1;
        }
        let (len, end) = (index(len)?, index(self.0.len())?);
        self.0[at] = Slot::Obj { len, end };
        Ok(())
    }
}

/// Deserializes an object key onto the end of the slot list.
struct KeySeed<'s, 'a>(&'s mut Vec<Slot<'a>>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.push(Slot::Key(Cow::Borrowed(v)));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Slot::Key(Cow::Owned(v.to_owned())));
        Ok(())
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.0.push(Slot::Key(Cow::Owned(v)));
        Ok(())
    }
}

/// The tape representation for `jsonschema` (a marker type; nodes are [`TapeNode`]s).
pub enum TapeJson {}

impl Json for TapeJson {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = Vec<Slot<'static>>;
    /// Lookups scan the members, so a members pass pays off early.
    const KEYS_PER_LOOKUP: usize = 8;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>(
        buffer: &mut Vec<Slot<'static>>,
        string: &str,
        f: impl FnOnce(TapeNode<'_>) -> T,
    ) -> T {
        buffer.clear();
        buffer.push(Slot::Str(Cow::Owned(string.to_owned())));
        f(TapeNode {
            slots: buffer,
            at: 0,
        })
    }
}

/// A value in a [`Tape`]: the slots and the value's index.
#[derive(Clone, Copy)]
pub struct TapeNode<'a> {
    slots: &'a [Slot<'a>],
    at: usize,
}

/// A number of a [`Tape`].
pub struct TapeNumber<'a>(&'a Number);

impl JsonNumber for TapeNumber<'_> {
    fn as_u64(&self) -> Option<u64> {
        self.0.as_u64()
    }
    fn as_i64(&self) -> Option<i64> {
        self.0.as_i64()
    }
    fn as_f64(&self) -> Option<f64> {
        self.0.as_f64()
    }
    fn as_str(&self) -> Cow<'_, str> {
        Cow::Owned(self.0.to_string())
    }
    fn to_number(&self) -> Cow<'_, Number> {
        Cow::Borrowed(self.0)
    }
    fn is_integer(&self) -> bool {
        self.0.is_u64()
            || self.0.is_i64()
            || self
                .0
                .as_f64()
                .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
    }
    fn is_written_as_integer(&self) -> bool {
        self.0.is_u64() || self.0.is_i64()
    }
}

impl<'a> Node<'a, TapeJson> for TapeNode<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = TapeNumber<'a>;

    fn as_object(&self) -> Option<TapeObject<'a>> {
        match self.slots[self.at] {
            Slot::Obj { len, end } => Some(TapeObject {
                slots: self.slots,
                at: self.at,
                len: len as usize,
                end: end as usize,
            }),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<TapeArray<'a>> {
        match self.slots[self.at] {
            Slot::Arr { len, end } => Some(TapeArray {
                slots: self.slots,
                at: self.at,
                len: len as usize,
                end: end as usize,
            }),
            _ => None,
        }
    }
    fn as_string(&self) -> Option<Cow<'a, str>> {
        match &self.slots[self.at] {
            Slot::Str(s) => Some(Cow::Borrowed(s.as_ref())),
            _ => None,
        }
    }
    fn as_number(&self) -> Option<TapeNumber<'a>> {
        match &self.slots[self.at] {
            Slot::Num(n) => Some(TapeNumber(n)),
            _ => None,
        }
    }
    fn as_boolean(&self) -> Option<bool> {
        match self.slots[self.at] {
            Slot::Bool(b) => Some(b),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        matches!(self.slots[self.at], Slot::Null)
    }
    fn json_type(&self) -> JsonType {
        match self.slots[self.at] {
            Slot::Null => JsonType::Null,
            Slot::Bool(_) => JsonType::Boolean,
            Slot::Num(_) => JsonType::Number,
            Slot::Str(_) | Slot::Key(_) => JsonType::String,
            Slot::Arr { .. } => JsonType::Array,
            Slot::Obj { .. } => JsonType::Object,
        }
    }
    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(value_at(self.slots, self.at))
    }
    fn identity(&self) -> Option<NodeIdentity> {
        let at = u32::try_from(self.at).ok()?;
        Some(NodeIdentity::tagged(self.slots.as_ptr() as usize, at))
    }
}

/// The `serde_json::Value` of the subtree at `at` (error messages and `enum`/`const` only).
fn value_at(slots: &[Slot<'_>], at: usize) -> Value {
    match &slots[at] {
        Slot::Null => Value::Null,
        Slot::Bool(b) => Value::Bool(*b),
        Slot::Num(n) => Value::Number(n.clone()),
        Slot::Str(s) | Slot::Key(s) => Value::String(s.to_string()),
        Slot::Arr { end, .. } => {
            let mut out = Vec::new();
            let mut i = at + 1;
            while i < *end as usize {
                out.push(value_at(slots, i));
                i = next(slots, i);
            }
            Value::Array(out)
        }
        Slot::Obj { end, .. } => {
            let mut out = serde_json::Map::new();
            let mut i = at + 1;
            while i < *end as usize {
                if let Slot::Key(k) = &slots[i] {
                    out.insert(k.to_string(), value_at(slots, i + 1));
                }
                i = next(slots, i + 1);
            }
            Value::Object(out)
        }
    }
}

/// An object of a [`Tape`].
pub struct TapeObject<'a> {
    slots: &'a [Slot<'a>],
    at: usize,
    len: usize,
    end: usize,
}

impl<'a> Object<'a, TapeJson> for TapeObject<'a> {
    type Node = TapeNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.len
    }
    /// The last member of that name, as `serde_json` (and most servers behind us) read a
    /// duplicated key: validating the first would pass a value the upstream never sees.
    fn get(&self, key: &Box<str>) -> Option<TapeNode<'a>> {
        self.members()
            .filter(|(name, _)| *name == key.as_ref())
            .last()
            .map(|(_, node)| node)
    }
    fn members(&self) -> Members<'a> {
        Members {
            slots: self.slots,
            at: self.at + 1,
            end: self.end,
        }
    }
}

/// The members of a [`TapeObject`], in document order.
pub struct Members<'a> {
    slots: &'a [Slot<'a>],
    at: usize,
    end: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, TapeNode<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.end {
            return None;
        }
        let Slot::Key(name) = &self.slots[self.at] else {
            return None;
        };
        let node = TapeNode {
            slots: self.slots,
            at: self.at + 1,
        };
        self.at = next(self.slots, self.at + 1);
        Some((name.as_ref(), node))
    }
}

/// An array of a [`Tape`].
pub struct TapeArray<'a> {
    slots: &'a [Slot<'a>],
    at: usize,
    len: usize,
    end: usize,
}

impl<'a> Array<'a, TapeJson> for TapeArray<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = Elements<'a>;

    fn len(&self) -> usize {
        self.len
    }
    fn elements(&self) -> Elements<'a> {
        Elements {
            slots: self.slots,
            at: self.at + 1,
            end: self.end,
        }
    }
}

/// The elements of a [`TapeArray`], in order.
pub struct Elements<'a> {
    slots: &'a [Slot<'a>],
    at: usize,
    end: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = TapeNode<'a>;
    fn next(&mut self) -> Option<TapeNode<'a>> {
        if self.at >= self.end {
            return None;
        }
        let node = TapeNode {
            slots: self.slots,
            at: self.at,
        };
        self.at = next(self.slots, self.at);
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_value() {
        let src = br#"{"a":[1,-2,3.5,{"b":null}],"c\n":"x\u00e9y","d":true,"e":{},"f":[]}"#;
        let tape = Tape::parse(src).expect("parses");
        let want: Value = serde_json::from_slice(src).expect("parses");
        assert_eq!(tape.root().to_value().into_owned(), want);
        let obj = tape.root().as_object().expect("object");
        assert_eq!(obj.len(), 5);
        let names: Vec<&str> = obj.members().map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "c\n", "d", "e", "f"]);
        let a = obj.get(&"a".into()).and_then(|n| n.as_array()).expect("a");
        assert_eq!(a.len(), 4);
        let last = a.elements().last().and_then(|n| n.as_object()).expect("b");
        assert!(last.get(&"b".into()).is_some_and(|n| n.is_null()));
        assert_eq!(
            obj.get(&"c\n".into())
                .and_then(|n| n.as_string())
                .as_deref(),
            Some("x\u{e9}y")
        );
    }

    #[test]
    fn a_duplicated_key_reads_as_its_last_value() {
        let schema = serde_json::json!({ "properties": { "a": { "type": "integer" } } });
        let v = jsonschema::options_for::<TapeJson>()
            .build(&schema)
            .expect("compiles");
        for doc in [r#"{"a":"x","a":1}"#, r#"{"a":1,"a":"x"}"#] {
            let tape = Tape::parse(doc.as_bytes()).expect("parses");
            let value: Value = serde_json::from_str(doc).expect("parses");
            assert_eq!(tape.to_value(), value);
            let last_ok = value["a"].is_i64();
            let got = tape.root().as_object().and_then(|o| o.get(&"a".into()));
            assert_eq!(got.and_then(|n| n.as_number()).is_some(), last_ok, "{doc}");
            // The members pass checks both values, so neither order validates.
            assert!(!v.is_valid(tape.root()), "{doc}");
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for bad in [&b"{"[..], b"[1,]", b"{\"a\":1} x", b"", b"nul"] {
            let tape = Tape::parse(bad);
            let value = serde_json::from_slice::<Value>(bad);
            assert_eq!(
                tape.map(|_| ()).map_err(|e| e.to_string()),
                value.map(|_| ()).map_err(|e| e.to_string()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn validates_like_serde_json() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["id", "items"],
            "additionalProperties": false,
            "properties": {
                "id": { "type": "integer", "minimum": 1 },
                "tags": { "type": "array", "uniqueItems": true, "items": { "type": "string" } },
                "kind": { "enum": ["a", "b"] },
                "items": { "type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["n"],
                    "properties": { "n": { "type": "number", "multipleOf": 0.5 } } } }
            },
            "propertyNames": { "maxLength": 5 }
        });
        let tape_v = jsonschema::options_for::<TapeJson>()
            .build(&schema)
            .expect("compiles");
        let value_v = jsonschema::validator_for(&schema).expect("compiles");
        for doc in [
            r#"{"id":1,"items":[{"n":1.5}]}"#,
            r#"{"id":0,"items":[]}"#,
            r#"{"id":2.0,"items":[{"n":1.25}],"kind":"c"}"#,
            r#"{"id":3,"items":[{}],"tags":["x","x"]}"#,
            r#"{"id":3,"items":[{"n":1}],"toolong":1}"#,
            r#"[1,2]"#,
        ] {
            let tape = Tape::parse(doc.as_bytes()).expect("parses");
            let value: Value = serde_json::from_str(doc).expect("parses");
            let a: Vec<(String, String)> = tape_v
                .iter_errors(tape.root())
                .map(|e| (e.instance_path().as_str().to_owned(), e.to_string()))
                .collect();
            let b: Vec<(String, String)> = value_v
                .iter_errors(&value)
                .map(|e| (e.instance_path().as_str().to_owned(), e.to_string()))
                .collect();
            assert_eq!(a, b, "{doc}");
            assert_eq!(
                tape_v.is_valid(tape.root()),
                value_v.is_valid(&value),
                "{doc}"
            );
        }
    }
}
