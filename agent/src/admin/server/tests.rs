//! Tests of [`super`].

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::*;

struct Running {
    addr: SocketAddr,
    status: watch::Sender<Arc<StatusSnapshot>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(limits: Limits, liveness: Liveness) -> Running {
    start_with(limits, liveness, true).await
}

async fn start_with(limits: Limits, liveness: Liveness, serve_status: bool) -> Running {
    let mut registry = Registry::default();
    let counter: Counter = Counter::default();
    registry.register("mountlag_test_things", "Things", counter.clone());
    counter.inc();
    let (status, status_rx) = watch::channel(Arc::new(StatusSnapshot {
        node: "node-a".into(),
        ready: false,
        waiting_for: vec!["pods not listed yet".into()],
        disk: Default::default(),
        mounts: Vec::new(),
        hosts: Vec::new(),
        cert_manager: None,
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = AdminServer::new(Arc::new(registry), status_rx)
        .liveness(liveness)
        .limits(limits)
        .serve_status(serve_status);
    let task = tokio::spawn(server.serve(listener, async {
        let _ = stop_rx.await;
    }));
    Running {
        addr,
        status,
        stop: Some(stop),
        task,
    }
}

/// Sends `raw`, reads until the server closes (or 3 s pass).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

fn code(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_four_endpoints_answer_and_readiness_follows_the_snapshot() {
    let server = start(Limits::default(), Liveness::new()).await;
    let livez = get(server.addr, "/livez").await;
    assert_eq!(code(&livez), 200, "{livez}");
    assert!(livez.ends_with("\r\n\r\nok\n"), "{livez}");
    let readyz = get(server.addr, "/readyz").await;
    assert_eq!(code(&readyz), 503, "{readyz}");
    assert!(
        readyz.contains("not ready: pods not listed yet"),
        "{readyz}"
    );
    server.status.send_modify(|s| {
        let mut next = StatusSnapshot::clone(s);
        next.ready = true;
        next.waiting_for.clear();
        *s = Arc::new(next);
    });
    assert_eq!(code(&get(server.addr, "/readyz").await), 200);
    let status = get(server.addr, "/status").await;
    assert_eq!(code(&status), 200);
    assert!(
        status.contains("content-type: application/json"),
        "{status}"
    );
    let body = status.split_once("\r\n\r\n").unwrap().1;
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["node"], "node-a");
    assert_eq!(json["ready"], true);
    let metrics = get(server.addr, "/metrics").await;
    assert_eq!(code(&metrics), 200);
    assert!(
        metrics.contains("content-type: text/plain; version=0.0.4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mountlag_test_things_total 1\n"),
        "{metrics}"
    );
    super::super::mark_unready(&server.status, "shutting down");
    let readyz = get(server.addr, "/readyz").await;
    assert_eq!(code(&readyz), 503);
    assert!(readyz.contains("not ready: shutting down"), "{readyz}");
}

#[tokio::test]
async fn head_404_405_and_bodies_are_handled_strictly() {
    let server = start(Limits::default(), Liveness::new()).await;
    let head = exchange(
        server.addr,
        b"HEAD /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code(&head), 200, "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    let missing = get(server.addr, "/nope").await;
    assert_eq!(code(&missing), 404, "{missing}");
    assert_eq!(code(&get(server.addr, "/livez/extra").await), 404);
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"] {
        let response = exchange(
            server.addr,
            format!("{method} /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(code(&response), 405, "{method}: {response}");
        assert!(response.contains("allow: GET, HEAD\r\n"), "{response}");
        assert!(response.contains("connection: close\r\n"), "{response}");
    }
    let with_body = exchange(
        server.addr,
        b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(code(&with_body), 413, "{with_body}");
    // A body announced but never sent does not hold the answer back.
    let started = Instant::now();
    let hanging = exchange(
        server.addr,
        b"GET /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    assert_eq!(code(&hanging), 413, "{hanging}");
    // Well before the 10 s request timeout: the answer did not wait for the body.
    assert!(started.elapsed() < Duration::from_secs(4));
    // Query strings and absolute-form targets name the same paths.
    assert_eq!(code(&get(server.addr, "/livez?verbose=1").await), 200);
    assert_eq!(code(&get(server.addr, "http://x/livez").await), 200);
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused_and_the_server_stays_up() {
    let server = start(Limits::default(), Liveness::new()).await;
    let cases: [(&str, Vec<u8>); 6] = [
        (
            "garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
        ),
        ("no version", b"GET /livez\r\n\r\n".to_vec()),
        (
            "bad header",
            b"GET /livez HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
        ),
        (
            "http/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
        (
            "huge header",
            format!(
                "GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(64 * 1024)
            )
            .into_bytes(),
        ),
        (
            "many headers",
            format!(
                "GET /livez HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..200)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
        ),
    ];
    for (what, raw) in cases {
        let response = exchange(server.addr, &raw).await;
        let status = code(&response);
        assert!(
            status == 0 || (400..500).contains(&status),
            "{what}: {response}"
        );
        assert_eq!(code(&get(server.addr, "/livez").await), 200, "after {what}");
    }
    let huge_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let response = exchange(server.addr, huge_uri.as_bytes()).await;
    assert!(matches!(code(&response), 0 | 400..=499), "{response}");
    assert_eq!(code(&get(server.addr, "/livez").await), 200);
    assert!(!server.task.is_finished());
}

#[tokio::test]
async fn a_slowloris_client_blocks_nobody_and_is_cut_off_by_the_header_timeout() {
    // The shipped limit, not one made up for the test.
    let header_timeout = Limits::default().header_read_timeout;
    let margin = Duration::from_millis(1500);
    let server = start(Limits::default(), Liveness::new()).await;
    let slow = TcpStream::connect(server.addr).await.unwrap();
    let connected = Instant::now();
    let (mut from_server, mut to_server) = slow.into_split();
    to_server
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let livez = get(server.addr, "/livez").await;
    assert_eq!(code(&livez), 200);
    // Answered well before the slow client's header timeout, so not after it.
    assert!(
        connected.elapsed() < header_timeout / 2,
        "{:?}",
        connected.elapsed()
    );
    // One more header byte every 100 ms, for as long as the server takes them: a deadline that
    // restarted with every byte would never pass.
    let dribbler = tokio::spawn(async move {
        let mut sent = 0usize;
        while to_server.write_all(b"a").await.is_ok() {
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    });
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(header_timeout + margin, from_server.read_to_end(&mut rest)).await;
    let elapsed = connected.elapsed();
    assert!(
        closed.is_ok(),
        "still open {elapsed:?} after the connection started, header timeout {header_timeout:?}"
    );
    // Closed by the header timeout, not earlier for some other reason.
    assert!(
        elapsed >= header_timeout - Duration::from_millis(100),
        "closed after {elapsed:?}, before the header timeout {header_timeout:?}"
    );
    assert!(rest.is_empty() || code(&String::from_utf8_lossy(&rest)) != 200);
    let sent = tokio::time::timeout(Duration::from_secs(10), dribbler)
        .await
        .expect("the server's close stops the dribbling")
        .unwrap();
    assert!(
        sent >= 10,
        "the client kept sending until the server closed: {sent} bytes"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start(limits, Liveness::new()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert_eq!(code(&String::from_utf8_lossy(&buf[..n])), 200);
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "idle keep-alive connection still open");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

/// A connection from `source` that sends an incomplete request head and holds it.
async fn held_from(addr: SocketAddr, source: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(b"GET /livez HTTP/1.1\r\n").await.unwrap();
    stream
}

/// Whether the server closed `stream` within `within`.
async fn closed(stream: &mut TcpStream, within: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

#[tokio::test]
async fn a_peer_at_its_limit_makes_room_by_losing_its_own_longest_idle_connection() {
    let limits = Limits {
        max_connections_per_peer: 2,
        ..Limits::default()
    };
    let server = start(limits, Liveness::new()).await;
    // Accepted in connect order (one accept queue): the first is the longest idle.
    let mut oldest = held_from(server.addr, [127, 0, 0, 1]).await;
    let mut newer = held_from(server.addr, [127, 0, 0, 1]).await;
    let mut other = held_from(server.addr, [127, 0, 0, 2]).await;
    let started = Instant::now();
    let livez = get(server.addr, "/livez").await;
    assert_eq!(code(&livez), 200, "{livez}");
    // Well before the 5 s header timeout that would otherwise free a slot.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        closed(&mut oldest, Duration::from_secs(3)).await,
        "oldest closed"
    );
    assert!(!closed(&mut newer, Duration::from_millis(200)).await);
    assert!(
        !closed(&mut other, Duration::from_millis(200)).await,
        "another peer's connection is never closed for this one"
    );
}

#[tokio::test]
async fn a_full_server_makes_room_by_closing_an_idle_connection_of_the_peer_holding_most() {
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let server = start(limits, Liveness::new()).await;
    let mut single = held_from(server.addr, [127, 0, 0, 2]).await;
    let mut first_of_two = held_from(server.addr, [127, 0, 0, 3]).await;
    let mut second_of_two = held_from(server.addr, [127, 0, 0, 3]).await;
    let started = Instant::now();
    let livez = get(server.addr, "/livez").await;
    assert_eq!(code(&livez), 200, "{livez}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(closed(&mut first_of_two, Duration::from_secs(3)).await);
    assert!(!closed(&mut second_of_two, Duration::from_millis(200)).await);
    assert!(
        !closed(&mut single, Duration::from_millis(200)).await,
        "the older connection of a peer holding one stays"
    );
}

#[tokio::test]
async fn without_serve_status_status_is_not_found_and_the_rest_is_served() {
    let server = start_with(Limits::default(), Liveness::new(), false).await;
    let status = get(server.addr, "/status").await;
    assert_eq!(code(&status), 404, "{status}");
    assert!(status.contains("--status-listen"), "{status}");
    assert!(!status.contains("node-a"), "no status content: {status}");
    let head = exchange(
        server.addr,
        b"HEAD /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code(&head), 404, "{head}");
    let index = get(server.addr, "/").await;
    assert!(
        index.ends_with("mountlag agent: /livez /readyz /metrics\n"),
        "{index}"
    );
    assert_eq!(code(&get(server.addr, "/livez").await), 200);
    assert_eq!(code(&get(server.addr, "/readyz").await), 503);
    assert_eq!(code(&get(server.addr, "/metrics").await), 200);
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_drains_within_the_timeout() {
    let limits = Limits {
        drain_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut server = start(limits, Liveness::new()).await;
    // One idle keep-alive connection and one stuck mid-header.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let _ = idle.read(&mut buf).await.unwrap();
    let mut stuck = TcpStream::connect(server.addr).await.unwrap();
    stuck.write_all(b"GET /livez HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let _ = server.stop.take().unwrap().send(());
    let result = tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("serve returns after draining")
        .unwrap();
    assert!(result.is_ok());
    // The stuck connection was cut at the drain timeout, not at its header timeout (5 s).
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "listener closed"
    );
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(eof.is_ok(), "idle connection closed");
}

#[tokio::test]
async fn livez_names_a_stalled_loop() {
    let liveness = Liveness::new();
    let _wedged = liveness.register("reconcile", Duration::from_secs(1));
    let server = start(Limits::default(), liveness).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let first = get(server.addr, "/livez").await;
    assert_eq!(code(&first), 200, "benefit of the doubt: {first}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = get(server.addr, "/livez").await;
    assert_eq!(code(&second), 503, "{second}");
    assert!(
        second.contains("stalled: reconcile (no sign of life"),
        "{second}"
    );
}
