//! The tree-mesh protocol, `/streamrp2p/treemesh/1.0.0`: how the [`Message`]s of a [`super::TreeMesh`] and the
//! blocks it pushes and serves travel between peers, with `P` = [`libp2p_identity::PeerId`].
//!
//! # Frames
//!
//! Every request is one [`Frame`], one protobuf (`TreeMeshFrame` in `proto/streamrp2p.proto`) written whole, after
//! which the writer closes its half of the stream, so no length prefix is needed; a reader stops at
//! [`MAX_FRAME_SIZE`] bytes. A frame names the stream it is about and holds either
//!
//! - a control message ([`Frame::Control`]): one [`Message`], a few hundred bytes and never more than about 4 KiB
//!   (a full path of [`MAX_DEPTH`] peers and [`MAX_EXCHANGED_PEERS`] exchanged peers); or
//! - a block ([`Frame::Block`]): block `index` of a segment, which the frame describes by its sequence number and
//!   size (so the receiver knows the block layout before it has anything else of the segment), whether it was
//!   pushed down the tree or served to a mesh pull, and exactly the block's bytes.
//!
//! # One protocol for control and blocks
//!
//! Both kinds are requests of one request-response protocol: one message per request, and the response is an empty
//! acknowledgement the node writes once it has read the frame (the state machine's answers, such as `Accepted` to an
//! `Attach` or a block to a `Want`, are requests of their own in the other direction). The protocol carries blocks
//! too, rather than leaving them to the chunk protocol, because the state machine schedules them itself: a push or a
//! serve goes out when the uplink is free and needs no request from the receiver, the receiver must know the
//! segment's size and whether the block was pushed or pulled, and blocks and the control messages about them (`Have`,
//! `Skip`, `Refused`) share one stream of requests per peer, so the node has one protocol to open, limit and account.
//! A block is verified against its CID by the receiver, from the segment's signed manifest entry, as chunk protocol
//! blocks are; this module checks only its shape.
//!
//! # Encoding
//!
//! - Peer ids travel as their bytes ([`PeerId::to_bytes`]), and are parsed back with [`PeerId::from_bytes`].
//! - A `u128` block bitmap travels as a `Bitmap` of two `fixed64`: `lo` holds bits 0 to 63 (block `i` is bit `i`),
//!   `hi` bits 64 to 127 (block `i` is bit `i - 64`). A zero half is not written, so a bitmap of one segment of up
//!   to 64 blocks costs 11 bytes.
//! - Fields that are `u8` or `u16` in memory travel as `uint32` and are range-checked when decoded.
//! - [`Refusal`] is a protobuf enum whose 0 (`REFUSAL_UNSPECIFIED`) is never sent and is rejected like any unknown
//!   value.
//! - A missing sub-message (an advert, a segment, a bitmap, an attach request) is an error, never a default.
//!
//! # Decoding
//!
//! [`Frame::decode`] takes the bytes of an untrusted peer and returns a [`WireError`] rather than a frame that breaks
//! a limit: a frame over [`MAX_FRAME_SIZE`] ([`WireError::TooLarge`]); a path longer than [`MAX_DEPTH`] or more than
//! [`MAX_EXCHANGED_PEERS`] exchanged peers ([`WireError::TooMany`]); invalid peer id bytes ([`WireError::PeerId`]);
//! a segment over [`MAX_SEGMENT_SIZE`], a block index beyond its segment's last block (or [`MAX_BLOCKS`]), a `u8` or
//! `u16` field out of its range, or a free count above [`MAX_FREE_ADVERTISED`] ([`WireError::OutOfRange`]); block
//! bytes other than the block's size ([`WireError::BlockLength`]); an unknown [`Refusal`]
//! ([`WireError::UnknownEnum`]); a missing message kind or sub-message ([`WireError::MissingField`]); and malformed
//! protobuf ([`WireError::Protobuf`]). It never panics. [`Frame::decode_bytes`] does the same without copying the
//! block's bytes out of the buffer.

use bytes::Bytes;
use libp2p_identity::PeerId;
use prost::Message as _;

use super::message::{Advert, AttachRequest, MAX_CHILD_SLOTS, MAX_FREE_ADVERTISED, Message, Refusal, SegmentInfo};
use super::tree::MAX_DEPTH;
use super::window::MAX_BLOCKS;
use crate::WireError;
use crate::error::{check_count, check_size};
use crate::proto::{self, tree_mesh_control as pc, tree_mesh_frame};
use crate::segment::{BLOCK_SIZE, MAX_SEGMENT_SIZE};
use crate::stream::StreamId;

/// The protocol's name, versioned.
pub const PROTOCOL_NAME: &str = "/streamrp2p/treemesh/1.0.0";

/// Largest frame: 66,560 bytes, a block of [`BLOCK_SIZE`] (65,536 bytes) plus 1 KiB for its header.
///
/// A block frame's header is at most 64 bytes: the stream id (34 with its tag and length), the block's tag and
/// length (4), the sequence number (11), the segment's size (6), the index (3), the push flag (2) and the data's tag
/// and length (4). Control messages are far smaller: the largest, a `ProbeReply` with a path of [`MAX_DEPTH`] peers,
/// four rooms and [`MAX_EXCHANGED_PEERS`] exchanged peers, is under 4 KiB even with the longest peer ids
/// (66 bytes).
pub const MAX_FRAME_SIZE: usize = BLOCK_SIZE + 1024;

/// Most peers in a ProbeReply's peer exchange list.
pub const MAX_EXCHANGED_PEERS: usize = 16;

// Every block of a segment of at most MAX_SEGMENT_SIZE bytes has an index the state machine's bitmaps can hold.
const _: () = assert!(MAX_SEGMENT_SIZE.div_ceil(BLOCK_SIZE) <= MAX_BLOCKS as usize);

/// One request of the tree-mesh protocol: a control message, or a block of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A control message about `stream`.
    Control {
        /// The stream.
        stream: StreamId,
        /// The message.
        message: Message<PeerId>,
    },
    /// Block `index` of `segment`, pushed to a child (`push: true`) or served to a pull (`push: false`).
    Block {
        /// The stream.
        stream: StreamId,
        /// The segment the block belongs to: its size fixes the block layout.
        segment: SegmentInfo,
        /// The block's index in the segment.
        index: u16,
        /// Whether the block was pushed down the tree (rather than served to a pull).
        push: bool,
        /// The block's bytes: exactly `segment.block_bytes(index, BLOCK_SIZE as u32)` of them.
        data: Bytes,
    },
}

impl Frame {
    /// Encodes the frame.
    ///
    /// Encoding does not check the limits decoding does: a frame that breaks one (say, a path longer than
    /// [`MAX_DEPTH`]) is encoded as it is and refused by the receiver.
    pub fn encode(&self) -> Vec<u8> {
        let kind = match self {
            Self::Control { message, .. } => tree_mesh_frame::Kind::Control(proto::TreeMeshControl {
                kind: Some(encode_message(message)),
            }),
            Self::Block {
                segment,
                index,
                push,
                data,
                ..
            } => tree_mesh_frame::Kind::Block(proto::TreeMeshBlock {
                seq: segment.seq,
                segment_bytes: segment.bytes,
                index: u32::from(*index),
                push: *push,
                data: data.clone(),
            }),
        };
        proto::TreeMeshFrame {
            stream_id: self.stream().as_bytes().to_vec().into(),
            kind: Some(kind),
        }
        .encode_to_vec()
    }

    /// Decodes a frame from a peer, checking every limit (see the module documentation); never panics on any input.
    ///
    /// A block's bytes are copied out of `bytes` once; [`Frame::decode_bytes`] avoids that copy.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_FRAME_SIZE)?;
        Self::from_proto(proto::TreeMeshFrame::decode(bytes)?)
    }

    /// [`Frame::decode`] from a shared buffer: a block's data is a slice of `bytes`, not a copy.
    pub fn decode_bytes(bytes: Bytes) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_FRAME_SIZE)?;
        Self::from_proto(proto::TreeMeshFrame::decode(bytes)?)
    }

    /// The stream the frame is about.
    pub fn stream(&self) -> StreamId {
        match self {
            Self::Control { stream, .. } | Self::Block { stream, .. } => *stream,
        }
    }

    fn from_proto(frame: proto::TreeMeshFrame) -> Result<Self, WireError> {
        let stream = StreamId::from_slice(&frame.stream_id)?;
        match frame.kind {
            Some(tree_mesh_frame::Kind::Control(control)) => Ok(Self::Control {
                stream,
                message: decode_message(control.kind.ok_or(WireError::MissingField("control.kind"))?)?,
            }),
            Some(tree_mesh_frame::Kind::Block(block)) => {
                let segment = decode_segment(block.seq, block.segment_bytes)?;
                let index = decode_block_index("index", segment, block.index)?;
                let expected = segment.block_bytes(index, BLOCK_SIZE as u32);
                if block.data.len() != expected as usize {
                    return Err(WireError::BlockLength {
                        index,
                        len: block.data.len(),
                        expected,
                    });
                }
                Ok(Self::Block {
                    stream,
                    segment,
                    index,
                    push: block.push,
                    data: block.data,
                })
            }
            None => Err(WireError::MissingField("kind")),
        }
    }
}

// ---- Encoding.

fn encode_message(message: &Message<PeerId>) -> pc::Kind {
    match message {
        Message::Probe => pc::Kind::Probe(pc::Empty {}),
        Message::ProbeReply { advert, peers } => pc::Kind::ProbeReply(pc::ProbeReply {
            advert: Some(encode_advert(advert)),
            peers: peers
                .iter()
                .map(|&(peer, reachable)| pc::ExchangedPeer {
                    peer: encode_peer(peer),
                    reachable,
                })
                .collect(),
        }),
        Message::Attach(request) => pc::Kind::Attach(encode_attach(request)),
        Message::Place { joiner, request, hops } => pc::Kind::Place(pc::Place {
            joiner: encode_peer(*joiner),
            request: Some(encode_attach(request)),
            hops: u32::from(*hops),
        }),
        Message::Accepted { advert, nonce } => pc::Kind::Accepted(pc::Accepted {
            advert: Some(encode_advert(advert)),
            nonce: *nonce,
        }),
        Message::Rejected { reason, nonce } => pc::Kind::Rejected(pc::Rejected {
            reason: encode_refusal(*reason),
            nonce: *nonce,
        }),
        Message::Detach => pc::Kind::Detach(pc::Empty {}),
        Message::Recruit => pc::Kind::Recruit(pc::Empty {}),
        Message::Displaced { try_instead } => pc::Kind::Displaced(pc::Displaced {
            try_instead: encode_peer(*try_instead),
        }),
        Message::Update { advert } => pc::Kind::Update(with_advert(advert)),
        Message::MeshJoin { advert } => pc::Kind::MeshJoin(with_advert(advert)),
        Message::MeshReply { accepted, advert } => pc::Kind::MeshReply(pc::MeshReply {
            accepted: *accepted,
            advert: Some(encode_advert(advert)),
        }),
        Message::MeshLeave => pc::Kind::MeshLeave(pc::Empty {}),
        Message::Withheld { parent } => pc::Kind::Withheld(pc::Withheld {
            parent: encode_peer(*parent),
        }),
        Message::Have { segment, blocks } => pc::Kind::Have(pc::Have {
            segment: Some(encode_segment(*segment)),
            blocks: Some(encode_bitmap(*blocks)),
        }),
        Message::Skip { seq, blocks } => pc::Kind::Skip(pc::Skip {
            seq: *seq,
            blocks: Some(encode_bitmap(*blocks)),
        }),
        Message::Want { segment, block } => pc::Kind::Want(pc::Want {
            segment: Some(encode_segment(*segment)),
            block: u32::from(*block),
        }),
        Message::Refused { seq, block, reason } => pc::Kind::Refused(pc::Refused {
            seq: *seq,
            block: u32::from(*block),
            reason: encode_refusal(*reason),
        }),
    }
}

fn encode_peer(peer: PeerId) -> Bytes {
    peer.to_bytes().into()
}

fn encode_bitmap(bits: u128) -> pc::Bitmap {
    pc::Bitmap {
        lo: bits as u64,
        hi: (bits >> 64) as u64,
    }
}

fn encode_segment(segment: SegmentInfo) -> pc::Segment {
    pc::Segment {
        seq: segment.seq,
        bytes: segment.bytes,
    }
}

fn encode_refusal(reason: Refusal) -> i32 {
    match reason {
        Refusal::Busy => pc::Refusal::Busy,
        Refusal::Missing => pc::Refusal::Missing,
        Refusal::NotBackbone => pc::Refusal::NotBackbone,
        Refusal::Loop => pc::Refusal::Loop,
    }
    .into()
}

fn encode_attach(request: &AttachRequest) -> pc::AttachRequest {
    pc::AttachRequest {
        from_seq: request.from_seq,
        held: Some(encode_bitmap(request.held)),
        reachable: request.reachable,
        slots: request.slots,
        stable: request.stable,
        max_depth: u32::from(request.max_depth),
        orphan: request.orphan,
        nonce: request.nonce,
    }
}

fn with_advert(advert: &Advert<PeerId>) -> pc::WithAdvert {
    pc::WithAdvert {
        advert: Some(encode_advert(advert)),
    }
}

fn encode_room(room: Option<(PeerId, u8)>) -> Option<pc::Room> {
    room.map(|(peer, below)| pc::Room {
        peer: encode_peer(peer),
        below: u32::from(below),
    })
}

fn encode_advert(advert: &Advert<PeerId>) -> pc::Advert {
    pc::Advert {
        path: advert.path.iter().map(|&peer| encode_peer(peer)).collect(),
        rooted: advert.rooted,
        backbone: advert.backbone,
        forwards: advert.forwards,
        spare_slots: advert.spare_slots,
        leaf_children: advert.leaf_children,
        reachable: advert.reachable,
        newest: advert.newest,
        oldest: advert.oldest,
        room: encode_room(advert.room),
        backbone_room: encode_room(advert.backbone_room),
        free: u32::from(advert.free),
        any_room: encode_room(advert.any_room),
        any_free: u32::from(advert.any_free),
        fringe: encode_room(advert.fringe),
    }
}

// ---- Decoding: every function checks the limits of what it reads.

fn decode_message(kind: pc::Kind) -> Result<Message<PeerId>, WireError> {
    Ok(match kind {
        pc::Kind::Probe(_) => Message::Probe,
        pc::Kind::ProbeReply(reply) => {
            check_count("peers", reply.peers.len(), MAX_EXCHANGED_PEERS)?;
            Message::ProbeReply {
                advert: decode_advert(reply.advert)?,
                peers: reply
                    .peers
                    .into_iter()
                    .map(|p| Ok((decode_peer(&p.peer)?, p.reachable)))
                    .collect::<Result<_, WireError>>()?,
            }
        }
        pc::Kind::Attach(request) => Message::Attach(decode_attach(Some(request))?),
        pc::Kind::Place(place) => Message::Place {
            joiner: decode_peer(&place.joiner)?,
            request: decode_attach(place.request)?,
            hops: decode_u8("hops", place.hops)?,
        },
        pc::Kind::Accepted(a) => Message::Accepted {
            advert: decode_advert(a.advert)?,
            nonce: a.nonce,
        },
        pc::Kind::Rejected(r) => Message::Rejected {
            reason: decode_refusal(r.reason)?,
            nonce: r.nonce,
        },
        pc::Kind::Detach(_) => Message::Detach,
        pc::Kind::Recruit(_) => Message::Recruit,
        pc::Kind::Displaced(d) => Message::Displaced {
            try_instead: decode_peer(&d.try_instead)?,
        },
        pc::Kind::Update(a) => Message::Update {
            advert: decode_advert(a.advert)?,
        },
        pc::Kind::MeshJoin(a) => Message::MeshJoin {
            advert: decode_advert(a.advert)?,
        },
        pc::Kind::MeshReply(r) => Message::MeshReply {
            accepted: r.accepted,
            advert: decode_advert(r.advert)?,
        },
        pc::Kind::MeshLeave(_) => Message::MeshLeave,
        pc::Kind::Withheld(w) => Message::Withheld {
            parent: decode_peer(&w.parent)?,
        },
        pc::Kind::Have(h) => {
            let segment = h.segment.ok_or(WireError::MissingField("segment"))?;
            Message::Have {
                segment: decode_segment(segment.seq, segment.bytes)?,
                blocks: decode_bitmap(h.blocks)?,
            }
        }
        pc::Kind::Skip(s) => Message::Skip {
            seq: s.seq,
            blocks: decode_bitmap(s.blocks)?,
        },
        pc::Kind::Want(w) => {
            let segment = w.segment.ok_or(WireError::MissingField("segment"))?;
            let segment = decode_segment(segment.seq, segment.bytes)?;
            Message::Want {
                segment,
                block: decode_block_index("block", segment, w.block)?,
            }
        }
        pc::Kind::Refused(r) => Message::Refused {
            seq: r.seq,
            block: decode_max("block", r.block, u32::from(MAX_BLOCKS) - 1)? as u16,
            reason: decode_refusal(r.reason)?,
        },
    })
}

fn decode_peer(bytes: &[u8]) -> Result<PeerId, WireError> {
    Ok(PeerId::from_bytes(bytes)?)
}

/// `value`, if at most `max`.
fn decode_max(field: &'static str, value: u32, max: u32) -> Result<u32, WireError> {
    if value > max {
        return Err(WireError::OutOfRange {
            field,
            value: value.into(),
            max: max.into(),
        });
    }
    Ok(value)
}

fn decode_u8(field: &'static str, value: u32) -> Result<u8, WireError> {
    Ok(decode_max(field, value, u8::MAX.into())? as u8)
}

fn decode_free(field: &'static str, value: u32) -> Result<u8, WireError> {
    Ok(decode_max(field, value, MAX_FREE_ADVERTISED.into())? as u8)
}

fn decode_bitmap(bitmap: Option<pc::Bitmap>) -> Result<u128, WireError> {
    let bitmap = bitmap.ok_or(WireError::MissingField("blocks"))?;
    Ok(u128::from(bitmap.hi) << 64 | u128::from(bitmap.lo))
}

fn decode_segment(seq: u64, bytes: u32) -> Result<SegmentInfo, WireError> {
    let bytes = decode_max("segment.bytes", bytes, MAX_SEGMENT_SIZE as u32)?;
    Ok(SegmentInfo { seq, bytes })
}

/// A block index of `segment`, which [`decode_segment`] checked (so that its block count fits a `u16`).
fn decode_block_index(field: &'static str, segment: SegmentInfo, index: u32) -> Result<u16, WireError> {
    let blocks = segment.blocks(BLOCK_SIZE as u32).min(MAX_BLOCKS);
    Ok(decode_max(field, index, u32::from(blocks) - 1)? as u16)
}

fn decode_refusal(value: i32) -> Result<Refusal, WireError> {
    match pc::Refusal::try_from(value) {
        Ok(pc::Refusal::Busy) => Ok(Refusal::Busy),
        Ok(pc::Refusal::Missing) => Ok(Refusal::Missing),
        Ok(pc::Refusal::NotBackbone) => Ok(Refusal::NotBackbone),
        Ok(pc::Refusal::Loop) => Ok(Refusal::Loop),
        Ok(pc::Refusal::Unspecified) | Err(_) => Err(WireError::UnknownEnum { field: "reason", value }),
    }
}

fn decode_attach(request: Option<pc::AttachRequest>) -> Result<AttachRequest, WireError> {
    let request = request.ok_or(WireError::MissingField("request"))?;
    Ok(AttachRequest {
        from_seq: request.from_seq,
        held: decode_bitmap(request.held)?,
        reachable: request.reachable,
        slots: decode_max("slots", request.slots, MAX_CHILD_SLOTS)?,
        stable: request.stable,
        max_depth: decode_u8("max_depth", request.max_depth)?,
        orphan: request.orphan,
        nonce: request.nonce,
    })
}

fn decode_room(field: &'static str, room: Option<pc::Room>) -> Result<Option<(PeerId, u8)>, WireError> {
    room.map(|room| Ok((decode_peer(&room.peer)?, decode_u8(field, room.below)?)))
        .transpose()
}

fn decode_advert(advert: Option<pc::Advert>) -> Result<Box<Advert<PeerId>>, WireError> {
    let a = advert.ok_or(WireError::MissingField("advert"))?;
    check_count("path", a.path.len(), MAX_DEPTH)?;
    Ok(Box::new(Advert {
        path: a.path.iter().map(|p| decode_peer(p)).collect::<Result<_, _>>()?,
        rooted: a.rooted,
        backbone: a.backbone,
        forwards: a.forwards,
        spare_slots: decode_max("spare_slots", a.spare_slots, MAX_CHILD_SLOTS)?,
        leaf_children: decode_max("leaf_children", a.leaf_children, MAX_CHILD_SLOTS)?,
        reachable: a.reachable,
        newest: a.newest,
        oldest: a.oldest,
        room: decode_room("room.below", a.room)?,
        backbone_room: decode_room("backbone_room.below", a.backbone_room)?,
        free: decode_free("free", a.free)?,
        any_room: decode_room("any_room.below", a.any_room)?,
        any_free: decode_free("any_free", a.any_free)?,
        fringe: decode_room("fringe.below", a.fringe)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_split_into_halves() {
        let bits = 1u128 << 127 | 1 << 64 | 1 << 63 | 1;
        let b = encode_bitmap(bits);
        assert_eq!((b.lo, b.hi), (1 << 63 | 1, 1 << 63 | 1));
        assert_eq!(decode_bitmap(Some(b)).unwrap(), bits);
    }

    #[test]
    fn block_indices_stop_at_the_segments_last_block() {
        let seg = SegmentInfo {
            seq: 1,
            bytes: 2 * BLOCK_SIZE as u32 + 1,
        };
        assert_eq!(decode_block_index("i", seg, 2).unwrap(), 2);
        assert!(decode_block_index("i", seg, 3).is_err());
        let full = SegmentInfo {
            seq: 1,
            bytes: MAX_SEGMENT_SIZE as u32,
        };
        assert_eq!(decode_block_index("i", full, 127).unwrap(), 127);
        assert!(decode_block_index("i", full, 128).is_err());
    }
}
