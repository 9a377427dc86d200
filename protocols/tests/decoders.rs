//! Every decoder of a wire message survives arbitrary bytes, and valid messages with bytes flipped: it returns an
//! error or a message, never panics.

use std::time::Duration;

use proptest::prelude::*;
use streamrp2p_protocols::Keypair;
use streamrp2p_protocols::chunk::{ChunkRequest, ChunkResponse, ManifestResponse};
use streamrp2p_protocols::control::ControlMessage;
use streamrp2p_protocols::manifest::{ManifestEntry, SignedManifestEntry};
use streamrp2p_protocols::segment::split;
use streamrp2p_protocols::stream::SignedStreamInfo;
use streamrp2p_protocols::treemesh::wire::Frame;
use streamrp2p_protocols::treemesh::{Advert, AttachRequest, Message, Refusal, SegmentInfo};

fn decode_all(bytes: &[u8]) {
    let _ = ChunkRequest::decode(bytes);
    let _ = ChunkResponse::decode(bytes);
    let _ = ControlMessage::decode(bytes);
    let _ = Frame::decode(bytes);
    let _ = Frame::decode_bytes(bytes.to_vec().into());
}

/// Valid tree-mesh frames: the messages with the most fields, and blocks.
fn valid_frames(info: &SignedStreamInfo) -> Vec<Frame> {
    let peer = || Keypair::generate_ed25519().public().to_peer_id();
    let advert = Box::new(Advert {
        path: vec![peer(), peer(), peer()],
        rooted: true,
        backbone: true,
        forwards: true,
        spare_slots: 3,
        leaf_children: 2,
        reachable: true,
        newest: Some(12),
        oldest: Some(3),
        room: Some((peer(), 2)),
        backbone_room: Some((peer(), 1)),
        free: 7,
        any_room: Some((peer(), 3)),
        any_free: 9,
        fringe: Some((peer(), 1)),
    });
    let request = AttachRequest {
        from_seq: 12,
        held: 0b1011,
        reachable: true,
        slots: 4,
        stable: true,
        max_depth: 6,
        orphan: true,
        nonce: 0x5eed,
    };
    let segment = SegmentInfo {
        seq: 12,
        bytes: 200_000,
    };
    let control = |message| Frame::Control {
        stream: info.id(),
        message,
    };
    vec![
        control(Message::ProbeReply {
            advert,
            peers: vec![(peer(), true), (peer(), false)],
        }),
        control(Message::Place {
            joiner: peer(),
            request,
            hops: 2,
        }),
        control(Message::Have {
            segment,
            blocks: 1 << 70 | 0b111,
        }),
        control(Message::Want { segment, block: 3 }),
        control(Message::Refused {
            seq: 12,
            block: 1,
            reason: Refusal::NotBackbone,
        }),
        Frame::Block {
            stream: info.id(),
            segment,
            index: 3,
            push: true,
            data: vec![8; 200_000 - 3 * 65_536].into(),
        },
    ]
}

/// Valid encodings of every message kind, for mutation.
fn valid_messages() -> Vec<Vec<u8>> {
    let key = Keypair::generate_ed25519();
    let info = SignedStreamInfo::sign(&key, "live", "http://127.0.0.1:8080/streams/x").unwrap();
    let seg = split(vec![5u8; 600_000].into()).unwrap();
    let entry = SignedManifestEntry::sign(
        &key,
        ManifestEntry::new(info.id(), 7, Duration::from_secs(2), &seg, 1_700_000_000_000),
    )
    .unwrap();
    vec![
        ChunkRequest::Block(seg.blocks[0].0).encode(),
        ChunkRequest::Manifest {
            stream: info.id(),
            since_seq: 3,
        }
        .encode(),
        ChunkResponse::Block(seg.blocks[2].1.clone()).encode(),
        ChunkResponse::DontHave.encode(),
        ChunkResponse::Busy.encode(),
        ChunkResponse::Manifest(ManifestResponse {
            info: info.clone(),
            entries: vec![entry.clone()],
            have: vec![7],
        })
        .encode(),
        ControlMessage::Announce {
            info: info.clone(),
            entry,
        }
        .encode(),
        ControlMessage::Have {
            stream: info.id(),
            seqs: vec![1, 2, 3],
        }
        .encode(),
    ]
    .into_iter()
    .chain(valid_frames(&info).iter().map(Frame::encode))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        thread_local!(static VALID: Vec<Vec<u8>> = valid_messages());
        let mut bytes = VALID.with(|v| v[which.index(v.len())].clone());
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        decode_all(&bytes);
        decode_all(&bytes[..cut.index(bytes.len() + 1)]);
    }
}

#[test]
fn valid_messages_decode_to_what_was_encoded() {
    let v = valid_messages();
    for bytes in &v[0..2] {
        assert_eq!(ChunkRequest::decode(bytes).unwrap().encode(), *bytes);
    }
    for bytes in &v[2..6] {
        assert_eq!(ChunkResponse::decode(bytes).unwrap().encode(), *bytes);
    }
    for bytes in &v[6..8] {
        assert_eq!(ControlMessage::decode(bytes).unwrap().encode(), *bytes);
    }
    assert_eq!(v.len(), 14);
    for bytes in &v[8..] {
        assert_eq!(Frame::decode(bytes).unwrap().encode(), *bytes);
    }
}
