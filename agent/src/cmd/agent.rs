//! `mountlag agent`: the wiring. Watches and the inotify watcher feed one loop; the loop feeds
//! the node model (`mountlag-core`) and hands its actions to the one executor.
//!
//! ```text
//!  pod watch (spec.nodeName) ──┐
//!  Secret watches (1 per ref) ─┼─▶ Input channel ──▶ Node::step (pure) ──▶ Effects::perform
//!  VolumeWatcher (inotify) ────┤        ▲                 │        ▲           │
//!  reload and probe results ───┘        │                 │        └─ results ─┘ (at once)
//!                       timer: Node::next_deadline        └─▶ Node::publish_if_due ─▶ /status, gauges
//! ```
//!
//! One task owns the node; every other task only sends it inputs. A pod watch or inotify loop
//! that dies ends the agent with an error. Nothing here decides what to do next.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mountlag_core::action::ClusterWatch;
use mountlag_core::cert::SharedPemCache;
use mountlag_core::node::{Input, Node, Now};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

use crate::admin::{self, Liveness, StatusSnapshot};
use crate::config::Config;
use crate::disk::{RescanReason, VolumeChange, VolumeWatcher, WatchMetrics, WatcherConfig};
use crate::effects::perform::{EffectTargets, Effects};
use crate::effects::{EffectMetrics, EventLimiter, Executor};
use crate::k8s::sinks::{KubeEventPublisher, KubePodPatcher};
use crate::k8s::watches::{watch_pods, watch_secret};

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub config: Config,
    pub node_name: String,
    pub kubelet_root: PathBuf,
    pub proc_root: PathBuf,
    pub listen: SocketAddr,
    /// `--status-listen`: a second, node-local listener that serves every endpoint; `/status`
    /// is then served only there. `None`: `/status` on `listen`.
    pub status_listen: Option<SocketAddr>,
}

/// Inputs handled back to back before the loop looks at timers and publishes again.
const MAX_BATCH: usize = 256;

/// Secret lists in flight at once (docs/benchmarks.md, session 15): a start or a relist after
/// an outage with 1,000 Secrets holds 128 list answers at a time, not 1,000 (−6 MiB of RSS for
/// good: glibc keeps the start's high-water), and the API server sees a bounded burst. 32 and
/// 64 saved a little more memory but slowed the start by half a second; 128 did not.
const SECRET_LISTS_AT_ONCE: usize = 128;

/// Runs the agent until `shutdown` resolves.
pub async fn run_agent(
    options: AgentOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let kube_config = kube::Config::infer()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let client = crate::k8s::client::build(kube_config, options.config.api)
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let mut registry = Registry::default();
    let metrics = EffectMetrics::register(&mut registry);
    let rescans = WatchMetrics::register(&mut registry);
    // PEM verdicts by content digest: filled by the Secret watches, read by the executor's
    // volume reads.
    let pem_cache = SharedPemCache::default();
    admin::register_pem_cache(&mut registry, pem_cache.clone());
    let registry = Arc::new(registry);

    let disk = crate::disk::disk_status(&options.kubelet_root);
    let (status_tx, status_rx) = watch::channel(Arc::new(StatusSnapshot {
        node: options.node_name.clone(),
        ready: false,
        waiting_for: vec!["pods not listed yet".into()],
        disk: disk.clone(),
        mounts: Vec::new(),
        hosts: Vec::new(),
        cert_manager: None,
    }));
    let listener = admin::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let status_listener = match options.status_listen {
        Some(addr) => Some(
            admin::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--status-listen)"))?,
        ),
        None => None,
    };
    tracing::info!(
        listen = %options.listen,
        status_listen = ?options.status_listen,
        node = %options.node_name,
        "mountlag agent starting"
    );
    let liveness = Liveness::new();
    let reconcile_beat = liveness.register(admin::loops::RECONCILE, Duration::from_secs(30));
    let pods_beat = liveness.register(admin::loops::POD_WATCH, Duration::from_secs(30));
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin_stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let admin_server =
        admin::AdminServer::new(Arc::clone(&registry), status_rx).liveness(liveness.clone());
    // Each listener has its own connection slots: clients of the public one (pod network)
    // cannot take those of the node-local one.
    let mut admin_tasks = vec![tokio::spawn(
        admin_server
            .clone()
            .serve_status(status_listener.is_none())
            .serve(listener, admin_stopped(admin_stop_rx.clone())),
    )];
    if let Some(status_listener) = status_listener {
        admin_tasks.push(tokio::spawn(
            admin_server.serve(status_listener, admin_stopped(admin_stop_rx)),
        ));
    }

    let (input_tx, mut input_rx) = mpsc::unbounded_channel();
    let volume_tx = input_tx.clone();
    let volumes = VolumeWatcher::new(
        WatcherConfig::default(),
        Box::new(move |change| {
            let _ = volume_tx.send(volume_input(change, &rescans));
        }),
    )
    .context("cannot start the inotify watcher")?;

    let config = Arc::new(options.config.clone());
    let pod_task = tokio::spawn(watch_pods(
        client.clone(),
        options.node_name.clone(),
        Arc::clone(&config),
        input_tx.clone(),
        pods_beat,
    ));
    let settings = config.node_settings(&options.node_name, &options.kubelet_root, disk);
    let mut node = Node::new(settings, Instant::now());
    let secret_client = client.clone();
    let secret_tx = input_tx.clone();
    let secret_pem_cache = pem_cache.clone();
    let secret_lists = Arc::new(tokio::sync::Semaphore::new(SECRET_LISTS_AT_ONCE));
    let route_client = client.clone();
    let route_tx = input_tx.clone();
    let secret_watch = crate::k8s::watch_config(&config.api);
    let route_watch = secret_watch.clone();
    let cluster_client = client.clone();
    let restart_client = client.clone();
    let cluster_tx = input_tx.clone();
    let cluster_watch_config = secret_watch.clone();
    let cluster_config = Arc::clone(&config);
    // The loop runs in a LocalSet: HTTP reloads run as its local tasks, on this thread.
    let local = tokio::task::LocalSet::new();
    let (here, run_here) = crate::effects::http_reload::spawner_here();
    local.spawn_local(run_here);
    let mut effects = Effects::new(EffectTargets {
        executor: Executor::new(
            Arc::new(KubePodPatcher::new(client.clone())),
            Arc::new(KubeEventPublisher::new(client, &options.node_name)),
            EventLimiter::default(),
            metrics.executor.clone(),
        ),
        metrics,
        config,
        proc_root: options.proc_root.clone(),
        volumes,
        pem_cache,
        spawn_secret_watch: Box::new(move |key| {
            tokio::spawn(watch_secret(
                secret_client.clone(),
                key,
                secret_watch.clone(),
                secret_tx.clone(),
                secret_pem_cache.clone(),
                Arc::clone(&secret_lists),
            ))
        }),
        restarter: Arc::new(crate::k8s::workloads::KubeWorkloadRestarter::new(
            restart_client,
        )),
        spawn_cluster_watch: Box::new(move |watch| match watch {
            ClusterWatch::CertManager(kind) => {
                tokio::spawn(crate::k8s::certmanager::watch_cert_manager(
                    cluster_client.clone(),
                    kind,
                    cluster_watch_config.clone(),
                    cluster_tx.clone(),
                ))
            }
            ClusterWatch::Peers(controller) => tokio::spawn(crate::k8s::certmanager::watch_peers(
                cluster_client.clone(),
                controller,
                Arc::clone(&cluster_config),
                cluster_tx.clone(),
            )),
        }),
        spawn_route_watch: Box::new(move |kind| {
            tokio::spawn(crate::k8s::routes::watch_routes(
                route_client.clone(),
                kind,
                route_watch.clone(),
                route_tx.clone(),
            ))
        }),
        here,
        later: input_tx,
        status: status_tx,
    });

    tokio::pin!(shutdown);
    let stall_for_test = Liveness::stall_requested(admin::loops::RECONCILE);
    let mut ready_seen = false;
    // One timer for the model's next deadline, moved only when the deadline moves: a timer
    // made afresh on every turn of the loop was registered with the runtime's time driver each
    // time, and the driver (parked on a worker thread) woken to take it.
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    let result = local
        .run_until(async {
            loop {
                if stall_for_test && ready_seen {
                    // Test hook (MOUNTLAG_TEST_STALL): wedge the loop so /livez must notice.
                    tracing::warn!("MOUNTLAG_TEST_STALL: the reconcile loop stops making progress");
                    std::future::pending::<()>().await;
                }
                let deadline = node.next_deadline();
                if deadline != armed {
                    if let Some(at) = deadline {
                        sleep.as_mut().reset(at.into());
                    }
                    armed = deadline;
                }
                tokio::select! {
                    () = &mut shutdown => break Ok(()),
                    input = input_rx.recv() => match input {
                        Some(input) => {
                            pump(&mut node, &mut effects, input);
                            // A burst (every Secret listed at start, a kubelet sync touching many
                            // volumes) is handled as one batch: one status snapshot, not one per input.
                            for _ in 0..MAX_BATCH {
                                match input_rx.try_recv() {
                                    Ok(input) => pump(&mut node, &mut effects, input),
                                    Err(_) => break,
                                }
                            }
                        }
                        None => break Err(anyhow::anyhow!("every input of the agent loop closed")),
                    },
                    () = &mut sleep, if armed.is_some() => {
                        // Fired: re-armed on the next turn even for the same instant.
                        armed = None;
                        pump(&mut node, &mut effects, Input::Tick);
                    }
                    () = reconcile_beat.pinged() => {}
                }
                if effects.take_local_work() {
                    // The reload request is written by a task of this thread's LocalSet, which
                    // runs only once this future yields: let it go out before the status is
                    // rebuilt.
                    tokio::task::yield_now().await;
                }
                reconcile_beat.beat();
                if pod_task.is_finished() {
                    break Err(anyhow::anyhow!("the pod watch stopped"));
                }
                if let Some(publication) = node.publish_if_due(now()) {
                    ready_seen |= publication.status.ready;
                    effects.publish(publication);
                }
            }
        })
        .await;
    effects.mark_unready("shutting down");
    // Let load balancers and kubelet see the unready answer before the listener closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    effects.stop_watches();
    pod_task.abort();
    let _ = admin_stop_tx.send(true);
    for task in admin_tasks {
        let _ = task.await;
    }
    tracing::info!("mountlag agent stopped");
    result
}

/// Feeds one input to the node and its actions to the executor, and the executor's immediate
/// answers back to the node, until nothing is left.
fn pump(node: &mut Node, effects: &mut Effects, input: Input) {
    let mut inputs = VecDeque::from([input]);
    while let Some(input) = inputs.pop_front() {
        for action in node.step(input, now()) {
            inputs.extend(effects.perform(action));
        }
    }
}

fn now() -> Now {
    Now {
        at: Instant::now(),
        utc: time::OffsetDateTime::now_utc(),
    }
}

/// What the watcher saw, as a node input; rescans are counted here, where they are observed.
fn volume_input(change: VolumeChange, rescans: &WatchMetrics) -> Input {
    match change {
        VolumeChange::Generation { volume, .. } => Input::VolumeChanged { path: volume },
        VolumeChange::Unmounted { volume } => Input::VolumeUnmounted { path: volume },
        VolumeChange::MountsChanged { mount_points } => {
            rescans.rescanned(RescanReason::MountTable);
            Input::MountsChanged { mount_points }
        }
        VolumeChange::Rescanned { reason } => {
            rescans.rescanned(reason);
            Input::VolumesRescanned { reason }
        }
    }
}
