//! Following an HLS media playlist that ffmpeg (or OBS through ffmpeg) keeps writing, and publishing each new
//! segment as a stream segment.
//!
//! The playlist is read from a path or an http(s) URL and re-read every half target duration. Segments are named by
//! their media sequence number, so each is published once, in order; when the numbering goes backwards the source
//! restarted, and the next segment is marked as a discontinuity. A finished playlist (`EXT-X-ENDLIST`, a recorded
//! file) is published in real time, one segment per its duration, as a live broadcast of the file.
//!
//! The playlist is another program's output, so none of its numbers is trusted: an entry whose `#EXTINF` duration is
//! not one a viewer accepts ([`segment_duration`]) or whose media sequence number would pass `u64::MAX`
//! ([`sequence_number`]) is skipped with a warning, and following goes on.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use m3u8_rs::MediaPlaylist;
use streamrp2p_protocols::manifest::MAX_SEGMENT_DURATION;
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

/// Why an entry of a followed playlist is skipped rather than published.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The `#EXTINF` duration is 0, negative, infinite or not a number. m3u8-rs gives 0 for an `#EXTINF` it cannot
    /// read (`#EXTINF:inf`, `#EXTINF:-1`), and infinity for an integer too large for an `f32`.
    #[error(
        "#EXTINF duration {0:?} is not a number of seconds above 0 (an #EXTINF that cannot be read counts as 0); \
         check the encoder's playlist"
    )]
    Duration(f32),
    /// The `#EXTINF` duration is longer than viewers accept ([`MAX_SEGMENT_DURATION`]).
    #[error(
        "#EXTINF duration {0:?} s is longer than the {max} s viewers accept; have the encoder cut shorter segments \
         (ffmpeg: -hls_time)",
        max = MAX_SEGMENT_DURATION.as_secs()
    )]
    TooLong(f32),
    /// The entry's media sequence number, `#EXT-X-MEDIA-SEQUENCE` plus its place in the playlist, is past
    /// `u64::MAX`.
    #[error(
        "media sequence number {first} + {index} is past 18446744073709551615; restart the encoder's numbering \
         (ffmpeg: -start_number)"
    )]
    Sequence {
        /// The playlist's `#EXT-X-MEDIA-SEQUENCE`.
        first: u64,
        /// The entry's place in the playlist, from 0.
        index: usize,
    },
}

/// The duration an `#EXTINF` value stands for, if viewers accept it: above 0 and at most [`MAX_SEGMENT_DURATION`].
/// Durations under a millisecond become 1 ms, since manifests carry whole milliseconds and refuse 0.
///
/// ```
/// # use std::time::Duration;
/// # use streamrp2p_node::ingest::segment_duration;
/// assert_eq!(segment_duration(2.0), Ok(Duration::from_secs(2)));
/// assert!(segment_duration(f32::INFINITY).is_err());
/// ```
pub fn segment_duration(seconds: f32) -> Result<Duration, EntryError> {
    // Not `seconds <= 0.0`: NaN compares false with everything and must be refused too.
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(EntryError::Duration(seconds));
    }
    match Duration::try_from_secs_f32(seconds) {
        Ok(duration) if duration <= MAX_SEGMENT_DURATION => Ok(duration.max(Duration::from_millis(1))),
        _ => Err(EntryError::TooLong(seconds)),
    }
}

/// The media sequence number of the entry at `index` in a playlist whose `#EXT-X-MEDIA-SEQUENCE` is `first`, unless
/// it would be past `u64::MAX`.
pub fn sequence_number(first: u64, index: usize) -> Result<u64, EntryError> {
    u64::try_from(index)
        .ok()
        .and_then(|offset| first.checked_add(offset))
        .ok_or(EntryError::Sequence { first, index })
}

/// Whether a playlist of `count` entries from media sequence number `first` is older than the entry `last`
/// published: the source restarted its numbering. Counted in `u128`, where `first + count` cannot overflow.
fn went_backwards(last: Option<u64>, first: u64, count: usize) -> bool {
    let end = u128::from(first) + count as u128;
    last.is_some_and(|last| end <= u128::from(last))
}

/// How long to wait before reading the playlist again: half its target duration, from 250 ms to 2 s. In whole
/// milliseconds, so that no `#EXT-X-TARGETDURATION` can overflow it.
fn poll_interval(target_duration: u64) -> Duration {
    Duration::from_millis(target_duration.saturating_mul(500).clamp(250, 2000))
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
    // Entries past u64::MAX stay in the playlist until the source restarts: warned about once, not at every poll.
    let mut unnumbered_logged = false;
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
        if went_backwards(last, first, playlist.segments.len()) {
            tracing::warn!(%source, "the source's segment numbering went backwards: it restarted");
            last = None;
            restarted = true;
            unnumbered_logged = false;
        }
        for (index, segment) in playlist.segments.iter().enumerate() {
            let msn = match sequence_number(first, index) {
                Ok(msn) => msn,
                Err(error) => {
                    if !unnumbered_logged {
                        // The entries after it cannot be numbered either.
                        tracing::warn!(%source, uri = segment.uri, %error, "segment and those after it skipped");
                        unnumbered_logged = true;
                    }
                    break;
                }
            };
            if last.is_some_and(|l| msn <= l) {
                continue;
            }
            last = Some(msn);
            let duration = match segment_duration(segment.duration) {
                Ok(duration) => duration,
                Err(error) => {
                    tracing::warn!(%source, uri = segment.uri, %error, "segment skipped");
                    // A hole in the timeline, as an unreadable segment leaves.
                    restarted = true;
                    continue;
                }
            };
            let data = match source.read(&http, Some(&segment.uri)).await {
                Ok(data) => data,
                Err(reason) => {
                    tracing::warn!(%source, uri = segment.uri, %reason, "segment unreadable; skipped");
                    restarted = true;
                    continue;
                }
            };
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
        tokio::time::sleep(poll_interval(playlist.target_duration)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_viewers_accept_are_kept() {
        assert_eq!(segment_duration(2.0), Ok(Duration::from_secs(2)));
        assert_eq!(segment_duration(6.006), Ok(Duration::from_secs_f32(6.006)));
        assert_eq!(segment_duration(60.0), Ok(MAX_SEGMENT_DURATION));
        // Below a millisecond: 1 ms, as manifests carry whole milliseconds.
        assert_eq!(segment_duration(1e-30), Ok(Duration::from_millis(1)));
        assert_eq!(segment_duration(f32::MIN_POSITIVE), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn durations_that_broke_the_ingest_are_refused() {
        for bad in [0.0, -0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MIN] {
            assert!(matches!(segment_duration(bad), Err(EntryError::Duration(_))), "{bad}");
        }
        for long in [60.01, 3600.0, 1e20, 1e38, f32::MAX] {
            assert_eq!(segment_duration(long), Err(EntryError::TooLong(long)), "{long}");
        }
        let message = segment_duration(f32::INFINITY).unwrap_err().to_string();
        assert!(message.starts_with("#EXTINF duration inf is not"), "{message}");
        let message = segment_duration(1e20).unwrap_err().to_string();
        assert!(message.contains("1e20 s is longer than the 60 s"), "{message}");
    }

    #[test]
    fn sequence_numbers_stop_at_u64_max() {
        assert_eq!(sequence_number(5, 2), Ok(7));
        assert_eq!(sequence_number(u64::MAX, 0), Ok(u64::MAX));
        assert_eq!(sequence_number(u64::MAX - 1, 1), Ok(u64::MAX));
        assert_eq!(
            sequence_number(u64::MAX, 1),
            Err(EntryError::Sequence {
                first: u64::MAX,
                index: 1
            })
        );
        assert_eq!(sequence_number(1, usize::MAX).ok(), (usize::MAX as u64).checked_add(1));
    }

    #[test]
    fn going_backwards_is_judged_without_overflow() {
        assert!(!went_backwards(None, 0, 0));
        assert!(!went_backwards(Some(1), 1, 2), "the window slid by one");
        assert!(went_backwards(Some(5), 0, 3), "restarted from 0");
        assert!(went_backwards(Some(5), 0, 0), "restarted, nothing listed yet");
        // Near u64::MAX: the entry u64::MAX published, the same playlist read again is not a restart.
        assert!(!went_backwards(Some(u64::MAX), u64::MAX, 1));
        assert!(!went_backwards(Some(u64::MAX), u64::MAX - 1, usize::MAX));
        assert!(went_backwards(Some(u64::MAX), 0, 1));
    }

    #[test]
    fn poll_interval_is_half_the_target_within_bounds() {
        assert_eq!(poll_interval(0), Duration::from_millis(250));
        assert_eq!(poll_interval(2), Duration::from_secs(1));
        assert_eq!(poll_interval(4), Duration::from_secs(2));
        assert_eq!(poll_interval(u64::MAX), Duration::from_secs(2));
    }
}
