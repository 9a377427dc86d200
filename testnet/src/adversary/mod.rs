//! The adversary of the local testnet (`adversary` binary): a process that joins a scenario's stream as a peer and,
//! after a while, lies as its [`Behaviour`] says — built on the node library's codecs and protocol names, speaking
//! the wire formats as any outside implementation would.
//!
//! - `forged-have`, `forged-want`, `forged-place`: control messages about segments no signed entry names, or a
//!   `Place` naming a third party (one of the adversary's own identities, which counts any payload it gets) sent
//!   to every victim in turn;
//! - `withhold`: see [`withhold`];
//! - `bad-blocks`: block frames of a signed segment with the wrong bytes, pushed to every victim in turn;
//! - `request-flood`: manifests, blocks by CID and pulls as fast as its rate, at one victim at a time;
//! - `connection-flood`: new identities dialling one victim at a time from another loopback address
//!   (`127.0.0.2`), each sending a probe.
//!
//! Victims are the honest viewers the testnet lists in a file ([`record::write_victims`]); the stream's newest
//! segment comes from the broadcaster's manifest. The adversary writes what it did to a [`record::Record`] every
//! two seconds and when it stops.

pub mod record;
mod withhold;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, noise, request_response, tcp, yamux};
use streamrp2p_node::{Ack, ChunkCodec, Received, TreeMeshCodec, chunk_client, treemesh_client};
use streamrp2p_protocols::Cid;
use streamrp2p_protocols::chunk::{ChunkRequest, ChunkResponse};
use streamrp2p_protocols::segment::BLOCK_SIZE;
use streamrp2p_protocols::stream::StreamId;
use streamrp2p_protocols::treemesh::wire::Frame;
use streamrp2p_protocols::treemesh::{AttachRequest, Message, SegmentInfo};

use self::record::{Record, Victim, read_victims};
use self::withhold::Withholder;
use crate::scenario::Behaviour;

/// How often the broadcaster's manifest is read (its quota is one a second).
const MANIFEST_EVERY: Duration = Duration::from_secs(3);
/// How often the victims' list is read and the record written.
const HOUSEKEEPING: Duration = Duration::from_secs(2);
/// A flood stays on one victim this long.
const FLOOD_FOR: Duration = Duration::from_secs(5);
/// A withholder lies to a child once it has kept the stream from it this long (a segment).
const WITHHELD_SPELL: Duration = Duration::from_secs(2);
/// Made-up identities alive at once in a connection flood.
const MAX_SYBILS: usize = 48;

/// How an adversary runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// What it does (one or several; the lies take turns).
    pub behaviours: Vec<Behaviour>,
    /// The stream.
    pub stream: StreamId,
    /// The broadcaster's address, ending in `/p2p/<peer id>`.
    pub broadcaster: Multiaddr,
    /// The file listing the victims ([`record::write_victims`]).
    pub victims: PathBuf,
    /// Where its record goes.
    pub record: PathBuf,
    /// It lies from this long after it starts.
    pub after: Duration,
    /// Lies a second.
    pub rate_per_s: f64,
}

#[derive(NetworkBehaviour)]
struct Wire {
    chunk: request_response::Behaviour<ChunkCodec>,
    mesh: request_response::Behaviour<TreeMeshCodec>,
}

/// The attach request a forged `Place` carries: a joiner that wants the whole live window from segment 0, which an
/// honest peer that took it on a third party's word would push it (the lie a `Place` from a non-parent tells).
pub(crate) fn forged_request(nonce: u64) -> AttachRequest {
    AttachRequest {
        from_seq: 0,
        held: 0,
        reachable: true,
        slots: 0,
        stable: false,
        max_depth: u8::MAX,
        orphan: false,
        nonce,
    }
}

fn wire_swarm(listen: &str) -> Result<Swarm<Wire>> {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
        .with_behaviour(|_| Wire {
            chunk: chunk_client(),
            mesh: treemesh_client(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.listen_on(listen.parse()?)?;
    Ok(swarm)
}

/// The newest segment the broadcaster's manifest names: its number, size and blocks.
#[derive(Clone, Debug)]
struct Newest {
    segment: SegmentInfo,
    blocks: Vec<Cid>,
}

/// Everything the adversary does, in one place.
struct Adversary {
    options: Options,
    swarm: Swarm<Wire>,
    me: PeerId,
    broadcaster: PeerId,
    started: Instant,
    record: Record,
    victims: Vec<Victim>,
    dialled: BTreeSet<PeerId>,
    /// The next victim in turn.
    turn: usize,
    /// The victim flooded now, and since when.
    flooded: Option<(usize, Instant)>,
    newest: Option<Newest>,
    withholder: Option<Withholder>,
    /// The third party of forged `Place`s: an identity of its own (see [`run`]).
    sink_id: Option<PeerId>,
    /// Lies told so far.
    lies: u64,
    /// Turns taken so far (the behaviours take turns).
    turns: u64,
}

fn unix_ms(at: Instant, reference: Instant, reference_ms: u64) -> u64 {
    reference_ms.saturating_sub(reference.saturating_duration_since(at).as_millis() as u64)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Adversary {
    /// The adversary, and the third party of its forged `Place`s when it forges them.
    fn new(options: Options) -> Result<(Self, Option<Swarm<Wire>>)> {
        let Some(libp2p::multiaddr::Protocol::P2p(broadcaster)) = options.broadcaster.iter().last() else {
            bail!("the broadcaster's address must end in /p2p/<peer id>");
        };
        let mut swarm = wire_swarm("/ip4/127.0.0.1/tcp/0")?;
        swarm.dial(options.broadcaster.clone())?;
        let me = *swarm.local_peer_id();
        let started = Instant::now();
        let withholder = options
            .behaviours
            .contains(&Behaviour::Withhold)
            .then(|| Withholder::new(me, options.stream, broadcaster, started + options.after));
        let (sink, sink_id) = if options.behaviours.contains(&Behaviour::ForgedPlace) {
            let sink = wire_swarm("/ip4/127.0.0.1/tcp/0")?;
            let id = *sink.local_peer_id();
            (Some(sink), Some(id))
        } else {
            (None, None)
        };
        let record = Record {
            peer_id: me.to_string(),
            behaviour: options
                .behaviours
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(","),
            ..Record::default()
        };
        let adversary = Self {
            options,
            swarm,
            me,
            broadcaster,
            started,
            record,
            victims: Vec::new(),
            dialled: BTreeSet::new(),
            turn: 0,
            flooded: None,
            newest: None,
            withholder,
            sink_id,
            lies: 0,
            turns: 0,
        };
        Ok((adversary, sink))
    }

    fn lying(&self) -> bool {
        self.started.elapsed() >= self.options.after
    }

    fn lied(&mut self, victim: PeerId) {
        self.lies += 1;
        self.record
            .first_lie_ms
            .entry(victim.to_string())
            .or_insert_with(now_ms);
    }

    fn frame(&mut self, to: PeerId, message: Message<PeerId>) {
        let stream = self.options.stream;
        self.swarm
            .behaviour_mut()
            .mesh
            .send_request(&to, Frame::Control { stream, message }.into());
    }

    /// The victim whose turn it is (every victim in turn), or the one flooded now (one at a time).
    fn next_victim(&mut self, flood: bool) -> Option<PeerId> {
        if self.victims.is_empty() {
            return None;
        }
        let index = if flood {
            match self.flooded {
                Some((i, since)) if since.elapsed() < FLOOD_FOR && i < self.victims.len() => i,
                _ => {
                    self.turn = (self.turn + 1) % self.victims.len();
                    self.flooded = Some((self.turn, Instant::now()));
                    self.turn
                }
            }
        } else {
            self.turn = (self.turn + 1) % self.victims.len();
            self.turn
        };
        self.victims[index].peer_id.parse().ok()
    }

    /// One lie, as the behaviour says; a connection flood returns the identity it made.
    fn lie(&mut self, sybils: usize) -> Result<Option<Sybil>> {
        let Some(newest) = self.newest.clone() else {
            return Ok(None);
        };
        // The active behaviours take turns (withholding is no lie to tell: it is what the withholder does not do).
        let active: Vec<Behaviour> = self
            .options
            .behaviours
            .iter()
            .copied()
            .filter(|b| *b != Behaviour::Withhold)
            .collect();
        if active.is_empty() {
            return Ok(None);
        }
        let behaviour = active[(self.turns % active.len() as u64) as usize];
        self.turns += 1;
        let flood = matches!(behaviour, Behaviour::RequestFlood | Behaviour::ConnectionFlood);
        let Some(victim) = self.next_victim(flood) else {
            return Ok(None);
        };
        let stream = self.options.stream;
        match behaviour {
            Behaviour::ForgedHave => {
                let ahead = if self.lies % 2 == 0 { 1u64 << 40 } else { 100 };
                let segment = SegmentInfo {
                    seq: newest.segment.seq + ahead,
                    bytes: newest.segment.bytes,
                };
                self.frame(
                    victim,
                    Message::Have {
                        segment,
                        blocks: u128::MAX,
                    },
                );
                self.lied(victim);
            }
            Behaviour::ForgedWant => {
                let segment = SegmentInfo {
                    seq: newest.segment.seq + (1u64 << 40),
                    bytes: newest.segment.bytes,
                };
                self.frame(victim, Message::Want { segment, block: 0 });
                self.lied(victim);
            }
            Behaviour::ForgedPlace => {
                let Some(joiner) = self.sink_id else { return Ok(None) };
                let request = forged_request(rand::random());
                self.frame(
                    victim,
                    Message::Place {
                        joiner,
                        request,
                        hops: 1,
                    },
                );
                self.lied(victim);
            }
            Behaviour::BadBlocks => {
                let len = newest.segment.block_bytes(0, BLOCK_SIZE as u32) as usize;
                let frame = Frame::Block {
                    stream,
                    segment: newest.segment,
                    index: 0,
                    push: true,
                    data: vec![0xBA; len].into(),
                };
                self.swarm.behaviour_mut().mesh.send_request(&victim, frame.into());
                self.lied(victim);
            }
            Behaviour::RequestFlood => {
                let segment = newest.segment;
                let block = (self.lies % u64::from(segment.blocks(BLOCK_SIZE as u32))) as u16;
                self.frame(victim, Message::Want { segment, block });
                let chunk = &mut self.swarm.behaviour_mut().chunk;
                chunk.send_request(&victim, ChunkRequest::Manifest { stream, since_seq: 0 }.into());
                if let Some(cid) = newest.blocks.first() {
                    chunk.send_request(&victim, ChunkRequest::Block(*cid).into());
                }
                self.lied(victim);
            }
            Behaviour::ConnectionFlood => {
                if sybils < MAX_SYBILS {
                    let addr = self
                        .victims
                        .iter()
                        .find(|v| v.peer_id == victim.to_string())
                        .and_then(|v| v.addrs.iter().find(|a| a.contains("/quic")).cloned());
                    if let Some(addr) = addr.and_then(|a| a.parse::<Multiaddr>().ok()) {
                        // From another loopback address than the nodes' (127.0.0.1 is exempt): the victim's
                        // per-address limit applies. Over QUIC, which dials from its listening socket, once it
                        // listens there.
                        let swarm = wire_swarm("/ip4/127.0.0.2/udp/0/quic-v1")?;
                        self.record.connections += 1;
                        return Ok(Some(Sybil {
                            swarm,
                            born: Instant::now(),
                            target: Some((victim, addr)),
                        }));
                    }
                }
            }
            Behaviour::Withhold => {}
        }
        Ok(None)
    }

    /// Reads the victims' list, dials the new ones, and writes the record.
    fn housekeeping(&mut self) -> Result<()> {
        self.victims = read_victims(&self.options.victims);
        self.victims.retain(|v| v.peer_id != self.me.to_string());
        for victim in self.victims.clone() {
            let Ok(peer) = victim.peer_id.parse::<PeerId>() else {
                continue;
            };
            // Over TCP: the adversary's own connections come from the nodes' address, as a neighbour's would.
            let tcp = victim
                .addrs
                .iter()
                .find(|a| a.contains("/tcp/"))
                .and_then(|a| a.parse::<Multiaddr>().ok());
            if let Some(addr) = tcp
                && self.dialled.insert(peer)
            {
                let _ = self.swarm.dial(addr);
            }
        }
        if let Some(withholder) = &self.withholder {
            let (now, now_unix) = (Instant::now(), now_ms());
            for (child, since) in withholder.victims(now, WITHHELD_SPELL) {
                self.record
                    .first_lie_ms
                    .entry(child.to_string())
                    .or_insert_with(|| unix_ms(since, now, now_unix));
            }
        }
        self.record.write(&self.options.record)
    }

    fn manifest(&mut self) {
        let (stream, broadcaster) = (self.options.stream, self.broadcaster);
        self.swarm
            .behaviour_mut()
            .chunk
            .send_request(&broadcaster, ChunkRequest::Manifest { stream, since_seq: 0 }.into());
    }

    fn on_event(&mut self, event: SwarmEvent<WireEvent>) {
        match event {
            SwarmEvent::Behaviour(WireEvent::Chunk(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        response: ChunkResponse::Manifest(manifest),
                        ..
                    },
                ..
            })) => {
                if let Some(entry) = manifest.entries.iter().map(|e| e.entry()).max_by_key(|e| e.seq) {
                    self.newest = Some(Newest {
                        segment: SegmentInfo {
                            seq: entry.seq,
                            bytes: u32::try_from(entry.size).unwrap_or(u32::MAX),
                        },
                        blocks: entry.blocks.clone(),
                    });
                }
            }
            SwarmEvent::Behaviour(WireEvent::Mesh(request_response::Event::Message {
                peer,
                message: request_response::Message::Request { request, channel, .. },
                ..
            })) => {
                let _ = self.swarm.behaviour_mut().mesh.send_response(channel, Ack);
                if let (Some(withholder), Received::Valid(frame)) = (self.withholder.as_mut(), request) {
                    let mut out = Vec::new();
                    withholder.on_frame(peer, frame, Instant::now(), &mut out);
                    for (to, frame) in out {
                        self.swarm.behaviour_mut().mesh.send_request(&to, frame.into());
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if let Some(withholder) = self.withholder.as_mut() {
                    withholder.gone(&peer_id);
                }
                self.dialled.remove(&peer_id);
            }
            _ => {}
        }
    }

    fn tick_withholder(&mut self) {
        if let Some(withholder) = self.withholder.as_mut() {
            let mut out = Vec::new();
            withholder.tick(Instant::now(), &mut out);
            for (to, frame) in out {
                self.swarm.behaviour_mut().mesh.send_request(&to, frame.into());
            }
        }
    }
}

/// Counts payload frames a sink gets, by sender.
fn on_sink_event(event: SwarmEvent<WireEvent>, sink: &mut Swarm<Wire>, counts: &mut BTreeMap<String, u64>) {
    if let SwarmEvent::Behaviour(WireEvent::Mesh(request_response::Event::Message {
        peer,
        message: request_response::Message::Request { request, channel, .. },
        ..
    })) = event
    {
        if let Received::Valid(Frame::Block { data, .. }) = request {
            *counts.entry(peer.to_string()).or_default() += data.len() as u64;
        }
        let _ = sink.behaviour_mut().mesh.send_response(channel, Ack);
    }
}

/// A made-up identity of a connection flood.
struct Sybil {
    swarm: Swarm<Wire>,
    born: Instant,
    /// The victim it dials once it listens, and where.
    target: Option<(PeerId, Multiaddr)>,
}

/// Dials a sybil's victim once it listens, and counts its connection's outcome.
fn on_sybil_event(event: SwarmEvent<WireEvent>, sybil: &mut Sybil, stream: StreamId, record: &mut Record) {
    match event {
        SwarmEvent::NewListenAddr { .. } => {
            if let Some((victim, addr)) = sybil.target.take()
                && sybil.swarm.dial(addr).is_ok()
            {
                let message = Message::Probe;
                sybil
                    .swarm
                    .behaviour_mut()
                    .mesh
                    .send_request(&victim, Frame::Control { stream, message }.into());
            }
        }
        SwarmEvent::OutgoingConnectionError { .. } => record.connections_refused += 1,
        _ => {}
    }
}

/// Runs the adversary until it is stopped (SIGTERM or Ctrl-C), writing its record as it goes.
pub async fn run(options: Options) -> Result<()> {
    let (mut adversary, mut sink) = Adversary::new(options)?;
    let mut sybils: Vec<Sybil> = Vec::new();
    println!("peer id: {}", adversary.me);
    let lie_every = Duration::from_secs_f64(1.0 / adversary.options.rate_per_s.max(0.01));
    let mut lies = tokio::time::interval(lie_every);
    lies.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut manifests = tokio::time::interval(MANIFEST_EVERY);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    let mut withholding = tokio::time::interval(Duration::from_secs(1));
    let mut sink_counts = BTreeMap::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    loop {
        let sybil_event = async {
            if sybils.is_empty() {
                return std::future::pending().await;
            }
            let events = sybils.iter_mut().map(|s| Box::pin(s.swarm.select_next_some()));
            let (event, index, _) = futures::future::select_all(events).await;
            (event, index)
        };
        let sink_event = async {
            match sink.as_mut() {
                Some(sink) => sink.select_next_some().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            event = adversary.swarm.select_next_some() => adversary.on_event(event),
            event = sink_event => {
                if let Some(sink) = sink.as_mut() {
                    on_sink_event(event, sink, &mut sink_counts);
                }
            }
            (event, index) = sybil_event => {
                let stream = adversary.options.stream;
                on_sybil_event(event, &mut sybils[index], stream, &mut adversary.record);
            }
            _ = lies.tick() => {
                if adversary.lying()
                    && let Some(sybil) = adversary.lie(sybils.len())?
                {
                    sybils.push(sybil);
                }
            }
            _ = manifests.tick() => adversary.manifest(),
            _ = withholding.tick() => adversary.tick_withholder(),
            _ = housekeeping.tick() => {
                adversary.record.unsolicited_bytes = sink_counts.clone();
                sybils.retain(|s| s.born.elapsed() < Duration::from_secs(30));
                adversary.housekeeping()?;
            }
        }
    }
    adversary.record.unsolicited_bytes = sink_counts;
    adversary.housekeeping()
}
