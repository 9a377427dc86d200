//! A flow-level network model: transfers share their endpoints' capacity, with no packets simulated.
//!
//! Every node has an upload and a download capacity (bytes per virtual second). A transfer (a flow) from `src` to
//! `dst` gets `min(up[src] / flows leaving src, down[dst] / flows entering dst)`: each endpoint shares its capacity
//! equally among its flows, and a flow runs at its tighter endpoint's share. That is the standard approximation of
//! flow-level P2P simulators (it is max-min fair when each flow's bottleneck is its sender's or receiver's own link,
//! and slightly pessimistic otherwise: capacity a flow cannot use at one end is not handed to its siblings).
//!
//! Rates change only when a flow starts or ends, and only for flows that share an endpoint with it, so each change
//! costs O(flows at the two endpoints). The model does not own the clock or the event queue: each call takes the
//! virtual time `now` and returns [`Completion`]s, the new completion times of the flows whose rates changed. A
//! completion carries a version; when a flow's rate changes again, its old completion is stale and
//! [`Network::finish`] ignores it, so the simulator never needs to remove events from its queue.
//!
//! Latency is the simulator's business (it delays the start of a flow and the delivery after it), and so is
//! reachability (a NAT-ed node's inbound connections).

/// A node of the network.
pub type NodeId = usize;

/// A transfer in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(usize);

/// When a flow will finish at its current rate. Valid until the flow's rate changes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Completion {
    /// The flow.
    pub flow: FlowId,
    /// Virtual time of completion; infinite when the flow cannot progress (an endpoint has zero capacity).
    pub at: f64,
    /// Which rate assignment this completion belongs to.
    pub version: u64,
}

/// A flow that finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The sender.
    pub src: NodeId,
    /// The receiver.
    pub dst: NodeId,
    /// Bytes moved.
    pub bytes: u64,
    /// What the simulator attached to the flow when it started.
    pub tag: u64,
}

#[derive(Clone, Debug)]
struct Flow {
    src: NodeId,
    dst: NodeId,
    bytes: u64,
    remaining: f64,
    rate: f64,
    since: f64,
    version: u64,
    tag: u64,
}

#[derive(Clone, Debug, Default)]
struct Link {
    up: f64,
    down: f64,
    outgoing: Vec<FlowId>,
    incoming: Vec<FlowId>,
}

/// The network: nodes with capacities, and the flows between them.
#[derive(Clone, Debug, Default)]
pub struct Network {
    links: Vec<Link>,
    flows: Vec<Option<Flow>>,
    free: Vec<usize>,
    next_version: u64,
}

impl Network {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node with these capacities in bytes per second.
    pub fn add_node(&mut self, up: f64, down: f64) -> NodeId {
        self.links.push(Link {
            up: up.max(0.0),
            down: down.max(0.0),
            ..Link::default()
        });
        self.links.len() - 1
    }

    /// Flows in progress.
    pub fn active_flows(&self) -> usize {
        self.flows.len() - self.free.len()
    }

    /// Flows leaving `node`.
    pub fn uploads(&self, node: NodeId) -> usize {
        self.links[node].outgoing.len()
    }

    /// Flows entering `node`.
    pub fn downloads(&self, node: NodeId) -> usize {
        self.links[node].incoming.len()
    }

    /// Starts moving `bytes` from `src` to `dst` at `now`. `tag` comes back when the flow finishes. Returns the flow
    /// and the completions of every flow whose rate changed, the new one among them.
    pub fn start(&mut self, now: f64, src: NodeId, dst: NodeId, bytes: u64, tag: u64) -> (FlowId, Vec<Completion>) {
        self.settle(now, src, dst);
        let flow = Flow {
            src,
            dst,
            bytes,
            remaining: bytes as f64,
            rate: 0.0,
            since: now,
            version: 0,
            tag,
        };
        let id = match self.free.pop() {
            Some(slot) => {
                self.flows[slot] = Some(flow);
                FlowId(slot)
            }
            None => {
                self.flows.push(Some(flow));
                FlowId(self.flows.len() - 1)
            }
        };
        self.links[src].outgoing.push(id);
        self.links[dst].incoming.push(id);
        (id, self.rerate(now, src, dst))
    }

    /// Finishes the flow of `completion` when it is still current; a stale completion (the flow's rate changed
    /// since, or it was cancelled) gives `None`. Also returns the completions of flows that speed up.
    pub fn finish(&mut self, now: f64, completion: Completion) -> Option<(Finished, Vec<Completion>)> {
        let flow = self.flows.get(completion.flow.0)?.as_ref()?;
        if flow.version != completion.version {
            return None;
        }
        let finished = Finished {
            src: flow.src,
            dst: flow.dst,
            bytes: flow.bytes,
            tag: flow.tag,
        };
        let changed = self.remove(now, completion.flow);
        Some((finished, changed))
    }

    /// Stops a flow before it finishes (its receiver left or gave up). Returns the bytes it had moved and the
    /// completions of flows that speed up; `None` if the flow had already ended.
    pub fn cancel(&mut self, now: f64, flow: FlowId) -> Option<(u64, Vec<Completion>)> {
        let f = self.flows.get(flow.0)?.as_ref()?;
        let (src, dst) = (f.src, f.dst);
        self.settle(now, src, dst);
        let f = self.flows[flow.0].as_ref().expect("checked above");
        let moved = (f.bytes as f64 - f.remaining).max(0.0) as u64;
        Some((moved, self.remove(now, flow)))
    }

    /// Every flow of `node`, in and out, with their tags, for cancelling when the node leaves.
    pub fn flows_of(&self, node: NodeId) -> Vec<(FlowId, u64)> {
        let link = &self.links[node];
        link.outgoing
            .iter()
            .chain(&link.incoming)
            .filter_map(|id| self.flows[id.0].as_ref().map(|f| (*id, f.tag)))
            .collect()
    }

    fn remove(&mut self, now: f64, id: FlowId) -> Vec<Completion> {
        let flow = self.flows[id.0].take().expect("flow exists");
        self.settle(now, flow.src, flow.dst);
        self.links[flow.src].outgoing.retain(|f| *f != id);
        self.links[flow.dst].incoming.retain(|f| *f != id);
        self.free.push(id.0);
        self.rerate(now, flow.src, flow.dst)
    }

    /// Brings the progress of every flow at `a` or `b` up to `now`.
    fn settle(&mut self, now: f64, a: NodeId, b: NodeId) {
        for node in [a, b] {
            let link = &self.links[node];
            for id in link.outgoing.iter().chain(&link.incoming) {
                if let Some(flow) = self.flows[id.0].as_mut() {
                    flow.remaining = (flow.remaining - flow.rate * (now - flow.since)).max(0.0);
                    flow.since = now;
                }
            }
        }
    }

    /// Assigns new rates to every flow at `a` or `b` (already settled at `now`) and returns their completions.
    fn rerate(&mut self, now: f64, a: NodeId, b: NodeId) -> Vec<Completion> {
        let mut touched: Vec<FlowId> = Vec::new();
        for node in [a, b] {
            let link = &self.links[node];
            touched.extend(link.outgoing.iter().chain(&link.incoming));
        }
        touched.sort_unstable();
        touched.dedup();
        let mut completions = Vec::with_capacity(touched.len());
        for id in touched {
            let (src, dst) = {
                let f = self.flows[id.0].as_ref().expect("listed flows exist");
                (f.src, f.dst)
            };
            let up = self.links[src].up / self.links[src].outgoing.len() as f64;
            let down = self.links[dst].down / self.links[dst].incoming.len() as f64;
            self.next_version += 1;
            let version = self.next_version;
            let flow = self.flows[id.0].as_mut().expect("listed flows exist");
            flow.rate = up.min(down);
            flow.version = version;
            let at = if flow.remaining <= 0.0 {
                now
            } else if flow.rate > 0.0 {
                now + flow.remaining / flow.rate
            } else {
                f64::INFINITY
            };
            completions.push(Completion { flow: id, at, version });
        }
        completions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1_000_000.0;

    fn at(completions: &[Completion], flow: FlowId) -> Completion {
        *completions
            .iter()
            .find(|c| c.flow == flow)
            .expect("completion for flow")
    }

    #[test]
    fn one_flow_runs_at_its_tighter_endpoint() {
        let mut net = Network::new();
        let a = net.add_node(MB, 10.0 * MB);
        let b = net.add_node(10.0 * MB, 2.0 * MB);
        let (f, c) = net.start(0.0, a, b, 1_000_000, 7);
        assert_eq!(at(&c, f).at, 1.0);
        let (done, _) = net.finish(1.0, at(&c, f)).unwrap();
        assert_eq!(
            done,
            Finished {
                src: a,
                dst: b,
                bytes: 1_000_000,
                tag: 7
            }
        );
        assert_eq!(net.active_flows(), 0);
    }

    #[test]
    fn flows_share_the_sender_and_speed_up_when_one_ends() {
        let mut net = Network::new();
        let s = net.add_node(MB, MB);
        let r1 = net.add_node(MB, 10.0 * MB);
        let r2 = net.add_node(MB, 10.0 * MB);
        let (f1, _) = net.start(0.0, s, r1, 1_000_000, 1);
        let (f2, c) = net.start(0.0, s, r2, 1_000_000, 2);
        assert_eq!(at(&c, f1).at, 2.0);
        assert_eq!(at(&c, f2).at, 2.0);
        // Half a second in, the first is cancelled with a quarter moved; the second gets the whole uplink.
        let (moved, c) = net.cancel(0.5, f1).unwrap();
        assert_eq!(moved, 250_000);
        assert_eq!(at(&c, f2).at, 0.5 + 0.75);
    }

    #[test]
    fn receivers_share_their_download() {
        let mut net = Network::new();
        let a = net.add_node(10.0 * MB, MB);
        let b = net.add_node(10.0 * MB, MB);
        let r = net.add_node(MB, MB);
        let (f1, _) = net.start(0.0, a, r, 500_000, 1);
        let (f2, c) = net.start(0.0, b, r, 1_000_000, 2);
        let first = at(&c, f1);
        assert_eq!(first.at, 1.0);
        let (_, c) = net.finish(1.0, first).unwrap();
        // The second moved 0.5 MB at half speed; the rest goes at full speed.
        assert_eq!(at(&c, f2).at, 1.5);
    }

    #[test]
    fn stale_completions_are_ignored() {
        let mut net = Network::new();
        let s = net.add_node(MB, MB);
        let r = net.add_node(MB, MB);
        let (f1, c1) = net.start(0.0, s, r, 1_000_000, 1);
        let stale = at(&c1, f1);
        let (_, c2) = net.start(0.1, s, r, 1_000_000, 2);
        assert!(
            net.finish(stale.at, stale).is_none(),
            "the rate changed: the old completion is stale"
        );
        assert!(net.finish(9.0, at(&c2, f1)).is_some());
        assert!(net.finish(9.0, at(&c2, f1)).is_none(), "a flow finishes once");
    }

    #[test]
    fn zero_capacity_never_completes() {
        let mut net = Network::new();
        let metered = net.add_node(0.0, MB);
        let r = net.add_node(MB, MB);
        let (f, c) = net.start(0.0, metered, r, 1, 0);
        assert!(at(&c, f).at.is_infinite());
        assert_eq!(net.flows_of(metered), vec![(f, 0)]);
    }
}
