//! The Kubernetes edge: watches whose events become node-model inputs.

pub mod watches;
