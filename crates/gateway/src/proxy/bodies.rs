//! The body phases of the pipeline, for routes with a plugin that has them (see
//! `portcullis_plugins::body`): request bodies buffered or transformed before they go upstream,
//! upstream response bodies buffered or transformed on their way to the client. Routes without
//! such a plugin never come here.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body;
use hyper::body::Incoming;
use portcullis_client::BoxError;
use portcullis_plugins::body::{chain_data, chain_end};
use portcullis_plugins::{BodyAccess, BodyTransform, Flow, RequestCtx};

use super::{respond_reply, run_phase};
use crate::body::{ReqBody, RespBody, Transform};
use crate::errors::{GatewayError, render};
use crate::snapshot::RouteRuntime;
use crate::telemetry::Record;

/// Why a body could not be read whole.
enum ReadError {
    TooLarge,
    Failed(BoxError),
}

/// Reads a body and its trailers whole, refusing more than `limit` bytes.
async fn read_all<B>(
    mut body: B,
    limit: u64,
    declared: Option<u64>,
) -> Result<(Bytes, Option<HeaderMap>), ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    // A body that arrives in one frame (most small ones) is kept as it came: no copy. A second
    // frame starts a buffer sized from Content-Length when the client sent one.
    let mut first: Option<Bytes> = None;
    let mut buf: Option<bytes::BytesMut> = None;
    let mut total = 0u64;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Failed(e.into()))?;
        match frame.into_data() {
            Ok(d) => {
                total += d.len() as u64;
                if total > limit {
                    return Err(ReadError::TooLarge);
                }
                if let Some(b) = buf.as_mut() {
                    b.extend_from_slice(&d);
                } else if let Some(f) = first.take() {
                    let cap = declared.unwrap_or(total).clamp(total, limit);
                    let mut b = bytes::BytesMut::with_capacity(usize::try_from(cap).unwrap_or(0));
                    b.extend_from_slice(&f);
                    b.extend_from_slice(&d);
                    buf = Some(b);
                } else {
                    first = Some(d);
                }
            }
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    let data = match buf {
        Some(b) => b.freeze(),
        None => first.unwrap_or_default(),
    };
    Ok((data, trailers))
}

/// Runs stream transforms over a body already whole.
fn transform_whole(
    mut chain: Vec<Box<dyn BodyTransform>>,
    data: Bytes,
    trailers: Option<HeaderMap>,
) -> Result<(Bytes, Option<HeaderMap>), portcullis_plugins::BodyError> {
    let first = chain_data(&mut chain, data)?;
    let end = chain_end(&mut chain, trailers)?;
    let data = match end.data {
        Some(last) if first.is_empty() => last,
        Some(last) => {
            let mut all = first.to_vec();
            all.extend_from_slice(&last);
            Bytes::from(all)
        }
        None => first,
    };
    Ok((data, end.trailers))
}

/// Frames a whole body by its length. A `Content-Length` already right (the usual case: the
/// body came whole and no plugin changed its size) is kept as it is, without a new header value.
fn set_length(h: &mut HeaderMap, len: usize) {
    if h.contains_key(header::TRANSFER_ENCODING) {
        h.remove(header::TRANSFER_ENCODING);
    } else if crate::body::declared_length(h) == Some(len as u64)
        && h.get_all(header::CONTENT_LENGTH).iter().nth(1).is_none()
    {
        return;
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// A finished early answer of the pipeline.
pub(super) type Answer = (Response<RespBody>, Option<RequestCtx>);

/// The request body phases. `Ok(None)` when no plugin wants this request's body: the caller
/// sends it as usual (the body is left in `body`). `Err` is the answer to send instead.
pub(super) async fn request(
    body: &mut Option<Incoming>,
    parts: &mut http::request::Parts,
    route: &RouteRuntime,
    ctx: &mut RequestCtx,
    max_body_bytes: u64,
    rec: &mut Record,
) -> Result<Option<ReqBody>, Answer> {
    let wants: Vec<(usize, BodyAccess)> = route
        .plugins
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.request_body(ctx, parts).map(|a| (i, a)))
        .collect();
    if wants.is_empty() {
        return Ok(None);
    }
    let Some(incoming) = body.take() else {
        return Ok(None);
    };
    let buffered_limit = wants
        .iter()
        .filter_map(|(_, a)| match a {
            BodyAccess::Buffered { limit } => Some((*limit).min(max_body_bytes)),
            BodyAccess::Stream => None,
        })
        .min();
    let mut chain = Vec::new();
    let Some(limit) = buffered_limit else {
        // Streams only: no buffering, each plugin's transform in order.
        for (i, _) in &wants {
            if let Some(t) = route.plugins[*i].request_body_transform(ctx, parts) {
                chain.push(t);
            }
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        let inner = ReqBody::limited(incoming, max_body_bytes, None);
        return Ok(Some(if chain.is_empty() {
            inner
        } else {
            ReqBody::Transformed(Box::new(inner), Transform::new(chain))
        }));
    };
    let too_large = || {
        GatewayError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body larger than {limit} bytes"),
        )
    };
    let declared = crate::body::declared_length(&parts.headers);
    let read = if declared.is_some_and(|n| n > limit) {
        Err(ReadError::TooLarge)
    } else {
        read_all(incoming, limit, declared).await
    };
    let (mut data, trailers) = match read {
        Ok(x) => x,
        Err(e) => {
            let ge = match e {
                ReadError::TooLarge => too_large(),
                ReadError::Failed(e) => {
                    tracing::debug!(error = %e, "reading the request body failed");
                    GatewayError::bad_request("the request body could not be read")
                }
            };
            rec.error = Some(ge.code);
            return Err((
                render(&ge, &ctx.request_id),
                Some(std::mem::replace(ctx, fresh(ctx))),
            ));
        }
    };
    for (i, a) in &wants {
        let p = &route.plugins[*i];
        if let BodyAccess::Buffered { .. } = a {
            let step = p.on_request_body(ctx, parts, &mut data);
            if let Flow::Respond(reply) = run_phase(step, p.name(), "request_body", rec).await {
                let ctx = std::mem::replace(ctx, fresh(ctx));
                return Err(respond_reply(reply, route, ctx, rec));
            }
        } else if let Some(t) = p.request_body_transform(ctx, parts) {
            chain.push(t);
        }
    }
    if !chain.is_empty() {
        match transform_whole(chain, data, trailers) {
            Ok((d, _)) => data = d,
            Err(e) => {
                let ge = GatewayError::bad_request(format!("the request body was refused: {e}"));
                rec.error = Some(ge.code);
                return Err((
                    render(&ge, &ctx.request_id),
                    Some(std::mem::replace(ctx, fresh(ctx))),
                ));
            }
        }
    }
    set_length(&mut parts.headers, data.len());
    Ok(Some(
        <ReqBody as portcullis_client::ReplayBody>::from_bytes(data),
    ))
}

/// A context to leave behind when the request's own goes into an answer.
fn fresh(ctx: &RequestCtx) -> RequestCtx {
    RequestCtx::new(ctx.request_id.clone(), ctx.client_ip, ctx.listener.clone())
}

/// The response body phases, for an upstream response whose head went through `on_response`.
pub(super) async fn response(
    resp: Response<RespBody>,
    route: &RouteRuntime,
    mut ctx: RequestCtx,
    rec: &mut Record,
) -> Answer {
    let (mut parts, body) = resp.into_parts();
    let wants: Vec<(usize, BodyAccess)> = route
        .plugins
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.response_body(&ctx, &parts).map(|a| (i, a)))
        .collect();
    if wants.is_empty() {
        return (Response::from_parts(parts, body), Some(ctx));
    }
    let limit = wants
        .iter()
        .filter_map(|(_, a)| match a {
            BodyAccess::Buffered { limit } => Some(*limit),
            BodyAccess::Stream => None,
        })
        .min();
    let mut chain = Vec::new();
    let Some(limit) = limit else {
        for (i, _) in &wants {
            if let Some(t) = route.plugins[*i].response_body_transform(&mut ctx, &mut parts) {
                chain.push(t);
            }
        }
        if chain.is_empty() {
            return (Response::from_parts(parts, body), Some(ctx));
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        let body = RespBody::Transformed {
            inner: Box::pin(body),
            t: Transform::new(chain),
        };
        return (Response::from_parts(parts, body), Some(ctx));
    };
    let declared = crate::body::declared_length(&parts.headers);
    let (mut data, mut trailers) = match read_all(body, limit, declared).await {
        Ok(x) => x,
        Err(e) => {
            let (ge, reason) = match e {
                ReadError::TooLarge => (
                    GatewayError::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream_error",
                        format!("upstream response larger than {limit} bytes"),
                    ),
                    "response_too_large",
                ),
                ReadError::Failed(e) => {
                    tracing::debug!(error = %e, "reading the upstream response body failed");
                    (
                        GatewayError::new(
                            StatusCode::BAD_GATEWAY,
                            "upstream_error",
                            "the upstream response body failed",
                        ),
                        "response_body_failed",
                    )
                }
            };
            rec.error = Some(reason);
            return (render(&ge, &ctx.request_id), Some(ctx));
        }
    };
    for (i, a) in &wants {
        let p = &route.plugins[*i];
        if let BodyAccess::Buffered { .. } = a {
            if let Flow::Respond(reply) =
                p.on_response_body(&mut ctx, &mut parts, &mut data, &mut trailers)
            {
                return respond_reply(reply, route, ctx, rec);
            }
        } else if let Some(t) = p.response_body_transform(&mut ctx, &mut parts) {
            chain.push(t);
        }
    }
    if !chain.is_empty() {
        match transform_whole(chain, data, trailers) {
            Ok((d, t)) => (data, trailers) = (d, t),
            Err(e) => {
                tracing::debug!(error = %e, "a plugin could not transform the response body");
                rec.error = Some("response_transform_failed");
                let ge = GatewayError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "the upstream response could not be transformed",
                );
                return (render(&ge, &ctx.request_id), Some(ctx));
            }
        }
    }
    set_length(&mut parts.headers, data.len());
    let body = RespBody::Buffered {
        data: (!data.is_empty()).then_some(data),
        trailers,
    };
    (Response::from_parts(parts, body), Some(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    fn frames(parts: &[&'static str]) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        let mut v: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        let mut t = HeaderMap::new();
        t.insert("x-sum", http::HeaderValue::from_static("1"));
        v.push(Ok(Frame::trailers(t)));
        StreamBody::new(futures_util::stream::iter(v))
    }

    #[tokio::test]
    async fn read_all_keeps_one_frame_and_joins_many() {
        let (one, t) = read_all(frames(&["hello"]), 10, Some(5))
            .await
            .ok()
            .unwrap();
        assert_eq!(one, "hello");
        assert!(t.is_some_and(|t| t.contains_key("x-sum")));
        for declared in [None, Some(2), Some(11), Some(100)] {
            let (all, _) = read_all(frames(&["ab", "cd", "efg"]), 10, declared)
                .await
                .ok()
                .unwrap();
            assert_eq!(all, "abcdefg", "declared {declared:?}");
        }
        let (none, _) = read_all(frames(&[]), 10, None).await.ok().unwrap();
        assert!(none.is_empty());
        assert!(matches!(
            read_all(frames(&["abcdef", "ghijk"]), 10, None).await,
            Err(ReadError::TooLarge)
        ));
    }
}
