//! Following an HLS media playlist that ffmpeg (or OBS through ffmpeg) keeps writing, and publishing each new
//! segment as a stream segment.
//!
//! The playlist is read from a path or an http(s) URL and re-read every half target duration. Segments are named by
//! their media sequence number, so each is published once, in order; when the numbering goes backwards the source
//! restarted, and the next segment is marked as a discontinuity. A finished playlist (`EXT-X-ENDLIST`, a recorded
//! file) is published in real time, one segment per its duration, as a live broadcast of the file.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use m3u8_rs::MediaPlaylist;
use streamrp2p_protocols::stream::StreamId;
use url::Url;

use crate::{NodeError, NodeHandle};

/// How long a source may stay unreadable at start before following gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where an HLS media playlist is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HlsSource {
    /// A file ffmpeg writes.
    Path(PathBuf),
    /// An http(s) URL.
    Url(Url),
}

impl FromStr for HlsSource {
    type Err = url::ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("http://") || s.starts_with("https://") {
            Ok(Self::Url(Url::parse(s)?))
        } else {
            Ok(Self::Path(PathBuf::from(s)))
        }
    }
}

impl std::fmt::Display for HlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Url(u) => write!(f, "{u}"),
        }
    }
}

/// Why following a source stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The playlist could not be read or parsed for too long after starting.
    #[error("cannot read HLS playlist {source_name} for {waited:?}: {reason}")]
    Unavailable {
        /// The source.
        source_name: String,
        /// How long it was tried.
        waited: Duration,
        /// The last failure.
        reason: String,
    },
    /// The node stopped.
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl HlsSource {
    async fn read(&self, http: &reqwest::Client, uri: Option<&str>) -> Result<Bytes, String> {
        match self {
            Self::Path(playlist) => {
                let path = match uri {
                    Some(uri) => playlist.parent().unwrap_or(playlist.as_path()).join(uri),
                    None => playlist.clone(),
                };
                tokio::fs::read(&path)
                    .await
                    .map(Bytes::from)
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            Self::Url(playlist) => {
                let url = match uri {
                    Some(uri) => playlist.join(uri).map_err(|e| format!("{uri}: {e}"))?,
                    None => playlist.clone(),
                };
                let response = http.get(url.clone()).send().await.and_then(|r| r.error_for_status());
                response
                    .map_err(|e| format!("{url}: {e}"))?
                    .bytes()
                    .await
                    .map_err(|e| format!("{url}: {e}"))
            }
        }
    }

    async fn playlist(&self, http: &reqwest::Client) -> Result<MediaPlaylist, String> {
        let bytes = self.read(http, None).await?;
        m3u8_rs::parse_media_playlist_res(&bytes).map_err(|e| format!("not an HLS media playlist: {e}"))
    }
}

/// Follows `source` and publishes each new segment on `stream` until the playlist ends (returns the number of
/// segments published) or the node stops.
pub async fn follow_hls(node: NodeHandle, stream: StreamId, source: HlsSource) -> Result<u64, IngestError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| IngestError::Unavailable {
            source_name: source.to_string(),
            waited: Duration::ZERO,
            reason: e.to_string(),
        })?;
    let started = tokio::time::Instant::now();
    let mut last: Option<u64> = None;
    let mut restarted = false;
    let mut published = 0;
    let mut seen = false;
    let mut waiting_logged = false;
    loop {
        let playlist = match source.playlist(&http).await {
            Ok(p) => p,
            Err(reason) => {
                if !seen && started.elapsed() >= START_TIMEOUT {
                    return Err(IngestError::Unavailable {
                        source_name: source.to_string(),
                        waited: START_TIMEOUT,
                        reason,
                    });
                }
                if !waiting_logged {
                    tracing::info!(%source, %reason, "waiting for the HLS playlist to become readable");
                    waiting_logged = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if !seen {
            tracing::info!(%source, %stream, "following HLS source");
            seen = true;
        }
        let first = playlist.media_sequence;
        let end = first + playlist.segments.len() as u64;
        if last.is_some_and(|l| end <= l) {
            tracing::warn!(%source, "the source's segment numbering went backwards: it restarted");
            last = None;
            restarted = true;
        }
        for (msn, segment) in (first..).zip(&playlist.segments) {
            if last.is_some_and(|l| msn <= l) {
                continue;
            }
            last = Some(msn);
            let data = match source.read(&http, Some(&segment.uri)).await {
                Ok(data) => data,
                Err(reason) => {
                    tracing::warn!(%source, uri = segment.uri, %reason, "segment unreadable; skipped");
                    restarted = true;
                    continue;
                }
            };
            let duration = Duration::from_secs_f32(segment.duration.max(0.001));
            match node
                .publish(stream, data, duration, segment.discontinuity || restarted)
                .await
            {
                Ok(_) => {
                    published += 1;
                    restarted = false;
                }
                Err(NodeError::Stopped) => return Err(NodeError::Stopped.into()),
                Err(error) => tracing::warn!(%source, uri = segment.uri, %error, "segment not published"),
            }
            if playlist.end_list {
                tokio::time::sleep(duration).await;
            }
        }
        if playlist.end_list {
            return Ok(published);
        }
        let poll = Duration::from_secs_f64((playlist.target_duration as f64 / 2.0).clamp(0.25, 2.0));
        tokio::time::sleep(poll).await;
    }
}
