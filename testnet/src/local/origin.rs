//! The stream's HTTP origin (the CDN fallback), inside the testnet process: `GET /{seq}.ts` served from a
//! pull-through cache of the broadcaster's gateway, with `Range: bytes=a-b` answered by 206, its egress limited to
//! the scenario's `origin_mbps` by a token bucket, and every byte counted in the second it was sent (the report's
//! `origin_peak_mbps`). It can be stopped and started again on the same port while the run goes on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::segments::{self, Segments};

/// Bytes sent between two looks at the token bucket.
const CHUNK: usize = 16 * 1024;

/// A token bucket of `rate` bytes per second holding at most `burst` bytes. Reservations may take it below zero:
/// the caller then waits until the debt is paid, so concurrent senders queue in the order they asked.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `bytes` at `now` and returns how long the caller must wait before sending them.
    pub fn reserve(&mut self, bytes: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A parsed `Range` header against a body of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No range, or one this server answers with the whole body (several ranges, another unit, bad syntax).
    Whole,
    /// Bytes `start..=end`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// A range outside the body: 416.
    Unsatisfiable,
}

/// Parses `Range: bytes=a-b`, `bytes=a-` and `bytes=-n` (RFC 9110 §14.1.2) for a body of `len` bytes.
pub fn parse_range(value: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = match (first.is_empty(), last.is_empty()) {
        (false, _) => {
            let Ok(start) = first.parse::<u64>() else {
                return RangeRequest::Whole;
            };
            let end = if last.is_empty() {
                Some(u64::MAX)
            } else {
                last.parse::<u64>().ok()
            };
            match end {
                Some(end) if end >= start => (start, end),
                _ => return RangeRequest::Whole,
            }
        }
        (true, false) => match last.parse::<u64>() {
            Ok(0) => return RangeRequest::Unsatisfiable,
            Ok(n) => (len.saturating_sub(n), u64::MAX),
            Err(_) => return RangeRequest::Whole,
        },
        (true, true) => return RangeRequest::Whole,
    };
    let (start, end) = parsed;
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part {
        start,
        end: end.min(len - 1),
    }
}

/// What the server's handlers share.
#[derive(Debug)]
struct Shared {
    /// `http://ADDR/streams/ID` of the broadcaster's gateway, once known.
    upstream: RwLock<Option<String>>,
    segments: Arc<Segments>,
    http: reqwest::Client,
    bucket: Mutex<TokenBucket>,
    /// Bytes sent in each second since `started`.
    per_second: Mutex<Vec<u64>>,
    started: Instant,
    running: AtomicBool,
}

impl Shared {
    fn count(&self, bytes: usize) {
        let second = self.started.elapsed().as_secs() as usize;
        let mut per_second = self.per_second.lock().expect("origin counter lock");
        if per_second.len() <= second {
            per_second.resize(second + 1, 0);
        }
        per_second[second] += bytes as u64;
    }
}

/// The origin server.
#[derive(Debug)]
pub struct Origin {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Origin {
    /// Starts the origin on a free loopback port, sending at most `mbps` Mbit/s, caching into `segments`.
    pub async fn bind(mbps: f64, segments: Arc<Segments>, http: reqwest::Client) -> Result<Self> {
        let rate = mbps * 1e6 / 8.0;
        let now = Instant::now();
        let shared = Arc::new(Shared {
            upstream: RwLock::new(None),
            segments,
            http,
            // A burst of a tenth of a second, and never less than one 64 KiB block.
            bucket: Mutex::new(TokenBucket::new(rate, (rate / 10.0).max(65_536.0), now)),
            per_second: Mutex::new(Vec::new()),
            started: now,
            running: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the origin to a loopback port")?;
        let addr = listener.local_addr()?;
        let mut origin = Self {
            shared,
            addr,
            server: None,
        };
        origin.serve(listener);
        Ok(origin)
    }

    /// The base URL viewers fetch `{url}/{seq}.ts` from.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the origin pulls what it does not hold: the broadcaster gateway's `http://ADDR/streams/ID`.
    pub fn set_upstream(&self, stream_url: String) {
        *self.shared.upstream.write().expect("upstream lock") = Some(stream_url);
    }

    /// Whether it serves now.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Stops serving: the port is closed, open connections finish their request and close, and any request that
    /// still arrives is refused with 503.
    pub async fn stop(&mut self) {
        self.shared.running.store(false, Ordering::SeqCst);
        if let Some((stop, mut task)) = self.server.take() {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// Serves again, on the same port, after [`Origin::stop`] (nothing if it serves).
    pub async fn start(&mut self) -> Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        let mut last_error = None;
        for _ in 0..20 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.serve(listener);
                    return Ok(());
                }
                Err(error) => last_error = Some(error),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("cannot bind the origin to {} again: {last_error:?}", self.addr)
    }

    /// Bytes sent in each second since the origin was created.
    pub fn per_second(&self) -> Vec<u64> {
        self.shared.per_second.lock().expect("origin counter lock").clone()
    }

    /// The busiest second so far, in Mbit/s.
    pub fn peak_mbps(&self) -> f64 {
        self.per_second().into_iter().max().unwrap_or(0) as f64 * 8.0 / 1e6
    }

    /// Bytes sent so far.
    pub fn bytes_served(&self) -> u64 {
        self.per_second().into_iter().sum()
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let router = Router::new()
            .route("/{file}", get(segment_handler))
            .with_state(self.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        self.shared.running.store(true, Ordering::SeqCst);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        self.server = Some((stop, task));
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some((_, task)) = self.server.take() {
            task.abort();
        }
    }
}

async fn segment_handler(State(shared): State<Arc<Shared>>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    if !shared.running.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "the origin is stopped\n").into_response();
    }
    let Some(seq) = file.strip_suffix(".ts").and_then(|s| s.parse::<u64>().ok()) else {
        return (StatusCode::NOT_FOUND, "segments are named <sequence number>.ts\n").into_response();
    };
    let data = match shared.segments.get(seq) {
        Some(data) => data,
        None => {
            let upstream = shared.upstream.read().expect("upstream lock").clone();
            let Some(upstream) = upstream else {
                return (StatusCode::NOT_FOUND, "no stream yet\n").into_response();
            };
            match segments::fetch(&shared.http, &upstream, seq).await {
                Ok(Some(data)) => {
                    shared.segments.insert(seq, data.clone());
                    data
                }
                Ok(None) => return (StatusCode::NOT_FOUND, "the broadcaster does not hold it\n").into_response(),
                Err(error) => return (StatusCode::BAD_GATEWAY, format!("{error:#}\n")).into_response(),
            }
        }
    };
    let len = data.len() as u64;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, body, content_range) = match parse_range(range, len) {
        RangeRequest::Whole => (StatusCode::OK, data, None),
        RangeRequest::Part { start, end } => (
            StatusCode::PARTIAL_CONTENT,
            data.slice(start as usize..=end as usize),
            Some(format!("bytes {start}-{end}/{len}")),
        ),
        RangeRequest::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response();
        }
    };
    let body_len = body.len();
    let mut response = Response::new(limited_body(shared, body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("video/mp2t"));
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(body_len));
    h.insert(header::ACCEPT_RANGES, header::HeaderValue::from_static("bytes"));
    if let Some(value) = content_range.and_then(|c| header::HeaderValue::from_str(&c).ok()) {
        h.insert(header::CONTENT_RANGE, value);
    }
    response
}

/// `data` as a body sent [`CHUNK`] bytes at a time, each when the token bucket allows, each counted when sent.
fn limited_body(shared: Arc<Shared>, data: Bytes) -> Body {
    let chunks = futures::stream::unfold((shared, data), |(shared, mut data)| async move {
        if data.is_empty() {
            return None;
        }
        let chunk = data.split_to(CHUNK.min(data.len()));
        let wait = shared
            .bucket
            .lock()
            .expect("bucket lock")
            .reserve(chunk.len(), Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        shared.count(chunk.len());
        Some((Ok::<_, std::convert::Infallible>(chunk), (shared, data)))
    });
    Body::from_stream(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 100), Whole);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Part { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=90-"), 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=90-200"), 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=-10"), 100), Part { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=-200"), 100), Part { start: 0, end: 99 });
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 100), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 100), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 100), Whole);
    }

    #[test]
    fn the_bucket_spaces_sends_at_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000.0, 100.0, t0);
        assert_eq!(bucket.reserve(100, t0), Duration::ZERO);
        // 500 bytes more at once: half a second of debt.
        assert_eq!(bucket.reserve(500, t0), Duration::from_millis(500));
        // A second later the debt is paid and 500 more bytes came in, capped at the burst.
        assert_eq!(bucket.reserve(100, t0 + Duration::from_secs(2)), Duration::ZERO);
    }
}
