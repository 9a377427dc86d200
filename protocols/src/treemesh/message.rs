//! The control messages peers of one stream exchange, and the facts about segments they carry.

/// Bytes of a peer id on the wire (an Ed25519 libp2p peer id: 38 bytes), used to size messages.
pub const PEER_ID_BYTES: usize = 38;
/// Framing around every control message (protocol tag, stream id prefix, length, signature-free envelope).
pub const MESSAGE_OVERHEAD_BYTES: usize = 24;

/// What a peer needs to know about a segment to schedule it: its number and size (the block layout follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentInfo {
    /// Sequence number.
    pub seq: u64,
    /// Size in bytes.
    pub bytes: u32,
}

impl SegmentInfo {
    /// Blocks of `block_size` the segment is cut into.
    pub fn blocks(&self, block_size: u32) -> u16 {
        self.bytes.div_ceil(block_size).max(1) as u16
    }

    /// Bytes of block `index`.
    pub fn block_bytes(&self, index: u16, block_size: u32) -> u32 {
        let start = u32::from(index) * block_size;
        self.bytes.saturating_sub(start).min(block_size)
    }
}

/// What a peer asks of a parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachRequest {
    /// First segment to push.
    pub from_seq: u64,
    /// Blocks of segment `from_seq` not to push: the asker holds them or has them coming (a move between parents
    /// mid-segment loses nothing and repeats nothing).
    pub held: u128,
    /// Whether the asker accepts inbound connections.
    pub reachable: bool,
    /// Child slots the asker offers when it forwards (0 for a leaf): it is placed where forwarders belong, taking a
    /// leaf's slot if need be (mTreebone's high-degree preemption).
    pub slots: u32,
    /// Whether the asker has proven stable: it may also take the place of a forwarder that has not.
    pub stable: bool,
    /// The deepest level the asker accepts (a peer moving up asks for a real gain or nothing).
    pub max_depth: u8,
    /// The asker lost its parent and asks its grandparent: the grandparent may hold the request while a forwarder
    /// it recruited moves into the freed place, and then pass it there (see the repair module).
    pub orphan: bool,
    /// A random number the asker chose for this request. Whoever takes the asker echoes it in
    /// [`Message::Accepted`] (or [`Message::Rejected`]): an answer without it is not an answer to a request of the
    /// asker's, so nobody can make a peer take a parent it did not ask for.
    pub nonce: u64,
}

/// A peer's place in the stream's topology as it advertises it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert<P> {
    /// Its path from the root of its tree (the root first, itself excluded). The root is the broadcaster when
    /// `rooted`; otherwise a peer cut off from it, whose fragment keeps working on mesh pulls until it re-attaches.
    pub path: Vec<P>,
    /// Whether the path starts at the broadcaster.
    pub rooted: bool,
    /// Whether it has proven stable (mTreebone's treebone; the broadcaster always has).
    pub backbone: bool,
    /// Whether it takes children (its capacity and policy allow).
    pub forwards: bool,
    /// Child slots free.
    pub spare_slots: u32,
    /// Children that are not in the backbone (a backbone peer may take their place).
    pub leaf_children: u32,
    /// Whether it accepts inbound connections.
    pub reachable: bool,
    /// The newest segment it holds whole.
    pub newest: Option<u64>,
    /// The oldest segment it still holds whole.
    pub oldest: Option<u64>,
    /// A peer of its subtree (itself included) that accepts inbound connections and has a free child slot, the
    /// nearest it knows, with how many levels below it that peer is. Kept up to date from the children's adverts,
    /// it lets a full peer send a joiner straight to a free slot instead of one level down per round trip.
    pub room: Option<(P, u8)>,
    /// The same for a backbone newcomer: the nearest peer of its subtree (itself included) that accepts inbound
    /// connections and has a free slot or a leaf child it would move under the newcomer (mTreebone's preemption),
    /// so that peers that forward sit above peers that do not.
    pub backbone_room: Option<(P, u8)>,
    /// Free slots for leaves in its subtree, itself included (at most [`MAX_FREE_ADVERTISED`]): a parent passes
    /// joiners down to the children with room, counting them off, so that a burst of joiners spreads over the
    /// tree instead of queueing at one free slot.
    pub free: u8,
    /// The nearest free slot of its subtree including peers that accept no inbound connection (a joiner that
    /// accepts them can use those too), and how many such slots it has.
    pub any_room: Option<(P, u8)>,
    /// See `any_room`.
    pub any_free: u8,
    /// The nearest stable forwarder of its subtree (itself included) that accepts inbound connections and none of
    /// whose children forwards, with how many levels below it is: the one a parent that loses a forwarder recruits
    /// into the freed place (see the repair module).
    pub fringe: Option<(P, u8)>,
}

/// Free slots a subtree advertises at most (beyond, the count would only cause traffic).
pub const MAX_FREE_ADVERTISED: u8 = 32;
/// Child slots a peer offers or advertises at most (a budget of 64 children at the promised rate is already a
/// data centre's uplink); larger claims are refused on the wire.
pub const MAX_CHILD_SLOTS: u32 = 64;
/// Different peers that must complain of a child withholding the stream ([`Message::Withheld`]) before the parent
/// lets it go: one complaint could be a lie.
pub const WITHHELD_COMPLAINTS: usize = 2;

impl<P> Advert<P> {
    /// Hops from the root of its tree.
    pub fn depth(&self) -> usize {
        self.path.len()
    }
}

/// Why a request was turned down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The peer's upload budget is spoken for.
    Busy,
    /// The peer does not hold what was asked for.
    Missing,
    /// The peer does not take children (not in the backbone, or its policy forbids uploading).
    NotBackbone,
    /// Accepting would close a loop in the tree.
    Loop,
}

/// A control message between two peers of a stream. Segment bytes never travel in these: blocks
/// ([`super::Output::Push`], [`super::Output::Serve`]) travel in frames of their own (see [`super::wire`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<P> {
    /// A joiner (or an orphan) asks for the peer's advert and a few other peers.
    Probe,
    /// The answer to a probe.
    ProbeReply {
        /// The peer's advert.
        advert: Box<Advert<P>>,
        /// Some peers it knows, with whether they are reachable (peer exchange, as HyParView's shuffle).
        peers: Vec<(P, bool)>,
    },
    /// Asks the peer to become our parent, or to find us one in its subtree.
    Attach(AttachRequest),
    /// An attach request passed down the tree on behalf of `joiner`: the receiver takes it as a child or passes it
    /// on to the part of its subtree with room (push-down placement, as in SplitStream), and answers the joiner
    /// directly.
    Place {
        /// Who asked.
        joiner: P,
        /// What it asked for.
        request: AttachRequest,
        /// Levels it has been passed down so far.
        hops: u8,
    },
    /// Accepted as a child. Until the child speaks to its new parent itself (it answers at once, with its advert),
    /// the parent sends it no payload: a place handed down the tree on someone's behalf is only an offer.
    Accepted {
        /// The parent's advert (its path makes the child's).
        advert: Box<Advert<P>>,
        /// The [`AttachRequest::nonce`] of the request this answers.
        nonce: u64,
    },
    /// No place was found (or the asker would close a loop).
    Rejected {
        /// Why.
        reason: Refusal,
        /// The [`AttachRequest::nonce`] of the request this answers.
        nonce: u64,
    },
    /// The sender stops being our parent or child.
    Detach,
    /// From an ancestor that lost a forwarding child: move up into the freed place, subtree and all (attach to the
    /// sender); the lost child's orphans are then passed to us.
    Recruit,
    /// The parent gave our slot to a backbone peer, which has room for us: attach there.
    Displaced {
        /// The backbone peer that took the slot.
        try_instead: P,
    },
    /// A changed advert (sent to children and neighbours when the path or the free slots change).
    Update {
        /// The sender's advert.
        advert: Box<Advert<P>>,
    },
    /// Asks to become mesh neighbours.
    MeshJoin {
        /// The sender's advert.
        advert: Box<Advert<P>>,
    },
    /// Accepted or refused as a mesh neighbour.
    MeshReply {
        /// Whether accepted.
        accepted: bool,
        /// The sender's advert.
        advert: Box<Advert<P>>,
    },
    /// Leaves the mesh neighbourhood.
    MeshLeave,
    /// To the grandparent: its child `parent` took the sender as a child and then withheld the stream while the
    /// rest of the tree delivered it (the sender has left it). A parent that hears this of one child from
    /// [`WITHHELD_COMPLAINTS`] different peers lets that child go.
    Withheld {
        /// The parent that withheld.
        parent: P,
    },
    /// The sender holds these blocks of a segment (a bitmap; all set when whole).
    Have {
        /// The segment.
        segment: SegmentInfo,
        /// Blocks held, bit `i` for block `i`.
        blocks: u128,
    },
    /// To the parent: stop pushing these blocks of segment `seq`; they come from elsewhere (a rescue).
    Skip {
        /// The segment.
        seq: u64,
        /// Blocks not to push, bit `i` for block `i`.
        blocks: u128,
    },
    /// A pull: send block `block` of segment `segment`.
    Want {
        /// The segment.
        segment: SegmentInfo,
        /// The block.
        block: u16,
    },
    /// A pull turned down.
    Refused {
        /// The segment.
        seq: u64,
        /// The block.
        block: u16,
        /// Why.
        reason: Refusal,
    },
}

/// Which per-peer quota a message counts against (see [`crate::quota::limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaClass {
    /// Pulls: each may cost a block of upload.
    Pulls,
    /// Probes and mesh requests: each costs an answer with an advert.
    Probes,
    /// Attach requests passed down by a parent: a join burst or a repair sends many down one link.
    Placements,
    /// Everything else.
    Control,
}

impl QuotaClass {
    /// The quota of this class.
    pub fn rate(self) -> crate::quota::Rate {
        match self {
            QuotaClass::Pulls => crate::quota::limits::PULLS,
            QuotaClass::Probes => crate::quota::limits::PROBES,
            QuotaClass::Placements => crate::quota::limits::PLACEMENTS,
            QuotaClass::Control => crate::quota::limits::CONTROL,
        }
    }
}

impl<P> Message<P> {
    /// The per-peer quota the message counts against.
    pub fn quota_class(&self) -> QuotaClass {
        match self {
            Self::Want { .. } => QuotaClass::Pulls,
            Self::Probe | Self::MeshJoin { .. } => QuotaClass::Probes,
            Self::Place { .. } => QuotaClass::Placements,
            _ => QuotaClass::Control,
        }
    }

    /// Approximate encoded size in bytes, for the control-overhead figure.
    pub fn wire_size(&self) -> usize {
        let advert = |a: &Advert<P>| {
            18 + (a.path.len()
                + usize::from(a.room.is_some())
                + usize::from(a.any_room.is_some())
                + usize::from(a.backbone_room.is_some())
                + usize::from(a.fringe.is_some()))
                * PEER_ID_BYTES
        };
        MESSAGE_OVERHEAD_BYTES
            + match self {
                Self::Probe | Self::Detach | Self::MeshLeave | Self::Recruit => 0,
                Self::Withheld { .. } => PEER_ID_BYTES,
                Self::ProbeReply { advert: a, peers } => advert(a) + peers.len() * (PEER_ID_BYTES + 1),
                Self::Attach(_) => 41,
                Self::Place { .. } => 42 + PEER_ID_BYTES,
                Self::Displaced { .. } => PEER_ID_BYTES,
                Self::Accepted { advert: a, .. } => 9 + advert(a),
                Self::Update { advert: a } | Self::MeshJoin { advert: a } => advert(a),
                Self::MeshReply { advert: a, .. } => 1 + advert(a),
                Self::Rejected { .. } => 10,
                Self::Have { blocks, .. } | Self::Skip { blocks, .. } => {
                    12 + (128 - blocks.leading_zeros() as usize).div_ceil(8)
                }
                Self::Want { .. } | Self::Refused { .. } => 14,
            }
    }
}
