//! `testnet local SCENARIO.toml [--json REPORT.json] [--seed N] [--keep DIR] [--node-bin PATH]`: runs a scenario
//! for real — ffmpeg, a broadcaster and the scenario's viewers as `streamrp2p` processes on loopback, the origin in
//! this process — and prints the same summary, and writes the same JSON report, as `sim`. Then checks that every
//! segment the viewers hold is the broadcaster's, byte for byte, and exits non-zero if one is not.
//!
//! The node binary: `--node-bin`, else `$STREAMRP2P_BIN`, else `streamrp2p` next to this executable (build it with
//! `cargo build --release -p streamrp2p-node`). `RUST_LOG` passes through to the nodes; their stderr goes to
//! `logs/` in the run's directory, a temporary one unless `--keep DIR`.
//!
//! A debugging aid: `--no-caps` starts the nodes without `--max-upload-kbps`, for a node binary that lacks it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use streamrp2p_testnet::local::{self, LocalOptions};
use streamrp2p_testnet::report::Report;
use streamrp2p_testnet::scenario::Scenario;

const USAGE: &str = "usage: testnet local SCENARIO.toml [--json REPORT.json] [--seed N] [--keep DIR] [--node-bin PATH]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("local") => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(other) => bail!("unknown command {other:?}; {USAGE}"),
        None => bail!("{USAGE}"),
    }
    let mut scenario_path = None;
    let mut json = None;
    let mut seed = None;
    let mut options = LocalOptions::default();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value; {USAGE}"));
        match arg.as_str() {
            "--json" => json = Some(PathBuf::from(value("--json")?)),
            "--keep" => options.keep = Some(PathBuf::from(value("--keep")?)),
            "--node-bin" => options.node_bin = Some(PathBuf::from(value("--node-bin")?)),
            "--seed" => {
                let v = value("--seed")?;
                seed = Some(
                    v.parse::<u64>()
                        .with_context(|| format!("--seed {v:?} is not a number"))?,
                );
            }
            // Hidden: a debugging aid for node binaries without `--max-upload-kbps`.
            "--no-caps" => options.no_caps = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            _ if scenario_path.is_none() && !arg.starts_with('-') => scenario_path = Some(PathBuf::from(arg)),
            _ => bail!("unexpected argument {arg:?}; {USAGE}"),
        }
    }
    let path = scenario_path.context(USAGE)?;
    let mut scenario = Scenario::load(&path)?;
    if let Some(seed) = seed {
        scenario.seed = seed;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let write_report = |report: &Report| -> Result<()> {
        println!("{}", report.summary());
        if let Some(json) = &json {
            let text = serde_json::to_string_pretty(report)?;
            std::fs::write(json, text + "\n").with_context(|| format!("cannot write {}", json.display()))?;
        }
        Ok(())
    };
    let outcome = runtime.block_on(async {
        // On Ctrl-C or SIGTERM the run is dropped, and with it every process it started.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            outcome = local::run_with_report(&scenario, options, write_report) => outcome,
            _ = tokio::signal::ctrl_c() => bail!("interrupted; every process of the run is stopped"),
            _ = term.recv() => bail!("terminated; every process of the run is stopped"),
        }
    })?;
    println!("{}", outcome.check);
    if outcome.check.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the viewers' segments are not all the broadcaster's (or none could be checked)");
        Ok(ExitCode::FAILURE)
    }
}
