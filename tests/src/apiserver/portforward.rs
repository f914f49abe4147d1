//! `GET /api/v1/namespaces/{ns}/pods/{name}/portforward?ports=P`: a port of a pod, forwarded
//! over a WebSocket as kube-rs' `Api::portforward` (and `kubectl port-forward`'s WebSocket
//! path) speak it, subprotocol `v4.channel.k8s.io`.
//!
//! The real API server hands the stream to the pod's kubelet, which connects to `localhost:P`
//! inside the pod's network namespace. The stand-in's pods have loopback addresses of their own
//! (`status.podIP`, e.g. `127.0.0.2`), which stand for that namespace: it connects to
//! `podIP:P`. What a client sees is the real exchange:
//!
//! - authorization like any request: verb `get` (a WebSocket upgrade is a GET; Kubernetes 1.35
//!   also checks `create`), resource `pods`, subresource `portforward`: a 403 `Status` before
//!   the upgrade;
//! - a missing pod is a 404, a pod without `spec.nodeName` a 400 ("does not have a host
//!   assigned"), a request without `ports` or with more than one a 400 (the stand-in forwards
//!   one port per connection), a request without WebSocket headers a 400;
//! - after the upgrade, one binary frame per channel (0 data, 1 error) carrying the port,
//!   little-endian, then data frames `[0, bytes...]` both ways;
//! - a pod that is not running, or nothing listening on the port: one frame on the error
//!   channel worded like kubelet's (`error forwarding port 9978 to pod ...: ... connection
//!   refused`), then a close.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::Shared;
use super::error::ApiError;
use super::kinds::Resource;

/// The only subprotocol served (kube-rs offers `v5.channel.k8s.io, v4.channel.k8s.io`; port
/// forwarding has no v5).
const PROTOCOL: &str = "v4.channel.k8s.io";

/// Checks the request and the pod, answers `101 Switching Protocols` and forwards on the
/// upgraded connection from a task of its own.
pub(crate) fn upgrade(
    sh: &Arc<Shared>,
    parts: &mut Parts,
    namespace: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let pod = sh
        .store
        .get(Resource::Pods, namespace, name)
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    let field = |p: &str| {
        pod.obj
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    if field("/spec/nodeName").is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let ports: Vec<&str> = q
        .get("ports")
        .map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let port = match ports.as_slice() {
        [one] => one
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ApiError::bad_request(format!("invalid port {one:?}")))?,
        [] => return Err(ApiError::bad_request("at least one port must be specified")),
        _ => {
            return Err(ApiError::bad_request(
                "the testbed forwards one port per connection",
            ));
        }
    };
    let header_text = |h: header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let key = header_text(header::SEC_WEBSOCKET_KEY);
    if !header_text(header::UPGRADE).eq_ignore_ascii_case("websocket") || key.is_empty() {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    if !header_text(header::SEC_WEBSOCKET_PROTOCOL)
        .split(',')
        .any(|p| p.trim() == PROTOCOL)
    {
        return Err(ApiError::bad_request(format!(
            "no supported WebSocket subprotocol offered (the testbed serves {PROTOCOL})"
        )));
    }
    let on_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::bad_request("this connection cannot be upgraded"))?;
    let target = if field("/status/phase") == "Running" && !field("/status/podIP").is_empty() {
        Ok(format!("{}:{port}", field("/status/podIP")))
    } else {
        Err(format!(
            "error forwarding port {port} to pod {namespace}/{name}: container not running"
        ))
    };
    let pod_label = format!("{namespace}/{name}");
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                forward(ws, target, port, &pod_label).await;
            }
            Err(e) => tracing::debug!(error = %e, "API stand-in: portforward upgrade failed"),
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL)
        .body(Body::empty())
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))
}

/// Port announcement, then bytes both ways until either side ends.
async fn forward<S>(ws: WebSocketStream<S>, target: Result<String, String>, port: u16, pod: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut from_client) = ws.split();
    let [lo, hi] = port.to_le_bytes();
    for channel in [0u8, 1] {
        if sink
            .send(Message::binary(vec![channel, lo, hi]))
            .await
            .is_err()
        {
            return;
        }
    }
    let connected = match target {
        Ok(address) => tokio::net::TcpStream::connect(&address).await.map_err(|e| {
            format!("error forwarding port {port} to pod {pod}: dial tcp4 {address}: connect: {e}")
        }),
        Err(message) => Err(message),
    };
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err(message) => {
            let mut frame = vec![1u8];
            frame.extend_from_slice(message.as_bytes());
            let _ = sink.send(Message::binary(frame)).await;
            let _ = sink.send(Message::Close(None)).await;
            return;
        }
    };
    let (mut pod_reader, mut pod_writer) = tcp.into_split();
    let to_pod = async {
        while let Some(Ok(message)) = from_client.next().await {
            let written = match message {
                Message::Binary(bytes) if bytes.len() > 1 && bytes[0] == 0 => {
                    pod_writer.write_all(&bytes[1..]).await
                }
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if written.is_err() {
                break;
            }
        }
        let _ = pod_writer.shutdown().await;
    };
    let from_pod = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match pod_reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(0u8);
                    frame.extend_from_slice(&buf[..n]);
                    if sink.send(Message::binary(frame)).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    // The pod's side closing ends the forward; the client's closing first ends only its
    // direction (what the pod still sends is delivered).
    tokio::pin!(to_pod, from_pod);
    tokio::select! {
        () = &mut to_pod => (&mut from_pod).await,
        () = &mut from_pod => {}
    }
}
