//! A minimal HTTP/1.1 client for the agent's own endpoint (plain HTTP, one GET per
//! connection), used by `mountlag status`.

use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

/// Default port when the endpoint URL names none (the agent's `--listen` default).
pub const DEFAULT_PORT: u16 = 9977;
/// Bodies larger than this are refused: a `/status` mount is about 600 bytes, so 1,000 mounts
/// are well under 1 MiB and this leaves room for 25,000; an endpoint that answers more (or
/// endlessly) is not an agent, and reading it must not grow `mountlag status` without bound.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Why a request to the endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {endpoint:?}: {why}")]
    InvalidEndpoint { endpoint: String, why: String },
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from {authority} within {timeout:?}")]
    Timeout {
        authority: String,
        timeout: Duration,
    },
    #[error("HTTP exchange with {authority} failed: {source}")]
    Http {
        authority: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the response from {authority} is larger than {MAX_BODY_BYTES} bytes or was cut off")]
    Body { authority: String },
}

/// An endpoint base URL: `http://host[:port][/prefix]` (the scheme may be left out; the port
/// defaults to 9977).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` (IPv6 hosts in brackets).
    authority: String,
    /// Path prefix without a trailing slash (usually empty).
    prefix: String,
}

impl Endpoint {
    pub fn parse(endpoint: &str) -> Result<Self, ClientError> {
        let invalid = |why: &str| ClientError::InvalidEndpoint {
            endpoint: endpoint.to_string(),
            why: why.to_string(),
        };
        let trimmed = endpoint.trim();
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_string()
        } else {
            format!("http://{trimmed}")
        };
        let uri: Uri = with_scheme
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported: the agent's endpoint is plain HTTP",
                ));
            }
            _ => return Err(invalid("only http:// URLs are supported")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in the URL are not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = authority.port_u16().unwrap_or(DEFAULT_PORT);
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Ok(Self {
            authority: format!("{host}:{port}"),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `GET <prefix><path>`: (status code, body). One connection per request; `timeout`
    /// bounds connecting and the whole exchange.
    pub async fn get(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        tokio::time::timeout(timeout, self.get_inner(path))
            .await
            .map_err(|_| ClientError::Timeout {
                authority: self.authority.clone(),
                timeout,
            })?
    }

    async fn get_inner(&self, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
        let stream = tokio::net::TcpStream::connect(self.authority.as_str())
            .await
            .map_err(|source| ClientError::Connect {
                authority: self.authority.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        get_over(stream, &self.authority, &format!("{}{}", self.prefix, path)).await
    }
}

/// One `GET path` on an open connection to an agent (a TCP stream, or a stream forwarded
/// through the API server); `authority` names it in errors and the `Host` header.
pub async fn get_over<S>(
    stream: S,
    authority: &str,
    path: &str,
) -> Result<(StatusCode, Bytes), ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |source| ClientError::Http {
        authority: authority.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(connection);
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() =
        path.parse().map_err(
            |e: hyper::http::uri::InvalidUri| ClientError::InvalidEndpoint {
                endpoint: path.to_owned(),
                why: e.to_string(),
            },
        )?;
    let headers = request.headers_mut();
    if let Ok(host) = HeaderValue::from_str(authority) {
        headers.insert(header::HOST, host);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("mountlag/", env!("CARGO_PKG_VERSION"))),
    );
    let response = sender.send_request(request).await.map_err(http)?;
    let code = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| ClientError::Body {
            authority: authority.to_owned(),
        })?
        .to_bytes();
    driver.abort();
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn endpoints_are_parsed_with_defaults() {
        let parse = |s: &str| Endpoint::parse(s).unwrap();
        assert_eq!(parse("http://127.0.0.1:9977").authority(), "127.0.0.1:9977");
        assert_eq!(parse("127.0.0.1:1234").authority(), "127.0.0.1:1234");
        assert_eq!(parse("http://node-a").authority(), "node-a:9977");
        assert_eq!(parse("http://[::1]:80/").authority(), "[::1]:80");
        let prefixed = parse("http://10.0.0.1:9977/agent/");
        assert_eq!(prefixed.prefix, "/agent");
        for bad in [
            "https://x:1",
            "ftp://x",
            "http://",
            "http://u:p@x:1",
            "http://a b",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        let https = Endpoint::parse("https://x").unwrap_err().to_string();
        assert!(https.contains("plain HTTP"), "{https}");
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_at_the_cap_promptly() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b' '; 64 << 10];
            while socket.write_all(&chunk).await.is_ok() {
                counter.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        });
        let endpoint = Endpoint::parse(&format!("http://{addr}")).unwrap();
        let patience = Duration::from_secs(60);
        let started = std::time::Instant::now();
        let err = endpoint.get("/status", patience).await.unwrap_err();
        assert!(matches!(err, ClientError::Body { .. }), "{err}");
        assert!(
            err.to_string().contains(&MAX_BODY_BYTES.to_string()),
            "{err}"
        );
        assert!(started.elapsed() < patience / 4, "{:?}", started.elapsed());
        // What the client took in, plus what loopback socket buffers hold.
        assert!(sent.load(Ordering::Relaxed) < MAX_BODY_BYTES + (16 << 20));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let endpoint = Endpoint::parse(&format!("http://{addr}")).unwrap();
        let err = endpoint
            .get("/status", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    }
}
