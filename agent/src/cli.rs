//! The `mountlag` command line: parse, set up logging, run a subcommand, map to an exit code.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::inspect;

/// Exit status for usage errors, as clap uses for bad arguments.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "mountlag",
    version,
    about = "Provably zero-downtime certificate rotation for Kubernetes Ingress"
)]
pub struct Cli {
    /// Log format on stderr (`RUST_LOG` sets the level).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read kubelet volume directories (a volume, a pod directory or a whole kubelet root) and
    /// report generation, files, digests, certificates, key-pair match and expiry.
    ///
    /// Exit status: 0 healthy, 1 a problem was found, 2 usage error.
    Inspect {
        /// Volume, pod or kubelet root directories.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Print one JSON document (shape: docs/inspect.md).
        #[arg(long)]
        json: bool,
    },
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    ExitCode::from(run(cli))
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs a parsed command line and returns the exit status.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Inspect { paths, json } => run_inspect(&paths, json),
    }
}

fn run_inspect(paths: &[PathBuf], json: bool) -> u8 {
    let now = time::OffsetDateTime::now_utc();
    let report = match inspect::inspect(paths, now) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("mountlag inspect: {err}");
            return EXIT_USAGE;
        }
    };
    let text = if json {
        report.to_json() + "\n"
    } else {
        report.to_text()
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not a failure of the inspection.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    report.exit_code()
}
