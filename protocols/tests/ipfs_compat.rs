//! Our segment root CIDs against an independent IPFS implementation (`ipfs-unixfs-importer`, run by Node.js from
//! `tools/`), on real MPEG-TS segments that ffmpeg makes: one that fits in a single block and one that does not.
//! `scripts/test` installs ffmpeg and the npm tools when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use streamrp2p_protocols::segment::{BLOCK_SIZE, block_cid, root_cid, split};

fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools")
}

/// Root CIDs computed by ipfs-unixfs-importer for each file.
fn ipfs_cids(files: &[PathBuf]) -> Vec<String> {
    let tools = tools_dir();
    assert!(
        tools.join("node_modules/ipfs-unixfs-importer").is_dir(),
        "ipfs-unixfs-importer is not installed: run scripts/test, or `npm ci --prefix tools`"
    );
    let out = Command::new("node")
        .arg(tools.join("ipfs-cid.mjs"))
        .args(files)
        .output()
        .expect("node (Node.js) must be installed to run the IPFS reference");
    assert!(
        out.status.success(),
        "ipfs-cid.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

/// A 2-second MPEG-TS segment of test video at `bitrate`, as ffmpeg's HLS muxer would cut it.
fn ffmpeg_segment(dir: &Path, name: &str, bitrate: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-f",
            "lavfi",
            "-i",
        ])
        .args([
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args([
            "-b:v", bitrate, "-minrate", bitrate, "-maxrate", bitrate, "-bufsize", "1M", "-c:a", "aac",
        ])
        .args(["-f", "mpegts"])
        .arg(&path)
        .status()
        .expect("ffmpeg must be installed: run scripts/test, or `apt-get install ffmpeg`");
    assert!(status.success(), "ffmpeg failed to make a test segment");
    path
}

#[test]
fn segment_root_cids_match_ipfs_on_real_segments() {
    let dir = tempfile::tempdir().unwrap();
    let small = ffmpeg_segment(dir.path(), "small.ts", "40k");
    let large = ffmpeg_segment(dir.path(), "large.ts", "4M");
    let small_bytes = std::fs::read(&small).unwrap();
    let large_bytes = std::fs::read(&large).unwrap();
    assert!(small_bytes.len() <= BLOCK_SIZE, "the small segment must fit one block");
    assert!(
        large_bytes.len() > 2 * BLOCK_SIZE,
        "the large segment must span several blocks"
    );

    let ours: Vec<String> = [small_bytes, large_bytes]
        .into_iter()
        .map(|b| split(b.into()).unwrap().root.to_string())
        .collect();
    assert_eq!(ours, ipfs_cids(&[small, large]));
    assert!(ours[0].starts_with("bafk"), "a one-block segment is a raw block");
    assert!(ours[1].starts_with("bafy"), "a larger segment is a DAG-PB root");
}

#[test]
fn two_level_dag_matches_ipfs() {
    // More than 174 leaves needs a second level of the balanced DAG; real segments are never this large, so
    // deterministic bytes stand in.
    let len = 175 * BLOCK_SIZE + 12_345;
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    std::fs::write(&path, &data).unwrap();
    let leaves: Vec<_> = data
        .chunks(BLOCK_SIZE)
        .map(|c| (block_cid(c), c.len() as u64))
        .collect();
    assert_eq!(root_cid(&leaves).unwrap().to_string(), ipfs_cids(&[path])[0]);
}
