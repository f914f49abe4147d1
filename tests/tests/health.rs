//! The node-local health endpoint of the real `mountlag agent`, end to end: readiness across
//! an API outage and SIGTERM, liveness with a wedged loop, `promtool check metrics` on a live
//! scrape, `/status` against `mountlag status`, hostile HTTP clients, and no key bytes in any
//! output.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mountlag_testbed::cluster::{
    AgentLaunch, KeyRing, NAMESPACE, NODE, TestNode, agent_config, free_port, http_get,
    ingress_pod, mount_of,
};
use mountlag_testbed::kubelet::VolumeKind;
use mountlag_testbed::node::{NodeConfig, PodRef};
use mountlag_testbed::real;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn can_run() -> bool {
    real::require("root + tmpfs", real::can_mount())
}

/// kubelet's real 60–90 s sync period: only nudges (or the initial mount) write volumes.
fn slow_kubelet() -> NodeConfig {
    NodeConfig::new(NODE)
}

fn state_of(status: &Value, pod: &str) -> String {
    mount_of(status, pod)
        .and_then(|m| m["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

fn endpoint(node: &TestNode) -> String {
    format!("http://{}", node.agent.as_ref().unwrap().listen)
}

/// `mountlag status ARGS...`: (exit code, stdout, stderr).
fn mountlag_status(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(mountlag_testbed::agent::binary())
        .arg("status")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A node whose agent tracks four mounts in four states: `edge-ok` in_sync, `edge-stuck`
/// stuck (kubelet ignores it), `edge-missing` secret_missing (its Secret was deleted),
/// `edge-sub` never_updates (subPath only, its Secret rotated).
async fn node_with_mounts_in_several_states(keys: &mut KeyRing) -> TestNode {
    let mut node = TestNode::start(slow_kubelet(), &agent_config("1s", "2s", true))
        .await
        .unwrap();
    let pods = [
        ("edge-ok", "edge-tls", None),
        ("edge-stuck", "stuck-tls", None),
        ("edge-missing", "gone-tls", None),
        ("edge-sub", "sub-tls", Some("tls.crt")),
    ];
    for (pod, secret, sub_path) in pods {
        node.api.apply_secret(&keys.secret(secret)).unwrap();
        node.api
            .create_pod(&ingress_pod(pod, &[("app", "edge")], secret, sub_path))
            .unwrap();
    }
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(15)).await.unwrap();
    node.wait_status(Duration::from_secs(15), "every mount in sync", |s| {
        pods.iter().all(|(pod, _, _)| state_of(s, pod) == "in_sync")
    })
    .await
    .unwrap();
    node.node
        .set_stuck(PodRef::name(NAMESPACE, "edge-stuck"), true);
    node.api.apply_secret(&keys.secret("stuck-tls")).unwrap();
    node.api.apply_secret(&keys.secret("sub-tls")).unwrap();
    node.api.delete_secret(NAMESPACE, "gone-tls").unwrap();
    node.wait_status(Duration::from_secs(15), "four states", |s| {
        state_of(s, "edge-ok") == "in_sync"
            && state_of(s, "edge-stuck") == "stuck"
            && state_of(s, "edge-missing") == "secret_missing"
            && state_of(s, "edge-sub") == "never_updates"
    })
    .await
    .unwrap();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_goes_unready_ready_and_unready_on_sigterm_then_the_agent_exits_0() {
    if !can_run() {
        return;
    }
    let mut keys = KeyRing::new("health test CA").unwrap();
    let mut node = TestNode::start(slow_kubelet(), &agent_config("2s", "30s", true))
        .await
        .unwrap();
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();
    // The API is away when the agent starts: the pods cannot be listed.
    node.api.stop().await;
    node.start_agent().unwrap();
    let started = Instant::now();
    let body = loop {
        match node.get("/readyz").await {
            Ok((code, body)) => {
                assert_eq!(code, 503, "unready before the pods are listed: {body}");
                break body;
            }
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("the endpoint never came up: {err}\n{}", node.agent_log()),
        }
    };
    assert!(body.contains("pods not listed yet"), "{body}");
    let (code, body) = node.get("/livez").await.unwrap();
    assert_eq!(code, 200, "alive while the API is away: {body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(node.get("/readyz").await.unwrap().0, 503);

    node.api.restart().await.unwrap();
    node.wait_ready(Duration::from_secs(40)).await.unwrap();
    assert_eq!(node.get("/readyz").await.unwrap(), (200, "ready\n".into()));

    // SIGTERM (agent.rs): the agent marks itself unready ("shutting down"), keeps the listener
    // open for 200 ms so probes see the 503, then closes the listener and lets every request in
    // progress finish (drain) before it exits 0.
    let pid =
        nix::unistd::Pid::from_raw(i32::try_from(node.agent.as_ref().unwrap().pid()).unwrap());
    let addr = node.agent.as_ref().unwrap().listen;
    // A request in progress across the shutdown: its head is half sent now and completed once
    // the listener is gone, so the agent answers it while it drains, necessarily after it
    // marked itself unready.
    let mut in_flight = TcpStream::connect(addr).await.unwrap();
    in_flight
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let signalled = Instant::now();
    // Polled until the listener is gone ("connection refused"). A connection caught by the
    // closing listener (still in its backlog, or accepted but not yet read) is closed without
    // an answer; that may happen only right before the refusals start. A timeout or a garbled
    // answer is a failure, never the end of the window.
    let mut seen: Vec<(u16, String)> = Vec::new();
    let mut closed_unanswered: Option<String> = None;
    loop {
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "the listener still answers 10 s after SIGTERM: {seen:?}"
        );
        match readyz_after_sigterm(addr).await {
            Probe::Answered(code, body) => {
                if seen.last().map(|(c, _)| *c) != Some(code) {
                    seen.push((code, body));
                }
            }
            Probe::Refused => break,
            Probe::Closed(how) => closed_unanswered = Some(how),
            Probe::Failed(failure) => panic!(
                "/readyz after SIGTERM: {failure}; answers so far {seen:?}\n{}",
                node.agent_log()
            ),
        }
        if let Some(how) = &closed_unanswered {
            // The listener was closing: the very next connection is refused.
            match readyz_after_sigterm(addr).await {
                Probe::Refused => break,
                Probe::Answered(code, body) => panic!(
                    "/readyz after SIGTERM: {code} {body:?} after a connection closed \
                     unanswered ({how}); answers so far {seen:?}"
                ),
                Probe::Closed(failure) | Probe::Failed(failure) => panic!(
                    "/readyz after SIGTERM: {failure} after a connection closed unanswered \
                     ({how}); answers so far {seen:?}\n{}",
                    node.agent_log()
                ),
            }
        }
    }
    eprintln!("/readyz after SIGTERM: {seen:?} then connection refused");
    assert!(
        seen.iter().all(|(code, _)| *code == 200 || *code == 503),
        "{seen:?}"
    );
    assert!(
        !seen.windows(2).any(|w| w[0].0 == 503 && w[1].0 == 200),
        "ready again after unready: {seen:?}"
    );
    for (code, body) in &seen {
        if *code == 503 {
            assert_eq!(body, "not ready: shutting down\n", "{seen:?}");
        }
    }
    // The listener is closed: the request in progress is answered while the agent drains.
    in_flight
        .write_all(b"Connection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), in_flight.read_to_end(&mut raw))
        .await
        .expect("the request in progress is answered within 10 s")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(
        raw.starts_with("HTTP/1.1 503 "),
        "/readyz while draining after SIGTERM: {raw:?}\n{}",
        node.agent_log()
    );
    assert!(
        raw.ends_with("\r\n\r\nnot ready: shutting down\n"),
        "/readyz while draining after SIGTERM: {raw:?}"
    );
    let status = node.stop_agent().unwrap();
    assert_eq!(status.code(), Some(0), "{}", node.all_agent_logs());
    keys.assert_not_in("agent log", &node.all_agent_logs());
}

/// What one `/readyz` after SIGTERM got.
#[derive(Debug)]
enum Probe {
    Answered(u16, String),
    /// The listener is closed.
    Refused,
    /// Reset, or closed without a byte of answer: the connection met the closing listener.
    Closed(String),
    /// Anything else: a timeout, an answer that is not HTTP.
    Failed(String),
}

/// One GET with a 2 s timeout.
async fn readyz_after_sigterm(addr: SocketAddr) -> Probe {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset};
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(err) if err.kind() == ConnectionRefused => return Probe::Refused,
        Err(err) if err.kind() == ConnectionReset => {
            return Probe::Closed(format!("connect: {err}"));
        }
        Err(err) => return Probe::Failed(format!("connect: {err}")),
    };
    let request = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if let Err(err) = stream.write_all(request.as_bytes()).await {
        return match err.kind() {
            ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                Probe::Closed(format!("write: {err}"))
            }
            _ => Probe::Failed(format!("write: {err}")),
        };
    }
    let mut raw = Vec::new();
    match tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut raw)).await {
        Err(_) => return Probe::Failed("no answer within 2 s".into()),
        Ok(Err(err)) if err.kind() == ConnectionReset && raw.is_empty() => {
            return Probe::Closed(format!("read: {err}"));
        }
        Ok(Err(err)) => return Probe::Failed(format!("read: {err}")),
        Ok(Ok(_)) if raw.is_empty() => return Probe::Closed("no answer, closed".into()),
        Ok(Ok(_)) => {}
    }
    let raw = String::from_utf8_lossy(&raw);
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return Probe::Failed(format!("not an HTTP answer: {raw:?}"));
    };
    match head.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
        Some(code) => Probe::Answered(code, body.to_string()),
        None => Probe::Failed(format!("no status code: {raw:?}")),
    }
}

/// The agent started by hand, with extra arguments and environment (e.g. the test-only
/// liveness hook).
struct HookedAgent {
    child: Child,
    listen: SocketAddr,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl HookedAgent {
    fn start(node: &TestNode, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mountlag.yaml");
        std::fs::write(&config, agent_config("2s", "30s", true)).unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
            .parse()
            .unwrap();
        let log = dir.path().join("agent.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(mountlag_testbed::agent::binary())
            .args([
                "agent",
                "--node-name",
                NODE,
                "--listen",
                &listen.to_string(),
            ])
            .arg("--config")
            .arg(&config)
            .arg("--kubelet-root")
            .arg(node.kubelet.root())
            .args(args)
            .env("KUBECONFIG", node.api.kubeconfig_path())
            .env("RUST_LOG", "info,mountlag=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self {
            child,
            listen,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HookedAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_fails_naming_the_loop_that_is_wedged() {
    if !can_run() {
        return;
    }
    let mut keys = KeyRing::new("health test CA").unwrap();
    let node = TestNode::start(slow_kubelet(), &agent_config("2s", "30s", true))
        .await
        .unwrap();
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();

    // Without the hook the same agent stays alive past the (shortened) stall threshold. (3 s,
    // not the wedged agent's 1 s: on a loaded machine a healthy loop may answer a ping late.)
    let healthy = HookedAgent::start(&node, &[], &[("MOUNTLAG_TEST_STALL_AFTER", "3s")]);
    wait_code(
        healthy.listen,
        "/readyz",
        200,
        Duration::from_secs(15),
        &healthy,
    )
    .await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (code, body) = http_get(healthy.listen, "/livez").await.unwrap();
        assert_eq!(code, 200, "an idle agent is alive: {body}");
    }
    let loops = http_get(healthy.listen, "/livez").await.unwrap().1;
    assert!(
        loops.contains("reconcile"),
        "the loop is registered: {loops}"
    );
    drop(healthy);

    let wedged = HookedAgent::start(
        &node,
        &[],
        &[
            ("MOUNTLAG_TEST_STALL", "reconcile"),
            ("MOUNTLAG_TEST_STALL_AFTER", "1s"),
        ],
    );
    let body = wait_code(
        wedged.listen,
        "/livez",
        503,
        Duration::from_secs(15),
        &wedged,
    )
    .await;
    assert!(body.starts_with("stalled: reconcile"), "{body}");
    assert!(
        wedged.log().contains("liveness test hook active"),
        "{}",
        wedged.log()
    );
    keys.assert_not_in("/livez", &body);
}

async fn wait_code(
    addr: SocketAddr,
    path: &str,
    want: u16,
    timeout: Duration,
    agent: &HookedAgent,
) -> String {
    let started = Instant::now();
    loop {
        if let Ok((code, body)) = http_get(addr, path).await
            && code == want
        {
            return body;
        }
        assert!(
            started.elapsed() < timeout,
            "{path} never answered {want} within {timeout:?}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_live_scrape_with_mounts_in_several_states() {
    if !can_run() || !real::require("promtool (Debian package prometheus)", real::promtool()) {
        return;
    }
    let mut keys = KeyRing::new("health test CA").unwrap();
    let node = node_with_mounts_in_several_states(&mut keys).await;
    let (code, metrics) = node.get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    if let Err(findings) = real::promtool_check_metrics(&metrics) {
        panic!("{findings}");
    }
    for (state, count) in [
        ("in_sync", 1.0),
        ("stuck", 1.0),
        ("secret_missing", 1.0),
        ("never_updates", 1.0),
        ("pending", 0.0),
    ] {
        let sample = format!("mountlag_mounts{{state=\"{state}\"}}");
        assert_eq!(
            mountlag_testbed::cluster::metric_value(&metrics, &sample),
            Some(count),
            "{sample}\n{metrics}"
        );
    }
    for name in [
        "mountlag_build_info{version=",
        "mountlag_mount_lag_seconds_bucket{",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let rss =
        mountlag_testbed::cluster::metric_value(&metrics, "process_resident_memory_bytes").unwrap();
    assert!(rss > 1e6, "RSS {rss}");
    // The gauges the shipped alerts read that no Event has to create first.
    let value = |sample: &str| mountlag_testbed::cluster::metric_value(&metrics, sample);
    assert_eq!(value("mountlag_ready"), Some(1.0), "{metrics}");
    assert!(
        value("mountlag_inotify_max_user_watches").is_some_and(|v| v > 0.0),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mountlag_controller_pods{") && l.contains("origin=\"config\"")),
        "{metrics}"
    );
    // The in-sync mount's leaf, as the API and the disk hold it: the same certificate, valid.
    let not_after = |source: &str| {
        value(&format!(
            "mountlag_certificate_not_after_timestamp_seconds{{namespace=\"{NAMESPACE}\",secret=\"edge-tls\",source=\"{source}\"}}"
        ))
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(not_after("api").is_some_and(|t| t > now), "{metrics}");
    assert_eq!(not_after("api"), not_after("disk"), "{metrics}");
    // Every metric the shipped alert rules use is one this agent exports: described in this
    // scrape, or — families whose series only an event creates (reloads, API errors) —
    // registered under that name in the agent's source.
    let registered = mountlag_testbed::repo::agent_source();
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/prometheus/mountlag-rules.yaml"),
    )
    .unwrap();
    let used: std::collections::BTreeSet<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("mountlag_"))
        .collect();
    assert!(used.len() >= 8, "{used:?}");
    for name in used {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("# TYPE {name} ")))
                || registered.contains(&format!("\"{}\"", name.trim_end_matches("_total"))),
            "the alert rules use {name}, which the agent does not export:\n{metrics}"
        );
    }
    keys.assert_not_in("/metrics", &metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_endpoint_and_mountlag_status_agree_and_the_table_shows_every_mount() {
    if !can_run() {
        return;
    }
    let mut keys = KeyRing::new("health test CA").unwrap();
    let node = node_with_mounts_in_several_states(&mut keys).await;
    let url = endpoint(&node);

    // The JSON printed is the document served (retry: a publish may land in between).
    let mut agreed = false;
    for _ in 0..10 {
        let before = node.get("/status").await.unwrap().1;
        let (code, printed, stderr) = mountlag_status(&["--endpoint", &url, "--json"]);
        let after = node.get("/status").await.unwrap().1;
        assert_eq!(code, 1, "a stuck mount: exit 1\n{stderr}");
        let printed_value: Value = serde_json::from_str(&printed).unwrap();
        let served: [Value; 2] = [
            serde_json::from_str(&before).unwrap(),
            serde_json::from_str(&after).unwrap(),
        ];
        if served.contains(&printed_value) {
            if before == after {
                assert_eq!(printed.trim_end(), before.trim_end(), "printed unchanged");
            }
            agreed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agreed, "mountlag status --json never matched /status");

    let (code, table, stderr) = mountlag_status(&["--endpoint", &url]);
    assert_eq!(code, 1, "{table}{stderr}");
    assert!(
        !table.contains('\x1b'),
        "no colour off a terminal: {table:?}"
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with(&format!("node {NODE}: ready, 4 mounts")),
        "{table}"
    );
    assert!(lines[1].starts_with("POD"), "{table}");
    for (pod, state, secret) in [
        ("edge-ok", "in_sync", "edge-tls@"),
        ("edge-stuck", "stuck", "stuck-tls@"),
        ("edge-missing", "secret_missing", "gone-tls@"),
        ("edge-sub", "never_updates", "sub-tls@"),
    ] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(&format!("{NAMESPACE}/{pod} ")))
            .unwrap_or_else(|| panic!("{pod} missing:\n{table}"));
        assert!(row.contains(&format!(" {state} ")), "{row}");
        assert!(row.contains(secret), "{row}");
    }
    keys.assert_not_in("mountlag status", &table);
}

/// `mountlag status`'s exit status for a mount state, as docs/operations.md ("Exit status")
/// documents it: 1 when a mount is `stuck` or `unreadable`, 0 for every other state. Written
/// out here, not taken from the client.
fn documented_exit_for_state(state: &str) -> i32 {
    match state {
        "stuck" | "unreadable" => 1,
        "unknown" | "in_sync" | "pending" | "nudged" | "secret_missing" | "never_updates"
        | "unchecked" => 0,
        other => panic!("state {other:?} is not in the documented table"),
    }
}

/// The exit status docs/operations.md gives for a `/status` document whose only reasons to
/// exit 1 are mount states: the test fails if anything else (a reload outcome, a served
/// mismatch, an expiring certificate, a TLS host) could decide the exit status.
fn documented_exit(doc: &Value) -> i32 {
    assert!(
        doc["hosts"].as_array().is_none_or(Vec::is_empty),
        "TLS hosts in this status: {doc:#}"
    );
    let mounts = doc["mounts"].as_array().unwrap();
    for m in mounts {
        assert!(
            m["lastReload"].is_null()
                && m["certificate"]["expiring"] != true
                && m["served"]["match"] != false,
            "a reason to exit 1 other than the mount state: {m:#}"
        );
    }
    mounts
        .iter()
        .map(|m| documented_exit_for_state(m["state"].as_str().unwrap()))
        .max()
        .unwrap_or(0)
}

/// Runs `mountlag status --json` until the document it printed shows `pod` in `state`; every
/// run's exit status must be the documented one for the document that same run printed.
/// Returns the exit status of the run that showed the state.
async fn cli_until_state(url: &str, pod: &str, state: &str, timeout: Duration) -> i32 {
    let start = Instant::now();
    loop {
        let (code, stdout, stderr) = mountlag_status(&["--endpoint", url, "--json"]);
        let doc: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("--json printed no status ({e}): {stdout}{stderr}"));
        assert_eq!(
            code,
            documented_exit(&doc),
            "exit status for the states {:?}",
            doc["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| format!("{}={}", m["pod"], m["state"]))
                .collect::<Vec<_>>()
        );
        if state_of(&doc, pod) == state {
            return code;
        }
        assert!(
            start.elapsed() < timeout,
            "{pod} never {state} within {timeout:?}: last {doc:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The table form agrees with the documented exit status of the current (settled) document.
fn table_exit(url: &str, expected: i32, shows: &str) {
    let (code, table, stderr) = mountlag_status(&["--endpoint", url]);
    assert_eq!(code, expected, "{table}{stderr}");
    assert!(table.contains(shows), "{shows:?} in {table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mountlag_status_exits_as_documented_for_every_mount_state_and_2_when_unreachable() {
    if !can_run() {
        return;
    }
    let mut keys = KeyRing::new("health test CA").unwrap();
    // nudge.after 3 s, stuckAfter 6 s: pending and nudged each last 3 s.
    let mut node = TestNode::start(slow_kubelet(), &agent_config("3s", "6s", true))
        .await
        .unwrap();
    let pods = [
        ("edge-0", "edge-tls", None),
        ("edge-1", "stuck-tls", None),
        ("edge-missing", "gone-tls", None),
        ("edge-sub", "sub-tls", Some("tls.crt")),
    ];
    for (pod, secret, sub_path) in pods {
        node.api.apply_secret(&keys.secret(secret)).unwrap();
        node.api
            .create_pod(&ingress_pod(pod, &[("app", "edge")], secret, sub_path))
            .unwrap();
    }
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(15)).await.unwrap();
    node.wait_status(Duration::from_secs(15), "every mount in sync", |s| {
        pods.iter().all(|(pod, _, _)| state_of(s, pod) == "in_sync")
    })
    .await
    .unwrap();
    let url = endpoint(&node);
    let wait = Duration::from_secs(20);
    // in_sync: 0, in both forms.
    assert_eq!(cli_until_state(&url, "edge-0", "in_sync", wait).await, 0);
    table_exit(&url, 0, "(4 in_sync)");

    // secret_missing: 0.
    node.api.delete_secret(NAMESPACE, "gone-tls").unwrap();
    assert_eq!(
        cli_until_state(&url, "edge-missing", "secret_missing", wait).await,
        0
    );
    // never_updates (subPath only, its Secret rotated): 0.
    node.api.apply_secret(&keys.secret("sub-tls")).unwrap();
    assert_eq!(
        cli_until_state(&url, "edge-sub", "never_updates", wait).await,
        0
    );
    table_exit(&url, 0, "never_updates");

    // pending, then nudged (kubelet ignores the nudge), then stuck: 0, 0, 1.
    node.node.set_stuck(PodRef::name(NAMESPACE, "edge-1"), true);
    node.api.apply_secret(&keys.secret("stuck-tls")).unwrap();
    assert_eq!(cli_until_state(&url, "edge-1", "pending", wait).await, 0);
    assert_eq!(cli_until_state(&url, "edge-1", "nudged", wait).await, 0);
    assert_eq!(cli_until_state(&url, "edge-1", "stuck", wait).await, 1);
    table_exit(&url, 1, "stuck");

    // The stuck pod goes away: 0 again.
    node.api.delete_pod(NAMESPACE, "edge-1").unwrap();
    node.wait_status(wait, "edge-1 gone", |s| state_of(s, "edge-1") == "absent")
        .await
        .unwrap();
    table_exit(&url, 0, "secret_missing");

    // unknown: kubelet (paused) has not set the new pod's volume up: 0.
    node.node.set_paused(true);
    node.api
        .create_pod(&ingress_pod("evil-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();
    assert_eq!(cli_until_state(&url, "evil-0", "unknown", wait).await, 0);
    // unreadable: its volume directory is a symlink, which the agent (restarted: a symlink is
    // no mount it would notice) refuses: 1.
    let uid = node
        .api
        .pod(NAMESPACE, "evil-0")
        .and_then(|p| p.metadata.uid)
        .unwrap();
    let evil_volume = node.kubelet.volume_dir(&uid, VolumeKind::Secret, "tls");
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(evil_volume.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(outside.path(), &evil_volume).unwrap();
    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    node.start_agent().unwrap();
    let url = endpoint(&node);
    node.wait_ready(Duration::from_secs(15)).await.unwrap();
    assert_eq!(cli_until_state(&url, "evil-0", "unreadable", wait).await, 1);
    table_exit(&url, 1, "unreadable");

    // unchecked: an agent that sees no kubelet root checks no mount on disk: 0.
    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    node.start_agent_as(AgentLaunch {
        kubelet_root: Some(outside.path().join("no-kubelet-root")),
        ..AgentLaunch::default()
    })
    .unwrap();
    let url = endpoint(&node);
    node.wait_ready(Duration::from_secs(15)).await.unwrap();
    assert_eq!(cli_until_state(&url, "evil-0", "unchecked", wait).await, 0);
    assert_eq!(cli_until_state(&url, "edge-0", "unchecked", wait).await, 0);
    table_exit(&url, 0, "unchecked");

    // unreachable: 2.
    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    node.node.set_paused(false);
    let (code, stdout, stderr) = mountlag_status(&["--endpoint", &url]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("cannot reach the agent at"), "{stderr}");
    let (code, _, stderr) = mountlag_status(&["--endpoint", &url, "--json"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = mountlag_status(&["--endpoint", "https://127.0.0.1:1"]);
    assert_eq!(code, 2, "{stderr}");
}

/// Sends `raw` on a fresh connection; returns what came back before the server closed.
async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return String::new();
    };
    let _ = stream.write_all(raw).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_do_not_stop_the_endpoint_from_answering_others() {
    if !can_run() {
        return;
    }
    let mut keys = KeyRing::new("health test CA").unwrap();
    let mut node = TestNode::start(slow_kubelet(), &agent_config("2s", "30s", true))
        .await
        .unwrap();
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(15)).await.unwrap();
    let addr = node.agent.as_ref().unwrap().listen;

    // Slowloris: connections that send part of a header and hold it.
    let mut slow = Vec::new();
    for i in 0..16 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET /status HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ").as_bytes())
            .await
            .unwrap();
        slow.push(stream);
    }
    for _ in 0..5 {
        let started = Instant::now();
        let (code, body) = http_get(addr, "/livez").await.unwrap();
        let took = started.elapsed();
        assert_eq!(code, 200, "{body}");
        assert!(
            took < Duration::from_secs(3),
            "/livez took {took:?} beside slowloris"
        );
        for stream in &mut slow {
            let _ = stream.write_all(b"a").await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Malformed and oversized requests: refused (4xx or closed), nobody else affected.
    let huge_header = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let many_headers = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..500)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "binary garbage",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n".to_vec(),
            &[400],
        ),
        ("bad request line", b"GET\r\n\r\n".to_vec(), &[400]),
        (
            "bad header",
            b"GET /livez HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
            &[400],
        ),
        ("huge header", huge_header.into_bytes(), &[400, 431]),
        ("many headers", many_headers.into_bytes(), &[400, 431]),
        (
            "huge uri",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20)).into_bytes(),
            &[400, 414, 431],
        ),
        (
            "a body",
            b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            &[413],
        ),
        (
            "POST",
            b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(),
            &[405],
        ),
        (
            "unknown path",
            b"GET /debug/pprof HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            &[404],
        ),
    ];
    for (what, raw, codes) in cases {
        let response = raw_exchange(addr, &raw).await;
        let code: u16 = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        assert!(
            code == 0 || codes.contains(&code),
            "{what}: expected {codes:?} or a closed connection, got {:?}",
            response.lines().next()
        );
        if code == 405 {
            assert!(
                response.to_ascii_lowercase().contains("allow: get, head"),
                "{response}"
            );
        }
        let started = Instant::now();
        let (livez, _) = http_get(addr, "/livez").await.unwrap();
        assert_eq!(livez, 200, "after {what}");
        assert!(started.elapsed() < Duration::from_secs(3), "after {what}");
    }
    let status = node.status().await.unwrap();
    assert_eq!(state_of(&status, "edge-0"), "in_sync");
    drop(slow);
    assert_eq!(
        node.stop_agent().unwrap().code(),
        Some(0),
        "{}",
        node.all_agent_logs()
    );
    keys.assert_not_in("agent log", &node.all_agent_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_test_key_bytes_in_any_endpoint_output() {
    if !can_run() {
        return;
    }
    let mut keys = KeyRing::new("health test CA").unwrap();
    let mut node = node_with_mounts_in_several_states(&mut keys).await;
    let url = endpoint(&node);
    let mut outputs = Vec::new();
    for path in ["/livez", "/readyz", "/metrics", "/status", "/", "/nope"] {
        let (_, body) = node.get(path).await.unwrap();
        outputs.push((path.to_string(), body));
    }
    let (_, openmetrics) = accept_get(
        node.agent.as_ref().unwrap().listen,
        "/metrics",
        "application/openmetrics-text; version=1.0.0",
    )
    .await;
    assert!(openmetrics.contains("# EOF"), "{openmetrics}");
    outputs.push(("/metrics (OpenMetrics)".into(), openmetrics));
    for args in [vec!["--endpoint", &url], vec!["--endpoint", &url, "--json"]] {
        let (_, stdout, stderr) = mountlag_status(&args);
        outputs.push((format!("mountlag status {args:?}"), stdout + &stderr));
    }
    assert_eq!(node.stop_agent().unwrap().code(), Some(0));
    outputs.push(("agent log".into(), node.all_agent_logs()));
    for (what, text) in &outputs {
        assert!(!text.is_empty(), "{what} is empty");
        keys.assert_not_in(what, text);
    }
}

/// GET with an `Accept` header: (status line, whole response).
async fn accept_get(addr: SocketAddr, path: &str, accept: &str) -> (String, String) {
    let raw =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n");
    let response = raw_exchange(addr, raw.as_bytes()).await;
    (
        response.lines().next().unwrap_or_default().to_string(),
        response,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_gives_one_json_object_per_line_and_rust_log_sets_the_level() {
    if !can_run() {
        return;
    }
    let mut keys = KeyRing::new("health test CA").unwrap();
    let node = TestNode::start(slow_kubelet(), &agent_config("2s", "30s", true))
        .await
        .unwrap();
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();

    let json = HookedAgent::start(&node, &["--log-format", "json"], &[]);
    wait_code(json.listen, "/readyz", 200, Duration::from_secs(15), &json).await;
    let log = json.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"mountlag agent starting\"")),
        "{log}"
    );
    assert!(!log.contains('\x1b'), "no terminal colours in JSON logs");
    keys.assert_not_in("JSON log", &log);
    drop(json);

    let quiet = HookedAgent::start(&node, &["--log-format", "json"], &[("RUST_LOG", "warn")]);
    wait_code(
        quiet.listen,
        "/readyz",
        200,
        Duration::from_secs(15),
        &quiet,
    )
    .await;
    let log = quiet.log();
    assert!(
        !log.contains("mountlag agent starting"),
        "RUST_LOG=warn: {log}"
    );
    assert!(
        !log.contains("\"INFO\"") && !log.contains("\"DEBUG\""),
        "{log}"
    );
}

/// The number of idle clients and probes of issue 12 item 3, as measured there.
const IDLE_CLIENTS: usize = 300;
const PROBES: usize = 13;
/// kubelet's probe timeout in that measurement (`timeoutSeconds: 1`, the Kubernetes default).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Raises this process's soft `RLIMIT_NOFILE` (inherited by the agent it spawns) so that the
/// idle clients, not the test's own limit, are what is measured.
fn raise_fd_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard).unwrap();
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= 2 * IDLE_CLIENTS as u64 + 256,
        "RLIMIT_NOFILE {soft} is too low for {IDLE_CLIENTS} idle clients"
    );
}

/// One probe as kubelet sends it: a fresh connection (kubelet disables keep-alive for probes),
/// `kube-probe` user agent, the whole exchange within `timeout`. The status code, `None` when
/// nothing came back in time.
async fn kubelet_probe(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        String::from_utf8_lossy(&raw)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// `count` connections to `addr` from the given source addresses (cycled) that send nothing,
/// opened at once. Returns the connections the kernel completed within `timeout` (a server
/// that stops accepting leaves the rest hanging in SYN retries, and them out of this list).
async fn idle_clients(
    addr: SocketAddr,
    sources: &[std::net::IpAddr],
    count: usize,
    timeout: Duration,
) -> Vec<TcpStream> {
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(sources[i % sources.len()], 0))
            .unwrap();
        connecting.spawn(tokio::time::timeout(timeout, socket.connect(addr)));
    }
    let mut clients = Vec::with_capacity(count);
    while let Some(joined) = connecting.join_next().await {
        if let Ok(Ok(stream)) = joined.unwrap() {
            clients.push(stream);
        }
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_beside_three_hundred_idle_clients() {
    if !can_run() {
        return;
    }
    raise_fd_limit(4096);
    let mut keys = KeyRing::new("health test CA").unwrap();
    let mut node = TestNode::start(slow_kubelet(), &agent_config("2s", "30s", true))
        .await
        .unwrap();
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();
    node.start_agent().unwrap();
    node.wait_ready(Duration::from_secs(15)).await.unwrap();
    let addr = node.agent.as_ref().unwrap().listen;

    // The whole 127/8 is local on Linux: one address per idle client stands for a pod network
    // of 300 pods; the probes' own address stands for a client on the node itself.
    let many: Vec<std::net::IpAddr> = (0..IDLE_CLIENTS)
        .map(|n| {
            let block = u8::try_from(1 + n / 250).unwrap();
            let host = u8::try_from(1 + n % 250).unwrap();
            std::net::IpAddr::from([127, block, 0, host])
        })
        .collect();
    let own = [std::net::IpAddr::from([127, 0, 0, 1])];
    for (what, sources) in [
        ("one source address, the probes' own", &own[..]),
        ("300 source addresses", &many[..]),
    ] {
        let idle = idle_clients(addr, sources, IDLE_CLIENTS, Duration::from_secs(3)).await;
        let (mut livez, mut readyz, mut slowest) = (0, 0, Duration::ZERO);
        // What a user notices is kubelet acting on failed probes: a restart or unready after
        // `failureThreshold` (3 by default) failures in a row. A single probe over its 1 s
        // timeout on a loaded 2-core machine is not that; two in a row already fail the test.
        let (mut livez_run, mut readyz_run, mut worst_run) = (0, 0, 0);
        for _ in 0..PROBES {
            for (path, answered, run) in [
                ("/livez", &mut livez, &mut livez_run),
                ("/readyz", &mut readyz, &mut readyz_run),
            ] {
                let started = Instant::now();
                let code = kubelet_probe(addr, path, PROBE_TIMEOUT).await;
                slowest = slowest.max(started.elapsed());
                if code == Some(200) {
                    *answered += 1;
                    *run = 0;
                } else {
                    *run += 1;
                    worst_run = worst_run.max(*run);
                    eprintln!("{path}: {code:?} after {:?}", started.elapsed());
                }
            }
        }
        eprintln!(
            "{IDLE_CLIENTS} idle clients from {what} ({} connected): /livez {livez}/{PROBES}, \
             /readyz {readyz}/{PROBES} answered, slowest {slowest:?}",
            idle.len()
        );
        assert!(
            worst_run < 2 && livez + readyz >= 2 * PROBES - 2,
            "{IDLE_CLIENTS} idle clients from {what}: probes answered within {PROBE_TIMEOUT:?}: \
             /livez {livez}/{PROBES}, /readyz {readyz}/{PROBES}, {worst_run} failures in a row\n{}",
            node.all_agent_logs()
        );
        // The agent keeps accepting: no client is left waiting in the kernel's queues.
        assert_eq!(idle.len(), IDLE_CLIENTS, "{what}: idle clients connected");
        drop(idle);
    }
    assert_eq!(
        node.stop_agent().unwrap().code(),
        Some(0),
        "{}",
        node.all_agent_logs()
    );
    keys.assert_not_in("agent log", &node.all_agent_logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_status_listen_status_is_served_only_on_the_node_local_listener() {
    if !can_run() {
        return;
    }
    let mut keys = KeyRing::new("health test CA").unwrap();
    let node = TestNode::start(slow_kubelet(), &agent_config("2s", "30s", true))
        .await
        .unwrap();
    node.api.apply_secret(&keys.secret("edge-tls")).unwrap();
    node.api
        .create_pod(&ingress_pod("edge-0", &[("app", "edge")], "edge-tls", None))
        .unwrap();
    let local: SocketAddr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let agent = HookedAgent::start(&node, &["--status-listen", &local.to_string()], &[]);
    wait_code(
        agent.listen,
        "/readyz",
        200,
        Duration::from_secs(15),
        &agent,
    )
    .await;

    // The node-local listener serves everything, /status included.
    let started = Instant::now();
    let status: Value = loop {
        let (code, body) = http_get(local, "/status").await.unwrap();
        assert_eq!(code, 200, "{body}");
        let status: Value = serde_json::from_str(&body).unwrap();
        if mount_of(&status, "edge-0").is_some() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "edge-0 never appeared in /status: {body}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["node"], NODE);
    for path in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(http_get(local, path).await.unwrap().0, 200, "{path}");
    }
    let (code, printed, stderr) =
        mountlag_status(&["--endpoint", &format!("http://{local}"), "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let printed: Value = serde_json::from_str(&printed).unwrap();
    assert!(mount_of(&printed, "edge-0").is_some(), "{printed}");

    // The public listener serves the probes and the scrape, and names no pod, Secret or host.
    for path in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(http_get(agent.listen, path).await.unwrap().0, 200, "{path}");
    }
    for request in [
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /status?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET http://x/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "HEAD /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let response = raw_exchange(agent.listen, request.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 404"),
            "{request:?}: {response}"
        );
        for name in ["edge-0", "edge-tls", NAMESPACE, "\"mounts\""] {
            assert!(
                !response.contains(name),
                "{request:?} names {name}: {response}"
            );
        }
    }
    let (code, _, stderr) = mountlag_status(&["--endpoint", &format!("http://{}", agent.listen)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("404") && stderr.contains("--status-listen"),
        "{stderr}"
    );
    keys.assert_not_in("agent log", &agent.log());
}
