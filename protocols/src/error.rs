use crate::manifest::ManifestError;
use crate::stream::StreamInfoError;

/// Why bytes received from a peer could not be decoded into a valid message.
///
/// Every variant means the sender broke the protocol; the node penalises it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The message is larger than its protocol allows.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the message received.
        size: usize,
        /// The protocol's limit.
        max: usize,
    },
    /// The bytes are not a valid protobuf encoding of the expected message.
    #[error("malformed protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A required field is absent.
    #[error("required field `{0}` is missing")]
    MissingField(&'static str),
    /// A list holds more items than the protocol allows.
    #[error("field `{field}` holds {count} items, more than the limit of {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// Items received.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A CID field does not hold a valid CID.
    #[error("invalid CID: {0}")]
    Cid(#[from] cid::Error),
    /// A stream id field is not 32 bytes.
    #[error("invalid stream id: expected 32 bytes, got {0}")]
    StreamId(usize),
    /// The stream info is malformed or its signature does not verify.
    #[error(transparent)]
    StreamInfo(#[from] StreamInfoError),
    /// A manifest entry is malformed or its signature does not verify.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A peer id field does not hold valid libp2p peer id bytes.
    #[error("invalid peer id: {0}")]
    PeerId(#[from] libp2p_identity::ParseError),
    /// A number is above the largest value its field allows (the range of a narrower type, a protocol limit, or the
    /// last block of the segment it refers to).
    #[error("field `{field}` is {value}, above its maximum of {max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value received.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// An enum field holds a value the protocol does not define.
    #[error("field `{field}` holds the unknown value {value}")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value received.
        value: i32,
    },
    /// A block's bytes are not as many as its segment's size says.
    #[error("block {index} holds {len} bytes, its segment says {expected}")]
    BlockLength {
        /// The block's index in its segment.
        index: u16,
        /// Bytes received.
        len: usize,
        /// Bytes the block has, given its segment's size.
        expected: u32,
    },
}

impl WireError {
    /// What sending these bytes says of the sender: an entry or stream info that does not verify is forged; anything
    /// else is malformed.
    pub fn offence(&self) -> crate::score::Offence {
        match self {
            WireError::StreamInfo(_) | WireError::Manifest(_) => crate::score::Offence::ForgedEntry,
            _ => crate::score::Offence::Malformed,
        }
    }
}

/// Fails with [`WireError::TooLarge`] when `size` exceeds `max`.
pub(crate) fn check_size(size: usize, max: usize) -> Result<(), WireError> {
    if size > max {
        return Err(WireError::TooLarge { size, max });
    }
    Ok(())
}

/// Fails with [`WireError::TooMany`] when `count` exceeds `max`.
pub(crate) fn check_count(field: &'static str, count: usize, max: usize) -> Result<(), WireError> {
    if count > max {
        return Err(WireError::TooMany { field, count, max });
    }
    Ok(())
}
