//! The broadcaster's segments as the testnet keeps them: the origin's pull-through cache and the reference the byte
//! check compares the viewers' copies with. It outlives the broadcaster's live window (60 s), so that every
//! segment a viewer still lists can be checked; it holds the whole run (3 minutes of 1 Mbit/s is 22 MB).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;

/// How long one HTTP request to a node may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Segments by sequence number.
#[derive(Debug, Default)]
pub struct Segments {
    map: Mutex<BTreeMap<u64, Bytes>>,
}

impl Segments {
    /// Segment `seq`, if held.
    pub fn get(&self, seq: u64) -> Option<Bytes> {
        self.map.lock().expect("segments lock").get(&seq).cloned()
    }

    /// Keeps segment `seq`.
    pub fn insert(&self, seq: u64, data: Bytes) {
        self.map.lock().expect("segments lock").insert(seq, data);
    }

    /// Whether segment `seq` is held.
    pub fn contains(&self, seq: u64) -> bool {
        self.map.lock().expect("segments lock").contains_key(&seq)
    }

    /// Segments held.
    pub fn len(&self) -> usize {
        self.map.lock().expect("segments lock").len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sizes of the held segments in bytes, in order.
    pub fn sizes(&self) -> Vec<(u64, usize)> {
        let map = self.map.lock().expect("segments lock");
        map.iter().map(|(seq, data)| (*seq, data.len())).collect()
    }
}

/// `GET {stream_url}/{seq}.ts` from a node's gateway (`stream_url` = `http://ADDR/streams/ID`): `None` when the node
/// does not hold it (404).
pub async fn fetch(http: &reqwest::Client, stream_url: &str, seq: u64) -> Result<Option<Bytes>> {
    let url = format!("{stream_url}/{seq}.ts");
    let response = http
        .get(&url)
        .timeout(HTTP_TIMEOUT)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        bail!("GET {url}: {}", response.status());
    }
    Ok(Some(response.bytes().await.with_context(|| format!("GET {url}"))?))
}

/// The sequence numbers a node's gateway lists for a stream (`GET {stream_url}/manifest`).
pub async fn manifest(http: &reqwest::Client, stream_url: &str) -> Result<Vec<u64>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        seq: u64,
    }
    let url = format!("{stream_url}/manifest");
    let response = http
        .get(&url)
        .timeout(HTTP_TIMEOUT)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(Vec::new());
    }
    if !response.status().is_success() {
        bail!("GET {url}: {}", response.status());
    }
    let body = response.bytes().await.with_context(|| format!("GET {url}"))?;
    let entries: Vec<Entry> = serde_json::from_slice(&body).with_context(|| format!("GET {url}: not a manifest"))?;
    Ok(entries.into_iter().map(|e| e.seq).collect())
}
