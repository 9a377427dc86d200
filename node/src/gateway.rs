//! The HTTP gateway and API: every stream as a live HLS playlist any player understands (segments with byte
//! ranges), its signed manifest as JSON, the node's status and resource policy, and Prometheus metrics.

use std::sync::Arc;

use std::ops::RangeInclusive;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_range_header::RangeUnsatisfiableError;
use serde::Serialize;
use streamrp2p_protocols::stream::{ParseStreamIdError, StreamId};

use crate::Shared;
use crate::playlist;
use crate::policy::{self, Policy, PolicyUpdate};

/// The gateway's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/streams/{id}/index.m3u8", get(playlist_handler))
        .route("/streams/{id}/manifest", get(manifest_handler))
        .route("/streams/{id}/{file}", get(segment_handler))
        .route("/api/status", get(status_handler))
        .route(
            "/api/policy",
            get(get_policy).post(post_policy).layer((
                axum::middleware::from_fn(refuse_oversized_policy),
                DefaultBodyLimit::max(POLICY_BODY_LIMIT),
            )),
        )
        .route("/metrics", get(metrics_handler))
        .layer(axum::middleware::map_response(allow_any_origin))
        .with_state(shared)
}

/// Lets browser players on any page (hls.js) read the stream: everything served here is public.
async fn allow_any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    response
}

/// An error answer: a status and a sentence saying what was wrong.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what.to_owned())
}

fn parse_stream(id: &str) -> Result<StreamId, ApiError> {
    id.parse()
        .map_err(|e: ParseStreamIdError| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn playlist_handler(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let stream = parse_stream(&id)?;
    let store = shared.store.read().expect("store lock");
    let Some(s) = store.stream(&stream) else {
        return Err(not_found("this node does not carry that stream"));
    };
    let listed = s.playable.listed(&s.segments);
    if listed.is_empty() {
        return Err(not_found("no segment of this stream is playable yet; retry shortly"));
    }
    let body = playlist::render(&s.segments, &listed);
    let headers = [
        (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    Ok((headers, body).into_response())
}

/// A manifest entry as the JSON API shows it.
#[derive(Serialize)]
struct EntryJson {
    seq: u64,
    duration: f64,
    cid: String,
    size: u64,
    blocks: Vec<String>,
    timestamp_ms: u64,
    discontinuity: bool,
    /// The broadcaster's signature over the entry's protobuf bytes, hex.
    signature: String,
}

async fn manifest_handler(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let stream = parse_stream(&id)?;
    let store = shared.store.read().expect("store lock");
    let Some(s) = store.stream(&stream) else {
        return Err(not_found("this node does not carry that stream"));
    };
    let entries: Vec<EntryJson> = s
        .segments
        .values()
        .map(|seg| {
            let e = seg.entry.entry();
            EntryJson {
                seq: e.seq,
                duration: e.duration.as_secs_f64(),
                cid: e.root.to_string(),
                size: e.size,
                blocks: e.blocks.iter().map(ToString::to_string).collect(),
                timestamp_ms: e.timestamp_ms,
                discontinuity: e.discontinuity,
                signature: hex::encode(&seg.entry.to_proto().signature),
            }
        })
        .collect();
    Ok(axum::Json(entries).into_response())
}

async fn segment_handler(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let stream = parse_stream(&id)?;
    let Some(seq) = file.strip_suffix(".ts").and_then(|s| s.parse::<u64>().ok()) else {
        return Err(not_found("segments are named <sequence number>.ts"));
    };
    let data = {
        let store = shared.store.read().expect("store lock");
        let Some(segment) = store.stream(&stream).and_then(|s| s.segments.get(&seq)) else {
            return Err(not_found("this node does not hold that segment"));
        };
        segment.data.clone()
    };
    Ok(ranged(&headers, data, "video/mp2t"))
}

/// `data` as a response to a GET with these headers: the whole of it (200), or the single byte range asked for in
/// `Range` (206 with `Content-Range`; 416 when no byte of it exists). A `Range` header that does not parse is ignored,
/// as RFC 9110 §14.2 allows, and several ranges get the whole body (200), which it allows too.
fn ranged(headers: &HeaderMap, data: Bytes, content_type: &'static str) -> Response {
    let len = data.len() as u64;
    let mut response = match headers.get(header::RANGE).map(|value| byte_range(value, len)) {
        None | Some(Requested::Whole) => ([(header::CONTENT_TYPE, content_type)], data).into_response(),
        Some(Requested::Range(range)) => {
            let content_range = format!("bytes {}-{}/{len}", range.start(), range.end());
            let body = data.slice(*range.start() as usize..=*range.end() as usize);
            (
                StatusCode::PARTIAL_CONTENT,
                [
                    (header::CONTENT_TYPE, content_type.to_owned()),
                    (header::CONTENT_RANGE, content_range),
                ],
                body,
            )
                .into_response()
        }
        Some(Requested::Unsatisfiable) => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            format!("no byte of the range exists: the segment has {len} bytes\n"),
        )
            .into_response(),
    };
    response
        .headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response
}

/// What a `Range` header asks of a body of `len` bytes.
#[derive(Debug, PartialEq)]
enum Requested {
    /// The whole body: a header that does not parse, or several ranges.
    Whole,
    /// One range, inside the body.
    Range(RangeInclusive<u64>),
    /// Nothing that exists.
    Unsatisfiable,
}

fn byte_range(value: &HeaderValue, len: u64) -> Requested {
    let Ok(value) = value.to_str() else {
        return Requested::Whole;
    };
    let parsed = match http_range_header::parse_range_header(value) {
        Ok(parsed) => parsed,
        // `bytes=-0`: the last zero bytes, which never exist.
        Err(RangeUnsatisfiableError::ZeroSuffix) => return Requested::Unsatisfiable,
        Err(_) => return Requested::Whole,
    };
    if parsed.ranges.len() != 1 {
        return Requested::Whole;
    }
    match parsed.validate(len) {
        Ok(ranges) => match ranges.into_iter().next() {
            Some(range) if *range.start() < len && range.start() <= range.end() => Requested::Range(range),
            _ => Requested::Unsatisfiable,
        },
        // A suffix longer than the body is all of it (RFC 9110 §14.1.2).
        Err(RangeUnsatisfiableError::FileSuffixOutOfBounds) if len > 0 => Requested::Range(0..=len - 1),
        Err(_) => Requested::Unsatisfiable,
    }
}

/// An error of the JSON API: a status and `{"error": "what was wrong"}`.
struct JsonError(StatusCode, String);

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

/// The largest `POST /api/policy` body read (axum's default): a policy is a few dozen bytes of JSON, but a deeply
/// nested or padded one up to this size is read and refused with the parser's reason.
const POLICY_BODY_LIMIT: usize = 2 << 20;

/// Refuses a policy body whose announced length is over [`POLICY_BODY_LIMIT`] before reading a byte of it (a client
/// that sent `Expect: 100-continue` never sends it); one that comes without a length is cut at the limit as it is
/// read.
async fn refuse_oversized_policy(request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|len| len > POLICY_BODY_LIMIT as u64) {
        return JsonError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {POLICY_BODY_LIMIT} bytes; a policy is a small JSON object"),
        )
        .into_response();
    }
    next.run(request).await
}

async fn get_policy(State(shared): State<Arc<Shared>>) -> Json<Policy> {
    Json(*shared.policy.borrow())
}

/// Applies a partial update (`{"max_upload_kbps": 2000}`, `null` removes a limit) and answers the policy in force.
async fn post_policy(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<PolicyUpdate>, JsonRejection>,
) -> Result<Json<Policy>, JsonError> {
    let Json(update) = body.map_err(|rejection| {
        let status = match rejection {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        JsonError(
            status,
            format!(
                "{}; send a JSON object with any of max_upload_kbps (kbit/s or null), metered (bool), background \
                 (bool), max_ratio (number or null)",
                rejection.body_text()
            ),
        )
    })?;
    policy::change(&shared, |policy| policy.apply(&update))
        .map(Json)
        .map_err(|error| JsonError(StatusCode::BAD_REQUEST, error.to_string()))
}

async fn status_handler(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(crate::status::status(&shared)).into_response()
}

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, len: u64) -> Requested {
        byte_range(&HeaderValue::from_str(value).unwrap(), len)
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(range("bytes=0-99", 1000), Requested::Range(0..=99));
        assert_eq!(range("bytes=900-", 1000), Requested::Range(900..=999));
        assert_eq!(range("bytes=900-5000", 1000), Requested::Range(900..=999));
        assert_eq!(range("bytes=-100", 1000), Requested::Range(900..=999));
        assert_eq!(range("bytes=-5000", 1000), Requested::Range(0..=999));
        assert_eq!(range("bytes=1000-", 1000), Requested::Unsatisfiable);
        assert_eq!(range("bytes=2000-3000", 1000), Requested::Unsatisfiable);
        assert_eq!(range("bytes=-0", 1000), Requested::Unsatisfiable);
        assert_eq!(range("bytes=0-", 0), Requested::Unsatisfiable);
        assert_eq!(range("bytes=0-1,5-6", 1000), Requested::Whole);
        assert_eq!(range("items=0-1", 1000), Requested::Whole);
        assert_eq!(range("bytes=abc", 1000), Requested::Whole);
    }
}
