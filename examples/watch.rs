//! Join a stream from code and count the segments that arrive, each verified block by block against the
//! broadcaster's signed manifest before it is reported.
//!
//! ```sh
//! cargo run -p streamrp2p-examples --example watch -- STREAM_ID BOOTSTRAP_MULTIADDR [SEGMENTS]
//! ```
//! STREAM_ID and BOOTSTRAP_MULTIADDR are what `broadcast_file` (or `streamrp2p broadcast`) prints. It exits after
//! SEGMENTS segments (default 10).

use anyhow::{Context, bail};
use streamrp2p_node::{Node, NodeConfig, NodeEvent, StreamId};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(stream), Some(bootstrap)) = (args.next(), args.next()) else {
        bail!("usage: watch STREAM_ID BOOTSTRAP_MULTIADDR [SEGMENTS]");
    };
    let stream: StreamId = stream.parse()?;
    let wanted: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(10);

    // Knowing one peer is enough: the DHT leads to the stream's other providers.
    let config = NodeConfig {
        bootstrap: vec![bootstrap.parse().context("bootstrap address")?],
        ..NodeConfig::loopback()
    };
    let node = Node::start(config).await?;

    // Subscribe before watching, so no segment is missed.
    let mut events = node.subscribe();
    node.watch(stream).await?;

    let mut count = 0;
    while count < wanted {
        let NodeEvent::SegmentReady { stream: s, seq, size } = events.recv().await? else {
            continue;
        };
        if s == stream {
            count += 1;
            let status = node.status();
            let from_peers = status.streams.first().map_or(0, |s| s.bytes_from_peers);
            println!("segment {seq}: {size} bytes verified ({count}/{wanted}; {from_peers} bytes from peers so far)");
        }
    }
    Ok(())
}
