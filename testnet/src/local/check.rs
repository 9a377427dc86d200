//! The byte check: every segment a live viewer's gateway lists, compared with the broadcaster's bytes of the same
//! sequence number.

use std::fmt;

use anyhow::Result;
use futures::StreamExt;

use super::gather::Shared;
use super::segments;

/// Viewers checked at the same time: a node on a loaded machine can take seconds to answer, and the check should
/// not take as many minutes as the run.
const PARALLEL_VIEWERS: usize = 8;

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
    /// Viewers whose gateway did not answer, and why (a viewer that crashed, or hangs).
    pub unreachable: Vec<(usize, String)>,
}

impl SegmentCheck {
    /// Whether every compared segment was identical, at least one was compared, and every live viewer answered.
    pub fn ok(&self) -> bool {
        self.checked > 0 && self.identical == self.checked && self.unreachable.is_empty()
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
        for (viewer, error) in &self.unreachable {
            write!(f, "\n  viewer {viewer}: not checked: {error}")?;
        }
        Ok(())
    }
}

/// Runs the byte check over the viewers that are still live. A viewer that does not answer is recorded, not an
/// error: the report is written whatever the check finds.
pub(crate) async fn check(shared: &Shared) -> SegmentCheck {
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
    let checks = futures::stream::iter(live.into_iter().map(|(viewer, url)| {
        let broadcaster = &broadcaster;
        async move {
            let mut result = SegmentCheck::default();
            if let Err(error) = check_viewer(shared, viewer, &url, broadcaster, &mut result).await {
                result.unreachable.push((viewer, format!("{error:#}")));
            }
            result
        }
    }))
    .buffer_unordered(PARALLEL_VIEWERS)
    .collect::<Vec<SegmentCheck>>()
    .await;
    let mut result = SegmentCheck::default();
    for check in checks {
        result.checked += check.checked;
        result.identical += check.identical;
        result.unchecked += check.unchecked;
        result.differing.extend(check.differing);
        result.unreachable.extend(check.unreachable);
    }
    result.differing.sort_unstable();
    result.unreachable.sort_by_key(|(viewer, _)| *viewer);
    result
}

/// A viewer's segment, asked up to three times: a node busy on a loaded machine can leave one request hanging.
async fn fetch_retrying(shared: &Shared, url: &str, seq: u64) -> Result<Option<bytes::Bytes>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match segments::fetch(&shared.http, url, seq).await {
            Err(_) if attempt < 3 => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            result => return result,
        }
    }
}

async fn check_viewer(
    shared: &Shared,
    viewer: usize,
    url: &str,
    broadcaster: &str,
    result: &mut SegmentCheck,
) -> Result<()> {
    for seq in segments::manifest(&shared.http, url).await? {
        let reference = match shared.segments.get(seq) {
            Some(data) => Some(data),
            None => {
                let fetched = segments::fetch(&shared.http, broadcaster, seq).await.ok().flatten();
                if let Some(data) = &fetched {
                    shared.segments.insert(seq, data.clone());
                }
                fetched
            }
        };
        let held = fetch_retrying(shared, url, seq).await?;
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
    Ok(())
}
