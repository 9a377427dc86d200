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

fn decode_all(bytes: &[u8]) {
    let _ = ChunkRequest::decode(bytes);
    let _ = ChunkResponse::decode(bytes);
    let _ = ControlMessage::decode(bytes);
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
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        which in 0usize..7,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        thread_local!(static VALID: Vec<Vec<u8>> = valid_messages());
        let mut bytes = VALID.with(|v| v[which].clone());
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
    for bytes in &v[2..5] {
        assert_eq!(ChunkResponse::decode(bytes).unwrap().encode(), *bytes);
    }
    for bytes in &v[5..7] {
        assert_eq!(ControlMessage::decode(bytes).unwrap().encode(), *bytes);
    }
}
