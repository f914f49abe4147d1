//! The Kubernetes API server stand-in: real HTTPS (HTTP/2 or HTTP/1.1, chosen by ALPN as the
//! real server does) + JSON on `127.0.0.1:<port>`, spoken to by kube-rs and by the real
//! `kubectl`. Its serving certificate comes from a CA of its own, which the kubeconfigs it
//! writes carry (`certificate-authority-data`). Plain HTTP/1.1 on request
//! ([`ApiServerConfig::tls`] = false), e.g. behind a recording proxy.
//!
//! What it serves (see `docs/testbed.md` for the full contract and the differences from a real
//! kube-apiserver):
//!
//! - discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>`,
//!   `/apis/<group>/<version>` (legacy discovery documents; aggregated-discovery `Accept`
//!   headers get the legacy JSON, which kubectl and kube-rs accept);
//! - core/v1 `pods` (+ `pods/status`), `secrets`, `events`, and `events.k8s.io/v1` `events`
//!   (one storage, converted per group), plus a derived read-only `namespaces` list;
//! - `apps/v1` `deployments`, `replicasets`, `daemonsets`, `statefulsets` (+ `/status`;
//!   defaulted and their selectors validated like the real server; no controller here — the
//!   rollout model in `crate::rollout` plays it);
//! - `networking.k8s.io/v1` `ingresses` (+ `/status`) and cluster-scoped `ingressclasses`;
//!   `gateway.networking.k8s.io` `v1` and `v1beta1` `gateways`, `httproutes`,
//!   `referencegrants` and cluster-scoped `gatewayclasses` (+ `/status` where the Gateway API
//!   CRDs have it), stored as given (`kinds.rs` holds the table that drives them all);
//! - list (field/label selectors, `limit` + `continue`), watch (ADDED/MODIFIED/DELETED,
//!   selector transitions, BOOKMARKs, `timeoutSeconds`, 410 `Expired`, `sendInitialEvents`),
//!   get, create, replace (409 on a stale resourceVersion), merge / strategic (approximated) /
//!   JSON / apply (approximated) patch, delete;
//! - `pods/{name}/portforward` over a WebSocket to the pod's `status.podIP` (`portforward.rs`);
//! - faults: [`ApiServer::stop`] / [`ApiServer::restart`] (same port), [`ApiServer::drop_watches`],
//!   [`ApiServer::compact`];
//! - counters: [`ApiServer::stats`] (requests per verb and resource and per user, response
//!   bytes per user, PATCHes per object, open watches per resource and per user, connections)
//!   and [`ApiServer::patches`] (every PATCH with its body).
//!
//! Every HTTP request passes through [`auth::authorize`] (the RBAC hook; allows everything by
//! default). The in-process helpers ([`ApiServer::create_pod`], [`ApiServer::apply_object`],
//! ...) act as a privileged client and bypass it.

mod admission;
mod auth;
mod convert;
mod discovery;
mod error;
mod faults;
mod http;
mod kinds;
mod patch;
mod portforward;
mod select;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

pub use admission::{Admission, AdmissionRequest, AdmitAll, Denial, ValidatingPolicies};
pub use auth::{AllowAll, Authorizer, Decision, Identity, RequestAttributes, authorize};
pub use convert::{EventObjectRef, RecordedEvent};
pub use error::ApiError;
pub use faults::{FaultCounts, Faults, Rejection};
pub use kinds::{ApiGroup, Resource};
pub use patch::PatchType;
pub use select::{FieldSelector, LabelSelector};
pub use store::{ChangeType, StoreChange};

use http::{ConnectionId, StatsInner, lock_stats};
use store::{Part, Preconditions, Store};

/// Token of the built-in admin user (`testbed:admin`), used by [`ApiServer::client`] and the
/// kubeconfig at [`ApiServer::kubeconfig_path`].
pub const ADMIN_TOKEN: &str = "mountlag-testbed-admin-token";
/// User name of [`ADMIN_TOKEN`].
pub const ADMIN_USER: &str = "testbed:admin";

/// How to run the stand-in.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// Port on 127.0.0.1; 0 picks a free one (kept across [`ApiServer::stop`]/[`ApiServer::restart`]).
    pub port: u16,
    /// Changes kept for resuming watches; a watch resumed from before the window gets a 410.
    pub history_limit: usize,
    /// BOOKMARK interval for watches with `allowWatchBookmarks=true` (the real server: ~1 min).
    pub bookmark_interval: Duration,
    /// Watch duration when the client sends no `timeoutSeconds` (`None`: until the client or a
    /// fault ends it).
    pub default_watch_timeout: Option<Duration>,
    /// Bearer token → user name. Requests without a token are `system:anonymous`; an unknown
    /// token is a 401.
    pub tokens: BTreeMap<String, String>,
    /// Bearer token → extra claims (`authentication.kubernetes.io/node-name` → [node]), as
    /// a pod-bound ServiceAccount token carries them.
    pub token_extra: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// The authorization hook every HTTP request passes through.
    pub authorizer: Arc<dyn Authorizer>,
    /// The admission hook every authorized update of an existing object passes through.
    pub admission: Arc<dyn Admission>,
    /// Capacity of the change broadcast; a watch (or subscriber) that falls this far behind
    /// is closed (watches) or sees `Lagged` (subscribers).
    pub change_buffer: usize,
    /// Serve HTTPS with ALPN `h2` and `http/1.1` (true), or plain HTTP/1.1.
    pub tls: bool,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` (Go's default, which the API server keeps
    /// unless `--http2-max-streams-per-connection` says otherwise: 250). A client that opens
    /// more streams on one connection waits for one to close.
    pub http2_max_concurrent_streams: u32,
    /// API groups answered as not installed (404, absent from discovery): a cluster without
    /// those CRDs (`cert-manager.io`, `gateway.networking.k8s.io`).
    pub unserved_groups: Vec<&'static str>,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            port: 0,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(1),
            default_watch_timeout: None,
            tokens: BTreeMap::from([(ADMIN_TOKEN.to_owned(), ADMIN_USER.to_owned())]),
            token_extra: BTreeMap::new(),
            authorizer: Arc::new(AllowAll),
            admission: Arc::new(AdmitAll),
            change_buffer: 16_384,
            tls: true,
            http2_max_concurrent_streams: 250,
            unserved_groups: Vec::new(),
        }
    }
}

/// Request counters and the open-watch gauge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiStats {
    /// (verb, resource) → requests, e.g. `("watch", "pods")`, `("create",
    /// "events.events.k8s.io")`, `("list", "ingresses.networking.k8s.io")`, `("get", "/api")`
    /// for non-resource requests.
    pub requests: BTreeMap<(String, String), u64>,
    /// User → requests.
    pub requests_by_user: BTreeMap<String, u64>,
    /// (user, verb, resource, scope, selector) → requests: which requests each user makes,
    /// e.g. whether any lists Secrets cluster-wide or without a name selector.
    pub requests_by_shape: BTreeMap<RequestShape, u64>,
    /// User → response body bytes of the requests in `requests_by_user`: whole bodies, and
    /// each watch stream's event lines (BOOKMARKs included) as the connection takes them.
    /// Headers, HTTP/2 and TLS framing are not counted, nor port-forward tunnels.
    pub bytes_by_user: BTreeMap<String, u64>,
    /// User → watch events sent (ADDED, MODIFIED, DELETED, ERROR; not BOOKMARKs).
    pub watch_events_by_user: BTreeMap<String, u64>,
    /// Watch streams open right now.
    pub open_watches: usize,
    /// Open watch streams per resource (`pods`, `secrets`, `events.events.k8s.io`,
    /// `gateways.gateway.networking.k8s.io`).
    pub open_watches_by_resource: BTreeMap<String, usize>,
    /// Open watch streams per user.
    pub open_watches_by_user: BTreeMap<String, usize>,
    /// Watch streams started since the last reset.
    pub watches_started: u64,
    /// Watch streams started since the last reset, per user.
    pub watches_started_by_user: BTreeMap<String, u64>,
    /// Open TCP connections per user: those on which the user sent at least one authorized
    /// request (a connection shared by several users counts for each).
    pub open_connections_by_user: BTreeMap<String, usize>,
    /// Requests answered 503 because the server was stopped (on connections still open).
    pub refused_while_stopped: u64,
    /// (verb, resource) → requests the authorizer denied (403 Forbidden); not in `requests`.
    pub forbidden: BTreeMap<(String, String), u64>,
    /// Writes an admission policy refused (they are in `requests`: authorized, then refused).
    pub admission_denied: u64,
    /// TCP connections accepted since the server started (not reset by `reset_stats`).
    pub connections_accepted: u64,
    /// TCP connections open right now.
    pub open_connections: usize,
    /// `HTTP/2.0` / `HTTP/1.1` → requests.
    pub requests_by_http_version: BTreeMap<String, u64>,
    /// The store's current resourceVersion.
    pub resource_version: u64,
    /// Faults injected (see [`Faults`]) since the last reset: `watch_gone`, `watch_silent`,
    /// `watch_cut`, `reject_429`, ...
    pub faults: FaultCounts,
    /// (resource, namespace, name) → authorized PATCH requests, whatever their answer, e.g.
    /// `("deployments.apps", "shop", "web")`, `("pods/status", "shop", "web-0")`. The
    /// requests themselves are in [`ApiServer::patches`].
    pub patches: BTreeMap<(String, String, String), u64>,
}

/// What kind of request a user made, for [`ApiStats::requests_by_shape`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestShape {
    pub user: String,
    /// `list`, `watch`, `get`, `patch`, ...
    pub verb: String,
    /// As in [`ApiStats::requests`] (`secrets`, `certificates.cert-manager.io`, `/api`).
    pub resource: String,
    /// `cluster` (every namespace, or a cluster-scoped kind), `namespace` (one namespace's
    /// collection), `object` (one named object); empty for non-resource requests.
    pub scope: &'static str,
    /// The selectors' keys without their values, e.g. `fields metadata.name`,
    /// `fields spec.nodeName`, `labels`, `fields metadata.name; labels`; empty without any.
    pub selector: String,
}

impl RequestShape {
    pub(crate) fn of(
        user: &str,
        attrs: &RequestAttributes,
        query: &std::collections::HashMap<String, String>,
    ) -> Self {
        let scope = if !attrs.resource_request {
            ""
        } else if !attrs.name.is_empty() {
            "object"
        } else if !attrs.namespace.is_empty() {
            "namespace"
        } else {
            "cluster"
        };
        let mut selector = Vec::new();
        if let Some(fields) = query.get("fieldSelector").filter(|f| !f.is_empty()) {
            let keys: Vec<&str> = fields
                .split(',')
                .map(|term| term.split(['=', '!']).next().unwrap_or("").trim())
                .collect();
            selector.push(format!("fields {}", keys.join(",")));
        }
        if query.get("labelSelector").is_some_and(|l| !l.is_empty()) {
            selector.push("labels".to_owned());
        }
        Self {
            user: user.to_owned(),
            verb: attrs.verb.clone(),
            resource: attrs.resource_key(),
            scope,
            selector: selector.join("; "),
        }
    }
}

/// One authorized PATCH request over HTTP, as [`ApiServer::patches`] keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRecord {
    /// Who sent it.
    pub user: String,
    /// `resource[/subresource][.group]`, as in [`ApiStats::requests`] (`deployments.apps`).
    pub resource: String,
    /// Namespace (`""` for cluster-scoped kinds).
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// The request's `Content-Type` (`application/merge-patch+json`, ...).
    pub content_type: String,
    /// The patch as sent (JSON, or YAML for apply patches, as JSON); a body that does not parse
    /// is kept as a string.
    pub body: Value,
    /// The HTTP status of the answer (200, 409 Conflict, 422, ...).
    pub code: u16,
}

impl ApiStats {
    /// Requests with this verb and resource key.
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// All requests.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Requests by `user`.
    pub fn requests_of(&self, user: &str) -> u64 {
        self.requests_by_user.get(user).copied().unwrap_or(0)
    }

    /// Response body bytes sent to `user`.
    pub fn bytes_of(&self, user: &str) -> u64 {
        self.bytes_by_user.get(user).copied().unwrap_or(0)
    }

    /// Authorized PATCH requests of one object (`resource` as in [`ApiStats::patches`]).
    pub fn patch_count(&self, resource: &str, namespace: &str, name: &str) -> u64 {
        self.patches
            .get(&(resource.to_owned(), namespace.to_owned(), name.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    store: Store,
    config: ApiServerConfig,
    available: AtomicBool,
    epoch: tokio::sync::watch::Sender<u64>,
    stats: Mutex<StatsInner>,
    faults: Mutex<Faults>,
    port: u16,
    started: String,
    tls: Option<ServingTls>,
}

/// The stand-in's serving certificate and the CA that signed it.
struct ServingTls {
    acceptor: tokio_rustls::TlsAcceptor,
    ca_pem: String,
    ca_der: Vec<u8>,
}

impl std::fmt::Debug for ServingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingTls").finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one injected fault.
    pub(crate) fn count_fault(&self, fault: &str) {
        *lock_stats(&self.stats)
            .faults
            .entry(fault.to_owned())
            .or_default() += 1;
    }
}

impl ServingTls {
    fn new() -> anyhow::Result<Self> {
        let ca = crate::certs::TestCa::new("mountlag testbed API server CA")?;
        let leaf = ca.issue(&crate::certs::LeafSpec::valid_for([
            "127.0.0.1",
            "localhost",
        ]))?;
        let chain = vec![
            rustls::pki_types::CertificateDer::from(leaf.cert_der.clone()),
            rustls::pki_types::CertificateDer::from(ca.cert_der().to_vec()),
        ];
        use rustls::pki_types::pem::PemObject as _;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
            .context("the API server's key")?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the API server's certificate")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            ca_pem: ca.cert_pem(),
            ca_der: ca.cert_der().to_vec(),
        })
    }
}

#[derive(Debug)]
struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    server: tokio::sync::Mutex<Option<Running>>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.available.store(false, Ordering::SeqCst);
        self.shared.epoch.send_modify(|e| *e += 1);
        if let Some(r) = self.server.get_mut().take() {
            let _ = r.shutdown.send(());
            r.task.abort();
        }
    }
}

/// Handle to a running API stand-in. Cheap to clone; the server stops when the last clone is
/// dropped.
#[derive(Debug, Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

impl Shared {
    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl ApiServer {
    /// Bind 127.0.0.1:`config.port` and serve. Must be called inside a tokio runtime.
    pub async fn start(config: ApiServerConfig) -> anyhow::Result<Self> {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], config.port)))
                .await
                .with_context(|| format!("binding 127.0.0.1:{}", config.port))?;
        let port = listener.local_addr()?.port();
        let (epoch, _) = tokio::sync::watch::channel(0u64);
        let tls = if config.tls {
            Some(ServingTls::new().context("the API server's TLS material")?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            store: Store::new(config.history_limit, config.change_buffer),
            config,
            available: AtomicBool::new(true),
            epoch,
            stats: Mutex::new(StatsInner::default()),
            faults: Mutex::new(Faults::default()),
            port,
            started: now_rfc3339(),
            tls,
        });
        let dir = tempfile::Builder::new()
            .prefix("mountlag-apiserver-")
            .tempdir()
            .context("creating a temp dir for the kubeconfig")?;
        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig_file(&kubeconfig, &shared, Some(ADMIN_TOKEN))?;
        let running = serve(shared.clone(), listener);
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                server: tokio::sync::Mutex::new(Some(running)),
                kubeconfig,
                _dir: dir,
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// `https://127.0.0.1:<port>` (`http://` without TLS).
    pub fn url(&self) -> String {
        self.shared().url()
    }

    /// The CA that signed the serving certificate, PEM (None without TLS).
    pub fn ca_pem(&self) -> Option<&str> {
        self.shared().tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// The port (stable across stop/start).
    pub fn port(&self) -> u16 {
        self.shared().port
    }

    /// A kube-rs client for the admin user. Needs a tokio runtime (kube's client spawns its
    /// buffer task); panics only if kube rejects the config, which it does not for this one.
    pub fn client(&self) -> kube::Client {
        self.client_with_token(Some(ADMIN_TOKEN))
            .expect("a kube client for the stand-in's URL and CA can always be built")
    }

    /// A kube-rs client sending `token` (None: anonymous).
    pub fn client_with_token(&self, token: Option<&str>) -> anyhow::Result<kube::Client> {
        let mut config = kube::Config::new(self.url().parse().context("parsing the URL")?);
        if let Some(tls) = &self.shared().tls {
            config.root_cert = Some(vec![tls.ca_der.clone()]);
        }
        if let Some(t) = token {
            config.auth_info =
                serde_json::from_value(json!({ "token": t })).context("building kube AuthInfo")?;
        }
        kube::Client::try_from(config).context("building a kube client")
    }

    /// A kubeconfig (admin token, context `testbed`, namespace `default`) for kubectl,
    /// `KUBECONFIG=` and kube's `Config::infer`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.inner.kubeconfig
    }

    /// Write a kubeconfig for this server with `token` (None: anonymous) to `path`.
    pub fn write_kubeconfig(&self, path: &Path, token: Option<&str>) -> anyhow::Result<()> {
        write_kubeconfig_file(path, self.shared(), token)
    }

    /// Is the HTTP listener up?
    pub fn is_available(&self) -> bool {
        self.shared().available.load(Ordering::SeqCst)
    }

    /// Fault: close the listener (new connections are refused), end every open watch, answer
    /// 503 on connections that are still open. The store is kept.
    pub async fn stop(&self) {
        let sh = self.shared();
        sh.available.store(false, Ordering::SeqCst);
        sh.epoch.send_modify(|e| *e += 1);
        let running = self.inner.server.lock().await.take();
        if let Some(mut r) = running {
            let _ = r.shutdown.send(());
            if tokio::time::timeout(Duration::from_secs(2), &mut r.task)
                .await
                .is_err()
            {
                r.task.abort();
            }
        }
    }

    /// Serve again on the same port after [`ApiServer::stop`]. No-op when running.
    pub async fn restart(&self) -> anyhow::Result<()> {
        let mut guard = self.inner.server.lock().await;
        if guard.is_some() {
            return Ok(());
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port()));
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "rebinding {addr}, retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("rebinding {addr}")),
            }
        };
        self.shared().available.store(true, Ordering::SeqCst);
        *guard = Some(serve(self.inner.shared.clone(), listener));
        Ok(())
    }

    /// `set_available(false)` is [`ApiServer::stop`], `true` is [`ApiServer::restart`].
    pub async fn set_available(&self, available: bool) -> anyhow::Result<()> {
        if available {
            self.restart().await
        } else {
            self.stop().await;
            Ok(())
        }
    }

    /// End every open watch stream (clients see a clean end of stream and re-watch).
    pub fn drop_watches(&self) {
        self.shared().epoch.send_modify(|e| *e += 1);
    }

    /// Drop all change history and advance the resourceVersion (as an etcd compaction would
    /// after more writes): every watch resumed from a resourceVersion handed out before gets
    /// an `ERROR` event with a 410 `Expired` Status (kube-rs then relists). Open watches go
    /// on; combine with [`ApiServer::drop_watches`] to force the resume.
    pub fn compact(&self) {
        self.shared().store.compact();
    }

    /// Inject these faults from now on (replacing any set before; `Faults::default()` clears).
    /// Watches already open are not touched, except by `cut_watch_events`: end them with
    /// [`ApiServer::drop_watches`] to make every client watch again under the new faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared().faults() = faults;
    }

    /// The faults still set (rejections and cuts count down as they are used).
    pub fn faults(&self) -> Faults {
        self.shared().faults().clone()
    }

    /// The store's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared().store.resource_version()
    }

    /// Request counters and open watches.
    pub fn stats(&self) -> ApiStats {
        let rv = self.resource_version();
        lock_stats(&self.shared().stats).snapshot(rv)
    }

    /// Zero the request counters (the open-watch gauge stays).
    pub fn reset_stats(&self) {
        let mut s = lock_stats(&self.shared().stats);
        s.requests.clear();
        s.requests_by_user.clear();
        s.bytes_by_user.clear();
        s.requests_by_shape.clear();
        s.watch_events_by_user.clear();
        s.watches_started = 0;
        s.watches_started_by_user.clear();
        s.refused_while_stopped = 0;
        s.forbidden.clear();
        s.faults.clear();
        s.patches.clear();
        s.patch_log.clear();
    }

    /// The authorized PATCH requests over HTTP since the start or the last
    /// [`ApiServer::reset_stats`], oldest first (the newest 10 000): who, which object, the
    /// body as sent and the answer's status. In-process helpers are not recorded.
    pub fn patches(&self) -> Vec<PatchRecord> {
        lock_stats(&self.shared().stats)
            .patch_log
            .iter()
            .cloned()
            .collect()
    }

    /// Every committed change from now on (the kubelet loop's feed; no polling).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoreChange>> {
        self.shared().store.subscribe()
    }

    // ---------------------------------------------------------------- typed in-process helpers

    fn typed<T: DeserializeOwned>(r: Resource, v: &Value) -> Result<T, ApiError> {
        let v = convert::present(r, ApiGroup::Core, v);
        serde_json::from_value(v).map_err(|e| {
            ApiError::new(
                500,
                "InternalError",
                format!("decoding a stored {}: {e}", r.kind()),
            )
        })
    }

    fn to_value<T: serde::Serialize>(obj: &T) -> Result<Value, ApiError> {
        serde_json::to_value(obj).map_err(|e| ApiError::bad_request(e.to_string()))
    }

    fn ns_name(v: &Value) -> (String, String) {
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let ns = s("/metadata/namespace");
        (
            if ns.is_empty() { "default".into() } else { ns },
            s("/metadata/name"),
        )
    }

    /// Any object as stored, with the type meta of its kind's preferred group version
    /// (core/v1 for Events). `ns` is `""` for cluster-scoped kinds.
    pub fn object(&self, r: Resource, ns: &str, name: &str) -> Option<Value> {
        self.shared()
            .store
            .get(r, ns, name)
            .map(|s| convert::present(r, r.preferred(), &s.obj))
    }

    /// All objects of `kind` (every namespace) as served at `api_version`, sorted by
    /// namespace and name; empty for a kind the stand-in does not serve there.
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Some((r, group)) = Resource::from_kind(api_version, kind) else {
            return Vec::new();
        };
        self.shared()
            .store
            .list(r, None)
            .0
            .iter()
            .map(|s| convert::present(r, group, &s.obj))
            .collect()
    }

    /// Create the object, or replace it if it exists, by `apiVersion` + `kind` + namespace +
    /// name, for every served kind. Last write wins (a `metadata.resourceVersion` in `object`
    /// is ignored) and the object is stored as given, `status` included: this is a fixture
    /// write standing for the client and the kind's controller at once. Server-owned metadata
    /// (`uid`, `creationTimestamp`, `generation`, `resourceVersion`) is set as for HTTP
    /// writes, and watches see ADDED or MODIFIED (nothing for a write that changes nothing).
    /// `metadata.namespace` is required for namespaced kinds and cleared for cluster-scoped
    /// ones, as the API server does. Returns the stored object as served at `apiVersion`.
    pub fn apply_object(&self, object: &Value) -> Result<Value, ApiError> {
        let type_meta = |k: &str| object.get(k).and_then(Value::as_str).unwrap_or("");
        let (r, group) = resolve_kind(type_meta("apiVersion"), type_meta("kind"))?;
        let mut v = object.clone();
        if !v.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        // Last write wins: the fixture replaces whatever is stored.
        store::metadata_mut(&mut v).remove("resourceVersion");
        let (ns, name) = fixture_key(r, &v)?;
        convert::to_storage(r, group, &mut v);
        let out = self
            .shared()
            .store
            .modify(r, &ns, &name, Part::Whole, true, group, |_| Ok(v))?;
        Ok(convert::present(r, group, &out))
    }

    /// Delete an object by `apiVersion` + `kind` + namespace + name (immediately: no graceful
    /// deletion, no finalizers). `namespace` must be `Some` for namespaced kinds and `None` for
    /// cluster-scoped ones (a 400 otherwise). Returns the deleted object as served at
    /// `api_version`; a missing object is a 404.
    pub fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let (r, group) = resolve_kind(api_version, kind)?;
        let ns = fixture_namespace(r, namespace)?;
        let out = self
            .shared()
            .store
            .delete(r, ns, name, &Preconditions::default())?;
        Ok(convert::present(r, group, &out))
    }

    /// Merge-patch (RFC 7386) an object's main resource by `apiVersion`, `kind`, namespace
    /// and name, as a privileged client (no authorization, no admission, not counted): for a
    /// kind with a status subresource `status` is kept, as over HTTP. A
    /// `metadata.resourceVersion` in the patch is a precondition (409 when stale); a missing
    /// object is a 404. `namespace` as for [`ApiServer::delete_object`]. Returns the object as
    /// served at `api_version`.
    pub fn patch_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        merge_patch: &Value,
    ) -> Result<Value, ApiError> {
        self.patch_object_part(api_version, kind, namespace, name, Part::Main, merge_patch)
    }

    /// Merge-patch an object's `status` subresource (what its controller does); only
    /// `status` changes. A kind without a status subresource is a 404, as over HTTP.
    pub fn patch_object_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        merge_patch: &Value,
    ) -> Result<Value, ApiError> {
        self.patch_object_part(
            api_version,
            kind,
            namespace,
            name,
            Part::Status,
            merge_patch,
        )
    }

    fn patch_object_part(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        part: Part,
        merge_patch: &Value,
    ) -> Result<Value, ApiError> {
        let (r, group) = resolve_kind(api_version, kind)?;
        if part == Part::Status && !r.has_status_subresource() {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("{} has no status subresource", r.qualified()),
            ));
        }
        let ns = fixture_namespace(r, namespace)?;
        let out = self
            .shared()
            .store
            .modify(r, ns, name, part, false, group, |old| {
                let mut cur = convert::present(r, group, old.unwrap_or(&Value::Null));
                patch::merge_patch(&mut cur, merge_patch, false);
                convert::to_storage(r, group, &mut cur);
                Ok(cur)
            })?;
        Ok(convert::present(r, group, &out))
    }

    /// Create a pod (namespace from the object, default `default`). Status is reset to
    /// `Pending`, as the real create strategy does.
    pub fn create_pod(&self, pod: &Pod) -> Result<Pod, ApiError> {
        let v = Self::to_value(pod)?;
        let (ns, _) = Self::ns_name(&v);
        let out = self
            .shared()
            .store
            .create(Resource::Pods, &ns, v, ApiGroup::Core)?;
        Self::typed(Resource::Pods, &out)
    }

    /// Replace a pod (PUT semantics: 409 on a stale `metadata.resourceVersion` if one is set;
    /// `status` is kept).
    pub fn update_pod(&self, pod: &Pod) -> Result<Pod, ApiError> {
        let v = Self::to_value(pod)?;
        let (ns, name) = Self::ns_name(&v);
        let out = self.shared().store.modify(
            Resource::Pods,
            &ns,
            &name,
            Part::Main,
            false,
            ApiGroup::Core,
            |_| Ok(v),
        )?;
        Self::typed(Resource::Pods, &out)
    }

    /// Merge-patch (RFC 7386) a pod's main resource, e.g.
    /// `json!({"metadata": {"annotations": {"mountlag.io/resync": "1"}}})`.
    pub fn patch_pod(&self, ns: &str, name: &str, merge_patch: &Value) -> Result<Pod, ApiError> {
        self.patch_part(ns, name, Part::Main, merge_patch)
    }

    /// Merge-patch a pod's `status` subresource (what kubelet does).
    pub fn patch_pod_status(
        &self,
        ns: &str,
        name: &str,
        merge_patch: &Value,
    ) -> Result<Pod, ApiError> {
        self.patch_part(ns, name, Part::Status, merge_patch)
    }

    fn patch_part(&self, ns: &str, name: &str, part: Part, p: &Value) -> Result<Pod, ApiError> {
        let out = self.shared().store.modify(
            Resource::Pods,
            ns,
            name,
            part,
            false,
            ApiGroup::Core,
            |old| {
                let mut cur = old.cloned().unwrap_or(json!({}));
                patch::merge_patch(&mut cur, p, false);
                Ok(cur)
            },
        )?;
        Self::typed(Resource::Pods, &out)
    }

    /// Set one annotation on a pod (what the agent's nudge does).
    pub fn annotate_pod(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<Pod, ApiError> {
        self.patch_pod(
            ns,
            name,
            &json!({"metadata": {"annotations": {key: value}}}),
        )
    }

    /// Delete a pod immediately (no graceful termination).
    pub fn delete_pod(&self, ns: &str, name: &str) -> Result<Pod, ApiError> {
        let out =
            self.shared()
                .store
                .delete(Resource::Pods, ns, name, &Preconditions::default())?;
        Self::typed(Resource::Pods, &out)
    }

    /// The pod, if it exists.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Pod> {
        let s = self.shared().store.get(Resource::Pods, ns, name)?;
        Self::typed(Resource::Pods, &s.obj).ok()
    }

    /// All pods.
    pub fn pods(&self) -> Vec<Pod> {
        self.shared()
            .store
            .list(Resource::Pods, None)
            .0
            .iter()
            .filter_map(|s| Self::typed(Resource::Pods, &s.obj).ok())
            .collect()
    }

    /// Create the Secret, or replace it if it exists (ignoring any resourceVersion in `secret`:
    /// last write wins). `stringData` is folded into `data`.
    pub fn apply_secret(&self, secret: &Secret) -> Result<Secret, ApiError> {
        let mut v = Self::to_value(secret)?;
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let (ns, name) = Self::ns_name(&v);
        let out = self.shared().store.modify(
            Resource::Secrets,
            &ns,
            &name,
            Part::Main,
            true,
            ApiGroup::Core,
            |_| Ok(v),
        )?;
        Self::typed(Resource::Secrets, &out)
    }

    /// Delete a Secret.
    pub fn delete_secret(&self, ns: &str, name: &str) -> Result<Secret, ApiError> {
        let out =
            self.shared()
                .store
                .delete(Resource::Secrets, ns, name, &Preconditions::default())?;
        Self::typed(Resource::Secrets, &out)
    }

    /// The Secret, if it exists.
    pub fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
        let s = self.shared().store.get(Resource::Secrets, ns, name)?;
        Self::typed(Resource::Secrets, &s.obj).ok()
    }

    /// Every Event in the store (both APIs), normalised, oldest resourceVersion first.
    pub fn events(&self) -> Vec<RecordedEvent> {
        let mut out: Vec<RecordedEvent> = self
            .shared()
            .store
            .list(Resource::Events, None)
            .0
            .iter()
            .map(|s| convert::recorded_event(&s.obj, s.via))
            .collect();
        out.sort_by_key(|e| e.resource_version.parse::<u64>().unwrap_or(0));
        out
    }
}

/// The store key (namespace, name) of a fixture object: `metadata.name` is required, and so is
/// `metadata.namespace` for namespaced kinds (in-process writes have no URL to take it from);
/// cluster-scoped kinds are keyed by `""`.
fn fixture_key(r: Resource, v: &Value) -> Result<(String, String), ApiError> {
    let field = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
    let name = field("/metadata/name");
    if name.is_empty() {
        return Err(ApiError::invalid(
            r.kind(),
            "",
            "metadata.name: Required value: name is required",
        ));
    }
    let ns = if r.namespaced() {
        field("/metadata/namespace")
    } else {
        ""
    };
    if r.namespaced() && ns.is_empty() {
        return Err(ApiError::invalid(
            r.kind(),
            name,
            "metadata.namespace: Required value",
        ));
    }
    Ok((ns.to_owned(), name.to_owned()))
}

/// The store namespace of an in-process request: `Some(ns)` for namespaced kinds, `None` for
/// cluster-scoped ones (the other way round is a 400).
fn fixture_namespace(r: Resource, namespace: Option<&str>) -> Result<&str, ApiError> {
    match (r.namespaced(), namespace) {
        (true, Some(ns)) if !ns.is_empty() => Ok(ns),
        (false, None) => Ok(""),
        (true, _) => Err(ApiError::bad_request(format!(
            "{} is namespaced: a namespace is required",
            r.kind()
        ))),
        (false, Some(_)) => Err(ApiError::bad_request(format!(
            "{} is cluster-scoped: it has no namespace",
            r.kind()
        ))),
    }
}

/// The served kind of an `apiVersion` + `kind`, or the 404 a client gets for an unknown one.
fn resolve_kind(api_version: &str, kind: &str) -> Result<(Resource, ApiGroup), ApiError> {
    Resource::from_kind(api_version, kind).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!("no matches for kind \"{kind}\" in version \"{api_version}\""),
        )
    })
}

fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) -> Running {
    let app = axum::Router::new()
        .fallback(http::handle)
        .with_state(Arc::clone(&shared));
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (closing_tx, closing) = tokio::sync::watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut rx => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        let _ = tcp.set_nodelay(true);
                        connections.spawn(serve_connection(
                            Arc::clone(&shared),
                            app.clone(),
                            tcp,
                            closing.clone(),
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "API stand-in: accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        // Like the real server's shutdown: no new connections, then every open one is told to
        // finish (GOAWAY on HTTP/2, close after the response on HTTP/1.1).
        drop(listener);
        let _ = closing_tx.send(true);
        while connections.join_next().await.is_some() {}
    });
    Running { shutdown: tx, task }
}

/// One client connection: TLS handshake (ALPN picks h2 or http/1.1), then HTTP until the client
/// leaves or the server shuts down.
async fn serve_connection(
    shared: Arc<Shared>,
    app: axum::Router,
    tcp: tokio::net::TcpStream,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let id = {
        let mut stats = lock_stats(&shared.stats);
        stats.connections_accepted += 1;
        stats.open_connections += 1;
        let id = stats.connections_accepted;
        stats.connection_users.insert(id, BTreeSet::new());
        id
    };
    // Every request on this connection carries its id, so requests count per connection.
    let app = app.layer(axum::Extension(ConnectionId(id)));
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(shared.config.http2_max_concurrent_streams);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let served = match &shared.tls {
        Some(tls) => match tls.acceptor.accept(tcp).await {
            Ok(stream) => {
                let connection = builder
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service);
                drive(connection, &mut closing)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("TLS handshake: {e}")),
        },
        None => {
            let connection =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tcp), service);
            drive(connection, &mut closing)
                .await
                .map_err(|e| e.to_string())
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "API stand-in: connection ended with an error");
    }
    let mut stats = lock_stats(&shared.stats);
    stats.open_connections -= 1;
    stats.connection_users.remove(&id);
}

async fn drive<C>(
    connection: C,
    closing: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), C::Error>
where
    C: hyper_util::server::graceful::GracefulConnection,
{
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        _ = closing.wait_for(|closing| *closing) => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

fn write_kubeconfig_file(path: &Path, shared: &Shared, token: Option<&str>) -> anyhow::Result<()> {
    use base64::Engine as _;
    let user = match token {
        Some(t) => json!({"token": t}),
        None => json!({}),
    };
    let mut cluster = json!({"server": shared.url()});
    if let Some(tls) = &shared.tls {
        cluster["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(&tls.ca_pem));
    }
    let cfg = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testbed", "cluster": cluster}],
        "users": [{"name": "testbed-user", "user": user}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": "testbed-user", "namespace": "default"}}],
        "current-context": "testbed",
        "preferences": {},
    });
    let text = serde_yaml::to_string(&cfg).context("rendering the kubeconfig")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

// ------------------------------------------------------------------------------ small helpers

/// A random u64 (std's randomly keyed SipHash over a counter and the clock; no extra crate).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

/// A random RFC 4122 version-4 UUID.
pub(crate) fn new_uid() -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&random_u64().to_le_bytes());
    b[8..].copy_from_slice(&random_u64().to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

/// A UUID-shaped id derived from `seed` (stable across runs).
pub(crate) fn stable_uid(seed: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    format_uuid(&b)
}

fn format_uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `generateName` suffix: Kubernetes' alphabet without vowels and ambiguous characters.
pub(crate) fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| ALPHABET[(random_u64() % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// Now, RFC 3339 with whole seconds (`metadata.creationTimestamp` style).
pub(crate) fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
