//! Agent configuration: the YAML file given to `mountlag agent --config` and checked by
//! `mountlag check-config`, its defaults, and the built-in controller profiles.
//!
//! The file is small and hand-written, so the loader is strict and talkative: unknown keys,
//! bad durations, bad selectors and conflicting settings are errors, every error in the file is
//! reported (not only the first), and each one names the file, line, column and key path:
//!
//! ```text
//! edge.yaml:7:15: controllers[0].reload.signal: unknown signal "SIGKILL" (expected SIGHUP, SIGUSR1 or SIGUSR2)
//! ```
//!
//! How: the text is parsed once into a `serde_yaml::Value` (a syntax error is one error with the
//! parser's position), then each section is checked by hand ([`validate`]) so that one bad value
//! does not hide the next. Positions of key paths come from serde-saphyr's spans ([`positions`]), read only
//! when there is an error to report. `serde_yaml` stays inside this
//! module: no type of it appears in the public API.
//!
//! Files: this one holds the model and its defaults; [`profiles`] the built-in controller
//! profiles, [`selector`] label selectors, [`duration`] durations, [`error`] errors and the
//! pre-parse checks, [`budget`] the alias-expansion budget, `tests.rs` the tests.
//!
//! The reference for users is `docs/configuration.md`; a commented example that passes
//! `check-config` is `docs/examples/mountlag.yaml`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use kube::core::{Expression, Selector, SelectorExt as _};
use mountlag_core::reconcile::SecretKey;
use mountlag_core::routes::RouteMatch;
use serde_yaml::{Mapping, Value};

mod budget;
mod duration;
mod error;
mod positions;
mod profiles;
#[cfg(test)]
mod proptests;
mod selector;
#[cfg(test)]
mod tests;
mod validate;

pub use budget::{MAX_CONFIG_EXPANDED_BYTES, MAX_CONFIG_NODES};
pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, ConfigErrors, Location, check_config_command};
pub use profiles::BuiltinProfile;
pub use selector::LabelSelector;
// Helpers the sections share (each file's own items are `pub(super)`).
use error::*;
use selector::*;
use validate::*;

/// Default for `stuckAfter`.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(120);
/// Default for `nudge.after`: long enough for kubelet's own Secret watch to have the new
/// version when the nudge lands (both watches are fed by the same API server within
/// milliseconds) and to gather a pod's Secrets written together into one nudge; short enough
/// that API → new leaf verified stays under a second (docs/benchmarks.md, "how soon to
/// nudge"). Waiting longer buys little: kubelet's periodic sync (60–90 s) would have come
/// within 2 s for about 2.7 % of rotations.
pub const DEFAULT_NUDGE_AFTER: Duration = Duration::from_millis(250);
/// Default for `nudge.retryAfter`: kubelet remounts within about a second of a nudge; the second
/// nudge is for a remount that still wrote the old content (kubelet's own Secret cache lagged).
pub const DEFAULT_NUDGE_RETRY_AFTER: Duration = Duration::from_secs(2);
/// Default for `reload.minInterval`.
pub const DEFAULT_RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Default for `reload.restartTimeout`: a rolling restart replaces pods one at a time, each
/// waiting for readiness; ten minutes covers a few replicas with slow starts.
pub const DEFAULT_RELOAD_RESTART_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default for `verify.timeout`.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `verify.interval`: a served certificate is checked at least this often.
pub const DEFAULT_VERIFY_INTERVAL: Duration = Duration::from_secs(300);
/// Default for `verify.mismatchAfter`: API-driven controllers take seconds to pick a Secret up
/// (ingress-nginx syncs within about a second, Traefik and Contour debounce for a few).
pub const DEFAULT_VERIFY_MISMATCH_AFTER: Duration = Duration::from_secs(30);
/// Default for `verify.handshakesPerSecond`: a client handshake costs the agent about half a
/// millisecond of CPU, so 5/s is about 0.25% of a core at most (docs/benchmarks.md).
pub const DEFAULT_VERIFY_HANDSHAKES_PER_SECOND: u32 = 5;
/// Largest `verify.handshakesPerSecond` accepted.
pub const MAX_VERIFY_HANDSHAKES_PER_SECOND: u32 = 1000;
/// Default for `certManager.gracePeriod`: cert-manager issues within seconds to a few minutes
/// (an ACME order with DNS propagation takes longest); a state lasting longer is a finding.
pub const DEFAULT_CERT_MANAGER_GRACE_PERIOD: Duration = Duration::from_secs(10 * 60);
/// Default for `expiry.warnBefore` (21 days).
pub const DEFAULT_EXPIRY_WARN_BEFORE: Duration = Duration::from_secs(21 * DAY_SECS);
/// Default for `api.maxStreamsPerConnection`: below the HTTP/2 stream limits servers commonly
/// advertise (Go and the API server: 250, nginx: 128, HAProxy: 100).
pub const DEFAULT_API_MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// Largest `api.maxStreamsPerConnection` accepted.
pub const MAX_API_STREAMS_PER_CONNECTION: u32 = 1000;
/// Default for `api.watchTimeout`: what kube-rs and client-go ask for (290 s; the API server
/// spreads its own between 30 and 60 minutes when asked for nothing).
pub const DEFAULT_API_WATCH_TIMEOUT: Duration = Duration::from_secs(290);
/// Bounds of `api.watchTimeout`: shorter renews watches often (a request each), longer leaves
/// a silent stream unnoticed for long.
pub const MIN_API_WATCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_API_WATCH_TIMEOUT: Duration = Duration::from_secs(3600);
/// Probe port used when neither the controller nor its profile names one.
pub const DEFAULT_PROBE_PORT: u16 = 443;
/// Largest config file [`Config::load`] reads: 64 KiB, room for some three hundred controller
/// entries. The parser keeps a few hundred bytes per YAML event, and a file of short scalars
/// has one event per two bytes, so this cap is what keeps a hostile file's peak memory small.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;
/// Largest duration accepted anywhere in the file (3650 days). Keeps `Instant + duration`
/// arithmetic elsewhere far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * DAY_SECS);

const DAY_SECS: u64 = 86_400;

/// Deeper `[`/`{` nesting is refused before parsing: libyaml's time grows with nesting depth
/// times tokens (a 1 MiB run of `{a: ` takes minutes), and no config needs more than a few.
const MAX_FLOW_DEPTH: usize = 32;

const TOP_KEYS: &[&str] = &[
    "stuckAfter",
    "nudge",
    "reload",
    "verify",
    "expiry",
    "api",
    "certManager",
    "controllers",
];
const NUDGE_KEYS: &[&str] = &["enabled", "after", "retryAfter"];
const RELOAD_KEYS: &[&str] = &["minInterval", "restartTimeout"];
const VERIFY_KEYS: &[&str] = &[
    "timeout",
    "interval",
    "mismatchAfter",
    "handshakesPerSecond",
];
const EXPIRY_KEYS: &[&str] = &["warnBefore"];
const API_KEYS: &[&str] = &["http2", "maxStreamsPerConnection", "watchTimeout"];
const CERT_MANAGER_KEYS: &[&str] = &["enabled", "gracePeriod"];
const CONTROLLER_KEYS: &[&str] = &[
    "name",
    "profile",
    "selector",
    "namespaces",
    "containers",
    "mode",
    "reload",
    "probe",
    "routes",
];
const CONTROLLER_RELOAD_KEYS: &[&str] = &[
    "signal",
    "process",
    "http",
    "goProgramHandlesSignal",
    "fallback",
];
const HTTP_KEYS: &[&str] = &["url"];
const PROBE_KEYS: &[&str] = &["ports", "hosts"];
const ROUTES_KEYS: &[&str] = &[
    "ingressControllers",
    "ingressClassNames",
    "ingressClassAnnotations",
    "gatewayControllers",
    "defaultCertificate",
];

/// `namespaces: ["*"]`: every namespace, also for a profile that has usual namespaces.
const ALL_NAMESPACES: &str = "*";

const DURATION_HINT: &str =
    "write a number and a unit: ms, s, m, h or d, e.g. 500ms, 15s, 2m, 1h30m, 21d";

// ---------------------------------------------------------------------------------------------
// The configuration
// ---------------------------------------------------------------------------------------------

/// The agent's configuration. `Config::default()` is what the agent runs with when no file is
/// given: default thresholds and one verify-only controller per API-driven built-in profile
/// (see [`BuiltinProfile::default_controllers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A mount whose disk content still differs from the API this long after the change was
    /// observed is reported stuck (`SecretMountStuck`).
    pub stuck_after: Duration,
    pub nudge: NudgeConfig,
    pub reload: ReloadConfig,
    pub verify: VerifyConfig,
    pub expiry: ExpiryConfig,
    pub api: ApiConfig,
    pub cert_manager: CertManagerConfig,
    /// Which pods are Ingress controllers and how each takes a new certificate.
    pub controllers: Vec<ControllerProfile>,
}

/// `nudge`: asking kubelet to resync a pod (by annotating it) when its mount lags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NudgeConfig {
    pub enabled: bool,
    /// How long after the API change to wait for kubelet before nudging.
    pub after: Duration,
    /// How long after a nudge to wait before the second (last) one.
    pub retry_after: Duration,
}

/// `reload`: global limits on controller reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Minimum time between two reloads of one pod.
    pub min_interval: Duration,
    /// How long a rolling restart may take before the old pod counts as not reloaded.
    pub restart_timeout: Duration,
}

/// `verify`: checking that the controller serves the new leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    /// How long to wait for the new leaf to be served before `ReloadUnverified`.
    pub timeout: Duration,
    /// How often the served certificates are checked between rotations (jittered ±10%).
    pub interval: Duration,
    /// How long served ≠ expected may last before `ServedCertificateMismatch`.
    pub mismatch_after: Duration,
    /// Node-wide average of TLS handshakes periodic checks may make per second.
    pub handshakes_per_second: u32,
}

/// `expiry`: certificate expiry warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryConfig {
    /// Warn (`CertificateExpiringSoon`) when a certificate expires within this time; `0s`
    /// disables the warning.
    pub warn_before: Duration,
}

/// `certManager`: cert-manager's Certificates and issuers for the Secrets the local controller
/// pods serve (docs/cert-manager.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertManagerConfig {
    pub enabled: bool,
    /// How long a Certificate or issuer may be not Ready, or a renewal late, before it is
    /// reported.
    pub grace_period: Duration,
}

impl Default for CertManagerConfig {
    fn default() -> Self {
        CertManagerConfig {
            enabled: true,
            grace_period: DEFAULT_CERT_MANAGER_GRACE_PERIOD,
        }
    }
}

/// `api`: how the agent connects to the Kubernetes API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiConfig {
    /// Offer HTTP/2 when connecting over TLS, so the watches share a few connections.
    pub http2: bool,
    /// Open another connection rather than keep more requests (watches) open on one.
    pub max_streams_per_connection: u32,
    /// `timeoutSeconds` of every watch. kube's watcher abandons a stream silent for 5 s
    /// longer and watches again: a server (or proxy) that keeps a stream open but silent is
    /// noticed after this long (HTTP/2 pings keep the connection itself alive). Below a load
    /// balancer's idle timeout, streams are renewed before it cuts them.
    pub watch_timeout: Duration,
}

/// One entry of `controllers`: which pods, which containers, how to reload, where to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerProfile {
    /// Free text, used in Events and metrics; unique within the file.
    pub name: String,
    pub selector: LabelSelector,
    /// `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
    /// `None`: every container that mounts the volume.
    pub containers: Option<Vec<String>>,
    pub reload: ReloadAction,
    /// `reload.fallback: restart`: when the signal is withheld (a Go program not proven to
    /// handle it), restart the pod's workload instead.
    pub restart_fallback: bool,
    pub mode: ReloadMode,
    pub probe: ProbeConfig,
    /// Which Ingress and Gateway objects are the controller's (API-driven controllers): the
    /// hosts to probe and the Secret each must serve. `None`: only the pod's own Secrets.
    pub routes: Option<RouteMatch>,
}

impl ControllerProfile {
    /// `reload: restart`, or a signal with `fallback: restart`.
    pub fn may_restart(&self) -> bool {
        self.reload == ReloadAction::Restart || self.restart_fallback
    }

    /// What the node model needs of this profile.
    pub fn spec(&self) -> mountlag_core::node::ControllerSpec {
        mountlag_core::node::ControllerSpec {
            name: self.name.clone(),
            containers: self.containers.clone(),
            source: match self.mode {
                ReloadMode::Files => mountlag_core::node::CertificateSource::Files,
                ReloadMode::Api => mountlag_core::node::CertificateSource::Api,
            },
            reloads: self.reload != ReloadAction::None,
            probe_hosts: self.probe.hosts.clone(),
            probe_ports: self.probe.ports.len(),
            routes: self.routes.clone(),
            // Set by `Config::node_settings`, which knows `reload.restartTimeout`.
            restart: None,
        }
    }
}

impl Config {
    /// What the node model needs of this configuration, for the node `node_name`.
    pub fn node_settings(
        &self,
        node_name: &str,
        kubelet_root: &Path,
        disk: mountlag_core::status::DiskStatus,
    ) -> mountlag_core::node::NodeSettings {
        use mountlag_core::reconcile::Thresholds;
        use mountlag_core::reconcile::reload::ReloadLimits;
        mountlag_core::node::NodeSettings {
            node_name: node_name.to_string(),
            kubelet: mountlag_core::volume::KubeletRoot::new(kubelet_root),
            disk,
            thresholds: Thresholds {
                nudge_enabled: self.nudge.enabled,
                nudge_after: self.nudge.after,
                nudge_retry_after: self.nudge.retry_after,
                stuck_after: self.stuck_after,
            },
            reload: ReloadLimits {
                min_interval: self.reload.min_interval,
                verify_timeout: self.verify.timeout,
                // A rotation's other volumes are waited for as long as a mount may lag.
                wait_for_others: self.stuck_after,
                expiry_warn_before: self.expiry.warn_before,
                max_attempts: 3,
                verify_interval: self.verify.interval,
                mismatch_after: self.verify.mismatch_after,
            },
            controllers: self
                .controllers
                .iter()
                .map(|c| mountlag_core::node::ControllerSpec {
                    restart: c
                        .may_restart()
                        .then_some(mountlag_core::node::RollingRestart {
                            timeout: self.reload.restart_timeout,
                        }),
                    ..c.spec()
                })
                .collect(),
            publish_every: mountlag_core::node::PUBLISH_EVERY,
            handshakes_per_second: self.verify.handshakes_per_second,
            cert_manager: self.cert_manager.enabled.then_some(
                mountlag_core::node::CertManagerSettings {
                    grace: self.cert_manager.grace_period,
                },
            ),
        }
    }
}

/// Where a controller reads its certificates from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReloadMode {
    /// From the mounted Secret volume: the disk view matters, a reload may be needed.
    Files,
    /// From the Kubernetes API itself: only served == API is checked.
    Api,
}

/// What mountlag does to make a controller take the new files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadAction {
    /// Send `signal` to the process whose title (cmdline) or comm starts with `process`, in the
    /// target container; `None` means the container's init process.
    Signal {
        signal: ReloadSignal,
        process: Option<String>,
        /// Whether the target may be a Go program (see [`GoSignalPolicy`]).
        go: GoSignalPolicy,
    },
    /// HTTP reload endpoint (Caddy's admin `/load`).
    Http { url: String },
    /// No action: the controller picks up changes itself, or reads the API. Verify only.
    None,
    /// A rolling restart of the pod's Deployment, DaemonSet or StatefulSet (pod-template
    /// annotation), for controllers that cannot hot-reload.
    Restart,
}

/// When a signal may go to a Go program. The Go runtime installs a handler for every signal, so
/// `SigCgt` shows the signal caught, yet a Go program exits on a SIGHUP (SIGINT, SIGTERM) it did
/// not ask for and ignores SIGUSR1/SIGUSR2: only the program's identity can say it reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GoSignalPolicy {
    /// A Go program is never signalled (the default; non-Go programs are unaffected).
    #[default]
    Refuse,
    /// `reload.goProgramHandlesSignal: true`: the user vouches that the program handles the
    /// signal as a reload.
    OptIn,
    /// The `traefik` profile: signal only a process proven to be Traefik v3 (Go build
    /// information) with the file provider on.
    TraefikV3FileProvider,
}

/// The reload-safe signals. Others (TERM, KILL, INT, ...) stop controllers and are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReloadSignal {
    Hup,
    Usr1,
    Usr2,
}

/// `probe`: where to check the served certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Container ports (on the pod IP) that serve TLS.
    pub ports: Vec<u16>,
    /// Extra SNI names, probed in addition to the DNS SANs of the expected leaf and no-SNI.
    pub hosts: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stuck_after: DEFAULT_STUCK_AFTER,
            nudge: NudgeConfig::default(),
            reload: ReloadConfig::default(),
            verify: VerifyConfig::default(),
            expiry: ExpiryConfig::default(),
            api: ApiConfig::default(),
            cert_manager: CertManagerConfig::default(),
            controllers: BuiltinProfile::default_controllers(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            http2: true,
            max_streams_per_connection: DEFAULT_API_MAX_STREAMS_PER_CONNECTION,
            watch_timeout: DEFAULT_API_WATCH_TIMEOUT,
        }
    }
}

impl Default for NudgeConfig {
    fn default() -> Self {
        NudgeConfig {
            enabled: true,
            after: DEFAULT_NUDGE_AFTER,
            retry_after: DEFAULT_NUDGE_RETRY_AFTER,
        }
    }
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            min_interval: DEFAULT_RELOAD_MIN_INTERVAL,
            restart_timeout: DEFAULT_RELOAD_RESTART_TIMEOUT,
        }
    }
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            timeout: DEFAULT_VERIFY_TIMEOUT,
            interval: DEFAULT_VERIFY_INTERVAL,
            mismatch_after: DEFAULT_VERIFY_MISMATCH_AFTER,
            handshakes_per_second: DEFAULT_VERIFY_HANDSHAKES_PER_SECOND,
        }
    }
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig {
            warn_before: DEFAULT_EXPIRY_WARN_BEFORE,
        }
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            ports: vec![DEFAULT_PROBE_PORT],
            hosts: Vec::new(),
        }
    }
}

impl Config {
    /// Parses and validates a config document. `origin` names the file in error messages.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        if let Some((line, column)) = flow_too_deep(text) {
            return Err(ConfigError::Syntax {
                at: Location {
                    file: origin.to_string(),
                    line,
                    column,
                    path: String::new(),
                },
                message: format!(
                    "flow collections ([...], {{...}}) nested more than {MAX_FLOW_DEPTH} levels deep"
                ),
            }
            .into());
        }
        // Before any tree is built: aliases must not expand the document past its budget.
        if let Err(budget::BudgetError::Exceeded {
            limit,
            line,
            column,
        }) = budget::check(text)
        {
            return Err(ConfigError::TooComplex {
                at: Location {
                    file: origin.to_string(),
                    line,
                    column,
                    path: String::new(),
                },
                message: limit.message(),
            }
            .into());
        }
        let mut value: Value = match serde_yaml::from_str(text) {
            Ok(value) => value,
            Err(err) => return Err(syntax_error(&err, text, origin).into()),
        };
        if let Err(err) = value.apply_merge() {
            return Err(syntax_error(&err, text, origin).into());
        }
        let mut validator = Validator::new(text, origin);
        let config = validator.config(&value);
        validator.finish(config)
    }

    /// Reads `path` (at most [`MAX_CONFIG_BYTES`]) and parses it with [`Config::from_yaml`].
    /// An unreadable file is one error naming the file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let bytes = read_capped(path).map_err(|err| match err {
            ReadFailure::Io(source) => ConfigError::Read {
                file: file.clone(),
                source,
            },
            ReadFailure::TooLarge => ConfigError::TooLarge {
                file: file.clone(),
                limit: MAX_CONFIG_BYTES,
            },
        })?;
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => {
                let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
                // `valid` is valid UTF-8 by construction.
                let prefix = String::from_utf8_lossy(valid);
                let line = prefix.matches('\n').count() + 1;
                let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                return Err(ConfigError::Syntax {
                    at: Location {
                        file,
                        line,
                        column,
                        path: String::new(),
                    },
                    message: "the file is not valid UTF-8".to_string(),
                }
                .into());
            }
        };
        Config::from_yaml(&text, &file)
    }

    /// `N controllers: a, b` (as printed by `check-config`).
    pub fn summary(&self) -> String {
        let n = self.controllers.len();
        let noun = if n == 1 { "controller" } else { "controllers" };
        if n == 0 {
            return format!("0 {noun}");
        }
        let names: Vec<&str> = self.controllers.iter().map(|c| c.name.as_str()).collect();
        format!("{n} {noun}: {}", names.join(", "))
    }

    /// What `check-config` says about each signal reload: a Go program is signalled only with
    /// the opt-in (or, for the traefik profile, when proven to be Traefik v3 with the file
    /// provider), and an opt-in can kill a Go program that does not handle the signal.
    pub fn signal_notes(&self) -> Vec<String> {
        self.controllers
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let ReloadAction::Signal { signal, go, .. } = &c.reload else {
                    return None;
                };
                let at = format!("controllers[{i}] ({})", c.name);
                Some(match go {
                    GoSignalPolicy::Refuse => format!(
                        "note: {at}: {} is not sent to a Go program (its runtime marks every signal as caught, then exits on a SIGHUP/SIGINT/SIGTERM it did not ask for); set reload.goProgramHandlesSignal: true if the target is a Go program that reloads on {signal}",
                        c.reload
                    ),
                    GoSignalPolicy::OptIn => format!(
                        "warning: {at}: reload.goProgramHandlesSignal: true: {} is sent even to a Go program; a Go program that does not handle {signal} exits on SIGHUP (Go's default) or ignores SIGUSR1/SIGUSR2",
                        c.reload
                    ),
                    GoSignalPolicy::TraefikV3FileProvider if c.restart_fallback => format!(
                        "note: {at}: {} is sent only to a process proven to be Traefik v3 (Go build information) with the file provider on (flags, environment or static configuration); otherwise its Deployment, DaemonSet or StatefulSet gets a rolling restart (reload.fallback: restart; needs components/rolling-restart)",
                        c.reload
                    ),
                    GoSignalPolicy::TraefikV3FileProvider => format!(
                        "note: {at}: {} is sent only to a process proven to be Traefik v3 (Go build information) with the file provider on (flags, environment or static configuration); otherwise the signal is withheld (Event ReloadSignalWithheld) and the pod is verified only; reload.goProgramHandlesSignal: true vouches for it instead, reload.fallback: restart restarts its workload",
                        c.reload
                    ),
                })
            })
            .collect()
    }

    /// The namespaces some controller may run in, or `None` when a controller watches every
    /// namespace. Secrets need only be read in these (least privilege).
    pub fn watched_namespaces(&self) -> Option<BTreeSet<&str>> {
        let mut all = BTreeSet::new();
        for controller in &self.controllers {
            all.extend(controller.namespaces.as_ref()?.iter().map(String::as_str));
        }
        Some(all)
    }

    /// The first controller (in file order) that selects this pod.
    pub fn controller_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<&ControllerProfile> {
        self.controllers
            .iter()
            .find(|c| c.selects(namespace, labels))
    }
}

impl ControllerProfile {
    /// Whether a pod in `namespace` with `labels` belongs to this controller.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        let in_namespace = self
            .namespaces
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == namespace));
        in_namespace && self.selector.matches(labels)
    }

    /// Whether mounts of `container` are tracked (and signals may target it).
    pub fn watches_container(&self, container: &str) -> bool {
        self.containers
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c == container))
    }
}

impl ReloadSignal {
    /// Every accepted signal.
    pub const ALL: [ReloadSignal; 3] = [ReloadSignal::Hup, ReloadSignal::Usr1, ReloadSignal::Usr2];

    /// `SIGHUP`, `SIGUSR1`, `SIGUSR2`.
    pub fn name(&self) -> &'static str {
        match self {
            ReloadSignal::Hup => "SIGHUP",
            ReloadSignal::Usr1 => "SIGUSR1",
            ReloadSignal::Usr2 => "SIGUSR2",
        }
    }

    /// The Linux signal number. Hard-coded rather than taken from libc: these are the values on
    /// x86, x86_64, arm, aarch64, riscv, s390x and powerpc (the generic Linux ABI); MIPS, SPARC
    /// and Alpha differ and are not supported targets. A test checks them against `nix`.
    pub fn number(&self) -> i32 {
        match self {
            ReloadSignal::Hup => 1,
            ReloadSignal::Usr1 => 10,
            ReloadSignal::Usr2 => 12,
        }
    }

    /// Accepts `SIGHUP`/`HUP`, `SIGUSR1`/`USR1`, `SIGUSR2`/`USR2`, case-insensitive.
    pub fn parse(text: &str) -> Option<ReloadSignal> {
        let upper = text.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        match bare {
            "HUP" => Some(ReloadSignal::Hup),
            "USR1" => Some(ReloadSignal::Usr1),
            "USR2" => Some(ReloadSignal::Usr2),
            _ => None,
        }
    }
}

impl fmt::Display for ReloadSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReloadSignal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReloadSignal::parse(s).ok_or_else(|| unknown_signal_message(s))
    }
}

impl ReloadMode {
    /// `files` or `api`, as written in the file.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReloadMode::Files => "files",
            ReloadMode::Api => "api",
        }
    }
}

impl fmt::Display for ReloadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ReloadAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadAction::Signal {
                signal,
                process: Some(process),
                ..
            } => write!(f, "{signal} to {process:?}"),
            ReloadAction::Signal {
                signal,
                process: None,
                ..
            } => write!(f, "{signal} to the container's init process"),
            ReloadAction::Http { url } => write!(f, "HTTP POST {url}"),
            ReloadAction::None => f.write_str("none"),
            ReloadAction::Restart => f.write_str("rolling restart"),
        }
    }
}
