//! `bench-gossipsub SCENARIO.toml [--json OUT.json] [--keep DIR] [--tree-report REPORT.json] [--skip-tree]
//! [--tree-caps]`: runs the scenario twice on loopback — as the tree-mesh (the `testnet local` harness, run as a
//! subprocess: the `testnet` binary next to this one) and as gossipsub push (`flood_node` processes, see
//! `streamrp2p_testnet::flood`) — and prints payload uploaded per viewer, duplicate over unique payload bytes and
//! lag p50/p95 for both, with the ratios gossipsub / tree-mesh.
//!
//! The tree-mesh runs without upload caps (`testnet local --no-caps`), as the flood side does, unless
//! `--tree-caps`. `--tree-report` takes the tree-mesh's figures from an existing report rather than running it;
//! `--skip-tree` runs the gossipsub side alone.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use streamrp2p_testnet::flood::bench::{self, FloodOptions, FloodRun, Ratios, Row};
use streamrp2p_testnet::scenario::Scenario;

const USAGE: &str = "usage: bench-gossipsub SCENARIO.toml [--json OUT.json] [--keep DIR] [--tree-report REPORT.json] [--skip-tree] [--tree-caps]";

/// What `--json` writes.
#[derive(Serialize)]
struct Output {
    scenario: String,
    tree_mesh: Option<Row>,
    gossipsub: Row,
    ratios: Option<Ratios>,
    tree_mesh_report: Option<serde_json::Value>,
    gossipsub_nodes: FloodRun,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut scenario_path = None;
    let mut json = None;
    let mut keep = None;
    let mut tree_report = None;
    let mut skip_tree = false;
    let mut tree_caps = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value; {USAGE}"));
        match arg.as_str() {
            "--json" => json = Some(PathBuf::from(value("--json")?)),
            "--keep" => keep = Some(PathBuf::from(value("--keep")?)),
            "--tree-report" => tree_report = Some(PathBuf::from(value("--tree-report")?)),
            "--skip-tree" => skip_tree = true,
            "--tree-caps" => tree_caps = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ if scenario_path.is_none() && !arg.starts_with('-') => scenario_path = Some(PathBuf::from(arg)),
            _ => bail!("unexpected argument {arg:?}; {USAGE}"),
        }
    }
    let path = scenario_path.context(USAGE)?;
    let scenario = Scenario::load(&path)?;
    let here = std::env::current_exe().context("cannot find this executable")?;

    let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let tree_report = match (tree_report, skip_tree) {
        (Some(report), _) => Some(bench::read_report(&report)?),
        (None, true) => None,
        (None, false) => {
            let testnet = here.with_file_name("testnet");
            let out = temp.path().join("tree-mesh.json");
            let run_dir = temp.path().join("tree-mesh");
            eprintln!("[tree-mesh] {} local {} --json …", testnet.display(), path.display());
            let mut command = std::process::Command::new(&testnet);
            command
                .arg("local")
                .arg(&path)
                .arg("--json")
                .arg(&out)
                .arg("--keep")
                .arg(&run_dir);
            if !tree_caps {
                command.arg("--no-caps");
            }
            // The harness exits non-zero when its byte check fails; its report is still the tree-mesh's figures.
            let status = command.status().with_context(|| {
                format!(
                    "cannot run {} (build it: cargo build --release --bin testnet)",
                    testnet.display()
                )
            })?;
            if !status.success() {
                eprintln!("[tree-mesh] testnet local exited with {status}");
            }
            let mut report = bench::read_report(&out).context("the tree-mesh run wrote no report")?;
            // The nodes' own counts, from the run's last statuses: upload per viewer measured, not estimated, and
            // duplicates over unique bytes as the gossipsub side counts them.
            if let Ok(statuses) = std::fs::read_to_string(run_dir.join("statuses.json"))
                && let Ok(statuses) = serde_json::from_str::<serde_json::Value>(&statuses)
                && let Some(object) = report.as_object_mut()
            {
                object.extend(bench::tree_figures(&statuses));
            }
            Some(report)
        }
    };

    let options = FloodOptions {
        node_bin: here.with_file_name("flood_node"),
        keep,
        quiet: false,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let flood = runtime.block_on(bench::run_flood(&scenario, &options))?;

    let gossipsub = Row::from_flood(&flood);
    let tree = tree_report
        .as_ref()
        .map(|report| Row::from_tree_report(report, bench::received_per_viewer(&flood)));
    let segments: Vec<u64> = flood.watchers.iter().map(|w| w.segments).collect();
    println!(
        "{} ({} viewers, {} s): gossipsub broadcaster published {} segments, viewers completed {}–{}",
        scenario.name,
        scenario.viewers,
        scenario.duration_s,
        flood.broadcaster.segments,
        segments.iter().min().unwrap_or(&0),
        segments.iter().max().unwrap_or(&0),
    );
    print!("{}", bench::table(tree.as_ref(), &gossipsub));
    if let Some(json) = json {
        let output = Output {
            scenario: scenario.name.clone(),
            ratios: tree.as_ref().map(|tree| Ratios::of(&gossipsub, tree)),
            tree_mesh: tree,
            gossipsub,
            tree_mesh_report: tree_report,
            gossipsub_nodes: flood,
        };
        let text = serde_json::to_string_pretty(&output)?;
        std::fs::write(&json, text + "\n").with_context(|| format!("cannot write {}", json.display()))?;
    }
    Ok(())
}
