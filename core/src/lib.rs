//! mountlag-core: everything mountlag decides, as pure code. No tokio, no kube, no file system,
//! no clock: inputs are plain values, time is an argument, outputs are actions for the agent's
//! executor to perform.
//!
//! ```text
//!  pod::ControllerPod ──┐
//!  secret::SecretView ──┼─▶ expected::expected_payload ─▶ reconcile::MountIndex ─▶ Action
//!  volume::VolumeSnapshot ┘        (what kubelet will write)   (one Mount per volume)
//!                                                                reconcile::reload (per pod)
//!  cert: PEM/X.509 summaries, key pairing, validity ─▶ reconcile::material (may it be reloaded?)
//! ```
#![doc(html_no_source)]

pub mod action;
pub mod cert;
pub mod certmanager;
pub mod events;
pub mod expected;
pub mod lint;
pub mod node;
pub mod objects;
pub mod pod;
pub mod reconcile;
pub mod routes;
pub mod secret;
pub mod status;
pub mod text;
pub mod volume;

#[cfg(test)]
mod proptest_cases;
