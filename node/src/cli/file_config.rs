//! The `--config` TOML file: any command-line option, plus the node's tuning knobs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use streamrp2p_node::{DhtMode, Multiaddr, NodeConfig, Policy};

use super::CommonArgs;

/// The config file. Every field is optional; see `NodeConfig` for what each means and its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    bootstrap: Vec<String>,
    #[serde(default)]
    external: Vec<String>,
    http: Option<SocketAddr>,
    dht: Option<DhtMode>,
    live_window_s: Option<f64>,
    max_stream_mb: Option<u64>,
    request_timeout_s: Option<f64>,
    ban_s: Option<f64>,
    max_upload_kbps: Option<f64>,
    metered: Option<bool>,
    background: Option<bool>,
    max_ratio: Option<f64>,
    upload_capacity_kbps: Option<f64>,
}

fn addrs(field: &str, values: &[String]) -> Result<Vec<Multiaddr>> {
    values
        .iter()
        .map(|v| {
            v.parse()
                .with_context(|| format!("`{field}` in the config file: {v:?} is not a multiaddr"))
        })
        .collect()
}

fn seconds(field: &str, value: Option<f64>, default: Duration) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(s) => Duration::try_from_secs_f64(s)
            .with_context(|| format!("`{field}` in the config file must be a non-negative number of seconds")),
    }
}

impl FileConfig {
    pub(super) fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The node's configuration: command line over file over defaults.
    pub(super) fn merge(self, cli: &CommonArgs) -> Result<NodeConfig> {
        let d = NodeConfig::default();
        let pick = |cli: &[Multiaddr], file: Vec<Multiaddr>, default: Vec<Multiaddr>| {
            if !cli.is_empty() {
                cli.to_vec()
            } else if !file.is_empty() {
                file
            } else {
                default
            }
        };
        let data_dir =
            cli.data_dir.clone().or(self.data_dir).or_else(|| {
                directories::ProjectDirs::from("", "", "streamrp2p").map(|dirs| dirs.data_dir().to_path_buf())
            });
        // A flag can only switch these on; `metered = true` in the file stays unless the file says otherwise.
        let policy = Policy {
            max_upload_kbps: cli.max_upload_kbps.or(self.max_upload_kbps),
            metered: cli.metered || self.metered.unwrap_or(d.policy.metered),
            background: cli.background || self.background.unwrap_or(d.policy.background),
            max_ratio: cli.max_ratio.or(self.max_ratio),
        };
        policy
            .validate()
            .context("invalid resource policy (--max-upload-kbps, --max-ratio or the config file)")?;
        let upload_capacity_kbps = cli
            .upload_capacity_kbps
            .or(self.upload_capacity_kbps)
            .unwrap_or(d.upload_capacity_kbps);
        if !(upload_capacity_kbps.is_finite() && upload_capacity_kbps > 0.0) {
            bail!(
                "upload_capacity_kbps must be a finite number of kbit/s above 0, not {upload_capacity_kbps}; to upload \
                 nothing pass --metered"
            );
        }
        Ok(NodeConfig {
            data_dir,
            listen: pick(&cli.listen, addrs("listen", &self.listen)?, d.listen),
            bootstrap: pick(&cli.bootstrap, addrs("bootstrap", &self.bootstrap)?, d.bootstrap),
            external: pick(&cli.external, addrs("external", &self.external)?, d.external),
            http: cli.http.or(self.http).or(d.http),
            dht: self.dht.unwrap_or(d.dht),
            live_window: seconds("live_window_s", self.live_window_s, d.live_window)?,
            max_stream_bytes: self.max_stream_mb.map_or(d.max_stream_bytes, |mb| mb * 1024 * 1024),
            request_timeout: seconds("request_timeout_s", self.request_timeout_s, d.request_timeout)?,
            ban_duration: seconds("ban_s", self.ban_s, d.ban_duration)?,
            skip_gap_after: d.skip_gap_after,
            policy,
            upload_capacity_kbps,
        })
    }
}
