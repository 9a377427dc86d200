//! A flood node: one libp2p Swarm (TCP, noise, yamux) running only gossipsub, as a broadcaster that publishes every
//! block of every new segment as one message, or as a watcher that puts segments back together.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::metrics::Registry;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, noise, tcp, yamux};
use serde::{Deserialize, Serialize};
use streamrp2p_protocols::segment;

use super::assembly::{Assembler, Inserted};
use super::figures::{GossipsubCounters, METRICS_PREFIX, NodeFigures, message_overhead};
use super::playlist::PlaylistFollower;
use super::wire::{BlockMessage, MAX_MESSAGE_SIZE};

/// The stream's topic, unless a node is told another.
pub const DEFAULT_TOPIC: &str = "/streamrp2p/flood/1";
/// The stream topic's largest message (gossipsub's per-topic `max_transmit_size`): a full block's message with room
/// for gossipsub's own framing (source, sequence number, topic, signature, protobuf tags) — 4 KiB, far more than
/// those take.
pub const MAX_TRANSMIT_SIZE: usize = MAX_MESSAGE_SIZE + 4096;
/// Gossipsub's global `max_transmit_size`: twice [`MAX_TRANSMIT_SIZE`]. libp2p-gossipsub 0.50.1 checks it against
/// its whole read buffer, which holds a frame and up to 8 KiB of the next; with the global limit at
/// [`MAX_TRANSMIT_SIZE`], back-to-back full blocks fail that check and the inbound stream is dropped. Each message
/// is still held to [`MAX_TRANSMIT_SIZE`] by the per-topic limit.
pub const READ_BUFFER_LIMIT: usize = 2 * MAX_TRANSMIT_SIZE;
/// Mesh degree D: 8, the simulator's `gossipsub-flood` baseline (gossipsub's default is 6); D_lo 6, D_hi 12
/// (gossipsub's default).
pub const MESH_N: usize = 8;
/// How often the broadcaster reads the playlist.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// What a node does.
#[derive(Clone, Debug)]
pub enum Role {
    /// Follow the HLS playlist at this path and publish every new segment's blocks.
    Broadcast {
        /// The playlist ffmpeg writes.
        hls: PathBuf,
    },
    /// Subscribe and put segments back together.
    Watch {
        /// Where to write each completed segment, as `SEQ.ts`, if anywhere.
        out: Option<PathBuf>,
    },
}

/// How a node runs.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Address to listen on.
    pub listen: Multiaddr,
    /// Peers to dial at start (with `/p2p/` or not).
    pub bootstrap: Vec<Multiaddr>,
    /// The stream's topic.
    pub topic: String,
}

/// The first line a node prints on stdout, once it listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Its address, `/p2p/` included: what other nodes dial.
    pub listen: String,
}

/// The gossipsub configuration both roles run: strict validation of signed messages, content-addressed message ids
/// (a block's CID over the message's bytes), messages on `topic` up to [`MAX_TRANSMIT_SIZE`] (see
/// [`READ_BUFFER_LIMIT`] for the global limit), mesh degree [`MESH_N`], and publishing to the mesh only
/// (`flood_publish` off), so that the broadcaster sends each block to D peers rather than to every peer it knows.
pub fn gossipsub_config(topic: &IdentTopic) -> Result<gossipsub::Config> {
    gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .max_transmit_size(READ_BUFFER_LIMIT)
        .max_transmit_size_for_topic(MAX_TRANSMIT_SIZE, topic.hash())
        .message_id_fn(|m: &gossipsub::Message| gossipsub::MessageId::from(segment::block_cid(&m.data).to_bytes()))
        .mesh_n(MESH_N)
        .mesh_n_low(6)
        .mesh_n_high(12)
        .flood_publish(false)
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub configuration: {e}"))
}

fn build_swarm(registry: &mut Registry, topic: &IdentTopic) -> Result<Swarm<gossipsub::Behaviour>> {
    let config = gossipsub_config(topic)?;
    let swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)
                .map(|b| b.with_metrics(registry, gossipsub::MetricsConfig::default()))
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

/// Now, unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs a node until `stop` resolves, then returns its figures. Prints a [`Ready`] line on stdout once it listens.
pub async fn run(options: NodeOptions, role: Role, stop: impl Future<Output = ()>) -> Result<NodeFigures> {
    let mut registry = Registry::default();
    let topic = IdentTopic::new(options.topic.clone());
    let mut swarm = build_swarm(registry.sub_registry_with_prefix(METRICS_PREFIX), &topic)?;
    swarm
        .behaviour_mut()
        .subscribe(&topic)
        .map_err(|e| anyhow::anyhow!("subscribe: {e}"))?;
    swarm
        .listen_on(options.listen.clone())
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    for address in &options.bootstrap {
        swarm
            .dial(address.clone())
            .with_context(|| format!("cannot dial {address}"))?;
    }
    let peer_id = *swarm.local_peer_id();
    let mut figures = NodeFigures {
        role: match role {
            Role::Broadcast { .. } => "broadcast",
            Role::Watch { .. } => "watch",
        }
        .to_owned(),
        peer_id: peer_id.to_string(),
        ..NodeFigures::default()
    };
    let (mut follower, out) = match &role {
        Role::Broadcast { hls } => (Some(PlaylistFollower::new(hls)), None),
        Role::Watch { out } => (None, out.clone()),
    };
    if let Some(out) = &out {
        tokio::fs::create_dir_all(out)
            .await
            .with_context(|| format!("cannot create {}", out.display()))?;
    }
    let mut assembler = Assembler::default();
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ready = false;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = poll.tick(), if follower.is_some() => {
                let follower = follower.as_mut().expect("checked");
                for (seq, path) in follower.poll().await {
                    let data = match tokio::fs::read(&path).await {
                        Ok(data) => Bytes::from(data),
                        Err(error) => {
                            eprintln!("flood_node: cannot read {}: {error}", path.display());
                            continue;
                        }
                    };
                    publish_segment(&mut swarm, &topic, seq, data, &mut figures);
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } if !ready => {
                    ready = true;
                    let line = serde_json::to_string(&Ready { listen: format!("{address}/p2p/{peer_id}") })?;
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "{line}")?;
                    stdout.flush()?;
                }
                SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) => {
                    let Ok(block) = BlockMessage::decode(&message.data) else {
                        figures.bad_messages += 1;
                        continue;
                    };
                    let len = block.data.len() as u64;
                    match assembler.insert(block) {
                        Inserted::Block => figures.payload_bytes_received += len,
                        Inserted::Segment(done) => {
                            figures.payload_bytes_received += len;
                            figures.segments += 1;
                            figures.lags_s.push(unix_ms().saturating_sub(done.published_ms) as f64 / 1000.0);
                            if let Some(out) = &out {
                                let path = out.join(format!("{}.ts", done.seq));
                                tokio::fs::write(&path, &done.data)
                                    .await
                                    .with_context(|| format!("cannot write {}", path.display()))?;
                            }
                        }
                        Inserted::Duplicate => {}
                        Inserted::Conflict => figures.bad_messages += 1,
                    }
                }
                _ => {}
            }
        }
    }
    figures.incomplete_segments = assembler.incomplete() as u64;
    let counters = GossipsubCounters::read(&registry);
    figures.apply_counters(counters, message_overhead(peer_id, &topic.hash()));
    Ok(figures)
}

fn publish_segment(
    swarm: &mut Swarm<gossipsub::Behaviour>,
    topic: &IdentTopic,
    seq: u64,
    data: Bytes,
    figures: &mut NodeFigures,
) {
    let blocks = match segment::split(data) {
        Ok(blocks) => blocks,
        Err(error) => {
            eprintln!("flood_node: segment {seq}: {error}");
            return;
        }
    };
    let published_ms = unix_ms();
    let block_count = blocks.blocks.len() as u16;
    for (index, (_, block)) in blocks.blocks.into_iter().enumerate() {
        let len = block.len() as u64;
        let message = BlockMessage {
            seq,
            index: index as u16,
            block_count,
            segment_size: blocks.size as u32,
            published_ms,
            data: block,
        };
        match swarm.behaviour_mut().publish(topic.clone(), message.encode()) {
            Ok(_) => figures.payload_bytes_published += len,
            Err(error) => {
                figures.publish_failures += 1;
                eprintln!("flood_node: segment {seq} block {index}: {error}");
            }
        }
    }
    figures.segments += 1;
}
