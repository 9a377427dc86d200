//! The tree-mesh state machine through its public interface: a few machines wired by a tiny harness that delivers
//! every message and block at once, so each test reads as a conversation.

use std::collections::BTreeMap;

use streamrp2p_protocols::score::Offence;
use streamrp2p_protocols::treemesh::{
    Advert, AttachRequest, BlockSource, Config, Input, Message, Output, Policy, Refusal, Role, SegmentInfo, TreeMesh,
    UploadKind,
};

const BITRATE: f64 = 312_500.0;
const BLOCK: u32 = 65_536;
const ROOT: u32 = 0;

fn config(role: Role, upload_x: f64) -> Config {
    Config::new(role, BITRATE, 2.0, BLOCK, upload_x * BITRATE)
}

fn segment(seq: u64) -> SegmentInfo {
    SegmentInfo { seq, bytes: 625_000 }
}

/// Machines by id, and what they asked for that the harness does not carry out itself.
struct Net {
    machines: BTreeMap<u32, TreeMesh<u32>>,
    now: f64,
    origin_fetches: Vec<(u32, SegmentInfo, u16)>,
    origin_cancels: Vec<(u32, u64, u16)>,
    pushes: Vec<(u32, u32, u64, u16)>,
    sent: Vec<(u32, u32, Message<u32>)>,
    /// Blocks a peer keeps from another: (from, to, pull answers too). Kept blocks are still reported sent to the
    /// peer that keeps them, as a withholder's own machine would believe.
    kept: Option<(u32, u32, bool)>,
    /// Penalties given to the peer that keeps blocks: (by whom, offence). A penalty to any other peer fails the test.
    penalties: Vec<(u32, Offence)>,
}

impl Net {
    fn new() -> Self {
        Self::with_broadcaster_upload(10.0)
    }

    /// A network whose broadcaster uploads `upload_x` times the bitrate.
    fn with_broadcaster_upload(upload_x: f64) -> Self {
        let mut machines = BTreeMap::new();
        machines.insert(ROOT, TreeMesh::new(ROOT, config(Role::Broadcaster, upload_x), 1, 0.0));
        Self {
            machines,
            now: 0.0,
            origin_fetches: Vec::new(),
            origin_cancels: Vec::new(),
            pushes: Vec::new(),
            sent: Vec::new(),
            kept: None,
            penalties: Vec::new(),
        }
    }

    fn add(&mut self, id: u32, cfg: Config) {
        self.machines
            .insert(id, TreeMesh::new(id, cfg, u64::from(id), self.now));
    }

    fn input(&mut self, id: u32, input: Input<u32>) {
        self.machines.get_mut(&id).unwrap().handle(self.now, input);
        self.run();
    }

    /// Delivers `message` from `from` to `to`, and everything that follows from it.
    fn receive(&mut self, to: u32, from: u32, message: Message<u32>) {
        self.input(to, Input::Message { from, message });
    }

    /// Carries out every output until all machines are quiet: messages, pushes and serves arrive at once.
    fn run(&mut self) {
        loop {
            let mut work = Vec::new();
            for (id, m) in &mut self.machines {
                while let Some(o) = m.poll_output() {
                    work.push((*id, o));
                }
            }
            if work.is_empty() {
                return;
            }
            for (from, o) in work {
                match o {
                    Output::Send { to, message } => {
                        self.sent.push((from, to, message.clone()));
                        if let Some(m) = self.machines.get_mut(&to) {
                            m.handle(self.now, Input::Message { from, message });
                        }
                    }
                    Output::Push { to, segment, block } | Output::Serve { to, segment, block } => {
                        self.pushes.push((from, to, segment.seq, block));
                        let pushed = self.machines.get(&from).unwrap().children().any(|c| c == to);
                        let kept = self
                            .kept
                            .is_some_and(|(f, t, answers)| (f, t) == (from, to) && (pushed || answers));
                        if !kept && let Some(m) = self.machines.get_mut(&to) {
                            m.handle(
                                self.now,
                                Input::Block {
                                    from: BlockSource::Peer(from),
                                    segment,
                                    block,
                                },
                            );
                        }
                        let kind = if pushed { UploadKind::Push } else { UploadKind::Serve };
                        self.machines
                            .get_mut(&from)
                            .unwrap()
                            .handle(self.now, Input::Uploaded { to, kind });
                    }
                    Output::FetchOrigin { segment, block } => self.origin_fetches.push((from, segment, block)),
                    Output::CancelOrigin { segment, block } => self.origin_cancels.push((from, segment.seq, block)),
                    Output::FindPeers | Output::SegmentComplete(_) => {}
                    Output::Misbehaved { peer, offence } => {
                        assert!(
                            self.kept.is_some_and(|(f, ..)| f == peer),
                            "{from} says honest peer {peer} misbehaved: {offence:?}"
                        );
                        self.penalties.push((from, offence));
                    }
                }
            }
        }
    }

    /// Advances the clock to `t`, firing every machine's timers on the way.
    fn advance(&mut self, t: f64) {
        loop {
            let next = self
                .machines
                .iter()
                .filter_map(|(id, m)| m.poll_timeout().map(|at| (at, *id)))
                .filter(|(at, _)| *at <= t)
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let Some((at, id)) = next else { break };
            self.now = self.now.max(at);
            self.machines.get_mut(&id).unwrap().handle_timeout(self.now);
            self.run();
        }
        self.now = t;
    }

    fn m(&self, id: u32) -> &TreeMesh<u32> {
        &self.machines[&id]
    }
}

fn join(net: &mut Net, id: u32, cfg: Config, candidates: &[u32]) {
    net.add(id, cfg);
    let tail = Vec::new();
    let candidates = candidates.iter().map(|c| (*c, true)).collect();
    net.input(
        id,
        Input::Join {
            tail,
            candidates,
            broadcaster: Some(ROOT),
            live_age_s: None,
        },
    );
}

/// Six viewers of `upload_x` times the bitrate join: the default broadcaster's six child slots.
fn fill_the_root(net: &mut Net, upload_x: f64) {
    for id in 1..=6 {
        join(net, id, config(Role::Viewer, upload_x), &[ROOT]);
    }
}

/// A viewer that hears of segments 4 and 5 but of no peer.
fn join_knowing_no_one(net: &mut Net, id: u32) {
    net.add(id, config(Role::Viewer, 1.5));
    net.input(
        id,
        Input::Join {
            tail: vec![segment(4), segment(5)],
            candidates: Vec::new(),
            broadcaster: None,
            live_age_s: None,
        },
    );
}

/// Viewer `id` joins knowing `candidates` and `broadcaster`, peers the test answers for.
fn join_scripted(net: &mut Net, id: u32, candidates: &[u32], broadcaster: u32) {
    net.add(id, config(Role::Viewer, 1.5));
    net.input(
        id,
        Input::Join {
            tail: Vec::new(),
            candidates: candidates.iter().map(|c| (*c, true)).collect(),
            broadcaster: Some(broadcaster),
            live_age_s: None,
        },
    );
}

/// The advert of a reachable peer one level below `root`: a stable forwarder with `spare_slots` free, or a leaf;
/// holding segment `held` whole, if any.
fn advert_below(root: u32, forwarder: bool, spare_slots: u32, held: Option<u64>) -> Box<Advert<u32>> {
    Box::new(Advert {
        path: vec![root],
        rooted: true,
        backbone: forwarder,
        forwards: forwarder,
        spare_slots,
        leaf_children: 0,
        reachable: true,
        newest: held,
        oldest: held,
        room: None,
        backbone_room: None,
        free: 0,
        any_room: None,
        any_free: 0,
        fringe: None,
    })
}

/// What a reachable peer offering `slots` child slots asks of a parent.
fn attach_request(slots: u32) -> Message<u32> {
    Message::Attach(AttachRequest {
        from_seq: 0,
        held: 0,
        reachable: true,
        slots,
        stable: false,
        max_depth: u8::MAX,
        orphan: false,
        nonce: 0,
    })
}

/// The nonce of the last attach request `who` sent: an answer must echo it.
fn last_nonce(net: &Net, who: u32) -> u64 {
    net.sent
        .iter()
        .rev()
        .find_map(|(f, _, m)| match m {
            Message::Attach(r) if *f == who => Some(r.nonce),
            _ => None,
        })
        .expect("an attach request was sent")
}

/// Who accepted `joiner` as a child, by the messages sent.
fn accepted_by(net: &Net, joiner: u32) -> Vec<u32> {
    net.sent
        .iter()
        .filter(|(_, t, m)| *t == joiner && matches!(m, Message::Accepted { .. }))
        .map(|(f, _, _)| *f)
        .collect()
}

#[test]
fn a_joiner_probes_attaches_to_the_broadcaster_and_gets_blocks_pushed_cut_through() {
    let mut net = Net::new();
    join(&mut net, 1, config(Role::Viewer, 1.5), &[ROOT]);
    assert!(
        net.sent
            .iter()
            .any(|(f, t, m)| (*f, *t) == (1, ROOT) && *m == Message::Probe)
    );
    net.advance(1.0);
    assert_eq!(net.m(1).parent(), Some(ROOT), "the broadcaster had a free slot");
    assert_eq!(net.m(1).depth(), Some(1));
    assert_eq!(net.m(ROOT).children().collect::<Vec<_>>(), vec![1]);

    // A published segment goes down block by block: one push in flight per child, the next when it is sent.
    net.input(ROOT, Input::Published(segment(0)));
    let to_child: Vec<u16> = net.pushes.iter().filter(|p| p.1 == 1).map(|p| p.3).collect();
    assert_eq!(
        to_child,
        (0..10).collect::<Vec<u16>>(),
        "all ten 64 KiB blocks, in order"
    );
    assert!(net.m(1).has_segment(0));
    assert!(
        net.origin_fetches.is_empty(),
        "peers delivered in time: nothing from the origin"
    );
    assert!(net.m(1).counters().from_peers >= 625_000.0);
}

#[test]
fn a_full_parent_passes_a_joiner_down_its_tree_and_never_exceeds_its_budget() {
    let mut net = Net::new();
    // 10x upload at 1.5x per root child: six slots, taken by 6x viewers that forward.
    fill_the_root(&mut net, 6.0);
    net.advance(1.0);
    assert_eq!(net.m(ROOT).children().count(), 6);
    assert!(net.m(1).forwards());
    // A joiner asks the full root: the root passes its request down to a child with room (push-down placement),
    // which takes it and answers the joiner directly.
    join(&mut net, 7, config(Role::Viewer, 0.5), &[ROOT]);
    net.advance(3.0);
    let parent = net.m(7).parent().expect("the joiner attached one level down");
    assert!((1..=6).contains(&parent));
    assert_eq!(net.m(7).depth(), Some(2));
    assert!(
        net.sent
            .iter()
            .any(|(f, t, m)| (*f, *t) == (ROOT, parent) && matches!(m, Message::Place { joiner: 7, .. })),
        "the root placed the joiner"
    );
    assert_eq!(accepted_by(&net, 7), vec![parent], "one parent answered");
    assert_eq!(net.m(ROOT).children().count(), 6, "never beyond the budget");
}

#[test]
fn a_backbone_peer_refuses_a_child_that_is_its_own_ancestor() {
    // A broadcaster with two child slots, both taken by forwarders: the third viewer hangs below one of them.
    let mut net = Net::with_broadcaster_upload(3.0);
    join(&mut net, 1, config(Role::Viewer, 6.0), &[ROOT]);
    join(&mut net, 3, config(Role::Viewer, 6.0), &[ROOT]);
    net.advance(6.0);
    assert!(net.m(1).is_backbone());
    join(&mut net, 2, config(Role::Viewer, 6.0), &[ROOT]);
    net.advance(12.0);
    let parent = net.m(2).parent().expect("2 attached");
    assert!(parent == 1 || parent == 3, "below a forwarder, not at the full root");
    assert!(net.m(2).is_backbone());
    // Its parent asking it to be its own parent would close a loop.
    net.receive(2, parent, attach_request(4));
    let answer = net.sent.iter().rev().find(|(f, t, _)| (*f, *t) == (2, parent)).unwrap();
    assert!(
        matches!(
            answer.2,
            Message::Rejected {
                reason: Refusal::Loop,
                ..
            }
        ),
        "{:?}",
        answer.2
    );
    assert_eq!(net.m(2).children().count(), 0);
}

#[test]
fn a_metered_peer_uploads_nothing() {
    let mut net = Net::new();
    let mut cfg = config(Role::Viewer, 6.0);
    cfg.policy = Policy {
        metered: true,
        ..Policy::default()
    };
    join(&mut net, 1, cfg, &[ROOT]);
    net.advance(10.0);
    net.input(ROOT, Input::Published(segment(0)));
    assert!(net.m(1).has_segment(0));
    assert!(!net.m(1).is_backbone(), "metered peers take no children");
    join(&mut net, 2, config(Role::Viewer, 1.5), &[1]);
    let want = Message::Want {
        segment: segment(0),
        block: 0,
    };
    net.receive(1, 2, want);
    assert!(
        net.pushes.iter().all(|p| p.0 != 1),
        "nothing served or pushed by the metered peer"
    );
    assert_eq!(net.m(1).counters().uploaded, 0.0);
}

#[test]
fn a_segment_no_peer_delivers_comes_from_the_origin_before_its_deadline() {
    let mut net = Net::new();
    // A joiner that hears of segments but has no one to get them from.
    join_knowing_no_one(&mut net, 1);
    // Peers get the first chance at the first segment: the origin is not asked at once...
    assert!(net.origin_fetches.is_empty(), "peers first");
    // ...but with no peer to pull from, it is asked in time to play at `startup_s`.
    let startup = config(Role::Viewer, 1.5).startup_s;
    net.advance(startup - 0.3);
    assert!(net.origin_fetches.iter().any(|(id, s, _)| *id == 1 && s.seq == 4));
    let first: Vec<u16> = net
        .origin_fetches
        .iter()
        .filter(|f| f.1.seq == 4)
        .map(|f| f.2)
        .collect();
    assert_eq!(first.len(), 10);
    for (_, s, b) in net.origin_fetches.clone() {
        net.input(
            1,
            Input::Block {
                from: BlockSource::Origin,
                segment: s,
                block: b,
            },
        );
    }
    assert!(net.m(1).has_segment(4));
    // Segment 5 is due two seconds after playback started: the origin is asked before then, not at once.
    let started = net.now;
    let before = net.origin_fetches.len();
    net.advance(started + 0.5);
    assert_eq!(net.origin_fetches.len(), before, "too early for the origin");
    net.advance(started + 2.0);
    assert!(
        net.origin_fetches.iter().any(|(_, s, _)| s.seq == 5),
        "fetched just in time for its deadline"
    );
}

#[test]
fn a_full_tree_sends_a_joiner_straight_to_a_free_slot_levels_below() {
    let mut net = Net::new();
    // The root's six slots go to 6x viewers, which take four children each.
    fill_the_root(&mut net, 6.0);
    net.advance(5.0);
    // Their 24 slots fill; one of the newcomers (10) has a 6x uplink and will have room of its own.
    for id in 10..34 {
        let upload = if id == 10 { 6.0 } else { 0.5 };
        join(&mut net, id, config(Role::Viewer, upload), &[ROOT]);
    }
    net.advance(12.0);
    assert!((1..=6).all(|id| net.m(id).children().count() == 4), "level 1 is full");
    assert_eq!(net.m(10).depth(), Some(2));
    assert!(net.m(10).forwards());
    // A newcomer asking the full root lands in the free slot two levels down.
    join(&mut net, 99, config(Role::Viewer, 0.5), &[ROOT]);
    net.advance(14.0);
    assert_eq!(net.m(99).parent(), Some(10));
    assert_eq!(net.m(99).depth(), Some(3));
}

#[test]
fn a_forwarder_takes_the_place_of_a_leaf_which_moves_below_it() {
    let mut net = Net::new();
    // Six 0.5x leaves fill the root's six slots.
    fill_the_root(&mut net, 0.5);
    net.advance(1.0);
    assert_eq!(net.m(ROOT).children().count(), 6);
    // A 6x viewer would carry four more: it takes a leaf's slot (mTreebone's preemption)...
    join(&mut net, 7, config(Role::Viewer, 6.0), &[ROOT]);
    net.advance(4.0);
    assert_eq!(net.m(7).parent(), Some(ROOT));
    let displaced: Vec<u32> = (1..=6).filter(|id| net.m(*id).parent() != Some(ROOT)).collect();
    assert_eq!(displaced.len(), 1, "exactly one leaf moved");
    // ...and the leaf it displaced hangs below it, re-attached at once.
    assert_eq!(net.m(displaced[0]).parent(), Some(7));
    assert_eq!(net.m(ROOT).children().count(), 6);
}

#[test]
fn a_block_the_origin_is_slow_to_send_is_asked_of_a_peer_that_holds_it() {
    let mut net = Net::new();
    join_knowing_no_one(&mut net, 1);
    // No peer known: the first segment goes to the origin, which never answers.
    net.advance(1.0);
    assert_eq!(net.origin_fetches.iter().filter(|f| f.1.seq == 4).count(), 10);
    // A peer that holds segment 4 turns up (discovery finds it, and it answers the probe).
    net.input(1, Input::Candidates(vec![(2, true)]));
    let reply = Message::ProbeReply {
        advert: advert_below(ROOT, false, 0, Some(4)),
        peers: Vec::new(),
    };
    net.receive(1, 2, reply);
    let wants = |net: &Net| {
        net.sent
            .iter()
            .filter(|(f, t, m)| (*f, *t) == (1, 2) && matches!(m, Message::Want { segment, .. } if segment.seq == 4))
            .count()
    };
    assert_eq!(wants(&net), 0, "the origin is asked already, and not late yet");
    // Once the origin has taken twice its usual time, the peer races it for the missing blocks.
    net.advance(2.0);
    assert!(wants(&net) > 0, "a hedged pull to the peer");
    // The peer wins the race: the origin fetch of that block is called off.
    let block = net
        .sent
        .iter()
        .find_map(|(f, t, m)| match m {
            Message::Want { segment, block } if (*f, *t) == (1, 2) && segment.seq == 4 => Some(*block),
            _ => None,
        })
        .unwrap();
    net.input(
        1,
        Input::Block {
            from: BlockSource::Peer(2),
            segment: segment(4),
            block,
        },
    );
    assert_eq!(net.origin_cancels, vec![(1, 4, block)]);
}

#[test]
fn the_same_seed_makes_the_same_choices() {
    let run = || {
        let mut net = Net::new();
        for id in 1..=12 {
            join(
                &mut net,
                id,
                config(Role::Viewer, if id % 3 == 0 { 6.0 } else { 1.5 }),
                &[ROOT, 1, 2, 3],
            );
            net.advance(f64::from(id));
        }
        net.advance(20.0);
        net.sent
            .iter()
            .map(|(f, t, m)| format!("{f}>{t}:{m:?}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

/// `id` leaves: its machine is gone, and every other machine notices.
fn leave(net: &mut Net, id: u32) {
    net.machines.remove(&id);
    let others: Vec<u32> = net.machines.keys().copied().collect();
    for other in others {
        net.input(other, Input::PeerGone(id));
    }
}

#[test]
fn a_lost_forwarders_subtrees_keep_their_depth_under_a_recruit_from_the_fringe() {
    // A broadcaster with two child slots, taken by 6x forwarders; below them eight more, four under each, with no
    // children of their own: the fringe. Each comes once the one before has proven stable.
    let mut net = Net::with_broadcaster_upload(3.0);
    for id in [1, 2].into_iter().chain(10..18) {
        join(&mut net, id, config(Role::Viewer, 6.0), &[ROOT]);
        net.advance(net.now + 5.0);
    }
    assert!(
        [1, 2].iter().all(|id| net.m(*id).children().count() == 4),
        "level 1 is full"
    );
    assert!((10..18).all(|id| net.m(id).depth() == Some(2) && net.m(id).is_backbone()));
    let orphans: Vec<u32> = net.m(1).children().collect();

    // A level-1 forwarder leaves. Its grandparent, the root, keeps the slot for a fringe forwarder it recruits, and
    // passes it the four orphans, which ask the root first.
    net.sent.clear();
    leave(&mut net, 1);
    net.advance(net.now + 2.0);
    // The orphans hang below the recruit or take the slot it left: either way, as deep as they were (without the
    // recruit, one would take the root's slot and the other three would go a level down).
    for orphan in &orphans {
        assert_eq!(net.m(*orphan).depth(), Some(2), "orphan {orphan} kept its depth");
    }
    let recruit = net
        .sent
        .iter()
        .find_map(|(f, t, m)| (*f == ROOT && *m == Message::Recruit).then_some(*t))
        .expect("the root recruited");
    assert!(!orphans.contains(&recruit), "the recruit comes from the other subtree");
    assert_eq!(
        net.m(recruit).parent(),
        Some(ROOT),
        "the recruit moved up into the freed place"
    );
    assert_eq!(net.m(ROOT).children().count(), 2, "never beyond the budget");
}

/// Viewer 9 joins through the broadcaster 50 with candidates 60 and 70, which are not machines here: the test answers
/// for them, so that 70 measures nearer (0.05 s away) and 60 farther, and the broadcaster places 9 below 60, at level
/// 2.
fn placed_below_60_near_70(net: &mut Net) {
    join_scripted(net, 9, &[60, 70], 50);
    let advert = |spare_slots| advert_below(50, true, spare_slots, None);
    let reply = |spare| Message::ProbeReply {
        advert: advert(spare),
        peers: Vec::new(),
    };
    net.advance(0.1);
    net.receive(9, 70, reply(2));
    net.advance(0.3);
    net.receive(9, 60, reply(1));
    let nonce = last_nonce(net, 9);
    net.receive(
        9,
        60,
        Message::Accepted {
            advert: advert(0),
            nonce,
        },
    );
    assert_eq!((net.m(9).parent(), net.m(9).depth()), (Some(60), Some(2)));
}

#[test]
fn a_viewer_moves_to_a_closer_parent_no_deeper_than_it_is() {
    // Peers 50 (the broadcaster), 60 and 70 are not machines here: the test answers for them, when it likes, so
    // the viewer measures the latencies the test chooses.
    let mut net = Net::new();
    placed_below_60_near_70(&mut net);
    let advert = |spare_slots| advert_below(50, true, spare_slots, None);

    // In time it asks 70, as near the root and nearer to it, for a place no deeper than its own...
    net.sent.clear();
    let asked = |net: &Net| -> Vec<u8> {
        net.sent
            .iter()
            .filter_map(|(f, t, m)| match m {
                Message::Attach(r) if (*f, *t) == (9, 70) => Some(r.max_depth),
                _ => None,
            })
            .collect()
    };
    let mut t = net.now;
    while asked(&net).is_empty() && t < 15.0 {
        t += 0.25;
        net.advance(t);
    }
    assert_eq!(asked(&net), vec![2]);
    assert_eq!(
        net.m(9).parent(),
        Some(60),
        "the old parent stays until the new one accepts"
    );
    // ...and lets 60 go once 70 has taken it.
    let nonce = last_nonce(&net, 9);
    net.receive(
        9,
        70,
        Message::Accepted {
            advert: advert(1),
            nonce,
        },
    );
    assert_eq!((net.m(9).parent(), net.m(9).depth()), (Some(70), Some(2)));
    assert!(
        net.sent
            .iter()
            .any(|(f, t, m)| (*f, *t) == (9, 60) && *m == Message::Detach)
    );
}

#[test]
fn pushes_from_a_peer_that_took_us_too_late_were_asked_for() {
    let mut net = Net::new();
    placed_below_60_near_70(&mut net);
    let advert = |spare_slots| advert_below(50, true, spare_slots, None);
    // 9 asks 70 for a place; the answer is slow, and 9 gives the request up.
    net.sent.clear();
    let mut t = net.now;
    while !net
        .sent
        .iter()
        .any(|(f, t, m)| (*f, *t) == (9, 70) && matches!(m, Message::Attach(_)))
    {
        assert!(t < 15.0, "9 never asked 70");
        t += 0.25;
        net.advance(t);
    }
    let nonce = last_nonce(&net, 9);
    net.advance(net.now + 2.5);
    // 70 took it all the same, and pushes at once; 9 keeps 60 and tells 70 it is not its child...
    net.receive(
        9,
        70,
        Message::Accepted {
            advert: advert(1),
            nonce,
        },
    );
    assert_eq!(net.m(9).parent(), Some(60));
    assert!(
        net.sent
            .iter()
            .any(|(f, t, m)| (*f, *t) == (9, 70) && *m == Message::Detach)
    );
    // ...and the blocks 70 pushed before that Detach reached it are no lie (the harness fails on any penalty).
    net.input(9, Input::Announced(segment(0)));
    let block = |b| Input::Block {
        from: BlockSource::Peer(70),
        segment: segment(0),
        block: b,
    };
    net.input(9, block(0));
    net.input(9, block(1));
    assert!(net.penalties.is_empty());
    // A peer that takes 9 for its child unasked (a nonce 9 never sent) earns no such grace.
    net.kept = Some((80, 9, false));
    net.receive(
        9,
        80,
        Message::Accepted {
            advert: advert(1),
            nonce: nonce ^ 1,
        },
    );
    net.input(
        9,
        Input::Block {
            from: BlockSource::Peer(80),
            segment: segment(0),
            block: 2,
        },
    );
    assert_eq!(net.penalties, vec![(9, Offence::Unsolicited)]);
    // Long after, a push from 70 is one nobody asked for either.
    net.penalties.clear();
    net.kept = Some((70, 9, false));
    net.advance(net.now + 6.0);
    net.input(9, Input::Announced(segment(1)));
    net.input(
        9,
        Input::Block {
            from: BlockSource::Peer(70),
            segment: segment(1),
            block: 0,
        },
    );
    assert_eq!(net.penalties, vec![(9, Offence::Unsolicited)]);
}

#[test]
fn a_neighbour_that_said_it_holds_a_segment_is_not_told_of_it_again() {
    // Viewer 9 below the broadcaster; 60 and 70 are its mesh neighbours, answered for by the test.
    let mut net = Net::new();
    join_scripted(&mut net, 9, &[60, 70], ROOT);
    let advert = || advert_below(ROOT, false, 0, None);
    for peer in [60, 70] {
        let reply = Message::ProbeReply {
            advert: advert(),
            peers: Vec::new(),
        };
        net.receive(9, peer, reply);
    }
    net.advance(2.0);
    for peer in [60, 70] {
        assert!(
            net.sent
                .iter()
                .any(|(f, t, m)| (*f, *t) == (9, peer) && matches!(m, Message::MeshJoin { .. })),
            "9 asks {peer} into its mesh"
        );
        let accepted = Message::MeshReply {
            accepted: true,
            advert: advert(),
        };
        net.receive(9, peer, accepted);
    }
    assert_eq!(net.m(9).parent(), Some(ROOT));
    assert_eq!(net.m(9).neighbours().count(), 2);

    // 60 has segment 0 whole before 9 does; then the broadcaster pushes it to 9.
    net.input(9, Input::Announced(segment(0)));
    let blocks = (1u128 << 10) - 1;
    net.receive(
        9,
        60,
        Message::Have {
            segment: segment(0),
            blocks,
        },
    );
    net.input(ROOT, Input::Published(segment(0)));
    assert!(net.m(9).has_segment(0));
    let told: Vec<u32> = net
        .sent
        .iter()
        .filter(|(f, _, m)| *f == 9 && matches!(m, Message::Have { segment, .. } if segment.seq == 0))
        .map(|(_, t, _)| *t)
        .collect();
    assert_eq!(told, vec![70], "60 said it holds segment 0: only 70 hears of it");
}

/// Six forwarders under the broadcaster and a leaf under one of them, which keeps every block from the leaf (and,
/// when `answers_too`, its answers to the leaf's pulls) from segment 5 on, while it goes on saying it is connected
/// and fed. Returns the network after segment 10, and the forwarder.
fn forwarder_keeps_blocks_from_its_child(answers_too: bool) -> (Net, u32) {
    let mut net = Net::new();
    fill_the_root(&mut net, 6.0);
    net.advance(1.0);
    join(&mut net, 7, config(Role::Viewer, 1.5), &[ROOT]);
    net.advance(2.0);
    let parent = net.m(7).parent().expect("the leaf is placed");
    assert_ne!(parent, ROOT, "the broadcaster's slots are taken");
    for seq in 0..=10 {
        if seq == 5 {
            net.kept = Some((parent, 7, answers_too));
        }
        net.input(ROOT, Input::Published(segment(seq)));
        for viewer in 1..=7 {
            net.input(viewer, Input::Announced(segment(seq)));
        }
        net.advance(net.now + 2.0);
    }
    (net, parent)
}

/// The six forwarders of [`forwarder_keeps_blocks_from_its_child`] with segments 0 to 4 out, and a leaf that joins
/// just then under one of them, which keeps every block from it (and its answers to its pulls) from the first.
/// Returns the network after segment 10, and the forwarder.
fn forwarder_keeps_blocks_from_a_new_child() -> (Net, u32) {
    let mut net = Net::new();
    fill_the_root(&mut net, 6.0);
    let mut parent = None;
    for seq in 0..=10 {
        if seq == 5 {
            // Forwarder 1 has room, and is the only peer the leaf knows: it keeps everything from the start.
            net.kept = Some((1, 7, true));
            join(&mut net, 7, config(Role::Viewer, 1.5), &[1]);
            net.advance(net.now + 0.5);
            parent = net.m(7).parent();
            assert_eq!(parent, Some(1), "the leaf is placed under the forwarder it knows");
        }
        net.input(ROOT, Input::Published(segment(seq)));
        for viewer in 1..=7 {
            if seq >= 5 || viewer < 7 {
                net.input(viewer, Input::Announced(segment(seq)));
            }
        }
        net.advance(net.now + 2.0);
    }
    (net, parent.expect("placed"))
}

#[test]
fn a_parent_that_keeps_the_stream_and_the_evidence_is_left_reported_and_banned() {
    let (net, parent) = forwarder_keeps_blocks_from_its_child(true);
    assert_ne!(net.m(7).parent(), Some(parent), "the child left it");
    assert_eq!(
        net.penalties,
        vec![(7, Offence::Withholding)],
        "blamed once, by its child"
    );
    assert!(
        net.sent
            .iter()
            .any(|(f, t, m)| (*f, *t) == (7, ROOT) && *m == Message::Withheld { parent }),
        "its parent was told"
    );
    assert!(
        net.sent
            .iter()
            .any(|(f, t, m)| (*f, *t) == (7, parent) && matches!(m, Message::Want { .. })),
        "the block it said it holds was asked of it first"
    );
}

#[test]
fn a_parent_that_keeps_the_stream_from_a_child_it_just_took_is_reported_and_banned() {
    // It never sends its new child anything: its first segment was owed as much as any later one. (A child that
    // only left it would let it draw, and starve, the next newcomer its parent routes to it.)
    let (net, parent) = forwarder_keeps_blocks_from_a_new_child();
    assert_ne!(net.m(7).parent(), Some(parent), "the child left it");
    assert!(
        net.sent
            .iter()
            .any(|(f, t, m)| (*f, *t) == (7, ROOT) && *m == Message::Withheld { parent }),
        "its parent was told"
    );
    assert_eq!(
        net.penalties.first(),
        Some(&(7, Offence::Withholding)),
        "{:?}",
        net.penalties
    );
}

#[test]
fn a_child_complained_of_twice_minutes_apart_is_let_go() {
    // A child complained of gets no newcomers while the complaint stands; the next complaint, from the next child it
    // starves, may come only once that has lapsed. It still counts.
    let mut net = Net::new();
    fill_the_root(&mut net, 6.0);
    net.advance(1.0);
    let children = |net: &Net| net.m(ROOT).children().collect::<Vec<_>>();
    assert!(children(&net).contains(&1));
    net.receive(ROOT, 8, Message::Withheld { parent: 1 });
    net.advance(net.now + 60.0);
    assert!(children(&net).contains(&1), "one complaint is no proof");
    net.receive(ROOT, 9, Message::Withheld { parent: 1 });
    assert!(
        !children(&net).contains(&1),
        "the second, from another peer, has it let go"
    );
    assert!(
        net.sent
            .iter()
            .any(|(f, t, m)| (*f, *t) == (ROOT, 1) && *m == Message::Detach)
    );
}

#[test]
fn a_parent_that_answers_for_the_segment_it_did_not_push_is_left_but_not_blamed() {
    // It sends the block asked of it: slow or confused, not withholding.
    let (net, parent) = forwarder_keeps_blocks_from_its_child(false);
    assert_ne!(net.m(7).parent(), Some(parent), "of no use to its child, it was left");
    assert!(net.penalties.is_empty(), "{:?}", net.penalties);
    assert!(
        net.sent
            .iter()
            .any(|(f, t, m)| (*f, *t) == (7, parent) && matches!(m, Message::Want { .. })),
        "the evidence was asked for"
    );
}
