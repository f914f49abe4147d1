//! The user's connection to the API server, for the commands run from a workstation or CI
//! (`kubectl mountlag status`, `mountlag lint`): kube's usual inference (`KUBECONFIG`,
//! `~/.kube/config`, in-cluster), or `--kubeconfig FILE` and `--context NAME`, as kubectl
//! takes them. Errors are one line each, naming the server.

use std::path::Path;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::text::untrusted_capped;

/// Connecting to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One API request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of an error is quoted.
const MAX_QUOTED_BYTES: usize = 400;

/// A client, and what the one-line errors and defaults need.
pub struct Connection {
    pub client: kube::Client,
    /// `https://10.0.0.1:6443`, as the kubeconfig names it.
    pub server: String,
    /// The namespace of the kubeconfig context (`default` when it names none), as kubectl uses
    /// it without `-n`.
    pub default_namespace: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("default_namespace", &self.default_namespace)
            .finish_non_exhaustive()
    }
}

/// Reads the kubeconfig (or the in-cluster configuration) and builds the client; nothing is
/// sent yet.
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Connection, String> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        cluster: None,
        user: None,
    };
    let mut config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                format!(
                    "cannot read the kubeconfig {}: {}",
                    path.display(),
                    chain(&e)
                )
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| {
                    format!(
                        "cannot use the kubeconfig {}: {}",
                        path.display(),
                        chain(&e)
                    )
                })?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("cannot use the kubeconfig: {}", chain(&e)))?,
        None => kube::Config::infer().await.map_err(|e| {
            format!(
                "no usable kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster: {}",
                chain(&e)
            )
        })?,
    };
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let default_namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config)
        .map_err(|e| format!("cannot set up a client for {server}: {}", chain(&e)))?;
    Ok(Connection {
        client,
        server,
        default_namespace,
    })
}

/// `cannot reach the Kubernetes API server at URL: why` for an error of the connection (not
/// an answer of the server); `None` otherwise.
pub fn unreachable(server: &str, err: &kube::Error) -> Option<String> {
    let why = match err {
        kube::Error::HyperError(e) => chain(e),
        kube::Error::Service(e) => chain(e.as_ref()),
        _ => return None,
    };
    Some(format!(
        "cannot reach the Kubernetes API server at {server}: {}",
        one_line(&why)
    ))
}

/// Escaped (control characters shown, never sent) and cut: one line.
pub fn one_line(text: &str) -> String {
    untrusted_capped(text.trim(), MAX_QUOTED_BYTES).to_string()
}

/// An error and its sources, `a: b: c`, leaving out a source its parent already quotes.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
