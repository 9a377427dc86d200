//! The HTTP gateway and API: every stream as a live HLS playlist any player understands, its signed manifest as
//! JSON, the node's status, and Prometheus metrics.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use streamrp2p_protocols::stream::{ParseStreamIdError, StreamId};

use crate::Shared;
use crate::playlist;

/// The gateway's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/streams/{id}/index.m3u8", get(playlist_handler))
        .route("/streams/{id}/manifest", get(manifest_handler))
        .route("/streams/{id}/{file}", get(segment_handler))
        .route("/api/status", get(status_handler))
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
) -> Result<Response, ApiError> {
    let stream = parse_stream(&id)?;
    let Some(seq) = file.strip_suffix(".ts").and_then(|s| s.parse::<u64>().ok()) else {
        return Err(not_found("segments are named <sequence number>.ts"));
    };
    let store = shared.store.read().expect("store lock");
    let Some(segment) = store.stream(&stream).and_then(|s| s.segments.get(&seq)) else {
        return Err(not_found("this node does not hold that segment"));
    };
    Ok(([(header::CONTENT_TYPE, "video/mp2t")], segment.data.clone()).into_response())
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
