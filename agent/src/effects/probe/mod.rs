//! Served-certificate probe: one TLS handshake to a controller, recording the leaf it presents.
//!
//! This is the third view of a Secret (design.md, "Served"): a signal returns no status, so a
//! reload only counts once a handshake shows the new leaf. [`probe`] does exactly one handshake
//! per call; [`probe_all`] covers every SNI name of the expected certificate plus the no-SNI
//! default, concurrently.
//!
//! What a probe does, and why:
//!
//! - **Records, never trusts.** The client accepts any certificate chain (no CA, no name or
//!   expiry check): the question is *which* leaf is served, not whether a browser would like it
//!   (a test CA, an expired leaf or a name mismatch must still be reported as what it is). The
//!   leaf is read from the finished connection (`peer_certificates()[0]`), which is the
//!   end-entity certificate the server sent in this handshake.
//! - **A real handshake.** The server's handshake signature (TLS 1.2 `ServerKeyExchange`,
//!   TLS 1.3 `CertificateVerify`) is still verified against the presented leaf's public key with
//!   the ring provider's algorithms, so a server that does not hold the key of the certificate
//!   it presents fails the probe ([`ProbeError::Handshake`]).
//! - **Fresh every time.** Session resumption is disabled: a resumed TLS 1.3 session carries no
//!   `Certificate` message, and the point is to see what the server presents *now*.
//! - **Quiet.** No application data is sent; after the handshake the client sends `close_notify`
//!   and closes. Controllers log at most a closed connection.
//! - **Explicit crypto.** The ring provider is passed to the config builder; no process-wide
//!   default provider is installed (other parts of the process may install their own).
//! - **Bounded.** One timeout covers connect + handshake; the closing `close_notify` is best
//!   effort and bounded by the same amount again.
//!
//! SNI: [`ProbeTarget::sni`] `None` sends no `server_name` extension at all (the server's default
//! certificate). A name that is an IP address literal is also sent without SNI (RFC 6066 forbids
//! IP literals in SNI), so it probes the default certificate too.
//!
//! Limits inherited from ring: a leaf whose key is P-521, Ed448 or DSA cannot be verified and
//! fails as a handshake error (the reload gate in [`crate::cert`] refuses such material anyway).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[cfg(test)]
mod tests;

/// Where to probe: an address and the SNI name to send.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeTarget {
    /// The controller's listening address (pod IP and port).
    pub addr: SocketAddr,
    /// `server_name` to send; `None` = no SNI (the server's default certificate).
    pub sni: Option<String>,
}

impl ProbeTarget {
    /// A handshake to `addr` sending `sni` as the server name.
    pub fn with_sni(addr: SocketAddr, sni: impl Into<String>) -> Self {
        Self {
            addr,
            sni: Some(sni.into()),
        }
    }

    /// A handshake to `addr` without SNI.
    pub fn without_sni(addr: SocketAddr) -> Self {
        Self { addr, sni: None }
    }
}

impl fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, SniLabel(&self.sni))
    }
}

/// `sni a.example` or `no SNI`, for messages.
struct SniLabel<'a>(&'a Option<String>);

impl fmt::Display for SniLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, "sni {name}"),
            None => f.write_str("no SNI"),
        }
    }
}

/// The leaf certificate a server presented in one handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServedLeaf {
    /// Lowercase hex SHA-256 of the leaf DER (compare with
    /// [`crate::cert::CertificateSummary::fingerprint_sha256`]).
    pub fingerprint_sha256: String,
    /// notAfter of the leaf; `None` when the DER does not parse as X.509 (the fingerprint is
    /// still exact: it is over the bytes the server sent).
    #[serde(serialize_with = "serialize_opt_rfc3339")]
    pub not_after: Option<OffsetDateTime>,
    /// Subject as x509-parser prints it (`CN=a.example`); empty when the DER does not parse.
    pub subject: String,
}

impl ServedLeaf {
    /// Summarise a leaf certificate DER.
    pub fn from_der(der: &[u8]) -> Self {
        let fingerprint_sha256 = hex::encode(Sha256::digest(der));
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => Self {
                fingerprint_sha256,
                not_after: Some(cert.validity().not_after.to_datetime()),
                subject: cert.subject().to_string(),
            },
            Err(_) => Self {
                fingerprint_sha256,
                not_after: None,
                subject: String::new(),
            },
        }
    }
}

fn serialize_opt_rfc3339<S: serde::Serializer>(
    t: &Option<OffsetDateTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    match t {
        Some(t) => {
            let text = t
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(S::Error::custom)?;
            s.serialize_str(&text)
        }
        None => s.serialize_none(),
    }
}

/// The step a probe was in when its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeStage {
    /// TCP connect.
    Connect,
    /// TLS handshake (after the TCP connection was established).
    Handshake,
}

impl fmt::Display for ProbeStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeStage::Connect => "TCP connect",
            ProbeStage::Handshake => "TLS handshake",
        })
    }
}

/// Why a probe saw no leaf.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The SNI name is not a valid DNS name (nor an IP address literal).
    // The name is a DNS SAN of the certificate on disk: shown escaped and cut.
    #[error("invalid SNI name \"{}\"", crate::text::untrusted(name))]
    InvalidServerName {
        /// The rejected name.
        name: String,
    },

    /// TCP connect failed (refused, unreachable, ...).
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        /// Target address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },

    /// Connect + handshake did not finish in time.
    #[error("probe of {addr} timed out after {after:?} during the {during}")]
    Timeout {
        /// Target address.
        addr: SocketAddr,
        /// The timeout that ran out.
        after: Duration,
        /// What was still going on.
        during: ProbeStage,
    },

    /// The TLS handshake failed: not a TLS server, an alert (e.g. no certificate for this name),
    /// a bad handshake signature, a reset.
    #[error("TLS handshake with {addr} ({}) failed: {reason}", SniLabel(.sni))]
    Handshake {
        /// Target address.
        addr: SocketAddr,
        /// The SNI name sent, if any.
        sni: Option<String>,
        /// rustls' or the socket's error, as text.
        reason: String,
    },

    /// The rustls client configuration could not be built (a build problem, not a server one).
    #[error("TLS client configuration: {reason}")]
    Config {
        /// rustls' error, as text.
        reason: String,
    },

    /// The handshake completed without a server certificate (cannot happen with the
    /// certificate-based cipher suites offered here; kept so it is never a panic).
    #[error("{addr} presented no certificate")]
    NoCertificate {
        /// Target address.
        addr: SocketAddr,
    },
}

/// One TLS handshake to `target.addr` (SNI `target.sni`); returns the leaf the server presented.
///
/// The certificate is recorded, not trusted (see the module docs); no application data is sent;
/// the connection is closed with `close_notify`. `timeout` bounds connect + handshake.
pub async fn probe(target: &ProbeTarget, timeout: Duration) -> Result<ServedLeaf, ProbeError> {
    let addr = target.addr;
    let (config, server_name) = match &target.sni {
        Some(name) => {
            let server_name = ServerName::try_from(name.clone())
                .map_err(|_| ProbeError::InvalidServerName { name: name.clone() })?;
            (client_config(true)?, server_name)
        }
        // No SNI: the name only has to be syntactically acceptable; an IP address never
        // produces a server_name extension, and SNI is switched off in this config as well.
        None => (
            client_config(false)?,
            ServerName::IpAddress(addr.ip().into()),
        ),
    };
    let connector = TlsConnector::from(config);

    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(ProbeError::Timeout {
                addr,
                after: timeout,
                during: ProbeStage::Connect,
            });
        }
        Ok(Err(source)) => return Err(ProbeError::Connect { addr, source }),
        Ok(Ok(tcp)) => tcp,
    };
    // Best effort; the handshake is a few small flights either way.
    let _ = tcp.set_nodelay(true);

    let mut tls = match tokio::time::timeout_at(deadline, connector.connect(server_name, tcp)).await
    {
        Err(_) => {
            return Err(ProbeError::Timeout {
                addr,
                after: timeout,
                during: ProbeStage::Handshake,
            });
        }
        Ok(Err(e)) => {
            return Err(ProbeError::Handshake {
                addr,
                sni: target.sni.clone(),
                reason: handshake_reason(&e),
            });
        }
        Ok(Ok(tls)) => tls,
    };

    let leaf = {
        let (_, conn) = tls.get_ref();
        conn.peer_certificates()
            .and_then(|certs| certs.first())
            .map(|der| ServedLeaf::from_der(der))
    };

    // close_notify + FIN; no application data was written. Best effort, bounded.
    let _ = tokio::time::timeout(timeout, tls.shutdown()).await;
    drop(tls);

    let leaf = leaf.ok_or(ProbeError::NoCertificate { addr })?;
    tracing::debug!(
        probe = %target,
        fingerprint = %leaf.fingerprint_sha256,
        elapsed_us = started.elapsed().as_micros() as u64,
        "probe: served leaf"
    );
    Ok(leaf)
}

/// Probe every name in `names` plus one handshake without SNI, concurrently.
///
/// Results come back in order: one per distinct name (duplicates are probed once, first
/// occurrence wins the position), then the no-SNI target last.
pub async fn probe_all(
    addr: SocketAddr,
    names: &[String],
    timeout: Duration,
) -> Vec<(ProbeTarget, Result<ServedLeaf, ProbeError>)> {
    let mut targets: Vec<ProbeTarget> = Vec::with_capacity(names.len() + 1);
    for name in names {
        if !targets.iter().any(|t| t.sni.as_deref() == Some(name)) {
            targets.push(ProbeTarget::with_sni(addr, name.clone()));
        }
    }
    targets.push(ProbeTarget::without_sni(addr));
    let results: Vec<_> = futures::stream::iter(targets.clone())
        .map(move |target| async move { probe(&target, timeout).await })
        .buffered(PROBE_CONCURRENCY)
        .collect()
        .await;
    targets.into_iter().zip(results).collect()
}

/// Handshakes of one round in flight at once: a pod serving a thousand hosts is probed a few
/// dozen at a time, not with a thousand connections at once.
pub const PROBE_CONCURRENCY: usize = 32;

/// The text of a handshake error: rustls' error when there is one (e.g. `received fatal alert:
/// HandshakeFailure`, `InvalidContentType`), else the socket error.
fn handshake_reason(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls.to_string(),
        None => format!("{e} ({:?})", e.kind()),
    }
}

/// The two client configs (with and without SNI), built once each.
fn client_config(sni: bool) -> Result<Arc<ClientConfig>, ProbeError> {
    static WITH_SNI: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    static WITHOUT_SNI: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    let cell = if sni { &WITH_SNI } else { &WITHOUT_SNI };
    cell.get_or_init(|| record_leaf_client_config(sni).map(Arc::new))
        .clone()
        .map_err(|reason| ProbeError::Config { reason })
}

/// A client config that accepts any certificate chain and still verifies the handshake
/// signature against the presented leaf (see the module docs), with TLS 1.2 and 1.3, the ring
/// provider and no session resumption. `sni: false` sends no `server_name` at all. Shared with
/// the testbed's TLS load generator, so both see what the server presents the same way.
pub fn record_leaf_client_config(sni: bool) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(RecordOnlyVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS 1.2/1.3 with the ring provider: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.enable_sni = sni;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Accepts any certificate chain (recording happens on the finished connection) but verifies
/// the handshake signatures with the provider's algorithms, so the server must hold the key of
/// the leaf it presents.
#[derive(Debug)]
struct RecordOnlyVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for RecordOnlyVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
