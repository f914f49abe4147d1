//! A TLS load generator for "0 failed requests during rotation" checks.
//!
//! [`LoadGenerator::start`] runs `concurrency` loops on a dedicated thread (its own tokio
//! runtime, so it neither needs nor disturbs the caller's). Each loop repeats, until stopped or
//! `max_duration` has passed:
//!
//! 1. a new TCP connection to the target (loopback only);
//! 2. a full rustls handshake (no session resumption) with the next SNI name in the rotation —
//!    every name given, then one without SNI; the certificate is accepted whatever it is (the
//!    handshake signature is still verified against it) and its SHA-256 recorded;
//! 3. `GET / HTTP/1.1` with `Connection: close`;
//! 4. read the whole response; status 200 is a success, anything else a failure: connect
//!    refused or timed out, handshake error, reset, truncated response, non-200, no answer
//!    within `request_timeout`.
//!
//! Beside them, `keepalive_connections` loops each hold one long-lived TLS connection and send
//! `GET / HTTP/1.1` on it one request after another (keep-alive), as browsers and proxies do.
//! A graceful reload closes such connections between requests: a request that finds its reused
//! connection closed before any byte of a response came back is sent again on a new connection,
//! as HTTP clients do for idempotent requests, and counted in `keepalive_reconnects`, not as a
//! failure. Anything else (an error status, a partial response, a reset after some bytes, a
//! timeout) is a failure.
//!
//! [`LoadGenerator::stop`] lets in-flight requests finish (they are never cut short, so a stop
//! cannot manufacture failures) and returns a [`LoadReport`].
//!
//! It shares only the agent's rustls client config (`mountlag::effects::probe::record_leaf_client_config`:
//! any chain accepted, the handshake signature verified by rustls); connecting, recording and
//! HTTP parsing are its own, so it can check the probe's answers instead of sharing its mistakes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How many failure messages a report keeps.
pub const MAX_FAILURE_SAMPLES: usize = 10;

/// What to load and how hard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    /// Target; must be a loopback address.
    pub addr: SocketAddr,
    /// SNI names used in rotation, one per connection.
    pub sni_names: Vec<String>,
    /// Also put a connection without SNI into the rotation (the default certificate).
    pub include_no_sni: bool,
    /// Parallel request loops.
    pub concurrency: usize,
    /// The loops stop by themselves after this long.
    pub max_duration: Duration,
    /// Bound of one request (connect + handshake + response).
    pub request_timeout: Duration,
    /// Long-lived keep-alive connections, each its own loop (see the module docs).
    pub keepalive_connections: usize,
    /// Pause between two requests on a keep-alive connection.
    pub keepalive_pause: Duration,
}

impl LoadConfig {
    /// `concurrency` loops over `sni_names` plus no SNI, at most 5 minutes, 5 s per request.
    pub fn new(addr: SocketAddr, sni_names: &[String], concurrency: usize) -> Self {
        Self {
            addr,
            sni_names: sni_names.to_vec(),
            include_no_sni: true,
            concurrency,
            max_duration: Duration::from_secs(300),
            request_timeout: Duration::from_secs(5),
            keepalive_connections: 0,
            keepalive_pause: Duration::from_millis(20),
        }
    }
}

/// Outcome of a load run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Requests completed (successes + failures).
    pub requests: u64,
    /// Requests that did not end in a complete 200 response.
    pub failures: u64,
    /// The first [`MAX_FAILURE_SAMPLES`] failures, as text.
    pub failure_samples: Vec<String>,
    /// Leaf fingerprint (lowercase hex SHA-256 of the DER) → handshakes that presented it.
    pub fingerprints_seen: BTreeMap<String, u64>,
    /// How long the load ran.
    pub elapsed: Duration,
    /// Requests sent on reused keep-alive connections (included in `requests`).
    pub keepalive_requests: u64,
    /// Keep-alive connections the server closed between requests (the request was sent again
    /// on a new connection; not a failure).
    pub keepalive_reconnects: u64,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{} requests ({:.0}/s over {secs:.1} s), {} failures, {} distinct leaves",
            self.requests,
            if secs > 0.0 {
                self.requests as f64 / secs
            } else {
                0.0
            },
            self.failures,
            self.fingerprints_seen.len()
        )?;
        if self.keepalive_requests > 0 {
            write!(
                f,
                "; {} on reused keep-alive connections, {} reconnects after a server close",
                self.keepalive_requests, self.keepalive_reconnects
            )?;
        }
        for s in &self.failure_samples {
            write!(f, "\n  failure: {s}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Shared {
    requests: AtomicU64,
    failures: AtomicU64,
    keepalive_requests: AtomicU64,
    keepalive_reconnects: AtomicU64,
    stop: AtomicBool,
    detail: Mutex<Detail>,
}

#[derive(Debug, Default)]
struct Detail {
    failure_samples: Vec<String>,
    fingerprints_seen: BTreeMap<String, u64>,
}

impl Shared {
    fn detail(&self) -> std::sync::MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running load; see the module docs. Dropping it without [`Self::stop`] stops it too.
#[derive(Debug)]
pub struct LoadGenerator {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Duration>>,
}

impl LoadGenerator {
    /// [`LoadConfig::new`]`(addr, sni_names, concurrency)` and start.
    pub fn start(
        addr: SocketAddr,
        sni_names: &[String],
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        Self::start_with(LoadConfig::new(addr, sni_names, concurrency))
    }

    /// Start the loops on their own thread.
    pub fn start_with(config: LoadConfig) -> anyhow::Result<Self> {
        ensure!(
            config.addr.ip().is_loopback(),
            "load generator targets loopback only, not {}",
            config.addr
        );
        ensure!(
            config.concurrency + config.keepalive_connections > 0,
            "at least one loop"
        );
        let mut targets: Vec<Option<String>> = config.sni_names.iter().cloned().map(Some).collect();
        if config.include_no_sni || targets.is_empty() {
            targets.push(None);
        }
        for name in targets.iter().flatten() {
            ServerName::try_from(name.as_str()).with_context(|| format!("SNI name {name:?}"))?;
        }
        let tls = Arc::new(client_config()?);
        let shared = Arc::new(Shared::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the load generator's runtime")?;
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("tls-load".into())
                .spawn(move || {
                    let started = Instant::now();
                    let deadline = started + config.max_duration;
                    runtime.block_on(async {
                        let mut tasks = tokio::task::JoinSet::new();
                        for i in 0..config.concurrency {
                            tasks.spawn(request_loop(
                                i,
                                config.clone(),
                                targets.clone(),
                                tls.clone(),
                                shared.clone(),
                                deadline,
                            ));
                        }
                        for i in 0..config.keepalive_connections {
                            tasks.spawn(keepalive_loop(
                                i,
                                config.clone(),
                                targets.clone(),
                                tls.clone(),
                                shared.clone(),
                                deadline,
                            ));
                        }
                        while tasks.join_next().await.is_some() {}
                    });
                    started.elapsed()
                })
                .context("spawning the load generator thread")?
        };
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Requests completed so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Failures so far.
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Has a completed handshake presented the leaf with this SHA-256 fingerprint?
    pub fn has_seen(&self, fingerprint_sha256: &str) -> bool {
        self.shared
            .detail()
            .fingerprints_seen
            .contains_key(fingerprint_sha256)
    }

    /// Stop after the in-flight requests and report.
    pub fn stop(mut self) -> LoadReport {
        self.finish()
    }

    fn finish(&mut self) -> LoadReport {
        self.shared.stop.store(true, Ordering::Relaxed);
        let elapsed = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(elapsed)) => elapsed,
            Some(Err(_)) => {
                let mut d = self.shared.detail();
                d.failure_samples
                    .push("load generator thread panicked".into());
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
                Duration::ZERO
            }
            None => Duration::ZERO,
        };
        let d = self.shared.detail();
        LoadReport {
            requests: self.shared.requests.load(Ordering::Relaxed),
            failures: self.shared.failures.load(Ordering::Relaxed),
            failure_samples: d.failure_samples.clone(),
            fingerprints_seen: d.fingerprints_seen.clone(),
            elapsed,
            keepalive_requests: self.shared.keepalive_requests.load(Ordering::Relaxed),
            keepalive_reconnects: self.shared.keepalive_reconnects.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}

async fn request_loop(
    index: usize,
    config: LoadConfig,
    targets: Vec<Option<String>>,
    tls: Arc<ClientConfig>,
    shared: Arc<Shared>,
    deadline: Instant,
) {
    let connector = TlsConnector::from(tls);
    // Loops start at different names so every name sees traffic from the first round.
    let mut next = index % targets.len();
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let sni = &targets[next];
        next = (next + 1) % targets.len();
        let outcome = tokio::time::timeout(
            config.request_timeout,
            one_request(&connector, config.addr, sni.as_deref()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(RequestError {
                fingerprint: None,
                message: format!("no complete response within {:?}", config.request_timeout),
            })
        });
        let (fingerprint, failure) = match outcome {
            Ok(fp) => (Some(fp), None),
            Err(e) => (e.fingerprint, Some(e.message)),
        };
        {
            let mut d = shared.detail();
            if let Some(fp) = fingerprint {
                *d.fingerprints_seen.entry(fp).or_default() += 1;
            }
            if let Some(message) = failure {
                shared.failures.fetch_add(1, Ordering::Relaxed);
                if d.failure_samples.len() < MAX_FAILURE_SAMPLES {
                    let label = sni.as_deref().unwrap_or("no SNI");
                    d.failure_samples.push(format!("[{label}] {message}"));
                }
            }
        }
        shared.requests.fetch_add(1, Ordering::Relaxed);
    }
}

impl Shared {
    fn record(&self, label: &str, fingerprint: Option<String>, failure: Option<String>) {
        {
            let mut d = self.detail();
            if let Some(fp) = fingerprint {
                *d.fingerprints_seen.entry(fp).or_default() += 1;
            }
            if let Some(message) = failure {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if d.failure_samples.len() < MAX_FAILURE_SAMPLES {
                    d.failure_samples.push(format!("[{label}] {message}"));
                }
            }
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Connect and handshake; the stream and the leaf's fingerprint.
async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: Option<&str>,
) -> Result<(Tls, String), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let server_name = match sni {
        Some(name) => {
            ServerName::try_from(name.to_owned()).map_err(|e| format!("SNI name: {e}"))?
        }
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let fingerprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| hex::encode(sha2::Sha256::digest(der.as_ref())))
        .ok_or_else(|| "no server certificate".to_owned())?;
    Ok((tls, fingerprint))
}

/// How one request on a keep-alive connection ended, short of a 200.
enum KeptAlive {
    /// Closed (or reset) before any byte of the response: the server closed the idle
    /// connection, which a client answers by sending the request again on a new one.
    ClosedBeforeResponse,
    Failed(String),
}

/// One request on an open keep-alive connection; `Ok(keep)` on a complete 200, `keep` false
/// when the server said `Connection: close`.
async fn request_on(stream: &mut Tls, host: &str) -> Result<bool, KeptAlive> {
    let request =
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mountlag-testbed-load\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() || stream.flush().await.is_err() {
        return Err(KeptAlive::ClosedBeforeResponse);
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await;
        let n = match read {
            Ok(n) => n,
            Err(_) if buf.is_empty() => return Err(KeptAlive::ClosedBeforeResponse),
            Err(e) => {
                return Err(KeptAlive::Failed(format!(
                    "read after {} bytes: {e}",
                    buf.len()
                )));
            }
        };
        if n == 0 {
            return Err(if buf.is_empty() {
                KeptAlive::ClosedBeforeResponse
            } else {
                KeptAlive::Failed(format!("closed after {} bytes of a response", buf.len()))
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let Some(length) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        else {
            return Err(KeptAlive::Failed(
                "a keep-alive response without Content-Length".into(),
            ));
        };
        if buf.len() < end + 4 + length {
            continue;
        }
        return match parse_response(&buf) {
            Ok(200) => Ok(!head.contains("connection: close")),
            Ok(status) => Err(KeptAlive::Failed(format!("HTTP status {status}"))),
            Err(why) => Err(KeptAlive::Failed(format!("response: {why}"))),
        };
    }
}

/// One long-lived connection after another: requests on it until the server closes it.
async fn keepalive_loop(
    index: usize,
    config: LoadConfig,
    targets: Vec<Option<String>>,
    tls: Arc<ClientConfig>,
    shared: Arc<Shared>,
    deadline: Instant,
) {
    let connector = TlsConnector::from(tls);
    let sni = targets[index % targets.len()].clone();
    let label = sni.as_deref().unwrap_or("no SNI").to_owned();
    let host = sni.clone().unwrap_or_else(|| config.addr.ip().to_string());
    let mut open: Option<(Tls, String)> = None;
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let reused = open.is_some();
        if open.is_none() {
            let connected = tokio::time::timeout(
                config.request_timeout,
                connect(&connector, config.addr, sni.as_deref()),
            )
            .await
            .unwrap_or_else(|_| Err("connect and handshake timed out".to_owned()));
            match connected {
                Ok(connection) => open = Some(connection),
                Err(message) => {
                    shared.record(&label, None, Some(message));
                    tokio::time::sleep(config.keepalive_pause).await;
                    continue;
                }
            }
        }
        let Some((stream, fingerprint)) = open.as_mut() else {
            continue;
        };
        let fingerprint = fingerprint.clone();
        let outcome = tokio::time::timeout(config.request_timeout, request_on(stream, &host))
            .await
            .unwrap_or_else(|_| {
                Err(KeptAlive::Failed(format!(
                    "no complete response within {:?}",
                    config.request_timeout
                )))
            });
        match outcome {
            Ok(keep) => {
                if reused {
                    shared.keepalive_requests.fetch_add(1, Ordering::Relaxed);
                }
                shared.record(&label, Some(fingerprint), None);
                if !keep {
                    open = None;
                }
            }
            Err(KeptAlive::ClosedBeforeResponse) if reused => {
                shared.keepalive_reconnects.fetch_add(1, Ordering::Relaxed);
                open = None;
                continue;
            }
            Err(KeptAlive::ClosedBeforeResponse) => {
                shared.record(
                    &label,
                    Some(fingerprint),
                    Some("closed before a response on a new connection".into()),
                );
                open = None;
            }
            Err(KeptAlive::Failed(message)) => {
                shared.record(&label, Some(fingerprint), Some(message));
                open = None;
            }
        }
        tokio::time::sleep(config.keepalive_pause).await;
    }
}

struct RequestError {
    fingerprint: Option<String>,
    message: String,
}

impl RequestError {
    fn new(fingerprint: Option<&String>, message: String) -> Self {
        Self {
            fingerprint: fingerprint.cloned(),
            message,
        }
    }
}

/// One connection, one request; returns the leaf fingerprint on a complete 200 response.
async fn one_request(
    connector: &TlsConnector,
    addr: SocketAddr,
    sni: Option<&str>,
) -> Result<String, RequestError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| RequestError::new(None, format!("connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let server_name = match sni {
        Some(name) => ServerName::try_from(name.to_owned())
            .map_err(|e| RequestError::new(None, format!("SNI name: {e}")))?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| RequestError::new(None, format!("handshake: {e}")))?;
    let fingerprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| hex::encode(sha2::Sha256::digest(der.as_ref())))
        .ok_or_else(|| RequestError::new(None, "no server certificate".into()))?;
    let fp = Some(&fingerprint);
    let host = sni.map_or_else(|| addr.ip().to_string(), str::to_owned);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mountlag-testbed-load\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| RequestError::new(fp, format!("write: {e}")))?;
    tls.flush()
        .await
        .map_err(|e| RequestError::new(fp, format!("flush: {e}")))?;
    let mut response = Vec::new();
    let read = tls.read_to_end(&mut response).await;
    match (parse_response(&response), read) {
        (Ok(200), _) => Ok(fingerprint),
        (Ok(status), _) => Err(RequestError::new(fp, format!("HTTP status {status}"))),
        (Err(why), Ok(_)) => Err(RequestError::new(fp, format!("response: {why}"))),
        (Err(why), Err(e)) => Err(RequestError::new(fp, format!("read: {e} ({why})"))),
    }
}

/// The status of a complete HTTP/1.x response (headers + `Content-Length` bytes of body, or a
/// body up to the close when there is no `Content-Length`). A response whose body is complete
/// counts even if the peer then closed without `close_notify`.
fn parse_response(bytes: &[u8]) -> Result<u16, String> {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("incomplete headers ({} bytes)", bytes.len()))?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let content_length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| "bad Content-Length")?;
    let body = bytes.len() - end - 4;
    if let Some(len) = content_length
        && body < len
    {
        return Err(format!("truncated body ({body} of {len} bytes)"));
    }
    Ok(status)
}

fn client_config() -> anyhow::Result<ClientConfig> {
    // Full handshakes only (no resumption): every connection shows the certificate served now.
    mountlag::effects::probe::record_leaf_client_config(true).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_responses() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"),
            Ok(200)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"),
            Ok(503)
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok\n")
                .unwrap_err()
                .contains("truncated")
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn refuses_non_loopback_targets() {
        let err = LoadGenerator::start("192.0.2.1:443".parse().unwrap(), &[], 1).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn counts_refused_connections_as_failures() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let load = LoadGenerator::start_with(LoadConfig {
            max_duration: Duration::from_millis(200),
            ..LoadConfig::new(addr, &["a.example".into()], 2)
        })
        .unwrap();
        let started = std::time::Instant::now();
        while load.requests() == 0 && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let report = load.stop();
        assert!(report.requests > 0);
        assert_eq!(report.requests, report.failures);
        assert!(report.failure_samples.len() <= MAX_FAILURE_SAMPLES);
        assert!(report.failure_samples[0].contains("connect"), "{report}");
        assert!(report.fingerprints_seen.is_empty());
    }
}
