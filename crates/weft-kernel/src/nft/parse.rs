//! Reading a table back: libnftables' JSON listing (`nft -j list table`) into the table
//! model, completed by the terse listing with handles (`nft -t -a list table`) for what the
//! JSON of nftables 1.0.6 (Debian 12) leaves out: the table's comment, a set's `typeof` and
//! its `dynamic` flag, and each rule's match and statements as nft syntax (JSON gives them as
//! an expression tree). The two listings are joined by handle; a table that changed between
//! them is reported ([`Listing::Changed`]) so the caller lists again.
//!
//! Pure: the listings come in as text, nothing here talks to the kernel.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value as Json;

use super::model::{
    Chain, Counter, Element, Family, Hook, Rule, Set, SetFlag, SetKey, SetKind, Table, Value,
    Verdict,
};

/// Why two listings did not give a table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Listing {
    /// The table changed between the two listings (list both again).
    Changed(String),
    /// A listing that is not what libnftables writes.
    Malformed(String),
}

/// What the terse text listing says that the JSON does not.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TextListing {
    pub table_handle: Option<u64>,
    pub comment: Option<String>,
    /// Per set: its declaration line (`type ...` / `typeof ...`) and its flags.
    pub sets: HashMap<String, (Option<String>, Vec<SetFlag>)>,
    /// Per rule handle: the rule's line without `# handle N`.
    pub rules: HashMap<u64, String>,
}

/// The table in `json` (`nft -j list table F N`) and `text` (`nft -t -a list table F N`).
pub(crate) fn table(json: &str, text: &str) -> Result<Table, Listing> {
    let text = text_listing(text);
    let v: Json = serde_json::from_str(json)
        .map_err(|e| Listing::Malformed(format!("nftables JSON listing: {e}")))?;
    let objects = v["nftables"]
        .as_array()
        .ok_or_else(|| Listing::Malformed("no \"nftables\" array in the JSON listing".into()))?;
    let mut table: Option<Table> = None;
    for o in objects {
        let Some((kind, body)) = o.as_object().and_then(|m| m.iter().next()) else {
            continue;
        };
        if kind == "table" {
            table = Some(table_of(body)?);
            continue;
        }
        let Some(t) = table.as_mut() else { continue };
        match kind.as_str() {
            "set" | "map" => t.sets.push(set_of(body, &text)),
            "chain" => t.chains.push(chain_of(body)),
            "rule" => {
                let chain = body["chain"].as_str().unwrap_or_default();
                let rule = rule_of(body, &text)?;
                match t.chains.iter_mut().find(|c| c.name == chain) {
                    Some(c) => c.rules.push(rule),
                    None => {
                        return Err(Listing::Malformed(format!("rule of unknown chain {chain}")))
                    }
                }
            }
            _ => {}
        }
    }
    let mut t = table.ok_or_else(|| Listing::Malformed("no table in the JSON listing".into()))?;
    if text.table_handle != t.handle {
        return Err(Listing::Changed(format!(
            "table {} {} was replaced between two listings",
            t.family, t.name
        )));
    }
    t.comment = text.comment;
    Ok(t)
}

/// The sets and maps in a JSON listing, from the JSON alone (see [`super::Nft::list_sets`]).
pub(crate) fn sets(json: &str) -> Result<Vec<Set>, String> {
    let v: Json = serde_json::from_str(json).map_err(|e| format!("nftables JSON listing: {e}"))?;
    let objects = v["nftables"]
        .as_array()
        .ok_or_else(|| "no \"nftables\" array in the JSON listing".to_string())?;
    let text = TextListing::default();
    Ok(objects
        .iter()
        .filter_map(|o| o.get("set").or_else(|| o.get("map")))
        .map(|body| set_of(body, &text))
        .collect())
}

/// The names in a `list tables` JSON answer.
pub(crate) fn table_names(json: &str) -> Result<Vec<String>, String> {
    let v: Json = serde_json::from_str(json).map_err(|e| format!("nftables JSON listing: {e}"))?;
    Ok(v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["table"]["name"].as_str().map(str::to_string))
        .collect())
}

fn table_of(body: &Json) -> Result<Table, Listing> {
    let family: Family = body["family"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(Listing::Malformed)?;
    let mut t = Table::new(family, body["name"].as_str().unwrap_or_default());
    t.handle = body["handle"].as_u64();
    Ok(t)
}

/// A JSON string or list of strings.
fn strings(v: &Json) -> Vec<String> {
    match v {
        Json::String(s) => vec![s.clone()],
        Json::Array(a) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn set_of(body: &Json, text: &TextListing) -> Set {
    let name = body["name"].as_str().unwrap_or_default().to_string();
    // JSON names the key's data types even for a `typeof` set (the types resolved).
    let key_types = strings(&body["type"]);
    let data_type = body["map"].as_str().map(str::to_string);
    let (decl, text_flags) = text.sets.get(&name).cloned().unwrap_or_default();
    let (key, kind) = match decl.as_deref().and_then(|d| d.strip_prefix("typeof ")) {
        // `typeof KEY-EXPR [: DATA-EXPR]`
        Some(rest) => {
            let (k, d) = match rest.split_once(" : ") {
                Some((k, d)) => (k, Some(d.to_string())),
                None => (rest, None),
            };
            let kind = match (&data_type, d) {
                (Some(_), Some(d)) => SetKind::Map(d),
                (Some(t), None) => SetKind::Map(t.clone()),
                (None, _) => SetKind::Set,
            };
            (SetKey::Typeof(k.to_string()), kind)
        }
        None => (
            SetKey::Type(key_types.clone()),
            data_type.clone().map_or(SetKind::Set, SetKind::Map),
        ),
    };
    // The text listing has every flag; the JSON of nftables 1.0.6 lacks `dynamic`.
    let mut flags = if decl.is_some() {
        text_flags
    } else {
        strings(&body["flags"])
            .iter()
            .filter_map(|f| SetFlag::parse(f))
            .collect()
    };
    flags.sort();
    flags.dedup();
    let data_types: Vec<String> = data_type
        .as_deref()
        .map(|d| d.split(" . ").map(str::to_string).collect())
        .unwrap_or_default();
    let elements = body["elem"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| element_of(e, &key_types, &data_types))
        .collect();
    Set {
        name,
        kind,
        key,
        flags,
        size: body["size"].as_u64().and_then(|n| u32::try_from(n).ok()),
        timeout: body["timeout"].as_u64().map(Duration::from_secs),
        counter: body["stmt"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x.get("counter").is_some())),
        elements,
        handle: body["handle"].as_u64(),
    }
}

/// One element: a value, `{"elem": {"val": ..., "counter": ..., ...}}`, or for maps a
/// `[key, value]` pair whose key may be such an `elem`.
fn element_of(e: &Json, key_types: &[String], data_types: &[String]) -> Option<Element> {
    let (k, v) = match e.as_array() {
        Some(pair) if pair.len() == 2 => (&pair[0], Some(&pair[1])),
        _ => (e, None),
    };
    let mut el = match k.get("elem") {
        Some(inner) => {
            let mut el = Element::key(value_of(&inner["val"], key_types));
            el.comment = inner["comment"].as_str().map(str::to_string);
            el.timeout = inner["timeout"].as_u64().map(Duration::from_secs);
            el.expires = inner["expires"].as_u64().map(Duration::from_secs);
            el.counter = counter_of(&inner["counter"]);
            el
        }
        None => Element::key(value_of(k, key_types)),
    };
    el.value = v.map(|v| value_of(v, data_types));
    Some(el)
}

fn counter_of(c: &Json) -> Option<Counter> {
    Some(Counter {
        packets: c.get("packets")?.as_u64()?,
        bytes: c.get("bytes")?.as_u64()?,
    })
}

/// A key or value; `types` are the data types of its parts (`ifname` parts are names, which
/// nft needs quoted).
fn value_of(v: &Json, types: &[String]) -> Value {
    let ty = types.first().map(String::as_str);
    match v {
        Json::String(s) if matches!(ty, Some("ifname" | "string")) => Value::Name(s.clone()),
        Json::String(s) => Value::Literal(s.clone()),
        Json::Number(n) => n
            .as_u64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::Literal(n.to_string())),
        Json::Object(o) => {
            if let Some(parts) = o.get("concat").and_then(Json::as_array) {
                return Value::Concat(
                    parts
                        .iter()
                        .enumerate()
                        .map(|(i, p)| value_of(p, types.get(i..).unwrap_or_default()))
                        .collect(),
                );
            }
            if let Some([a, b]) = o.get("range").and_then(Json::as_array).map(Vec::as_slice) {
                return Value::range(value_of(a, types), value_of(b, types));
            }
            if let Some(p) = o.get("prefix") {
                if let (Some(a), Some(l)) = (p["addr"].as_str(), p["len"].as_u64()) {
                    return Value::Literal(format!("{a}/{l}"));
                }
            }
            match verdict_of(v) {
                Some(verdict) => Value::Verdict(verdict),
                None => Value::Literal(v.to_string()),
            }
        }
        other => Value::Literal(other.to_string()),
    }
}

/// A JSON verdict: `{"accept": null}`, `{"jump": {"target": "c"}}`, ...
fn verdict_of(v: &Json) -> Option<Verdict> {
    let (k, body) = v.as_object()?.iter().next()?;
    let target = || body["target"].as_str().unwrap_or_default().to_string();
    Some(match k.as_str() {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "continue" => Verdict::Continue,
        "return" => Verdict::Return,
        "jump" => Verdict::Jump(target()),
        "goto" => Verdict::Goto(target()),
        _ => return None,
    })
}

fn chain_of(body: &Json) -> Chain {
    let hook = body["hook"].as_str().map(|h| Hook {
        kind: body["type"].as_str().unwrap_or_default().to_string(),
        hook: h.to_string(),
        priority: body["prio"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0),
        policy: match body["policy"].as_str() {
            Some("accept") => Some(Verdict::Accept),
            Some("drop") => Some(Verdict::Drop),
            _ => None,
        },
    });
    Chain {
        name: body["name"].as_str().unwrap_or_default().to_string(),
        hook,
        rules: Vec::new(),
        handle: body["handle"].as_u64(),
    }
}

/// A rule: counter, verdict, comment and handle from the JSON, the rest as the text listing
/// spells it.
fn rule_of(body: &Json, text: &TextListing) -> Result<Rule, Listing> {
    let handle = body["handle"].as_u64();
    let line = handle.and_then(|h| text.rules.get(&h)).ok_or_else(|| {
        Listing::Changed(format!(
            "rule {} is not in the second listing",
            handle.unwrap_or_default()
        ))
    })?;
    let comment = body["comment"].as_str().map(str::to_string);
    let exprs = body["expr"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let counted = exprs.iter().find_map(|e| counter_of(e.get("counter")?));
    let verdict = exprs.last().and_then(verdict_of);

    let mut rest = line.trim();
    if let Some(c) = &comment {
        rest = strip_word_suffix(rest, &format!("comment \"{c}\"")).unwrap_or(rest);
    }
    let mut verdict_out = None;
    if let Some(v) = &verdict {
        if let Some(r) = strip_word_suffix(rest, &v.to_string()) {
            rest = r;
            verdict_out = Some(v.clone());
        }
    }
    let mut counter = false;
    let mut expr = rest.to_string();
    if let Some(c) = counted {
        let spelled = format!("counter packets {} bytes {}", c.packets, c.bytes);
        match strip_word_suffix(rest, &spelled) {
            // `EXPR counter VERDICT`: the counter is the rule's own.
            Some(r) => {
                counter = true;
                expr = r.to_string();
            }
            // A counter elsewhere stays in the expression, without its values.
            None => expr = rest.replacen(&spelled, "counter", 1),
        }
    }
    Ok(Rule {
        expr,
        counter,
        verdict: verdict_out,
        comment,
        handle,
        counted,
    })
}

/// `s` without `word` at its end (as a whole word), trimmed; `None` if it does not end so.
fn strip_word_suffix<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    if s == word {
        return Some("");
    }
    s.strip_suffix(word)
        .and_then(|r| r.strip_suffix(' '))
        .map(str::trim_end)
}

/// The parts of a terse listing with handles that the JSON lacks.
pub(crate) fn text_listing(text: &str) -> TextListing {
    enum Block {
        Set(String),
        Chain,
        Other,
    }
    let mut out = TextListing::default();
    let mut depth: usize = 0;
    let mut block = Block::Other;
    for line in text.lines().map(str::trim) {
        let (body, handle) = match line.rsplit_once(" # handle ") {
            Some((b, h)) => (b.trim_end(), h.trim().parse::<u64>().ok()),
            None => (line, None),
        };
        if line == "}" {
            depth = depth.saturating_sub(1);
            continue;
        }
        if body.ends_with('{') {
            let words: Vec<&str> = body.split_whitespace().collect();
            match (depth, words.as_slice()) {
                (0, ["table", ..]) => out.table_handle = handle,
                (1, ["set" | "map", name, "{"]) => block = Block::Set(name.to_string()),
                (1, ["chain", _, "{"]) => block = Block::Chain,
                _ => block = Block::Other,
            }
            depth += 1;
            continue;
        }
        match (depth, &block) {
            (1, _) => {
                if let Some(c) = body
                    .strip_prefix("comment \"")
                    .and_then(|c| c.strip_suffix('"'))
                {
                    out.comment = Some(c.to_string());
                }
            }
            (2, Block::Set(name)) => {
                let entry = out.sets.entry(name.clone()).or_default();
                if body.starts_with("type ") || body.starts_with("typeof ") {
                    entry.0 = Some(body.to_string());
                } else if let Some(flags) = body.strip_prefix("flags ") {
                    entry.1 = flags
                        .split(',')
                        .filter_map(|f| SetFlag::parse(f.trim()))
                        .collect();
                }
            }
            (2, Block::Chain) => {
                if let Some(h) = handle {
                    out.rules.insert(h, body.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
