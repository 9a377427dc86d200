//! The StreamrP2P simulator's parts: the scenario format, a deterministic flow-level network model, and the
//! statistics its reports are made of.
//!
//! A 10,000-viewer stream cannot run as 10,000 processes on a small machine, but its protocol decisions can run
//! 10,000 times in a discrete-event simulation, when the protocol code is written without IO (see the design notes).
//! This crate holds what such a simulation runs on:
//!
//! - [`scenario`]: the TOML scenario (`testnet/scenarios/*.toml`), validated.
//! - [`network`]: transfers between nodes whose upload and download capacities are shared by their concurrent
//!   transfers; completion times in virtual seconds, recomputed as transfers start and end.
//! - [`sim`]: the discrete-event simulator (virtual time, arrivals, churn, latency, delivery, playback, metrics),
//!   driving a [`sim::Strategy`]: a protocol under test.
//! - [`strategies`]: the protocols the simulator runs (`tree-mesh`, and the `gossipsub-flood` and `cdn-only` baselines).
//! - [`queue`]: the event queue, a calendar queue in the order of one heap.
//! - [`report`]: the report JSON shared with real local testnet runs.
//! - [`local`]: the local testnet — a scenario run for real, as node processes on loopback (`testnet local`).
//! - [`flood`]: the gossipsub baseline on a real network (`flood_node`, `bench-gossipsub`).
//! - [`adversary`]: the local testnet's adversaries (`adversary`), processes that lie to real nodes.
//! - [`stats`]: percentiles and Jain's fairness index.
#![deny(missing_docs)]

pub mod adversary;
pub mod flood;
pub mod local;
pub mod network;
pub mod prefetch;
pub mod queue;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod stats;
pub mod strategies;
