//! The admin HTTP server: an accept loop over hyper's HTTP/1 connection driver, hardened for
//! an endpoint every pod on the node can reach.
//!
//! - **Bounded connections, and none can starve the probes:** at most
//!   [`Limits::max_connections`] connections, at most [`Limits::max_connections_per_peer`] from
//!   one IP address. Every connection is accepted at once; one that would exceed a limit closes
//!   an *idle* connection (no request in progress) of its own peer, or of the peer holding the
//!   most, instead of waiting in the kernel's accept backlog behind clients that send nothing
//!   (see [`super::slots`]). 300 idle clients therefore cannot keep kubelet's 1 s probes out.
//! - **Timeouts:** the request head must arrive within [`Limits::header_read_timeout`] (hyper's
//!   `header_read_timeout`, which also bounds idle keep-alive connections), a handler must answer
//!   within [`Limits::request_timeout`], and a connection is closed gracefully after
//!   [`Limits::max_connection_age`] (then dropped after [`Limits::drain_timeout`]), which bounds
//!   clients that stop reading their response. Request bodies are never read: a request that
//!   announces one gets `413` and the connection is closed, so there is no body to time out.
//!   A slowloris client holds one slot until its header timeout, or until a new connection
//!   needs it, and blocks nobody else.
//! - **Strict surface:** only `GET` and `HEAD` (`405` with `Allow: GET, HEAD` otherwise), `404`
//!   for unknown paths, request heads capped at [`Limits::max_header_bytes`] and
//!   [`Limits::max_headers`] (hyper answers `431`/`400` and closes). Malformed requests are
//!   hyper's parse errors: logged at debug level, the connection closed, nothing panics.
//! - **`/status` kept off this listener on request:** [`AdminServer::serve_status`]`(false)`
//!   answers `/status` with `404` here, for a server whose node-local twin (`--status-listen`)
//!   serves it.
//! - **Graceful shutdown:** when `shutdown` resolves the listener is closed, every connection
//!   finishes its current response and closes, and connections still open after
//!   [`Limits::drain_timeout`] are dropped. Flip the status to unready *before* resolving
//!   `shutdown` (see [`super::mark_unready`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::StatusSnapshot;
use super::liveness::Liveness;
use super::metrics;
use super::slots::{Activity, Slot, Slots};

/// Resource limits of the admin server. [`Limits::default`] suits a node-local endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (default 64); a new one beyond it closes the longest-idle
    /// connection of the peer holding the most.
    pub max_connections: usize,
    /// Connections from one IP address at once (default 8: kubelet probes over one at a time,
    /// Prometheus scrapes over one); a new one beyond it closes that peer's longest-idle one.
    pub max_connections_per_peer: usize,
    /// The whole request head must arrive within this (default 5 s); also the keep-alive idle
    /// timeout.
    pub header_read_timeout: Duration,
    /// A handler must answer within this (default 10 s); `503` otherwise.
    pub request_timeout: Duration,
    /// A connection is asked to close after this long (default 60 s; keep-alive clients
    /// reconnect).
    pub max_connection_age: Duration,
    /// After shutdown or `max_connection_age`, a connection may take this long to finish its
    /// response (default 5 s) before it is dropped.
    pub drain_timeout: Duration,
    /// Maximum size of a request head in bytes (default 16 KiB; hyper needs at least 8 KiB).
    pub max_header_bytes: usize,
    /// Maximum number of request headers (default 64).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            max_connections_per_peer: 8,
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// hyper refuses (panics on) a read buffer smaller than this.
const HYPER_MIN_BUF: usize = 8192;

/// The admin server: what the endpoints read, and the limits they are served with.
#[derive(Debug, Clone)]
pub struct AdminServer {
    registry: Arc<Registry>,
    status: watch::Receiver<Arc<StatusSnapshot>>,
    liveness: Liveness,
    limits: Limits,
    serve_status: bool,
}

impl AdminServer {
    /// Serves `registry` on `/metrics` and the published snapshot on `/readyz` and `/status`.
    /// Without [`AdminServer::liveness`], `/livez` checks no loop and answers 200.
    pub fn new(registry: Arc<Registry>, status: watch::Receiver<Arc<StatusSnapshot>>) -> Self {
        Self {
            registry,
            status,
            liveness: Liveness::new(),
            limits: Limits::default(),
            serve_status: true,
        }
    }

    /// `/livez` reports these loops.
    pub fn liveness(mut self, liveness: Liveness) -> Self {
        self.liveness = liveness;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether `/status` is served here (default). `false` for the public listener when a
    /// node-local one serves it (`--status-listen`): `/status` names namespaces, pods, Secrets
    /// and hosts, which the pod network need not learn.
    pub fn serve_status(mut self, serve: bool) -> Self {
        self.serve_status = serve;
        self
    }

    /// Serves until `shutdown` resolves, then drains (see the module docs). Errors only when
    /// the listener itself fails; per-connection errors are logged.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let limits = Arc::new(Limits {
            max_connections: self.limits.max_connections.max(1),
            max_connections_per_peer: self.limits.max_connections_per_peer.max(1),
            max_header_bytes: self.limits.max_header_bytes.max(HYPER_MIN_BUF),
            max_headers: self.limits.max_headers.max(1),
            ..self.limits.clone()
        });
        let endpoints = Arc::new(Endpoints {
            registry: self.registry,
            status: self.status,
            liveness: self.liveness,
            request_timeout: limits.request_timeout,
            serve_status: self.serve_status,
        });
        let slots = Slots::new(limits.max_connections, limits.max_connections_per_peer);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(err) = joined
                        && err.is_panic()
                    {
                        tracing::error!("an admin connection task panicked");
                    }
                }
                // Never wait for a slot before accepting: a connection left in the backlog is
                // one the server cannot choose to serve (see super::slots).
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // None: every slot that could make room is busy answering; closing the
                        // new connection is all that is left.
                        if let Some(slot) = slots.admit(peer.ip()) {
                            connections.spawn(serve_connection(
                                stream,
                                Arc::clone(&endpoints),
                                Arc::clone(&limits),
                                stop_rx.clone(),
                                slot,
                            ));
                            // Let the new connection read its request before the next accept
                            // (tokio runs a task spawned on a worker next): until then it
                            // cannot be closed to make room, and a flood would refuse others.
                            tokio::task::yield_now().await;
                        }
                    }
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %err, "admin endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(limits.drain_timeout + Duration::from_millis(100), {
            let connections = &mut connections;
            async move { while connections.join_next().await.is_some() {} }
        })
        .await;
        if drained.is_err() {
            tracing::debug!(
                open = connections.len(),
                "admin endpoint: dropping connections still open after the drain timeout"
            );
            connections.abort_all();
        }
        Ok(())
    }
}

/// Serves until `shutdown` resolves with default limits; `/livez` reports the loops of
/// `liveness`.
pub async fn serve_with_liveness(
    listener: TcpListener,
    registry: Arc<Registry>,
    status: watch::Receiver<Arc<StatusSnapshot>>,
    liveness: Liveness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    AdminServer::new(registry, status)
        .liveness(liveness)
        .serve(listener, shutdown)
        .await
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    endpoints: Arc<Endpoints>,
    limits: Arc<Limits>,
    mut stop: watch::Receiver<bool>,
    mut slot: Slot,
) {
    let _ = stream.set_nodelay(true);
    let activity = slot.activity();
    let service = service_fn(move |request: Request<Incoming>| {
        let endpoints = Arc::clone(&endpoints);
        // From a complete request head until the response is handed to hyper, the connection
        // is busy and never closed to make room.
        let busy = activity.begin();
        async move {
            let response = endpoints.handle(request).await;
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let io = Watched {
        io: TokioIo::new(stream),
        activity: slot.activity(),
    };
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let age = tokio::time::sleep(limits.max_connection_age);
    tokio::pin!(age);
    let finished = tokio::select! {
        result = connection.as_mut() => Some(result),
        // Idle and needed for a new connection: nothing in progress to finish.
        () = slot.evicted() => return,
        _ = stop.wait_for(|stop| *stop) => None,
        () = &mut age => None,
    };
    let result = match finished {
        Some(result) => result,
        None => drain(connection, limits.drain_timeout).await,
    };
    if let Err(err) = result {
        // Malformed requests, header timeouts, clients that went away: their problem.
        tracing::debug!(error = %err, "admin endpoint: connection ended with an error");
    }
}

/// A connection's socket that tells its slot when it first finds no data to read: until then
/// a request may be waiting in the buffer, and the connection must not be closed to make room.
struct Watched {
    io: TokioIo<tokio::net::TcpStream>,
    activity: Activity,
}

impl hyper::rt::Read for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if polled.is_pending() {
            self.activity.waiting();
        }
        polled
    }
}

impl hyper::rt::Write for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

async fn drain<C>(
    mut connection: Pin<&mut http1::Connection<Watched, C>>,
    timeout: Duration,
) -> hyper::Result<()>
where
    C: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>>,
{
    connection.as_mut().graceful_shutdown();
    tokio::time::timeout(timeout, connection)
        .await
        .unwrap_or(Ok(()))
}

/// What the handlers read.
#[derive(Debug)]
struct Endpoints {
    registry: Arc<Registry>,
    status: watch::Receiver<Arc<StatusSnapshot>>,
    liveness: Liveness,
    request_timeout: Duration,
    /// `false`: `/status` is served on the node-local listener only.
    serve_status: bool,
}

type Reply = Response<Full<Bytes>>;

fn reply(code: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

fn text(code: StatusCode, body: impl Into<Bytes>) -> Reply {
    reply(code, TEXT, body)
}

fn closing(mut response: Reply) -> Reply {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The paths served, for the index page and the 404 hint.
const PATHS: &str = "/livez /readyz /metrics /status";
/// The same on a listener that leaves `/status` to the node-local one.
const PATHS_WITHOUT_STATUS: &str = "/livez /readyz /metrics";

impl Endpoints {
    async fn handle(&self, request: Request<Incoming>) -> Reply {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = closing(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are served\n",
            ));
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        // Bodies are never read: no body means nothing to time out or to buffer.
        if !request.body().is_end_stream() {
            return closing(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "requests to this endpoint carry no body\n",
            ));
        }
        let accept = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let path = request.uri().path().to_owned();
        drop(request);
        match tokio::time::timeout(self.request_timeout, self.route(&path, accept.as_deref())).await
        {
            Ok(response) => response,
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request timed out inside the agent\n",
            ),
        }
    }

    async fn route(&self, path: &str, accept: Option<&str>) -> Reply {
        let paths = if self.serve_status {
            PATHS
        } else {
            PATHS_WITHOUT_STATUS
        };
        match path {
            "/livez" => self.livez().await,
            "/readyz" => self.readyz(),
            "/metrics" => self.metrics(accept),
            "/status" if self.serve_status => self.status(),
            "/status" => text(
                StatusCode::NOT_FOUND,
                "not found; /status is served on the agent's node-local address \
                 (--status-listen), e.g. `kubectl exec` into the agent pod and run \
                 `mountlag status`\n",
            ),
            "/" => text(StatusCode::OK, format!("mountlag agent: {paths}\n")),
            _ => text(
                StatusCode::NOT_FOUND,
                format!("not found; this endpoint serves {paths}\n"),
            ),
        }
    }

    async fn livez(&self) -> Reply {
        let report = self.liveness.check().await;
        let code = if report.is_alive() {
            StatusCode::OK
        } else {
            tracing::warn!(stalled = %report.body().trim_end(), "liveness check failed");
            StatusCode::SERVICE_UNAVAILABLE
        };
        text(code, report.body())
    }

    fn readyz(&self) -> Reply {
        let snapshot = Arc::clone(&self.status.borrow());
        if snapshot.ready {
            text(StatusCode::OK, "ready\n")
        } else {
            let body = format!("not ready: {}\n", snapshot.waiting_for.join("; "));
            text(StatusCode::SERVICE_UNAVAILABLE, body)
        }
    }

    fn metrics(&self, accept: Option<&str>) -> Reply {
        match metrics::encode(&self.registry, accept) {
            Ok((content_type, body)) => reply(StatusCode::OK, content_type, body),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
        }
    }

    fn status(&self) -> Reply {
        let snapshot = Arc::clone(&self.status.borrow());
        match serde_json::to_vec_pretty(snapshot.as_ref()) {
            Ok(mut body) => {
                body.push(b'\n');
                reply(StatusCode::OK, "application/json", body)
            }
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode status\n"),
        }
    }
}

#[cfg(test)]
mod tests;
