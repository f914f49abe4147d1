//! mountlag: a node agent that keeps three views of every TLS Secret an Ingress controller pod
//! uses on this node (API, disk, served) and drives them to agree.
//!
//! Data flow of the node-side half (this crate so far):
//!
//! ```text
//!  kubelet volume dirs ──▶ watch (one inotify + mountinfo) ──▶ VolumeChange
//!          │
//!          └──▶ kubelet::snapshot (one AtomicWriter generation, digests only) ──▶ cert (pure)
//!                                                                 │
//!                                                                 ▼
//!                                                  inspect (report, text / JSON)
//! ```
#![doc(html_no_source)]

pub mod actions;
pub mod admin;
pub mod apiclient;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod inspect;
pub mod k8s;
pub mod kubelet;
pub mod probe;
pub mod run;
pub mod watch;

// The pure model lives in mountlag-core; these paths keep the agent's modules readable.
pub use mountlag_core::{cert, reconcile, text};
