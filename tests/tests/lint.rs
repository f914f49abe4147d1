//! `mountlag lint` end to end: the real binary, run as a user would from CI (a kubeconfig, no
//! agent), against the API stand-in holding a broken namespace (`shop`: one object per check),
//! a clean one, a namespace with only a warning, one with only an unused Secret, and a Secret in
//! a namespace of its own that a Gateway refers to. Each run's table and `--json` document are
//! read back and compared with the exact set of findings expected; every output is scanned for
//! the Secrets' key bytes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use mountlag_testbed::apiserver::{
    ApiServer, ApiServerConfig, Authorizer, Decision, Identity, RequestAttributes,
};
use mountlag_testbed::certs::{IssuedLeaf, LeafSpec, SecretLeakScanner, TestCa};
use mountlag_testbed::cluster::tls_secret;
use mountlag_testbed::rbac::kubectl_available;
use mountlag_testbed::real;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The profiles the broken namespace is linted with: a mounting controller `edge` and
/// ingress-nginx in every namespace.
const CONFIG: &str = "controllers:
  - name: edge
    selector: app=edge
    reload: none
  - name: ingress-nginx
    profile: ingress-nginx
    namespaces: [\"*\"]
";
/// A user who may read everything but Secrets.
const READER: &str = "reader";
const READER_TOKEN: &str = "reader-token";

/// Denies `list`/`get` on Secrets to [`READER`].
#[derive(Debug)]
struct NoSecretsForReader;

impl Authorizer for NoSecretsForReader {
    fn authorize(&self, who: &Identity, attrs: &RequestAttributes) -> Decision {
        if who.user == READER && attrs.resource == "secrets" {
            Decision::Deny("secrets are not for readers".into())
        } else {
            Decision::Allow
        }
    }
}

/// One run of the binary.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// (severity, KIND/NAMESPACE/NAME, check) of a table row or a JSON finding.
type Row = (String, String, String);

fn row(severity: &str, object: &str, check: &str) -> Row {
    (severity.into(), object.into(), check.into())
}

/// Runs `program ARGS` with `KUBECONFIG=kubeconfig`, a HOME without `.kube` and `PATH` with
/// `bin` first; blocking, off the runtime's workers (the API stand-in answers on them).
async fn run(
    program: &Path,
    bin: &Path,
    home: &Path,
    kubeconfig: &Path,
    args: &[&str],
) -> anyhow::Result<Run> {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new(program);
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env("PATH", path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!(
        "$ {} {}\n{run:#?}",
        program.file_name().unwrap_or_default().to_string_lossy(),
        args.join(" ")
    );
    Ok(run)
}

/// The table's rows: the lines after the header, up to the first empty line.
fn table_rows(run: &Run) -> BTreeSet<Row> {
    let mut lines = run.stdout.lines();
    match lines.next() {
        Some(header)
            if header.split_whitespace().collect::<Vec<_>>()
                == ["SEVERITY", "KIND/NAMESPACE/NAME", "CHECK", "MESSAGE"] => {}
        _ => return BTreeSet::new(),
    }
    lines
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let mut cells = l.split_whitespace().map(str::to_owned);
            let mut next = || cells.next().unwrap_or_default();
            (next(), next(), next())
        })
        .collect()
}

fn json_of(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:#?}"))
}

/// The findings of a `--json` document, checking each has exactly the documented fields, all
/// strings.
fn json_rows(doc: &Value) -> BTreeSet<Row> {
    let findings = doc["findings"].as_array().expect("findings: an array");
    findings
        .iter()
        .map(|f| {
            let fields: BTreeSet<&str> = f
                .as_object()
                .expect("a finding is an object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                fields,
                BTreeSet::from([
                    "severity",
                    "check",
                    "kind",
                    "namespace",
                    "name",
                    "message",
                    "hint"
                ]),
                "{f:#}"
            );
            for field in &fields {
                assert!(f[*field].is_string(), "{field} of {f:#}");
            }
            assert!(
                !f["message"].as_str().unwrap_or_default().is_empty(),
                "{f:#}"
            );
            assert!(!f["hint"].as_str().unwrap_or_default().is_empty(), "{f:#}");
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (
                s("severity"),
                format!("{}/{}/{}", s("kind"), s("namespace"), s("name")),
                s("check"),
            )
        })
        .collect()
}

/// The one line of an error run: exit status 2, nothing on stdout.
fn one_error_line(run: &Run) -> &str {
    assert_eq!(run.code, 2, "{run:#?}");
    assert_eq!(run.stdout, "", "{run:#?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {run:#?}");
    lines[0]
}

fn leaf(ca: &TestCa, name: &str) -> anyhow::Result<IssuedLeaf> {
    ca.issue(&LeafSpec::valid_for([name]))
}

fn leaf_between(
    ca: &TestCa,
    name: &str,
    from_days: i64,
    to_days: i64,
) -> anyhow::Result<IssuedLeaf> {
    let now = OffsetDateTime::now_utc();
    ca.issue(&LeafSpec::valid_for([name]).with_validity(
        now + time::Duration::days(from_days),
        now + time::Duration::days(to_days),
    ))
}

fn ingress(namespace: &str, name: &str, tls: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"ingressClassName": "nginx", "tls": tls},
    })
}

fn certificate(
    name: &str,
    secret: &str,
    dns: &str,
    ready: bool,
    issuer: Value,
    renewal: Option<OffsetDateTime>,
) -> Value {
    let since = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let mut status = json!({"conditions": [{
        "type": "Ready",
        "status": if ready { "True" } else { "False" },
        "reason": if ready { "Ready" } else { "Failed" },
        "message": if ready { "ready" } else { "the ACME order failed" },
        "lastTransitionTime": since.format(&Rfc3339).unwrap_or_default(),
    }]});
    if let Some(renewal) = renewal {
        status["renewalTime"] = json!(renewal.format(&Rfc3339).unwrap_or_default());
    }
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"secretName": secret, "dnsNames": [dns], "issuerRef": issuer},
        "status": status,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lint_reports_every_check_scopes_by_namespace_and_exits_by_severity() -> anyhow::Result<()>
{
    let mut tokens = ApiServerConfig::default().tokens;
    tokens.insert(READER_TOKEN.to_owned(), READER.to_owned());
    let api = ApiServer::start(ApiServerConfig {
        tokens,
        authorizer: Arc::new(NoSecretsForReader),
        ..ApiServerConfig::default()
    })
    .await?;
    let ca = TestCa::new("lint test CA")?;
    let mut scanner = SecretLeakScanner::new();
    let mut put_secret = |secret: Secret| -> anyhow::Result<()> {
        let label = format!(
            "Secret {}/{}",
            secret.metadata.namespace.as_deref().unwrap_or_default(),
            secret.metadata.name.as_deref().unwrap_or_default()
        );
        scanner.add_secret(&label, &secret);
        api.apply_secret(&secret)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    };
    let apply = |object: Value| -> anyhow::Result<()> {
        api.apply_object(&object)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    };
    let now = OffsetDateTime::now_utc();
    let cluster_issuer =
        json!({"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"});

    // Cluster-wide: the IngressClass, a GatewayClass nothing is configured for, the issuer.
    apply(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                 "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
    )?;
    apply(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                 "metadata": {"name": "eg"},
                 "spec": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"}}),
    )?;
    apply(
        json!({"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
                 "metadata": {"name": "letsencrypt"}, "spec": {"acme": {}},
                 "status": {"conditions": [{"type": "Ready", "status": "True",
                            "lastTransitionTime": (now - time::Duration::days(1)).format(&Rfc3339)?}]}}),
    )?;

    // clean: one Ingress, its Secret, its Certificate; linted with the built-in profiles.
    put_secret(tls_secret(
        "clean",
        "clean-tls",
        &leaf(&ca, "clean.example")?,
    ))?;
    apply(ingress(
        "clean",
        "web",
        json!([{"hosts": ["clean.example"], "secretName": "clean-tls"}]),
    ))?;
    let mut clean_certificate = certificate(
        "web",
        "clean-tls",
        "clean.example",
        true,
        cluster_issuer.clone(),
        None,
    );
    clean_certificate["metadata"]["namespace"] = json!("clean");
    apply(clean_certificate)?;

    // warn: only a TLS host without a Secret. unused: only a TLS Secret nothing uses.
    apply(ingress("warn", "web", json!([{"hosts": ["warn.example"]}])))?;
    put_secret(tls_secret("unused", "old-tls", &leaf(&ca, "old.example")?))?;
    // certs: the Secret shop's Gateway refers to without a ReferenceGrant.
    put_secret(tls_secret(
        "certs",
        "gw-tls",
        &leaf(&ca, "gw.shop.example")?,
    ))?;

    // shop: one object (or two) per check.
    let valid = |name: &str, host: &str| -> anyhow::Result<Secret> {
        Ok(tls_secret("shop", name, &leaf(&ca, host)?))
    };
    let with_ingress = |name: &str, host: &str, secret: &str| -> anyhow::Result<()> {
        apply(ingress(
            "shop",
            name,
            json!([{"hosts": [host], "secretName": secret}]),
        ))
    };
    // TLSHostWithoutSecret
    apply(ingress(
        "shop",
        "nosecret",
        json!([{"hosts": ["nosecret.shop.example"]}]),
    ))?;
    // SecretMissing
    with_ingress("missing", "missing.shop.example", "gone-tls")?;
    // SecretWrongType
    let mut opaque = valid("opaque-tls", "opaque.shop.example")?;
    opaque.type_ = Some("Opaque".into());
    put_secret(opaque)?;
    with_ingress("opaque", "opaque.shop.example", "opaque-tls")?;
    // SecretMissingKey (and so SecretWrongType: the API refuses a kubernetes.io/tls Secret
    // without tls.key)
    let mut half = valid("half-tls", "half.shop.example")?;
    half.type_ = Some("Opaque".into());
    half.data.as_mut().context("data")?.remove("tls.key");
    put_secret(half)?;
    with_ingress("half", "half.shop.example", "half-tls")?;
    // InvalidCertificateMaterial: a key of another certificate; an expired certificate
    let mut mismatch = valid("mismatch-tls", "mismatch.shop.example")?;
    let other = leaf(&ca, "mismatch.shop.example")?;
    mismatch.data.as_mut().context("data")?.insert(
        "tls.key".into(),
        ByteString(other.key_pem.clone().into_bytes()),
    );
    put_secret(mismatch)?;
    with_ingress("mismatch", "mismatch.shop.example", "mismatch-tls")?;
    put_secret(tls_secret(
        "shop",
        "expired-tls",
        &leaf_between(&ca, "expired.shop.example", -90, -1)?,
    ))?;
    with_ingress("expired", "expired.shop.example", "expired-tls")?;
    // CertificateExpiringSoon
    put_secret(tls_secret(
        "shop",
        "soon-tls",
        &leaf_between(&ca, "soon.shop.example", -80, 5)?,
    ))?;
    with_ingress("soon", "soon.shop.example", "soon-tls")?;
    // DuplicateTLSHost
    put_secret(valid("dup-a-tls", "dup.shop.example")?)?;
    put_secret(valid("dup-b-tls", "dup.shop.example")?)?;
    with_ingress("dup-a", "dup.shop.example", "dup-a-tls")?;
    with_ingress("dup-b", "dup.shop.example", "dup-b-tls")?;
    // CertificateRefNotPermitted
    apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"namespace": "shop", "name": "edge"},
        "spec": {"gatewayClassName": "eg", "listeners": [{
            "name": "https", "port": 443, "protocol": "HTTPS", "hostname": "gw.shop.example",
            "tls": {"certificateRefs": [{"name": "gw-tls", "namespace": "certs"}]}}]},
    }))?;
    // SubPathNeverUpdates
    put_secret(valid("edge-tls", "edge.shop.example")?)?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"namespace": "shop", "name": "edge-0", "labels": {"app": "edge"}},
        "spec": {"nodeName": "node-a",
                 "containers": [{"name": "nginx", "image": "nginx", "volumeMounts": [
                     {"name": "tls", "mountPath": "/etc/nginx/tls.crt", "subPath": "tls.crt"}]}],
                 "volumes": [{"name": "tls", "secret": {"secretName": "edge-tls"}}]},
    }))?;
    api.create_pod(&pod).map_err(|e| anyhow::anyhow!("{e}"))?;
    // UnusedTLSSecret
    put_secret(valid("old-tls", "old.shop.example")?)?;
    // CertificateNotReady
    put_secret(valid("web-tls", "web.shop.example")?)?;
    with_ingress("web", "web.shop.example", "web-tls")?;
    apply(certificate(
        "web",
        "web-tls",
        "web.shop.example",
        false,
        cluster_issuer.clone(),
        None,
    ))?;
    // CertificateRenewalOverdue: renewal due 30 minutes ago, the leaf issued an hour ago
    put_secret(valid("overdue-tls", "overdue.shop.example")?)?;
    with_ingress("overdue", "overdue.shop.example", "overdue-tls")?;
    apply(certificate(
        "overdue",
        "overdue-tls",
        "overdue.shop.example",
        true,
        cluster_issuer.clone(),
        Some(now - time::Duration::minutes(30)),
    ))?;
    // IssuerNotReady: an Issuer that does not exist
    put_secret(valid("lost-tls", "lost.shop.example")?)?;
    with_ingress("lost", "lost.shop.example", "lost-tls")?;
    apply(certificate(
        "lost",
        "lost-tls",
        "lost.shop.example",
        true,
        json!({"name": "nope", "kind": "Issuer"}),
        None,
    ))?;
    // TLSHostNotCovered
    put_secret(valid("cov-tls", "cov.shop.example")?)?;
    apply(ingress(
        "shop",
        "covered",
        json!([{"hosts": ["cov.shop.example", "uncovered.shop.example"], "secretName": "cov-tls"}]),
    ))?;
    apply(certificate(
        "cov",
        "cov-tls",
        "cov.shop.example",
        true,
        cluster_issuer.clone(),
        None,
    ))?;

    let expected_shop: BTreeSet<Row> = [
        row("error", "Ingress/shop/missing", "SecretMissing"),
        row("error", "Secret/shop/half-tls", "SecretMissingKey"),
        row(
            "error",
            "Secret/shop/mismatch-tls",
            "InvalidCertificateMaterial",
        ),
        row(
            "error",
            "Secret/shop/expired-tls",
            "InvalidCertificateMaterial",
        ),
        row("error", "Ingress/shop/dup-a", "DuplicateTLSHost"),
        row("error", "Ingress/shop/dup-b", "DuplicateTLSHost"),
        row("error", "Gateway/shop/edge", "CertificateRefNotPermitted"),
        row("error", "Certificate/shop/web", "CertificateNotReady"),
        row(
            "error",
            "Certificate/shop/overdue",
            "CertificateRenewalOverdue",
        ),
        row("error", "Certificate/shop/lost", "IssuerNotReady"),
        row("error", "Ingress/shop/covered", "TLSHostNotCovered"),
        row("warning", "Secret/shop/opaque-tls", "SecretWrongType"),
        row("warning", "Secret/shop/half-tls", "SecretWrongType"),
        row("warning", "Ingress/shop/nosecret", "TLSHostWithoutSecret"),
        row("warning", "Pod/shop/edge-0", "SubPathNeverUpdates"),
        row("warning", "Secret/shop/soon-tls", "CertificateExpiringSoon"),
        row("info", "Secret/shop/old-tls", "UnusedTLSSecret"),
    ]
    .into_iter()
    .collect();

    let dir = tempfile::Builder::new()
        .prefix("mountlag-lint-")
        .tempdir()?;
    let home = dir.path().join("home");
    std::fs::create_dir(&home)?;
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin)?;
    let config = dir.path().join("mountlag.yaml");
    std::fs::write(&config, CONFIG)?;
    let config = config.display().to_string();
    let admin = api.kubeconfig_path().to_path_buf();
    let mountlag = mountlag_testbed::agent::binary();
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut lint = async |kubeconfig: &Path, args: &[&str]| -> anyhow::Result<Run> {
        let mut full = vec!["lint"];
        full.extend_from_slice(args);
        let run = run(&mountlag, &bin, &home, kubeconfig, &full).await?;
        outputs.push((
            format!("mountlag {}", full.join(" ")),
            format!("{}{}", run.stdout, run.stderr),
        ));
        Ok(run)
    };

    // 1. A clean namespace, the built-in profiles: exit 0, the table says so.
    let clean = lint(&admin, &["-n", "clean"]).await?;
    assert_eq!(clean.code, 0, "{clean:#?}");
    assert_eq!(
        clean.stdout,
        "no findings in namespace clean (checked 1 Ingress, 0 Gateways, 1 TLS Secret, 0 controller pods, \
         1 Certificate; not served here: tlsroutes.gateway.networking.k8s.io)\n",
        "{clean:#?}"
    );
    assert_eq!(clean.stderr, "", "{clean:#?}");

    // 2. The broken namespace: every check in the table, sorted, and in --json.
    let shop = lint(&admin, &["-n", "shop", "--config", &config]).await?;
    assert_eq!(shop.code, 1, "{shop:#?}");
    assert_eq!(table_rows(&shop), expected_shop, "{}", shop.stdout);
    let severities: Vec<String> = shop
        .stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect();
    let mut sorted = severities.clone();
    sorted.sort_by_key(|s| ["error", "warning", "info"].iter().position(|x| x == s));
    assert_eq!(severities, sorted, "errors, then warnings, then info");
    for wanted in [
        "Ingress shop/missing (spec.tls[0]) names Secret shop/gone-tls, which does not exist",
        "the private key in tls.key does not match the certificate in tls.crt",
        "the certificate in tls.crt (expired.shop.example) expired at",
        "TLS host dup.shop.example uses Secret shop/dup-a-tls here, but Ingress shop/dup-b serves it with Secret shop/dup-b-tls (controller ingress-nginx)",
        "no ReferenceGrant in namespace certs lets Gateways of namespace shop refer to Secret gw-tls",
        "through subPath tls.crt",
        "What to do:\n",
        "  SubPathNeverUpdates: mount the whole Secret volume",
    ] {
        assert!(
            shop.stdout.contains(wanted),
            "{wanted:?} missing:\n{}",
            shop.stdout
        );
    }
    assert_eq!(
        shop.stdout.lines().last(),
        Some(
            "17 findings in namespace shop (11 errors, 5 warnings, 1 info): fails (--fail-on warning); \
             checked 13 Ingresses, 1 Gateway, 11 TLS Secrets, 1 controller pod, 4 Certificates; \
             not served here: tlsroutes.gateway.networking.k8s.io"
        ),
        "{}",
        shop.stdout
    );
    let json = lint(&admin, &["-n", "shop", "--config", &config, "--json"]).await?;
    assert_eq!(json.code, 1, "{json:#?}");
    let doc = json_of(&json);
    assert_eq!(json_rows(&doc), expected_shop, "{doc:#}");
    assert_eq!(
        doc["summary"],
        json!({"namespace": "shop", "allNamespaces": false, "total": 17, "errors": 11,
               "warnings": 5, "info": 1, "failOn": "warning", "failed": true,
               "checked": {"ingresses": 13, "gateways": 1, "tlsSecrets": 11,
                           "controllerPods": 1, "certificates": 4},
               "notServed": ["tlsroutes.gateway.networking.k8s.io"]}),
        "{doc:#}"
    );
    let not_ready = doc["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["check"] == "CertificateNotReady")
        .context("CertificateNotReady")?;
    assert!(
        not_ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("Ready=False (Failed: the ACME order failed)")),
        "{not_ready:#}"
    );
    assert!(
        not_ready["hint"]
            .as_str()
            .is_some_and(|h| h.starts_with("kubectl describe certificate")),
        "{not_ready:#}"
    );

    // 3. Scope: the context's namespace without -n (kubectl's rule); every namespace with -A.
    let default = lint(&admin, &[]).await?;
    assert_eq!(default.code, 0, "{default:#?}");
    assert!(
        default
            .stdout
            .starts_with("no findings in namespace default "),
        "the stand-in's kubeconfig names namespace default: {default:#?}"
    );
    let mut in_shop: Value = serde_yaml::from_str(&std::fs::read_to_string(&admin)?)?;
    in_shop["contexts"][0]["context"]["namespace"] = json!("shop");
    let in_shop_path = dir.path().join("in-shop");
    std::fs::write(&in_shop_path, serde_yaml::to_string(&in_shop)?)?;
    let by_context = lint(&in_shop_path, &["--config", &config]).await?;
    assert_eq!(by_context.code, 1, "{by_context:#?}");
    assert_eq!(table_rows(&by_context), expected_shop);
    let everywhere = lint(&admin, &["-A", "--config", &config]).await?;
    assert_eq!(everywhere.code, 1, "{everywhere:#?}");
    let mut expected_all = expected_shop.clone();
    expected_all.insert(row("warning", "Ingress/warn/web", "TLSHostWithoutSecret"));
    expected_all.insert(row("info", "Secret/unused/old-tls", "UnusedTLSSecret"));
    assert_eq!(
        table_rows(&everywhere),
        expected_all,
        "{}",
        everywhere.stdout
    );
    assert!(
        everywhere
            .stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("19 findings in all namespaces ")),
        "{}",
        everywhere.stdout
    );
    let everywhere =
        json_of(&lint(&admin, &["--all-namespaces", "--config", &config, "--json"]).await?);
    assert_eq!(json_rows(&everywhere), expected_all);
    assert_eq!(everywhere["summary"]["allNamespaces"], true);
    assert_eq!(everywhere["summary"]["namespace"], Value::Null);

    // 4. Which severities fail: warnings by default, not info; --fail-on moves the line.
    let warn = lint(&admin, &["-n", "warn"]).await?;
    assert_eq!(warn.code, 1, "{warn:#?}");
    assert_eq!(
        table_rows(&warn),
        BTreeSet::from([row("warning", "Ingress/warn/web", "TLSHostWithoutSecret")])
    );
    let warn = lint(&admin, &["-n", "warn", "--fail-on", "error"]).await?;
    assert_eq!(warn.code, 0, "{warn:#?}");
    assert!(
        warn.stdout.contains("passes (--fail-on error)"),
        "{warn:#?}"
    );
    let unused = lint(&admin, &["-n", "unused"]).await?;
    assert_eq!(unused.code, 0, "info does not fail: {unused:#?}");
    assert_eq!(
        table_rows(&unused),
        BTreeSet::from([row("info", "Secret/unused/old-tls", "UnusedTLSSecret")])
    );
    let unused = lint(&admin, &["-n", "unused", "--fail-on", "info"]).await?;
    assert_eq!(unused.code, 1, "{unused:#?}");

    // 5. The grace period: the Certificate has been not Ready for 2 hours.
    let patient = lint(
        &admin,
        &["-n", "shop", "--config", &config, "--grace", "3h"],
    )
    .await?;
    let rows = table_rows(&patient);
    assert!(
        !rows.contains(&row("error", "Certificate/shop/web", "CertificateNotReady")),
        "{}",
        patient.stdout
    );
    assert!(
        !rows.contains(&row(
            "error",
            "Certificate/shop/overdue",
            "CertificateRenewalOverdue"
        )),
        "{}",
        patient.stdout
    );

    // 6. Usage errors and an API that cannot be read: exit 2, one line.
    let both = lint(&admin, &["-n", "shop", "-A"]).await?;
    assert_eq!(both.code, 2, "{both:#?}");
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut dead: Value = serde_yaml::from_str(&std::fs::read_to_string(&admin)?)?;
    dead["clusters"][0]["cluster"]["server"] = json!(format!("https://127.0.0.1:{dead_port}"));
    let dead_path = dir.path().join("dead");
    std::fs::write(&dead_path, serde_yaml::to_string(&dead)?)?;
    for args in [&["-n", "shop"][..], &["-A", "--json"][..]] {
        let down = lint(&dead_path, args).await?;
        let line = one_error_line(&down);
        assert!(
            line.starts_with(&format!(
                "mountlag lint: cannot reach the Kubernetes API server at https://127.0.0.1:{dead_port}: "
            )),
            "{line}"
        );
        assert!(line.to_lowercase().contains("connection refused"), "{line}");
    }
    let reader = dir.path().join("reader");
    api.write_kubeconfig(&reader, Some(READER_TOKEN))?;
    let refused = lint(&reader, &["-n", "shop"]).await?;
    let line = one_error_line(&refused);
    for wanted in [
        "mountlag lint: cannot list secrets in namespace shop: ",
        "secrets are not for readers",
        "(mountlag lint needs get and list on pods, secrets,",
    ] {
        assert!(line.contains(wanted), "{wanted:?} missing: {line}");
    }
    let bad_config = dir.path().join("bad.yaml");
    std::fs::write(&bad_config, "controllers: 7\n")?;
    let bad = lint(&admin, &["--config", &bad_config.display().to_string()]).await?;
    assert_eq!(bad.code, 2, "{bad:#?}");
    assert!(
        bad.stderr
            .starts_with("mountlag lint: invalid configuration:"),
        "{bad:#?}"
    );

    // 7. The same binary as the kubectl plugin.
    if real::require("kubectl", kubectl_available()) {
        std::os::unix::fs::symlink(&mountlag, bin.join("kubectl-mountlag"))?;
        let kubectl = PathBuf::from("kubectl");
        let plugin = run(
            &kubectl,
            &bin,
            &home,
            &admin,
            &["mountlag", "lint", "-n", "shop", "--config", &config],
        )
        .await?;
        outputs.push((
            "kubectl mountlag lint".into(),
            format!("{}{}", plugin.stdout, plugin.stderr),
        ));
        assert_eq!(plugin.code, 1, "{plugin:#?}");
        assert_eq!(table_rows(&plugin), expected_shop);
        let down = run(&kubectl, &bin, &home, &dead_path, &["mountlag", "lint"]).await?;
        let line = one_error_line(&down);
        assert!(
            line.starts_with("kubectl mountlag lint: cannot reach the Kubernetes API server at "),
            "{line}"
        );
    }

    // Secret data was read to judge it, and printed nowhere.
    assert!(
        scanner.secrets().len() >= 20,
        "{} secrets scanned for",
        scanner.secrets().len()
    );
    scanner.assert_all_clean(&outputs);
    Ok(())
}
