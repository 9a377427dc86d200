//! The live source: ffmpeg encoding a test pattern in real time into an HLS playlist, with the local testnet's
//! settings so that both protocols carry the same stream.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

use crate::scenario::Scenario;

/// The playlist's file name in the HLS directory.
pub const PLAYLIST: &str = "index.m3u8";

/// The ffmpeg arguments for `scenario`'s stream written into `dir`: x264 in CBR at the scenario's bitrate with a
/// VBV of half a second, one keyframe per segment, `segment_s` segments. `keep_all` lists (and keeps) every
/// segment rather than the last ten.
pub fn ffmpeg_args(scenario: &Scenario, dir: &Path, keep_all: bool) -> Vec<String> {
    let kbps = scenario.bitrate_kbps.round().max(1.0) as u64;
    let gop = (30.0 * scenario.segment_s).round().max(1.0) as u64;
    let mut args: Vec<String> = [
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    args.extend([
        "-b:v".into(),
        format!("{kbps}k"),
        "-maxrate".into(),
        format!("{kbps}k"),
        "-bufsize".into(),
        format!("{}k", (kbps / 2).max(1)),
        "-x264-params".into(),
        "nal-hrd=cbr".into(),
        "-g".into(),
        gop.to_string(),
        "-keyint_min".into(),
        gop.to_string(),
        "-sc_threshold".into(),
        "0".into(),
        "-f".into(),
        "hls".into(),
        "-hls_time".into(),
        format!("{}", scenario.segment_s),
    ]);
    if keep_all {
        args.extend(["-hls_list_size".into(), "0".into()]);
    } else {
        args.extend([
            "-hls_list_size".into(),
            "10".into(),
            "-hls_flags".into(),
            "delete_segments".into(),
        ]);
    }
    args.push(dir.join(PLAYLIST).display().to_string());
    args
}

/// Starts ffmpeg (killed when the handle is dropped) for `scenario`, writing into `dir`.
pub fn start_ffmpeg(scenario: &Scenario, dir: &Path, keep_all: bool) -> Result<Child> {
    Command::new("ffmpeg")
        .args(ffmpeg_args(scenario, dir, keep_all))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start ffmpeg: is it installed and on PATH?")
}
