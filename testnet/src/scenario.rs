//! Scenarios: what a simulation runs, read from TOML (`testnet/scenarios/*.toml`).
//!
//! ```toml
//! name = "10k-churn"
//! seed = 7
//! protocol = "tree-mesh"        # or "gossipsub-flood" or "cdn-only"
//! viewers = 10000
//! duration_s = 600
//! join_window_s = 60            # viewers arrive uniformly over this window
//! churn_per_min = 0.10          # share of viewers leaving per minute, each replaced by a new joiner
//! bitrate_kbps = 2500
//! segment_s = 2.0
//! nat_fraction = 0.2            # viewers that accept no inbound connection
//! latency_ms = [20, 150]        # one-way, uniform per pair
//! origin_mbps = 1000
//! broadcaster_upload_x = 10     # multiples of the bitrate
//! download_x = 10
//! [[upload]]                    # upload classes: share of viewers, multiple of the bitrate
//! share = 0.2
//! x = 0.5
//! [adversaries]                 # optional: viewers that lie (see `Adversaries`)
//! share = 0.1
//! behaviours = ["withhold"]
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Which protocol a scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// The hybrid tree-mesh.
    TreeMesh,
    /// Baseline: blocks pushed over a random mesh of degree 8, as gossipsub does.
    GossipsubFlood,
    /// Baseline: every viewer fetches every segment from the HTTP origin.
    CdnOnly,
}

impl Protocol {
    /// The name scenarios and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Self::TreeMesh => "tree-mesh",
            Self::GossipsubFlood => "gossipsub-flood",
            Self::CdnOnly => "cdn-only",
        }
    }
}

/// A class of viewers by upload capacity.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UploadClass {
    /// Share of the viewers in this class.
    pub share: f64,
    /// Upload capacity as a multiple of the stream's bitrate.
    pub x: f64,
}

/// A simulation scenario.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, for reports.
    pub name: String,
    /// Seed of every random choice: the same scenario and seed give the same report.
    pub seed: u64,
    /// The protocol run.
    pub protocol: Protocol,
    /// Viewers at a time.
    pub viewers: u32,
    /// Length of the stream, in seconds.
    pub duration_s: f64,
    /// Viewers arrive uniformly over this many seconds from the start.
    pub join_window_s: f64,
    /// Share of viewers leaving per minute, each replaced by a new joiner.
    #[serde(default)]
    pub churn_per_min: f64,
    /// The stream's bitrate in kbit/s.
    pub bitrate_kbps: f64,
    /// Segment duration in seconds.
    pub segment_s: f64,
    /// Share of viewers behind NAT: they dial out but accept no inbound connection.
    #[serde(default)]
    pub nat_fraction: f64,
    /// One-way latency range in ms, uniform per pair of nodes.
    pub latency_ms: [f64; 2],
    /// The HTTP origin's capacity in Mbit/s.
    pub origin_mbps: f64,
    /// The broadcaster's upload as a multiple of the bitrate.
    pub broadcaster_upload_x: f64,
    /// Every viewer's download as a multiple of the bitrate.
    pub download_x: f64,
    /// Upload classes; their shares add up to 1.
    pub upload: Vec<UploadClass>,
    /// Block size in KiB (default: the protocol's [`streamrp2p_protocols::segment::BLOCK_SIZE`], 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_kib: Option<u32>,
    /// Viewers that lie, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversaries: Option<Adversaries>,
}

/// What an adversary does once it starts lying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// HAVEs for segments no signed entry names, far and near past the live edge.
    ForgedHave,
    /// WANTs for segments that cannot exist yet.
    ForgedWant,
    /// `Place` messages from a peer that is not the receiver's parent, naming a third party to feed.
    ForgedPlace,
    /// Advertises a high upload capacity, takes children, and after a while forwards nothing.
    Withhold,
    /// Pushes blocks whose bytes do not match their CIDs.
    BadBlocks,
    /// Valid requests as fast as it can: pulls of held blocks, probes.
    RequestFlood,
    /// Opens connections from many identities behind one address.
    ConnectionFlood,
}

impl Behaviour {
    /// Every behaviour.
    pub const ALL: [Behaviour; 7] = [
        Behaviour::ForgedHave,
        Behaviour::ForgedWant,
        Behaviour::ForgedPlace,
        Behaviour::Withhold,
        Behaviour::BadBlocks,
        Behaviour::RequestFlood,
        Behaviour::ConnectionFlood,
    ];

    /// The name scenarios use.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::ForgedHave => "forged-have",
            Behaviour::ForgedWant => "forged-want",
            Behaviour::ForgedPlace => "forged-place",
            Behaviour::Withhold => "withhold",
            Behaviour::BadBlocks => "bad-blocks",
            Behaviour::RequestFlood => "request-flood",
            Behaviour::ConnectionFlood => "connection-flood",
        }
    }
}

/// Adversaries among the viewers: each viewer that joins is one with probability `share`, the k-th of them takes
/// the k-th of `behaviours` (round robin), behaves like an honest peer for `after_s` seconds, and then lies.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Adversaries {
    /// Share of viewers that are adversaries.
    pub share: f64,
    /// What they do.
    pub behaviours: Vec<Behaviour>,
    /// Seconds after joining that an adversary starts (a withholder has taken children by then).
    #[serde(default = "default_after_s")]
    pub after_s: f64,
    /// Lies a second of a flooding adversary (forged messages, requests, connections, bad blocks).
    #[serde(default = "default_rate_per_s")]
    pub rate_per_s: f64,
    /// The upload a withholder advertises, as a multiple of the bitrate: what attracts children.
    #[serde(default = "default_claimed_upload_x")]
    pub claimed_upload_x: f64,
}

fn default_after_s() -> f64 {
    20.0
}

fn default_rate_per_s() -> f64 {
    20.0
}

fn default_claimed_upload_x() -> f64 {
    6.0
}

/// Why a scenario is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: std::io::Error,
    },
    /// The TOML does not describe a scenario.
    #[error("invalid scenario {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        reason: toml::de::Error,
    },
    /// A field is out of range.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|reason| ScenarioError::Read {
            path: path.display().to_string(),
            reason,
        })?;
        let scenario: Self = toml::from_str(&text).map_err(|reason| ScenarioError::Parse {
            path: path.display().to_string(),
            reason,
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |m: String| Err(ScenarioError::Invalid(m));
        let positive = [
            ("duration_s", self.duration_s),
            ("bitrate_kbps", self.bitrate_kbps),
            ("segment_s", self.segment_s),
            ("origin_mbps", self.origin_mbps),
            ("download_x", self.download_x),
        ];
        for (field, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return invalid(format!("`{field}` must be a positive number, got {value}"));
            }
        }
        for (field, value) in [
            ("nat_fraction", self.nat_fraction),
            ("churn_per_min", self.churn_per_min),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return invalid(format!("`{field}` must be between 0 and 1, got {value}"));
            }
        }
        if self.viewers == 0 {
            return invalid("`viewers` must be at least 1".into());
        }
        if !(self.join_window_s >= 0.0 && self.join_window_s <= self.duration_s) {
            return invalid(format!(
                "`join_window_s` must be within [0, duration_s], got {}",
                self.join_window_s
            ));
        }
        let [low, high] = self.latency_ms;
        if !(low >= 0.0 && low <= high && high.is_finite()) {
            return invalid(format!(
                "`latency_ms` must be [low, high] with 0 <= low <= high, got {:?}",
                self.latency_ms
            ));
        }
        if self.broadcaster_upload_x.is_nan() || self.broadcaster_upload_x < 0.0 {
            return invalid("`broadcaster_upload_x` must not be negative".into());
        }
        if self.upload.is_empty() || self.upload.iter().any(|c| !(c.share >= 0.0 && c.x >= 0.0)) {
            return invalid("`[[upload]]` needs at least one class, each with share >= 0 and x >= 0".into());
        }
        if self.block_kib.is_some_and(|k| !(4..=1024).contains(&k)) {
            return invalid("`block_kib` must be between 4 and 1024".into());
        }
        let blocks = (self.segment_bytes() / f64::from(self.block_size())).ceil();
        if blocks > f64::from(streamrp2p_protocols::treemesh::MAX_BLOCKS) {
            return invalid(format!(
                "a segment of {} bytes makes {blocks} blocks, more than the {} a segment may have: raise `block_kib`",
                self.segment_bytes(),
                streamrp2p_protocols::treemesh::MAX_BLOCKS
            ));
        }
        if let Some(a) = &self.adversaries {
            if !(0.0..1.0).contains(&a.share) {
                return invalid(format!("`adversaries.share` must be in [0, 1), got {}", a.share));
            }
            if a.behaviours.is_empty() {
                return invalid(format!(
                    "`adversaries.behaviours` needs at least one of {}",
                    Behaviour::ALL.map(Behaviour::name).join(", ")
                ));
            }
            if !(a.after_s >= 0.0 && a.after_s.is_finite()) {
                return invalid(format!(
                    "`adversaries.after_s` must be a number of seconds, got {}",
                    a.after_s
                ));
            }
            if !(a.rate_per_s > 0.0 && a.rate_per_s <= 10_000.0) {
                return invalid(format!(
                    "`adversaries.rate_per_s` must be in (0, 10000], got {}",
                    a.rate_per_s
                ));
            }
            if !(a.claimed_upload_x >= 0.0 && a.claimed_upload_x.is_finite()) {
                return invalid(format!(
                    "`adversaries.claimed_upload_x` must be a multiple of the bitrate, got {}",
                    a.claimed_upload_x
                ));
            }
        }
        let shares: f64 = self.upload.iter().map(|c| c.share).sum();
        if (shares - 1.0).abs() > 1e-6 {
            return invalid(format!("`[[upload]]` shares must add up to 1, got {shares}"));
        }
        Ok(())
    }

    /// Bytes per second of the stream.
    pub fn bitrate_bytes(&self) -> f64 {
        self.bitrate_kbps * 1000.0 / 8.0
    }

    /// Bytes of one block.
    pub fn block_size(&self) -> u32 {
        self.block_kib
            .map_or(streamrp2p_protocols::segment::BLOCK_SIZE as u32, |kib| kib * 1024)
    }

    /// Bytes of one segment.
    pub fn segment_bytes(&self) -> f64 {
        self.bitrate_bytes() * self.segment_s
    }

    /// The upload multiple of the viewer at quantile `u` (0 ≤ u < 1) of the class distribution, classes in order.
    pub fn upload_x_at(&self, u: f64) -> f64 {
        let mut cumulative = 0.0;
        for class in &self.upload {
            cumulative += class.share;
            if u < cumulative {
                return class.x;
            }
        }
        self.upload.last().map_or(0.0, |c| c.x)
    }

    /// Upload the viewers and the broadcaster offer over what the viewers need: below 1, no protocol can serve every
    /// viewer from peers alone, and the origin must make up the difference.
    pub fn supply_ratio(&self) -> f64 {
        let mean_x: f64 = self.upload.iter().map(|c| c.share * c.x).sum();
        (f64::from(self.viewers) * mean_x + self.broadcaster_upload_x) / f64::from(self.viewers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        name = "10k-churn"
        seed = 7
        protocol = "tree-mesh"
        viewers = 10000
        duration_s = 600
        join_window_s = 60
        churn_per_min = 0.10
        bitrate_kbps = 2500
        segment_s = 2.0
        nat_fraction = 0.2
        latency_ms = [20, 150]
        origin_mbps = 1000
        broadcaster_upload_x = 10
        download_x = 10
        [[upload]]
        share = 0.2
        x = 0.5
        [[upload]]
        share = 0.5
        x = 1.5
        [[upload]]
        share = 0.3
        x = 6.0
    "#;

    #[test]
    fn the_issue_example_parses_and_validates() {
        let s: Scenario = toml::from_str(EXAMPLE).unwrap();
        s.validate().unwrap();
        assert_eq!(s.protocol, Protocol::TreeMesh);
        assert_eq!(s.segment_bytes(), 625_000.0);
        assert_eq!(s.upload_x_at(0.1), 0.5);
        assert_eq!(s.upload_x_at(0.6), 1.5);
        assert_eq!(s.upload_x_at(0.99), 6.0);
        // 0.2 * 0.5 + 0.5 * 1.5 + 0.3 * 6 = 2.65 per viewer, plus the broadcaster's 10 over 10,000 viewers.
        assert!((s.supply_ratio() - 2.651).abs() < 1e-9);
    }

    #[test]
    fn bad_scenarios_say_what_is_wrong() {
        let bad_shares = EXAMPLE.replace("share = 0.3", "share = 0.4");
        let s: Scenario = toml::from_str(&bad_shares).unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("add up to 1"));
        let unknown = format!("{EXAMPLE}\nviewerz = 3");
        assert!(toml::from_str::<Scenario>(&unknown).is_err());
        let bad_latency = EXAMPLE.replace("[20, 150]", "[150, 20]");
        let s: Scenario = toml::from_str(&bad_latency).unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("latency_ms"));
    }
}
