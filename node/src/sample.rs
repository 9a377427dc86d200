//! The embedded sample: six seconds of H.264/AAC test video in three 2-second MPEG-TS segments, made once with
//! ffmpeg (`testsrc2` and a 440 Hz tone, 1280x720, 1.2 Mbit/s; see `assets/sample/`), looped as a live stream so
//! that the demo runs on a machine with nothing but the Rust toolchain.

use std::time::Duration;

use bytes::Bytes;
use streamrp2p_protocols::stream::StreamId;

use crate::{NodeError, NodeHandle};

/// The sample's segments, in order.
pub const SEGMENTS: [&[u8]; 3] = [
    include_bytes!("../assets/sample/seg0.ts"),
    include_bytes!("../assets/sample/seg1.ts"),
    include_bytes!("../assets/sample/seg2.ts"),
];
/// Duration of each sample segment.
pub const SEGMENT_DURATION: Duration = Duration::from_secs(2);

/// MPEG-TS packet size.
const TS_PACKET: usize = 188;

/// Sample segment `i % 3`, made unique to pass `i / 3`: it starts with an MPEG-TS null packet (PID 0x1FFF, which
/// every demuxer discards) carrying the pass number. That shifts every block's bytes, so no block repeats from one
/// pass to the next; otherwise viewers, which hold blocks by CID, would fetch almost nothing after the first pass.
pub fn segment(i: u64) -> Bytes {
    let base = SEGMENTS[(i % SEGMENTS.len() as u64) as usize];
    let mut data = Vec::with_capacity(TS_PACKET + base.len());
    // Sync byte, PID 0x1FFF, payload only; then the pass number and stuffing.
    data.extend_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
    data.extend_from_slice(&(i / SEGMENTS.len() as u64).to_be_bytes());
    data.resize(TS_PACKET, 0xFF);
    data.extend_from_slice(base);
    data.into()
}

/// Publishes the sample on `stream` in real time, looping forever; each pass starts a new timeline (an HLS
/// discontinuity), since the timestamps start over.
pub async fn loop_sample(node: NodeHandle, stream: StreamId) -> Result<(), NodeError> {
    let mut clock = tokio::time::interval(SEGMENT_DURATION);
    for i in 0u64.. {
        clock.tick().await;
        node.publish(stream, segment(i), SEGMENT_DURATION, i % SEGMENTS.len() as u64 == 0)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use streamrp2p_protocols::segment::BLOCK_SIZE;

    use super::*;

    #[test]
    fn passes_differ_and_stay_whole_ts_packets() {
        assert_ne!(
            segment(0)[..BLOCK_SIZE],
            segment(3)[..BLOCK_SIZE],
            "no block repeats across passes"
        );
        assert_eq!(segment(0)[TS_PACKET..], *SEGMENTS[0]);
        for i in 0..6 {
            assert_eq!(segment(i).len() % TS_PACKET, 0);
        }
    }
}
