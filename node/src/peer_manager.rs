//! Bans, in one place: a peer that sends bad data is disconnected and refused for a while.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Which peers are banned and until when.
#[derive(Debug)]
pub(crate) struct PeerManager {
    banned: HashMap<PeerId, Instant>,
    ban_duration: Duration,
}

impl PeerManager {
    pub(crate) fn new(ban_duration: Duration) -> Self {
        Self {
            banned: HashMap::new(),
            ban_duration,
        }
    }

    /// Bans `peer` from `now`. Returns whether it was not banned already.
    pub(crate) fn ban(&mut self, peer: PeerId, now: Instant) -> bool {
        self.banned.insert(peer, now + self.ban_duration).is_none()
    }

    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.contains_key(peer)
    }

    /// Lifts the bans that have run out, returning those peers.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let expired: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in &expired {
            self.banned.remove(peer);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_expire() {
        let mut pm = PeerManager::new(Duration::from_secs(10));
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert!(pm.ban(peer, t0));
        assert!(!pm.ban(peer, t0));
        assert!(pm.is_banned(&peer));
        assert!(pm.expire(t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(pm.expire(t0 + Duration::from_secs(10)), vec![peer]);
        assert!(!pm.is_banned(&peer));
    }
}
