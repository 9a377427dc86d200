//! The HTTP origin fallback: a block that peers would deliver too late is fetched from the stream's origin with a
//! byte-range request (`{origin}/{seq}.ts`, `Range: bytes=a-b`), when the tree-mesh machine says so. An origin that
//! ignores ranges and sends the whole segment works too: the block is cut out of it.

use super::{OriginResult, Service};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::RANGE;
use streamrp2p_protocols::stream::StreamId;
use streamrp2p_protocols::treemesh::{BlockSource, Input, SegmentInfo};

use crate::mesh::block_range;

impl Service {
    /// Starts fetching block `index` of `segment` from the stream's origin; the answer comes back through the loop.
    pub(super) fn fetch_origin(&mut self, stream: StreamId, segment: SegmentInfo, index: u16) {
        let origin = self
            .streams
            .get(&stream)
            .and_then(|m| m.info.as_ref())
            .map(|i| i.info().origin_url.clone())
            .filter(|o| !o.is_empty());
        let Some(origin) = origin else {
            self.followups.push(Input::OriginFailed { segment, block: index });
            return;
        };
        let url = format!("{origin}/{}.ts", segment.seq);
        let (start, end) = block_range(u64::from(segment.bytes), index);
        let (http, tx) = (self.http.clone(), self.origin_tx.clone());
        let seq = segment.seq;
        tracing::debug!(%stream, seq, index, %url, "fetching a block from the origin");
        let task = tokio::spawn(async move {
            let data = fetch_range(&http, &url, start, end).await;
            let _ = tx
                .send(OriginResult {
                    stream,
                    segment,
                    index,
                    data,
                })
                .await;
        });
        if let Some(old) = self.origin_tasks.insert((stream, seq, index), task.abort_handle()) {
            old.abort();
        }
    }

    pub(super) fn on_origin_result(&mut self, result: OriginResult) {
        let OriginResult {
            stream,
            segment,
            index,
            data,
        } = result;
        let seq = segment.seq;
        if self.origin_tasks.remove(&(stream, seq, index)).is_none() {
            return;
        }
        match data {
            // Checked against the segment's entry, or kept until the entry comes (the machine may have heard of the
            // segment from a neighbour before its announcement arrived).
            Ok(data) => self.on_block(BlockSource::Origin, stream, segment, index, data),
            Err(error) => {
                tracing::warn!(%stream, seq, index, %error, "origin fallback failed");
                self.feed(stream, Input::OriginFailed { segment, block: index });
            }
        }
    }
}

/// Bytes `start..end` of the resource at `url`.
async fn fetch_range(http: &reqwest::Client, url: &str, start: u64, end: u64) -> Result<Bytes, String> {
    let response = http
        .get(url)
        .header(RANGE, format!("bytes={start}-{}", end - 1))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?;
    let whole = response.status() != StatusCode::PARTIAL_CONTENT;
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if whole {
        let (s, e) = (start as usize, end as usize);
        if body.len() < e {
            return Err(format!("origin sent {} bytes, the block ends at {end}", body.len()));
        }
        return Ok(body.slice(s..e));
    }
    Ok(body)
}
