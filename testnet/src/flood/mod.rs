//! The gossipsub baseline on a real network: video blocks pushed through libp2p gossipsub itself, to compare with
//! the tree-mesh on the same scenario (`bench-gossipsub`).
//!
//! # The baseline
//!
//! The obvious way to carry live video on libp2p is to publish it on a gossipsub topic with `max_transmit_size`
//! raised. A [`node`] does just that: a `flood_node broadcast` process follows the HLS playlist ffmpeg writes, cuts
//! each new segment into 64 KiB blocks (the tree-mesh's, [`streamrp2p_protocols::segment::split`]) and publishes
//! each block as one signed gossipsub message ([`wire`]: segment number, block index, block count, segment size,
//! publish time, data); `flood_node watch` processes subscribe and put the segments back together ([`assembly`]).
//! Gossipsub runs as configured in [`node::gossipsub_config`]: strict validation of signed messages,
//! content-addressed message ids, mesh degree 8 as in the simulator's `gossipsub-flood` strategy, publishing to the
//! mesh only, and everything else gossipsub's defaults (v1.2 with IDONTWANT for messages over 1 KB, lazy gossip
//! every 1 s heartbeat). A watcher dials the broadcaster and up to [`bench::BOOTSTRAP_PEERS`] random watchers
//! already running; gossipsub builds its mesh among them.
//!
//! # What is measured, and how
//!
//! Each node prints its [`figures::NodeFigures`] as one JSON line when it stops (stdin closed, SIGTERM or Ctrl-C):
//!
//! - **Payload bytes received**: the block bytes the application saw, first copies only.
//! - **Duplicate payload bytes**: gossipsub drops duplicates before the application sees them, so they come from
//!   gossipsub's own metrics — bytes received unfiltered less bytes received first-time, less gossipsub's
//!   per-message framing ([`figures`] says how that is taken off).
//! - **Payload bytes uploaded**: gossipsub's sent-bytes metric (every message handed to a connection, published or
//!   forwarded), less the framing.
//! - **Lag**, per completed segment: complete at the watcher less the broadcaster's publish time (one clock:
//!   every process runs on the same machine). It is the tree-mesh's "segment complete at the broadcaster to
//!   complete at the viewer", bar the broadcaster's playlist poll (100 ms at most), which both sides have.
//! - **Segments** completed (watchers) or published (broadcaster).
//!
//! [`bench`] reduces the watchers' figures to one [`bench::Row`]: payload uploaded per viewer (mean), duplicate over
//! unique payload bytes (all viewers together), lag p50 and p95 over every segment every viewer completed; it
//! reads the tree-mesh's row from the local testnet's report, and prints both with their ratios.
//!
//! # What differs from a deployment
//!
//! Everything runs on loopback on one machine: no latency, no upload caps on the flood side (and the comparison
//! runs the tree-mesh without its caps too, so both protocols use what the machine gives), no churn, no NAT.
//! Gossipsub does not replay history, so a watcher's first segment is the first one published after its mesh
//! formed; segments it caught mid-way are not counted as completed (they are reported as incomplete).

pub mod assembly;
pub mod bench;
pub mod figures;
pub mod node;
pub mod playlist;
pub mod process;
pub mod source;
pub mod wire;
