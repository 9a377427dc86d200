//! `sim SCENARIO.toml [--seed N] [--json REPORT.json]`: runs a scenario in the discrete-event simulator, shows
//! progress, prints a summary and optionally writes the JSON report. `--seed` replaces the scenario's seed: the same
//! scenario with other draws of arrivals, lifetimes, capacities and latencies.
//!
//! For protocol work: `SIM_DEBUG=1` prints event and message counts, how many segments missed their deadlines in
//! each 4 s of the run and, for tree-mesh, the topology every virtual minute (`SIM_EVERY=10`: every 10 s); `SIM_TUNE=child_rate_x=2,mesh_degree=6,…` overrides tree-mesh tunables and
//! `SIM_TRACE=N` prints every input and output of viewer N's state machine (both with `SIM_DEBUG`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use streamrp2p_testnet::report::Report;
use streamrp2p_testnet::scenario::{Protocol, Scenario};
use streamrp2p_testnet::sim::{Simulation, Strategy};
use streamrp2p_testnet::strategies::{CdnOnly, GossipsubFlood, TreeMeshSim};

fn main() -> ExitCode {
    with_huge_pages();
    match run_scenario() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the simulator again, in place of this process, with glibc's malloc told to back its heap with transparent
/// huge pages (a tunable it reads only at start-up). A large scenario touches hundreds of MiB of state at random —
/// each event another viewer's machine — and with 4 KiB pages much of its time went to TLB misses: huge pages cut
/// the wall time of 10,000 viewers by a fifth or more on this kind of machine. A `GLIBC_TUNABLES` already set is
/// left as it is, so this happens at most once; elsewhere, or if the exec fails, the run goes on as it is.
fn with_huge_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        command.arg0(args.next().unwrap_or_default()).args(args);
        let error = command.env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1").exec();
        eprintln!("note: running without huge pages: {error}");
    }
}

fn run_scenario() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut scenario_path = None;
    let mut json = None;
    let mut seed = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = Some(PathBuf::from(args.next().context("--json needs a file name")?)),
            "--seed" => {
                let value = args.next().context("--seed needs a number")?;
                seed = Some(
                    value
                        .parse::<u64>()
                        .with_context(|| format!("--seed {value:?} is not a number"))?,
                );
            }
            "-h" | "--help" => {
                println!("usage: sim SCENARIO.toml [--seed N] [--json REPORT.json]");
                return Ok(());
            }
            _ if scenario_path.is_none() => scenario_path = Some(PathBuf::from(arg)),
            _ => bail!("unexpected argument {arg:?}; usage: sim SCENARIO.toml [--seed N] [--json REPORT.json]"),
        }
    }
    let path = scenario_path.context("usage: sim SCENARIO.toml [--seed N] [--json REPORT.json]")?;
    let mut scenario = Scenario::load(&path)?;
    if let Some(seed) = seed {
        scenario.seed = seed;
    }
    let report = match scenario.protocol {
        Protocol::CdnOnly => run(Simulation::new(scenario.clone(), CdnOnly::default())),
        Protocol::TreeMesh if std::env::var_os("SIM_DEBUG").is_some() => {
            let tune = std::env::var("SIM_TUNE").unwrap_or_default();
            let mut sim = Simulation::new(
                scenario.clone(),
                TreeMeshSim::new(move |c| {
                    for kv in tune.split(',').filter(|kv| !kv.is_empty()) {
                        let (k, v) = kv.split_once('=').expect("k=v");
                        let v: f64 = v.parse().expect("number");
                        match k {
                            "child_rate_x" => c.child_rate_x = v,
                            "root_child_rate_x" => c.root_child_rate_x = v,
                            "stable_after_s" => c.stable_after_s = v,
                            "mesh_degree" => c.mesh_degree = v as usize,
                            "startup_s" => c.startup_s = v,
                            "silence_s" => c.silence_s = v,
                            "pull_timeout_s" => c.pull_timeout_s = v,
                            "recruit_timeout_s" => c.recruit_timeout_s = v,
                            "closer_after_s" => c.closer_after_s = v,
                            "closer_gain_s" => c.closer_gain_s = v,
                            "closer_probes" => c.closer_probes = v as usize,
                            "max_backbone_depth" => c.max_backbone_depth = v as usize,
                            "max_pulls" => c.max_pulls = v as usize,
                            "max_pulls_per_peer" => c.max_pulls_per_peer = v as usize,
                            "serve_queue" => c.serve_queue = v as usize,
                            "deadline_margin_s" => c.deadline_margin_s = v,
                            "child_queue_segments" => c.child_queue_segments = v,
                            "slow_pull_s" => c.slow_pull_s = v,
                            "max_serve_wait_s" => c.max_serve_wait_s = v,
                            _ => panic!("unknown {k}"),
                        }
                    }
                }),
            );
            let every: f64 = std::env::var("SIM_EVERY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(60.0);
            let mut t = 0.0;
            while sim.run_until(t) {
                t += if every < 5.0 { every } else { 5.0 };
                if t % every == 0.0 {
                    eprintln!("t={t}: {}", sim.strategy().topology());
                    eprintln!("  deep: {}", sim.strategy().deep_path(sim.viewers()));
                }
            }
            sim.report()
        }
        Protocol::TreeMesh => run(Simulation::new(scenario.clone(), TreeMeshSim::default())),
        Protocol::GossipsubFlood => run(Simulation::new(scenario.clone(), GossipsubFlood::default())),
    };
    println!("{}", report.summary());
    if std::env::var_os("SIM_DEBUG").is_some() {
        streamrp2p_testnet::sim::DEBUG_COUNTS.with(|c| {
            eprintln!(
                "segment join leave flow startflow deliver message timer sample: {:?}",
                c.borrow()
            )
        });
        streamrp2p_testnet::strategies::MSG_COUNTS.with(|c| eprintln!("{:?}", c.borrow()));
    }
    if let Some(json) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&json, text + "\n").with_context(|| format!("cannot write {}", json.display()))?;
    }
    Ok(())
}

/// Runs to the end, one virtual second at a time, with a progress bar on stderr — or, when stderr is not a terminal
/// (a log, CI), a line per virtual minute with the wall time so far.
fn run<S: Strategy>(mut sim: Simulation<S>) -> Report {
    use std::io::IsTerminal;
    let bar = ProgressBar::new(sim.duration().ceil() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} virtual s")
            .expect("valid template"),
    );
    let log = !std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut t = 0.0;
    while sim.run_until(t) {
        t += 1.0;
        bar.set_position(t as u64);
        if log && t % 60.0 == 0.0 {
            eprintln!("{t:.0} virtual s in {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    bar.finish_and_clear();
    sim.report()
}
