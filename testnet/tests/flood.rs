//! A tiny gossipsub flood network for real: ffmpeg, a broadcaster and three watchers in a full mesh on loopback.
//! Every watcher must put every segment back together byte for byte, and with three watchers in a full mesh some
//! blocks must arrive more than once — the duplicates gossipsub's metrics count and the application never sees.

use std::path::Path;
use std::time::Duration;

use streamrp2p_testnet::flood::playlist;
use streamrp2p_testnet::flood::process::FloodProcess;
use streamrp2p_testnet::flood::source::{PLAYLIST, start_ffmpeg};
use streamrp2p_testnet::scenario::Scenario;

const VIDEO: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_watchers_reassemble_every_segment() {
    let bin = Path::new(env!("CARGO_BIN_EXE_flood_node"));
    let scenario = Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/local-30.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hls = dir.path().join("hls");
    std::fs::create_dir_all(&hls).unwrap();
    let playlist_path = hls.join(PLAYLIST);

    let broadcaster = FloodProcess::start(
        bin,
        &["broadcast", "--hls", playlist_path.to_str().unwrap()],
        Some(&dir.path().join("broadcaster.log")),
    )
    .await
    .unwrap();
    // Each watcher dials the broadcaster and every watcher before it: a full mesh of four nodes.
    let mut watchers: Vec<FloodProcess> = Vec::new();
    for i in 0..3 {
        let out = dir.path().join(format!("out-{i}"));
        let mut args = vec!["watch".to_owned(), "--out".into(), out.display().to_string()];
        for peer in std::iter::once(&broadcaster.listen).chain(watchers.iter().map(|w| &w.listen)) {
            args.extend(["--bootstrap".into(), peer.clone()]);
        }
        let log = dir.path().join(format!("watcher-{i}.log"));
        watchers.push(FloodProcess::start(bin, &args, Some(&log)).await.unwrap());
    }
    // A few heartbeats for the mesh to form before the first segment (gossipsub does not replay history).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ffmpeg = start_ffmpeg(&scenario, &hls, true).unwrap();
    tokio::time::sleep(VIDEO).await;
    ffmpeg.start_kill().unwrap();
    ffmpeg.wait().await.unwrap();
    // Let the last segment's blocks cross the mesh.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut figures = Vec::new();
    for watcher in watchers {
        figures.push(watcher.stop().await.unwrap());
    }
    let broadcaster = broadcaster.stop().await.unwrap();
    assert!(broadcaster.segments >= 5, "published {} segments", broadcaster.segments);
    assert_eq!(broadcaster.publish_failures, 0);

    let listed = playlist::parse(&std::fs::read_to_string(&playlist_path).unwrap());
    for (i, watcher) in figures.iter().enumerate() {
        assert_eq!(
            watcher.segments, broadcaster.segments,
            "watcher {i} completed every published segment"
        );
        assert_eq!(watcher.bad_messages, 0);
        assert_eq!(watcher.lags_s.len() as u64, watcher.segments);
        assert!(
            watcher.lags_s.iter().all(|lag| (0.0..5.0).contains(lag)),
            "{:?}",
            watcher.lags_s
        );
        let mut bytes = 0;
        for (seq, uri) in listed.iter().take(broadcaster.segments as usize) {
            let original = std::fs::read(hls.join(uri)).unwrap();
            let copy = std::fs::read(dir.path().join(format!("out-{i}/{seq}.ts")))
                .unwrap_or_else(|e| panic!("watcher {i} lacks segment {seq}: {e}"));
            assert!(
                copy == original,
                "watcher {i}: segment {seq} differs from the broadcaster's"
            );
            bytes += original.len() as u64;
        }
        assert_eq!(watcher.payload_bytes_received, bytes);
        let counters = watcher.gossipsub;
        assert!(counters.recv_msgs_unfiltered >= counters.recv_msgs);
        assert_eq!(
            counters.recv_msgs_unfiltered > counters.recv_msgs,
            watcher.duplicate_payload_bytes > 0,
            "duplicate bytes follow duplicate messages"
        );
    }
    let duplicates: u64 = figures.iter().map(|w| w.duplicate_payload_bytes).sum();
    let uploaded: u64 = figures.iter().map(|w| w.payload_bytes_uploaded).sum();
    assert!(
        duplicates > 0,
        "a full mesh of three watchers receives some blocks twice"
    );
    // Every duplicate was uploaded by someone, and watchers forwarded blocks to each other.
    assert!(uploaded > 0);
    assert!(uploaded + broadcaster.payload_bytes_uploaded >= duplicates);
}
