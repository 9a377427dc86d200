//! Chunk-protocol throughput between two real libp2p nodes over loopback TCP+noise+yamux, next to a plain yamux
//! stream on the same kind of connection.
//!
//! Both sides run the node's transport settings. The chunk protocol fetches each 1 MiB segment as its sixteen 64 KiB
//! blocks ([`BLOCK_SIZE`]), requested in parallel, each one request-response stream, each block verified against its CID as the node
//! does. The baseline opens one raw yamux stream per segment (libp2p-stream) and reads 1 MiB from it. Rounds
//! alternate between the two, so machine noise hits both alike; the figure reported is the median round.
//!
//! Run: `cargo bench -p streamrp2p-node --bench chunk_throughput`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, noise, request_response, tcp, yamux};
use streamrp2p_node::{CHUNK_PROTOCOL, ChunkCodec, Received};
use streamrp2p_protocols::Cid;
use streamrp2p_protocols::chunk::{ChunkRequest, ChunkResponse};
use streamrp2p_protocols::segment::BLOCK_SIZE;
use streamrp2p_protocols::segment::{split, verify_block};
use tokio::sync::{mpsc, oneshot};

const SEGMENT: usize = 1024 * 1024;
const SEGMENTS_PER_ROUND: usize = 48;
const ROUNDS: usize = 5;
const RAW_PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/raw/1.0.0");

#[derive(NetworkBehaviour)]
struct Bench {
    chunk: request_response::Behaviour<ChunkCodec>,
    raw: libp2p_stream::Behaviour,
}

fn swarm() -> Swarm<Bench> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| Bench {
            chunk: request_response::Behaviour::with_codec(
                ChunkCodec::default(),
                [(CHUNK_PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(20))
                    .with_max_concurrent_streams(256),
            ),
            raw: libp2p_stream::Behaviour::new(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build()
}

/// The serving node: blocks by CID over the chunk protocol, and 1 MiB per raw stream.
async fn serve(mut server: Swarm<Bench>, blocks: HashMap<Cid, Bytes>, raw_payload: Bytes) {
    let mut incoming = server.behaviour().raw.new_control().accept(RAW_PROTOCOL).unwrap();
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let payload = raw_payload.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 1];
                if stream.read_exact(&mut request).await.is_ok() {
                    let _ = stream.write_all(&payload).await;
                    let _ = stream.close().await;
                }
            });
        }
    });
    loop {
        if let SwarmEvent::Behaviour(BenchEvent::Chunk(request_response::Event::Message {
            message:
                request_response::Message::Request {
                    request: Received::Valid(ChunkRequest::Block(cid)),
                    channel,
                    ..
                },
            ..
        })) = server.select_next_some().await
        {
            let response = blocks
                .get(&cid)
                .map_or(ChunkResponse::DontHave, |b| ChunkResponse::Block(b.clone()));
            let _ = server.behaviour_mut().chunk.send_response(channel, response);
        }
    }
}

type BlockRequest = (PeerId, Cid, oneshot::Sender<Bytes>);

/// The fetching node's event loop: sends block requests and hands back the bytes.
async fn drive_client(mut client: Swarm<Bench>, mut requests: mpsc::Receiver<BlockRequest>) {
    let mut waiting = HashMap::new();
    loop {
        tokio::select! {
            Some((peer, cid, reply)) = requests.recv() => {
                let id = client.behaviour_mut().chunk.send_request(&peer, ChunkRequest::Block(cid).into());
                waiting.insert(id, reply);
            }
            event = client.select_next_some() => {
                if let SwarmEvent::Behaviour(BenchEvent::Chunk(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response: ChunkResponse::Block(data) },
                    ..
                })) = event
                    && let Some(reply) = waiting.remove(&request_id)
                {
                    let _ = reply.send(data);
                }
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Distinct segments, so nothing is served from a cache the real node would not have.
    let segments: Vec<_> = (0..SEGMENTS_PER_ROUND)
        .map(|s| {
            let data: Vec<u8> = (0..SEGMENT)
                .map(|i| (i as u64 * 2_654_435_761 + s as u64) as u8)
                .collect();
            split(data.into()).unwrap()
        })
        .collect();
    let blocks: HashMap<Cid, Bytes> = segments.iter().flat_map(|s| s.blocks.iter().cloned()).collect();

    let mut server = swarm();
    server.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let addr: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_id = *server.local_peer_id();
    tokio::spawn(serve(server, blocks, Bytes::from(vec![7u8; SEGMENT])));

    let mut client = swarm();
    let mut raw = client.behaviour().raw.new_control();
    client.dial(addr.with_p2p(server_id).unwrap()).unwrap();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(drive_client(client, rx));

    let fetch_chunks = async |tx: &mpsc::Sender<BlockRequest>| {
        for segment in &segments {
            let mut replies = Vec::new();
            for (cid, _) in &segment.blocks {
                let (reply, rx) = oneshot::channel();
                tx.send((server_id, *cid, reply)).await.unwrap();
                replies.push((*cid, rx));
            }
            for (cid, rx) in replies {
                let data = rx.await.expect("block arrives");
                verify_block(&cid, &data).expect("block matches its CID");
            }
        }
    };
    let fetch_raw = async |raw: &mut libp2p_stream::Control| {
        for _ in &segments {
            let mut stream = raw.open_stream(server_id, RAW_PROTOCOL).await.expect("raw stream");
            stream.write_all(&[1]).await.unwrap();
            let mut data = Vec::with_capacity(SEGMENT);
            stream.read_to_end(&mut data).await.unwrap();
            assert_eq!(data.len(), SEGMENT);
        }
    };

    // Warm up: connection, yamux windows, allocator.
    fetch_chunks(&tx).await;
    fetch_raw(&mut raw).await;

    let mib = (SEGMENTS_PER_ROUND * SEGMENT) as f64 / (1024.0 * 1024.0);
    let (mut chunk_rates, mut raw_rates) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        fetch_chunks(&tx).await;
        chunk_rates.push(mib / t.elapsed().as_secs_f64());
        let t = Instant::now();
        fetch_raw(&mut raw).await;
        raw_rates.push(mib / t.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (chunk, plain) = (median(&mut chunk_rates), median(&mut raw_rates));
    println!(
        "chunk protocol throughput, 1 MiB segments over loopback TCP+noise+yamux ({ROUNDS} rounds of {SEGMENTS_PER_ROUND}):"
    );
    let (blocks, kib) = (SEGMENT / BLOCK_SIZE, BLOCK_SIZE / 1024);
    println!("  chunk protocol ({blocks} x {kib} KiB blocks in parallel, CID-verified): {chunk:8.1} MiB/s");
    println!("  plain yamux stream (1 MiB per stream):                         {plain:8.1} MiB/s");
    println!(
        "  ratio chunk / plain:                                           {:8.2}",
        chunk / plain
    );
}
