//! The withholder: it asks the broadcaster for a place offering every slot a peer may offer and saying it is
//! stable, takes whatever children it is given, forwards to them honestly until its time comes, and then forwards
//! nothing while still saying it is connected and fed — the adversary a rewarded network attracts most, paid for a
//! place it does not serve. It speaks the tree-mesh protocol itself, as frames, with no state machine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use streamrp2p_protocols::stream::StreamId;
use streamrp2p_protocols::treemesh::wire::Frame;
use streamrp2p_protocols::treemesh::{Advert, AttachRequest, MAX_CHILD_SLOTS, Message, SegmentInfo};

/// An attach request unanswered this long is asked again.
const ATTACH_RETRY: Duration = Duration::from_secs(3);
/// A withholder whose parent has pushed it nothing for this long is not fed (a segment's worth of blocks comes
/// within a second).
const FED_GAP: Duration = Duration::from_secs(1);
/// Free slots the withholder advertises: room that draws joiners to it.
const ADVERTISED_SLOTS: u32 = 8;

/// One child and what it has been kept from.
#[derive(Debug)]
struct Child {
    /// When it confirmed its place (it gets pushes only from then on).
    confirmed: Option<Instant>,
}

/// The withholder's state.
#[derive(Debug)]
pub(crate) struct Withholder {
    me: PeerId,
    stream: StreamId,
    broadcaster: PeerId,
    /// It withholds from then on.
    from: Instant,
    parent: Option<PeerId>,
    path: Vec<PeerId>,
    attempt: Option<(u64, Instant)>,
    children: BTreeMap<PeerId, Child>,
    /// The newest segment pushed to it.
    newest: Option<SegmentInfo>,
    /// Since when it has been fed without a break (its parent pushing it blocks), and the last block.
    fed: Option<(Instant, Instant)>,
}

impl Withholder {
    pub(crate) fn new(me: PeerId, stream: StreamId, broadcaster: PeerId, from: Instant) -> Self {
        Self {
            me,
            stream,
            broadcaster,
            from,
            parent: None,
            path: Vec::new(),
            attempt: None,
            children: BTreeMap::new(),
            newest: None,
            fed: None,
        }
    }

    fn withholding(&self, now: Instant) -> bool {
        now >= self.from
    }

    fn control(&self, to: PeerId, message: Message<PeerId>) -> (PeerId, Frame) {
        let stream = self.stream;
        (to, Frame::Control { stream, message })
    }

    /// What it says of itself: connected, stable, fed, with room.
    fn advert(&self) -> Box<Advert<PeerId>> {
        let newest = self.newest.map(|s| s.seq);
        let room = Some((self.me, 0));
        Box::new(Advert {
            path: self.path.clone(),
            rooted: self.parent.is_some(),
            backbone: true,
            forwards: true,
            spare_slots: ADVERTISED_SLOTS,
            leaf_children: 0,
            reachable: true,
            newest,
            oldest: newest.map(|n| n.saturating_sub(10)),
            room,
            backbone_room: room,
            free: ADVERTISED_SLOTS as u8,
            any_room: room,
            any_free: ADVERTISED_SLOTS as u8,
            fringe: room,
        })
    }

    /// Asks the broadcaster for a place, when it has none and none is being asked.
    pub(crate) fn tick(&mut self, now: Instant, out: &mut Vec<(PeerId, Frame)>) {
        if self.parent.is_some() {
            // Keep telling the parent about the room below, so that joiners keep coming.
            if let Some(parent) = self.parent {
                let advert = self.advert();
                out.push(self.control(parent, Message::Update { advert }));
            }
            return;
        }
        if self
            .attempt
            .is_some_and(|(_, at)| now.duration_since(at) < ATTACH_RETRY)
        {
            return;
        }
        let nonce = rand::random();
        self.attempt = Some((nonce, now));
        let request = AttachRequest {
            from_seq: self.newest.map_or(0, |s| s.seq + 1),
            held: 0,
            reachable: true,
            slots: MAX_CHILD_SLOTS,
            stable: true,
            max_depth: u8::MAX,
            orphan: false,
            nonce,
        };
        out.push(self.control(self.broadcaster, Message::Attach(request)));
    }

    /// Children it has kept the stream from for at least `spell` while it had the stream itself (fed by its parent,
    /// and saying so), with when that began for each: its lies. (Kept from a child while cut off itself, it would
    /// have nothing to send, and would be telling no lie.)
    pub(crate) fn victims(&self, now: Instant, spell: Duration) -> Vec<(PeerId, Instant)> {
        let Some((fed_since, last_block)) = self.fed.filter(|_| self.parent.is_some()) else {
            return Vec::new();
        };
        if now.saturating_duration_since(last_block) > FED_GAP {
            return Vec::new();
        }
        self.children
            .iter()
            .filter_map(|(id, c)| {
                let since = c.confirmed?.max(self.from).max(fed_since);
                (now >= since + spell).then_some((*id, since))
            })
            .collect()
    }

    /// A frame from `from`; what to send in answer goes to `out`.
    pub(crate) fn on_frame(&mut self, from: PeerId, frame: Frame, now: Instant, out: &mut Vec<(PeerId, Frame)>) {
        let message = match frame {
            Frame::Block {
                segment, index, data, ..
            } => {
                if self.newest.is_none_or(|n| n.seq < segment.seq) {
                    self.newest = Some(segment);
                }
                // Honest until its time comes: every block goes on to the confirmed children.
                if !self.withholding(now) && self.parent == Some(from) {
                    for (child, c) in &self.children {
                        if c.confirmed.is_some() {
                            let stream = self.stream;
                            let push = Frame::Block {
                                stream,
                                segment,
                                index,
                                push: true,
                                data: data.clone(),
                            };
                            out.push((*child, push));
                        }
                    }
                }
                return;
            }
            Frame::Control { message, .. } => message,
        };
        match message {
            Message::Accepted { advert, nonce } if self.attempt.is_some_and(|(n, _)| n == nonce) => {
                self.attempt = None;
                self.parent = Some(from);
                self.path = advert.path.clone();
                self.path.push(from);
                let advert = self.advert();
                out.push(self.control(from, Message::Update { advert }));
            }
            Message::Rejected { nonce, .. } if self.attempt.is_some_and(|(n, _)| n == nonce) => {
                self.attempt = None;
            }
            Message::Place { joiner, request, .. } if self.parent == Some(from) => {
                self.take(joiner, request.nonce, None, out);
            }
            Message::Attach(request) => self.take(from, request.nonce, Some(now), out),
            Message::Update { .. } | Message::Skip { .. } => {
                if let Some(child) = self.children.get_mut(&from) {
                    child.confirmed.get_or_insert(now);
                }
            }
            Message::Detach => {
                self.children.remove(&from);
                if self.parent == Some(from) {
                    self.parent = None;
                    self.path.clear();
                }
            }
            Message::Probe => {
                let advert = self.advert();
                out.push(self.control(
                    from,
                    Message::ProbeReply {
                        advert,
                        peers: Vec::new(),
                    },
                ));
            }
            Message::MeshJoin { .. } => {
                let advert = self.advert();
                out.push(self.control(
                    from,
                    Message::MeshReply {
                        accepted: false,
                        advert,
                    },
                ));
            }
            // Pulls go unanswered, and nothing else needs an answer.
            _ => {}
        }
    }

    /// Takes `joiner` as a child and tells it so.
    fn take(&mut self, joiner: PeerId, nonce: u64, confirmed: Option<Instant>, out: &mut Vec<(PeerId, Frame)>) {
        if joiner == self.me || self.parent == Some(joiner) {
            return;
        }
        self.children.entry(joiner).or_insert(Child { confirmed });
        let advert = self.advert();
        out.push(self.control(joiner, Message::Accepted { advert, nonce }));
    }

    /// A peer's connection went.
    pub(crate) fn gone(&mut self, peer: &PeerId) {
        self.children.remove(peer);
        if self.parent.as_ref() == Some(peer) {
            self.parent = None;
            self.path.clear();
        }
    }
}
