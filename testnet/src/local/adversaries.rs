//! The local testnet's adversaries: processes of the `adversary` binary, started and stopped on the scenario's
//! schedule like viewers, and the report's adversary figures from their records and the honest nodes' statuses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::net::LocalNet;
use super::process::Process;
use super::status::Penalty;
use crate::adversary::record::Record;
use crate::report::AdversaryFigures;
use crate::scenario::Behaviour;
use crate::stats::quantile;

/// The binary's name.
pub const ADVERSARY_BIN_NAME: &str = "adversary";

/// One adversary, running or gone.
#[derive(Debug)]
pub(crate) struct AdversaryEntry {
    pub(crate) process: Option<Process>,
    /// Where its record is.
    pub(crate) record: PathBuf,
}

/// The `adversary` binary next to the node binary (they are built into the same target directory).
pub(crate) fn locate(node_bin: &Path) -> Result<PathBuf> {
    let path = node_bin.with_file_name(ADVERSARY_BIN_NAME);
    anyhow::ensure!(
        path.is_file(),
        "the scenario has adversaries, and the `{ADVERSARY_BIN_NAME}` binary is not next to the node's at {}: build it \
         with `cargo build --release -p streamrp2p-testnet --bins`",
        path.display()
    );
    Ok(path)
}

impl LocalNet {
    /// Starts an adversary that does `behaviours` and waits until it runs. Returns its number.
    pub async fn add_adversary(&self, behaviours: &[Behaviour]) -> Result<usize> {
        let config = self
            .scenario()
            .adversaries
            .clone()
            .context("the scenario has no adversaries")?;
        let bin = self.adversary_bin().context("no adversary binary")?.to_owned();
        let mut adversaries = self.adversaries.lock().await;
        let index = adversaries.len();
        let root = self.run_dir();
        let record = root.join(format!("adversaries/{index}.json"));
        let mut command = tokio::process::Command::new(bin);
        let names = behaviours.iter().map(|b| b.name()).collect::<Vec<_>>().join(",");
        command
            .args(["--behaviour", &names, "--stream", self.stream_id()])
            .args(["--broadcaster", &self.broadcaster().listen])
            .arg("--victims")
            .arg(root.join("victims.json"))
            .arg("--record")
            .arg(&record)
            .args([
                "--after",
                &config.after_s.to_string(),
                "--rate",
                &config.rate_per_s.to_string(),
            ]);
        let log = root.join(format!("logs/adversary-{index}.log"));
        let mut process = Process::spawn(command, &format!("adversary {index} ({names})"), &log)?;
        process.wait_line("peer id: ", self.startup_timeout()).await?;
        adversaries.push(AdversaryEntry {
            process: Some(process),
            record,
        });
        Ok(index)
    }

    /// Stops adversary `index` (SIGTERM: it writes its record).
    pub async fn stop_adversary(&self, index: usize) {
        let process = self
            .adversaries
            .lock()
            .await
            .get_mut(index)
            .and_then(|a| a.process.take());
        if let Some(mut process) = process {
            process.stop().await;
        }
    }

    /// Stops every adversary.
    pub(crate) async fn stop_adversaries(&self) {
        let count = self.adversaries.lock().await.len();
        for index in 0..count {
            self.stop_adversary(index).await;
        }
    }

    /// What the adversaries did and what it cost them, from their records and the honest nodes' last statuses.
    pub async fn adversary_figures(&self) -> AdversaryFigures {
        let records: Vec<Record> = {
            let adversaries = self.adversaries.lock().await;
            adversaries
                .iter()
                .map(|a| Record::read(&a.record).unwrap_or_default())
                .collect()
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        figures(
            &records,
            &self.honest_penalties(),
            &self.honest_left_ms(),
            now_ms,
            self.honest_died(),
        )
    }
}

/// How long after an adversary's first lie its victim must have stayed for the lie to count: a viewer that left
/// sooner had no time to ban it (the acceptance bound on a ban's delay).
const BAN_WITHIN_MS: u64 = 10_000;

/// The figures from the adversaries' `records`, each honest node's penalties (by its peer id) as read at `read_ms`,
/// and when the honest viewers that left did (ms since the Unix epoch). A lie whose victim had less than
/// [`BAN_WITHIN_MS`] left to ban it — it left, or the statuses were read — counts only if it was banned.
pub fn figures(
    records: &[Record],
    honest: &BTreeMap<String, Vec<Penalty>>,
    left_ms: &BTreeMap<String, u64>,
    read_ms: u64,
    honest_died: u32,
) -> AdversaryFigures {
    let adversaries: BTreeSet<&str> = records.iter().map(|r| r.peer_id.as_str()).collect();
    let mut figures = AdversaryFigures {
        adversaries: records.len() as u32,
        honest_processes_died: Some(honest_died),
        ..AdversaryFigures::default()
    };
    let mut delays = Vec::new();
    let mut banned_by_someone = BTreeSet::new();
    for record in records {
        for (victim, lie_ms) in &record.first_lie_ms {
            let Some(penalties) = honest.get(victim) else { continue };
            let ban = penalties
                .iter()
                .find(|p| p.peer == record.peer_id)
                .and_then(|p| p.banned_unix_ms);
            let until = left_ms.get(victim).copied().unwrap_or(read_ms);
            if ban.is_none() && until < lie_ms + BAN_WITHIN_MS {
                continue;
            }
            figures.lied_to += 1;
            if let Some(banned_ms) = ban {
                figures.banned += 1;
                banned_by_someone.insert(record.peer_id.clone());
                delays.push(banned_ms.saturating_sub(*lie_ms) as f64 / 1000.0);
            }
        }
        for bytes in record.unsolicited_bytes.values() {
            figures.unsolicited_max_bytes = figures.unsolicited_max_bytes.max(*bytes);
            figures.unsolicited_total_bytes += bytes;
        }
        figures.connections_refused += record.connections_refused;
    }
    // Adversaries the honest nodes banned though nobody logged a lie to them (a flood counted from its first
    // request) still count as banned.
    for penalties in honest.values() {
        for p in penalties {
            let (adversary, target) = if adversaries.contains(p.peer.as_str()) {
                (true, &mut figures.penalties)
            } else {
                (false, &mut figures.honest_penalised)
            };
            for (offence, n) in &p.offences {
                *target.entry(offence.clone()).or_default() += u64::from(*n);
            }
            if p.banned_unix_ms.is_some() {
                if adversary {
                    banned_by_someone.insert(p.peer.clone());
                } else {
                    figures.honest_banned += 1;
                }
            }
        }
    }
    figures.adversaries_banned = banned_by_someone.len() as u32;
    figures.ban_delay_p50_s = quantile(&mut delays, 0.5);
    figures.ban_delay_p95_s = quantile(&mut delays, 0.95);
    figures.ban_delay_max_s = delays.iter().copied().reduce(f64::max);
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn penalty(peer: &str, offence: &str, banned_ms: Option<u64>) -> Penalty {
        Penalty {
            peer: peer.into(),
            offences: [(offence.to_owned(), 3)].into(),
            banned_unix_ms: banned_ms,
            banned: banned_ms.is_some(),
            ..Penalty::default()
        }
    }

    #[test]
    fn bans_are_matched_to_lies_and_honest_penalties_kept_apart() {
        let records = vec![
            Record {
                peer_id: "A".into(),
                first_lie_ms: [("v1".to_owned(), 1_000), ("v2".to_owned(), 2_000)].into(),
                unsolicited_bytes: [("v1".to_owned(), 65_536)].into(),
                ..Record::default()
            },
            Record {
                peer_id: "B".into(),
                first_lie_ms: [("v1".to_owned(), 5_000)].into(),
                connections_refused: 7,
                ..Record::default()
            },
        ];
        let honest = BTreeMap::from([
            (
                "v1".to_owned(),
                vec![
                    penalty("A", "lie", Some(4_000)),
                    penalty("B", "bad_block", Some(5_500)),
                    penalty("v2", "unsolicited", None),
                ],
            ),
            ("v2".to_owned(), vec![]),
        ]);
        let f = figures(&records, &honest, &BTreeMap::new(), 100_000, 0);
        assert_eq!((f.adversaries, f.lied_to, f.banned, f.adversaries_banned), (2, 3, 2, 2));
        assert_eq!(f.ban_delay_max_s, Some(3.0));
        assert_eq!(f.ban_delay_p50_s, Some(0.5));
        assert_eq!(f.unsolicited_max_bytes, 65_536);
        assert_eq!(f.connections_refused, 7);
        assert_eq!(f.penalties.get("lie"), Some(&3));
        assert_eq!(f.honest_penalised.get("unsolicited"), Some(&3));
        assert_eq!(f.honest_banned, 0);
        assert_eq!(f.honest_processes_died, Some(0));
    }
}
