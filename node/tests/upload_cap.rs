//! `--max-upload-kbps` holds on the wire: a client pulls blocks from a capped node as fast as it can for a minute,
//! over the real chunk protocol on loopback, and the rate it measures is the cap within 5 %.

use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{SwarmBuilder, noise, request_response, tcp, yamux};
use streamrp2p_node::{CHUNK_PROTOCOL, ChunkCodec, Node, NodeConfig, Policy, sample};
use streamrp2p_protocols::Keypair;
use streamrp2p_protocols::chunk::{ChunkRequest, ChunkResponse};

/// The cap: 2 Mbit/s, a typical home uplink's share for a stream.
const CAP_KBPS: f64 = 2_000.0;
/// Requests the client keeps in flight: far more than the cap lets through, so the node is always busy.
const IN_FLIGHT: usize = 8;
const WINDOW: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_upload_stays_within_5_percent_of_the_cap_over_a_minute() {
    let node = Node::start(NodeConfig {
        http: None,
        policy: Policy {
            max_upload_kbps: Some(CAP_KBPS),
            ..Policy::default()
        },
        ..NodeConfig::loopback()
    })
    .await
    .unwrap();
    let stream = node.broadcast("capped", None).await.unwrap();
    for seq in 0..6 {
        node.publish(stream, sample::segment(seq), sample::SEGMENT_DURATION, false)
            .await
            .unwrap();
    }
    let cids: Vec<_> = (0..6)
        .flat_map(|seq| {
            streamrp2p_protocols::segment::split(sample::segment(seq))
                .unwrap()
                .blocks
        })
        .map(|(cid, _)| cid)
        .collect();

    let mut client = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                ChunkCodec::default(),
                [(CHUNK_PROTOCOL, request_response::ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
            )
        })
        .unwrap()
        .build();
    client.dial(node.listen_addrs()[0].clone()).unwrap();
    let peer = node.peer_id();
    let mut next = 0;
    let mut ask = |client: &mut libp2p::Swarm<request_response::Behaviour<ChunkCodec>>| {
        client
            .behaviour_mut()
            .send_request(&peer, ChunkRequest::Block(cids[next % cids.len()]).into());
        next += 1;
    };
    for _ in 0..IN_FLIGHT {
        ask(&mut client);
    }
    // The window opens at the first block: connection setup is not upload time.
    let mut opened: Option<Instant> = None;
    let mut bytes = 0u64;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), client.select_next_some())
            .await
            .expect("the node keeps answering");
        match event {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        response: ChunkResponse::Block(data),
                        ..
                    },
                ..
            }) => {
                let now = Instant::now();
                match opened {
                    None => opened = Some(now),
                    Some(at) if now.duration_since(at) >= WINDOW => break,
                    Some(_) => bytes += data.len() as u64,
                }
                ask(&mut client);
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                panic!("a block request failed: {error}")
            }
            _ => {}
        }
    }
    let kbps = bytes as f64 * 8.0 / 1000.0 / WINDOW.as_secs_f64();
    println!("measured {kbps:.0} kbit/s against a cap of {CAP_KBPS} kbit/s");
    assert!(
        (kbps - CAP_KBPS).abs() <= 0.05 * CAP_KBPS,
        "measured {kbps:.0} kbit/s, the cap is {CAP_KBPS} kbit/s"
    );
}
