#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

const T: Duration = Duration::from_secs(5);

struct Leaf {
    certified: Arc<CertifiedKey>,
    fingerprint: String,
    not_after: OffsetDateTime,
}

fn leaf(name: &str, alg: &'static rcgen::SignatureAlgorithm) -> Leaf {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let not_after =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::days(7);
    params.not_after = not_after;
    let cert = params.self_signed(&key).unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der).unwrap();
    Leaf {
        fingerprint: hex::encode(Sha256::digest(der.as_ref())),
        certified: Arc::new(CertifiedKey::new(vec![der], signing)),
        not_after,
    }
}

/// Picks the certificate by SNI (unknown or absent SNI → default) and records what SNI came.
#[derive(Debug)]
struct BySni {
    default: Arc<CertifiedKey>,
    names: HashMap<String, Arc<CertifiedKey>>,
    seen: Mutex<Vec<Option<String>>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_owned);
        self.seen.lock().unwrap().push(sni.clone());
        Some(
            sni.and_then(|n| self.names.get(&n).cloned())
                .unwrap_or_else(|| self.default.clone()),
        )
    }
}

/// What the server saw on one connection after the handshake.
#[derive(Debug)]
enum AfterHandshake {
    /// Bytes of application data read before EOF (0 = clean close, nothing sent).
    Eof {
        app_bytes: usize,
    },
    Error(String),
}

struct TlsServer {
    addr: SocketAddr,
    resolver: Arc<BySni>,
    after: mpsc::UnboundedReceiver<AfterHandshake>,
}

async fn tls_server(
    default: &Leaf,
    names: &[(&str, &Leaf)],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsServer {
    let resolver = Arc::new(BySni {
        default: default.certified.clone(),
        names: names
            .iter()
            .map(|(n, l)| ((*n).to_owned(), l.certified.clone()))
            .collect(),
        seen: Mutex::new(Vec::new()),
    });
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, after) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let outcome = match acceptor.accept(tcp).await {
                    Err(e) => AfterHandshake::Error(format!("handshake: {e}")),
                    Ok(mut tls) => {
                        let mut buf = Vec::new();
                        match tokio::time::timeout(T, tls.read_to_end(&mut buf)).await {
                            Ok(Ok(_)) => AfterHandshake::Eof {
                                app_bytes: buf.len(),
                            },
                            Ok(Err(e)) => AfterHandshake::Error(format!("read: {e}")),
                            Err(_) => AfterHandshake::Error("no EOF within 5 s".into()),
                        }
                    }
                };
                let _ = tx.send(outcome);
            });
        }
    });
    TlsServer {
        addr,
        resolver,
        after,
    }
}

#[tokio::test]
async fn captures_the_leaf_per_sni_and_without_sni() {
    let default = leaf("default.example", &rcgen::PKCS_ECDSA_P256_SHA256);
    let a = leaf("a.example", &rcgen::PKCS_ECDSA_P384_SHA384);
    let b = leaf("b.example", &rcgen::PKCS_ED25519);
    let mut server = tls_server(
        &default,
        &[("a.example", &a), ("b.example", &b)],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
    .await;

    let names = vec![
        "a.example".to_owned(),
        "b.example".to_owned(),
        "a.example".to_owned(), // duplicate: probed once
        "unknown.example".to_owned(),
    ];
    let results = probe_all(server.addr, &names, T).await;
    let got: Vec<(Option<String>, String)> = results
        .iter()
        .map(|(t, r)| {
            assert_eq!(t.addr, server.addr);
            (
                t.sni.clone(),
                r.as_ref().unwrap().fingerprint_sha256.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("a.example".into()), a.fingerprint.clone()),
            (Some("b.example".into()), b.fingerprint.clone()),
            (Some("unknown.example".into()), default.fingerprint.clone()),
            (None, default.fingerprint.clone()),
        ]
    );

    // The server saw exactly one handshake without SNI and the names as sent.
    let mut seen = server.resolver.seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            None,
            Some("a.example".into()),
            Some("b.example".into()),
            Some("unknown.example".into()),
        ]
    );

    // Subject and notAfter come from the leaf.
    let (_, first) = &results[0];
    let first = first.as_ref().unwrap();
    assert_eq!(first.subject, "CN=a.example");
    assert_eq!(first.not_after, Some(a.not_after));

    // No application data: every connection ended in a clean EOF right after the handshake.
    for _ in 0..4 {
        match tokio::time::timeout(T, server.after.recv())
            .await
            .unwrap()
            .unwrap()
        {
            AfterHandshake::Eof { app_bytes } => assert_eq!(app_bytes, 0),
            AfterHandshake::Error(e) => panic!("server side: {e}"),
        }
    }
}

#[tokio::test]
async fn works_with_a_tls12_only_server() {
    let default = leaf("default.example", &rcgen::PKCS_ECDSA_P256_SHA256);
    let a = leaf("a.example", &rcgen::PKCS_ECDSA_P256_SHA256);
    let mut server = tls_server(&default, &[("a.example", &a)], &[&rustls::version::TLS12]).await;
    let got = probe(&ProbeTarget::with_sni(server.addr, "a.example"), T)
        .await
        .unwrap();
    assert_eq!(got.fingerprint_sha256, a.fingerprint);
    let got = probe(&ProbeTarget::without_sni(server.addr), T)
        .await
        .unwrap();
    assert_eq!(got.fingerprint_sha256, default.fingerprint);
    for _ in 0..2 {
        assert!(matches!(
            server.after.recv().await.unwrap(),
            AfterHandshake::Eof { app_bytes: 0 }
        ));
    }
}

#[tokio::test]
async fn repeated_probes_do_full_handshakes() {
    // Resumption is off: every probe makes the server pick a certificate again.
    let default = leaf("default.example", &rcgen::PKCS_ECDSA_P256_SHA256);
    let server = tls_server(
        &default,
        &[],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
    .await;
    for _ in 0..3 {
        let got = probe(&ProbeTarget::with_sni(server.addr, "x.example"), T)
            .await
            .unwrap();
        assert_eq!(got.fingerprint_sha256, default.fingerprint);
    }
    assert_eq!(server.resolver.seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn times_out_on_a_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        // Accept and hold the connection without ever answering.
        let (tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(T).await;
        drop(tcp);
    });
    let started = Instant::now();
    let err = probe(
        &ProbeTarget::with_sni(addr, "a.example"),
        Duration::from_millis(200),
    )
    .await
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(
            err,
            ProbeError::Timeout {
                during: ProbeStage::Handshake,
                after,
                ..
            } if after == Duration::from_millis(200)
        ),
        "{err:?}"
    );
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
    held.abort();
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = probe(&ProbeTarget::without_sni(addr), T).await.unwrap_err();
    match &err {
        ProbeError::Connect { addr: a, source } => {
            assert_eq!(*a, addr);
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("{other:?}"),
    }
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn a_plain_http_server_is_a_handshake_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            let _ = tcp.shutdown().await;
        }
    });
    let err = probe(&ProbeTarget::with_sni(addr, "a.example"), T)
        .await
        .unwrap_err();
    match &err {
        ProbeError::Handshake {
            addr: a,
            sni,
            reason,
        } => {
            assert_eq!(*a, addr);
            assert_eq!(sni.as_deref(), Some("a.example"));
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("sni a.example"), "{err}");

    // A server that closes right away is a handshake error too (not a panic, not a hang).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    let err = probe(&ProbeTarget::without_sni(addr), T).await.unwrap_err();
    assert!(
        matches!(err, ProbeError::Handshake { sni: None, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no SNI"), "{err}");
}

#[tokio::test]
async fn invalid_sni_is_rejected_before_connecting() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let err = probe(&ProbeTarget::with_sni(addr, "not a name!"), T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProbeError::InvalidServerName { ref name } if name == "not a name!"),
        "{err:?}"
    );
}

#[test]
fn served_leaf_serializes_camel_case_rfc3339() {
    let l = leaf("a.example", &rcgen::PKCS_ECDSA_P256_SHA256);
    let served = ServedLeaf::from_der(l.certified.cert[0].as_ref());
    assert_eq!(served.fingerprint_sha256, l.fingerprint);
    let json = serde_json::to_value(&served).unwrap();
    let expected = l
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(json["fingerprintSha256"], l.fingerprint.as_str());
    assert_eq!(json["notAfter"], expected.as_str());
    assert_eq!(json["subject"], "CN=a.example");

    // Garbage DER: exact fingerprint, no parsed fields.
    let junk = ServedLeaf::from_der(b"not a certificate");
    assert_eq!(junk.not_after, None);
    assert_eq!(junk.subject, "");
    assert_eq!(
        serde_json::to_value(&junk).unwrap()["notAfter"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn a_server_without_the_leaf_key_fails_the_handshake() {
    // Presents a's certificate but signs with b's key: the handshake signature does not verify
    // against the presented leaf, so the probe must not report a's fingerprint as served.
    let a = leaf("a.example", &rcgen::PKCS_ECDSA_P256_SHA256);
    let b = leaf("b.example", &rcgen::PKCS_ECDSA_P256_SHA256);
    let forged = Leaf {
        certified: Arc::new(CertifiedKey::new(
            a.certified.cert.clone(),
            b.certified.key.clone(),
        )),
        fingerprint: a.fingerprint.clone(),
        not_after: a.not_after,
    };
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let server = tls_server(&forged, &[], &[versions]).await;
        let err = probe(&ProbeTarget::without_sni(server.addr), T)
            .await
            .unwrap_err();
        match err {
            ProbeError::Handshake { reason, .. } => {
                assert!(reason.to_lowercase().contains("signature"), "{reason}")
            }
            other => panic!("{versions:?}: {other:?}"),
        }
    }
}
