//! Protobuf messages generated from `proto/streamrp2p.proto` by prost.
//!
//! These are the raw wire shapes. Use the validated types of the other modules ([`crate::chunk`],
//! [`crate::control`], [`crate::manifest`], [`crate::stream`]) rather than these directly.
#![allow(missing_docs, unreachable_pub, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/streamrp2p.v1.rs"));
