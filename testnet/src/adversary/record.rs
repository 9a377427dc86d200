//! What an adversary process records of itself — its lies, and the payload it received without asking — written as
//! JSON for the local testnet to read, and the victims it may lie to, written by the testnet for it to read.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One adversary's record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Its peer id.
    pub peer_id: String,
    /// Its behaviour's name (`scenario::Behaviour::name`).
    pub behaviour: String,
    /// When it first lied to each victim (peer id), in ms since the Unix epoch. For a withholder, a victim is a
    /// child it kept the stream from for a whole segment while saying it was fed.
    pub first_lie_ms: BTreeMap<String, u64>,
    /// Payload bytes it received from each peer without asking for them (its third parties of forged `Place`s, and
    /// its own pushes' receivers aside).
    pub unsolicited_bytes: BTreeMap<String, u64>,
    /// Connections its made-up identities opened, and those refused.
    pub connections: u64,
    /// See `connections`.
    pub connections_refused: u64,
}

impl Record {
    /// Writes the record to `path` (through a temporary file, so a reader never sees half of it).
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Reads a record written by [`Record::write`].
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not an adversary record", path.display()))
    }
}

/// A peer an adversary may lie to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Victim {
    /// Its peer id.
    pub peer_id: String,
    /// Its addresses, each ending in `/p2p/<peer id>`.
    pub addrs: Vec<String>,
}

/// Writes the victims an adversary may lie to.
pub fn write_victims(path: &Path, victims: &[Victim]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(victims)?).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads the victims (none while the file is missing).
pub fn read_victims(path: &Path) -> Vec<Victim> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}
