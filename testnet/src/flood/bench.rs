//! The comparison: the same scenario as the tree-mesh (from the local testnet's report) and as gossipsub push
//! (flood nodes run here), reduced to the same few figures, and their ratios.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::figures::NodeFigures;
use super::process::FloodProcess;
use super::source::{PLAYLIST, start_ffmpeg};
use crate::scenario::Scenario;
use crate::stats::quantile;

/// Peers besides the broadcaster a joining watcher dials: up to this many random watchers already running.
pub const BOOTSTRAP_PEERS: usize = 8;

/// How the gossipsub side runs.
#[derive(Clone, Debug)]
pub struct FloodOptions {
    /// The `flood_node` binary.
    pub node_bin: PathBuf,
    /// Keep the run's files (HLS, node logs) here rather than in a temporary directory.
    pub keep: Option<PathBuf>,
    /// No progress lines on stderr.
    pub quiet: bool,
}

/// Every flood node's figures from one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FloodRun {
    /// The broadcaster's.
    pub broadcaster: NodeFigures,
    /// The watchers', in join order.
    pub watchers: Vec<NodeFigures>,
}

/// Runs `scenario` as gossipsub push: ffmpeg, one broadcaster and `viewers` watchers joining evenly over the join
/// window (each dialing the broadcaster and up to [`BOOTSTRAP_PEERS`] random watchers already running), for
/// `duration_s` from ffmpeg's start. No churn, no upload caps, no added latency.
pub async fn run_flood(scenario: &Scenario, options: &FloodOptions) -> Result<FloodRun> {
    let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let root = options.keep.clone().unwrap_or_else(|| temp.path().to_owned());
    let hls = root.join("hls");
    let logs = root.join("logs");
    for dir in [&hls, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let say = |text: String| {
        if !options.quiet {
            eprintln!("[gossipsub] {text}");
        }
    };
    let playlist = hls.join(PLAYLIST);
    let broadcaster = FloodProcess::start(
        &options.node_bin,
        &[
            "broadcast".as_ref(),
            "--hls".as_ref(),
            playlist.as_os_str(),
            "--listen".as_ref(),
            "/ip4/127.0.0.1/tcp/0".as_ref(),
        ],
        Some(&logs.join("broadcaster.log")),
    )
    .await?;
    say(format!("broadcaster at {}", broadcaster.listen));
    let mut ffmpeg = start_ffmpeg(scenario, &hls, false)?;
    let start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
    let mut watchers: Vec<FloodProcess> = Vec::new();
    let viewers = scenario.viewers as usize;
    for i in 0..viewers {
        let at = start + Duration::from_secs_f64(scenario.join_window_s * i as f64 / viewers.max(1) as f64);
        tokio::time::sleep_until(at).await;
        let mut args = vec!["watch".to_owned(), "--listen".into(), "/ip4/127.0.0.1/tcp/0".into()];
        args.extend(["--bootstrap".into(), broadcaster.listen.clone()]);
        for peer in watchers.choose_multiple(&mut rng, BOOTSTRAP_PEERS) {
            args.extend(["--bootstrap".into(), peer.listen.clone()]);
        }
        let watcher = FloodProcess::start(&options.node_bin, &args, Some(&logs.join(format!("watcher-{i}.log"))))
            .await
            .with_context(|| format!("watcher {i}"))?;
        watchers.push(watcher);
        say(format!("watcher {i} joined at {:.1} s", start.elapsed().as_secs_f64()));
    }
    tokio::time::sleep_until(start + Duration::from_secs_f64(scenario.duration_s)).await;
    let _ = ffmpeg.start_kill();
    let _ = ffmpeg.wait().await;
    say("stopping".to_owned());
    let mut run = FloodRun::default();
    for (i, watcher) in watchers.into_iter().enumerate() {
        run.watchers
            .push(watcher.stop().await.with_context(|| format!("watcher {i}"))?);
    }
    run.broadcaster = broadcaster.stop().await.context("broadcaster")?;
    Ok(run)
}

/// One protocol's line of the comparison.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `tree-mesh` or `gossipsub`.
    pub protocol: String,
    /// Payload bytes a viewer uploaded, mean over viewers.
    pub upload_bytes_per_viewer: Option<f64>,
    /// Whether that figure is an estimate (see [`Row::from_tree_report`]).
    pub upload_estimated: bool,
    /// Duplicate payload bytes over unique payload bytes received, all viewers together.
    pub duplicate_ratio: Option<f64>,
    /// Broadcaster's publish to complete at a viewer, median, seconds.
    pub lag_p50_s: Option<f64>,
    /// The same, 95th percentile.
    pub lag_p95_s: Option<f64>,
}

impl Row {
    /// The gossipsub side's row.
    pub fn from_flood(run: &FloodRun) -> Self {
        let n = run.watchers.len();
        let upload = (n > 0).then(|| {
            run.watchers
                .iter()
                .map(|w| w.payload_bytes_uploaded as f64)
                .sum::<f64>()
                / n as f64
        });
        let unique: u64 = run.watchers.iter().map(|w| w.payload_bytes_received).sum();
        let duplicate: u64 = run.watchers.iter().map(|w| w.duplicate_payload_bytes).sum();
        let mut lags: Vec<f64> = run.watchers.iter().flat_map(|w| w.lags_s.iter().copied()).collect();
        Self {
            protocol: "gossipsub".into(),
            upload_bytes_per_viewer: upload,
            upload_estimated: false,
            duplicate_ratio: (unique > 0).then(|| duplicate as f64 / unique as f64),
            lag_p50_s: quantile(&mut lags, 0.5),
            lag_p95_s: quantile(&mut lags, 0.95),
        }
    }

    /// The tree-mesh side's row from the local testnet's report JSON. Upload per viewer is the report's
    /// `upload_bytes_per_viewer` when it has one; otherwise it is estimated as `offload` × `received_per_viewer`
    /// (the bytes viewers got from other viewers are the bytes viewers uploaded to each other), with the gossipsub
    /// side's unique bytes received per viewer standing in for the tree-mesh's — the same stream watched by the
    /// same join schedule.
    pub fn from_tree_report(report: &serde_json::Value, received_per_viewer: Option<f64>) -> Self {
        let get = |name: &str| report.get(name).and_then(serde_json::Value::as_f64);
        let (upload, estimated) = match get("upload_bytes_per_viewer") {
            Some(upload) => (Some(upload), false),
            None => (get("offload").zip(received_per_viewer).map(|(o, r)| o * r), true),
        };
        Self {
            protocol: "tree-mesh".into(),
            upload_bytes_per_viewer: upload,
            upload_estimated: estimated && upload.is_some(),
            duplicate_ratio: get("duplicate_per_unique").or_else(|| get("duplicate_ratio")),
            lag_p50_s: get("lag_p50_s"),
            lag_p95_s: get("lag_p95_s"),
        }
    }
}

/// From a local testnet run's `statuses.json` (every viewer's last status): `upload_bytes_per_viewer`, the mean
/// payload bytes a viewer uploaded, and `duplicate_per_unique`, duplicate payload bytes over unique ones — the
/// gossipsub side's definitions.
pub fn tree_figures(statuses: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let viewers: Vec<&serde_json::Value> = statuses
        .get("viewers")
        .and_then(serde_json::Value::as_array)
        .map(|v| v.iter().filter(|s| !s.is_null()).collect())
        .unwrap_or_default();
    let sum = |field: &str| -> f64 {
        viewers
            .iter()
            .filter_map(|s| s.get(field).and_then(serde_json::Value::as_f64))
            .sum()
    };
    let mut figures = serde_json::Map::new();
    if !viewers.is_empty() {
        figures.insert(
            "upload_bytes_per_viewer".into(),
            (sum("bytes_uploaded") / viewers.len() as f64).into(),
        );
        let unique = sum("bytes_from_peers") + sum("bytes_from_origin");
        if unique > 0.0 {
            figures.insert("duplicate_per_unique".into(), (sum("bytes_duplicate") / unique).into());
        }
    }
    figures
}

/// Unique payload bytes a watcher received, mean over watchers.
pub fn received_per_viewer(run: &FloodRun) -> Option<f64> {
    let n = run.watchers.len();
    (n > 0).then(|| {
        run.watchers
            .iter()
            .map(|w| w.payload_bytes_received as f64)
            .sum::<f64>()
            / n as f64
    })
}

/// `flood` over `tree`, figure by figure (`None` where either is missing or the tree-mesh's is 0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    /// Upload per viewer.
    pub upload_bytes_per_viewer: Option<f64>,
    /// Duplicate ratio.
    pub duplicate_ratio: Option<f64>,
    /// Lag, median.
    pub lag_p50_s: Option<f64>,
    /// Lag, 95th percentile.
    pub lag_p95_s: Option<f64>,
}

impl Ratios {
    /// The ratios of `flood` to `tree`.
    pub fn of(flood: &Row, tree: &Row) -> Self {
        let r = |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
        Self {
            upload_bytes_per_viewer: r(flood.upload_bytes_per_viewer, tree.upload_bytes_per_viewer),
            duplicate_ratio: r(flood.duplicate_ratio, tree.duplicate_ratio),
            lag_p50_s: r(flood.lag_p50_s, tree.lag_p50_s),
            lag_p95_s: r(flood.lag_p95_s, tree.lag_p95_s),
        }
    }
}

/// The comparison as a table for people.
pub fn table(tree: Option<&Row>, flood: &Row) -> String {
    let f = |v: Option<f64>, digits: usize| v.map_or("n/a".to_owned(), |v| format!("{v:.digits$}"));
    let ratios = tree.map(|tree| Ratios::of(flood, tree)).unwrap_or_default();
    let tree = tree.cloned().unwrap_or_default();
    let mb = |v: Option<f64>| v.map(|v| v / 1e6);
    let mut out = format!(
        "{:<34} {:>12} {:>12} {:>22}\n",
        "", "tree-mesh", "gossipsub", "gossipsub / tree-mesh"
    );
    let upload_label = if tree.upload_estimated {
        "payload uploaded per viewer (MB)*"
    } else {
        "payload uploaded per viewer (MB)"
    };
    let rows = [
        (
            upload_label,
            mb(tree.upload_bytes_per_viewer),
            mb(flood.upload_bytes_per_viewer),
            ratios.upload_bytes_per_viewer,
            2,
        ),
        (
            "duplicate / unique payload bytes",
            tree.duplicate_ratio,
            flood.duplicate_ratio,
            ratios.duplicate_ratio,
            4,
        ),
        ("lag p50 (s)", tree.lag_p50_s, flood.lag_p50_s, ratios.lag_p50_s, 2),
        ("lag p95 (s)", tree.lag_p95_s, flood.lag_p95_s, ratios.lag_p95_s, 2),
    ];
    for (label, t, g, r, digits) in rows {
        out += &format!(
            "{label:<34} {:>12} {:>12} {:>22}\n",
            f(t, digits),
            f(g, digits),
            f(r, 2)
        );
    }
    if tree.upload_estimated {
        out += "* estimated: the tree-mesh report's offload × the bytes a gossipsub viewer received\n";
    }
    out
}

/// Reads the tree-mesh's report JSON.
pub fn read_report(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a report", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_ratios() {
        let watcher = |up: u64, lag: f64| NodeFigures {
            payload_bytes_uploaded: up,
            payload_bytes_received: 100,
            duplicate_payload_bytes: 50,
            lags_s: vec![lag],
            ..NodeFigures::default()
        };
        let run = FloodRun {
            broadcaster: NodeFigures::default(),
            watchers: vec![watcher(100, 1.0), watcher(300, 3.0)],
        };
        let flood = Row::from_flood(&run);
        assert_eq!(flood.upload_bytes_per_viewer, Some(200.0));
        assert_eq!(flood.duplicate_ratio, Some(0.5));
        let report = serde_json::json!({"offload": 0.5, "duplicate_ratio": 0.01, "lag_p50_s": 1.0, "lag_p95_s": 2.0});
        let tree = Row::from_tree_report(&report, received_per_viewer(&run));
        assert_eq!(tree.upload_bytes_per_viewer, Some(50.0));
        assert!(tree.upload_estimated);
        let ratios = Ratios::of(&flood, &tree);
        assert_eq!(ratios.upload_bytes_per_viewer, Some(4.0));
        assert_eq!(ratios.duplicate_ratio, Some(50.0));
        assert!(table(Some(&tree), &flood).contains("estimated"));
    }
}
