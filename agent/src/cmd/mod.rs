//! The `mountlag` command line: parse, set up logging, run a subcommand, map to an exit code.
//!
//! [`agent`] runs the agent, [`inspect`] reads volume directories, [`status`] (with
//! [`status_client`]) asks a running agent; `check-config` is the config loader's.

pub mod agent;
pub mod inspect;
pub mod status;
pub mod status_client;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

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
    /// Run the node agent (the DaemonSet entrypoint).
    Agent(AgentArgs),
    /// Validate a configuration file; every error is reported with its key and line.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
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
    /// Query a running agent's /status and print it as a table (or unchanged with --json).
    ///
    /// Exit status: 0 all mounts fine, 1 a mount is stuck, reload_unverified,
    /// invalid_material or unreadable, 2 the endpoint cannot be reached.
    Status {
        /// Base URL of the agent's health endpoint: its --status-listen address, else its
        /// --listen address. Default: http://127.0.0.1:9978 (the shipped DaemonSet's
        /// --status-listen), then http://127.0.0.1:9977 when nothing listens there.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// Print the /status document unchanged.
        #[arg(long)]
        json: bool,
        /// Refresh every second until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Configuration file (YAML); built-in defaults when absent.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's name (the pod watch is scoped to it).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// kubelet's root directory.
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub kubelet_root: PathBuf,
    /// Where the host's /proc is visible.
    #[arg(long, default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Address of the health endpoint (/livez, /readyz, /metrics, /status).
    #[arg(long, default_value = "0.0.0.0:9977")]
    pub listen: std::net::SocketAddr,
    /// A node-local address (e.g. 127.0.0.1:9978) that serves every endpoint; /status is then
    /// served only there, not on --listen: it names namespaces, pods, Secrets and hosts.
    /// `mountlag status` inside the pod finds it at 127.0.0.1:9978.
    #[arg(long, value_name = "ADDR")]
    pub status_listen: Option<std::net::SocketAddr>,
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    ExitCode::from(run(cli))
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
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
        Command::CheckConfig { file } => crate::config::check_config_command(&file),
        Command::Agent(args) => run_agent(args),
        Command::Status {
            endpoint,
            json,
            watch,
        } => crate::cmd::status::run(endpoint.as_deref(), json, watch),
    }
}

fn run_agent(args: AgentArgs) -> u8 {
    let config = match &args.config {
        Some(path) => match crate::config::Config::load(path) {
            Ok(config) => config,
            Err(errors) => {
                eprintln!("mountlag agent: invalid configuration:\n{errors}");
                return EXIT_USAGE;
            }
        },
        None => crate::config::Config::default(),
    };
    let options = crate::cmd::agent::AgentOptions {
        config,
        node_name: args.node_name,
        kubelet_root: args.kubelet_root,
        proc_root: args.proc_root,
        listen: args.listen,
        status_listen: args.status_listen,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mountlag agent: cannot start the runtime: {err}");
            return 1;
        }
    };
    match runtime.block_on(crate::cmd::agent::run_agent(options, shutdown_signal())) {
        Ok(()) => 0,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "agent failed");
            1
        }
    }
}

/// Resolves on SIGTERM (kubelet stopping the pod) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
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
