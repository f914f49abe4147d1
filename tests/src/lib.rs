//! mountlag-testbed: a Kubernetes node on one machine.
//!
//! The parts that cannot be had here (kubelet, the API server) are stand-ins; everything else an
//! end-to-end test touches is real: the `mountlag` binary, tmpfs and bind mounts, inotify.
//!
//! - [`kubelet`]: the kubelet stand-in (AtomicWriter, tmpfs per volume, subPath bind mounts).
//! - [`certs`]: test CA and leaf certificates.
//! - [`agent`]: the real `mountlag` binary as tests run it.
//! - [`real`]: honest skipping when a real part is missing.
//! - [`rbac`]: the RBAC of `deploy/` as the API stand-in's authorizer.
//! - [`podsecurity`]: the Pod Security `baseline` and `restricted` rules over a pod template.
//! - [`multinode`]: several nodes, each with its kubelet stand-in and agent, on one API.
//! - [`rollout`]: the Deployment/ReplicaSet/DaemonSet/StatefulSet controllers' rolling
//!   restarts, minimal and deterministic, over the API stand-in.
//! - [`bench`], [`demo`]: `testbed bench ...` and `testbed demo`; [`bench_scale`]: hundreds of
//!   agents on one API stand-in.

pub mod agent;
pub mod apiserver;
pub mod bench;
pub mod bench_api;
pub mod bench_api_driven;
pub mod bench_footprint;
pub mod bench_http_reload;
pub mod bench_reload;
pub mod bench_scale;
pub mod bench_verify;
pub mod certs;
pub mod chaos;
pub mod cluster;
pub mod controllers;
pub mod demo;
pub mod goprog;
pub mod ingress_controller;
pub mod kubelet;
pub mod multinode;
pub mod node;
pub mod podsecurity;
pub mod rbac;
pub mod real;
pub mod real_world;
pub mod repo;
pub mod rollout;
pub mod tlsload;

/// The agent's volume watcher with its reports sent to a channel, as the watcher tests read
/// them.
pub fn watcher_to_channel() -> (
    mountlag::disk::VolumeWatcher,
    std::sync::mpsc::Receiver<mountlag::disk::VolumeChange>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let watcher = mountlag::disk::VolumeWatcher::new(
        mountlag::disk::WatcherConfig::default(),
        Box::new(move |change| {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(change);
            }
        }),
    )
    .unwrap_or_else(|err| panic!("cannot start the volume watcher: {err}"));
    (watcher, rx)
}
