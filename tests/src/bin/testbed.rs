//! `testbed`: a Kubernetes node on one machine (demo, benches).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mountlag_testbed::{bench, bench_api, bench_footprint, demo};

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
    /// Long fault and load runs; figures go to docs/reliability.md (needs root, nginx, HAProxy).
    Chaos {
        #[command(subcommand)]
        what: Chaos,
    },
}

#[derive(Debug, Subcommand)]
enum Chaos {
    /// Rotations across many pods (alternately nginx and HAProxy) under TLS load with new
    /// and keep-alive connections: failed requests, reloads per version, agent RSS and fds.
    Soak {
        /// Pods, each its own controller.
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// Rotations in all, spread evenly over the pods.
        #[arg(long, default_value_t = 10_000)]
        rotations: usize,
        /// Pods under TLS load.
        #[arg(long, default_value_t = 4)]
        loaded_pods: usize,
        /// New-connection loops per loaded pod.
        #[arg(long, default_value_t = 2)]
        new_connection_loops: usize,
        /// Keep-alive connections per loaded pod.
        #[arg(long, default_value_t = 2)]
        keepalive_connections: usize,
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
    /// `..data` rename → reload signal (vs inotify floor), → new leaf served by nginx and
    /// HAProxy; Secret updated in the API → new leaf verified; with `--parts http`, rename →
    /// HTTP reload request received for an inotify floor, configmap-reload and mountlag.
    Reload {
        /// Parts to run (comma-separated): signal, served, headline, http, all.
        #[arg(long, value_delimiter = ',', default_value = "signal,served,headline")]
        parts: Vec<String>,
        /// Swaps per subject for rename → signal and rename → HTTP request.
        #[arg(long, default_value_t = 300)]
        swaps: usize,
        /// Alternating blocks for rename → signal and rename → HTTP request.
        #[arg(long, default_value_t = 10)]
        blocks: usize,
        /// Pause after each swap of the signal and http parts, milliseconds (the CPU window).
        #[arg(long, default_value_t = 20)]
        pause_ms: u64,
        /// configmap-reload v0.2.1 for the http part (tests/bench/build-configmap-reload.sh);
        /// its row says skipped when absent.
        #[arg(
            long,
            env = "CONFIGMAP_RELOAD",
            default_value = "/opt/configmap-reload/configmap-reload-v0.2.1"
        )]
        configmap_reload: std::path::PathBuf,
        /// Rotations per controller for rename → served.
        #[arg(long, default_value_t = 50)]
        served: usize,
        /// Rotations through the API for the headline figure (about 8 s each).
        #[arg(long, default_value_t = 12)]
        headline: usize,
        /// signal and http parts: put each new leaf in the API, and wait until the agent has
        /// seen it, before swapping the files (a cluster's order); by default the files change
        /// alone.
        #[arg(long)]
        api_first: bool,
    },
    /// Secret updated in the API → new leaf served by nginx and verified, for each
    /// `nudge.after`, with the API requests a rotation costs.
    Headline {
        /// Rotations per value (about 6 s each).
        #[arg(long, default_value_t = 12)]
        rotations: usize,
        /// `nudge.after` values, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "2s,500ms,250ms,100ms,0s")]
        nudge_after: Vec<String>,
        /// kubelet stand-in delay between a pod change and its sync, milliseconds.
        #[arg(long, default_value_t = 0)]
        pod_change_delay_ms: u64,
    },
    /// API side: API change → disk with and without the nudge, API load, start → ready
    /// (needs root: it mounts tmpfs).
    Api {
        /// Parts to run (comma-separated): lag, load, ready, all.
        #[arg(long, value_delimiter = ',', default_value = "all")]
        parts: Vec<String>,
        /// Secret rotations per lag run.
        #[arg(long, default_value_t = 20)]
        rotations: usize,
        /// kubelet stand-in time factor of the run without the nudge (0.02: syncs every 1.2–1.8 s).
        #[arg(long, default_value_t = 0.02)]
        time_factor: f64,
        /// `nudge.after` of the run with the nudge (the agent's default).
        #[arg(long, default_value = "250ms")]
        nudge_after: String,
        /// kubelet stand-in delay between a pod annotation change and its sync, milliseconds.
        #[arg(long, default_value_t = 0)]
        pod_change_delay_ms: u64,
        /// Idle steady-state window of the load part, seconds.
        #[arg(long, default_value_t = 60)]
        window_s: u64,
        /// Controller pods of the load part.
        #[arg(long, default_value_t = 50)]
        load_pods: usize,
        /// Secret volumes per pod of the load part.
        #[arg(long, default_value_t = 4)]
        load_per_pod: usize,
        /// Distinct Secrets of the load part.
        #[arg(long, default_value_t = 200)]
        load_secrets: usize,
        /// Tracked mounts of the ready part.
        #[arg(long, default_value_t = 1000)]
        ready_mounts: usize,
        /// Secret volumes per pod of the ready part.
        #[arg(long, default_value_t = 4)]
        ready_per_pod: usize,
        /// Distinct Secrets of the ready part.
        #[arg(long, default_value_t = 1000)]
        ready_secrets: usize,
        /// Agent starts of the ready part.
        #[arg(long, default_value_t = 3)]
        ready_repeats: usize,
        /// Repeat the ready part with the same mounts sharing this many Secrets (0: no).
        #[arg(long, default_value_t = 4)]
        ready_shared_secrets: usize,
    },
    /// Secret updated in the API → new leaf served by an API-driven (ingress-nginx-style)
    /// controller and verified by the agent with the shipped defaults, per controller lag
    /// (needs root: it mounts tmpfs).
    ApiDriven {
        /// Rotations per lag.
        #[arg(long, default_value_t = 12)]
        rotations: usize,
        /// Ingress hosts, one Secret each; a rotation renews them all, one after the other.
        #[arg(long, default_value_t = 1)]
        hosts: usize,
        /// The controller applies what it sees this much later, milliseconds, comma-separated
        /// (ingress-nginx's `--sync-rate-limit` of 0.3/s can hold a change up to ~3.3 s).
        #[arg(long, value_delimiter = ',', default_value = "0,3300")]
        lags_ms: Vec<u64>,
    },
    /// What continuous verification costs: handshakes/s and CPU per handshake, idle CPU and
    /// API requests at the defaults, for N Ingress hosts (needs root: it mounts tmpfs).
    Verify {
        /// Ingress hosts per row.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        hosts: Vec<usize>,
        /// Busy window per row, seconds.
        #[arg(long, default_value_t = 20)]
        busy_window_s: u64,
        /// Idle window per row, seconds.
        #[arg(long, default_value_t = 120)]
        idle_window_s: u64,
        /// Window of the node without controller pods, seconds.
        #[arg(long, default_value_t = 600)]
        no_pods_window_s: u64,
    },
    /// Many real agents, one process each with its own node and API user, against one API
    /// stand-in: requests, response bytes and watches per agent through a start storm, an idle
    /// window and a renewal wave (needs root: it mounts tmpfs).
    Scale {
        /// Agents (nodes) in all.
        #[arg(long, default_value_t = 500)]
        agents: usize,
        /// Nodes with a controller pod, API-driven ones included.
        #[arg(long, default_value_t = 20)]
        controller_nodes: usize,
        /// Of those, nodes with an ingress-nginx pod (hosts from Ingresses) instead of a pod
        /// mounting its Secrets.
        #[arg(long, default_value_t = 4)]
        api_driven_nodes: usize,
        /// Secrets each mounting node's pod mounts; Ingress hosts the ingress-nginx pods serve.
        #[arg(long, default_value_t = 50)]
        secrets_per_node: usize,
        /// TLS Secrets no controller uses (what a cluster-wide list would carry).
        #[arg(long, default_value_t = 1000)]
        unused_secrets: usize,
        /// Idle window, seconds.
        #[arg(long, default_value_t = 600)]
        window_s: u64,
        /// The renewal wave's rotations are spread over this many seconds.
        #[arg(long, default_value_t = 60)]
        wave_spread_s: u64,
        /// API stand-in BOOKMARK interval, seconds (the real server: about 60).
        #[arg(long, default_value_t = 60)]
        bookmark_interval_s: u64,
    },
    /// Agent RSS, idle CPU and wakeups, scrape latency (needs root: it mounts tmpfs).
    Footprint {
        /// Idle window per row, seconds.
        #[arg(long, default_value_t = 30)]
        window_s: u64,
        /// Tracked mounts per row (one distinct Secret per mount).
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        mounts: Vec<usize>,
        /// Secret volumes per pod.
        #[arg(long, default_value_t = 4)]
        per_pod: usize,
        /// Extra row: the largest mount count sharing this many Secrets (0: none).
        #[arg(long, default_value_t = 4)]
        shared_secrets: usize,
        /// API stand-in BOOKMARK interval, seconds (the real server: about 60).
        #[arg(long, default_value_t = 60)]
        bookmark_interval_s: u64,
        /// Requests per endpoint for the scrape latency.
        #[arg(long, default_value_t = 100)]
        scrapes: usize,
        /// Pause between steady state and the idle window, seconds.
        #[arg(long, default_value_t = 3)]
        settle_s: u64,
        /// Agent with `api.http2: false` (one HTTP/1.1 connection per watch), to compare.
        #[arg(long)]
        api_http1: bool,
        /// After the scrapes, renew every Secret at once and time the agent through it.
        #[arg(long)]
        burst: bool,
        /// Run the agent under this CPU limit in millicores (CFS quota, as kubelet sets
        /// `resources.limits.cpu`), e.g. 100 for the DaemonSet's limit.
        #[arg(long)]
        agent_cpu_limit_m: Option<u32>,
        /// Pods and Secrets as a real cluster serves them: managed fields on every object,
        /// cert-manager's annotations on the Secrets (the stand-in adds neither).
        #[arg(long)]
        managed_fields: bool,
        /// After the scrapes, stop the API stand-in for this many seconds (connections
        /// refused), then start it again and time the agent back to ready.
        #[arg(long)]
        outage_s: Option<u64>,
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
        Command::Chaos {
            what:
                Chaos::Soak {
                    pods,
                    rotations,
                    loaded_pods,
                    new_connection_loops,
                    keepalive_connections,
                },
        } => {
            let options = mountlag_testbed::chaos::SoakOptions {
                pods,
                rotations,
                loaded_pods,
                new_connection_loops,
                keepalive_connections,
                ..mountlag_testbed::chaos::SoakOptions::default()
            };
            let report = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(mountlag_testbed::chaos::soak(&options))?;
            println!("{report}");
            anyhow::ensure!(
                report.failed_requests() == 0
                    && report.max_reloads_per_pod <= report.rounds
                    && report.warnings.is_empty(),
                "the soak failed its promises (0 failed requests, one reload per version, no Warning)"
            );
            Ok(())
        }
        Command::Bench {
            what:
                Bench::Verify {
                    hosts,
                    busy_window_s,
                    idle_window_s,
                    no_pods_window_s,
                },
        } => mountlag_testbed::bench_verify::run(
            &mountlag_testbed::bench_verify::VerifyBenchOptions {
                hosts,
                busy_window_s,
                idle_window_s,
                no_pods_window_s,
            },
        ),
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
        Command::Bench {
            what:
                Bench::Reload {
                    parts,
                    swaps,
                    blocks,
                    pause_ms,
                    configmap_reload,
                    served,
                    headline,
                    api_first,
                },
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(mountlag_testbed::bench_reload::run(
                &mountlag_testbed::bench_reload::ReloadBench {
                    parts,
                    swaps,
                    blocks,
                    served,
                    headline,
                    pause: Duration::from_millis(pause_ms),
                    configmap_reload: Some(configmap_reload),
                    api_first,
                },
            )),
        Command::Bench {
            what:
                Bench::ApiDriven {
                    rotations,
                    hosts,
                    lags_ms,
                },
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(mountlag_testbed::bench_api_driven::run(
                rotations,
                hosts,
                &lags_ms
                    .iter()
                    .map(|ms| Duration::from_millis(*ms))
                    .collect::<Vec<_>>(),
            )),
        Command::Bench {
            what:
                Bench::Headline {
                    rotations,
                    nudge_after,
                    pod_change_delay_ms,
                },
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(mountlag_testbed::bench_reload::headline_sweep(
                rotations,
                &nudge_after,
                &mountlag_testbed::bench_reload::HeadlineShape {
                    pod_change_delay: Duration::from_millis(pod_change_delay_ms),
                },
            )),
        Command::Bench {
            what:
                Bench::Api {
                    parts,
                    rotations,
                    time_factor,
                    nudge_after,
                    pod_change_delay_ms,
                    window_s,
                    load_pods,
                    load_per_pod,
                    load_secrets,
                    ready_mounts,
                    ready_per_pod,
                    ready_secrets,
                    ready_repeats,
                    ready_shared_secrets,
                },
        } => bench_api::run(&bench_api::ApiBenchOptions {
            parts,
            rotations,
            time_factor,
            nudge_after,
            pod_change_delay: Duration::from_millis(pod_change_delay_ms),
            window: Duration::from_secs(window_s),
            load_pods,
            load_secrets,
            load_per_pod,
            ready_mounts,
            ready_per_pod,
            ready_secrets,
            ready_repeats,
            ready_shared_secrets,
        }),
        Command::Bench {
            what:
                Bench::Scale {
                    agents,
                    controller_nodes,
                    api_driven_nodes,
                    secrets_per_node,
                    unused_secrets,
                    window_s,
                    wave_spread_s,
                    bookmark_interval_s,
                },
        } => mountlag_testbed::bench_scale::run(&mountlag_testbed::bench_scale::ScaleOptions {
            agents,
            controller_nodes,
            api_driven_nodes,
            secrets_per_node,
            unused_secrets,
            window: Duration::from_secs(window_s),
            wave_spread: Duration::from_secs(wave_spread_s),
            bookmark_interval: Duration::from_secs(bookmark_interval_s),
        }),
        Command::Bench {
            what:
                Bench::Footprint {
                    window_s,
                    mounts,
                    per_pod,
                    shared_secrets,
                    bookmark_interval_s,
                    scrapes,
                    settle_s,
                    api_http1,
                    burst,
                    agent_cpu_limit_m,
                    managed_fields,
                    outage_s,
                },
        } => bench_footprint::run(&bench_footprint::FootprintOptions {
            window: Duration::from_secs(window_s),
            mounts,
            per_pod,
            shared_secrets,
            bookmark_interval: Duration::from_secs(bookmark_interval_s),
            scrapes,
            settle: Duration::from_secs(settle_s),
            api_http1,
            burst,
            agent_cpu_limit_m,
            managed_fields,
            outage: outage_s.map(Duration::from_secs),
        }),
    }
}
