//! Bodies against their media type's schema: JSON, URL-encoded forms and multipart forms (at
//! field level).

use bytes::Bytes;
use serde_json::{Map, Value};

use super::params::{coerce, query_pairs, shape_values};
use super::spec::{BodyKind, BodySchema, Media, Shape};
use super::tape::Tape;
use super::{Failure, schema_failures};

/// The essence of a `Content-Type` value: `type/subtype`, lower case.
pub fn essence(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The declared media type a content type falls under: exact, then `type/*`, then `*/*`
/// (declared ranges are lower case; the header is compared without case and not copied).
pub fn find_media<'m>(media: &'m [Media], ct: &str) -> Option<&'m Media> {
    let ess = ct.split(';').next().unwrap_or("").trim();
    let major = ess.split('/').next().unwrap_or("");
    media
        .iter()
        .find(|m| m.range.eq_ignore_ascii_case(ess))
        .or_else(|| {
            media.iter().find(|m| {
                m.range
                    .strip_suffix("/*")
                    .is_some_and(|r| r.eq_ignore_ascii_case(major))
            })
        })
        .or_else(|| media.iter().find(|m| m.range == "*/*"))
}

/// A failure of the body as a whole (no field, no pointer).
pub(super) fn body_failure(message: String) -> Failure {
    Failure {
        loc: "body",
        name: String::new(),
        pointer: String::new(),
        message,
    }
}

/// Form fields into an object shaped by the schema's properties.
fn fields_to_object(media: &Media, pairs: Vec<(String, String)>) -> Value {
    let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in pairs {
        match grouped.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vs)) => vs.push(v),
            None => grouped.push((k, vec![v])),
        }
    }
    let mut m = Map::new();
    for (k, vs) in grouped {
        let shape = media
            .fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, s)| s.clone());
        let v = match shape {
            Some(Shape::Array(t)) => Value::Array(vs.iter().map(|v| coerce(v, t)).collect()),
            Some(Shape::Scalar(t)) if vs.len() == 1 => coerce(&vs[0], t),
            Some(s @ Shape::Object(_)) => {
                // An object field sent as JSON text is the usual way; else `k,v,...`.
                serde_json::from_str(&vs[0])
                    .unwrap_or_else(|_| shape_values(&vs[0].split(',').collect::<Vec<_>>(), &s))
            }
            _ if vs.len() == 1 => Value::String(vs[0].clone()),
            _ => Value::Array(vs.into_iter().map(Value::String).collect()),
        };
        m.insert(k, v);
    }
    Value::Object(m)
}

/// Validates a JSON body when the media type has a JSON schema; `false` when it has not (the
/// body is then for [`check`]). Never waits, so the request phase needs no future for it.
pub fn check_json(media: &Media, body: &[u8], out: &mut Vec<Failure>) -> bool {
    let Some(BodySchema::Json(schema)) = &media.schema else {
        return false;
    };
    match Tape::parse(body) {
        Ok(t) => schema_failures(schema, t.root(), "body", "", false, out),
        Err(e) => out.push(body_failure(format!("the body is not valid JSON: {e}"))),
    }
    true
}

/// Validates a whole body; `content_type` is the request's or response's header value.
pub async fn check(media: &Media, content_type: &str, body: Bytes, out: &mut Vec<Failure>) {
    if check_json(media, &body, out) {
        return;
    }
    let schema = match &media.schema {
        Some(BodySchema::Fields(schema)) => schema,
        Some(BodySchema::Json(_)) | None => return,
    };
    let value = match media.kind {
        BodyKind::Form => {
            let Ok(text) = std::str::from_utf8(&body) else {
                out.push(body_failure("the form body is not UTF-8".into()));
                return;
            };
            fields_to_object(media, query_pairs(text))
        }
        BodyKind::Multipart => match multipart_fields(content_type, body).await {
            Ok(pairs) => fields_to_object(media, pairs),
            Err(e) => {
                out.push(body_failure(format!(
                    "the multipart body is malformed: {e}"
                )));
                return;
            }
        },
        BodyKind::Json | BodyKind::Other => return,
    };
    schema_failures(schema, &value, "body", "", false, out);
}

/// The fields of a multipart body as text (files lossily).
async fn multipart_fields(
    content_type: &str,
    body: Bytes,
) -> Result<Vec<(String, String)>, multer::Error> {
    let boundary = multer::parse_boundary(content_type)?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut out = Vec::new();
    while let Some(field) = mp.next_field().await? {
        let name = field.name().unwrap_or("").to_owned();
        let data = field.bytes().await?;
        out.push((name, String::from_utf8_lossy(&data).into_owned()));
    }
    Ok(out)
}
