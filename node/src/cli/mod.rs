//! The command line: parsing, merging with the config file, and the commands.

#[cfg(feature = "demo")]
mod demo;
mod file_config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use streamrp2p_node::ingest::{HlsSource, follow_hls};
use streamrp2p_node::{Multiaddr, Node, NodeConfig, NodeHandle, StreamId, identity};

use self::file_config::FileConfig;

/// Decentralized live video over libp2p: broadcast HLS to peers, watch from peers, play through a local gateway.
#[derive(Parser, Debug)]
#[command(name = "streamrp2p", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes; each may also be set in the `--config` file.
#[derive(Args, Debug)]
struct CommonArgs {
    /// Where the node keeps its identity [default: the platform's data dir, e.g. ~/.local/share/streamrp2p]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on (repeatable) [default: /ip4/0.0.0.0/tcp/4100 and /ip4/0.0.0.0/udp/4100/quic-v1]
    #[arg(long, global = true, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Peer to join the network through, ending in /p2p/<peer id> (repeatable)
    #[arg(long, global = true, value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Publicly reachable address of this node, announced to peers (repeatable)
    #[arg(long, global = true, value_name = "MULTIADDR")]
    external: Vec<Multiaddr>,
    /// Address of the HTTP gateway and API [default: 127.0.0.1:8080]
    #[arg(long, global = true, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Upload at most this many kbit/s [default: no cap beyond --upload-capacity-kbps]
    #[arg(long, global = true, value_name = "KBPS")]
    max_upload_kbps: Option<f64>,
    /// Metered network (cellular data): upload nothing, only watch
    #[arg(long, global = true)]
    metered: bool,
    /// Background mode (a phone with the screen off): a quarter of the upload budget, never in the backbone
    #[arg(long, global = true)]
    background: bool,
    /// Stop serving once uploaded bytes exceed RATIO times downloaded bytes [default: no limit]
    #[arg(long, global = true, value_name = "RATIO")]
    max_ratio: Option<f64>,
    /// The uplink this node assumes when planning, in kbit/s [default: 20000]
    #[arg(long, global = true, value_name = "KBPS")]
    upload_capacity_kbps: Option<f64>,
    /// TOML file holding any of these options (command-line options win)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node: serve the DHT and relay the streams it watches
    Node,
    /// Broadcast an HLS stream that ffmpeg or OBS writes
    Broadcast {
        /// The stream's name (with this node's key, it makes the stream id)
        #[arg(long)]
        name: String,
        /// Path or http(s) URL of the HLS media playlist to follow (ffmpeg `-f hls -hls_time 2`)
        #[arg(long, value_name = "SOURCE")]
        hls: HlsSource,
        /// Public HTTP base URL viewers may fall back to [default: this node's gateway]
        #[arg(long, value_name = "URL")]
        origin: Option<String>,
    },
    /// Watch a stream and serve it on the local gateway
    Watch {
        /// The stream id (64 hex digits, as `broadcast` prints it)
        stream: StreamId,
    },
    /// Show this node's identity, creating it if needed
    Keys,
    /// Run a broadcaster of an embedded sample and N viewers in one process, on loopback
    #[cfg(feature = "demo")]
    Demo {
        /// Number of viewers
        #[arg(long, default_value_t = 3)]
        viewers: usize,
    },
}

/// Parses the command line, runs the command, and turns an error into a message and exit code 1.
pub(crate) async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,libp2p=warn,libp2p_gossipsub=error,libp2p_kad=error")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> Result<()> {
    let file = match &cli.common.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let config = file.merge(&cli.common)?;
    match cli.command {
        Command::Node => {
            let node = start(config).await?;
            wait_for_ctrl_c(&node).await
        }
        Command::Broadcast { name, hls, origin } => {
            let node = start(config).await?;
            let stream = node.broadcast(&name, origin).await?;
            println!("stream: {stream}");
            print_play_url(&node, stream);
            let follower = tokio::spawn(follow_hls(node.clone(), stream, hls));
            tokio::select! {
                result = follower => {
                    let published = result.context("ingest task failed")??;
                    println!("source ended after {published} segments; still serving (Ctrl-C to stop)");
                    wait_for_ctrl_c(&node).await
                }
                result = tokio::signal::ctrl_c() => result.context("cannot wait for Ctrl-C"),
            }
        }
        Command::Watch { stream } => {
            let node = start(config).await?;
            node.watch(stream).await?;
            print_play_url(&node, stream);
            wait_for_ctrl_c(&node).await
        }
        Command::Keys => {
            let dir = config.data_dir.context("no data dir: pass --data-dir")?;
            let key = identity::load_or_create(&dir)?;
            println!("peer id:    {}", key.public().to_peer_id());
            println!("public key: {}", hex::encode(key.public().encode_protobuf()));
            println!("key file:   {}", dir.join(identity::IDENTITY_FILE).display());
            Ok(())
        }
        #[cfg(feature = "demo")]
        Command::Demo { viewers } => demo::run(config, viewers).await,
    }
}

async fn start(config: NodeConfig) -> Result<NodeHandle> {
    let node = Node::start(config).await.context("cannot start the node")?;
    println!("peer id: {}", node.peer_id());
    for addr in node.listen_addrs() {
        println!("listening: {addr}");
    }
    if let Some(addr) = node.http_addr() {
        println!("gateway: http://{addr}");
    }
    Ok(node)
}

fn print_play_url(node: &NodeHandle, stream: StreamId) {
    if let Some(addr) = node.http_addr() {
        println!("play: http://{addr}/streams/{stream}/index.m3u8");
    }
}

async fn wait_for_ctrl_c(_node: &NodeHandle) -> Result<()> {
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str], file: &str) -> Result<NodeConfig> {
        let cli = Cli::try_parse_from(args)?;
        let file: FileConfig = toml::from_str(file)?;
        file.merge(&cli.common)
    }

    #[test]
    fn policy_flags_on_any_command() {
        let c = config(
            &[
                "streamrp2p",
                "node",
                "--max-upload-kbps",
                "1500",
                "--metered",
                "--background",
                "--max-ratio",
                "1.5",
                "--upload-capacity-kbps",
                "8000",
            ],
            "",
        )
        .unwrap();
        let expected = streamrp2p_node::Policy {
            max_upload_kbps: Some(1500.0),
            metered: true,
            background: true,
            max_ratio: Some(1.5),
        };
        assert_eq!(c.policy, expected);
        assert_eq!(c.upload_capacity_kbps, 8000.0);
        let c = config(&["streamrp2p", "--background", "watch", &"ab".repeat(32)], "").unwrap();
        assert!(c.policy.background);
    }

    #[test]
    fn defaults_file_and_command_line_wins() {
        let c = config(&["streamrp2p", "keys"], "").unwrap();
        assert_eq!(c.policy, streamrp2p_node::Policy::default());
        assert_eq!(c.upload_capacity_kbps, streamrp2p_node::DEFAULT_UPLOAD_CAPACITY_KBPS);
        let file =
            "max_upload_kbps = 700\nmetered = true\nmax_ratio = 2.0\nupload_capacity_kbps = 5000\nbackground = true";
        let c = config(&["streamrp2p", "node"], file).unwrap();
        assert_eq!(c.policy.max_upload_kbps, Some(700.0));
        assert!(c.policy.metered && c.policy.background);
        assert_eq!(c.policy.max_ratio, Some(2.0));
        assert_eq!(c.upload_capacity_kbps, 5000.0);
        let c = config(
            &[
                "streamrp2p",
                "node",
                "--max-upload-kbps",
                "900",
                "--upload-capacity-kbps",
                "6000",
            ],
            file,
        )
        .unwrap();
        assert_eq!(c.policy.max_upload_kbps, Some(900.0));
        assert_eq!(c.upload_capacity_kbps, 6000.0);
    }

    #[test]
    fn invalid_values_say_what_to_pass() {
        let error = config(&["streamrp2p", "node", "--max-upload-kbps", "0"], "").unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains("max_upload_kbps") && message.contains("metered"),
            "{message}"
        );
        let error = config(&["streamrp2p", "node"], "max_ratio = -1.0").unwrap_err();
        assert!(format!("{error:#}").contains("max_ratio"), "{error:#}");
        let error = config(&["streamrp2p", "node", "--upload-capacity-kbps", "0"], "").unwrap_err();
        assert!(format!("{error:#}").contains("upload_capacity_kbps"), "{error:#}");
        assert!(config(&["streamrp2p", "node", "--max-ratio", "many"], "").is_err());
    }
}
