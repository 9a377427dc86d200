//! The live source: ffmpeg encoding a test pattern in real time into an HLS playlist, at a near-constant bitrate.

use std::path::Path;

use anyhow::{Context, Result};
use tokio::process::Command;

use super::process::Process;
use crate::scenario::Scenario;

/// The playlist's file name in the HLS directory.
pub const PLAYLIST: &str = "index.m3u8";

/// What MPEG-TS adds to x264's CBR output in these segments (packet headers, PES headers, PAT/PMT, the HRD's
/// filler): measured, 267 kB segments of 2 s for `-b:v 1000k`.
pub const TS_OVERHEAD: f64 = 1.068;

/// The ffmpeg arguments for `scenario`'s stream, written into `dir`. Video only (the simulator models one constant
/// bitrate); x264 in CBR with HRD signalling and a VBV of half a second, one keyframe per segment, its rate set
/// [`TS_OVERHEAD`] below the scenario's, so that segments come out at `bitrate × segment_s` as the simulator's do
/// (within a few per cent; the first is larger). Child slots are sized by the bitrate, so a stream 7 % above the
/// scenario's gives a node of 6× the bitrate 3 children where the simulator gives it 4. `keep_all` lists (and keeps)
/// every segment rather than the last ten.
pub fn ffmpeg_args(scenario: &Scenario, dir: &Path, keep_all: bool) -> Vec<String> {
    let kbps = (scenario.bitrate_kbps / TS_OVERHEAD).round().max(1.0) as u64;
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

/// Starts ffmpeg for `scenario` writing into `dir`, its stderr into `log`.
pub fn start(scenario: &Scenario, dir: &Path, log: &Path) -> Result<Process> {
    let mut command = Command::new("ffmpeg");
    command.args(ffmpeg_args(scenario, dir, false));
    Process::spawn(command, "ffmpeg", log).context("is ffmpeg installed and on PATH?")
}
