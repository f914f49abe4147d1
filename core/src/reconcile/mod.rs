//! The state machines the node model drives: one per mount ([`mount`], fed by the [`index`]
//! from pods, Secrets and disk) and one per controller pod ([`reload`], fed with the
//! [`material`] a new generation holds). Pure: the clock is an argument.

mod deadlines;
pub mod index;
pub mod material;
pub mod mount;
pub mod reload;

pub use index::{
    CertificateStatus, KeptStatus, MountExtras, MountIndex, MountKey, MountStatus, RenderedStatus,
    SecretKey, ServedStatus,
};

pub use deadlines::Deadlines;
pub use mount::{DiskView, Mount, MountState, PodRef, Thresholds};
