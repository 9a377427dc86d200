//! Publish an HLS folder as a live stream, from code.
//!
//! ```sh
//! # a folder ffmpeg wrote: ffmpeg -i talk.mp4 -c copy -f hls -hls_time 2 -hls_list_size 0 talk/index.m3u8
//! cargo run -p streamrp2p-examples --example broadcast_file -- talk/index.m3u8
//! ```
//! Without an argument it publishes the sample bundled with the node. It prints the stream id, the address viewers
//! bootstrap from and the playlist URL, publishes one segment per its duration, and then keeps serving until Ctrl-C.

use anyhow::Context;
use streamrp2p_node::ingest::{HlsSource, follow_hls};
use streamrp2p_node::{Node, NodeConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let playlist = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../node/assets/sample/sample.m3u8").to_owned());

    // A node on loopback with a fresh identity and a gateway on a free port. For a public broadcast, start from
    // `NodeConfig::default()` and set `data_dir` so the identity (and so the stream id) survives restarts.
    let node = Node::start(NodeConfig::loopback()).await.context("starting the node")?;

    // The stream id is derived from this node's key and the name.
    let stream = node.broadcast("my-file", None).await?;
    println!("stream:    {stream}");
    println!("bootstrap: {}", node.listen_addrs()[0]);
    if let Some(http) = node.http_addr() {
        println!("play:      http://{http}/streams/{stream}/index.m3u8");
    }

    // Follow the playlist: a finished one (EXT-X-ENDLIST) is published in real time, one segment per duration.
    let published = follow_hls(node.clone(), stream, playlist.parse::<HlsSource>()?).await?;
    println!("published {published} segments; serving them until Ctrl-C");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
