//! The chunk protocol, `/streamrp2p/chunk/1.0.0`: one request and one response per stream.
//!
//! A peer asks for one block by its CID and gets its bytes or "don't have"; or it asks for a stream's manifest
//! entries from some sequence number on and gets the signed stream info, the signed entries and the sequence
//! numbers the responder holds whole. Each message is one protobuf, written whole, after which the writer closes its
//! half of the stream, so no length prefix is needed; a reader stops at [`MAX_REQUEST_SIZE`] or
//! [`MAX_RESPONSE_SIZE`] bytes. Block bytes are checked against their CID by the caller
//! ([`crate::segment::SegmentAssembly::insert`]); manifest entries are verified here, while decoding.

use bytes::Bytes;
use cid::Cid;
use prost::Message;

use crate::WireError;
use crate::error::{check_count, check_size};
use crate::manifest::SignedManifestEntry;
use crate::proto::{self, chunk_request, chunk_response};
use crate::segment::BLOCK_SIZE;
use crate::stream::{SignedStreamInfo, StreamId};

/// The protocol's name, versioned.
pub const PROTOCOL_NAME: &str = "/streamrp2p/chunk/1.0.0";
/// Largest request: a CID or a stream id with a sequence number fit in far less.
pub const MAX_REQUEST_SIZE: usize = 1024;
/// Largest response: a manifest response is filled up to [`MANIFEST_RESPONSE_BUDGET`]; a block is at most [`BLOCK_SIZE`].
pub const MAX_RESPONSE_SIZE: usize = 1024 * 1024;
/// Bytes of entries a responder puts in one manifest response, so that it stays below [`MAX_RESPONSE_SIZE`].
pub const MANIFEST_RESPONSE_BUDGET: usize = 768 * 1024;
/// Most sequence numbers in a manifest response's `have` list.
pub const MAX_HAVE: usize = 1024;
/// Most entries in one manifest response.
pub const MAX_ENTRIES: usize = 1024;

/// A chunk protocol request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkRequest {
    /// The block with this CID.
    Block(Cid),
    /// The manifest entries of `stream` with a sequence number at or above `since_seq`.
    Manifest {
        /// The stream.
        stream: StreamId,
        /// First sequence number wanted.
        since_seq: u64,
    },
}

/// A chunk protocol response.
#[derive(Clone, Debug, PartialEq, Eq)]
// Messages live one at a time between decode and handling; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum ChunkResponse {
    /// The block's bytes, unverified until the caller checks them against the CID it asked for.
    Block(Bytes),
    /// The responder does not hold what was asked for.
    DontHave,
    /// The requester is over its quota here (see [`crate::quota::limits`]): ask later, or elsewhere.
    Busy,
    /// A stream's manifest, verified.
    Manifest(ManifestResponse),
}

/// A stream's signed manifest, as one peer holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestResponse {
    /// The stream's signed description.
    pub info: SignedStreamInfo,
    /// Signed entries, verified against `info`.
    pub entries: Vec<SignedManifestEntry>,
    /// Sequence numbers of the segments the responder holds whole.
    pub have: Vec<u64>,
}

impl ChunkRequest {
    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        let kind = match self {
            Self::Block(cid) => chunk_request::Kind::Block(proto::BlockRequest {
                cid: cid.to_bytes().into(),
            }),
            Self::Manifest { stream, since_seq } => chunk_request::Kind::Manifest(proto::ManifestRequest {
                stream_id: stream.as_bytes().to_vec().into(),
                since_seq: *since_seq,
            }),
        };
        proto::ChunkRequest { kind: Some(kind) }.encode_to_vec()
    }

    /// Decodes a request received from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_REQUEST_SIZE)?;
        match proto::ChunkRequest::decode(bytes)?.kind {
            Some(chunk_request::Kind::Block(b)) => Ok(Self::Block(Cid::try_from(&b.cid[..])?)),
            Some(chunk_request::Kind::Manifest(m)) => Ok(Self::Manifest {
                stream: StreamId::from_slice(&m.stream_id)?,
                since_seq: m.since_seq,
            }),
            None => Err(WireError::MissingField("kind")),
        }
    }
}

impl ChunkResponse {
    /// Encodes the response.
    pub fn encode(&self) -> Vec<u8> {
        let kind = match self {
            Self::Block(data) => chunk_response::Kind::Block(data.clone()),
            Self::DontHave => chunk_response::Kind::DontHave(proto::DontHave {}),
            Self::Busy => chunk_response::Kind::Busy(proto::Busy {}),
            Self::Manifest(m) => chunk_response::Kind::Manifest(proto::ManifestResponse {
                info: Some(m.info.to_proto()),
                entries: m.entries.iter().map(SignedManifestEntry::to_proto).collect(),
                have: m.have.clone(),
            }),
        };
        proto::ChunkResponse { kind: Some(kind) }.encode_to_vec()
    }

    /// Decodes a response received from a peer, verifying every manifest entry in it.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_RESPONSE_SIZE)?;
        match proto::ChunkResponse::decode(bytes)?.kind {
            Some(chunk_response::Kind::Block(data)) => {
                check_size(data.len(), BLOCK_SIZE)?;
                Ok(Self::Block(data))
            }
            Some(chunk_response::Kind::DontHave(_)) => Ok(Self::DontHave),
            Some(chunk_response::Kind::Busy(_)) => Ok(Self::Busy),
            Some(chunk_response::Kind::Manifest(m)) => {
                check_count("entries", m.entries.len(), MAX_ENTRIES)?;
                check_count("have", m.have.len(), MAX_HAVE)?;
                let info = SignedStreamInfo::from_proto(m.info.ok_or(WireError::MissingField("info"))?)?;
                let entries = m
                    .entries
                    .into_iter()
                    .map(|e| SignedManifestEntry::verify(e, info.info()))
                    .collect::<Result<_, _>>()?;
                Ok(Self::Manifest(ManifestResponse {
                    info,
                    entries,
                    have: m.have,
                }))
            }
            None => Err(WireError::MissingField("kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p_identity::Keypair;

    use super::*;
    use crate::manifest::ManifestEntry;
    use crate::segment::split;

    #[test]
    fn requests_round_trip() {
        let cid = crate::segment::block_cid(b"x");
        for req in [
            ChunkRequest::Block(cid),
            ChunkRequest::Manifest {
                stream: StreamId::from_slice(&[9; 32]).unwrap(),
                since_seq: 42,
            },
        ] {
            assert_eq!(ChunkRequest::decode(&req.encode()).unwrap(), req);
        }
    }

    #[test]
    fn manifest_response_round_trips_and_verifies() {
        let key = Keypair::generate_ed25519();
        let info = SignedStreamInfo::sign(&key, "s", "http://o").unwrap();
        let seg = split(vec![3u8; 10].into()).unwrap();
        let entry = ManifestEntry::new(info.id(), 5, Duration::from_secs(2), &seg, 0);
        let signed = SignedManifestEntry::sign(&key, entry).unwrap();
        let resp = ChunkResponse::Manifest(ManifestResponse {
            info: info.clone(),
            entries: vec![signed],
            have: vec![5],
        });
        assert_eq!(ChunkResponse::decode(&resp.encode()).unwrap(), resp);

        let other = Keypair::generate_ed25519();
        let seg_entry = ManifestEntry::new(info.id(), 6, Duration::from_secs(2), &seg, 0);
        let forged = SignedManifestEntry::sign(&other, seg_entry).unwrap();
        let bad = ChunkResponse::Manifest(ManifestResponse {
            info,
            entries: vec![forged],
            have: vec![],
        });
        assert!(ChunkResponse::decode(&bad.encode()).is_err());
    }

    #[test]
    fn oversized_messages_are_refused() {
        assert!(matches!(
            ChunkRequest::decode(&[0; MAX_REQUEST_SIZE + 1]),
            Err(WireError::TooLarge { .. })
        ));
        let big = ChunkResponse::Block(vec![0; BLOCK_SIZE + 1].into()).encode();
        assert!(matches!(ChunkResponse::decode(&big), Err(WireError::TooLarge { .. })));
    }
}
