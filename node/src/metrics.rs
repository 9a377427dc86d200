//! Prometheus metrics of one node, passed around explicitly (never a global), served at `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::AtomicU64;

use libp2p::metrics::Recorder;
use libp2p::swarm::SwarmEvent;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::network::BehaviourEvent;
use streamrp2p_protocols::score::Offence;

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

/// How a signed manifest entry reached this node.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum EntryVia {
    /// The broadcaster's announcement on the stream's gossipsub topic.
    Topic,
    /// A manifest asked of a peer (when joining, or when a block came before its announcement).
    Manifest,
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

impl EncodeLabelValue for EntryVia {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Topic => "topic",
            Self::Manifest => "manifest",
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
pub(crate) struct EntryLabels {
    pub(crate) via: EntryVia,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StreamLabels {
    pub(crate) stream: String,
}

/// A per-stream gauge of a real value.
type StreamGauge = Family<StreamLabels, Gauge<f64, AtomicU64>>;

/// The tree-mesh figures of each stream, as `/api/status` shows them.
#[derive(Default)]
pub(crate) struct StreamMetrics {
    backbone: StreamGauge,
    parents: StreamGauge,
    children: StreamGauge,
    ttfb: StreamGauge,
    lag_p50: StreamGauge,
    lag_p95: StreamGauge,
    stalled: StreamGauge,
    watched: StreamGauge,
    duplicate: StreamGauge,
}

impl StreamMetrics {
    fn register(&self, registry: &mut Registry) {
        let gauges: [(&str, &str, &StreamGauge); 9] = [
            (
                "stream_backbone",
                "1 when in the push tree's backbone, 0 in the mesh",
                &self.backbone,
            ),
            ("stream_parents", "Parents in the push tree", &self.parents),
            ("stream_children", "Children in the push tree", &self.children),
            (
                "stream_ttfb_seconds",
                "Start of watching to first segment playable",
                &self.ttfb,
            ),
            (
                "stream_lag_p50_seconds",
                "Broadcaster to here, median of the newest segments",
                &self.lag_p50,
            ),
            (
                "stream_lag_p95_seconds",
                "Broadcaster to here, 95th percentile",
                &self.lag_p95,
            ),
            (
                "stream_stalled_seconds",
                "Time the virtual player stalled",
                &self.stalled,
            ),
            (
                "stream_watched_seconds",
                "Time the virtual player played or stalled",
                &self.watched,
            ),
            (
                "stream_duplicate_bytes",
                "Payload bytes received for blocks already held",
                &self.duplicate,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
    }

    /// Publishes a stream's figures.
    pub(crate) fn set(&self, stream: &str, view: &crate::status::MeshView) {
        let labels = StreamLabels {
            stream: stream.to_owned(),
        };
        let set = |gauge: &StreamGauge, value: f64| {
            gauge.get_or_create(&labels).set(value);
        };
        set(&self.backbone, f64::from(u8::from(view.tree_role == "backbone")));
        set(&self.parents, view.parents.len() as f64);
        set(&self.children, view.children.len() as f64);
        set(&self.ttfb, view.ttfb_s.unwrap_or(f64::NAN));
        set(&self.lag_p50, view.lag_p50_s.unwrap_or(f64::NAN));
        set(&self.lag_p95, view.lag_p95_s.unwrap_or(f64::NAN));
        set(&self.stalled, view.stalled_s);
        set(&self.watched, view.watched_s);
        set(&self.duplicate, view.bytes_duplicate as f64);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub(crate) kind: Failure,
}

/// An offence as a label value (`streamrp2p_protocols::score::Offence::name`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) struct OffenceLabel(pub(crate) Offence);

impl EncodeLabelValue for OffenceLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.0.name())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OffenceLabels {
    pub(crate) offence: OffenceLabel,
}

/// The node's metrics and the registry that renders them: the node's own under `streamrp2p_`, libp2p's under
/// `libp2p_` (as `libp2p-metrics` names them).
pub(crate) struct Metrics {
    registry: Registry,
    /// libp2p's metrics of swarm and protocol events (see [`Self::record`]).
    libp2p: libp2p::metrics::Metrics,
    pub(crate) peers: Gauge,
    pub(crate) payload_bytes: Family<FlowLabels, Counter>,
    pub(crate) segments: Counter,
    pub(crate) entries: Family<EntryLabels, Counter>,
    pub(crate) verification_failures: Family<FailureLabels, Counter>,
    pub(crate) bans: Counter,
    pub(crate) penalties: Family<OffenceLabels, Counter>,
    pub(crate) streams: StreamMetrics,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut root = Registry::default();
        let libp2p = libp2p::metrics::Metrics::new(&mut root);
        let registry = root.sub_registry_with_prefix("streamrp2p");
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
        let entries = Family::<EntryLabels, Counter>::default();
        registry.register(
            "manifest_entries",
            "New signed manifest entries, by the way they came (topic: announcements; manifest: asked of a peer)",
            entries.clone(),
        );
        let verification_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "verification_failures",
            "Blocks, messages and origin segments that failed verification",
            verification_failures.clone(),
        );
        let bans = Counter::default();
        registry.register("bans", "Peers banned by the peer manager", bans.clone());
        let penalties = Family::<OffenceLabels, Counter>::default();
        registry.register(
            "penalties",
            "Penalties given to peers, by offence (bad_block, forged_entry, malformed, lie, quota_overrun, withholding, \
             unsolicited)",
            penalties.clone(),
        );
        let streams = StreamMetrics::default();
        streams.register(registry);
        Self {
            registry: root,
            libp2p,
            peers,
            payload_bytes,
            segments,
            entries,
            verification_failures,
            bans,
            penalties,
            streams,
        }
    }

    /// The registry, for the swarm's transport to register its bandwidth counters in (before the metrics are shared).
    pub(crate) fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counts a swarm event, and the protocol events libp2p has metrics for, in libp2p's metrics.
    pub(crate) fn record(&self, event: &SwarmEvent<BehaviourEvent>) {
        self.libp2p.record(event);
        if let SwarmEvent::Behaviour(event) = event {
            match event {
                BehaviourEvent::Identify(e) => self.libp2p.record(e),
                BehaviourEvent::Ping(e) => self.libp2p.record(e),
                BehaviourEvent::Kad(e) => self.libp2p.record(e),
                BehaviourEvent::Gossipsub(e) => self.libp2p.record(e),
                _ => {}
            }
        }
    }

    pub(crate) fn add_bytes(&self, flow: Flow, bytes: u64) {
        self.payload_bytes.get_or_create(&FlowLabels { flow }).inc_by(bytes);
    }

    pub(crate) fn learnt_entries(&self, via: EntryVia, count: u64) {
        self.entries.get_or_create(&EntryLabels { via }).inc_by(count);
    }

    pub(crate) fn penalised(&self, offence: Offence) {
        self.penalties
            .get_or_create(&OffenceLabels {
                offence: OffenceLabel(offence),
            })
            .inc();
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
