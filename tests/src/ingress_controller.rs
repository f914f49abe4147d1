//! An API-driven Ingress controller stand-in, shaped after ingress-nginx: it lists and watches
//! IngressClasses, Ingresses and Secrets through the API (kube-rs over real HTTPS to the API
//! stand-in), and serves each TLS host's certificate over real TLS (rustls), chosen by SNI. A
//! host whose Secret is missing or unusable, an unknown name and a handshake without SNI get
//! its placeholder: a self-signed "Kubernetes Ingress Controller Fake Certificate" (O "Acme
//! Co"), as ingress-nginx generates at start (`internal/net/ssl/ssl.go`).
//!
//! Fault modes, switched at run time: [`IngressControllerStandIn::set_lag`] (what it sees is
//! served that much later) and [`IngressControllerStandIn::freeze`] (changes are never picked
//! up: the renewal that never reaches the controller).
//!
//! Where it differs from ingress-nginx (docs/testbed.md): no nginx and no HTTP routing, only
//! the certificate choice; it applies changes at once instead of at most every ~3.3 s
//! (`--sync-rate-limit` 0.3); IngressClass matching is by `spec.controller` and
//! `spec.ingressClassName` only (no legacy annotation, no default class); no
//! `--default-ssl-certificate`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The subject CN of ingress-nginx's placeholder certificate.
pub const FAKE_CERTIFICATE_CN: &str = "Kubernetes Ingress Controller Fake Certificate";

/// What the stand-in serves now: host → certificate.
#[derive(Debug, Default, Clone)]
struct Served {
    by_host: HashMap<String, Arc<CertifiedKey>>,
}

struct Shared {
    served: RwLock<Served>,
    fake: Arc<CertifiedKey>,
    fake_fingerprint: String,
    lag: Mutex<Duration>,
    frozen: AtomicBool,
    /// Bumped on every applied change (tests wait on it).
    applied: watch::Sender<u64>,
    /// Wakes the sync loop when it is unfrozen: it catches up at once.
    resume: tokio::sync::Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Resolver(Arc<Shared>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = self.0.served.read().unwrap_or_else(PoisonError::into_inner);
        Some(
            hello
                .server_name()
                .and_then(|name| served.by_host.get(&name.to_ascii_lowercase()).cloned())
                .unwrap_or_else(|| Arc::clone(&self.0.fake)),
        )
    }
}

/// A running stand-in: TLS on `addr`, its watches on the API.
#[derive(Debug)]
pub struct IngressControllerStandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for IngressControllerStandIn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl IngressControllerStandIn {
    /// Serves TLS on `127.0.0.1:port` for the Ingresses of IngressClasses whose
    /// `spec.controller` is `controller` (ingress-nginx: `k8s.io/ingress-nginx`).
    pub async fn start(client: Client, controller: &str, port: u16) -> anyhow::Result<Self> {
        Self::start_on(client, controller, SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// [`IngressControllerStandIn::start`] on `addr`, e.g. a pod IP of its own on loopback
    /// (`127.0.0.x`) when several run side by side.
    pub async fn start_on(
        client: Client,
        controller: &str,
        addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_for(client, Classes::Ingress(controller.to_string()), addr).await
    }

    /// Serves TLS on `127.0.0.1:port` for the HTTPS and TLS listeners (with a `hostname`) of
    /// the Gateways whose GatewayClass's `spec.controllerName` is `controller`; a
    /// `certificateRef` to another namespace only with a ReferenceGrant that allows it, as
    /// implementations do (the listener is otherwise not programmed: its host gets the
    /// placeholder).
    pub async fn start_gateway(
        client: Client,
        controller: &str,
        port: u16,
    ) -> anyhow::Result<Self> {
        Self::start_for(
            client,
            Classes::Gateway(controller.to_string()),
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .await
    }

    async fn start_for(client: Client, classes: Classes, addr: SocketAddr) -> anyhow::Result<Self> {
        let (fake, fake_fingerprint) = fake_certificate()?;
        let (applied, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            served: RwLock::new(Served::default()),
            fake,
            fake_fingerprint,
            lag: Mutex::new(Duration::ZERO),
            frozen: AtomicBool::new(false),
            applied,
            resume: tokio::sync::Notify::new(),
        });
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(&shared))));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        let addr = listener.local_addr()?;
        let serve = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // The handshake is what is under test; the connection then just closes.
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                    }
                });
            }
        });
        let sync = tokio::spawn(sync_loop(client, classes, Arc::clone(&shared)));
        Ok(Self {
            addr,
            shared,
            tasks: vec![serve, sync],
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Lowercase hex SHA-256 of the placeholder certificate's DER.
    pub fn fake_fingerprint(&self) -> &str {
        &self.shared.fake_fingerprint
    }

    /// What the controller sees is served `lag` later.
    pub fn set_lag(&self, lag: Duration) {
        *self
            .shared
            .lag
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = lag;
    }

    /// `true`: changes are never picked up (what is served stays as it is). `false`: it
    /// catches up with what it missed at once.
    pub fn freeze(&self, frozen: bool) {
        self.shared.frozen.store(frozen, Ordering::SeqCst);
        if !frozen {
            self.shared.resume.notify_one();
        }
    }

    /// Waits until the stand-in serves a certificate for `host` whose DER has `fingerprint`.
    pub async fn wait_serving(
        &self,
        host: &str,
        fingerprint: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let mut applied = self.shared.applied.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if self.serving(host).as_deref() == Some(fingerprint) {
                    return;
                }
                if applied.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .with_context(|| format!("{host} not served with {fingerprint} within {timeout:?}"))
    }

    /// The fingerprint served for `host` (the placeholder's for an unknown host).
    pub fn serving(&self, host: &str) -> Option<String> {
        let served = self
            .shared
            .served
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let key = served
            .by_host
            .get(host)
            .unwrap_or(&self.shared.fake)
            .clone();
        key.cert
            .first()
            .map(|der| hex::encode(Sha256::digest(der.as_ref())))
    }
}

/// Which objects the stand-in serves: Ingresses of this IngressClass controller, or Gateways
/// of this GatewayClass controllerName.
#[derive(Debug, Clone)]
enum Classes {
    Ingress(String),
    Gateway(String),
}

type Events = futures::stream::BoxStream<'static, ()>;

/// A reflected store of a typed kind, and its event stream.
fn reflect<K>(api: Api<K>) -> (Store<K>, Events)
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store::<K>();
    let events = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
        .default_backoff()
        .map(|_| ())
        .boxed();
    (store, events)
}

/// The same for a Gateway API kind, read as a dynamic object.
fn reflect_dynamic(
    client: &Client,
    version: &str,
    kind: &str,
    plural: &str,
) -> (Store<DynamicObject>, Events) {
    let resource = ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: version.into(),
        api_version: format!("gateway.networking.k8s.io/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    };
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let events = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
        .default_backoff()
        .map(|_| ())
        .boxed();
    (store, events)
}

/// Reflects the objects it serves and every Secret; on every change, computes what to serve.
async fn sync_loop(client: Client, classes: Classes, shared: Arc<Shared>) {
    // Like ingress-nginx: every Secret of the cluster, watched.
    let (secrets, secret_events) = reflect(Api::<Secret>::all(client.clone()));
    let mut streams = vec![secret_events];
    let compute: Box<dyn Fn() -> Served + Send> = match classes {
        Classes::Ingress(controller) => {
            let (ingress_classes, class_events) = reflect(Api::<IngressClass>::all(client.clone()));
            let (ingresses, ingress_events) = reflect(Api::<Ingress>::all(client.clone()));
            streams.extend([class_events, ingress_events]);
            Box::new(move || served_now(&controller, &ingress_classes, &ingresses, &secrets))
        }
        Classes::Gateway(controller) => {
            let (gateway_classes, class_events) =
                reflect_dynamic(&client, "v1", "GatewayClass", "gatewayclasses");
            let (gateways, gateway_events) = reflect_dynamic(&client, "v1", "Gateway", "gateways");
            let (grants, grant_events) =
                reflect_dynamic(&client, "v1beta1", "ReferenceGrant", "referencegrants");
            streams.extend([class_events, gateway_events, grant_events]);
            Box::new(move || {
                gateway_served(&controller, &gateway_classes, &gateways, &grants, &secrets)
            })
        }
    };
    let mut events = futures::stream::select_all(streams);
    // Lagged applies may wake out of order (timers of the same millisecond): the newest state
    // computed wins, an older one never overwrites it.
    let newest_applied = Arc::new(AtomicU64::new(0));
    let mut computed = 0u64;
    loop {
        tokio::select! {
            event = events.next() => if event.is_none() { return },
            () = shared.resume.notified() => {}
        }
        if shared.frozen.load(Ordering::SeqCst) {
            continue;
        }
        let next = compute();
        computed += 1;
        let this = computed;
        let lag = *shared.lag.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = Arc::clone(&shared);
        let newest_applied = Arc::clone(&newest_applied);
        let apply = move || {
            if newest_applied.fetch_max(this, Ordering::SeqCst) > this {
                return;
            }
            *shared
                .served
                .write()
                .unwrap_or_else(PoisonError::into_inner) = next;
            shared.applied.send_modify(|n| *n += 1);
        };
        if lag.is_zero() {
            apply();
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(lag).await;
                apply();
            });
        }
    }
}

fn served_now(
    controller: &str,
    classes: &Store<IngressClass>,
    ingresses: &Store<Ingress>,
    secrets: &Store<Secret>,
) -> Served {
    let ours: Vec<String> = classes
        .state()
        .iter()
        .filter(|c| c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(controller))
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let mut served = Served::default();
    for ingress in ingresses.state() {
        let Some(spec) = &ingress.spec else { continue };
        if !spec
            .ingress_class_name
            .as_ref()
            .is_some_and(|c| ours.contains(c))
        {
            continue;
        }
        let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
        for tls in spec.tls.iter().flatten() {
            let Some(secret_name) = &tls.secret_name else {
                continue;
            };
            let certified = secrets
                .state()
                .iter()
                .find(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace.as_str())
                        && s.metadata.name.as_deref() == Some(secret_name.as_str())
                })
                .and_then(|s| certified_key(s).ok());
            // A missing or broken Secret: the host gets the placeholder (not in the map).
            let Some(certified) = certified else { continue };
            for host in tls.hosts.iter().flatten() {
                served
                    .by_host
                    .insert(host.to_ascii_lowercase(), Arc::clone(&certified));
            }
        }
    }
    served
}

fn gateway_served(
    controller: &str,
    classes: &Store<DynamicObject>,
    gateways: &Store<DynamicObject>,
    grants: &Store<DynamicObject>,
    secrets: &Store<Secret>,
) -> Served {
    let ours: Vec<String> = classes
        .state()
        .iter()
        .filter(|c| c.data["spec"]["controllerName"].as_str() == Some(controller))
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let mut served = Served::default();
    for gateway in gateways.state() {
        let class = gateway.data["spec"]["gatewayClassName"]
            .as_str()
            .unwrap_or("");
        if !ours.iter().any(|c| c == class) {
            continue;
        }
        let namespace = gateway.metadata.namespace.clone().unwrap_or_default();
        for listener in gateway.data["spec"]["listeners"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(host) = listener["hostname"].as_str() else {
                continue;
            };
            let Some(reference) = listener["tls"]["certificateRefs"]
                .as_array()
                .and_then(|refs| refs.first())
            else {
                continue;
            };
            let name = reference["name"].as_str().unwrap_or("");
            let secret_namespace = reference["namespace"].as_str().unwrap_or(&namespace);
            if secret_namespace != namespace && !granted(grants, &namespace, secret_namespace, name)
            {
                continue;
            }
            let certified = secrets
                .state()
                .iter()
                .find(|s| {
                    s.metadata.namespace.as_deref() == Some(secret_namespace)
                        && s.metadata.name.as_deref() == Some(name)
                })
                .and_then(|s| certified_key(s).ok());
            if let Some(certified) = certified {
                served.by_host.insert(host.to_ascii_lowercase(), certified);
            }
        }
    }
    served
}

/// A ReferenceGrant in `to_namespace` lets Gateways of `from_namespace` use Secret `name`.
fn granted(
    grants: &Store<DynamicObject>,
    from_namespace: &str,
    to_namespace: &str,
    name: &str,
) -> bool {
    grants.state().iter().any(|grant| {
        grant.metadata.namespace.as_deref() == Some(to_namespace)
            && grant.data["spec"]["from"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| {
                    f["group"] == "gateway.networking.k8s.io"
                        && f["kind"] == "Gateway"
                        && f["namespace"] == from_namespace
                })
            && grant.data["spec"]["to"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| {
                    t["group"] == ""
                        && t["kind"] == "Secret"
                        && t["name"].as_str().is_none_or(|n| n == name)
                })
    })
}

/// A Secret's `tls.crt` and `tls.key` as a rustls certified key.
fn certified_key(secret: &Secret) -> anyhow::Result<Arc<CertifiedKey>> {
    let data = secret.data.as_ref().context("no data")?;
    let crt = &data.get("tls.crt").context("no tls.crt")?.0;
    let key = &data.get("tls.key").context("no tls.key")?.0;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(crt).collect::<Result<_, _>>()?;
    anyhow::ensure!(!chain.is_empty(), "tls.crt holds no certificate");
    let key = PrivateKeyDer::from_pem_slice(key)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)?;
    let certified = CertifiedKey::new(chain, signing);
    // Like nginx: a key that does not belong to the certificate is not served.
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

/// ingress-nginx's placeholder: self-signed, CN "Kubernetes Ingress Controller Fake
/// Certificate", O "Acme Co", SAN `ingress.local`, a year long.
fn fake_certificate() -> anyhow::Result<(Arc<CertifiedKey>, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Acme Co");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, FAKE_CERTIFICATE_CN);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    let cert = params.self_signed(&key)?;
    let der: CertificateDer<'static> = cert.der().clone();
    let fingerprint = hex::encode(Sha256::digest(der.as_ref()));
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)?;
    Ok((Arc::new(CertifiedKey::new(vec![der], signing)), fingerprint))
}
