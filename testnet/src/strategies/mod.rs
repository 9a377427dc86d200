//! Protocols as the simulator drives them.

mod cdn_only;

pub use cdn_only::CdnOnly;
