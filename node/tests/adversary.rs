//! A peer that lies: it pushes blocks whose bytes do not match their CIDs (as a tree parent would push), or sends
//! manifest entries signed by the wrong key, in a manifest response or announced on the stream's gossipsub topic.
//! The viewer rejects what it sent, bans it, still gets every segment right from the broadcaster, and keeps
//! running. The adversary is a real libp2p node speaking the real chunk and tree-mesh protocols over loopback TCP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{SwarmBuilder, gossipsub, identify, kad, noise, request_response, tcp, yamux};
use streamrp2p_node::{
    ChunkCodec, KAD_PROTOCOL, Node, NodeConfig, NodeHandle, Received, StreamId, TreeMeshCodec, chunk_client, sample,
    treemesh_client,
};
use streamrp2p_protocols::Keypair;
use streamrp2p_protocols::chunk::{ChunkRequest, ChunkResponse, ManifestResponse};
use streamrp2p_protocols::control::ControlMessage;
use streamrp2p_protocols::manifest::SignedManifestEntry;
use streamrp2p_protocols::treemesh::SegmentInfo;
use streamrp2p_protocols::treemesh::wire::Frame;

#[derive(Clone, Copy)]
enum Lie {
    /// Pushes a block with the wrong bytes to whoever asks it for the manifest.
    BadBlocks,
    /// Answers manifest requests with entries re-signed by its own key.
    ForgedManifest,
    /// Answers manifest requests honestly, then announces on gossipsub an entry re-signed by its own key.
    ForgedAnnounce,
}

#[derive(NetworkBehaviour)]
struct AdversaryBehaviour {
    gossipsub: gossipsub::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    chunk: request_response::Behaviour<ChunkCodec>,
    mesh: request_response::Behaviour<TreeMeshCodec>,
}

#[derive(Default)]
struct Counts {
    manifests_answered: AtomicUsize,
    bad_blocks_served: AtomicUsize,
    announces_forged: AtomicUsize,
}

/// Starts the adversary: it copies the stream's manifest from the broadcaster, announces itself as a provider
/// through the broadcaster's DHT, and then lies to whoever asks. Returns what it did.
async fn spawn_adversary(lie: Lie, broadcaster: &NodeHandle, stream: StreamId) -> Arc<Counts> {
    let key = Keypair::generate_ed25519();
    let impostor = Keypair::generate_ed25519();
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let mut kad =
                kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), kad::Config::new(KAD_PROTOCOL));
            kad.set_mode(Some(kad::Mode::Server));
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub::ConfigBuilder::default().build().unwrap(),
            )
            .unwrap();
            AdversaryBehaviour {
                gossipsub,
                kad,
                identify: identify::Behaviour::new(identify::Config::new("/streamrp2p/1.0.0".into(), key.public())),
                chunk: chunk_client(),
                mesh: treemesh_client(),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    swarm.add_external_address(addr.clone());
    let b_addr = broadcaster.listen_addrs()[0].clone();
    swarm.behaviour_mut().kad.add_address(&broadcaster.peer_id(), b_addr);
    swarm.behaviour_mut().chunk.send_request(
        &broadcaster.peer_id(),
        ChunkRequest::Manifest { stream, since_seq: 0 }.into(),
    );
    let mut manifest = loop {
        if let SwarmEvent::Behaviour(AdversaryBehaviourEvent::Chunk(request_response::Event::Message {
            message:
                request_response::Message::Response {
                    response: ChunkResponse::Manifest(m),
                    ..
                },
            ..
        })) = swarm.select_next_some().await
        {
            break m;
        }
    };
    manifest.have = (0..100).collect();
    let topic = gossipsub::IdentTopic::new(stream.topic());
    swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    // An entry for the next segment, as the broadcaster would announce it, but signed by the impostor.
    let mut next = manifest.entries[0].entry().clone();
    next.seq = 1;
    let forged_announce = ControlMessage::Announce {
        info: manifest.info.clone(),
        entry: SignedManifestEntry::sign(&impostor, next).unwrap(),
    }
    .encode();
    if let Lie::ForgedManifest = lie {
        manifest.entries = manifest
            .entries
            .iter()
            .map(|e| SignedManifestEntry::sign(&impostor, e.entry().clone()).unwrap())
            .collect();
    }
    swarm
        .behaviour_mut()
        .kad
        .start_providing(kad::RecordKey::new(stream.as_bytes()))
        .unwrap();

    let broadcaster_id = broadcaster.peer_id();
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let (peer, request, channel) = match swarm.select_next_some().await {
                SwarmEvent::Behaviour(AdversaryBehaviourEvent::Chunk(request_response::Event::Message {
                    peer,
                    message: request_response::Message::Request { request, channel, .. },
                    ..
                })) => (peer, request, channel),
                // Lie to the viewer only: the broadcaster would ban the adversary before the viewer ever found it.
                SwarmEvent::Behaviour(AdversaryBehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                    peer_id,
                    ..
                })) if matches!(lie, Lie::ForgedAnnounce) && peer_id != broadcaster_id => {
                    if swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic.clone(), forged_announce.clone())
                        .is_ok()
                    {
                        c.announces_forged.fetch_add(1, Ordering::SeqCst);
                    }
                    continue;
                }
                _ => continue,
            };
            let response = match request {
                Received::Invalid(_) => continue,
                Received::Valid(ChunkRequest::Manifest { .. }) => {
                    if matches!(lie, Lie::BadBlocks) && peer != broadcaster_id {
                        // As a parent would push it: the first block of segment 0, with its bytes flipped.
                        let entry = manifest.entries[0].entry();
                        let segment = SegmentInfo {
                            seq: entry.seq,
                            bytes: entry.size as u32,
                        };
                        let len = entry.size.min(streamrp2p_protocols::segment::BLOCK_SIZE as u64) as usize;
                        let frame = Frame::Block {
                            stream,
                            segment,
                            index: 0,
                            push: true,
                            data: vec![0xAB; len].into(),
                        };
                        swarm.behaviour_mut().mesh.send_request(&peer, frame.into());
                        c.bad_blocks_served.fetch_add(1, Ordering::SeqCst);
                    }
                    c.manifests_answered.fetch_add(1, Ordering::SeqCst);
                    ChunkResponse::Manifest(ManifestResponse { ..manifest.clone() })
                }
                Received::Valid(ChunkRequest::Block(_)) => {
                    c.bad_blocks_served.fetch_add(1, Ordering::SeqCst);
                    ChunkResponse::Block(vec![0xAB; 1000].into())
                }
            };
            let _ = swarm.behaviour_mut().chunk.send_response(channel, response);
        }
    });
    counts
}

async fn metric(node: &NodeHandle, name: &str) -> f64 {
    let url = format!("http://{}/metrics", node.http_addr().unwrap());
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn viewer_survives(lie: Lie, failure_metric: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("streamrp2p_node=debug")
        .with_test_writer()
        .try_init();
    let broadcaster = Node::start(NodeConfig {
        http: None,
        ..NodeConfig::loopback()
    })
    .await
    .unwrap();
    // No origin: the right segments can only come from the broadcaster.
    let stream = broadcaster.broadcast("adversary", Some(String::new())).await.unwrap();
    broadcaster
        .publish(stream, sample::segment(0), sample::SEGMENT_DURATION, false)
        .await
        .unwrap();
    let counts = spawn_adversary(lie, &broadcaster, stream).await;

    let bootstrap = vec![broadcaster.listen_addrs()[0].clone()];
    let viewer = Node::start(NodeConfig {
        bootstrap,
        ..NodeConfig::loopback()
    })
    .await
    .unwrap();
    viewer.watch(stream).await.unwrap();
    // Segments 1 to 3 are published only once the adversary has lied to the viewer.
    wait_until(
        "the adversary has lied to the viewer",
        Duration::from_secs(30),
        async || match lie {
            Lie::BadBlocks | Lie::ForgedManifest => counts.manifests_answered.load(Ordering::SeqCst) > 0,
            Lie::ForgedAnnounce => counts.announces_forged.load(Ordering::SeqCst) > 0,
        },
    )
    .await;

    for seq in 1..=3 {
        broadcaster
            .publish(stream, sample::segment(seq), sample::SEGMENT_DURATION, false)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_until(
        "the viewer holds segments 1 to 3",
        Duration::from_secs(30),
        async || (1..=3).all(|seq| viewer.segment(stream, seq).is_some()),
    )
    .await;
    for seq in 1..=3 {
        assert_eq!(
            viewer.segment(stream, seq).unwrap(),
            sample::segment(seq),
            "segment {seq} is wrong"
        );
    }
    if let Lie::BadBlocks = lie {
        assert!(
            counts.bad_blocks_served.load(Ordering::SeqCst) >= 1,
            "the adversary pushed the viewer a bad block"
        );
    }
    assert_eq!(
        metric(&viewer, "streamrp2p_bans_total").await,
        1.0,
        "the adversary is banned once"
    );
    assert!(metric(&viewer, failure_metric).await >= 1.0, "{failure_metric} counted");
    // The viewer keeps running and reporting.
    assert_eq!(viewer.status().streams.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_not_matching_its_cid_gets_the_sender_banned() {
    viewer_survives(Lie::BadBlocks, "streamrp2p_verification_failures_total{kind=\"block\"}").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_signed_by_the_wrong_key_gets_the_sender_banned() {
    viewer_survives(
        Lie::ForgedManifest,
        "streamrp2p_verification_failures_total{kind=\"message\"}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcement_signed_by_the_wrong_key_gets_the_sender_banned() {
    viewer_survives(
        Lie::ForgedAnnounce,
        "streamrp2p_verification_failures_total{kind=\"message\"}",
    )
    .await;
}
