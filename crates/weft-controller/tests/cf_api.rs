//! Cloud Foundry's policy server v1 API as CF clients speak it (the cf CLI's network-policy
//! commands, CF's Terraform provider): raw HTTP with the request bodies and headers they send,
//! checked against the response shapes cf-networking-release documents
//! (docs/08-policy-server-api.md).

mod common;

use common::TestStore;
use serde_json::{json, Value};

on_both_backends!(
    cf_clients_create_list_filter_tag_and_delete,
    cf_error_bodies
);

const TOKEN: &str = "s3cret";

/// Two policies exactly as CF's documentation writes them.
fn cf_fixture() -> Value {
    json!({
      "policies": [
        {
          "source": {"id": "1081ceac-f5c4-47a8-95e8-88e1e302efb5"},
          "destination": {
            "id": "38f08df0-19df-4439-b4e9-61096d4301ea",
            "protocol": "tcp",
            "ports": {"start": 1234, "end": 1235}
          }
        },
        {
          "source": {"id": "308e7ef1-63f1-4a6c-978c-2e527cbb1c36"},
          "destination": {
            "id": "308e7ef1-63f1-4a6c-978c-2e527cbb1c36",
            "protocol": "tcp",
            "ports": {"start": 1234, "end": 1235}
          }
        }
      ]
    })
}

const A: &str = "1081ceac-f5c4-47a8-95e8-88e1e302efb5";
const B: &str = "38f08df0-19df-4439-b4e9-61096d4301ea";
const C: &str = "308e7ef1-63f1-4a6c-978c-2e527cbb1c36";

struct Cf {
    base: String,
    http: reqwest::Client,
}

impl Cf {
    /// `Authorization` exactly as given (the cf CLI sends `bearer TOKEN`, lower case).
    async fn get(&self, path: &str, auth: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Authorization", auth)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, auth: &str, body: String) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Authorization", auth)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

fn ids(list: &Value) -> Vec<(String, String)> {
    list["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["source"]["id"].as_str().unwrap().to_string(),
                p["destination"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

async fn start(store: &TestStore) -> (weft_controller::server::RunningServer, Cf) {
    let mut args = store.args();
    args.token = Some(TOKEN.into());
    let (server, _) = common::start(args).await;
    let cf = Cf {
        base: server.url().to_string(),
        http: reqwest::Client::new(),
    };
    (server, cf)
}

async fn cf_clients_create_list_filter_tag_and_delete(store: TestStore) {
    let (server, cf) = start(&store).await;
    let lower = format!("bearer {TOKEN}");
    let (status, _) = cf
        .post(
            "/networking/v1/external/policies",
            &lower,
            cf_fixture().to_string(),
        )
        .await;
    assert_eq!(status, 200, "the cf CLI's lower-case `bearer` is accepted");

    // The list as CF documents it: total_policies and the policies, tags included.
    let (status, all) = cf
        .get(
            "/networking/v1/external/policies",
            &format!("Bearer {TOKEN}"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(all["total_policies"], 2);
    assert_eq!(ids(&all), vec![pair(A, B), pair(C, C)]);
    let first = &all["policies"][0];
    assert_eq!(first["destination"]["protocol"], "tcp");
    assert_eq!(
        first["destination"]["ports"],
        json!({"start": 1234, "end": 1235})
    );

    // ?id=: policies naming the app as source or destination.
    let (_, by_b) = cf
        .get(&format!("/networking/v1/external/policies?id={B}"), &lower)
        .await;
    assert_eq!(ids(&by_b), vec![pair(A, B)]);
    assert_eq!(by_b["total_policies"], 1);
    let (_, by_two) = cf
        .get(
            &format!("/networking/v1/external/policies?id={A},{C}"),
            &lower,
        )
        .await;
    assert_eq!(ids(&by_two), vec![pair(A, B), pair(C, C)]);
    // ?source_id= and ?dest_id= (both: a policy must match both).
    let (_, from_a) = cf
        .get(
            &format!("/networking/v1/external/policies?source_id={A}"),
            &lower,
        )
        .await;
    assert_eq!(ids(&from_a), vec![pair(A, B)]);
    let (_, to_a) = cf
        .get(
            &format!("/networking/v1/external/policies?dest_id={A}"),
            &lower,
        )
        .await;
    assert_eq!(ids(&to_a), Vec::<(String, String)>::new());
    let (_, both) = cf
        .get(
            &format!("/networking/v1/external/policies?source_id={A},{C}&dest_id={C}"),
            &lower,
        )
        .await;
    assert_eq!(ids(&both), vec![pair(C, C)]);

    // Tags as CF writes them: four upper-case hex digits, type app, one per app.
    let (status, tags) = cf.get("/networking/v1/external/tags", &lower).await;
    assert_eq!(status, 200);
    let tags = tags["tags"].as_array().unwrap().clone();
    assert_eq!(tags.len(), 3, "{tags:?}");
    let mut seen = std::collections::HashSet::new();
    for t in &tags {
        let tag = t["tag"].as_str().unwrap();
        assert_eq!(tag.len(), 4, "{t}");
        assert!(
            tag.chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
            "{t}"
        );
        assert_ne!(u16::from_str_radix(tag, 16).unwrap(), 0);
        assert_eq!(t["type"], "app");
        assert!(seen.insert(tag.to_string()), "tags are unique: {tags:?}");
    }
    let tagged: Vec<&str> = tags.iter().map(|t| t["id"].as_str().unwrap()).collect();
    for id in [A, B, C] {
        assert!(tagged.contains(&id), "{id} has a tag: {tags:?}");
    }
    // The tags are the ones the policies carry.
    let tag_of = |id: &str| {
        tags.iter()
            .find(|t| t["id"] == id)
            .map(|t| u16::from_str_radix(t["tag"].as_str().unwrap(), 16).unwrap())
            .unwrap()
    };
    assert_eq!(first["source"]["tag"], json!(tag_of(A)));

    // Delete with CF's body: one policy goes, the other stays.
    let one = json!({"policies": [cf_fixture()["policies"][0].clone()]});
    let (status, _) = cf
        .post(
            "/networking/v1/external/policies/delete",
            &lower,
            one.to_string(),
        )
        .await;
    assert_eq!(status, 200);
    let (_, left) = cf.get("/networking/v1/external/policies", &lower).await;
    assert_eq!(ids(&left), vec![pair(C, C)]);
    assert_eq!(left["total_policies"], 1);
    // Apps no policy names any more lose their tags.
    let (_, tags) = cf.get("/networking/v1/external/tags", &lower).await;
    let tagged: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(tagged, vec![C]);
    server.shutdown().await;
}

/// Every error reply carries CF's `{"error": "..."}` (weft adds `code` and `fields`).
async fn cf_error_bodies(store: TestStore) {
    let (server, cf) = start(&store).await;
    let lower = format!("bearer {TOKEN}");
    let cases = [
        // Wrong token, wrong scheme, no token for a write.
        (
            "/networking/v1/external/policies",
            "bearer wrong".to_string(),
            cf_fixture().to_string(),
            401,
        ),
        (
            "/networking/v1/external/policies",
            format!("Basic {TOKEN}"),
            cf_fixture().to_string(),
            401,
        ),
        (
            "/networking/v1/external/policies",
            String::new(),
            cf_fixture().to_string(),
            401,
        ),
        // Not JSON; a port out of range; an unknown protocol.
        (
            "/networking/v1/external/policies",
            lower.clone(),
            "{not json".to_string(),
            400,
        ),
        (
            "/networking/v1/external/policies",
            lower.clone(),
            json!({"policies": [{"source": {"id": A}, "destination": {"id": B, "protocol": "tcp", "ports": {"start": 0, "end": 70000}}}]}).to_string(),
            400,
        ),
        (
            "/networking/v1/external/policies/delete",
            lower.clone(),
            json!({"policies": [{"source": {"id": A}, "destination": {"id": B, "protocol": "sctp", "ports": {"start": 1, "end": 2}}}]}).to_string(),
            400,
        ),
    ];
    for (path, auth, body, want) in cases {
        let (status, reply) = cf.post(path, &auth, body.clone()).await;
        assert_eq!(status, want, "{path} {auth:?} {body}: {reply}");
        let error = reply["error"].as_str().unwrap_or("");
        assert!(!error.is_empty(), "CF's error field: {reply}");
    }
    let (status, reply) = cf.get("/networking/v1/external/tags", "bearer wrong").await;
    assert_eq!(status, 401);
    assert!(reply["error"].is_string(), "{reply}");
    server.shutdown().await;
}
