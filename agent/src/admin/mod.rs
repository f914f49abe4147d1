//! The node-local health endpoint: `/livez`, `/readyz`, `/metrics`, `/status`, and the
//! `mountlag status` client that reads it.
//!
//! ```text
//!  reconcile loop ──(watch channel: Arc<StatusSnapshot>)──▶ /readyz /status ──▶ mountlag status
//!  modules' metrics ──(one prometheus-client Registry)────▶ /metrics (+ process_*, inotify)
//!  loops' Heartbeats ──(atomics + on-demand ping)─────────▶ /livez
//! ```
//!
//! Handlers only read a published snapshot, check atomics and encode the registry: no locks
//! held across awaits, no work beyond encoding on a scrape (the `process_*` metrics read four
//! small files of `/proc/self`).
//!
//! Modules: [`server`] (accept loop, limits, routing), [`slots`] (which connection gets a slot
//! when the server is full), [`liveness`] (loops and heartbeats),
//! [`metrics`] (registry additions and encoding), [`status_cli`] (`mountlag status`),
//! [`client`] (the minimal HTTP client it uses).
//!
//! # What `run.rs` calls
//!
//! ```ignore
//! use mountlag::admin::{self, AdminServer, AgentMetrics, Liveness, StatusSnapshot};
//!
//! // 1. One registry; every module registers into it. AgentMetrics also registers
//! //    mountlag_build_info and the process_* collector.
//! let mut registry = Registry::default();
//! let agent_metrics = AgentMetrics::register(&mut registry);
//! let watches = Arc::new(AtomicUsize::new(0));          // the watcher keeps it current
//! admin::register_inotify_watches(&mut registry, Arc::clone(&watches));
//! let registry = Arc::new(registry);
//!
//! // 2. Liveness: one Heartbeat per loop that must keep making progress.
//! let liveness = Liveness::new();
//! let reconcile_hb = liveness.register(admin::loops::RECONCILE, Duration::from_secs(30));
//! let pods_hb = liveness.register(admin::loops::POD_WATCH, Duration::from_secs(30));
//! //    in the reconcile select!:   () = reconcile_hb.pinged() => continue,
//! //    after handling an input:    reconcile_hb.beat();
//! //    in the pod watch loop:      pods_hb.answer_pings_while(stream.try_next()).await
//! //    test hook (test-only):      if Liveness::stall_requested(admin::loops::RECONCILE)
//! //                                    && ready { std::future::pending::<()>().await }
//!
//! // 3. The server.
//! let listener = admin::bind(options.listen).await?;
//! let admin_task = tokio::spawn(
//!     AdminServer::new(Arc::clone(&registry), status_rx)
//!         .liveness(liveness.clone())
//!         .serve(listener, async { let _ = admin_stop_rx.await; }),
//! );
//!
//! // 4. Shutdown: unready first, then drain.
//! admin::mark_unready(&status_tx, "shutting down");
//! let _ = admin_stop_tx.send(());
//! let _ = admin_task.await;
//! ```
//!
//! [`serve`] (registry, status, shutdown) is kept for callers without liveness.

pub mod liveness;
pub mod metrics;
pub mod server;
pub mod slots;

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use liveness::{Heartbeat, Liveness, LivenessReport, Stalled};
pub use metrics::{AgentMetrics, ProcessCollector, register_inotify_watches, register_pem_cache};
pub use server::{AdminServer, Limits, serve_with_liveness};

/// Suggested loop names for [`Liveness::register`] (stable: `/livez` bodies, the test hook
/// `MOUNTLAG_TEST_STALL=<name>` and docs/operations.md use them).
pub mod loops {
    /// The loop that owns the mount index and publishes the status.
    pub const RECONCILE: &str = "reconcile";
    /// The node's pod watch.
    pub const POD_WATCH: &str = "pod_watch";
    /// The inotify / mount table watcher.
    pub const INOTIFY: &str = "inotify";
    /// The action executor.
    pub const EXECUTOR: &str = "executor";
}

pub use mountlag_core::status::{DiskStatus, StatusSnapshot};

/// Flips the published status to unready (keeping the mounts), e.g. `"shutting down"`: call it
/// before resolving the server's shutdown future so `/readyz` answers 503 while it drains.
pub fn mark_unready(status: &watch::Sender<Arc<StatusSnapshot>>, why: &str) {
    status.send_modify(|snapshot| {
        let mut next = StatusSnapshot::clone(snapshot);
        next.ready = false;
        next.waiting_for = vec![why.to_string()];
        *snapshot = Arc::new(next);
    });
}

/// Serves `/livez` (no loops checked), `/readyz`, `/metrics` and `/status` with default
/// [`Limits`] until `shutdown` resolves, then drains. See [`AdminServer`] to add liveness.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    status: watch::Receiver<Arc<StatusSnapshot>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    AdminServer::new(registry, status)
        .serve(listener, shutdown)
        .await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
