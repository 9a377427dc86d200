//! The report a simulation (or a real local testnet run) writes: the design's metrics, with `null` for what a run
//! did not measure.

use serde::{Deserialize, Serialize};

/// A run's metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// Protocol run.
    pub protocol: String,
    /// Viewers at a time.
    pub viewers: u32,
    /// Bytes viewers got from other viewers over all bytes viewers got (the broadcaster and the origin are not
    /// viewers).
    pub offload: Option<f64>,
    /// Join to first segment playable, median.
    pub ttfb_p50_s: Option<f64>,
    /// Join to first segment playable, 95th percentile.
    pub ttfb_p95_s: Option<f64>,
    /// Stalled time over watch time, all viewers together.
    pub rebuffer_ratio: Option<f64>,
    /// Segment complete at the broadcaster to complete at the viewer, median.
    pub lag_p50_s: Option<f64>,
    /// The same, 95th percentile.
    pub lag_p95_s: Option<f64>,
    /// The same, 99th percentile.
    pub lag_p99_s: Option<f64>,
    /// Share of viewer-segments playable by their deadline.
    pub availability: Option<f64>,
    /// Payload bytes received more than once over payload bytes.
    pub duplicate_ratio: Option<f64>,
    /// Control bytes over payload bytes.
    pub control_overhead_ratio: Option<f64>,
    /// The origin's busiest second, in Mbit/s.
    pub origin_peak_mbps: Option<f64>,
    /// Jain's index of upload over capacity among viewers.
    pub upload_fairness: Option<f64>,
    /// Upload offered over upload needed (below 1 no protocol can serve everyone from peers).
    pub supply_ratio: Option<f64>,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mb: Option<f64>,
    /// Events processed.
    pub events: u64,
    /// What the adversaries did and what it cost them, when the scenario has any. The figures above are then the
    /// honest viewers' only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversaries: Option<AdversaryFigures>,
}

/// What a run's adversaries did, and how the honest nodes answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdversaryFigures {
    /// Adversaries that took part.
    pub adversaries: u32,
    /// Pairs (honest node, adversary) where the adversary lied to the node.
    pub lied_to: u64,
    /// Of those, the pairs where the node banned the adversary.
    pub banned: u64,
    /// Adversaries banned by at least one honest node.
    pub adversaries_banned: u32,
    /// From an adversary's first lie to a node to that node's ban of it: median, 95th percentile and worst.
    pub ban_delay_p50_s: Option<f64>,
    /// See `ban_delay_p50_s`.
    pub ban_delay_p95_s: Option<f64>,
    /// See `ban_delay_p50_s`.
    pub ban_delay_max_s: Option<f64>,
    /// Payload bytes an honest node sent to one peer that did not ask for it (attach or pull), at most over all
    /// pairs; and in all.
    pub unsolicited_max_bytes: u64,
    /// See `unsolicited_max_bytes`.
    pub unsolicited_total_bytes: u64,
    /// Connections refused by the per-address limit.
    pub connections_refused: u64,
    /// Penalties honest nodes gave adversaries, by offence.
    pub penalties: std::collections::BTreeMap<String, u64>,
    /// Penalties honest nodes gave honest peers, by offence: false accusations (or honest slips).
    pub honest_penalised: std::collections::BTreeMap<String, u64>,
    /// Honest nodes banned by other honest nodes.
    pub honest_banned: u64,
    /// Honest node processes that ended before the run stopped them (a real run only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honest_processes_died: Option<u32>,
}

impl Report {
    /// The report without what varies from run to run of the same scenario (wall time, memory), for comparing
    /// runs.
    pub fn deterministic_part(&self) -> Self {
        Self {
            wall_s: 0.0,
            peak_rss_mb: None,
            ..self.clone()
        }
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let f = |v: Option<f64>, digits: usize| v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}"));
        let adversaries = self.adversaries.as_ref().map_or(String::new(), |a| {
            format!(
                "\n  adversaries {}: lied to {} nodes, banned by {} ({} banned), ban delay p50/p95/max {} / {} / {} s\n  \
                 unsolicited payload max {} B per pair ({} B in all), connections refused {}, honest peers penalised \
                 {:?}, banned {}{}",
                a.adversaries,
                a.lied_to,
                a.banned,
                a.adversaries_banned,
                f(a.ban_delay_p50_s, 2),
                f(a.ban_delay_p95_s, 2),
                f(a.ban_delay_max_s, 2),
                a.unsolicited_max_bytes,
                a.unsolicited_total_bytes,
                a.connections_refused,
                a.honest_penalised,
                a.honest_banned,
                a.honest_processes_died
                    .map_or(String::new(), |n| format!("; honest processes that died: {n}")),
            )
        });
        format!(
            "{} ({}, {} viewers)\n  offload {}  availability {}  rebuffer {}\n  ttfb p50/p95 {} / {} s  lag p50/p95/p99 {} / {} / {} s\n  duplicates {}  control overhead {}  origin peak {} Mbit/s  upload fairness {}  supply {}\n  {} events in {:.1} s, peak memory {} MiB{adversaries}",
            self.name,
            self.protocol,
            self.viewers,
            f(self.offload, 4),
            f(self.availability, 5),
            f(self.rebuffer_ratio, 4),
            f(self.ttfb_p50_s, 2),
            f(self.ttfb_p95_s, 2),
            f(self.lag_p50_s, 2),
            f(self.lag_p95_s, 2),
            f(self.lag_p99_s, 2),
            f(self.duplicate_ratio, 4),
            f(self.control_overhead_ratio, 4),
            f(self.origin_peak_mbps, 1),
            f(self.upload_fairness, 3),
            f(self.supply_ratio, 2),
            self.events,
            self.wall_s,
            f(self.peak_rss_mb, 0),
        )
    }
}

/// Peak resident memory of this process in MiB (Linux), if it can be read.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
