//! The generated OpenAPI document against the running router: every route it serves is
//! documented (and nothing else), and every documented response schema validates the real
//! response of that route.

mod common;

use common::TestStore;
use serde_json::{json, Value};

on_both_backends!(every_route_is_documented_and_real_responses_validate);

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// The JSON schema of `path`'s `method` reply with `status`, as a root schema that can resolve
/// the document's `#/components/schemas/...` references.
fn response_schema(doc: &Value, path: &str, method: &str, status: u16) -> Value {
    let resp = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(
        resp.is_object(),
        "{method} {path} documents no {status} reply"
    );
    let content = resp["content"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} {status} documents no content: {resp}"));
    let (_, media) = content.iter().next().expect("a media type");
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [media["schema"]],
    })
}

fn check(doc: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let schema = response_schema(doc, path, method, status);
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: bad schema {e}: {schema}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {body} does not match its schema: {errors:?}"
    );
}

struct Http {
    base: String,
    http: reqwest::Client,
}

impl Http {
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut r = self.http.request(m, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = if path.starts_with("/v1/watch") {
            // The stream does not end: its first line is enough.
            let mut resp = resp;
            let mut buf = Vec::new();
            while !buf.contains(&b'\n') {
                match resp.chunk().await.unwrap() {
                    Some(c) => buf.extend_from_slice(&c),
                    None => break,
                }
            }
            let line = buf.split(|b| *b == b'\n').next().unwrap_or(&[]).to_vec();
            String::from_utf8(line).unwrap()
        } else {
            resp.text().await.unwrap()
        };
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

async fn every_route_is_documented_and_real_responses_validate(store: TestStore) {
    let (server, client) = store.start().await;
    let http = Http {
        base: server.url().to_string(),
        http: reqwest::Client::new(),
    };
    let doc = client.openapi().await.unwrap();

    // Routes: each contract path with every method: what the router serves (anything but 405)
    // is documented, and what is documented is served.
    let mut undocumented = Vec::new();
    let mut unserved = Vec::new();
    for path in weft_api::paths::ALL {
        let concrete = path.replace("{id}", "some-app").replace("{host}", "h0");
        for method in METHODS {
            let resp = http
                .http
                .request(
                    reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    format!("{}{concrete}", http.base),
                )
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let served = resp.status() != 405;
            let documented = doc["paths"][path][method].is_object();
            if served && !documented {
                undocumented.push(format!("{method} {path}"));
            }
            if documented && !served {
                unserved.push(format!("{method} {path}"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "served, not documented: {undocumented:?}"
    );
    assert!(unserved.is_empty(), "documented, not served: {unserved:?}");
    // An unknown path is the fallback's 404 with an error body.
    let (status, body) = http.send("get", "/v1/nothing-here", None).await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());

    // Real responses against their schemas.
    let p = weft_api::paths::POLICIES;
    let calls: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        ("get", "/healthz", "/healthz".into(), None, 200),
        (
            "post",
            "/v1/leases/acquire",
            "/v1/leases/acquire".into(),
            Some(json!({"host": "h1", "underlay_ip": "192.0.2.1"})),
            200,
        ),
        (
            "post",
            "/v1/leases/acquire",
            "/v1/leases/acquire".into(),
            Some(json!({"host": "", "underlay_ip": "x"})),
            400,
        ),
        (
            "post",
            "/v1/leases/renew",
            "/v1/leases/renew".into(),
            Some(json!({"host": "h1"})),
            200,
        ),
        (
            "post",
            "/v1/leases/renew",
            "/v1/leases/renew".into(),
            Some(json!({"host": "nobody"})),
            404,
        ),
        ("get", "/v1/leases", "/v1/leases".into(), None, 200),
        (
            "put",
            "/v1/apps/{id}",
            "/v1/apps/web?host=h1".into(),
            None,
            200,
        ),
        ("get", "/v1/apps/{id}", "/v1/apps/web".into(), None, 200),
        ("get", "/v1/apps/{id}", "/v1/apps/nope".into(), None, 404),
        (
            "put",
            "/v1/hosts/{host}/apps",
            "/v1/hosts/h1/apps".into(),
            Some(json!({"apps": ["web", "db"]})),
            200,
        ),
        (
            "get",
            "/v1/hosts/{host}/apps",
            "/v1/hosts/h1/apps".into(),
            None,
            200,
        ),
        (
            "post",
            p,
            p.into(),
            Some(json!({"policies": [
                {"source": {"id": "web"}, "destination": {"id": "db", "protocol": "tcp", "ports": {"start": 5432, "end": 5432}}},
                {"source": {"id": "web"}, "destination": {"id": "api", "protocol": "icmp"}},
            ]})),
            200,
        ),
        (
            "post",
            p,
            p.into(),
            Some(json!({"policies": [{"source": {"id": ""}}]})),
            400,
        ),
        ("get", p, p.into(), None, 200),
        ("get", p, format!("{p}?id=db"), None, 200),
        (
            "get",
            "/networking/v1/external/tags",
            "/networking/v1/external/tags".into(),
            None,
            200,
        ),
        ("get", "/v1/apps", "/v1/apps".into(), None, 200),
        ("get", "/v1/watch", "/v1/watch".into(), None, 200),
        ("get", "/v1/watch", "/v1/watch?since=1".into(), None, 200),
        ("get", "/v1/watch", "/v1/watch?since=-1".into(), None, 400),
        (
            "delete",
            "/v1/apps/{id}",
            "/v1/apps/db?host=h1".into(),
            None,
            200,
        ),
        (
            "post",
            "/networking/v1/external/policies/delete",
            "/networking/v1/external/policies/delete".into(),
            Some(
                json!({"policies": [{"source": {"id": "web"}, "destination": {"id": "api", "protocol": "icmp"}}]}),
            ),
            200,
        ),
    ];
    for (method, template, path, body, want) in calls {
        let (status, reply) = http.send(method, &path, body).await;
        assert_eq!(status, want, "{method} {path}: {reply}");
        check(&doc, template, method, status, &reply);
    }

    // Placement: a container inside h1's lease (its subnet is the pool's choice).
    let (_, leases) = http.send("get", "/v1/leases", None).await;
    let subnet: ipnet::Ipv4Net = leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["host"] == "h1")
        .and_then(|l| l["subnet"].as_str())
        .unwrap()
        .parse()
        .unwrap();
    let ip = std::net::Ipv4Addr::from(u32::from(subnet.network()) + 2).to_string();
    let hc = "/v1/hosts/{host}/containers";
    let calls: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        (
            "put",
            hc,
            "/v1/hosts/h1/containers".into(),
            Some(json!({"containers": [{"id": "c1", "app": "web", "index": 0, "ip": ip}]})),
            200,
        ),
        (
            "put",
            hc,
            "/v1/hosts/h1/containers".into(),
            Some(json!({"containers": [{"id": "", "app": "web", "ip": "198.51.100.1"}]})),
            400,
        ),
        ("get", hc, "/v1/hosts/h1/containers".into(), None, 200),
        ("get", "/v1/instances", "/v1/instances".into(), None, 200),
        (
            "get",
            "/v1/instances",
            "/v1/instances?app=web".into(),
            None,
            200,
        ),
        ("get", "/v1/watch", "/v1/watch?host=h1".into(), None, 200),
    ];
    for (method, template, path, body, want) in calls {
        let (status, reply) = http.send(method, &path, body).await;
        assert_eq!(status, want, "{method} {path}: {reply}");
        check(&doc, template, method, status, &reply);
    }
    let (_, instances) = http.send("get", "/v1/instances", None).await;
    assert_eq!(instances["instances"][0]["ip"], ip.as_str(), "{instances}");

    // The check is not vacuous: a reply missing a required field, or with a field of the
    // wrong type, fails.
    let (_, leases) = http.send("get", "/v1/leases", None).await;
    let mut broken = leases.clone();
    broken["leases"][0]
        .as_object_mut()
        .unwrap()
        .remove("subnet");
    let schema = response_schema(&doc, "/v1/leases", "get", 200);
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&leases));
    assert!(!validator.is_valid(&broken), "a lease without a subnet");
    let mut broken = leases;
    broken["pool_size"] = json!("many");
    assert!(!validator.is_valid(&broken), "a pool size that is a string");
    let schema = response_schema(&doc, "/networking/v1/external/tags", "get", 200);
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(!validator.is_valid(&json!({"tags": [{"id": "a", "tag": 1, "type": "app"}]})));
    server.shutdown().await;
}
