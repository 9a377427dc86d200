//! `adversary --behaviour NAME[,NAME…] --stream ID --broadcaster ADDR --victims FILE --record FILE [--after S] [--rate N]`:
//! one adversary of the local testnet (see `streamrp2p_testnet::adversary`). Prints `peer id: ID` once it runs,
//! and writes its record to `--record` every two seconds and when it stops (SIGTERM, Ctrl-C).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use streamrp2p_testnet::adversary::{self, Options};
use streamrp2p_testnet::scenario::Behaviour;

const USAGE: &str = "usage: adversary --behaviour NAME[,NAME...] --stream ID --broadcaster ADDR --victims FILE --record FILE [--after S] [--rate N]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut behaviours, mut stream, mut broadcaster, mut victims, mut record) = (None, None, None, None, None);
    let (mut after, mut rate) = (Duration::from_secs(20), 100.0);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value; {USAGE}"));
        match arg.as_str() {
            "--behaviour" => {
                let list = value("--behaviour")?;
                behaviours = Some(
                    list.split(',')
                        .map(|name| {
                            Behaviour::ALL
                                .into_iter()
                                .find(|b| b.name() == name)
                                .with_context(|| format!("unknown behaviour {name:?}; one of {}", names()))
                        })
                        .collect::<Result<Vec<_>>>()?,
                );
            }
            "--stream" => stream = Some(value("--stream")?.parse().context("--stream is not a stream id")?),
            "--broadcaster" => {
                broadcaster = Some(
                    value("--broadcaster")?
                        .parse()
                        .context("--broadcaster is not a multiaddr")?,
                );
            }
            "--victims" => victims = Some(PathBuf::from(value("--victims")?)),
            "--record" => record = Some(PathBuf::from(value("--record")?)),
            "--after" => {
                let v = value("--after")?;
                after = Duration::from_secs_f64(v.parse().with_context(|| format!("--after {v:?} is not seconds"))?);
            }
            "--rate" => {
                let v = value("--rate")?;
                rate = v.parse().with_context(|| format!("--rate {v:?} is not a number"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}\nbehaviours: {}", names());
                return Ok(());
            }
            _ => bail!("unexpected argument {arg:?}; {USAGE}"),
        }
    }
    let options = Options {
        behaviours: behaviours.context(USAGE)?,
        stream: stream.context(USAGE)?,
        broadcaster: broadcaster.context(USAGE)?,
        victims: victims.context(USAGE)?,
        record: record.context(USAGE)?,
        after,
        rate_per_s: rate,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(adversary::run(options))
}

fn names() -> String {
    Behaviour::ALL.map(Behaviour::name).join(", ")
}
