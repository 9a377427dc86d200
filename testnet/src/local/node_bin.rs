//! Where the node binary `streamrp2p` is: `--node-bin`, else `$STREAMRP2P_BIN`, else next to this executable.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The environment variable naming the node binary.
pub const NODE_BIN_ENV: &str = "STREAMRP2P_BIN";

/// The node binary's file name.
pub const NODE_BIN_NAME: &str = "streamrp2p";

/// The node binary: `explicit` if given, else `$STREAMRP2P_BIN`, else `streamrp2p` in this executable's directory
/// or its parent (a test binary lives in `target/<profile>/deps/`, the node in `target/<profile>/`). An error says
/// where it looked and how to build it.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return existing(path.to_owned(), "--node-bin");
    }
    if let Some(path) = std::env::var_os(NODE_BIN_ENV).filter(|p| !p.is_empty()) {
        return existing(PathBuf::from(path), NODE_BIN_ENV);
    }
    let exe = std::env::current_exe()?;
    let mut looked = Vec::new();
    for dir in exe.parent().into_iter().flat_map(|d| [Some(d), d.parent()]).flatten() {
        let candidate = dir.join(NODE_BIN_NAME);
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(candidate.display().to_string());
    }
    bail!(
        "the node binary `{NODE_BIN_NAME}` is not at {}: build it with `cargo build --release -p streamrp2p-node` \
         (into the same target directory), or name it with --node-bin PATH or {NODE_BIN_ENV}=PATH",
        looked.join(" or ")
    )
}

fn existing(path: PathBuf, from: &str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "the node binary {} (from {from}) does not exist: build it with `cargo build --release -p streamrp2p-node`",
            path.display()
        )
    }
}

/// Whether the node binary at `bin` takes `flag` (it lists it in `--help`): the policy flags
/// (`--max-upload-kbps`, …) are newer than some node binaries.
pub fn takes_flag(bin: &Path, flag: &str) -> bool {
    std::process::Command::new(bin)
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
}
