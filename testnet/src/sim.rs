//! The discrete-event simulator: virtual time, a queue of events, the network model, the viewers' arrivals,
//! departures and playback, and the report.
//!
//! The simulator owns what is the same for every protocol: the broadcaster producing a segment every `segment_s`,
//! viewers arriving uniformly over the join window once the stream is live and leaving after exponential lifetimes
//! (each leaver replaced by a new joiner), per-pair latency, the flow-level [`Network`], delivery of finished
//! transfers, and the metrics. A [`Strategy`] decides who sends what to whom: the protocol under test drives it.
//! Everything random comes from one seeded ChaCha generator, and events at the same virtual time run in the order they
//! were scheduled, so a scenario and its seed give the same report every time.
//!
//! Before each event the simulator tells the strategy what the next two are for ([`Strategy::prefetch`]), so that the
//! state they will touch is on its way into the cache while the current one runs: at thousands of viewers that state
//! is in main memory, and waiting for it was most of an event's cost. The hints change no result, only timing.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use streamrp2p_protocols::playback;
use streamrp2p_protocols::treemesh::SegmentInfo;

use crate::network::{Completion, Finished, Network, NodeId};
use crate::queue::EventQueue;
use crate::report::{AdversaryFigures, Report, peak_rss_mb};
use crate::scenario::{Behaviour, Scenario};
use crate::stats::{jain_index, quantile};

/// Segments the stream has when viewers start arriving: a player starts one segment behind the live edge.
const LIVE_AFTER_SEGMENTS: f64 = 2.0;
/// Width of the buckets of the debug report of when segments missed their deadlines, seconds.
const LATE_BUCKET_S: f64 = 4.0;

/// Where a viewer's bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Another viewer.
    Peer,
    /// The broadcaster.
    Broadcaster,
    /// The HTTP origin.
    Origin,
    /// An adversary's bytes that fail verification: payload to no one's count.
    Junk,
}

/// A viewer, present or gone.
#[derive(Clone, Debug)]
pub struct Viewer {
    /// Its node in the network.
    pub node: NodeId,
    /// When it joined.
    pub joined: f64,
    /// When it left, if it did.
    pub left: Option<f64>,
    /// Its first segment: one behind the newest whole segment when it joined.
    pub first_seq: Option<u64>,
    /// When each segment from `first_seq` on became whole.
    pub ready: Vec<Option<f64>>,
    /// Blocks held of each segment from `first_seq` on, bit `i` for block `i`.
    pub blocks: Vec<u128>,
    /// Upload capacity as a multiple of the bitrate.
    pub upload_x: f64,
    /// Behind NAT: accepts no inbound connection.
    pub nat: bool,
    /// Payload bytes it uploaded.
    pub uploaded: f64,
    /// The earliest its player starts, when its protocol has a startup rule.
    pub play_from: Option<f64>,
    /// What it does, if it is an adversary (the scenario's `[adversaries]`): left out of the honest viewers' figures.
    pub adversary: Option<Behaviour>,
}

impl Viewer {
    /// Whether the viewer is in the stream.
    pub fn present(&self) -> bool {
        self.left.is_none()
    }

    /// Whether segment `seq` is whole at the viewer.
    pub fn has(&self, seq: u64) -> bool {
        self.first_seq
            .and_then(|first| seq.checked_sub(first))
            .and_then(|k| self.ready.get(k as usize))
            .is_some_and(Option::is_some)
    }
}

/// What happens at a point of virtual time.
#[derive(Clone, Debug)]
enum Event {
    Segment(u64),
    Join,
    Leave(usize),
    Flow(Completion),
    StartFlow {
        src: NodeId,
        dst: NodeId,
        bytes: u64,
        tag: u64,
    },
    Deliver {
        viewer: usize,
        from: NodeId,
        seq: u64,
        blocks: u128,
        source: Source,
        tag: u64,
    },
    /// A strategy's control message arrives (at `to`, a node).
    Message {
        tag: u64,
        to: NodeId,
    },
    /// A strategy's timer fires (about a viewer, when the strategy said which).
    Timer {
        tag: u64,
        viewer: Option<u32>,
    },
    /// Once a virtual second: what the origin sent in the last one.
    Sample,
}

/// Payload and control byte counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bytes {
    /// Payload viewers got from viewers.
    pub from_peers: f64,
    /// Payload viewers got from the broadcaster.
    pub from_broadcaster: f64,
    /// Payload viewers got from the origin.
    pub from_origin: f64,
    /// Payload that arrived for something the viewer already had.
    pub duplicate: f64,
    /// Control messages.
    pub control: f64,
}

/// The simulation state a [`Strategy`] works with.
pub struct Core {
    /// The scenario.
    pub scenario: Scenario,
    /// Virtual time, seconds.
    pub now: f64,
    /// The only source of randomness.
    pub rng: ChaCha8Rng,
    /// The data plane.
    pub net: Network,
    /// The HTTP origin's node.
    pub origin: NodeId,
    /// The broadcaster's node.
    pub broadcaster: NodeId,
    /// Every viewer that ever joined.
    pub viewers: Vec<Viewer>,
    /// When each segment was whole at the broadcaster.
    pub segment_ready: Vec<f64>,
    /// Byte counts.
    pub bytes: Bytes,
    queue: EventQueue<Event>,
    /// The first viewer's node: the others follow in the order they joined.
    first_viewer_node: NodeId,
    /// Flows of requests in progress, by tag, and requests called off before their flow started.
    requests: rustc_hash::FxHashMap<u64, crate::network::FlowId>,
    cancelled_requests: rustc_hash::FxHashSet<u64>,
    events: u64,
    origin_per_second: Vec<f64>,
    /// Adversaries so far (the next takes the next behaviour).
    adversaries: usize,
}

impl Core {
    fn schedule(&mut self, at: f64, event: Event) {
        self.queue.push(at, event);
    }

    fn schedule_completions(&mut self, completions: Vec<Completion>) {
        for c in completions {
            if c.at.is_finite() {
                self.schedule(c.at, Event::Flow(c));
            }
        }
    }

    /// One-way latency between two nodes in seconds: uniform in the scenario's range, fixed per pair.
    pub fn latency(&self, a: NodeId, b: NodeId) -> f64 {
        let (lo, hi) = (self.scenario.latency_ms[0], self.scenario.latency_ms[1]);
        let pair = ((a.min(b) as u64) << 32) ^ b.max(a) as u64;
        // splitmix64 of the pair and the seed: a fixed, well-spread value per pair without storing n² of them.
        let mut z = pair.wrapping_add(self.scenario.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = (z >> 11) as f64 / (1u64 << 53) as f64;
        (lo + u * (hi - lo)) / 1000.0
    }

    /// Asks `src` for `bytes`: the request travels one way, then the transfer runs; its finish reaches the
    /// strategy's `on_flow_finished` with `tag`.
    pub fn request(&mut self, src: NodeId, dst: NodeId, bytes: u64, tag: u64) {
        let at = self.now + self.latency(src, dst);
        self.schedule(at, Event::StartFlow { src, dst, bytes, tag });
    }

    /// Calls off a transfer asked for with [`Core::request`] (the receiver got the bytes elsewhere): it frees its
    /// sender's capacity and never finishes.
    pub fn cancel_request(&mut self, tag: u64) {
        match self.requests.remove(&tag) {
            Some(flow) => {
                if let Some((_, completions)) = self.net.cancel(self.now, flow) {
                    self.schedule_completions(completions);
                }
            }
            None => {
                self.cancelled_requests.insert(tag);
            }
        }
    }

    /// Starts a transfer now (a push: no request first).
    pub fn push(&mut self, src: NodeId, dst: NodeId, bytes: u64, tag: u64) {
        let (_, completions) = self.net.start(self.now, src, dst, bytes, tag);
        self.schedule_completions(completions);
    }

    /// Delivers `blocks` (a bitmap) of segment `seq` to `viewer` one latency after a transfer from `src` finished;
    /// the strategy hears of it in [`Strategy::on_delivered`].
    pub fn deliver(&mut self, src: NodeId, viewer: usize, seq: u64, blocks: u128, source: Source, tag: u64) {
        let at = self.now + self.latency(src, self.viewer_node(viewer));
        self.schedule(
            at,
            Event::Deliver {
                viewer,
                from: src,
                seq,
                blocks,
                source,
                tag,
            },
        );
    }

    /// Sends a control message of `bytes` from `src` to `dst`: counted as control traffic, it reaches the
    /// strategy's [`Strategy::on_message`] with `tag` one latency later (control messages are too small to load
    /// the links in a flow-level model).
    pub fn send_message(&mut self, src: NodeId, dst: NodeId, bytes: usize, tag: u64) {
        self.bytes.control += bytes as f64;
        let at = self.now + self.latency(src, dst);
        self.schedule(at, Event::Message { tag, to: dst });
    }

    /// Calls the strategy's [`Strategy::on_timer`] with `tag` at virtual time `at` (now, if `at` has passed).
    pub fn set_timer(&mut self, at: f64, tag: u64) {
        self.schedule(at.max(self.now), Event::Timer { tag, viewer: None });
    }

    /// [`Core::set_timer`] for a timer about `viewer` (a message to it that the strategy carries as a timer): the
    /// simulator can then bring the viewer's state into the cache ahead of it.
    pub fn set_timer_for(&mut self, at: f64, tag: u64, viewer: usize) {
        let viewer = u32::try_from(viewer).ok();
        self.schedule(at.max(self.now), Event::Timer { tag, viewer });
    }

    /// The node of viewer `viewer`.
    pub fn viewer_node(&self, viewer: usize) -> NodeId {
        self.first_viewer_node + viewer
    }

    /// The viewer whose node is `node`, if it is one (viewers' nodes are made in the order they join, after the
    /// origin's and the broadcaster's).
    pub fn viewer_of(&self, node: NodeId) -> Option<usize> {
        viewer_of_node(node, self.first_viewer_node, self.viewers.len())
    }

    /// Segment `seq` as the protocol sees it (every segment of a scenario has the same size).
    pub fn segment_info(&self, seq: u64) -> SegmentInfo {
        SegmentInfo {
            seq,
            bytes: self.segment_bytes() as u32,
        }
    }

    /// Every block of a segment, as a bitmap.
    pub fn all_blocks(&self) -> u128 {
        let n = self.segment_info(0).blocks(self.scenario.block_size());
        if n >= 128 { u128::MAX } else { (1u128 << n) - 1 }
    }

    /// Payload bytes of the blocks in `blocks`.
    pub fn blocks_bytes(&self, blocks: u128) -> u64 {
        let info = self.segment_info(0);
        let size = self.scenario.block_size();
        (0..info.blocks(size))
            .filter(|b| blocks & (1u128 << b) != 0)
            .map(|b| u64::from(info.block_bytes(b, size)))
            .sum()
    }

    /// Whether `viewer` holds block `block` of segment `seq` (segments before its first count as held: it has no
    /// use for them).
    pub fn holds(&self, viewer: usize, seq: u64, block: u16) -> bool {
        let v = &self.viewers[viewer];
        match v.first_seq.and_then(|first| seq.checked_sub(first)) {
            Some(k) => v.blocks.get(k as usize).is_some_and(|b| b & (1u128 << block) != 0),
            None => true,
        }
    }

    /// The newest segment whole at the broadcaster.
    pub fn newest_segment(&self) -> Option<u64> {
        (self.segment_ready.len() as u64).checked_sub(1)
    }

    /// Payload bytes of segment `seq`.
    pub fn segment_bytes(&self) -> u64 {
        self.scenario.segment_bytes().round() as u64
    }
}

thread_local! {
    /// Debug: events by kind.
    pub static DEBUG_COUNTS: std::cell::RefCell<[u64; 9]> = const { std::cell::RefCell::new([0; 9]) };
}

/// The viewer whose node is `node`, when the first viewer's is `first` and `viewers` have joined (see
/// [`Core::viewer_of`]; a free function for where the queue is borrowed).
fn viewer_of_node(node: NodeId, first: NodeId, viewers: usize) -> Option<usize> {
    node.checked_sub(first).filter(|v| *v < viewers)
}

/// What the next event is for, told to the strategy ahead of it so that it can ask for the cache lines it will need
/// (see [`crate::prefetch`]).
#[derive(Clone, Copy, Debug)]
pub enum Next {
    /// Blocks reach this viewer, with the tag given to [`Core::deliver`].
    Delivery(usize, u64),
    /// A control message with this tag arrives, at this viewer (or elsewhere).
    Message(u64, Option<usize>),
    /// A timer with this tag fires, about this viewer (when the strategy said).
    Timer(u64, Option<usize>),
    /// A transfer may finish.
    Flow(Completion),
}

/// A protocol, as the simulator drives it.
pub trait Strategy {
    /// A viewer joined (its `first_seq` is set when a segment exists).
    fn on_join(&mut self, core: &mut Core, viewer: usize);
    /// A viewer left; its transfers were cancelled (their tags are in `cancelled`).
    fn on_leave(&mut self, core: &mut Core, viewer: usize, cancelled: Vec<u64>);
    /// The broadcaster has a new whole segment.
    fn on_segment(&mut self, core: &mut Core, seq: u64);
    /// A transfer finished at its receiver's end of the link (deliver it with [`Core::deliver`]).
    fn on_flow_finished(&mut self, core: &mut Core, finished: Finished);
    /// Blocks reached a viewer (after the simulator counted them); `fresh` are those it did not hold before, `tag`
    /// the one given to [`Core::deliver`].
    fn on_delivered(&mut self, _core: &mut Core, _viewer: usize, _from: NodeId, _seq: u64, _fresh: u128, _tag: u64) {}
    /// A control message sent with [`Core::send_message`] arrived.
    fn on_message(&mut self, _core: &mut Core, _tag: u64) {}
    /// A timer set with [`Core::set_timer`] fired.
    fn on_timer(&mut self, _core: &mut Core, _tag: u64) {}
    /// An event to come is `next`: a hint to bring what it needs into the cache (nothing by default); `deep` when it
    /// is the very next one, whose state was hinted at one event before (what that state points to can be read
    /// now without waiting).
    fn prefetch(&self, _core: &Core, _next: Next, _deep: bool) {}
    /// What the scenario's adversaries did (`None` when it has none, or the strategy runs none).
    fn adversary_figures(&self, _core: &Core) -> Option<AdversaryFigures> {
        None
    }
}

/// A simulation run of one scenario with one strategy.
pub struct Simulation<S> {
    core: Core,
    strategy: S,
    started: std::time::Instant,
    debug: bool,
}

impl<S: Strategy> Simulation<S> {
    /// Sets up the scenario: the broadcaster, the origin, the viewers' arrivals and the segments.
    pub fn new(scenario: Scenario, strategy: S) -> Self {
        let mut net = Network::new();
        net.set_deferred(true);
        let bitrate = scenario.bitrate_bytes();
        let origin = net.add_server(scenario.origin_mbps * 1e6 / 8.0);
        let broadcaster = net.add_node(scenario.broadcaster_upload_x * bitrate, f64::INFINITY);
        let mut core = Core {
            rng: ChaCha8Rng::seed_from_u64(scenario.seed),
            now: 0.0,
            net,
            origin,
            broadcaster,
            viewers: Vec::new(),
            segment_ready: Vec::new(),
            bytes: Bytes::default(),
            queue: EventQueue::new(),
            first_viewer_node: broadcaster + 1,
            requests: rustc_hash::FxHashMap::default(),
            cancelled_requests: rustc_hash::FxHashSet::default(),
            events: 0,
            origin_per_second: Vec::new(),
            adversaries: 0,
            scenario,
        };
        let segments = (core.scenario.duration_s / core.scenario.segment_s).floor() as u64;
        for second in 1..=core.scenario.duration_s.floor() as u64 {
            core.schedule(second as f64, Event::Sample);
        }
        for seq in 0..segments {
            core.schedule((seq + 1) as f64 * core.scenario.segment_s, Event::Segment(seq));
        }
        // Viewers arrive once the stream is live — once it has the two segments a player starting one segment behind
        // the live edge needs (before, a viewer would only wait for the broadcast to begin, which no protocol can
        // shorten) — and uniformly over the join window from then on.
        let live_at = LIVE_AFTER_SEGMENTS * core.scenario.segment_s;
        let mut arrivals: Vec<f64> = (0..core.scenario.viewers)
            .map(|_| live_at + core.rng.random::<f64>() * core.scenario.join_window_s)
            .collect();
        arrivals.sort_by(f64::total_cmp);
        for at in arrivals {
            core.schedule(at, Event::Join);
        }
        Self {
            core,
            strategy,
            started: std::time::Instant::now(),
            debug: std::env::var_os("SIM_DEBUG").is_some(),
        }
    }

    /// Runs events up to virtual time `until` (or the end); returns whether any are left.
    pub fn run_until(&mut self, until: f64) -> bool {
        let end = self.core.scenario.duration_s;
        while let Some(next) = self.core.queue.peek_time() {
            if next > until.min(end) {
                return next <= end;
            }
            let (at, event) = self.core.queue.pop().expect("peeked");
            self.core.now = at;
            self.core.events += 1;
            if self.debug {
                let k = match &event {
                    Event::Segment(_) => 0,
                    Event::Join => 1,
                    Event::Leave(_) => 2,
                    Event::Flow(_) => 3,
                    Event::StartFlow { .. } => 4,
                    Event::Deliver { .. } => 5,
                    Event::Message { .. } => 6,
                    Event::Timer { .. } => 7,
                    Event::Sample => 8,
                };
                DEBUG_COUNTS.with(|c| c.borrow_mut()[k] += 1);
            }
            self.prefetch_next();
            self.handle(event);
            // Rates are recomputed once for every event of the same instant: a sender's pushes of one block to its
            // children end together, and settling the rates after each of them in turn would re-time (and leave
            // stale) the completions of the others, O(children²) events per block.
            let same_instant = self.core.queue.peek_time().is_some_and(|next| next <= at);
            if !same_instant {
                let completions = self.core.net.flush(self.core.now);
                self.core.schedule_completions(completions);
            }
        }
        false
    }

    /// Asks for the cache lines the next event will need while the current one runs: at thousands of viewers its
    /// peer's state is in main memory, and a hint one event ahead hides most of the wait.
    fn prefetch_next(&mut self) {
        let (first, viewers) = (self.core.first_viewer_node, self.core.viewers.len());
        let next_of = |event: Option<&Event>| -> Option<Next> {
            Some(match event? {
                Event::Deliver { viewer, tag, .. } => Next::Delivery(*viewer, *tag),
                Event::Message { tag, to } => Next::Message(*tag, viewer_of_node(*to, first, viewers)),
                Event::Timer { tag, viewer } => Next::Timer(*tag, viewer.map(|v| v as usize)),
                Event::Flow(c) => Next::Flow(*c),
                _ => return None,
            })
        };
        let (next, after) = self.core.queue.peek_two();
        let (next, after) = (next_of(next), next_of(after));
        // Two events ahead, the structs; one ahead, also what they point to, read from the structs asked for the
        // step before (an address read from a struct not in the cache would wait for main memory).
        for (next, deep) in [(after, false), (next, true)] {
            let Some(next) = next else { continue };
            match next {
                Next::Delivery(viewer, _) => crate::prefetch::prefetch(&self.core.viewers[viewer], 2),
                Next::Flow(c) => self.core.net.prefetch(&c),
                _ => {}
            }
            self.strategy.prefetch(&self.core, next, deep);
        }
    }

    /// Every viewer so far.
    pub fn viewers(&self) -> &[Viewer] {
        &self.core.viewers
    }

    /// The strategy under test.
    pub fn strategy(&self) -> &S {
        &self.strategy
    }

    /// Virtual time now.
    pub fn now(&self) -> f64 {
        self.core.now
    }

    /// Virtual seconds the scenario runs.
    pub fn duration(&self) -> f64 {
        self.core.scenario.duration_s
    }

    fn handle(&mut self, event: Event) {
        let core = &mut self.core;
        match event {
            Event::Segment(seq) => {
                core.segment_ready.push(core.now);
                self.strategy.on_segment(core, seq);
            }
            Event::Join => {
                let u: f64 = core.rng.random();
                let mut upload_x = core.scenario.upload_x_at(u);
                let nat = core.rng.random::<f64>() < core.scenario.nat_fraction;
                // Drawn only when the scenario has adversaries, so that a scenario without them draws as before. The
                // k-th adversary takes the k-th behaviour; a withholder has the uplink it advertises (it forwards
                // until it stops).
                let adversary = match &core.scenario.adversaries {
                    Some(a) if core.rng.random::<f64>() < a.share => {
                        let behaviour = a.behaviours[core.adversaries % a.behaviours.len()];
                        core.adversaries += 1;
                        if behaviour == Behaviour::Withhold {
                            upload_x = upload_x.max(a.claimed_upload_x);
                        }
                        Some(behaviour)
                    }
                    _ => None,
                };
                let bitrate = core.scenario.bitrate_bytes();
                let node = core
                    .net
                    .add_node(upload_x * bitrate, core.scenario.download_x * bitrate);
                // One segment behind the live edge: the segment before the newest whole one, so that the player holds
                // one segment of buffer while the next is made (before any segment exists, the first).
                let first_seq = Some(core.newest_segment().map_or(0, |n| n.saturating_sub(1)));
                let viewer = core.viewers.len();
                debug_assert_eq!(
                    node,
                    core.first_viewer_node + viewer,
                    "viewers' nodes follow one another"
                );
                core.viewers.push(Viewer {
                    node,
                    joined: core.now,
                    left: None,
                    first_seq,
                    ready: Vec::new(),
                    blocks: Vec::new(),
                    upload_x,
                    nat,
                    uploaded: 0.0,
                    play_from: None,
                    adversary,
                });
                let rate = core.scenario.churn_per_min / 60.0;
                if rate > 0.0 {
                    let lifetime = -(1.0 - core.rng.random::<f64>()).ln() / rate;
                    core.schedule(core.now + lifetime, Event::Leave(viewer));
                }
                self.strategy.on_join(core, viewer);
            }
            Event::Leave(viewer) => {
                core.viewers[viewer].left = Some(core.now);
                let node = core.viewers[viewer].node;
                let mut cancelled = Vec::new();
                for (flow, tag) in core.net.flows_of(node) {
                    if let Some((_, completions)) = core.net.cancel(core.now, flow) {
                        core.schedule_completions(completions);
                        core.requests.remove(&tag);
                        cancelled.push(tag);
                    }
                }
                self.strategy.on_leave(core, viewer, cancelled);
                // Churn replaces every leaver with a new joiner.
                core.schedule(core.now, Event::Join);
            }
            Event::StartFlow { src, dst, bytes, tag } => {
                if !core.cancelled_requests.remove(&tag) {
                    let (flow, completions) = core.net.start(core.now, src, dst, bytes, tag);
                    core.schedule_completions(completions);
                    core.requests.insert(tag, flow);
                }
            }
            Event::Flow(completion) => {
                if let Some((finished, completions)) = core.net.finish(core.now, completion) {
                    core.schedule_completions(completions);
                    core.requests.remove(&finished.tag);
                    self.strategy.on_flow_finished(core, finished);
                }
            }
            Event::Sample => {
                let served = core.net.served(core.now, core.origin);
                let before: f64 = core.origin_per_second.iter().sum();
                core.origin_per_second.push(served - before);
            }
            Event::Deliver {
                viewer,
                from,
                seq,
                blocks,
                source,
                tag,
            } => {
                if !core.viewers[viewer].present() {
                    return;
                }
                let all = core.all_blocks();
                let v = &mut core.viewers[viewer];
                // Blocks of segments before the viewer's first are not part of its playback, but still payload.
                let held = match v
                    .first_seq
                    .and_then(|first| seq.checked_sub(first))
                    .filter(|_| source != Source::Junk)
                {
                    Some(k) => {
                        let k = k as usize;
                        if v.ready.len() <= k {
                            v.ready.resize(k + 1, None);
                            v.blocks.resize(k + 1, 0);
                        }
                        let held = v.blocks[k];
                        v.blocks[k] |= blocks;
                        if v.ready[k].is_none() && v.blocks[k] & all == all {
                            v.ready[k] = Some(core.now);
                        }
                        held
                    }
                    None => 0,
                };
                // What adversaries receive is not part of the honest viewers' figures; junk is nobody's payload.
                if v.adversary.is_none() && source != Source::Junk {
                    let fresh = core.blocks_bytes(blocks & !held) as f64;
                    core.bytes.duplicate += core.blocks_bytes(blocks & held) as f64;
                    match source {
                        Source::Peer => core.bytes.from_peers += fresh,
                        Source::Broadcaster => core.bytes.from_broadcaster += fresh,
                        Source::Origin => core.bytes.from_origin += fresh,
                        Source::Junk => {}
                    }
                }
                let fresh = blocks & !held;
                self.strategy.on_delivered(core, viewer, from, seq, fresh, tag);
            }
            Event::Message { tag, .. } => self.strategy.on_message(core, tag),
            Event::Timer { tag, .. } => self.strategy.on_timer(core, tag),
        }
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> Report {
        self.run_until(f64::INFINITY);
        self.report()
    }

    /// The report of the run so far (normally called at the end).
    pub fn report(&self) -> Report {
        let core = &self.core;
        let s = &core.scenario;
        let end = s.duration_s;
        let mut ttfb = Vec::new();
        let mut lags = Vec::new();
        let (mut stalled, mut watched, mut on_time, mut late) = (0.0, 0.0, 0u64, 0u64);
        let mut late_at: Vec<u64> = Vec::new();
        let mut upload_use = Vec::new();
        // The figures are the honest viewers': an adversary's playback is nobody's concern.
        let mut late_viewers: Vec<(usize, f64)> = Vec::new();
        for (vi, v) in core.viewers.iter().enumerate().filter(|(_, v)| v.adversary.is_none()) {
            let until = v.left.unwrap_or(end);
            // Playback runs one segment behind the live edge, so it cannot start before the segment after the
            // first exists: a viewer that arrived before the stream had two segments waits for the stream, and
            // that wait is not the network's time to first byte.
            let next_made = v.first_seq.and_then(|first| core.segment_ready.get(first as usize + 1));
            let join = next_made.map_or(v.joined, |made| v.joined.max(*made));
            let p = playback::evaluate_with(join, v.play_from.unwrap_or(join), until, s.segment_s, &v.ready, |due| {
                if self.debug {
                    if late_viewers.len() < 40 && due > 30.0 {
                        late_viewers.push((vi, due));
                    }
                    let bucket = (due / LATE_BUCKET_S) as usize;
                    if late_at.len() <= bucket {
                        late_at.resize(bucket + 1, 0);
                    }
                    late_at[bucket] += 1;
                }
            });
            ttfb.extend(p.ttfb_s);
            stalled += p.stalled_s;
            watched += p.watched_s;
            on_time += p.on_time;
            late += p.late;
            if let Some(first) = v.first_seq {
                for (k, ready) in v.ready.iter().enumerate() {
                    // Lag is the delivery of live segments: those made before the viewer came are not counted.
                    match (ready, core.segment_ready.get(first as usize + k)) {
                        (Some(ready), Some(made)) if *made >= v.joined => lags.push(ready - made),
                        _ => {}
                    }
                }
            }
            let capacity = v.upload_x * s.bitrate_bytes() * (until - v.joined);
            if capacity > 0.0 {
                upload_use.push(v.uploaded / capacity);
            }
        }
        let b = core.bytes;
        let received = b.from_peers + b.from_broadcaster + b.from_origin;
        let payload = received + b.duplicate;
        if self.debug {
            let when: Vec<String> = late_at
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| format!("{}s:{n}", i as f64 * LATE_BUCKET_S))
                .collect();
            eprintln!(
                "late segments by deadline ({LATE_BUCKET_S} s buckets): {}",
                when.join(" ")
            );
            eprintln!("some late viewers (viewer, due): {late_viewers:?}");
        }
        Report {
            name: s.name.clone(),
            protocol: s.protocol.name().to_owned(),
            viewers: s.viewers,
            offload: (received > 0.0).then(|| b.from_peers / received),
            ttfb_p50_s: quantile(&mut ttfb, 0.5),
            ttfb_p95_s: quantile(&mut ttfb, 0.95),
            rebuffer_ratio: (watched > 0.0).then(|| stalled / watched),
            lag_p50_s: quantile(&mut lags, 0.5),
            lag_p95_s: quantile(&mut lags, 0.95),
            lag_p99_s: quantile(&mut lags, 0.99),
            availability: (on_time + late > 0).then(|| on_time as f64 / (on_time + late) as f64),
            duplicate_ratio: (payload > 0.0).then(|| b.duplicate / payload),
            control_overhead_ratio: (payload > 0.0).then(|| b.control / payload),
            origin_peak_mbps: Some(core.origin_per_second.iter().copied().fold(0.0, f64::max) * 8.0 / 1e6),
            upload_fairness: jain_index(&upload_use),
            supply_ratio: Some(s.supply_ratio()),
            wall_s: self.started.elapsed().as_secs_f64(),
            peak_rss_mb: peak_rss_mb(),
            events: core.events,
            adversaries: self.strategy.adversary_figures(core),
        }
    }
}
