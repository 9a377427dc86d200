//! Wire formats and protocol logic of StreamrP2P, free of IO.
//!
//! Nothing in this crate opens a socket, reads a clock or spawns a task: the node (`streamrp2p-node`) and the
//! simulator drive the same code. The pieces, in the order a segment meets them:
//!
//! - [`stream`]: a stream's id, derived from its broadcaster's key and its name, and the signed [`stream::StreamInfo`].
//! - [`segment`]: a segment cut into raw blocks of at most 64 KiB, each addressed by a CIDv1, and the segment's
//!   root CID, which is exactly what IPFS computes for the same bytes (CIDv1, raw leaves, 64 KiB fixed-size chunks,
//!   balanced UnixFS DAG); [`segment::SegmentAssembly`] verifies blocks as they arrive.
//! - [`manifest`]: the broadcaster-signed entry that describes one segment, and the bounded window of sequence
//!   numbers a viewer accepts.
//! - [`chunk`]: the request-response protocol `/streamrp2p/chunk/1.0.0` that moves blocks and manifests.
//! - [`control`]: the small control messages carried on a stream's gossipsub topic (never segment bytes).
//! - [`playback`]: the virtual player that turns segment arrival times into what a person would have seen.
//! - [`treemesh`]: the stream's hybrid tree-mesh and block scheduler, which the node and the simulator both run.
//!   Its messages and blocks travel over the request-response protocol `/streamrp2p/treemesh/1.0.0`
//!   ([`treemesh::wire`]).
//! - [`score`] and [`quota`]: what keeps a node's work per peer bounded and its peers accountable — one score per
//!   peer for every kind of misbehaviour, with decay and bans, and rate limits (GCRA) for quotas and uploads.
//!
//! Every decoder here takes untrusted bytes, enforces a documented maximum size and returns a typed error instead
//! of panicking; the property tests in `tests/` feed them arbitrary bytes.
#![deny(missing_docs)]

pub mod chunk;
pub mod control;
mod error;
pub mod manifest;
pub mod playback;
pub mod proto;
pub mod quota;
pub mod score;
pub mod segment;
pub mod stream;
pub mod treemesh;
mod unixfs;

pub use cid::Cid;
pub use error::WireError;
pub use libp2p_identity::{Keypair, PublicKey};
