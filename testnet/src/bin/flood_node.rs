//! `flood_node broadcast --hls DIR/index.m3u8 [--listen ADDR] [--bootstrap ADDR]… [--topic T] [--stop-on-stdin-eof]`
//! or `flood_node watch --bootstrap ADDR… [--listen ADDR] [--out DIR] [--topic T] [--stop-on-stdin-eof]`: one node
//! of the gossipsub baseline (see `streamrp2p_testnet::flood`).
//!
//! Prints `{"listen": ADDR}` once it listens, and its figures as one JSON line when it stops: on SIGTERM, Ctrl-C,
//! or — with `--stop-on-stdin-eof` — when its stdin closes.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use streamrp2p_testnet::flood::node::{self, DEFAULT_TOPIC, NodeOptions, Role};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: flood_node broadcast --hls PLAYLIST [--listen ADDR] [--bootstrap ADDR]... [--topic T] [--stop-on-stdin-eof]\n       flood_node watch --bootstrap ADDR... [--listen ADDR] [--out DIR] [--topic T] [--stop-on-stdin-eof]";

fn main() {
    let code = match run() {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    };
    // Exit rather than return: the runtime would wait for the blocking read of stdin.
    std::process::exit(code);
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let role = args.next().context(USAGE)?;
    let mut options = NodeOptions {
        listen: "/ip4/127.0.0.1/tcp/0".parse()?,
        bootstrap: Vec::new(),
        topic: DEFAULT_TOPIC.to_owned(),
    };
    let mut hls = None;
    let mut out = None;
    let mut stdin_eof = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--listen" => options.listen = value("--listen")?.parse().context("--listen: not a multiaddr")?,
            "--bootstrap" => options
                .bootstrap
                .push(value("--bootstrap")?.parse().context("--bootstrap: not a multiaddr")?),
            "--topic" => options.topic = value("--topic")?,
            "--hls" => hls = Some(PathBuf::from(value("--hls")?)),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--stop-on-stdin-eof" => stdin_eof = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => bail!("unexpected argument {arg:?}\n{USAGE}"),
        }
    }
    let role = match role.as_str() {
        "broadcast" => Role::Broadcast {
            hls: hls.with_context(|| format!("broadcast needs --hls\n{USAGE}"))?,
        },
        "watch" => {
            if options.bootstrap.is_empty() {
                bail!("watch needs --bootstrap\n{USAGE}");
            }
            Role::Watch { out }
        }
        "-h" | "--help" => {
            println!("{USAGE}");
            return Ok(());
        }
        other => bail!("unknown role {other:?}\n{USAGE}"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let figures = runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let stop = async move {
            let stdin_closed = async {
                if !stdin_eof {
                    return std::future::pending().await;
                }
                let mut stdin = tokio::io::stdin();
                let mut buf = [0u8; 256];
                while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
                () = stdin_closed => {}
            }
        };
        node::run(options, role, stop).await
    })?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&figures)?)?;
    stdout.flush()?;
    Ok(())
}
