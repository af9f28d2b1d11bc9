//! Server streaming: gRPC messages become a JSON array, NDJSON lines or SSE events as they
//! arrive, never buffered whole; a failure after the stream began is a final error object.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use prost_reflect::DescriptorPool;

use super::descriptors::Binding;
use super::response::{Print, grpc_status, next_frame, render_message, status_json};
use crate::body::{BodyEnd, BodyError, BodyTransform};

/// How a server stream is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamFormat {
    /// One JSON array, elements written as they come.
    #[default]
    JsonArray,
    /// One JSON object per line (`application/x-ndjson`).
    Ndjson,
    /// Server-sent events, one `data:` event per message (`text/event-stream`).
    Sse,
}

impl StreamFormat {
    /// The response content type.
    pub fn content_type(self) -> &'static str {
        match self {
            StreamFormat::JsonArray => "application/json",
            StreamFormat::Ndjson => "application/x-ndjson",
            StreamFormat::Sse => "text/event-stream",
        }
    }

    /// The format an `Accept` header asks for, if it names one.
    pub fn from_accept(accept: &str) -> Option<Self> {
        if accept.contains("application/x-ndjson") {
            Some(StreamFormat::Ndjson)
        } else if accept.contains("text/event-stream") {
            Some(StreamFormat::Sse)
        } else {
            None
        }
    }
}

/// The stream transform of one response.
pub struct JsonStream {
    /// The binding called.
    pub binding: Arc<Binding>,
    /// Descriptors, for error details.
    pub pool: DescriptorPool,
    /// Print options.
    pub print: Print,
    /// Output format.
    pub format: StreamFormat,
    /// The response head (a trailers-only answer has its status there).
    pub head: HeaderMap,
    /// Bytes of an incomplete frame.
    pub buf: BytesMut,
    /// Messages written so far.
    pub count: usize,
}

impl JsonStream {
    fn write(&mut self, out: &mut Vec<u8>, json: &[u8], event: Option<&str>) {
        match self.format {
            StreamFormat::JsonArray => {
                out.push(if self.count == 0 { b'[' } else { b',' });
                out.extend_from_slice(json);
            }
            StreamFormat::Ndjson => {
                out.extend_from_slice(json);
                out.push(b'\n');
            }
            StreamFormat::Sse => {
                if let Some(e) = event {
                    out.extend_from_slice(b"event: ");
                    out.extend_from_slice(e.as_bytes());
                    out.push(b'\n');
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(json);
                out.extend_from_slice(b"\n\n");
            }
        }
        self.count += 1;
    }
}

impl BodyTransform for JsonStream {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, BodyError> {
        self.buf.extend_from_slice(&chunk);
        let mut out = Vec::new();
        while let Some(frame) = next_frame(&mut self.buf).map_err(|e| BodyError(e.0))? {
            let (json, _) =
                render_message(&self.binding, self.print, &frame).map_err(|e| BodyError(e.0))?;
            self.write(&mut out, &json, None);
        }
        Ok(Bytes::from(out))
    }

    fn end(&mut self, trailers: Option<HeaderMap>) -> Result<BodyEnd, BodyError> {
        let mut out = Vec::new();
        let status = grpc_status(&self.head, trailers.as_ref());
        match status {
            Some((0, _)) => {}
            Some((code, h)) => {
                let err =
                    serde_json::json!({ "error": status_json(&self.pool, code, &h, self.print) });
                self.write(&mut out, err.to_string().as_bytes(), Some("error"));
            }
            None => {
                let err = serde_json::json!({"error": {
                    "code": 13,
                    "message": "the upstream ended the stream without a grpc-status",
                    "details": [],
                }});
                self.write(&mut out, err.to_string().as_bytes(), Some("error"));
            }
        }
        if self.format == StreamFormat::JsonArray {
            if self.count == 0 {
                out.push(b'[');
            }
            out.push(b']');
        }
        Ok(BodyEnd {
            data: Some(Bytes::from(out)),
            trailers: None,
        })
    }
}
