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
//! parser's position), then each section is checked by hand so that one bad value does not hide
//! the next. Positions of key paths come from a small locator over the source text
//! (`locate`), built only when there is an error to report. `serde_yaml` stays inside this
//! module: no type of it appears in the public API.
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
use serde_yaml::{Mapping, Value};

mod budget;

pub use budget::{MAX_CONFIG_EXPANDED_BYTES, MAX_CONFIG_NODES};

/// Default for `stuckAfter`.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(120);
/// Default for `nudge.after`.
pub const DEFAULT_NUDGE_AFTER: Duration = Duration::from_secs(2);
/// Default for `reload.minInterval`.
pub const DEFAULT_RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Default for `verify.timeout`.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `expiry.warnBefore` (21 days).
pub const DEFAULT_EXPIRY_WARN_BEFORE: Duration = Duration::from_secs(21 * DAY_SECS);
/// Default for `api.maxStreamsPerConnection`: below the HTTP/2 stream limits servers commonly
/// advertise (Go and the API server: 250, nginx: 128, HAProxy: 100).
pub const DEFAULT_API_MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// Largest `api.maxStreamsPerConnection` accepted.
pub const MAX_API_STREAMS_PER_CONNECTION: u32 = 1000;
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
    "controllers",
];
const NUDGE_KEYS: &[&str] = &["enabled", "after"];
const RELOAD_KEYS: &[&str] = &["minInterval"];
const VERIFY_KEYS: &[&str] = &["timeout"];
const EXPIRY_KEYS: &[&str] = &["warnBefore"];
const API_KEYS: &[&str] = &["http2", "maxStreamsPerConnection"];
const CONTROLLER_KEYS: &[&str] = &[
    "name",
    "profile",
    "selector",
    "namespaces",
    "containers",
    "mode",
    "reload",
    "probe",
];
const CONTROLLER_RELOAD_KEYS: &[&str] = &["signal", "process", "http", "goProgramHandlesSignal"];
const HTTP_KEYS: &[&str] = &["url"];
const PROBE_KEYS: &[&str] = &["ports", "hosts"];

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
    /// Which pods are Ingress controllers and how each takes a new certificate.
    pub controllers: Vec<ControllerProfile>,
}

/// `nudge`: asking kubelet to resync a pod (by annotating it) when its mount lags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NudgeConfig {
    pub enabled: bool,
    /// How long after the API change to wait for kubelet before nudging.
    pub after: Duration,
}

/// `reload`: global limits on controller reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Minimum time between two reloads of one pod.
    pub min_interval: Duration,
}

/// `verify`: checking that the controller serves the new leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    /// How long to wait for the new leaf to be served before `ReloadUnverified`.
    pub timeout: Duration,
}

/// `expiry`: certificate expiry warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryConfig {
    /// Warn (`CertificateExpiringSoon`) when a certificate expires within this time; `0s`
    /// disables the warning.
    pub warn_before: Duration,
}

/// `api`: how the agent connects to the Kubernetes API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiConfig {
    /// Offer HTTP/2 when connecting over TLS, so the watches share a few connections.
    pub http2: bool,
    /// Open another connection rather than keep more requests (watches) open on one.
    pub max_streams_per_connection: u32,
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
    pub mode: ReloadMode,
    pub probe: ProbeConfig,
}

impl ControllerProfile {
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
            controllers: BuiltinProfile::default_controllers(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            http2: true,
            max_streams_per_connection: DEFAULT_API_MAX_STREAMS_PER_CONNECTION,
        }
    }
}

impl Default for NudgeConfig {
    fn default() -> Self {
        NudgeConfig {
            enabled: true,
            after: DEFAULT_NUDGE_AFTER,
        }
    }
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            min_interval: DEFAULT_RELOAD_MIN_INTERVAL,
        }
    }
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            timeout: DEFAULT_VERIFY_TIMEOUT,
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
                    GoSignalPolicy::TraefikV3FileProvider => format!(
                        "note: {at}: {} is sent only to a process proven to be Traefik v3 (Go build information) with the file provider on (flags, environment or static configuration); otherwise the signal is withheld (Event ReloadSignalWithheld) and the pod is verified only; reload.goProgramHandlesSignal: true vouches for it instead",
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
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Built-in profiles
// ---------------------------------------------------------------------------------------------

/// A built-in controller profile (`profile:` in a controller entry): defaults for reload, mode,
/// probe ports and, for API-driven controllers with conventional labels, the selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinProfile {
    Nginx,
    Haproxy,
    Traefik,
    Caddy,
    Envoy,
    IngressNginx,
    HaproxyIngress,
    TraefikCrd,
    Contour,
    Istio,
}

impl BuiltinProfile {
    /// Every profile, in documentation order.
    pub const ALL: [BuiltinProfile; 10] = [
        BuiltinProfile::Nginx,
        BuiltinProfile::Haproxy,
        BuiltinProfile::Traefik,
        BuiltinProfile::Caddy,
        BuiltinProfile::Envoy,
        BuiltinProfile::IngressNginx,
        BuiltinProfile::HaproxyIngress,
        BuiltinProfile::TraefikCrd,
        BuiltinProfile::Contour,
        BuiltinProfile::Istio,
    ];

    /// The name written after `profile:`.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinProfile::Nginx => "nginx",
            BuiltinProfile::Haproxy => "haproxy",
            BuiltinProfile::Traefik => "traefik",
            BuiltinProfile::Caddy => "caddy",
            BuiltinProfile::Envoy => "envoy",
            BuiltinProfile::IngressNginx => "ingress-nginx",
            BuiltinProfile::HaproxyIngress => "haproxy-ingress",
            BuiltinProfile::TraefikCrd => "traefik-crd",
            BuiltinProfile::Contour => "contour",
            BuiltinProfile::Istio => "istio",
        }
    }

    /// The profile called `name` (exact, lower case).
    pub fn from_name(name: &str) -> Option<BuiltinProfile> {
        BuiltinProfile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Where the controller reads certificates from.
    pub fn mode(self) -> ReloadMode {
        match self {
            BuiltinProfile::Nginx
            | BuiltinProfile::Haproxy
            | BuiltinProfile::Traefik
            | BuiltinProfile::Caddy
            | BuiltinProfile::Envoy => ReloadMode::Files,
            BuiltinProfile::IngressNginx
            | BuiltinProfile::HaproxyIngress
            | BuiltinProfile::TraefikCrd
            | BuiltinProfile::Contour
            | BuiltinProfile::Istio => ReloadMode::Api,
        }
    }

    /// The default reload action.
    pub fn reload(self) -> ReloadAction {
        let signal = |signal, process: &str| ReloadAction::Signal {
            signal,
            process: Some(process.to_string()),
            go: GoSignalPolicy::Refuse,
        };
        match self {
            // Each profile sends only what its controller implements as a graceful reload.
            // nginx: SIGHUP to the master re-reads the configuration and certificates.
            BuiltinProfile::Nginx => signal(ReloadSignal::Hup, "nginx: master process"),
            // HAProxy master-worker (-W/-Ws): SIGUSR2 to the master reloads. Telling the master
            // from the workers (same title) is the process lookup's job.
            BuiltinProfile::Haproxy => signal(ReloadSignal::Usr2, "haproxy"),
            // Traefik v3's file provider re-applies its configuration on SIGHUP; v2, and v3
            // without the file provider, exit on it: the process must prove it is the former.
            BuiltinProfile::Traefik => ReloadAction::Signal {
                signal: ReloadSignal::Hup,
                process: Some("traefik".to_string()),
                go: GoSignalPolicy::TraefikV3FileProvider,
            },
            BuiltinProfile::Caddy => ReloadAction::Http {
                url: "http://{podIP}:2019/load".to_string(),
            },
            BuiltinProfile::Envoy
            | BuiltinProfile::IngressNginx
            | BuiltinProfile::HaproxyIngress
            | BuiltinProfile::TraefikCrd
            | BuiltinProfile::Contour
            | BuiltinProfile::Istio => ReloadAction::None,
        }
    }

    /// Default probe ports: the TLS container port of the usual manifests / Helm charts.
    pub fn ports(self) -> Vec<u16> {
        match self {
            // Traefik's chart (websecure), Contour's Envoy and Istio's gateway listen on 8443
            // inside the pod; their Services map 443 to it.
            BuiltinProfile::TraefikCrd | BuiltinProfile::Contour | BuiltinProfile::Istio => {
                vec![8443]
            }
            _ => vec![DEFAULT_PROBE_PORT],
        }
    }

    /// The conventional selector of the controller's serving pods, for API-driven profiles.
    pub fn default_selector(self) -> Option<&'static str> {
        match self {
            BuiltinProfile::IngressNginx => {
                Some("app.kubernetes.io/name=ingress-nginx,app.kubernetes.io/component=controller")
            }
            BuiltinProfile::HaproxyIngress => Some("app.kubernetes.io/name=haproxy-ingress"),
            BuiltinProfile::TraefikCrd => Some("app.kubernetes.io/name=traefik"),
            BuiltinProfile::Contour => {
                Some("app.kubernetes.io/name=contour,app.kubernetes.io/component=envoy")
            }
            BuiltinProfile::Istio => Some("istio=ingressgateway"),
            _ => None,
        }
    }

    /// The namespaces the controller's usual install puts its pods in. A controller entry with
    /// this profile and no `namespaces` key watches only these, so a tenant's pod labelled like
    /// the controller elsewhere is never enrolled (its Secrets read, its processes signalled).
    /// Empty: the profile has no usual namespace (file-reading controllers are the user's own),
    /// and an entry without `namespaces` matches every namespace.
    pub fn usual_namespaces(self) -> &'static [&'static str] {
        match self {
            BuiltinProfile::IngressNginx => &["ingress-nginx"],
            // The project's getting-started guide installs into `ingress-controller`.
            BuiltinProfile::HaproxyIngress => &["haproxy-ingress", "ingress-controller"],
            // Traefik's chart docs use `traefik`; k3s ships Traefik in `kube-system`.
            BuiltinProfile::TraefikCrd => &["traefik", "kube-system"],
            BuiltinProfile::Contour => &["projectcontour"],
            // istioctl's default profile and the gateway chart's documented namespace.
            BuiltinProfile::Istio => &["istio-system", "istio-ingress"],
            BuiltinProfile::Nginx
            | BuiltinProfile::Haproxy
            | BuiltinProfile::Traefik
            | BuiltinProfile::Caddy
            | BuiltinProfile::Envoy => &[],
        }
    }

    /// `namespaces` of an entry with this profile that does not name any.
    pub fn default_namespaces(self) -> Option<Vec<String>> {
        let usual = self.usual_namespaces();
        (!usual.is_empty()).then(|| usual.iter().map(|n| n.to_string()).collect())
    }

    /// One-line description (docs, `--help`).
    pub fn description(self) -> &'static str {
        match self {
            BuiltinProfile::Nginx => "plain nginx reading mounted files; SIGHUP to the master",
            BuiltinProfile::Haproxy => {
                "HAProxy in master-worker mode (-W/-Ws) reading mounted files; SIGUSR2 to the master"
            }
            BuiltinProfile::Traefik => {
                "Traefik v3 with the file provider; SIGHUP, only to a process proven to be that (Go build information, flags, environment, static configuration), else verify only"
            }
            BuiltinProfile::Caddy => {
                "Caddy reading mounted files; forced reload through the admin API"
            }
            BuiltinProfile::Envoy => {
                "Envoy with file-based SDS (watched_directory); reloads itself, verify only"
            }
            BuiltinProfile::IngressNginx => {
                "ingress-nginx; reads Secrets from the API, verify only"
            }
            BuiltinProfile::HaproxyIngress => {
                "HAProxy Ingress; reads Secrets from the API, verify only"
            }
            BuiltinProfile::TraefikCrd => {
                "Traefik with the Kubernetes CRD/Ingress provider; reads Secrets from the API, verify only"
            }
            BuiltinProfile::Contour => {
                "Contour's Envoy pods; Contour reads Secrets from the API, verify only"
            }
            BuiltinProfile::Istio => {
                "Istio ingress gateway; istiod/SDS reads Secrets from the API, verify only"
            }
        }
    }

    /// A controller entry named `name` with this profile's defaults and `selector`.
    pub fn controller(self, name: &str, selector: LabelSelector) -> ControllerProfile {
        ControllerProfile {
            name: name.to_string(),
            selector,
            namespaces: self.default_namespaces(),
            containers: None,
            reload: self.reload(),
            mode: self.mode(),
            probe: ProbeConfig {
                ports: self.ports(),
                hosts: Vec::new(),
            },
        }
    }

    /// The controller entry named after this profile with its default selector, if it has one.
    pub fn default_controller(self) -> Option<ControllerProfile> {
        let selector = LabelSelector::parse(self.default_selector()?).ok()?;
        Some(self.controller(self.name(), selector))
    }

    /// The controllers of `Config::default()`: every profile with a default selector (the
    /// API-driven ones), each verify-only. File-reading profiles have no conventional labels,
    /// so they are never guessed.
    pub fn default_controllers() -> Vec<ControllerProfile> {
        BuiltinProfile::ALL
            .into_iter()
            .filter_map(BuiltinProfile::default_controller)
            .collect()
    }
}

impl fmt::Display for BuiltinProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// A parsed label selector (kubectl -l syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
/// `a notin (x,y)`, `a`, `!a`, comma-separated; whitespace tolerated).
///
/// Differences from the API server's parser, all stricter: `in ()` and empty values inside a
/// set are refused, `>`/`<` are not supported, and a trailing comma is an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    canonical: String,
    selector: Selector,
}

impl LabelSelector {
    /// Parses a selector; the error says what is wrong and where (1-based character position).
    /// An empty (or all-whitespace) string selects everything.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(LabelSelector::everything());
        }
        let mut lexer = Lexer { s, pos: 0 };
        let mut exprs = Vec::new();
        loop {
            exprs.push(parse_requirement(&mut lexer)?);
            match lexer.next() {
                (_, Tok::End) => break,
                (_, Tok::Comma) => {}
                (at, tok) => {
                    return Err(at_char(
                        s,
                        at,
                        &format!("expected \",\" or the end of the selector, found {tok}"),
                    ));
                }
            }
        }
        let selector: Selector = exprs.into_iter().collect();
        Ok(LabelSelector {
            canonical: selector.to_string(),
            selector,
        })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
    }

    /// Canonical form, usable as the API's `labelSelector` query parameter (`a=b`, `a!=b`,
    /// `a in (x,y)` with sorted values, `a`, `!a`, joined by `,`). Empty for [`Self::everything`].
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The selector that matches every pod.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// Whether this selector matches every pod.
    pub fn is_everything(&self) -> bool {
        self.selector.selects_all()
    }

    /// The parsed form, for kube's `ListParams::labels_from`/`WatchParams::labels_from`.
    pub fn kube_selector(&self) -> &Selector {
        &self.selector
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl FromStr for LabelSelector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    Comma,
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Open,
    Close,
    Gt,
    Lt,
    End,
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{}", quote(s)),
            Tok::Comma => f.write_str("\",\""),
            Tok::Eq => f.write_str("\"=\""),
            Tok::DoubleEq => f.write_str("\"==\""),
            Tok::NotEq => f.write_str("\"!=\""),
            Tok::Bang => f.write_str("\"!\""),
            Tok::Open => f.write_str("\"(\""),
            Tok::Close => f.write_str("\")\""),
            Tok::Gt => f.write_str("\">\""),
            Tok::Lt => f.write_str("\"<\""),
            Tok::End => f.write_str("the end of the selector"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Lexer<'a> {
    s: &'a str,
    /// Byte offset of the next unread character.
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// The next token and the byte offset where it starts.
    fn next(&mut self) -> (usize, Tok<'a>) {
        let rest = &self.s[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let start = self.pos;
        let Some(first) = trimmed.chars().next() else {
            return (start, Tok::End);
        };
        let second_is_eq = trimmed.as_bytes().get(1) == Some(&b'=');
        let (tok, len) = match first {
            ',' => (Tok::Comma, 1),
            '(' => (Tok::Open, 1),
            ')' => (Tok::Close, 1),
            '>' => (Tok::Gt, 1),
            '<' => (Tok::Lt, 1),
            '=' if second_is_eq => (Tok::DoubleEq, 2),
            '=' => (Tok::Eq, 1),
            '!' if second_is_eq => (Tok::NotEq, 2),
            '!' => (Tok::Bang, 1),
            _ => {
                let end = trimmed
                    .find(|c: char| c.is_whitespace() || ",=!()<>".contains(c))
                    .unwrap_or(trimmed.len());
                (Tok::Ident(&trimmed[..end]), end)
            }
        };
        self.pos += len;
        (start, tok)
    }

    fn peek(&self) -> (usize, Tok<'a>) {
        let mut copy = *self;
        copy.next()
    }
}

/// `message at character N` (1-based, in characters).
fn at_char(s: &str, byte: usize, message: &str) -> String {
    let n = s.get(..byte).map_or(0, |p| p.chars().count()) + 1;
    format!("{message} at character {n}")
}

fn parse_requirement(lexer: &mut Lexer<'_>) -> Result<Expression, String> {
    let s = lexer.s;
    let (at, tok) = lexer.next();
    match tok {
        Tok::Bang => match lexer.next() {
            (at, Tok::Ident(key)) => {
                check_label_key(key).map_err(|e| at_char(s, at, &e))?;
                Ok(Expression::DoesNotExist(key.to_string()))
            }
            (at, tok) => Err(at_char(
                s,
                at,
                &format!("expected a label key after \"!\", found {tok}"),
            )),
        },
        Tok::Ident(key) => {
            check_label_key(key).map_err(|e| at_char(s, at, &e))?;
            let key = key.to_string();
            let (op_at, op) = lexer.peek();
            match op {
                Tok::Comma | Tok::End => Ok(Expression::Exists(key)),
                Tok::Eq | Tok::DoubleEq | Tok::NotEq => {
                    lexer.next();
                    let value = match lexer.peek() {
                        (value_at, Tok::Ident(value)) => {
                            lexer.next();
                            check_label_value(value).map_err(|e| at_char(s, value_at, &e))?;
                            value
                        }
                        (_, Tok::Comma | Tok::End) => "",
                        (value_at, tok) => {
                            return Err(at_char(
                                s,
                                value_at,
                                &format!("expected a value after {op}, found {tok}"),
                            ));
                        }
                    };
                    Ok(if op == Tok::NotEq {
                        Expression::NotEqual(key, value.to_string())
                    } else {
                        Expression::Equal(key, value.to_string())
                    })
                }
                Tok::Ident(word @ ("in" | "notin")) => {
                    lexer.next();
                    let values = parse_value_set(lexer, word)?;
                    Ok(if word == "in" {
                        Expression::In(key, values)
                    } else {
                        Expression::NotIn(key, values)
                    })
                }
                Tok::Gt | Tok::Lt => Err(at_char(
                    s,
                    op_at,
                    &format!("operator {op} is not supported"),
                )),
                tok => Err(at_char(
                    s,
                    op_at,
                    &format!(
                        "expected an operator (=, ==, !=, in, notin), \",\" or the end after key {}, found {tok}",
                        quote(&key)
                    ),
                )),
            }
        }
        tok => Err(at_char(
            s,
            at,
            &format!("expected a label key or \"!\", found {tok}"),
        )),
    }
}

fn parse_value_set(lexer: &mut Lexer<'_>, word: &str) -> Result<BTreeSet<String>, String> {
    let s = lexer.s;
    match lexer.next() {
        (_, Tok::Open) => {}
        (at, tok) => {
            return Err(at_char(
                s,
                at,
                &format!("expected \"(\" after {word}, found {tok}"),
            ));
        }
    }
    let mut values = BTreeSet::new();
    loop {
        match lexer.next() {
            (at, Tok::Ident(value)) => {
                check_label_value(value).map_err(|e| at_char(s, at, &e))?;
                values.insert(value.to_string());
            }
            (at, Tok::Close) if values.is_empty() => {
                return Err(at_char(s, at, &format!("empty value list after {word}")));
            }
            (at, tok) => {
                return Err(at_char(s, at, &format!("expected a value, found {tok}")));
            }
        }
        match lexer.next() {
            (_, Tok::Comma) => {}
            (_, Tok::Close) => return Ok(values),
            (at, Tok::End) => return Err(at_char(s, at, "missing \")\"")),
            (at, tok) => {
                return Err(at_char(
                    s,
                    at,
                    &format!("expected \",\" or \")\", found {tok}"),
                ));
            }
        }
    }
}

/// A label key: optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Err(format!(
            "invalid label key {}: the prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.')",
            quote(key)
        ));
    }
    if name.contains('/') {
        return Err(format!(
            "invalid label key {}: at most one \"/\"",
            quote(key)
        ));
    }
    if !is_label_name(name) {
        return Err(format!(
            "invalid label key {}: the name must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            quote(key)
        ));
    }
    Ok(())
}

fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {}: at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            quote(value)
        ))
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// RFC 1123 label: lower-case alphanumerics and '-', 1-63, alphanumeric at both ends.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|c| is_lower_alnum(*c) || *c == b'-')
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A host name usable as SNI: letters, digits and '-', dot-separated labels, no wildcard.
fn check_host(s: &str) -> Result<(), String> {
    if s.contains('*') {
        return Err(format!(
            "host {}: a wildcard cannot be sent as SNI, name a concrete host",
            quote(s)
        ));
    }
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
        && !s.split('.').all(|l| l.bytes().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "host {}: expected a DNS name such as shop.example.com (no scheme, port or IP address)",
            quote(s)
        ))
    }
}

fn check_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("url {}: must start with http:// or https://", quote(s)))?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[..host_end].is_empty() {
        return Err(format!("url {}: no host", quote(s)));
    }
    if s.len() > 2048 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "url {}: must not contain spaces or control characters",
            quote(s)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------

/// Parses `500ms`, `15s`, `2m`, `1h30m`, `1.5h`, `21d`: one or more `<number><unit>` with no
/// spaces; units `ms`, `s`, `m`, `h`, `d` (case-sensitive). Negative values, missing units and
/// values above [`MAX_DURATION`] are errors. The error is a reason without the value.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty".to_string());
    }
    if text.starts_with('-') {
        return Err("must not be negative".to_string());
    }
    if text.chars().any(char::is_whitespace) {
        return Err("must not contain spaces".to_string());
    }
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000 * MS;
    let max = MAX_DURATION.as_nanos();
    let bytes = text.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Every index below only ever advances over ASCII bytes, so slices are on boundaries.
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_digits = &text[start..i];
        let mut frac_digits = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let frac_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_digits = &text[frac_start..i];
            if frac_digits.is_empty() {
                return Err("expected digits after \".\"".to_string());
            }
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            let rest: String = text[start..].chars().take(20).collect();
            return Err(if start == 0 {
                format!("expected a number at {}", quote(&rest))
            } else {
                format!("unexpected {}", quote(&rest))
            });
        }
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &text[unit_start..i];
        let unit_ns = match unit {
            "ms" => MS,
            "s" => S,
            "m" => 60 * S,
            "h" => 3_600 * S,
            "d" => 86_400 * S,
            "" if i < bytes.len() => {
                let rest: String = text[i..].chars().take(20).collect();
                return Err(format!("unexpected {}", quote(&rest)));
            }
            "" => {
                return Err(format!(
                    "missing unit after {}",
                    quote_number(&text[start..i])
                ));
            }
            other => return Err(format!("unknown unit {}", quote(other))),
        };
        if int_digits.len() > 20 || frac_digits.len() > 20 {
            return Err("too many digits".to_string());
        }
        let int: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits
                .parse()
                .map_err(|_| "too many digits".to_string())?
        };
        let mut part = int.checked_mul(unit_ns).ok_or_else(too_large_message)?;
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits
                .parse()
                .map_err(|_| "too many digits".to_string())?;
            let scale = 10u128.pow(u32::try_from(frac_digits.len()).unwrap_or(20));
            part = part
                .checked_add(frac.saturating_mul(unit_ns) / scale)
                .ok_or_else(too_large_message)?;
        }
        total = total.checked_add(part).ok_or_else(too_large_message)?;
        if total > max {
            return Err(too_large_message());
        }
    }
    let nanos = u64::try_from(total).map_err(|_| too_large_message())?;
    Ok(Duration::from_nanos(nanos))
}

fn too_large_message() -> String {
    format!("too large (at most {})", format_duration(MAX_DURATION))
}

/// The compact form [`parse_duration`] reads back: `2m`, `21d`, `1h30m`, `500ms`, `1.5ms`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    const S: u128 = 1_000_000_000;
    let mut ns = d.as_nanos();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400 * S), ("h", 3_600 * S), ("m", 60 * S), ("s", S)] {
        let n = ns / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            ns %= size;
        }
    }
    if ns > 0 {
        let ms = ns / 1_000_000;
        let rest = ns % 1_000_000;
        if rest == 0 {
            out.push_str(&format!("{ms}ms"));
        } else {
            let frac = format!("{rest:06}");
            out.push_str(&format!("{ms}.{}ms", frac.trim_end_matches('0')));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Where an error is: file, 1-based line and column (in characters), and the key path
/// (`controllers[0].reload.signal`; empty for the document itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub path: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        Ok(())
    }
}

/// One problem with a config file. Displayed as `FILE:LINE:COL: KEY.PATH: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error(
        "{file}: config file is larger than {limit} bytes (the limit; a config needs a few KiB)"
    )]
    TooLarge { file: String, limit: u64 },
    /// Not YAML (or not UTF-8). The position is the parser's.
    #[error("{at}: invalid YAML: {message}")]
    Syntax { at: Location, message: String },
    /// Aliases expand the document past [`MAX_CONFIG_NODES`] or [`MAX_CONFIG_EXPANDED_BYTES`].
    #[error("{at}: config too large once expanded: {message}")]
    TooComplex { at: Location, message: String },
    /// A key that is not part of the format, at any depth.
    #[error("{at}: unknown key {} ({expected})", quote(.key))]
    UnknownKey {
        at: Location,
        key: String,
        /// `expected one of: ...` or `did you mean "..."?`
        expected: String,
    },
    /// A value of the wrong YAML type.
    #[error("{at}: expected {expected}, found {found}")]
    WrongType {
        at: Location,
        expected: String,
        found: String,
    },
    /// A required key is absent; the path names it.
    #[error("{at}: required key is missing{}", hint_suffix(.hint))]
    MissingKey { at: Location, hint: String },
    /// Not a duration, or out of range.
    #[error("{at}: invalid duration {}: {reason} ({})", quote(.value), DURATION_HINT)]
    InvalidDuration {
        at: Location,
        value: String,
        reason: String,
    },
    /// `selector: ""` (would select every pod).
    #[error("{at}: empty selector would select every pod; write one such as app=edge")]
    EmptySelector { at: Location },
    /// Not a label selector.
    #[error("{at}: invalid selector {}: {reason}", quote(.selector))]
    InvalidSelector {
        at: Location,
        selector: String,
        reason: String,
    },
    /// Two controllers with one name.
    #[error("{at}: duplicate controller name {} (also used by {first})", quote(.name))]
    DuplicateName {
        at: Location,
        name: String,
        /// Key path of the first use, e.g. `controllers[0]`.
        first: String,
    },
    /// `profile:` names no built-in profile.
    #[error("{at}: unknown profile {} (expected one of: {expected})", quote(.value))]
    UnknownProfile {
        at: Location,
        value: String,
        expected: String,
    },
    /// A signal outside the reload-safe set.
    #[error("{at}: {}", unknown_signal_message(.value))]
    UnknownSignal { at: Location, value: String },
    /// `reload` with both a signal and http.
    #[error(
        "{at}: conflicting reload actions: use either signal (with an optional process) or http, not both"
    )]
    ConflictingReload { at: Location },
    /// A port outside 1..65535 (or not an integer).
    #[error("{at}: port {value} is out of range (expected an integer from 1 to 65535)")]
    InvalidPort { at: Location, value: String },
    /// Any other invalid value; the message says what is expected.
    #[error("{at}: {message}")]
    InvalidValue { at: Location, message: String },
}

impl ConfigError {
    /// The position of the error, when it has one (all but read failures).
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => None,
            ConfigError::Syntax { at, .. }
            | ConfigError::TooComplex { at, .. }
            | ConfigError::UnknownKey { at, .. }
            | ConfigError::WrongType { at, .. }
            | ConfigError::MissingKey { at, .. }
            | ConfigError::InvalidDuration { at, .. }
            | ConfigError::EmptySelector { at }
            | ConfigError::InvalidSelector { at, .. }
            | ConfigError::DuplicateName { at, .. }
            | ConfigError::UnknownProfile { at, .. }
            | ConfigError::UnknownSignal { at, .. }
            | ConfigError::ConflictingReload { at }
            | ConfigError::InvalidPort { at, .. }
            | ConfigError::InvalidValue { at, .. } => Some(at),
        }
    }
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    }
}

fn unknown_signal_message(value: &str) -> String {
    format!(
        "unknown signal {} (expected SIGHUP, SIGUSR1 or SIGUSR2)",
        quote(value)
    )
}

/// Every error found in a config file, in document order. Display prints one per line.
#[derive(Debug)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.errors.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(err: ConfigError) -> Self {
        ConfigErrors { errors: vec![err] }
    }
}

/// `mountlag check-config FILE`: prints `FILE: ok (N controllers: a, b)` and returns 0, or prints
/// every error to stderr, one per line, and returns 1.
pub fn check_config_command(path: &Path) -> u8 {
    match Config::load(path) {
        Ok(config) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe is not a config error.
            let _ = writeln!(out, "{}: ok ({})", path.display(), config.summary());
            for note in config.signal_notes() {
                let _ = writeln!(out, "{note}");
            }
            let _ = out.flush();
            0
        }
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            for e in &errors.errors {
                let _ = writeln!(err, "{e}");
            }
            1
        }
    }
}

enum ReadFailure {
    Io(std::io::Error),
    TooLarge,
}

fn read_capped(path: &Path) -> Result<Vec<u8>, ReadFailure> {
    let file = std::fs::File::open(path).map_err(ReadFailure::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadFailure::Io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReadFailure::TooLarge);
    }
    Ok(bytes)
}

fn syntax_error(err: &serde_yaml::Error, text: &str, origin: &str) -> ConfigError {
    let mut message = err.to_string();
    let given = err
        .location()
        .map_or((1, 1), |l| (l.line().max(1), l.column().max(1)));
    // serde_yaml places a duplicate key at the start of its mapping; point at the repeat.
    const DUPLICATE: &str = "duplicate entry with key \"";
    let (line, column) = message
        .find(DUPLICATE)
        .and_then(|i| message[i + DUPLICATE.len()..].split('"').next())
        .and_then(|key| duplicate_key_position(text, key, given.0))
        .unwrap_or(given);
    // The position is already in front; drop serde_yaml's own copy of it.
    let own = format!(" at line {} column {}", given.0, given.1);
    if let Some(i) = message.find(&own) {
        message.replace_range(i..i + own.len(), "");
    }
    ConfigError::Syntax {
        at: Location {
            file: origin.to_string(),
            line,
            column,
            path: String::new(),
        },
        message,
    }
}

/// Position of the first `[`/`{` nested deeper than [`MAX_FLOW_DEPTH`], skipping comments and
/// quoted scalars (a quote opens a scalar only where a scalar can start). Linear time.
fn flow_too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut line, mut col) = (1usize, 0usize);
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    // The last non-blank character of the line so far ('\n' at its start), and whether the
    // previous character was blank (or the line start).
    let mut last = '\n';
    let mut after_blank = true;
    for c in text.chars() {
        col += 1;
        if c == '\n' {
            (line, col) = (line + 1, 0);
            (comment, last, after_blank) = (false, '\n', true);
            continue;
        }
        if comment {
            continue;
        }
        match quote {
            Some('"') => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    quote = None;
                }
            }
            Some(_) => {
                if c == '\'' {
                    quote = None;
                }
            }
            None => match c {
                '#' if after_blank => comment = true,
                '"' | '\'' if matches!(last, '\n' | ':' | '-' | '[' | '{' | ',' | '?') => {
                    quote = Some(c);
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some((line, col));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        after_blank = c == ' ' || c == '\t';
        if !after_blank {
            last = c;
        }
    }
    None
}

/// Line and column of the second occurrence of plain key `key` within one block mapping that
/// starts at line `from` or later: the same column, with no line indented less in between.
/// Best effort (block style only).
fn duplicate_key_position(text: &str, key: &str, from: usize) -> Option<(usize, usize)> {
    let mut seen: Vec<usize> = Vec::new();
    for (n, line) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        seen.retain(|col| *col <= indent);
        // Skip list dashes (`- - key:`) to the key's own column.
        let mut col = indent;
        let mut body = rest;
        while let Some(after) = body.strip_prefix("- ") {
            let trimmed = after.trim_start_matches(' ');
            col += body.len() - trimmed.len();
            body = trimmed;
        }
        let is_key = body
            .strip_prefix(key)
            .is_some_and(|after| after.trim_start_matches(' ').starts_with(':'));
        if is_key {
            if seen.contains(&col) {
                let column = line[..col].chars().count() + 1;
                return Some((n + 1, column));
            }
            seen.push(col);
        }
    }
    None
}

/// A string for messages: Debug-quoted (so control characters are escaped) and cut at 64
/// characters.
/// A number from the file, as written, cut to a readable length (digits only, so no quotes).
fn quote_number(digits: &str) -> String {
    const MAX: usize = 24;
    match digits.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}… ({} digits)", &digits[..cut], digits.chars().count()),
        None => digits.to_string(),
    }
}

fn quote(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX - 1).collect();
        format!("{:?}", cut + "…")
    } else {
        format!("{s:?}")
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyPath(Vec<Seg>);

impl KeyPath {
    fn key(&self, key: &str) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        KeyPath(segs)
    }

    fn index(&self, i: usize) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k)
                    if !k.is_empty()
                        && k.len() <= 64
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')) =>
                {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{}]", quote(k))?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Whether an error points at a key or at its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Key,
    Value,
}

struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
    tree: Option<locate::Node>,
    errors: Vec<ConfigError>,
}

/// The value of `key`, treating an explicit `null` (`key:` with nothing after it) as absent.
fn get<'v>(map: &'v Mapping, key: &str) -> Option<&'v Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", quote(s)),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", quote(&t.tag.to_string())),
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        _ => "<complex key>".to_string(),
    }
}

/// `did you mean "stuckAfter"?` for near misses (case, `_`/`-`, one or two typos), else the list.
fn expected_keys(unknown: &str, allowed: &[&str]) -> String {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let unknown_norm = norm(unknown);
    let best = allowed
        .iter()
        .map(|a| (edit_distance(&unknown_norm, &norm(a)), *a))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, a)) if d <= 2 && unknown_norm.chars().count() > d => {
            format!("did you mean {}?", quote(a))
        }
        _ => format!("expected one of: {}", allowed.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().take(64).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl<'a> Validator<'a> {
    fn new(text: &'a str, origin: &'a str) -> Self {
        Validator {
            text,
            origin,
            tree: None,
            errors: Vec::new(),
        }
    }

    fn finish(mut self, config: Config) -> Result<Config, ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(config);
        }
        self.errors
            .sort_by_key(|e| e.location().map_or((0, 0), |at| (at.line, at.column)));
        Err(ConfigErrors {
            errors: self.errors,
        })
    }

    fn at(&mut self, path: &KeyPath, at: At) -> Location {
        let text = self.text;
        let tree = self.tree.get_or_insert_with(|| locate::parse(text));
        let pos = tree.locate(&path.0, at == At::Key);
        Location {
            file: self.origin.to_string(),
            line: pos.line,
            column: pos.col,
            path: path.to_string(),
        }
    }

    fn wrong_type(&mut self, path: &KeyPath, expected: &str, found: &Value) {
        let at = self.at(path, At::Value);
        self.errors.push(ConfigError::WrongType {
            at,
            expected: expected.to_string(),
            found: describe(found),
        });
    }

    fn invalid(&mut self, path: &KeyPath, at: At, message: String) {
        let at = self.at(path, at);
        self.errors.push(ConfigError::InvalidValue { at, message });
    }

    fn missing(&mut self, path: &KeyPath, hint: &str) {
        let at = self.at(path, At::Value);
        self.errors.push(ConfigError::MissingKey {
            at,
            hint: hint.to_string(),
        });
    }

    /// Reports keys of `map` that are not in `allowed` (and non-string keys).
    fn check_keys(&mut self, map: &Mapping, path: &KeyPath, allowed: &[&str]) {
        for key in map.keys() {
            if let Value::String(s) = key
                && allowed.contains(&s.as_str())
            {
                continue;
            }
            let name = key_text(key);
            let key_path = path.key(&name);
            let at = self.at(&key_path, At::Key);
            let expected = expected_keys(&name, allowed);
            self.errors.push(ConfigError::UnknownKey {
                at,
                key: name,
                expected,
            });
        }
    }

    /// The mapping under `key` (absent or null: `None` without error).
    fn section<'v>(
        &mut self,
        map: &'v Mapping,
        path: &KeyPath,
        key: &str,
        allowed: &[&str],
    ) -> Option<(&'v Mapping, KeyPath)> {
        let value = get(map, key)?;
        let path = path.key(key);
        match value {
            Value::Mapping(m) => {
                self.check_keys(m, &path, allowed);
                Some((m, path))
            }
            other => {
                let expected = format!("a mapping with keys {}", allowed.join(", "));
                self.wrong_type(&path, &expected, other);
                None
            }
        }
    }

    /// A duration under `key`: `Some(default)` when absent, `None` after reporting an error.
    fn duration(
        &mut self,
        map: &Mapping,
        path: &KeyPath,
        key: &str,
        default: Duration,
        allow_zero: bool,
    ) -> Option<Duration> {
        let path = path.key(key);
        let (text, result) = match get(map, key) {
            None => return Some(default),
            Some(Value::String(s)) => (s.clone(), parse_duration(s)),
            Some(Value::Number(n)) => (n.to_string(), Err("missing unit".to_string())),
            Some(other) => {
                self.wrong_type(&path, "a duration such as \"15s\"", other);
                return None;
            }
        };
        let result = result.and_then(|d| {
            if d.is_zero() && !allow_zero {
                Err("must be greater than zero".to_string())
            } else {
                Ok(d)
            }
        });
        match result {
            Ok(d) => Some(d),
            Err(reason) => {
                let at = self.at(&path, At::Value);
                self.errors.push(ConfigError::InvalidDuration {
                    at,
                    value: text,
                    reason,
                });
                None
            }
        }
    }

    fn boolean(&mut self, map: &Mapping, path: &KeyPath, key: &str, default: bool) -> bool {
        match get(map, key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.wrong_type(&path.key(key), "true or false", other);
                default
            }
        }
    }

    fn string<'v>(&mut self, value: &'v Value, path: &KeyPath, expected: &str) -> Option<&'v str> {
        match value {
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(path, expected, other);
                None
            }
        }
    }

    /// A non-empty list of distinct strings, each accepted by `check`.
    fn string_list(
        &mut self,
        value: &Value,
        path: &KeyPath,
        what: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Option<Vec<String>> {
        let Value::Sequence(items) = value else {
            self.wrong_type(path, &format!("a list of {what}"), value);
            return None;
        };
        if items.is_empty() {
            self.invalid(
                path,
                At::Value,
                format!("an empty list matches nothing; omit the key to mean every {what}"),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let Some(s) = self.string(item, &item_path, what) else {
                ok = false;
                continue;
            };
            if let Err(message) = check(s) {
                self.invalid(&item_path, At::Value, message);
                ok = false;
            } else if out.iter().any(|o| o == s) {
                self.invalid(
                    &item_path,
                    At::Value,
                    format!("{} is listed twice", quote(s)),
                );
                ok = false;
            } else {
                out.push(s.to_string());
            }
        }
        ok.then_some(out)
    }

    fn config(&mut self, root: &Value) -> Config {
        let root_path = KeyPath::default();
        let empty = Mapping::new();
        let map = match root {
            Value::Null => &empty,
            Value::Mapping(m) => m,
            other => {
                self.wrong_type(&root_path, "a mapping of settings", other);
                return Config::default();
            }
        };
        self.check_keys(map, &root_path, TOP_KEYS);
        let mut config = Config::default();

        let stuck_after = self.duration(map, &root_path, "stuckAfter", DEFAULT_STUCK_AFTER, false);
        config.stuck_after = stuck_after.unwrap_or(DEFAULT_STUCK_AFTER);

        let mut nudge_after = Some(DEFAULT_NUDGE_AFTER);
        if let Some((m, p)) = self.section(map, &root_path, "nudge", NUDGE_KEYS) {
            config.nudge.enabled = self.boolean(m, &p, "enabled", true);
            nudge_after = self.duration(m, &p, "after", DEFAULT_NUDGE_AFTER, true);
            config.nudge.after = nudge_after.unwrap_or(DEFAULT_NUDGE_AFTER);
        }
        if let (Some(stuck), Some(after)) = (stuck_after, nudge_after)
            && config.nudge.enabled
            && after >= stuck
        {
            let path = if get(map, "nudge").is_some() {
                root_path.key("nudge").key("after")
            } else {
                root_path.key("stuckAfter")
            };
            self.invalid(
                &path,
                At::Value,
                format!(
                    "nudge.after ({}) must be shorter than stuckAfter ({}): the mount would be reported stuck before kubelet is nudged",
                    format_duration(after),
                    format_duration(stuck)
                ),
            );
        }

        if let Some((m, p)) = self.section(map, &root_path, "reload", RELOAD_KEYS) {
            config.reload.min_interval = self
                .duration(m, &p, "minInterval", DEFAULT_RELOAD_MIN_INTERVAL, true)
                .unwrap_or(DEFAULT_RELOAD_MIN_INTERVAL);
        }
        if let Some((m, p)) = self.section(map, &root_path, "verify", VERIFY_KEYS) {
            config.verify.timeout = self
                .duration(m, &p, "timeout", DEFAULT_VERIFY_TIMEOUT, false)
                .unwrap_or(DEFAULT_VERIFY_TIMEOUT);
        }
        if let Some((m, p)) = self.section(map, &root_path, "expiry", EXPIRY_KEYS) {
            config.expiry.warn_before = self
                .duration(m, &p, "warnBefore", DEFAULT_EXPIRY_WARN_BEFORE, true)
                .unwrap_or(DEFAULT_EXPIRY_WARN_BEFORE);
        }
        if let Some((m, p)) = self.section(map, &root_path, "api", API_KEYS) {
            config.api.http2 = self.boolean(m, &p, "http2", true);
            if let Some(value) = get(m, "maxStreamsPerConnection") {
                let path = p.key("maxStreamsPerConnection");
                match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) if (1..=MAX_API_STREAMS_PER_CONNECTION).contains(&n) => {
                        config.api.max_streams_per_connection = n;
                    }
                    _ => self.invalid(
                        &path,
                        At::Value,
                        format!(
                            "must be a whole number from 1 to {MAX_API_STREAMS_PER_CONNECTION} (requests kept open on one connection), not {}",
                            describe(value)
                        ),
                    ),
                }
            }
        }
        if let Some(value) = get(map, "controllers") {
            config.controllers = self.controllers(value, &root_path.key("controllers"));
        }
        config
    }

    fn controllers(&mut self, value: &Value, path: &KeyPath) -> Vec<ControllerProfile> {
        let Value::Sequence(items) = value else {
            self.wrong_type(path, "a list of controllers", value);
            return Vec::new();
        };
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(controller) = self.controller(item, &path.index(i), i, &mut names) {
                out.push(controller);
            }
        }
        out
    }

    fn controller(
        &mut self,
        item: &Value,
        path: &KeyPath,
        index: usize,
        names: &mut HashMap<String, usize>,
    ) -> Option<ControllerProfile> {
        let Value::Mapping(map) = item else {
            self.wrong_type(
                path,
                "a controller (a mapping with name, selector, reload, ...)",
                item,
            );
            return None;
        };
        self.check_keys(map, path, CONTROLLER_KEYS);

        let name = self.controller_name(map, path, index, names);

        let profile_path = path.key("profile");
        let mut profile_failed = false;
        let profile = match get(map, "profile") {
            None => None,
            Some(Value::String(s)) => {
                let found = BuiltinProfile::from_name(s);
                if found.is_none() {
                    let at = self.at(&profile_path, At::Value);
                    let names: Vec<&str> = BuiltinProfile::ALL.iter().map(|p| p.name()).collect();
                    self.errors.push(ConfigError::UnknownProfile {
                        at,
                        value: s.clone(),
                        expected: names.join(", "),
                    });
                    profile_failed = true;
                }
                found
            }
            Some(other) => {
                self.wrong_type(&profile_path, "a profile name such as nginx", other);
                profile_failed = true;
                None
            }
        };

        let selector = self.controller_selector(map, path, profile, profile_failed);

        let namespaces = match get(map, "namespaces") {
            None => Some(profile.and_then(BuiltinProfile::default_namespaces)),
            Some(Value::Sequence(items))
                if items.len() == 1 && items[0].as_str() == Some(ALL_NAMESPACES) =>
            {
                Some(None)
            }
            Some(v) => self
                .string_list(v, &path.key("namespaces"), "namespace", |s| {
                    if s == ALL_NAMESPACES {
                        Err(format!(
                            "{} means every namespace and stands alone in the list",
                            quote(ALL_NAMESPACES)
                        ))
                    } else if is_dns_label(s) {
                        Ok(())
                    } else {
                        Err(format!(
                            "namespace {}: expected a DNS label (lower-case letters, digits and '-', at most 63)",
                            quote(s)
                        ))
                    }
                })
                .map(Some),
        };
        let containers = match get(map, "containers") {
            None => Some(None),
            Some(v) => self
                .string_list(v, &path.key("containers"), "container", |s| {
                    if is_dns_label(s) {
                        Ok(())
                    } else {
                        Err(format!(
                            "container {}: expected a container name (lower-case letters, digits and '-', at most 63)",
                            quote(s)
                        ))
                    }
                })
                .map(Some),
        };

        let mode_path = path.key("mode");
        let explicit_mode = match get(map, "mode") {
            None => None,
            Some(Value::String(s)) if s == "files" => Some(ReloadMode::Files),
            Some(Value::String(s)) if s == "api" => Some(ReloadMode::Api),
            Some(other) => {
                self.wrong_type(&mode_path, "files or api", other);
                None
            }
        };
        let mode = explicit_mode
            .or(profile.map(BuiltinProfile::mode))
            .unwrap_or(ReloadMode::Files);

        let reload_path = path.key("reload");
        let reload = match get(map, "reload") {
            None => match profile {
                Some(p) => Some(p.reload()),
                None if profile_failed => None,
                None if mode == ReloadMode::Api => Some(ReloadAction::None),
                None => {
                    self.missing(
                        &reload_path,
                        "no profile given; write reload: none for a controller that reloads itself",
                    );
                    None
                }
            },
            Some(v) => self.reload_action(v, &reload_path, profile.map(BuiltinProfile::reload)),
        };
        if let Some(action) = &reload
            && mode == ReloadMode::Api
            && *action != ReloadAction::None
        {
            let (p, at) = if get(map, "reload").is_some() {
                (&reload_path, At::Key)
            } else {
                (&mode_path, At::Value)
            };
            self.invalid(
                p,
                at,
                format!(
                    "mode api (the controller reads Secrets from the API) cannot be combined with a reload action ({action}); write reload: none or mode: files"
                ),
            );
        }

        let probe = self.probe(get(map, "probe"), &path.key("probe"), profile);

        Some(ControllerProfile {
            name: name?,
            selector: selector?,
            namespaces: namespaces?,
            containers: containers?,
            reload: reload?,
            mode,
            probe: probe?,
        })
    }

    fn controller_name(
        &mut self,
        map: &Mapping,
        path: &KeyPath,
        index: usize,
        names: &mut HashMap<String, usize>,
    ) -> Option<String> {
        let name_path = path.key("name");
        let Some(value) = get(map, "name") else {
            self.missing(&name_path, "");
            return None;
        };
        let name = self.string(value, &name_path, "a name (free text)")?;
        if name.trim().is_empty() {
            self.invalid(&name_path, At::Value, "name must not be empty".to_string());
            return None;
        }
        if name.chars().count() > 128 || name.chars().any(char::is_control) {
            self.invalid(
                &name_path,
                At::Value,
                format!(
                    "name {}: at most 128 characters, no control characters",
                    quote(name)
                ),
            );
            return None;
        }
        if let Some(first) = names.get(name) {
            let first = KeyPath::default()
                .key("controllers")
                .index(*first)
                .to_string();
            let at = self.at(&name_path, At::Value);
            self.errors.push(ConfigError::DuplicateName {
                at,
                name: name.to_string(),
                first,
            });
            return None;
        }
        names.insert(name.to_string(), index);
        Some(name.to_string())
    }

    fn controller_selector(
        &mut self,
        map: &Mapping,
        path: &KeyPath,
        profile: Option<BuiltinProfile>,
        profile_failed: bool,
    ) -> Option<LabelSelector> {
        let selector_path = path.key("selector");
        match get(map, "selector") {
            None => {
                if let Some(default) = profile.and_then(BuiltinProfile::default_selector) {
                    return LabelSelector::parse(default).ok();
                }
                if !profile_failed {
                    let hint = match profile {
                        Some(p) => format!("profile {} has no default selector", quote(p.name())),
                        None => "no profile with a default selector is given".to_string(),
                    };
                    self.missing(&selector_path, &hint);
                }
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                let at = self.at(&selector_path, At::Value);
                self.errors.push(ConfigError::EmptySelector { at });
                None
            }
            Some(Value::String(s)) => match LabelSelector::parse(s) {
                Ok(selector) => Some(selector),
                Err(reason) => {
                    let at = self.at(&selector_path, At::Value);
                    self.errors.push(ConfigError::InvalidSelector {
                        at,
                        selector: s.clone(),
                        reason,
                    });
                    None
                }
            },
            Some(other) => {
                self.wrong_type(
                    &selector_path,
                    "a label selector string such as app=edge",
                    other,
                );
                None
            }
        }
    }

    fn reload_action(
        &mut self,
        value: &Value,
        path: &KeyPath,
        inherited: Option<ReloadAction>,
    ) -> Option<ReloadAction> {
        const EXPECTED: &str = "none, {signal: ..., process: ...} or {http: {url: ...}}";
        let map = match value {
            Value::String(s) if s == "none" => return Some(ReloadAction::None),
            Value::String(s) => {
                let hint = match ReloadSignal::parse(s) {
                    Some(sig) => format!(
                        "; to send a signal write reload: {{signal: {}}}",
                        sig.name()
                    ),
                    None => String::new(),
                };
                self.invalid(
                    path,
                    At::Value,
                    format!("expected {EXPECTED}, found string {}{hint}", quote(s)),
                );
                return None;
            }
            Value::Mapping(m) => m,
            other => {
                self.wrong_type(path, EXPECTED, other);
                return None;
            }
        };
        self.check_keys(map, path, CONTROLLER_RELOAD_KEYS);
        let signal_value = get(map, "signal");
        let process_value = get(map, "process");
        let http_value = get(map, "http");
        let go_value = get(map, "goProgramHandlesSignal");
        if http_value.is_some() && (signal_value.is_some() || process_value.is_some()) {
            let at = self.at(path, At::Key);
            self.errors.push(ConfigError::ConflictingReload { at });
            return None;
        }
        let go_path = path.key("goProgramHandlesSignal");
        if http_value.is_some() && go_value.is_some() {
            self.invalid(
                &go_path,
                At::Key,
                "goProgramHandlesSignal applies to a signal reload, not to http".to_string(),
            );
            return None;
        }
        if let Some(http) = http_value {
            let http_path = path.key("http");
            let Value::Mapping(http_map) = http else {
                self.wrong_type(&http_path, "a mapping with url", http);
                return None;
            };
            self.check_keys(http_map, &http_path, HTTP_KEYS);
            let url_path = http_path.key("url");
            let Some(url_value) = get(http_map, "url") else {
                self.missing(&url_path, "");
                return None;
            };
            let url = self.string(
                url_value,
                &url_path,
                "a URL such as http://127.0.0.1:2019/load",
            )?;
            if let Err(message) = check_url(url) {
                self.invalid(&url_path, At::Value, message);
                return None;
            }
            return Some(ReloadAction::Http {
                url: url.to_string(),
            });
        }
        if signal_value.is_none() && process_value.is_none() && go_value.is_none() {
            self.invalid(
                path,
                At::Value,
                format!("empty reload: expected {EXPECTED}"),
            );
            return None;
        }
        let (inherited_signal, inherited_process, inherited_go) = match inherited {
            Some(ReloadAction::Signal {
                signal,
                process,
                go,
            }) => (Some(signal), process, go),
            _ => (None, None, GoSignalPolicy::Refuse),
        };
        let go = match go_value {
            None => Some(inherited_go),
            Some(Value::Bool(true)) => Some(GoSignalPolicy::OptIn),
            Some(Value::Bool(false)) => Some(GoSignalPolicy::Refuse),
            Some(other) => {
                self.wrong_type(&go_path, "true or false", other);
                None
            }
        };
        let signal_path = path.key("signal");
        let signal = match signal_value {
            None => match inherited_signal {
                Some(signal) => Some(signal),
                None => {
                    self.missing(
                        &signal_path,
                        "process names the target, signal says what to send",
                    );
                    None
                }
            },
            Some(Value::String(s)) => match ReloadSignal::parse(s) {
                Some(signal) => Some(signal),
                None => {
                    let at = self.at(&signal_path, At::Value);
                    self.errors.push(ConfigError::UnknownSignal {
                        at,
                        value: s.clone(),
                    });
                    None
                }
            },
            Some(other) => {
                self.wrong_type(&signal_path, "SIGHUP, SIGUSR1 or SIGUSR2", other);
                None
            }
        };
        let process_path = path.key("process");
        let process = match process_value {
            None => Some(inherited_process),
            Some(v) => match self.string(v, &process_path, "a process title prefix") {
                Some(s) if s.is_empty() || s.contains('\0') => {
                    self.invalid(
                        &process_path,
                        At::Value,
                        "process must be a non-empty prefix of the process title or comm"
                            .to_string(),
                    );
                    None
                }
                Some(s) => Some(Some(s.to_string())),
                None => None,
            },
        };
        Some(ReloadAction::Signal {
            signal: signal?,
            process: process?,
            go: go?,
        })
    }

    fn probe(
        &mut self,
        value: Option<&Value>,
        path: &KeyPath,
        profile: Option<BuiltinProfile>,
    ) -> Option<ProbeConfig> {
        let default_ports = profile.map_or_else(|| vec![DEFAULT_PROBE_PORT], BuiltinProfile::ports);
        let Some(value) = value else {
            return Some(ProbeConfig {
                ports: default_ports,
                hosts: Vec::new(),
            });
        };
        let Value::Mapping(map) = value else {
            self.wrong_type(path, "a mapping with ports and hosts", value);
            return None;
        };
        self.check_keys(map, path, PROBE_KEYS);
        let ports = match get(map, "ports") {
            None => Some(default_ports),
            Some(v) => self.ports(v, &path.key("ports")),
        };
        let hosts = match get(map, "hosts") {
            None => Some(Vec::new()),
            // An explicit empty list is the documented default, so it is fine here.
            Some(Value::Sequence(items)) if items.is_empty() => Some(Vec::new()),
            Some(v) => self.string_list(v, &path.key("hosts"), "host", check_host),
        };
        Some(ProbeConfig {
            ports: ports?,
            hosts: hosts?,
        })
    }

    fn ports(&mut self, value: &Value, path: &KeyPath) -> Option<Vec<u16>> {
        let Value::Sequence(items) = value else {
            self.wrong_type(path, "a list of ports such as [443]", value);
            return None;
        };
        if items.is_empty() {
            self.invalid(path, At::Value, "at least one port is needed".to_string());
            return None;
        }
        let mut ports = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let port = match item {
                Value::Number(n) => match n.as_u64().map(u16::try_from) {
                    Some(Ok(port)) if port != 0 => Some(port),
                    _ => {
                        let at = self.at(&item_path, At::Value);
                        self.errors.push(ConfigError::InvalidPort {
                            at,
                            value: n.to_string(),
                        });
                        None
                    }
                },
                other => {
                    self.wrong_type(&item_path, "a port number from 1 to 65535", other);
                    None
                }
            };
            match port {
                Some(port) if ports.contains(&port) => {
                    self.invalid(
                        &item_path,
                        At::Value,
                        format!("port {port} is listed twice"),
                    );
                    ok = false;
                }
                Some(port) => ports.push(port),
                None => ok = false,
            }
        }
        ok.then_some(ports)
    }
}

// ---------------------------------------------------------------------------------------------
// Locating key paths in the source text
// ---------------------------------------------------------------------------------------------

/// A forgiving reader of YAML's structure that records where each key, list item and value
/// starts, so errors found on the parsed `Value` can name a line and column. It only runs on
/// text serde_yaml already accepted, and only when there is an error to report; anything it
/// does not follow (complex keys, merged keys, aliases) makes a lookup stop at the deepest node
/// it found. It never panics and always terminates (a step budget and a depth limit).
mod locate {
    use std::collections::HashMap;

    use super::Seg;

    const MAX_DEPTH: usize = 64;

    /// 1-based line and column (in characters).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Pos {
        pub(super) line: usize,
        pub(super) col: usize,
    }

    #[derive(Debug)]
    pub(super) struct Node {
        pos: Pos,
        kind: Kind,
    }

    #[derive(Debug)]
    enum Kind {
        Scalar,
        /// Entries in order, and the index of each key's first entry.
        Map(Vec<Entry>, HashMap<String, usize>),
        Seq(Vec<Item>),
    }

    #[derive(Debug)]
    struct Entry {
        key: String,
        key_pos: Pos,
        value: Node,
    }

    #[derive(Debug)]
    struct Item {
        dash: Pos,
        value: Node,
    }

    const START: Pos = Pos { line: 1, col: 1 };

    fn map_kind(entries: Vec<Entry>) -> Kind {
        let mut index = HashMap::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            index.entry(entry.key.clone()).or_insert(i);
        }
        Kind::Map(entries, index)
    }

    fn scalar(pos: Pos) -> Node {
        Node {
            pos,
            kind: Kind::Scalar,
        }
    }

    pub(super) fn parse(text: &str) -> Node {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut parser = Parser::new(text);
        parser.document()
    }

    impl Node {
        /// Position of the node at `path`: of its key (or list dash) when `key`, else of its
        /// value. Stops at the deepest node found.
        pub(super) fn locate(&self, path: &[Seg], key: bool) -> Pos {
            let mut node = self;
            for (i, seg) in path.iter().enumerate() {
                let last = i + 1 == path.len();
                match (seg, &node.kind) {
                    (Seg::Key(k), Kind::Map(entries, index)) => {
                        match index.get(k).and_then(|i| entries.get(*i)) {
                            Some(entry) if last && key => return entry.key_pos,
                            Some(entry) => node = &entry.value,
                            None => return node.pos,
                        }
                    }
                    (Seg::Index(n), Kind::Seq(items)) => match items.get(*n) {
                        Some(item) if last && key => return item.dash,
                        Some(item) => node = &item.value,
                        None => return node.pos,
                    },
                    _ => return node.pos,
                }
            }
            node.pos
        }
    }

    fn blank(c: Option<char>) -> bool {
        matches!(c, None | Some(' ' | '\t'))
    }

    fn is_blank_line(line: &[char]) -> bool {
        line.iter().all(|c| matches!(c, ' ' | '\t'))
    }

    fn indent(line: &[char]) -> usize {
        line.iter().take_while(|c| **c == ' ').count()
    }

    /// A quoted scalar starting at `line[start]` and closed on the same line: its decoded text
    /// and the index after the closing quote.
    fn quoted_on_line(line: &[char], start: usize) -> Option<(String, usize)> {
        let quote = *line.get(start)?;
        let mut out = String::new();
        let mut i = start + 1;
        while i < line.len() {
            let c = line[i];
            if quote == '\'' {
                if c == '\'' {
                    if line.get(i + 1) == Some(&'\'') {
                        out.push('\'');
                        i += 2;
                        continue;
                    }
                    return Some((out, i + 1));
                }
                out.push(c);
                i += 1;
            } else {
                match c {
                    '"' => return Some((out, i + 1)),
                    '\\' => {
                        let (decoded, used) = unescape(&line[i + 1..]);
                        out.push_str(&decoded);
                        i += 1 + used;
                    }
                    _ => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
        }
        None
    }

    /// Decodes one escape after a backslash; returns the text and the characters consumed.
    fn unescape(rest: &[char]) -> (String, usize) {
        let Some(&c) = rest.first() else {
            return (String::new(), 0);
        };
        let hex = |n: usize| -> (String, usize) {
            let digits: String = rest.iter().skip(1).take(n).collect();
            match u32::from_str_radix(&digits, 16)
                .ok()
                .and_then(char::from_u32)
            {
                Some(ch) if digits.len() == n => (ch.to_string(), 1 + n),
                _ => (c.to_string(), 1),
            }
        };
        match c {
            'n' => ("\n".to_string(), 1),
            't' => ("\t".to_string(), 1),
            'r' => ("\r".to_string(), 1),
            '0' => ("\0".to_string(), 1),
            'x' => hex(2),
            'u' => hex(4),
            'U' => hex(8),
            other => (other.to_string(), 1),
        }
    }

    #[derive(Debug)]
    struct Parser {
        lines: Vec<Vec<char>>,
        line: usize,
        col: usize,
        budget: usize,
    }

    impl Parser {
        fn new(text: &str) -> Self {
            let lines: Vec<Vec<char>> = text
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l).chars().collect())
                .collect();
            let budget = text.len().saturating_mul(8).saturating_add(1024);
            Parser {
                lines,
                line: 0,
                col: 0,
                budget,
            }
        }

        /// Spends one step; when the budget is gone, jumps to the end so every loop stops.
        fn tick(&mut self) -> bool {
            if self.budget == 0 {
                self.line = self.lines.len();
                self.col = 0;
                return false;
            }
            self.budget -= 1;
            true
        }

        fn eof(&self) -> bool {
            self.line >= self.lines.len()
        }

        fn cur(&self) -> &[char] {
            self.lines.get(self.line).map_or(&[], Vec::as_slice)
        }

        fn peek(&self) -> Option<char> {
            self.cur().get(self.col).copied()
        }

        fn peek_at(&self, ahead: usize) -> Option<char> {
            self.cur().get(self.col + ahead).copied()
        }

        fn pos(&self) -> Pos {
            Pos {
                line: self.line + 1,
                col: self.col + 1,
            }
        }

        fn next_line(&mut self) {
            self.line += 1;
            self.col = 0;
        }

        fn at_line_start(&self) -> bool {
            self.cur()
                .iter()
                .take(self.col)
                .all(|c| matches!(c, ' ' | '\t'))
        }

        fn is_seq_indicator(&self) -> bool {
            self.peek() == Some('-') && blank(self.peek_at(1))
        }

        /// Skips spaces, comments and line ends up to the next significant character.
        fn skip_ws(&mut self) {
            while !self.eof() && self.tick() {
                match self.peek() {
                    Some(' ' | '\t') => self.col += 1,
                    None | Some('#') => self.next_line(),
                    Some(_) => break,
                }
            }
        }

        /// Skips a run of non-blank characters (an anchor, tag or alias).
        fn skip_token(&mut self, flow: bool) {
            while let Some(c) = self.peek() {
                if c == ' ' || c == '\t' || (flow && matches!(c, ',' | '[' | ']' | '{' | '}')) {
                    break;
                }
                self.col += 1;
            }
        }

        fn starts_with_marker(&self, marker: &str) -> bool {
            let line = self.cur();
            let n = marker.chars().count();
            marker
                .chars()
                .enumerate()
                .all(|(i, c)| line.get(self.col + i) == Some(&c))
                && blank(line.get(self.col + n).copied())
        }

        fn document(&mut self) -> Node {
            loop {
                self.skip_ws();
                if self.eof() {
                    return scalar(START);
                }
                if self.col == 0 && self.peek() == Some('%') {
                    self.next_line();
                } else if self.col == 0 && self.starts_with_marker("---") {
                    self.col += 3;
                } else {
                    break;
                }
            }
            self.node(0, None, 0).unwrap_or_else(|| scalar(START))
        }

        fn fits(&self, min_col: usize, seq_col: Option<usize>) -> bool {
            self.col >= min_col || (seq_col == Some(self.col) && self.is_seq_indicator())
        }

        /// A block node that starts on this line, or on a later line at column `min_col` or
        /// more (or a `-` list at `seq_col`, for lists written flush under their key).
        fn node(&mut self, min_col: usize, seq_col: Option<usize>, depth: usize) -> Option<Node> {
            let start_line = self.line;
            self.skip_ws();
            if self.eof() || (self.line != start_line && !self.fits(min_col, seq_col)) {
                return None;
            }
            // A node starts at its first property (anchor or tag), as in libyaml.
            let pos = self.pos();
            while matches!(self.peek(), Some('&' | '!')) && self.tick() {
                self.skip_token(false);
                let line = self.line;
                self.skip_ws();
                if self.eof() || (self.line != line && !self.fits(min_col, seq_col)) {
                    return Some(scalar(pos));
                }
            }
            if depth > MAX_DEPTH {
                self.skip_block(min_col);
                return Some(scalar(pos));
            }
            let mut node = match self.peek() {
                Some('-') if self.is_seq_indicator() => self.seq(depth),
                Some('[' | '{') => {
                    let node = self.flow(depth);
                    // Whatever follows on the line (a comment) is not structure.
                    self.col = self.cur().len().max(self.col);
                    node
                }
                Some('|' | '>') => {
                    self.skip_block(min_col);
                    scalar(pos)
                }
                Some('?') if blank(self.peek_at(1)) => {
                    self.skip_block(min_col);
                    scalar(pos)
                }
                Some('*') => {
                    self.skip_token(false);
                    scalar(pos)
                }
                Some(_) if self.key_here().is_some() => self.map(depth),
                Some(_) => {
                    self.skip_scalar(min_col);
                    scalar(pos)
                }
                None => scalar(pos),
            };
            node.pos = pos;
            Some(node)
        }

        /// If a mapping key starts here (`key:` followed by a blank), its text and the column
        /// after the colon.
        fn key_here(&self) -> Option<(String, usize)> {
            let line = self.cur();
            let start = self.col;
            match line.get(start)? {
                '"' | '\'' => {
                    let (key, end) = quoted_on_line(line, start)?;
                    let mut i = end;
                    while matches!(line.get(i), Some(' ' | '\t')) {
                        i += 1;
                    }
                    (line.get(i) == Some(&':') && blank(line.get(i + 1).copied()))
                        .then_some((key, i + 1))
                }
                _ => {
                    for i in start..line.len() {
                        let c = line[i];
                        if c == '#' && i > start && matches!(line[i - 1], ' ' | '\t') {
                            return None;
                        }
                        if c == ':' && blank(line.get(i + 1).copied()) {
                            let key: String = line[start..i].iter().collect();
                            return Some((key.trim_end().to_string(), i + 1));
                        }
                    }
                    None
                }
            }
        }

        fn map(&mut self, depth: usize) -> Node {
            let col = self.col;
            let pos = self.pos();
            let mut entries = Vec::new();
            while self.tick() {
                let key_pos = self.pos();
                let Some((key, after)) = self.key_here() else {
                    break;
                };
                self.col = after;
                let value = self
                    .node(col + 1, Some(col), depth + 1)
                    .unwrap_or_else(|| scalar(key_pos));
                entries.push(Entry {
                    key,
                    key_pos,
                    value,
                });
                self.skip_ws();
                if self.eof() || self.col != col || !self.at_line_start() || self.is_seq_indicator()
                {
                    break;
                }
            }
            Node {
                pos,
                kind: map_kind(entries),
            }
        }

        fn seq(&mut self, depth: usize) -> Node {
            let col = self.col;
            let pos = self.pos();
            let mut items = Vec::new();
            while self.tick() {
                let dash = self.pos();
                self.col += 1;
                let value = self
                    .node(col + 1, None, depth + 1)
                    .unwrap_or_else(|| scalar(dash));
                items.push(Item { dash, value });
                self.skip_ws();
                if self.eof()
                    || self.col != col
                    || !self.at_line_start()
                    || !self.is_seq_indicator()
                {
                    break;
                }
            }
            Node {
                pos,
                kind: Kind::Seq(items),
            }
        }

        /// Skips the rest of this line and every following line that is blank or indented at
        /// least `min_col` (block scalars, skipped subtrees).
        fn skip_block(&mut self, min_col: usize) {
            self.col = self.cur().len();
            while self.tick() {
                let next = self.line + 1;
                let Some(line) = self.lines.get(next) else {
                    break;
                };
                if is_blank_line(line) || indent(line) >= min_col {
                    self.line = next;
                    self.col = self.cur().len();
                } else {
                    break;
                }
            }
        }

        /// Skips a block-context scalar: quoted (possibly over several lines) or plain (this
        /// line plus continuation lines indented at least `min_col`).
        fn skip_scalar(&mut self, min_col: usize) {
            if matches!(self.peek(), Some('"' | '\'')) {
                self.skip_quoted();
                self.col = self.cur().len().max(self.col);
                return;
            }
            self.col = self.cur().len();
            while self.tick() {
                let mut next = self.line + 1;
                while self.lines.get(next).is_some_and(|l| is_blank_line(l)) {
                    next += 1;
                }
                let Some(line) = self.lines.get(next) else {
                    break;
                };
                let ind = indent(line);
                if ind < min_col || line.get(ind) == Some(&'#') {
                    break;
                }
                self.line = next;
                self.col = self.cur().len();
            }
        }

        /// Skips a quoted scalar starting at the cursor, across lines.
        fn skip_quoted(&mut self) {
            let Some(quote) = self.peek() else {
                return;
            };
            self.col += 1;
            while !self.eof() && self.tick() {
                match self.peek() {
                    None => self.next_line(),
                    Some('\\') if quote == '"' => self.col += 2,
                    Some('\'') if quote == '\'' && self.peek_at(1) == Some('\'') => self.col += 2,
                    Some(c) if c == quote => {
                        self.col += 1;
                        return;
                    }
                    Some(_) => self.col += 1,
                }
            }
        }

        /// A flow collection (`[...]` or `{...}`) starting at the cursor.
        fn flow(&mut self, depth: usize) -> Node {
            let pos = self.pos();
            let is_map = self.peek() == Some('{');
            self.col += 1;
            if depth > MAX_DEPTH {
                self.skip_flow_rest();
                return scalar(pos);
            }
            let close = if is_map { '}' } else { ']' };
            let mut entries = Vec::new();
            let mut items = Vec::new();
            while !self.eof() && self.tick() {
                self.skip_ws();
                let before = (self.line, self.col);
                match self.peek() {
                    None => break,
                    Some(c) if c == close => {
                        self.col += 1;
                        break;
                    }
                    Some(',') => self.col += 1,
                    Some(_) if is_map => {
                        let key_pos = self.pos();
                        let key = self.flow_key(depth);
                        self.skip_ws();
                        let value = if self.peek() == Some(':') {
                            self.col += 1;
                            self.flow_item(depth + 1)
                        } else {
                            scalar(key_pos)
                        };
                        entries.push(Entry {
                            key,
                            key_pos,
                            value,
                        });
                    }
                    Some(_) => {
                        let value = self.flow_item(depth + 1);
                        // `[a: b]` is a one-pair mapping; its value is not tracked.
                        self.skip_ws();
                        if self.peek() == Some(':') {
                            self.col += 1;
                            let _ = self.flow_item(depth + 1);
                        }
                        items.push(Item {
                            dash: value.pos,
                            value,
                        });
                    }
                }
                if (self.line, self.col) == before {
                    self.col += 1;
                }
            }
            let kind = if is_map {
                map_kind(entries)
            } else {
                Kind::Seq(items)
            };
            Node { pos, kind }
        }

        /// A key inside `{...}`: its text (empty for collection keys).
        fn flow_key(&mut self, depth: usize) -> String {
            match self.peek() {
                Some('"' | '\'') => {
                    let line = self.cur();
                    let key = quoted_on_line(line, self.col).map(|(k, _)| k);
                    self.skip_quoted();
                    key.unwrap_or_default()
                }
                Some('[' | '{') => {
                    let _ = self.flow(depth + 1);
                    String::new()
                }
                _ => self.flow_plain(),
            }
        }

        /// A value inside a flow collection.
        fn flow_item(&mut self, depth: usize) -> Node {
            self.skip_ws();
            let pos = self.pos();
            while matches!(self.peek(), Some('&' | '!')) && self.tick() {
                self.skip_token(true);
                self.skip_ws();
            }
            match self.peek() {
                Some('[' | '{') => {
                    let mut node = self.flow(depth);
                    node.pos = pos;
                    node
                }
                Some('"' | '\'') => {
                    self.skip_quoted();
                    scalar(pos)
                }
                Some(',' | ']' | '}') | None => scalar(pos),
                Some(_) => {
                    let _ = self.flow_plain();
                    scalar(pos)
                }
            }
        }

        /// A plain scalar inside a flow collection, possibly over several lines; its text.
        fn flow_plain(&mut self) -> String {
            let mut text = String::new();
            while !self.eof() && self.tick() {
                match self.peek() {
                    None => {
                        self.next_line();
                        text.push(' ');
                    }
                    Some(',' | '[' | ']' | '{' | '}') => break,
                    Some(':')
                        if blank(self.peek_at(1))
                            || matches!(self.peek_at(1), Some(',' | '[' | ']' | '{' | '}')) =>
                    {
                        break;
                    }
                    Some('#') if self.col == 0 || blank(self.cur().get(self.col - 1).copied()) => {
                        self.next_line();
                    }
                    Some(c) => {
                        text.push(c);
                        self.col += 1;
                    }
                }
            }
            text.trim().to_string()
        }

        /// Skips to the end of the flow collection whose opening bracket was just consumed.
        fn skip_flow_rest(&mut self) {
            let mut open = 1usize;
            while !self.eof() && open > 0 && self.tick() {
                match self.peek() {
                    None => self.next_line(),
                    Some('"' | '\'') => self.skip_quoted(),
                    Some('[' | '{') => {
                        open += 1;
                        self.col += 1;
                    }
                    Some(']' | '}') => {
                        open -= 1;
                        self.col += 1;
                    }
                    Some(_) => self.col += 1,
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        match Config::from_yaml(text, "test.yaml") {
            Ok(config) => config,
            Err(errors) => panic!("unexpected errors:\n{errors}"),
        }
    }

    /// Every error line of a document that must fail.
    fn errors(text: &str) -> Vec<String> {
        match Config::from_yaml(text, "t.yaml") {
            Ok(config) => panic!("expected errors, got {config:#?}"),
            Err(errors) => errors.errors.iter().map(ToString::to_string).collect(),
        }
    }

    /// The single error of a document that must fail with exactly one.
    fn error(text: &str) -> String {
        let errors = errors(text);
        assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
        errors.into_iter().next().unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap()
    }

    // --- defaults -------------------------------------------------------------------------

    #[test]
    fn defaults() {
        let config = Config::default();
        assert_eq!(config.stuck_after, Duration::from_secs(120));
        assert!(config.nudge.enabled);
        assert_eq!(config.nudge.after, Duration::from_secs(2));
        assert_eq!(config.reload.min_interval, Duration::from_secs(5));
        assert_eq!(config.verify.timeout, Duration::from_secs(10));
        assert_eq!(config.expiry.warn_before, Duration::from_secs(21 * 86_400));
        let names: Vec<&str> = config.controllers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ingress-nginx",
                "haproxy-ingress",
                "traefik-crd",
                "contour",
                "istio"
            ]
        );
        for c in &config.controllers {
            assert_eq!(c.mode, ReloadMode::Api, "{}", c.name);
            assert_eq!(c.reload, ReloadAction::None, "{}", c.name);
            assert!(!c.selector.is_everything(), "{}", c.name);
            // Look-alike pods elsewhere are not enrolled: each default watches only the
            // namespaces its controller is usually installed in.
            let usual = BuiltinProfile::from_name(&c.name)
                .map(|p| p.usual_namespaces().to_vec())
                .unwrap_or_default();
            assert!(!usual.is_empty(), "{}", c.name);
            assert_eq!(
                c.namespaces
                    .as_deref()
                    .map(|n| n.iter().map(String::as_str).collect::<Vec<_>>()),
                Some(usual),
                "{}",
                c.name
            );
            assert_eq!(c.containers, None);
        }
        assert_eq!(config.summary().split(':').next(), Some("5 controllers"));
    }

    #[test]
    fn empty_documents_give_the_defaults() {
        for text in [
            "",
            "\n\n",
            "# nothing here\n",
            "---\n",
            "{}",
            "--- {}\n",
            "\u{feff}",
        ] {
            assert_eq!(parse(text), Config::default(), "{text:?}");
        }
        // `key:` with nothing after it means "not set".
        let text = "stuckAfter:\nnudge:\nreload:\nverify:\nexpiry:\ncontrollers:\n";
        assert_eq!(parse(text), Config::default());
    }

    // --- every key --------------------------------------------------------------------------

    #[test]
    fn every_key() {
        let text = r#"
stuckAfter: 90s
nudge:
  enabled: false
  after: 500ms
reload:
  minInterval: 1m30s
verify:
  timeout: 15s
expiry:
  warnBefore: 30d
api:
  http2: false
  maxStreamsPerConnection: 32
controllers:
  - name: edge
    selector: app=edge, tier in (front, public)
    namespaces: [ingress, ingress-b]
    containers:
      - nginx
    mode: files
    reload:
      signal: hup
      process: "nginx: master process"
    probe:
      ports: [443, 8443]
      hosts: [shop.example.com, api.example.com]
  - name: caddy
    selector: app=caddy
    reload:
      http:
        url: https://127.0.0.1:2019/load
  - name: envoy
    selector: "!legacy"
    reload: none
    mode: api
"#;
        let config = parse(text);
        let expected = Config {
            stuck_after: Duration::from_secs(90),
            nudge: NudgeConfig {
                enabled: false,
                after: Duration::from_millis(500),
            },
            reload: ReloadConfig {
                min_interval: Duration::from_secs(90),
            },
            verify: VerifyConfig {
                timeout: Duration::from_secs(15),
            },
            expiry: ExpiryConfig {
                warn_before: Duration::from_secs(30 * 86_400),
            },
            api: ApiConfig {
                http2: false,
                max_streams_per_connection: 32,
            },
            controllers: vec![
                ControllerProfile {
                    name: "edge".into(),
                    selector: sel("app=edge,tier in (front,public)"),
                    namespaces: Some(vec!["ingress".into(), "ingress-b".into()]),
                    containers: Some(vec!["nginx".into()]),
                    reload: ReloadAction::Signal {
                        signal: ReloadSignal::Hup,
                        process: Some("nginx: master process".into()),
                        go: GoSignalPolicy::Refuse,
                    },
                    mode: ReloadMode::Files,
                    probe: ProbeConfig {
                        ports: vec![443, 8443],
                        hosts: vec!["shop.example.com".into(), "api.example.com".into()],
                    },
                },
                ControllerProfile {
                    name: "caddy".into(),
                    selector: sel("app=caddy"),
                    namespaces: None,
                    containers: None,
                    reload: ReloadAction::Http {
                        url: "https://127.0.0.1:2019/load".into(),
                    },
                    mode: ReloadMode::Files,
                    probe: ProbeConfig::default(),
                },
                ControllerProfile {
                    name: "envoy".into(),
                    selector: sel("!legacy"),
                    namespaces: None,
                    containers: None,
                    reload: ReloadAction::None,
                    mode: ReloadMode::Api,
                    probe: ProbeConfig::default(),
                },
            ],
        };
        assert_eq!(config, expected);
        assert_eq!(config.summary(), "3 controllers: edge, caddy, envoy");
        assert_eq!(
            config.controllers[0].selector.as_str(),
            "app=edge,tier in (front,public)"
        );
    }

    #[test]
    fn api_stream_caps_outside_one_to_a_thousand_are_refused_with_their_line() {
        assert_eq!(
            error("stuckAfter: 2m\napi:\n  maxStreamsPerConnection: 0\n"),
            "t.yaml:3:28: api.maxStreamsPerConnection: must be a whole number from 1 to 1000 (requests kept open on one connection), not number 0"
        );
        assert_eq!(
            error("api: {maxStreamsPerConnection: \"many\"}\n"),
            "t.yaml:1:32: api.maxStreamsPerConnection: must be a whole number from 1 to 1000 (requests kept open on one connection), not string \"many\""
        );
        assert!(error("api: {http2: yes please}\n").contains("api.http2"));
        assert_eq!(parse("api: {}\n").api, ApiConfig::default());
    }

    #[test]
    fn zero_durations_where_they_mean_off() {
        let config =
            parse("nudge: {after: 0s}\nreload: {minInterval: 0ms}\nexpiry: {warnBefore: 0d}\n");
        assert_eq!(config.nudge.after, Duration::ZERO);
        assert_eq!(config.reload.min_interval, Duration::ZERO);
        assert_eq!(config.expiry.warn_before, Duration::ZERO);
    }

    #[test]
    fn merge_keys_and_anchors_are_applied() {
        let text = "\
x-common: &common
  selector: app=edge
controllers:
  - <<: *common
    name: edge
    reload: none
";
        // `x-common` is not a key of the format, so this fails; without it the anchor must be
        // defined inside a known key, which the format has no place for: merges are only
        // useful between controllers.
        assert!(Config::from_yaml(text, "t").is_err());
        let text = "\
controllers:
  - &first
    name: a
    selector: app=a
    reload: none
  - <<: *first
    name: b
";
        let config = parse(text);
        assert_eq!(config.controllers[1].name, "b");
        assert_eq!(config.controllers[1].selector, sel("app=a"));
    }

    // --- profiles ---------------------------------------------------------------------------

    #[test]
    fn every_builtin_profile() {
        type Row = (
            &'static str,
            ReloadMode,
            ReloadAction,
            Vec<u16>,
            Option<&'static str>,
        );
        let expected: [Row; 10] = [
            (
                "nginx",
                ReloadMode::Files,
                ReloadAction::Signal {
                    signal: ReloadSignal::Hup,
                    process: Some("nginx: master process".into()),
                    go: GoSignalPolicy::Refuse,
                },
                vec![443],
                None,
            ),
            (
                "haproxy",
                ReloadMode::Files,
                ReloadAction::Signal {
                    signal: ReloadSignal::Usr2,
                    process: Some("haproxy".into()),
                    go: GoSignalPolicy::Refuse,
                },
                vec![443],
                None,
            ),
            (
                "traefik",
                ReloadMode::Files,
                ReloadAction::Signal {
                    signal: ReloadSignal::Hup,
                    process: Some("traefik".into()),
                    go: GoSignalPolicy::TraefikV3FileProvider,
                },
                vec![443],
                None,
            ),
            (
                "caddy",
                ReloadMode::Files,
                ReloadAction::Http {
                    url: "http://{podIP}:2019/load".into(),
                },
                vec![443],
                None,
            ),
            (
                "envoy",
                ReloadMode::Files,
                ReloadAction::None,
                vec![443],
                None,
            ),
            (
                "ingress-nginx",
                ReloadMode::Api,
                ReloadAction::None,
                vec![443],
                Some("app.kubernetes.io/name=ingress-nginx,app.kubernetes.io/component=controller"),
            ),
            (
                "haproxy-ingress",
                ReloadMode::Api,
                ReloadAction::None,
                vec![443],
                Some("app.kubernetes.io/name=haproxy-ingress"),
            ),
            (
                "traefik-crd",
                ReloadMode::Api,
                ReloadAction::None,
                vec![8443],
                Some("app.kubernetes.io/name=traefik"),
            ),
            (
                "contour",
                ReloadMode::Api,
                ReloadAction::None,
                vec![8443],
                Some("app.kubernetes.io/name=contour,app.kubernetes.io/component=envoy"),
            ),
            (
                "istio",
                ReloadMode::Api,
                ReloadAction::None,
                vec![8443],
                Some("istio=ingressgateway"),
            ),
        ];
        assert_eq!(BuiltinProfile::ALL.len(), expected.len());
        for (profile, (name, mode, reload, ports, selector)) in
            BuiltinProfile::ALL.into_iter().zip(expected)
        {
            assert_eq!(profile.name(), name);
            assert_eq!(BuiltinProfile::from_name(name), Some(profile));
            assert!(!profile.description().is_empty());

            // With an explicit selector.
            let text =
                format!("controllers:\n  - name: c\n    profile: {name}\n    selector: app=c\n");
            let c = parse(&text).controllers.remove(0);
            assert_eq!(c, profile.controller("c", sel("app=c")), "{name}");
            assert_eq!(c.mode, mode, "{name}");
            assert_eq!(c.reload, reload, "{name}");
            assert_eq!(c.probe.ports, ports, "{name}");
            assert!(c.probe.hosts.is_empty());

            // Without one: the profile's default, or an error.
            let text = format!("controllers:\n  - name: c\n    profile: {name}\n");
            match selector {
                Some(default) => {
                    let c = parse(&text).controllers.remove(0);
                    assert_eq!(c.selector.as_str(), default, "{name}");
                    assert_eq!(
                        profile.default_controller().unwrap().selector.as_str(),
                        default
                    );
                }
                None => {
                    assert_eq!(
                        error(&text),
                        format!(
                            "t.yaml:2:5: controllers[0].selector: required key is missing (profile \"{name}\" has no default selector)"
                        )
                    );
                    assert!(profile.default_controller().is_none());
                }
            }
        }
    }

    #[test]
    fn go_programs_are_signalled_only_with_the_opt_in() {
        let text = "\
controllers:
  - name: plain
    selector: app=a
    reload: {signal: HUP, process: proxy}
  - name: vouched
    selector: app=b
    reload: {signal: USR2, process: proxy, goProgramHandlesSignal: true}
  - name: traefik
    profile: traefik
    selector: app=c
  - name: traefik-vouched
    profile: traefik
    selector: app=d
    reload: {goProgramHandlesSignal: true}
  - name: traefik-process
    profile: traefik
    selector: app=e
    reload: {process: traefik-custom}
";
        let c = parse(text).controllers;
        let go = |i: usize| match &c[i].reload {
            ReloadAction::Signal { go, .. } => *go,
            other => panic!("{other:?}"),
        };
        assert_eq!(go(0), GoSignalPolicy::Refuse);
        assert_eq!(go(1), GoSignalPolicy::OptIn);
        assert_eq!(go(2), GoSignalPolicy::TraefikV3FileProvider);
        assert_eq!(
            go(3),
            GoSignalPolicy::OptIn,
            "the user vouches instead of the proof"
        );
        assert_eq!(
            go(4),
            GoSignalPolicy::TraefikV3FileProvider,
            "inherited with the signal"
        );
        assert_eq!(
            c[4].reload,
            ReloadAction::Signal {
                signal: ReloadSignal::Hup,
                process: Some("traefik-custom".into()),
                go: GoSignalPolicy::TraefikV3FileProvider,
            }
        );

        let notes = parse(text).signal_notes();
        assert_eq!(notes.len(), 5, "{notes:#?}");
        assert!(
            notes[0].starts_with(
                "note: controllers[0] (plain): SIGHUP to \"proxy\" is not sent to a Go program"
            ),
            "{}",
            notes[0]
        );
        assert!(notes[0].contains("goProgramHandlesSignal: true"));
        assert!(
            notes[1].starts_with("warning: controllers[1] (vouched)"),
            "{}",
            notes[1]
        );
        assert!(notes[1].contains("does not handle SIGUSR2"), "{}", notes[1]);
        assert!(notes[2].contains("proven to be Traefik v3"), "{}", notes[2]);
        assert!(
            notes[3].starts_with("warning: controllers[3]"),
            "{}",
            notes[3]
        );
        assert!(
            parse("controllers: [{name: a, selector: app=a, reload: none}]\n")
                .signal_notes()
                .is_empty()
        );
    }

    #[test]
    fn go_program_handles_signal_is_validated() {
        assert_eq!(
            error(
                "controllers:\n  - name: a\n    selector: app=a\n    reload: {signal: HUP, goProgramHandlesSignal: yes}\n"
            ),
            "t.yaml:4:51: controllers[0].reload.goProgramHandlesSignal: expected true or false, found string \"yes\""
        );
        let e = error(
            "controllers:\n  - name: a\n    selector: app=a\n    reload:\n      http: {url: http://127.0.0.1:1/load}\n      goProgramHandlesSignal: true\n",
        );
        assert!(
            e.starts_with("t.yaml:6:7: controllers[0].reload.goProgramHandlesSignal:"),
            "{e}"
        );
        assert!(e.contains("not to http"), "{e}");
        // Alone it needs a signal (no profile to inherit one from).
        let e = error(
            "controllers:\n  - name: a\n    selector: app=a\n    reload: {goProgramHandlesSignal: true}\n",
        );
        assert!(
            e.contains("controllers[0].reload.signal: required key is missing"),
            "{e}"
        );
    }

    #[test]
    fn profile_fields_can_be_overridden() {
        let text = "\
controllers:
  - name: a
    profile: nginx
    selector: app=a
    reload: {signal: USR1}
    probe: {ports: [8443]}
  - name: b
    profile: nginx
    selector: app=b
    reload: {process: nginx}
  - name: c
    profile: haproxy
    selector: app=c
    reload: {http: {url: 'http://127.0.0.1:9999/reload'}}
  - name: d
    profile: ingress-nginx
    selector: app=d
    namespaces: [ingress-nginx]
  - name: e
    profile: envoy
    selector: app=e
    mode: api
";
        let config = parse(text);
        let c = &config.controllers;
        assert_eq!(
            c[0].reload,
            ReloadAction::Signal {
                signal: ReloadSignal::Usr1,
                process: Some("nginx: master process".into()),
                go: GoSignalPolicy::Refuse,
            }
        );
        assert_eq!(c[0].probe.ports, [8443]);
        assert_eq!(
            c[1].reload,
            ReloadAction::Signal {
                signal: ReloadSignal::Hup,
                process: Some("nginx".into()),
                go: GoSignalPolicy::Refuse,
            }
        );
        assert_eq!(
            c[2].reload,
            ReloadAction::Http {
                url: "http://127.0.0.1:9999/reload".into()
            }
        );
        assert_eq!(c[3].selector.as_str(), "app=d");
        assert_eq!(
            c[3].namespaces.as_deref(),
            Some(&["ingress-nginx".to_string()][..])
        );
        assert_eq!(c[4].mode, ReloadMode::Api);
        assert_eq!(c[4].reload, ReloadAction::None);
    }

    #[test]
    fn api_profiles_default_to_their_usual_namespaces_and_star_means_every_namespace() {
        let text = "\
controllers:
  - {name: a, profile: ingress-nginx}
  - {name: b, profile: istio, namespaces: [gw]}
  - {name: c, profile: contour, namespaces: ['*']}
  - {name: d, profile: nginx, selector: app=d}
";
        let c = parse(text).controllers;
        assert_eq!(c[0].namespaces, Some(vec!["ingress-nginx".to_string()]));
        assert_eq!(c[1].namespaces, Some(vec!["gw".to_string()]));
        assert_eq!(c[2].namespaces, None, "'*' chooses every namespace");
        assert_eq!(
            c[3].namespaces, None,
            "file profiles have no usual namespace"
        );
    }

    #[test]
    fn star_mixed_with_namespaces_is_an_error() {
        assert_eq!(
            errors("controllers:\n  - name: a\n    profile: contour\n    namespaces: [x, '*']\n"),
            [
                "t.yaml:4:21: controllers[0].namespaces[1]: \"*\" means every namespace and stands alone in the list"
            ]
        );
    }

    #[test]
    fn controller_without_profile_in_mode_api_needs_no_reload() {
        let config = parse("controllers:\n  - {name: x, selector: app=x, mode: api}\n");
        assert_eq!(config.controllers[0].reload, ReloadAction::None);
    }

    #[test]
    fn selects_and_watches_container() {
        let config = parse(
            "controllers:\n  - name: a\n    selector: app=a\n    namespaces: [ingress]\n    containers: [nginx]\n    reload: none\n  - name: b\n    selector: app=b\n    reload: none\n",
        );
        let a = &config.controllers[0];
        assert!(a.selects("ingress", &labels(&[("app", "a")])));
        assert!(!a.selects("default", &labels(&[("app", "a")])));
        assert!(!a.selects("ingress", &labels(&[("app", "b")])));
        assert!(a.watches_container("nginx"));
        assert!(!a.watches_container("sidecar"));
        let b = &config.controllers[1];
        assert!(b.selects("anything", &labels(&[("app", "b"), ("x", "y")])));
        assert!(b.watches_container("whatever"));
        assert_eq!(config.watched_namespaces(), None);
        assert_eq!(
            config
                .controller_for("ingress", &labels(&[("app", "a")]))
                .map(|c| c.name.as_str()),
            Some("a")
        );
        assert!(config.controller_for("x", &labels(&[])).is_none());

        let config = parse(
            "controllers:\n  - {name: a, selector: a, namespaces: [x, y], reload: none}\n  - {name: b, selector: b, namespaces: [y, z], reload: none}\n",
        );
        assert_eq!(
            config.watched_namespaces(),
            Some(BTreeSet::from(["x", "y", "z"]))
        );
    }

    // --- signals -----------------------------------------------------------------------------

    #[test]
    fn signals() {
        for (text, signal) in [
            ("SIGHUP", ReloadSignal::Hup),
            ("HUP", ReloadSignal::Hup),
            ("hup", ReloadSignal::Hup),
            ("SigHup", ReloadSignal::Hup),
            ("SIGUSR1", ReloadSignal::Usr1),
            ("usr1", ReloadSignal::Usr1),
            ("SIGUSR2", ReloadSignal::Usr2),
            ("Usr2", ReloadSignal::Usr2),
        ] {
            assert_eq!(ReloadSignal::parse(text), Some(signal), "{text}");
            assert_eq!(text.parse::<ReloadSignal>(), Ok(signal));
        }
        for text in [
            "SIGTERM",
            "TERM",
            "KILL",
            "SIGKILL",
            "INT",
            "1",
            "",
            "SIG",
            "SIGSIGHUP",
        ] {
            assert_eq!(ReloadSignal::parse(text), None, "{text}");
        }
        assert_eq!(ReloadSignal::Hup.name(), "SIGHUP");
        assert_eq!(ReloadSignal::Usr1.name(), "SIGUSR1");
        assert_eq!(ReloadSignal::Usr2.to_string(), "SIGUSR2");
        use nix::sys::signal::Signal;
        assert_eq!(ReloadSignal::Hup.number(), Signal::SIGHUP as i32);
        assert_eq!(ReloadSignal::Usr1.number(), Signal::SIGUSR1 as i32);
        assert_eq!(ReloadSignal::Usr2.number(), Signal::SIGUSR2 as i32);
        assert_eq!(
            ReloadSignal::ALL.map(|s| s.number()),
            [1, 10, 12],
            "generic Linux ABI"
        );
    }

    // --- selectors ---------------------------------------------------------------------------

    #[test]
    fn selector_parsing() {
        for (input, canonical) in [
            ("", ""),
            ("   ", ""),
            ("a=b", "a=b"),
            ("a==b", "a=b"),
            ("a = b", "a=b"),
            ("a!=b", "a!=b"),
            (" a != b ", "a!=b"),
            ("a=", "a="),
            ("a!=", "a!="),
            ("a", "a"),
            ("!a", "!a"),
            ("! a", "!a"),
            ("a in (y,x)", "a in (x,y)"),
            ("a in(x)", "a in (x)"),
            ("a  in  ( x ,  y )", "a in (x,y)"),
            ("a notin (x, y)", "a notin (x,y)"),
            (
                "app.kubernetes.io/name=ingress-nginx, tier!=b,!legacy,env in (prod,stage),x",
                "app.kubernetes.io/name=ingress-nginx,tier!=b,!legacy,env in (prod,stage),x",
            ),
            ("a=b,a=c", "a=b,a=c"),
            ("in=x", "in=x"),
            ("a=in", "a=in"),
            ("A_b.c-D=V_1.x-Y", "A_b.c-D=V_1.x-Y"),
        ] {
            let selector = LabelSelector::parse(input)
                .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
            assert_eq!(selector.as_str(), canonical, "{input:?}");
            assert_eq!(selector.to_string(), canonical);
            // The canonical form parses back to the same selector.
            assert_eq!(LabelSelector::parse(canonical).unwrap(), selector);
        }
        assert!(LabelSelector::everything().is_everything());
        assert_eq!(LabelSelector::everything().as_str(), "");
        assert!(LabelSelector::everything().kube_selector().selects_all());
    }

    #[test]
    fn selector_matching() {
        let pod = labels(&[("app", "edge"), ("tier", "front"), ("empty", "")]);
        for (selector, matches) in [
            ("", true),
            ("app=edge", true),
            ("app==edge", true),
            ("app=other", false),
            ("app!=other", true),
            ("app!=edge", false),
            ("missing!=x", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("tier in (front,back)", true),
            ("tier in (back)", false),
            ("missing in (x)", false),
            ("tier notin (back)", true),
            ("tier notin (front)", false),
            ("missing notin (x)", true),
            ("empty=", true),
            ("app=", false),
            ("app=edge,tier=front", true),
            ("app=edge,tier=back", false),
        ] {
            assert_eq!(sel(selector).matches(&pod), matches, "{selector}");
        }
    }

    #[test]
    fn selector_errors() {
        for (input, message) in [
            (
                "a in (",
                "expected a value, found the end of the selector at character 7",
            ),
            ("a in (x", "missing \")\" at character 8"),
            (
                "a in x",
                "expected \"(\" after in, found \"x\" at character 6",
            ),
            ("a in ()", "empty value list after in at character 7"),
            (
                "a in (x,,y)",
                "expected a value, found \",\" at character 9",
            ),
            (
                "a in (x y)",
                "expected \",\" or \")\", found \"y\" at character 9",
            ),
            (
                "=b",
                "expected a label key or \"!\", found \"=\" at character 1",
            ),
            (
                "a=b=c",
                "expected \",\" or the end of the selector, found \"=\" at character 4",
            ),
            (
                "a=b,",
                "expected a label key or \"!\", found the end of the selector at character 5",
            ),
            (
                ",a",
                "expected a label key or \"!\", found \",\" at character 1",
            ),
            (
                "a b",
                "expected an operator (=, ==, !=, in, notin), \",\" or the end after key \"a\", found \"b\" at character 3",
            ),
            ("a>1", "operator \">\" is not supported at character 2"),
            ("a<1", "operator \"<\" is not supported at character 2"),
            (
                "!",
                "expected a label key after \"!\", found the end of the selector at character 2",
            ),
            (
                "!a=b",
                "expected \",\" or the end of the selector, found \"=\" at character 3",
            ),
            (
                "a=(",
                "expected a value after \"=\", found \"(\" at character 3",
            ),
            (
                "-a=b",
                "invalid label key \"-a\": the name must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit at character 1",
            ),
            (
                "Example.com/a=b",
                "invalid label key \"Example.com/a\": the prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.') at character 1",
            ),
            (
                "a/b/c",
                "invalid label key \"a/b/c\": at most one \"/\" at character 1",
            ),
            (
                "/a",
                "invalid label key \"/a\": the prefix must be a DNS subdomain (lower-case letters, digits, '-' and '.') at character 1",
            ),
            (
                "a=b-",
                "invalid label value \"b-\": at most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit at character 3",
            ),
            (
                "é=b",
                "invalid label key \"é\": the name must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit at character 1",
            ),
        ] {
            assert_eq!(
                LabelSelector::parse(input).unwrap_err(),
                message,
                "{input:?}"
            );
        }
        let long = "a".repeat(64);
        assert!(LabelSelector::parse(&long).is_err());
        assert!(LabelSelector::parse(&"a".repeat(63)).is_ok());
        assert!(LabelSelector::parse(&format!("a={long}")).is_err());
    }

    // --- durations ---------------------------------------------------------------------------

    #[test]
    fn durations() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("15s", Duration::from_secs(15)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("21d", Duration::from_secs(21 * 86_400)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m30s500ms", Duration::from_millis(90_500)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.5ms", Duration::from_micros(500)),
            (".5s", Duration::from_millis(500)),
            ("0s", Duration::ZERO),
            ("3650d", MAX_DURATION),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for (text, reason) in [
            ("", "empty"),
            ("5 seconds", "must not contain spaces"),
            ("-1s", "must not be negative"),
            ("abc", "expected a number at \"abc\""),
            ("5", "missing unit after 5"),
            ("5S", "unknown unit \"S\""),
            ("5sec", "unknown unit \"sec\""),
            ("1.s", "expected digits after \".\""),
            ("1s-", "unexpected \"-\""),
            ("1s5", "missing unit after 5"),
            ("5s!", "unexpected \"!\""),
            ("3651d", "too large (at most 3650d)"),
            ("99999999999999999999999d", "too many digits"),
            ("1e3s", "unknown unit \"e\""),
            ("5µs", "unexpected \"µs\""),
        ] {
            assert_eq!(parse_duration(text), Err(reason.to_string()), "{text}");
        }
        for d in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_secs(120),
            Duration::from_secs(21 * 86_400),
            Duration::from_millis(90_500),
            Duration::from_micros(1500),
            Duration::from_nanos(1),
            MAX_DURATION,
        ] {
            let text = format_duration(d);
            assert_eq!(parse_duration(&text), Ok(d), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1.5ms");
    }

    // --- errors: one of each kind, with exact positions -------------------------------------

    #[test]
    fn the_example_from_the_brief() {
        let text = "\
stuckAfter: 120s
controllers:
  - name: edge
    profile: nginx
    selector: app=edge
    reload:
      signal: SIGKILL
";
        let errors = Config::from_yaml(text, "edge.yaml").unwrap_err();
        assert_eq!(
            errors.to_string(),
            "edge.yaml:7:15: controllers[0].reload.signal: unknown signal \"SIGKILL\" (expected SIGHUP, SIGUSR1 or SIGUSR2)"
        );
        let at = errors.errors[0].location().unwrap();
        assert_eq!((at.line, at.column), (7, 15));
        assert_eq!(at.path, "controllers[0].reload.signal");
        assert!(matches!(
            errors.errors[0],
            ConfigError::UnknownSignal { .. }
        ));
    }

    #[test]
    fn unknown_keys_at_any_depth() {
        assert_eq!(
            error("stuckAfter: 1m\nstuck_after: 2m\n"),
            "t.yaml:2:1: stuck_after: unknown key \"stuck_after\" (did you mean \"stuckAfter\"?)"
        );
        assert_eq!(
            error("nudge:\n  enabled: true\n  enabeld: false\n"),
            "t.yaml:3:3: nudge.enabeld: unknown key \"enabeld\" (did you mean \"enabled\"?)"
        );
        assert_eq!(
            error("foo: 1\n"),
            "t.yaml:1:1: foo: unknown key \"foo\" (expected one of: stuckAfter, nudge, reload, verify, expiry, api, controllers)"
        );
        assert_eq!(
            error(
                "controllers:\n  - name: a\n    selector: a\n    reload: none\n    probe:\n      ports: [443]\n      sni: [x]\n"
            ),
            "t.yaml:7:7: controllers[0].probe.sni: unknown key \"sni\" (expected one of: ports, hosts)"
        );
        assert_eq!(
            error(
                "controllers:\n- name: a\n  selector: a\n  reload:\n    http:\n      url: http://x/\n      method: PUT\n"
            ),
            "t.yaml:7:7: controllers[0].reload.http.method: unknown key \"method\" (expected one of: url)"
        );
        assert_eq!(
            error("reload: {minInterval: 1s, maxInterval: 2s}\n"),
            "t.yaml:1:27: reload.maxInterval: unknown key \"maxInterval\" (did you mean \"minInterval\"?)"
        );
        assert_eq!(
            error("1: x\n"),
            "t.yaml:1:1: 1: unknown key \"1\" (expected one of: stuckAfter, nudge, reload, verify, expiry, api, controllers)"
        );
        assert_eq!(
            error("\"odd key\": x\n"),
            "t.yaml:1:1: [\"odd key\"]: unknown key \"odd key\" (expected one of: stuckAfter, nudge, reload, verify, expiry, api, controllers)"
        );
        let err = Config::from_yaml("x: 1", "t").unwrap_err();
        assert!(matches!(err.errors[0], ConfigError::UnknownKey { .. }));
    }

    #[test]
    fn bad_durations() {
        assert_eq!(
            error("stuckAfter: 5 seconds\n"),
            format!(
                "t.yaml:1:13: stuckAfter: invalid duration \"5 seconds\": must not contain spaces ({DURATION_HINT})"
            )
        );
        assert_eq!(
            error("nudge:\n  after: -1s\n"),
            format!(
                "t.yaml:2:10: nudge.after: invalid duration \"-1s\": must not be negative ({DURATION_HINT})"
            )
        );
        assert_eq!(
            error("verify:\n  timeout: abc\n"),
            format!(
                "t.yaml:2:12: verify.timeout: invalid duration \"abc\": expected a number at \"abc\" ({DURATION_HINT})"
            )
        );
        assert_eq!(
            error("stuckAfter: 120\n"),
            format!(
                "t.yaml:1:13: stuckAfter: invalid duration \"120\": missing unit ({DURATION_HINT})"
            )
        );
        assert_eq!(
            error("verify:\n  timeout: 0s\n"),
            format!(
                "t.yaml:2:12: verify.timeout: invalid duration \"0s\": must be greater than zero ({DURATION_HINT})"
            )
        );
        assert_eq!(
            error("expiry: {warnBefore: \"21 d\"}\n"),
            format!(
                "t.yaml:1:22: expiry.warnBefore: invalid duration \"21 d\": must not contain spaces ({DURATION_HINT})"
            )
        );
        assert_eq!(
            error("reload:\n  minInterval: [5s]\n"),
            "t.yaml:2:16: reload.minInterval: expected a duration such as \"15s\", found a list"
        );
        let err = Config::from_yaml("stuckAfter: 1x", "t").unwrap_err();
        assert!(matches!(err.errors[0], ConfigError::InvalidDuration { .. }));
    }

    #[test]
    fn nudge_must_come_before_stuck() {
        assert_eq!(
            error("stuckAfter: 10s\nnudge:\n  after: 10s\n"),
            "t.yaml:3:10: nudge.after: nudge.after (10s) must be shorter than stuckAfter (10s): the mount would be reported stuck before kubelet is nudged"
        );
        assert_eq!(
            error("stuckAfter: 1s\n"),
            "t.yaml:1:13: stuckAfter: nudge.after (2s) must be shorter than stuckAfter (1s): the mount would be reported stuck before kubelet is nudged"
        );
        // Disabled nudges do not constrain stuckAfter.
        parse("stuckAfter: 1s\nnudge: {enabled: false}\n");
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            error("nudge:\n  enabled: yes\n"),
            "t.yaml:2:12: nudge.enabled: expected true or false, found string \"yes\""
        );
        assert_eq!(
            error("nudge: true\n"),
            "t.yaml:1:8: nudge: expected a mapping with keys enabled, after, found boolean true"
        );
        assert_eq!(
            error("controllers: edge\n"),
            "t.yaml:1:14: controllers: expected a list of controllers, found string \"edge\""
        );
        assert_eq!(
            error("controllers:\n  - edge\n"),
            "t.yaml:2:5: controllers[0]: expected a controller (a mapping with name, selector, reload, ...), found string \"edge\""
        );
        assert_eq!(
            error("- a\n- b\n"),
            "t.yaml:1:1: expected a mapping of settings, found a list"
        );
        assert_eq!(
            error("controllers:\n  - name: a\n    selector: {app: a}\n    reload: none\n"),
            "t.yaml:3:15: controllers[0].selector: expected a label selector string such as app=edge, found a mapping"
        );
        assert_eq!(
            error("controllers:\n  - name: [a]\n    selector: a\n    reload: none\n"),
            "t.yaml:2:11: controllers[0].name: expected a name (free text), found a list"
        );
        assert_eq!(
            error("controllers:\n  - name: a\n    selector: a\n    reload: none\n    mode: both\n"),
            "t.yaml:5:11: controllers[0].mode: expected files or api, found string \"both\""
        );
        assert_eq!(
            error(
                "controllers:\n  - name: a\n    selector: a\n    reload: none\n    namespaces: ingress\n"
            ),
            "t.yaml:5:17: controllers[0].namespaces: expected a list of namespace, found string \"ingress\""
        );
        assert_eq!(
            error("stuckAfter: !custom 5s\n"),
            "t.yaml:1:13: stuckAfter: expected a duration such as \"15s\", found a value tagged \"!custom\""
        );
        let err = Config::from_yaml("nudge: 1", "t").unwrap_err();
        assert!(matches!(err.errors[0], ConfigError::WrongType { .. }));
    }

    #[test]
    fn controller_errors() {
        // Missing name: points at the item.
        let e = error("controllers:\n  - selector: a\n    reload: none\n");
        assert_eq!(
            e,
            "t.yaml:2:5: controllers[0].name: required key is missing"
        );
        assert_eq!(
            error("controllers:\n  - name: \"  \"\n    selector: a\n    reload: none\n"),
            "t.yaml:2:11: controllers[0].name: name must not be empty"
        );
        // Duplicate names.
        let e = errors(
            "controllers:\n  - name: edge\n    selector: a\n    reload: none\n  - name: edge\n    selector: b\n    reload: none\n",
        );
        assert_eq!(
            e,
            [
                "t.yaml:5:11: controllers[1].name: duplicate controller name \"edge\" (also used by controllers[0])"
            ]
        );
        // Selector missing without profile, and empty.
        assert_eq!(
            error("controllers:\n  - name: a\n    reload: none\n"),
            "t.yaml:2:5: controllers[0].selector: required key is missing (no profile with a default selector is given)"
        );
        assert_eq!(
            error("controllers:\n  - name: a\n    selector: \"\"\n    reload: none\n"),
            "t.yaml:3:15: controllers[0].selector: empty selector would select every pod; write one such as app=edge"
        );
        assert_eq!(
            error("controllers:\n  - name: a\n    profile: istio\n    selector: ' '\n"),
            "t.yaml:4:15: controllers[0].selector: empty selector would select every pod; write one such as app=edge"
        );
        assert_eq!(
            error("controllers:\n  - name: a\n    selector: a in (\n    reload: none\n"),
            "t.yaml:3:15: controllers[0].selector: invalid selector \"a in (\": expected a value, found the end of the selector at character 7"
        );
        // Unknown profile: no cascade of selector/reload errors.
        assert_eq!(
            error("controllers:\n  - name: a\n    profile: nginxx\n"),
            "t.yaml:3:14: controllers[0].profile: unknown profile \"nginxx\" (expected one of: nginx, haproxy, traefik, caddy, envoy, ingress-nginx, haproxy-ingress, traefik-crd, contour, istio)"
        );
        // Reload missing without profile.
        assert_eq!(
            error("controllers:\n  - name: a\n    selector: a\n"),
            "t.yaml:2:5: controllers[0].reload: required key is missing (no profile given; write reload: none for a controller that reloads itself)"
        );
        // Namespaces and containers.
        assert_eq!(
            error(
                "controllers:\n  - name: a\n    selector: a\n    reload: none\n    namespaces: []\n"
            ),
            "t.yaml:5:17: controllers[0].namespaces: an empty list matches nothing; omit the key to mean every namespace"
        );
        assert_eq!(
            error(
                "controllers:\n  - name: a\n    selector: a\n    reload: none\n    namespaces:\n      - ok\n      - Not_OK\n"
            ),
            "t.yaml:7:9: controllers[0].namespaces[1]: namespace \"Not_OK\": expected a DNS label (lower-case letters, digits and '-', at most 63)"
        );
        assert_eq!(
            error(
                "controllers:\n  - name: a\n    selector: a\n    reload: none\n    containers: [nginx, nginx]\n"
            ),
            "t.yaml:5:25: controllers[0].containers[1]: \"nginx\" is listed twice"
        );
        let err = Config::from_yaml("controllers: [{name: a, selector: a, reload: none}, {name: a, selector: a, reload: none}]", "t").unwrap_err();
        assert!(matches!(err.errors[0], ConfigError::DuplicateName { .. }));
    }

    #[test]
    fn reload_errors() {
        let base = "controllers:\n  - name: a\n    selector: a\n";
        assert_eq!(
            error(&format!(
                "{base}    reload:\n      signal: SIGHUP\n      http:\n        url: http://x/\n"
            )),
            "t.yaml:4:5: controllers[0].reload: conflicting reload actions: use either signal (with an optional process) or http, not both"
        );
        assert_eq!(
            error(&format!("{base}    reload:\n      signal: TERM\n")),
            "t.yaml:5:15: controllers[0].reload.signal: unknown signal \"TERM\" (expected SIGHUP, SIGUSR1 or SIGUSR2)"
        );
        assert_eq!(
            error(&format!("{base}    reload:\n      process: nginx\n")),
            "t.yaml:5:7: controllers[0].reload.signal: required key is missing (process names the target, signal says what to send)"
        );
        assert_eq!(
            error(&format!("{base}    reload: SIGHUP\n")),
            "t.yaml:4:13: controllers[0].reload: expected none, {signal: ..., process: ...} or {http: {url: ...}}, found string \"SIGHUP\"; to send a signal write reload: {signal: SIGHUP}"
        );
        assert_eq!(
            error(&format!("{base}    reload: {{}}\n")),
            "t.yaml:4:13: controllers[0].reload: empty reload: expected none, {signal: ..., process: ...} or {http: {url: ...}}"
        );
        assert_eq!(
            error(&format!(
                "{base}    reload:\n      http:\n        url: ftp://x/\n"
            )),
            "t.yaml:6:14: controllers[0].reload.http.url: url \"ftp://x/\": must start with http:// or https://"
        );
        assert_eq!(
            error(&format!("{base}    reload:\n      http: {{}}\n")),
            "t.yaml:5:13: controllers[0].reload.http.url: required key is missing"
        );
        assert_eq!(
            error(&format!(
                "{base}    reload:\n      signal: HUP\n      process: \"\"\n"
            )),
            "t.yaml:6:16: controllers[0].reload.process: process must be a non-empty prefix of the process title or comm"
        );
        assert_eq!(
            error(&format!(
                "{base}    mode: api\n    reload: {{signal: HUP}}\n"
            )),
            "t.yaml:5:5: controllers[0].reload: mode api (the controller reads Secrets from the API) cannot be combined with a reload action (SIGHUP to the container's init process); write reload: none or mode: files"
        );
        assert_eq!(
            error(
                "controllers:\n  - name: a\n    profile: nginx\n    selector: a\n    mode: api\n"
            ),
            "t.yaml:5:11: controllers[0].mode: mode api (the controller reads Secrets from the API) cannot be combined with a reload action (SIGHUP to \"nginx: master process\"); write reload: none or mode: files"
        );
        let err = Config::from_yaml(
            &format!("{base}    reload: {{signal: HUP, http: {{url: 'http://x'}}}}\n"),
            "t",
        )
        .unwrap_err();
        assert!(matches!(
            err.errors[0],
            ConfigError::ConflictingReload { .. }
        ));
    }

    #[test]
    fn probe_errors() {
        let base = "controllers:\n  - name: a\n    selector: a\n    reload: none\n    probe:\n";
        assert_eq!(
            errors(&format!("{base}      ports: [443, 0, 70000]\n")),
            [
                "t.yaml:6:20: controllers[0].probe.ports[1]: port 0 is out of range (expected an integer from 1 to 65535)",
                "t.yaml:6:23: controllers[0].probe.ports[2]: port 70000 is out of range (expected an integer from 1 to 65535)",
            ]
        );
        assert_eq!(
            error(&format!("{base}      ports:\n        - -1\n")),
            "t.yaml:7:11: controllers[0].probe.ports[0]: port -1 is out of range (expected an integer from 1 to 65535)"
        );
        assert_eq!(
            error(&format!("{base}      ports: [\"443\"]\n")),
            "t.yaml:6:15: controllers[0].probe.ports[0]: expected a port number from 1 to 65535, found string \"443\""
        );
        assert_eq!(
            error(&format!("{base}      ports: []\n")),
            "t.yaml:6:14: controllers[0].probe.ports: at least one port is needed"
        );
        assert_eq!(
            error(&format!("{base}      ports: [443, 443]\n")),
            "t.yaml:6:20: controllers[0].probe.ports[1]: port 443 is listed twice"
        );
        assert_eq!(
            error(&format!("{base}      hosts: ['*.example.com']\n")),
            "t.yaml:6:15: controllers[0].probe.hosts[0]: host \"*.example.com\": a wildcard cannot be sent as SNI, name a concrete host"
        );
        assert_eq!(
            error(&format!("{base}      hosts: [\"https://x.example.com\"]\n")),
            "t.yaml:6:15: controllers[0].probe.hosts[0]: host \"https://x.example.com\": expected a DNS name such as shop.example.com (no scheme, port or IP address)"
        );
        assert_eq!(
            error(&format!("{base}      hosts: [10.0.0.1]\n")),
            "t.yaml:6:15: controllers[0].probe.hosts[0]: host \"10.0.0.1\": expected a DNS name such as shop.example.com (no scheme, port or IP address)"
        );
        parse(&format!("{base}      hosts: []\n"));
        let err = Config::from_yaml(&format!("{base}      ports: [0]\n"), "t").unwrap_err();
        assert!(matches!(err.errors[0], ConfigError::InvalidPort { .. }));
    }

    #[test]
    fn syntax_errors() {
        let e = error("nudge:\n  enabled: true\n after: 1s\n");
        assert!(e.starts_with("t.yaml:3:2: invalid YAML: "), "{e}");
        let e = error("a: [1, 2\n");
        assert!(e.starts_with("t.yaml:2:1: invalid YAML: "), "{e}");
        assert_eq!(
            error("stuckAfter: 1s\nstuckAfter: 2s\n"),
            "t.yaml:2:1: invalid YAML: duplicate entry with key \"stuckAfter\""
        );
        assert_eq!(
            error(
                "controllers:\n  - name: a\n    reload: none\n  - name: b\n    selector: x\n    nested:\n      name: 1\n    name: c\n"
            ),
            "t.yaml:8:5: invalid YAML: controllers[1]: duplicate entry with key \"name\""
        );
        let e = error("a: 1\n---\nb: 2\n");
        assert!(e.starts_with("t.yaml:1:1: invalid YAML: "), "{e}");
        assert!(e.contains("more than one document"), "{e}");
        let e = error("a: *nope\n");
        assert!(e.contains("unknown anchor"), "{e}");
        let err = Config::from_yaml("a: [", "t").unwrap_err();
        assert!(matches!(err.errors[0], ConfigError::Syntax { .. }));
        // The position is given once, in front.
        assert!(!err.to_string().contains("at line 2 column 1"), "{err}");
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        let deep = format!("stuckAfter: 1m\nx: {}\n", "[".repeat(40));
        assert_eq!(
            error(&deep),
            "t.yaml:2:36: invalid YAML: flow collections ([...], {...}) nested more than 32 levels deep"
        );
        // Brackets in comments and quoted scalars do not count; 32 levels are fine for the scan.
        let many = "[".repeat(40);
        let text = format!(
            "# {many}\ncontrollers: # {many}\n  - name: \"{many}\"\n    selector: a\n    reload: none\n    probe: {{hosts: ['{many}']}}\n"
        );
        let e = error(&text);
        assert!(
            e.starts_with("t.yaml:6:21: controllers[0].probe.hosts[0]: host"),
            "{e}"
        );
        let nested = format!("x: {}1{}\n", "[".repeat(32), "]".repeat(32));
        assert!(error(&nested).starts_with("t.yaml:1:1: x: unknown key"));
        assert_eq!(flow_too_deep("a: \"\\\"[[\"\nb: 'it''s [['\n"), None);
    }

    #[test]
    fn every_error_is_reported_together() {
        let text = "\
stuckAfter: 5 seconds
nudge:
  enabled: maybe
  afterr: 2s
verify:
  timeout: -1s
controllers:
  - name: edge
    profile: nginx
    selector: app=edge=x
    reload:
      signal: SIGKILL
    probe:
      ports: [0]
  - selector: app=b
    reload:
      signal: HUP
      http: {url: 'http://x/'}
  - name: edge
    profile: nope
";
        let errors = Config::from_yaml(text, "f.yaml").unwrap_err();
        let lines: Vec<String> = errors.to_string().lines().map(str::to_string).collect();
        let prefixes: Vec<&str> = lines.iter().map(|l| &l[..l.find(": ").unwrap()]).collect();
        assert_eq!(
            prefixes,
            [
                "f.yaml:1:13",
                "f.yaml:3:12",
                "f.yaml:4:3",
                "f.yaml:6:12",
                "f.yaml:10:15",
                "f.yaml:12:15",
                "f.yaml:14:15",
                "f.yaml:15:5",
                "f.yaml:16:5",
                "f.yaml:19:11",
                "f.yaml:20:14",
            ],
            "{errors}"
        );
        assert!(lines[0].contains("stuckAfter: invalid duration"));
        assert!(lines[1].contains("nudge.enabled: expected true or false"));
        assert!(
            lines[2].contains("nudge.afterr: unknown key \"afterr\" (did you mean \"after\"?)")
        );
        assert!(lines[3].contains("verify.timeout: invalid duration \"-1s\""));
        assert!(lines[4].contains("controllers[0].selector: invalid selector"));
        assert!(lines[5].contains("controllers[0].reload.signal: unknown signal"));
        assert!(lines[6].contains("controllers[0].probe.ports[0]: port 0"));
        assert!(lines[7].contains("controllers[1].name: required key is missing"));
        assert!(lines[8].contains("controllers[1].reload: conflicting reload actions"));
        assert!(lines[9].contains("controllers[2].name: duplicate controller name \"edge\""));
        assert!(lines[10].contains("controllers[2].profile: unknown profile \"nope\""));
        assert_eq!(errors.errors.len(), 11);
        assert!(std::error::Error::source(&errors).is_none());
    }

    // --- the locator --------------------------------------------------------------------------

    fn pos_of(text: &str, path: &[Seg], key: bool) -> (usize, usize) {
        let p = locate::parse(text).locate(path, key);
        (p.line, p.col)
    }

    fn k(s: &str) -> Seg {
        Seg::Key(s.to_string())
    }

    #[test]
    fn locator_block_style() {
        let text = "\
# comment
a: 1   # trailing
b:
  c: x
  'd e': y
  \"f\\\"g\": z
l:
- one
- k: v
  m:
    - deep
n: |
  text: not a key
  more
o: >-
  folded
p: plain
  continued: no
q: &anchor
  r: 1
s: !tag
  t: 2
";
        assert_eq!(pos_of(text, &[k("a")], true), (2, 1));
        assert_eq!(pos_of(text, &[k("a")], false), (2, 4));
        assert_eq!(pos_of(text, &[k("b"), k("c")], false), (4, 6));
        assert_eq!(pos_of(text, &[k("b"), k("d e")], true), (5, 3));
        assert_eq!(pos_of(text, &[k("b"), k("f\"g")], false), (6, 11));
        assert_eq!(pos_of(text, &[k("l"), Seg::Index(0)], true), (8, 1));
        assert_eq!(pos_of(text, &[k("l"), Seg::Index(0)], false), (8, 3));
        assert_eq!(
            pos_of(text, &[k("l"), Seg::Index(1), k("k")], false),
            (9, 6)
        );
        assert_eq!(
            pos_of(text, &[k("l"), Seg::Index(1), k("m"), Seg::Index(0)], false),
            (11, 7)
        );
        assert_eq!(pos_of(text, &[k("n")], false), (12, 4));
        assert_eq!(pos_of(text, &[k("o")], true), (15, 1));
        assert_eq!(pos_of(text, &[k("p")], true), (17, 1));
        assert_eq!(pos_of(text, &[k("q"), k("r")], false), (20, 6));
        assert_eq!(pos_of(text, &[k("s"), k("t")], true), (22, 3));
        // Missing paths stop at the deepest node found.
        assert_eq!(pos_of(text, &[k("b"), k("zz")], true), (4, 3));
        assert_eq!(pos_of(text, &[k("l"), Seg::Index(9)], true), (8, 1));
        assert_eq!(pos_of(text, &[k("zz")], true), (2, 1));
        assert_eq!(pos_of(text, &[], true), (2, 1));
    }

    #[test]
    fn locator_flow_style() {
        let text = "\
a: {b: 1, c: [x, {d: 2}], 'e': \"f\"}
g: [
  1,
  {h: 3}
]
i:
  - {j: k}
";
        assert_eq!(pos_of(text, &[k("a"), k("b")], true), (1, 5));
        assert_eq!(pos_of(text, &[k("a"), k("b")], false), (1, 8));
        assert_eq!(
            pos_of(text, &[k("a"), k("c"), Seg::Index(1), k("d")], false),
            (1, 22)
        );
        assert_eq!(pos_of(text, &[k("a"), k("e")], false), (1, 32));
        assert_eq!(
            pos_of(text, &[k("g"), Seg::Index(1), k("h")], false),
            (4, 7)
        );
        assert_eq!(
            pos_of(text, &[k("i"), Seg::Index(0), k("j")], false),
            (7, 9)
        );
    }

    #[test]
    fn locator_survives_anything() {
        let mut inputs: Vec<String> = vec![
            String::new(),
            "[".repeat(10_000),
            "{".repeat(10_000),
            "- ".repeat(10_000),
            (0..2_000)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect(),
            (0..2_000)
                .map(|i| format!("{}- a\n", " ".repeat(i)))
                .collect(),
            "\"unterminated\n".repeat(100),
            "'".to_string(),
            "a: \"x\\".to_string(),
            "? a\n: b\n".to_string(),
            "a: |\n".to_string(),
            "\u{feff}a: 1".to_string(),
            "a:\r\n  b: 1\r\n".to_string(),
            ":::\n- :\n  - - - :".to_string(),
            "{a: [b, {c: d}, ], ,}".to_string(),
            "# only\n#comment\n".to_string(),
            "\t\ta:\t1\n".to_string(),
        ];
        inputs.extend(garbage(200));
        let paths: Vec<Vec<Seg>> = vec![
            vec![],
            vec![k("a")],
            vec![Seg::Index(0)],
            vec![k("a"), Seg::Index(3), k("b")],
            vec![k("k0"), k("k1"), k("k2")],
        ];
        for input in &inputs {
            let tree = locate::parse(input);
            for path in &paths {
                let p = tree.locate(path, true);
                assert!(p.line >= 1 && p.col >= 1);
                tree.locate(path, false);
            }
        }
    }

    /// Deterministic pseudo-random byte strings (as lossy UTF-8), some YAML-flavoured.
    fn garbage(n: usize) -> Vec<String> {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: &[u8] = b" \t\n-:[]{},#&*!|>'\"?%@`abcXYZ019.\\\r";
        (0..n)
            .map(|i| {
                let len = (next() % 400) as usize;
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        let r = next();
                        if i % 2 == 0 {
                            alphabet[(r % alphabet.len() as u64) as usize]
                        } else {
                            (r & 0xff) as u8
                        }
                    })
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect()
    }

    #[test]
    fn never_panics() {
        let example = include_str!("../../docs/examples/mountlag.yaml");
        let mut inputs: Vec<String> = vec![
            "[".repeat(100_000),
            "{a: ".repeat(10_000),
            "- ".repeat(10_000),
            (0..500)
                .map(|i| format!("{}a{i}:\n", " ".repeat(i)))
                .collect(),
            "a: &a [*a]".to_string(),
            "controllers: &c\n  - *c\n".to_string(),
            "controllers:\n  - name: \u{0}\n".to_string(),
            "controllers:\n  - name: \"\\u0000\"\n    selector: a\n    reload: none\n".to_string(),
            format!("controllers:\n  - name: {}\n", "x".repeat(100_000)),
            "stuckAfter: 99999999999999999999999999999999999999999999s\n".to_string(),
            "controllers: [{probe: {ports: [1.5, 1e99, -0, 99999999999999999999999]}}]".to_string(),
            "controllers:\n- ? [a]\n  : b\n".to_string(),
            "{[a]: b, {c: d}: e, null: f, ~: g, true: h, 1.5: i}".to_string(),
            "!!binary aGVsbG8=".to_string(),
            "%YAML 1.2\n---\nstuckAfter: 1s\n...\n".to_string(),
        ];
        inputs.extend(garbage(300));
        // Mutations of a valid document: cut it anywhere, and replace single characters.
        let chars: Vec<char> = example.chars().collect();
        for cut in (0..chars.len()).step_by(13) {
            inputs.push(chars[..cut].iter().collect());
        }
        for (i, replacement) in (0..chars.len()).step_by(17).zip(
            [
                ' ', ':', '-', '[', '{', '"', '\'', '#', '\n', '\t', 'x', '&', '*', '!',
            ]
            .iter()
            .cycle(),
        ) {
            let mut mutated = chars.clone();
            mutated[i] = *replacement;
            inputs.push(mutated.into_iter().collect());
        }
        for input in &inputs {
            match Config::from_yaml(input, "fuzz.yaml") {
                Ok(config) => {
                    let _ = config.summary();
                }
                Err(errors) => {
                    assert!(!errors.errors.is_empty());
                    for e in &errors.errors {
                        let text = e.to_string();
                        assert!(text.starts_with("fuzz.yaml:"), "{text}");
                        assert!(!text.contains('\n'), "{text:?}");
                        assert!(text.chars().count() < 2_000, "{text}");
                        if let Some(at) = e.location() {
                            assert!(at.line >= 1 && at.column >= 1);
                        }
                    }
                }
            }
        }
        for input in garbage(100) {
            let _ = LabelSelector::parse(&input);
            let _ = parse_duration(&input);
            let _ = ReloadSignal::parse(&input);
        }
    }

    // --- files and the command ---------------------------------------------------------------

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../docs/examples/mountlag.yaml");
        let config = parse(text);
        assert!(!config.controllers.is_empty());
        // It documents the defaults: every threshold in it is the default value.
        assert_eq!(config.stuck_after, DEFAULT_STUCK_AFTER);
        assert_eq!(config.nudge, NudgeConfig::default());
        assert_eq!(config.reload, ReloadConfig::default());
        assert_eq!(config.verify, VerifyConfig::default());
        assert_eq!(config.expiry, ExpiryConfig::default());
    }

    #[test]
    fn load_and_check_config_command() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(
            &good,
            "controllers:\n  - name: edge\n    profile: nginx\n    selector: app=edge\n  - name: api\n    profile: istio\n",
        )
        .unwrap();
        assert_eq!(
            Config::load(&good).unwrap().summary(),
            "2 controllers: edge, api"
        );
        assert_eq!(check_config_command(&good), 0);

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "stuckAfter: soon\nfoo: 1\n").unwrap();
        let errors = Config::load(&bad).unwrap_err();
        assert_eq!(errors.errors.len(), 2);
        let shown = errors.to_string();
        let file = bad.display().to_string();
        assert!(
            shown.starts_with(&format!("{file}:1:13: stuckAfter: invalid duration")),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("\n{file}:2:1: foo: unknown key")),
            "{shown}"
        );
        assert_eq!(check_config_command(&bad), 1);

        let missing = dir.path().join("missing.yaml");
        let errors = Config::load(&missing).unwrap_err();
        assert_eq!(errors.errors.len(), 1);
        assert!(matches!(errors.errors[0], ConfigError::Read { .. }));
        assert!(
            errors
                .to_string()
                .starts_with(&format!("{}: cannot read config file: ", missing.display()))
        );
        assert!(std::error::Error::source(&errors.errors[0]).is_some());
        assert_eq!(check_config_command(&missing), 1);
        assert_eq!(check_config_command(dir.path()), 1);

        let latin1 = dir.path().join("latin1.yaml");
        std::fs::write(&latin1, b"controllers:\n  - name: caf\xe9\n").unwrap();
        let e = Config::load(&latin1).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2:14: invalid YAML: the file is not valid UTF-8",
                latin1.display()
            )
        );

        let huge = dir.path().join("huge.yaml");
        std::fs::write(&huge, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let errors = Config::load(&huge).unwrap_err();
        assert!(matches!(errors.errors[0], ConfigError::TooLarge { .. }));
        assert_eq!(check_config_command(&huge), 1);

        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(Config::load(&empty).unwrap(), Config::default());
    }

    #[test]
    fn summary_wording() {
        let mut config = Config::default();
        config.controllers.truncate(1);
        assert_eq!(config.summary(), "1 controller: ingress-nginx");
        config.controllers.clear();
        assert_eq!(config.summary(), "0 controllers");
        assert_eq!(parse("controllers: []\n").controllers, vec![]);
    }
}
