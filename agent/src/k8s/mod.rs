//! The Kubernetes edge: the API client, the watches whose events become node-model inputs, the
//! conversion of Pods and Secrets into the core's domain values, and the API writes the
//! executor makes (pod annotation, Events).
//!
//! ```text
//!  Pod ──▶ pod::controller_pod ──▶ ControllerPod ─┐
//!                                                ├─▶ watches ─▶ node::Input
//!  Secret ──▶ secret::secret_view ──▶ SecretView ─┘   (digests only; the bytes stop here)
//! ```
//!
//! Ingress, IngressClass and the Gateway API kinds become `routes::RouteObject`s in
//! `routes.rs`, watched cluster-wide only while a local controller pod's profile needs them.
//!
//! cert-manager's Certificate, Issuer and ClusterIssuer, and the pods of a local controller
//! profile on every node (to choose one reporter per finding), are `certmanager.rs`'s. Every
//! cluster-wide list is read as `lean::Lean` objects: the fields the conversion reads, no
//! managed fields, no annotations but those it reads.
//!
//! Only this folder reads `k8s_openapi` types.

pub mod certmanager;
pub mod client;
pub mod lean;
pub mod named_watch;
pub mod pod;
pub mod routes;
pub mod secret;
pub mod sinks;
pub mod watches;
pub mod workloads;

pub use mountlag_core::expected::{
    Expected, ExpectedFiles, SecretLookup, SecretVersion, expected_payload,
};
pub use mountlag_core::pod::{ControllerPod, RESYNC_ANNOTATION, SecretSource, SecretVolume};
pub use mountlag_core::secret::SecretView;
pub use pod::controller_pod;
pub use secret::{secret_view, secret_view_with};

/// Every watch asks the server to end it after `api.watchTimeout`; kube's watcher gives up on
/// a stream that stays silent 5 s longer and watches again from where it was.
pub fn watch_config(api: &crate::config::ApiConfig) -> kube::runtime::watcher::Config {
    let seconds = u32::try_from(api.watch_timeout.as_secs()).unwrap_or(u32::MAX);
    kube::runtime::watcher::Config::default().timeout(seconds)
}
