//! A whole run of a scenario: the plan's joins and leaves at their stream times, then the report and the byte check.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::LocalOptions;
use super::check::SegmentCheck;
use super::net::{LocalNet, ViewerId};
use super::schedule::{self, Arrival};
use crate::report::Report;
use crate::scenario::Scenario;

/// How often a run prints a progress line (stderr).
const PROGRESS_EVERY_S: f64 = 10.0;

/// What a run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The report (taken before the processes were stopped).
    pub report: Report,
    /// The byte check of the viewers live at the end.
    pub check: SegmentCheck,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Leave(usize),
    Join(usize),
}

/// Runs `scenario` with real processes: starts the testnet, lets the plan's viewers join and leave at their
/// times until `duration_s` of stream time, reads every node's status, reports, checks the bytes, and stops
/// everything.
pub async fn run(scenario: &Scenario, options: LocalOptions) -> Result<Outcome> {
    run_with_report(scenario, options, |_| Ok(())).await
}

/// [`run`], handing the report to `on_report` as soon as it is made — before the byte check, which can take a
/// while — so that a caller can write it whatever the check finds.
pub async fn run_with_report(
    scenario: &Scenario,
    options: LocalOptions,
    on_report: impl FnOnce(&Report) -> Result<()>,
) -> Result<Outcome> {
    let quiet = options.quiet;
    let plan = schedule::plan(scenario);
    let mut net = LocalNet::start(scenario, options).await?;
    if !quiet {
        eprintln!(
            "stream {} live; {} viewers to join over {} s (and {} to replace leavers) in {} s, run files in {}",
            net.stream_id(),
            scenario.viewers,
            scenario.join_window_s,
            plan.len() - scenario.viewers as usize,
            scenario.duration_s,
            net.run_dir().display()
        );
    }
    let mut steps: Vec<(f64, Step)> = Vec::new();
    for (i, Arrival { at_s, leave_s, .. }) in plan.iter().enumerate() {
        steps.push((*at_s, Step::Join(i)));
        if let Some(leave) = leave_s {
            steps.push((*leave, Step::Leave(i)));
        }
    }
    // At the same time, the leaver goes before its replacement comes.
    steps.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then_with(|| matches!(a.1, Step::Join(_)).cmp(&matches!(b.1, Step::Join(_))))
    });
    let mut ids: Vec<Option<ViewerId>> = vec![None; plan.len()];
    let mut adversaries: Vec<Option<usize>> = vec![None; plan.len()];
    let mut progress = Progress::new(quiet);
    for (at, step) in steps {
        wait_until(&net, at, &mut progress).await;
        match step {
            Step::Join(i) => match &plan[i].adversary {
                Some(behaviours) => {
                    let index = net
                        .add_adversary(behaviours)
                        .await
                        .with_context(|| format!("cannot start adversary {i}"))?;
                    adversaries[i] = Some(index);
                }
                None => {
                    let id = net
                        .add_viewer(plan[i].upload_x)
                        .await
                        .with_context(|| format!("cannot start viewer {i}"))?;
                    ids[i] = Some(id);
                }
            },
            Step::Leave(i) => {
                if let Some(id) = ids[i] {
                    net.stop_viewer(id).await?;
                }
                if let Some(index) = adversaries[i] {
                    net.stop_adversary(index).await;
                }
            }
        }
    }
    wait_until(&net, scenario.duration_s, &mut progress).await;
    net.poll_now().await;
    let mut report = net.report();
    if scenario.adversaries.is_some() {
        // The adversaries' last records, then the figures; the processes that lived through the run are counted
        // before anything is stopped.
        let died = net.honest_died();
        net.stop_adversaries().await;
        let mut figures = net.adversary_figures().await;
        figures.honest_processes_died = Some(died);
        report.adversaries = Some(figures);
    }
    // Every node's last status, for looking into a run afterwards (kept with `--keep`).
    let statuses = serde_json::json!({
        "broadcaster": net.broadcaster_status(),
        "viewers": net.statuses().into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
        "penalties": net.honest_penalties(),
    });
    let path = net.run_dir().join("statuses.json");
    if let Err(error) = std::fs::write(&path, statuses.to_string()) {
        eprintln!("cannot write {}: {error}", path.display());
    }
    on_report(&report)?;
    net.stop_source().await;
    if !quiet {
        eprintln!("checking the viewers' segments against the broadcaster's");
    }
    let check = net.check_segments().await;
    net.shutdown().await;
    Ok(Outcome { report, check })
}

/// Prints a line every [`PROGRESS_EVERY_S`] of stream time.
struct Progress {
    quiet: bool,
    next: f64,
    started: Instant,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Self {
            quiet,
            next: PROGRESS_EVERY_S,
            started: Instant::now(),
        }
    }

    fn tick(&mut self, net: &LocalNet) {
        let t = net.stream_time();
        if self.quiet || t < self.next {
            return;
        }
        self.next = (t / PROGRESS_EVERY_S).floor() * PROGRESS_EVERY_S + PROGRESS_EVERY_S;
        let r = net.report();
        let f = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
        eprintln!(
            "t={t:.0} s: {} viewers live, offload {}, origin {:.1} MB so far ({:.0} s wall)",
            net.live_viewers().len(),
            f(r.offload),
            net.origin_bytes_served() as f64 / 1e6,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// Sleeps until stream time `t`, printing progress on the way.
async fn wait_until(net: &LocalNet, t: f64, progress: &mut Progress) {
    loop {
        progress.tick(net);
        let now = net.stream_time();
        if now >= t {
            return;
        }
        let step = (t - now).min(1.0);
        tokio::time::sleep(Duration::from_secs_f64(step)).await;
    }
}
