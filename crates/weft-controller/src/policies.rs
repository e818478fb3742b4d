//! Policies: allow traffic from a source app to a destination app's protocol and ports. The wire
//! shape is Cloud Foundry's policy server external API. Creating a policy twice is not an error;
//! deleting one that does not exist is not an error either.

use std::collections::{BTreeSet, HashSet};

use serde_json::Value as Json;

use crate::apps;
use crate::changelog;
use crate::error::{Error, FieldErrors, Result};
use crate::store::{statement_chunks, value_rows, Row, Tx, Value};
use weft_api::model::{Event, Policy, Ports, Protocol};

/// Most policies accepted in one request.
pub const MAX_BATCH: usize = 100_000;

/// Parses and validates a create or delete request body, naming every bad field.
pub fn parse_request(body: &[u8]) -> Result<Vec<Policy>> {
    let json: Json = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("body is not valid JSON: {e}")))?;
    let mut errors = FieldErrors::default();
    let Some(list) = json.get("policies") else {
        return Err(Error::field("policies", "is required"));
    };
    let Some(items) = list.as_array() else {
        return Err(Error::field("policies", "must be an array"));
    };
    if items.len() > MAX_BATCH {
        return Err(Error::field(
            "policies",
            format!("at most {MAX_BATCH} policies per request"),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(p) = parse_policy(&format!("policies[{i}]"), item, &mut errors) {
            out.push(p);
        }
    }
    errors.into_result()?;
    Ok(out)
}

fn parse_id(path: &str, end: Option<&Json>, errors: &mut FieldErrors) -> Option<String> {
    let field = format!("{path}.id");
    match end.and_then(|e| e.get("id")) {
        None | Some(Json::Null) => {
            errors.push(field, "is required");
            None
        }
        Some(Json::String(id)) => {
            let before = errors.0.len();
            apps::validate_id(&field, id, errors);
            (errors.0.len() == before).then(|| id.clone())
        }
        Some(_) => {
            errors.push(field, "must be a string");
            None
        }
    }
}

fn parse_port(field: String, v: Option<&Json>, errors: &mut FieldErrors) -> Option<u16> {
    match v {
        None | Some(Json::Null) => {
            errors.push(field, "is required");
            None
        }
        Some(Json::Number(n)) => match n.as_i64() {
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            _ => {
                errors.push(field, format!("{n} is not a port: must be 1 to 65535"));
                None
            }
        },
        Some(_) => {
            errors.push(field, "must be an integer");
            None
        }
    }
}

fn parse_policy(path: &str, item: &Json, errors: &mut FieldErrors) -> Option<Policy> {
    if !item.is_object() {
        errors.push(path, "must be an object");
        return None;
    }
    let source = item.get("source").filter(|s| s.is_object());
    if source.is_none() {
        errors.push(
            format!("{path}.source"),
            "is required (an object with an id)",
        );
    }
    let destination = item.get("destination").filter(|s| s.is_object());
    if destination.is_none() {
        errors.push(
            format!("{path}.destination"),
            "is required (an object with id, protocol and ports)",
        );
    }
    let source_id = source.and_then(|s| parse_id(&format!("{path}.source"), Some(s), errors));
    let dpath = format!("{path}.destination");
    let dest_id = destination.and_then(|d| parse_id(&dpath, Some(d), errors));
    let destination = destination?;
    let protocol = match destination.get("protocol") {
        None | Some(Json::Null) => {
            errors.push(
                format!("{dpath}.protocol"),
                "is required (tcp, udp or icmp)",
            );
            None
        }
        Some(Json::String(p)) => {
            let parsed = Protocol::parse(p);
            if parsed.is_none() {
                errors.push(
                    format!("{dpath}.protocol"),
                    format!("unknown protocol {p:?}: must be tcp, udp or icmp"),
                );
            }
            parsed
        }
        Some(_) => {
            errors.push(format!("{dpath}.protocol"), "must be a string");
            None
        }
    };
    let ports_json = destination.get("ports").filter(|p| !p.is_null());
    let port_json = destination.get("port").filter(|p| !p.is_null());
    let ports = match protocol {
        Some(Protocol::Icmp) => {
            if ports_json.is_some() || port_json.is_some() {
                errors.push(format!("{dpath}.ports"), "icmp policies take no ports");
            }
            None
        }
        Some(_) => match (ports_json, port_json) {
            (Some(ports), _) if ports.is_object() => {
                let start = parse_port(format!("{dpath}.ports.start"), ports.get("start"), errors);
                let end = parse_port(format!("{dpath}.ports.end"), ports.get("end"), errors);
                match (start, end) {
                    (Some(start), Some(end)) if start > end => {
                        errors.push(
                            format!("{dpath}.ports"),
                            format!("start {start} is greater than end {end}"),
                        );
                        None
                    }
                    (Some(start), Some(end)) => Some(Ports { start, end }),
                    _ => None,
                }
            }
            (Some(_), _) => {
                errors.push(format!("{dpath}.ports"), "must be an object {start, end}");
                None
            }
            (None, Some(port)) => parse_port(format!("{dpath}.port"), Some(port), errors)
                .map(|p| Ports { start: p, end: p }),
            (None, None) => {
                errors.push(
                    format!("{dpath}.ports"),
                    "is required for tcp and udp ({\"start\": N, \"end\": M})",
                );
                None
            }
        },
        None => None,
    };
    let protocol = protocol?;
    if protocol != Protocol::Icmp && ports.is_none() {
        return None;
    }
    Some(Policy::new(&source_id?, &dest_id?, protocol, ports))
}

fn port_columns(p: &Policy) -> (i64, i64) {
    match p.destination.ports {
        Some(ports) => (ports.start.into(), ports.end.into()),
        None => (0, 0),
    }
}

fn key_values(p: &Policy) -> Vec<Value> {
    let (start, end) = port_columns(p);
    vec![
        Value::from(&p.source.id),
        Value::from(&p.destination.id),
        Value::from(p.destination.protocol.as_str()),
        Value::Int(start),
        Value::Int(end),
    ]
}

/// The policies without tags, in request order, each once.
fn dedup(policies: &[Policy]) -> Vec<Policy> {
    let mut seen = HashSet::new();
    policies
        .iter()
        .map(Policy::untagged)
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// A policy's key as stored: (source, destination, protocol, start port, end port).
type Key = (String, String, String, i64, i64);

fn key(p: &Policy) -> Key {
    let (start, end) = port_columns(p);
    (
        p.source.id.clone(),
        p.destination.id.clone(),
        p.destination.protocol.as_str().to_string(),
        start,
        end,
    )
}

/// Inserts the policies that do not exist yet (multi-row statements); returns their keys.
async fn insert_new(tx: &mut dyn Tx, policies: &[Policy]) -> Result<HashSet<Key>> {
    let mut inserted = HashSet::new();
    for chunk in statement_chunks(policies) {
        let sql = format!(
            "INSERT INTO policies (source_id, destination_id, protocol, start_port, end_port) \
             VALUES {} ON CONFLICT DO NOTHING \
             RETURNING source_id, destination_id, protocol, start_port, end_port",
            value_rows(chunk.len(), 5)
        );
        let params: Vec<Value> = chunk.iter().flat_map(key_values).collect();
        for row in tx.query(&sql, &params).await? {
            inserted.insert((
                row.text(0)?,
                row.text(1)?,
                row.text(2)?,
                row.int(3)?,
                row.int(4)?,
            ));
        }
    }
    Ok(inserted)
}

/// Creates the policies that do not exist yet, giving new apps tags. Returns how many were new.
///
/// The whole batch costs a few statements, yet tags, events and their order are those of
/// handling the policies one at a time: for each policy in request order, its source and then
/// its destination get a tag if new (`AppPut`), then the policy is stored if new
/// (`PolicyCreated`).
pub async fn create(tx: &mut dyn Tx, policies: &[Policy]) -> Result<usize> {
    let unique = dedup(policies);
    if unique.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::new();
    {
        let mut seen = HashSet::new();
        for p in &unique {
            for id in [&p.source.id, &p.destination.id] {
                if seen.insert(id.as_str()) {
                    ids.push(id.clone());
                }
            }
        }
    }
    let (apps, new_apps) = apps::ensure_all(tx, &ids).await?;
    let inserted = insert_new(tx, &unique).await?;
    let tag_of = |id: &str| -> Result<u16> {
        apps.get(id)
            .map(|a| a.tag)
            .ok_or_else(|| Error::Store(format!("app {id:?} missing after ensure")))
    };
    let mut announce: HashSet<&str> = new_apps.iter().map(|a| a.id.as_str()).collect();
    let mut events = Vec::with_capacity(new_apps.len() + inserted.len());
    let mut created = 0;
    for p in &unique {
        for id in [&p.source.id, &p.destination.id] {
            if announce.remove(id.as_str()) {
                let app = apps[id].clone();
                events.push(Event::AppPut { app });
            }
        }
        if inserted.contains(&key(p)) {
            created += 1;
            let mut policy = p.clone();
            policy.source.tag = Some(tag_of(&p.source.id)?);
            policy.destination.tag = Some(tag_of(&p.destination.id)?);
            events.push(Event::PolicyCreated { policy });
        }
    }
    changelog::append_all(tx, &events).await?;
    Ok(created)
}

/// Deletes the given policies; apps no longer referenced (nor claimed) are released.
pub async fn delete(tx: &mut dyn Tx, policies: &[Policy]) -> Result<usize> {
    let unique = dedup(policies);
    let mut deleted = 0;
    let mut touched_apps = BTreeSet::new();
    for p in unique {
        let n = tx
            .execute(
                "DELETE FROM policies WHERE source_id = $1 AND destination_id = $2 \
                 AND protocol = $3 AND start_port = $4 AND end_port = $5",
                &key_values(&p),
            )
            .await?;
        if n == 0 {
            continue;
        }
        deleted += 1;
        let mut policy = p;
        policy.source.tag = apps::get(tx, &policy.source.id).await?.map(|a| a.tag);
        policy.destination.tag = apps::get(tx, &policy.destination.id).await?.map(|a| a.tag);
        touched_apps.insert(policy.source.id.clone());
        touched_apps.insert(policy.destination.id.clone());
        changelog::append(tx, &Event::PolicyDeleted { policy }).await?;
    }
    for id in touched_apps {
        apps::release_if_unreferenced(tx, &id).await?;
    }
    Ok(deleted)
}

fn policy_from_row(row: &Row) -> Result<Policy> {
    let protocol_text = row.text(4)?;
    let protocol = Protocol::parse(&protocol_text)
        .ok_or_else(|| Error::Store(format!("stored protocol {protocol_text:?} unknown")))?;
    let port = |i: usize| -> Result<u16> {
        let v = row.int(i)?;
        u16::try_from(v).map_err(|_| Error::Store(format!("stored port {v} out of range")))
    };
    let ports = match protocol {
        Protocol::Icmp => None,
        _ => Some(Ports {
            start: port(5)?,
            end: port(6)?,
        }),
    };
    let tag = |i: usize| -> Result<Option<u16>> {
        Ok(row.opt_int(i)?.and_then(|t| u16::try_from(t).ok()))
    };
    let mut p = Policy::new(&row.text(0)?, &row.text(2)?, protocol, ports);
    p.source.tag = tag(1)?;
    p.destination.tag = tag(3)?;
    Ok(p)
}

/// Which policies a list returns, as Cloud Foundry's `GET /networking/v1/external/policies`
/// reads its query: `id` (source or destination is one of them) wins over `source_id` and
/// `dest_id`; with both of those, a policy must match both; none of them lists all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub ids: Option<Vec<String>>,
    pub source_ids: Option<Vec<String>>,
    pub dest_ids: Option<Vec<String>>,
}

impl Filter {
    /// Only the policies whose source or destination is one of `ids`.
    pub fn naming(ids: &[String]) -> Filter {
        Filter {
            ids: Some(ids.to_vec()),
            ..Filter::default()
        }
    }

    /// The filter of a query's `id`, `source_id` and `dest_id` (comma-separated lists).
    pub fn from_query(q: &std::collections::HashMap<String, String>) -> Filter {
        let list = |name: &str| {
            q.get(name).map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
        };
        Filter {
            ids: list("id"),
            source_ids: list("source_id"),
            dest_ids: list("dest_id"),
        }
    }
}

/// `IN ($n, ...)` for `ids`, numbering from `params.len() + 1`, with the ids pushed.
fn in_list(ids: &[String], params: &mut Vec<Value>) -> String {
    let first = params.len() + 1;
    let marks: Vec<String> = (first..first + ids.len())
        .map(|i| format!("${i}"))
        .collect();
    params.extend(ids.iter().map(Value::from));
    format!("IN ({})", marks.join(", "))
}

/// Policies with their tags, in creation order, those `filter` selects.
pub async fn list(tx: &mut dyn Tx, filter: &Filter) -> Result<Vec<Policy>> {
    let mut sql = "SELECT p.source_id, s.tag, p.destination_id, d.tag, p.protocol, \
                   p.start_port, p.end_port FROM policies p \
                   LEFT JOIN apps s ON s.id = p.source_id \
                   LEFT JOIN apps d ON d.id = p.destination_id"
        .to_string();
    let mut params = Vec::new();
    let given = |l: &Option<Vec<String>>| l.clone().filter(|l| !l.is_empty());
    let condition = match (
        given(&filter.ids),
        given(&filter.source_ids),
        given(&filter.dest_ids),
    ) {
        (Some(ids), _, _) => {
            let src = in_list(&ids, &mut params);
            let dst = in_list(&ids, &mut params);
            Some(format!("p.source_id {src} OR p.destination_id {dst}"))
        }
        (None, Some(s), Some(d)) => {
            let src = in_list(&s, &mut params);
            let dst = in_list(&d, &mut params);
            Some(format!("p.source_id {src} AND p.destination_id {dst}"))
        }
        (None, Some(s), None) => Some(format!("p.source_id {}", in_list(&s, &mut params))),
        (None, None, Some(d)) => Some(format!("p.destination_id {}", in_list(&d, &mut params))),
        (None, None, None) => {
            // `?id=` given but empty names no app: nothing matches.
            if filter.ids.is_some() || filter.source_ids.is_some() || filter.dest_ids.is_some() {
                return Ok(Vec::new());
            }
            None
        }
    };
    if let Some(c) = condition {
        sql.push_str(&format!(" WHERE {c}"));
    }
    sql.push_str(" ORDER BY p.id");
    let rows = tx.query(&sql, &params).await?;
    rows.iter().map(policy_from_row).collect()
}

pub async fn count(tx: &mut dyn Tx) -> Result<i64> {
    let rows = tx.query("SELECT COUNT(*) FROM policies", &[]).await?;
    rows.first().map(|r| r.int(0)).unwrap_or(Ok(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> Vec<String> {
        match parse_request(body.as_bytes()) {
            Err(Error::Validation(f)) => f.into_iter().map(|f| f.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_cloud_foundry_shape() {
        let body = r#"{"policies":[{"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":8080,"end":8090}}},
                      {"source":{"id":"a"},"destination":{"id":"c","protocol":"icmp"}},
                      {"source":{"id":"a"},"destination":{"id":"c","protocol":"udp","port":53}}]}"#;
        let p = parse_request(body.as_bytes()).unwrap();
        assert_eq!(
            p[0],
            Policy::new(
                "a",
                "b",
                Protocol::Tcp,
                Some(Ports {
                    start: 8080,
                    end: 8090
                })
            )
        );
        assert_eq!(p[1], Policy::new("a", "c", Protocol::Icmp, None));
        assert_eq!(p[2].destination.ports, Some(Ports { start: 53, end: 53 }));
    }

    #[test]
    fn names_every_bad_field() {
        let body = r#"{"policies":[
            {"source":{"id":""},"destination":{"id":"b","protocol":"sctp"}},
            {"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":0,"end":70000}}},
            {"source":{"id":"a"},"destination":{"id":"b","protocol":"tcp","ports":{"start":90,"end":80}}},
            {"destination":{"protocol":"udp"}},
            {"source":{"id":"a"},"destination":{"id":"b","protocol":"icmp","ports":{"start":1,"end":1}}}
        ]}"#;
        assert_eq!(
            fields(body),
            vec![
                "policies[0].source.id",
                "policies[0].destination.protocol",
                "policies[1].destination.ports.start",
                "policies[1].destination.ports.end",
                "policies[2].destination.ports",
                "policies[3].source",
                "policies[3].destination.id",
                "policies[3].destination.ports",
                "policies[4].destination.ports",
            ]
        );
        assert_eq!(fields("{}"), vec!["policies"]);
        assert!(matches!(
            parse_request(b"not json"),
            Err(Error::BadRequest(_))
        ));
    }
}
