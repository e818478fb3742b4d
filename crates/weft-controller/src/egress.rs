//! Egress: the network-wide mode, destinations (named address ranges outside the overlay) and
//! egress policies (app → destination), stored beside c2c policies and announced on the watch
//! like them. Wire shapes and typed parsing are `weft_api::egress`'s; this module validates
//! requests, naming every bad field, and keeps the store.
//!
//! Creating an egress policy gives its app a tag (the agent matches the app by its mark), and
//! an app named by an egress policy is not released. A destination that egress policies name
//! cannot be deleted (409, naming them).

use std::collections::HashSet;

use serde_json::Value as Json;

use crate::apps;
use crate::changelog;
use crate::error::{Error, FieldErrors, Result};
use crate::store::{Row, Tx, Value};
use weft_api::egress::{
    parse_ips, parse_ports, Destination, DestinationRule, EgressMode, EgressPolicy, EgressProtocol,
    EgressState,
};
use weft_api::model::Event;

/// Most destinations or egress policies in one request.
pub const MAX_BATCH: usize = 10_000;
/// Most rules in one destination.
pub const MAX_RULES: usize = 1_000;

fn parse_json(body: &[u8]) -> Result<Json> {
    serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("body is not valid JSON: {e}")))
}

fn array<'a>(json: &'a Json, field: &str, max: usize) -> Result<&'a Vec<Json>> {
    let Some(list) = json.get(field) else {
        return Err(Error::field(field, "is required"));
    };
    let Some(items) = list.as_array() else {
        return Err(Error::field(field, "must be an array"));
    };
    if items.len() > max {
        return Err(Error::field(field, format!("at most {max} per request")));
    }
    Ok(items)
}

fn string(item: &Json, path: &str, key: &str, errors: &mut FieldErrors) -> Option<String> {
    match item.get(key) {
        None | Some(Json::Null) => {
            errors.push(format!("{path}.{key}"), "is required");
            None
        }
        Some(Json::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(format!("{path}.{key}"), "must be a string");
            None
        }
    }
}

fn optional_string(item: &Json, path: &str, key: &str, errors: &mut FieldErrors) -> String {
    match item.get(key) {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) if s.len() <= 1024 => s.clone(),
        Some(Json::String(_)) => {
            errors.push(format!("{path}.{key}"), "at most 1024 bytes");
            String::new()
        }
        Some(_) => {
            errors.push(format!("{path}.{key}"), "must be a string");
            String::new()
        }
    }
}

fn parse_rule(path: &str, item: &Json, errors: &mut FieldErrors) -> Option<DestinationRule> {
    if !item.is_object() {
        errors.push(path, "must be an object");
        return None;
    }
    let protocol = string(item, path, "protocol", errors).and_then(|p| {
        let parsed = EgressProtocol::parse(&p);
        if parsed.is_none() {
            errors.push(
                format!("{path}.protocol"),
                format!("unknown protocol {p:?}: must be tcp, udp, icmp or all"),
            );
        }
        parsed
    });
    let ips = string(item, path, "ips", errors);
    let ports = match item.get("ports") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        // A number is a single port, as people write it.
        Some(Json::Number(n)) => Some(n.to_string()),
        Some(_) => {
            errors.push(
                format!("{path}.ports"),
                "must be a string (\"80\" or \"80-90\")",
            );
            return None;
        }
    };
    let description = optional_string(item, path, "description", errors);
    // Each part on its own, so that one reply names every bad field.
    let mut ok = true;
    if let Some(ips) = &ips {
        if let Err(e) = parse_ips(ips) {
            errors.push(format!("{path}.ips"), e);
            ok = false;
        }
    }
    if let (Some(p), Some(proto)) = (&ports, protocol) {
        let checked = if proto.has_ports() {
            parse_ports(p).map(|_| ())
        } else {
            Err(format!("{} rules take no ports", proto.as_str()))
        };
        if let Err(e) = checked {
            errors.push(format!("{path}.ports"), e);
            ok = false;
        }
    }
    let rule = DestinationRule {
        protocol: protocol?,
        ips: ips?,
        ports,
        description,
    };
    (ok && rule.parse().is_ok()).then_some(rule)
}

/// Parses and validates a destination create body (`{"destinations": [...]}`); each
/// destination's id is its name.
pub fn parse_destinations(body: &[u8]) -> Result<Vec<Destination>> {
    let json = parse_json(body)?;
    let items = array(&json, "destinations", MAX_BATCH)?;
    let mut errors = FieldErrors::default();
    let mut out = Vec::with_capacity(items.len());
    let mut names = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("destinations[{i}]");
        if !item.is_object() {
            errors.push(path, "must be an object");
            continue;
        }
        let name = string(item, &path, "name", &mut errors);
        if let Some(name) = &name {
            let before = errors.0.len();
            apps::validate_id(&format!("{path}.name"), name, &mut errors);
            if errors.0.len() == before && !names.insert(name.clone()) {
                errors.push(format!("{path}.name"), format!("{name:?} is given twice"));
            }
        }
        let description = optional_string(item, &path, "description", &mut errors);
        let rules = match item.get("rules").and_then(Json::as_array) {
            None => {
                errors.push(format!("{path}.rules"), "is required (an array of rules)");
                None
            }
            Some(r) if r.is_empty() => {
                errors.push(format!("{path}.rules"), "needs at least one rule");
                None
            }
            Some(r) if r.len() > MAX_RULES => {
                errors.push(
                    format!("{path}.rules"),
                    format!("at most {MAX_RULES} rules per destination"),
                );
                None
            }
            Some(r) => {
                let parsed: Vec<Option<DestinationRule>> = r
                    .iter()
                    .enumerate()
                    .map(|(j, rule)| parse_rule(&format!("{path}.rules[{j}]"), rule, &mut errors))
                    .collect();
                parsed.into_iter().collect::<Option<Vec<_>>>()
            }
        };
        if let (Some(name), Some(rules)) = (name, rules) {
            out.push(Destination {
                id: name.clone(),
                name,
                description,
                rules,
            });
        }
    }
    errors.into_result()?;
    Ok(out)
}

/// Parses and validates an egress policy create or delete body (`{"egress_policies": [...]}`).
pub fn parse_policies(body: &[u8]) -> Result<Vec<EgressPolicy>> {
    let json = parse_json(body)?;
    let items = array(&json, "egress_policies", MAX_BATCH)?;
    let mut errors = FieldErrors::default();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("egress_policies[{i}]");
        let source = item.get("source").filter(|s| s.is_object());
        let destination = item.get("destination").filter(|s| s.is_object());
        if source.is_none() {
            errors.push(
                format!("{path}.source"),
                "is required (an object with an id)",
            );
        }
        if destination.is_none() {
            errors.push(
                format!("{path}.destination"),
                "is required (an object with an id)",
            );
        }
        let spath = format!("{path}.source");
        let app = source.and_then(|s| {
            if let Some(kind) = s.get("type").filter(|t| !t.is_null()) {
                if kind.as_str() != Some("app") {
                    errors.push(format!("{spath}.type"), "must be \"app\"");
                    return None;
                }
            }
            let id = string(s, &spath, "id", &mut errors)?;
            let before = errors.0.len();
            apps::validate_id(&format!("{spath}.id"), &id, &mut errors);
            (errors.0.len() == before).then_some(id)
        });
        let dest =
            destination.and_then(|d| string(d, &format!("{path}.destination"), "id", &mut errors));
        if let (Some(app), Some(dest)) = (app, dest) {
            out.push(EgressPolicy::new(&app, &dest));
        }
    }
    errors.into_result()?;
    Ok(out)
}

fn destination_from_row(row: &Row) -> Result<Destination> {
    let rules_text = row.text(3)?;
    let rules: Vec<DestinationRule> = serde_json::from_str(&rules_text)
        .map_err(|e| Error::Store(format!("stored rules of destination unreadable: {e}")))?;
    Ok(Destination {
        id: row.text(0)?,
        name: row.text(1)?,
        description: row.text(2)?,
        rules,
    })
}

async fn get_destination(tx: &mut dyn Tx, id: &str) -> Result<Option<Destination>> {
    let rows = tx
        .query(
            "SELECT id, name, description, rules FROM egress_destinations WHERE id = $1",
            &[Value::from(id)],
        )
        .await?;
    rows.first().map(destination_from_row).transpose()
}

/// Creates the destinations, or replaces the description and rules of those that exist.
/// Returns how many changed.
pub async fn put_destinations(tx: &mut dyn Tx, list: &[Destination]) -> Result<usize> {
    let mut changed = 0;
    for d in list {
        if get_destination(tx, &d.id).await?.as_ref() == Some(d) {
            continue;
        }
        let rules = serde_json::to_string(&d.rules).map_err(Error::store)?;
        tx.execute(
            "INSERT INTO egress_destinations (id, name, description, rules) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
             description = excluded.description, rules = excluded.rules",
            &[
                Value::from(&d.id),
                Value::from(&d.name),
                Value::from(&d.description),
                Value::from(rules),
            ],
        )
        .await?;
        changelog::append(
            tx,
            &Event::DestinationPut {
                destination: d.clone(),
            },
        )
        .await?;
        changed += 1;
    }
    Ok(changed)
}

/// Every destination, by id.
pub async fn list_destinations(tx: &mut dyn Tx) -> Result<Vec<Destination>> {
    let rows = tx
        .query(
            "SELECT id, name, description, rules FROM egress_destinations ORDER BY id",
            &[],
        )
        .await?;
    rows.iter().map(destination_from_row).collect()
}

/// Deletes a destination no egress policy names.
pub async fn delete_destination(tx: &mut dyn Tx, id: &str) -> Result<Destination> {
    let Some(d) = get_destination(tx, id).await? else {
        return Err(Error::NotFound(format!("no destination {id:?}")));
    };
    let rows = tx
        .query(
            "SELECT source_id FROM egress_policies WHERE destination_id = $1 ORDER BY id",
            &[Value::from(id)],
        )
        .await?;
    if !rows.is_empty() {
        let apps: Vec<String> = rows.iter().map(|r| r.text(0)).collect::<Result<_>>()?;
        return Err(Error::Conflict(format!(
            "destination {id:?} is named by the egress policies of {apps:?}: delete them first"
        )));
    }
    tx.execute(
        "DELETE FROM egress_destinations WHERE id = $1",
        &[Value::from(id)],
    )
    .await?;
    changelog::append(
        tx,
        &Event::DestinationDeleted {
            destination: d.clone(),
        },
    )
    .await?;
    Ok(d)
}

fn dedup(list: &[EgressPolicy]) -> Vec<EgressPolicy> {
    let mut seen = HashSet::new();
    list.iter()
        .map(EgressPolicy::untagged)
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// Creates the egress policies that do not exist yet; their apps get tags. Every destination
/// must exist (400 naming the field). Returns how many were new.
pub async fn create_policies(tx: &mut dyn Tx, list: &[EgressPolicy]) -> Result<usize> {
    let unique = dedup(list);
    let mut errors = FieldErrors::default();
    let mut known = HashSet::new();
    for (i, p) in list.iter().enumerate() {
        if known.contains(&p.destination.id) {
            continue;
        }
        if get_destination(tx, &p.destination.id).await?.is_some() {
            known.insert(p.destination.id.clone());
        } else {
            errors.push(
                format!("egress_policies[{i}].destination.id"),
                format!("no destination {:?}", p.destination.id),
            );
        }
    }
    errors.into_result()?;
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    for p in &unique {
        if seen.insert(p.source.id.clone()) {
            ids.push(p.source.id.clone());
        }
    }
    let (apps, new_apps) = apps::ensure_all(tx, &ids).await?;
    let mut events: Vec<Event> = new_apps
        .into_iter()
        .map(|app| Event::AppPut { app })
        .collect();
    let mut created = 0;
    for p in unique {
        let n = tx
            .query(
                "INSERT INTO egress_policies (source_id, destination_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING RETURNING id",
                &[Value::from(&p.source.id), Value::from(&p.destination.id)],
            )
            .await?
            .len();
        if n == 0 {
            continue;
        }
        created += 1;
        let mut egress_policy = p.clone();
        egress_policy.source.tag = apps.get(&p.source.id).map(|a| a.tag);
        events.push(Event::EgressPolicyCreated { egress_policy });
    }
    changelog::append_all(tx, &events).await?;
    Ok(created)
}

/// Deletes the given egress policies; apps no longer referenced (nor claimed) are released.
pub async fn delete_policies(tx: &mut dyn Tx, list: &[EgressPolicy]) -> Result<usize> {
    let mut deleted = 0;
    let mut touched = Vec::new();
    for p in dedup(list) {
        let n = tx
            .execute(
                "DELETE FROM egress_policies WHERE source_id = $1 AND destination_id = $2",
                &[Value::from(&p.source.id), Value::from(&p.destination.id)],
            )
            .await?;
        if n == 0 {
            continue;
        }
        deleted += 1;
        let mut egress_policy = p.clone();
        egress_policy.source.tag = apps::get(tx, &p.source.id).await?.map(|a| a.tag);
        changelog::append(tx, &Event::EgressPolicyDeleted { egress_policy }).await?;
        touched.push(p.source.id);
    }
    for id in touched {
        apps::release_if_unreferenced(tx, &id).await?;
    }
    Ok(deleted)
}

/// Egress policies with their apps' tags, in creation order.
pub async fn list_policies(tx: &mut dyn Tx) -> Result<Vec<EgressPolicy>> {
    let rows = tx
        .query(
            "SELECT e.source_id, a.tag, e.destination_id FROM egress_policies e \
             LEFT JOIN apps a ON a.id = e.source_id ORDER BY e.id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let mut p = EgressPolicy::new(&r.text(0)?, &r.text(2)?);
            p.source.tag = r.opt_int(1)?.and_then(|t| u16::try_from(t).ok());
            Ok(p)
        })
        .collect()
}

const MODE_KEY: &str = "egress_deny";

/// The network-wide mode (allow until set).
pub async fn mode(tx: &mut dyn Tx) -> Result<EgressMode> {
    Ok(match changelog::meta(tx, MODE_KEY).await? {
        Some(1) => EgressMode::Deny,
        _ => EgressMode::Allow,
    })
}

/// Sets the mode; announces it if it changed.
pub async fn set_mode(tx: &mut dyn Tx, new: EgressMode) -> Result<bool> {
    if mode(tx).await? == new {
        return Ok(false);
    }
    let v = match new {
        EgressMode::Deny => 1,
        EgressMode::Allow => 0,
    };
    changelog::set_meta(tx, MODE_KEY, v).await?;
    changelog::append(tx, &Event::EgressModeSet { mode: new }).await?;
    Ok(true)
}

/// The egress part of a snapshot.
pub async fn state(tx: &mut dyn Tx) -> Result<EgressState> {
    Ok(EgressState {
        mode: mode(tx).await?,
        destinations: list_destinations(tx).await?,
        policies: list_policies(tx).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(r: Result<impl std::fmt::Debug>) -> Vec<String> {
        match r {
            Err(Error::Validation(f)) => f.into_iter().map(|f| f.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn destinations_name_every_bad_field() {
        let ok = parse_destinations(
            br#"{"destinations":[{"name":"web","rules":[{"protocol":"tcp","ips":"203.0.113.0/24","ports":"80"},
                {"protocol":"all","ips":"10.1.0.1-10.1.0.9"}]}]}"#,
        )
        .unwrap();
        assert_eq!(ok[0].id, "web");
        assert_eq!(ok[0].rules.len(), 2);
        let bad = parse_destinations(
            br#"{"destinations":[
                {"name":"","rules":[]},
                {"name":"x","rules":[{"protocol":"sctp","ips":"1.1.1.1"},{"protocol":"tcp","ips":"1.1.1.1/33"},
                    {"protocol":"icmp","ips":"1.1.1.1","ports":"1"},{"protocol":"udp","ips":"1.1.1.1","ports":"9-1"}]},
                {"name":"x","rules":[{"protocol":"tcp","ips":"1.1.1.1"}]}]}"#,
        );
        assert_eq!(
            fields(bad),
            vec![
                "destinations[0].name",
                "destinations[0].rules",
                "destinations[1].rules[0].protocol",
                "destinations[1].rules[1].ips",
                "destinations[1].rules[2].ports",
                "destinations[1].rules[3].ports",
                "destinations[2].name",
            ]
        );
    }

    #[test]
    fn egress_policies_name_every_bad_field() {
        let ok = parse_policies(
            br#"{"egress_policies":[{"source":{"id":"db","type":"app"},"destination":{"id":"web"}}]}"#,
        )
        .unwrap();
        assert_eq!(ok, vec![EgressPolicy::new("db", "web")]);
        let bad = parse_policies(
            br#"{"egress_policies":[{"source":{"id":"db","type":"space"},"destination":{}},{}]}"#,
        );
        assert_eq!(
            fields(bad),
            vec![
                "egress_policies[0].source.type",
                "egress_policies[0].destination.id",
                "egress_policies[1].source",
                "egress_policies[1].destination",
            ]
        );
    }
}
