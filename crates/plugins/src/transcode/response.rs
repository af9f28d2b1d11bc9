//! The response side: gRPC frames back into JSON (or raw `HttpBody` bytes), `grpc-status` to
//! HTTP, and errors as `google.rpc.Status` JSON.

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use percent_encoding::percent_decode_str;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, ReflectMessage as _, SerializeOptions};
use serde_json::{Value, json};

use super::descriptors::{Binding, HTTP_BODY};

/// How messages are printed (`print` in the config).
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Print {
    /// Field names as in the .proto (`page_size`) instead of lowerCamelCase (`pageSize`).
    pub use_proto_field_names: bool,
    /// Print fields that have their default value.
    pub emit_defaults: bool,
    /// Enums as numbers instead of names.
    pub enums_as_ints: bool,
}

impl Print {
    fn options(self) -> SerializeOptions {
        SerializeOptions::new()
            .use_proto_field_name(self.use_proto_field_names)
            .skip_default_fields(!self.emit_defaults)
            .use_enum_numbers(self.enums_as_ints)
            .stringify_64_bit_integers(true)
    }
}

/// The upstream's answer cannot be turned into JSON.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ResponseError(pub String);

/// HTTP status for a gRPC status code (the contract's table, as Envoy and grpc-gateway).
pub fn http_status(code: i32) -> StatusCode {
    match code {
        0 => StatusCode::OK,
        1 => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        3 | 9 | 11 => StatusCode::BAD_REQUEST,
        4 => StatusCode::GATEWAY_TIMEOUT,
        5 => StatusCode::NOT_FOUND,
        6 | 10 => StatusCode::CONFLICT,
        7 => StatusCode::FORBIDDEN,
        8 => StatusCode::TOO_MANY_REQUESTS,
        12 => StatusCode::NOT_IMPLEMENTED,
        14 => StatusCode::SERVICE_UNAVAILABLE,
        16 => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Takes the next whole gRPC message out of `buf`, if one is there.
pub fn next_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, ResponseError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(ResponseError(
            "the upstream sent a compressed message, which was not asked for".into(),
        ));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The gRPC status of a finished call: from the trailers, or from the head of a
/// trailers-only response. `None` when neither has one.
pub fn grpc_status(head: &HeaderMap, trailers: Option<&HeaderMap>) -> Option<(i32, HeaderMap)> {
    for h in [trailers, Some(head)].into_iter().flatten() {
        if let Some(code) = h
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i32>().ok())
        {
            return Some((code, h.clone()));
        }
    }
    None
}

/// A message as the client gets it: JSON, or raw bytes with their type for `HttpBody`.
pub fn render_message(
    b: &Binding,
    print: Print,
    bytes: &[u8],
) -> Result<(Bytes, Option<String>), ResponseError> {
    let out = b.rpc.output();
    let msg = DynamicMessage::decode(out.clone(), bytes).map_err(|e| {
        ResponseError(format!(
            "the upstream message is not a {}: {e}",
            out.full_name()
        ))
    })?;
    let (msg, field) = match &b.response_body {
        None => (msg, None),
        Some(f) => {
            if let Kind::Message(m) = f.kind()
                && !f.is_list()
                && !f.is_map()
            {
                let inner = match msg.get_field(f).as_message() {
                    Some(m) => m.clone(),
                    None => DynamicMessage::new(m),
                };
                (inner, None)
            } else {
                (msg, Some(f.clone()))
            }
        }
    };
    if field.is_none() && msg.descriptor().full_name() == HTTP_BODY {
        let ct = msg
            .get_field_by_name("content_type")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let data = msg
            .get_field_by_name("data")
            .and_then(|v| v.as_bytes().cloned())
            .unwrap_or_default();
        return Ok((data, Some(ct)));
    }
    let mut ser = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut ser, &print.options())
        .map_err(|e| ResponseError(format!("cannot print the upstream message: {e}")))?;
    let json = ser.into_inner();
    let Some(f) = field else {
        return Ok((Bytes::from(json), None));
    };
    // A scalar or repeated `response_body`: print the message, then take the field.
    let v: Value = serde_json::from_slice(&json).map_err(|e| ResponseError(e.to_string()))?;
    let key = if print.use_proto_field_names {
        f.name()
    } else {
        f.json_name()
    };
    let picked = v.get(key).cloned().unwrap_or_else(|| {
        if f.is_list() {
            json!([])
        } else if f.is_map() {
            json!({})
        } else {
            Value::Null
        }
    });
    Ok((Bytes::from(picked.to_string()), None))
}

/// The `google.rpc.Status` JSON of a failed call, with `details` decoded when `pool` knows
/// their types (else `@type` and the raw `value` in base64).
pub fn status_json(pool: &DescriptorPool, code: i32, h: &HeaderMap, print: Print) -> Value {
    let message = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| percent_decode_str(m).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let mut details = Vec::new();
    if let Some(raw) = h
        .get("grpc-status-details-bin")
        .and_then(|v| v.to_str().ok())
        && let Some(bytes) = decode_b64(raw)
        && let Some(desc) = pool.get_message_by_name("google.rpc.Status")
        && let Ok(st) = DynamicMessage::decode(desc, bytes.as_slice())
        && let Some(list) = st.get_field_by_name("details")
        && let Some(list) = list.as_list()
    {
        for any in list {
            let Some(any) = any.as_message() else {
                continue;
            };
            details.push(detail_json(pool, any, print));
        }
    }
    json!({"code": code, "message": message, "details": details})
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s)
        .ok()
}

fn detail_json(pool: &DescriptorPool, any: &DynamicMessage, print: Print) -> Value {
    let url = any
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let value = any
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let name = url.rsplit('/').next().unwrap_or("");
    if let Some(desc) = pool.get_message_by_name(name)
        && let Ok(m) = DynamicMessage::decode(desc, value.as_ref())
    {
        let mut ser = serde_json::Serializer::new(Vec::new());
        if m.serialize_with_options(&mut ser, &print.options()).is_ok()
            && let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&ser.into_inner())
        {
            let mut out = serde_json::Map::new();
            out.insert("@type".into(), Value::String(url));
            out.append(&mut obj);
            return Value::Object(out);
        }
    }
    json!({
        "@type": url,
        "value": base64::engine::general_purpose::STANDARD.encode(&value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        for (code, http) in [
            (0, 200),
            (1, 499),
            (2, 500),
            (3, 400),
            (4, 504),
            (5, 404),
            (6, 409),
            (7, 403),
            (8, 429),
            (9, 400),
            (10, 409),
            (11, 400),
            (12, 501),
            (13, 500),
            (14, 503),
            (15, 500),
            (16, 401),
            (99, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), http, "grpc code {code}");
        }
    }

    #[test]
    fn frames_split_across_chunks() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 0, 3, b'a']);
        assert!(next_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"bc");
        buf.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert_eq!(next_frame(&mut buf).unwrap().unwrap(), "abc");
        assert_eq!(next_frame(&mut buf).unwrap().unwrap(), "");
        assert!(next_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&[1, 0, 0, 0, 0]);
        assert!(next_frame(&mut buf).is_err());
    }
}
