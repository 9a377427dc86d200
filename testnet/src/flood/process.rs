//! Flood nodes as child processes: started, told to stop by closing their stdin, their figures read from the last
//! line they print. A child never outlives its handle (`kill_on_drop`).

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::figures::NodeFigures;
use super::node::Ready;

/// How long a node may take to print its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to print its figures once told to stop, before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `flood_node`.
#[derive(Debug)]
pub struct FloodProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its address, `/p2p/` included.
    pub listen: String,
}

impl FloodProcess {
    /// Starts `bin` with `args` (after which `--stop-on-stdin-eof` is added), its stderr appended to `log` (or
    /// dropped), and waits for its address.
    pub async fn start(bin: &Path, args: &[impl AsRef<OsStr>], log: Option<&Path>) -> Result<Self> {
        let stderr = match log {
            Some(path) => {
                Stdio::from(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
            }
            None => Stdio::null(),
        };
        let mut child = Command::new(bin)
            .args(args)
            .arg("--stop-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .context("flood_node did not print its address in time")??
            .context("flood_node exited before printing its address")?;
        let ready: Ready = serde_json::from_str(&first).with_context(|| format!("not an address line: {first}"))?;
        Ok(Self {
            child,
            stdin,
            lines,
            listen: ready.listen,
        })
    }

    /// Tells the node to stop and returns its figures; kills it if it does not answer within [`STOP_TIMEOUT`].
    pub async fn stop(mut self) -> Result<NodeFigures> {
        drop(self.stdin.take());
        let read = async {
            while let Some(line) = self.lines.next_line().await? {
                if let Ok(figures) = serde_json::from_str::<NodeFigures>(&line) {
                    return Ok(figures);
                }
            }
            bail!("flood_node exited without its figures")
        };
        let figures = match tokio::time::timeout(STOP_TIMEOUT, read).await {
            Ok(figures) => figures,
            Err(_) => Err(anyhow::anyhow!("flood_node did not print its figures in time")),
        };
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        figures
    }
}
