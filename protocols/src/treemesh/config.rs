//! What a peer brings to the stream: its role, its upload budget and its owner's resource policy.

/// What the owner of a node allows it to spend. The node sets it from its options (`--max-upload-kbps`,
/// `--metered`, `--background`, `--max-ratio`) and may change it at any time ([`super::Input::Policy`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Policy {
    /// Upper bound on upload, bytes per second (`None`: the measured capacity).
    pub max_upload: Option<f64>,
    /// Metered network: upload nothing at all (no children, no pulls served).
    pub metered: bool,
    /// Background mode (a phone with the screen off): a quarter of the budget, never in the backbone.
    pub background: bool,
    /// Stop serving once uploaded bytes exceed this multiple of downloaded bytes.
    pub max_ratio: Option<f64>,
}

/// The share of its budget a node in background mode keeps.
pub const BACKGROUND_SHARE: f64 = 0.25;

/// Whether the node is the stream's root or one of its viewers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The broadcaster: holds every segment as soon as it is made; the backbone's root.
    Broadcaster,
    /// A viewer.
    Viewer,
}

/// Tunables of the tree-mesh. The defaults are the ones the simulator's scenarios were run with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Root or viewer.
    pub role: Role,
    /// The stream's bitrate in bytes per second (from its signed info).
    pub bitrate: f64,
    /// Segment duration, seconds.
    pub segment_s: f64,
    /// Block size the stream's segments are cut into (the last block of a segment may be shorter).
    pub block_size: u32,
    /// Upload capacity, bytes per second (measured by the node; the scenario's class in the simulator).
    pub upload_capacity: f64,
    /// Whether this node accepts inbound connections (false behind a NAT without a mapping).
    pub reachable: bool,
    /// Whether the stream has an HTTP origin to fall back on.
    pub has_origin: bool,
    /// The owner's resource policy.
    pub policy: Policy,
    /// Upload a child is promised, as a multiple of the bitrate: the headroom that lets pushes run ahead of
    /// playback. A node's child slots are `budget / (child_rate_x * bitrate)`.
    pub child_rate_x: f64,
    /// The same for the broadcaster's children. The segment crosses every path at the slowest hop's rate anyway, so
    /// a faster first hop buys little, while more children at the root make every path a level shorter and a root
    /// child's departure cut off a smaller share of the viewers (measured: 1.5 against 3.0 halved the rebuffer ratio
    /// at 3,000 viewers and was about even at 1,000).
    pub root_child_rate_x: f64,
    /// A peer looks for a closer parent at most this often (see the closer module).
    pub closer_after_s: f64,
    /// What a closer parent must save — latency, plus a level's worth (0.1 s) for each level nearer the
    /// root — for a move; 0 turns moving off.
    pub closer_gain_s: f64,
    /// Known peers not yet measured that each round of looking for a closer parent probes, for the next round.
    pub closer_probes: usize,
    /// A viewer has proven stable after this long in the stream (mTreebone's age threshold).
    pub stable_after_s: f64,
    /// Fewest child slots that make a viewer worth placing in the backbone.
    pub backbone_min_slots: u32,
    /// A viewer this many hops (or more) from its tree's root takes no children, and sheds those it has when pushed
    /// that deep: repairs then place subtrees near the top instead of piling them up at the bottom.
    pub max_backbone_depth: usize,
    /// Mesh neighbours a peer keeps (it accepts up to twice as many inbound).
    pub mesh_degree: usize,
    /// Peers probed when joining or when out of candidates.
    pub probe_count: usize,
    /// How long to wait for probe answers before choosing with what has arrived.
    pub probe_wait_s: f64,
    /// Time to wait for an attach answer before trying the next candidate.
    pub attach_timeout_s: f64,
    /// How long a peer that lost a forwarding child keeps the slot, and holds the orphans, for the fringe forwarder
    /// it recruited into the place (see the repair module): a few round trips.
    pub recruit_timeout_s: f64,
    /// A pull not answered by then is given up and asked elsewhere.
    pub pull_timeout_s: f64,
    /// Pulls in flight at once, over all neighbours.
    pub max_pulls: usize,
    /// Pulls in flight to one neighbour.
    pub max_pulls_per_peer: usize,
    /// Blocks uploaded at once. One: blocks go out one after another at the whole uplink, in priority order (see
    /// the upload scheduler), so a block crosses a hop in a fraction of the time it takes when the uplink is shared.
    pub uploads_in_flight: usize,
    /// Answers to pulls queued for the uplink, plus one per bitrate of budget the children leave free; pulls
    /// beyond are refused (the puller asks elsewhere).
    pub serve_queue: usize,
    /// A pull is refused when its answer would wait longer than this behind the uploads already queued (a busy
    /// parent's pushes come first): the puller asks a less busy peer instead of waiting on this one.
    pub max_serve_wait_s: f64,
    /// A pull unanswered after this long is slow: when its segment's time to go to the origin comes, the origin is
    /// asked for the block too.
    pub slow_pull_s: f64,
    /// The parent is silent when no block of a segment it pushes comes for this long (or, for a segment not begun,
    /// this long after its first block usually comes): the mesh is asked for the rest. A parent that keeps pushing
    /// is never second-guessed before the deadline: only silence costs duplicates.
    pub silence_s: f64,
    /// Segments' worth of blocks queued for one child; beyond it the oldest queued block is dropped (the child rescues
    /// it).
    pub child_queue_segments: f64,
    /// Discovery is asked at most this often.
    pub find_interval_s: f64,
    /// Safety margin kept before a playback deadline when deciding to fetch from the origin.
    pub deadline_margin_s: f64,
    /// Segments held for others, behind the newest.
    pub window_segments: u64,
    /// Seconds from joining to the first segment playable that a viewer plans for: the first segment is pulled
    /// from the peers that probing finds, and the origin is asked, just in time, only for what they would not
    /// deliver by then. Joining a little later than the fastest possible start costs the origin nothing and gives
    /// every later segment that much more slack (the design's target is p95 ≤ 1.5 s). Measured at 1,000 and 3,000
    /// viewers, 1.4 s against 1.2 s: a fifth fewer duplicates, less from the origin, time to first segment p95 1.1 s;
    /// 1.6 s gains a little more but leaves too little margin under the target when the origin is busy.
    pub startup_s: f64,
    /// The startup rule: a player starts with its first segment whole, once the second exists (one segment behind the
    /// live edge), but not before the second has this long from being made to being due. A viewer that arrives just
    /// after a segment is made would otherwise start with less buffer than the tree's lag needs, and take the second
    /// segment's last blocks from the origin or stall on it; it waits up to `min_slack_s - segment_s` longer instead
    /// (0.4 s past the usual start at most, with the default: time to first segment stays within the design's 1.5 s).
    /// 3.4 s is the tree's lag at its 99th percentile (about 2.9 s at 10,000 viewers) plus the deadline margin and an
    /// origin fetch.
    pub min_slack_s: f64,
    /// Interval of the maintenance tick (adverts, parent quality, promotion).
    pub tick_s: f64,
}

impl Config {
    /// Defaults for a stream of `bitrate` bytes per second cut into `segment_s` segments of `block_size` blocks.
    pub fn new(role: Role, bitrate: f64, segment_s: f64, block_size: u32, upload_capacity: f64) -> Self {
        Self {
            role,
            bitrate,
            segment_s,
            block_size,
            upload_capacity,
            reachable: true,
            has_origin: true,
            policy: Policy::default(),
            child_rate_x: 1.5,
            root_child_rate_x: 1.5,
            closer_after_s: 5.0,
            closer_gain_s: 0.03,
            closer_probes: 2,
            stable_after_s: 4.0,
            backbone_min_slots: 2,
            max_backbone_depth: 64,
            mesh_degree: 4,
            probe_count: 8,
            probe_wait_s: 0.4,
            attach_timeout_s: 2.0,
            recruit_timeout_s: 1.0,
            pull_timeout_s: 6.0,
            max_pulls: 12,
            max_pulls_per_peer: 2,
            uploads_in_flight: 1,
            serve_queue: 2,
            max_serve_wait_s: 0.5,
            slow_pull_s: 0.4,
            silence_s: 0.5,
            child_queue_segments: 2.0,
            find_interval_s: 3.0,
            deadline_margin_s: 0.3,
            window_segments: 30,
            startup_s: 1.4,
            min_slack_s: 3.4,
            tick_s: 2.0,
        }
    }

    /// Upload this node may spend now, bytes per second, under its policy.
    pub fn budget(&self) -> f64 {
        let p = &self.policy;
        if p.metered {
            return 0.0;
        }
        let mut budget = p
            .max_upload
            .map_or(self.upload_capacity, |m| m.min(self.upload_capacity));
        if p.background {
            budget *= BACKGROUND_SHARE;
        }
        budget.max(0.0)
    }

    /// Child slots the budget pays for at the promised per-child rate.
    pub fn child_slots(&self) -> u32 {
        let rate = match self.role {
            Role::Broadcaster => self.root_child_rate_x,
            Role::Viewer => self.child_rate_x,
        } * self.bitrate;
        if rate <= 0.0 {
            return 0;
        }
        (self.budget() / rate).floor().min(f64::from(super::MAX_CHILD_SLOTS)) as u32
    }
}
