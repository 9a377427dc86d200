//! Stream identity: the id viewers join by, and the broadcaster's signed description of the stream.
//!
//! A stream id is `sha2-256("streamrp2p/stream-id/v1" ‖ 0 ‖ broadcaster key ‖ 0 ‖ name)`. Knowing the id is enough
//! to check that a [`StreamInfo`] belongs to it, so nobody can claim another broadcaster's stream; the signature on
//! the info additionally authenticates the origin URL viewers fall back to.

use std::fmt;
use std::str::FromStr;

use libp2p_identity::{Keypair, PublicKey, SigningError};
use multihash_codetable::{Code, MultihashDigest};
use prost::Message;

use crate::proto;

/// Length of a stream id in bytes.
pub const STREAM_ID_LEN: usize = 32;
/// Longest stream name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest origin URL accepted, in bytes.
pub const MAX_ORIGIN_URL_LEN: usize = 2048;

const STREAM_ID_DOMAIN: &[u8] = b"streamrp2p/stream-id/v1";
const STREAM_INFO_DOMAIN: &[u8] = b"streamrp2p/stream-info/v1";

/// The id of a stream: 32 bytes derived from the broadcaster's public key and the stream's name.
///
/// Displayed and parsed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId([u8; STREAM_ID_LEN]);

impl StreamId {
    /// Derives the id of the stream `name` of the broadcaster holding `key`.
    pub fn derive(key: &PublicKey, name: &str) -> Self {
        let mut input = Vec::with_capacity(STREAM_ID_DOMAIN.len() + 64 + name.len());
        input.extend_from_slice(STREAM_ID_DOMAIN);
        input.push(0);
        input.extend_from_slice(&key.encode_protobuf());
        input.push(0);
        input.extend_from_slice(name.as_bytes());
        let digest = Code::Sha2_256.digest(&input);
        let mut id = [0; STREAM_ID_LEN];
        id.copy_from_slice(digest.digest());
        Self(id)
    }

    /// Reads an id from its 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, crate::WireError> {
        let id = bytes.try_into().map_err(|_| crate::WireError::StreamId(bytes.len()))?;
        Ok(Self(id))
    }

    /// The id's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; STREAM_ID_LEN] {
        &self.0
    }

    /// The gossipsub topic that carries this stream's control messages.
    pub fn topic(&self) -> String {
        format!("/streamrp2p/stream/1/{self}")
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

/// Why a text is not a stream id.
#[derive(Debug, thiserror::Error)]
#[error("a stream id is 64 hex digits (as `streamrp2p broadcast` prints it), got {0:?}")]
pub struct ParseStreamIdError(String);

impl FromStr for StreamId {
    type Err = ParseStreamIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0; STREAM_ID_LEN];
        hex::decode_to_slice(s.trim(), &mut id).map_err(|_| ParseStreamIdError(s.to_owned()))?;
        Ok(Self(id))
    }
}

/// What a broadcaster says about its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The broadcaster's public key: every manifest entry of the stream is signed by it.
    pub broadcaster: PublicKey,
    /// The stream's name, unique per broadcaster.
    pub name: String,
    /// HTTP base URL viewers may fall back to; segment `seq` is at `{origin_url}/{seq}.ts`.
    pub origin_url: String,
}

impl StreamInfo {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        StreamId::derive(&self.broadcaster, &self.name)
    }
}

/// Why a stream info was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamInfoError {
    /// The info's bytes are not a valid encoding.
    #[error("malformed stream info: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The broadcaster key is not a valid public key.
    #[error("stream info carries an invalid broadcaster key")]
    Key,
    /// The name is empty or too long.
    #[error("stream name must be 1 to {MAX_NAME_LEN} bytes, got {0}")]
    Name(usize),
    /// The origin URL is too long.
    #[error("origin URL must be at most {MAX_ORIGIN_URL_LEN} bytes, got {0}")]
    OriginUrl(usize),
    /// The signature is not the broadcaster's over the info.
    #[error("stream info signature does not verify against its broadcaster key")]
    Signature,
    /// The local key could not sign.
    #[error("could not sign stream info: {0}")]
    Signing(#[from] SigningError),
}

/// A [`StreamInfo`] with the broadcaster's signature, verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedStreamInfo {
    info: StreamInfo,
    id: StreamId,
    wire: proto::SignedStreamInfo,
}

impl SignedStreamInfo {
    /// Describes and signs the stream `name` of `keypair`'s owner.
    pub fn sign(keypair: &Keypair, name: &str, origin_url: &str) -> Result<Self, StreamInfoError> {
        let raw = proto::StreamInfo {
            broadcaster_key: keypair.public().encode_protobuf().into(),
            name: name.to_owned(),
            origin_url: origin_url.to_owned(),
        };
        check_info_fields(&raw)?;
        let bytes = raw.encode_to_vec();
        let signature = keypair.sign(&domain_message(STREAM_INFO_DOMAIN, &bytes))?;
        Self::from_proto(proto::SignedStreamInfo {
            info: bytes.into(),
            signature: signature.into(),
        })
    }

    /// Decodes and verifies a signed stream info received from a peer.
    pub fn from_proto(wire: proto::SignedStreamInfo) -> Result<Self, StreamInfoError> {
        let raw = proto::StreamInfo::decode(wire.info.clone())?;
        check_info_fields(&raw)?;
        let broadcaster = PublicKey::try_decode_protobuf(&raw.broadcaster_key).map_err(|_| StreamInfoError::Key)?;
        if !broadcaster.verify(&domain_message(STREAM_INFO_DOMAIN, &wire.info), &wire.signature) {
            return Err(StreamInfoError::Signature);
        }
        let info = StreamInfo {
            broadcaster,
            name: raw.name,
            origin_url: raw.origin_url,
        };
        let id = info.id();
        Ok(Self { info, id, wire })
    }

    /// The verified info.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The wire form, to send on.
    pub fn to_proto(&self) -> proto::SignedStreamInfo {
        self.wire.clone()
    }
}

fn check_info_fields(raw: &proto::StreamInfo) -> Result<(), StreamInfoError> {
    if raw.name.is_empty() || raw.name.len() > MAX_NAME_LEN {
        return Err(StreamInfoError::Name(raw.name.len()));
    }
    if raw.origin_url.len() > MAX_ORIGIN_URL_LEN {
        return Err(StreamInfoError::OriginUrl(raw.origin_url.len()));
    }
    Ok(())
}

/// Prefixes a signed message with its domain, so that a signature made for one kind of message can never be
/// replayed as another.
pub(crate) fn domain_message(domain: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(domain.len() + 1 + bytes.len());
    message.extend_from_slice(domain);
    message.push(0);
    message.extend_from_slice(bytes);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_depends_on_key_and_name_and_round_trips_as_hex() {
        let a = Keypair::generate_ed25519();
        let b = Keypair::generate_ed25519();
        let id = StreamId::derive(&a.public(), "live");
        assert_ne!(id, StreamId::derive(&a.public(), "live2"));
        assert_ne!(id, StreamId::derive(&b.public(), "live"));
        assert_eq!(id.to_string().parse::<StreamId>().unwrap(), id);
        assert!("not-hex".parse::<StreamId>().is_err());
    }

    #[test]
    fn signed_info_verifies_and_tampering_is_caught() {
        let key = Keypair::generate_ed25519();
        let signed = SignedStreamInfo::sign(&key, "live", "http://origin/streams/x").unwrap();
        assert_eq!(signed.id(), StreamId::derive(&key.public(), "live"));
        let again = SignedStreamInfo::from_proto(signed.to_proto()).unwrap();
        assert_eq!(again.info(), signed.info());

        let mut forged = signed.to_proto();
        let mut raw = proto::StreamInfo::decode(forged.info.clone()).unwrap();
        raw.origin_url = "http://evil/".into();
        forged.info = raw.encode_to_vec().into();
        assert!(matches!(
            SignedStreamInfo::from_proto(forged),
            Err(StreamInfoError::Signature)
        ));
    }
}
