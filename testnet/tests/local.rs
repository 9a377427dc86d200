//! The local testnet with real processes: ffmpeg, a broadcaster and viewers of the node binary on loopback.
//!
//! The node binary is found as `testnet local` finds it: `$STREAMRP2P_BIN`, else `streamrp2p` in the target
//! directory these tests were built in (`cargo nextest run --workspace` builds it; alone, build it with
//! `cargo build -p streamrp2p-node`). ffmpeg must be installed (`scripts/test` installs it).
//!
//! A node binary without the policy flags (`--max-upload-kbps`, …) runs uncapped: these tests assert what any node
//! can do — the bytes, the offload, the origin fallback — and each newer metric only if the node reports it.

use std::path::Path;
use std::time::Duration;

use streamrp2p_testnet::local::{self, LocalNet, LocalOptions, node_bin, schedule};
use streamrp2p_testnet::scenario::Scenario;

fn smoke() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/local-smoke.toml");
    Scenario::load(&path).unwrap()
}

fn options() -> LocalOptions {
    let bin = node_bin::locate(None).unwrap_or_else(|e| panic!("{e:#}"));
    LocalOptions {
        no_caps: !node_bin::takes_flag(&bin, "--max-upload-kbps"),
        node_bin: Some(bin),
        quiet: true,
        ..LocalOptions::default()
    }
}

/// Whether process `pid` still runs (a zombie, killed but not yet reaped, does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

async fn sleep_until(net: &LocalNet, t: f64) {
    tokio::time::sleep_until(net.at(t).into()).await;
}

/// Segments each live viewer has completed.
fn segments(net: &LocalNet) -> Vec<u64> {
    net.live_viewers()
        .into_iter()
        .map(|id| net.status(id).map_or(0, |s| s.segments))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_scenario_with_the_origin_stopped_for_a_while() {
    let scenario = smoke();
    let mut net = LocalNet::start(&scenario, options()).await.unwrap();
    assert_eq!(net.stream_id().len(), 64);
    for arrival in schedule::plan(&scenario) {
        sleep_until(&net, arrival.at_s).await;
        net.add_viewer(arrival.upload_x).await.unwrap();
    }
    assert_eq!(net.live_viewers().len(), scenario.viewers as usize);

    // Stopping the origin leaves P2P delivery running.
    sleep_until(&net, 18.0).await;
    net.poll_now().await;
    let before = segments(&net);
    let origin_url = net.origin().url();
    net.origin().stop().await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        http.get(format!("{origin_url}/0.ts")).send().await.is_err(),
        "the stopped origin still answers"
    );
    sleep_until(&net, 28.0).await;
    net.poll_now().await;
    let after = segments(&net);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            a >= &(b + 3),
            "viewer {i} went from {b} to {a} segments without the origin"
        );
    }

    // Started again, it answers a viewer's single-block request with the broadcaster's bytes.
    net.origin().start().await.unwrap();
    let seq = net.broadcaster_status().unwrap().segments.saturating_sub(2);
    let block = http
        .get(format!("{origin_url}/{seq}.ts"))
        .header("Range", "bytes=0-65535")
        .send()
        .await
        .unwrap();
    assert_eq!(block.status(), 206);
    let block = block.bytes().await.unwrap();
    let whole = http
        .get(format!(
            "{}/streams/{}/{seq}.ts",
            net.broadcaster().gateway,
            net.stream_id()
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(block, whole.slice(..65536));

    sleep_until(&net, scenario.duration_s).await;
    net.poll_now().await;
    let report = net.report();
    let offload = report.offload.expect("offload is measured");
    assert!(offload > 0.0, "no viewer got a byte from another: {report:?}");
    let statuses: Vec<_> = net.statuses().into_iter().filter_map(|(_, s)| s).collect();
    assert_eq!(statuses.len(), scenario.viewers as usize);
    if statuses.iter().any(|s| s.segments_on_time.is_some()) {
        assert!(report.availability.is_some(), "{report:?}");
    } else {
        assert_eq!(report.availability, None, "not reported, so not invented");
    }
    if statuses.iter().all(|s| s.ttfb_s.is_none()) {
        assert_eq!(report.ttfb_p50_s, None);
    }
    assert_eq!(report.events, 0);
    assert_eq!(report.supply_ratio, Some(scenario.supply_ratio()));

    let check = net.check_segments().await;
    assert!(check.ok(), "{check}");
    assert!(
        check.checked >= 5 * scenario.viewers as u64,
        "only {} segments compared",
        check.checked
    );

    let pids = net.pids();
    assert_eq!(
        pids.len(),
        scenario.viewers as usize + 2,
        "viewers, broadcaster, ffmpeg"
    );
    net.shutdown().await;
    let left: Vec<u32> = pids.into_iter().filter(|&pid| running(pid)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_run_reports_and_checks_the_bytes() {
    let mut scenario = smoke();
    scenario.viewers = 3;
    scenario.duration_s = 24.0;
    scenario.join_window_s = 6.0;
    let outcome = local::run(&scenario, options()).await.unwrap();
    assert!(outcome.check.ok(), "{}", outcome.check);
    assert_eq!(outcome.report.name, "local-smoke");
    assert_eq!(outcome.report.viewers, 3);
    assert!(outcome.report.offload.is_some());
    assert!(outcome.report.wall_s >= 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_testnet_kills_its_processes() {
    let scenario = smoke();
    let net = LocalNet::start(&scenario, options()).await.unwrap();
    net.add_viewer(1.5).await.unwrap();
    let pids = net.pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&pid| running(pid)));
    // As a panicking test would: no shutdown, just the drop.
    drop(net);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left: Vec<u32> = pids.into_iter().filter(|&pid| running(pid)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
}
