//! The hybrid tree-mesh as the simulator runs it: one [`TreeMesh`] state machine per viewer and one for the
//! broadcaster — the very code the node runs — with the simulator carrying their messages (one latency), their
//! block transfers (flows of the network model), their origin fetches and their timers.
//!
//! Peer ids are viewer indices; the broadcaster is [`BROADCASTER`]. Discovery (the DHT in the node) is a random
//! sample of present viewers and the broadcaster, answered after [`DISCOVERY_S`]. A viewer that leaves is noticed by
//! the peers it was linked with after [`LEAVE_NOTICED_S`]; two NAT-ed peers cannot reach each other at all.

use rand::Rng;
use streamrp2p_protocols::score::Offence;
use streamrp2p_protocols::treemesh::{
    BlockSource, Config, Input, Message, Output, Role, SegmentInfo, TreeMesh, UploadKind,
};

use super::adversary::{Adversarial, SYBIL_BASE};
use super::slab::Slab;
use crate::network::{Finished, NodeId};
use crate::scenario::Behaviour;
use crate::sim::{Core, Next, Source, Strategy};

thread_local! {
    /// Debug: messages by kind.
    pub static MSG_COUNTS: std::cell::RefCell<std::collections::BTreeMap<String, u64>> = Default::default();
}

/// The broadcaster's peer id.
pub const BROADCASTER: u32 = u32::MAX;
/// How long a DHT lookup for more peers takes.
pub const DISCOVERY_S: f64 = 0.3;
/// How long after a viewer leaves its parent, children and neighbours notice (a closed connection, or missed
/// pings for a crash; the figure is between the two).
pub const LEAVE_NOTICED_S: f64 = 1.0;
/// Peers discovery returns.
const DISCOVERED: usize = 8;
/// Bytes of a segment's signed manifest entry as gossipsub carries it: stream, sequence, duration, size, time, root
/// and block CIDs, signature, and gossipsub's framing.
const ANNOUNCEMENT_BYTES: usize = 600;
/// Copies of each gossipsub message a peer receives: one from each of its mesh peers (gossipsub's D = 8, less the
/// one it came from, plus IHAVE gossip).
const GOSSIP_COPIES: usize = 8;
/// Time one gossipsub hop adds beyond the first, seconds: the fastest of several paths wins each hop.
const GOSSIP_HOP_S: f64 = 0.05;

/// Hops a gossipsub message takes to reach the last of `n` peers: the diameter of a random mesh of degree 8.
fn gossip_hops(n: usize) -> f64 {
    ((n.max(2) as f64).ln() / 7f64.ln()).ceil().max(1.0)
}

/// Tags above this are origin fetches'.
const ORIGIN_TAGS: u64 = 1 << 62;
/// Framing and CID sent with each block, counted as control bytes.
const BLOCK_HEADER_BYTES: usize = 48;
/// An HTTP range request for one block, counted as control bytes.
const RANGE_REQUEST_BYTES: usize = 200;

enum InFlight {
    Message {
        from: u32,
        to: u32,
        message: Message<u32>,
    },
    Announce {
        to: u32,
        segment: SegmentInfo,
    },
    Discovery {
        to: u32,
    },
    Gone {
        to: u32,
        peer: u32,
    },
    /// An adversary's next lie is due.
    Lie {
        adversary: u32,
    },
}

#[derive(Clone, Copy)]
struct Transfer {
    from: Option<u32>,
    to: u32,
    segment: SegmentInfo,
    block: u16,
    kind: Option<UploadKind>,
    /// An adversary's block that fails its CID.
    junk: bool,
}

/// The tree-mesh strategy.
pub struct TreeMeshSim {
    template: Option<Config>,
    /// The viewers' configurations, one of each kind (a few: upload classes by reachability), shared by the machines.
    configs: Vec<std::sync::Arc<Config>>,
    broadcaster: Option<TreeMesh<u32>>,
    viewers: Vec<Option<TreeMesh<u32>>>,
    /// When each peer's timer is set for (the last slot is the broadcaster's).
    timer_at: Vec<f64>,
    present: Vec<u32>,
    /// Whether each viewer is in the stream, and whether it is behind NAT: a byte each, where reading the simulator's
    /// record of the viewer would bring its lines into the cache for one flag.
    alive: Vec<bool>,
    nat: Vec<bool>,
    position: Vec<usize>,
    messages: Slab<InFlight>,
    /// A buffer for a machine's outputs, reused.
    scratch: Vec<Output<u32>>,
    /// Origin fetches in progress, by (viewer, segment, block): their transfer tags, for calling them off.
    origin_tags: rustc_hash::FxHashMap<(u32, u64, u16), u64>,
    /// Origin fetches in progress by tag, and the last tag given.
    origin_fetches: rustc_hash::FxHashMap<u64, Transfer>,
    next_origin_tag: u64,
    transfers: Slab<Transfer>,
    config: Box<dyn Fn(&mut Config)>,
    debug: bool,
    /// See [`TreeMeshSim::checking_wakeups`].
    check_wakeups: bool,
    /// The viewer whose every input and output is printed (`SIM_TRACE=index`, with `SIM_DEBUG`).
    trace: Option<u32>,
    /// The scenario's adversaries and the honest nodes' defences, when it has any.
    adversarial: Option<Box<Adversarial>>,
}

impl Default for TreeMeshSim {
    fn default() -> Self {
        Self::new(|_| {})
    }
}

impl TreeMeshSim {
    /// The strategy with the protocol's defaults changed by `tune` (for experiments and tests).
    pub fn new(tune: impl Fn(&mut Config) + 'static) -> Self {
        Self {
            template: None,
            configs: Vec::new(),
            broadcaster: None,
            viewers: Vec::new(),
            timer_at: vec![f64::INFINITY],
            present: Vec::new(),
            alive: Vec::new(),
            nat: Vec::new(),
            position: Vec::new(),
            messages: Slab::default(),
            scratch: Vec::new(),
            origin_tags: rustc_hash::FxHashMap::default(),
            origin_fetches: rustc_hash::FxHashMap::default(),
            next_origin_tag: ORIGIN_TAGS,
            transfers: Slab::default(),
            config: Box::new(tune),
            debug: std::env::var_os("SIM_DEBUG").is_some(),
            check_wakeups: false,
            trace: std::env::var("SIM_TRACE").ok().and_then(|v| v.parse().ok()),
            adversarial: None,
        }
    }

    /// Checks the machines' wake-up contract as the run goes: a timer that fires before its machine's wake-up
    /// time is set again for that time, which is right only if a timeout handled then would do nothing. With this
    /// on, each such early timer runs the timeout on a copy of the machine and panics if the copy does anything, and
    /// after every input the wake-up a machine kept must be the one its state gives. Slow: for tests.
    pub fn checking_wakeups(mut self) -> Self {
        self.check_wakeups = true;
        self
    }

    fn template(&mut self, core: &Core) -> Config {
        if let Some(t) = &self.template {
            return t.clone();
        }
        let s = &core.scenario;
        let mut cfg = Config::new(Role::Viewer, s.bitrate_bytes(), s.segment_s, s.block_size(), 0.0);
        (self.config)(&mut cfg);
        self.template = Some(cfg.clone());
        cfg
    }

    fn node(core: &Core, peer: u32) -> NodeId {
        if peer == BROADCASTER {
            core.broadcaster
        } else {
            core.viewer_node(peer as usize)
        }
    }

    fn nat(&self, peer: u32) -> bool {
        peer != BROADCASTER && self.nat.get(peer as usize).copied().unwrap_or(false)
    }

    /// Whether `peer` is a viewer in the stream now (not a made-up identity, not gone).
    fn alive(&self, peer: u32) -> bool {
        peer == BROADCASTER || self.alive.get(peer as usize).copied().unwrap_or(false)
    }

    fn machine(&mut self, peer: u32) -> Option<&mut TreeMesh<u32>> {
        if peer == BROADCASTER {
            self.broadcaster.as_mut()
        } else {
            self.viewers.get_mut(peer as usize)?.as_mut()
        }
    }

    fn timer_slot(peer: u32) -> usize {
        if peer == BROADCASTER { 0 } else { peer as usize + 1 }
    }

    /// Hands `input` to `peer`'s machine (if it is still there) and carries out what it asks.
    fn feed(&mut self, core: &mut Core, peer: u32, input: Input<u32>) {
        let now = core.now;
        if self.trace == Some(peer) {
            eprintln!("{now:.3} {peer} <- {input:?}");
        }
        let Some(m) = self.machine(peer) else { return };
        let play_before = m.play_from();
        m.handle(now, input);
        self.drive(core, peer, play_before);
    }

    /// Carries out what `peer`'s machine asks after an input; `play_before` is its player's plan before the input.
    fn drive(&mut self, core: &mut Core, peer: u32, play_before: Option<f64>) {
        let mut outputs = std::mem::take(&mut self.scratch);
        let check_wakeups = self.check_wakeups;
        let Some(m) = self.machine(peer) else { return };
        while let Some(o) = m.poll_output() {
            outputs.push(o);
        }
        let wake = m.poll_timeout();
        if check_wakeups {
            let afresh = m.poll_timeout_afresh();
            assert_eq!(
                wake, afresh,
                "peer {peer} at {}: a kept wake-up differs from the state's",
                core.now
            );
        }
        let play_from = m.play_from();
        if peer != BROADCASTER && play_from != play_before {
            // The player's startup plan, set once the segment after its first is known.
            core.viewers[peer as usize].play_from = play_from;
        }
        for output in outputs.drain(..) {
            if self.trace == Some(peer) {
                eprintln!("{:.3} {peer} -> {output:?}", core.now);
            }
            self.carry_out(core, peer, output);
        }
        // Kept for the next call (nested calls, from uploads that fail at once, take a fresh one).
        self.scratch = outputs;
        if let Some(at) = wake {
            let slot = Self::timer_slot(peer);
            let current = self.timer_at[slot];
            if at < current || current < core.now {
                let at = at.max(core.now);
                self.timer_at[slot] = at;
                core.set_timer(at, u64::from(peer));
            }
        }
    }

    fn carry_out(&mut self, core: &mut Core, peer: u32, output: Output<u32>) {
        let src = Self::node(core, peer);
        match output {
            Output::Send { to, message } => {
                let bytes = message.wire_size();
                if self.debug {
                    let name = format!("{message:?}");
                    let mut name = name.split([' ', '{', '(']).next().unwrap_or("").to_owned();
                    if let Message::Want { segment, .. } = &message
                        && peer != BROADCASTER
                    {
                        let first = core.viewers[peer as usize].first_seq.unwrap_or(0);
                        let k = segment.seq.saturating_sub(first).min(3);
                        let m = self.viewers[peer as usize].as_ref().expect("sending");
                        let st = m.debug_segment(segment.seq).map(|s| (s.0, s.1));
                        name = format!("Want-k{k}-{st:?}-parent{}", m.parent().is_some());
                    }
                    MSG_COUNTS.with(|c| *c.borrow_mut().entry(name).or_insert(0u64) += 1);
                }
                if self.nat(peer) && self.nat(to) || self.adversarial.as_ref().is_some_and(|a| a.cut(peer, to)) {
                    // Neither side can take the connection (or one banned the other): the message never arrives.
                    core.bytes.control += bytes as f64;
                    return;
                }
                let dst = Self::node(core, to);
                let tag = self.messages.insert(InFlight::Message {
                    from: peer,
                    to,
                    message,
                });
                core.send_message(src, dst, bytes, tag);
            }
            Output::Push { to, segment, block } | Output::Serve { to, segment, block } => {
                let kind = if matches!(output, Output::Push { .. }) {
                    UploadKind::Push
                } else {
                    UploadKind::Serve
                };
                let withheld = self.withholding(core, peer, to, kind);
                if withheld || !self.alive(to) || self.adversarial.as_ref().is_some_and(|a| a.cut(peer, to)) {
                    // The receiver is gone (or banned it, or the sender withholds): the upload ends at once.
                    self.feed(core, peer, Input::Uploaded { to, kind });
                    return;
                }
                core.bytes.control += BLOCK_HEADER_BYTES as f64;
                let bytes = u64::from(segment.block_bytes(block, core.scenario.block_size()));
                let tag = self.transfers.insert(Transfer {
                    from: Some(peer),
                    to,
                    segment,
                    block,
                    kind: Some(kind),
                    junk: false,
                });
                let dst = Self::node(core, to);
                core.push(src, dst, bytes, tag);
            }
            Output::FetchOrigin { segment, block } => {
                if self.debug {
                    let first = core.viewers[peer as usize].first_seq.unwrap_or(0);
                    let m = self.viewers[peer as usize].as_ref().expect("fetching");
                    let pushed = m.debug_segment(segment.seq).is_some_and(|s| s.1);
                    let k = match (segment.seq.saturating_sub(first), pushed) {
                        (0, _) => "origin-first",
                        (1, _) => "origin-second",
                        (_, true) => "origin-later-pushed",
                        (_, false) => "origin-later-pulled",
                    };
                    MSG_COUNTS.with(|c| *c.borrow_mut().entry(k.to_owned()).or_insert(0u64) += 1);
                }
                core.bytes.control += RANGE_REQUEST_BYTES as f64;
                let bytes = u64::from(segment.block_bytes(block, core.scenario.block_size()));
                // Origin fetches get tags of their own, never reused: one may be called off while its request is
                // still on the way, and a reused tag would then name another transfer.
                self.next_origin_tag += 1;
                let tag = self.next_origin_tag;
                let transfer = Transfer {
                    from: None,
                    to: peer,
                    segment,
                    block,
                    kind: None,
                    junk: false,
                };
                self.origin_fetches.insert(tag, transfer);
                if let Some(old) = self.origin_tags.insert((peer, segment.seq, block), tag) {
                    // Asked again (a failure in between): the older fetch is moot.
                    self.origin_fetches.remove(&old);
                    core.cancel_request(old);
                }
                let origin = core.origin;
                core.request(origin, src, bytes, tag);
            }
            Output::CancelOrigin { segment, block } => {
                if let Some(tag) = self.origin_tags.remove(&(peer, segment.seq, block)) {
                    self.origin_fetches.remove(&tag);
                    core.cancel_request(tag);
                }
            }
            Output::FindPeers => {
                let tag = self.messages.insert(InFlight::Discovery { to: peer });
                core.set_timer(core.now + DISCOVERY_S, tag_message(tag));
            }
            Output::SegmentComplete(_) => {}
            Output::Misbehaved {
                peer: offender,
                offence,
            } => {
                if self.debug {
                    let name = format!("penalty-{}", offence.name());
                    MSG_COUNTS.with(|c| *c.borrow_mut().entry(name).or_insert(0u64) += 1);
                }
                self.penalise(core, peer, offender, offence);
            }
        }
    }

    /// A random sample of present viewers, and the broadcaster, as discovery would return them.
    fn discover(&self, core: &mut Core, except: u32) -> Vec<(u32, bool)> {
        use rand::seq::IndexedRandom;
        let mut found = vec![(BROADCASTER, true)];
        let sample: Vec<u32> = self
            .present
            .choose_multiple(&mut core.rng, DISCOVERED + 1)
            .copied()
            .filter(|v| *v != except)
            .take(DISCOVERED)
            .collect();
        found.extend(sample.into_iter().map(|v| (v, !self.nat[v as usize])));
        found
    }

    fn viewer_config(&mut self, core: &Core, viewer: usize) -> std::sync::Arc<Config> {
        let mut cfg = self.template(core);
        let v = &core.viewers[viewer];
        cfg.upload_capacity = v.upload_x * core.scenario.bitrate_bytes();
        if let Some(a) = &self.adversarial
            && a.role(viewer as u32)
                .is_some_and(|r| r.behaviour == Behaviour::Withhold)
        {
            // What attracts children: the upload it says it has.
            let claimed = a.config.as_ref().map_or(0.0, |c| c.claimed_upload_x);
            cfg.upload_capacity = cfg.upload_capacity.max(claimed * core.scenario.bitrate_bytes());
        }
        cfg.reachable = !v.nat;
        if let Some(shared) = self.configs.iter().find(|c| ***c == cfg) {
            return shared.clone();
        }
        let shared = std::sync::Arc::new(cfg);
        self.configs.push(shared.clone());
        shared
    }
}

impl TreeMeshSim {
    /// Whether `peer` is a withholder that has started withholding; a block it keeps from an honest child `to` while
    /// it says it is connected to the broadcaster is a lie to it (a pull it leaves unanswered only times out, as an
    /// honest peer's may; a parent cut off has nothing to send, and says so).
    fn withholding(&mut self, core: &Core, peer: u32, to: u32, kind: UploadKind) -> bool {
        let Some(adversarial) = self.adversarial.as_mut() else {
            return false;
        };
        let withholds = adversarial
            .role(peer)
            .is_some_and(|r| r.behaviour == Behaviour::Withhold && r.active(core.now));
        if withholds && kind == UploadKind::Push {
            // Read only now: a lookup in another peer's machine is a cache miss on every honest upload.
            let rooted = self
                .viewers
                .get(peer as usize)
                .and_then(|m| m.as_ref())
                .is_some_and(|m| m.is_rooted());
            if rooted {
                adversarial.withheld(to, peer, core.now, core.scenario.segment_s);
            }
        }
        withholds
    }

    /// Honest node `node` penalises `offender` (as the node's peer manager does); a ban cuts them apart, and each
    /// hears that the other is gone.
    fn penalise(&mut self, core: &mut Core, node: u32, offender: u32, offence: Offence) {
        let block = u64::from(core.scenario.block_size());
        let Some(adversarial) = self.adversarial.as_mut() else {
            return;
        };
        if adversarial.penalise(node, offender, offence, core.now, block) {
            for (to, peer) in [(node, offender), (offender, node)] {
                let tag = self.messages.insert(InFlight::Gone { to, peer });
                core.set_timer(core.now, tag_message(tag));
            }
        }
    }

    /// An honest viewer other than `except`, drawn from those present.
    fn honest_viewer(&self, core: &mut Core, except: u32) -> Option<u32> {
        use rand::seq::IndexedRandom;
        let adversarial = self.adversarial.as_ref()?;
        (0..8)
            .filter_map(|_| self.present.choose(&mut core.rng).copied())
            .find(|v| *v != except && adversarial.honest(*v))
    }

    /// Sends `message` as `from` (an adversary, or one of its identities) to `to`.
    fn send_as(&mut self, core: &mut Core, from: u32, to: u32, message: Message<u32>) {
        let maker = if from >= SYBIL_BASE {
            (from - SYBIL_BASE) >> 16
        } else {
            from
        };
        let (src, dst) = (Self::node(core, maker), Self::node(core, to));
        let bytes = message.wire_size();
        let tag = self.messages.insert(InFlight::Message { from, to, message });
        core.send_message(src, dst, bytes, tag);
    }

    /// Adversary `adversary` tells its next lie, and sets the time of the one after.
    fn lie(&mut self, core: &mut Core, adversary: u32) {
        let now = core.now;
        let Some(adversarial) = self.adversarial.as_ref() else {
            return;
        };
        let Some(role) = adversarial.role(adversary).copied() else {
            return;
        };
        if !self.alive(adversary) {
            return;
        }
        let Some(rate) = adversarial.config.as_ref().map(|c| c.rate_per_s) else {
            return;
        };
        let Some(newest) = core.newest_segment() else {
            let tag = self.messages.insert(InFlight::Lie { adversary });
            core.set_timer(now + 1.0 / rate, tag_message(tag));
            return;
        };
        let pick = self.honest_viewer(core, adversary);
        let adversarial = self.adversarial.as_mut().expect("checked above");
        let Some(victim) = adversarial.victim(adversary, now, || pick) else {
            let tag = self.messages.insert(InFlight::Lie { adversary });
            core.set_timer(now + 1.0 / rate, tag_message(tag));
            return;
        };
        let bytes = core.segment_info(newest).bytes;
        let segment = |seq| SegmentInfo { seq, bytes };
        match role.behaviour {
            Behaviour::ForgedHave => {
                // Near (evicts nothing, grows nothing: held until an entry that never comes) and far (a window the
                // size of the number).
                let ahead = if core.rng.random::<bool>() { 100 } else { 1u64 << 40 };
                adversarial.lied(victim, adversary, now);
                let message = Message::Have {
                    segment: segment(newest + ahead),
                    blocks: u128::MAX,
                };
                self.send_as(core, adversary, victim, message);
            }
            Behaviour::ForgedWant => {
                adversarial.lied(victim, adversary, now);
                let message = Message::Want {
                    segment: segment(newest + (1u64 << 40)),
                    block: 0,
                };
                self.send_as(core, adversary, victim, message);
            }
            Behaviour::ForgedPlace => {
                // To its own children the Place is one a parent may send: only the third party's confirmation
                // stands between it and the payload. To anyone else it is a lie.
                let children: Vec<u32> = self
                    .viewers
                    .get(adversary as usize)
                    .and_then(|m| m.as_ref())
                    .map(|m| m.children().collect())
                    .unwrap_or_default();
                let victim = if !children.is_empty() && core.rng.random::<bool>() {
                    children[core.rng.random_range(0..children.len())]
                } else {
                    self.adversarial
                        .as_mut()
                        .expect("checked above")
                        .lied(victim, adversary, now);
                    victim
                };
                let Some(third) = self.honest_viewer(core, victim) else {
                    return;
                };
                let request = crate::adversary::forged_request(core.rng.random());
                let message = Message::Place {
                    joiner: third,
                    request,
                    hops: 1,
                };
                self.send_as(core, adversary, victim, message);
            }
            Behaviour::BadBlocks => {
                let info = core.segment_info(newest);
                let bytes = u64::from(info.block_bytes(0, core.scenario.block_size()));
                // Junk takes the adversary's uplink like any block: it sends no faster than its link carries (the
                // network model would otherwise queue the flood's transfers without end, and no victim would ever
                // see the first of them).
                let uplink_bps = core.viewers[adversary as usize].upload_x * core.scenario.bitrate_kbps * 1000.0;
                if !adversarial.may_send_junk(adversary, now, bytes as f64 * 8.0 / uplink_bps) {
                    let tag = self.messages.insert(InFlight::Lie { adversary });
                    core.set_timer(now + 1.0 / rate, tag_message(tag));
                    return;
                }
                adversarial.lied(victim, adversary, now);
                let tag = self.transfers.insert(Transfer {
                    from: Some(adversary),
                    to: victim,
                    segment: info,
                    block: 0,
                    kind: None,
                    junk: true,
                });
                let (src, dst) = (Self::node(core, adversary), Self::node(core, victim));
                core.push(src, dst, bytes, tag);
            }
            Behaviour::RequestFlood => {
                adversarial.lied(victim, adversary, now);
                let message = if core.rng.random::<bool>() {
                    let info = core.segment_info(newest.saturating_sub(1));
                    let block = core.rng.random_range(0..info.blocks(core.scenario.block_size()));
                    Message::Want { segment: info, block }
                } else {
                    Message::Probe
                };
                self.send_as(core, adversary, victim, message);
            }
            Behaviour::ConnectionFlood => {
                if let Some(sybil) = adversarial.sybil(adversary) {
                    self.send_as(core, sybil, victim, Message::Probe);
                }
            }
            Behaviour::Withhold => return,
        }
        let tag = self.messages.insert(InFlight::Lie { adversary });
        core.set_timer(now + 1.0 / rate, tag_message(tag));
    }
}

impl TreeMeshSim {
    /// Debugging: the ancestry of one deep viewer: (id, backbone, children, backbone children, joined).
    pub fn deep_path(&self, core_viewers: &[crate::sim::Viewer]) -> String {
        let Some((mut id, _)) = self
            .viewers
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref().map(|m| (i as u32, m)))
            .find(|(_, m)| m.parent().is_some() && !m.is_rooted() && !m.attaching())
        else {
            return String::new();
        };
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(m) = self.viewers.get(id as usize).and_then(|m| m.as_ref()) {
            if !seen.insert(id) {
                out.push("LOOP".into());
                break;
            }
            let bb = m
                .children()
                .filter(|c| {
                    self.viewers
                        .get(*c as usize)
                        .and_then(|c| c.as_ref())
                        .is_some_and(|c| c.is_backbone())
                })
                .count();
            out.push(format!(
                "{id}:{}{}/{}x{:.1}@{:.0}{}{}",
                if m.is_backbone() { "B" } else { "L" },
                m.children().count(),
                bb,
                core_viewers[id as usize].upload_x,
                core_viewers[id as usize].joined,
                if m.is_rooted() { "R" } else { "U" },
                if m.attaching() { "a" } else { "" }
            ));
            match m.parent() {
                Some(p) if p != BROADCASTER => id = p,
                _ => break,
            }
        }
        out.join(" <- ")
    }

    /// A line about the topology now: viewers with a parent, backbone size, depths.
    pub fn topology(&self) -> String {
        let live: Vec<&TreeMesh<u32>> = self.viewers.iter().flatten().collect();
        let with_parent = live.iter().filter(|m| m.parent().is_some()).count();
        let backbone = live.iter().filter(|m| m.is_backbone()).count();
        let mut depths = [0usize; 16];
        let mut leaves = [0usize; 16];
        for m in &live {
            if let Some(d) = m.depth() {
                depths[d.min(15)] += 1;
                if !m.forwards() {
                    leaves[d.min(15)] += 1;
                }
            }
        }
        let children: usize = live.iter().map(|m| m.children().count()).sum();
        let root = self.broadcaster.as_ref().map_or(0, |b| b.children().count());
        let mesh: usize = live.iter().map(|m| m.neighbours().count()).sum();
        let roots: Vec<&&TreeMesh<u32>> = live
            .iter()
            .filter(|m| m.parent().is_none() && m.children().count() > 0)
            .collect();
        let unrooted = live.iter().filter(|m| m.parent().is_some() && !m.is_rooted()).count();
        let roots_attaching = roots.iter().filter(|m| m.attaching()).count();
        let roots_backbone = roots.iter().filter(|m| m.is_backbone()).count();
        let orphans = live.iter().filter(|m| m.parent().is_none()).count();
        format!(
            "{} live, {} with parent, {} backbone, {} children (root {}), mesh links {}, depths {:?} (leaves {:?}); unrooted {unrooted}, orphans {orphans}, fragment roots {} (attaching {roots_attaching}, backbone {roots_backbone})",
            live.len(),
            with_parent,
            backbone,
            children,
            root,
            mesh,
            depths,
            &leaves[..8],
            roots.len()
        )
    }
}

/// Timer tags carry peer ids; message deliveries scheduled as timers (discovery answers) are marked by the top bit.
fn tag_message(tag: u64) -> u64 {
    tag | 1 << 63
}

fn seed(scenario_seed: u64, peer: u32) -> u64 {
    let mut z = scenario_seed ^ (u64::from(peer) << 20) ^ 0x0005_DEEC_E66D;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl TreeMeshSim {
    /// The broadcaster's machine, made when the stream starts: it holds every segment from the first.
    fn start_broadcaster(&mut self, core: &Core) {
        if self.broadcaster.is_some() {
            return;
        }
        let mut cfg = self.template(core);
        cfg.role = Role::Broadcaster;
        cfg.upload_capacity = core.scenario.broadcaster_upload_x * core.scenario.bitrate_bytes();
        self.broadcaster = Some(TreeMesh::new(
            BROADCASTER,
            cfg,
            seed(core.scenario.seed, BROADCASTER),
            core.now,
        ));
    }
}

impl Strategy for TreeMeshSim {
    fn on_join(&mut self, core: &mut Core, viewer: usize) {
        self.start_broadcaster(core);
        if self.adversarial.is_none() {
            self.adversarial = Some(Box::new(Adversarial::new(core.scenario.adversaries.clone())));
        }
        if let Some(adversarial) = self.adversarial.as_mut()
            && let Some(role) = adversarial.joined(viewer, core.viewers[viewer].adversary, core.now)
            && role.behaviour != Behaviour::Withhold
        {
            let tag = self.messages.insert(InFlight::Lie {
                adversary: viewer as u32,
            });
            core.set_timer(role.from, tag_message(tag));
        }
        let cfg = self.viewer_config(core, viewer);
        let id = viewer as u32;
        if self.viewers.len() <= viewer {
            self.viewers.resize_with(viewer + 1, || None);
            self.timer_at.resize(viewer + 2, f64::INFINITY);
            self.position.resize(viewer + 1, usize::MAX);
        }
        self.viewers[viewer] = Some(TreeMesh::new(id, cfg, seed(core.scenario.seed, id), core.now));
        let candidates = self.discover(core, id);
        self.position[viewer] = self.present.len();
        self.present.push(id);
        if self.alive.len() <= viewer {
            self.alive.resize(viewer + 1, false);
            self.nat.resize(viewer + 1, false);
        }
        self.alive[viewer] = true;
        self.nat[viewer] = core.viewers[viewer].nat;
        let tail = match core.newest_segment() {
            Some(newest) => (newest.saturating_sub(1)..=newest)
                .map(|s| core.segment_info(s))
                .collect(),
            None => Vec::new(),
        };
        let broadcaster = Some(BROADCASTER);
        let live_age_s = core
            .newest_segment()
            .and_then(|n| core.segment_ready.get(n as usize))
            .map(|made| core.now - made);
        self.feed(
            core,
            id,
            Input::Join {
                tail,
                candidates,
                broadcaster,
                live_age_s,
            },
        );
    }

    fn on_leave(&mut self, core: &mut Core, viewer: usize, cancelled: Vec<u64>) {
        let id = viewer as u32;
        self.alive[viewer] = false;
        let Some(machine) = self.viewers[viewer].take() else {
            return;
        };
        let i = self.position[viewer];
        self.present.swap_remove(i);
        if let Some(moved) = self.present.get(i) {
            self.position[*moved as usize] = i;
        }
        // Uploads to the leaver fail at their senders now; what the leaver was sending its peers notice with
        // the rest below.
        self.origin_tags.retain(|(to, ..), _| *to != id);
        for tag in cancelled {
            if tag > ORIGIN_TAGS {
                self.origin_fetches.remove(&tag);
                continue;
            }
            if let Some(t) = self.transfers.take(tag)
                && let (Some(from), Some(kind)) = (t.from, t.kind)
                && from != id
            {
                self.feed(core, from, Input::Uploaded { to: t.to, kind });
            }
        }
        for peer in machine.linked() {
            let tag = self.messages.insert(InFlight::Gone { to: peer, peer: id });
            core.set_timer(core.now + LEAVE_NOTICED_S, tag_message(tag));
        }
    }

    fn on_segment(&mut self, core: &mut Core, seq: u64) {
        self.start_broadcaster(core);
        if let Some(adversarial) = self.adversarial.as_mut() {
            adversarial.tidy(core.now);
        }
        let info = core.segment_info(seq);
        self.feed(core, BROADCASTER, Input::Published(info));
        // The signed manifest entry floods the stream's gossipsub topic: every viewer hears of the segment a few
        // mesh hops later.
        let hops = gossip_hops(self.present.len());
        for i in 0..self.present.len() {
            let to = self.present[i];
            let node = core.viewer_node(to as usize);
            let delay = core.latency(core.broadcaster, node) + (hops - 1.0) * GOSSIP_HOP_S;
            core.bytes.control += (GOSSIP_COPIES * ANNOUNCEMENT_BYTES) as f64;
            let tag = self.messages.insert(InFlight::Announce { to, segment: info });
            core.set_timer_for(core.now + delay, tag_message(tag), to as usize);
        }
    }

    fn on_flow_finished(&mut self, core: &mut Core, finished: Finished) {
        let t = if finished.tag > ORIGIN_TAGS {
            self.origin_fetches.remove(&finished.tag)
        } else {
            self.transfers.take(finished.tag)
        };
        let Some(t) = t else {
            return;
        };
        let blocks = 1u128 << t.block;
        match (t.from, t.kind) {
            (Some(_), None) if t.junk => {
                let tag = self.transfers.insert(t);
                core.deliver(finished.src, t.to as usize, t.segment.seq, blocks, Source::Junk, tag);
            }
            (Some(from), Some(kind)) => {
                if from != BROADCASTER {
                    core.viewers[from as usize].uploaded += finished.bytes as f64;
                }
                self.feed(core, from, Input::Uploaded { to: t.to, kind });
                let source = if from == BROADCASTER {
                    Source::Broadcaster
                } else {
                    Source::Peer
                };
                let tag = self.transfers.insert(t);
                core.deliver(finished.src, t.to as usize, t.segment.seq, blocks, source, tag);
            }
            _ => {
                self.origin_tags.remove(&(t.to, t.segment.seq, t.block));
                let tag = self.transfers.insert(t);
                core.deliver(finished.src, t.to as usize, t.segment.seq, blocks, Source::Origin, tag);
            }
        }
    }

    fn on_delivered(&mut self, core: &mut Core, _viewer: usize, _from: NodeId, _seq: u64, fresh: u128, tag: u64) {
        let Some(t) = self.transfers.take(tag) else { return };
        if self.debug && fresh == 0 {
            let first = core.viewers[t.to as usize].first_seq.unwrap_or(0);
            let state = self.viewers[t.to as usize]
                .as_ref()
                .and_then(|m| m.debug_segment(t.segment.seq));
            let k = t.segment.seq.saturating_sub(first).min(3);
            let kind = format!("dup-{:?}-k{k}-{:?}", t.kind, state.map(|s| (s.0, s.1)));
            MSG_COUNTS.with(|c| *c.borrow_mut().entry(kind).or_insert(0u64) += 1);
        }
        if let (Some(sender), Some(adversarial)) = (t.from, self.adversarial.as_ref()) {
            if adversarial.cut(sender, t.to) {
                return;
            }
            if t.junk {
                // It fails its CID: never handed to the machine, and the sender is banned.
                self.penalise(core, t.to, sender, Offence::BadBlock);
                return;
            }
        }
        let from = match t.from {
            Some(peer) => BlockSource::Peer(peer),
            None => BlockSource::Origin,
        };
        self.feed(
            core,
            t.to,
            Input::Block {
                from,
                segment: t.segment,
                block: t.block,
            },
        );
    }

    fn on_message(&mut self, core: &mut Core, tag: u64) {
        match self.messages.take(tag) {
            Some(InFlight::Message { from, to, message }) => {
                if let Some(adversarial) = self.adversarial.as_mut() {
                    if adversarial.cut(from, to) {
                        return;
                    }
                    // The receiver's connection limit and quotas, as the node keeps them.
                    if let Err(offence) = adversarial.admit(to, from, message.quota_class(), core.now) {
                        if self.debug && adversarial.honest(from) {
                            let name = format!(
                                "quota-{:?}-{}",
                                message.quota_class(),
                                format!("{message:?}").split([' ', '{', '(']).next().unwrap_or("")
                            );
                            MSG_COUNTS.with(|c| *c.borrow_mut().entry(name).or_insert(0u64) += 1);
                        }
                        if let Some(offence) = offence {
                            self.penalise(core, to, from, offence);
                        }
                        return;
                    }
                }
                self.feed(core, to, Input::Message { from, message })
            }
            Some(InFlight::Lie { adversary }) => self.lie(core, adversary),
            Some(InFlight::Discovery { to }) => {
                let found = self.discover(core, to);
                self.feed(core, to, Input::Candidates(found));
            }
            Some(InFlight::Gone { to, peer }) => self.feed(core, to, Input::PeerGone(peer)),
            Some(InFlight::Announce { to, segment }) => self.feed(core, to, Input::Announced(segment)),
            None => {}
        }
    }

    fn prefetch(&self, core: &Core, next: Next, deep: bool) {
        use crate::prefetch::prefetch;
        // Addresses only: nothing here reads what it asks for (a read would wait for it, which is what this avoids).
        let peer = match next {
            Next::Delivery(viewer, tag) => {
                self.transfers.prefetch(tag);
                Some(viewer)
            }
            Next::Timer(tag, None) if tag & (1 << 63) == 0 => {
                let peer = tag as u32;
                (peer != BROADCASTER).then_some(peer as usize)
            }
            Next::Message(tag, viewer) | Next::Timer(tag, viewer) => {
                self.messages.prefetch(tag & !(1 << 63));
                viewer
            }
            Next::Flow(c) => {
                if c.tag <= ORIGIN_TAGS {
                    self.transfers.prefetch(c.tag);
                }
                let sender = core.viewer_of(c.src);
                if let Some(v) = sender {
                    prefetch(&core.viewers[v], 1);
                }
                sender
            }
        };
        if let Some(t) = peer.and_then(|p| self.timer_at.get(Self::timer_slot(p as u32))) {
            prefetch(t, 1);
        }
        if let Some(m) = peer.and_then(|p| self.viewers.get(p)) {
            prefetch(m, 16);
            if deep && let Some(m) = m {
                m.hot_memory(|start, bytes| crate::prefetch::prefetch_bytes(start, bytes, 8));
            }
        }
    }

    fn adversary_figures(&self, core: &Core) -> Option<crate::report::AdversaryFigures> {
        self.adversarial
            .as_ref()
            .filter(|_| core.scenario.adversaries.is_some())
            .map(|a| a.figures())
    }

    fn on_timer(&mut self, core: &mut Core, tag: u64) {
        if tag & (1 << 63) != 0 {
            return self.on_message(core, tag & !(1 << 63));
        }
        let peer = tag as u32;
        let slot = Self::timer_slot(peer);
        if self.timer_at[slot] != core.now {
            if self.debug {
                MSG_COUNTS.with(|c| *c.borrow_mut().entry("timer-stale".into()).or_insert(0u64) += 1);
            }
            return;
        }
        if self.debug {
            MSG_COUNTS.with(|c| *c.borrow_mut().entry("timer-fired".into()).or_insert(0u64) += 1);
        }
        self.timer_at[slot] = f64::INFINITY;
        let (now, check_wakeups) = (core.now, self.check_wakeups);
        let Some(m) = self.machine(peer) else { return };
        // The machine's wake-up may have moved later since this timer was set (a block came in time): then there is
        // nothing to run yet, and the timer is set again for the new time.
        if let Some(wake) = m.poll_timeout().filter(|wake| *wake > now) {
            if check_wakeups {
                let mut copy = m.clone();
                copy.handle_timeout(now);
                if let Some(output) = copy.poll_output() {
                    panic!("peer {peer} at {now}: woken early (its wake-up is {wake}), it would still do {output:?}");
                }
            }
            self.timer_at[slot] = wake;
            core.set_timer(wake, u64::from(peer));
            return;
        }
        let play_before = m.play_from();
        m.handle_timeout(now);
        self.drive(core, peer, play_before);
    }
}
