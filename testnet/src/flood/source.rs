//! The live source: ffmpeg encoding a test pattern in real time into an HLS playlist, with the local testnet's
//! settings so that both protocols carry the same stream.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

use crate::scenario::Scenario;

pub use crate::local::source::{PLAYLIST, ffmpeg_args};

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
