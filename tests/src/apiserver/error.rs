//! API errors as `Status` objects.

use serde_json::{Value, json};

/// An error the API answers with (HTTP code + `Status` body), also returned by the in-process
/// helpers of [`super::ApiServer`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code (404, 409, ...).
    pub code: u16,
    /// `Status.reason` (`NotFound`, `AlreadyExists`, `Conflict`, `Expired`, ...).
    pub reason: String,
    /// Human-readable message, worded like the real server.
    pub message: String,
    /// `Status.details` (`name`, `kind`), if any.
    pub details: Option<(String, String)>,
}

impl ApiError {
    /// Any error.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, resource: &str, name: &str) -> Self {
        self.details = Some((name.to_owned(), resource.to_owned()));
        self
    }

    /// 404 NotFound: `pods "x" not found` (`resource` group-qualified outside the core group:
    /// `ingresses.networking.k8s.io`).
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
            .with_details(resource, name)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
        .with_details(resource, name)
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(resource, name)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422 Invalid.
    pub fn invalid(kind: &str, name: &str, message: impl Into<String>) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {}", message.into()),
        )
        .with_details(kind, name)
    }

    /// 410 Expired (too old resourceVersion).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, resource)) = &self.details {
            // `ingresses.networking.k8s.io` → kind `ingresses`, group `networking.k8s.io`, as
            // the real Status spells details (plurals never contain a dot).
            v["details"] = match resource.split_once('.') {
                Some((kind, group)) => json!({"name": name, "group": group, "kind": kind}),
                None => json!({"name": name, "kind": resource}),
            };
        }
        v
    }
}
