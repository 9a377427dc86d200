//! The chunk protocol's codec for libp2p request-response: one message each way per stream, read to the end of
//! the stream with a hard size limit, decoded by `streamrp2p-protocols`.

use std::io;
use std::sync::Arc;

use futures::prelude::*;
use libp2p::StreamProtocol;
use libp2p::request_response;
use streamrp2p_protocols::WireError;
use streamrp2p_protocols::chunk::{self, ChunkRequest, ChunkResponse};

use crate::throttle::UploadLimiter;

/// The chunk protocol's name as libp2p negotiates it.
pub const CHUNK_PROTOCOL: StreamProtocol = StreamProtocol::new(chunk::PROTOCOL_NAME);

/// Codec of `/streamrp2p/chunk/1.0.0`.
///
/// The node answers a request over the requester's quota with [`ChunkResponse::Busy`].
///
/// A message that is too large or does not decode fails with [`io::ErrorKind::InvalidData`] wrapping the
/// [`WireError`]; [`wire_error`] recovers it so the sender can be penalised. The node's own codec sends blocks
/// through its upload limiter; `ChunkCodec::default()` (for clients) sends at full speed.
#[derive(Clone, Default)]
pub struct ChunkCodec {
    limiter: Option<Arc<UploadLimiter>>,
}

impl ChunkCodec {
    /// A codec whose block responses go through `limiter`.
    pub(crate) fn limited(limiter: Arc<UploadLimiter>) -> Self {
        Self { limiter: Some(limiter) }
    }
}

impl std::fmt::Debug for ChunkCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCodec")
            .field("limited", &self.limiter.is_some())
            .finish()
    }
}

/// Bytes written between two checks of the upload limiter: small enough that a cap holds within a few percent
/// over a second, large enough to cost nothing.
pub(super) const PIECE: usize = 16 * 1024;

/// Writes `bytes` through `limiter` in pieces of [`PIECE`], then closes the stream.
pub(super) async fn write_limited<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
    limiter: &UploadLimiter,
) -> io::Result<()> {
    for piece in bytes.chunks(PIECE) {
        limiter.acquire(piece.len()).await;
        io.write_all(piece).await?;
    }
    io.close().await
}

/// The protocol violation behind an I/O error from [`ChunkCodec`], if that is what it was.
pub fn wire_error(error: &io::Error) -> Option<&WireError> {
    error.get_ref().and_then(|inner| inner.downcast_ref::<WireError>())
}

pub(super) async fn read_limited<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it".
    io.take(max as u64 + 1).read_to_end(&mut bytes).await?;
    if bytes.len() > max {
        return Err(invalid(WireError::TooLarge { size: bytes.len(), max }));
    }
    Ok(bytes)
}

pub(super) fn invalid(error: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

pub(super) async fn write_all_and_close<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.close().await
}

impl request_response::Codec for ChunkCodec {
    type Protocol = StreamProtocol;
    type Request = ChunkRequest;
    type Response = ChunkResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<ChunkRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_limited(io, chunk::MAX_REQUEST_SIZE).await?;
        ChunkRequest::decode(&bytes).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<ChunkResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_limited(io, chunk::MAX_RESPONSE_SIZE).await?;
        ChunkResponse::decode(&bytes).map_err(invalid)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: ChunkRequest) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_all_and_close(io, &req.encode()).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: ChunkResponse) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match (&res, &self.limiter) {
            // Every payload answer goes through the upload limiter: blocks, and manifests (up to hundreds of KiB for
            // a request of a few bytes).
            (ChunkResponse::Block(_) | ChunkResponse::Manifest(_), Some(limiter)) => {
                write_limited(io, &res.encode(), limiter).await
            }
            _ => write_all_and_close(io, &res.encode()).await,
        }
    }
}
