//! An Ingress controller pod as mountlag sees it: the few facts about it that decisions use.
//!
//! The agent converts API Pods into these plain structs at its Kubernetes edge
//! (`mountlag::k8s`); everything here is tested with literal values.

use core::net::IpAddr;

use crate::volume::VolumeKind;

/// The annotation whose change makes kubelet resync the pod's volumes at once.
pub const RESYNC_ANNOTATION: &str = "mountlag.io/resync";
/// The pod-template annotation of a rolling restart (reload mode `restart`): a digest of the
/// Secret contents the pods use.
pub const RESTART_ANNOTATION: &str = "mountlag.io/restart";
/// On a static pod's mirror Pod: the UID kubelet uses for the pod's cgroup (32 hex).
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";

/// An Ingress controller pod on this node, reduced to what mountlag needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The controller profile (config `controllers[].name`) that selected this pod.
    pub controller: String,
    /// Value of [`RESYNC_ANNOTATION`], if set: the last nudge, by us or a previous run.
    pub resync_annotation: Option<String>,
    /// Value of [`RESTART_ANNOTATION`] (from its pod template), if set: the pod was created by
    /// a rolling restart mountlag asked for.
    pub restart_annotation: Option<String>,
    /// A static pod's config hash: its cgroups are named after it, not after `uid`.
    pub config_hash: Option<String>,
    pub host_network: bool,
    pub pod_ips: Vec<IpAddr>,
    /// Being deleted (`deletionTimestamp` set): no more nudges.
    pub terminating: bool,
    pub containers: Vec<ContainerInfo>,
    /// Secret and projected volumes with at least one Secret source.
    pub volumes: Vec<SecretVolume>,
}

impl ControllerPod {
    /// Whether `other` mounts the same Secrets into the same containers for the same profile:
    /// everything the node's Secret watches, tracked directories, route and cert-manager
    /// watches are derived from. Annotations, addresses, container ids and termination are not.
    pub fn mounts_the_same_as(&self, other: &ControllerPod) -> bool {
        self.uid == other.uid
            && self.namespace == other.namespace
            && self.controller == other.controller
            && self.volumes == other.volumes
            && self.containers.len() == other.containers.len()
            && self
                .containers
                .iter()
                .zip(&other.containers)
                .all(|(a, b)| a.name == b.name && a.mounts == b.mounts)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    /// Runtime id without the `containerd://` scheme, once the container has started.
    pub container_id: Option<String>,
    pub mounts: Vec<VolumeMountInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMountInfo {
    pub volume: String,
    pub mount_path: String,
    /// `subPath` or `subPathExpr`: kubelet bind-mounts one file once; it never updates.
    pub sub_path: Option<String>,
}

/// A secret or projected volume, as kubelet will fill it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVolume {
    pub name: String,
    pub kind: VolumeKind,
    /// In order; for a projected volume a later source wins on the same path.
    pub sources: Vec<SecretSource>,
    /// The volume also projects ConfigMaps, downward API, tokens or trust bundles, whose files
    /// mountlag does not predict.
    pub has_other_sources: bool,
}

/// One Secret feeding a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSource {
    pub secret: String,
    /// `None`: every key becomes a file named after it.
    pub items: Option<Vec<KeyPath>>,
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath {
    pub key: String,
    pub path: String,
}

impl ControllerPod {
    /// The pod UID as kubelet writes it into cgroup paths: a static pod's config hash, else
    /// `metadata.uid`.
    pub fn cgroup_uid(&self) -> &str {
        self.config_hash.as_deref().unwrap_or(&self.uid)
    }

    /// The containers that mount `volume`, as (container, subPath) pairs.
    pub fn consumers<'a>(
        &'a self,
        volume: &'a str,
    ) -> impl Iterator<Item = (&'a ContainerInfo, &'a VolumeMountInfo)> + 'a {
        self.containers.iter().flat_map(move |c| {
            c.mounts
                .iter()
                .filter(move |m| m.volume == volume)
                .map(move |m| (c, m))
        })
    }

    /// Every Secret name this pod's volumes reference.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.volumes
            .iter()
            .flat_map(|v| v.sources.iter().map(|s| s.secret.as_str()))
    }
}
