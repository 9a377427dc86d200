//! A real stream end to end: ffmpeg writes live HLS, a broadcaster process follows it, and two viewer processes
//! that know only the broadcaster's address fetch it over libp2p on loopback and serve it as HLS.

mod common;

use std::time::Duration;

use common::{Proc, ffmpeg_live, ffmpeg_segments, ffprobe_ok, get_bytes, get_json, streamrp2p};

const LIVE_SECONDS: u32 = 24;

fn start_node(dir: &std::path::Path, name: &str, args: &[&str]) -> (Proc, String) {
    let mut cmd = streamrp2p();
    cmd.arg("--data-dir").arg(dir.join(name));
    cmd.args([
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
    ]);
    cmd.args(["--http", "127.0.0.1:0"]).args(args);
    let mut proc = Proc::spawn(cmd);
    let gateway = proc.wait_line("gateway: ", Duration::from_secs(30));
    (proc, gateway)
}

fn stream_status(gateway: &str) -> serde_json::Value {
    let status = get_json(&format!("{gateway}/api/status"));
    status["streams"][0].clone()
}

#[test]
fn broadcaster_and_two_viewers_over_libp2p() {
    let dir = tempfile::tempdir().unwrap();
    let hls = dir.path().join("hls");
    std::fs::create_dir(&hls).unwrap();
    let playlist = hls.join("live.m3u8");

    // The broadcaster starts first and waits for ffmpeg's playlist to appear.
    let (mut broadcaster, b_gateway) = start_node(
        dir.path(),
        "b",
        &["broadcast", "--name", "e2e", "--hls", playlist.to_str().unwrap()],
    );
    let stream = broadcaster.wait_line("stream: ", Duration::from_secs(10));
    let _ffmpeg = ffmpeg_live(&hls, LIVE_SECONDS);
    let status = get_json(&format!("{b_gateway}/api/status"));
    let bootstrap = status["listen_addrs"][0].as_str().unwrap().to_owned();
    assert!(
        bootstrap.contains("/p2p/"),
        "listen addresses end in /p2p/<peer id>: {bootstrap}"
    );

    let (_viewer1, v1_gateway) = start_node(dir.path(), "v1", &["--bootstrap", &bootstrap, "watch", &stream]);
    // The second viewer joins later, when the first holds segments it can serve.
    std::thread::sleep(Duration::from_secs(8));
    let (_viewer2, v2_gateway) = start_node(dir.path(), "v2", &["--bootstrap", &bootstrap, "watch", &stream]);

    // Let ffmpeg finish and the last segment spread.
    std::thread::sleep(Duration::from_secs(u64::from(LIVE_SECONDS) - 8 + 8));

    let source = ffmpeg_segments(&hls);
    assert!(source.len() >= 10, "ffmpeg wrote {} segments", source.len());
    let mut held_bytes = Vec::new();
    for gateway in [&v1_gateway, &v2_gateway] {
        let manifest = get_json(&format!("{gateway}/streams/{stream}/manifest"));
        let entries = manifest.as_array().unwrap();
        assert!(entries.len() >= 5, "{gateway} holds only {} segments", entries.len());
        let mut bytes = 0;
        for entry in entries {
            let seq = entry["seq"].as_u64().unwrap() as usize;
            let served = get_bytes(&format!("{gateway}/streams/{stream}/{seq}.ts")).unwrap();
            let original = std::fs::read(&source[seq]).unwrap();
            assert!(
                served == original,
                "{gateway}: segment {seq} differs from ffmpeg's {}",
                source[seq].display()
            );
            bytes += served.len() as u64;
        }
        // Every segment after the join point up to the end of the stream.
        let last = entries.last().unwrap()["seq"].as_u64().unwrap() as usize;
        assert_eq!(last, source.len() - 1, "{gateway} is missing the last segments");
        held_bytes.push(bytes);
        let probe = ffprobe_ok(&format!("{gateway}/streams/{stream}/index.m3u8"));
        let streams = probe.unwrap_or_else(|e| panic!("ffprobe cannot read {gateway}'s playlist: {e}"));
        assert!(
            streams.contains("video") && streams.contains("audio"),
            "ffprobe found {streams:?}"
        );
    }

    let b = stream_status(&b_gateway);
    let v1 = stream_status(&v1_gateway);
    let v2 = stream_status(&v2_gateway);
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(b["role"], "broadcaster");
    assert_eq!(v1["role"], "viewer");
    assert_eq!(n(&b, "bytes_from_peers"), 0);
    // The second viewer got part of its data from the first.
    assert!(n(&v1, "bytes_uploaded") > 0, "viewer 1 uploaded nothing: {v1}");
    assert!(n(&v2, "bytes_from_peers") > 0, "viewer 2 got nothing from peers: {v2}");
    // Every byte a viewer got from a peer is a byte some node uploaded, and a viewer got at least what it holds.
    assert_eq!(
        n(&v1, "bytes_from_peers") + n(&v2, "bytes_from_peers"),
        n(&b, "bytes_uploaded") + n(&v1, "bytes_uploaded") + n(&v2, "bytes_uploaded"),
        "bytes downloaded from peers and uploaded to peers disagree: {b} {v1} {v2}"
    );
    for (v, held) in [(&v1, held_bytes[0]), (&v2, held_bytes[1])] {
        assert!(
            n(v, "bytes_from_peers") + n(v, "bytes_from_origin") >= held,
            "{v} holds {held} bytes"
        );
    }
    drop(broadcaster);
}
