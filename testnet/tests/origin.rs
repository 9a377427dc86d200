//! The local testnet's origin over real HTTP, without node processes: Range answers, the egress limit, the
//! per-second counter, stopping and starting on the same port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use streamrp2p_testnet::local::origin::Origin;
use streamrp2p_testnet::local::segments::Segments;

fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_serves_ranges_at_its_rate_and_restarts() {
    let segments = Arc::new(Segments::default());
    let data = pattern(300_000);
    segments.insert(1, data.clone());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // 8 Mbit/s: a megabyte a second.
    let mut origin = Origin::bind(8.0, segments.clone(), http.clone()).await.unwrap();
    // An upstream nobody listens on: what the cache lacks is a 502, not a hang.
    origin.set_upstream("http://127.0.0.1:9/streams/x".into());
    let url = origin.url();

    let whole = http.get(format!("{url}/1.ts")).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap(), data);

    let part = http
        .get(format!("{url}/1.ts"))
        .header("Range", "bytes=65536-131071")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        "bytes 65536-131071/300000"
    );
    assert_eq!(part.bytes().await.unwrap(), data.slice(65536..131072));

    let beyond = http
        .get(format!("{url}/1.ts"))
        .header("Range", "bytes=300000-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"].to_str().unwrap(), "bytes */300000");

    let missing = http.get(format!("{url}/2.ts")).send().await.unwrap();
    assert_eq!(missing.status(), 502);

    // 900 kB more at 1 MB/s with a 100 kB burst, after the 365 kB above: at least 0.6 s.
    let started = Instant::now();
    for _ in 0..3 {
        let body = http
            .get(format!("{url}/1.ts"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(body.len(), 300_000);
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(600), "900 kB at 1 MB/s took {took:?}");
    assert_eq!(origin.bytes_served(), 4 * 300_000 + 65_536);
    assert!(
        origin.peak_mbps() <= 8.0 * 1.2 + 0.8,
        "the busiest second carried {} Mbit/s",
        origin.peak_mbps()
    );

    origin.stop().await;
    assert!(!origin.is_running());
    let refused = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{url}/1.ts"))
        .send()
        .await;
    assert!(refused.is_err(), "a stopped origin answered: {refused:?}");

    origin.start().await.unwrap();
    assert_eq!(origin.url(), url, "the origin comes back on the same port");
    let again = http.get(format!("{url}/1.ts")).send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.bytes().await.unwrap(), data);
}
