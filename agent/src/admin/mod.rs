//! The node-local health endpoint: `/livez`, `/readyz`, `/metrics`, `/status`.
//!
//! ```text
//!  reconcile loop ──(watch channel: Arc<StatusSnapshot>)──▶ /readyz /status
//!  modules' metrics ──(one prometheus-client Registry)────▶ /metrics
//! ```
//!
//! Handlers only read a published snapshot and encode the registry: no locks held across
//! awaits, no work beyond encoding on a scrape.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;

use crate::reconcile::MountStatus;

/// What the agent publishes after every reconcile step.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusSnapshot {
    pub node: String,
    pub ready: bool,
    /// Why the agent is not ready yet (empty when ready).
    pub waiting_for: Vec<String>,
    pub mounts: Vec<MountStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Gauges the reconcile loop sets from its index.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    mounts: Family<StateLabel, Gauge>,
}

impl AgentMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let mounts = Family::<StateLabel, Gauge>::default();
        registry.register("mountlag_mounts", "Tracked mounts by state", mounts.clone());
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("mountlag_build", "Build information", build);
        Self { mounts }
    }

    pub fn set_mounts(&self, state: &'static str, count: usize) {
        self.mounts
            .get_or_create(&StateLabel { state })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    status: watch::Receiver<Arc<StatusSnapshot>>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    status: watch::Receiver<Arc<StatusSnapshot>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status_json))
        .with_state(AdminState { registry, status });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let snapshot = state.status.borrow().clone();
    if snapshot.ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let body = format!("not ready: {}\n", snapshot.waiting_for.join("; "));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

async fn status_json(State(state): State<AdminState>) -> Response {
    let snapshot = state.status.borrow().clone();
    match serde_json::to_vec_pretty(snapshot.as_ref()) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode status\n").into_response(),
    }
}
