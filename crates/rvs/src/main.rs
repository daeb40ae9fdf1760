//! `rvs`: the daemon and its tools.

#![forbid(unsafe_code)]

mod replay;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rvs — a userspace layer-4 load balancer with Linux IPVS's scheduling.
#[derive(Debug, Parser)]
#[command(name = "rvs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Replay a scheduler trace (JSON Lines) and print each decision.
    ///
    /// One line per `conn`: the real server chosen, or `-`. A malformed or
    /// refused line is reported on stderr with its number, exit status 2.
    /// The format is described in docs/sched-replay.md.
    SchedReplay {
        /// The trace file; standard input when absent or `-`.
        trace: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::SchedReplay { trace } => sched_replay(trace),
    }
}

fn sched_replay(trace: Option<PathBuf>) -> ExitCode {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = match trace.filter(|p| p.as_os_str() != "-") {
        None => replay::replay(io::stdin().lock(), &mut out),
        Some(path) => match File::open(&path) {
            Ok(f) => replay::replay(BufReader::new(f), &mut out),
            Err(e) => {
                eprintln!("rvs sched-replay: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let flushed = out.flush();
    match (result, flushed) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(e), _) => {
            eprintln!("rvs sched-replay: {e}");
            ExitCode::from(2)
        }
        (Ok(()), Err(e)) => {
            eprintln!("rvs sched-replay: writing the decisions: {e}");
            ExitCode::from(2)
        }
    }
}
