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

/// A request as a codec read it: the request, or why its bytes were refused.
///
/// libp2p's request-response reports no failure of its own for a request it could not read (the stream is just
/// dropped), so the codecs hand an unreadable request to the node as [`Received::Invalid`], and the node penalises
/// its sender. Requests are sent as [`Received::Valid`] (`request.into()`).
#[derive(Debug)]
pub enum Received<T> {
    /// The request, decoded within every limit.
    Valid(T),
    /// The bytes broke a limit or did not decode.
    Invalid(WireError),
}

impl<T> From<T> for Received<T> {
    fn from(request: T) -> Self {
        Self::Valid(request)
    }
}

/// Reads a request of at most `max` bytes and decodes it with `decode`: an unreadable one is [`Received::Invalid`],
/// and an I/O error (a stream that broke) stays an error. So does a stream closed before any byte came: every
/// request encodes to at least one byte, and a sender whose request was called off (a timeout under load) closes
/// the stream empty — that is no lie to penalise.
pub(super) async fn read_request<T, R>(
    io: &mut R,
    max: usize,
    decode: impl FnOnce(bytes::Bytes) -> Result<T, WireError>,
) -> io::Result<Received<T>>
where
    R: AsyncRead + Unpin + Send,
{
    let bytes = match read_limited(io, max).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return match error.into_inner().map(|e| e.downcast::<WireError>()) {
                Some(Ok(wire)) => Ok(Received::Invalid(*wire)),
                Some(Err(other)) => Err(io::Error::other(other)),
                None => Err(io::Error::other("stream failed")),
            };
        }
    };
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "stream closed before a request",
        ));
    }
    Ok(match decode(bytes.into()) {
        Ok(request) => Received::Valid(request),
        Err(wire) => Received::Invalid(wire),
    })
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
    type Request = Received<ChunkRequest>;
    type Response = ChunkResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Received<ChunkRequest>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_request(io, chunk::MAX_REQUEST_SIZE, |bytes| ChunkRequest::decode(&bytes)).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<ChunkResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_limited(io, chunk::MAX_RESPONSE_SIZE).await?;
        ChunkResponse::decode(&bytes).map_err(invalid)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Received<ChunkRequest>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Received::Valid(req) => write_all_and_close(io, &req.encode()).await,
            Received::Invalid(error) => Err(invalid(error)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_closed_empty_is_a_broken_stream_not_a_malformed_request() {
        let mut empty = futures::io::Cursor::new(Vec::<u8>::new());
        let read = read_request(&mut empty, 16, |_| Ok(())).await;
        assert_eq!(read.map_err(|e| e.kind()).err(), Some(io::ErrorKind::UnexpectedEof));
        let mut garbage = futures::io::Cursor::new(vec![0xFF; 4]);
        let read = read_request(&mut garbage, 16, |_| Err::<(), _>(WireError::MissingField("x"))).await;
        assert!(
            matches!(read, Ok(Received::Invalid(_))),
            "bytes that do not decode are still invalid"
        );
    }
}
