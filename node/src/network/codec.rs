//! The chunk protocol's codec for libp2p request-response: one message each way per stream, read to the end of
//! the stream with a hard size limit, decoded by `streamrp2p-protocols`.

use std::io;

use futures::prelude::*;
use libp2p::StreamProtocol;
use libp2p::request_response;
use streamrp2p_protocols::WireError;
use streamrp2p_protocols::chunk::{self, ChunkRequest, ChunkResponse};

/// The chunk protocol's name as libp2p negotiates it.
pub const CHUNK_PROTOCOL: StreamProtocol = StreamProtocol::new(chunk::PROTOCOL_NAME);

/// Codec of `/streamrp2p/chunk/1.0.0`.
///
/// A message that is too large or does not decode fails with [`io::ErrorKind::InvalidData`] wrapping the
/// [`WireError`]; [`wire_error`] recovers it so the sender can be penalised.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChunkCodec;

/// The protocol violation behind an I/O error from [`ChunkCodec`], if that is what it was.
pub fn wire_error(error: &io::Error) -> Option<&WireError> {
    error.get_ref().and_then(|inner| inner.downcast_ref::<WireError>())
}

async fn read_limited<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it".
    io.take(max as u64 + 1).read_to_end(&mut bytes).await?;
    if bytes.len() > max {
        return Err(invalid(WireError::TooLarge { size: bytes.len(), max }));
    }
    Ok(bytes)
}

fn invalid(error: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

async fn write_all_and_close<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
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
        write_all_and_close(io, &res.encode()).await
    }
}
