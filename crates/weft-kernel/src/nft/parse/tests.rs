//! Parsing on fixtures captured from nftables 1.0.6 (`fixtures/table.{json,txt}`: the JSON
//! and the terse listing with handles of one table, after two pings were dropped by the
//! "to nine" rule).

use std::time::Duration;

use super::*;

const JSON: &str = include_str!("fixtures/table.json");
const TEXT: &str = include_str!("fixtures/table.txt");

fn fixture() -> Table {
    table(JSON, TEXT).expect("the fixture parses")
}

fn lit(s: &str) -> Value {
    Value::literal(s)
}

/// The fixture's table as weft would build it.
fn built() -> Table {
    let accept = || Value::Verdict(Verdict::Accept);
    Table::new(Family::Inet, "fx")
        .with_comment("weft fixture v1")
        .with_set(
            Set::map("tags", SetKey::types(&["ipv4_addr"]), "mark")
                .with_elements([Element::pair(lit("10.0.0.1"), Value::Int(5))]),
        )
        .with_set(
            Set::new("veths", SetKey::types(&["ifname"])).with_elements([
                Element::key(Value::name("weft.vtep")),
                Element::key(Value::name("weftaa")),
            ]),
        )
        .with_set(
            Set::new("containers", SetKey::types(&["ipv4_addr", "ifname"])).with_elements([
                Element::key(Value::concat([lit("10.0.0.1"), Value::name("weftaa")])),
            ]),
        )
        .with_set(
            Set::new(
                "cell_subnets",
                SetKey::Typeof("ip saddr . @th,336,32".into()),
            )
            .with_flags(&[SetFlag::Interval])
            .with_elements([Element::key(Value::concat([
                lit("198.18.0.2"),
                Value::range(Value::Int(0x0aff_0200), Value::Int(0x0aff_02ff)),
            ]))]),
        )
        .with_set(
            Set::map(
                "allow_ports",
                SetKey::types(&["mark", "ipv4_addr", "inet_proto", "inet_service"]),
                "verdict",
            )
            .with_flags(&[SetFlag::Interval])
            .with_counter()
            .with_elements([
                Element::pair(
                    Value::concat([
                        Value::Int(11),
                        lit("10.255.1.1"),
                        lit("tcp"),
                        Value::range(Value::Int(80), Value::Int(80)),
                    ]),
                    accept(),
                ),
                Element::pair(
                    Value::concat([
                        Value::Int(11),
                        lit("10.255.1.1"),
                        lit("tcp"),
                        Value::range(Value::Int(9000), Value::Int(9010)),
                    ]),
                    accept(),
                ),
            ]),
        )
        .with_set(
            Set::new("denied", SetKey::types(&["mark", "ipv4_addr"]))
                .with_size(65_536)
                .with_flags(&[SetFlag::Dynamic, SetFlag::Timeout])
                .with_timeout(Duration::from_secs(600))
                .with_counter()
                .with_elements([Element::key(Value::concat([
                    Value::Int(3),
                    lit("10.0.0.1"),
                ]))]),
        )
        .with_set(
            Set::map(
                "pm_any",
                SetKey::types(&["inet_proto", "inet_service"]),
                "ipv4_addr . inet_service",
            )
            .with_elements([Element::pair(
                Value::concat([lit("tcp"), Value::Int(9090)]),
                Value::concat([lit("10.88.0.2"), Value::Int(91)]),
            )
            .with_comment("net1/ca/eth0")]),
        )
        .with_set(
            Set::new("nets", SetKey::types(&["ipv4_addr"]))
                .with_flags(&[SetFlag::Interval])
                .with_elements([
                    Element::key(lit("10.1.0.0/16")),
                    Element::key(Value::range(lit("10.2.0.1"), lit("10.2.0.9"))),
                ]),
        )
        .with_set(
            Set::map("jumps", SetKey::types(&["ipv4_addr"]), "verdict").with_elements([
                Element::pair(lit("10.0.0.1"), Value::Verdict(Verdict::Jump("sub".into()))),
                Element::pair(lit("10.0.0.2"), Value::Verdict(Verdict::Drop)),
            ]),
        )
        .with_chain(Chain::regular("sub"))
        .with_chain(
            Chain::base("output", "filter", "output", 0, Verdict::Accept).with_rules([
                Rule::new("ip daddr 127.0.0.9")
                    .counter()
                    .drop()
                    .comment("to nine"),
                Rule::new("ip daddr 127.0.0.8")
                    .counter()
                    .verdict(Verdict::Jump("sub".into())),
                Rule::new("meta mark set ip saddr map @tags"),
                Rule::new("iifname @veths ip saddr . iifname != @containers")
                    .counter()
                    .drop()
                    .comment("spoofed source"),
                Rule::new("update @denied { meta mark . ip daddr }"),
                Rule::new("ct state established,related").accept(),
                Rule::new("").counter().comment("count only"),
            ]),
        )
        .with_chain(
            Chain::base("post", "nat", "postrouting", 100, Verdict::Accept).with_rule(Rule::new(
                "ip saddr 10.0.0.0/8 ip daddr != 10.0.0.0/8 masquerade fully-random",
            )),
        )
}

#[test]
fn the_definition_is_what_was_written() {
    let read = fixture();
    let want = built().definition();
    let got = read.definition();
    // Part by part first, for a readable failure.
    assert_eq!(got.comment, want.comment);
    for (g, w) in got.sets.iter().zip(&want.sets) {
        assert_eq!(g, w, "set {}", w.name);
    }
    for (g, w) in got.chains.iter().zip(&want.chains) {
        assert_eq!(g, w, "chain {}", w.name);
    }
    assert_eq!(got, want);
}

#[test]
fn what_the_kernel_assigned_is_read_too() {
    let t = fixture();
    assert_eq!(t.handle, Some(1));
    assert_eq!(t.set("denied").and_then(|s| s.handle), Some(9));
    let (chain, rule) = t.rule("to nine").expect("rule");
    assert_eq!(chain.name, "output");
    assert_eq!(rule.handle, Some(13));
    assert_eq!(
        rule.counted,
        Some(Counter {
            packets: 2,
            bytes: 168
        })
    );
    assert_eq!(
        rule.listing(),
        "ip daddr 127.0.0.9 counter packets 2 bytes 168 drop comment \"to nine\" # handle 13"
    );
    assert_eq!(t.counter_of_rule("to nine").map(|c| c.packets), Some(2));
    assert_eq!(
        t.counter_of_rule("spoofed source").map(|c| c.packets),
        Some(0)
    );
    // A rule without a counter has no counter to read.
    assert_eq!(t.rule_by_handle(18).map(|(_, r)| r.counted), Some(None));
    assert_eq!(t.counter_of_rule("no such rule"), None);

    let denied = &t.elements("denied")[0];
    assert_eq!(denied.expires, Some(Duration::from_secs(598)));
    assert_eq!(denied.counter, Some(Counter::default()));
    let ports = t.set("allow_ports").expect("map");
    assert!(ports.elements.iter().all(|e| e.counter.is_some()));
    assert_eq!(
        t.elements("pm_any")[0].comment.as_deref(),
        Some("net1/ca/eth0")
    );
}

#[test]
fn readers_take_typed_values_from_elements() {
    let t = fixture();
    let ports = t.set("allow_ports").expect("map");
    let key = |port: u16| {
        Value::concat([
            Value::Int(11),
            lit("10.255.1.1"),
            lit("tcp"),
            Value::Int(port.into()),
        ])
    };
    let found = ports.lookup(&key(9005)).expect("in 9000-9010");
    assert_eq!(found.key.parts()[3].as_int_range(), Some((9000, 9010)));
    assert_eq!(found.value, Some(Value::Verdict(Verdict::Accept)));
    let single = ports.lookup(&key(80)).expect("80");
    assert_eq!(single.key.parts()[3].as_int_range(), Some((80, 80)));
    assert!(ports.lookup(&key(81)).is_none());
    let parts = single.key.parts();
    assert_eq!(parts[0].as_int(), Some(11));
    assert_eq!(parts[1].as_ip(), Some("10.255.1.1".parse().unwrap()));
    assert_eq!(parts[2].as_str(), Some("tcp"));
    // Interface names are names (quoted when written again), addresses literals.
    assert_eq!(
        t.elements("containers")[0].to_string(),
        "10.0.0.1 . \"weftaa\""
    );
    let nets = t.set("nets").expect("set");
    assert!(nets.lookup(&lit("10.1.200.1")).is_some());
    assert!(nets.lookup(&lit("10.2.0.9")).is_some());
    assert!(nets.lookup(&lit("10.2.0.10")).is_none());
    assert_eq!(
        t.elements("jumps")
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        ["10.0.0.1 : jump sub", "10.0.0.2 : drop"]
    );
}

#[test]
fn a_table_that_changed_between_the_listings_is_reported() {
    // Replaced (a new table handle) ...
    let text = TEXT.replacen(
        "table inet fx { # handle 1",
        "table inet fx { # handle 2",
        1,
    );
    assert!(matches!(table(JSON, &text), Err(Listing::Changed(_))));
    // ... or a rule rewritten (not in the text listing under its handle).
    let text = TEXT.replace("# handle 16", "# handle 116");
    assert!(matches!(table(JSON, &text), Err(Listing::Changed(_))));
}

#[test]
fn malformed_listings_are_errors_not_panics() {
    assert!(matches!(
        table("not json", TEXT),
        Err(Listing::Malformed(_))
    ));
    assert!(matches!(table("{}", TEXT), Err(Listing::Malformed(_))));
    assert!(matches!(
        table(r#"{"nftables": [{"metainfo": {}}]}"#, TEXT),
        Err(Listing::Malformed(_))
    ));
    // Cut anywhere, the text listing never panics; a cut JSON is an error.
    for cut in (0..TEXT.len()).step_by(7) {
        if TEXT.is_char_boundary(cut) {
            let _ = text_listing(&TEXT[..cut]);
        }
    }
    for cut in (0..JSON.len()).step_by(97) {
        let _ = table(&JSON[..cut], TEXT);
    }
}

#[test]
fn the_text_listing_gives_comment_typeof_flags_and_rules() {
    let l = text_listing(TEXT);
    assert_eq!(l.table_handle, Some(1));
    assert_eq!(l.comment.as_deref(), Some("weft fixture v1"));
    assert_eq!(
        l.sets.get("cell_subnets"),
        Some(&(
            Some("typeof ip saddr . @th,336,32".to_string()),
            vec![SetFlag::Interval]
        ))
    );
    assert_eq!(
        l.sets.get("denied").map(|s| s.1.clone()),
        Some(vec![SetFlag::Dynamic, SetFlag::Timeout])
    );
    assert_eq!(
        l.rules.get(&19).map(String::as_str),
        Some("counter packets 0 bytes 0 comment \"count only\"")
    );
    // No comment, no table.
    let bare = text_listing("table ip t { # handle 3\n\tchain c { # handle 1\n\t}\n}\n");
    assert_eq!((bare.table_handle, bare.comment), (Some(3), None));
    assert_eq!(text_listing(""), TextListing::default());
}

#[test]
fn a_counter_that_is_not_before_the_verdict_stays_in_the_expression() {
    let json = r#"{"nftables": [{"table": {"family": "ip", "name": "t", "handle": 4}},
        {"chain": {"family": "ip", "table": "t", "name": "c", "handle": 1}},
        {"rule": {"family": "ip", "table": "t", "chain": "c", "handle": 2,
          "expr": [{"counter": {"packets": 5, "bytes": 300}},
                   {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 7}},
                   {"accept": null}]}}]}"#;
    let text = "table ip t { # handle 4\n\tchain c { # handle 1\n\t\tcounter packets 5 bytes 300 meta mark 0x00000007 accept # handle 2\n\t}\n}\n";
    let t = table(json, text).expect("parse");
    let (_, r) = t.rule_by_handle(2).expect("rule");
    assert_eq!(r.expr, "counter meta mark 0x00000007");
    assert!(!r.counter);
    assert_eq!(r.verdict, Some(Verdict::Accept));
    assert_eq!(r.counted.map(|c| c.packets), Some(5));
    assert_eq!(t.comment, None);
}

/// The JSON alone gives every set's elements as the two listings do; only what the text
/// listing adds (a `typeof` key's expression, the `dynamic` flag) differs.
#[test]
fn sets_from_the_json_alone() {
    let full = fixture();
    let sets = super::sets(JSON).expect("the fixture's sets");
    assert_eq!(
        sets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        full.sets
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
    );
    for (s, f) in sets.iter().zip(&full.sets) {
        assert_eq!(s.elements, f.elements, "{}", s.name);
        assert_eq!(
            (s.is_map(), s.counter, s.size),
            (f.is_map(), f.counter, f.size)
        );
    }
    let cells = sets
        .iter()
        .find(|s| s.name == "cell_subnets")
        .expect("cell_subnets");
    assert_eq!(cells.key, SetKey::types(&["ipv4_addr", "integer"]));
    let pm = sets.iter().find(|s| s.name == "pm_any").expect("pm_any");
    assert_eq!(pm.elements[0].comment.as_deref(), Some("net1/ca/eth0"));
    assert!(super::sets("{}").is_err());
}
