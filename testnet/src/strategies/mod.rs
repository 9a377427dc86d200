//! Protocols as the simulator drives them.

mod adversary;
mod cdn_only;
mod gossipsub_flood;
mod slab;
pub(crate) mod tree_mesh;

pub use cdn_only::CdnOnly;
pub use gossipsub_flood::{GossipsubFlood, MESH_DEGREE, MESH_HIGH, PARALLEL_SENDS, SEND_QUEUE};
pub use tree_mesh::{BROADCASTER, DISCOVERY_S, LEAVE_NOTICED_S, MSG_COUNTS, TreeMeshSim};
