//! [`LocalNet`]: a running local testnet — ffmpeg, the broadcaster, the origin, the viewers and the poller — and
//! what a test or a run does with it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::Command;
use tokio::task::JoinHandle;

use super::adversaries::{self, AdversaryEntry};
use super::check::{self, SegmentCheck};
use super::gather::{self, Shared, ViewerEntry};
use super::metrics::{self, Inputs, ViewerSample};
use super::origin::Origin;
use super::process::Process;
use super::segments::Segments;
use super::status::StreamStatus;
use super::{LocalOptions, node_bin, source};
use crate::report::Report;
use crate::scenario::Scenario;

/// A viewer of a [`LocalNet`], numbered from 0 in order of joining.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViewerId(pub usize);

/// The broadcaster as a test sees it.
#[derive(Clone, Debug)]
pub struct Broadcaster {
    /// Its peer id.
    pub peer_id: String,
    /// Its TCP listen address, ending in `/p2p/<peer id>`: the viewers' bootstrap.
    pub listen: String,
    /// `http://ADDR` of its gateway.
    pub gateway: String,
    /// Its process id.
    pub pid: Option<u32>,
}

/// Where a run's files are: a temporary directory removed at the end, or one kept (`--keep`).
#[derive(Debug)]
enum RunDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl RunDir {
    fn path(&self) -> &Path {
        match self {
            Self::Temp(dir) => dir.path(),
            Self::Kept(dir) => dir,
        }
    }
}

/// A running local testnet. Every process it started is killed when it is dropped (also on a panic); call
/// [`LocalNet::shutdown`] to stop them in order.
#[derive(Debug)]
pub struct LocalNet {
    scenario: Scenario,
    options: LocalOptions,
    node_bin: PathBuf,
    shared: Arc<Shared>,
    origin: Origin,
    broadcaster: Broadcaster,
    broadcaster_process: Option<Process>,
    ffmpeg: Option<Process>,
    poller: Option<JoinHandle<()>>,
    /// Viewers start one at a time, so that a viewer's number, its files' names and its [`ViewerId`] agree.
    start_lock: tokio::sync::Mutex<()>,
    /// The `adversary` binary, when the scenario has adversaries.
    adversary_bin: Option<PathBuf>,
    /// The adversaries started so far.
    pub(crate) adversaries: tokio::sync::Mutex<Vec<AdversaryEntry>>,
    started: Instant,
    stream_start: Instant,
    // Last, so that the processes are gone before their directory is removed.
    run_dir: RunDir,
}

impl LocalNet {
    /// Starts the origin, the broadcaster and ffmpeg, and waits until the broadcaster has published the stream's
    /// first segment. No viewer yet: see [`LocalNet::add_viewer`].
    pub async fn start(scenario: &Scenario, options: LocalOptions) -> Result<Self> {
        scenario.validate()?;
        let started = Instant::now();
        let node_bin = node_bin::locate(options.node_bin.as_deref())?;
        let run_dir = match &options.keep {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                RunDir::Kept(dir.clone())
            }
            None => RunDir::Temp(
                tempfile::Builder::new()
                    .prefix("streamrp2p-local-")
                    .tempdir()
                    .context("cannot create a temporary directory")?,
            ),
        };
        let root = run_dir.path().to_owned();
        let adversary_bin = match scenario.adversaries {
            Some(_) => Some(adversaries::locate(&node_bin)?),
            None => None,
        };
        for dir in ["hls", "logs", "nodes", "adversaries"] {
            std::fs::create_dir_all(root.join(dir)).with_context(|| format!("cannot create {}", root.display()))?;
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("cannot build an HTTP client")?;
        let segments = Arc::new(Segments::default());
        let origin = Origin::bind(scenario.origin_mbps, segments.clone(), http.clone()).await?;

        let mut command = node_command(&node_bin, &root.join("nodes/broadcaster"), scenario);
        if !options.no_caps {
            command
                .arg("--max-upload-kbps")
                .arg(kbps(scenario.broadcaster_upload_x * scenario.bitrate_kbps));
        }
        command
            .args(["broadcast", "--name", "local", "--hls"])
            .arg(root.join("hls").join(source::PLAYLIST))
            .arg("--origin")
            .arg(origin.url());
        let mut process = Process::spawn(command, "the broadcaster", &root.join("logs/broadcaster.log"))?;
        let timeout = options.startup_timeout;
        let peer_id = process.wait_line("peer id: ", timeout).await?;
        let listen = process.wait_line("listening: ", timeout).await?;
        let gateway = process.wait_line("gateway: ", timeout).await?;
        let stream = process.wait_line("stream: ", timeout).await?;
        if !listen.contains("/p2p/") {
            bail!("the broadcaster's listen address {listen} does not end in /p2p/<peer id>");
        }
        let broadcaster = Broadcaster {
            peer_id,
            listen,
            gateway: gateway.clone(),
            pid: process.pid(),
        };
        let shared = Arc::new(Shared {
            http,
            stream,
            broadcaster_gateway: gateway,
            broadcaster_pid: process.pid(),
            broadcaster_last: Mutex::new(None),
            broadcaster_penalties: Mutex::new(Vec::new()),
            victims: adversary_bin.as_ref().map(|_| root.join("victims.json")),
            viewers: Mutex::new(Vec::new()),
            segments,
            peak_rss_mb: Mutex::new(None),
        });
        origin.set_upstream(shared.broadcaster_stream_url());
        let ffmpeg = source::start(scenario, &root.join("hls"), &root.join("logs/ffmpeg.log"))?;
        let mut net = Self {
            scenario: scenario.clone(),
            options,
            node_bin,
            shared,
            origin,
            broadcaster,
            broadcaster_process: Some(process),
            ffmpeg: Some(ffmpeg),
            poller: None,
            start_lock: tokio::sync::Mutex::new(()),
            adversary_bin,
            adversaries: tokio::sync::Mutex::new(Vec::new()),
            started,
            stream_start: started,
            run_dir,
        };
        net.wait_first_segment().await?;
        let poller = tokio::spawn(gather::poll_forever(net.shared.clone(), net.options.poll_every));
        net.poller = Some(poller);
        Ok(net)
    }

    /// Waits until the broadcaster has published a segment; the stream started one segment before.
    async fn wait_first_segment(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.options.startup_timeout + Duration::from_secs_f64(self.scenario.segment_s);
        loop {
            if let Ok(Some(status)) = self.shared.fetch_status(&self.shared.broadcaster_gateway).await
                && status.segments > 0
            {
                self.stream_start = Instant::now() - Duration::from_secs_f64(self.scenario.segment_s);
                *self.shared.broadcaster_last.lock().expect("broadcaster lock") = Some(status);
                return Ok(());
            }
            let ffmpeg = self.ffmpeg.as_mut().expect("ffmpeg runs");
            if ffmpeg.exited() {
                bail!(
                    "ffmpeg ended before the first segment; its stderr ({}):\n{}",
                    ffmpeg.log().display(),
                    super::process::tail(ffmpeg.log())
                );
            }
            if Instant::now() > deadline {
                let log = self.run_dir.path().join("logs/broadcaster.log");
                bail!(
                    "the broadcaster published no segment within {:?} of ffmpeg's start; its stderr ({}):\n{}\nffmpeg's \
                     stderr:\n{}",
                    self.options.startup_timeout,
                    log.display(),
                    super::process::tail(&log),
                    super::process::tail(&self.run_dir.path().join("logs/ffmpeg.log")),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The scenario it runs.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The stream id (64 hex digits).
    pub fn stream_id(&self) -> &str {
        &self.shared.stream
    }

    /// The broadcaster.
    pub fn broadcaster(&self) -> &Broadcaster {
        &self.broadcaster
    }

    /// The `adversary` binary, when the scenario has adversaries.
    pub(crate) fn adversary_bin(&self) -> Option<&Path> {
        self.adversary_bin.as_deref()
    }

    /// How long a process may take to start.
    pub(crate) fn startup_timeout(&self) -> Duration {
        self.options.startup_timeout
    }

    /// Each honest node's last list of the peers it penalised most, by its peer id.
    pub(crate) fn honest_penalties(&self) -> std::collections::BTreeMap<String, Vec<super::status::Penalty>> {
        let viewers = self.shared.viewers.lock().expect("viewers lock");
        let mut all: std::collections::BTreeMap<String, Vec<super::status::Penalty>> = viewers
            .iter()
            .map(|v| (v.peer_id.clone(), v.penalties.clone()))
            .collect();
        let broadcaster = self
            .shared
            .broadcaster_penalties
            .lock()
            .expect("broadcaster lock")
            .clone();
        all.insert(self.broadcaster.peer_id.clone(), broadcaster);
        all
    }

    /// When each honest viewer that left did, in ms since the Unix epoch, by its peer id.
    pub(crate) fn honest_left_ms(&self) -> std::collections::BTreeMap<String, u64> {
        let now = Instant::now();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let viewers = self.shared.viewers.lock().expect("viewers lock");
        viewers
            .iter()
            .filter_map(|v| {
                let ago = now.saturating_duration_since(v.left?).as_millis() as u64;
                Some((v.peer_id.clone(), now_ms.saturating_sub(ago)))
            })
            .collect()
    }

    /// Honest viewer processes that ended on their own (a crash) rather than by the run's hand.
    pub fn honest_died(&self) -> u32 {
        let mut viewers = self.shared.viewers.lock().expect("viewers lock");
        viewers
            .iter_mut()
            .filter_map(|v| v.process.as_mut())
            .map(|p| u32::from(p.exited()))
            .sum()
    }

    /// The broadcaster's last status of the stream.
    pub fn broadcaster_status(&self) -> Option<StreamStatus> {
        self.shared.broadcaster_last.lock().expect("broadcaster lock").clone()
    }

    /// The origin, to stop and start it.
    pub fn origin(&mut self) -> &mut Origin {
        &mut self.origin
    }

    /// Bytes the origin has sent so far.
    pub fn origin_bytes_served(&self) -> u64 {
        self.origin.bytes_served()
    }

    /// The run's directory (logs in `logs/`, the nodes' data in `nodes/`, ffmpeg's HLS in `hls/`).
    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// Seconds of stream time now (0 = the stream's start, about one segment before the broadcaster's first).
    pub fn stream_time(&self) -> f64 {
        self.stream_start.elapsed().as_secs_f64()
    }

    /// When stream time `t` is.
    pub fn at(&self, t: f64) -> Instant {
        self.stream_start + Duration::from_secs_f64(t.max(0.0))
    }

    /// Starts a viewer with upload `upload_x` × the bitrate (unless `no_caps`) and waits until its gateway is up.
    pub async fn add_viewer(&self, upload_x: f64) -> Result<ViewerId> {
        let _one_at_a_time = self.start_lock.lock().await;
        let index = self.shared.viewers.lock().expect("viewers lock").len();
        let root = self.run_dir.path();
        let mut command = node_command(
            &self.node_bin,
            &root.join(format!("nodes/viewer-{index}")),
            &self.scenario,
        );
        command.arg("--bootstrap").arg(&self.broadcaster.listen);
        if !self.options.no_caps {
            command
                .arg("--max-upload-kbps")
                .arg(kbps(upload_x * self.scenario.bitrate_kbps));
        }
        command.arg("watch").arg(&self.shared.stream);
        let log = root.join(format!("logs/viewer-{index}.log"));
        let started = Instant::now();
        let mut process = Process::spawn(command, &format!("viewer {index}"), &log)?;
        let timeout = self.options.startup_timeout;
        let peer_id = process.wait_line("peer id: ", timeout).await?;
        let gateway = process.wait_line("gateway: ", timeout).await?;
        let mut viewers = self.shared.viewers.lock().expect("viewers lock");
        debug_assert_eq!(viewers.len(), index, "viewers start one at a time");
        viewers.push(ViewerEntry {
            upload_x,
            process: Some(process),
            gateway,
            peer_id,
            log,
            started,
            left: None,
            last: None,
            listen: Vec::new(),
            penalties: Vec::new(),
        });
        Ok(ViewerId(index))
    }

    fn take_process(&self, id: ViewerId) -> Result<Process> {
        let mut viewers = self.shared.viewers.lock().expect("viewers lock");
        let viewer = viewers.get_mut(id.0).with_context(|| format!("no viewer {}", id.0))?;
        let process = viewer
            .process
            .take()
            .with_context(|| format!("viewer {} has already left", id.0))?;
        viewer.left = Some(Instant::now());
        Ok(process)
    }

    /// Reads viewer `id`'s status, then stops it: SIGTERM, SIGKILL after 2 s.
    pub async fn stop_viewer(&self, id: ViewerId) -> Result<()> {
        self.shared.poll_viewer(id.0).await;
        let mut process = self.take_process(id)?;
        process.stop().await;
        Ok(())
    }

    /// Reads viewer `id`'s status, then kills it (SIGKILL: a crash).
    pub async fn kill(&self, id: ViewerId) -> Result<()> {
        self.shared.poll_viewer(id.0).await;
        let mut process = self.take_process(id)?;
        process.kill().await;
        Ok(())
    }

    /// Viewer `id`'s last status of the stream (a viewer that left keeps its last one).
    pub fn status(&self, id: ViewerId) -> Option<StreamStatus> {
        let viewers = self.shared.viewers.lock().expect("viewers lock");
        viewers.get(id.0)?.last.as_ref().map(|(_, s)| s.clone())
    }

    /// Every viewer's last status, in order of joining.
    pub fn statuses(&self) -> Vec<(ViewerId, Option<StreamStatus>)> {
        let viewers = self.shared.viewers.lock().expect("viewers lock");
        viewers
            .iter()
            .enumerate()
            .map(|(i, v)| (ViewerId(i), v.last.as_ref().map(|(_, s)| s.clone())))
            .collect()
    }

    /// The viewers whose processes run.
    pub fn live_viewers(&self) -> Vec<ViewerId> {
        let viewers = self.shared.viewers.lock().expect("viewers lock");
        (0..viewers.len())
            .filter(|&i| viewers[i].process.is_some())
            .map(ViewerId)
            .collect()
    }

    /// Viewer `id`'s `http://ADDR` gateway, peer id, process id (while it runs) and stderr log.
    pub fn viewer_info(&self, id: ViewerId) -> Option<(String, String, Option<u32>, PathBuf)> {
        let viewers = self.shared.viewers.lock().expect("viewers lock");
        let v = viewers.get(id.0)?;
        Some((
            v.gateway.clone(),
            v.peer_id.clone(),
            v.process.as_ref().and_then(Process::pid),
            v.log.clone(),
        ))
    }

    /// Process ids of every process of the run that runs now (nodes and ffmpeg).
    pub fn pids(&self) -> Vec<u32> {
        let viewers = self.shared.viewers.lock().expect("viewers lock");
        viewers
            .iter()
            .filter_map(|v| v.process.as_ref().and_then(Process::pid))
            .chain(self.broadcaster_process.as_ref().and_then(Process::pid))
            .chain(self.ffmpeg.as_ref().and_then(Process::pid))
            .collect()
    }

    /// Stops ffmpeg: the stream ends (the broadcaster keeps serving what it holds). A run does it before the byte
    /// check, which then has the machine's cores to itself.
    pub async fn stop_source(&mut self) {
        if let Some(mut ffmpeg) = self.ffmpeg.take() {
            ffmpeg.stop().await;
        }
    }

    /// Reads every live node's status now (the poller does it every `poll_every` anyway).
    pub async fn poll_now(&self) {
        self.shared.poll_all().await;
    }

    /// The report of the run so far, from the last statuses read.
    pub fn report(&self) -> Report {
        let now = Instant::now();
        let viewers = {
            let viewers = self.shared.viewers.lock().expect("viewers lock");
            viewers
                .iter()
                .map(|v| ViewerSample {
                    status: v.last.as_ref().map(|(_, s)| s.clone()),
                    upload_x: v.upload_x,
                    in_stream_s: v.left.unwrap_or(now).saturating_duration_since(v.started).as_secs_f64(),
                })
                .collect()
        };
        let inputs = Inputs {
            viewers,
            broadcaster: self.broadcaster_status(),
            origin_per_second: self.origin.per_second(),
            wall_s: self.started.elapsed().as_secs_f64(),
            peak_rss_mb: *self.shared.peak_rss_mb.lock().expect("rss lock"),
        };
        metrics::report(&self.scenario, &inputs)
    }

    /// Compares every segment each live viewer lists with the broadcaster's.
    pub async fn check_segments(&self) -> SegmentCheck {
        check::check(&self.shared).await
    }

    /// Stops every process (viewers, then the broadcaster and ffmpeg: SIGTERM, SIGKILL after 2 s), the poller and
    /// the origin; removes the run's directory unless it is kept.
    pub async fn shutdown(mut self) {
        if let Some(poller) = self.poller.take() {
            poller.abort();
        }
        self.stop_adversaries().await;
        let processes: Vec<Process> = {
            let mut viewers = self.shared.viewers.lock().expect("viewers lock");
            let now = Instant::now();
            viewers
                .iter_mut()
                .filter_map(|v| {
                    let process = v.process.take()?;
                    v.left = Some(now);
                    Some(process)
                })
                .collect()
        };
        futures::future::join_all(processes.into_iter().map(|mut p| async move { p.stop().await })).await;
        for process in [self.broadcaster_process.take(), self.ffmpeg.take()]
            .into_iter()
            .flatten()
        {
            let mut process = process;
            process.stop().await;
        }
        self.origin.stop().await;
    }
}

impl Drop for LocalNet {
    fn drop(&mut self) {
        if let Some(poller) = self.poller.take() {
            poller.abort();
        }
        // Dropping a process kills it (`kill_on_drop`); the viewers are in the state the poller shares, so take
        // them out here rather than wait for the poller's cancellation.
        if let Ok(mut viewers) = self.shared.viewers.lock() {
            for v in viewers.iter_mut() {
                drop(v.process.take());
            }
        }
    }
}

/// A node command with the options every node of the run takes: its data dir, loopback TCP and gateway on free
/// ports. `RUST_LOG` passes through from the environment; `NO_COLOR` is set (unless it is) so that the logs in files
/// carry no terminal colours.
///
/// In a scenario with adversaries the nodes listen on QUIC too: a connection flood comes over QUIC from another
/// loopback address (QUIC dials from its listening socket, TCP from 127.0.0.1 whatever it listens on), so that the
/// nodes' per-address limit has an address to count.
fn node_command(bin: &Path, data_dir: &Path, scenario: &Scenario) -> Command {
    let mut command = Command::new(bin);
    if std::env::var_os("NO_COLOR").is_none() {
        command.env("NO_COLOR", "1");
    }
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--http", "127.0.0.1:0"]);
    if scenario.adversaries.is_some() {
        command.args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"]);
    }
    command
}

/// A cap in whole kbit/s, as the node's `--max-upload-kbps` takes it.
fn kbps(value: f64) -> String {
    format!("{:.0}", value.max(0.0))
}
