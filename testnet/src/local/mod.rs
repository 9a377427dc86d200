//! The local testnet: a scenario run for real, as separate node processes on loopback
//! (`testnet local SCENARIO.toml --json REPORT.json`), reporting in the simulator's [`Report`](crate::report::Report)
//! schema so that the two can be compared on the same scenario.
//!
//! # What a run does
//!
//! 1. **Source** ([`source`]): ffmpeg encodes a test pattern in real time (`-re`) into a live HLS playlist, x264 in
//!    CBR at the scenario's `bitrate_kbps`, one keyframe per `segment_s` segment.
//! 2. **Broadcaster**: a `streamrp2p broadcast` process follows that playlist; its `--origin` is the testnet's own
//!    origin.
//! 3. **Origin** ([`origin`]): an HTTP server in this process, a pull-through cache of the broadcaster's gateway,
//!    answering `Range` requests, its egress limited to `origin_mbps` and counted per second. It can be stopped and
//!    started during the run.
//! 4. **Viewers**: `streamrp2p watch` processes bootstrapped from the broadcaster, each with its class's upload cap,
//!    joining and leaving as the scenario's seed says ([`schedule`]: the simulator's draws). A leaver gets SIGTERM,
//!    SIGKILL after 2 s.
//! 5. **Gathering** ([`gather`]): every 2 s, before a viewer is stopped and at the end, each live node's
//!    `/api/status`; a viewer that left keeps its last snapshot.
//! 6. **Report** ([`metrics`]) from those snapshots and the origin's counter; what no node reports is `null`.
//! 7. **Byte check** ([`check`]): every segment each live viewer lists, compared with the broadcaster's bytes.
//!
//! # Real, emulated, and different from the simulator
//!
//! Real: the node binary and every protocol it runs, libp2p over TCP on loopback, the HTTP gateways, ffmpeg's
//! encoder, the origin's HTTP and its rate limit, process start-up and exit (SIGTERM/SIGKILL).
//!
//! Emulated: upload capacities are the node's own token bucket (`--max-upload-kbps`), not a link; the origin's
//! capacity is this process's token bucket.
//!
//! Known differences from the simulator on the same scenario:
//! - latency: loopback's is about 0, whatever `latency_ms` says (no delay is injected);
//! - NAT: none — every node accepts inbound connections, whatever `nat_fraction` says;
//! - download: not capped (`download_x` is ignored); loopback and two cores are the only limits;
//! - bitrate: ffmpeg's CBR is close to, not exactly, constant (segments within a few per cent of
//!   `bitrate × segment_s`, plus about 6 % of MPEG-TS overhead, the first larger);
//! - start-up: a node process takes tens to hundreds of milliseconds to start and dial; the broadcaster adds its
//!   poll of the playlist to each segment's lag; stream time 0 is taken as one segment before the broadcaster's
//!   first segment;
//! - CPU: every process shares the machine's cores, so a large scenario measures the machine as much as the
//!   protocol (see `scenarios/local-50.toml`);
//! - `events` is 0 (there is no event queue) and `peak_rss_mb` is the largest peak resident memory of one node
//!   process, not of this one.

pub mod adversaries;
mod check;
mod gather;
pub mod metrics;
mod net;
pub mod node_bin;
pub mod origin;
pub mod process;
mod run;
pub mod schedule;
pub mod segments;
pub mod source;
pub mod status;

use std::path::PathBuf;
use std::time::Duration;

pub use check::SegmentCheck;
pub use net::{Broadcaster, LocalNet, ViewerId};
pub use origin::Origin;
pub use process::TERM_GRACE;
pub use run::{Outcome, run, run_with_report};

/// How a local testnet runs.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The node binary (else `$STREAMRP2P_BIN`, else `streamrp2p` next to this executable).
    pub node_bin: Option<PathBuf>,
    /// Keep the run's files (logs, the nodes' data, the HLS) in this directory rather than a temporary one.
    pub keep: Option<PathBuf>,
    /// A debugging aid: start nodes without `--max-upload-kbps`, for node binaries that do not have it yet.
    /// Upload fairness is still computed against the classes' caps.
    pub no_caps: bool,
    /// How often every node's status is read.
    pub poll_every: Duration,
    /// How long a process may take to print its addresses, and ffmpeg plus the broadcaster to publish the first
    /// segment.
    pub startup_timeout: Duration,
    /// No progress lines on stderr.
    pub quiet: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            node_bin: None,
            keep: None,
            no_caps: false,
            poll_every: Duration::from_secs(2),
            startup_timeout: Duration::from_secs(30),
            quiet: false,
        }
    }
}
