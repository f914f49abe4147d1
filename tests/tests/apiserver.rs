//! The API server stand-in, driven by real clients: kube-rs (Api, watcher, events Recorder)
//! over HTTP and the real `kubectl` binary.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Pod, Secret};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::discovery::Scope;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::events::{Event as RecEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use mountlag_testbed::apiserver::{
    ADMIN_USER, ApiServer, ApiServerConfig, ApiStats, Authorizer, ChangeType, Decision, Identity,
    RequestAttributes, RequestShape, Resource,
};
use mountlag_testbed::rbac::Rbac;
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

// ------------------------------------------------------------------ networking + Gateway API

const NET: &str = "networking.k8s.io/v1";
const GW: &str = "gateway.networking.k8s.io/v1";
const GW_BETA: &str = "gateway.networking.k8s.io/v1beta1";

fn ingress(ns: &str, name: &str, host: &str) -> serde_json::Value {
    json!({
        "apiVersion": NET, "kind": "Ingress",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": [host], "secretName": format!("{name}-tls")}],
            "rules": [{"host": host}],
        },
    })
}

fn ingress_class(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": NET, "kind": "IngressClass",
        "metadata": {"name": name},
        "spec": {"controller": "k8s.io/ingress-nginx"},
    })
}

fn gateway(ns: &str, name: &str, port: u16) -> serde_json::Value {
    json!({
        "apiVersion": GW, "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "gatewayClassName": "envoy",
            "listeners": [{"name": "https", "protocol": "HTTPS", "port": port,
                "tls": {"certificateRefs": [{"name": format!("{name}-tls")}]}}],
        },
    })
}

fn http_route(ns: &str, name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": GW, "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"parentRefs": [{"name": "edge"}], "hostnames": [format!("{name}.example")]},
    })
}

fn gvk_resource(api_version: &str, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn api_status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Names of the rows of `kubectl get` output whose first columns are `cols`.
fn has_row(stdout: &str, cols: &[&str]) -> bool {
    stdout.lines().any(|l| {
        l.split_whitespace()
            .take(cols.len())
            .eq(cols.iter().copied())
    })
}

/// Runs kubectl (blocking) and returns (success, stdout, stderr).
fn run_kubectl(api: &ApiServer, cache: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = kubectl(api, cache).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_networking_and_gateway_kinds() {
    if !real::require("kubectl", kubectl_available()) {
        return;
    }
    let api = server().await;
    api.apply_object(&ingress("shop", "web", "shop.example"))
        .unwrap();
    api.apply_object(&ingress("blog", "api", "blog.example"))
        .unwrap();
    // A namespace on a cluster-scoped kind is dropped, as the API server does.
    let mut class = ingress_class("nginx");
    class["metadata"]["namespace"] = json!("shop");
    let stored = api.apply_object(&class).unwrap();
    assert!(stored["metadata"].get("namespace").is_none(), "{stored}");
    api.apply_object(&json!({
        "apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "envoy"},
        "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
    }))
    .unwrap();
    api.apply_object(&gateway("infra", "edge", 443)).unwrap();
    api.apply_object(&json!({
        "apiVersion": GW_BETA, "kind": "ReferenceGrant",
        "metadata": {"name": "allow-infra", "namespace": "shop"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra"}],
                 "to": [{"group": "", "kind": "Secret"}]},
    }))
    .unwrap();

    let cache = tempfile::tempdir().unwrap();
    let (api2, cache2) = (api.clone(), cache.path().to_owned());
    tokio::task::spawn_blocking(move || {
        let (api, cache) = (&api2, cache2.as_path());
        let (ok, out, err) = run_kubectl(api, cache, &["get", "ingress", "-A"]);
        assert!(ok, "kubectl get ingress -A: {err}");
        assert!(has_row(&out, &["shop", "web"]), "{out}");
        assert!(has_row(&out, &["blog", "api"]), "{out}");

        let (ok, out, err) = run_kubectl(api, cache, &["get", "ingressclasses"]);
        assert!(ok, "kubectl get ingressclasses: {err}");
        assert!(has_row(&out, &["nginx"]), "{out}");
        assert!(!out.contains("NAMESPACE"), "cluster-scoped: {out}");

        let (ok, out, err) = run_kubectl(
            api,
            cache,
            &["get", "gateways.gateway.networking.k8s.io", "-A"],
        );
        assert!(ok, "kubectl get gateways: {err}");
        assert!(has_row(&out, &["infra", "edge"]), "{out}");
        // Short names and singular names come from discovery.
        let (ok, out, err) = run_kubectl(api, cache, &["get", "gc"]);
        assert!(ok, "kubectl get gc: {err}");
        assert!(has_row(&out, &["envoy"]), "{out}");
        let (ok, out, err) = run_kubectl(api, cache, &["get", "refgrant", "-n", "shop"]);
        assert!(ok, "kubectl get refgrant: {err}");
        assert!(has_row(&out, &["allow-infra"]), "{out}");

        // What kubectl learnt from discovery: scope, kind, preferred version.
        let (ok, out, err) = run_kubectl(
            api,
            cache,
            &["api-resources", "--api-group=gateway.networking.k8s.io"],
        );
        assert!(ok, "kubectl api-resources: {err}");
        for row in [
            &["gatewayclasses", "gc", GW, "false", "GatewayClass"][..],
            &["gateways", "gtw", GW, "true", "Gateway"],
            &["httproutes", GW, "true", "HTTPRoute"],
            &["referencegrants", "refgrant", GW, "true", "ReferenceGrant"],
        ] {
            assert!(has_row(&out, row), "{row:?} in {out}");
        }
        let (ok, out, err) = run_kubectl(
            api,
            cache,
            &["api-resources", "--api-group=networking.k8s.io"],
        );
        assert!(ok, "kubectl api-resources: {err}");
        assert!(
            has_row(&out, &["ingressclasses", NET, "false", "IngressClass"]),
            "{out}"
        );
        assert!(
            has_row(&out, &["ingresses", "ing", NET, "true", "Ingress"]),
            "{out}"
        );

        // A cluster-scoped kind under a namespace path does not exist.
        let (ok, _, err) = run_kubectl(
            api,
            cache,
            &[
                "get",
                "--raw",
                "/apis/networking.k8s.io/v1/namespaces/shop/ingressclasses/nginx",
            ],
        );
        assert!(!ok && err.contains("NotFound"), "{err}");
    })
    .await
    .unwrap();

    // kubectl watches Ingresses: ADDED, then MODIFIED and DELETED made in-process.
    let mut child = kubectl(&api, cache.path())
        .args([
            "get",
            "ingress",
            "-n",
            "shop",
            "--watch",
            "--output-watch-events",
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
    let api2 = api.clone();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        let mut wait_line = |prefix: &str| {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(l) => {
                        let hit = l.starts_with(prefix) && l.contains("web");
                        lines.push(l);
                        if hit {
                            return;
                        }
                    }
                    Err(_) => panic!("kubectl never printed a {prefix} line; got {lines:?}"),
                }
            }
        };
        wait_line("ADDED");
        let mut changed = ingress("shop", "web", "shop2.example");
        changed["metadata"]["annotations"] = json!({"mountlag.io/touched": "1"});
        api2.apply_object(&changed).unwrap();
        wait_line("MODIFIED");
        api2.delete_object(NET, "Ingress", Some("shop"), "web")
            .unwrap();
        wait_line("DELETED");
        lines
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    assert!(lines[0].starts_with("EVENT"), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("api")),
        "only namespace shop: {lines:?}"
    );
    let stats = api.stats();
    assert!(
        stats.count("list", "ingresses.networking.k8s.io") >= 1,
        "{stats:?}"
    );
    assert!(
        stats.count("watch", "ingresses.networking.k8s.io") >= 1,
        "{stats:?}"
    );
    assert!(
        stats.count("list", "ingressclasses.networking.k8s.io") >= 1,
        "{stats:?}"
    );
    assert!(
        stats.count("get", "/apis/gateway.networking.k8s.io/v1") >= 1,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_over_kube_rs_discovery_verbs_and_watch() {
    let api = server().await;
    let client = api.client();
    // kube-rs' own discovery: scope, preferred version, ReferenceGrant in both versions.
    let discovery = kube::Discovery::new(client.clone())
        .filter(&["gateway.networking.k8s.io", "networking.k8s.io"])
        .run()
        .await
        .unwrap();
    let group = discovery.get("gateway.networking.k8s.io").unwrap();
    assert_eq!(group.preferred_version(), Some("v1"));
    let resolve = |api_version: &str, kind: &str| {
        let (g, v) = api_version.rsplit_once('/').unwrap();
        discovery
            .resolve_gvk(&GroupVersionKind::gvk(g, v, kind))
            .unwrap_or_else(|| panic!("{api_version} {kind} not discovered"))
    };
    let (gw_ar, gw_caps) = resolve(GW, "Gateway");
    assert_eq!(gw_ar.plural, "gateways");
    assert_eq!(gw_caps.scope, Scope::Namespaced);
    assert!(
        gw_caps
            .subresources
            .iter()
            .any(|(s, _)| s.plural == "status")
    );
    assert_eq!(resolve(GW, "GatewayClass").1.scope, Scope::Cluster);
    assert_eq!(resolve(NET, "IngressClass").1.scope, Scope::Cluster);
    assert_eq!(
        resolve(GW_BETA, "ReferenceGrant").0.plural,
        "referencegrants"
    );
    assert_eq!(resolve(GW, "ReferenceGrant").1.scope, Scope::Namespaced);
    assert_eq!(resolve(GW, "HTTPRoute").0.plural, "httproutes");

    let gateways: Api<DynamicObject> = Api::namespaced_with(client.clone(), "infra", &gw_ar);
    let rv = api.resource_version().to_string();
    let mut events = gateways
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        api.stats()
            .open_watches_by_resource
            .get("gateways.gateway.networking.k8s.io"),
        Some(&1)
    );

    // Create over HTTP: server-owned metadata set, the given status dropped (status is a
    // subresource).
    let mut body: DynamicObject = serde_json::from_value(gateway("infra", "edge", 443)).unwrap();
    body.data["status"] = json!({"addresses": [{"value": "10.0.0.1"}]});
    let created = gateways
        .create(&PostParams::default(), &body)
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.metadata.uid.as_deref().map(str::len), Some(36));
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(created.data.get("status").is_none(), "{:?}", created.data);
    // Another namespace's Gateway is not in this watch.
    api.apply_object(&gateway("other", "edge", 443)).unwrap();
    // The status subresource sets status; the main resource keeps it.
    let with_status = gateways
        .patch_status(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"addresses": [{"value": "10.0.0.2"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(
        with_status.data["status"]["addresses"][0]["value"],
        "10.0.0.2"
    );
    assert_eq!(
        with_status.metadata.generation,
        Some(1),
        "status does not bump generation"
    );
    let mut replaced = with_status.clone();
    replaced.data["spec"]["listeners"][0]["port"] = json!(8443);
    replaced.data["status"] = json!({});
    let replaced = gateways
        .replace("edge", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2), "spec change");
    assert_eq!(replaced.data["status"]["addresses"][0]["value"], "10.0.0.2");
    // A stale resourceVersion is a conflict, as for built-in kinds.
    let err = gateways
        .replace("edge", &PostParams::default(), &with_status)
        .await
        .unwrap_err();
    assert_eq!(api_status(err).code, 409);
    // Custom resources take merge and JSON patches but no strategic merge patch.
    let err = gateways
        .patch(
            "edge",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(err).code, 415);
    let labelled = gateways
        .patch(
            "edge",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "edge"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(2),
        "metadata-only change"
    );
    // The body's apiVersion must be the URL's.
    let mut beta_body = body.clone();
    beta_body.metadata.name = Some("edge-beta".into());
    beta_body.types.as_mut().unwrap().api_version = GW_BETA.into();
    assert_eq!(
        api_status(
            gateways
                .create(&PostParams::default(), &beta_body)
                .await
                .unwrap_err()
        )
        .code,
        400
    );
    // The same object at v1beta1 (conversion strategy None: only apiVersion differs).
    let beta: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "infra",
        &gvk_resource(GW_BETA, "Gateway", "gateways"),
    );
    let as_beta = beta.get("edge").await.unwrap();
    assert_eq!(as_beta.types.as_ref().unwrap().api_version, GW_BETA);
    assert_eq!(
        as_beta.metadata.resource_version,
        labelled.metadata.resource_version
    );
    gateways
        .delete("edge", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_status(gateways.get("edge").await.unwrap_err()).code,
        404
    );

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.last().map(String::as_str) != Some("DELETED edge") {
        let ev = match tokio::time::timeout_at(deadline, events.try_next()).await {
            Ok(Ok(Some(ev))) => ev,
            other => panic!("watch ended or timed out: {other:?}; saw {seen:?}"),
        };
        match ev {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.name_any())),
            WatchEvent::Modified(o) => {
                assert_eq!(o.types.as_ref().unwrap().api_version, GW);
                seen.push(format!("MODIFIED {}", o.name_any()));
            }
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.name_any())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "ADDED edge",
            "MODIFIED edge",
            "MODIFIED edge",
            "MODIFIED edge",
            "DELETED edge"
        ],
        "create, status, replace, label patch, delete; the refused writes change nothing"
    );
    let stats = api.stats();
    let key = "gateways.gateway.networking.k8s.io";
    assert_eq!(stats.count("watch", key), 1, "{stats:?}");
    assert_eq!(stats.count("create", key), 2, "{stats:?}");
    assert_eq!(
        stats.count("patch", "gateways/status.gateway.networking.k8s.io"),
        1
    );
    assert_eq!(stats.count("update", key), 2, "{stats:?}");
    assert_eq!(stats.count("delete", key), 1, "{stats:?}");
    assert_eq!(
        stats.count("get", key),
        2,
        "v1 and v1beta1 count as one resource"
    );
    drop(events);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.stats().open_watches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_selectors_list_and_watch() {
    let api = server().await;
    let client = api.client();
    let routes_ar = gvk_resource(GW, "HTTPRoute", "httproutes");
    for (ns, name, labels) in [
        ("shop", "cart", json!({"app": "shop", "tier": "web"})),
        ("shop", "pay", json!({"app": "shop", "tier": "canary"})),
        ("blog", "posts", json!({"app": "blog", "tier": "web"})),
        ("blog", "admin", json!({"app": "blog"})),
    ] {
        api.apply_object(&http_route(ns, name, labels)).unwrap();
    }
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &routes_ar);
    let names = |list: kube::core::ObjectList<DynamicObject>| -> Vec<String> {
        list.items.iter().map(|o| o.name_any()).collect()
    };
    let lp = |labels: &str| ListParams::default().labels(labels);
    assert_eq!(
        names(all.list(&lp("app=shop")).await.unwrap()),
        ["cart", "pay"]
    );
    assert_eq!(
        names(
            all.list(&lp("app in (shop,blog),tier!=canary"))
                .await
                .unwrap()
        ),
        ["admin", "posts", "cart"],
        "namespace then name order; != matches a missing label"
    );
    assert_eq!(names(all.list(&lp("!tier")).await.unwrap()), ["admin"]);
    let by_field = all
        .list(&ListParams::default().fields("metadata.namespace=blog,metadata.name!=admin"))
        .await
        .unwrap();
    assert_eq!(names(by_field), ["posts"]);
    let in_shop: Api<DynamicObject> = Api::namespaced_with(client.clone(), "shop", &routes_ar);
    assert_eq!(
        names(
            in_shop
                .list(&ListParams::default().fields("metadata.name=pay"))
                .await
                .unwrap()
        ),
        ["pay"]
    );
    // Custom resources support no other field labels (the CRDs declare no selectableFields).
    let err = all
        .list(&ListParams::default().fields("spec.hostnames=cart.example"))
        .await
        .unwrap_err();
    assert_eq!(api_status(err).code, 400);
    // Paging.
    let page = all.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(page.items.len(), 3);
    let rest = all
        .list(
            &ListParams::default()
                .limit(3)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(rest), ["pay"]);
    // Cluster-scoped custom kinds: metadata.namespace is not a field label; built-in ones
    // accept it.
    let classes: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &gvk_resource(GW, "GatewayClass", "gatewayclasses"),
    );
    let err = classes
        .list(&ListParams::default().fields("metadata.namespace=x"))
        .await
        .unwrap_err();
    assert_eq!(api_status(err).code, 400);
    api.apply_object(&ingress_class("nginx")).unwrap();
    let ing_classes: Api<IngressClass> = Api::all(client.clone());
    let listed = ing_classes
        .list(&ListParams::default().fields("metadata.namespace="))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    // A watcher with a label selector: routes moving into it are applied, out of it deleted.
    let cfg = watcher::Config::default().labels("tier=web");
    let mut stream = watcher::watcher(all.clone(), cfg).boxed();
    let mut state = BTreeMap::<String, DynamicObject>::new();
    let mut log = Vec::new();
    let mut step = async |want: &str, state: &mut BTreeMap<String, DynamicObject>| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ev = match tokio::time::timeout_at(deadline, stream.try_next()).await {
                Ok(Ok(Some(ev))) => ev,
                other => panic!("watcher ended or timed out waiting for {want}: {other:?}"),
            };
            let line = match ev {
                Event::Init | Event::InitDone => continue,
                Event::InitApply(o) | Event::Apply(o) => {
                    let l = format!("apply {}", o.name_any());
                    state.insert(o.name_any(), o);
                    l
                }
                Event::Delete(o) => {
                    state.remove(&o.name_any());
                    format!("delete {}", o.name_any())
                }
            };
            log.push(line.clone());
            if line == want {
                return;
            }
        }
    };
    step("apply posts", &mut state).await;
    if !state.contains_key("cart") {
        step("apply cart", &mut state).await;
    }
    api.apply_object(&http_route(
        "shop",
        "pay",
        json!({"app": "shop", "tier": "web"}),
    ))
    .unwrap();
    step("apply pay", &mut state).await;
    api.apply_object(&http_route("blog", "posts", json!({"app": "blog"})))
        .unwrap();
    step("delete posts", &mut state).await;
    api.apply_object(&http_route(
        "blog",
        "admin",
        json!({"app": "blog", "note": "x"}),
    ))
    .unwrap();
    api.delete_object(GW, "HTTPRoute", Some("shop"), "cart")
        .unwrap();
    step("delete cart", &mut state).await;
    assert_eq!(state.keys().collect::<Vec<_>>(), ["pay"]);
    assert!(!log.iter().any(|l| l.contains("admin")), "{log:?}");
    assert_eq!(api.objects(GW, "HTTPRoute").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_ingress_api_and_in_process_helpers() {
    let api = server().await;
    let client = api.client();
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "shop");
    let body: Ingress = serde_json::from_value(ingress("shop", "web", "shop.example")).unwrap();
    let created = ingresses
        .create(&PostParams::default(), &body)
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref()),
        Some("nginx"),
        "stored as given"
    );
    let everywhere: Api<Ingress> = Api::all(client.clone());
    let mut stream = watcher::watcher(everywhere.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.name_any(), "web");
    api.apply_object(&ingress("blog", "api", "blog.example"))
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (second.namespace().as_deref(), second.name_any().as_str()),
        (Some("blog"), "api")
    );
    assert_eq!(
        everywhere
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    // Namespaced kinds have no named cluster-wide path; kube's typed API never builds one, so
    // the check is on a raw request.
    let raw = axum::http::Request::get("/apis/networking.k8s.io/v1/ingresses/web")
        .body(Vec::new())
        .unwrap();
    assert_eq!(
        api_status(client.request_text(raw).await.unwrap_err()).code,
        404
    );

    // In-process helpers: every kind, including pods and secrets.
    let pod_json = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]},
        "status": {"phase": "Running"},
    });
    let stored = api.apply_object(&pod_json).unwrap();
    assert_eq!(
        stored["status"]["phase"], "Running",
        "fixture writes keep status"
    );
    assert_eq!(
        stored["spec"]["restartPolicy"], "Always",
        "pod defaulting still applies"
    );
    assert_eq!(api.pod("shop", "p").unwrap().metadata.generation, Some(1));
    let secret_json = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "shop"},
        "stringData": {"k": "v"},
    });
    let s1 = api.apply_object(&secret_json).unwrap();
    assert_eq!(s1["data"]["k"], "dg==");
    assert_eq!(s1["type"], "Opaque");
    // Same content again: no change, same resourceVersion.
    let s2 = api.apply_object(&secret_json).unwrap();
    assert_eq!(
        s1["metadata"]["resourceVersion"],
        s2["metadata"]["resourceVersion"]
    );
    assert_eq!(api.objects("v1", "Secret").len(), 1);
    assert_eq!(api.objects(NET, "Ingress").len(), 2);
    assert!(
        api.objects(NET, "Gateway").is_empty(),
        "not served in that group"
    );
    // Errors: unknown kinds, a namespaced kind without namespace, the wrong scope on delete.
    assert_eq!(
        api.apply_object(&json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "namespace": "shop"}}))
            .unwrap_err()
            .code,
        404
    );
    let mut no_ns = ingress("shop", "nons", "x.example");
    no_ns["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    assert_eq!(api.apply_object(&no_ns).unwrap_err().code, 422);
    assert_eq!(
        api.delete_object(NET, "IngressClass", Some("shop"), "nginx")
            .unwrap_err()
            .code,
        400
    );
    assert_eq!(
        api.delete_object(NET, "Ingress", None, "web")
            .unwrap_err()
            .code,
        400
    );
    assert_eq!(
        api.delete_object(NET, "Ingress", Some("shop"), "missing")
            .unwrap_err()
            .code,
        404
    );
    let gone = api
        .delete_object(NET, "Ingress", Some("shop"), "web")
        .unwrap();
    assert_eq!(gone["kind"], "Ingress");
    assert_eq!(gone["apiVersion"], NET);
    assert!(ingresses.get_opt("web").await.unwrap().is_none());
    // Errors name the group-qualified resource, as the real server's do.
    let missing = api_status(ingresses.get("web").await.unwrap_err());
    assert_eq!(
        missing.message,
        "ingresses.networking.k8s.io \"web\" not found"
    );
    let details = missing.details.unwrap();
    assert_eq!(
        (details.group.as_str(), details.kind.as_str()),
        ("networking.k8s.io", "ingresses")
    );
    // The derived namespace list does not grow a "" namespace from cluster-scoped objects.
    api.apply_object(&ingress_class("nginx")).unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns_names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert!(!ns_names.iter().any(String::is_empty), "{ns_names:?}");
    assert!(ns_names.contains(&"blog".to_owned()), "{ns_names:?}");

    let stats = api.stats();
    assert_eq!(stats.count("create", "ingresses.networking.k8s.io"), 1);
    assert_eq!(
        stats.count("list", "ingresses.networking.k8s.io"),
        2,
        "watcher list + list"
    );
    assert!(
        stats.count("watch", "ingresses.networking.k8s.io") >= 1,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scoped_kinds_are_not_found_under_a_namespace() {
    let api = server().await;
    let client = api.client();
    api.apply_object(&ingress_class("nginx")).unwrap();
    api.apply_object(&json!({"apiVersion": GW, "kind": "GatewayClass",
        "metadata": {"name": "envoy"}, "spec": {"controllerName": "example.com/gw"}}))
        .unwrap();
    for (api_version, kind, plural, name) in [
        (NET, "IngressClass", "ingressclasses", "nginx"),
        (GW, "GatewayClass", "gatewayclasses", "envoy"),
        (GW_BETA, "GatewayClass", "gatewayclasses", "envoy"),
    ] {
        let ar = gvk_resource(api_version, kind, plural);
        let cluster: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let got = cluster.get(name).await.unwrap();
        assert!(got.metadata.namespace.is_none(), "{got:?}");
        assert_eq!(got.types.as_ref().unwrap().api_version, api_version);
        assert_eq!(
            cluster
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        // The same object addressed through a namespace: 404 for every verb.
        let namespaced: Api<DynamicObject> = Api::namespaced_with(client.clone(), "shop", &ar);
        assert_eq!(
            api_status(namespaced.get(name).await.unwrap_err()).code,
            404
        );
        assert_eq!(
            api_status(namespaced.list(&ListParams::default()).await.unwrap_err()).code,
            404
        );
        let create = namespaced
            .create(&PostParams::default(), &DynamicObject::new("other", &ar))
            .await
            .unwrap_err();
        assert_eq!(api_status(create).code, 404);
        let delete = namespaced
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_err();
        assert_eq!(api_status(delete).code, 404);
    }
    // Cluster-scoped create and delete over HTTP.
    let classes: Api<IngressClass> = Api::all(client.clone());
    let body: IngressClass = serde_json::from_value(ingress_class("haproxy")).unwrap();
    let created = classes.create(&PostParams::default(), &body).await.unwrap();
    assert!(created.metadata.namespace.is_none());
    assert_eq!(api.objects(NET, "IngressClass").len(), 2);
    classes
        .delete("haproxy", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        api.object(Resource::IngressClasses, "", "haproxy")
            .is_none()
    );
    assert!(api.object(Resource::IngressClasses, "", "nginx").is_some());
}

/// An authorizer that records every request's attributes and asks RBAC.
#[derive(Debug)]
struct Recording {
    rbac: Rbac,
    seen: Mutex<Vec<RequestAttributes>>,
}

impl Authorizer for Recording {
    fn authorize(&self, who: &Identity, attrs: &RequestAttributes) -> Decision {
        if who.user == "viewer" {
            self.seen.lock().unwrap().push(attrs.clone());
        }
        self.rbac.authorize(who, attrs)
    }
}

const VIEWER_TOKEN: &str = "viewer-token";

/// The viewer may read Ingresses in `shop` and list GatewayClasses; a rule for Ingresses in
/// the old `extensions` group (in `blog`) grants nothing for networking.k8s.io.
const VIEWER_RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ingress-reader, namespace: shop}
rules:
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewer, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ingress-reader}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: viewer}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: old-group, namespace: blog}
rules:
- apiGroups: ["extensions"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewer, namespace: blog}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: old-group}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: viewer}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: gatewayclass-lister}
rules:
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gatewayclasses"]
  verbs: ["list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: viewer-gatewayclasses}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: gatewayclass-lister}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: viewer}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_guards_networking_and_gateway_kinds() {
    let rbac = Rbac::from_yaml(VIEWER_RBAC)
        .unwrap()
        .with_kubernetes_defaults()
        .with_superuser(ADMIN_USER);
    let recording = Arc::new(Recording {
        rbac,
        seen: Mutex::new(Vec::new()),
    });
    let mut tokens = ApiServerConfig::default().tokens;
    tokens.insert(VIEWER_TOKEN.to_owned(), "viewer".to_owned());
    let api = ApiServer::start(ApiServerConfig {
        tokens,
        authorizer: recording.clone(),
        ..ApiServerConfig::default()
    })
    .await
    .unwrap();
    api.apply_object(&ingress("shop", "web", "shop.example"))
        .unwrap();
    api.apply_object(&ingress("blog", "api", "blog.example"))
        .unwrap();
    api.apply_object(&ingress_class("nginx")).unwrap();
    let viewer = api.client_with_token(Some(VIEWER_TOKEN)).unwrap();

    // Granted: reads in shop.
    let shop: Api<Ingress> = Api::namespaced(viewer.clone(), "shop");
    assert_eq!(
        shop.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    shop.get("web").await.unwrap();
    // Denied: writes in shop, reads in blog (wrong API group), cluster-wide reads.
    let body: Ingress = serde_json::from_value(ingress("shop", "new", "new.example")).unwrap();
    let denied = api_status(
        shop.create(&PostParams::default(), &body)
            .await
            .unwrap_err(),
    );
    assert_eq!((denied.code, denied.reason.as_str()), (403, "Forbidden"));
    assert!(
        denied.message.contains(
            "User \"viewer\" cannot create resource \"ingresses\" in API group \
             \"networking.k8s.io\" in the namespace \"shop\""
        ),
        "{}",
        denied.message
    );
    let blog: Api<Ingress> = Api::namespaced(viewer.clone(), "blog");
    assert_eq!(
        api_status(blog.list(&ListParams::default()).await.unwrap_err()).code,
        403
    );
    assert_eq!(api_status(blog.get("api").await.unwrap_err()).code, 403);
    let all: Api<Ingress> = Api::all(viewer.clone());
    let cluster = api_status(all.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(cluster.code, 403);
    assert!(
        cluster.message.contains("at the cluster scope"),
        "{}",
        cluster.message
    );
    // Cluster-scoped: list granted by the ClusterRole, nothing else.
    let gateway_classes: Api<DynamicObject> = Api::all_with(
        viewer.clone(),
        &gvk_resource(GW, "GatewayClass", "gatewayclasses"),
    );
    gateway_classes.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        api_status(gateway_classes.get("envoy").await.unwrap_err()).code,
        403
    );
    let ingress_classes: Api<IngressClass> = Api::all(viewer.clone());
    assert_eq!(
        api_status(
            ingress_classes
                .list(&ListParams::default())
                .await
                .unwrap_err()
        )
        .code,
        403
    );
    // Nothing was written by the refused create.
    assert_eq!(api.objects(NET, "Ingress").len(), 2);

    // The attributes the authorizer saw: group, plural, namespace ("" at cluster scope),
    // name and verb, as Kubernetes' RBAC authorizer receives them.
    let seen = recording.seen.lock().unwrap().clone();
    let has = |verb: &str, group: &str, resource: &str, ns: &str, name: &str| {
        seen.iter().any(|a| {
            a.resource_request
                && a.verb == verb
                && a.api_group == group
                && a.resource == resource
                && a.namespace == ns
                && a.name == name
                && a.subresource.is_empty()
        })
    };
    assert!(
        has("list", "networking.k8s.io", "ingresses", "shop", ""),
        "{seen:?}"
    );
    assert!(
        has("get", "networking.k8s.io", "ingresses", "shop", "web"),
        "{seen:?}"
    );
    assert!(
        has("create", "networking.k8s.io", "ingresses", "shop", ""),
        "{seen:?}"
    );
    assert!(
        has("list", "networking.k8s.io", "ingresses", "", ""),
        "{seen:?}"
    );
    assert!(
        has(
            "list",
            "gateway.networking.k8s.io",
            "gatewayclasses",
            "",
            ""
        ),
        "{seen:?}"
    );
    assert!(
        has(
            "get",
            "gateway.networking.k8s.io",
            "gatewayclasses",
            "",
            "envoy"
        ),
        "{seen:?}"
    );
    assert!(
        has("list", "networking.k8s.io", "ingressclasses", "", ""),
        "{seen:?}"
    );

    let stats = api.stats();
    let forbidden = |verb: &str, key: &str| {
        stats
            .forbidden
            .get(&(verb.to_owned(), key.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        forbidden("list", "ingresses.networking.k8s.io"),
        2,
        "{stats:?}"
    );
    assert_eq!(
        forbidden("create", "ingresses.networking.k8s.io"),
        1,
        "{stats:?}"
    );
    assert_eq!(
        forbidden("get", "gatewayclasses.gateway.networking.k8s.io"),
        1
    );
    assert_eq!(
        stats.count("list", "ingresses.networking.k8s.io"),
        1,
        "{stats:?}"
    );

    // kubectl, as the viewer, is refused the same way.
    if !real::require("kubectl", kubectl_available()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, Some(VIEWER_TOKEN))
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(["get", "ingress", "-n", "blog", "--request-timeout=10s"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kubectl must be refused");
    assert!(
        stderr.contains("Forbidden") && stderr.contains("ingresses.networking.k8s.io"),
        "{stderr}"
    );
}

/// Polls the stand-in's counters until `cond` holds (10 s at most).
async fn wait_for_stats(api: &ApiServer, what: &str, cond: impl Fn(&ApiStats) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = api.stats();
        if cond(&stats) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Per user: response body bytes (whole bodies, and a watch's lines as the client reads
/// them), requests, watch streams open and started, and the connections they came on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_bytes_watches_and_connections_per_user() {
    let api = ApiServer::start(ApiServerConfig {
        // No BOOKMARK during the test: the watch's bytes are exactly the line read below.
        bookmark_interval: Duration::from_secs(3600),
        tokens: BTreeMap::from([
            ("token-a".to_owned(), "user-a".to_owned()),
            ("token-b".to_owned(), "user-b".to_owned()),
        ]),
        ..ApiServerConfig::default()
    })
    .await
    .unwrap();
    api.create_pod(&pod("ns", "p0", "node-a", "web")).unwrap();
    let a = api.client_with_token(Some("token-a")).unwrap();
    let b = api.client_with_token(Some("token-b")).unwrap();
    let get = |path: &str| axum::http::Request::get(path).body(Vec::new()).unwrap();

    let list = a
        .request_text(get("/api/v1/namespaces/ns/pods"))
        .await
        .unwrap();
    let one = a
        .request_text(get("/api/v1/namespaces/ns/pods/p0"))
        .await
        .unwrap();
    let selected = a
        .request_text(get(
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&labelSelector=app%3Dweb",
        ))
        .await
        .unwrap();
    let a_bytes = (list.len() + one.len() + selected.len()) as u64;
    let stats = api.stats();
    assert_eq!(stats.requests_of("user-a"), 3);
    assert_eq!(stats.bytes_of("user-a"), a_bytes);
    let shape = |user: &str, verb: &str, scope: &'static str, selector: &str| RequestShape {
        user: user.into(),
        verb: verb.into(),
        resource: "pods".into(),
        scope,
        selector: selector.into(),
    };
    assert_eq!(
        stats.requests_by_shape,
        BTreeMap::from([
            (shape("user-a", "list", "namespace", ""), 1),
            (shape("user-a", "get", "object", ""), 1),
            (
                shape("user-a", "list", "cluster", "fields spec.nodeName; labels"),
                1
            ),
        ])
    );
    assert_eq!(stats.open_connections_by_user.get("user-a"), Some(&1));
    assert_eq!(stats.bytes_of("user-b"), 0);
    assert!(stats.open_watches_by_user.is_empty());

    // b watches from the list's resourceVersion: only the pod created after it comes.
    let listed: serde_json::Value = serde_json::from_str(&list).unwrap();
    let rv = listed["metadata"]["resourceVersion"].as_str().unwrap();
    let mut watch = Box::pin(
        b.request_stream(get(&format!(
            "/api/v1/namespaces/ns/pods?watch=true&resourceVersion={rv}"
        )))
        .await
        .unwrap(),
    );
    wait_for_stats(&api, "b's watch open", |s| {
        s.open_watches_by_user.get("user-b") == Some(&1)
    })
    .await;
    api.create_pod(&pod("ns", "p1", "node-a", "web")).unwrap();
    let mut line = String::new();
    futures::AsyncBufReadExt::read_line(&mut watch, &mut line)
        .await
        .unwrap();
    assert!(
        line.contains(r#""type":"ADDED""#) && line.contains("p1"),
        "{line}"
    );
    let stats = api.stats();
    assert_eq!(stats.bytes_of("user-b"), line.len() as u64);
    assert_eq!(stats.requests_of("user-b"), 1);
    assert_eq!(stats.watches_started_by_user.get("user-b"), Some(&1));
    assert_eq!(stats.watch_events_by_user.get("user-b"), Some(&1));
    assert_eq!(
        stats
            .requests_by_shape
            .get(&shape("user-b", "watch", "namespace", "")),
        Some(&1)
    );
    assert_eq!(stats.open_connections_by_user.get("user-b"), Some(&1));
    assert_eq!(stats.bytes_of("user-a"), a_bytes);

    drop(watch);
    wait_for_stats(&api, "b's watch closed", |s| {
        !s.open_watches_by_user.contains_key("user-b")
    })
    .await;
    api.reset_stats();
    let stats = api.stats();
    assert!(stats.bytes_by_user.is_empty() && stats.watches_started_by_user.is_empty());
    assert!(stats.requests_by_shape.is_empty() && stats.watch_events_by_user.is_empty());
}
