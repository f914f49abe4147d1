//! Where mounts become actions: the per-mount state machine ([`mount`]) and the index that
//! feeds it from pods, Secrets and disk ([`index`]). Pure: no tokio, no kube; the clock is an
//! argument.

pub mod index;
pub mod material;
pub mod mount;
pub mod reload;

pub use index::{CertificateStatus, MountIndex, MountKey, MountStatus, SecretKey, ServedStatus};

pub use mount::{Action, DiskView, EventReason, Mount, MountState, PodRef, Thresholds};
