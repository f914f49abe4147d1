//! A list-then-watch of one object by name, with the events kube-runtime's watcher yields
//! (`Init`, `InitApply`, `InitDone`, `Apply`, `Delete`) but without its read buffer.
//!
//! ```text
//!  list ?fieldSelector=metadata.name=N&resourceVersion=0 ──▶ Init, InitApply?, InitDone
//!    └─▶ watch ?resourceVersion=RV&allowWatchBookmarks ──▶ line ──▶ Apply | Delete | (bookmark)
//!          ▲    (the server ends it after timeoutSeconds, or it is silent 5 s past that)
//!          └───────────────────── watch again from RV ◀────────┘   error ▶ Err (the caller relists)
//! ```
//!
//! Why not `kube::runtime::watcher`: kube-client decodes every watch through a `FramedRead`
//! whose read buffer starts at 8 KiB and is kept, grown to the largest event seen, for the
//! life of the watch. The agent holds one watch per referenced Secret — 1,000 on a big node —
//! and that buffer was its largest heap consumer (8.1 MiB at 1,000 Secrets, docs/benchmarks.md).
//! Here a line lying within one body chunk is parsed in place, a line spread over chunks is
//! gathered in a buffer freed once the line is complete, so an idle watch holds no buffer.
//! A watch of one named object never pages, so the list is a single request.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf as _, Bytes};
use futures::stream::{self, BoxStream};
use http_body_util::BodyExt as _;
use kube::Client;
use kube::api::{ListParams, VersionMatch, WatchEvent, WatchParams};
use kube::core::{ObjectList, Request, Status};
use kube::runtime::watcher::{Error, Event};
use tokio::sync::Semaphore;

/// The watch as a stream of kube-runtime's events; it ends only after an error (which the
/// caller answers by listing afresh after a backoff, see `watches::RelistingWatch`).
///
/// A list waits for one of `lists`' permits and holds it until its answer is parsed: a
/// thousand watches starting (or relisting after an outage) together then hold a few list
/// answers at a time instead of all of them, and the API server sees a bounded burst.
pub fn watch_named<K>(
    client: Client,
    namespace: &str,
    name: &str,
    timeout_seconds: Option<u32>,
    lists: Arc<Semaphore>,
) -> BoxStream<'static, Result<Event<K>, Error>>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + Send + 'static,
{
    let watch = NamedWatch {
        client,
        request: Request::new(K::url_path(&(), Some(namespace))),
        field_selector: format!("metadata.name={name}"),
        timeout_seconds,
        lists,
        state: State::Empty,
    };
    Box::pin(stream::unfold(Some(watch), |watch| async move {
        let mut watch = watch?;
        let item = watch.next().await;
        // After an error the stream ends: the caller starts a new one with a fresh list.
        let keep = item.is_ok().then_some(watch);
        Some((item, keep))
    }))
}

struct NamedWatch<K> {
    client: Client,
    request: Request,
    field_selector: String,
    timeout_seconds: Option<u32>,
    lists: Arc<Semaphore>,
    state: State<K>,
}

enum State<K> {
    Empty,
    Listed {
        items: VecDeque<K>,
        resource_version: String,
    },
    Idle {
        resource_version: String,
    },
    Watching {
        resource_version: String,
        lines: Lines,
    },
}

impl<K> NamedWatch<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + Send + 'static,
{
    async fn next(&mut self) -> Result<Event<K>, Error> {
        loop {
            match std::mem::replace(&mut self.state, State::Empty) {
                State::Empty => {
                    // Closed only if the agent is going away: list anyway.
                    let permit = Arc::clone(&self.lists).acquire_owned().await.ok();
                    // The request futures are boxed: held inline they would size every idle
                    // watch's stream for them (2,032 B instead of 968; docs/benchmarks.md).
                    let list = Box::pin(self.list())
                        .await
                        .map_err(Error::InitialListFailed)?;
                    drop(permit);
                    let resource_version = list
                        .metadata
                        .resource_version
                        .filter(|v| !v.is_empty())
                        .ok_or(Error::NoResourceVersion)?;
                    self.state = State::Listed {
                        items: list.items.into(),
                        resource_version,
                    };
                    return Ok(Event::Init);
                }
                State::Listed {
                    mut items,
                    resource_version,
                } => match items.pop_front() {
                    Some(item) => {
                        self.state = State::Listed {
                            items,
                            resource_version,
                        };
                        return Ok(Event::InitApply(item));
                    }
                    None => {
                        self.state = State::Idle { resource_version };
                        return Ok(Event::InitDone);
                    }
                },
                State::Idle { resource_version } => {
                    let lines = Box::pin(self.watch(&resource_version))
                        .await
                        .map_err(Error::WatchStartFailed)?;
                    self.state = State::Watching {
                        resource_version,
                        lines,
                    };
                }
                State::Watching {
                    mut resource_version,
                    mut lines,
                } => {
                    let next = tokio::time::timeout(self.idle_limit(), lines.next_line()).await;
                    // The server ended the watch (timeoutSeconds), or never did and has been
                    // silent past it (a dead connection kept alive by HTTP/2 pings): resume
                    // where it was.
                    let Some(line) = next.unwrap_or(Ok(None)).map_err(Error::WatchFailed)? else {
                        self.state = State::Idle { resource_version };
                        continue;
                    };
                    let event = match serde_json::from_slice::<WatchEvent<K>>(&line) {
                        Ok(event) => event,
                        // A line that is no event may be a bare Status (as kube-client reads it).
                        Err(err) => match serde_json::from_slice::<Status>(&line) {
                            Ok(status) => return Err(Error::WatchError(Box::new(status))),
                            Err(_) => return Err(Error::WatchFailed(kube::Error::SerdeError(err))),
                        },
                    };
                    let (event, version) = match event {
                        WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                            let version = object.meta().resource_version.clone();
                            (Some(Event::Apply(object)), version)
                        }
                        WatchEvent::Deleted(object) => {
                            let version = object.meta().resource_version.clone();
                            (Some(Event::Delete(object)), version)
                        }
                        WatchEvent::Bookmark(bookmark) => {
                            (None, Some(bookmark.metadata.resource_version))
                        }
                        // 410 Gone and every other error: the caller lists afresh.
                        WatchEvent::Error(status) => return Err(Error::WatchError(status)),
                    };
                    if let Some(version) = version.filter(|v| !v.is_empty()) {
                        resource_version = version;
                    }
                    self.state = State::Watching {
                        resource_version,
                        lines,
                    };
                    if let Some(event) = event {
                        return Ok(event);
                    }
                }
            }
        }
    }

    /// kube's watcher gives up on a watch silent for its timeout plus 5 s; so does this one.
    fn idle_limit(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.timeout_seconds.unwrap_or(290)) + 5)
    }

    async fn list(&mut self) -> Result<ObjectList<K>, kube::Error> {
        // kube's default list semantic: any version not older than the cache's, served by the
        // API server's watch cache instead of etcd.
        let mut params = ListParams::default().fields(&self.field_selector);
        params.resource_version = Some("0".to_string());
        params.version_match = Some(VersionMatch::NotOlderThan);
        let request = self
            .request
            .list(&params)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request(request).await
    }

    async fn watch(&mut self, resource_version: &str) -> Result<Lines, kube::Error> {
        let mut params = WatchParams::default().fields(&self.field_selector);
        params.timeout = self.timeout_seconds;
        let mut request = self
            .request
            .watch(&params, resource_version)
            .map_err(kube::Error::BuildRequest)?;
        // As kube-client asks for its watches: one gzip member per event is not decoded.
        request.headers_mut().insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
        let response = self
            .client
            .send(request.map(kube::client::Body::from))
            .await?;
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            let body = response.into_body().collect().await?.to_bytes();
            let status = serde_json::from_slice::<Status>(&body).unwrap_or_else(|_| {
                Status::failure(
                    &String::from_utf8_lossy(&body),
                    "Failed to parse error data",
                )
                .with_code(status.as_u16())
            });
            return Err(kube::Error::Api(Box::new(status)));
        }
        Ok(Lines::new(response.into_body()))
    }
}

/// Newline-delimited JSON out of a response body, holding no buffer between lines.
struct Lines {
    body: kube::client::Body,
    /// The rest of the last chunk read.
    chunk: Bytes,
    /// The start of a line that the chunks read so far have not finished.
    partial: Vec<u8>,
}

/// A watch line is one object (a Secret is capped at 1 MiB by the API server) in JSON: a line
/// longer than this is not an event.
const MAX_LINE_BYTES: usize = 8 << 20;

impl Lines {
    fn new(body: kube::client::Body) -> Self {
        Self {
            body,
            chunk: Bytes::new(),
            partial: Vec::new(),
        }
    }

    /// The next non-empty line without its newline; `None` at the end of the body (a last line
    /// without newline is dropped, as kube-client drops an incomplete event).
    async fn next_line(&mut self) -> Result<Option<Bytes>, kube::Error> {
        loop {
            if let Some(line) = split_line(&mut self.chunk, &mut self.partial) {
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.partial.len() > MAX_LINE_BYTES {
                return Err(kube::Error::LinesCodecMaxLineLengthExceeded);
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.chunk = data;
                    }
                }
                Some(Err(err)) if ends_resumably(&err) => return Ok(None),
                Some(Err(err)) => return Err(err),
            }
        }
    }
}

/// Takes the next complete line out of `chunk` (and what `partial` holds of its start); keeps
/// an unfinished line's start in `partial`. Neither holds memory once a line is complete and
/// the chunk used up.
fn split_line(chunk: &mut Bytes, partial: &mut Vec<u8>) -> Option<Bytes> {
    match chunk.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let mut line = chunk.split_to(end + 1);
            line.truncate(end);
            if chunk.is_empty() {
                // Let go of the frame the rest of the chunk pointed into.
                *chunk = Bytes::new();
            }
            if partial.is_empty() {
                Some(line)
            } else {
                partial.extend_from_slice(&line);
                Some(Bytes::from(std::mem::take(partial)))
            }
        }
        None => {
            partial.extend_from_slice(chunk);
            chunk.advance(chunk.len());
            *chunk = Bytes::new();
            None
        }
    }
}

/// A watch cut off mid-stream after minutes (a proxy, a chunked encoding ended early) is
/// resumed from its last version, as kube-client does, not reported as a failure.
fn ends_resumably(err: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = source {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
            || err.to_string().contains("unexpected EOF during chunk")
        {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Feeds `chunks` through `split_line` and returns the lines, and what is left pending.
    fn lines_of(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut partial = Vec::new();
        let mut lines = Vec::new();
        for chunk in chunks {
            let mut chunk = Bytes::copy_from_slice(chunk);
            while !chunk.is_empty() {
                if let Some(line) = split_line(&mut chunk, &mut partial) {
                    lines.push(line.to_vec());
                }
            }
        }
        (lines, partial)
    }

    #[tokio::test(start_paused = true)]
    async fn lists_wait_for_a_permit_so_no_more_than_the_bound_are_in_flight() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        use futures::StreamExt as _;
        use k8s_openapi::api::core::v1::Secret;

        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (now, max) = (Arc::clone(&in_flight), Arc::clone(&most));
        // An API server that takes 10 ms per list.
        let server = tower::service_fn(move |_: http::Request<kube::client::Body>| {
            let (now, max) = (Arc::clone(&now), Arc::clone(&max));
            async move {
                max.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                let body = r#"{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[]}"#;
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    Bytes::from_static(body.as_bytes()),
                )))
            }
        });
        let client = Client::new(server, "default");
        let lists = Arc::new(Semaphore::new(4));
        let firsts = (0..40).map(|i| {
            let mut watch = watch_named::<Secret>(
                client.clone(),
                "ns",
                &format!("s-{i}"),
                None,
                Arc::clone(&lists),
            );
            async move { matches!(watch.next().await, Some(Ok(Event::Init))) }
        });
        let listed = futures::future::join_all(firsts).await;
        assert!(listed.iter().all(|ok| *ok), "every watch listed");
        assert_eq!(most.load(Ordering::SeqCst), 4, "lists in flight at most");
    }

    #[test]
    fn lines_are_split_within_and_across_chunks() {
        let (lines, pending) = lines_of(&[b"{\"a\":1}\n{\"b\"", b":2}", b"\n\n{\"c\":3}\n{\"d"]);
        assert_eq!(
            lines,
            [
                b"{\"a\":1}".to_vec(),
                b"{\"b\":2}".to_vec(),
                b"".to_vec(),
                b"{\"c\":3}".to_vec()
            ]
        );
        assert_eq!(pending, b"{\"d");
    }

    #[test]
    fn nothing_is_held_once_a_line_is_complete() {
        let mut partial = Vec::new();
        let mut chunk = Bytes::from_static(b"{\"start\":");
        assert_eq!(split_line(&mut chunk, &mut partial), None);
        assert!(chunk.is_empty());
        let mut chunk = Bytes::from_static(b"1}\n");
        let line = split_line(&mut chunk, &mut partial).unwrap();
        assert_eq!(&line[..], b"{\"start\":1}");
        assert_eq!(partial.capacity(), 0, "the gathering buffer is given back");
        assert!(chunk.is_empty());
    }

    #[test]
    fn a_cut_off_stream_is_resumed_but_other_errors_are_not() {
        let eof = kube::Error::ReadEvents(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed",
        ));
        assert!(ends_resumably(&eof));
        let chunk = kube::Error::Service("unexpected EOF during chunk size line".into());
        assert!(ends_resumably(&chunk));
        let other = kube::Error::ReadEvents(std::io::Error::other("reset"));
        assert!(!ends_resumably(&other));
    }
}
