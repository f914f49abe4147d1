//! Tests of [`super`].

#![allow(clippy::unwrap_used)]

use super::*;
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};

/// A client that answers at once with the number of the shard that made it.
#[derive(Clone)]
struct Numbered {
    shard: usize,
    fail: bool,
}

impl SendRequest for Numbered {
    type Body = Full<Bytes>;
    type Error = std::io::Error;
    fn send(&self, _request: Request<Body>) -> Exchange<Self::Body, Self::Error> {
        let (shard, fail) = (self.shard, self.fail);
        Box::pin(async move {
            if fail {
                Err(std::io::Error::other("connection refused"))
            } else {
                Ok(Response::new(Full::new(Bytes::from(shard.to_string()))))
            }
        })
    }
}

fn shards(cap: usize, fail: bool) -> StreamShards<Numbered> {
    let made = Arc::new(AtomicUsize::new(0));
    StreamShards::new(cap, move || Numbered {
        shard: made.fetch_add(1, Ordering::SeqCst),
        fail,
    })
}

/// One request through (a clone of) `shards`, as kube's client sends it.
async fn request<C: SendRequest>(
    shards: &StreamShards<C>,
) -> Result<Response<ShardBody<C::Body>>, BoxError> {
    let mut service = shards.clone();
    service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::empty()))
        .await
}

async fn send(shards: &StreamShards<Numbered>) -> Response<ShardBody<Full<Bytes>>> {
    request(shards).await.unwrap()
}

async fn shard_of(response: Response<ShardBody<Full<Bytes>>>) -> usize {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).parse().unwrap()
}

#[tokio::test]
async fn open_requests_beyond_the_cap_get_a_new_connection() {
    let shards = shards(3, false);
    let mut open = Vec::new();
    for _ in 0..7 {
        open.push(send(&shards).await);
    }
    assert_eq!(shards.open_per_shard(), vec![3, 3, 1]);
    let mut served = Vec::new();
    for response in open {
        served.push(shard_of(response).await);
    }
    assert_eq!(served, vec![0, 0, 0, 1, 1, 1, 2]);
    assert_eq!(shards.open_per_shard(), vec![0, 0, 0]);
}

#[tokio::test]
async fn a_finished_request_frees_its_slot_for_the_next_one() {
    let shards = shards(2, false);
    let first = send(&shards).await;
    let second = send(&shards).await;
    assert_eq!(shards.open_per_shard(), vec![2]);
    // The slot is held while the body is (a watch stream), released when it is dropped.
    drop(first);
    assert_eq!(shards.open_per_shard(), vec![1]);
    assert_eq!(shard_of(send(&shards).await).await, 0);
    drop(second);
    assert_eq!(shards.open_per_shard(), vec![0]);
}

/// Counts the requests it was given; the first one waits for `release`.
#[derive(Clone)]
struct SlowFirst {
    sent: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
}

impl SendRequest for SlowFirst {
    type Body = Full<Bytes>;
    type Error = std::io::Error;
    fn send(&self, _request: Request<Body>) -> Exchange<Self::Body, Self::Error> {
        let first = self.sent.fetch_add(1, Ordering::SeqCst) == 0;
        let release = Arc::clone(&self.release);
        Box::pin(async move {
            if first {
                release.notified().await;
            }
            Ok(Response::new(Full::new(Bytes::new())))
        })
    }
}

#[tokio::test]
async fn a_new_connections_other_requests_wait_for_its_first_answer() {
    let client = SlowFirst {
        sent: Arc::new(AtomicUsize::new(0)),
        release: Arc::new(tokio::sync::Notify::new()),
    };
    let shards = StreamShards::new(10, {
        let client = client.clone();
        move || client.clone()
    });
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let shards = shards.clone();
        requests.spawn(async move { request(&shards).await.map(drop) });
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        client.sent.load(Ordering::SeqCst),
        1,
        "only the first request is on its way while the connection is set up"
    );
    client.release.notify_one();
    while let Some(result) = requests.join_next().await {
        assert!(result.unwrap().is_ok());
    }
    assert_eq!(client.sent.load(Ordering::SeqCst), 5);
    assert_eq!(shards.open_per_shard(), vec![0]);
}

/// One connection of a server that serves `limit` streams at once and queues the rest
/// (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`): a queued request is never answered here.
#[derive(Clone)]
struct LimitedConnection {
    limit: usize,
    streams: Arc<AtomicUsize>,
}

/// A body that holds its stream until dropped.
struct StreamBody {
    streams: Arc<AtomicUsize>,
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        Poll::Pending
    }
}

impl SendRequest for LimitedConnection {
    type Body = StreamBody;
    type Error = std::io::Error;
    fn send(&self, _request: Request<Body>) -> Exchange<Self::Body, Self::Error> {
        let this = self.clone();
        Box::pin(async move {
            if this.streams.fetch_add(1, Ordering::SeqCst) >= this.limit {
                this.streams.fetch_sub(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            Ok(Response::new(StreamBody {
                streams: this.streams,
            }))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_stops_answering_keeps_fewer_requests_and_the_rest_move_on() {
    // The agent's cap (5) is above the server's limit (2).
    let shards = StreamShards::new(5, || LimitedConnection {
        limit: 2,
        streams: Arc::new(AtomicUsize::new(0)),
    });
    let mut watches = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let shards = shards.clone();
        watches.spawn(async move { request(&shards).await });
    }
    let mut answered = Vec::new();
    let mut abandoned = Vec::new();
    while let Some(result) = watches.join_next().await {
        match result.unwrap() {
            Ok(response) => answered.push(response),
            Err(error) => abandoned.push(error.to_string()),
        }
    }
    assert_eq!(answered.len(), 2, "the server's limit: {abandoned:?}");
    assert_eq!(abandoned.len(), 3);
    assert!(
        abandoned[0].contains("no answer within 30s"),
        "{abandoned:?}"
    );
    assert_eq!(shards.cap(), 2, "learned the server's limit");
    // The retried requests go to a new connection and are answered at once.
    let mut retried = Vec::new();
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        retried.push(request(&shards).await.unwrap());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
    assert_eq!(shards.open_per_shard(), vec![2, 2, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_server_that_answers_nothing_leaves_the_cap_alone() {
    let shards = StreamShards::new(5, || LimitedConnection {
        limit: 0,
        streams: Arc::new(AtomicUsize::new(0)),
    });
    assert!(request(&shards).await.is_err());
    assert_eq!(
        shards.cap(),
        5,
        "an outage says nothing about the stream limit"
    );
    assert_eq!(shards.open_per_shard(), vec![0]);
}

#[tokio::test]
async fn a_failed_request_frees_its_slot() {
    let shards = shards(1, true);
    for _ in 0..3 {
        assert!(request(&shards).await.is_err());
    }
    assert_eq!(shards.open_per_shard(), vec![0], "one connection, reused");
}
