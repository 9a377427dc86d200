//! Control messages carried on a stream's gossipsub topic ([`crate::stream::StreamId::topic`]).
//!
//! Only small messages travel here, never segment bytes: the broadcaster's announcement of a new segment (its
//! signed manifest entry, with the signed stream info so that a receiver can verify it without asking anyone), and
//! viewers' HAVE messages saying which segments they hold whole and serve.

use prost::Message;

use crate::WireError;
use crate::error::{check_count, check_size};
use crate::manifest::SignedManifestEntry;
use crate::proto::{self, control_message};
use crate::stream::{SignedStreamInfo, StreamId};

/// Largest control message: gossipsub's default transmit limit.
pub const MAX_CONTROL_SIZE: usize = 64 * 1024;
/// Most sequence numbers in one HAVE.
pub const MAX_HAVE_SEQS: usize = 256;

/// A control message.
#[derive(Clone, Debug, PartialEq, Eq)]
// Messages live one at a time between decode and handling; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum ControlMessage {
    /// A new segment, from the broadcaster.
    Announce {
        /// The stream's signed description.
        info: SignedStreamInfo,
        /// The segment's signed entry, verified against `info`.
        entry: SignedManifestEntry,
    },
    /// The sender holds these segments of `stream` whole and serves them.
    Have {
        /// The stream.
        stream: StreamId,
        /// Sequence numbers held.
        seqs: Vec<u64>,
    },
}

impl ControlMessage {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let kind = match self {
            Self::Announce { info, entry } => control_message::Kind::Announce(proto::Announce {
                info: Some(info.to_proto()),
                entry: Some(entry.to_proto()),
            }),
            Self::Have { stream, seqs } => control_message::Kind::Have(proto::Have {
                stream_id: stream.as_bytes().to_vec().into(),
                seqs: seqs.clone(),
            }),
        };
        proto::ControlMessage { kind: Some(kind) }.encode_to_vec()
    }

    /// Decodes a message received from a peer; an announcement is verified against the info it carries.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        check_size(bytes.len(), MAX_CONTROL_SIZE)?;
        match proto::ControlMessage::decode(bytes)?.kind {
            Some(control_message::Kind::Announce(a)) => {
                let info = SignedStreamInfo::from_proto(a.info.ok_or(WireError::MissingField("info"))?)?;
                let entry = SignedManifestEntry::verify(a.entry.ok_or(WireError::MissingField("entry"))?, info.info())?;
                Ok(Self::Announce { info, entry })
            }
            Some(control_message::Kind::Have(h)) => {
                check_count("seqs", h.seqs.len(), MAX_HAVE_SEQS)?;
                Ok(Self::Have {
                    stream: StreamId::from_slice(&h.stream_id)?,
                    seqs: h.seqs,
                })
            }
            None => Err(WireError::MissingField("kind")),
        }
    }

    /// The stream the message is about.
    pub fn stream(&self) -> StreamId {
        match self {
            Self::Announce { info, .. } => info.id(),
            Self::Have { stream, .. } => *stream,
        }
    }
}
