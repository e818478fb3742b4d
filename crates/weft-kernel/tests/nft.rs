//! The typed nftables model against a real kernel: render, apply in a throwaway namespace
//! (libnftables on a thread inside it), list, parse, compare; readers of rule and element
//! counters after real packets; element transactions; missing tables.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use common::TestNs;
use weft_kernel::nft::{
    Chain, Element, Family, Nft, Rule, Set, SetFlag, SetKey, Table, Transaction, Value, Verdict,
};

/// Runs `f` with a libnftables context inside the namespace.
fn nft<T: Send>(t: &TestNs, f: impl FnOnce(&mut Nft) -> T + Send) -> T {
    t.ns.run(|| f(&mut Nft::new().expect("libnftables")))
        .expect("thread in the namespace")
}

fn list(t: &TestNs, family: Family, name: &str) -> Option<Table> {
    nft(t, |n| n.list_table(family, name).expect("list"))
}

fn lit(s: &str) -> Value {
    Value::literal(s)
}

/// A table with a piece of everything weft's tables use.
fn sample(comment: &str) -> Table {
    Table::new(Family::Inet, "wk-sample")
        .with_comment(comment)
        .with_set(
            Set::map("tags", SetKey::types(&["ipv4_addr"]), "mark")
                .with_elements([Element::pair(lit("127.0.0.5"), Value::Int(7))]),
        )
        .with_set(
            Set::new("containers", SetKey::types(&["ipv4_addr", "ifname"])).with_elements([
                Element::key(Value::concat([lit("10.0.0.1"), Value::name("weft.vtep")])),
            ]),
        )
        .with_set(
            Set::new(
                "cell_subnets",
                SetKey::Typeof("ip saddr . @th,336,32".into()),
            )
            .with_flags(&[SetFlag::Interval]),
        )
        .with_set(
            Set::map("dests", SetKey::types(&["ipv4_addr"]), "verdict")
                .with_counter()
                .with_elements([Element::pair(
                    lit("127.0.0.5"),
                    Value::Verdict(Verdict::Accept),
                )]),
        )
        .with_set(
            Set::new("denied", SetKey::types(&["mark", "ipv4_addr"]))
                .with_size(1024)
                .with_flags(&[SetFlag::Dynamic, SetFlag::Timeout])
                .with_timeout(Duration::from_secs(600))
                .with_counter(),
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
            // The policy table's verdict map: concatenated, intervals, counted.
            Set::map(
                "allow_ports",
                SetKey::types(&["mark", "ipv4_addr", "inet_proto", "inet_service"]),
                "verdict",
            )
            .with_flags(&[SetFlag::Interval])
            .with_counter()
            .with_elements([
                Element::pair(
                    allow(11, "127.0.0.6", "udp", 4990, 5010),
                    Value::Verdict(Verdict::Accept),
                ),
                Element::pair(
                    allow(11, "127.0.0.6", "tcp", 8080, 8080),
                    Value::Verdict(Verdict::Accept),
                ),
            ]),
        )
        .with_chain(Chain::regular("counted"))
        .with_chain(
            Chain::base("output", "filter", "output", 0, Verdict::Accept).with_rules([
                Rule::new("ip daddr 127.0.0.9").counter().drop().comment("to nine"),
                Rule::new("meta mark set ip saddr map @tags"),
                Rule::new("ip daddr 127.0.0.8")
                    .counter()
                    .verdict(Verdict::Jump("counted".into())),
                Rule::new("udp dport 5000 ip daddr vmap @dests"),
                Rule::new("ip daddr 127.0.0.6 meta mark set 0x0000000b"),
                Rule::new(
                    "meta l4proto { tcp, udp } meta mark . ip daddr . meta l4proto . th dport vmap @allow_ports",
                ),
                Rule::new("ct state established,related").accept(),
            ]),
        )
        .with_chain(
            Chain::base("post", "nat", "postrouting", 100, Verdict::Accept).with_rule(
                Rule::new(
                    "ip saddr 10.0.0.0/8 ip daddr != 10.0.0.0/8 oifname != \"weft.vtep\" masquerade fully-random",
                ),
            ),
        )
}

/// An `allow_ports` key: mark . address . protocol . port range.
fn allow(mark: u64, ip: &str, proto: &str, from: u64, to: u64) -> Value {
    Value::concat([
        Value::Int(mark),
        lit(ip),
        lit(proto),
        Value::range(Value::Int(from), Value::Int(to)),
    ])
}

fn send_udp(t: &TestNs, dst: Ipv4Addr, n: usize) {
    t.ns.run(|| {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        for _ in 0..n {
            // Dropped in the output hook: the send fails (EPERM), the counter counts.
            let _ = sock.send_to(b"x", (dst, 5000));
        }
    })
    .expect("thread in the namespace");
}

#[test]
fn render_apply_list_parse_is_the_same_table() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("nftrt");
    let table = sample("wk sample v1");
    let mut tx = Transaction::new();
    tx.replace_table(&table);
    nft(&t, |n| n.apply(&tx)).expect("apply");

    let read = list(&t, Family::Inet, "wk-sample").expect("the table is there");
    let (got, want) = (read.definition(), table.definition());
    for (g, w) in got.sets.iter().zip(&want.sets) {
        assert_eq!(g, w, "set {}", w.name);
    }
    for (g, w) in got.chains.iter().zip(&want.chains) {
        assert_eq!(g, w, "chain {}", w.name);
    }
    assert_eq!(got, want);
    // What the kernel assigned is there too.
    assert!(read.handle.is_some());
    assert!(read.rules().all(|(_, r)| r.handle.is_some()));
    assert!(read.set("dests").expect("map").elements[0]
        .counter
        .is_some());

    // Replacing is idempotent: the same definition again (new handles are fine).
    nft(&t, |n| n.apply(&tx)).expect("apply again");
    let again = list(&t, Family::Inet, "wk-sample").expect("still there");
    assert_eq!(again.definition(), want);
    assert_eq!(again.chains.len(), table.chains.len());
    assert_eq!(
        again.rules().count(),
        table.rules().count(),
        "rules not doubled"
    );
}

/// `list_sets` (one JSON listing) gives the elements `list_table` (two listings) gives.
#[test]
fn list_sets_reads_the_elements_of_list_table() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("nftls");
    let table = sample("wk sample v1");
    let mut tx = Transaction::new();
    tx.replace_table(&table);
    nft(&t, |n| n.apply(&tx)).expect("apply");
    let full = list(&t, Family::Inet, "wk-sample").expect("the table");
    let sets = nft(&t, |n| n.list_sets(Family::Inet, "wk-sample"))
        .expect("list sets")
        .expect("the table's sets");
    assert_eq!(sets.len(), full.sets.len());
    for (s, f) in sets.iter().zip(&full.sets) {
        assert_eq!((&s.name, &s.elements), (&f.name, &f.elements));
    }
    assert!(sets.iter().any(|s| !s.elements.is_empty()));
    let none = nft(&t, |n| n.list_sets(Family::Inet, "wk-none")).expect("list");
    assert_eq!(none, None);
}

#[test]
fn ensure_writes_only_when_the_fingerprint_differs() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("nftfp");
    let v1 = sample("weft agent vtep=weft.vtep2");
    assert!(nft(&t, |n| n.ensure(&v1)).expect("first write"));
    assert!(!nft(&t, |n| n.ensure(&v1)).expect("same fingerprint"));
    let m = |fp: &str| nft(&t, |n| n.table_matches("inet", "wk-sample", fp)).expect("match");
    assert!(m("weft agent vtep=weft.vtep2"));
    // A fingerprint that is only part of the comment is another fingerprint.
    assert!(!m("weft agent vtep=weft.vtep"));
    assert!(!m("vtep=weft.vtep2"));
    let v2 = sample("weft agent vtep=weft.vtep");
    assert!(nft(&t, |n| n.ensure(&v2)).expect("changed fingerprint"));
    assert!(m("weft agent vtep=weft.vtep"));
    let read = list(&t, Family::Inet, "wk-sample").expect("table");
    assert!(read.matches("weft agent vtep=weft.vtep"));
    assert_eq!(read.definition(), v2.definition());
}

#[test]
fn counters_of_rules_and_elements_count_real_packets() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("nftct");
    let table = sample("wk sample v1");
    nft(&t, |n| n.ensure(&table)).expect("write");
    let _rx =
        t.ns.run(|| UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 5), 5000)).expect("receiver"))
            .expect("thread");
    send_udp(&t, Ipv4Addr::new(127, 0, 0, 9), 3);
    send_udp(&t, Ipv4Addr::new(127, 0, 0, 5), 2);
    let read = list(&t, Family::Inet, "wk-sample").expect("table");
    let c = read.counter_of_rule("to nine").expect("counted");
    assert_eq!(c.packets, 3);
    assert!(c.bytes >= 3 * 29, "{c:?}");
    let el = read
        .set("dests")
        .and_then(|s| s.lookup(&lit("127.0.0.5")))
        .expect("element");
    assert_eq!(el.counter.map(|c| c.packets), Some(2));
    assert_eq!(el.value, Some(Value::Verdict(Verdict::Accept)));
    // The rule that jumps counts nothing yet; a missing rule has no counter.
    let (_, jump) = read
        .rules()
        .find(|(_, r)| r.expr == "ip daddr 127.0.0.8")
        .expect("rule");
    assert_eq!(jump.counted.map(|c| c.packets), Some(0));
    assert_eq!(read.counter_of_rule("not there"), None);

    // An element of a concatenated interval map: found by a key inside its range, with the
    // packets that matched it (what the agent's metrics and `weft trace` read).
    send_udp(&t, Ipv4Addr::new(127, 0, 0, 6), 4);
    let read = list(&t, Family::Inet, "wk-sample").expect("table");
    let key = Value::concat([
        Value::Int(11),
        lit("127.0.0.6"),
        lit("udp"),
        Value::Int(5000),
    ]);
    let el = read
        .set("allow_ports")
        .and_then(|s| s.lookup(&key))
        .expect("the element whose range holds 5000");
    assert_eq!(el.counter.map(|c| c.packets), Some(4));
    let parts = el.key.parts();
    assert_eq!(parts[0].as_int(), Some(11));
    assert_eq!(parts[1].as_ip(), Some("127.0.0.6".parse().expect("ip")));
    assert_eq!(parts[2].as_str(), Some("udp"));
    assert_eq!(parts[3].as_int_range(), Some((4990, 5010)));
    let other = read
        .set("allow_ports")
        .and_then(|s| {
            s.lookup(&Value::concat([
                Value::Int(11),
                lit("127.0.0.6"),
                lit("tcp"),
                Value::Int(8080),
            ]))
        })
        .expect("the single port");
    assert_eq!(other.counter.map(|c| c.packets), Some(0));
    // Written as the range 8080-8080 (what the policy writes), read back as the port.
    assert_eq!(other.key.parts()[3], Value::Int(8080));
    let miss = Value::concat([
        Value::Int(12),
        lit("127.0.0.6"),
        lit("udp"),
        Value::Int(5000),
    ]);
    assert!(read
        .set("allow_ports")
        .expect("map")
        .lookup(&miss)
        .is_none());
}

#[test]
fn element_transactions_add_create_delete_flush() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("nftel");
    let table = sample("wk sample v1");
    nft(&t, |n| n.ensure(&table)).expect("write");
    let tag = |ip: &str, mark: u64| Element::pair(lit(ip), Value::Int(mark));
    let tags = || -> Vec<String> {
        let read = list(&t, Family::Inet, "wk-sample").expect("table");
        let mut v: Vec<String> = read
            .elements("tags")
            .iter()
            .map(|e| e.to_string())
            .collect();
        v.sort();
        v
    };

    let mut add = Transaction::new();
    add.add_elements(&table, "tags", &[tag("10.0.0.2", 8), tag("10.0.0.3", 9)]);
    nft(&t, |n| n.apply(&add)).expect("add");
    assert_eq!(tags(), ["10.0.0.2 : 8", "10.0.0.3 : 9", "127.0.0.5 : 7"]);
    // Adding what is there changes nothing.
    nft(&t, |n| n.apply(&add)).expect("add again");
    assert_eq!(tags().len(), 3);

    // Creating what is there fails, and the whole transaction with it.
    let mut create = Transaction::new();
    create.add_elements(&table, "tags", &[tag("10.0.0.4", 10)]);
    create.create_elements(&table, "tags", &[tag("10.0.0.2", 8)]);
    assert!(nft(&t, |n| n.apply(&create)).is_err());
    assert_eq!(tags().len(), 3, "a failed transaction changed nothing");

    let mut del = Transaction::new();
    del.delete_elements(&table, "tags", &[tag("10.0.0.2", 0)]);
    nft(&t, |n| n.apply(&del)).expect("delete by key");
    assert_eq!(tags(), ["10.0.0.3 : 9", "127.0.0.5 : 7"]);
    // Deleting what is not there fails.
    assert!(nft(&t, |n| n.apply(&del)).is_err());

    let mut flush = Transaction::new();
    flush.flush(&table, "tags").expect("a map of the table");
    flush
        .flush(&table, "containers")
        .expect("a set of the table");
    nft(&t, |n| n.apply(&flush)).expect("flush");
    let read = list(&t, Family::Inet, "wk-sample").expect("table");
    assert!(read.elements("tags").is_empty());
    assert!(read.elements("containers").is_empty());
    assert_eq!(read.elements("pm_any").len(), 1, "other sets untouched");
}

#[test]
fn a_missing_table_is_none_and_deleting_removes_it() {
    if common::skip() {
        return;
    }
    let t = TestNs::new("nftnone");
    assert_eq!(list(&t, Family::Inet, "wk-sample"), None);
    assert!(!nft(&t, |n| n.table_exists("inet", "wk-sample")).expect("exists"));
    assert!(!nft(&t, |n| n.table_matches("inet", "wk-sample", "x")).expect("matches"));
    assert_eq!(
        nft(&t, |n| n.table_comment("inet", "wk-sample")).expect("comment"),
        None
    );
    assert_eq!(
        nft(&t, |n| n.list_tables(Family::Inet)).expect("tables"),
        Vec::<String>::new()
    );
    let table = sample("wk sample v1");
    nft(&t, |n| n.ensure(&table)).expect("write");
    assert!(nft(&t, |n| n.table_exists("inet", "wk-sample")).expect("exists"));
    assert_eq!(
        nft(&t, |n| n.list_tables(Family::Inet)).expect("tables"),
        ["wk-sample"]
    );
    assert!(nft(&t, |n| n.list_tables(Family::Ip))
        .expect("tables")
        .is_empty());
    let mut del = Transaction::new();
    del.delete_table(Family::Inet, "wk-sample");
    nft(&t, |n| n.apply(&del)).expect("delete");
    assert_eq!(list(&t, Family::Inet, "wk-sample"), None);
    assert!(nft(&t, |n| n.apply(&del)).is_err(), "deleting twice fails");
    // An empty transaction is nothing to do.
    nft(&t, |n| n.apply(&Transaction::new())).expect("empty");
}
