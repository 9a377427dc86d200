//! The state machine's shape: what goes in, what comes out, and the dispatch between the two.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::{Config, Policy, Role};
use super::message::{Advert, AttachRequest, Message, SegmentInfo};
use super::peers::Peers;
use super::repair::Recruiting;
use super::window::{MAX_BLOCKS, Player, Window};
use crate::score::Offence;

/// Messages about segments newer than the newest signed one that are kept until its entry comes (a HAVE can overtake
/// the announcement it follows); the oldest goes first.
pub(super) const HELD_MESSAGES: usize = 16;
/// How far past the newest signed segment a peer may speak of a segment: a few segments of announcement delay and
/// clock skew (the node's window admits entries as far ahead). Beyond, it names a segment that cannot exist yet.
pub(super) const MAX_AHEAD: u64 = 8;
/// What the parent just left still sends is taken for this long (it was on the way when we left it).
pub(super) const FORMER_PARENT_GRACE_S: f64 = 5.0;
/// Former parents remembered at most.
const MAX_FORMER_PARENTS: usize = 4;
/// Pulls given up on that are remembered, so that a late answer is not taken for payload nobody asked for.
pub(super) const EXPIRED_PULLS: usize = 32;
/// Complaints of withholding remembered at most.
pub(super) const MAX_COMPLAINTS: usize = 32;
/// Withholders reported from below remembered at most (the broadcaster hears of every one let go in its tree).
pub(super) const MAX_REPORTED: usize = 4096;
/// Peers a probe's answer names (peer exchange), and the most taken from one answer.
const EXCHANGED_PEERS: usize = 4;

/// Where a segment a peer names stands against the signed entries this machine knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SeqClass {
    /// At or below the newest signed segment.
    Known,
    /// A little past it: its entry may still be on the way.
    Ahead,
    /// Further past it than an entry can be late: no such segment exists yet.
    Impossible,
}

/// What identifies a peer: a libp2p `PeerId` in the node, an index in the simulator.
pub trait PeerId: Copy + Eq + Ord + std::fmt::Debug {}

impl<T: Copy + Eq + Ord + std::fmt::Debug> PeerId for T {}

/// Where a block came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockSource<P> {
    /// A peer pushed or served it.
    Peer(P),
    /// The HTTP origin.
    Origin,
}

/// Which kind of upload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadKind {
    /// A block pushed to a child.
    Push,
    /// A block served to a pull.
    Serve,
}

/// Something that happened, handed to the machine with the time it happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Input<P> {
    /// Start watching: the newest segments of the stream's manifest and some of its peers (from the DHT), with
    /// whether each accepts inbound connections.
    Join {
        /// The newest manifest entries, oldest first.
        tail: Vec<SegmentInfo>,
        /// Peers of the stream.
        candidates: Vec<(P, bool)>,
        /// The broadcaster (the stream's signed info names it): the root of the tree, where placement starts.
        broadcaster: Option<P>,
        /// How long ago the newest segment of `tail` was made (from its signed timestamp), for the startup rule.
        live_age_s: Option<f64>,
    },
    /// More peers of the stream, in answer to [`Output::FindPeers`].
    Candidates(Vec<(P, bool)>),
    /// The broadcaster made a segment (broadcaster only): every block is held.
    Published(SegmentInfo),
    /// The stream has a new segment (viewers): its signed manifest entry was announced (on the stream's gossipsub
    /// topic, in the node). Every segment is announced, so a viewer knows of each one whether or not a neighbour
    /// mentions it, and when it appeared.
    Announced(SegmentInfo),
    /// A control message arrived.
    Message {
        /// Sender.
        from: P,
        /// The message.
        message: Message<P>,
    },
    /// A block arrived and was verified against its CID — the CID the broadcaster's signed entry gives for that
    /// index of that segment, so the segment's number and size are as signed. (Only signatures create segments:
    /// [`Input::Join`], [`Input::Published`], [`Input::Announced`] and verified blocks make a segment known;
    /// a peer's message about a segment no signed entry names is held until one does, or dropped.)
    Block {
        /// Who sent it.
        from: BlockSource<P>,
        /// Its segment.
        segment: SegmentInfo,
        /// Its index.
        block: u16,
    },
    /// An upload this machine asked for ended (sent, or failed with its connection).
    Uploaded {
        /// The receiver.
        to: P,
        /// Push or serve.
        kind: UploadKind,
    },
    /// A fetch from the origin failed.
    OriginFailed {
        /// The segment.
        segment: SegmentInfo,
        /// The block.
        block: u16,
    },
    /// The connection to a peer is gone (it left, crashed or was banned).
    PeerGone(P),
    /// The owner changed the resource policy.
    Policy(Policy),
}

impl<P> Input<P> {
    /// Whether this input leaves the machine's wake-up where it was: the end of an upload, a pull to answer and a
    /// child's skip touch only the upload queues, and a probe only asks for an answer; no deadline depends on them.
    fn leaves_wake(&self) -> bool {
        matches!(
            self,
            Input::Uploaded { .. }
                | Input::Message {
                    message: Message::Want { .. } | Message::Skip { .. } | Message::Probe,
                    ..
                }
        )
    }
}

/// What the machine asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<P> {
    /// Send a control message.
    Send {
        /// Receiver.
        to: P,
        /// Message.
        message: Message<P>,
    },
    /// Push a block we hold to a child; answer with [`Input::Uploaded`] when it is sent.
    Push {
        /// The child.
        to: P,
        /// The segment.
        segment: SegmentInfo,
        /// The block.
        block: u16,
    },
    /// Send a block to a peer that pulled it; answer with [`Input::Uploaded`].
    Serve {
        /// The puller.
        to: P,
        /// The segment.
        segment: SegmentInfo,
        /// The block.
        block: u16,
    },
    /// Fetch a block from the HTTP origin (a byte-range request); answer with [`Input::Block`] or
    /// [`Input::OriginFailed`].
    FetchOrigin {
        /// The segment.
        segment: SegmentInfo,
        /// The block.
        block: u16,
    },
    /// Call off an origin fetch asked for with [`Output::FetchOrigin`]: a peer brought the block first. No answer is
    /// expected (a block that arrives anyway is counted as a duplicate).
    CancelOrigin {
        /// The segment.
        segment: SegmentInfo,
        /// The block.
        block: u16,
    },
    /// Find more peers of the stream (DHT providers); answer with [`Input::Candidates`].
    FindPeers,
    /// A segment is whole: hand it to the player.
    SegmentComplete(SegmentInfo),
    /// A peer broke the protocol in a way only this machine can see (a message its role does not allow, a segment
    /// no signed entry names, a parent that withheld the stream): the driver scores it (see [`crate::score`]), and
    /// bans it when the score says so — then hands the machine [`Input::PeerGone`].
    Misbehaved {
        /// The peer.
        peer: P,
        /// What it did.
        offence: Offence,
    },
}

/// Counters for status pages and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    /// Payload bytes uploaded (pushed and served).
    pub uploaded: f64,
    /// Payload bytes received from peers.
    pub from_peers: f64,
    /// Payload bytes received from the origin.
    pub from_origin: f64,
    /// Payload bytes received for blocks already held.
    pub duplicate: f64,
    /// Control bytes sent.
    pub control_sent: f64,
    /// Times the parent was replaced.
    pub parent_changes: u64,
}

/// A child and the blocks waiting to be pushed to it.
#[derive(Clone, Debug)]
pub(super) struct Child<P> {
    pub(super) id: P,
    pub(super) from_seq: u64,
    pub(super) queue: VecDeque<(SegmentInfo, u16)>,
    pub(super) in_flight: bool,
    pub(super) spare: u32,
    pub(super) backbone: bool,
    /// It takes children of its own.
    pub(super) capable: bool,
    pub(super) reachable: bool,
    /// The free slot nearest below it, from its last advert.
    pub(super) room: Option<(P, u8)>,
    /// The place for a backbone peer nearest below it, from its last advert.
    pub(super) backbone_room: Option<(P, u8)>,
    /// Free leaf slots in its subtree, from its last advert (at peers that accept inbound connections, and at any).
    pub(super) free: u8,
    pub(super) any_room: Option<(P, u8)>,
    pub(super) any_free: u8,
    /// The recruitable forwarder nearest below it, from its last advert.
    pub(super) fringe: Option<(P, u8)>,
    /// Attach requests passed to it since its last advert, the last of them then.
    pub(super) routed: u8,
    pub(super) routed_at: f64,
    /// Blocks it asked not to be pushed, by segment (the newest few): it gets them elsewhere.
    pub(super) skips: VecDeque<(u64, u128)>,
    /// It spoke to us itself since it was taken: a child placed on someone's behalf (a request passed down the
    /// tree) gets no payload until it does, so that nobody can name a third party to receive the stream.
    pub(super) confirmed: bool,
    /// When it was taken (an unconfirmed child is let go after [`Config::attach_timeout_s`]).
    pub(super) taken_at: f64,
}

/// What a peer's directory holds of a subtree: its nearest free slots and their count, and its nearest place
/// for a backbone peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rooms<P> {
    pub(super) room: Option<(P, u8)>,
    pub(super) backbone_room: Option<(P, u8)>,
    pub(super) free: u8,
    pub(super) any_room: Option<(P, u8)>,
    pub(super) any_free: u8,
    pub(super) fringe: Option<(P, u8)>,
}

impl<P> Default for Rooms<P> {
    fn default() -> Self {
        Self {
            room: None,
            backbone_room: None,
            free: 0,
            any_room: None,
            any_free: 0,
            fringe: None,
        }
    }
}

/// The parent and what it pushes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Parent<P> {
    pub(super) id: P,
    pub(super) from_seq: u64,
    /// Segments it pushed late lately.
    pub(super) strikes: u8,
    /// When its last block arrived, and of which segment.
    pub(super) last_block_at: f64,
    pub(super) last_block_seq: Option<u64>,
    /// Time between its blocks of a segment (moving average).
    pub(super) gap_s: f64,
    /// Whether it says it is connected to the broadcaster (its last advert): a parent that says so and still does not
    /// deliver what the tree around us holds is withholding it; one that says it is cut off is not to blame.
    pub(super) claims_rooted: bool,
    /// Since when it has said it is cut off (while it does).
    pub(super) cut_off_since: Option<f64>,
}

/// A parent left for being silent, suspected of withholding until its answer to a probe says where it stands.
#[derive(Clone, Copy, Debug)]
pub(super) struct Suspicion<P> {
    pub(super) parent: P,
    /// Its parent, to tell if it withheld.
    pub(super) grandparent: Option<P>,
    /// When it was asked.
    pub(super) since: f64,
    /// The segment it did not push: it withheld it if it holds it whole.
    pub(super) seq: u64,
    /// Asked while it is still our parent, after a short silence (see `TreeMesh::ask_silent_parent`): an answer that
    /// says it is connected and fed leaves it, and blames it only if it `owed` the segment.
    pub(super) early: bool,
    /// It sent nothing of that segment, and was never told to skip any of it.
    pub(super) owed: bool,
    /// Its answer said it holds the segment whole: a block of it was pulled from it, and it withheld the segment
    /// unless the block comes (see `TreeMesh::demand_evidence`).
    pub(super) pulled: bool,
}

/// An attach request in flight.
#[derive(Clone, Copy, Debug)]
pub(super) struct Attempt<P> {
    pub(super) id: P,
    pub(super) from_seq: u64,
    pub(super) deadline: f64,
    /// The request's nonce: an answer must echo it.
    pub(super) nonce: u64,
}

/// A pull in flight.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pull<P> {
    pub(super) from: P,
    pub(super) seq: u64,
    pub(super) block: u16,
    /// When it was asked.
    pub(super) sent_at: f64,
    pub(super) deadline: f64,
}

/// An origin fetch in flight.
#[derive(Clone, Copy, Debug)]
pub(super) struct OriginFetch {
    pub(super) seq: u64,
    pub(super) block: u16,
    pub(super) sent_at: f64,
    /// Peers may race the origin for it (it is slow).
    pub(super) hedged: bool,
}

/// One peer's part in one stream's tree-mesh. See the [module documentation](super) for the algorithm.
#[derive(Clone, Debug)]
pub struct TreeMesh<P> {
    /// Shared between machines with the same settings (a simulation's thousands of viewers have a handful): one copy
    /// stays in cache, where a copy in each machine was another few lines to bring on every input.
    pub(super) cfg: Arc<Config>,
    pub(super) me: P,
    /// Boxed: seldom used, and the machines of a simulation are many (it keeps their hot state small).
    pub(super) rng: Box<ChaCha8Rng>,
    pub(super) now: f64,
    pub(super) joined_at: f64,
    pub(super) joined: bool,
    /// Segments before this one existed when this peer joined: they are pulled, never pushed.
    pub(super) pull_before: u64,
    // The tree.
    pub(super) parent: Option<Parent<P>>,
    pub(super) attempt: Option<Attempt<P>>,
    pub(super) children: Vec<Child<P>>,
    /// Path from the root of its tree (itself excluded).
    pub(super) path: Vec<P>,
    /// Whether that root is the broadcaster.
    pub(super) rooted: bool,
    pub(super) backbone: bool,
    /// What neighbours were last told (backbone, spare > 0, connected), to advertise only changes.
    pub(super) advertised: (bool, bool, bool),
    /// The rooms and free counts the parent was last told of.
    pub(super) advertised_room: Rooms<P>,
    /// The broadcaster, where placement starts.
    pub(super) root: Option<P>,
    /// Where the next attach request goes instead (the grandparent, after losing the parent).
    pub(super) entry: Option<P>,
    /// No attach request before this time (the last found no place).
    pub(super) retry_attach_at: f64,
    /// The last move up was asked for then.
    pub(super) last_jump: f64,
    /// A move to a closer parent was last considered then.
    pub(super) last_move: f64,
    /// A forwarder recruited into the place of a lost child, and the orphans waiting for it.
    pub(super) recruiting: Option<Recruiting<P>>,
    /// The parent we suspect of withholding: its answer to our probe settles it (here, not in the guard: every
    /// wake-up reckoning reads it).
    pub(super) suspicion: Option<Suspicion<P>>,
    /// What it keeps to defend itself against lying peers (see [`Guard`]).
    pub(super) guard: Box<Guard<P>>,
    // The mesh.
    pub(super) peers: Peers<P>,
    pub(super) probe_until: Option<f64>,
    pub(super) finding: bool,
    /// Discovery was last asked then.
    pub(super) last_find: f64,
    /// The last probe round started then.
    pub(super) last_probe: f64,
    pub(super) pulls: Vec<Pull<P>>,
    /// Answers to pulls waiting for the uplink.
    pub(super) serves: VecDeque<(P, SegmentInfo, u16)>,
    /// Blocks being uploaded now.
    pub(super) uploading: usize,
    /// The child whose turn to be pushed to comes next (round robin).
    pub(super) next_turn: usize,
    // The data.
    /// The newest segment a signed entry names (announced, published, or in the tail at joining).
    pub(super) newest_signed: Option<u64>,
    pub(super) window: Window,
    pub(super) player: Player,
    pub(super) origin: Vec<OriginFetch>,
    /// How long after a segment is heard of its first pushed block arrives (moving average): the parent is silent
    /// when nothing comes [`super::Config::silence_s`] after that.
    pub(super) first_push_s: Option<f64>,
    /// How long one block fetch from the origin takes, round trip included (moving average).
    pub(super) origin_took_s: f64,
    /// The origin failed: leave it alone until then.
    pub(super) origin_down_until: f64,
    pub(super) next_tick: f64,
    pub(super) counters: Counters,
    pub(super) out: VecDeque<Output<P>>,
    /// The wake-up [`Self::poll_timeout`] last worked out, while it stands: until an input that may move it comes, or
    /// its time. Working it out walks every pull, fetch and unfinished segment, and a third of a forwarder's inputs
    /// (the ends of its uploads) cannot move it.
    pub(super) wake: Cell<Option<f64>>,
}

/// What a peer keeps to defend itself against lying peers: touched only when something is amiss, so kept apart
/// from the state every event reads (boxed, it costs the machine one pointer).
#[derive(Clone, Debug)]
pub(super) struct Guard<P> {
    /// The last few parents, and when each stopped being it: their pushes in flight are still welcome (a peer may
    /// leave two parents within a round trip).
    pub(super) former_parents: VecDeque<(P, f64)>,
    /// The last attach request given up (its nonce and first segment): its answer may still come, and is taken if
    /// no parent came meanwhile.
    pub(super) given_up: Option<(u64, u64)>,
    /// Requests passed down by the peer we asked for a place before its answer came (a recruiter hands us the
    /// orphans right after taking us): taken once it has accepted us.
    pub(super) held_places: VecDeque<(P, P, AttachRequest, u8)>,
    /// Complaints of withholding against our children: (complainer, child, when).
    pub(super) complaints: VecDeque<(P, P, f64)>,
    /// Peers let go as children for withholding, refused as children until then.
    pub(super) shunned: VecDeque<(P, f64)>,
    /// Peers let go for withholding somewhere below us, as our children said (see `TreeMesh::on_withheld`): refused
    /// as children, and no request is passed towards them, until then.
    pub(super) reported: BTreeMap<P, f64>,
    /// Parents we left for failing us, not taken as parents again until then.
    pub(super) avoiding: VecDeque<(P, f64)>,
    /// Pulls that timed out lately: (peer, segment, block).
    pub(super) expired_pulls: VecDeque<(P, u64, u16)>,
    /// HAVEs from peers about segments newer than `newest_signed`, until their entries come.
    pub(super) held_haves: VecDeque<(P, SegmentInfo, u128)>,
}

impl<P> Default for Guard<P> {
    fn default() -> Self {
        Self {
            former_parents: VecDeque::new(),
            given_up: None,
            held_places: VecDeque::new(),
            complaints: VecDeque::new(),
            shunned: VecDeque::new(),
            reported: BTreeMap::new(),
            avoiding: VecDeque::new(),
            expired_pulls: VecDeque::new(),
            held_haves: VecDeque::new(),
        }
    }
}

impl<P: PeerId> TreeMesh<P> {
    /// A machine for peer `me`, its randomness seeded by `seed`, created at `now`.
    pub fn new(me: P, cfg: impl Into<Arc<Config>>, seed: u64, now: f64) -> Self {
        let cfg = cfg.into();
        let broadcaster = cfg.role == Role::Broadcaster;
        let tick = cfg.tick_s;
        Self {
            me,
            rng: Box::new(ChaCha8Rng::seed_from_u64(seed)),
            now,
            joined_at: now,
            joined: broadcaster,
            pull_before: 0,
            parent: None,
            suspicion: None,
            guard: Box::default(),
            attempt: None,
            children: Vec::new(),
            path: Vec::new(),
            rooted: broadcaster,
            backbone: broadcaster,
            advertised: (broadcaster, true, broadcaster),
            advertised_room: Rooms::default(),
            root: None,
            entry: None,
            retry_attach_at: f64::NEG_INFINITY,
            last_jump: now,
            last_move: now,
            recruiting: None,
            peers: Peers::default(),
            probe_until: None,
            finding: false,
            last_find: f64::NEG_INFINITY,
            last_probe: f64::NEG_INFINITY,
            pulls: Vec::new(),
            serves: VecDeque::new(),
            uploading: 0,
            next_turn: 0,
            newest_signed: None,
            window: Window::default(),
            player: Player::default(),
            origin: Vec::new(),
            first_push_s: None,
            origin_took_s: 0.3,
            origin_down_until: 0.0,
            next_tick: now + tick,
            counters: Counters::default(),
            out: VecDeque::new(),
            wake: Cell::new(None),
            cfg,
        }
    }

    /// Handles one input at time `now` (seconds on the driver's monotonic clock, never going back).
    pub fn handle(&mut self, now: f64, input: Input<P>) {
        self.now = self.now.max(now);
        if !input.leaves_wake() {
            self.wake.set(None);
        }
        match input {
            Input::Join {
                tail,
                candidates,
                broadcaster,
                live_age_s,
            } => {
                let newest = tail.iter().map(|s| s.seq).max();
                self.on_join(tail, candidates, broadcaster, live_age_s);
                if let Some(newest) = newest {
                    self.signed(newest);
                }
            }
            Input::Candidates(candidates) => self.on_candidates(candidates),
            Input::Published(segment) => {
                self.signed(segment.seq);
                self.on_published(segment);
            }
            Input::Announced(segment) => {
                self.learn(segment);
                self.signed(segment.seq);
            }
            Input::Message { from, message } => {
                if from != self.me {
                    self.on_message(from, message);
                }
            }
            // Indices past the bitmaps cannot be a segment's (the wire refuses them; a driver's bug, not a peer's).
            Input::Block { block, .. } if block >= MAX_BLOCKS => {}
            Input::Block { from, segment, block } => {
                self.on_block(from, segment, block);
                self.signed(segment.seq);
            }
            Input::Uploaded { to, kind } => self.on_uploaded(to, kind),
            Input::OriginFailed { segment, block } => self.on_origin_failed(segment, block),
            Input::PeerGone(peer) => self.on_peer_gone(peer),
            Input::Policy(policy) => {
                Arc::make_mut(&mut self.cfg).policy = policy;
                self.check_role();
            }
        }
    }

    /// Runs what is due at `now`; call it when [`Self::poll_timeout`]'s time comes.
    pub fn handle_timeout(&mut self, now: f64) {
        self.now = self.now.max(now);
        self.wake.set(None);
        if self.now >= self.next_tick {
            self.next_tick = self.now + self.cfg.tick_s;
            self.tick();
        }
        self.expire();
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output<P>> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next — ask again after every input, as an input may move it.
    ///
    /// The time is exact: it is never later than the moment a timeout would do something (the current time when
    /// something is due already, say a pull the last input freed a neighbour for), and a timeout handled before it
    /// does nothing. A driver may therefore sleep until it and nothing is lost or done late; the simulator checks
    /// this contract in its tests.
    pub fn poll_timeout(&self) -> Option<f64> {
        // A wake-up still ahead stands while nothing it depends on changes: each of its terms is then a time fixed by
        // the state (a term that follows the clock is due at once, and a wake-up due at once is never kept), unless a
        // deadline sits exactly on the clock, where an instant later it would be due (see `segment_wake`).
        if let Some(wake) = self.wake.get().filter(|wake| *wake > self.now) {
            return Some(wake);
        }
        let (wake, stands) = self.work_out_wake();
        self.wake.set(stands.then_some(wake));
        Some(wake)
    }

    /// [`Self::poll_timeout`] worked out afresh, ignoring the wake-up kept from before: for checking that the one kept
    /// is the one the state gives.
    #[doc(hidden)]
    pub fn poll_timeout_afresh(&self) -> Option<f64> {
        Some(self.work_out_wake().0)
    }

    /// The wake-up, worked out from the state, and whether it stands until an input moves it (see
    /// [`Self::poll_timeout`]).
    fn work_out_wake(&self) -> (f64, bool) {
        let mut stands = true;
        let mut next = self.next_tick;
        let mut consider = |t: f64| {
            if t < next {
                next = t;
            }
        };
        if let Some(t) = self.probe_until {
            consider(t);
        }
        if let Some(r) = &self.recruiting {
            consider(r.until);
        }
        for c in self.children.iter().filter(|c| !c.confirmed) {
            consider(c.taken_at + self.cfg.attach_timeout_s);
        }
        if let Some(s) = &self.suspicion {
            consider(s.since + super::tree::SUSPICION_S);
        }
        if let Some(a) = self.attempt {
            consider(a.deadline);
        } else if self.joined && self.cfg.role == Role::Viewer && self.parent.is_none() {
            // When `try_attach` acts next: at the retry time with somewhere to attach, else when peers may be
            // looked for again (unless a search is under way: its answer is an input).
            let lost = self.entry.is_none() && self.root.is_none();
            let find_at = match (lost, self.finding) {
                (false, _) => 0.0,
                (true, false) => self.last_find + self.cfg.find_interval_s,
                (true, true) => f64::INFINITY,
            };
            consider(self.retry_attach_at.max(find_at).max(self.now));
        }
        for p in &self.pulls {
            consider(p.deadline);
            let slow_at = p.sent_at + self.cfg.slow_pull_s;
            if slow_at > self.now {
                consider(slow_at);
            }
        }
        if let Some(t) = self.next_pull_at() {
            consider(t);
        }
        let hedge_after = self.hedge_after();
        for f in self.origin.iter().filter(|f| !f.hedged) {
            consider(f.sent_at + hedge_after);
        }
        if self.joined && self.cfg.role == Role::Viewer {
            for seg in self.window.iter_incomplete() {
                if let Some((t, fixed)) = self.segment_wake(seg) {
                    consider(t);
                    stands &= fixed;
                }
            }
        }
        (next.max(self.now), stands)
    }

    /// The configuration, with the current policy.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Byte counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The parent, if attached.
    pub fn parent(&self) -> Option<P> {
        self.parent.map(|p| p.id)
    }

    /// The children.
    pub fn children(&self) -> impl Iterator<Item = P> + '_ {
        self.children.iter().map(|c| c.id)
    }

    /// Mesh neighbours.
    pub fn neighbours(&self) -> impl Iterator<Item = P> + '_ {
        self.peers.mesh().map(|k| k.id)
    }

    /// Whether an attach request is out.
    pub fn attaching(&self) -> bool {
        self.attempt.is_some()
    }

    /// Whether this peer's tree is rooted at the broadcaster.
    pub fn is_rooted(&self) -> bool {
        self.rooted
    }

    /// Whether this peer takes children (its capacity and policy allow).
    pub fn forwards(&self) -> bool {
        self.takes_children()
    }

    /// Whether this peer is in the backbone (has proven stable); the broadcaster always is.
    pub fn is_backbone(&self) -> bool {
        self.backbone
    }

    /// Hops from the broadcaster, when connected to it.
    pub fn depth(&self) -> Option<usize> {
        self.rooted.then_some(self.path.len())
    }

    /// The first segment this viewer's player plays (one behind the live edge when it joined), once it has joined.
    pub fn first_segment(&self) -> Option<u64> {
        self.player.start
    }

    /// The earliest this viewer's player starts ([`Config::min_slack_s`]'s startup rule): a player starts with its
    /// first segment whole, but not before this.
    pub fn play_from(&self) -> Option<f64> {
        self.player.earliest
    }

    /// Where the state that inputs touch most lives, as (address, bytes) runs: the segments being worked on, the
    /// peer table, the pulls and origin fetches in flight, and the children. For a driver of many
    /// machines in one thread (the simulator) that asks the processor to bring them into the cache before the next
    /// input: reading these addresses reads only this struct, and nothing is read through them.
    pub fn hot_memory(&self, mut run: impl FnMut(*const u8, usize)) {
        fn slice<T>(run: &mut impl FnMut(*const u8, usize), s: &[T]) {
            if !s.is_empty() {
                run(s.as_ptr().cast(), std::mem::size_of_val(s));
            }
        }
        let (a, b) = self.window.working_slices();
        slice(&mut run, a);
        slice(&mut run, b);
        slice(&mut run, self.peers.ids());
        slice(&mut run, &self.peers.list);
        slice(&mut run, &self.pulls);
        slice(&mut run, &self.origin);
        slice(&mut run, &self.children);
    }

    /// Whether segment `seq` is whole here.
    pub fn has_segment(&self, seq: u64) -> bool {
        self.window.get(seq).is_some_and(|s| s.is_complete())
    }

    /// Debugging: (rescued, pushed, origin bits, pulling bits) of a segment.
    #[doc(hidden)]
    pub fn debug_segment(&self, seq: u64) -> Option<(bool, bool, u128, u128)> {
        let s = self.window.get(seq)?;
        Some((s.skipped != 0, self.expects_push(seq), s.from_origin, s.pulling))
    }

    /// Peers this one has a link with (parent, children, neighbours): those to tell when it goes.
    pub fn linked(&self) -> Vec<P> {
        let mut linked: Vec<P> = self.parent.iter().map(|p| p.id).collect();
        linked.extend(self.attempt.map(|a| a.id));
        linked.extend(self.children.iter().map(|c| c.id));
        linked.extend(self.peers.mesh().map(|k| k.id));
        linked.extend(self.pulls.iter().map(|p| p.from));
        linked.sort();
        linked.dedup();
        linked
    }

    pub(super) fn send(&mut self, to: P, message: Message<P>) {
        self.counters.control_sent += message.wire_size() as f64;
        self.out.push_back(Output::Send { to, message });
    }

    /// This peer's advert.
    pub(super) fn advert(&self) -> Advert<P> {
        self.advert_with(self.rooms())
    }

    /// This peer's advert, its subtree's rooms already worked out.
    pub(super) fn advert_with(&self, rooms: Rooms<P>) -> Advert<P> {
        let (newest, oldest) = self.window.complete_range();
        Advert {
            path: self.path.clone(),
            rooted: self.rooted,
            backbone: self.backbone,
            forwards: self.takes_children(),
            spare_slots: self.spare_slots(),
            leaf_children: self.children.iter().filter(|c| !c.backbone).count() as u32,
            reachable: self.cfg.reachable,
            newest,
            oldest,
            room: rooms.room,
            backbone_room: rooms.backbone_room,
            free: rooms.free,
            any_room: rooms.any_room,
            any_free: rooms.any_free,
            fringe: rooms.fringe,
        }
    }

    /// What the parent's directory holds of this subtree.
    pub(super) fn rooms(&self) -> Rooms<P> {
        Rooms {
            room: self.room_of(false),
            backbone_room: self.backbone_room(),
            free: self.free_of(false),
            any_room: self.room_of(true),
            any_free: self.free_of(true),
            fringe: self.fringe_of(),
        }
    }

    /// Free leaf slots in this peer's subtree (see [`Advert::free`]); `any`: those of peers behind NAT too.
    pub(super) fn free_of(&self, any: bool) -> u8 {
        let own = if self.cfg.reachable || any {
            self.spare_slots()
        } else {
            0
        };
        let below: u32 = self
            .listed_children()
            .map(|c| u32::from(if any { c.any_free } else { c.free }.saturating_sub(c.routed)))
            .sum();
        (own + below).min(u32::from(super::message::MAX_FREE_ADVERTISED)) as u8
    }

    /// Whether this peer is at the fringe of the forwarders: none of its children forwards. Only fringe peers offer
    /// their free slots to leaves; a forwarder higher up keeps its free slots for forwarders, so that forwarders fill
    /// the top of the tree and leaves hang below them (otherwise every slot freed near the top goes to the next
    /// leaf to join, and the tree grows deeper over time).
    pub(super) fn fringe(&self) -> bool {
        !self.listed_children().any(|c| c.capable)
    }

    /// The children whose subtrees' rooms we advertise and route newcomers to: not one a complaint of withholding
    /// stands against (its room would draw requests we would not pass to it: they would be refused below us).
    pub(super) fn listed_children(&self) -> impl Iterator<Item = &Child<P>> + '_ {
        self.children.iter().filter(|c| !self.suspect(c.id))
    }

    /// The nearest place in this peer's subtree for a backbone newcomer (see [`Advert::backbone_room`]).
    pub(super) fn backbone_room(&self) -> Option<(P, u8)> {
        let leaf_child = self.children.iter().any(|c| !c.backbone);
        if self.takes_children() && self.cfg.reachable && (self.spare_slots() > 0 || leaf_child) {
            return Some((self.me, 0));
        }
        self.listed_children()
            .filter_map(|c| c.backbone_room)
            .filter(|(_, below)| *below < u8::MAX)
            .min_by_key(|(id, below)| (*below, *id))
            .map(|(id, below)| (id, below + 1))
    }

    /// The nearest free slot in this peer's subtree that anyone can connect to (see [`Advert::room`]).
    pub(super) fn room_of(&self, any: bool) -> Option<(P, u8)> {
        if self.spare_slots() > 0 && (self.cfg.reachable || any) && self.fringe() {
            return Some((self.me, 0));
        }
        self.listed_children()
            .filter_map(|c| if any { c.any_room } else { c.room })
            .filter(|(_, below)| *below < u8::MAX)
            .min_by_key(|(id, below)| (*below, *id))
            .map(|(id, below)| (id, below + 1))
    }

    /// Whether a link between this peer and one that is (not) `reachable` can be made.
    pub(super) fn can_link(&self, reachable: bool) -> bool {
        self.cfg.reachable || reachable
    }

    /// A control message from `from`: each kind is taken only from the peer whose role allows it (see the
    /// [module documentation](super), "Trust"); the rest is ignored, and a lie is reported.
    fn on_message(&mut self, from: P, message: Message<P>) {
        if let Some(k) = self.peers.get_mut(from) {
            k.seen = self.now;
        }
        match message {
            Message::Probe => {
                let peers = self.sample_peers(from, EXCHANGED_PEERS);
                let mut advert = self.advert();
                // Connected, and fed: a peer that has heard nothing from its parent for a while says so.
                advert.rooted &= !self.starving();
                self.send(
                    from,
                    Message::ProbeReply {
                        advert: Box::new(advert),
                        peers,
                    },
                );
            }
            Message::ProbeReply { advert, peers } => self.on_probe_reply(from, *advert, peers),
            Message::Attach(request) => self.on_place(from, request, 0, true),
            Message::Place { joiner, request, hops } => {
                // The parent passes requests down; so did the one we just left, until it heard we left (harmless
                // either way: a child placed on someone's behalf gets nothing until it confirms).
                if self.parent.is_some_and(|p| p.id == from) || self.was_parent_lately(from) {
                    self.on_place(joiner, request, hops, false);
                } else if self.attempt.is_some_and(|a| a.id == from) {
                    // The peer we asked for a place passes us requests right after taking us (a recruiter hands
                    // over the orphans): its acceptance may still be on the way.
                    if self.guard.held_places.len() >= HELD_MESSAGES {
                        self.guard.held_places.pop_front();
                    }
                    self.guard.held_places.push_back((from, joiner, request, hops));
                } else {
                    // Only a parent passes requests down: anyone else would be naming a third party to feed.
                    self.misbehaved(from, Offence::Lie);
                }
            }
            Message::Displaced { try_instead } => self.on_displaced(from, try_instead),
            Message::Accepted { advert, nonce } => self.on_accepted(from, *advert, nonce),
            Message::Rejected { nonce, .. } => self.on_rejected(nonce),
            Message::Detach => self.on_detach(from),
            Message::Recruit => self.on_recruit(from),
            Message::Update { advert } => self.on_update(from, *advert),
            Message::MeshJoin { advert } => self.on_mesh_join(from, *advert),
            Message::MeshReply { accepted, advert } => self.on_mesh_reply(from, accepted, *advert),
            Message::MeshLeave => {
                if let Some(k) = self.peers.get_mut(from) {
                    k.mesh = false;
                }
            }
            Message::Withheld { parent } => self.on_withheld(from, parent),
            Message::Have { segment, blocks } => self.on_have(from, segment, blocks),
            Message::Skip { seq, blocks } => self.on_skip(from, seq, blocks),
            Message::Want { segment, block } => self.on_want(from, segment, block),
            Message::Refused { seq, block, reason } => {
                if block < MAX_BLOCKS {
                    self.on_refused(from, seq, block, reason);
                }
            }
        }
    }

    /// Reports a peer's offence to the driver.
    pub(super) fn misbehaved(&mut self, peer: P, offence: Offence) {
        self.out.push_back(Output::Misbehaved { peer, offence });
    }

    /// Where segment `seq`, named by a peer, stands against the signed entries known.
    pub(super) fn classify(&self, seq: u64) -> SeqClass {
        match self.newest_signed {
            None => SeqClass::Ahead,
            Some(newest) if seq > newest.saturating_add(MAX_AHEAD) => SeqClass::Impossible,
            Some(newest) if seq > newest => SeqClass::Ahead,
            Some(_) => SeqClass::Known,
        }
    }

    /// A signed entry names segment `seq`: it is known from now on, and what peers said of it meanwhile is taken.
    pub(super) fn signed(&mut self, seq: u64) {
        if self.newest_signed.is_some_and(|n| n >= seq) {
            return;
        }
        self.newest_signed = Some(seq);
        if self.guard.held_haves.iter().any(|(_, s, _)| s.seq <= seq) {
            let (ready, later): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.guard.held_haves)
                .into_iter()
                .partition(|(_, s, _)| s.seq <= seq);
            self.guard.held_haves = later;
            for (from, segment, blocks) in ready {
                self.on_have(from, segment, blocks);
            }
        }
    }

    /// Remembers `old` as a parent we just left (see [`Self::was_parent_lately`]).
    pub(super) fn remember_former_parent(&mut self, old: P) {
        let former = &mut self.guard.former_parents;
        former.retain(|(id, _)| *id != old);
        if former.len() >= MAX_FORMER_PARENTS {
            former.pop_front();
        }
        former.push_back((old, self.now));
    }

    /// Whether `peer` was our parent, or took us on our own request, within [`FORMER_PARENT_GRACE_S`]: what it sent
    /// before it heard we left is no lie.
    pub(super) fn was_parent_lately(&self, peer: P) -> bool {
        self.guard
            .former_parents
            .iter()
            .any(|(id, at)| *id == peer && self.now - at <= FORMER_PARENT_GRACE_S)
    }

    fn on_peer_gone(&mut self, peer: P) {
        if self.suspicion.is_some_and(|s| s.parent == peer) {
            // It left (or was banned): its silence is no answer.
            self.suspicion = None;
        }
        let lost_forwarder = self.children.iter().any(|c| c.id == peer && c.capable);
        self.children.retain(|c| c.id != peer);
        if lost_forwarder {
            self.recruit_for_orphans();
        }
        self.serves.retain(|(to, ..)| *to != peer);
        self.advertise_changes();
        if self.parent.is_some_and(|p| p.id == peer) {
            self.lose_parent();
        }
        if self.attempt.is_some_and(|a| a.id == peer) {
            self.attempt = None;
        }
        self.drop_pulls_from(peer);
        self.peers.remove(peer);
    }

    /// The maintenance tick: role, parent, mesh, adverts.
    fn tick(&mut self) {
        if !self.joined {
            return;
        }
        self.check_role();
        if self.cfg.role == Role::Viewer {
            if self.parent.is_none() && self.attempt.is_none() {
                self.try_attach();
            } else {
                self.consider_jump();
                self.consider_closer_parent();
            }
            self.fill_mesh();
        }
        self.advertise_changes();
    }

    /// Upload budget left for pulls after the children's promised rate.
    pub(super) fn spare_budget(&self) -> f64 {
        let rate = match self.cfg.role {
            Role::Broadcaster => self.cfg.root_child_rate_x,
            Role::Viewer => self.cfg.child_rate_x,
        } * self.cfg.bitrate;
        (self.cfg.budget() - rate * self.children.len() as f64).max(0.0)
    }

    /// Whether the policy's upload/download ratio allows uploading more.
    pub(super) fn ratio_allows(&self) -> bool {
        let downloaded = self.counters.from_peers + self.counters.from_origin;
        self.cfg
            .policy
            .max_ratio
            .is_none_or(|r| self.counters.uploaded <= r * downloaded.max(1.0))
    }

    /// Chooses a few known peers other than `except` at random, for peer exchange.
    fn sample_peers(&mut self, except: P, n: usize) -> Vec<(P, bool)> {
        use rand::seq::IndexedRandom;
        // The draw is over positions found from the ids alone; only the chosen entries are read whole (answering a
        // probe is most of what a peer does with its table, and the whole table is many cache lines).
        let known = self.peers.ids().iter().enumerate().filter(|(_, id)| **id != except);
        let children = self.children.iter().enumerate().filter(|(_, c)| c.id != except);
        let mut pool: Vec<(bool, usize)> = Vec::with_capacity(self.peers.ids().len() + self.children.len());
        pool.extend(known.map(|(i, _)| (false, i)).chain(children.map(|(i, _)| (true, i))));
        pool.choose_multiple(&mut self.rng, n)
            .map(|&(child, i)| match child {
                false => (self.peers.list[i].id, self.peers.list[i].reachable),
                true => (self.children[i].id, self.children[i].reachable),
            })
            .collect()
    }
}
