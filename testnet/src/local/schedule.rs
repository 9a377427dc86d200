//! Who joins when, with which upload, and when they leave: drawn from the scenario's seed as the simulator draws
//! them. Arrivals are uniform over the join window, starting when the stream has two segments (a player starts one
//! segment behind the live edge); each viewer's upload class is drawn by the classes' shares; with churn, each
//! viewer's lifetime is exponential with rate `churn_per_min` per minute, and a leaver is replaced by a new joiner
//! at once — so about `churn_per_min × viewers` leave, and as many join, each minute.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{Behaviour, Scenario};

/// Segments the stream has when viewers start arriving (the simulator's `LIVE_AFTER_SEGMENTS`).
pub const LIVE_AFTER_SEGMENTS: f64 = 2.0;

/// One viewer of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrival {
    /// When it joins, seconds of stream time (0 = the stream's start).
    pub at_s: f64,
    /// Its upload as a multiple of the bitrate.
    pub upload_x: f64,
    /// When it leaves, if before the end of the stream.
    pub leave_s: Option<f64>,
    /// What it does, if it is one of the scenario's adversaries (an `adversary` process, not a viewer).
    pub adversary: Option<Vec<Behaviour>>,
}

/// Every viewer of a run, in order of arrival.
pub fn plan(scenario: &Scenario) -> Vec<Arrival> {
    let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
    let live_at = LIVE_AFTER_SEGMENTS * scenario.segment_s;
    let rate = scenario.churn_per_min / 60.0;
    let draw = |at_s: f64, rng: &mut ChaCha8Rng| {
        let upload_x = scenario.upload_x_at(rng.random::<f64>());
        let leave_s = (rate > 0.0)
            .then(|| at_s - (1.0 - rng.random::<f64>()).ln() / rate)
            .filter(|leave| *leave < scenario.duration_s);
        Arrival {
            at_s,
            upload_x,
            leave_s,
            adversary: None,
        }
    };
    let mut arrivals: Vec<f64> = (0..scenario.viewers)
        .map(|_| live_at + rng.random::<f64>() * scenario.join_window_s)
        .collect();
    arrivals.sort_by(f64::total_cmp);
    let mut plan: Vec<Arrival> = Vec::new();
    for at in arrivals {
        let mut viewer = draw(at, &mut rng);
        plan.push(viewer.clone());
        // Churn replaces every leaver with a new joiner.
        while let Some(leave) = viewer.leave_s {
            viewer = draw(leave, &mut rng);
            plan.push(viewer.clone());
        }
    }
    plan.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    // The adversaries: `share` of the arrivals, spread evenly (arrival i is one when i × share crosses a whole
    // number). Behaviours are dealt out in turn, and when there are fewer adversaries than behaviours an adversary
    // takes several, so that a run mixes every behaviour the scenario names whatever its size.
    if let Some(adversaries) = &scenario.adversaries {
        let chosen: Vec<usize> = (0..plan.len())
            .filter(|&i| ((i + 1) as f64 * adversaries.share).floor() > (i as f64 * adversaries.share).floor())
            .collect();
        for (k, &i) in chosen.iter().enumerate() {
            let behaviours = adversaries
                .behaviours
                .iter()
                .enumerate()
                .filter(|(j, _)| j % chosen.len() == k)
                .map(|(_, b)| *b)
                .collect::<Vec<_>>();
            let behaviours = if behaviours.is_empty() {
                vec![adversaries.behaviours[k % adversaries.behaviours.len()]]
            } else {
                behaviours
            };
            plan[i].adversary = Some(behaviours);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(churn: f64) -> Scenario {
        toml::from_str(&format!(
            r#"
            name = "t"
            seed = 7
            protocol = "tree-mesh"
            viewers = 50
            duration_s = 180
            join_window_s = 20
            churn_per_min = {churn}
            bitrate_kbps = 1000
            segment_s = 2.0
            latency_ms = [0, 1]
            origin_mbps = 1000
            broadcaster_upload_x = 10
            download_x = 10
            upload = [{{ share = 0.2, x = 0.5 }}, {{ share = 0.5, x = 1.5 }}, {{ share = 0.3, x = 6.0 }}]
            "#
        ))
        .unwrap()
    }

    #[test]
    fn without_churn_everyone_arrives_in_the_window_and_stays() {
        let plan = plan(&scenario(0.0));
        assert_eq!(plan.len(), 50);
        assert!(
            plan.iter()
                .all(|a| (4.0..=24.0).contains(&a.at_s) && a.leave_s.is_none())
        );
        assert!(plan.windows(2).all(|w| w[0].at_s <= w[1].at_s));
        // Each class is drawn about as often as its share says.
        let fibre = plan.iter().filter(|a| a.upload_x == 6.0).count();
        assert!((8..=22).contains(&fibre), "{fibre} of 50 in the 30 % class");
    }

    #[test]
    fn churn_replaces_leavers_and_the_plan_is_reproducible() {
        let s = scenario(0.2);
        let plan = plan(&s);
        assert_eq!(plan, super::plan(&s), "the same seed gives the same plan");
        let leaves = plan.iter().filter(|a| a.leave_s.is_some()).count();
        // About 0.2 × 50 per minute over about 2.8 minutes.
        assert!((10..=50).contains(&leaves), "{leaves} leaves");
        assert_eq!(plan.len(), 50 + leaves, "every leaver is replaced");
        for a in &plan {
            if let Some(leave) = a.leave_s {
                assert!(
                    plan.iter().any(|b| b.at_s == leave),
                    "a joiner replaces the leaver at {leave}"
                );
            }
        }
    }
}
