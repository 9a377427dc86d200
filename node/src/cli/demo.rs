//! `streamrp2p demo`: a broadcaster looping the embedded sample and N viewers, all in this process on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use streamrp2p_node::{Node, NodeConfig, NodeHandle, sample};

pub(super) async fn run(config: NodeConfig, viewers: usize) -> Result<()> {
    let http = config.http.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    // The demo's nodes are throwaway: fresh identities, loopback only, nothing written to disk.
    let node_config = |port_offset: u16, bootstrap| NodeConfig {
        data_dir: None,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
        bootstrap,
        http: Some(SocketAddr::new(
            http.ip(),
            if http.port() == 0 { 0 } else { http.port() + port_offset },
        )),
        ..config.clone()
    };
    let broadcaster = Node::start(node_config(0, Vec::new()))
        .await
        .context("cannot start the demo broadcaster")?;
    let stream = broadcaster.broadcast("demo", None).await?;
    tokio::spawn(sample::loop_sample(broadcaster.clone(), stream));

    let mut nodes = vec![("broadcaster".to_owned(), broadcaster.clone())];
    for i in 1..=viewers {
        let viewer = Node::start(node_config(i as u16, broadcaster.listen_addrs()))
            .await
            .with_context(|| format!("cannot start demo viewer {i}"))?;
        viewer.watch(stream).await?;
        nodes.push((format!("viewer {i}"), viewer));
    }

    println!("stream: {stream}");
    for (name, node) in &nodes {
        if let Some(addr) = node.http_addr() {
            println!("play ({name}): http://{addr}/streams/{stream}/index.m3u8");
        }
    }
    println!("Open a play URL in VLC, ffplay or mpv. Live counters every 2 s; Ctrl-C stops.");

    let mut clock = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = clock.tick() => print_counters(&nodes),
            result = tokio::signal::ctrl_c() => return result.context("cannot wait for Ctrl-C"),
        }
    }
}

fn print_counters(nodes: &[(String, NodeHandle)]) {
    let line: Vec<String> = nodes
        .iter()
        .map(|(name, node)| {
            let status = node.status();
            let s = status.streams.first();
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            match s {
                Some(s) => format!(
                    "{name}: {} seg, {:.1} MiB from peers, {:.1} MiB from origin, {:.1} MiB up",
                    s.segments,
                    mib(s.bytes_from_peers),
                    mib(s.bytes_from_origin),
                    mib(s.bytes_uploaded)
                ),
                None => format!("{name}: starting"),
            }
        })
        .collect();
    println!("{}", line.join(" | "));
}
