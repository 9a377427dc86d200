//! The report of a real run, from the nodes' last statuses and the origin's own counter: the simulator's
//! definitions, over what the nodes measure. A metric no node reports (an older node binary) is `null`.

use super::status::StreamStatus;
use crate::report::Report;
use crate::scenario::Scenario;
use crate::stats::{jain_index, quantile};

/// What the report needs to know of one viewer (present or gone).
#[derive(Clone, Debug, Default)]
pub struct ViewerSample {
    /// Its last status of the stream, if one was ever read.
    pub status: Option<StreamStatus>,
    /// Its upload capacity as a multiple of the bitrate (its class, whether or not the cap was applied).
    pub upload_x: f64,
    /// Seconds from its start to its leaving (or to now).
    pub in_stream_s: f64,
}

/// What a report is made of.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Every viewer of the run.
    pub viewers: Vec<ViewerSample>,
    /// The broadcaster's last status of the stream.
    pub broadcaster: Option<StreamStatus>,
    /// Bytes the origin sent in each second.
    pub origin_per_second: Vec<u64>,
    /// Wall time of the run so far.
    pub wall_s: f64,
    /// The largest peak resident memory of a node process, MiB.
    pub peak_rss_mb: Option<f64>,
}

/// The report of `scenario`'s run from `inputs`.
///
/// - offload: bytes viewers got from other viewers over all bytes they got. A node counts the broadcaster as a
///   peer, so the broadcaster's upload is taken off the viewers' `bytes_from_peers`, as the simulator (whose
///   sources are viewer, broadcaster and origin) counts it.
/// - ttfb, lag: percentiles of the viewers' `ttfb_s`, and of all their `lags_s` pooled.
/// - rebuffer ratio, availability: Σ `stalled_s` / Σ `watched_s`; Σ on time / Σ (on time + late).
/// - duplicates, control overhead: Σ `bytes_duplicate` and Σ `bytes_control_sent` (viewers and broadcaster) over
///   the payload viewers received, duplicates included.
/// - origin peak: the origin's busiest second. Upload fairness: Jain's index of each viewer's upload over its
///   capacity × its time in the stream. Supply: the scenario's, as the simulator computes it.
pub fn report(scenario: &Scenario, inputs: &Inputs) -> Report {
    let statuses: Vec<&StreamStatus> = inputs.viewers.iter().filter_map(|v| v.status.as_ref()).collect();
    let from_peers: u64 = statuses.iter().map(|s| s.bytes_from_peers).sum();
    let from_origin: u64 = statuses.iter().map(|s| s.bytes_from_origin).sum();
    let received = from_peers + from_origin;
    let offload = inputs.broadcaster.as_ref().and_then(|b| {
        let from_viewers = from_peers.saturating_sub(b.bytes_uploaded);
        (received > 0).then(|| from_viewers as f64 / received as f64)
    });
    let mut ttfb: Vec<f64> = statuses.iter().filter_map(|s| s.ttfb_s).collect();
    let mut lags: Vec<f64> = statuses
        .iter()
        .filter_map(|s| s.lags_s.as_ref())
        .flatten()
        .copied()
        .collect();
    let sum_f = |f: fn(&StreamStatus) -> Option<f64>| -> Option<f64> {
        let values: Vec<f64> = statuses.iter().filter_map(|s| f(s)).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let sum_u = |f: fn(&StreamStatus) -> Option<u64>| -> Option<u64> {
        let values: Vec<u64> = statuses.iter().filter_map(|s| f(s)).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let rebuffer_ratio = match (sum_f(|s| s.stalled_s), sum_f(|s| s.watched_s)) {
        (Some(stalled), Some(watched)) if watched > 0.0 => Some(stalled / watched),
        _ => None,
    };
    let availability = match (sum_u(|s| s.segments_on_time), sum_u(|s| s.segments_late)) {
        (Some(on_time), late) if on_time + late.unwrap_or(0) > 0 => {
            Some(on_time as f64 / (on_time + late.unwrap_or(0)) as f64)
        }
        _ => None,
    };
    let duplicate = sum_u(|s| s.bytes_duplicate);
    let payload = (received + duplicate.unwrap_or(0)) as f64;
    let duplicate_ratio = duplicate.filter(|_| payload > 0.0).map(|d| d as f64 / payload);
    let control = sum_u(|s| s.bytes_control_sent).map(|c| {
        c + inputs
            .broadcaster
            .as_ref()
            .and_then(|b| b.bytes_control_sent)
            .unwrap_or(0)
    });
    let control_overhead_ratio = control.filter(|_| payload > 0.0).map(|c| c as f64 / payload);
    let upload_use: Vec<f64> = inputs
        .viewers
        .iter()
        .filter_map(|v| {
            let capacity = v.upload_x * scenario.bitrate_bytes() * v.in_stream_s;
            let uploaded = v.status.as_ref().map_or(0, |s| s.bytes_uploaded) as f64;
            (capacity > 0.0).then(|| uploaded / capacity)
        })
        .collect();
    Report {
        name: scenario.name.clone(),
        protocol: scenario.protocol.name().to_owned(),
        viewers: scenario.viewers,
        offload,
        ttfb_p50_s: quantile(&mut ttfb, 0.5),
        ttfb_p95_s: quantile(&mut ttfb, 0.95),
        rebuffer_ratio,
        lag_p50_s: quantile(&mut lags, 0.5),
        lag_p95_s: quantile(&mut lags, 0.95),
        lag_p99_s: quantile(&mut lags, 0.99),
        availability,
        duplicate_ratio,
        control_overhead_ratio,
        origin_peak_mbps: Some(inputs.origin_per_second.iter().copied().max().unwrap_or(0) as f64 * 8.0 / 1e6),
        upload_fairness: jain_index(&upload_use),
        supply_ratio: Some(scenario.supply_ratio()),
        wall_s: inputs.wall_s,
        peak_rss_mb: inputs.peak_rss_mb,
        events: 0,
        adversaries: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        toml::from_str(
            r#"
            name = "t"
            seed = 1
            protocol = "tree-mesh"
            viewers = 2
            duration_s = 40
            join_window_s = 5
            bitrate_kbps = 1000
            segment_s = 2.0
            latency_ms = [0, 1]
            origin_mbps = 1000
            broadcaster_upload_x = 10
            download_x = 10
            upload = [{ share = 1.0, x = 1.0 }]
            "#,
        )
        .unwrap()
    }

    fn viewer(from_peers: u64, from_origin: u64, uploaded: u64) -> ViewerSample {
        ViewerSample {
            status: Some(StreamStatus {
                bytes_from_peers: from_peers,
                bytes_from_origin: from_origin,
                bytes_uploaded: uploaded,
                ..StreamStatus::default()
            }),
            upload_x: 1.0,
            in_stream_s: 10.0,
        }
    }

    #[test]
    fn todays_counters_give_offload_and_nulls_for_the_rest() {
        let inputs = Inputs {
            viewers: vec![viewer(1000, 0, 300), viewer(500, 500, 0)],
            broadcaster: Some(StreamStatus {
                bytes_uploaded: 1200,
                ..StreamStatus::default()
            }),
            origin_per_second: vec![0, 125_000, 500],
            wall_s: 1.0,
            peak_rss_mb: None,
        };
        let r = report(&scenario(), &inputs);
        // 1500 from peers, of which 1200 from the broadcaster: 300 of 2000 from viewers.
        assert_eq!(r.offload, Some(0.15));
        assert_eq!(r.origin_peak_mbps, Some(1.0));
        assert_eq!(r.availability, None);
        assert_eq!(r.ttfb_p50_s, None);
        assert_eq!(r.duplicate_ratio, None);
        // One viewer used 300 of 1.25 MB, the other nothing: Jain's index of (x, 0) is 1/2.
        assert_eq!(r.upload_fairness, Some(0.5));
        assert_eq!(r.supply_ratio, Some(scenario().supply_ratio()));
        assert_eq!(r.events, 0);
    }

    #[test]
    fn new_counters_pool_over_viewers() {
        let mut a = viewer(900, 100, 0);
        let mut b = viewer(1000, 0, 0);
        for (v, lags, on_time, late) in [(&mut a, vec![1.0, 2.0], 9, 1), (&mut b, vec![3.0], 10, 0)] {
            let s = v.status.as_mut().unwrap();
            s.lags_s = Some(lags);
            s.segments_on_time = Some(on_time);
            s.segments_late = Some(late);
            s.stalled_s = Some(1.0);
            s.watched_s = Some(50.0);
            s.ttfb_s = Some(on_time as f64 / 10.0);
            s.bytes_duplicate = Some(50);
            s.bytes_control_sent = Some(10);
        }
        let inputs = Inputs {
            viewers: vec![a, b],
            broadcaster: Some(StreamStatus {
                bytes_control_sent: Some(80),
                ..StreamStatus::default()
            }),
            ..Inputs::default()
        };
        let r = report(&scenario(), &inputs);
        assert_eq!(r.lag_p50_s, Some(2.0));
        assert_eq!(r.lag_p99_s, Some(3.0));
        assert_eq!(r.availability, Some(19.0 / 20.0));
        assert_eq!(r.rebuffer_ratio, Some(0.02));
        assert_eq!(r.ttfb_p95_s, Some(1.0));
        assert_eq!(r.duplicate_ratio, Some(100.0 / 2100.0));
        assert_eq!(r.control_overhead_ratio, Some(100.0 / 2100.0));
        assert_eq!(r.upload_fairness, None, "nobody uploaded");
    }
}
