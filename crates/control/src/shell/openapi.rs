//! The OpenAPI document served at `/v1/openapi.json`.
//!
//! Written out by hand from one route table; a test checks that every route in the table is
//! served by the router with the documented method, so the document cannot claim a route that
//! does not exist, and an end-to-end test runs schemathesis against the real server, so the
//! document describes exactly what the server takes and answers: every path and query
//! parameter with the rules the handlers check (a name's pattern and length, an integer's
//! range), request bodies closed to unknown fields as the server refuses them, and every status
//! a route can answer.

use atoll_api::agent::{
    MAX_BATCHES_PER_REPORT, MAX_EVENT_AT_BYTES, MAX_EVENT_KIND_BYTES, MAX_EVENT_MESSAGE_BYTES,
    MAX_EVENTS_PER_BATCH, MAX_REPORT_BYTES,
};
use atoll_api::host::{
    MAX_ADDRESSES, MAX_CAPABILITIES, MAX_DEVICES, MAX_INVENTORY_BYTES, MAX_INVENTORY_STRING_BYTES,
};
use atoll_api::secret::Generate;
use serde_json::{Value, json};

use super::agents::MAX_TOKEN_TTL_SECONDS;
use super::secrets::MAX_VALUE_BYTES;

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// A user's bearer token.
    Bearer,
    /// An agent's client certificate (mutual TLS).
    Agent,
    /// A bearer token or an agent's client certificate.
    Either,
    /// Anyone: the credential, if any, is in the body.
    Open,
}

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Schema name of the JSON request body, if any.
    pub request: Option<&'static str>,
    /// The request body may also be a YAML stream of resources (`application/yaml`); any
    /// other media type is answered 415.
    pub yaml: bool,
    /// Names of the query parameters (in `components.parameters`).
    pub query: &'static [&'static str],
    /// Schema name of the 200 response.
    pub response: &'static str,
    pub auth: Auth,
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
        yaml: false,
        query: &[],
        response,
        auth: Auth::Bearer,
    }
}

pub const ROUTES: &[Route] = &[
    Route {
        request: Some("ApplyRequest"),
        yaml: true,
        query: &["dry_run"],
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
    route(
        "get",
        "/v1/deviceclasses",
        "List device classes: the rules that give hosts' devices a class name",
        "DeviceClassList",
    ),
    route(
        "get",
        "/v1/deviceclasses/{name}",
        "One device class",
        "DeviceClassView",
    ),
    route(
        "delete",
        "/v1/deviceclasses/{name}",
        "Delete a device class; refused while a service requires it or a host selector reads it",
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
        "get",
        "/v1/hosts/{name}",
        "One enrolled host, detached or not: inventory, labels, connection and newest status",
        "HostView",
    ),
    Route {
        request: Some("HostLabelChange"),
        ..route(
            "patch",
            "/v1/hosts/{name}/labels",
            "Set and remove a host's labels (not the names of its built-in facts); answers the labels that result. Audited; the host's site is recompiled when what it compiles reads its hosts",
            "Labels",
        )
    },
    Route {
        request: Some("SiteLabelChange"),
        ..route(
            "patch",
            "/v1/sites/{name}/labels",
            "Set and remove a site's labels, as an apply of the Site with its new labels (its generation grows, its manifests recompile); answers the labels that result. Audited",
            "Labels",
        )
    },
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
    Route {
        query: &["limit"],
        ..route(
            "get",
            "/v1/sites/{name}/events",
            "A site's newest events, oldest first; `?limit=N` (at most 10000, default 100)",
            "EventList",
        )
    },
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
        auth: Auth::Open,
        ..route(
            "post",
            "/v1/enroll",
            "Agent: join a site with a join token and a certificate request",
            "EnrollResponse",
        )
    },
    Route {
        auth: Auth::Either,
        query: &["have", "hash", "wait"],
        ..route(
            "get",
            "/v1/sites/{name}/manifest",
            "With a token: the site's current manifest. With the site's client certificate: the signed manifest by long-poll (`?have=N&hash=H&wait=S`: the revision and content hash held; 304 when nothing newer; a revision this control plane does not know is overtaken)",
            "Manifest",
        )
    },
    Route {
        request: Some("ReportRequest"),
        auth: Auth::Agent,
        ..route(
            "post",
            "/v1/sites/{name}/reports",
            "Agent (client certificate): report batches; answers the highest sequence stored. A body over 1 MiB (`MAX_REPORT_BYTES`) is refused with 413; more than 100 batches, more than 100 events a batch, or an event field over its length (message 4096 bytes, kind 64, times 64; times RFC 3339) with 400 naming the field and limit, and nothing of it is stored. The site's events are retained by the time received: at most `--events-kept` (1000) and none older than `--events-kept-for` (7 days), the rest pruned and counted in the site's `events_pruned`",
            "ReportAck",
        )
    },
    Route {
        request: Some("RenewRequest"),
        auth: Auth::Agent,
        ..route(
            "post",
            "/v1/sites/{name}/hosts/{host}/certificate",
            "Agent (client certificate): a new certificate for a new key",
            "RenewResponse",
        )
    },
    Route {
        request: Some("InventoryReport"),
        auth: Auth::Agent,
        ..route(
            "put",
            "/v1/sites/{name}/hosts/{host}/inventory",
            "Agent (client certificate of that host): its whole inventory, sent when it changed; answers the inventory stored. Each change since the stored one (a device appeared, went missing, came back or was dropped; memory, cpus, disk, arch, os, runtime or agent version changed) becomes an event of the site. A body over 256 KiB (`MAX_INVENTORY_BYTES`) is refused with 413; more than 256 devices, 16 addresses or 64 capabilities, a string over 256 bytes, or a `missing_since` that is not RFC 3339 with 400 naming the field, and nothing is stored",
            "InventoryReport",
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
    Route {
        query: &["site"],
        ..route(
            "delete",
            "/v1/secrets/{name}/keys/{key}",
            "Remove a key, or with `?site=S` that site's own value",
            "SecretView",
        )
    },
    Route {
        query: &["limit"],
        ..route(
            "get",
            "/v1/audit",
            "The newest audit entries (mutating calls), newest first; `?limit=N` (at most 1000, default 100)",
            "AuditList",
        )
    },
    Route {
        auth: Auth::Open,
        ..route("get", "/v1/openapi.json", "This document", "Object")
    },
];

/// A resource, site or host name as `atoll_spec::names::check_name` takes it: a DNS label.
const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// A secret key as `atoll_spec::names::check_secret_key` takes it: it names a file, so it is
/// neither `.` nor `..`.
const KEY_PATTERN: &str = "^([.]*[A-Za-z0-9_-][A-Za-z0-9._-]*|[.]{3,})$";

/// A label key as `atoll_spec::names::check_label_key` takes it.
const LABEL_KEY_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$";
/// A label value as `atoll_spec::names::check_label_value` takes it: no control character
/// (Unicode's `Cc`, as `char::is_control` reads it).
const LABEL_VALUE_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// The body of a label change; for a host, no key may name a built-in fact
/// (`atoll_api::host::is_reserved_label`).
fn label_change_schema(host: bool) -> Value {
    let mut key = json!({ "type": "string", "pattern": LABEL_KEY_PATTERN });
    if host {
        let reserved = format!(
            "^{}",
            atoll_api::host::DEVICE_FACT_PREFIX.replace('.', "[.]")
        );
        key["not"] = json!({ "anyOf": [
            { "enum": atoll_api::host::FACTS },
            { "pattern": reserved },
        ] });
    }
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "labels to add or change, and keys to remove; a key both set and removed is refused (400), a key removed that is not there is listed in the answer's `not_found`",
        "properties": {
            "set": {
                "type": "object",
                "propertyNames": key,
                "additionalProperties": { "type": "string", "maxLength": 256, "pattern": LABEL_VALUE_PATTERN },
            },
            "remove": { "type": "array", "items": key },
        },
    })
}

/// Standard base64 with padding, as a secret's value is sent, and canonical: the bits past the
/// last byte are zero (the decoder refuses others).
const BASE64_PATTERN: &str =
    "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";
/// The longest base64 text of a value of `MAX_VALUE_BYTES`.
const MAX_VALUE_BASE64: usize = MAX_VALUE_BYTES.div_ceil(3) * 4;

fn name_schema() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": 63, "pattern": NAME_PATTERN })
}

/// An optional field: the server reads `null` as leaving it out.
fn or_null(schema: Value) -> Value {
    json!({ "anyOf": [schema, { "type": "null" }] })
}

/// An integer the server reads as `u32` or `u64`: anything outside is refused.
fn integer(minimum: u64, maximum: u64) -> Value {
    json!({ "type": "integer", "minimum": minimum, "maximum": maximum })
}

fn path_parameter(name: &str) -> Value {
    let schema = match name {
        "action" => json!({ "enum": ["pause", "resume", "abort", "rollback"] }),
        "key" => {
            json!({ "type": "string", "minLength": 1, "maxLength": 253, "pattern": KEY_PATTERN })
        }
        _ => name_schema(),
    };
    json!({ "name": name, "in": "path", "required": true, "schema": schema })
}

fn query_parameters() -> Value {
    let query = |name: &str, description: &str, schema: Value| json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema });
    json!({
        "dry_run": query("dry_run", "validate and report what would change, but store nothing", json!({ "type": "boolean" })),
        "limit": query("limit", "how many entries at most (larger asks get the route's maximum)", integer(0, u64::from(u32::MAX))),
        "site": query("site", "remove only this site's own value", name_schema()),
        "have": query("have", "agents: the revision held; answered at once when a newer one exists", integer(0, u64::MAX)),
        "hash": query("hash", "agents: the content hash of the revision held", json!({ "type": "string", "maxLength": 128 })),
        "wait": query("wait", "agents: seconds to hold the request when nothing is newer (held 60 at most; default 30)", integer(0, u64::MAX)),
    })
}

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let mut responses = json!({
            "200": { "description": "success", "content": { "application/json": { "schema": schema_ref(r.response) } } },
            "400": error_response("malformed or invalid input; `diagnostics` lists every problem"),
            "401": error_response("missing or unknown credentials"),
            "403": error_response("the credentials do not allow this"),
            "404": error_response("no such resource"),
            "409": error_response("conflicts with what is stored"),
            "413": error_response("body over 4 MiB (a report: over 1 MiB; an inventory: over 256 KiB)"),
            "500": error_response("the control plane failed"),
        });
        if r.auth != Auth::Either && r.path != "/v1/openapi.json" {
            responses["503"] = error_response(
                "the control plane is busy: retry after the seconds in `Retry-After`",
            );
        }
        if r.yaml {
            responses["415"] =
                error_response("the body is neither application/json nor application/yaml");
        }
        if r.auth == Auth::Either {
            responses["304"] =
                json!({ "description": "agents: nothing newer than `have` within `wait`" });
        }
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method, r.path.replace(['/', '{', '}', '.'], "_")),
            "responses": responses,
        });
        let mut params: Vec<Value> = ["name", "host", "action", "key"]
            .iter()
            .filter(|p| r.path.contains(&format!("{{{p}}}")))
            .map(|p| path_parameter(p))
            .collect();
        params.extend(
            r.query
                .iter()
                .map(|q| json!({ "$ref": format!("#/components/parameters/{q}") })),
        );
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(req) = r.request {
            let mut content = json!({ "application/json": { "schema": schema_ref(req) } });
            if r.yaml {
                content["application/yaml"] = json!({ "schema": { "type": "string", "description": "a multi-document YAML stream of resources" } });
            }
            op["requestBody"] = json!({ "required": true, "content": content });
        }
        match r.auth {
            Auth::Bearer => {}
            Auth::Agent => op["security"] = json!([{ "agent": [] }]),
            Auth::Either => op["security"] = json!([{ "bearer": [] }, { "agent": [] }]),
            Auth::Open => op["security"] = json!([]),
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
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "agent": { "type": "mutualTLS", "description": "the client certificate an agent got at enrollment" },
            },
            "parameters": query_parameters(),
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
            "description": "An Application, Deployment, Site or DeviceClass, in the shape users write it",
            "properties": { "kind": { "enum": ["Application", "Deployment", "Site", "DeviceClass"] }, "name": { "type": "string" } },
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
            "additionalProperties": false,
            "properties": {
                "sources": { "type": "array", "minItems": 1, "items": {
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
                "warnings": { "type": "array", "items": { "type": "string" }, "description": "what the apply was accepted despite: a deployment no selected site can run" },
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
            "events_pruned": { "type": "integer", "description": "events of the site the retention pruned (the oldest received)" },
            "conditions": { "type": "array", "items": { "type": "object", "properties": {
                "host": { "type": "string" }, "kind": { "type": "string" }, "message": { "type": "string" }, "since": { "type": "string" },
            } } },
            "applications": { "type": "array", "items": { "type": "object", "properties": {
                "deployment": { "type": "string" }, "application": { "type": "string" }, "version": { "type": "string" },
            } } },
            "dropped_reports": { "type": "integer", "minimum": 0, "description": "reports its hosts' agents dropped, their outboxes full" },
        })),
        "ApplicationView": view(json!({
            "versions": { "type": "array", "items": { "type": "object", "properties": {
                "version": { "type": "string" }, "applied_at": { "type": "string" },
            } } },
            "deployments": { "type": "array", "items": { "type": "string" } },
        })),
        "DeploymentView": view(json!({
            "version": { "type": ["string", "null"], "description": "the version targeted" },
            "sites": { "type": "array", "items": { "type": "string" } },
            "rollout": { "enum": ["running", "paused", "complete", "rolling_back", "rolled_back", "aborted", "superseded"], "description": "the phase of the current rollout, if any" },
            "running": { "type": "object", "additionalProperties": { "type": "integer", "minimum": 0 }, "description": "version -> how many of the selected sites run it, from their reports" },
            "unplaced": schema_ref("UnplacedList"),
        })),
        "UnplacedList": { "type": "array", "description": "sites the site selector picks where no host meets the deployment's requirements, with the reason", "items": {
            "type": "object", "required": ["site", "deployment", "reason"], "properties": {
                "site": { "type": "string" }, "deployment": { "type": "string" }, "reason": { "type": "string" },
            } } },
        "DeviceClassView": view(json!({})),
        "SiteList": list_of("SiteView"),
        "DeviceClassList": list_of("DeviceClassView"),
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
    for more in [agent_schemas(), host_schemas()] {
        if let (Some(all), Value::Object(more)) = (all.as_object_mut(), more) {
            all.extend(more);
        }
    }
    all
}

/// What an agent reads of its host. Unknown fields are read past (an agent newer than the
/// control plane may send more), so the object is open.
fn inventory_schema() -> Value {
    let text = json!({ "type": "string", "maxLength": MAX_INVENTORY_STRING_BYTES });
    let size = json!({ "type": "integer", "minimum": 0 });
    json!({ "type": "object", "required": ["hostname", "arch", "os", "kernel", "cpus", "cpu_model", "memory_bytes", "disk_bytes", "runtime"], "properties": {
        "hostname": text, "arch": text, "os": text, "kernel": text,
        "cpus": integer(0, u64::from(u32::MAX)), "cpu_model": text, "memory_bytes": size, "disk_bytes": size,
        "runtime": { "type": "object", "required": ["name", "version"], "properties": { "name": text, "version": text } },
        "devices": { "type": "array", "maxItems": MAX_DEVICES, "items": { "type": "object", "required": ["path"], "properties": {
            "kind": text, "path": text, "name": text, "subsystem": text, "vendor": text, "product": text, "serial": text,
            "missing_since": { "type": "string", "format": "date-time", "maxLength": MAX_INVENTORY_STRING_BYTES, "description": "set while the node is gone from /dev, for the agent's grace period" },
        } } },
        "agent_version": text,
        "capabilities": { "type": "array", "maxItems": MAX_CAPABILITIES, "items": text },
        "addresses": { "type": "array", "maxItems": MAX_ADDRESSES, "items": text },
        "site_address": { "type": "string", "description": "ip:port the agent listens on for its site's other hosts" },
    } })
}

/// A host as `GET /v1/hosts` shows it (apart from [`agent_schemas`]: one `json!` would be too
/// deep for the macro).
fn host_schemas() -> Value {
    json!({
        "HostList": { "type": "object", "properties": { "items": { "type": "array", "items": { "$ref": "#/components/schemas/HostView" } } } },
        "HostView": { "type": "object", "required": ["id", "site", "connected"], "properties": {
            "id": { "type": "string" }, "site": { "type": "string" }, "connected": { "type": "boolean" },
            "status": { "oneOf": [schema_ref("HostStatus"), { "type": "null" }], "description": "the host's newest reported status; null before its first" },
            "detached_at": { "type": "string" }, "sealing_key_pending": { "type": "boolean" },
            "labels": { "type": "object", "additionalProperties": { "type": "string" }, "description": "the labels operators gave the host; left out when there are none" },
        } },
        "HostStatus": host_status_schema(),
    })
}

/// A host's newest status as its agent reported it. Open, as [`inventory_schema`]: a newer
/// agent may say more.
fn host_status_schema() -> Value {
    let count = json!({ "type": "integer", "minimum": 0 });
    json!({ "type": "object", "required": ["applied_revision", "replicas"], "properties": {
        "applied_revision": count,
        "replicas": { "type": "array", "items": { "type": "object" } },
        "refused": { "type": "string", "description": "why the newest manifest offered was refused" },
        "dropped_reports": count,
        "secrets": { "type": "object", "additionalProperties": count, "description": "secret -> the version the host delivered" },
        "conditions": { "type": "array", "items": { "type": "object", "properties": {
            "kind": { "type": "string" }, "message": { "type": "string" }, "since": { "type": "string" },
        } } },
        "cluster": { "type": "object", "required": ["role", "term"], "description": "the host's place in its site cluster, as it sees it; left out for a single-host site and by older agents", "properties": {
            "role": { "enum": ["leader", "voter", "non_voter", "candidate", "unknown"], "description": "`unknown`: a role a newer agent reported" },
            "term": count,
            "leader": { "type": "string", "description": "the host it follows as leader; left out while it knows of none" },
            "voters": { "type": "array", "items": { "type": "string" } },
        } },
        "free": { "type": "object", "required": ["cpu_millis", "memory_bytes"], "description": "the host's CPUs and memory minus the requests of the replicas placed on it; left out by older agents", "properties": {
            "cpu_millis": count, "memory_bytes": count,
        } },
    } })
}

/// One site of an application's status: each service's replicas, as their hosts reported them,
/// with the host beside the replica's own fields.
fn site_app_status_schema() -> Value {
    json!({ "type": "object", "properties": {
        "site": { "type": "string" }, "deployment": { "type": "string" }, "version": { "type": "string" },
        "connected": { "type": "boolean" },
        "services": { "type": "object", "description": "service -> its replicas at the site", "additionalProperties": {
            "type": "array", "items": { "type": "object", "properties": {
                "host": { "type": "string", "description": "the host that runs the replica" },
                "replica": { "type": "integer", "minimum": 0 }, "state": { "type": "string" },
            } },
        } },
    } })
}

/// The agent protocol's and rollouts' schemas (one `json!` would be too deep for the macro).
fn agent_schemas() -> Value {
    json!({
        "CreateTokenRequest": { "type": "object", "required": ["site"], "additionalProperties": false, "properties": {
            "site": name_schema(),
            "ttl_seconds": or_null(integer(1, MAX_TOKEN_TTL_SECONDS)),
            "uses": or_null(integer(1, u64::from(u32::MAX))),
        } },
        "CreateTokenResponse": { "type": "object", "properties": {
            "token": { "type": "string" }, "site": { "type": "string" }, "expires_at": { "type": "string" }, "uses": { "type": "integer" },
        } },
        "EnrollRequest": { "type": "object", "required": ["token", "csr_pem", "inventory"], "additionalProperties": false, "properties": {
            "token": { "type": "string" }, "csr_pem": { "type": "string" }, "inventory": schema_ref("Inventory"),
            "recipient": or_null(json!({ "type": "string", "description": "the host's X25519 public key, base64" })),
        } },
        "Inventory": inventory_schema(),
        "InventoryReport": { "type": "object", "required": ["inventory"], "description": format!("at most {MAX_INVENTORY_BYTES} bytes of JSON; lengths are in bytes of UTF-8"), "properties": {
            "inventory": schema_ref("Inventory"),
        } },
        "EnrollResponse": { "type": "object", "properties": {
            "site": { "type": "string" }, "host": { "type": "string" }, "certificate_pem": { "type": "string" },
            "certificate_expires_at": { "type": "string" }, "ca_pem": { "type": "string" }, "signing_key": { "type": "string" },
        } },
        "RenewRequest": { "type": "object", "required": ["csr_pem"], "additionalProperties": false, "properties": {
            "csr_pem": { "type": "string" }, "recipient": or_null(json!({ "type": "string", "description": "the host's X25519 public key, base64" })),
        } },
        "RenewResponse": { "type": "object", "properties": {
            "certificate_pem": { "type": "string" }, "certificate_expires_at": { "type": "string" },
        } },
        "ReportRequest": { "type": "object", "required": ["batches"], "additionalProperties": false, "description": format!("at most {MAX_REPORT_BYTES} bytes of JSON; lengths are in bytes of UTF-8"), "properties": {
            "batches": { "type": "array", "maxItems": MAX_BATCHES_PER_REPORT, "items": { "type": "object", "required": ["seq", "at"], "properties": {
                "seq": { "type": "integer" }, "at": { "type": "string", "maxLength": MAX_EVENT_AT_BYTES },
                "events": { "type": "array", "maxItems": MAX_EVENTS_PER_BATCH, "items": { "type": "object", "required": ["at", "kind", "message"], "properties": {
                    "at": { "type": "string", "format": "date-time", "maxLength": MAX_EVENT_AT_BYTES },
                    "kind": { "type": "string", "maxLength": MAX_EVENT_KIND_BYTES },
                    "message": { "type": "string", "maxLength": MAX_EVENT_MESSAGE_BYTES },
                } } },
                "status": { "type": "object" },
            } } },
        } },
        "ReportAck": { "type": "object", "properties": { "acked": { "type": "integer" } } },
        "HostLabelChange": label_change_schema(true),
        "SiteLabelChange": label_change_schema(false),
        "Labels": { "type": "object", "required": ["labels"], "properties": {
            "labels": { "type": "object", "additionalProperties": { "type": "string" } },
            "not_found": { "type": "array", "items": { "type": "string" }, "description": "keys asked to be removed that were not there" },
        } },
        "EventList": { "type": "object", "properties": { "items": { "type": "array", "items": { "type": "object", "properties": {
            "host": { "type": "string" }, "seq": { "type": "integer" },
            "at": { "type": "string", "description": "when it happened, as its agent claimed; the time received instead when the claim is over 5 minutes ahead of it" },
            "kind": { "type": "string" }, "message": { "type": "string" },
            "received_at": { "type": "string", "description": "when the control plane received it: the order and the retention go by this time" },
            "claimed_at": { "type": "string", "description": "the time claimed, present only when `at` is not it" },
        } } } } },
        "RolloutView": { "type": "object", "properties": {
            "deployment": { "type": "string" }, "from_version": { "type": ["string", "null"] }, "to_version": { "type": "string" },
            "phase": { "enum": ["running", "paused", "complete", "rolling_back", "rolled_back", "aborted", "superseded"] },
            "reason": { "type": "string" }, "started_at": { "type": "string" },
            "waves": { "type": "array", "items": { "type": "object" } }, "history": { "type": "array", "items": { "type": "object" } },
        } },
        "RolloutHistory": { "type": "object", "required": ["current", "past"], "properties": {
            "current": { "oneOf": [schema_ref("RolloutView"), { "type": "null" }], "description": "null when no rollout runs" },
            "past": { "type": "array", "items": schema_ref("RolloutView") },
        } },
        "SetSecretRequest": { "description": "a value (for every site, or for `site` only), or `generate`", "oneOf": [
            { "type": "object", "required": ["value"], "additionalProperties": false, "properties": {
                "value": {
                    "type": "string", "description": "standard base64, padded; at most 1 MiB once decoded",
                    "maxLength": MAX_VALUE_BASE64, "pattern": BASE64_PATTERN,
                },
                "site": or_null(name_schema()),
                "generate": { "type": "null" },
            } },
            { "type": "object", "required": ["generate"], "additionalProperties": false, "properties": {
                "value": { "type": "null" }, "site": { "type": "null" },
                "generate": { "type": "object", "required": ["length"], "additionalProperties": false, "properties": {
                    "length": integer(1, u64::from(Generate::MAX_LENGTH)),
                    "alphabet": { "enum": ["alphanumeric", "hex", "base64url", "printable"] },
                } },
            } },
        ] },
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
            "sites": { "type": "array", "items": site_app_status_schema() },
            "unplaced": schema_ref("UnplacedList"),
        } },
    })
}

#[cfg(test)]
mod tests {
    use atoll_api::agent::{ClusterRole, FreeResources, HostCluster, HostStatus};

    use super::*;

    /// Every field a host's status is shown with is described, down to its cluster and free
    /// resources, and every cluster role by its wire name.
    #[test]
    fn the_host_status_schema_describes_every_field_shown() {
        let schema = host_status_schema();
        let status = HostStatus {
            refused: Some("r".into()),
            secrets: [("db".to_owned(), 1)].into(),
            cluster: Some(HostCluster {
                role: ClusterRole::Leader,
                term: 1,
                leader: Some("h1".into()),
                voters: vec!["h1".into()],
            }),
            free: Some(FreeResources::default()),
            ..HostStatus::default()
        };
        let shown = serde_json::to_value(&status).unwrap();
        for (object, schema) in [
            (&shown, &schema),
            (&shown["cluster"], &schema["properties"]["cluster"]),
            (&shown["free"], &schema["properties"]["free"]),
        ] {
            for key in object.as_object().unwrap().keys() {
                assert!(schema["properties"][key].is_object(), "{key} undescribed");
            }
        }
        let roles = &schema["properties"]["cluster"]["properties"]["role"]["enum"];
        for role in [
            ClusterRole::Leader,
            ClusterRole::Voter,
            ClusterRole::NonVoter,
            ClusterRole::Candidate,
            ClusterRole::Unknown,
        ] {
            let word = serde_json::to_value(role).unwrap();
            assert!(roles.as_array().unwrap().contains(&word), "{word}");
        }
    }
}
