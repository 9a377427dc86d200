//! Gathering: every few seconds (and on demand, before a viewer is stopped and at the end) each live node's
//! `GET /api/status`, kept per viewer — a viewer that left keeps its last snapshot — and the broadcaster's new
//! segments copied into the reference the origin and the byte check use.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::process::{Process, peak_rss_mb};
use super::segments::{self, Segments};
use super::status::{NodeStatus, Penalty, StreamStatus};
use crate::adversary::record::{Victim, write_victims};

/// How long a status request may take before the node is skipped for that round.
const STATUS_TIMEOUT: Duration = Duration::from_millis(1500);

/// One viewer, present or gone.
#[derive(Debug)]
pub(crate) struct ViewerEntry {
    /// Upload capacity as a multiple of the bitrate.
    pub(crate) upload_x: f64,
    /// The process, while it runs.
    pub(crate) process: Option<Process>,
    /// `http://ADDR` of its gateway.
    pub(crate) gateway: String,
    /// Its peer id.
    pub(crate) peer_id: String,
    /// Its stderr log.
    pub(crate) log: PathBuf,
    /// When its process started.
    pub(crate) started: Instant,
    /// When it was stopped or killed.
    pub(crate) left: Option<Instant>,
    /// Its last status of the stream, and when the request for it was sent.
    pub(crate) last: Option<(Instant, StreamStatus)>,
    /// Its listen addresses (ending in `/p2p/<peer id>`), once read.
    pub(crate) listen: Vec<String>,
    /// The peers it penalised most, as last read.
    pub(crate) penalties: Vec<Penalty>,
}

/// What the testnet and its poller share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) http: reqwest::Client,
    /// The stream id, 64 hex digits.
    pub(crate) stream: String,
    /// `http://ADDR` of the broadcaster's gateway.
    pub(crate) broadcaster_gateway: String,
    pub(crate) broadcaster_pid: Option<u32>,
    pub(crate) broadcaster_last: Mutex<Option<StreamStatus>>,
    /// The peers the broadcaster penalised most, as last read.
    pub(crate) broadcaster_penalties: Mutex<Vec<Penalty>>,
    /// Where the honest viewers are listed for the adversaries (`None`: no adversaries).
    pub(crate) victims: Option<PathBuf>,
    pub(crate) viewers: Mutex<Vec<ViewerEntry>>,
    pub(crate) segments: Arc<Segments>,
    /// The largest peak resident memory seen of a node process, MiB.
    pub(crate) peak_rss_mb: Mutex<Option<f64>>,
}

impl Shared {
    /// `http://ADDR/streams/ID` of the broadcaster's gateway.
    pub(crate) fn broadcaster_stream_url(&self) -> String {
        format!("{}/streams/{}", self.broadcaster_gateway, self.stream)
    }

    /// Reads the stream's status on the node at `gateway`.
    pub(crate) async fn fetch_status(&self, gateway: &str) -> Result<Option<StreamStatus>> {
        Ok(self.fetch_node(gateway).await?.stream(&self.stream).cloned())
    }

    /// Reads the whole status of the node at `gateway`.
    pub(crate) async fn fetch_node(&self, gateway: &str) -> Result<NodeStatus> {
        let url = format!("{gateway}/api/status");
        let response = self
            .http
            .get(&url)
            .timeout(STATUS_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        let body = response.bytes().await.with_context(|| format!("GET {url}"))?;
        serde_json::from_slice(&body).with_context(|| format!("GET {url}: not a status"))
    }

    /// Reads viewer `index`'s status now and keeps it (unless a newer one arrived meanwhile).
    pub(crate) async fn poll_viewer(&self, index: usize) {
        let gateway = {
            let viewers = self.viewers.lock().expect("viewers lock");
            match viewers.get(index) {
                Some(v) if v.process.is_some() => v.gateway.clone(),
                _ => return,
            }
        };
        let asked = Instant::now();
        if let Ok(node) = self.fetch_node(&gateway).await {
            self.keep(index, asked, node);
        }
    }

    fn keep(&self, index: usize, asked: Instant, node: NodeStatus) {
        let mut viewers = self.viewers.lock().expect("viewers lock");
        let Some(v) = viewers.get_mut(index) else { return };
        if v.last.as_ref().is_none_or(|(at, _)| *at <= asked) {
            if let Some(status) = node.stream(&self.stream) {
                v.last = Some((asked, status.clone()));
            }
            v.penalties = node.penalties;
        }
        if v.listen.is_empty() {
            v.listen = node.listen_addrs;
        }
    }

    /// One round: every live node's status, the peak memory of their processes, and the broadcaster's new
    /// segments.
    pub(crate) async fn poll_all(&self) {
        let live: Vec<(usize, String, Option<u32>)> = {
            let viewers = self.viewers.lock().expect("viewers lock");
            viewers
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let process = v.process.as_ref()?;
                    Some((i, v.gateway.clone(), process.pid()))
                })
                .collect()
        };
        let asked = Instant::now();
        let viewers = futures::future::join_all(
            live.iter()
                .map(|(i, gateway, _)| async move { (*i, self.fetch_node(gateway).await) }),
        );
        let (viewers, broadcaster) = futures::join!(viewers, self.fetch_node(&self.broadcaster_gateway));
        for (i, node) in viewers {
            if let Ok(node) = node {
                self.keep(i, asked, node);
            }
        }
        if let Ok(node) = broadcaster {
            if let Some(status) = node.stream(&self.stream) {
                *self.broadcaster_last.lock().expect("broadcaster lock") = Some(status.clone());
            }
            *self.broadcaster_penalties.lock().expect("broadcaster lock") = node.penalties;
        }
        self.list_victims();
        let rss = live
            .iter()
            .filter_map(|(_, _, pid)| *pid)
            .chain(self.broadcaster_pid)
            .filter_map(peak_rss_mb)
            .fold(None, |max: Option<f64>, mb| Some(max.map_or(mb, |m| m.max(mb))));
        if let Some(rss) = rss {
            let mut peak = self.peak_rss_mb.lock().expect("rss lock");
            *peak = Some(peak.map_or(rss, |p| p.max(rss)));
        }
        let _ = self.mirror().await;
    }

    /// Lists the live honest viewers for the adversaries to lie to.
    fn list_victims(&self) {
        let Some(path) = &self.victims else { return };
        let victims: Vec<Victim> = {
            let viewers = self.viewers.lock().expect("viewers lock");
            viewers
                .iter()
                .filter(|v| v.process.is_some() && !v.listen.is_empty())
                .map(|v| Victim {
                    peer_id: v.peer_id.clone(),
                    addrs: v.listen.clone(),
                })
                .collect()
        };
        if let Err(error) = write_victims(path, &victims) {
            eprintln!("{error:#}");
        }
    }

    /// Copies the broadcaster's segments not yet in the reference.
    pub(crate) async fn mirror(&self) -> Result<()> {
        let url = self.broadcaster_stream_url();
        for seq in segments::manifest(&self.http, &url).await? {
            if !self.segments.contains(seq)
                && let Some(data) = segments::fetch(&self.http, &url, seq).await?
            {
                self.segments.insert(seq, data);
            }
        }
        Ok(())
    }
}

/// Polls every `every` until aborted.
pub(crate) async fn poll_forever(shared: Arc<Shared>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        shared.poll_all().await;
    }
}
