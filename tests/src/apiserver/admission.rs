//! Validating admission: the `ValidatingAdmissionPolicy` objects of `deploy/`, evaluated with a
//! real CEL interpreter on every write the stand-in accepts, as the API server does.
//!
//! ```text
//!  PATCH/PUT ─▶ authorize (RBAC) ─▶ apply the patch ─▶ admit(object, oldObject, request) ─▶ store
//!                                                        │ a bound policy whose rules match:
//!                                                        │ matchConditions → variables → validations
//!                                                        └ any false (or error, failurePolicy Fail) → 403/422
//! ```
//!
//! Modelled: `matchConstraints.resourceRules` (apiGroups, apiVersions, operations, resources,
//! `*`), `matchConditions`, `variables` (in order, each seeing the earlier ones as
//! `variables.<name>`), `validations` (`expression`, `message`, `reason`), `failurePolicy`, and
//! bindings with `validationActions: [Deny]`. The CEL environment has `object`, `oldObject`
//! and `request` (`operation`, `namespace`, `name`, `resource`, `userInfo` with `username`,
//! `groups` and — only when the token carries any — `extra`).
//! Not modelled: `paramKind`/params, `matchResources` of bindings (namespace and object
//! selectors), `auditAnnotations`, `messageExpression`, Kubernetes' CEL extension libraries
//! and its cost budget; only writes through PUT and PATCH of existing objects are admitted
//! (`UPDATE`), not creates or deletes (docs/testbed.md).

use std::collections::HashMap;
use std::fmt;

use anyhow::{Context as _, bail};
use cel::{Context, Program, Value as CelValue};
use serde_json::{Value, json};

use super::auth::Identity;

/// One write to be admitted.
#[derive(Debug)]
pub struct AdmissionRequest<'a> {
    pub who: &'a Identity,
    /// `CREATE`, `UPDATE`, `DELETE`.
    pub operation: &'a str,
    /// `""` for the core group.
    pub api_group: &'a str,
    pub api_version: &'a str,
    /// Plural resource, e.g. `pods`.
    pub resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: &'a Value,
    pub old_object: Option<&'a Value>,
}

/// Why a write was refused: the HTTP status reason (`Forbidden`, `Invalid`) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: String,
    pub message: String,
}

/// The admission hook every write passes through after it is authorized.
pub trait Admission: Send + Sync + fmt::Debug {
    fn admit(&self, request: &AdmissionRequest<'_>) -> Result<(), Denial>;
}

/// Admits everything (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&self, _request: &AdmissionRequest<'_>) -> Result<(), Denial> {
        Ok(())
    }
}

/// Every bound `ValidatingAdmissionPolicy` of a set of manifests.
#[derive(Debug, Default)]
pub struct ValidatingPolicies {
    policies: Vec<Policy>,
}

#[derive(Debug)]
struct Policy {
    name: String,
    binding: String,
    fail_closed: bool,
    rules: Vec<ResourceRule>,
    match_conditions: Vec<Named>,
    variables: Vec<Named>,
    validations: Vec<Validation>,
}

#[derive(Debug)]
struct ResourceRule {
    api_groups: Vec<String>,
    api_versions: Vec<String>,
    operations: Vec<String>,
    resources: Vec<String>,
}

struct Named {
    name: String,
    program: Program,
}

impl fmt::Debug for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Named").field("name", &self.name).finish()
    }
}

struct Validation {
    source: String,
    program: Program,
    message: Option<String>,
    reason: String,
}

impl fmt::Debug for Validation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validation")
            .field("source", &self.source)
            .finish()
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn compile(source: &str, what: &str) -> anyhow::Result<Program> {
    Program::compile(source).map_err(|e| anyhow::anyhow!("{what}: CEL does not compile: {e}"))
}

fn named(list: &Value, what: &str) -> anyhow::Result<Vec<Named>> {
    let mut out = Vec::new();
    for item in list.as_array().into_iter().flatten() {
        let name = item["name"].as_str().context("an entry without name")?;
        let source = item["expression"]
            .as_str()
            .with_context(|| format!("{what} {name}: no expression"))?;
        out.push(Named {
            name: name.to_owned(),
            program: compile(source, &format!("{what} {name}"))?,
        });
    }
    Ok(out)
}

impl ValidatingPolicies {
    /// The policies of `docs` (rendered manifests as JSON) that a binding with `Deny` puts in
    /// force. A policy without such a binding does nothing, as in Kubernetes.
    pub fn from_documents(docs: &[Value]) -> anyhow::Result<Self> {
        let of_kind = |kind: &str| {
            docs.iter()
                .filter(move |d| {
                    d["kind"] == kind && d["apiVersion"] == "admissionregistration.k8s.io/v1"
                })
                .collect::<Vec<_>>()
        };
        let mut policies = Vec::new();
        for binding in of_kind("ValidatingAdmissionPolicyBinding") {
            let binding_name = binding["metadata"]["name"].as_str().unwrap_or_default();
            let spec = &binding["spec"];
            if spec.get("matchResources").is_some() || spec.get("paramRef").is_some() {
                bail!("binding {binding_name}: matchResources/paramRef are not modelled");
            }
            if !strings(&spec["validationActions"])
                .iter()
                .any(|a| a == "Deny")
            {
                continue;
            }
            let policy_name = spec["policyName"].as_str().unwrap_or_default();
            let Some(policy) = of_kind("ValidatingAdmissionPolicy")
                .into_iter()
                .find(|p| p["metadata"]["name"] == policy_name)
            else {
                bail!("binding {binding_name} names policy {policy_name:?}, which is not there");
            };
            let p = &policy["spec"];
            if p.get("paramKind").is_some() {
                bail!("policy {policy_name}: paramKind is not modelled");
            }
            let rules = p["matchConstraints"]["resourceRules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| ResourceRule {
                    api_groups: strings(&r["apiGroups"]),
                    api_versions: strings(&r["apiVersions"]),
                    operations: strings(&r["operations"]),
                    resources: strings(&r["resources"]),
                })
                .collect();
            let mut validations = Vec::new();
            for v in p["validations"].as_array().into_iter().flatten() {
                let source = v["expression"].as_str().with_context(|| {
                    format!("policy {policy_name}: a validation without expression")
                })?;
                validations.push(Validation {
                    source: source.to_owned(),
                    program: compile(source, &format!("policy {policy_name}"))?,
                    message: v["message"].as_str().map(str::to_owned),
                    reason: v["reason"].as_str().unwrap_or("Invalid").to_owned(),
                });
            }
            policies.push(Policy {
                name: policy_name.to_owned(),
                binding: binding_name.to_owned(),
                // Kubernetes' default failurePolicy is Fail.
                fail_closed: p["failurePolicy"].as_str() != Some("Ignore"),
                rules,
                match_conditions: named(&p["matchConditions"], "matchCondition")?,
                variables: named(&p["variables"], "variable")?,
                validations,
            });
        }
        Ok(Self { policies })
    }

    /// Names of the policies in force.
    pub fn names(&self) -> Vec<&str> {
        self.policies.iter().map(|p| p.name.as_str()).collect()
    }
}

fn covers(list: &[String], value: &str) -> bool {
    list.iter().any(|x| x == "*" || x == value)
}

fn request_value(r: &AdmissionRequest<'_>) -> Value {
    let mut user = json!({"username": r.who.user, "groups": r.who.groups});
    if !r.who.extra.is_empty() {
        user["extra"] = json!(r.who.extra);
    }
    json!({
        "operation": r.operation,
        "namespace": r.namespace,
        "name": r.name,
        "resource": {"group": r.api_group, "version": r.api_version, "resource": r.resource},
        "userInfo": user,
    })
}

fn to_cel(v: &Value) -> Result<CelValue, String> {
    cel::to_value(v).map_err(|e| format!("cannot give {v} to CEL: {e}"))
}

impl Policy {
    fn matches(&self, r: &AdmissionRequest<'_>) -> bool {
        self.rules.iter().any(|rule| {
            covers(&rule.api_groups, r.api_group)
                && covers(&rule.api_versions, r.api_version)
                && covers(&rule.operations, r.operation)
                && covers(&rule.resources, r.resource)
        })
    }

    /// `Ok(true)`: admitted or not applicable; `Ok(false)` never; `Err`: refused.
    fn evaluate(&self, r: &AdmissionRequest<'_>) -> Result<(), Denial> {
        let denied = |reason: &str, message: String| Denial {
            reason: reason.to_owned(),
            message: format!(
                "{} \"{}\" is forbidden: ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {message}",
                r.resource, r.name, self.name, self.binding
            ),
        };
        let failed = |what: &str, err: String| -> Result<(), Denial> {
            if self.fail_closed {
                Err(denied("Invalid", format!("{what}: {err}")))
            } else {
                Ok(())
            }
        };
        let mut context = Context::default();
        let values = [
            ("object", to_cel(r.object)),
            ("oldObject", r.old_object.map_or(Ok(CelValue::Null), to_cel)),
            ("request", to_cel(&request_value(r))),
        ];
        for (name, value) in values {
            match value {
                Ok(v) => context.add_variable_from_value(name, v),
                Err(e) => return failed(name, e),
            }
        }
        for condition in &self.match_conditions {
            match condition.program.execute(&context) {
                Ok(CelValue::Bool(true)) => {}
                Ok(CelValue::Bool(false)) => return Ok(()),
                Ok(other) => {
                    return failed(
                        &format!("matchCondition {}", condition.name),
                        format!("not a bool: {other:?}"),
                    );
                }
                Err(e) => {
                    return failed(&format!("matchCondition {}", condition.name), e.to_string());
                }
            }
        }
        let mut variables: HashMap<String, CelValue> = HashMap::new();
        for variable in &self.variables {
            let mut scope = context.new_inner_scope();
            scope.add_variable_from_value("variables", variables.clone());
            match variable.program.execute(&scope) {
                Ok(v) => {
                    variables.insert(variable.name.clone(), v);
                }
                Err(e) => return failed(&format!("variable {}", variable.name), e.to_string()),
            }
        }
        context.add_variable_from_value("variables", variables);
        for validation in &self.validations {
            match validation.program.execute(&context) {
                Ok(CelValue::Bool(true)) => {}
                Ok(CelValue::Bool(false)) => {
                    let message = validation
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("failed expression: {}", validation.source));
                    return Err(denied(&validation.reason, message));
                }
                Ok(other) => return failed("validation", format!("not a bool: {other:?}")),
                Err(e) => return failed("validation", e.to_string()),
            }
        }
        Ok(())
    }
}

impl Admission for ValidatingPolicies {
    fn admit(&self, request: &AdmissionRequest<'_>) -> Result<(), Denial> {
        self.policies
            .iter()
            .filter(|p| p.matches(request))
            .try_for_each(|p| p.evaluate(request))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
- apiVersion: admissionregistration.k8s.io/v1
  kind: ValidatingAdmissionPolicy
  metadata: {name: only-label-a}
  spec:
    matchConstraints:
      resourceRules: [{apiGroups: [""], apiVersions: [v1], operations: [UPDATE], resources: [pods]}]
    matchConditions:
      - {name: bob, expression: "request.userInfo.username == 'bob'"}
    variables:
      - {name: node, expression: "has(request.userInfo.extra) && 'n' in request.userInfo.extra ? request.userInfo.extra['n'] : []"}
      - {name: nodes, expression: "variables.node"}
    validations:
      - {expression: "object.spec == oldObject.spec", message: spec, reason: Forbidden}
      - {expression: "object.spec.nodeName in variables.nodes", message: node, reason: Forbidden}
- apiVersion: admissionregistration.k8s.io/v1
  kind: ValidatingAdmissionPolicyBinding
  metadata: {name: b}
  spec: {policyName: only-label-a, validationActions: [Deny]}
"#;

    fn policies() -> ValidatingPolicies {
        let docs: Vec<Value> = serde_yaml::from_str(POLICY).unwrap();
        ValidatingPolicies::from_documents(&docs).unwrap()
    }

    fn admit(who: &Identity, old: &Value, new: &Value) -> Result<(), Denial> {
        policies().admit(&AdmissionRequest {
            who,
            operation: "UPDATE",
            api_group: "",
            api_version: "v1",
            resource: "pods",
            namespace: "ns",
            name: "p",
            object: new,
            old_object: Some(old),
        })
    }

    #[test]
    fn the_policy_applies_to_its_user_and_checks_every_validation() {
        let mut bob = Identity::user("bob");
        bob.extra.insert("n".to_owned(), vec!["node-a".to_owned()]);
        let old = json!({"spec": {"nodeName": "node-a", "x": 1}});
        assert_eq!(admit(&bob, &old, &old), Ok(()));
        let changed = json!({"spec": {"nodeName": "node-a", "x": 2}});
        assert_eq!(admit(&bob, &old, &changed).unwrap_err().reason, "Forbidden");
        assert!(
            admit(&bob, &old, &changed)
                .unwrap_err()
                .message
                .ends_with("spec")
        );
        let elsewhere = json!({"spec": {"nodeName": "node-b"}});
        assert!(
            admit(&bob, &elsewhere, &elsewhere)
                .unwrap_err()
                .message
                .ends_with("node")
        );
        // Without the claim the variable is empty: nothing is on its node.
        let no_claim = Identity::user("bob");
        assert!(admit(&no_claim, &old, &old).is_err());
        // Another user is not matched at all.
        assert_eq!(admit(&Identity::user("alice"), &old, &changed), Ok(()));
    }

    #[test]
    fn an_unbound_policy_does_nothing() {
        let docs: Vec<Value> = serde_yaml::from_str::<Vec<Value>>(POLICY)
            .unwrap()
            .into_iter()
            .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
            .collect();
        assert!(
            ValidatingPolicies::from_documents(&docs)
                .unwrap()
                .names()
                .is_empty()
        );
    }
}
