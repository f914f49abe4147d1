//! Reloading a controller over HTTP: Caddy's admin API, or any endpoint that reloads on POST.
//!
//! ```text
//!  url path ends with /load (Caddy):  GET <admin>/config/ ──▶ POST <admin>/load
//!                                     Content-Type: application/json
//!                                     Cache-Control: must-revalidate   (reload even if unchanged)
//!  any other url:                     POST <url> (empty body)
//! ```
//!
//! Caddy reloads only when the posted config differs from the running one, unless the request
//! says `Cache-Control: must-revalidate`; posting the running config back with it makes Caddy
//! re-read the certificate files with zero downtime. An admin API with no config loaded answers
//! `null`, and loading that would stop every server: it is refused.
//!
//! Plain HTTP only (Caddy's admin endpoint is plain HTTP). The config fetched from Caddy may hold
//! credentials (DNS provider tokens, inline keys): it is held in memory only for the POST and
//! never logged; error messages carry at most 200 bytes of an error response (escaped), and URLs
//! without userinfo or query.
//!
//! Every read is bounded: the config by [`MAX_CONFIG_BYTES`], an error answer by
//! [`MAX_ERROR_BODY_BYTES`]; a successful POST's answer is not waited for: an empty one leaves
//! the connection ready at once, a longer one is drained in the background up to
//! [`MAX_ERROR_BODY_BYTES`] within [`DRAIN_WITHIN`] (else the connection is closed). A server
//! that answers endlessly costs at most that much memory and ends the reload with an error long
//! before the timeout.
//!
//! Connections are kept alive: one [`HttpReloader`] per agent keeps at most one idle
//! connection per endpoint for [`IDLE_KEPT`], so the next reload of a burst (cert-manager
//! renewing several Secrets of one pod, a reload retried) skips the TCP handshake. A request
//! that broke on its connection before any answer (a kept-alive connection the server closed
//! while the request was on its way) is sent once more on a new connection: the endpoint may
//! then see the same reload twice, which reloads the same files twice and is harmless.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Body as _;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioTimer;

use crate::text::untrusted_capped;

/// Largest config read back from Caddy's `/config/` (it must be held whole to post it back).
/// Caddy configs of hundreds of sites are well under 1 MiB; a larger answer fails the reload
/// with [`HttpReloadError::ConfigTooLarge`] rather than growing the agent.
pub const MAX_CONFIG_BYTES: usize = 8 << 20;
/// How much of an error answer is read; the rest is never received (the connection closes).
pub const MAX_ERROR_BODY_BYTES: usize = 4 << 10;
/// How much of an error answer is quoted in the message (escaped, cut with a marker).
pub const MAX_QUOTED_BYTES: usize = 200;
/// How long an idle connection to a reload endpoint is kept for the next reload.
pub const IDLE_KEPT: Duration = Duration::from_secs(90);
/// How long a successful answer's body may take to arrive whole before its connection is
/// dropped instead of kept (it is read in the background: the reload is done already).
pub const DRAIN_WITHIN: Duration = Duration::from_secs(2);

/// Why an HTTP reload failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpReloadError {
    #[error("reload URL {url:?} is not a valid URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("reload URL {url}: scheme {scheme:?} is not supported (only http:// is)")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("{method} {url}: request failed: {source}")]
    Request {
        method: &'static str,
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{method} {url}: cannot read the response: {source}")]
    Body {
        method: &'static str,
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        /// At most [`MAX_QUOTED_BYTES`] of the response body, escaped.
        body: String,
    },
    #[error(
        "GET {url}: the config is larger than {limit} bytes; not loaded back (the reload needs \
         the whole config)"
    )]
    ConfigTooLarge { url: String, limit: usize },
    #[error("GET {url}: {what}; refusing to load it back (that would replace the running config)")]
    BadConfig { url: String, what: &'static str },
    #[error("{url}: no complete answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A task of the HTTP client (a connection, a background drain, a reload).
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the client's tasks run. `Runtime`: any worker of the runtime. `Here`: the thread that
/// runs the agent loop, inside its `LocalSet` (see [`spawner_here`]): a reload the loop starts
/// writes its request from that thread at once, without waking a worker thread first (a
/// thread hop costs tens of microseconds on a busy or virtualised node, on every reload).
#[derive(Clone, Debug)]
pub enum Spawner {
    Runtime,
    Here(tokio::sync::mpsc::UnboundedSender<Task>),
}

impl Spawner {
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match self {
            Self::Runtime => drop(tokio::spawn(task)),
            Self::Here(tasks) => {
                // The loop is gone (shutting down): any worker will do.
                if let Err(task) = tasks.send(Box::pin(task)) {
                    drop(tokio::spawn(task.0));
                }
            }
        }
    }
}

impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.spawn(async move {
            future.await;
        });
    }
}

/// A [`Spawner::Here`] and the task that runs what it is given: spawn that task on the
/// `LocalSet` of the agent loop's thread. Tasks are handed over through a channel, so spawning
/// from any thread is safe; from the loop's own thread they run in the same turn.
pub fn spawner_here() -> (Spawner, impl Future<Output = ()>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Task>();
    let runner = async move {
        while let Some(task) = rx.recv().await {
            tokio::task::spawn_local(task);
        }
    };
    (Spawner::Here(tx), runner)
}

/// The agent's HTTP client for reloads: keep-alive connections, at most one idle per endpoint.
/// Clones share the pool. Create it inside the runtime that performs the reloads: its pooled
/// connections are tasks of that runtime.
#[derive(Clone, Debug)]
pub struct HttpReloader {
    client: HttpClient,
    spawner: Spawner,
}

impl Default for HttpReloader {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpReloader {
    /// Its tasks run on the runtime's workers.
    pub fn new() -> Self {
        Self::with_spawner(Spawner::Runtime)
    }

    /// Its tasks (connections, drains) run where `spawner` says.
    pub fn with_spawner(spawner: Spawner) -> Self {
        let mut connector = HttpConnector::new();
        // The request is one small write awaited by the controller: never hold it back.
        connector.set_nodelay(true);
        let client = Client::builder(spawner.clone())
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(IDLE_KEPT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self { client, spawner }
    }

    /// Where this client's tasks run: start reloads there too.
    pub fn spawner(&self) -> &Spawner {
        &self.spawner
    }

    /// Reloads via `url` within `timeout` (the whole exchange). A URL whose path ends with
    /// `/load` is Caddy's admin API: the running config is fetched from `<admin>/config/` and
    /// posted back to `url` with `Cache-Control: must-revalidate`. Any other URL gets an empty
    /// POST. Success is a 2xx answer.
    pub async fn reload(&self, url: &str, timeout: Duration) -> Result<(), HttpReloadError> {
        let uri = reload_uri(url)?;
        let shown = display_url(&uri);
        match tokio::time::timeout(timeout, self.exchange(uri)).await {
            Ok(result) => result,
            Err(_) => Err(HttpReloadError::Timeout {
                url: shown,
                timeout,
            }),
        }
    }

    async fn exchange(&self, uri: Uri) -> Result<(), HttpReloadError> {
        let Some(base) = uri.path().strip_suffix("/load") else {
            let response = self
                .send("POST", &uri, || {
                    Request::post(uri.clone()).body(Full::default())
                })
                .await?;
            return expect_success(response, "POST", &uri)
                .await
                .map(|response| self.done(response));
        };

        let config_uri = with_path(&uri, &format!("{base}/config/"))?;
        let response = self
            .send("GET", &config_uri, || {
                Request::get(config_uri.clone()).body(Full::default())
            })
            .await?;
        let response = expect_success(response, "GET", &config_uri).await?;
        let config = Limited::new(response.into_body(), MAX_CONFIG_BYTES)
            .collect()
            .await
            .map_err(|source| {
                if source.is::<LengthLimitError>() {
                    HttpReloadError::ConfigTooLarge {
                        url: display_url(&config_uri),
                        limit: MAX_CONFIG_BYTES,
                    }
                } else {
                    HttpReloadError::Body {
                        method: "GET",
                        url: display_url(&config_uri),
                        source,
                    }
                }
            })?
            .to_bytes();
        check_config(&config).map_err(|what| HttpReloadError::BadConfig {
            url: display_url(&config_uri),
            what,
        })?;

        let response = self
            .send("POST", &uri, || {
                Request::post(uri.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header(CACHE_CONTROL, "must-revalidate")
                    .body(Full::new(config.clone()))
            })
            .await?;
        expect_success(response, "POST", &uri)
            .await
            .map(|response| self.done(response))
    }

    fn done(&self, response: Response<Incoming>) {
        drain(&self.spawner, response);
    }

    /// Sends the request `build` makes; once more on a new connection when the first broke
    /// before any answer came (see the module doc).
    async fn send(
        &self,
        method: &'static str,
        uri: &Uri,
        build: impl Fn() -> Result<Request<Full<Bytes>>, hyper::http::Error>,
    ) -> Result<Response<Incoming>, HttpReloadError> {
        let request = build().map_err(|e| invalid(uri, &e))?;
        let source = match self.client.request(request).await {
            Ok(response) => return Ok(response),
            Err(source) if closed_before_answer(&source) => {
                tracing::debug!(url = %display_url(uri), error = %source, "reload connection closed before an answer: sending again on a new one");
                let request = build().map_err(|e| invalid(uri, &e))?;
                match self.client.request(request).await {
                    Ok(response) => return Ok(response),
                    Err(source) => source,
                }
            }
            Err(source) => source,
        };
        Err(HttpReloadError::Request {
            method,
            url: display_url(uri),
            source,
        })
    }
}

/// Reloads via `url` with a client of its own (no connection is kept): see
/// [`HttpReloader::reload`].
pub async fn http_reload(url: &str, timeout: Duration) -> Result<(), HttpReloadError> {
    HttpReloader::new().reload(url, timeout).await
}

/// `url` parsed and checked: an absolute `http://` URL with a host.
fn reload_uri(url: &str) -> Result<Uri, HttpReloadError> {
    let uri: Uri =
        url.parse().map_err(
            |e: hyper::http::uri::InvalidUri| HttpReloadError::InvalidUrl {
                url: url.to_string(),
                reason: e.to_string(),
            },
        )?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(HttpReloadError::UnsupportedScheme {
                url: display_url(&uri),
                scheme: other.to_string(),
            });
        }
        None => {
            return Err(HttpReloadError::InvalidUrl {
                url: url.to_string(),
                reason: "an absolute http:// URL is needed".to_string(),
            });
        }
    }
    if uri.authority().is_none() {
        return Err(HttpReloadError::InvalidUrl {
            url: url.to_string(),
            reason: "the URL names no host".to_string(),
        });
    }
    Ok(uri)
}

/// Whether a request failed on a connection that closed (or was reset) before any answer:
/// a kept-alive connection the server had closed. Not a refused connect, not a garbled answer.
fn closed_before_answer(err: &hyper_util::client::legacy::Error) -> bool {
    if err.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed())
        {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A successful answer: its body is not waited for. An empty one leaves the connection ready
/// for the next reload now; a longer one is read in the background, bounded in bytes and time,
/// so the connection is kept only if the answer ends soon (otherwise it is dropped, closed).
fn drain(spawner: &Spawner, response: Response<Incoming>) {
    let mut body = response.into_body();
    if body.is_end_stream() {
        return;
    }
    spawner.spawn(async move {
        let _ = tokio::time::timeout(DRAIN_WITHIN, async {
            let mut read = 0usize;
            while read <= MAX_ERROR_BODY_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                    Some(Err(_)) | None => return,
                }
            }
        })
        .await;
    });
}

/// A config worth loading back: a JSON object (Caddy answers `null` when none is loaded).
/// Validated without building a tree: a `Value` of a large config costs several times its text.
fn check_config(config: &[u8]) -> Result<(), &'static str> {
    let first = config.iter().find(|b| !b.is_ascii_whitespace());
    if serde_json::from_slice::<serde::de::IgnoredAny>(config).is_err() {
        return Err("the config is not valid JSON");
    }
    match first {
        Some(b'{') => Ok(()),
        Some(b'n') => Err("the admin API has no config loaded (null)"),
        _ => Err("the config is not a JSON object"),
    }
}

/// Passes a 2xx response through; otherwise an error quoting the start of the body.
async fn expect_success(
    response: Response<Incoming>,
    method: &'static str,
    uri: &Uri,
) -> Result<Response<Incoming>, HttpReloadError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = quote_body(response.into_body()).await;
    Err(HttpReloadError::Status {
        method,
        url: display_url(uri),
        status: status.as_u16(),
        body,
    })
}

/// The start of an error answer for a message: at most [`MAX_ERROR_BODY_BYTES`] are read (a
/// frame may be larger: only its head is kept), then [`MAX_QUOTED_BYTES`] of it are quoted,
/// escaped (the server's text reaches logs and an Event).
async fn quote_body(mut body: Incoming) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ERROR_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = MAX_ERROR_BODY_BYTES - bytes.len();
                    bytes.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    untrusted_capped(text.trim(), MAX_QUOTED_BYTES).to_string()
}

fn with_path(uri: &Uri, path: &str) -> Result<Uri, HttpReloadError> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path.parse().map_err(|e: hyper::http::uri::InvalidUri| {
        HttpReloadError::InvalidUrl {
            url: display_url(uri),
            reason: e.to_string(),
        }
    })?);
    Uri::from_parts(parts).map_err(|e| HttpReloadError::InvalidUrl {
        url: display_url(uri),
        reason: e.to_string(),
    })
}

fn invalid(uri: &Uri, err: &hyper::http::Error) -> HttpReloadError {
    HttpReloadError::InvalidUrl {
        url: display_url(uri),
        reason: err.to_string(),
    }
}

/// `scheme://host:port/path`: no userinfo, no query (either may carry a credential).
fn display_url(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{}", uri.path())
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes as AxumBytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri as AxumUri};
    use axum::routing::any;

    use super::*;

    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        content_type: Option<String>,
        cache_control: Option<String>,
        body: Vec<u8>,
    }

    #[derive(Clone)]
    struct Fake {
        seen: Arc<Mutex<Vec<Seen>>>,
        config: &'static str,
    }

    async fn handle(
        State(fake): State<Fake>,
        method: axum::http::Method,
        uri: AxumUri,
        headers: HeaderMap,
        body: AxumBytes,
    ) -> (StatusCode, String) {
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        fake.seen.lock().unwrap().push(Seen {
            method: method.to_string(),
            path: uri.path().to_string(),
            content_type: header("content-type"),
            cache_control: header("cache-control"),
            body: body.to_vec(),
        });
        match (method.as_str(), uri.path()) {
            ("GET", p) if p.ends_with("/config/") => (StatusCode::OK, fake.config.to_string()),
            ("POST", p) if p.ends_with("/fail") => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{{\"error\":\"{}\"}}", "x".repeat(1000)),
            ),
            ("POST", _) => (StatusCode::OK, String::new()),
            _ => (StatusCode::NOT_FOUND, "no such route".to_string()),
        }
    }

    async fn serve(config: &'static str) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(any(handle)).with_state(Fake {
            seen: seen.clone(),
            config,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, seen)
    }

    const CONFIG: &str = r#"{"apps":{"http":{"servers":{"srv0":{"listen":[":443"]}}}}}"#;
    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn caddy_load_fetches_the_config_and_posts_it_back_forced() {
        let (addr, seen) = serve(CONFIG).await;
        http_reload(&format!("http://{addr}/load"), T)
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("GET", "/config/")
        );
        assert_eq!(
            (seen[1].method.as_str(), seen[1].path.as_str()),
            ("POST", "/load")
        );
        assert_eq!(seen[1].content_type.as_deref(), Some("application/json"));
        assert_eq!(seen[1].cache_control.as_deref(), Some("must-revalidate"));
        assert_eq!(seen[1].body, CONFIG.as_bytes());
    }

    #[tokio::test]
    async fn the_admin_base_keeps_a_path_prefix() {
        let (addr, seen) = serve(CONFIG).await;
        http_reload(&format!("http://{addr}/caddy/admin/load"), T)
            .await
            .unwrap();
        let paths: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect();
        assert_eq!(paths, ["/caddy/admin/config/", "/caddy/admin/load"]);
    }

    #[tokio::test]
    async fn other_urls_get_an_empty_post() {
        let (addr, seen) = serve(CONFIG).await;
        http_reload(&format!("http://{addr}/-/reload"), T)
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("POST", "/-/reload")
        );
        assert!(seen[0].body.is_empty());
        assert_eq!(seen[0].cache_control, None);
    }

    #[tokio::test]
    async fn an_error_status_is_reported_with_a_short_body() {
        let (addr, _) = serve(CONFIG).await;
        let err = http_reload(&format!("http://{addr}/fail"), T)
            .await
            .unwrap_err();
        let HttpReloadError::Status { status, body, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(*status, 500);
        assert!(body.len() <= MAX_QUOTED_BYTES && body.len() > 150, "{body}");
        assert!(body.ends_with(" bytes)"), "{body}");
        assert!(err.to_string().contains("HTTP 500"), "{err}");
    }

    #[tokio::test]
    async fn a_null_config_is_never_loaded() {
        let (addr, seen) = serve("null\n").await;
        let err = http_reload(&format!("http://{addr}/load"), T)
            .await
            .unwrap_err();
        assert!(matches!(err, HttpReloadError::BadConfig { .. }), "{err}");
        assert!(err.to_string().contains("no config loaded"), "{err}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "no POST after a null config: {seen:?}");
    }

    #[tokio::test]
    async fn only_plain_http_urls() {
        for (url, scheme) in [
            ("https://127.0.0.1:2019/load", "https"),
            ("ftp://127.0.0.1/load", "ftp"),
        ] {
            let err = http_reload(url, T).await.unwrap_err();
            let HttpReloadError::UnsupportedScheme { scheme: s, .. } = &err else {
                panic!("{url}: {err}");
            };
            assert_eq!(s, scheme);
        }
        for url in ["", "/load", "not a url", "127.0.0.1:2019"] {
            let err = http_reload(url, T).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    HttpReloadError::InvalidUrl { .. } | HttpReloadError::UnsupportedScheme { .. }
                ),
                "{url}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_a_closed_port_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let err = http_reload(&format!("http://{addr}/load"), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpReloadError::Timeout { .. }), "{err}");
        hold.abort();

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let err = http_reload(&format!("http://{addr}/reload"), T)
            .await
            .unwrap_err();
        assert!(matches!(err, HttpReloadError::Request { .. }), "{err}");
    }

    /// A server that answers every request with `status` and a body that never ends: `head` and
    /// then `fill` over and over until the client goes away. Counts the bytes it got out.
    async fn endless(
        status: &'static str,
        head: &'static [u8],
        fill: u8,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!("HTTP/1.1 {status}\r\nConnection: close\r\n\r\n");
                    if socket.write_all(answer.as_bytes()).await.is_err()
                        || socket.write_all(head).await.is_err()
                    {
                        return;
                    }
                    let chunk = vec![fill; 64 << 10];
                    while socket.write_all(&chunk).await.is_ok() {
                        counter.fetch_add(chunk.len(), Ordering::Relaxed);
                    }
                });
            }
        });
        (addr, sent)
    }

    #[tokio::test]
    async fn endless_answers_end_the_reload_promptly_with_bounded_reads() {
        use std::sync::atomic::Ordering;
        let patience = Duration::from_secs(60);
        // Loopback socket buffers hold a few MiB the client never reads.
        let buffered = 16 << 20;

        // Caddy's config: cut at the cap, refused with an error naming it.
        let (addr, sent) = endless("200 OK", b"{\"apps\":\"", b'x').await;
        let started = std::time::Instant::now();
        let err = http_reload(&format!("http://{addr}/load"), patience)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpReloadError::ConfigTooLarge { limit, .. } if limit == MAX_CONFIG_BYTES),
            "{err}"
        );
        assert!(
            err.to_string().contains(&MAX_CONFIG_BYTES.to_string()),
            "{err}"
        );
        assert!(started.elapsed() < patience / 4, "{:?}", started.elapsed());
        assert!(sent.load(Ordering::Relaxed) < MAX_CONFIG_BYTES + buffered);

        // A successful POST's answer is not read: the reload succeeds at once.
        let (addr, sent) = endless("200 OK", b"", b'y').await;
        let started = std::time::Instant::now();
        http_reload(&format!("http://{addr}/-/reload"), patience)
            .await
            .unwrap();
        assert!(started.elapsed() < patience / 4, "{:?}", started.elapsed());
        assert!(sent.load(Ordering::Relaxed) < buffered);

        // An endless, hostile error answer: a short, escaped quote.
        let (addr, sent) = endless(
            "500 Internal Server Error",
            b"\x1b]0;owned\x07\xe2\x80\xae\x1b[2Jerror: ",
            b'z',
        )
        .await;
        let started = std::time::Instant::now();
        let err = http_reload(&format!("http://{addr}/-/reload"), patience)
            .await
            .unwrap_err();
        let HttpReloadError::Status {
            status: 500, body, ..
        } = &err
        else {
            panic!("{err}");
        };
        assert!(body.len() <= MAX_QUOTED_BYTES, "{body}");
        assert!(
            !err.to_string().chars().any(crate::text::needs_escape),
            "{err:?}"
        );
        assert!(
            body.starts_with("\\u{1b}]0;owned\\u{7}\\u{202e}\\u{1b}[2Jerror: zzz"),
            "{body}"
        );
        assert!(started.elapsed() < patience / 4, "{:?}", started.elapsed());
        assert!(sent.load(Ordering::Relaxed) < buffered);
    }

    /// How a [`keep_alive_server`] treats each connection.
    #[derive(Clone, Copy, PartialEq)]
    enum Keep {
        /// Answers every request, keeps the connection open.
        Open,
        /// Answers one request (without `Connection: close`), then closes: an idle timeout.
        CloseAfterOne,
        /// Answers the first request; reads the second and closes without an answer, as a
        /// server whose idle timeout struck while the request was on its way.
        DropSecond,
    }

    /// A plain HTTP/1.1 server answering `200` with an empty body; counts connections and
    /// requests.
    async fn keep_alive_server(
        keep: Keep,
    ) -> (
        SocketAddr,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    for served in 0.. {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        buf.drain(..end);
                        r.fetch_add(1, Ordering::SeqCst);
                        if keep == Keep::DropSecond && served == 1 {
                            return;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                        if socket.write_all(answer).await.is_err() || keep == Keep::CloseAfterOne {
                            return;
                        }
                    }
                });
            }
        });
        (addr, connections, requests)
    }

    #[tokio::test]
    async fn one_connection_is_kept_alive_across_reloads() {
        use std::sync::atomic::Ordering;
        let (addr, connections, requests) = keep_alive_server(Keep::Open).await;
        let reloader = HttpReloader::new();
        let url = format!("http://{addr}/-/reload");
        for _ in 0..3 {
            reloader.reload(&url, T).await.unwrap();
        }
        assert_eq!(requests.load(Ordering::SeqCst), 3);
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "one kept-alive connection"
        );
    }

    #[tokio::test]
    async fn a_server_that_closed_its_idle_connection_still_gets_the_reload() {
        use std::sync::atomic::Ordering;
        let (addr, connections, requests) = keep_alive_server(Keep::CloseAfterOne).await;
        let reloader = HttpReloader::new();
        let url = format!("http://{addr}/-/reload");
        reloader.reload(&url, T).await.unwrap();
        reloader.reload(&url, T).await.unwrap();
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_lost_on_a_kept_connection_is_sent_again_on_a_new_one() {
        use std::sync::atomic::Ordering;
        let (addr, connections, requests) = keep_alive_server(Keep::DropSecond).await;
        let reloader = HttpReloader::new();
        let url = format!("http://{addr}/-/reload");
        reloader.reload(&url, T).await.unwrap();
        // The second request goes out on the kept connection, which closes without an
        // answer: it is sent again on a new connection and answered there.
        reloader.reload(&url, T).await.unwrap();
        assert_eq!(requests.load(Ordering::SeqCst), 3);
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reloader_spawning_here_runs_its_tasks_on_the_loop_thread() {
        use std::sync::atomic::Ordering;
        let (addr, connections, requests) = keep_alive_server(Keep::Open).await;
        let local = tokio::task::LocalSet::new();
        let (here, run_here) = spawner_here();
        local.spawn_local(run_here);
        let reloader = HttpReloader::with_spawner(here);
        let url = format!("http://{addr}/-/reload");
        let loop_thread = std::thread::current().id();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ran_on = local
            .run_until(async {
                let http = reloader.clone();
                reloader.spawner().spawn(async move {
                    let result = http.reload(&url, T).await;
                    let again = http.reload(&url, T).await;
                    let _ = tx.send((std::thread::current().id(), result, again));
                });
                rx.await.unwrap()
            })
            .await;
        assert_eq!(ran_on.0, loop_thread);
        ran_on.1.unwrap();
        ran_on.2.unwrap();
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_spawner_whose_loop_is_gone_runs_tasks_on_the_runtime() {
        let (here, run_here) = spawner_here();
        drop(run_here);
        let (tx, rx) = tokio::sync::oneshot::channel();
        here.spawn(async move {
            let _ = tx.send(());
        });
        rx.await.unwrap();
    }

    #[tokio::test]
    async fn caddy_load_keeps_its_connection_too() {
        let (addr, seen) = serve(CONFIG).await;
        let reloader = HttpReloader::new();
        for _ in 0..2 {
            reloader
                .reload(&format!("http://{addr}/load"), T)
                .await
                .unwrap();
        }
        let methods: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.method.clone())
            .collect();
        assert_eq!(methods, ["GET", "POST", "GET", "POST"]);
    }

    #[test]
    fn urls_in_messages_carry_no_userinfo_or_query() {
        let uri: Uri = "http://user:secret@10.0.0.1:2019/load?token=abc"
            .parse()
            .unwrap();
        assert_eq!(display_url(&uri), "http://10.0.0.1:2019/load");
    }
}
