//! Starting a node, and the handle through which code talks to it.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, kad};
use streamrp2p_protocols::manifest::ManifestError;
use streamrp2p_protocols::segment::SegmentError;
use streamrp2p_protocols::stream::{StreamId, StreamInfoError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{DhtMode, NodeConfig};
use crate::identity::{self, IdentityError};
use crate::metrics::Metrics;
use crate::network::{self, BuildError};
use crate::policy::{self, Policy, PolicyError};
use crate::service::{Command, Service};
use crate::status::{self, Status};
use crate::store::Store;
use crate::throttle::UploadLimiter;

/// Commands waiting for the event loop; callers wait when it is full.
const COMMAND_QUEUE: usize = 64;
/// Events kept for slow subscribers before they start missing some.
const EVENT_QUEUE: usize = 1024;
/// How long `start` waits for the listeners to come up.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// State the event loop shares with the gateway and the handles.
pub(crate) struct Shared {
    pub(crate) store: RwLock<Store>,
    pub(crate) metrics: Metrics,
    pub(crate) peer_id: PeerId,
    pub(crate) listen_addrs: RwLock<Vec<Multiaddr>>,
    pub(crate) http_addr: Option<SocketAddr>,
    /// The owner's resource policy in force; the event loop subscribes to re-plan when it changes. Changed only
    /// through [`crate::policy::change`], which keeps `upload_limiter` in step.
    pub(crate) policy: watch::Sender<Policy>,
    /// The upload limit ([`Policy::upload_limit`]) every outgoing payload stream awaits.
    pub(crate) upload_limiter: Arc<UploadLimiter>,
    /// The worst offenders, as the peer manager last published them.
    pub(crate) penalties: RwLock<Vec<crate::peer_manager::PenaltyView>>,
}

/// Why a node could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The identity key could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The Swarm could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The node never started listening.
    #[error("the node did not start listening within {0:?}")]
    NotListening(Duration),
    /// The HTTP gateway could not bind its address.
    #[error("cannot serve HTTP on {addr}: {reason} (is another node using it? pick another with --http)")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: std::io::Error,
    },
    /// A bootstrap address lacks the peer id.
    #[error("bootstrap address {0} must end in /p2p/<peer id>")]
    Bootstrap(Multiaddr),
    /// The stream is not one this node broadcasts.
    #[error("this node does not broadcast stream {0}")]
    NotBroadcasting(StreamId),
    /// The stream's name or origin is invalid.
    #[error(transparent)]
    StreamInfo(#[from] StreamInfoError),
    /// The segment cannot be published.
    #[error("cannot publish segment: {0}")]
    Segment(#[from] SegmentError),
    /// The manifest entry could not be signed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The configured resource policy is invalid.
    #[error("invalid resource policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    /// The node's event loop has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// Something that happened on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A segment was published, or fetched whole and verified, and is now served.
    SegmentReady {
        /// The stream.
        stream: StreamId,
        /// The segment's sequence number.
        seq: u64,
        /// Its size in bytes.
        size: u64,
    },
}

/// A StreamrP2P node.
pub struct Node;

impl Node {
    /// Starts a node: loads or creates its identity, builds the Swarm, listens, dials the bootstrap peers and starts
    /// the HTTP gateway. Returns once the node is listening.
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
        let keypair = match &config.data_dir {
            Some(dir) => identity::load_or_create(dir)?,
            None => Keypair::generate_ed25519(),
        };
        Self::start_with_identity(config, keypair).await
    }

    /// Starts a node with the given identity (see [`Node::start`]).
    pub async fn start_with_identity(config: NodeConfig, keypair: Keypair) -> Result<NodeHandle, NodeError> {
        let peer_id = keypair.public().to_peer_id();
        config.policy.validate()?;
        let limiter = Arc::new(UploadLimiter::new(config.policy.upload_limit()));
        let mut metrics = Metrics::new();
        let mut swarm = network::build_swarm(keypair.clone(), &config, limiter.clone(), metrics.registry_mut())?;

        let loopback_only = !config.listen.is_empty() && config.listen.iter().all(is_loopback);
        match config.dht {
            DhtMode::Server => swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server)),
            DhtMode::Client => swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Client)),
            DhtMode::Auto if loopback_only || !config.external.is_empty() => {
                swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
            }
            DhtMode::Auto => {}
        }
        for addr in &config.external {
            swarm.add_external_address(addr.clone());
        }
        for addr in &config.listen {
            swarm.listen_on(addr.clone()).map_err(|e| NodeError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        }
        for addr in &config.bootstrap {
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                return Err(NodeError::Bootstrap(addr.clone()));
            };
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            if let Err(error) = swarm.dial(addr.clone()) {
                tracing::warn!(%addr, %error, "cannot dial bootstrap peer");
            }
        }
        if !config.bootstrap.is_empty() {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }

        let listener = match config.http {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|reason| NodeError::Http { addr, reason })?,
            ),
            None => None,
        };
        let http_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let shared = Arc::new(Shared {
            store: RwLock::new(Store::new(config.live_window, config.max_stream_bytes)),
            metrics,
            peer_id,
            listen_addrs: RwLock::new(Vec::new()),
            http_addr,
            policy: watch::Sender::new(config.policy),
            upload_limiter: limiter,
            penalties: RwLock::new(Vec::new()),
        });
        let gateway = listener.map(|listener| {
            let router = crate::gateway::router(shared.clone());
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "HTTP gateway stopped");
                }
            })
        });

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| BuildError::Behaviour(format!("HTTP client: {e}")))?;
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let service = Service::new(
            swarm,
            keypair,
            config.clone(),
            shared.clone(),
            commands_rx,
            events.clone(),
            http,
            loopback_only,
        );
        let task = tokio::spawn(service.run());

        let handle = NodeHandle {
            commands: commands_tx,
            shared,
            events,
            tasks: Arc::new(Tasks { service: task, gateway }),
        };
        handle.wait_listening(config.listen.len()).await?;
        Ok(handle)
    }
}

fn is_loopback(addr: &Multiaddr) -> bool {
    matches!(addr.iter().next(), Some(Protocol::Ip4(ip)) if ip.is_loopback())
        || matches!(addr.iter().next(), Some(Protocol::Ip6(ip)) if ip.is_loopback())
}

struct Tasks {
    service: JoinHandle<()>,
    gateway: Option<JoinHandle<()>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.service.abort();
        if let Some(g) = &self.gateway {
            g.abort();
        }
    }
}

/// A handle to a running node; cheap to clone. The node stops when the last handle is dropped.
#[derive(Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    events: broadcast::Sender<NodeEvent>,
    tasks: Arc<Tasks>,
}

impl NodeHandle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The gateway's address, if it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.shared.http_addr
    }

    /// Addresses others can dial, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared.listen_addrs.read().expect("listen lock").clone()
    }

    /// The node's status, as `GET /api/status` reports it.
    pub fn status(&self) -> Status {
        status::status(&self.shared)
    }

    /// The resource policy in force, as `GET /api/policy` reports it.
    pub fn policy(&self) -> Policy {
        *self.shared.policy.borrow()
    }

    /// Puts a new resource policy in force at once: the upload limit changes immediately, and the node re-plans
    /// what it serves. An invalid policy is refused and the one in force stays.
    pub fn set_policy(&self, policy: Policy) -> Result<(), PolicyError> {
        policy::change(&self.shared, |_| policy).map(|_| ())
    }

    /// Events from now on. A receiver that falls more than 1024 events behind misses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// A whole segment this node holds.
    pub fn segment(&self, stream: StreamId, seq: u64) -> Option<Bytes> {
        let store = self.shared.store.read().expect("store lock");
        store.stream(&stream)?.segments.get(&seq).map(|s| s.data.clone())
    }

    /// Starts broadcasting the stream `name` of this node's key and returns its id. `origin` is the HTTP base URL
    /// viewers fall back to (segment `seq` at `{origin}/{seq}.ts`); by default, this node's own gateway.
    pub async fn broadcast(&self, name: &str, origin: Option<String>) -> Result<StreamId, NodeError> {
        self.ask(|reply| Command::Broadcast {
            name: name.to_owned(),
            origin,
            reply,
        })
        .await?
    }

    /// Publishes the next segment of a stream this node broadcasts; returns its sequence number. `discontinuity`
    /// marks a new timeline (the source restarted or looped).
    pub async fn publish(
        &self,
        stream: StreamId,
        data: Bytes,
        duration: Duration,
        discontinuity: bool,
    ) -> Result<u64, NodeError> {
        self.ask(|reply| Command::Publish {
            stream,
            data,
            duration,
            discontinuity,
            reply,
        })
        .await?
    }

    /// Starts watching a stream: finds it through the DHT, fetches it from its live edge on, and serves it.
    pub async fn watch(&self, stream: StreamId) -> Result<(), NodeError> {
        self.ask(|reply| Command::Watch { stream, reply }).await?
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(command(tx)).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    async fn wait_listening(&self, expected: usize) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        loop {
            let have = self.shared.listen_addrs.read().expect("listen lock").len();
            // A listener on all interfaces reports one address per interface: at least `expected` in all.
            if have >= expected.max(1) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return if have > 0 {
                    Ok(())
                } else {
                    Err(NodeError::NotListening(LISTEN_TIMEOUT))
                };
            }
            if self.tasks.service.is_finished() {
                return Err(NodeError::Stopped);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
