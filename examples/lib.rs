//! Small programs that show how to build on the StreamrP2P node library. Read them in this order:
//!
//! - `broadcast_file`: publish an HLS folder (a recording, or what ffmpeg writes) as a live stream.
//!   `cargo run -p streamrp2p-examples --example broadcast_file -- [PLAYLIST]`
//! - `watch`: join a stream from code and count the segments that arrive verified.
//!   `cargo run -p streamrp2p-examples --example watch -- STREAM BOOTSTRAP_MULTIADDR`
