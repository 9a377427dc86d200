//! Prometheus metrics of one node, passed around explicitly (never a global), served at `GET /metrics`.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Where payload bytes went or came from.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Uploaded to peers.
    Uploaded,
    /// Downloaded from peers.
    FromPeers,
    /// Downloaded from the stream's HTTP origin.
    FromOrigin,
}

/// What failed verification.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A block whose bytes did not match its CID.
    Block,
    /// A manifest entry or stream info that did not verify, or any undecodable message.
    Message,
    /// A segment from the origin that did not match its manifest entry.
    Origin,
}

// Label values in Prometheus's lowercase snake case.
impl EncodeLabelValue for Flow {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Uploaded => "uploaded",
            Self::FromPeers => "from_peers",
            Self::FromOrigin => "from_origin",
        })
    }
}

impl EncodeLabelValue for Failure {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Block => "block",
            Self::Message => "message",
            Self::Origin => "origin",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FlowLabels {
    pub(crate) flow: Flow,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub(crate) kind: Failure,
}

/// The node's metrics and the registry that renders them.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) peers: Gauge,
    pub(crate) payload_bytes: Family<FlowLabels, Counter>,
    pub(crate) segments: Counter,
    pub(crate) verification_failures: Family<FailureLabels, Counter>,
    pub(crate) bans: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("streamrp2p");
        let peers = Gauge::default();
        registry.register("peers", "Connected peers", peers.clone());
        let payload_bytes = Family::<FlowLabels, Counter>::default();
        registry.register(
            "payload_bytes",
            "Segment bytes by direction and source",
            payload_bytes.clone(),
        );
        let segments = Counter::default();
        registry.register("segments", "Segments completed and stored", segments.clone());
        let verification_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "verification_failures",
            "Blocks, messages and origin segments that failed verification",
            verification_failures.clone(),
        );
        let bans = Counter::default();
        registry.register("bans", "Peers banned for sending bad data", bans.clone());
        Self {
            registry,
            peers,
            payload_bytes,
            segments,
            verification_failures,
            bans,
        }
    }

    pub(crate) fn add_bytes(&self, flow: Flow, bytes: u64) {
        self.payload_bytes.get_or_create(&FlowLabels { flow }).inc_by(bytes);
    }

    pub(crate) fn failed(&self, kind: Failure) {
        self.verification_failures.get_or_create(&FailureLabels { kind }).inc();
    }

    /// The metrics in Prometheus text format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
