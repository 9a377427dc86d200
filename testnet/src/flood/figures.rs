//! What a flood node measured, as the one JSON line it prints when it stops, and how its payload figures come
//! from gossipsub's own metrics.
//!
//! Gossipsub drops a duplicate before the application sees it, so duplicates are counted from its metrics
//! (`libp2p_gossipsub_*`, the `metrics` feature): `topic_msg_recv_bytes_unfiltered` counts every message received,
//! `topic_msg_recv_bytes` the first copy of each, `topic_msg_sent_bytes` every message handed to a connection for
//! sending (forwarded or published). Those count a message's protobuf encoding (source, sequence number, topic,
//! signature, our header and the block), so the payload — the video bytes — is each figure less
//! [`message_overhead`] per message, exact to a byte or two per message (a shorter last block has a shorter length
//! prefix).

use libp2p::PeerId;
use libp2p::gossipsub::{RawMessage, TopicHash};
use libp2p::metrics::Registry;
use serde::{Deserialize, Serialize};
use streamrp2p_protocols::segment::BLOCK_SIZE;

use super::wire::MAX_MESSAGE_SIZE;

/// Prefix of the metrics' names: gossipsub's metrics registered under it are named as libp2p-metrics names them.
pub const METRICS_PREFIX: &str = "libp2p_gossipsub";

/// Gossipsub's counters for the stream's topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipsubCounters {
    /// Messages received, duplicates included (`topic_msg_recv_counts_unfiltered`).
    pub recv_msgs_unfiltered: u64,
    /// Their bytes (`topic_msg_recv_bytes_unfiltered`).
    pub recv_bytes_unfiltered: u64,
    /// Messages received the first time (`topic_msg_recv_counts`).
    pub recv_msgs: u64,
    /// Their bytes (`topic_msg_recv_bytes`).
    pub recv_bytes: u64,
    /// Messages handed to connections for sending (`topic_msg_sent_counts`).
    pub sent_msgs: u64,
    /// Their bytes (`topic_msg_sent_bytes`).
    pub sent_bytes: u64,
    /// Messages published by this node (`topic_msg_published`).
    pub published_msgs: u64,
}

impl GossipsubCounters {
    /// Reads the counters from a registry gossipsub's metrics were registered in, under [`METRICS_PREFIX`].
    pub fn read(registry: &Registry) -> Self {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
            return Self::default();
        }
        let sum = |name: &str| -> u64 {
            let full = format!("{METRICS_PREFIX}_{name}_total");
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter(|line| {
                    line.strip_prefix(full.as_str())
                        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .map(|v| v as u64)
                .sum()
        };
        Self {
            recv_msgs_unfiltered: sum("topic_msg_recv_counts_unfiltered"),
            recv_bytes_unfiltered: sum("topic_msg_recv_bytes_unfiltered"),
            recv_msgs: sum("topic_msg_recv_counts"),
            recv_bytes: sum("topic_msg_recv_bytes"),
            sent_msgs: sum("topic_msg_sent_counts"),
            sent_bytes: sum("topic_msg_sent_bytes"),
            published_msgs: sum("topic_msg_published"),
        }
    }
}

/// Bytes a signed gossipsub message carrying a full block has beyond the block: its protobuf encoding's length less
/// [`BLOCK_SIZE`].
pub fn message_overhead(source: PeerId, topic: &TopicHash) -> u64 {
    let message = RawMessage {
        source: Some(source),
        data: vec![0; MAX_MESSAGE_SIZE],
        sequence_number: Some(u64::MAX),
        topic: topic.clone(),
        // An ed25519 signature; the key is inlined in the peer id.
        signature: Some(vec![0; 64]),
        key: None,
        validated: true,
    };
    (message.raw_protobuf_len() - BLOCK_SIZE) as u64
}

/// A node's figures, printed as one JSON line when it stops.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFigures {
    /// `broadcast` or `watch`.
    pub role: String,
    /// The node's peer id.
    pub peer_id: String,
    /// Segments published (broadcaster) or completed (watcher).
    pub segments: u64,
    /// Segments started but not completed when the node stopped (watcher).
    pub incomplete_segments: u64,
    /// Payload (video) bytes received, first copies only: what the application saw.
    pub payload_bytes_received: u64,
    /// Payload bytes received again: gossipsub's duplicates, from its metrics.
    pub duplicate_payload_bytes: u64,
    /// Payload bytes handed to connections for sending, from gossipsub's metrics.
    pub payload_bytes_uploaded: u64,
    /// Payload bytes published (broadcaster).
    pub payload_bytes_published: u64,
    /// Publish calls gossipsub refused (broadcaster; e.g. no peer yet).
    pub publish_failures: u64,
    /// Messages that did not decode as blocks, or disagreed with their segment.
    pub bad_messages: u64,
    /// Per completed segment, seconds from the broadcaster's publish to complete here.
    pub lags_s: Vec<f64>,
    /// Bytes of a message beyond its block, as subtracted from the counters.
    pub message_overhead: u64,
    /// The raw counters.
    pub gossipsub: GossipsubCounters,
}

impl NodeFigures {
    /// Fills in the payload figures from gossipsub's counters.
    pub fn apply_counters(&mut self, counters: GossipsubCounters, overhead: u64) {
        let payload = |bytes: u64, msgs: u64| bytes.saturating_sub(msgs.saturating_mul(overhead));
        self.duplicate_payload_bytes = payload(
            counters.recv_bytes_unfiltered.saturating_sub(counters.recv_bytes),
            counters.recv_msgs_unfiltered.saturating_sub(counters.recv_msgs),
        );
        self.payload_bytes_uploaded = payload(counters.sent_bytes, counters.sent_msgs);
        self.message_overhead = overhead;
        self.gossipsub = counters;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_counters_less_overhead() {
        let mut figures = NodeFigures::default();
        let counters = GossipsubCounters {
            recv_msgs_unfiltered: 5,
            recv_bytes_unfiltered: 5 * 1100,
            recv_msgs: 3,
            recv_bytes: 3 * 1100,
            sent_msgs: 4,
            sent_bytes: 4 * 1100,
            published_msgs: 0,
        };
        figures.apply_counters(counters, 100);
        assert_eq!(figures.duplicate_payload_bytes, 2000);
        assert_eq!(figures.payload_bytes_uploaded, 4000);
    }
}
