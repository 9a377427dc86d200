//! The owner's resource policy: how much the node may upload, and when not at all.
//!
//! Set from the command line or config file ([`crate::NodeConfig::policy`]), changed at runtime through
//! [`crate::NodeHandle::set_policy`] or `POST /api/policy` with a [`PolicyUpdate`].

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

/// Why a [`Policy`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The upload cap is zero, negative or not a number.
    #[error(
        "max_upload_kbps must be a finite number of kbit/s above 0, not {0}; to upload nothing set metered, to remove \
         the cap pass null (or leave the option out)"
    )]
    MaxUpload(f64),
    /// The ratio is zero, negative or not a number.
    #[error(
        "max_ratio must be a finite number above 0 (e.g. 1.0: upload as much as you download), not {0}; to upload \
         nothing set metered, to remove the limit pass null (or leave the option out)"
    )]
    MaxRatio(f64),
}

fn positive(value: Option<f64>) -> bool {
    value.is_none_or(|v| v.is_finite() && v > 0.0)
}

impl Policy {
    /// Checks that the cap and the ratio, when set, are finite and above zero.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !positive(self.max_upload_kbps) {
            return Err(PolicyError::MaxUpload(self.max_upload_kbps.unwrap_or_default()));
        }
        if !positive(self.max_ratio) {
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    /// `Some(None)`: remove the cap; `Some(Some(kbps))`: set it; `None`: keep it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub max_upload_kbps: Option<Option<f64>>,
    /// New `metered`, or keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metered: Option<bool>,
    /// New `background`, or keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    /// `Some(None)`: remove the ratio limit; `Some(Some(r))`: set it; `None`: keep it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<Option<f64>>,
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
}
