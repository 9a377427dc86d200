//! The tree-mesh protocol's frames: every message and block round-trips, and every limit `Frame::decode` enforces
//! has a test that fails without it. (Arbitrary and mutated bytes are fed to the decoder in `decoders.rs`.)

use bytes::Bytes;
use libp2p_identity::{Keypair, PeerId};
use multihash::Multihash;
use proptest::prelude::*;
use prost::Message as _;
use streamrp2p_protocols::WireError;
use streamrp2p_protocols::proto::{self, tree_mesh_control as pc, tree_mesh_frame};
use streamrp2p_protocols::segment::{BLOCK_SIZE, MAX_SEGMENT_SIZE};
use streamrp2p_protocols::stream::StreamId;
use streamrp2p_protocols::treemesh::wire::{Frame, MAX_EXCHANGED_PEERS, MAX_FRAME_SIZE, PROTOCOL_NAME};
use streamrp2p_protocols::treemesh::{
    Advert, AttachRequest, MAX_BLOCKS, MAX_CHILD_SLOTS, MAX_DEPTH, MAX_FREE_ADVERTISED, Message, Refusal, SegmentInfo,
};

const SHA256: u64 = 0x12;
const IDENTITY: u64 = 0x00;

fn stream() -> StreamId {
    StreamId::from_slice(&[7; 32]).unwrap()
}

/// The longest peer id there is: a SHA-256-coded multihash with a 64-byte digest (66 bytes).
fn longest_peer(fill: u8) -> PeerId {
    let id = PeerId::from_multihash(Multihash::wrap(SHA256, &[fill; 64]).unwrap()).unwrap();
    assert_eq!(id.to_bytes().len(), 66);
    id
}

fn segment(bytes: u32) -> SegmentInfo {
    SegmentInfo { seq: 42, bytes }
}

// ---- Strategies.

fn peer() -> impl Strategy<Value = PeerId> {
    prop_oneof![
        // Ed25519 keys (inline identity multihash), as real peers have.
        any::<[u8; 32]>().prop_map(|seed| Keypair::ed25519_from_bytes(seed).unwrap().public().to_peer_id()),
        // SHA-256 hashed keys (RSA and other long keys).
        any::<[u8; 32]>().prop_map(|d| PeerId::from_multihash(Multihash::wrap(SHA256, &d).unwrap()).unwrap()),
        // Identity multihashes of any allowed length.
        proptest::collection::vec(any::<u8>(), 0..=42)
            .prop_map(|d| PeerId::from_multihash(Multihash::wrap(IDENTITY, &d).unwrap()).unwrap()),
    ]
}

fn room() -> impl Strategy<Value = Option<(PeerId, u8)>> {
    proptest::option::of((peer(), any::<u8>()))
}

fn advert() -> impl Strategy<Value = Box<Advert<PeerId>>> {
    (
        proptest::collection::vec(peer(), 0..=MAX_DEPTH),
        any::<(bool, bool, bool, bool)>(),
        (0..=MAX_CHILD_SLOTS, 0..=MAX_CHILD_SLOTS),
        any::<(Option<u64>, Option<u64>)>(),
        (room(), room(), room(), room()),
        (0..=MAX_FREE_ADVERTISED, 0..=MAX_FREE_ADVERTISED),
    )
        .prop_map(
            |(
                path,
                (rooted, backbone, forwards, reachable),
                (spare_slots, leaf_children),
                (newest, oldest),
                (room, backbone_room, any_room, fringe),
                (free, any_free),
            )| {
                Box::new(Advert {
                    path,
                    rooted,
                    backbone,
                    forwards,
                    spare_slots,
                    leaf_children,
                    reachable,
                    newest,
                    oldest,
                    room,
                    backbone_room,
                    free,
                    any_room,
                    any_free,
                    fringe,
                })
            },
        )
}

fn attach() -> impl Strategy<Value = AttachRequest> {
    (any::<(u64, u128, bool, bool, u8, bool, u64)>(), 0..=MAX_CHILD_SLOTS).prop_map(
        |((from_seq, held, reachable, stable, max_depth, orphan, nonce), slots)| AttachRequest {
            from_seq,
            held,
            reachable,
            slots,
            stable,
            max_depth,
            orphan,
            nonce,
        },
    )
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::Busy),
        Just(Refusal::Missing),
        Just(Refusal::NotBackbone),
        Just(Refusal::Loop),
    ]
}

fn segment_info() -> impl Strategy<Value = SegmentInfo> {
    (any::<u64>(), 0..=MAX_SEGMENT_SIZE as u32).prop_map(|(seq, bytes)| SegmentInfo { seq, bytes })
}

/// A segment and the index of one of its blocks.
fn segment_and_block() -> impl Strategy<Value = (SegmentInfo, u16)> {
    segment_info().prop_flat_map(|s| (Just(s), 0..s.blocks(BLOCK_SIZE as u32)))
}

fn message() -> impl Strategy<Value = Message<PeerId>> {
    prop_oneof![
        Just(Message::Probe),
        (
            advert(),
            proptest::collection::vec((peer(), any::<bool>()), 0..=MAX_EXCHANGED_PEERS)
        )
            .prop_map(|(advert, peers)| Message::ProbeReply { advert, peers }),
        attach().prop_map(Message::Attach),
        (peer(), attach(), any::<u8>()).prop_map(|(joiner, request, hops)| Message::Place { joiner, request, hops }),
        (advert(), any::<u64>()).prop_map(|(advert, nonce)| Message::Accepted { advert, nonce }),
        (refusal(), any::<u64>()).prop_map(|(reason, nonce)| Message::Rejected { reason, nonce }),
        Just(Message::Detach),
        Just(Message::Recruit),
        peer().prop_map(|try_instead| Message::Displaced { try_instead }),
        advert().prop_map(|advert| Message::Update { advert }),
        advert().prop_map(|advert| Message::MeshJoin { advert }),
        (any::<bool>(), advert()).prop_map(|(accepted, advert)| Message::MeshReply { accepted, advert }),
        Just(Message::MeshLeave),
        peer().prop_map(|parent| Message::Withheld { parent }),
        (segment_info(), any::<u128>()).prop_map(|(segment, blocks)| Message::Have { segment, blocks }),
        (any::<u64>(), any::<u128>()).prop_map(|(seq, blocks)| Message::Skip { seq, blocks }),
        segment_and_block().prop_map(|(segment, block)| Message::Want { segment, block }),
        (any::<u64>(), 0..MAX_BLOCKS, refusal()).prop_map(|(seq, block, reason)| Message::Refused {
            seq,
            block,
            reason
        }),
    ]
}

fn block_frame(stream: StreamId, segment: SegmentInfo, index: u16, push: bool, fill: u8) -> Frame {
    let len = segment.block_bytes(index, BLOCK_SIZE as u32) as usize;
    Frame::Block {
        stream,
        segment,
        index,
        push,
        data: (0..len).map(|i| fill.wrapping_add(i as u8)).collect::<Vec<u8>>().into(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn control_frames_round_trip(id in any::<[u8; 32]>(), message in message()) {
        let frame = Frame::Control { stream: StreamId::from_slice(&id).unwrap(), message };
        let bytes = frame.encode();
        prop_assert!(bytes.len() <= 4096, "a control frame of {} bytes", bytes.len());
        prop_assert_eq!(Frame::decode(&bytes).unwrap(), frame.clone());
        prop_assert_eq!(Frame::decode_bytes(bytes.into()).unwrap(), frame);
    }

    #[test]
    fn block_frames_round_trip(
        id in any::<[u8; 32]>(),
        (segment, index) in segment_and_block(),
        push in any::<bool>(),
        fill in any::<u8>(),
    ) {
        let frame = block_frame(StreamId::from_slice(&id).unwrap(), segment, index, push, fill);
        let bytes = frame.encode();
        prop_assert!(bytes.len() <= MAX_FRAME_SIZE);
        prop_assert_eq!(*frame.stream().as_bytes(), id);
        prop_assert_eq!(Frame::decode(&bytes).unwrap(), frame.clone());
        prop_assert_eq!(Frame::decode_bytes(bytes.into()).unwrap(), frame);
    }
}

#[test]
fn protocol_name_is_versioned() {
    assert_eq!(PROTOCOL_NAME, "/streamrp2p/treemesh/1.0.0");
}

#[test]
fn the_largest_block_frame_fits_and_so_does_the_largest_control_frame() {
    let seg = SegmentInfo {
        seq: u64::MAX,
        bytes: MAX_SEGMENT_SIZE as u32,
    };
    let frame = block_frame(stream(), seg, MAX_BLOCKS - 1, true, 0);
    let bytes = frame.encode();
    assert!(
        bytes.len() - BLOCK_SIZE <= 64,
        "block header of {} bytes",
        bytes.len() - BLOCK_SIZE
    );
    assert_eq!(Frame::decode(&bytes).unwrap(), frame);

    let room = Some((longest_peer(1), u8::MAX));
    let advert = Box::new(Advert {
        path: (0..MAX_DEPTH).map(|i| longest_peer(i as u8)).collect(),
        rooted: true,
        backbone: true,
        forwards: true,
        spare_slots: MAX_CHILD_SLOTS,
        leaf_children: MAX_CHILD_SLOTS,
        reachable: true,
        newest: Some(u64::MAX),
        oldest: Some(u64::MAX),
        room,
        backbone_room: room,
        free: MAX_FREE_ADVERTISED,
        any_room: room,
        any_free: MAX_FREE_ADVERTISED,
        fringe: room,
    });
    let frame = Frame::Control {
        stream: stream(),
        message: Message::ProbeReply {
            advert,
            peers: (0..MAX_EXCHANGED_PEERS)
                .map(|i| (longest_peer(i as u8), true))
                .collect(),
        },
    };
    let bytes = frame.encode();
    assert!(bytes.len() < 4096, "a control frame of {} bytes", bytes.len());
    assert_eq!(Frame::decode(&bytes).unwrap(), frame);
}

#[test]
fn decode_bytes_does_not_copy_block_data() {
    let frame = block_frame(stream(), segment(3 * BLOCK_SIZE as u32), 1, false, 9);
    let buffer = Bytes::from(frame.encode());
    let range = buffer.as_ptr_range();
    let Frame::Block { data, .. } = Frame::decode_bytes(buffer.clone()).unwrap() else {
        panic!("not a block");
    };
    assert!(range.contains(&data.as_ptr()) && data.len() == BLOCK_SIZE);
}

// ---- Rejections: each test breaks exactly one limit.

fn control(message: Message<PeerId>) -> Vec<u8> {
    Frame::Control {
        stream: stream(),
        message,
    }
    .encode()
}

/// A frame holding a raw control message, for values the typed [`Message`] cannot hold.
fn raw_control(kind: Option<pc::Kind>) -> Vec<u8> {
    proto::TreeMeshFrame {
        stream_id: stream().as_bytes().to_vec().into(),
        kind: Some(tree_mesh_frame::Kind::Control(proto::TreeMeshControl { kind })),
    }
    .encode_to_vec()
}

fn raw_block(segment_bytes: u32, index: u32, len: usize) -> Vec<u8> {
    proto::TreeMeshFrame {
        stream_id: stream().as_bytes().to_vec().into(),
        kind: Some(tree_mesh_frame::Kind::Block(proto::TreeMeshBlock {
            seq: 1,
            segment_bytes,
            index,
            push: true,
            data: vec![0; len].into(),
        })),
    }
    .encode_to_vec()
}

fn small_advert() -> Box<Advert<PeerId>> {
    Box::new(Advert {
        path: vec![PeerId::random(), PeerId::random()],
        rooted: true,
        backbone: false,
        forwards: true,
        spare_slots: 2,
        leaf_children: 1,
        reachable: true,
        newest: Some(10),
        oldest: Some(4),
        room: Some((PeerId::random(), 1)),
        backbone_room: None,
        free: 3,
        any_room: None,
        any_free: 3,
        fringe: None,
    })
}

/// The advert's wire form, to break one field of.
fn raw_advert() -> pc::Advert {
    let bytes = control(Message::Update { advert: small_advert() });
    match proto::TreeMeshFrame::decode(&bytes[..]).unwrap().kind {
        Some(tree_mesh_frame::Kind::Control(proto::TreeMeshControl {
            kind: Some(pc::Kind::Update(pc::WithAdvert { advert: Some(a) })),
        })) => a,
        _ => unreachable!(),
    }
}

fn raw_update(advert: pc::Advert) -> Vec<u8> {
    raw_control(Some(pc::Kind::Update(pc::WithAdvert { advert: Some(advert) })))
}

fn raw_attach() -> pc::AttachRequest {
    pc::AttachRequest {
        from_seq: 3,
        held: Some(pc::Bitmap { lo: 1, hi: 0 }),
        reachable: true,
        slots: 4,
        stable: false,
        max_depth: 32,
        orphan: false,
        nonce: 7,
    }
}

fn out_of_range(result: Result<Frame, WireError>, field: &str, value: u64, max: u64) {
    match result {
        Err(WireError::OutOfRange {
            field: f,
            value: v,
            max: m,
        }) if f == field && v == value && m == max => {}
        other => panic!("expected `{field}` = {value} out of range (max {max}), got {other:?}"),
    }
}

#[test]
fn frames_over_the_size_limit_are_refused() {
    // A valid block frame padded with an unknown field (which decoders skip) to exactly the limit decodes...
    let frame = block_frame(stream(), segment(BLOCK_SIZE as u32), 0, true, 1);
    let padded = |total: usize| {
        let mut bytes = frame.encode();
        // Field 15, length-delimited, with a two-byte length.
        let pad = total - bytes.len() - 3;
        assert!((128..16384).contains(&pad));
        bytes.extend_from_slice(&[15 << 3 | 2, (pad as u8) | 0x80, (pad >> 7) as u8]);
        bytes.resize(total, 0);
        bytes
    };
    assert_eq!(Frame::decode(&padded(MAX_FRAME_SIZE)).unwrap(), frame);
    // ...and one byte more does not, however valid.
    for result in [
        Frame::decode(&padded(MAX_FRAME_SIZE + 1)),
        Frame::decode_bytes(padded(MAX_FRAME_SIZE + 1).into()),
    ] {
        assert!(matches!(
            result,
            Err(WireError::TooLarge { size, max: MAX_FRAME_SIZE }) if size == MAX_FRAME_SIZE + 1
        ));
    }
}

#[test]
fn paths_longer_than_max_depth_are_refused() {
    let mut advert = small_advert();
    advert.path = (0..MAX_DEPTH).map(|_| PeerId::random()).collect();
    assert!(Frame::decode(&control(Message::Update { advert: advert.clone() })).is_ok());
    advert.path.push(PeerId::random());
    for message in [
        Message::Update { advert: advert.clone() },
        Message::Accepted {
            advert: advert.clone(),
            nonce: 1,
        },
        Message::MeshJoin { advert: advert.clone() },
        Message::MeshReply {
            accepted: true,
            advert: advert.clone(),
        },
        Message::ProbeReply { advert, peers: vec![] },
    ] {
        assert!(matches!(
            Frame::decode(&control(message)),
            Err(WireError::TooMany { field: "path", count, max: MAX_DEPTH }) if count == MAX_DEPTH + 1
        ));
    }
}

#[test]
fn more_than_max_exchanged_peers_are_refused() {
    let mut peers: Vec<_> = (0..MAX_EXCHANGED_PEERS).map(|_| (PeerId::random(), true)).collect();
    let reply = |peers| {
        control(Message::ProbeReply {
            advert: small_advert(),
            peers,
        })
    };
    assert!(Frame::decode(&reply(peers.clone())).is_ok());
    peers.push((PeerId::random(), false));
    assert!(matches!(
        Frame::decode(&reply(peers)),
        Err(WireError::TooMany { field: "peers", count, max: MAX_EXCHANGED_PEERS }) if count == MAX_EXCHANGED_PEERS + 1
    ));
}

#[test]
fn invalid_peer_ids_are_refused() {
    let good = Bytes::from(PeerId::random().to_bytes());
    // Not a multihash, empty, trailing bytes, a hash code peer ids do not use, an inline key over 42 bytes.
    let bad: Vec<Bytes> = vec![
        vec![0xff; 5].into(),
        Bytes::new(),
        [&good[..], &[0][..]].concat().into(),
        Multihash::<64>::wrap(0x13, &[1; 64]).unwrap().to_bytes().into(),
        Multihash::<64>::wrap(IDENTITY, &[1; 43]).unwrap().to_bytes().into(),
    ];
    for bad in bad {
        let room = |peer: &Bytes| {
            Some(pc::Room {
                peer: peer.clone(),
                below: 1,
            })
        };
        let mut frames = vec![
            raw_control(Some(pc::Kind::Displaced(pc::Displaced {
                try_instead: bad.clone(),
            }))),
            raw_control(Some(pc::Kind::Place(pc::Place {
                joiner: bad.clone(),
                request: Some(raw_attach()),
                hops: 1,
            }))),
            raw_control(Some(pc::Kind::ProbeReply(pc::ProbeReply {
                advert: Some(raw_advert()),
                peers: vec![pc::ExchangedPeer {
                    peer: bad.clone(),
                    reachable: true,
                }],
            }))),
        ];
        let mut a = raw_advert();
        a.path.push(bad.clone());
        frames.push(raw_update(a));
        for which in 0..4 {
            let mut a = raw_advert();
            *[&mut a.room, &mut a.backbone_room, &mut a.any_room, &mut a.fringe][which] = room(&bad);
            frames.push(raw_update(a));
        }
        for frame in frames {
            let result = Frame::decode(&frame);
            assert!(matches!(result, Err(WireError::PeerId(_))), "{bad:?}: {result:?}");
        }
    }
    // The same frames with a good peer id decode.
    assert!(
        Frame::decode(&raw_control(Some(pc::Kind::Displaced(pc::Displaced {
            try_instead: good
        }))))
        .is_ok()
    );
}

#[test]
fn segments_over_max_segment_size_are_refused() {
    let max = MAX_SEGMENT_SIZE as u64;
    let too_big = MAX_SEGMENT_SIZE as u32 + 1;
    out_of_range(
        Frame::decode(&raw_block(too_big, 0, BLOCK_SIZE)),
        "segment.bytes",
        max + 1,
        max,
    );
    out_of_range(
        Frame::decode(&control(Message::Have {
            segment: segment(too_big),
            blocks: 1,
        })),
        "segment.bytes",
        max + 1,
        max,
    );
    out_of_range(
        Frame::decode(&control(Message::Want {
            segment: segment(too_big),
            block: 0,
        })),
        "segment.bytes",
        max + 1,
        max,
    );
    // A segment of u32::MAX bytes has more than u16::MAX blocks: refused, not wrapped around.
    out_of_range(
        Frame::decode(&raw_block(u32::MAX, 0, BLOCK_SIZE)),
        "segment.bytes",
        u32::MAX.into(),
        max,
    );
    assert!(Frame::decode(&raw_block(MAX_SEGMENT_SIZE as u32, 127, BLOCK_SIZE)).is_ok());
}

#[test]
fn block_indices_beyond_the_segment_are_refused() {
    // Three blocks, the last of 10 bytes.
    let bytes = 2 * BLOCK_SIZE as u32 + 10;
    assert!(Frame::decode(&raw_block(bytes, 2, 10)).is_ok());
    out_of_range(Frame::decode(&raw_block(bytes, 3, 0)), "index", 3, 2);
    out_of_range(Frame::decode(&raw_block(bytes, 70_000, 0)), "index", 70_000, 2);
    // A full segment has MAX_BLOCKS blocks.
    out_of_range(
        Frame::decode(&raw_block(MAX_SEGMENT_SIZE as u32, MAX_BLOCKS.into(), 0)),
        "index",
        MAX_BLOCKS.into(),
        u64::from(MAX_BLOCKS) - 1,
    );
    // A pull of a block the segment does not have.
    out_of_range(
        Frame::decode(&control(Message::Want {
            segment: segment(bytes),
            block: 3,
        })),
        "block",
        3,
        2,
    );
    out_of_range(
        Frame::decode(&raw_control(Some(pc::Kind::Want(pc::Want {
            segment: Some(pc::Segment { seq: 1, bytes }),
            block: 1 << 16,
        })))),
        "block",
        1 << 16,
        2,
    );
    // A refusal of a block no segment has.
    out_of_range(
        Frame::decode(&control(Message::Refused {
            seq: 1,
            block: MAX_BLOCKS,
            reason: Refusal::Busy,
        })),
        "block",
        MAX_BLOCKS.into(),
        u64::from(MAX_BLOCKS) - 1,
    );
    // An empty segment is one empty block.
    assert!(Frame::decode(&raw_block(0, 0, 0)).is_ok());
    out_of_range(Frame::decode(&raw_block(0, 1, 0)), "index", 1, 0);
}

#[test]
fn block_data_of_the_wrong_length_is_refused() {
    let bytes = 2 * BLOCK_SIZE as u32 + 10;
    for (index, len, expected) in [
        (0, BLOCK_SIZE - 1, BLOCK_SIZE as u32),
        (1, 0, BLOCK_SIZE as u32),
        (2, 11, 10),
        (2, 9, 10),
        (2, BLOCK_SIZE, 10),
    ] {
        let result = Frame::decode(&raw_block(bytes, index, len));
        assert!(
            matches!(result, Err(WireError::BlockLength { index: i, len: l, expected: e })
                if u32::from(i) == index && l == len && e == expected),
            "{index} {len}: {result:?}"
        );
    }
    // One byte more than a full block.
    let result = Frame::decode(&raw_block(MAX_SEGMENT_SIZE as u32, 0, BLOCK_SIZE + 1));
    assert!(matches!(result, Err(WireError::BlockLength { .. })), "{result:?}");
}

#[test]
fn u8_fields_out_of_range_are_refused() {
    let max = u64::from(u8::MAX);
    let place = |hops, max_depth| {
        raw_control(Some(pc::Kind::Place(pc::Place {
            joiner: PeerId::random().to_bytes().into(),
            request: Some(pc::AttachRequest {
                max_depth,
                ..raw_attach()
            }),
            hops,
        })))
    };
    assert!(Frame::decode(&place(255, 255)).is_ok());
    out_of_range(Frame::decode(&place(256, 1)), "hops", 256, max);
    out_of_range(Frame::decode(&place(1, 256)), "max_depth", 256, max);
    out_of_range(
        Frame::decode(&raw_control(Some(pc::Kind::Attach(pc::AttachRequest {
            max_depth: u32::MAX,
            ..raw_attach()
        })))),
        "max_depth",
        u32::MAX.into(),
        max,
    );
    for (which, field) in ["room.below", "backbone_room.below", "any_room.below", "fringe.below"]
        .into_iter()
        .enumerate()
    {
        let with_below = |below| {
            let mut a = raw_advert();
            *[&mut a.room, &mut a.backbone_room, &mut a.any_room, &mut a.fringe][which] = Some(pc::Room {
                peer: PeerId::random().to_bytes().into(),
                below,
            });
            raw_update(a)
        };
        assert!(Frame::decode(&with_below(255)).is_ok());
        out_of_range(Frame::decode(&with_below(256)), field, 256, max);
    }
}

#[test]
fn free_counts_above_max_free_advertised_are_refused() {
    let max = u64::from(MAX_FREE_ADVERTISED);
    let mut advert = small_advert();
    advert.free = MAX_FREE_ADVERTISED;
    advert.any_free = MAX_FREE_ADVERTISED;
    assert!(Frame::decode(&control(Message::Update { advert: advert.clone() })).is_ok());
    let mut a = advert.clone();
    a.free += 1;
    out_of_range(
        Frame::decode(&control(Message::Update { advert: a })),
        "free",
        max + 1,
        max,
    );
    let mut a = advert;
    a.any_free += 1;
    out_of_range(
        Frame::decode(&control(Message::Accepted { advert: a, nonce: 2 })),
        "any_free",
        max + 1,
        max,
    );
    // Beyond a u8 too.
    let mut a = raw_advert();
    a.free = 256;
    out_of_range(Frame::decode(&raw_update(a)), "free", 256, max);
}

#[test]
fn unknown_refusals_are_refused() {
    for value in [0, 5, -1, i32::MAX] {
        let rejected = raw_control(Some(pc::Kind::Rejected(pc::Rejected {
            reason: value,
            nonce: 0,
        })));
        let refused = raw_control(Some(pc::Kind::Refused(pc::Refused {
            seq: 1,
            block: 0,
            reason: value,
        })));
        for frame in [rejected, refused] {
            let result = Frame::decode(&frame);
            assert!(
                matches!(result, Err(WireError::UnknownEnum { field: "reason", value: v }) if v == value),
                "{value}: {result:?}"
            );
        }
    }
}

#[test]
fn missing_kinds_and_sub_messages_are_refused() {
    let missing = |bytes: Vec<u8>, field: &str| {
        let result = Frame::decode(&bytes);
        assert!(
            matches!(result, Err(WireError::MissingField(f)) if f == field),
            "{field}: {result:?}"
        );
    };
    missing(
        proto::TreeMeshFrame {
            stream_id: stream().as_bytes().to_vec().into(),
            kind: None,
        }
        .encode_to_vec(),
        "kind",
    );
    missing(raw_control(None), "control.kind");
    missing(
        raw_control(Some(pc::Kind::Update(pc::WithAdvert { advert: None }))),
        "advert",
    );
    missing(
        raw_control(Some(pc::Kind::ProbeReply(pc::ProbeReply {
            advert: None,
            peers: vec![],
        }))),
        "advert",
    );
    missing(
        raw_control(Some(pc::Kind::Have(pc::Have {
            segment: None,
            blocks: Some(pc::Bitmap { lo: 1, hi: 0 }),
        }))),
        "segment",
    );
    missing(
        raw_control(Some(pc::Kind::Want(pc::Want {
            segment: None,
            block: 0,
        }))),
        "segment",
    );
    missing(
        raw_control(Some(pc::Kind::Skip(pc::Skip { seq: 1, blocks: None }))),
        "blocks",
    );
    missing(
        raw_control(Some(pc::Kind::Place(pc::Place {
            joiner: PeerId::random().to_bytes().into(),
            request: None,
            hops: 0,
        }))),
        "request",
    );
    missing(
        raw_control(Some(pc::Kind::Attach(pc::AttachRequest {
            held: None,
            ..raw_attach()
        }))),
        "blocks",
    );
}

#[test]
fn stream_ids_of_the_wrong_length_are_refused() {
    let mut frame = proto::TreeMeshFrame::decode(&control(Message::Probe)[..]).unwrap();
    frame.stream_id = vec![7; 31].into();
    assert!(matches!(
        Frame::decode(&frame.encode_to_vec()),
        Err(WireError::StreamId(31))
    ));
}

#[test]
fn bitmaps_keep_all_128_bits() {
    for blocks in [0, 1, 1 << 63, 1 << 64, 1 << 127, u128::MAX] {
        let have = Message::Have {
            segment: segment(1),
            blocks,
        };
        let skip = Message::Skip { seq: 9, blocks };
        for message in [have, skip] {
            let frame = Frame::Control {
                stream: stream(),
                message,
            };
            assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
    }
}
