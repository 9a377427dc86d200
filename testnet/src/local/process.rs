//! One child process of the testnet (a node or ffmpeg): stdout read line by line, stderr into a log file, stopped
//! with SIGTERM then SIGKILL, and killed when dropped — a run's processes never outlive it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long a process has to exit after SIGTERM before it gets SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// Stdout lines kept for a process that is waited on, at most (a node prints about five).
const LINES: usize = 64;

/// A running child process.
#[derive(Debug)]
pub struct Process {
    child: Child,
    label: String,
    log: PathBuf,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    /// Starts `command` (its stdin closed, stdout read by [`Process::wait_line`], stderr written to `log`).
    pub fn spawn(mut command: Command, label: &str, log: &Path) -> Result<Self> {
        let stderr = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let program = command.as_std().get_program().to_string_lossy().into_owned();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {label} ({program})"))?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let (tx, lines) = mpsc::channel(LINES);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                // A full channel (nobody waits for lines any more) drops them: the process must never block on
                // its stdout.
                let _ = tx.try_send(line);
            }
        });
        Ok(Self {
            child,
            label: label.to_owned(),
            log: log.to_owned(),
            lines,
            seen: Vec::new(),
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What the process is, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its stderr log.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Waits for a stdout line starting with `prefix` (one seen before counts) and returns the rest of it, trimmed.
    /// Fails after `timeout`, or when the process ends first, with the tail of its stderr.
    pub async fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        if let Some(line) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return Ok(line[prefix.len()..].trim().to_owned());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let found = line.strip_prefix(prefix).map(|rest| rest.trim().to_owned());
                    self.seen.push(line);
                    if let Some(rest) = found {
                        return Ok(rest);
                    }
                }
                Ok(None) => {
                    let status = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
                    let status = match status {
                        Ok(Ok(status)) => status.to_string(),
                        _ => "closed its stdout".to_owned(),
                    };
                    bail!(
                        "{} ended ({status}) before printing {prefix:?}; stdout: {:?}; stderr ({}):\n{}",
                        self.label,
                        self.seen,
                        self.log.display(),
                        tail(&self.log)
                    )
                }
                Err(_) => bail!(
                    "{} printed no line starting with {prefix:?} within {timeout:?}; stdout: {:?}; stderr ({}):\n{}",
                    self.label,
                    self.seen,
                    self.log.display(),
                    tail(&self.log)
                ),
            }
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not exited after [`TERM_GRACE`]; waits for it.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok()
                && tokio::time::timeout(TERM_GRACE, self.child.wait()).await.is_ok()
            {
                return;
            }
        }
        self.kill().await;
    }

    /// SIGKILL, and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Peak resident memory of process `pid` in MiB (Linux: `VmHWM` in `/proc/PID/status`), if it can be read.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
