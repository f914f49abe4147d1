//! mountlag: a node agent that keeps three views of every TLS Secret an Ingress controller pod
//! uses on this node (API, disk, served) and drives them to agree.
//!
//! This crate is the edges and the effects; every decision is in `mountlag-core`.
//!
//! ```text
//!  k8s (watches: Pods, Secrets) ──┐
//!  disk (inotify, snapshots) ─────┼─▶ cmd::agent: Node::step (mountlag-core) ─▶ effects::perform::Effects
//!  effects (reload, probe results)┘                                              (API, signals, TLS, metrics)
//!                                      Node::publish_if_due ─▶ admin (/livez /readyz /metrics /status)
//! ```
//!
//! [`cmd`] holds the commands (`agent`, `inspect`, `status`, `check-config`).
#![doc(html_no_source)]

pub mod admin;
pub mod cmd;
pub mod config;
pub mod disk;
pub mod effects;
pub mod k8s;

#[cfg(test)]
mod proptest_cases;

// The pure model lives in mountlag-core; these paths keep the agent's modules readable.
pub use mountlag_core::{cert, reconcile, routes, text};
