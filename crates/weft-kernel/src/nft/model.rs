//! The typed nftables table model: what weft writes ([`super::render`]) and what it reads
//! back from the kernel ([`super::parse`]), the same types both ways.
//!
//! A [`Table`] holds [`Set`]s (and maps) with their [`Element`]s, and [`Chain`]s with their
//! [`Rule`]s. A rule's match and statements stay nft syntax (`expr`); what readers need is
//! typed: its counter, verdict, comment (the rule's stable id) and handle. Elements are typed
//! [`Value`]s, so a reader takes a tag, an address or a port range from an element without
//! scraping text.
//!
//! Fields the kernel assigns ([`Table::handle`], [`Rule::counted`], [`Element::counter`],
//! ...) are `None` in what weft builds and filled in what it reads; [`Table::definition`]
//! strips them, so `read.definition() == built.definition()` says "the kernel has what we
//! wrote".

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

/// An nftables address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ip,
    Ip6,
    Inet,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }

    /// The family of an `NFPROTO_*` number (what nfnetlink messages carry).
    pub fn from_nfproto(n: u8) -> Option<Family> {
        Some(match n {
            1 => Family::Inet,
            2 => Family::Ip,
            3 => Family::Arp,
            5 => Family::Netdev,
            7 => Family::Bridge,
            10 => Family::Ip6,
            _ => return None,
        })
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ip" => Family::Ip,
            "ip6" => Family::Ip6,
            "inet" => Family::Inet,
            "arp" => Family::Arp,
            "bridge" => Family::Bridge,
            "netdev" => Family::Netdev,
            _ => return Err(format!("unknown nftables family {s:?}")),
        })
    }
}

/// A netfilter / nf_tables verdict: a rule's last word, a chain's policy, a verdict map's
/// value, a traced packet's fate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    /// Go on with the next rule (a rule without a verdict statement, e.g. `counter`).
    Continue,
    Break,
    Jump(String),
    Goto(String),
    Return,
    /// Any other code (NF_QUEUE, NF_STOLEN, ...), as the kernel sent it.
    Other(i32),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Break => f.write_str("break"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Return => f.write_str("return"),
            Verdict::Other(c) => write!(f, "verdict {c}"),
        }
    }
}

/// A counter's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// One table: the unit weft writes in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    /// weft writes a fingerprint of what the table depends on here.
    pub comment: Option<String>,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
    /// Kernel-assigned (read back only).
    pub handle: Option<u64>,
}

/// A set (`kind` [`SetKind::Set`]) or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub kind: SetKind,
    pub key: SetKey,
    pub flags: Vec<SetFlag>,
    /// At most this many elements (`size`).
    pub size: Option<u32>,
    /// Elements expire after this long unless they say otherwise (`timeout`).
    pub timeout: Option<Duration>,
    /// Every element counts the packets that matched it (`counter`).
    pub counter: bool,
    pub elements: Vec<Element>,
    /// Kernel-assigned (read back only).
    pub handle: Option<u64>,
}

/// Set or map, and a map's data type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetKind {
    Set,
    /// A map to this type (`verdict`, `mark`, `ipv4_addr . inet_service`, ...; with a
    /// [`SetKey::Typeof`] key, an expression such as `meta mark`).
    Map(String),
}

/// A set's key: named types (`type ipv4_addr . ifname`) or the types of expressions
/// (`typeof ip saddr . @th,336,32`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetKey {
    /// The data types of the key's parts, in order.
    Type(Vec<String>),
    /// The expression whose type the key has, nft syntax.
    Typeof(String),
}

/// A set flag, in the order nft prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetFlag {
    Constant,
    Interval,
    /// Rules may add elements (`update @set`).
    Dynamic,
    Timeout,
}

impl SetFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            SetFlag::Constant => "constant",
            SetFlag::Interval => "interval",
            SetFlag::Dynamic => "dynamic",
            SetFlag::Timeout => "timeout",
        }
    }

    pub fn parse(s: &str) -> Option<SetFlag> {
        Some(match s {
            "constant" => SetFlag::Constant,
            "interval" => SetFlag::Interval,
            "dynamic" => SetFlag::Dynamic,
            "timeout" => SetFlag::Timeout,
            _ => return None,
        })
    }
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub key: Value,
    /// A map element's value.
    pub value: Option<Value>,
    /// weft names an element's holder here.
    pub comment: Option<String>,
    /// This element's own timeout (otherwise the set's).
    pub timeout: Option<Duration>,
    /// The element's counter, when its set counts (read back only).
    pub counter: Option<Counter>,
    /// Time left before it expires (read back only).
    pub expires: Option<Duration>,
}

/// A key or value (part): what nft prints as `10.0.0.1`, `"eth0"`, `0x0b`, `80-90`, `a . b`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// A number (marks, ports, raw integers), written in decimal.
    Int(u64),
    /// A token nft reads as it is: an address, a prefix, a protocol or service name.
    Literal(String),
    /// A string nft must read quoted: an interface name.
    Name(String),
    /// An interval `from-to` (interval sets).
    Range(Box<Value>, Box<Value>),
    /// A concatenation `a . b . c`.
    Concat(Vec<Value>),
    /// A verdict (verdict maps' values).
    Verdict(Verdict),
}

/// A chain: a base chain (with a [`Hook`]) or a regular one (jumped to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
    /// Kernel-assigned (read back only).
    pub handle: Option<u64>,
}

/// Where a base chain hangs: `type filter hook forward priority 0; policy accept;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// `filter`, `nat` or `route`.
    pub kind: String,
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`, `ingress`.
    pub hook: String,
    pub priority: i32,
    /// Accept or drop.
    pub policy: Option<Verdict>,
}

/// One rule: `expr [counter] [verdict] [comment "..."]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Matches and statements before the counter, nft syntax (`ip saddr 10.0.0.0/8`,
    /// `meta mark set ip saddr map @tags`, `masquerade fully-random`); may be empty.
    pub expr: String,
    /// A counter after `expr`, before the verdict.
    pub counter: bool,
    pub verdict: Option<Verdict>,
    /// The rule's stable id: what readers find it by (its handle changes on every rewrite).
    pub comment: Option<String>,
    /// Kernel-assigned (read back only).
    pub handle: Option<u64>,
    /// The counter's values (read back only), also for a counter inside `expr`.
    pub counted: Option<Counter>,
}

impl Table {
    pub fn new(family: Family, name: impl Into<String>) -> Self {
        Table {
            family,
            name: name.into(),
            comment: None,
            sets: Vec::new(),
            chains: Vec::new(),
            handle: None,
        }
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    pub fn with_set(mut self, set: Set) -> Self {
        self.sets.push(set);
        self
    }

    pub fn with_chain(mut self, chain: Chain) -> Self {
        self.chains.push(chain);
        self
    }

    /// Is this the table with `fingerprint` as its comment?
    pub fn matches(&self, fingerprint: &str) -> bool {
        self.comment.as_deref() == Some(fingerprint)
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The elements of set or map `name` (none when there is no such set).
    pub fn elements(&self, name: &str) -> &[Element] {
        self.set(name).map_or(&[], |s| &s.elements)
    }

    /// Every rule, with its chain, in the table's order.
    pub fn rules(&self) -> impl Iterator<Item = (&Chain, &Rule)> {
        self.chains
            .iter()
            .flat_map(|c| c.rules.iter().map(move |r| (c, r)))
    }

    /// The first rule whose comment is `comment`, with its chain.
    pub fn rule(&self, comment: &str) -> Option<(&Chain, &Rule)> {
        self.rules()
            .find(|(_, r)| r.comment.as_deref() == Some(comment))
    }

    /// The rule with this handle (what a trace event names), with its chain.
    pub fn rule_by_handle(&self, handle: u64) -> Option<(&Chain, &Rule)> {
        self.rules().find(|(_, r)| r.handle == Some(handle))
    }

    /// The counter of the rule whose comment is `comment`; `None` when there is no such
    /// rule or it does not count.
    pub fn counter_of_rule(&self, comment: &str) -> Option<Counter> {
        self.rule(comment).and_then(|(_, r)| r.counted)
    }

    /// The table as weft would write it: without what the kernel assigns (handles, counter
    /// values, element expiry) and with elements in one order and in one spelling (an
    /// interval `80-80` is the value `80`), so that a table read back and the table written
    /// compare equal when the kernel holds what was written.
    pub fn definition(&self) -> Table {
        Table {
            family: self.family,
            name: self.name.clone(),
            comment: self.comment.clone(),
            sets: self.sets.iter().map(Set::definition).collect(),
            chains: self.chains.iter().map(Chain::definition).collect(),
            handle: None,
        }
    }
}

impl Set {
    /// A set of `key` (data types, `.`-joined parts: `["ipv4_addr", "ifname"]`).
    pub fn new(name: impl Into<String>, key: SetKey) -> Self {
        Set {
            name: name.into(),
            kind: SetKind::Set,
            key,
            flags: Vec::new(),
            size: None,
            timeout: None,
            counter: false,
            elements: Vec::new(),
            handle: None,
        }
    }

    /// A map from `key` to `data`.
    pub fn map(name: impl Into<String>, key: SetKey, data: impl Into<String>) -> Self {
        Set {
            kind: SetKind::Map(data.into()),
            ..Set::new(name, key)
        }
    }

    pub fn with_flags(mut self, flags: &[SetFlag]) -> Self {
        self.flags = flags.to_vec();
        self.flags.sort();
        self.flags.dedup();
        self
    }

    pub fn with_size(mut self, size: u32) -> Self {
        self.size = Some(size);
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn with_counter(mut self) -> Self {
        self.counter = true;
        self
    }

    pub fn with_elements(mut self, elements: impl IntoIterator<Item = Element>) -> Self {
        self.elements.extend(elements);
        self
    }

    pub fn is_map(&self) -> bool {
        matches!(self.kind, SetKind::Map(_))
    }

    /// `set` or `map`, as nft commands name the kind.
    pub fn keyword(&self) -> &'static str {
        if self.is_map() {
            "map"
        } else {
            "set"
        }
    }

    /// The element a lookup of `key` finds: equal parts, or a part inside an interval or
    /// prefix (what an interval set's lookup does).
    pub fn lookup(&self, key: &Value) -> Option<&Element> {
        self.elements.iter().find(|e| e.key.covers(key))
    }

    fn definition(&self) -> Set {
        let mut elements: Vec<Element> = self.elements.iter().map(Element::definition).collect();
        elements.sort();
        let mut flags = self.flags.clone();
        flags.sort();
        flags.dedup();
        Set {
            elements,
            flags,
            handle: None,
            ..self.clone()
        }
    }
}

impl SetKey {
    /// `type A . B`: a key of these data types.
    pub fn types(parts: &[&str]) -> SetKey {
        SetKey::Type(parts.iter().map(|p| p.to_string()).collect())
    }
}

impl Element {
    /// A set element.
    pub fn key(key: Value) -> Self {
        Element {
            key,
            value: None,
            comment: None,
            timeout: None,
            counter: None,
            expires: None,
        }
    }

    /// A map element.
    pub fn pair(key: Value, value: Value) -> Self {
        Element {
            value: Some(value),
            ..Element::key(key)
        }
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn definition(&self) -> Element {
        Element {
            key: self.key.normalized(),
            value: self.value.as_ref().map(Value::normalized),
            comment: self.comment.clone(),
            timeout: self.timeout,
            counter: None,
            expires: None,
        }
    }
}

impl Value {
    pub fn literal(s: impl fmt::Display) -> Value {
        Value::Literal(s.to_string())
    }

    pub fn name(s: impl Into<String>) -> Value {
        Value::Name(s.into())
    }

    pub fn range(from: Value, to: Value) -> Value {
        Value::Range(Box::new(from), Box::new(to))
    }

    pub fn concat(parts: impl IntoIterator<Item = Value>) -> Value {
        Value::Concat(parts.into_iter().collect())
    }

    /// The parts of a concatenation (a single value is one part).
    pub fn parts(&self) -> &[Value] {
        match self {
            Value::Concat(p) => p,
            v => std::slice::from_ref(v),
        }
    }

    pub fn as_int(&self) -> Option<u64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Literal(s) => match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => s.parse().ok(),
            },
            _ => None,
        }
    }

    /// The text of a literal or name.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Literal(s) | Value::Name(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_ip(&self) -> Option<IpAddr> {
        self.as_str()?.parse().ok()
    }

    /// An integer interval: `(n, n)` for a single number.
    pub fn as_int_range(&self) -> Option<(u64, u64)> {
        match self {
            Value::Range(a, b) => Some((a.as_int()?, b.as_int()?)),
            v => v.as_int().map(|n| (n, n)),
        }
    }

    pub fn as_verdict(&self) -> Option<&Verdict> {
        match self {
            Value::Verdict(v) => Some(v),
            _ => None,
        }
    }

    /// Does this (element) value match `v` the way a lookup would: equal, or `v` inside this
    /// interval or prefix, part by part for concatenations?
    pub fn covers(&self, v: &Value) -> bool {
        match (self, v) {
            (Value::Concat(a), Value::Concat(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.covers(b))
            }
            (Value::Range(lo, hi), v) => match (lo.as_int(), hi.as_int(), v.as_int()) {
                (Some(lo), Some(hi), Some(n)) => lo <= n && n <= hi,
                _ => match (lo.as_ip(), hi.as_ip(), v.as_ip()) {
                    (Some(lo), Some(hi), Some(ip)) => lo <= ip && ip <= hi,
                    _ => false,
                },
            },
            (Value::Literal(p), v) if p.contains('/') => match (p.parse::<IpNet>(), v.as_ip()) {
                (Ok(net), Some(ip)) => net.contains(&ip),
                _ => self == v,
            },
            (a, b) => a == b || (a.as_int().is_some() && a.as_int() == b.as_int()),
        }
    }

    /// One spelling per value: `80-80` is `80`.
    fn normalized(&self) -> Value {
        match self {
            Value::Range(a, b) if a == b => a.normalized(),
            Value::Range(a, b) => Value::range(a.normalized(), b.normalized()),
            Value::Concat(p) => Value::Concat(p.iter().map(Value::normalized).collect()),
            v => v.clone(),
        }
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(n)
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Value {
        Value::Int(n.into())
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Value {
        Value::Int(n.into())
    }
}

impl From<IpAddr> for Value {
    fn from(ip: IpAddr) -> Value {
        Value::literal(ip)
    }
}

impl From<std::net::Ipv4Addr> for Value {
    fn from(ip: std::net::Ipv4Addr) -> Value {
        Value::literal(ip)
    }
}

impl From<IpNet> for Value {
    fn from(net: IpNet) -> Value {
        Value::literal(net)
    }
}

impl From<Verdict> for Value {
    fn from(v: Verdict) -> Value {
        Value::Verdict(v)
    }
}

impl Chain {
    /// A base chain: `type KIND hook HOOK priority PRIORITY; policy POLICY;`.
    pub fn base(
        name: impl Into<String>,
        kind: &str,
        hook: &str,
        priority: i32,
        policy: Verdict,
    ) -> Self {
        Chain {
            name: name.into(),
            hook: Some(Hook {
                kind: kind.to_string(),
                hook: hook.to_string(),
                priority,
                policy: Some(policy),
            }),
            rules: Vec::new(),
            handle: None,
        }
    }

    /// A regular chain (reached by jump or goto).
    pub fn regular(name: impl Into<String>) -> Self {
        Chain {
            name: name.into(),
            hook: None,
            rules: Vec::new(),
            handle: None,
        }
    }

    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    pub fn with_rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.rules.extend(rules);
        self
    }

    fn definition(&self) -> Chain {
        Chain {
            name: self.name.clone(),
            hook: self.hook.clone(),
            rules: self.rules.iter().map(Rule::definition).collect(),
            handle: None,
        }
    }
}

impl Rule {
    /// A rule of matches and statements (nft syntax), without counter, verdict or comment.
    pub fn new(expr: impl Into<String>) -> Self {
        Rule {
            expr: expr.into(),
            counter: false,
            verdict: None,
            comment: None,
            handle: None,
            counted: None,
        }
    }

    pub fn counter(mut self) -> Self {
        self.counter = true;
        self
    }

    pub fn verdict(mut self, v: Verdict) -> Self {
        self.verdict = Some(v);
        self
    }

    pub fn accept(self) -> Self {
        self.verdict(Verdict::Accept)
    }

    pub fn drop(self) -> Self {
        self.verdict(Verdict::Drop)
    }

    pub fn comment(mut self, c: impl Into<String>) -> Self {
        self.comment = Some(c.into());
        self
    }

    fn definition(&self) -> Rule {
        Rule {
            handle: None,
            counted: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        for f in [
            Family::Ip,
            Family::Ip6,
            Family::Inet,
            Family::Arp,
            Family::Bridge,
            Family::Netdev,
        ] {
            assert_eq!(f.as_str().parse::<Family>(), Ok(f));
        }
        assert!("ipx".parse::<Family>().is_err());
        assert_eq!(Family::from_nfproto(1), Some(Family::Inet));
        assert_eq!(Family::from_nfproto(10), Some(Family::Ip6));
        assert_eq!(Family::from_nfproto(42), None);
    }

    #[test]
    fn lookups_cover_intervals_prefixes_and_concatenations() {
        let el = Value::concat([
            Value::Int(11),
            Value::literal("10.255.1.1"),
            Value::literal("tcp"),
            Value::range(8000u16.into(), 8201u16.into()),
        ]);
        let key = |port: u16| {
            Value::concat([
                Value::Int(11),
                Value::literal("10.255.1.1"),
                Value::literal("tcp"),
                port.into(),
            ])
        };
        assert!(el.covers(&key(8000)));
        assert!(el.covers(&key(8201)));
        assert!(!el.covers(&key(8202)));
        assert!(!el.covers(&Value::Int(11)));
        let net = Value::literal("10.1.0.0/16");
        assert!(net.covers(&Value::literal("10.1.2.3")));
        assert!(!net.covers(&Value::literal("10.2.0.1")));
        let ips = Value::range(Value::literal("10.2.0.1"), Value::literal("10.2.0.9"));
        assert!(ips.covers(&Value::literal("10.2.0.5")));
        assert!(!ips.covers(&Value::literal("10.2.0.10")));
        // A mark printed in hex is the same number.
        assert!(Value::Int(11).covers(&Value::literal("0x0000000b")));
        assert_eq!(Value::literal("0x0b").as_int(), Some(11));
        assert_eq!(Value::Int(80).as_int_range(), Some((80, 80)));
    }

    #[test]
    fn readers_find_rules_by_comment_and_handle() {
        let mut rule = Rule::new("ip saddr 10.0.0.1")
            .counter()
            .drop()
            .comment("spoofed");
        rule.handle = Some(7);
        rule.counted = Some(Counter {
            packets: 3,
            bytes: 180,
        });
        let t = Table::new(Family::Inet, "t").with_chain(
            Chain::base("forward", "filter", "forward", 0, Verdict::Accept)
                .with_rule(Rule::new("ct state established,related").accept())
                .with_rule(rule),
        );
        assert_eq!(
            t.counter_of_rule("spoofed"),
            Some(Counter {
                packets: 3,
                bytes: 180
            })
        );
        assert_eq!(t.counter_of_rule("nope"), None);
        let (chain, r) = t.rule_by_handle(7).expect("by handle");
        assert_eq!(
            (chain.name.as_str(), r.comment.as_deref()),
            ("forward", Some("spoofed"))
        );
        assert!(t.elements("nothing").is_empty());
        // The definition drops what the kernel assigned.
        let d = t.definition();
        assert_eq!(d.rule("spoofed").expect("rule").1.counted, None);
        assert_eq!(d.rule("spoofed").expect("rule").1.handle, None);
    }
}
