//! Where Kubernetes objects become mountlag's domain: a Pod becomes a [`ControllerPod`] with
//! its [`SecretVolume`]s, a Secret becomes a [`SecretView`] (digests only), and the two together
//! predict what kubelet will write into each volume ([`expected_payload`]).
//!
//! ```text
//!  Pod ──▶ ControllerPod ─┐
//!                         ├─▶ expected_payload(volume, secrets) ─▶ Expected (path → digest)
//!  Secret ──▶ SecretView ─┘
//! ```
//!
//! Only [`pod`] and [`secret`] read `k8s_openapi` types; [`expected`] is pure.

pub mod expected;
pub mod pod;
pub mod secret;

pub use expected::{Expected, ExpectedFiles, SecretLookup, SecretVersion, expected_payload};
pub use pod::{ControllerPod, RESYNC_ANNOTATION, SecretSource, SecretVolume};
pub use secret::SecretView;
