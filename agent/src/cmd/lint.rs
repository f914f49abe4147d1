//! `mountlag lint` (and `kubectl mountlag lint`): one pass over a namespace, or every namespace,
//! with the user's kubeconfig. Lists the objects, converts them with the agent's own edge
//! converters, runs the pure checks of `mountlag_core::lint` and prints a table (or `--json`).
//!
//! ```text
//!  list (scope): pods, Ingresses, Gateways, HTTPRoutes, TLSRoutes, ReferenceGrants,
//!                Certificates, Issuers, Secrets of type kubernetes.io/tls
//!  list (cluster): IngressClasses, GatewayClasses, ClusterIssuers
//!      ─▶ controller_pod / route_object / cert_manager_object / secret_view (digests only)
//!      ─▶ Cluster::references ─▶ GET each referenced Secret not listed (another type, or gone)
//!      ─▶ lint::lint ─▶ Report ─▶ stdout; exit 0 clean, 1 findings, 2 usage / API error
//! ```
//!
//! A kind the cluster does not serve (no Gateway API or cert-manager CRDs) counts as empty and
//! is named in the summary; any other refusal (403, 401, the API unreachable) stops the lint
//! with one line on stderr and exit status 2: a lint that could not read everything must not
//! say "clean".
//!
//! Secret data goes from the API client straight into `SecretView::from_values` (digests and
//! certificate summaries); nothing prints it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use mountlag_core::certmanager::CertManagerKind;
use mountlag_core::certmanager::findings::Grace;
use mountlag_core::lint::{Checked, Cluster, LintSecret, Profile, Report, Scope, Settings, lint};
use mountlag_core::reconcile::SecretKey;
use mountlag_core::routes::RouteKind;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use mountlag_core::lint::{Check, Severity};

use super::kubeconfig::{self, Connection, chain, one_line};
use crate::config::Config;
use crate::text::untrusted;

/// Objects asked for per request (the rest follows with `continue`).
const PAGE: u32 = 500;
/// What the user needs, named in a refusal.
const NEEDS: &str = "needs get and list on pods, secrets, ingresses, ingressclasses, the Gateway API kinds and cert-manager's Certificates, Issuers and ClusterIssuers; see docs/lint.md";

/// What `mountlag lint` was asked.
#[derive(Debug, Clone)]
pub struct LintOptions {
    /// `-n`; `None`: the kubeconfig context's namespace (unless `all_namespaces`).
    pub namespace: Option<String>,
    pub all_namespaces: bool,
    pub json: bool,
    pub config: Config,
    pub grace: Duration,
    pub fail_on: Severity,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// Runs the lint and prints the report; the exit status.
pub fn run(options: LintOptions) -> u8 {
    let program = crate::cmd::program();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{program} lint: cannot start the runtime: {err}");
            return crate::cmd::EXIT_USAGE;
        }
    };
    let report = match runtime.block_on(collect(&options)) {
        Ok(report) => report,
        Err(line) => {
            eprintln!("{program} lint: {line}");
            return crate::cmd::EXIT_USAGE;
        }
    };
    let text = if options.json {
        render_json(&report)
    } else {
        report.to_text()
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not a failure of the lint.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    report.exit_code()
}

/// Lists, converts, judges. `Err`: one line, why nothing could be judged.
async fn collect(options: &LintOptions) -> Result<Report, String> {
    let connection =
        kubeconfig::connect(options.kubeconfig.as_deref(), options.context.as_deref()).await?;
    let scope = if options.all_namespaces {
        Scope::All
    } else {
        Scope::Namespace(
            options
                .namespace
                .clone()
                .unwrap_or_else(|| connection.default_namespace.clone()),
        )
    };
    let mut lister = Lister {
        connection: &connection,
        scope: &scope,
        not_served: Vec::new(),
    };
    let config = &options.config;

    let mut controller_pods = Vec::new();
    let mut other_pod_secrets = BTreeSet::new();
    for pod in lister.typed::<Pod>("pods", "").await? {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let Some(pod) = crate::k8s::pod::node_pod(&pod) else {
            continue;
        };
        match config.controller_for(&namespace, &labels) {
            Some(profile) => {
                controller_pods.extend(crate::k8s::controller_pod(&pod, &profile.name))
            }
            None => {
                if let Some(view) = crate::k8s::controller_pod(&pod, "") {
                    other_pod_secrets.extend(view.secret_names().map(|name| SecretKey {
                        namespace: view.namespace.clone(),
                        name: name.to_string(),
                    }));
                }
            }
        }
    }

    let mut routes = Vec::new();
    for kind in [
        RouteKind::Ingress,
        RouteKind::IngressClass,
        RouteKind::Gateway,
        RouteKind::GatewayClass,
        RouteKind::ReferenceGrant,
        RouteKind::HttpRoute,
        RouteKind::TlsRoute,
    ] {
        let resource = crate::k8s::routes::api_resource(kind);
        for object in lister.dynamic(&resource, kind.cluster_scoped()).await? {
            routes.extend(crate::k8s::routes::route_object(
                kind,
                &object.metadata,
                &object.data["spec"],
            ));
        }
    }
    let mut cert_manager = Vec::new();
    for kind in CertManagerKind::ALL {
        let resource = crate::k8s::certmanager::api_resource(kind);
        for object in lister.dynamic(&resource, kind.cluster_scoped()).await? {
            cert_manager.extend(crate::k8s::certmanager::cert_manager_object(
                kind,
                &object.metadata,
                &object.data["spec"],
                &object.data["status"],
            ));
        }
    }

    let cluster = Cluster {
        scope: scope.clone(),
        profiles: config
            .controllers
            .iter()
            .map(|p| Profile {
                name: p.name.clone(),
                routes: p.spec().routes,
            })
            .collect(),
        controller_pods,
        other_pod_secrets,
        routes,
        cert_manager,
    };

    // Secret data is read here and becomes digests at once.
    let mut secrets: BTreeMap<SecretKey, LintSecret> = BTreeMap::new();
    let tls_type = format!("type={}", mountlag_core::lint::TLS_SECRET_TYPE);
    for secret in lister.typed::<Secret>("secrets", &tls_type).await? {
        insert_secret(&mut secrets, &secret);
    }
    for key in cluster.references() {
        if secrets.contains_key(&key) {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(connection.client.clone(), &key.namespace);
        match api.get_opt(&key.name).await {
            Ok(Some(secret)) => insert_secret(&mut secrets, &secret),
            Ok(None) => {}
            Err(err) => {
                return Err(lister.error(
                    &format!(
                        "cannot read Secret {}/{}",
                        untrusted(&key.namespace),
                        untrusted(&key.name)
                    ),
                    &err,
                ));
            }
        }
    }

    let settings = Settings {
        now: time::OffsetDateTime::now_utc(),
        grace: Grace {
            seconds: i64::try_from(options.grace.as_secs()).unwrap_or(i64::MAX),
        },
        expiry_warn_before: config.expiry.warn_before,
    };
    let findings = lint(&cluster, &secrets, &settings);
    let checked = Checked::of(&cluster, &secrets);
    let not_served = std::mem::take(&mut lister.not_served);
    Ok(Report::new(
        scope,
        findings,
        checked,
        not_served,
        options.fail_on,
    ))
}

fn insert_secret(secrets: &mut BTreeMap<SecretKey, LintSecret>, secret: &Secret) {
    let Some(view) = crate::k8s::secret_view(secret) else {
        return;
    };
    let key = SecretKey {
        namespace: view.namespace.clone(),
        name: view.name.clone(),
    };
    secrets.insert(
        key,
        LintSecret {
            view,
            // The API server defaults an empty type to Opaque.
            secret_type: secret
                .type_
                .clone()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "Opaque".to_string()),
        },
    );
}

/// Lists in the scope, page by page; remembers the kinds the cluster does not serve.
struct Lister<'a> {
    connection: &'a Connection,
    scope: &'a Scope,
    not_served: Vec<String>,
}

impl Lister<'_> {
    /// A core kind in the scope, with a field selector (`""`: none).
    async fn typed<K>(&mut self, what: &str, fields: &str) -> Result<Vec<K>, String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let client = self.connection.client.clone();
        let api: Api<K> = match self.scope {
            Scope::All => Api::all(client),
            Scope::Namespace(namespace) => Api::namespaced(client, namespace),
        };
        self.pages(&api, what, fields).await
    }

    /// A kind read as [`DynamicObject`]s: in the scope, or cluster-wide when cluster-scoped.
    async fn dynamic(
        &mut self,
        resource: &ApiResource,
        cluster_scoped: bool,
    ) -> Result<Vec<DynamicObject>, String> {
        let client = self.connection.client.clone();
        let api: Api<DynamicObject> = match self.scope {
            Scope::Namespace(namespace) if !cluster_scoped => {
                Api::namespaced_with(client, namespace, resource)
            }
            _ => Api::all_with(client, resource),
        };
        let what = if resource.group.is_empty() {
            resource.plural.clone()
        } else {
            format!("{}.{}", resource.plural, resource.group)
        };
        self.pages(&api, &what, "").await
    }

    async fn pages<K>(&mut self, api: &Api<K>, what: &str, fields: &str) -> Result<Vec<K>, String>
    where
        K: Clone + DeserializeOwned + std::fmt::Debug,
    {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(PAGE);
            if !fields.is_empty() {
                params = params.fields(fields);
            }
            if let Some(token) = &token {
                params = params.continue_token(token);
            }
            match api.list(&params).await {
                Ok(list) => {
                    items.extend(list.items);
                    token = list.metadata.continue_.filter(|t| !t.is_empty());
                    if token.is_none() {
                        return Ok(items);
                    }
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.not_served.push(what.to_string());
                    return Ok(Vec::new());
                }
                Err(err) => {
                    let scope = match self.scope {
                        Scope::Namespace(namespace) => {
                            format!(" in namespace {}", untrusted(namespace))
                        }
                        Scope::All => String::new(),
                    };
                    return Err(self.error(&format!("cannot list {what}{scope}"), &err));
                }
            }
        }
    }

    /// One line: the server unreachable, the credentials refused, a permission missing, or what
    /// the server answered.
    fn error(&self, what: &str, err: &kube::Error) -> String {
        let server = &self.connection.server;
        if let Some(line) = kubeconfig::unreachable(server, err) {
            return line;
        }
        match err {
            kube::Error::Api(status) if status.code == 403 => format!(
                "{what}: {} ({} lint {NEEDS})",
                one_line(&status.message),
                crate::cmd::program()
            ),
            kube::Error::Api(status) if status.code == 401 => format!(
                "{what}: the API server at {server} refused the credentials ({}): log in again or pick another --context",
                one_line(&status.message)
            ),
            kube::Error::Api(status) => format!(
                "{what}: the API server at {server} answered {} {}: {}",
                status.code,
                untrusted(&status.reason),
                one_line(&status.message)
            ),
            other => format!("{what}: {}", one_line(&chain(other))),
        }
    }
}

/// `{"findings": [...], "summary": {...}}` (docs/lint.md), escaped for a terminal the way
/// `mountlag status --json` is (JSON `\u` escapes: the same document once parsed).
pub fn render_json(report: &Report) -> String {
    let findings: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            json!({
                "severity": f.severity.as_str(),
                "check": f.check.as_str(),
                "kind": f.kind,
                "namespace": f.namespace,
                "name": f.name,
                "message": f.message,
                "hint": f.hint(),
            })
        })
        .collect();
    let (namespace, all) = match &report.scope {
        Scope::Namespace(namespace) => (json!(namespace), false),
        Scope::All => (Value::Null, true),
    };
    let checked = &report.checked;
    let document = json!({
        "findings": findings,
        "summary": {
            "namespace": namespace,
            "allNamespaces": all,
            "total": report.findings.len(),
            "errors": report.count(Severity::Error),
            "warnings": report.count(Severity::Warning),
            "info": report.count(Severity::Info),
            "failOn": report.fail_on.as_str(),
            "failed": report.failing(),
            "checked": {
                "ingresses": checked.ingresses,
                "gateways": checked.gateways,
                "tlsSecrets": checked.tls_secrets,
                "controllerPods": checked.controller_pods,
                "certificates": checked.certificates,
            },
            "notServed": report.not_served,
        },
    });
    super::status::terminal_safe(&serde_json::to_string_pretty(&document).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mountlag_core::lint::{Checked, LintFinding};

    use super::*;

    #[test]
    fn the_json_document_has_the_documented_shape() {
        let finding = LintFinding {
            severity: Severity::Error,
            check: Check::SecretMissing,
            kind: "Ingress",
            namespace: "shop".into(),
            name: "web".into(),
            message: "gone \u{1b}[2J\u{202e}".into(),
        };
        let report = Report::new(
            Scope::Namespace("shop".into()),
            vec![finding],
            Checked {
                ingresses: 1,
                ..Checked::default()
            },
            vec!["tlsroutes.gateway.networking.k8s.io".into()],
            Severity::Warning,
        );
        let text = render_json(&report);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text}"
        );
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc["findings"][0],
            json!({"severity": "error", "check": "SecretMissing", "kind": "Ingress",
                   "namespace": "shop", "name": "web", "message": "gone \u{1b}[2J\u{202e}",
                   "hint": Check::SecretMissing.hint()})
        );
        assert_eq!(
            doc["summary"],
            json!({"namespace": "shop", "allNamespaces": false, "total": 1, "errors": 1,
                   "warnings": 0, "info": 0, "failOn": "warning", "failed": true,
                   "checked": {"ingresses": 1, "gateways": 0, "tlsSecrets": 0,
                               "controllerPods": 0, "certificates": 0},
                   "notServed": ["tlsroutes.gateway.networking.k8s.io"]})
        );
    }
}
