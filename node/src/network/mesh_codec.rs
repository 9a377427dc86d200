//! The tree-mesh protocol's codec for libp2p request-response: a request is one [`Frame`] (a control message, or a
//! block pushed or served), read to the end of its stream with a hard size limit; the response is an empty
//! acknowledgement, which tells the sender the block has arrived (the machine then sends the next one).
//!
//! Block frames go out through the node's upload limiter in small pieces, so that `--max-upload-kbps` holds over
//! every payload stream and a capped node's capacity is what the tree-mesh was told it is.

use std::io;
use std::sync::Arc;

use futures::prelude::*;
use libp2p::StreamProtocol;
use libp2p::request_response;
use streamrp2p_protocols::treemesh::wire::{self, Frame};

use super::codec::{Received, invalid, read_limited, read_request, write_all_and_close, write_limited};
use crate::throttle::UploadLimiter;

/// The tree-mesh protocol's name as libp2p negotiates it.
pub const TREEMESH_PROTOCOL: StreamProtocol = StreamProtocol::new(wire::PROTOCOL_NAME);

/// Codec of `/streamrp2p/treemesh/1.0.0`. The node's own codec sends blocks through its upload limiter;
/// `TreeMeshCodec::default()` (for clients and tests) sends at full speed.
#[derive(Clone, Default)]
pub struct TreeMeshCodec {
    limiter: Option<Arc<UploadLimiter>>,
}

impl TreeMeshCodec {
    /// A codec whose block frames go through `limiter`.
    pub(crate) fn limited(limiter: Arc<UploadLimiter>) -> Self {
        Self { limiter: Some(limiter) }
    }
}

impl std::fmt::Debug for TreeMeshCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeMeshCodec")
            .field("limited", &self.limiter.is_some())
            .finish()
    }
}

/// The acknowledgement of a frame: it arrived and decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack;

impl request_response::Codec for TreeMeshCodec {
    type Protocol = StreamProtocol;
    type Request = Received<Frame>;
    type Response = Ack;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Received<Frame>>
    where
        T: AsyncRead + Unpin + Send,
    {
        // Zero-copy: the block's bytes stay in the buffer read.
        read_request(io, wire::MAX_FRAME_SIZE, Frame::decode_bytes).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Ack>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_limited(io, 0).await?;
        Ok(Ack)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, frame: Received<Frame>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = match frame {
            Received::Valid(frame) => frame,
            Received::Invalid(error) => return Err(invalid(error)),
        };
        let bytes = frame.encode();
        match (&frame, &self.limiter) {
            (Frame::Block { .. }, Some(limiter)) => write_limited(io, &bytes, limiter).await,
            _ => write_all_and_close(io, &bytes).await,
        }
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: Ack) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.close().await
    }
}
