//! The README's first command: `streamrp2p demo` serves a playlist that ffprobe reads, from a viewer that got the
//! stream over libp2p.

mod common;

use std::time::Duration;

use common::{Proc, ffprobe_ok, get_bytes, get_json, streamrp2p};

#[test]
fn demo_serves_a_playlist_ffprobe_reads() {
    let mut cmd = streamrp2p();
    cmd.args(["demo", "--viewers", "2", "--http", "127.0.0.1:0"]);
    let mut demo = Proc::spawn(cmd);
    let url = demo.wait_line("play (viewer 2): ", Duration::from_secs(30));
    let gateway = url.split("/streams/").next().unwrap().to_owned();

    // Three segments in, the viewer's playlist lists what it fetched.
    std::thread::sleep(Duration::from_secs(7));
    let playlist = String::from_utf8(get_bytes(&url).expect("viewer playlist")).unwrap();
    assert!(
        playlist.starts_with("#EXTM3U") && playlist.contains(".ts"),
        "{playlist}"
    );
    let streams = ffprobe_ok(&url).unwrap_or_else(|e| panic!("ffprobe cannot read {url}: {e}"));
    assert!(
        streams.contains("video") && streams.contains("audio"),
        "ffprobe found {streams:?}"
    );

    let status = get_json(&format!("{gateway}/api/status"));
    let stream = &status["streams"][0];
    assert_eq!(stream["role"], "viewer");
    assert!(stream["bytes_from_peers"].as_u64().unwrap() > 0, "{status}");
    // The live counters are printed.
    demo.wait_line("broadcaster: ", Duration::from_secs(5));
}
