//! Following a live HLS playlist as ffmpeg writes it: new segments are published once and in order, a restart of
//! the source (its numbering going backwards) becomes a discontinuity, and an unreadable segment is skipped
//! without stopping the broadcast.

use std::path::Path;
use std::time::Duration;

use streamrp2p_node::ingest::{HlsSource, follow_hls};
use streamrp2p_node::{Node, NodeConfig, sample};

/// Writes a live media playlist listing `segments` (file name, media sequence number), as ffmpeg does: to a
/// temporary file renamed over the old one.
fn write_playlist(dir: &Path, first_msn: u64, files: &[&str], ended: bool) {
    let mut text = format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first_msn}\n");
    for file in files {
        text.push_str(&format!("#EXTINF:2.000000,\n{file}\n"));
    }
    if ended {
        text.push_str("#EXT-X-ENDLIST\n");
    }
    std::fs::write(dir.join("live.m3u8.tmp"), text).unwrap();
    std::fs::rename(dir.join("live.m3u8.tmp"), dir.join("live.m3u8")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_live_playlist_through_a_restart_and_a_missing_segment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..3 {
        std::fs::write(d.join(format!("a{i}.ts")), sample::SEGMENTS[i]).unwrap();
    }
    let node = Node::start(NodeConfig::loopback()).await.unwrap();
    let stream = node.broadcast("ingest", None).await.unwrap();
    write_playlist(d, 0, &["a0.ts", "a1.ts"], false);
    let follower = tokio::spawn(follow_hls(node.clone(), stream, HlsSource::Path(d.join("live.m3u8"))));

    let wait_for = async |seq: u64| {
        for _ in 0..100 {
            if node.segment(stream, seq).is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("segment {seq} was never published");
    };
    wait_for(1).await;
    // The window slides: a1 and a2 listed, a1 already published.
    write_playlist(d, 1, &["a1.ts", "a2.ts"], false);
    wait_for(2).await;
    // ffmpeg restarts: numbering starts over; its first segment is unreadable (deleted meanwhile), the second fine.
    write_playlist(d, 0, &["gone.ts", "a0.ts"], true);
    let published = tokio::time::timeout(Duration::from_secs(20), follower)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(published, 4, "a0, a1, a2 and, after the restart, a0 again");

    for (seq, bytes) in [
        (0, sample::SEGMENTS[0]),
        (1, sample::SEGMENTS[1]),
        (2, sample::SEGMENTS[2]),
        (3, sample::SEGMENTS[0]),
    ] {
        assert_eq!(node.segment(stream, seq).unwrap(), bytes, "segment {seq}");
    }
    assert!(node.segment(stream, 4).is_none(), "nothing was published twice");
    let url = format!("http://{}/streams/{stream}/index.m3u8", node.http_addr().unwrap());
    let playlist = reqwest::get(url).await.unwrap().text().await.unwrap();
    let after_restart = playlist.split("2.ts").nth(1).unwrap();
    assert!(
        after_restart.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n3.ts"),
        "{playlist}"
    );
}
