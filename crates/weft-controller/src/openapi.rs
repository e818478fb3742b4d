//! The OpenAPI 3 document served at `/openapi.json` ([`weft_api::paths::OPENAPI`]): one entry
//! per path of the contract ([`weft_api::paths`]), with the schemas of `weft_api::model`.

use serde_json::{json, Value};

fn ok(schema: &str, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn errors(codes: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for c in codes {
        m.insert(c.to_string(), ok("Error", "error"));
    }
    Value::Object(m)
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

pub fn document() -> Value {
    let agent = json!([{"clientCert": []}, {"bearer": []}]);
    let admin = json!([{"bearer": []}]);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "weft controller",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Subnet leases, app tags and policies for weft hosts. Agents authenticate with client certificates (mTLS) that name their host (URI SAN urn:weft:host:NAME) and act only as that host (another host's lease or claims: 403); people and scripts with a bearer token, which may act for any host; policy writes need the token. Request bodies above --max-body-bytes (default 1 MiB) get 413 before they are read. Every error has the Error shape."
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness and store reachability", "security": [], "responses": {"200": ok("Health", "healthy"), "503": {"description": "store unreachable"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3"}}}},
            "/v1/leases": {"get": {"summary": "All leases and the pool", "security": agent, "responses": merge(json!({"200": ok("LeaseList", "leases")}), errors(&["401"]))}},
            "/v1/leases/acquire": {"post": {"summary": "Get a subnet for a host (its old one if it still holds it, else the one it asks for if free)", "security": agent, "requestBody": body("AcquireLease"),
                "responses": merge(json!({"200": ok("Lease", "the lease")}), errors(&["400", "401", "403", "409", "413", "503"]))}},
            "/v1/leases/renew": {"post": {"summary": "Extend a host's lease", "security": agent, "requestBody": body("HostRef"),
                "responses": merge(json!({"200": ok("Lease", "the renewed lease")}), errors(&["400", "401", "403", "404", "413"]))}},
            "/v1/leases/release": {"post": {"summary": "Return a host's subnet to the pool", "security": agent, "requestBody": body("HostRef"),
                "responses": merge(json!({"204": {"description": "released (or was not held); the host's app claims go with it"}}), errors(&["400", "401", "403", "413"]))}},
            "/v1/apps": {"get": {"summary": "Apps and their tags", "security": agent, "responses": merge(json!({"200": ok("AppList", "apps")}), errors(&["401"]))}},
            "/v1/hosts/{host}/apps": {
                "parameters": [{"name": "host", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": {"summary": "The apps a host claims", "security": agent, "responses": merge(json!({"200": ok("AppList", "the host's claims")}), errors(&["401"]))},
                "put": {"summary": "Set the apps a host runs (its claims become exactly these; apps it dropped that no host claims and no policy names are released). The host must hold a lease; at most --max-claims-per-host apps (422).", "security": agent, "requestBody": body("ClaimSet"),
                    "responses": merge(json!({"200": ok("AppList", "the apps, with tags, in request order")}), errors(&["400", "401", "403", "409", "413", "422", "503"]))}
            },
            "/v1/apps/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "host", "in": "query", "required": false, "description": "the host that claims (required with the token or --insecure-http; with a certificate, its host)", "schema": {"type": "string"}}],
                "get": {"summary": "One app", "security": agent, "responses": merge(json!({"200": ok("App", "the app")}), errors(&["401", "404"]))},
                "put": {"summary": "A host claims an app for a running container (gives it a tag)", "security": agent, "responses": merge(json!({"200": ok("App", "the app")}), errors(&["400", "401", "403", "409", "422", "503"]))},
                "delete": {"summary": "Drop the host's claim; the app is released unless another host claims it or a policy names it", "security": agent,
                    "responses": merge(json!({"200": ok("App", "still claimed or referenced by a policy"), "204": {"description": "released"}}), errors(&["400", "401", "403", "404"]))}
            },
            "/networking/v1/external/policies": {
                "get": {"summary": "List policies (Cloud Foundry shape)", "security": agent,
                    "parameters": [{"name": "id", "in": "query", "required": false, "description": "comma-separated app ids: policies whose source or destination is one of them", "schema": {"type": "string"}},
                        {"name": "source_id", "in": "query", "required": false, "description": "comma-separated app ids: policies from one of them (ignored with id)", "schema": {"type": "string"}},
                        {"name": "dest_id", "in": "query", "required": false, "description": "comma-separated app ids: policies to one of them (ignored with id; with source_id, both must match)", "schema": {"type": "string"}}],
                    "responses": merge(json!({"200": ok("PolicyList", "policies with tags")}), errors(&["401"]))},
                "post": {"summary": "Create policies (idempotent)", "security": admin, "requestBody": body("PolicyList"),
                    "responses": merge(json!({"200": ok("PolicyWriteResult", "how many were new")}), errors(&["400", "401", "403", "408", "413", "503"]))}
            },
            "/networking/v1/external/policies/delete": {"post": {"summary": "Delete policies (missing ones are ignored)", "security": admin, "requestBody": body("PolicyList"),
                "responses": merge(json!({"200": ok("PolicyWriteResult", "how many were deleted")}), errors(&["400", "401", "403", "408", "413"]))}},
            "/networking/v1/external/tags": {"get": {"summary": "Every app's tag (Cloud Foundry shape: hex, two bytes)", "security": agent,
                "responses": merge(json!({"200": ok("TagList", "tags")}), errors(&["401"]))}},
            "/v1/watch": {"get": {"summary": "Snapshot then every change, as JSON lines (application/x-ndjson)", "security": agent,
                "parameters": [{"name": "since", "in": "query", "required": false, "description": "resume after this revision: replay the changes after it if the change log still has them, else a snapshot", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "snapshot", "in": "query", "required": false, "description": "parts: the snapshot comes as a snapshot line with more=true and snapshot_part lines (at most 1000 items each, the last with more false); whole (default): one line", "schema": {"type": "string", "enum": ["parts", "whole"]}}],
                "responses": merge(json!({"200": {"description": "one WatchMessage per line: the snapshot (or the replayed changes), a heartbeat announcing interval_ms, then every change and a heartbeat after each idle interval", "content": {"application/x-ndjson": {"schema": {"$ref": "#/components/schemas/WatchMessage"}}}}}), errors(&["400", "401"]))}}
        },
        "components": {
            "securitySchemes": {
                "clientCert": {"type": "mutualTLS", "description": "client certificate signed by the controller's client CA; its URI SAN urn:weft:host:NAME is the host it acts as"},
                "bearer": {"type": "http", "scheme": "bearer"}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["code", "error"], "properties": {
                    "code": {"type": "string", "example": "validation_failed"},
                    "error": {"type": "string"},
                    "fields": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string", "example": "policies[0].destination.ports.start"}, "message": {"type": "string"}}}}}},
                "Health": {"type": "object", "properties": {"status": {"type": "string"}, "store": {"type": "string", "enum": ["sqlite", "postgres"]}, "revision": {"type": "integer"}}},
                "AcquireLease": {"type": "object", "required": ["host", "underlay_ip"], "properties": {"host": {"type": "string"}, "underlay_ip": {"type": "string", "format": "ip"},
                    "subnet": {"type": "string", "example": "10.255.7.0/24", "description": "the subnet the host held before: given again if free (400 if it is not one of the pool's subnets)"}}},
                "HostRef": {"type": "object", "required": ["host"], "properties": {"host": {"type": "string"}}},
                "Lease": {"type": "object", "properties": {
                    "host": {"type": "string"}, "underlay_ip": {"type": "string"}, "subnet": {"type": "string", "example": "10.255.7.0/24"},
                    "vtep_mac": {"type": "string", "example": "ee:ee:0a:ff:07:00"}, "acquired_at": {"type": "integer", "description": "unix seconds"}, "expires_at": {"type": "integer", "description": "unix seconds"}}},
                "LeaseList": {"type": "object", "properties": {"overlay": {"type": "string"}, "host_prefix": {"type": "integer"}, "pool_size": {"type": "integer"}, "leases": {"type": "array", "items": {"$ref": "#/components/schemas/Lease"}}}},
                "App": {"type": "object", "properties": {"id": {"type": "string"}, "tag": {"type": "integer", "minimum": 1, "maximum": 65535}, "claimed": {"type": "boolean"}}},
                "ClaimSet": {"type": "object", "required": ["apps"], "properties": {"apps": {"type": "array", "items": {"type": "string"}}}},
                "AppList": {"type": "object", "properties": {"apps": {"type": "array", "items": {"$ref": "#/components/schemas/App"}}}},
                "Policy": {"type": "object", "required": ["source", "destination"], "properties": {
                    "source": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}, "tag": {"type": "integer", "readOnly": true}}},
                    "destination": {"type": "object", "required": ["id", "protocol"], "properties": {
                        "id": {"type": "string"}, "tag": {"type": "integer", "readOnly": true},
                        "protocol": {"type": "string", "enum": ["tcp", "udp", "icmp"]},
                        "ports": {"type": "object", "description": "required for tcp and udp, absent for icmp", "properties": {"start": {"type": "integer", "minimum": 1, "maximum": 65535}, "end": {"type": "integer", "minimum": 1, "maximum": 65535}}},
                        "port": {"type": "integer", "description": "shorthand for ports {start: port, end: port}", "writeOnly": true}}}}},
                "PolicyList": {"type": "object", "required": ["policies"], "properties": {"total_policies": {"type": "integer", "readOnly": true}, "policies": {"type": "array", "items": {"$ref": "#/components/schemas/Policy"}}}},
                "TagList": {"type": "object", "required": ["tags"], "properties": {"tags": {"type": "array", "items": {"type": "object", "required": ["id", "tag", "type"], "properties": {
                    "id": {"type": "string"}, "tag": {"type": "string", "example": "0001", "description": "upper-case hex, four digits"}, "type": {"type": "string", "enum": ["app"]}}}}}},
                "PolicyWriteResult": {"type": "object", "properties": {"changed": {"type": "integer"}, "revision": {"type": "integer"}}},
                "Event": {"type": "object", "required": ["type"], "description": "type is one of lease_put, lease_deleted (with lease), app_put, app_deleted (with app), policy_created, policy_deleted (with policy)",
                    "properties": {"type": {"type": "string"}, "lease": {"$ref": "#/components/schemas/Lease"}, "app": {"$ref": "#/components/schemas/App"}, "policy": {"$ref": "#/components/schemas/Policy"}}},
                "WatchMessage": {"type": "object", "required": ["kind", "revision"], "description": "kind snapshot: revision, leases, apps, policies (more: parts follow); kind snapshot_part: the same, at the snapshot's revision; kind change: revision, event; kind heartbeat: revision, interval_ms. Clients skip kinds and fields they do not know.",
                    "properties": {"kind": {"type": "string", "enum": ["snapshot", "snapshot_part", "change", "heartbeat"]}, "revision": {"type": "integer"},
                        "more": {"type": "boolean"}, "interval_ms": {"type": "integer", "description": "heartbeat interval of this stream"},
                        "leases": {"type": "array", "items": {"$ref": "#/components/schemas/Lease"}}, "apps": {"type": "array", "items": {"$ref": "#/components/schemas/App"}},
                        "policies": {"type": "array", "items": {"$ref": "#/components/schemas/Policy"}}, "event": {"$ref": "#/components/schemas/Event"}}}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    /// The document names exactly the contract's paths (the ones the router serves).
    #[test]
    fn documents_every_path_of_the_contract() {
        let doc = super::document();
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort();
        let mut contract = weft_api::paths::ALL.to_vec();
        contract.sort();
        assert_eq!(documented, contract);
    }
}
