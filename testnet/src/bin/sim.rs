//! `sim SCENARIO.toml [--json REPORT.json]`: runs a scenario in the discrete-event simulator, shows progress, prints
//! a summary and optionally writes the JSON report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use streamrp2p_testnet::report::Report;
use streamrp2p_testnet::scenario::{Protocol, Scenario};
use streamrp2p_testnet::sim::{Simulation, Strategy};
use streamrp2p_testnet::strategies::CdnOnly;

fn main() -> ExitCode {
    match run_scenario() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_scenario() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut scenario_path = None;
    let mut json = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = Some(PathBuf::from(args.next().context("--json needs a file name")?)),
            "-h" | "--help" => {
                println!("usage: sim SCENARIO.toml [--json REPORT.json]");
                return Ok(());
            }
            _ if scenario_path.is_none() => scenario_path = Some(PathBuf::from(arg)),
            _ => bail!("unexpected argument {arg:?}; usage: sim SCENARIO.toml [--json REPORT.json]"),
        }
    }
    let path = scenario_path.context("usage: sim SCENARIO.toml [--json REPORT.json]")?;
    let scenario = Scenario::load(&path)?;
    let report = match scenario.protocol {
        Protocol::CdnOnly => run(Simulation::new(scenario.clone(), CdnOnly::default())),
        other => bail!(
            "protocol {} is not in the simulator yet; only cdn-only runs so far",
            other.name()
        ),
    };
    println!("{}", report.summary());
    if let Some(json) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&json, text + "\n").with_context(|| format!("cannot write {}", json.display()))?;
    }
    Ok(())
}

/// Runs to the end, one virtual second at a time, with a progress bar on stderr.
fn run<S: Strategy>(mut sim: Simulation<S>) -> Report {
    let bar = ProgressBar::new(sim.duration().ceil() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} virtual s")
            .expect("valid template"),
    );
    let mut t = 0.0;
    while sim.run_until(t) {
        t += 1.0;
        bar.set_position(t as u64);
    }
    bar.finish_and_clear();
    sim.report()
}
