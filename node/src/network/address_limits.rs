//! A limit on inbound connections per remote IP address, which libp2p's `connection_limits` does not have: one
//! machine can make up any number of peer ids, but not of addresses, so a crowd of identities behind one address
//! (a connection flood, a Sybil swarm) gets only a household's share of this node's connections.
//!
//! Pending and established inbound connections both count, so a flood is refused before any handshake. The
//! loopback addresses `127.0.0.1` and `::1` are exempt: a local testnet runs every node on one (the rest of
//! `127.0.0.0/8` is not, so a test can flood from `127.0.0.2`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::PortUse;
use libp2p::swarm::behaviour::{ConnectionEstablished, ListenFailure};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Why an inbound connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("already {open} inbound connections from {address}, the most one address may have")]
pub(crate) struct TooManyFromAddress {
    address: IpAddr,
    open: u32,
}

/// Counts inbound connections by remote address and refuses those beyond the limit.
pub(crate) struct Behaviour {
    limit: u32,
    by_address: HashMap<IpAddr, u32>,
    /// The address each counted connection holds a place of.
    connections: HashMap<ConnectionId, IpAddr>,
}

impl Behaviour {
    /// At most `limit` inbound connections from one non-loopback address.
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit,
            by_address: HashMap::new(),
            connections: HashMap::new(),
        }
    }

    fn release(&mut self, connection: ConnectionId) {
        let Some(address) = self.connections.remove(&connection) else {
            return;
        };
        if let Some(open) = self.by_address.get_mut(&address) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.by_address.remove(&address);
            }
        }
    }
}

/// Whether connections from `ip` are not counted: this host's own loopback address, where local testnets run.
fn exempt(ip: &IpAddr) -> bool {
    *ip == IpAddr::from([127, 0, 0, 1]) || *ip == IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
}

/// The IP address a multiaddr starts with.
fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    match address.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(address) = ip_of(remote).filter(|ip| !exempt(ip)) else {
            return Ok(());
        };
        let open = self.by_address.entry(address).or_default();
        if *open >= self.limit {
            return Err(ConnectionDenied::new(TooManyFromAddress { address, open: *open }));
        }
        *open += 1;
        self.connections.insert(connection, address);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => self.release(connection_id),
            // An established connection keeps the place its pending one took.
            FromSwarm::ConnectionEstablished(ConnectionEstablished { .. }) => {}
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(ip: &str) -> Multiaddr {
        format!("/ip4/{ip}/tcp/4100").parse().unwrap()
    }

    #[test]
    fn an_address_gets_its_limit_and_loopback_any() {
        let mut limits = Behaviour::new(2);
        let local = remote("192.0.2.1");
        let ids: Vec<ConnectionId> = (0..4).map(ConnectionId::new_unchecked).collect();
        assert!(
            limits
                .handle_pending_inbound_connection(ids[0], &local, &remote("203.0.113.9"))
                .is_ok()
        );
        assert!(
            limits
                .handle_pending_inbound_connection(ids[1], &local, &remote("203.0.113.9"))
                .is_ok()
        );
        let refused = limits
            .handle_pending_inbound_connection(ids[2], &local, &remote("203.0.113.9"))
            .unwrap_err();
        let reason = refused
            .downcast_ref::<TooManyFromAddress>()
            .expect("refused by the address limit");
        assert!(reason.to_string().contains("203.0.113.9"), "{reason}");
        // Another address is not held up; this host's loopback address never is (but the rest of 127/8 is).
        assert!(
            limits
                .handle_pending_inbound_connection(ids[2], &local, &remote("203.0.113.10"))
                .is_ok()
        );
        for i in 10..20 {
            let id = ConnectionId::new_unchecked(i);
            assert!(
                limits
                    .handle_pending_inbound_connection(id, &local, &remote("127.0.0.1"))
                    .is_ok()
            );
        }
        for i in 30..32 {
            let id = ConnectionId::new_unchecked(i);
            assert!(
                limits
                    .handle_pending_inbound_connection(id, &local, &remote("127.0.0.2"))
                    .is_ok()
            );
        }
        let id = ConnectionId::new_unchecked(32);
        assert!(
            limits
                .handle_pending_inbound_connection(id, &local, &remote("127.0.0.2"))
                .is_err()
        );
        // A connection that closes gives its place back.
        limits.release(ids[0]);
        assert!(
            limits
                .handle_pending_inbound_connection(ids[3], &local, &remote("203.0.113.9"))
                .is_ok()
        );
    }
}
