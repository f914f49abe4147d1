//! The `mountlag` command line: parse, set up logging, run a subcommand, map to an exit code.
//!
//! [`agent`] runs the agent, [`inspect`] reads volume directories, [`status`] (with
//! [`status_client`]) asks a running agent, [`lint`] checks a namespace or the cluster through
//! the API ([`kubeconfig`]: the user's connection); `check-config` is the config loader's.

pub mod agent;
pub mod inspect;
pub mod kubeconfig;
pub mod lint;
pub mod status;
pub mod status_client;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

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
    /// Query a running agent's /status and print it as a table (or unchanged with --json);
    /// with --cluster (the default as `kubectl mountlag`), every node's agent through the
    /// Kubernetes API.
    ///
    /// Exit status: 0 all mounts fine, 1 a mount is stuck, reload_unverified,
    /// invalid_material or unreadable, 2 the endpoint cannot be reached (with --cluster: the
    /// API, or any node's agent).
    Status(StatusArgs),
    /// Check the TLS setup of a namespace (or every namespace) through the Kubernetes API:
    /// the Secrets Ingresses, Gateways and controller pods use (missing, wrong type, invalid or
    /// expiring material), TLS hosts without a Secret or with two, subPath mounts, unused TLS
    /// Secrets and cert-manager's Certificates and issuers (docs/lint.md).
    ///
    /// Exit status: 0 no finding at --fail-on or worse, 1 such findings, 2 usage error, or the
    /// API cannot be reached or refuses a read (one line on stderr).
    Lint(LintArgs),
}

/// Severities `--fail-on` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Error,
    Warning,
    Info,
}

impl FailOn {
    pub fn severity(self) -> lint::Severity {
        match self {
            FailOn::Error => lint::Severity::Error,
            FailOn::Warning => lint::Severity::Warning,
            FailOn::Info => lint::Severity::Info,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// Only this namespace [default: the kubeconfig context's namespace, as kubectl].
    #[arg(
        short = 'n',
        long,
        value_name = "NAMESPACE",
        conflicts_with = "all_namespaces"
    )]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Print one JSON document (shape: docs/lint.md).
    #[arg(long)]
    pub json: bool,
    /// Findings of this severity or worse make the exit status 1.
    #[arg(long, value_enum, value_name = "SEVERITY", default_value_t = FailOn::Warning)]
    pub fail_on: FailOn,
    /// How long a Certificate or issuer may be not Ready, or a renewal late, before it is a
    /// finding [default: the config's certManager.gracePeriod, 10m].
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub grace: Option<std::time::Duration>,
    /// The agent's configuration file: its controller profiles say which pods are controllers
    /// and which Ingress and Gateway objects each serves [default: the built-in profiles].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Path to the kubeconfig file (default: KUBECONFIG, else ~/.kube/config, else the
    /// in-cluster configuration).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Base URL of the agent's health endpoint: its --status-listen address, else its
    /// --listen address. Default: http://127.0.0.1:9978 (the shipped DaemonSet's
    /// --status-listen), then http://127.0.0.1:9977 when nothing listens there.
    #[arg(long, value_name = "URL", conflicts_with_all = ["cluster", "node", "namespace", "kubeconfig", "context"])]
    pub endpoint: Option<String>,
    /// Print the /status document unchanged (with --cluster: one document, one entry per
    /// node).
    #[arg(long)]
    pub json: bool,
    /// Refresh every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Ask every node's agent through the Kubernetes API server (a port-forward to each agent
    /// pod; needs `list` pods and `get`, `create` pods/portforward in the agents' namespace).
    /// The default when run as `kubectl mountlag`; implied by --node, -n, --kubeconfig and
    /// --context.
    #[arg(long)]
    pub cluster: bool,
    /// Only the agent on this node.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// The agents' namespace [default: mountlag-system] (not the kubeconfig context's).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Path to the kubeconfig file (default: KUBECONFIG, else ~/.kube/config, else the
    /// in-cluster configuration).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl StatusArgs {
    /// Whom to ask: the cluster when asked for, implied by a cluster flag, or run as
    /// `kubectl mountlag` without --endpoint; else the local agent.
    pub fn target(self, as_plugin: bool) -> status::Target {
        let cluster = self.cluster
            || self.node.is_some()
            || self.namespace.is_some()
            || self.kubeconfig.is_some()
            || self.context.is_some()
            || (as_plugin && self.endpoint.is_none());
        if cluster {
            status::Target::Cluster(status::ClusterOptions {
                namespace: self.namespace,
                node: self.node,
                kubeconfig: self.kubeconfig,
                context: self.context,
            })
        } else {
            status::Target::Local(self.endpoint)
        }
    }
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

/// The executable name that makes this binary a kubectl plugin: kubectl runs
/// `kubectl-mountlag ARGS` for `kubectl mountlag ARGS`.
pub const PLUGIN_NAME: &str = "kubectl-mountlag";

static AS_PLUGIN: OnceLock<bool> = OnceLock::new();

/// Whether this process was started as [`PLUGIN_NAME`] (its argv[0] file name).
pub fn as_plugin() -> bool {
    *AS_PLUGIN.get_or_init(|| {
        std::env::args_os()
            .next()
            .map(PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n == PLUGIN_NAME))
            .unwrap_or(false)
    })
}

/// How the user typed the command: `kubectl mountlag` or `mountlag`.
pub fn program() -> &'static str {
    if as_plugin() {
        "kubectl mountlag"
    } else {
        "mountlag"
    }
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let cli = if as_plugin() {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Cli::command()
            .name(PLUGIN_NAME)
            .bin_name(program())
            .display_name(program())
            .get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    } else {
        Cli::parse()
    };
    // `status` reports its own errors, one line each; kube-rs' own error log would repeat them.
    let default_filter = match cli.command {
        Command::Status(_) | Command::Lint(_) => "warn,kube_client=off",
        _ => "info",
    };
    init_tracing(cli.log_format, default_filter);
    ExitCode::from(run(cli))
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
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
        Command::Status(args) => {
            let (json, watch) = (args.json, args.watch);
            crate::cmd::status::run(args.target(as_plugin()), json, watch)
        }
        Command::Lint(args) => run_lint(args),
    }
}

fn run_lint(args: LintArgs) -> u8 {
    let config = match &args.config {
        Some(path) => match crate::config::Config::load(path) {
            Ok(config) => config,
            Err(errors) => {
                eprintln!("{} lint: invalid configuration:\n{errors}", program());
                return EXIT_USAGE;
            }
        },
        None => crate::config::Config::default(),
    };
    let options = lint::LintOptions {
        namespace: args.namespace,
        all_namespaces: args.all_namespaces,
        json: args.json,
        grace: args.grace.unwrap_or(config.cert_manager.grace_period),
        fail_on: args.fail_on.severity(),
        kubeconfig: args.kubeconfig,
        context: args.context,
        config,
    };
    lint::run(options)
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
