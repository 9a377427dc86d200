//! The tree-mesh state machine driven by arbitrary interleavings of honest traffic and lies, as quinn-proto's
//! `random_interaction` tests drive its connection: a broadcaster and four honest viewers wired by a harness that
//! delivers their messages and blocks, and liars (peers with no machine) that send any message with any contents.
//! After every step every machine's invariants must hold ([`TreeMesh::check_invariants`]), every block a machine
//! serves must answer a pull that was made of it, and nothing may panic.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use streamrp2p_protocols::treemesh::{
    Advert, AttachRequest, BlockSource, Config, Input, MAX_BLOCKS, Message, Output, Policy, Refusal, Role, SegmentInfo,
    TreeMesh, UploadKind,
};

const BITRATE: f64 = 312_500.0;
const BLOCK: u32 = 65_536;
const SEGMENT_BYTES: u32 = 625_000;
const ROOT: u32 = 0;
const VIEWERS: [u32; 4] = [1, 2, 3, 4];

/// One step of the run.
#[derive(Clone, Debug)]
enum Step {
    /// Time passes: timers fire, and the broadcaster publishes a segment every 2 s.
    Advance(f64),
    /// A liar sends a message to an honest machine.
    Lie { from: u32, to: u32, message: Message<u32> },
    /// A liar pushes a block of a segment that exists (its bytes verified, as the driver would have) unasked.
    Push { from: u32, to: u32, block: u16 },
    /// A peer's connection goes.
    Gone { peer: u32, at: u32 },
    /// The owner of a viewer changes its policy.
    Policy { at: u32, policy: Policy },
}

fn peer() -> impl Strategy<Value = u32> {
    prop_oneof![Just(ROOT), 1..=4u32, 100..=102u32, Just(7u32)]
}

fn honest() -> impl Strategy<Value = u32> {
    prop_oneof![Just(ROOT), 1..=4u32]
}

fn liar() -> impl Strategy<Value = u32> {
    100..=102u32
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![0..12u64, any::<u64>(), Just(u64::MAX), (1u64 << 40)..(1u64 << 41)]
}

fn block() -> impl Strategy<Value = u16> {
    prop_oneof![4 => 0..12u16, 1 => any::<u16>()]
}

fn segment() -> impl Strategy<Value = SegmentInfo> {
    (seq(), prop_oneof![Just(SEGMENT_BYTES), any::<u32>()]).prop_map(|(seq, bytes)| SegmentInfo { seq, bytes })
}

fn room() -> impl Strategy<Value = Option<(u32, u8)>> {
    proptest::option::of((peer(), any::<u8>()))
}

fn advert() -> impl Strategy<Value = Box<Advert<u32>>> {
    (
        proptest::collection::vec(peer(), 0..40),
        any::<(bool, bool, bool, bool)>(),
        (0..=64u32, 0..=64u32),
        any::<(Option<u64>, Option<u64>)>(),
        (room(), room(), room(), room()),
        (0..=32u8, 0..=32u8),
    )
        .prop_map(
            |(
                path,
                (rooted, backbone, forwards, reachable),
                (spare_slots, leaf_children),
                (newest, oldest),
                rooms,
                free,
            )| {
                Box::new(Advert {
                    path,
                    rooted,
                    backbone,
                    forwards,
                    spare_slots,
                    leaf_children,
                    reachable,
                    newest,
                    oldest,
                    room: rooms.0,
                    backbone_room: rooms.1,
                    free: free.0,
                    any_room: rooms.2,
                    any_free: free.1,
                    fringe: rooms.3,
                })
            },
        )
}

fn request() -> impl Strategy<Value = AttachRequest> {
    (
        seq(),
        any::<u128>(),
        any::<(bool, bool, bool)>(),
        0..=64u32,
        any::<u8>(),
        any::<u64>(),
    )
        .prop_map(
            |(from_seq, held, (reachable, stable, orphan), slots, max_depth, nonce)| AttachRequest {
                from_seq,
                held,
                reachable,
                slots,
                stable,
                max_depth,
                orphan,
                nonce,
            },
        )
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::Busy),
        Just(Refusal::Missing),
        Just(Refusal::NotBackbone),
        Just(Refusal::Loop)
    ]
}

fn message() -> impl Strategy<Value = Message<u32>> {
    prop_oneof![
        Just(Message::Probe),
        (advert(), proptest::collection::vec((peer(), any::<bool>()), 0..20))
            .prop_map(|(advert, peers)| Message::ProbeReply { advert, peers }),
        request().prop_map(Message::Attach),
        (peer(), request(), any::<u8>()).prop_map(|(joiner, request, hops)| Message::Place { joiner, request, hops }),
        (advert(), any::<u64>()).prop_map(|(advert, nonce)| Message::Accepted { advert, nonce }),
        (refusal(), any::<u64>()).prop_map(|(reason, nonce)| Message::Rejected { reason, nonce }),
        Just(Message::Detach),
        Just(Message::Recruit),
        peer().prop_map(|try_instead| Message::Displaced { try_instead }),
        advert().prop_map(|advert| Message::Update { advert }),
        advert().prop_map(|advert| Message::MeshJoin { advert }),
        (any::<bool>(), advert()).prop_map(|(accepted, advert)| Message::MeshReply { accepted, advert }),
        Just(Message::MeshLeave),
        peer().prop_map(|parent| Message::Withheld { parent }),
        (segment(), any::<u128>()).prop_map(|(segment, blocks)| Message::Have { segment, blocks }),
        (seq(), any::<u128>()).prop_map(|(seq, blocks)| Message::Skip { seq, blocks }),
        (segment(), block()).prop_map(|(segment, block)| Message::Want { segment, block }),
        (seq(), block(), refusal()).prop_map(|(seq, block, reason)| Message::Refused { seq, block, reason }),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    let rate = prop_oneof![
        Just(None),
        Just(Some(0.0)),
        Just(Some(1e-300)),
        Just(Some(f64::MAX)),
        (1.0..1e7f64).prop_map(Some)
    ];
    (rate.clone(), any::<(bool, bool)>(), rate).prop_map(|(max_upload, (metered, background), max_ratio)| Policy {
        max_upload,
        metered,
        background,
        max_ratio,
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0.01..1.5f64).prop_map(Step::Advance),
        6 => (liar(), honest(), message()).prop_map(|(from, to, message)| Step::Lie { from, to, message }),
        1 => (liar(), honest(), 0..20u16).prop_map(|(from, to, block)| Step::Push { from, to, block }),
        1 => (peer(), honest()).prop_map(|(peer, at)| Step::Gone { peer, at }),
        1 => (1..=4u32, policy()).prop_map(|(at, policy)| Step::Policy { at, policy }),
    ]
}

/// The machines, the honest driver between them, and what the checks need.
struct World {
    now: f64,
    machines: BTreeMap<u32, TreeMesh<u32>>,
    /// Segments published so far.
    published: u64,
    /// Pulls each machine was asked: (server, puller, segment, block).
    wants: BTreeSet<(u32, u32, u64, u16)>,
}

fn config(role: Role, upload_x: f64) -> Config {
    Config::new(role, BITRATE, 2.0, BLOCK, upload_x * BITRATE)
}

fn info(seq: u64) -> SegmentInfo {
    SegmentInfo {
        seq,
        bytes: SEGMENT_BYTES,
    }
}

impl World {
    fn new() -> Self {
        let mut machines = BTreeMap::new();
        machines.insert(ROOT, TreeMesh::new(ROOT, config(Role::Broadcaster, 4.0), 1, 0.0));
        let mut world = Self {
            now: 0.0,
            machines,
            published: 0,
            wants: BTreeSet::new(),
        };
        for (i, id) in VIEWERS.iter().enumerate() {
            let upload = [0.5, 1.5, 6.0, 6.0][i];
            world.machines.insert(
                *id,
                TreeMesh::new(*id, config(Role::Viewer, upload), u64::from(*id), 0.0),
            );
        }
        world.publish();
        world.publish();
        for id in VIEWERS {
            let candidates = VIEWERS
                .iter()
                .filter(|v| **v != id)
                .map(|v| (*v, true))
                .chain([(100, true)])
                .collect();
            world.input(
                id,
                Input::Join {
                    tail: vec![info(0), info(1)],
                    candidates,
                    broadcaster: Some(ROOT),
                    live_age_s: Some(0.5),
                },
            );
        }
        world
    }

    fn publish(&mut self) {
        let segment = info(self.published);
        self.published += 1;
        self.input(ROOT, Input::Published(segment));
        for id in VIEWERS {
            self.input(id, Input::Announced(segment));
        }
    }

    fn input(&mut self, id: u32, input: Input<u32>) {
        if let Input::Message {
            from,
            message: Message::Want { segment, block },
        } = &input
        {
            self.wants.insert((id, *from, segment.seq, *block));
        }
        if let Some(m) = self.machines.get_mut(&id) {
            m.handle(self.now, input);
        }
        self.run();
    }

    /// Carries out every output until all machines are quiet, checking each.
    fn run(&mut self) {
        for _ in 0..10_000 {
            let mut work = Vec::new();
            for (id, m) in &mut self.machines {
                while let Some(o) = m.poll_output() {
                    work.push((*id, o));
                }
            }
            if work.is_empty() {
                return;
            }
            for (from, output) in work {
                self.carry_out(from, output);
            }
        }
        panic!("the machines never went quiet");
    }

    fn carry_out(&mut self, from: u32, output: Output<u32>) {
        match output {
            Output::Send { to, message } => {
                if let Message::Want { segment, block } = &message {
                    self.wants.insert((to, from, segment.seq, *block));
                }
                if let Some(m) = self.machines.get_mut(&to) {
                    m.handle(self.now, Input::Message { from, message });
                }
            }
            Output::Push { to, segment, block } | Output::Serve { to, segment, block } => {
                let push = matches!(output, Output::Push { .. });
                assert!(block < MAX_BLOCKS, "{from} sends block {block}");
                assert_eq!(
                    segment,
                    info(segment.seq),
                    "{from} describes segment {} by a peer's word",
                    segment.seq
                );
                if !push {
                    assert!(
                        self.wants.contains(&(from, to, segment.seq, block)),
                        "{from} serves block {block} of {} to {to}, which never asked",
                        segment.seq
                    );
                }
                if let Some(m) = self.machines.get_mut(&to) {
                    m.handle(
                        self.now,
                        Input::Block {
                            from: BlockSource::Peer(from),
                            segment,
                            block,
                        },
                    );
                }
                let kind = if push { UploadKind::Push } else { UploadKind::Serve };
                if let Some(m) = self.machines.get_mut(&from) {
                    m.handle(self.now, Input::Uploaded { to, kind });
                }
            }
            Output::FetchOrigin { segment, block } => {
                if let Some(m) = self.machines.get_mut(&from) {
                    m.handle(
                        self.now,
                        Input::Block {
                            from: BlockSource::Origin,
                            segment,
                            block,
                        },
                    );
                }
            }
            Output::CancelOrigin { .. } | Output::FindPeers | Output::SegmentComplete(_) => {}
            Output::Misbehaved { peer, .. } => {
                assert!(peer != from, "{from} reports itself");
            }
        }
    }

    fn advance(&mut self, dt: f64) {
        let until = self.now + dt;
        loop {
            let next_segment = self.published as f64 * 2.0;
            let next_timer = self
                .machines
                .iter()
                .filter_map(|(id, m)| m.poll_timeout().map(|t| (t, *id)))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let (at, id) = match next_timer {
                Some((t, id)) if t <= until && t < next_segment => (t, Some(id)),
                _ if next_segment <= until => (next_segment, None),
                _ => break,
            };
            self.now = self.now.max(at);
            match id {
                Some(id) => {
                    self.machines.get_mut(&id).expect("known").handle_timeout(self.now);
                    self.run();
                }
                None => self.publish(),
            }
        }
        self.now = until;
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Advance(dt) => self.advance(dt),
            Step::Lie { from, to, message } => self.input(to, Input::Message { from, message }),
            Step::Push { from, to, block } => {
                let seq = self.published.saturating_sub(1);
                let segment = info(seq);
                if block < segment.blocks(BLOCK) {
                    self.input(
                        to,
                        Input::Block {
                            from: BlockSource::Peer(from),
                            segment,
                            block,
                        },
                    );
                }
            }
            Step::Gone { peer, at } => self.input(at, Input::PeerGone(peer)),
            Step::Policy { at, policy } => self.input(at, Input::Policy(policy)),
        }
        for (id, m) in &self.machines {
            if let Err(broken) = m.check_invariants() {
                panic!("machine {id} at {:.3} s: {broken}", self.now);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 2000, .. ProptestConfig::default() })]

    #[test]
    fn honest_traffic_and_lies_interleaved_keep_every_invariant(steps in proptest::collection::vec(step(), 1..120)) {
        let mut world = World::new();
        for step in steps {
            world.step(step);
        }
        // Honest machines keep working: after a quiet spell with no more lies, every viewer still plays.
        world.advance(20.0);
        for id in VIEWERS {
            let m = &world.machines[&id];
            let newest = world.published - 1;
            prop_assert!(
                (newest.saturating_sub(4)..newest).any(|s| m.has_segment(s)),
                "viewer {id} holds none of the last segments"
            );
        }
    }
}

#[test]
fn liars_alone_never_make_a_viewer_push_to_a_third_party() {
    let mut world = World::new();
    world.advance(6.0);
    // A liar that is no viewer's parent names viewer 2 as a joiner to be fed by every other machine.
    for to in [ROOT, 1, 3, 4] {
        let place = Message::Place {
            joiner: 2,
            request: AttachRequest {
                from_seq: 0,
                held: 0,
                reachable: true,
                slots: 0,
                stable: false,
                max_depth: u8::MAX,
                orphan: false,
                nonce: 42,
            },
            hops: 1,
        };
        world.input(
            to,
            Input::Message {
                from: 100,
                message: place,
            },
        );
    }
    world.advance(10.0);
    // Viewer 2 never asked any of them: whoever has it as a child is the parent it chose itself.
    for id in [ROOT, 1, 3, 4] {
        if world.machines[&id].children().any(|c| c == 2) {
            assert_eq!(
                world.machines[&2].parent(),
                Some(id),
                "{id} feeds viewer 2 on a liar's word"
            );
        }
    }
}
