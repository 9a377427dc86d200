//! The byte check: every segment a live viewer's gateway lists, compared with the broadcaster's bytes of the same
//! sequence number.

use std::fmt;

use anyhow::Result;

use super::gather::Shared;
use super::segments;

/// What the byte check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentCheck {
    /// Viewer-segments compared with the broadcaster's.
    pub checked: u64,
    /// Of those, identical.
    pub identical: u64,
    /// `(viewer index, seq)` of every segment that differs.
    pub differing: Vec<(usize, u64)>,
    /// Viewer-segments listed that neither the reference nor the broadcaster had any more, or that the viewer no
    /// longer served when asked: not compared.
    pub unchecked: u64,
}

impl SegmentCheck {
    /// Whether every compared segment was identical (and at least one was compared).
    pub fn ok(&self) -> bool {
        self.checked > 0 && self.identical == self.checked
    }
}

impl fmt::Display for SegmentCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "segments checked: {}, identical: {}", self.checked, self.identical)?;
        if self.unchecked > 0 {
            write!(f, " ({} listed but no longer available, not compared)", self.unchecked)?;
        }
        for (viewer, seq) in &self.differing {
            write!(f, "\n  viewer {viewer}: segment {seq} differs from the broadcaster's")?;
        }
        Ok(())
    }
}

/// Runs the byte check over the viewers that are still live.
pub(crate) async fn check(shared: &Shared) -> Result<SegmentCheck> {
    let live: Vec<(usize, String)> = {
        let viewers = shared.viewers.lock().expect("viewers lock");
        viewers
            .iter()
            .enumerate()
            .filter(|(_, v)| v.process.is_some())
            .map(|(i, v)| (i, format!("{}/streams/{}", v.gateway, shared.stream)))
            .collect()
    };
    let broadcaster = shared.broadcaster_stream_url();
    let mut result = SegmentCheck::default();
    for (viewer, url) in live {
        for seq in segments::manifest(&shared.http, &url).await? {
            let reference = match shared.segments.get(seq) {
                Some(data) => Some(data),
                None => {
                    let fetched = segments::fetch(&shared.http, &broadcaster, seq).await?;
                    if let Some(data) = &fetched {
                        shared.segments.insert(seq, data.clone());
                    }
                    fetched
                }
            };
            let held = segments::fetch(&shared.http, &url, seq).await?;
            match (reference, held) {
                (Some(reference), Some(held)) => {
                    result.checked += 1;
                    if reference == held {
                        result.identical += 1;
                    } else {
                        result.differing.push((viewer, seq));
                    }
                }
                _ => result.unchecked += 1,
            }
        }
    }
    Ok(result)
}
