//! Where Kubernetes objects become mountlag's domain: a Pod becomes a [`ControllerPod`] with
//! its [`SecretVolume`]s, a Secret becomes a [`SecretView`] (digests only). The domain types and
//! the prediction of what kubelet will write ([`expected_payload`]) are pure and live in
//! `mountlag-core`.
//!
//! ```text
//!  Pod ──▶ pod::controller_pod ──▶ ControllerPod ─┐
//!                                                ├─▶ expected_payload ─▶ Expected (path → digest)
//!  Secret ──▶ secret::secret_view ──▶ SecretView ─┘
//! ```

pub mod pod;
pub mod secret;

pub use mountlag_core::expected::{
    Expected, ExpectedFiles, SecretLookup, SecretVersion, expected_payload,
};
pub use mountlag_core::pod::{ControllerPod, RESYNC_ANNOTATION, SecretSource, SecretVolume};
pub use mountlag_core::secret::SecretView;
pub use pod::controller_pod;
pub use secret::secret_view;
