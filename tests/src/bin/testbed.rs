//! `testbed`: a Kubernetes node on one machine (demo, benches).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mountlag_testbed::{bench, demo};

#[derive(Debug, Parser)]
#[command(name = "testbed", about = "mountlag's stand-in node: demo and benches")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play the node-side story on a stand-in node (needs root: it mounts tmpfs).
    Demo,
    /// Measure; figures go to docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// `..data` rename → report latency (mountlag watcher vs bare inotify floor) and snapshot cost.
    Watch {
        /// Swaps per subject.
        #[arg(long, default_value_t = 2000)]
        swaps: usize,
        /// Alternating blocks the swaps are split into.
        #[arg(long, default_value_t = 20)]
        blocks: usize,
        /// Pause after each swap, milliseconds.
        #[arg(long, default_value_t = 2)]
        pause_ms: u64,
        /// Snapshot runs per volume size.
        #[arg(long, default_value_t = 300)]
        snapshot_runs: usize,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("testbed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo => demo::run(),
        Command::Bench {
            what:
                Bench::Watch {
                    swaps,
                    blocks,
                    pause_ms,
                    snapshot_runs,
                },
        } => {
            println!(
                "## ..data rename → report ({swaps} swaps per subject, {blocks} alternating blocks)\n"
            );
            let result = bench::watch(swaps, blocks, Duration::from_millis(pause_ms))?;
            bench::print_watch(&result);
            println!("\n## snapshot of one volume\n");
            let mut rows = Vec::new();
            for files in [1, 100, 1000] {
                let runs = if files >= 1000 {
                    snapshot_runs / 3
                } else {
                    snapshot_runs
                };
                rows.push((files, bench::snapshot_cost(files, runs.max(1))?));
            }
            bench::print_snapshot(&rows);
            Ok(())
        }
    }
}
