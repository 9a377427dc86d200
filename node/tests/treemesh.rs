//! The hybrid tree-mesh on real nodes: a broadcaster looping the embedded sample (H.264/AAC made by ffmpeg),
//! viewers on loopback speaking real libp2p, and an HTTP origin in front of the broadcaster's gateway that can be
//! stopped. Each test checks what a viewer's virtual player saw (`/api/status` figures).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use streamrp2p_node::{Node, NodeConfig, NodeHandle, Policy, StreamId, StreamStatus, sample};
use tokio::sync::RwLock;
use tokio::task::JoinHandle;

/// One segment of the sample: the most a viewer may stall when something fails.
const ONE_SEGMENT_S: f64 = 2.0;

/// The stream's HTTP origin: a pull-through proxy of the broadcaster's gateway, like a CDN in front of it.
struct Origin {
    url: String,
    server: JoinHandle<()>,
}

impl Origin {
    async fn start(upstream: Arc<RwLock<String>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .route("/{file}", axum::routing::get(proxy))
            .with_state(upstream);
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { url, server }
    }

    /// Stops serving: connections are refused from now on.
    fn stop(&self) {
        self.server.abort();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn proxy(State(upstream): State<Arc<RwLock<String>>>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    let url = format!("{}/{file}", upstream.read().await);
    let mut request = reqwest::Client::new().get(url);
    if let Some(range) = headers.get(header::RANGE) {
        request = request.header(header::RANGE, range.to_str().unwrap_or_default());
    }
    let Ok(response) = request.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let range = response.headers().get(header::CONTENT_RANGE).cloned();
    let body = response.bytes().await.unwrap_or_default();
    let mut answer = (status, body).into_response();
    if let Some(range) = range {
        answer.headers_mut().insert(header::CONTENT_RANGE, range);
    }
    answer
}

/// A broadcaster of the looped sample, its origin, and viewers.
struct Net {
    broadcaster: NodeHandle,
    stream: StreamId,
    viewers: Vec<Option<NodeHandle>>,
    origin: Origin,
    _ingest: JoinHandle<()>,
}

impl Net {
    async fn start(broadcaster_policy: Policy, viewer_policies: &[Policy]) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("streamrp2p_node=info")
            .with_test_writer()
            .try_init();
        let upstream = Arc::new(RwLock::new(String::new()));
        let origin = Origin::start(upstream.clone()).await;
        let broadcaster = Node::start(NodeConfig {
            policy: broadcaster_policy,
            ..NodeConfig::loopback()
        })
        .await
        .unwrap();
        let stream = broadcaster
            .broadcast("tree-mesh", Some(origin.url.clone()))
            .await
            .unwrap();
        *upstream.write().await = format!("http://{}/streams/{stream}", broadcaster.http_addr().unwrap());
        let ingest = tokio::spawn({
            let node = broadcaster.clone();
            async move {
                let _ = sample::loop_sample(node, stream).await;
            }
        });
        let mut viewers = Vec::new();
        for policy in viewer_policies {
            let viewer = Node::start(NodeConfig {
                bootstrap: broadcaster.listen_addrs(),
                policy: *policy,
                ..NodeConfig::loopback()
            })
            .await
            .unwrap();
            viewer.watch(stream).await.unwrap();
            viewers.push(Some(viewer));
        }
        Self {
            broadcaster,
            stream,
            viewers,
            origin,
            _ingest: ingest,
        }
    }

    fn live(&self) -> impl Iterator<Item = (usize, &NodeHandle)> {
        self.viewers
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i, v.as_ref()?)))
    }

    fn stream_status(node: &NodeHandle, stream: StreamId) -> StreamStatus {
        let id = stream.to_string();
        node.status()
            .streams
            .into_iter()
            .find(|s| s.id == id)
            .expect("the stream")
    }

    /// Waits until every live viewer plays.
    async fn wait_playing(&self) {
        wait_until("every viewer plays", Duration::from_secs(40), || {
            self.live()
                .all(|(_, v)| Self::stream_status(v, self.stream).ttfb_s.is_some())
        })
        .await;
    }

    /// Each live viewer's status now.
    fn snapshot(&self) -> Vec<(usize, StreamStatus)> {
        self.live()
            .map(|(i, v)| (i, Self::stream_status(v, self.stream)))
            .collect()
    }
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every viewer of `after` kept playing since `before`: it completed `min_segments` more segments and stalled
/// for at most one segment's time.
fn kept_playing(before: &[(usize, StreamStatus)], after: &[(usize, StreamStatus)], min_segments: u64) {
    for (i, now) in after {
        let Some((_, then)) = before.iter().find(|(j, _)| j == i) else {
            continue;
        };
        assert!(
            now.segments >= then.segments + min_segments,
            "viewer {i} completed {} segments, expected {min_segments} or more",
            now.segments - then.segments
        );
        let stalled = now.stalled_s - then.stalled_s;
        assert!(
            stalled <= ONE_SEGMENT_S,
            "viewer {i} stalled {stalled:.2} s, more than one segment"
        );
    }
}

fn capped(kbps: f64) -> Policy {
    Policy {
        max_upload_kbps: Some(kbps),
        ..Policy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backbone_node_stalls_no_viewer_for_more_than_one_segment() {
    // The broadcaster's uplink pays for two children (at 1.5 times the sample's 1.4 Mbit/s), so the other viewers
    // hang below the forwarders it takes.
    let net = Net::start(capped(4_500.0), &[Policy::default(); 6]).await;
    net.wait_playing().await;
    wait_until(
        "a viewer forwards to children in the backbone",
        Duration::from_secs(30),
        || {
            net.snapshot()
                .iter()
                .any(|(_, s)| s.tree_role == Some("backbone") && !s.children.is_empty())
        },
    )
    .await;
    let snapshot = net.snapshot();
    let (victim, status) = snapshot
        .iter()
        .filter(|(_, s)| s.tree_role == Some("backbone"))
        .max_by_key(|(_, s)| s.children.len())
        .unwrap();
    let victim = *victim;
    tracing::info!(victim, children = status.children.len(), "killing a backbone viewer");
    let mut net = net;
    net.viewers[victim] = None;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<_> = snapshot.into_iter().filter(|(i, _)| *i != victim).collect();
    tokio::time::sleep(Duration::from_secs(20)).await;
    kept_playing(&before, &net.snapshot(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_origin_leaves_p2p_delivery_running() {
    let net = Net::start(Policy::default(), &[Policy::default(); 4]).await;
    net.wait_playing().await;
    net.origin.stop();
    let before = net.snapshot();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = net.snapshot();
    kept_playing(&before, &after, 8);
    for ((i, then), (_, now)) in before.iter().zip(&after) {
        assert!(
            now.bytes_from_peers > then.bytes_from_peers,
            "viewer {i} got nothing from peers"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_every_other_peer_leaves_the_origin_serving_the_viewer() {
    let mut net = Net::start(Policy::default(), &[Policy::default(); 3]).await;
    net.wait_playing().await;
    // The other viewers go, and the broadcaster stops uploading (it still announces the segments): no peer is left
    // to serve viewer 0.
    net.viewers[1] = None;
    net.viewers[2] = None;
    net.broadcaster
        .set_policy(Policy {
            metered: true,
            ..Policy::default()
        })
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = net.snapshot();
    let uploaded = Net::stream_status(&net.broadcaster, net.stream).bytes_uploaded;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = net.snapshot();
    kept_playing(&before, &after, 8);
    let (then, now) = (&before[0].1, &after[0].1);
    assert!(
        now.bytes_from_origin >= then.bytes_from_origin + 8 * 300_000,
        "the origin served {} bytes",
        now.bytes_from_origin - then.bytes_from_origin
    );
    assert_eq!(
        Net::stream_status(&net.broadcaster, net.stream).bytes_uploaded,
        uploaded,
        "a metered broadcaster uploads nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metered_viewer_uploads_no_payload() {
    let metered = Policy {
        metered: true,
        ..Policy::default()
    };
    // The broadcaster can feed only two viewers itself: the rest must come from viewers, and the metered one must
    // not be among those that serve.
    let net = Net::start(
        capped(4_500.0),
        &[metered, Policy::default(), Policy::default(), Policy::default()],
    )
    .await;
    net.wait_playing().await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let snapshot = net.snapshot();
    let (_, status) = &snapshot[0];
    assert!(
        status.segments >= 8,
        "the metered viewer plays ({} segments)",
        status.segments
    );
    assert_eq!(status.bytes_uploaded, 0, "a metered viewer uploads no payload");
    assert!(status.children.is_empty(), "a metered viewer takes no children");
    let others: u64 = snapshot[1..].iter().map(|(_, s)| s.bytes_uploaded).sum();
    assert!(others > 0, "the other viewers serve each other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_hear_of_segments_over_the_topic() {
    // The broadcaster's announcements reach every viewer on the stream's gossipsub topic, a few milliseconds after
    // it signs them. A viewer asks peers for manifests only to join, and when a block comes before its announcement;
    // had the topic stopped reaching viewers, their entries would come from those manifests, up to a segment later
    // at every hop of the tree.
    let net = Net::start(Policy::default(), &[Policy::default(); 8]).await;
    net.wait_playing().await;
    let before = net.snapshot();
    tokio::time::sleep(Duration::from_secs(16)).await;
    for ((i, then), (_, now)) in before.iter().zip(&net.snapshot()) {
        let topic = now.entries_from_topic - then.entries_from_topic;
        let manifests = now.entries_from_manifests - then.entries_from_manifests;
        assert!(
            topic >= 6 && topic >= 4 * manifests,
            "viewer {i} learnt {topic} entries from the topic and {manifests} from manifests"
        );
    }
    // `/metrics` counts them the same way.
    let (_, viewer) = net.live().next().unwrap();
    let url = format!("http://{}/metrics", viewer.http_addr().unwrap());
    let metrics = reqwest::get(url).await.unwrap().text().await.unwrap();
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("streamrp2p_manifest_entries_total{via=\"topic\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("a count of entries from the topic");
    assert!(
        counted >= before[0].1.entries_from_topic + 6,
        "{counted} entries from the topic"
    );
    // libp2p's own metrics share the registry: bytes by transport and direction, connections, gossipsub messages.
    let sum = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let bytes = sum("libp2p_bandwidth_bytes_total{");
    assert!(bytes > 1e5, "{bytes} bytes counted by transport:\n{metrics}");
    assert!(sum("libp2p_swarm_connections_established_total{") >= 1.0, "{metrics}");
    assert!(sum("libp2p_gossipsub_messages_total") >= 6.0, "{metrics}");
}
