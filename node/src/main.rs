//! `streamrp2p`: run a StreamrP2P node, broadcast or watch a stream, or try the whole thing in one process.

mod cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cli::main().await
}
