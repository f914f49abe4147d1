//! Reloading a controller and probing what it serves: the side effects behind
//! [`crate::reconcile::reload`]'s decisions.
//!
//! ```text
//!  Reload ──▶ spawn_blocking: find the process through its cgroup ─▶ judge it once (Go?)
//!         │     ─▶ pidfd signal, or withhold (a Go program not proven to handle the signal)
//!         └─▶ or HTTP (Caddy admin /load)
//!  Probe  ──▶ one TLS handshake per name + one without SNI ─▶ ProbeRound
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{ControllerProfile, DEFAULT_PROBE_PORT, ReloadAction};
use crate::k8s::ControllerPod;
use crate::reconcile::reload::{FailureKind, ProbeKey, ProbeRound, ReloadFailure, ServedLeaf};

use super::goguard::{Verdict, judge};
use super::http_reload::HttpReloader;
use super::process::{ProcessError, ProcessInfo, find_reload_target, read_identity};
use super::signal::{PinnedProcess, SignalError, signal_pinned, signal_verified};

/// The process each pod's reloads went to last time, with the verdict on it (may it be
/// signalled?). A /proc scan costs milliseconds on a busy node and judging a process reads its
/// executable; a process that was signalled stays pinned by its pidfd, so its next signal costs
/// one read of its status (handler installed, signal unblocked). The verdict belongs to the
/// process: a restarted controller is looked up and judged again.
#[derive(Debug, Default)]
pub struct TargetCache {
    targets: Mutex<HashMap<String, KnownTarget>>,
}

#[derive(Debug, Clone)]
enum KnownTarget {
    /// Judged signallable and signalled once: pinned by its pidfd.
    Pinned(PinnedProcess),
    /// Judged not to take the signal (a Go program not proven to handle it).
    Withheld { target: ProcessInfo, reason: String },
}

impl TargetCache {
    fn get(&self, pod_uid: &str) -> Option<KnownTarget> {
        self.targets.lock().ok()?.get(pod_uid).cloned()
    }

    fn put(&self, pod_uid: &str, known: KnownTarget) {
        if let Ok(mut targets) = self.targets.lock() {
            targets.insert(pod_uid.to_string(), known);
        }
    }

    pub fn forget(&self, pod_uid: &str) {
        if let Ok(mut targets) = self.targets.lock() {
            targets.remove(pod_uid);
        }
    }
}

/// Signals the process that took this pod's last reload, if it still lives: through its pinned
/// pidfd after one small /proc read, cheap enough to run on the reconcile loop, which saves the
/// hop to a blocking thread on the hot path. `None` when there is no such process (first
/// reload, restarted container, HTTP profile): use [`reload_controller`].
pub fn signal_known_target(
    proc_root: &std::path::Path,
    pod_uid: &str,
    profile: &ControllerProfile,
    cache: &TargetCache,
) -> Option<Result<(), ReloadFailure>> {
    let ReloadAction::Signal { signal, .. } = profile.reload else {
        return None;
    };
    // A withheld target goes the slow way: its identity is re-checked on a blocking thread.
    let KnownTarget::Pinned(pinned) = cache.get(pod_uid)? else {
        return None;
    };
    match signal_pinned(proc_root, &pinned, signal) {
        Ok(()) => Some(Ok(())),
        Err(SignalError::Gone { .. } | SignalError::Recycled { .. }) => {
            cache.forget(pod_uid);
            None
        }
        Err(err) => Some(Err(failed(err.to_string()))),
    }
}

pub fn failed(message: String) -> ReloadFailure {
    ReloadFailure {
        kind: FailureKind::Failed,
        message,
    }
}

fn withheld(message: String) -> ReloadFailure {
    ReloadFailure {
        kind: FailureKind::SignalWithheld,
        message,
    }
}

/// Whether `target` is still the process that was judged: same start time, same cgroup.
fn still_same_process(proc_root: &std::path::Path, target: &ProcessInfo) -> bool {
    read_identity(proc_root, target.pid).is_ok_and(|(stat, cgroup)| {
        stat.is_some_and(|s| s.start_time == target.start_time) && cgroup == target.cgroup
    })
}

/// Signals (or calls) the controller of `pod` as its profile says.
pub async fn reload_controller(
    proc_root: PathBuf,
    pod: &ControllerPod,
    profile: &ControllerProfile,
    http_timeout: Duration,
    cache: Arc<TargetCache>,
    http: &HttpReloader,
) -> Result<(), ReloadFailure> {
    match &profile.reload {
        ReloadAction::Signal { signal, go, .. } => {
            let (signal, go) = (*signal, *go);
            let reload = profile.reload.clone();
            let containers = profile.containers.clone();
            let pod = pod.clone();
            tokio::task::spawn_blocking(move || {
                match cache.get(&pod.uid) {
                    Some(KnownTarget::Withheld { target, reason })
                        if still_same_process(&proc_root, &target) =>
                    {
                        return Err(withheld(reason));
                    }
                    Some(KnownTarget::Withheld { .. }) => cache.forget(&pod.uid),
                    Some(KnownTarget::Pinned(pinned)) => {
                        match signal_pinned(&proc_root, &pinned, signal) {
                            Ok(()) => return Ok(()),
                            // The process went away: find the current one.
                            Err(SignalError::Gone { .. } | SignalError::Recycled { .. }) => {
                                cache.forget(&pod.uid);
                            }
                            Err(err) => return Err(failed(err.to_string())),
                        }
                    }
                    None => {}
                }
                let target = find_reload_target(&proc_root, &pod, containers.as_deref(), &reload)
                    .map_err(|err| ReloadFailure {
                        kind: if matches!(
                            err,
                            ProcessError::NotFound { .. } | ProcessError::NoContainerId { .. }
                        ) {
                            FailureKind::ProcessNotFound
                        } else {
                            FailureKind::Failed
                        },
                        message: err.to_string(),
                    })?;
                // Judged once per process: the verdict is cached with it.
                let verdict = judge(&proc_root, &target, go, signal);
                match verdict {
                    Verdict::Withhold { reason } => {
                        tracing::warn!(namespace = %pod.namespace, pod = %pod.name, pid = target.pid, comm = %target.comm, signal = signal.name(), %reason, "reload signal withheld");
                        let failure = withheld(reason.clone());
                        cache.put(&pod.uid, KnownTarget::Withheld { target, reason });
                        return Err(failure);
                    }
                    Verdict::Allow { proof: Some(proof) } => {
                        tracing::info!(namespace = %pod.namespace, pod = %pod.name, pid = target.pid, %proof, "signal target proven");
                    }
                    Verdict::Allow { proof: None } => {}
                }
                let pinned = signal_verified(&proc_root, &target, signal)
                    .map_err(|err| failed(err.to_string()))?;
                tracing::info!(namespace = %pod.namespace, pod = %pod.name, pid = target.pid, signal = signal.name(), "signalled controller");
                cache.put(&pod.uid, KnownTarget::Pinned(pinned));
                Ok(())
            })
            .await
            .unwrap_or_else(|err| Err(failed(format!("reload task failed: {err}"))))
        }
        // No process to find for an HTTP reload: straight to the endpoint, on the agent's
        // kept-alive connection when there is one.
        ReloadAction::Http { url } => http
            .reload(&with_pod_ip(url, pod), http_timeout)
            .await
            .map_err(|err| failed(err.to_string())),
        // Restarts are the executor's (they need the API): see `perform`.
        ReloadAction::None | ReloadAction::Restart => Ok(()),
    }
}

/// Fills `{podIP}` in a reload URL: the agent runs in its own network namespace, so a
/// controller's admin endpoint is reached on the pod's IP, not on loopback.
pub fn with_pod_ip(url: &str, pod: &ControllerPod) -> String {
    let ip = match pod.pod_ips.first() {
        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        None => Ipv4Addr::LOCALHOST.to_string(),
    };
    url.replace("{podIP}", &ip)
}

/// Where to reach the pod's TLS listeners: every pod IP (IPv4 and IPv6; for hostNetwork pods
/// the node's, reachable from the agent's own network namespace) on every probe port;
/// loopback only when no IP is known.
pub fn probe_addresses(pod: &ControllerPod, profile: &ControllerProfile) -> Vec<SocketAddr> {
    let ips: Vec<IpAddr> = if pod.pod_ips.is_empty() {
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
    } else {
        pod.pod_ips.clone()
    };
    let ports: &[u16] = if profile.probe.ports.is_empty() {
        &[DEFAULT_PROBE_PORT]
    } else {
        &profile.probe.ports
    };
    ips.iter()
        .flat_map(|ip| ports.iter().map(|port| SocketAddr::new(*ip, *port)))
        .collect()
}

/// One handshake per name plus one without SNI, on every address; what each presented.
pub async fn probe_round(
    addrs: Vec<SocketAddr>,
    names: Vec<String>,
    timeout: Duration,
) -> ProbeRound {
    let mut served = BTreeMap::new();
    for addr in addrs {
        let results = crate::effects::probe::probe_all(addr, &names, timeout).await;
        for (target, result) in results {
            let result = result
                .map(|leaf| ServedLeaf {
                    fingerprint: leaf.fingerprint_sha256,
                    not_after: leaf.not_after.map(|t| t.unix_timestamp()),
                    subject: leaf.subject,
                })
                .map_err(|err| err.to_string());
            let key = ProbeKey {
                sni: target.sni,
                endpoint: addr.to_string(),
            };
            served.insert(key, result);
        }
    }
    ProbeRound {
        served,
        at_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(ips: &[&str]) -> ControllerPod {
        ControllerPod {
            uid: "u".into(),
            namespace: "ns".into(),
            name: "caddy-0".into(),
            controller: "caddy".into(),
            resync_annotation: None,
            restart_annotation: None,
            config_hash: None,
            host_network: false,
            pod_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            terminating: false,
            containers: vec![],
            volumes: vec![],
        }
    }

    #[test]
    fn reload_urls_reach_the_pod_on_its_ip() {
        let url = "http://{podIP}:2019/load";
        assert_eq!(
            with_pod_ip(url, &pod(&["10.1.2.3"])),
            "http://10.1.2.3:2019/load"
        );
        assert_eq!(
            with_pod_ip(url, &pod(&["fd00::7"])),
            "http://[fd00::7]:2019/load"
        );
        assert_eq!(with_pod_ip(url, &pod(&[])), "http://127.0.0.1:2019/load");
        assert_eq!(
            with_pod_ip("http://caddy.admin/load", &pod(&["10.1.2.3"])),
            "http://caddy.admin/load"
        );
    }
}
