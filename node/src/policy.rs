//! The owner's resource policy: how much the node may upload, and when not at all.
//!
//! Set from the command line or config file ([`crate::NodeConfig::policy`]), changed at runtime through
//! [`crate::NodeHandle::set_policy`] or `POST /api/policy` with a [`PolicyUpdate`].

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use streamrp2p_protocols::treemesh;

use crate::Shared;

/// What the owner of a node allows it to spend. `Policy::default()`: no cap, not metered, not background, no ratio.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Upper bound on upload, in kbit/s (1 kbit = 1000 bits). `None`: the node's upload capacity
    /// ([`crate::NodeConfig::upload_capacity_kbps`]).
    pub max_upload_kbps: Option<f64>,
    /// Metered network (cellular data): upload nothing at all, only watch.
    pub metered: bool,
    /// Background mode (a phone with the screen off): a quarter of the upload budget
    /// ([`treemesh::BACKGROUND_SHARE`]), never in the stream's backbone.
    pub background: bool,
    /// Stop serving once uploaded bytes exceed this multiple of downloaded bytes. `None`: no limit.
    pub max_ratio: Option<f64>,
}

/// Why a [`Policy`] was refused. The value refused is shown as Rust's `{:?}` writes it, so that 1e-300 reads as such
/// and not as 300 zeros.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The upload cap is outside [`Policy::MIN_UPLOAD_KBPS`]..=[`Policy::MAX_UPLOAD_KBPS`] or not a number.
    #[error(
        "max_upload_kbps must be between {min} and {max} kbit/s, not {0:?}; to upload nothing set metered, to remove \
         the cap pass null (or leave the option out)",
        min = Policy::MIN_UPLOAD_KBPS,
        max = Policy::MAX_UPLOAD_KBPS
    )]
    MaxUpload(f64),
    /// The ratio is outside [`Policy::MIN_RATIO`]..=[`Policy::MAX_RATIO`] or not a number.
    #[error(
        "max_ratio must be between {min} and {max} (e.g. 1.0: upload as much as you download), not {0:?}; to upload \
         nothing set metered, to remove the limit pass null (or leave the option out)",
        min = Policy::MIN_RATIO,
        max = Policy::MAX_RATIO
    )]
    MaxRatio(f64),
}

/// `value` is absent, or a number in `min..=max` (NaN never is).
fn within(value: Option<f64>, min: f64, max: f64) -> bool {
    value.is_none_or(|v| (min..=max).contains(&v))
}

impl Policy {
    /// Smallest upload cap, kbit/s. A 64 KiB block takes about 9 minutes at 1 kbit/s, so a lower cap serves nobody
    /// in time; to upload nothing there is `metered`. A floor also keeps the upload limiter's waits (bytes / rate)
    /// far from the overflow a rate like 1e-300 caused.
    pub const MIN_UPLOAD_KBPS: f64 = 1.0;
    /// Largest upload cap, kbit/s: 10^9 kbit/s is 1 Tbit/s, far above any uplink; a larger number is a typo, and
    /// no cap at all is `null`.
    pub const MAX_UPLOAD_KBPS: f64 = 1e9;
    /// Smallest ratio: 0.01, upload one byte for every hundred downloaded. Below that a node serves next to nothing
    /// for its trouble; to upload nothing there is `metered`.
    pub const MIN_RATIO: f64 = 0.01;
    /// Largest ratio: 10^6, a million bytes up for each one down — no limit in practice; a larger number is a typo,
    /// and no limit at all is `null`.
    pub const MAX_RATIO: f64 = 1e6;

    /// Checks that the cap and the ratio, when set, are numbers in their ranges: the cap from
    /// [`Policy::MIN_UPLOAD_KBPS`] to [`Policy::MAX_UPLOAD_KBPS`], the ratio from [`Policy::MIN_RATIO`] to
    /// [`Policy::MAX_RATIO`], both inclusive.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !within(self.max_upload_kbps, Self::MIN_UPLOAD_KBPS, Self::MAX_UPLOAD_KBPS) {
            return Err(PolicyError::MaxUpload(self.max_upload_kbps.unwrap_or_default()));
        }
        if !within(self.max_ratio, Self::MIN_RATIO, Self::MAX_RATIO) {
            return Err(PolicyError::MaxRatio(self.max_ratio.unwrap_or_default()));
        }
        Ok(())
    }

    /// The policy a phone app should start with, before it knows which network it is on.
    ///
    /// - `metered`: until the app learns it is on Wi-Fi, assume cellular data, which its owner pays for by the
    ///   byte; the app clears `metered` on Wi-Fi (and sets it again when it falls back to cellular).
    /// - `background: false`: the app starts in the foreground; it sets `background` when the screen goes off, so
    ///   the phone keeps a quarter of its budget and never carries part of the backbone it could drop at any time.
    /// - `max_upload_kbps: 2000`: once on Wi-Fi, at most 2 Mbit/s, about one 720p stream's worth (one child), a
    ///   small part of a home uplink, and a load a phone's radio and battery carry for hours.
    /// - `max_ratio: 1.0`: upload no more than it downloads — a fair share, and a bound on battery and data use
    ///   whatever the cap.
    pub fn phone() -> Self {
        Self {
            max_upload_kbps: Some(2000.0),
            metered: true,
            background: false,
            max_ratio: Some(1.0),
        }
    }

    /// The same policy as the tree-mesh takes it: its cap in bytes per second.
    pub fn to_treemesh(&self) -> treemesh::Policy {
        treemesh::Policy {
            max_upload: self.max_upload_kbps.map(kbps_to_bytes),
            metered: self.metered,
            background: self.background,
            max_ratio: self.max_ratio,
        }
    }

    /// The byte rate the upload limiter enforces: 0 when metered; the cap in bytes per second, times
    /// [`treemesh::BACKGROUND_SHARE`] in background; `None` without a cap (in background too: the tree-mesh already
    /// plans with a quarter of the capacity).
    pub fn upload_limit(&self) -> Option<f64> {
        if self.metered {
            return Some(0.0);
        }
        let cap = kbps_to_bytes(self.max_upload_kbps?);
        Some(if self.background {
            cap * treemesh::BACKGROUND_SHARE
        } else {
            cap
        })
    }

    /// This policy with the fields `update` sets replaced.
    pub fn apply(&self, update: &PolicyUpdate) -> Policy {
        Policy {
            max_upload_kbps: update.max_upload_kbps.unwrap_or(self.max_upload_kbps),
            metered: update.metered.unwrap_or(self.metered),
            background: update.background.unwrap_or(self.background),
            max_ratio: update.max_ratio.unwrap_or(self.max_ratio),
        }
    }
}

/// Puts `change(policy in force)` in force if it is valid: on the watch the event loop re-plans from, and on the
/// upload limiter, both under the watch's lock so that concurrent changes cannot leave them disagreeing or lose one
/// another's fields. Subscribers are told only when the policy actually changed. Returns the policy now in force.
pub(crate) fn change(shared: &Shared, change: impl FnOnce(&Policy) -> Policy) -> Result<Policy, PolicyError> {
    let mut outcome = Ok(Policy::default());
    shared.policy.send_if_modified(|policy| {
        let new = change(policy);
        if let Err(error) = new.validate() {
            outcome = Err(error);
            return false;
        }
        outcome = Ok(new);
        if new == *policy {
            return false;
        }
        *policy = new;
        shared.upload_limiter.set_rate(new.upload_limit());
        true
    });
    outcome
}

/// kbit/s (1000 bits) to bytes per second.
pub(crate) fn kbps_to_bytes(kbps: f64) -> f64 {
    kbps * 1000.0 / 8.0
}

/// A change to some fields of a [`Policy`], the body of `POST /api/policy`. A field left out keeps its value; for
/// the two limits, an explicit `null` removes the limit.
///
/// ```
/// # use streamrp2p_node::{Policy, PolicyUpdate};
/// let update: PolicyUpdate = serde_json::from_str(r#"{"max_upload_kbps": null, "background": true}"#).unwrap();
/// let policy = Policy { max_upload_kbps: Some(500.0), ..Policy::default() }.apply(&update);
/// assert_eq!(policy, Policy { background: true, ..Policy::default() });
/// ```
///
/// Only a JSON object is an update: serde's derived `Deserialize` would also take an array of the fields in order,
/// where a stray `[null]` removes the cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PolicyUpdate {
    /// `Some(None)`: remove the cap; `Some(Some(kbps))`: set it; `None`: keep it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_kbps: Option<Option<f64>>,
    /// New `metered`, or keep it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metered: Option<bool>,
    /// New `background`, or keep it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    /// `Some(None)`: remove the ratio limit; `Some(Some(r))`: set it; `None`: keep it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<Option<f64>>,
}

impl<'de> Deserialize<'de> for PolicyUpdate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectOnly)
    }
}

/// The fields of a [`PolicyUpdate`], read by serde's derive, which refuses unknown and repeated fields. It is only
/// ever handed a map, by [`ObjectOnly`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateFields {
    #[serde(default, deserialize_with = "present")]
    max_upload_kbps: Option<Option<f64>>,
    #[serde(default)]
    metered: Option<bool>,
    #[serde(default)]
    background: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    max_ratio: Option<Option<f64>>,
}

/// Reads a [`PolicyUpdate`] from a map (a JSON object) and from nothing else.
struct ObjectOnly;

impl<'de> Visitor<'de> for ObjectOnly {
    type Value = PolicyUpdate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with any of max_upload_kbps, metered, background and max_ratio")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PolicyUpdate, A::Error> {
        let fields = UpdateFields::deserialize(MapAccessDeserializer::new(map))?;
        Ok(PolicyUpdate {
            max_upload_kbps: fields.max_upload_kbps,
            metered: fields.metered,
            background: fields.background,
            max_ratio: fields.max_ratio,
        })
    }
}

/// A field that is present, `null` or not: `Some(value)`. With `#[serde(default)]`, an absent field is `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_unrestricted_and_valid() {
        let p = Policy::default();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.upload_limit(), None);
        assert_eq!(p.to_treemesh(), treemesh::Policy::default());
    }

    #[test]
    fn validate_refuses_zero_negative_and_nan() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let p = Policy {
                max_upload_kbps: Some(bad),
                ..Policy::default()
            };
            assert!(matches!(p.validate(), Err(PolicyError::MaxUpload(_))), "{bad}");
            let p = Policy {
                max_ratio: Some(bad),
                ..Policy::default()
            };
            assert!(matches!(p.validate(), Err(PolicyError::MaxRatio(_))), "{bad}");
        }
        let message = Policy {
            max_upload_kbps: Some(0.0),
            ..Policy::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(message.contains("metered"), "{message}");
    }

    #[test]
    fn validate_refuses_caps_and_ratios_out_of_range() {
        let cap = |kbps| Policy {
            max_upload_kbps: Some(kbps),
            ..Policy::default()
        };
        let ratio = |r| Policy {
            max_ratio: Some(r),
            ..Policy::default()
        };
        for bad in [
            1e-300,
            5e-324,
            f64::MIN_POSITIVE,
            0.999,
            1e9 + 1.0,
            1e300,
            f64::MAX,
            -0.0,
        ] {
            assert_eq!(cap(bad).validate(), Err(PolicyError::MaxUpload(bad)), "{bad:e}");
        }
        for good in [1.0, 1.5, 2000.0, 1e9] {
            assert_eq!(cap(good).validate(), Ok(()), "{good:e}");
        }
        for bad in [1e-300, 5e-324, 0.0099, 1e6 + 1.0, 1e300, f64::MAX] {
            assert_eq!(ratio(bad).validate(), Err(PolicyError::MaxRatio(bad)), "{bad:e}");
        }
        for good in [0.01, 0.5, 1.0, 1e6] {
            assert_eq!(ratio(good).validate(), Ok(()), "{good:e}");
        }
    }

    #[test]
    fn messages_state_the_range_and_the_value_as_written() {
        let message = PolicyError::MaxUpload(1e-300).to_string();
        assert!(
            message.starts_with("max_upload_kbps must be between 1 and 1000000000 kbit/s, not 1e-300; "),
            "{message}"
        );
        assert!(message.contains("metered") && message.contains("null"), "{message}");
        let message = PolicyError::MaxRatio(1e300).to_string();
        assert!(
            message.starts_with("max_ratio must be between 0.01 and 1000000 "),
            "{message}"
        );
        assert!(message.contains("not 1e300;"), "{message}");
    }

    #[test]
    fn the_slowest_valid_cap_gives_waits_a_duration_holds() {
        // What the upload limiter divides by: a 64 KiB block at the smallest cap, in background.
        let slowest = Policy {
            max_upload_kbps: Some(Policy::MIN_UPLOAD_KBPS),
            background: true,
            ..Policy::default()
        };
        let rate = slowest.upload_limit().unwrap();
        let wait = std::time::Duration::try_from_secs_f64(65_536.0 / rate).unwrap();
        assert!(wait < std::time::Duration::from_secs(3600), "{wait:?}");
    }

    #[test]
    fn phone_is_valid_and_metered() {
        let p = Policy::phone();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.upload_limit(), Some(0.0));
    }

    #[test]
    fn upload_limit_converts_and_shares() {
        let p = Policy {
            max_upload_kbps: Some(8000.0),
            ..Policy::default()
        };
        assert_eq!(p.upload_limit(), Some(1_000_000.0));
        assert_eq!(p.to_treemesh().max_upload, Some(1_000_000.0));
        let bg = Policy { background: true, ..p };
        assert_eq!(bg.upload_limit(), Some(1_000_000.0 * treemesh::BACKGROUND_SHARE));
        let bg_uncapped = Policy {
            background: true,
            ..Policy::default()
        };
        assert_eq!(bg_uncapped.upload_limit(), None);
        let metered = Policy { metered: true, ..p };
        assert_eq!(metered.upload_limit(), Some(0.0));
    }

    #[test]
    fn update_absent_keeps_null_clears_value_sets() {
        let base = Policy {
            max_upload_kbps: Some(500.0),
            metered: false,
            background: true,
            max_ratio: Some(2.0),
        };
        let keep: PolicyUpdate = serde_json::from_str("{}").unwrap();
        assert_eq!(base.apply(&keep), base);
        let clear: PolicyUpdate = serde_json::from_str(r#"{"max_upload_kbps": null, "max_ratio": null}"#).unwrap();
        assert_eq!(
            base.apply(&clear),
            Policy {
                max_upload_kbps: None,
                max_ratio: None,
                ..base
            }
        );
        let set: PolicyUpdate = serde_json::from_str(r#"{"max_ratio": 1.5, "metered": true}"#).unwrap();
        assert_eq!(
            base.apply(&set),
            Policy {
                max_ratio: Some(1.5),
                metered: true,
                ..base
            }
        );
        assert!(serde_json::from_str::<PolicyUpdate>(r#"{"max_upload": 1}"#).is_err());
        assert!(serde_json::from_str::<PolicyUpdate>(r#"{"metered": "yes"}"#).is_err());
    }

    #[test]
    fn an_update_is_an_object_and_nothing_else() {
        for body in ["[]", "[null, true]", "null", "true", "1", r#""metered""#] {
            let error = serde_json::from_str::<PolicyUpdate>(body).unwrap_err().to_string();
            assert!(error.contains("expected a JSON object with any of"), "{body}: {error}");
        }
        let error = serde_json::from_str::<PolicyUpdate>(r#"{"metered": true, "metered": false}"#).unwrap_err();
        assert!(error.to_string().contains("duplicate field `metered`"), "{error}");
        let update = PolicyUpdate {
            max_upload_kbps: Some(None),
            metered: Some(true),
            ..PolicyUpdate::default()
        };
        let json = serde_json::to_string(&update).unwrap();
        assert_eq!(json, r#"{"max_upload_kbps":null,"metered":true}"#);
        assert_eq!(serde_json::from_str::<PolicyUpdate>(&json).unwrap(), update);
    }
}
