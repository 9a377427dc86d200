//! The simulator: the committed scenarios are valid, a run is reproducible from its seed, and a CDN that can carry
//! everyone gives smooth playback while one that cannot gives what its capacity allows.

use std::path::Path;

use streamrp2p_testnet::scenario::{Adversaries, Behaviour, Protocol, Scenario};
use streamrp2p_testnet::sim::Simulation;
use streamrp2p_testnet::strategies::{CdnOnly, GossipsubFlood, TreeMeshSim};

fn scenario(name: &str) -> Scenario {
    Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)).unwrap()
}

fn small_cdn(viewers: u32, origin_mbps: f64) -> Scenario {
    Scenario {
        name: "small-cdn".into(),
        protocol: Protocol::CdnOnly,
        viewers,
        duration_s: 60.0,
        join_window_s: 10.0,
        churn_per_min: 0.2,
        origin_mbps,
        ..scenario("1k-cdn-only.toml")
    }
}

#[test]
fn every_committed_scenario_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        scenario(name);
    }
    for wanted in [
        "50.toml",
        "1k.toml",
        "10k-churn.toml",
        "100k.toml",
        "1k-cdn-only.toml",
        "1k-gossipsub-flood.toml",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} is missing");
    }
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let a = Simulation::new(small_cdn(200, 200.0), CdnOnly::default()).run();
    let b = Simulation::new(small_cdn(200, 200.0), CdnOnly::default()).run();
    assert_eq!(a.deterministic_part(), b.deterministic_part());
    let mut other_seed = small_cdn(200, 200.0);
    other_seed.seed += 1;
    let c = Simulation::new(other_seed, CdnOnly::default()).run();
    assert_ne!(a.deterministic_part(), c.deterministic_part(), "the seed must matter");
}

#[test]
fn an_ample_cdn_plays_smoothly_and_a_small_one_cannot() {
    // 50 viewers need 125 Mbit/s; 1 Gbit/s carries them with room to spare.
    let ample = Simulation::new(small_cdn(50, 1000.0), CdnOnly::default()).run();
    assert_eq!(ample.offload, Some(0.0), "nothing comes from peers in cdn-only");
    assert_eq!(ample.availability, Some(1.0), "{ample:?}");
    assert_eq!(ample.rebuffer_ratio, Some(0.0), "{ample:?}");
    // A segment is whole at the broadcaster, requested, and sent: two one-way latencies of at most 150 ms plus
    // 625 kB at a share of the origin.
    assert!(ample.lag_p99_s.unwrap() < 1.0, "{ample:?}");
    assert!(ample.ttfb_p95_s.unwrap() < 1.0, "{ample:?}");
    assert!(ample.origin_peak_mbps.unwrap() <= 1000.0 + 1e-6);

    // 50 Mbit/s for 125 Mbit/s of demand: the origin runs flat out and viewers stall most of the time.
    let starved = Simulation::new(small_cdn(50, 50.0), CdnOnly::default()).run();
    assert!((starved.origin_peak_mbps.unwrap() - 50.0).abs() < 1e-6, "{starved:?}");
    assert!(starved.availability.unwrap() < 0.6, "{starved:?}");
    assert!(starved.rebuffer_ratio.unwrap() > 0.3, "{starved:?}");
}

fn small(protocol: Protocol) -> Scenario {
    Scenario {
        name: "small".into(),
        protocol,
        viewers: 100,
        duration_s: 90.0,
        join_window_s: 15.0,
        churn_per_min: 0.05,
        ..scenario("50.toml")
    }
}

#[test]
fn tree_mesh_carries_a_small_stream_from_peers_and_is_reproducible() {
    let a = Simulation::new(small(Protocol::TreeMesh), TreeMeshSim::default()).run();
    let b = Simulation::new(small(Protocol::TreeMesh), TreeMeshSim::default()).run();
    assert_eq!(a.deterministic_part(), b.deterministic_part());
    // At 100 viewers the broadcaster's six children take a sixteenth of all bytes from it, not from viewers: offload
    // cannot reach 0.95 here (it does at 300 viewers and more). Everything else meets the design's targets.
    assert!(a.offload.unwrap() > 0.85, "{a:?}");
    assert!(a.ttfb_p95_s.unwrap() <= 1.5, "{a:?}");
    assert!(a.availability.unwrap() >= 0.999, "{a:?}");
    assert!(a.rebuffer_ratio.unwrap() <= 0.01, "{a:?}");
    assert!(a.duplicate_ratio.unwrap() <= 0.02, "{a:?}");
    assert!(a.control_overhead_ratio.unwrap() <= 0.03, "{a:?}");
}

/// The `1k` scenario's shape at 300 viewers for 2 minutes: what CI can afford of it.
fn three_hundred() -> Scenario {
    Scenario {
        name: "300".into(),
        viewers: 300,
        duration_s: 120.0,
        ..scenario("1k.toml")
    }
}

#[test]
fn tree_mesh_meets_the_design_targets_at_300_viewers_with_churn() {
    // With the machines' wake-ups checked: none is woken early while it would still have something to do.
    let r = Simulation::new(three_hundred(), TreeMeshSim::default().checking_wakeups()).run();
    // Every target of the design (issue 3's acceptance, checked at 1,000 and 10,000 viewers by the README's runs).
    assert!(r.offload.unwrap() >= 0.95, "{r:?}");
    assert!(r.ttfb_p95_s.unwrap() <= 1.5, "{r:?}");
    assert!(r.rebuffer_ratio.unwrap() <= 0.01, "{r:?}");
    assert!(r.lag_p95_s.unwrap() <= 2.5, "{r:?}");
    assert!(r.availability.unwrap() >= 0.9999, "{r:?}");
    assert!(r.duplicate_ratio.unwrap() <= 0.02, "{r:?}");
    assert!(r.control_overhead_ratio.unwrap() <= 0.03, "{r:?}");
    // The origin only fills gaps: its peak stays far below the 750 Mbit/s that 300 HLS players would draw.
    assert!(r.origin_peak_mbps.unwrap() < 100.0, "{r:?}");
}

#[test]
fn gossipsub_flood_duplicates_what_the_tree_mesh_does_not() {
    let tree = Simulation::new(small(Protocol::TreeMesh), TreeMeshSim::default()).run();
    let flood = Simulation::new(small(Protocol::GossipsubFlood), GossipsubFlood::default()).run();
    assert!(flood.offload.unwrap() > 0.5, "{flood:?}");
    assert!(
        flood.duplicate_ratio.unwrap() > 2.0 * tree.duplicate_ratio.unwrap(),
        "flood {flood:?} tree {tree:?}"
    );
}

/// `three_hundred` with a tenth of its viewers adversaries: withholders that advertise 6× the bitrate and stop
/// forwarding 20 s after joining, and every other behaviour.
fn three_hundred_with_adversaries(behaviours: &[Behaviour]) -> Scenario {
    Scenario {
        name: "300-adversaries".into(),
        adversaries: Some(Adversaries {
            share: 0.1,
            behaviours: behaviours.to_vec(),
            after_s: 20.0,
            rate_per_s: 20.0,
            claimed_upload_x: 6.0,
        }),
        ..three_hundred()
    }
}

#[test]
fn adversaries_are_banned_while_honest_viewers_keep_playing() {
    for behaviours in [&[Behaviour::Withhold][..], &Behaviour::ALL[..]] {
        let r = Simulation::new(three_hundred_with_adversaries(behaviours), TreeMeshSim::default()).run();
        let a = r.adversaries.as_ref().expect("adversary figures");
        // The honest viewers' figures (the report's are over honest viewers only).
        assert!(r.availability.unwrap() >= 0.999, "{r:?}");
        assert!(r.rebuffer_ratio.unwrap() <= 0.01, "{r:?}");
        assert!(r.offload.unwrap() >= 0.9, "{r:?}");
        // Most nodes lied to ban the liar, within seconds (a withholder's child that leaves it before the evidence
        // is in does not); no honest peer is blamed for a lie, and hardly any for withholding (a parent loaded
        // enough to keep a pull waiting seconds cannot be told from one that withholds).
        assert!(a.lied_to > 0 && a.adversaries_banned > 0, "{a:?}");
        assert!(a.banned as f64 >= 0.5 * a.lied_to as f64, "{a:?}");
        assert!(a.ban_delay_p95_s.unwrap() <= 10.0, "{a:?}");
        assert!(a.honest_banned <= 3, "{a:?}");
        assert!(
            a.honest_penalised.get("withholding").copied().unwrap_or(0) <= 3,
            "{a:?}"
        );
        for offence in ["lie", "bad_block", "forged_entry", "malformed"] {
            assert!(!a.honest_penalised.contains_key(offence), "{a:?}");
        }
        // Nothing is pushed to a peer that did not ask but the one block a former parent had in flight.
        assert!(a.unsolicited_max_bytes <= 2 * 65_536, "{a:?}");
    }
}
