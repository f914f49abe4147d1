//! The Kubernetes API client: kube's own middleware over a connection pool that multiplexes the
//! agent's many long-lived watches over a few HTTP/2 connections.
//!
//! ```text
//!  kube::Client ─▶ base URI ─▶ retry (429/503/504) ─▶ auth ─▶ extra headers ─▶ StreamShards
//!                                                                                 │
//!        first connection with fewer than `maxStreamsPerConnection` requests open │
//!                                                                                 ▼
//!                           hyper-util client, one per shard (its own pool: one connection)
//!                                                                                 │
//!                        TimeoutConnector ─▶ rustls (ALPN: h2, http/1.1) ─▶ TCP ◀─┘
//! ```
//!
//! Why not kube's default client: it offers HTTP/1.1 only, so each watch holds a connection of
//! its own (and a TLS session, and ~15 KiB of agent memory), and the lists that precede the
//! watches leave as many idle connections in a pool without an idle timer. One watch per
//! referenced Secret is the design (it mirrors kubelet), so connections would grow with Secrets.
//!
//! Why shards: an HTTP/2 server caps the streams open on one connection
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`: Go's default and the API server's is 250, some distributions
//! set less, HAProxy 100, nginx 128). A request beyond the cap waits for a stream to close, and a
//! watch stream closes only after minutes, so one shared connection would stall the agent's
//! 251st watch. Like Go's HTTP/2 transport (which client-go and kubelet use), the agent opens
//! another connection instead; it counts the requests it has open on each connection (a request
//! is open until its response body is dropped) and never exceeds its own cap, which is set
//! below the limits servers commonly advertise (`api.maxStreamsPerConnection`, default
//! [`crate::config::DEFAULT_API_MAX_STREAMS_PER_CONNECTION`]). Should a server allow fewer, the
//! queued requests are abandoned after [`RESPONSE_HEAD_WAIT`] and the cap drops to the number
//! of requests the server was answering on that connection.
//!
//! `http://` URLs (e.g. `kubectl proxy`) and servers that do not negotiate h2 get HTTP/1.1;
//! the shards then simply share the work, and idle connections are closed after
//! [`POOL_IDLE_TIMEOUT`]. A proxy configured in the kubeconfig (`proxy-url`) is left to kube's
//! default client.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::{Body, ConfigExt};
use tower::{BoxError, ServiceBuilder};

use crate::config::ApiConfig;

/// An idle pooled connection is closed after this long.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// HTTP/2 PING interval on an idle connection, so a dead peer is noticed without a request.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// A request without a response head after this long is abandoned (an error to its caller,
/// which retries); if other requests on its connection were answered, their number becomes
/// the cap of every connection. The agent's requests (a named Secret, the node's pods, a
/// patch, an Event) are answered in milliseconds, so the likely cause is a server allowing
/// fewer streams per connection than the agent's cap, which queues the extra streams — for a
/// watch, until another watch ends, minutes later.
pub const RESPONSE_HEAD_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    #[error("cannot configure the Kubernetes client: {source}")]
    Config {
        #[source]
        source: kube::Error,
    },
    #[error(
        "no answer within {waited:?} while {open} requests were open on its connection (the API server may allow fewer streams per connection, or be overloaded); each connection keeps at most {cap} requests open"
    )]
    NoAnswer {
        waited: Duration,
        open: usize,
        cap: usize,
    },
    #[error("invalid TLS server name {name:?} in the kubeconfig: {source}")]
    ServerName {
        name: String,
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
}

/// A kube client for `config`: kube's middleware (base URI, retries, auth, extra headers) over
/// [`StreamShards`] as `options` (the config file's `api`) say. With a `proxy-url`, kube's
/// default client (HTTP/1.1) instead.
pub fn build(config: kube::Config, options: ApiConfig) -> Result<kube::Client, ApiClientError> {
    if config.proxy_url.is_some() {
        tracing::info!("the kubeconfig names a proxy: using kube's default HTTP/1.1 client");
        return kube::Client::try_from(config).map_err(|source| ApiClientError::Config { source });
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let tls = config
        .rustls_client_config()
        .map_err(|source| ApiClientError::Config { source })?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => {
            let server_name =
                rustls_pki_types::ServerName::try_from(name.clone()).map_err(|source| {
                    ApiClientError::ServerName {
                        name: name.clone(),
                        source,
                    }
                })?;
            builder
                .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(server_name))
        }
        None => builder,
    };
    let https = if options.http2 {
        builder.enable_all_versions().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);

    let cap = usize::try_from(options.max_streams_per_connection).unwrap_or(usize::MAX);
    let shards = StreamShards::new(cap, move || {
        HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .build(connector.clone())
    });
    let auth = config
        .auth_layer()
        .map_err(|source| ApiClientError::Config { source })?;
    let headers = config
        .extra_headers_layer()
        .map_err(|source| ApiClientError::Config { source })?;
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| {
            tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
        }))
        .option_layer(auth)
        .layer(headers)
        .map_err(BoxError::from)
        .service(shards);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// Spreads requests over connections so that none carries more than `cap` open requests. Each
/// shard is a hyper client with its own pool, i.e. (with HTTP/2) its own connection.
pub struct StreamShards<C> {
    shards: Arc<Mutex<Vec<Shard<C>>>>,
    make: Arc<dyn Fn() -> C + Send + Sync>,
    /// Starts at the configured cap; lowered when a request gets no answer in time
    /// ([`RESPONSE_HEAD_WAIT`]): the server's stream limit is the same on every connection.
    cap: Arc<AtomicUsize>,
}

impl<C> std::fmt::Debug for StreamShards<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamShards")
            .field("cap", &self.cap.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl<C> Clone for StreamShards<C> {
    fn clone(&self) -> Self {
        Self {
            shards: Arc::clone(&self.shards),
            make: Arc::clone(&self.make),
            cap: Arc::clone(&self.cap),
        }
    }
}

struct Shard<C> {
    client: C,
    open: Arc<AtomicUsize>,
    /// Open requests that have their response head: the streams the server is serving.
    answered: Arc<AtomicUsize>,
    /// Set once the shard's first request has its answer (or failed). Until then the shard's
    /// other requests wait: sent at once, each would open a TLS connection of its own before
    /// ALPN said that one HTTP/2 connection serves them all (hyper-util then drops the
    /// extras) — at start, ~1,000 handshakes for ~10 connections.
    connected: Arc<tokio::sync::watch::Sender<bool>>,
}

/// What a request does before it is sent.
enum Gate {
    /// The shard's connection is up: send.
    Open,
    /// The first request of a new shard: send, then open the gate.
    Opener(OpenGate),
    /// Wait for the opener, then send.
    Wait(tokio::sync::watch::Receiver<bool>),
}

/// Opens the gate when dropped: after the first answer, or if that request is abandoned.
struct OpenGate(Arc<tokio::sync::watch::Sender<bool>>);

impl Drop for OpenGate {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl<C: Clone> StreamShards<C> {
    /// `make` builds the client of a new shard. `cap` is at least 1.
    pub fn new(cap: usize, make: impl Fn() -> C + Send + Sync + 'static) -> Self {
        Self {
            shards: Arc::new(Mutex::new(Vec::new())),
            make: Arc::new(make),
            cap: Arc::new(AtomicUsize::new(cap.max(1))),
        }
    }

    /// The client of the first shard with room, the guard that holds its slot, and whether
    /// the request must wait for the shard's connection.
    fn checkout(&self) -> Checkout<C> {
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        let cap = self.cap.load(Ordering::Acquire);
        let (shard, gate) = match shards.iter().find(|s| s.open.load(Ordering::Acquire) < cap) {
            Some(shard) if *shard.connected.borrow() => (shard, Gate::Open),
            Some(shard) => {
                let waiting = shard.connected.subscribe();
                (shard, Gate::Wait(waiting))
            }
            None => {
                let connected = Arc::new(tokio::sync::watch::Sender::new(false));
                let index = shards.len();
                tracing::debug!(
                    connection = index,
                    cap,
                    "every API connection has its cap of open requests: adding one"
                );
                shards.push(Shard {
                    client: (self.make)(),
                    open: Arc::new(AtomicUsize::new(0)),
                    answered: Arc::new(AtomicUsize::new(0)),
                    connected: Arc::clone(&connected),
                });
                (&shards[index], Gate::Opener(OpenGate(connected)))
            }
        };
        shard.open.fetch_add(1, Ordering::AcqRel);
        Checkout {
            client: shard.client.clone(),
            slot: OpenRequest(Arc::clone(&shard.open)),
            answered: Arc::clone(&shard.answered),
            gate,
            cap: Arc::clone(&self.cap),
        }
    }

    /// Requests kept open per connection now (the configured cap, or less once learned).
    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::Acquire)
    }

    /// Open requests per shard, in shard order.
    pub fn open_per_shard(&self) -> Vec<usize> {
        self.shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|s| s.open.load(Ordering::Acquire))
            .collect()
    }
}

struct Checkout<C> {
    client: C,
    slot: OpenRequest,
    answered: Arc<AtomicUsize>,
    gate: Gate,
    cap: Arc<AtomicUsize>,
}

/// Holds one slot of a shard until dropped (with the response body, or the failed request).
#[derive(Debug)]
struct OpenRequest(Arc<AtomicUsize>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer to one request: response head and body, or the client's error.
pub type Exchange<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

/// One HTTP exchange, as [`StreamShards`] needs it from a client.
pub trait SendRequest: Clone + Send + 'static {
    type Body: http_body::Body<Data = Bytes> + Send + Unpin + 'static;
    type Error: Into<BoxError>;
    fn send(&self, request: Request<Body>) -> Exchange<Self::Body, Self::Error>;
}

impl<Conn> SendRequest for HyperClient<Conn, Body>
where
    Conn: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    type Body = hyper::body::Incoming;
    type Error = hyper_util::client::legacy::Error;
    fn send(&self, request: Request<Body>) -> Exchange<Self::Body, Self::Error> {
        Box::pin(self.request(request))
    }
}

impl<C: SendRequest> tower::Service<Request<Body>> for StreamShards<C> {
    type Response = Response<ShardBody<C::Body>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Checkout {
            client,
            slot,
            answered,
            gate,
            cap,
        } = self.checkout();
        Box::pin(async move {
            let opener = match gate {
                Gate::Open => None,
                Gate::Opener(open) => Some(open),
                Gate::Wait(mut connected) => {
                    // The sender lives in the shard, which outlives this request.
                    let _ = connected.wait_for(|up| *up).await;
                    None
                }
            };
            let response = tokio::time::timeout(RESPONSE_HEAD_WAIT, client.send(request)).await;
            drop(opener);
            let Ok(response) = response else {
                let open = slot.0.load(Ordering::Acquire);
                // The streams the server does serve on this connection are its limit. None at
                // all: the server (or the way to it) is not answering, which says nothing
                // about its limit, so the cap stays.
                let serving = answered.load(Ordering::Acquire);
                let now = if serving > 0 {
                    cap.fetch_min(serving, Ordering::AcqRel).min(serving)
                } else {
                    cap.load(Ordering::Acquire)
                };
                let error = ApiClientError::NoAnswer {
                    waited: RESPONSE_HEAD_WAIT,
                    open,
                    cap: now,
                };
                tracing::warn!(%error, "API request abandoned");
                return Err(error.into());
            };
            let response = response.map_err(Into::into)?;
            answered.fetch_add(1, Ordering::AcqRel);
            let answered = OpenRequest(answered);
            Ok(response.map(|inner| ShardBody {
                inner,
                _slot: slot,
                _answered: answered,
            }))
        })
    }
}

/// A response body that keeps its request's slot on the connection until it is dropped.
#[derive(Debug)]
pub struct ShardBody<B> {
    inner: B,
    _slot: OpenRequest,
    _answered: OpenRequest,
}

impl<B: http_body::Body + Unpin> http_body::Body for ShardBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
