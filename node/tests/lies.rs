//! Lies told to real nodes by clients that speak only the wire formats, as an attacker from outside would: each
//! lie leaves the victim up and playing (no stall longer than one segment) and the liar penalised by the victim's
//! peer manager — as `/api/status` shows it — and, where the lie proves bad intent or keeps coming, banned.
//!
//! The victim is a viewer of a broadcaster looping the embedded sample, with no origin: every byte it plays comes
//! from the broadcaster, so a lie that disturbed delivery would show as a stall.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, noise, request_response, tcp, yamux};
use streamrp2p_node::{
    ChunkCodec, Node, NodeConfig, NodeHandle, StreamId, StreamStatus, TreeMeshCodec, chunk_client, sample,
    treemesh_client,
};
use streamrp2p_protocols::chunk::{ChunkRequest, ChunkResponse};
use streamrp2p_protocols::segment::BLOCK_SIZE;
use streamrp2p_protocols::treemesh::wire::Frame;
use streamrp2p_protocols::treemesh::{AttachRequest, Message, SegmentInfo};
use tokio::sync::mpsc;

/// One segment of the sample: the most the victim may stall.
const ONE_SEGMENT_S: f64 = 2.0;

#[derive(NetworkBehaviour)]
struct ClientBehaviour {
    chunk: request_response::Behaviour<ChunkCodec>,
    mesh: request_response::Behaviour<TreeMeshCodec>,
}

/// What a liar is told to send.
enum Send {
    Frame(PeerId, Frame),
    Chunk(PeerId, ChunkRequest),
}

/// A libp2p client that speaks the chunk and tree-mesh protocols and nothing else, and counts what it receives.
struct Liar {
    peer: PeerId,
    tx: mpsc::Sender<Send>,
    /// Tree-mesh block frames received (payload sent to it).
    blocks: Arc<AtomicUsize>,
    /// Payload bytes received in them.
    block_bytes: Arc<AtomicU64>,
    /// Chunk responses received, and of them "busy".
    answers: Arc<AtomicUsize>,
    busy: Arc<AtomicUsize>,
    /// Connections established, and dials refused.
    connected: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl Liar {
    async fn start(dial: &[Multiaddr]) -> Self {
        Self::start_at("/ip4/127.0.0.1/tcp/0", dial).await
    }

    /// A liar listening on `listen`, which dials `dial` once it listens (so that the connection comes from that
    /// address: a dial reuses a listening socket's).
    async fn start_at(listen: &str, dial: &[Multiaddr]) -> Self {
        let mut swarm: Swarm<ClientBehaviour> = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_quic()
            .with_behaviour(|_| ClientBehaviour {
                chunk: chunk_client(),
                mesh: treemesh_client(),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm.listen_on(listen.parse().unwrap()).unwrap();
        loop {
            if let SwarmEvent::NewListenAddr { .. } = swarm.select_next_some().await {
                break;
            }
        }
        for addr in dial {
            swarm.dial(addr.clone()).unwrap();
        }
        let peer = *swarm.local_peer_id();
        let (tx, mut rx) = mpsc::channel::<Send>(1024);
        let blocks = Arc::new(AtomicUsize::new(0));
        let block_bytes = Arc::new(AtomicU64::new(0));
        let answers = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicUsize::new(0));
        let (b, bb, a, bz) = (blocks.clone(), block_bytes.clone(), answers.clone(), busy.clone());
        let connected = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connected.clone(), refused.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    send = rx.recv() => match send {
                        Some(Send::Frame(to, frame)) => {
                            swarm.behaviour_mut().mesh.send_request(&to, frame.into());
                        }
                        Some(Send::Chunk(to, request)) => {
                            swarm.behaviour_mut().chunk.send_request(&to, request.into());
                        }
                        None => return,
                    },
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::Behaviour(ClientBehaviourEvent::Mesh(request_response::Event::Message {
                            message: request_response::Message::Request { request, channel, .. },
                            ..
                        })) => {
                            if let streamrp2p_node::Received::Valid(Frame::Block { data, .. }) = &request {
                                b.fetch_add(1, Ordering::SeqCst);
                                bb.fetch_add(data.len() as u64, Ordering::SeqCst);
                            }
                            let _ = swarm.behaviour_mut().mesh.send_response(channel, streamrp2p_node::Ack);
                        }
                        SwarmEvent::Behaviour(ClientBehaviourEvent::Chunk(request_response::Event::Message {
                            message: request_response::Message::Response { response, .. },
                            ..
                        })) => {
                            a.fetch_add(1, Ordering::SeqCst);
                            if response == ChunkResponse::Busy {
                                bz.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        SwarmEvent::ConnectionEstablished { .. } => {
                            c.fetch_add(1, Ordering::SeqCst);
                        }
                        SwarmEvent::OutgoingConnectionError { .. } => {
                            r.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {}
                    },
                }
            }
        });
        Self {
            peer,
            tx,
            blocks,
            block_bytes,
            answers,
            busy,
            connected,
            refused,
        }
    }

    async fn frame(&self, to: PeerId, frame: Frame) {
        self.tx.send(Send::Frame(to, frame)).await.unwrap();
    }

    async fn chunk(&self, to: PeerId, request: ChunkRequest) {
        self.tx.send(Send::Chunk(to, request)).await.unwrap();
    }
}

/// A broadcaster looping the sample with no origin, and one viewer playing it.
struct Net {
    broadcaster: NodeHandle,
    viewer: NodeHandle,
    stream: StreamId,
    _ingest: tokio::task::JoinHandle<()>,
}

impl Net {
    async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("streamrp2p_node=info")
            .with_test_writer()
            .try_init();
        let broadcaster = Node::start(NodeConfig::loopback()).await.unwrap();
        let stream = broadcaster.broadcast("lies", Some(String::new())).await.unwrap();
        let ingest = tokio::spawn({
            let node = broadcaster.clone();
            async move {
                let _ = sample::loop_sample(node, stream).await;
            }
        });
        let viewer = Node::start(NodeConfig {
            bootstrap: broadcaster.listen_addrs(),
            ..NodeConfig::loopback()
        })
        .await
        .unwrap();
        viewer.watch(stream).await.unwrap();
        let net = Self {
            broadcaster,
            viewer,
            stream,
            _ingest: ingest,
        };
        wait_until("the viewer plays", Duration::from_secs(40), || {
            net.status(&net.viewer).ttfb_s.is_some()
        })
        .await;
        net
    }

    fn status(&self, node: &NodeHandle) -> StreamStatus {
        let id = self.stream.to_string();
        node.status()
            .streams
            .into_iter()
            .find(|s| s.id == id)
            .expect("the stream")
    }

    /// The newest segment the viewer holds whole, and its size.
    fn newest(&self) -> SegmentInfo {
        let seq = self.status(&self.viewer).segments.saturating_sub(1);
        let seq = (0..=seq + 4)
            .rev()
            .find(|s| self.viewer.segment(self.stream, *s).is_some())
            .expect("a segment held");
        let bytes = self.viewer.segment(self.stream, seq).expect("held").len() as u32;
        SegmentInfo { seq, bytes }
    }

    /// `peer`'s offences as `node`'s peer manager lists them, and whether it is banned.
    fn penalties(node: &NodeHandle, peer: PeerId) -> Option<(Vec<String>, bool)> {
        let peer = peer.to_string();
        node.status()
            .penalties
            .into_iter()
            .find(|p| p.peer == peer)
            .map(|p| (p.offences.keys().map(|o| o.to_string()).collect(), p.banned))
    }
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The victim kept playing from `before` to `after`: `min_segments` more segments, at most one segment's stall.
fn kept_playing(who: &str, before: &StreamStatus, after: &StreamStatus, min_segments: u64) {
    assert!(
        after.segments >= before.segments + min_segments,
        "{who} completed {} segments, expected {min_segments} or more",
        after.segments - before.segments
    );
    let stalled = after.stalled_s - before.stalled_s;
    assert!(
        stalled <= ONE_SEGMENT_S,
        "{who} stalled {stalled:.2} s, more than one segment"
    );
}

fn control(stream: StreamId, message: Message<PeerId>) -> Frame {
    Frame::Control { stream, message }
}

fn request(nonce: u64) -> AttachRequest {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lie_is_penalised_and_the_viewer_keeps_playing() {
    let net = Net::start().await;
    let victim = net.viewer.peer_id();
    let dial = net.viewer.listen_addrs();
    let stream = net.stream;
    let newest = net.newest();
    let before = net.status(&net.viewer);

    // Each liar tells one kind of lie, several times.
    let far_have = Liar::start(&dial).await;
    let near_have = Liar::start(&dial).await;
    let placer = Liar::start(&dial).await;
    let third_party = Liar::start(&dial).await;
    let manifests = Liar::start(&dial).await;
    let wants = Liar::start(&dial).await;
    let oversized = Liar::start(&dial).await;
    let mismatched = Liar::start(&dial).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        // A HAVE for a segment 2^40 past the live edge (it once made the window that large), and one 100 past it
        // (it once evicted every segment in progress).
        for (liar, ahead) in [(&far_have, 1u64 << 40), (&near_have, 100)] {
            let segment = SegmentInfo {
                seq: newest.seq + ahead,
                bytes: newest.bytes,
            };
            liar.frame(
                victim,
                control(
                    stream,
                    Message::Have {
                        segment,
                        blocks: u128::MAX,
                    },
                ),
            )
            .await;
        }
        // A Place from a peer that is not the viewer's parent, naming a third party to feed from segment 0.
        let place = Message::Place {
            joiner: third_party.peer,
            request: request(7),
            hops: 1,
        };
        placer.frame(victim, control(stream, place)).await;
    }
    // A manifest-request flood, and a flood of pulls from a stranger that is nobody's neighbour.
    for _ in 0..200 {
        manifests
            .chunk(victim, ChunkRequest::Manifest { stream, since_seq: 0 })
            .await;
    }
    for i in 0..400u16 {
        let want = Message::Want {
            segment: newest,
            block: i % newest.blocks(BLOCK_SIZE as u32),
        };
        wants.frame(victim, control(stream, want)).await;
    }
    // A block frame over the protocol's size limit, and one whose segment size contradicts the signed entry.
    let big = SegmentInfo {
        seq: newest.seq,
        bytes: 8 * 1024 * 1024,
    };
    let frame = Frame::Block {
        stream,
        segment: big,
        index: 0,
        push: true,
        data: vec![0; BLOCK_SIZE + 4096].into(),
    };
    oversized.frame(victim, frame).await;
    let wrong = SegmentInfo {
        seq: newest.seq,
        bytes: newest.bytes + 1,
    };
    let frame = Frame::Block {
        stream,
        segment: wrong,
        index: 0,
        push: true,
        data: vec![0xAB; BLOCK_SIZE].into(),
    };
    mismatched.frame(victim, frame).await;

    // The viewer plays on for ten more seconds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = net.status(&net.viewer);
    kept_playing("the victim", &before, &after, 4);

    let expect = [
        (&far_have, "lie", true, "a HAVE for a segment 2^40 ahead"),
        (&near_have, "lie", true, "a HAVE for a segment 100 ahead"),
        (&placer, "lie", true, "a Place from a stranger"),
        (&manifests, "quota_overrun", true, "a manifest flood"),
        (&wants, "quota_overrun", true, "a flood of pulls"),
        (&oversized, "malformed", true, "an oversized block frame"),
        (&mismatched, "bad_block", true, "a block frame contradicting its entry"),
    ];
    for (liar, offence, banned, what) in expect {
        let (offences, is_banned) =
            Net::penalties(&net.viewer, liar.peer).unwrap_or_else(|| panic!("{what}: the liar was not penalised"));
        assert!(
            offences.iter().any(|o| o == offence),
            "{what}: offences {offences:?}, expected {offence}"
        );
        assert_eq!(is_banned, banned, "{what}: banned {is_banned}");
    }
    // The third party never asked and got no payload; the flood of manifests was answered "busy", not served.
    assert_eq!(third_party.blocks.load(Ordering::SeqCst), 0, "the third party was fed");
    assert!(
        manifests.busy.load(Ordering::SeqCst) > 0,
        "no manifest request was refused as busy"
    );
    let served = manifests.answers.load(Ordering::SeqCst) - manifests.busy.load(Ordering::SeqCst);
    assert!(served <= 10, "{served} manifests served to a flood");
    // A stranger's pulls are bounded: a few blocks at most before the quota and the ban stop it.
    let pulled = wants.block_bytes.load(Ordering::SeqCst);
    assert!(
        pulled <= 64 * BLOCK_SIZE as u64,
        "{pulled} bytes served to a flood of pulls"
    );
    // The broadcaster, which nobody lied to, is not affected.
    assert!(net.status(&net.broadcaster).segments > before.segments);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_parent_under_a_request_flood_still_feeds_its_child() {
    let net = Net::start().await;
    let parent = net.broadcaster.peer_id();
    let stream = net.stream;
    assert_eq!(
        net.status(&net.viewer).parents,
        vec![parent.to_string()],
        "the viewer hangs below the broadcaster"
    );
    let newest = net.newest();
    let before = net.status(&net.viewer);
    let flooders = [
        Liar::start(&net.broadcaster.listen_addrs()).await,
        Liar::start(&net.broadcaster.listen_addrs()).await,
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    // For ten seconds: manifests, blocks by CID and pulls, as fast as the liars' queues take them.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let cid = streamrp2p_protocols::segment::split(sample::segment(0)).unwrap().blocks[0].0;
    while tokio::time::Instant::now() < until {
        for flooder in &flooders {
            flooder
                .chunk(parent, ChunkRequest::Manifest { stream, since_seq: 0 })
                .await;
            flooder.chunk(parent, ChunkRequest::Block(cid)).await;
            let want = Message::Want {
                segment: newest,
                block: 0,
            };
            flooder.frame(parent, control(stream, want)).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = net.status(&net.viewer);
    kept_playing("the child", &before, &after, 4);
    for flooder in &flooders {
        let (offences, banned) = Net::penalties(&net.broadcaster, flooder.peer).expect("the flooder was penalised");
        assert!(offences.iter().any(|o| o == "quota_overrun"), "offences {offences:?}");
        assert!(banned, "a flooder that keeps at it is banned");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_identities_behind_one_address_gets_a_households_share_of_connections() {
    let net = Net::start().await;
    let dial = net.viewer.listen_addrs();
    let before = net.status(&net.viewer);
    // Twenty made-up identities on one address other than the nodes' (127.0.0.1 is exempt, as a local testnet's),
    // over QUIC, whose dials leave from the listening socket and so from that address.
    let quic: Vec<Multiaddr> = dial
        .iter()
        .filter(|a| a.to_string().contains("quic"))
        .cloned()
        .collect();
    let mut crowd = Vec::new();
    for _ in 0..20 {
        crowd.push(Liar::start_at("/ip4/127.0.0.2/udp/0/quic-v1", &quic).await);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let connected: usize = crowd.iter().map(|l| l.connected.load(Ordering::SeqCst)).sum();
    let refused: usize = crowd.iter().map(|l| l.refused.load(Ordering::SeqCst)).sum();
    assert_eq!(
        connected,
        streamrp2p_protocols::quota::limits::CONNECTIONS_PER_ADDRESS as usize,
        "connections from one address ({refused} refused)"
    );
    assert_eq!(refused, 20 - connected);
    let after = net.status(&net.viewer);
    kept_playing("the victim", &before, &after, 2);
}
