//! The OpenAPI document served at `/v1/openapi.json`.
//!
//! Written out by hand from one route table; a test checks that every route in the table is
//! served by the router with the documented method, so the document cannot claim a route that
//! does not exist.

use serde_json::{Value, json};

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Schema name of the JSON request body, if any.
    pub request: Option<&'static str>,
    /// Schema name of the 200 response.
    pub response: &'static str,
    pub authenticated: bool,
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    response: &'static str,
) -> Route {
    Route {
        method,
        path,
        summary,
        request: None,
        response,
        authenticated: true,
    }
}

pub const ROUTES: &[Route] = &[
    Route {
        request: Some("ApplyRequest"),
        ..route(
            "post",
            "/v1/apply",
            "Create or update resources; all or nothing. Also takes application/yaml.",
            "ApplyResponse",
        )
    },
    route(
        "get",
        "/v1/sites",
        "List sites with their manifest revision and placed applications",
        "SiteList",
    ),
    route("get", "/v1/sites/{name}", "One site", "SiteView"),
    route(
        "delete",
        "/v1/sites/{name}",
        "Delete a site",
        "DeleteResponse",
    ),
    route(
        "get",
        "/v1/applications",
        "List applications with their versions",
        "ApplicationList",
    ),
    route(
        "get",
        "/v1/applications/{name}",
        "One application",
        "ApplicationView",
    ),
    route(
        "delete",
        "/v1/applications/{name}",
        "Delete an application and its versions; refused while a deployment runs it",
        "DeleteResponse",
    ),
    route(
        "get",
        "/v1/deployments",
        "List deployments with their resolved version and selected sites",
        "DeploymentList",
    ),
    route(
        "get",
        "/v1/deployments/{name}",
        "One deployment",
        "DeploymentView",
    ),
    route(
        "delete",
        "/v1/deployments/{name}",
        "Delete a deployment",
        "DeleteResponse",
    ),
    Route {
        request: Some("CreateTokenRequest"),
        ..route(
            "post",
            "/v1/tokens",
            "Create a join token for a site (printed once; only its hash is kept)",
            "CreateTokenResponse",
        )
    },
    route(
        "get",
        "/v1/hosts",
        "List enrolled hosts with inventory, connection and newest status",
        "HostList",
    ),
    route(
        "post",
        "/v1/hosts/{name}/approve-key",
        "Approve the new sealing key a host sent at renewal: its secrets are sealed to it from now on",
        "HostView",
    ),
    route(
        "get",
        "/v1/applications/{name}/status",
        "Sites × services of one application, from the agents' reports",
        "AppStatus",
    ),
    route(
        "get",
        "/v1/sites/{name}/events",
        "A site's newest events, oldest first; `?limit=N`",
        "EventList",
    ),
    route(
        "get",
        "/v1/deployments/{name}/rollout",
        "The deployment's current rollout: waves, sites, history",
        "RolloutView",
    ),
    route(
        "get",
        "/v1/deployments/{name}/rollouts",
        "The current rollout and the ones before it",
        "RolloutHistory",
    ),
    route(
        "post",
        "/v1/deployments/{name}/rollout/{action}",
        "Control the rollout: action is pause, resume, abort or rollback",
        "RolloutView",
    ),
    Route {
        request: Some("EnrollRequest"),
        authenticated: false,
        ..route(
            "post",
            "/v1/enroll",
            "Agent: join a site with a join token and a certificate request",
            "EnrollResponse",
        )
    },
    Route {
        authenticated: false,
        ..route(
            "get",
            "/v1/sites/{name}/manifest",
            "With a token: the site's current manifest. With the site's client certificate: the signed manifest by long-poll (`?have=N&hash=H&wait=S`: the revision and content hash held; 304 when nothing newer; a revision this control plane does not know is overtaken)",
            "Manifest",
        )
    },
    Route {
        request: Some("ReportRequest"),
        authenticated: false,
        ..route(
            "post",
            "/v1/sites/{name}/reports",
            "Agent (client certificate): report batches; answers the highest sequence stored",
            "ReportAck",
        )
    },
    Route {
        request: Some("RenewRequest"),
        authenticated: false,
        ..route(
            "post",
            "/v1/sites/{name}/hosts/{host}/certificate",
            "Agent (client certificate): a new certificate for a new key",
            "RenewResponse",
        )
    },
    route(
        "get",
        "/v1/secrets",
        "List secrets: keys, versions, and which version each site and host holds (never a value)",
        "SecretList",
    ),
    route(
        "get",
        "/v1/secrets/{name}",
        "One secret (never a value)",
        "SecretView",
    ),
    route(
        "delete",
        "/v1/secrets/{name}",
        "Delete a secret that no deployment uses",
        "SecretDeleted",
    ),
    Route {
        request: Some("SetSecretRequest"),
        ..route(
            "put",
            "/v1/secrets/{name}/keys/{key}",
            "Set a key: a value for every site, a value for one site (`site`), or generated per site; write-only",
            "SecretView",
        )
    },
    route(
        "delete",
        "/v1/secrets/{name}/keys/{key}",
        "Remove a key, or with `?site=S` that site's own value",
        "SecretView",
    ),
    route(
        "get",
        "/v1/audit",
        "The newest audit entries (mutating calls), newest first; `?limit=N`",
        "AuditList",
    ),
    Route {
        authenticated: false,
        ..route("get", "/v1/openapi.json", "This document", "Object")
    },
];

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method, r.path.replace(['/', '{', '}', '.'], "_")),
            "responses": {
                "200": { "description": "success", "content": { "application/json": { "schema": schema_ref(r.response) } } },
                "400": error_response("malformed or invalid input; `diagnostics` lists every problem"),
                "401": error_response("missing or unknown bearer token"),
                "404": error_response("no such resource"),
                "409": error_response("conflicts with what is stored"),
                "413": error_response("body over 4 MiB"),
                "500": error_response("the control plane failed"),
            },
        });
        let params: Vec<Value> = ["name", "host", "action"]
            .iter()
            .filter(|p| r.path.contains(&format!("{{{p}}}")))
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(req) = r.request {
            op["requestBody"] = json!({
                "required": true,
                "content": {
                    "application/json": { "schema": schema_ref(req) },
                    "application/yaml": { "schema": { "type": "string", "description": "a multi-document YAML stream of resources" } },
                },
            });
        }
        if !r.authenticated {
            op["security"] = json!([]);
        }
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "atoll control plane", "version": env!("CARGO_PKG_VERSION") },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas(),
        },
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn error_response(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema_ref("ErrorBody") } } })
}

fn list_of(item: &str) -> Value {
    json!({ "type": "object", "required": ["items"], "properties": { "items": { "type": "array", "items": schema_ref(item) } } })
}

fn schemas() -> Value {
    let view = |extra: Value| {
        let mut props = json!({
            "generation": { "type": "integer" },
            "created_at": { "type": "string", "format": "date-time" },
            "updated_at": { "type": "string", "format": "date-time" },
            "resource": schema_ref("Resource"),
        });
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        json!({ "type": "object", "properties": props })
    };
    let mut all = json!({
        "Object": { "type": "object" },
        "Resource": {
            "type": "object",
            "required": ["kind", "name"],
            "description": "An Application, Deployment or Site, in the shape users write it",
            "properties": { "kind": { "enum": ["Application", "Deployment", "Site"] }, "name": { "type": "string" } },
        },
        "Diagnostic": {
            "type": "object",
            "required": ["file", "line", "column", "path", "message"],
            "properties": {
                "file": { "type": "string" }, "line": { "type": "integer" }, "column": { "type": "integer" },
                "path": { "type": "string" }, "message": { "type": "string" }, "hint": { "type": "string" },
            },
        },
        "ErrorBody": {
            "type": "object",
            "required": ["error"],
            "properties": { "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string" },
                    "message": { "type": "string" },
                    "diagnostics": { "type": "array", "items": schema_ref("Diagnostic") },
                },
            } },
        },
        "ApplyRequest": {
            "type": "object",
            "required": ["sources"],
            "properties": {
                "sources": { "type": "array", "items": {
                    "type": "object", "required": ["name", "text"],
                    "properties": { "name": { "type": "string" }, "text": { "type": "string" } },
                } },
                "dry_run": { "type": "boolean" },
            },
        },
        "ApplyResponse": {
            "type": "object",
            "properties": {
                "dry_run": { "type": "boolean" },
                "results": { "type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "kind": { "type": "string" }, "name": { "type": "string" },
                        "outcome": { "enum": ["created", "configured", "unchanged"] },
                        "generation": { "type": "integer" }, "version": { "type": "string" },
                    },
                } },
                "manifests": { "type": "array", "items": schema_ref("ManifestChange") },
            },
        },
        "ManifestChange": { "type": "object", "properties": { "site": { "type": "string" }, "revision": { "type": "integer" } } },
        "Manifest": {
            "type": "object",
            "properties": {
                "site": { "type": "string" }, "revision": { "type": "integer" }, "hash": { "type": "string" },
                "content": { "type": "object", "properties": { "applications": { "type": "array", "items": { "type": "object" } } } },
            },
        },
        "SiteView": view(json!({
            "revision": { "type": ["integer", "null"] },
            "conditions": { "type": "array", "items": { "type": "object", "properties": {
                "host": { "type": "string" }, "kind": { "type": "string" }, "message": { "type": "string" }, "since": { "type": "string" },
            } } },
            "applications": { "type": "array", "items": { "type": "object", "properties": {
                "deployment": { "type": "string" }, "application": { "type": "string" }, "version": { "type": "string" },
            } } },
        })),
        "ApplicationView": view(json!({
            "versions": { "type": "array", "items": { "type": "object", "properties": {
                "version": { "type": "string" }, "applied_at": { "type": "string" },
            } } },
            "deployments": { "type": "array", "items": { "type": "string" } },
        })),
        "DeploymentView": view(json!({
            "version": { "type": ["string", "null"] },
            "sites": { "type": "array", "items": { "type": "string" } },
        })),
        "SiteList": list_of("SiteView"),
        "ApplicationList": list_of("ApplicationView"),
        "DeploymentList": list_of("DeploymentView"),
        "AuditList": list_of("AuditEntry"),
        "AuditEntry": { "type": "object", "properties": {
            "seq": { "type": "integer" }, "at": { "type": "string" }, "actor": { "type": "string" },
            "action": { "type": "string" }, "detail": { "type": "string" },
        } },
        "DeleteResponse": { "type": "object", "properties": {
            "kind": { "type": "string" }, "name": { "type": "string" },
            "manifests": { "type": "array", "items": schema_ref("ManifestChange") },
        } },
    });
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), agent_schemas()) {
        all.extend(more);
    }
    all
}

/// The agent protocol's and rollouts' schemas (one `json!` would be too deep for the macro).
fn agent_schemas() -> Value {
    json!({
        "CreateTokenRequest": { "type": "object", "required": ["site"], "properties": {
            "site": { "type": "string" }, "ttl_seconds": { "type": "integer" }, "uses": { "type": "integer" },
        } },
        "CreateTokenResponse": { "type": "object", "properties": {
            "token": { "type": "string" }, "site": { "type": "string" }, "expires_at": { "type": "string" }, "uses": { "type": "integer" },
        } },
        "EnrollRequest": { "type": "object", "required": ["token", "csr_pem", "inventory"], "properties": {
            "token": { "type": "string" }, "csr_pem": { "type": "string" }, "inventory": schema_ref("Inventory"),
        } },
        "Inventory": { "type": "object", "properties": {
            "hostname": { "type": "string" }, "arch": { "type": "string" }, "os": { "type": "string" }, "kernel": { "type": "string" },
            "cpus": { "type": "integer" }, "cpu_model": { "type": "string" }, "memory_bytes": { "type": "integer" },
            "disk_bytes": { "type": "integer" }, "runtime": { "type": "object" }, "devices": { "type": "array", "items": { "type": "object" } },
        } },
        "EnrollResponse": { "type": "object", "properties": {
            "site": { "type": "string" }, "host": { "type": "string" }, "certificate_pem": { "type": "string" },
            "certificate_expires_at": { "type": "string" }, "ca_pem": { "type": "string" }, "signing_key": { "type": "string" },
        } },
        "RenewRequest": { "type": "object", "required": ["csr_pem"], "properties": { "csr_pem": { "type": "string" } } },
        "RenewResponse": { "type": "object", "properties": {
            "certificate_pem": { "type": "string" }, "certificate_expires_at": { "type": "string" },
        } },
        "ReportRequest": { "type": "object", "required": ["batches"], "properties": {
            "batches": { "type": "array", "items": { "type": "object", "required": ["seq", "at"], "properties": {
                "seq": { "type": "integer" }, "at": { "type": "string" },
                "events": { "type": "array", "items": { "type": "object" } }, "status": { "type": "object" },
            } } },
        } },
        "ReportAck": { "type": "object", "properties": { "acked": { "type": "integer" } } },
        "HostList": { "type": "object", "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/HostView" } } } },
        "HostView": { "type": "object", "required": ["id", "site", "connected"], "properties": {
            "id": { "type": "string" }, "site": { "type": "string" }, "connected": { "type": "boolean" },
            "detached_at": { "type": "string" }, "sealing_key_pending": { "type": "boolean" },
        } },
        "EventList": { "type": "object", "properties": { "items": { "type": "array", "items": { "type": "object" } } } },
        "RolloutView": { "type": "object", "properties": {
            "deployment": { "type": "string" }, "from_version": { "type": ["string", "null"] }, "to_version": { "type": "string" },
            "phase": { "enum": ["running", "paused", "complete", "rolling_back", "rolled_back", "aborted", "superseded"] },
            "reason": { "type": "string" }, "started_at": { "type": "string" },
            "waves": { "type": "array", "items": { "type": "object" } }, "history": { "type": "array", "items": { "type": "object" } },
        } },
        "RolloutHistory": { "type": "object", "properties": {
            "current": schema_ref("RolloutView"), "past": { "type": "array", "items": schema_ref("RolloutView") },
        } },
        "SetSecretRequest": { "type": "object", "properties": {
            "value": { "type": "string", "description": "base64" }, "site": { "type": "string" },
            "generate": { "type": "object", "required": ["length"], "properties": {
                "length": { "type": "integer" }, "alphabet": { "enum": ["alphanumeric", "hex", "base64url", "printable"] },
            } },
        } },
        "SecretView": { "type": "object", "properties": {
            "name": { "type": "string" }, "version": { "type": "integer" }, "updated_at": { "type": "string" },
            "keys": { "type": "array", "items": { "type": "object", "properties": {
                "key": { "type": "string" }, "source": { "enum": ["shared", "generated", "per-site"] }, "version": { "type": "integer" },
                "generate": { "type": "object" }, "sites": { "type": "array", "items": { "type": "string" } },
            } } },
            "sites": { "type": "array", "items": { "type": "object", "properties": {
                "site": { "type": "string" }, "version": { "type": "integer" }, "hosts": { "type": "object" },
            } } },
        } },
        "SecretList": { "type": "object", "properties": { "items": { "type": "array", "items": schema_ref("SecretView") } } },
        "SecretDeleted": { "type": "object", "properties": { "name": { "type": "string" } } },
        "AppStatus": { "type": "object", "properties": {
            "application": { "type": "string" }, "services": { "type": "array", "items": { "type": "string" } },
            "sites": { "type": "array", "items": { "type": "object" } },
        } },
    })
}
