//! The request side: path variables, query parameters and the JSON body become one protobuf
//! message (or, for client streaming, several), framed for gRPC.

use bytes::{BufMut, Bytes, BytesMut};
use percent_encoding::percent_decode;
use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

use super::descriptors::{Binding, BodyRule, HTTP_BODY, field_path};

/// A request that cannot be transcoded: the message says why, with the field's path.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MapError(pub String);

/// Path variables and query parameters as a JSON object, by proto field names.
pub fn head_fields(
    b: &Binding,
    vars: &[String],
    query: Option<&str>,
    ignore_unknown: bool,
) -> Result<Map<String, Value>, MapError> {
    let mut out = Map::new();
    for (fields, value) in b.var_fields.iter().zip(vars) {
        let names: Vec<&str> = fields.iter().map(FieldDescriptor::name).collect();
        if let Some(last) = fields.last() {
            set_path(&mut out, &names, scalar(last, value), false);
        }
    }
    let Some(q) = query else { return Ok(out) };
    let input = b.rpc.input();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = form_decode(k);
        let value = form_decode(v);
        let unknown = |why: &str| {
            if ignore_unknown {
                Ok(())
            } else {
                Err(MapError(format!("unknown query parameter `{key}`{why}")))
            }
        };
        if matches!(b.body, BodyRule::All) {
            unknown(": this operation takes every field from the body")?;
            continue;
        }
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        let Ok(fields) = field_path(&input, &path) else {
            unknown("")?;
            continue;
        };
        if let (BodyRule::Field(bf), Some(first)) = (&b.body, fields.first())
            && bf.number() == first.number()
        {
            unknown(": that field comes from the body")?;
            continue;
        }
        if b.var_fields.iter().any(|v| same_path(v, &fields)) {
            return Err(MapError(format!(
                "query parameter `{key}` sets a field bound by the path"
            )));
        }
        let Some(last) = fields.last() else { continue };
        if last.is_map() || (matches!(last.kind(), Kind::Message(m) if !is_wkt(&m))) {
            return Err(MapError(format!(
                "query parameter `{key}` names a message field; use its fields (`{key}.x`)"
            )));
        }
        let names: Vec<&str> = fields.iter().map(FieldDescriptor::name).collect();
        set_path(&mut out, &names, scalar(last, &value), last.is_list());
    }
    Ok(out)
}

fn same_path(a: &[FieldDescriptor], b: &[FieldDescriptor]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.number() == y.number())
}

fn is_wkt(m: &MessageDescriptor) -> bool {
    m.full_name().starts_with("google.protobuf.")
}

fn form_decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_decode(s.as_bytes())
        .decode_utf8_lossy()
        .into_owned()
}

/// A text value as the JSON the proto3 mapping expects for the field.
fn scalar(f: &FieldDescriptor, v: &str) -> Value {
    match f.kind() {
        Kind::Bool => match v {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(v.to_owned()),
        },
        Kind::Enum(_) => v
            .parse::<i64>()
            .map_or_else(|_| Value::String(v.to_owned()), |n| Value::Number(n.into())),
        _ => Value::String(v.to_owned()),
    }
}

fn set_path(obj: &mut Map<String, Value>, names: &[&str], v: Value, repeated: bool) {
    let Some((last, inner)) = names.split_last() else {
        return;
    };
    let mut cur = obj;
    for n in inner {
        let e = cur
            .entry((*n).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !e.is_object() {
            *e = Value::Object(Map::new());
        }
        let Value::Object(m) = e else { return };
        cur = m;
    }
    if repeated {
        match cur
            .entry((*last).to_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(a) => a.push(v),
            other => *other = Value::Array(vec![v]),
        }
    } else {
        cur.insert((*last).to_owned(), v);
    }
}

/// Merges `extra` into `into`, `extra` winning.
fn merge(into: &mut Map<String, Value>, extra: &Map<String, Value>) {
    for (k, v) in extra {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// JSON into a message of `desc`, with the path of a bad field in the error.
pub fn from_json(desc: &MessageDescriptor, v: Value) -> Result<DynamicMessage, MapError> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(v, &mut track);
    DynamicMessage::deserialize_with_options(desc.clone(), de, &DeserializeOptions::new()).map_err(
        |e| {
            let path = track.path().to_string();
            if path == "." || path.is_empty() {
                MapError(format!("invalid request: {e}"))
            } else {
                MapError(format!("invalid field `{path}`: {e}"))
            }
        },
    )
}

/// A JSON object body straight into a message of `desc`, without a `serde_json::Value` in
/// between (the common `body: "*"` request pays one parse instead of a parse, a tree and a
/// walk of the tree); errors read as [`from_json`]'s and [`parse_body`]'s.
fn from_json_bytes(desc: &MessageDescriptor, raw: &[u8]) -> Result<DynamicMessage, MapError> {
    let mut track = serde_path_to_error::Track::new();
    let mut json = serde_json::Deserializer::from_slice(raw);
    let de = serde_path_to_error::Deserializer::new(&mut json, &mut track);
    let msg =
        DynamicMessage::deserialize_with_options(desc.clone(), de, &DeserializeOptions::new())
            .map_err(|e| {
                if e.classify() != serde_json::error::Category::Data {
                    return MapError(format!("malformed JSON body: {e}"));
                }
                let path = track.path().to_string();
                if path == "." || path.is_empty() {
                    MapError(format!("invalid request: {e}"))
                } else {
                    MapError(format!("invalid field `{path}`: {e}"))
                }
            })?;
    json.end()
        .map_err(|e| MapError(format!("malformed JSON body: {e}")))?;
    Ok(msg)
}

fn parse_body(body: &[u8]) -> Result<Value, MapError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(body).map_err(|e| MapError(format!("malformed JSON body: {e}")))
}

fn http_body(desc: &MessageDescriptor, content_type: &str, data: &Bytes) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    m.set_field_by_name(
        "content_type",
        prost_reflect::Value::String(content_type.to_owned()),
    );
    m.set_field_by_name("data", prost_reflect::Value::Bytes(data.clone()));
    m
}

/// The request message(s), gRPC-framed: one for unary and server-streaming methods, one per
/// element of a JSON array body for client streaming.
pub fn build(
    b: &Binding,
    head: &Map<String, Value>,
    body: &Bytes,
    content_type: &str,
) -> Result<Bytes, MapError> {
    let input = b.rpc.input();
    let mut out = BytesMut::new();
    if b.rpc.is_client_streaming() {
        let v = parse_body(body)?;
        let items = match v {
            Value::Array(items) => items,
            Value::Object(m) if m.is_empty() => Vec::new(),
            _ => {
                return Err(MapError(
                    "a client-streaming method takes a JSON array of messages".into(),
                ));
            }
        };
        for (i, item) in items.into_iter().enumerate() {
            let msg = message(b, &input, head, Some(item), body, content_type)
                .map_err(|e| MapError(format!("[{i}]: {}", e.0)))?;
            frame(&mut out, &msg);
        }
        return Ok(out.freeze());
    }
    let msg = message(b, &input, head, None, body, content_type)?;
    frame(&mut out, &msg);
    Ok(out.freeze())
}

fn message(
    b: &Binding,
    input: &MessageDescriptor,
    head: &Map<String, Value>,
    item: Option<Value>,
    raw: &Bytes,
    content_type: &str,
) -> Result<DynamicMessage, MapError> {
    match &b.body {
        BodyRule::None => from_json(input, Value::Object(head.clone())),
        BodyRule::All if input.full_name() == HTTP_BODY && item.is_none() => {
            Ok(http_body(input, content_type, raw))
        }
        BodyRule::All
            if item.is_none() && raw.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{') =>
        {
            let mut msg = from_json_bytes(input, raw)?;
            if !head.is_empty() {
                // Fields bound from the path win over the body's, as in the JSON merge below.
                let bound = from_json(input, Value::Object(head.clone()))?;
                msg.merge(bound.encode_to_vec().as_slice())
                    .map_err(|e| MapError(format!("invalid request: {e}")))?;
            }
            Ok(msg)
        }
        BodyRule::All => {
            let v = match item {
                Some(v) => v,
                None => parse_body(raw)?,
            };
            let Value::Object(mut obj) = v else {
                return Err(MapError("the body must be a JSON object".into()));
            };
            merge(&mut obj, head);
            from_json(input, Value::Object(obj))
        }
        BodyRule::Field(f) => {
            if let Kind::Message(m) = f.kind()
                && m.full_name() == HTTP_BODY
                && !f.is_list()
                && item.is_none()
            {
                let mut msg = from_json(input, Value::Object(head.clone()))?;
                msg.set_field(
                    f,
                    prost_reflect::Value::Message(http_body(&m, content_type, raw)),
                );
                return Ok(msg);
            }
            let v = match item {
                Some(v) => v,
                None => parse_body(raw)?,
            };
            let mut obj = head.clone();
            obj.insert(f.name().to_owned(), v);
            from_json(input, Value::Object(obj))
        }
    }
}

/// Appends one gRPC length-prefixed message.
pub fn frame(out: &mut BytesMut, msg: &DynamicMessage) {
    let bytes = msg.encode_to_vec();
    out.reserve(5 + bytes.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&bytes);
}
