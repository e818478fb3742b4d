//! Placement: the instances (containers) each host runs, as the hosts report them
//! (`PUT /v1/hosts/{host}/containers`, the complete set each time). Internal DNS answers from
//! them and the watch stream carries their changes (`instance_put`, `instance_deleted`). A host
//! reports only while it holds a lease and only addresses inside it; its instances go when it
//! reports a set without them or when its lease goes (released or expired), in the same
//! transaction.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use serde_json::Value as Json;

use crate::changelog;
use crate::error::{Error, FieldErrors, Result};
use crate::store::{Row, Tx, Value};
use weft_api::model::{Event, Instance, ReportedInstance};

/// Most containers one host may report (a /24 holds 254; room for larger host subnets).
pub const MAX_PER_HOST: usize = 1024;
/// Longest container id or app id, in bytes.
pub const MAX_ID: usize = 255;

/// Checks a container id: 1..=255 printable characters without whitespace (as app ids).
fn validate_container_id(field: &str, id: &str, errors: &mut FieldErrors) {
    crate::apps::validate_id(field, id, errors);
}

fn string_field(path: &str, item: &Json, key: &str, errors: &mut FieldErrors) -> Option<String> {
    let field = format!("{path}.{key}");
    match item.get(key) {
        None | Some(Json::Null) => {
            errors.push(field, "is required");
            None
        }
        Some(Json::String(s)) => {
            let before = errors.0.len();
            if key == "app" {
                crate::apps::validate_id(&field, s, errors);
            } else {
                validate_container_id(&field, s, errors);
            }
            (errors.0.len() == before).then(|| s.clone())
        }
        Some(_) => {
            errors.push(field, "must be a string");
            None
        }
    }
}

fn parse_one(path: &str, item: &Json, errors: &mut FieldErrors) -> Option<ReportedInstance> {
    if !item.is_object() {
        errors.push(path, "must be an object with id, app and ip");
        return None;
    }
    let id = string_field(path, item, "id", errors);
    let app = string_field(path, item, "app", errors);
    let index = match item.get("index") {
        None | Some(Json::Null) => Some(None),
        Some(Json::Number(n)) => match n.as_u64().and_then(|i| u32::try_from(i).ok()) {
            Some(i) => Some(Some(i)),
            None => {
                errors.push(
                    format!("{path}.index"),
                    format!("{n} is not an instance index (0 to {})", u32::MAX),
                );
                None
            }
        },
        Some(_) => {
            errors.push(format!("{path}.index"), "must be an integer");
            None
        }
    };
    let ip = match item.get("ip") {
        None | Some(Json::Null) => {
            errors.push(format!("{path}.ip"), "is required");
            None
        }
        Some(Json::String(s)) => match s.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                errors.push(
                    format!("{path}.ip"),
                    format!("{s:?} is not an IPv4 address"),
                );
                None
            }
        },
        Some(_) => {
            errors.push(format!("{path}.ip"), "must be a string (an IPv4 address)");
            None
        }
    };
    Some(ReportedInstance {
        id: id?,
        app: app?,
        index: index?,
        ip: ip?,
    })
}

/// Parses and validates a container set body (`{"containers": [...]}`), naming every bad
/// field: at most [`MAX_PER_HOST`] containers, ids and addresses unique within the set.
pub fn parse_request(body: &[u8]) -> Result<Vec<ReportedInstance>> {
    let json: Json = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("body is not valid JSON: {e}")))?;
    let Some(list) = json.get("containers") else {
        return Err(Error::field("containers", "is required"));
    };
    let Some(items) = list.as_array() else {
        return Err(Error::field("containers", "must be an array"));
    };
    if items.len() > MAX_PER_HOST {
        return Err(Error::field(
            "containers",
            format!(
                "{} containers: a host may report at most {MAX_PER_HOST}",
                items.len()
            ),
        ));
    }
    let mut errors = FieldErrors::default();
    let mut out = Vec::with_capacity(items.len());
    let mut ids = HashSet::new();
    let mut ips = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("containers[{i}]");
        let Some(c) = parse_one(&path, item, &mut errors) else {
            continue;
        };
        if !ids.insert(c.id.clone()) {
            errors.push(
                format!("{path}.id"),
                format!("{:?} is reported twice", c.id),
            );
        }
        if !ips.insert(c.ip) {
            errors.push(
                format!("{path}.ip"),
                format!("{} is reported for two containers", c.ip),
            );
        }
        out.push(c);
    }
    errors.into_result()?;
    Ok(out)
}

const COLUMNS: &str = "host, id, app, instance_index, ip";

fn from_row(row: &Row) -> Result<Instance> {
    let ip = row.text(4)?;
    let index = row.opt_int(3)?;
    Ok(Instance {
        host: row.text(0)?,
        id: row.text(1)?,
        app: row.text(2)?,
        index: index
            .map(|i| {
                u32::try_from(i)
                    .map_err(|_| Error::Store(format!("stored instance index {i} out of range")))
            })
            .transpose()?,
        ip: ip
            .parse()
            .map_err(|e| Error::Store(format!("stored instance ip {ip:?}: {e}")))?,
    })
}

/// Every instance, or those of one app; by host and id.
pub async fn list(tx: &mut dyn Tx, app: Option<&str>) -> Result<Vec<Instance>> {
    let rows = match app {
        None => {
            tx.query(
                &format!("SELECT {COLUMNS} FROM instances ORDER BY host, id"),
                &[],
            )
            .await?
        }
        Some(app) => {
            tx.query(
                &format!("SELECT {COLUMNS} FROM instances WHERE app = $1 ORDER BY host, id"),
                &[Value::from(app)],
            )
            .await?
        }
    };
    rows.iter().map(from_row).collect()
}

/// The instances `host` reported, by id.
pub async fn of_host(tx: &mut dyn Tx, host: &str) -> Result<Vec<Instance>> {
    let rows = tx
        .query(
            &format!("SELECT {COLUMNS} FROM instances WHERE host = $1 ORDER BY id"),
            &[Value::from(host)],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

pub async fn count(tx: &mut dyn Tx) -> Result<i64> {
    let rows = tx.query("SELECT COUNT(*) FROM instances", &[]).await?;
    rows.first().map(|r| r.int(0)).unwrap_or(Ok(0))
}

/// What changes when `host`, now running `current`, reports `reported`: the instances to put
/// (new or changed) and those to delete, each by id order. Pure, so unit-tested.
pub fn diff(
    host: &str,
    current: &[Instance],
    reported: &[ReportedInstance],
) -> (Vec<Instance>, Vec<Instance>) {
    let now: BTreeMap<&str, &Instance> = current.iter().map(|i| (i.id.as_str(), i)).collect();
    let wanted: BTreeMap<&str, Instance> = reported
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                Instance {
                    host: host.to_string(),
                    id: r.id.clone(),
                    app: r.app.clone(),
                    index: r.index,
                    ip: r.ip,
                },
            )
        })
        .collect();
    let put = wanted
        .iter()
        .filter(|(id, w)| now.get(*id).is_none_or(|n| *n != *w))
        .map(|(_, w)| w.clone())
        .collect();
    let deleted = now
        .iter()
        .filter(|(id, _)| !wanted.contains_key(*id))
        .map(|(_, n)| (*n).clone())
        .collect();
    (put, deleted)
}

/// Makes `reported` exactly the instances `host` runs: the host must hold a lease and every
/// address must be inside it (`containers[i].ip` otherwise). Records an `instance_put` for each
/// new or changed instance and an `instance_deleted` for each one gone. Returns the host's
/// instances.
pub async fn set(
    tx: &mut dyn Tx,
    host: &str,
    reported: &[ReportedInstance],
) -> Result<Vec<Instance>> {
    let mut errors = FieldErrors::default();
    crate::leases::validate_host("host", host, &mut errors);
    errors.into_result()?;
    let Some(lease) = crate::leases::get(tx, host).await? else {
        return Err(Error::Conflict(format!(
            "host {host:?} holds no lease: acquire one before reporting containers"
        )));
    };
    let mut errors = FieldErrors::default();
    for (i, r) in reported.iter().enumerate() {
        if !lease.subnet.contains(&r.ip) {
            errors.push(
                format!("containers[{i}].ip"),
                format!("{} is outside host {host:?}'s lease {}", r.ip, lease.subnet),
            );
        }
    }
    errors.into_result()?;
    let current = of_host(tx, host).await?;
    let (put, deleted) = diff(host, &current, reported);
    let mut events = Vec::with_capacity(put.len() + deleted.len());
    for gone in deleted {
        tx.execute(
            "DELETE FROM instances WHERE host = $1 AND id = $2",
            &[Value::from(host), Value::from(&gone.id)],
        )
        .await?;
        events.push(Event::InstanceDeleted { instance: gone });
    }
    for i in put {
        tx.execute(
            "INSERT INTO instances (host, id, app, instance_index, ip) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (host, id) DO UPDATE SET app = excluded.app, \
             instance_index = excluded.instance_index, ip = excluded.ip",
            &[
                Value::from(host),
                Value::from(&i.id),
                Value::from(&i.app),
                i.index.map_or(Value::Null, |x| Value::Int(x.into())),
                Value::Text(i.ip.to_string()),
            ],
        )
        .await?;
        events.push(Event::InstancePut { instance: i });
    }
    changelog::append_all(tx, &events).await?;
    of_host(tx, host).await
}

/// Drops every instance of `host` (its lease went), recording each.
pub async fn drop_host(tx: &mut dyn Tx, host: &str) -> Result<()> {
    let gone = of_host(tx, host).await?;
    if gone.is_empty() {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM instances WHERE host = $1",
        &[Value::from(host)],
    )
    .await?;
    let events: Vec<Event> = gone
        .into_iter()
        .map(|instance| Event::InstanceDeleted { instance })
        .collect();
    changelog::append_all(tx, &events).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(id: &str, app: &str, ip: &str) -> ReportedInstance {
        ReportedInstance {
            id: id.into(),
            app: app.into(),
            index: None,
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn diff_puts_new_and_changed_and_deletes_gone() {
        let current: Vec<Instance> = [("a", "web", "10.0.0.2"), ("b", "web", "10.0.0.3")]
            .iter()
            .map(|(id, app, ip)| Instance {
                host: "h".into(),
                id: id.to_string(),
                app: app.to_string(),
                index: None,
                ip: ip.parse().unwrap(),
            })
            .collect();
        let (put, del) = diff(
            "h",
            &current,
            &[
                reported("a", "web", "10.0.0.2"),
                reported("b", "api", "10.0.0.3"),
                reported("c", "db", "10.0.0.4"),
            ],
        );
        let ids: Vec<(&str, &str)> = put
            .iter()
            .map(|i| (i.id.as_str(), i.app.as_str()))
            .collect();
        assert_eq!(ids, vec![("b", "api"), ("c", "db")]);
        assert!(del.is_empty());
        let (put, del) = diff("h", &current, &[]);
        assert!(put.is_empty());
        assert_eq!(del, current);
        // Same set again: nothing.
        let same: Vec<ReportedInstance> = current
            .iter()
            .map(|i| reported(&i.id, &i.app, &i.ip.to_string()))
            .collect();
        assert_eq!(diff("h", &current, &same), (vec![], vec![]));
    }

    #[test]
    fn bodies_are_validated_naming_the_field() {
        let ok = parse_request(
            br#"{"containers":[{"id":"c1","app":"web","index":2,"ip":"10.0.0.2"},{"id":"c2","app":"web","ip":"10.0.0.3"}]}"#,
        )
        .unwrap();
        assert_eq!(ok[0].index, Some(2));
        assert_eq!(ok[1].index, None);
        let fields = |body: &str| match parse_request(body.as_bytes()) {
            Err(Error::Validation(f)) => f.into_iter().map(|f| f.field).collect::<Vec<_>>(),
            other => panic!("{body}: expected a validation error, got {other:?}"),
        };
        assert_eq!(fields("{}"), vec!["containers"]);
        assert_eq!(fields(r#"{"containers":{}}"#), vec!["containers"]);
        assert_eq!(
            fields(r#"{"containers":[{"id":"","app":"a b","ip":"300.0.0.1","index":-1}]}"#),
            vec![
                "containers[0].id",
                "containers[0].app",
                "containers[0].index",
                "containers[0].ip"
            ]
        );
        assert_eq!(
            fields(
                r#"{"containers":[{"id":"c","app":"a","ip":"10.0.0.2"},{"id":"c","app":"a","ip":"10.0.0.2"}]}"#
            ),
            vec!["containers[1].id", "containers[1].ip"]
        );
        assert_eq!(fields(r#"{"containers":[7]}"#), vec!["containers[0]"]);
        let long = "x".repeat(MAX_ID + 1);
        assert_eq!(
            fields(&format!(
                r#"{{"containers":[{{"id":"{long}","app":"a","ip":"10.0.0.2"}}]}}"#
            )),
            vec!["containers[0].id"]
        );
        let many: Vec<String> = (0..=MAX_PER_HOST)
            .map(|i| {
                format!(
                    r#"{{"id":"c{i}","app":"a","ip":"10.0.{}.{}"}}"#,
                    i / 256,
                    i % 256
                )
            })
            .collect();
        assert_eq!(
            fields(&format!(r#"{{"containers":[{}]}}"#, many.join(","))),
            vec!["containers"]
        );
        assert!(matches!(
            parse_request(b"not json"),
            Err(Error::BadRequest(_))
        ));
    }
}
