//! A flow-level network model: transfers share their endpoints' capacity, with no packets simulated.
//!
//! Every node has an upload and a download capacity (bytes per virtual second). A transfer (a flow) from `src` to
//! `dst` gets `min(up[src] / flows leaving src, down[dst] / flows entering dst)`: each endpoint shares its capacity
//! equally among its flows, and a flow runs at its tighter endpoint's share. That is the standard approximation of
//! flow-level P2P simulators (it is max-min fair when each flow's bottleneck is its sender's or receiver's own link,
//! and slightly pessimistic otherwise: capacity a flow cannot use at one end is not handed to its siblings — except
//! at a receiver, for flows from a server, which take only what the server gives them).
//!
//! Rates change only when a flow starts or ends, and only for flows that share an endpoint with it, so each change
//! costs O(flows at the two endpoints). The model does not own the clock or the event queue: each call takes the
//! virtual time `now` and returns [`Completion`]s, the new completion times of the flows whose rates changed. A
//! completion carries a version; when a flow's rate changes again, its old completion is stale and
//! [`Network::finish`] ignores it, so the simulator never needs to remove events from its queue.
//!
//! A node with thousands of flows (the HTTP origin when every viewer fetches from it) would make that O(n) per
//! change. Such a node is added as a *server* ([`Network::add_server`]): a processor-sharing queue whose flows all
//! progress at `up / flows`, tracked by one virtual clock (bytes served per flow so far), so a change costs
//! O(log n) and only the flow that finishes first has a completion scheduled. A server's flows are not slowed by
//! their receivers' download (a server splits its capacity among thousands, far below any receiver's share), but
//! they do take from the receiver's download what they use (at most an equal share), leaving the rest to its
//! other flows.
//!
//! Latency is the simulator's business (it delays the start of a flow and the delivery after it), and so is
//! reachability (a NAT-ed node's inbound connections).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

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
    /// The flow's sender, receiver and tag: what its end will touch, for cache hints ahead of it.
    pub src: NodeId,
    /// The receiver.
    pub dst: NodeId,
    /// The tag given when the flow started.
    pub tag: u64,
}

/// A flow that finished.
#[derive(Clone, Copy, Debug, PartialEq)]
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
    /// Per-flow progress (flows of ordinary senders).
    remaining: f64,
    rate: f64,
    since: f64,
    /// Server flows: the server's virtual clock when the flow started.
    served_from: Option<f64>,
    version: u64,
    /// Unique over the run: tells a queued server entry from a later flow reusing the slot.
    serial: u64,
    tag: u64,
}

/// A virtual time in a server's queue, ordered totally (virtual times are finite).
#[derive(Clone, Copy, Debug, PartialEq)]
struct VirtualTime(f64);

impl Eq for VirtualTime {}

impl PartialOrd for VirtualTime {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for VirtualTime {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A processor-sharing server: every flow gets `up / active`.
#[derive(Clone, Debug, Default)]
struct Server {
    /// Bytes each flow has been served since the server began.
    clock: f64,
    /// When `clock` was last brought up to date.
    since: f64,
    active: usize,
    /// Flows by the clock value at which they finish: (finish, serial, flow). Ended flows are skipped lazily.
    queue: BinaryHeap<Reverse<(VirtualTime, u64, FlowId)>>,
    /// The flow whose completion is scheduled, with its serial (its slot may since hold another flow).
    scheduled: Option<(FlowId, u64)>,
    /// Bytes served in all, to the last update.
    served: f64,
}

#[derive(Clone, Debug, Default)]
struct Link {
    up: f64,
    down: f64,
    /// Flows leaving an ordinary node (a server keeps its own queue instead).
    outgoing: Vec<FlowId>,
    incoming: Vec<FlowId>,
    /// Boxed: one node in thousands is a server, and the links of the others stay a cache line or so each.
    server: Option<Box<Server>>,
}

/// The network: nodes with capacities, and the flows between them.
#[derive(Clone, Debug, Default)]
pub struct Network {
    links: Vec<Link>,
    flows: Vec<Option<Flow>>,
    free: Vec<usize>,
    next_version: u64,
    next_serial: u64,
    /// Batch mode: rates are recomputed by [`Network::flush`], once for all changes at the same instant.
    deferred: bool,
    dirty: Vec<NodeId>,
    /// Scratch space for [`Network::rerate`].
    touched: Vec<FlowId>,
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

    /// Adds a processor-sharing server (the HTTP origin) that uploads `up` bytes per second.
    pub fn add_server(&mut self, up: f64) -> NodeId {
        let node = self.add_node(up, 0.0);
        self.links[node].server = Some(Box::default());
        node
    }

    /// Flows in progress.
    pub fn active_flows(&self) -> usize {
        self.flows.len() - self.free.len()
    }

    /// Flows leaving `node`.
    pub fn uploads(&self, node: NodeId) -> usize {
        let link = &self.links[node];
        link.server.as_ref().map_or(link.outgoing.len(), |s| s.active)
    }

    /// Bytes a server has sent up to `now`.
    pub fn served(&mut self, now: f64, server: NodeId) -> f64 {
        self.advance_server(now, server);
        self.links[server].server.as_ref().expect("node is a server").served
    }

    /// Asks for the cache lines the end of a flow will touch: the flow and its two ends (see [`crate::prefetch`]).
    pub fn prefetch(&self, c: &Completion) {
        if let Some(flow) = self.flows.get(c.flow.0) {
            crate::prefetch::prefetch(flow, 2);
        }
        for node in [c.src, c.dst] {
            if let Some(link) = self.links.get(node) {
                crate::prefetch::prefetch(link, 2);
            }
        }
    }

    /// Flows entering `node`.
    pub fn downloads(&self, node: NodeId) -> usize {
        self.links[node].incoming.len()
    }

    /// Starts moving `bytes` from `src` to `dst` at `now`. `tag` comes back when the flow finishes. Returns the flow
    /// and the completions of every flow whose rate changed, the new one among them when it is due first.
    pub fn start(&mut self, now: f64, src: NodeId, dst: NodeId, bytes: u64, tag: u64) -> (FlowId, Vec<Completion>) {
        self.next_serial += 1;
        let served_from = self.links[src].server.is_some().then(|| self.advance_server(now, src));
        let flow = Flow {
            src,
            dst,
            bytes,
            remaining: bytes as f64,
            rate: 0.0,
            since: now,
            served_from,
            version: 0,
            serial: self.next_serial,
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
        self.settle(now, dst);
        if let Some(from) = served_from {
            let server = self.links[src].server.as_mut().expect("checked above");
            server.active += 1;
            server
                .queue
                .push(Reverse((VirtualTime(from + bytes as f64), self.next_serial, id)));
        } else {
            self.settle(now, src);
            self.links[src].outgoing.push(id);
        }
        self.links[dst].incoming.push(id);
        (id, self.rerate_or_defer(now, src, dst))
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
        let (src, dst, served_from) = {
            let f = self.flows.get(flow.0)?.as_ref()?;
            (f.src, f.dst, f.served_from)
        };
        let remaining = match served_from {
            Some(from) => {
                let clock = self.advance_server(now, src);
                let f = self.flows[flow.0].as_ref().expect("checked above");
                (f.bytes as f64 - (clock - from)).max(0.0)
            }
            None => {
                self.settle(now, src);
                self.settle(now, dst);
                self.flows[flow.0].as_ref().expect("checked above").remaining
            }
        };
        let bytes = self.flows[flow.0].as_ref().expect("checked above").bytes;
        let moved = (bytes as f64 - remaining).max(0.0) as u64;
        Some((moved, self.remove(now, flow)))
    }

    /// Every flow of `node`, in and out, with their tags, for cancelling when the node leaves.
    pub fn flows_of(&self, node: NodeId) -> Vec<(FlowId, u64)> {
        let link = &self.links[node];
        let served = link
            .server
            .iter()
            .flat_map(|s| s.queue.iter().map(|Reverse((_, _, id))| *id));
        link.outgoing
            .iter()
            .copied()
            .chain(served)
            .chain(link.incoming.iter().copied())
            .filter_map(|id| {
                self.flows[id.0]
                    .as_ref()
                    .filter(|f| f.src == node || f.dst == node)
                    .map(|f| (id, f.tag))
            })
            .collect()
    }

    fn remove(&mut self, now: f64, id: FlowId) -> Vec<Completion> {
        let flow = self.flows[id.0].take().expect("flow exists");
        self.free.push(id.0);
        self.settle(now, flow.dst);
        if flow.served_from.is_some() {
            self.advance_server(now, flow.src);
            let server = self.links[flow.src].server.as_mut().expect("server flow");
            server.active -= 1;
        } else {
            self.settle(now, flow.src);
            self.links[flow.src].outgoing.retain(|f| *f != id);
        }
        self.links[flow.dst].incoming.retain(|f| *f != id);
        self.rerate_or_defer(now, flow.src, flow.dst)
    }

    /// Brings a server's clock up to `now` and returns it.
    fn advance_server(&mut self, now: f64, node: NodeId) -> f64 {
        let up = self.links[node].up;
        let server = self.links[node].server.as_mut().expect("node is a server");
        if server.active > 0 {
            server.clock += (now - server.since) * up / server.active as f64;
            server.served += (now - server.since) * up;
        }
        server.since = now;
        server.clock
    }

    /// Brings the progress of every per-flow flow at `node` up to `now`.
    fn settle(&mut self, now: f64, node: NodeId) {
        let link = &self.links[node];
        for id in link.outgoing.iter().chain(&link.incoming) {
            if let Some(flow) = self.flows[id.0].as_mut().filter(|f| f.served_from.is_none()) {
                flow.remaining = (flow.remaining - flow.rate * (now - flow.since)).max(0.0);
                flow.since = now;
            }
        }
    }

    fn fresh_version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// Assigns new rates to every per-flow flow at `a` or `b` (already settled at `now`), reschedules a server's
    /// first finisher, and returns the completions.
    /// Batch mode on: [`Network::start`], [`Network::finish`] and [`Network::cancel`] return no completions, and
    /// [`Network::flush`] recomputes the rates of every node they touched. A sender that finishes one transfer and
    /// starts the next in the same instant then leaves its other flows' rates, and their completions, as they were.
    pub fn set_deferred(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    /// Recomputes the rates at every node touched since the last flush; returns the changed completions.
    pub fn flush(&mut self, now: f64) -> Vec<Completion> {
        if self.dirty.is_empty() {
            return Vec::new();
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let completions = self.rerate(now, &dirty);
        dirty.clear();
        self.dirty = dirty;
        completions
    }

    fn rerate_or_defer(&mut self, now: f64, a: NodeId, b: NodeId) -> Vec<Completion> {
        if self.deferred {
            self.dirty.extend([a, b]);
            Vec::new()
        } else {
            self.rerate(now, &[a, b])
        }
    }

    fn rerate(&mut self, now: f64, nodes: &[NodeId]) -> Vec<Completion> {
        let mut touched = std::mem::take(&mut self.touched);
        touched.clear();
        for &node in nodes {
            let link = &self.links[node];
            touched.extend(link.outgoing.iter().chain(&link.incoming));
        }
        touched.sort_unstable();
        touched.dedup();
        let mut completions = Vec::with_capacity(touched.len() + 1);
        for &id in &touched {
            let (src, dst) = match self.flows[id.0].as_ref() {
                Some(f) if f.served_from.is_none() => (f.src, f.dst),
                _ => continue,
            };
            let up = self.links[src].up / self.links[src].outgoing.len() as f64;
            let rate = up.min(self.ordinary_down_share(dst));
            let flow = self.flows[id.0].as_ref().expect("listed flows exist");
            if flow.version != 0 && flow.rate == rate {
                // Same rate, same finish: its scheduled completion stands (most changes at a receiver with a wide
                // downlink leave sender-limited flows as they were).
                continue;
            }
            let version = self.fresh_version();
            let flow = self.flows[id.0].as_mut().expect("listed flows exist");
            flow.rate = rate;
            flow.version = version;
            let at = if flow.remaining <= 0.0 {
                now
            } else if flow.rate > 0.0 {
                now + flow.remaining / flow.rate
            } else {
                f64::INFINITY
            };
            let (src, dst, tag) = (flow.src, flow.dst, flow.tag);
            completions.push(Completion {
                flow: id,
                at,
                version,
                src,
                dst,
                tag,
            });
        }
        self.touched = touched;
        for &node in nodes {
            if self.links[node].server.is_some() {
                completions.extend(self.schedule_server(now, node));
            }
        }
        completions
    }

    /// What one ordinary (non-server) flow into `dst` may take of its download: an equal share of what the server
    /// flows into it leave. A server flow uses no more than its server's share (`up / active`), so flows from a
    /// saturated origin, crawling at a fraction of the receiver's share, leave the rest to the receiver's other
    /// flows, as max-min fairness (and TCP) would; counting each as a full equal share instead starved a viewer's
    /// pushes whenever the origin was busy, which no real network does.
    fn ordinary_down_share(&self, dst: NodeId) -> f64 {
        let link = &self.links[dst];
        let equal = link.down / link.incoming.len() as f64;
        let mut server_use = 0.0;
        let mut ordinary = 0usize;
        for id in &link.incoming {
            let Some(flow) = self.flows[id.0].as_ref() else {
                continue;
            };
            if flow.served_from.is_some() {
                let src = &self.links[flow.src];
                let active = src.server.as_ref().map_or(1, |s| s.active.max(1));
                server_use += (src.up / active as f64).min(equal);
            } else {
                ordinary += 1;
            }
        }
        (link.down - server_use).max(0.0) / ordinary.max(1) as f64
    }

    /// The completion of a server's first finisher, its queue's head, under the current share. Every call issues a
    /// fresh version to the head, which makes the previous head's completion stale.
    fn schedule_server(&mut self, now: f64, node: NodeId) -> Option<Completion> {
        let clock = self.advance_server(now, node);
        let up = self.links[node].up;
        let (finish, id) = loop {
            let server = self.links[node].server.as_mut().expect("node is a server");
            let Reverse((VirtualTime(finish), serial, id)) = *server.queue.peek()?;
            if self.flows[id.0].as_ref().is_some_and(|f| f.serial == serial) {
                break (finish, id);
            }
            server.queue.pop();
        };
        let serial = self.flows[id.0].as_ref().expect("live head").serial;
        let server = self.links[node].server.as_mut().expect("node is a server");
        let (active, previous) = (server.active, server.scheduled.replace((id, serial)));
        // A new head (a shorter flow arrived) leaves the old head's completion stale — if the old head is still
        // running: a finished head's slot may hold another flow by now, whose completion must stand.
        if let Some((old, old_serial)) = previous.filter(|(old, _)| *old != id) {
            let stale = self.fresh_version();
            if let Some(flow) = self.flows[old.0].as_mut().filter(|f| f.serial == old_serial) {
                flow.version = stale;
            }
        }
        let version = self.fresh_version();
        self.flows[id.0].as_mut().expect("live head").version = version;
        let rate = up / active as f64;
        let at = if finish <= clock {
            now
        } else if rate > 0.0 {
            now + (finish - clock) / rate
        } else {
            f64::INFINITY
        };
        let f = self.flows[id.0].as_ref().expect("live head");
        Some(Completion {
            flow: id,
            at,
            version,
            src: f.src,
            dst: f.dst,
            tag: f.tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

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
    fn a_server_shares_its_upload_equally() {
        let mut net = Network::new();
        let origin = net.add_server(2.0 * MB);
        let viewers: Vec<NodeId> = (0..4).map(|_| net.add_node(0.0, 10.0 * MB)).collect();
        // Four flows of 1, 2, 3 and 4 MB at 0.5 MB/s each: the 1 MB one finishes at 2 s.
        let mut head = None;
        let mut ids = Vec::new();
        for (i, v) in viewers.iter().enumerate() {
            let (id, c) = net.start(0.0, origin, *v, (i as u64 + 1) * 1_000_000, i as u64);
            ids.push(id);
            head = c.iter().find(|c| c.flow == ids[0]).copied().or(head);
        }
        let head = head.unwrap();
        assert_eq!(head.at, 2.0);
        let (done, c) = net.finish(2.0, head).unwrap();
        assert_eq!(done.tag, 0);
        assert_eq!(net.served(2.0, origin), 4_000_000.0);
        // Three left at 2/3 MB/s, 1 MB to go for the next: 1.5 s more.
        let next = c.iter().find(|c| c.flow == ids[1]).unwrap();
        assert!((next.at - 3.5).abs() < 1e-9);
        assert_eq!(net.uploads(origin), 3);
    }

    #[test]
    fn a_busy_servers_flows_leave_the_receivers_download_to_its_other_flows() {
        let mut net = Network::new();
        // An origin of 1 MB/s shared by 100 flows (10 kB/s each), one of them to our viewer.
        let origin = net.add_server(MB);
        let others: Vec<NodeId> = (0..99).map(|_| net.add_node(0.0, 10.0 * MB)).collect();
        for (i, v) in others.iter().enumerate() {
            net.start(0.0, origin, *v, 1_000_000, i as u64);
        }
        let viewer = net.add_node(0.0, 2.0 * MB);
        net.start(0.0, origin, viewer, 1_000_000, 100);
        // A peer with 4 MB/s of upload sends 1 MB: the viewer's 2 MB/s download, less the origin's 10 kB/s, is
        // the bottleneck — not half of it, as an equal share per flow would have it.
        let peer = net.add_node(4.0 * MB, 0.0);
        let (id, c) = net.start(0.0, peer, viewer, 1_000_000, 101);
        let took = at(&c, id).at;
        let expected = 1.0 / (2.0 - 0.01);
        assert!((took - expected).abs() < 1e-6, "took {took} s, expected {expected}");
    }

    #[test]
    fn a_shorter_server_flow_takes_over_the_head() {
        let mut net = Network::new();
        let origin = net.add_server(MB);
        let a = net.add_node(0.0, 10.0 * MB);
        let b = net.add_node(0.0, 10.0 * MB);
        let (long, c) = net.start(0.0, origin, a, 1_000_000, 1);
        let stale = c[0];
        assert_eq!((stale.flow, stale.at), (long, 1.0));
        // At 0.5 s, 0.1 MB more arrives; both share: it finishes 0.2 s later, and the long one's completion is stale.
        let (short, c) = net.start(0.5, origin, b, 100_000, 2);
        let first = *c.iter().find(|c| c.flow == short).unwrap();
        assert!((first.at - 0.7).abs() < 1e-9);
        assert!(net.finish(stale.at, stale).is_none());
        let (_, c) = net.finish(first.at, first).unwrap();
        // 0.4 MB of the long flow left at 1 MB/s.
        let last = *c.iter().find(|c| c.flow == long).unwrap();
        assert!((last.at - 1.1).abs() < 1e-9);
        let (moved, _) = net.cancel(1.0, long).unwrap();
        assert_eq!(moved, 900_000);
        assert_eq!(net.active_flows(), 0);
    }

    #[test]
    fn a_finished_server_head_whose_slot_is_reused_leaves_the_new_flow_alone() {
        let mut net = Network::new();
        let origin = net.add_server(MB);
        let (a, b) = (net.add_node(0.0, 10.0 * MB), net.add_node(0.0, 10.0 * MB));
        let (_, c) = net.start(0.0, origin, a, 100_000, 1);
        let (head, _) = net.finish(0.1, c[0]).unwrap();
        assert_eq!(head.tag, 1);
        // The head's slot now holds a flow between two ordinary nodes…
        let (p, q) = (net.add_node(MB, MB), net.add_node(MB, MB));
        let (reused, c) = net.start(0.1, p, q, 500_000, 2);
        let due = at(&c, reused);
        assert_eq!(due.at, 0.6);
        // …and the server takes a new head: the ordinary flow's completion must stand.
        net.start(0.2, origin, b, 100_000, 3);
        let (done, _) = net
            .finish(due.at, due)
            .expect("the reused slot's completion is still current");
        assert_eq!(done.tag, 2);
    }

    #[test]
    fn ten_thousand_server_flows_drain_in_order() {
        let mut net = Network::new();
        let origin = net.add_server(1_000.0 * MB);
        let mut pending = Vec::new();
        for i in 0..10_000u64 {
            let viewer = net.add_node(0.0, 10.0 * MB);
            let (_, c) = net.start(i as f64 * 1e-4, origin, viewer, 625_000, i);
            pending.extend(c);
        }
        // Each start costs O(log n) and schedules only the head; drain like a simulator, earliest first, skipping
        // stale completions: the flows finish in the order they started (all got the same share).
        type Entry = (VirtualTime, u64, usize, NodeId, NodeId, u64);
        let mut queue: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
        let push = |queue: &mut BinaryHeap<_>, c: Completion| {
            queue.push(Reverse((VirtualTime(c.at), c.version, c.flow.0, c.src, c.dst, c.tag)))
        };
        for c in pending {
            push(&mut queue, c);
        }
        let (mut finished, mut last) = (0, 0.0);
        while let Some(Reverse((VirtualTime(at), version, flow, src, dst, tag))) = queue.pop() {
            if let Some((done, more)) = net.finish(
                at,
                Completion {
                    flow: FlowId(flow),
                    at,
                    version,
                    src,
                    dst,
                    tag,
                },
            ) {
                assert_eq!(done.tag, finished);
                assert!(at >= last);
                last = at;
                finished += 1;
                more.into_iter().for_each(|c| push(&mut queue, c));
            }
        }
        assert_eq!(finished, 10_000);
        assert_eq!(net.active_flows(), 0);
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
