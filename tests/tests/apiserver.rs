//! The API server stand-in, driven by real clients: kube-rs (Api, watcher, events Recorder)
//! over HTTP and the real `kubectl` binary.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Pod, Secret};
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event as RecEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use mountlag_testbed::apiserver::{ApiServer, ApiServerConfig, ChangeType, Resource};
use mountlag_testbed::real;
use serde_json::json;

async fn server() -> ApiServer {
    ApiServer::start(ApiServerConfig {
        bookmark_interval: Duration::from_millis(200),
        ..ApiServerConfig::default()
    })
    .await
    .unwrap()
}

fn pod(ns: &str, name: &str, node: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx:1.27"}]},
    }))
    .unwrap()
}

fn secret(ns: &str, name: &str, crt: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": crt, "tls.key": "KEY"},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_round_trip() {
    let api = server().await;
    let pods: Api<Pod> = Api::namespaced(api.client(), "ns1");

    let created = pods
        .create(&PostParams::default(), &pod("ns1", "p1", "node-a", "edge"))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    assert_eq!(uid.len(), 36);
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    // Create again: 409 AlreadyExists, parsed by kube.
    let err = pods
        .create(&PostParams::default(), &pod("ns1", "p1", "node-a", "edge"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "AlreadyExists");
        }
        other => panic!("unexpected {other:?}"),
    }

    let got = pods.get("p1").await.unwrap();
    assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(got.metadata.namespace.as_deref(), Some("ns1"));

    // 404 with a Status body.
    match pods.get("nope").await.unwrap_err() {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.reason, "NotFound");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Merge patch (the nudge).
    let patched = pods
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"mountlag.io/resync": "1"}}})),
        )
        .await
        .unwrap();
    let rv2: u64 = patched.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    assert_eq!(
        patched
            .annotations()
            .get("mountlag.io/resync")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(patched.metadata.generation, Some(1), "metadata-only change");
    // Strategic merge patch and JSON patch.
    pods.patch(
        "p1",
        &PatchParams::default(),
        &Patch::Strategic(json!({"metadata": {"labels": {"extra": "yes"}}})),
    )
    .await
    .unwrap();
    // JSON patch (kube's `Patch::Json` takes a `json_patch::Patch`, built here through serde).
    let after = pods
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([
                    {"op": "add", "path": "/metadata/annotations/x", "value": "y"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(after.labels().get("extra").map(String::as_str), Some("yes"));
    assert_eq!(after.annotations().get("x").map(String::as_str), Some("y"));

    // A no-op patch does not bump the resourceVersion.
    let same = pods
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(same.resource_version(), after.resource_version());

    // Replace with a stale resourceVersion: 409 Conflict.
    let mut stale = patched.clone();
    stale.labels_mut().insert("v".into(), "2".into());
    match pods
        .replace("p1", &PostParams::default(), &stale)
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "Conflict");
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut fresh = pods.get("p1").await.unwrap();
    fresh.labels_mut().insert("v".into(), "2".into());
    pods.replace("p1", &PostParams::default(), &fresh)
        .await
        .unwrap();

    // Status is a subresource: the main resource keeps it.
    let status = pods
        .patch_status(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "127.0.0.1"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        status.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );

    // List with selectors, limit and continue.
    for i in 2..=5 {
        pods.create(
            &PostParams::default(),
            &pod(
                "ns1",
                &format!("p{i}"),
                if i % 2 == 0 { "node-a" } else { "node-b" },
                "edge",
            ),
        )
        .await
        .unwrap();
    }
    let on_a = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    let mut names: Vec<String> = on_a.items.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(names, ["p1", "p2", "p4"]);
    let not_p1 = pods
        .list(&ListParams::default().fields("spec.nodeName==node-a,metadata.name!=p1"))
        .await
        .unwrap();
    assert_eq!(not_p1.items.len(), 2);
    let by_label = pods
        .list(&ListParams::default().labels("app in (edge),extra"))
        .await
        .unwrap();
    assert_eq!(by_label.items.len(), 1);
    let page1 = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page1.items.len(), 2);
    let token = page1.metadata.continue_.clone().unwrap();
    let page2 = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let page3 = pods
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(page2.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(page3.items.len(), 1);
    assert!(page3.metadata.continue_.as_deref().unwrap_or("").is_empty());
    let all: Vec<String> = page1
        .items
        .iter()
        .chain(&page2.items)
        .chain(&page3.items)
        .map(|p| p.name_any())
        .collect();
    assert_eq!(all, ["p1", "p2", "p3", "p4", "p5"]);
    // Cluster-wide list.
    let everywhere: Api<Pod> = Api::all(api.client());
    assert_eq!(
        everywhere
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        5
    );
    // An unsupported field label is a 400, like the real server.
    match pods
        .list(&ListParams::default().fields("spec.containers=x"))
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => assert_eq!(s.code, 400),
        other => panic!("unexpected {other:?}"),
    }

    // Delete returns the object; a second delete is a 404.
    let deleted = pods.delete("p1", &DeleteParams::default()).await.unwrap();
    assert!(deleted.left().is_some());
    assert!(pods.get_opt("p1").await.unwrap().is_none());
    assert!(pods.delete("p1", &DeleteParams::default()).await.is_err());

    // Secrets: data is base64 on the wire, bytes in kube's types.
    let secrets: Api<Secret> = Api::namespaced(api.client(), "ns1");
    secrets
        .create(&PostParams::default(), &secret("ns1", "tls", "CRT1"))
        .await
        .unwrap();
    let s = secrets.get("tls").await.unwrap();
    let data = s.data.unwrap();
    assert_eq!(data["tls.crt"].0, b"CRT1");
    assert!(s.string_data.is_none());
    let raw = api.object(Resource::Secrets, "ns1", "tls").unwrap();
    assert_eq!(raw["data"]["tls.crt"], "Q1JUMQ==");
    // A TLS secret without tls.key is invalid.
    let mut bad = secret("ns1", "bad", "x");
    bad.string_data.as_mut().unwrap().remove("tls.key");
    match secrets
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => assert_eq!(s.code, 422),
        other => panic!("unexpected {other:?}"),
    }

    let stats = api.stats();
    assert!(stats.count("create", "pods") >= 6, "{stats:?}");
    assert!(stats.count("patch", "pods") >= 3, "{stats:?}");
    assert!(stats.count("patch", "pods/status") >= 1, "{stats:?}");
    assert!(stats.requests_by_user.contains_key("testbed:admin"));
}

/// Applies kube_runtime watcher events to a map, like a reflector.
#[derive(Default)]
struct Mirror {
    state: BTreeMap<String, Pod>,
    buffer: Option<BTreeMap<String, Pod>>,
    relists: usize,
    gone_errors: usize,
    log: Vec<String>,
}

impl Mirror {
    fn apply(&mut self, ev: Result<Event<Pod>, watcher::Error>) {
        match ev {
            Ok(Event::Init) => {
                self.relists += 1;
                self.buffer = Some(BTreeMap::new());
            }
            Ok(Event::InitApply(p)) => {
                if let Some(b) = self.buffer.as_mut() {
                    b.insert(p.name_any(), p);
                }
            }
            Ok(Event::InitDone) => {
                self.state = self.buffer.take().unwrap_or_default();
            }
            Ok(Event::Apply(p)) => {
                self.log.push(format!("apply {}", p.name_any()));
                self.state.insert(p.name_any(), p);
            }
            Ok(Event::Delete(p)) => {
                self.log.push(format!("delete {}", p.name_any()));
                self.state.remove(&p.name_any());
            }
            Err(watcher::Error::WatchError(s)) if s.code == 410 => self.gone_errors += 1,
            Err(e) => self.log.push(format!("error {e}")),
        }
    }
}

async fn wait_until(
    stream: &mut (impl futures::Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin),
    mirror: &mut Mirror,
    what: &str,
    cond: impl Fn(&Mirror) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond(mirror) {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(ev)) => mirror.apply(ev),
            Ok(None) => panic!("watcher ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}; log {:?}", mirror.log),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_follows_selectors_and_recovers_from_compaction() {
    // No bookmark between compact() and drop_watches() may refresh the client's
    // resourceVersion, so bookmarks are rare here.
    let api = ApiServer::start(ApiServerConfig {
        bookmark_interval: Duration::from_secs(60),
        ..ApiServerConfig::default()
    })
    .await
    .unwrap();
    let pods: Api<Pod> = Api::all(api.client());
    // One pod exists before the watch starts (initial list).
    api.create_pod(&pod("ns1", "early", "node-a", "edge"))
        .unwrap();
    api.create_pod(&pod("ns1", "elsewhere", "node-b", "edge"))
        .unwrap();
    let cfg = watcher::Config::default()
        .fields("spec.nodeName=node-a")
        .labels("app=edge");
    let mut stream = watcher::watcher(pods, cfg).boxed();
    let mut m = Mirror::default();
    wait_until(&mut stream, &mut m, "initial list", |m| {
        m.relists == 1 && m.buffer.is_none()
    })
    .await;
    assert_eq!(m.state.keys().collect::<Vec<_>>(), ["early"]);

    let ns = "ns1";
    api.create_pod(&pod(ns, "p1", "node-a", "edge")).unwrap();
    api.create_pod(&pod(ns, "p2", "node-b", "edge")).unwrap(); // other node: invisible
    api.annotate_pod(ns, "p1", "mountlag.io/resync", "1")
        .unwrap();
    // Out of the label selector: DELETED; back in: ADDED.
    api.patch_pod(ns, "p1", &json!({"metadata": {"labels": {"app": "other"}}}))
        .unwrap();
    api.annotate_pod(ns, "p1", "while-out", "ignored").unwrap();
    api.patch_pod(ns, "p1", &json!({"metadata": {"labels": {"app": "edge"}}}))
        .unwrap();
    api.delete_pod(ns, "early").unwrap();
    wait_until(&mut stream, &mut m, "the changes", |m| m.log.len() >= 5).await;
    assert_eq!(
        m.log,
        [
            "apply p1",
            "apply p1",
            "delete p1",
            "apply p1",
            "delete early"
        ],
        "ADDED, MODIFIED, moved out (DELETED), moved in (ADDED), DELETED"
    );
    assert_eq!(m.state.keys().collect::<Vec<_>>(), ["p1"]);
    assert_eq!(
        m.state["p1"]
            .annotations()
            .get("while-out")
            .map(String::as_str),
        Some("ignored")
    );

    // History gone + watches cut: the resumed watch gets 410 Expired and relists; changes made
    // in the gap are not lost. The server is down during the gap: a watch that is merely told to
    // end could still deliver the first change (and its newer resourceVersion) before it ends.
    api.set_available(false).await.unwrap();
    api.compact();
    api.create_pod(&pod(ns, "p3", "node-a", "edge")).unwrap();
    api.annotate_pod(ns, "p1", "gap", "yes").unwrap();
    api.set_available(true).await.unwrap();
    wait_until(&mut stream, &mut m, "410 and relist", |m| {
        m.gone_errors >= 1 && m.relists >= 2 && m.buffer.is_none()
    })
    .await;
    assert_eq!(m.state.keys().collect::<Vec<_>>(), ["p1", "p3"]);
    assert_eq!(
        m.state["p1"].annotations().get("gap").map(String::as_str),
        Some("yes")
    );
    // And it keeps watching after the relist.
    api.delete_pod(ns, "p3").unwrap();
    wait_until(&mut stream, &mut m, "delete after relist", |m| {
        !m.state.contains_key("p3")
    })
    .await;
    assert_eq!(api.stats().open_watches, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher() {
    let api = server().await;
    api.create_pod(&pod("ns1", "a", "node-a", "edge")).unwrap();
    let pods: Api<Pod> = Api::namespaced(api.client(), "ns1");
    let cfg = watcher::Config::default().streaming_lists();
    let mut stream = watcher::watcher(pods, cfg).boxed();
    let mut m = Mirror::default();
    wait_until(&mut stream, &mut m, "streamed initial list", |m| {
        m.relists == 1 && m.buffer.is_none()
    })
    .await;
    assert_eq!(m.state.keys().collect::<Vec<_>>(), ["a"]);
    api.create_pod(&pod("ns1", "b", "node-a", "edge")).unwrap();
    wait_until(&mut stream, &mut m, "b", |m| m.state.contains_key("b")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_and_watch_timeout() {
    let api = server().await;
    let pods: Api<Pod> = Api::namespaced(api.client(), "ns1");
    let rv = api.resource_version().to_string();

    // Bookmarks (kube asks for them by default) every 200 ms (configured), carrying the
    // current resourceVersion.
    let mut s = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    api.create_pod(&pod("ns1", "b1", "node-a", "edge")).unwrap();
    let mut saw_added = false;
    let mut bookmark_rv = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while bookmark_rv.is_none() || !saw_added {
        match tokio::time::timeout_at(deadline, s.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(p)))) => {
                assert_eq!(p.name_any(), "b1");
                saw_added = true;
            }
            Ok(Ok(Some(WatchEvent::Bookmark(b)))) if saw_added => {
                bookmark_rv = Some(b.metadata.resource_version)
            }
            Ok(Ok(Some(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(bookmark_rv.unwrap(), api.resource_version().to_string());
    assert_eq!(api.stats().open_watches, 1);
    drop(s);

    // timeoutSeconds ends the stream.
    let started = std::time::Instant::now();
    let s = pods
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv)
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(10), s.collect::<Vec<_>>())
        .await
        .expect("the stream ends by itself");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(events.len(), 1, "the replayed ADDED only");

    // A resourceVersion older than the history: ERROR 410 Expired.
    api.compact();
    let mut s = pods
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match s.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(s.try_next().await.unwrap().is_none());
    // The gauge goes back to zero once streams end.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(api.stats().open_watches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorder_series() {
    let api = server().await;
    let p = api
        .create_pod(&pod("ns1", "edge-0", "node-a", "edge"))
        .unwrap();
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: p.metadata.name.clone(),
        namespace: p.metadata.namespace.clone(),
        uid: p.metadata.uid.clone(),
        ..ObjectReference::default()
    };
    let recorder = Recorder::new(
        api.client(),
        Reporter {
            controller: "mountlag.io/agent".into(),
            instance: Some("node-a".into()),
        },
    );
    let ev = RecEvent {
        type_: EventType::Warning,
        reason: "SecretMountStuck".into(),
        note: Some("volume tls lags the API by 120s".into()),
        action: "Observe".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();

    let events = api.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.api_group, "events.k8s.io");
    assert_eq!(e.type_, "Warning");
    assert_eq!(e.reason, "SecretMountStuck");
    assert_eq!(e.note, "volume tls lags the API by 120s");
    assert_eq!(e.regarding.kind, "Pod");
    assert_eq!(e.regarding.api_version, "v1");
    assert_eq!(e.regarding.name, "edge-0");
    assert_eq!(e.regarding.uid, p.metadata.uid.clone().unwrap());
    assert_eq!(e.reporting_controller, "mountlag.io/agent");
    assert_eq!(e.reporting_instance, "node-a");
    assert_eq!(e.series_count, Some(2));
    assert!(e.first_time.is_some() && e.last_time >= e.first_time);

    // The same Event through core/v1 (one storage, converted).
    let core: Api<CoreEvent> = Api::namespaced(api.client(), "ns1");
    let list = core.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let c = &list.items[0];
    assert_eq!(
        c.message.as_deref(),
        Some("volume tls lags the API by 120s")
    );
    assert_eq!(c.involved_object.name.as_deref(), Some("edge-0"));
    assert_eq!(c.reporting_component.as_deref(), Some("mountlag.io/agent"));
    let by_field = core
        .list(&ListParams::default().fields("involvedObject.name=edge-0,reason=SecretMountStuck"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);
    // events.k8s.io/v1 validation, as in a real cluster: no reportingController → 422.
    let v1: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(api.client(), "ns1");
    let bad: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "bad.1", "namespace": "ns1"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "type": "Normal", "reason": "R", "action": "A", "reportingInstance": "node-a",
        "regarding": {"kind": "Pod", "name": "edge-0", "namespace": "ns1"},
    }))
    .unwrap();
    match v1.create(&PostParams::default(), &bad).await.unwrap_err() {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422);
            assert!(s.message.contains("reportingController"), "{}", s.message);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(api.events().len(), 1);

    let stats = api.stats();
    assert_eq!(stats.count("create", "events.events.k8s.io"), 2);
    assert_eq!(stats.count("patch", "events.events.k8s.io"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_restart_on_the_same_port() {
    let api = server().await;
    let port = api.port();
    let client = api.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ns1");
    api.create_pod(&pod("ns1", "p", "node-a", "edge")).unwrap();
    pods.get("p").await.unwrap();
    // An open watch ends when the server stops.
    let rv = api.resource_version().to_string();
    let w = pods.watch(&WatchParams::default(), &rv).await.unwrap();
    let watch_end = tokio::spawn(async move { w.collect::<Vec<_>>().await.len() });

    api.stop().await;
    assert!(!api.is_available());
    tokio::time::timeout(Duration::from_secs(5), watch_end)
        .await
        .expect("watch ended by stop")
        .unwrap();
    for _ in 0..3 {
        assert!(
            pods.get("p").await.is_err(),
            "requests fail while the server is stopped"
        );
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // The store lives on (in-process writes still work while HTTP is down).
    api.annotate_pod("ns1", "p", "during", "outage").unwrap();

    api.restart().await.unwrap();
    assert_eq!(api.port(), port);
    let p = pods.get("p").await.unwrap();
    assert_eq!(
        p.annotations().get("during").map(String::as_str),
        Some("outage")
    );
    assert_eq!(api.stats().open_watches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_sees_store_changes() {
    let api = server().await;
    let mut rx = api.subscribe();
    api.create_pod(&pod("ns1", "p", "node-a", "edge")).unwrap();
    api.apply_secret(&secret("ns1", "s", "A")).unwrap();
    api.apply_secret(&secret("ns1", "s", "B")).unwrap();
    api.apply_secret(&secret("ns1", "s", "B")).unwrap(); // no-op: no change
    api.delete_secret("ns1", "s").unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let c = rx.recv().await.unwrap();
        seen.push((c.resource, c.name.clone(), c.change));
    }
    assert_eq!(
        seen,
        [
            (Resource::Pods, "p".to_owned(), ChangeType::Added),
            (Resource::Secrets, "s".to_owned(), ChangeType::Added),
            (Resource::Secrets, "s".to_owned(), ChangeType::Modified),
            (Resource::Secrets, "s".to_owned(), ChangeType::Deleted),
        ]
    );
    assert!(rx.try_recv().is_err());
}

fn kubectl(api: &ApiServer, cache: &std::path::Path) -> Command {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig")
        .arg(api.kubeconfig_path())
        .arg("--cache-dir")
        .arg(cache)
        .arg("--request-timeout=10s");
    c
}

fn kubectl_available() -> Result<(), String> {
    match Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`kubectl version --client` failed: {:?}", o.status)),
        Err(e) => Err(format!("kubectl not runnable: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_and_watch() {
    if !real::require("kubectl", kubectl_available()) {
        return;
    }
    let api = server().await;
    let cache = tempfile::tempdir().unwrap();
    api.create_pod(&pod("ingress", "edge-0", "node-a", "edge"))
        .unwrap();
    api.apply_secret(&secret("ingress", "edge-tls", "SECRET-CERT-BYTES"))
        .unwrap();
    let recorder = Recorder::new(
        api.client(),
        Reporter {
            controller: "mountlag.io/agent".into(),
            instance: Some("node-a".into()),
        },
    );
    let p = api.pod("ingress", "edge-0").unwrap();
    recorder
        .publish(
            &RecEvent {
                type_: EventType::Normal,
                reason: "KubeletResyncRequested".into(),
                note: Some("nudged".into()),
                action: "Nudge".into(),
                secondary: None,
            },
            &ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: p.metadata.name.clone(),
                namespace: p.metadata.namespace.clone(),
                uid: p.metadata.uid.clone(),
                ..ObjectReference::default()
            },
        )
        .await
        .unwrap();

    let (api2, cache2) = (api.clone(), cache.path().to_owned());
    let out = tokio::task::spawn_blocking(move || {
        kubectl(&api2, &cache2)
            .args(["get", "pods,secrets,events", "-A"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl get failed: {stderr}");
    assert!(stdout.contains("pod/edge-0"), "{stdout}");
    assert!(stdout.contains("secret/edge-tls"), "{stdout}");
    assert!(stdout.contains("event/edge-0."), "{stdout}");
    assert!(!stdout.contains("SECRET-CERT-BYTES") && !stderr.contains("SECRET-CERT-BYTES"));

    // kubectl get pods --watch, killed after ADDED and MODIFIED.
    let mut child = kubectl(&api, cache.path())
        .args([
            "get",
            "pods",
            "--watch",
            "--output-watch-events",
            "-n",
            "ingress",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std_mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let wait_line = |lines: &mut Vec<String>, prefix: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.starts_with(prefix) && l.contains("edge-0");
                    lines.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("kubectl never printed a {prefix} line; got {lines:?}"),
            }
        }
    };
    wait_line(&mut lines, "ADDED");
    api.annotate_pod("ingress", "edge-0", "mountlag.io/resync", "2")
        .unwrap();
    wait_line(&mut lines, "MODIFIED");
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(!status.success() || status.code().is_some());
    let _ = reader.join();
    assert!(lines[0].starts_with("EVENT"), "{lines:?}");
}
