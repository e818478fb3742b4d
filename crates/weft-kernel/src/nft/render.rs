//! Rendering the table model as nft scripts: a whole table (`Display` of [`Table`]), and
//! [`Transaction`]s that replace a table or add, create, delete and flush elements. Pure:
//! nothing here talks to the kernel ([`super::Nft::apply`] does).

use std::fmt::{self, Write};
use std::time::Duration;

use super::model::{Chain, Element, Family, Rule, Set, SetKey, SetKind, Table, Value};
use crate::{Error, Result};

/// A duration as nft writes one: `10m`, `30s`, `1h`, `1500ms`.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Literal(s) => f.write_str(s),
            Value::Name(s) => write!(f, "\"{s}\""),
            Value::Range(a, b) => write!(f, "{a}-{b}"),
            Value::Concat(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" . ")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
            Value::Verdict(v) => write!(f, "{v}"),
        }
    }
}

/// `KEY [timeout T] [comment "C"] [: VALUE]`, as an element goes into a command.
impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key)?;
        if let Some(t) = self.timeout {
            write!(f, " timeout {}", duration(t))?;
        }
        if let Some(c) = &self.comment {
            write!(f, " comment \"{c}\"")?;
        }
        if let Some(v) = &self.value {
            write!(f, " : {v}")?;
        }
        Ok(())
    }
}

/// `EXPR [counter] [VERDICT] [comment "C"]`: the rule as it goes into a chain.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.words(false))
    }
}

impl Rule {
    /// The rule as `nft -a list` shows it: with its counter's values and its handle.
    pub fn listing(&self) -> String {
        match self.handle {
            Some(h) => format!("{} # handle {h}", self.words(true)),
            None => self.words(true),
        }
    }

    fn words(&self, with_values: bool) -> String {
        let mut words: Vec<String> = Vec::new();
        if !self.expr.is_empty() {
            words.push(self.expr.clone());
        }
        match (self.counter, self.counted) {
            (true, Some(c)) if with_values => {
                words.push(format!("counter packets {} bytes {}", c.packets, c.bytes))
            }
            (true, _) => words.push("counter".into()),
            (false, _) => {}
        }
        if let Some(v) = &self.verdict {
            words.push(v.to_string());
        }
        if let Some(c) = &self.comment {
            words.push(format!("comment \"{c}\""));
        }
        words.join(" ")
    }
}

/// `NAME { type ...; size N; flags ...; timeout T; counter; elements = { ... }; }` (one line).
impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = match &self.kind {
            SetKind::Set => String::new(),
            SetKind::Map(d) => format!(" : {d}"),
        };
        let key = match &self.key {
            SetKey::Type(parts) => format!("type {}", parts.join(" . ")),
            SetKey::Typeof(expr) => format!("typeof {expr}"),
        };
        write!(f, "{} {} {{ {key}{data};", self.keyword(), self.name)?;
        if let Some(n) = self.size {
            write!(f, " size {n};")?;
        }
        if !self.flags.is_empty() {
            let flags: Vec<&str> = self.flags.iter().map(|f| f.as_str()).collect();
            write!(f, " flags {};", flags.join(","))?;
        }
        if let Some(t) = self.timeout {
            write!(f, " timeout {};", duration(t))?;
        }
        if self.counter {
            f.write_str(" counter;")?;
        }
        if !self.elements.is_empty() {
            write!(f, " elements = {{ {} }};", join(&self.elements))?;
        }
        f.write_str(" }")
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chain {} {{", self.name)?;
        if let Some(h) = &self.hook {
            write!(
                f,
                "    type {} hook {} priority {};",
                h.kind, h.hook, h.priority
            )?;
            if let Some(p) = &h.policy {
                write!(f, " policy {p};")?;
            }
            f.write_char('\n')?;
        }
        for r in &self.rules {
            writeln!(f, "    {r}")?;
        }
        f.write_str("  }")
    }
}

/// The table's definition block, `table FAMILY NAME { ... }`: applied alone it adds what is
/// missing to an existing table (see [`Transaction::replace_table`] to replace one).
impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table {} {} {{", self.family, self.name)?;
        if let Some(c) = &self.comment {
            writeln!(f, "  comment \"{c}\"")?;
        }
        for s in &self.sets {
            writeln!(f, "  {s}")?;
        }
        for c in &self.chains {
            writeln!(f, "  {c}")?;
        }
        f.write_str("}\n")
    }
}

impl Table {
    /// One script that replaces whatever table of this name is there with this one (`add
    /// table`, `delete table`, the definition): applied as one transaction, no packet ever
    /// sees the table half written or missing.
    pub fn replace_script(&self) -> String {
        let mut tx = Transaction::new();
        tx.replace_table(self);
        tx.script
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An nft script built command by command and applied as one transaction
/// ([`super::Nft::apply`]): all of it commits, or none of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    script: String,
}

impl Transaction {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn script(&self) -> &str {
        &self.script
    }

    pub fn is_empty(&self) -> bool {
        self.script.is_empty()
    }

    /// Replaces the kernel's table of this name (if any) by `table`, elements included.
    pub fn replace_table(&mut self, table: &Table) -> &mut Self {
        let (f, n) = (table.family, &table.name);
        let _ = write!(
            self.script,
            "add table {f} {n}\ndelete table {f} {n}\n{table}"
        );
        self
    }

    /// Adds `table`'s definition: creates the table when missing (an existing table keeps
    /// what it has, and gets what the definition adds).
    pub fn add_table(&mut self, table: &Table) -> &mut Self {
        let _ = write!(self.script, "{table}");
        self
    }

    pub fn delete_table(&mut self, family: Family, name: &str) -> &mut Self {
        let _ = writeln!(self.script, "delete table {family} {name}");
        self
    }

    /// Removes every element of `set` (of `table`'s model).
    pub fn flush(&mut self, table: &Table, set: &str) -> Result<&mut Self> {
        let s = set_of(table, set)?;
        let _ = writeln!(
            self.script,
            "flush {} {} {} {set}",
            s.keyword(),
            table.family,
            table.name
        );
        Ok(self)
    }

    /// Adds elements (an element that is there already is left as it is).
    pub fn add_elements(&mut self, table: &Table, set: &str, elements: &[Element]) -> &mut Self {
        self.elements("add", table, set, elements.iter().map(|e| e.to_string()))
    }

    /// Creates elements; the transaction fails if one is there already.
    pub fn create_elements(&mut self, table: &Table, set: &str, elements: &[Element]) -> &mut Self {
        self.elements("create", table, set, elements.iter().map(|e| e.to_string()))
    }

    /// Deletes elements by key (values, comments and timeouts are not part of a key); the
    /// transaction fails if one is missing.
    pub fn delete_elements(&mut self, table: &Table, set: &str, elements: &[Element]) -> &mut Self {
        self.elements(
            "delete",
            table,
            set,
            elements.iter().map(|e| e.key.to_string()),
        )
    }

    fn elements(
        &mut self,
        verb: &str,
        table: &Table,
        set: &str,
        items: impl Iterator<Item = String>,
    ) -> &mut Self {
        let items: Vec<String> = items.collect();
        if !items.is_empty() {
            let _ = writeln!(
                self.script,
                "{verb} element {} {} {set} {{ {} }}",
                table.family,
                table.name,
                items.join(", ")
            );
        }
        self
    }
}

fn set_of<'a>(table: &'a Table, set: &str) -> Result<&'a Set> {
    table.set(set).ok_or_else(|| {
        Error::Invalid(format!(
            "table {} {} has no set or map {set}",
            table.family, table.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::model::{SetFlag, Verdict};

    fn policy_like() -> Table {
        Table::new(Family::Inet, "t")
            .with_comment("fp v1")
            .with_set(Set::map("tags", SetKey::types(&["ipv4_addr"]), "mark"))
            .with_set(
                Set::new(
                    "cell_subnets",
                    SetKey::Typeof("ip saddr . @th,336,32".into()),
                )
                .with_flags(&[SetFlag::Interval]),
            )
            .with_set(
                Set::new("denied", SetKey::types(&["mark", "ipv4_addr"]))
                    .with_size(65_536)
                    .with_flags(&[SetFlag::Timeout, SetFlag::Dynamic])
                    .with_timeout(Duration::from_secs(600))
                    .with_counter(),
            )
            .with_chain(
                Chain::base("forward", "filter", "forward", 0, Verdict::Accept)
                    .with_rule(Rule::new("ct state established,related").accept())
                    .with_rule(Rule::new("update @denied { meta mark . ip daddr }"))
                    .with_rule(Rule::new("").counter().drop().comment("default deny")),
            )
            .with_chain(Chain::regular("sub"))
    }

    #[test]
    fn a_table_renders_as_weft_writes_them() {
        assert_eq!(
            policy_like().replace_script(),
            "add table inet t\ndelete table inet t\ntable inet t {\n  comment \"fp v1\"\n\
             \x20 map tags { type ipv4_addr : mark; }\n\
             \x20 set cell_subnets { typeof ip saddr . @th,336,32; flags interval; }\n\
             \x20 set denied { type mark . ipv4_addr; size 65536; flags dynamic,timeout; timeout 10m; counter; }\n\
             \x20 chain forward {\n    type filter hook forward priority 0; policy accept;\n\
             \x20   ct state established,related accept\n\
             \x20   update @denied { meta mark . ip daddr }\n\
             \x20   counter drop comment \"default deny\"\n  }\n\
             \x20 chain sub {\n  }\n}\n"
        );
    }

    #[test]
    fn elements_and_their_transactions() {
        let t = policy_like();
        let tag = Element::pair(Value::literal("10.0.0.1"), Value::Int(5));
        let held = Element::pair(
            Value::concat([Value::literal("tcp"), Value::Int(9090)]),
            Value::concat([Value::literal("10.88.0.2"), Value::Int(91)]),
        )
        .with_comment("net1/ca/eth0");
        let port = Element::pair(
            Value::concat([
                Value::Int(11),
                Value::literal("10.255.1.1"),
                Value::literal("tcp"),
                Value::range(Value::Int(80), Value::Int(80)),
            ]),
            Value::Verdict(Verdict::Accept),
        );
        let veth = Element::key(Value::concat([
            Value::literal("10.0.0.1"),
            Value::name("weft.vtep"),
        ]))
        .with_timeout(Duration::from_millis(1500));
        assert_eq!(tag.to_string(), "10.0.0.1 : 5");
        assert_eq!(
            held.to_string(),
            "tcp . 9090 comment \"net1/ca/eth0\" : 10.88.0.2 . 91"
        );
        assert_eq!(port.to_string(), "11 . 10.255.1.1 . tcp . 80-80 : accept");
        assert_eq!(veth.to_string(), "10.0.0.1 . \"weft.vtep\" timeout 1500ms");

        let mut tx = Transaction::new();
        tx.flush(&t, "tags").expect("flush map");
        tx.flush(&t, "denied").expect("flush set");
        tx.add_elements(&t, "tags", &[tag.clone(), tag.clone()]);
        tx.delete_elements(&t, "allow_ports", std::slice::from_ref(&port));
        tx.create_elements(&t, "pm_any", &[held]);
        tx.add_elements(&t, "tags", &[]);
        assert_eq!(
            tx.script(),
            "flush map inet t tags\nflush set inet t denied\n\
             add element inet t tags { 10.0.0.1 : 5, 10.0.0.1 : 5 }\n\
             delete element inet t allow_ports { 11 . 10.255.1.1 . tcp . 80-80 }\n\
             create element inet t pm_any { tcp . 9090 comment \"net1/ca/eth0\" : 10.88.0.2 . 91 }\n"
        );
        let e = tx.flush(&t, "nope").expect_err("unknown set");
        assert!(e.to_string().contains("has no set or map nope"), "{e}");
        let mut d = Transaction::new();
        d.delete_table(Family::Ip, "weft-agent");
        assert_eq!(d.script(), "delete table ip weft-agent\n");
        assert!(Transaction::new().is_empty());
    }

    #[test]
    fn elements_inside_a_set_definition() {
        let s = Set::new("veths", SetKey::types(&["ifname"])).with_elements([
            Element::key(Value::name("a")),
            Element::key(Value::name("b")),
        ]);
        assert_eq!(
            s.to_string(),
            "set veths { type ifname; elements = { \"a\", \"b\" }; }"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_secs(600)), "10m");
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_secs(7200)), "2h");
        assert_eq!(duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::ZERO), "0s");
    }

    #[test]
    fn rule_listing_shows_counter_values_and_handle() {
        let mut r = Rule::new("ip saddr 10.0.0.1").counter().drop().comment("x");
        r.counted = Some(crate::nft::model::Counter {
            packets: 2,
            bytes: 120,
        });
        r.handle = Some(9);
        assert_eq!(
            r.listing(),
            "ip saddr 10.0.0.1 counter packets 2 bytes 120 drop comment \"x\" # handle 9"
        );
        let mut bare = Rule::new("").counter().drop();
        bare.counted = Some(crate::nft::model::Counter {
            packets: 1,
            bytes: 60,
        });
        assert_eq!(bare.listing(), "counter packets 1 bytes 60 drop");
    }
}
