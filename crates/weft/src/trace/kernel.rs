//! What a host's kernel says, read through weft-kernel's typed readers: nftables tables as
//! [`Table`]s (`nft -j` parsed, elements as typed values, rules with their handles and
//! counters), routes, neighbours and FDB entries over netlink, the fast path's tc filter.
//! Nothing here scrapes text, and nothing changes the kernel except [`Kernel::apply`] (the
//! probe's temporary trace table).

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;
use weft_kernel::netns::Netns;
use weft_kernel::nft::{Element, Family, Nft, Table, Transaction, Value};
use weft_kernel::Netlink;

use super::world::Host;
use crate::rt::runtime;

/// weft-agent's policy table, `inet weft-policy`.
pub const POLICY: &str = weft_agent::policy::TABLE;

/// Runs `f` in the host's namespace.
pub fn on<T: Send + 'static>(
    h: &Host,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match &h.ns {
        Some(ns) => Netns::named(ns)?.run(f)?,
        None => f(),
    }
}

/// The table `family name` on `h` as the kernel has it; None when there is none (or it
/// cannot be read).
pub fn table(h: &Host, family: Family, name: &str) -> Option<Table> {
    let name = name.to_string();
    on(h, move || Ok(Nft::new()?.list_table(family, &name)?))
        .ok()
        .flatten()
}

/// The policy table on `h`.
pub fn policy_table(h: &Host) -> Option<Table> {
    table(h, Family::Inet, POLICY)
}

/// The names of the tables of `family` on `h`.
pub fn tables(h: &Host, family: Family) -> Vec<String> {
    on(h, move || Ok(Nft::new()?.list_tables(family)?)).unwrap_or_default()
}

/// Applies a transaction on `h` (the probe's trace table).
pub fn apply(h: &Host, tx: Transaction) -> Result<()> {
    on(h, move || Ok(Nft::new()?.apply(&tx)?))
}

/// `TABLE CHAIN: RULE # handle N`: how trace names a rule.
pub fn rule_text(t: &Table, chain: &str, r: &weft_kernel::nft::Rule) -> String {
    format!("{} {} {chain}: {}", t.family, t.name, r.listing())
}

/// The first rule of `chain` whose listing contains `needle`, named.
pub fn rule(t: &Table, chain: &str, needle: &str) -> Option<String> {
    let c = t.chain(chain)?;
    c.rules
        .iter()
        .find(|r| r.listing().contains(needle))
        .map(|r| rule_text(t, chain, r))
}

/// The rule whose comment is `comment` (weft's stable rule ids), named.
pub fn rule_by_comment(t: &Table, comment: &str) -> Option<String> {
    t.rule(comment).map(|(c, r)| rule_text(t, &c.name, r))
}

/// The element of `set` a kernel lookup of `key` finds (intervals and prefixes included).
pub fn lookup<'t>(t: &'t Table, set: &str, key: &Value) -> Option<&'t Element> {
    t.set(set)?.lookup(key)
}

/// Is policy enforced on this host (the table's fingerprint says `enforce=true`)? None:
/// no policy table.
pub fn enforced(t: Option<&Table>) -> Option<bool> {
    Some(
        t?.comment
            .as_deref()
            .unwrap_or_default()
            .contains("enforce=true"),
    )
}

/// The id of the fast path's program on `dev`'s tc ingress in the host's namespace, if one
/// is attached (weft-agent's handle and priority).
pub fn fastpath_filter(h: &Host, dev: &str) -> Option<u32> {
    let dev = dev.to_string();
    on(h, move || {
        let ifindex = nix::net::if_::if_nametoindex(dev.as_str())?;
        let hook = weft_kernel::bpf::TcIngress {
            ifindex,
            handle: weft_agent::fastpath::TC_HANDLE,
            priority: weft_agent::fastpath::TC_PRIORITY,
        };
        Ok(hook.query()?)
    })
    .ok()
    .flatten()
}

pub struct RouteInfo {
    pub text: String,
    pub dev: String,
    pub gateway: Option<IpAddr>,
}

/// The route the host would take to `ip` (longest prefix match over the main table).
pub fn route_to(h: &Host, ip: Ipv4Addr) -> Result<Option<RouteInfo>> {
    on(h, move || route_here(ip))
}

/// [`route_to`] in the calling thread's namespace (a container's, entered by the caller).
pub fn route_here(ip: Ipv4Addr) -> Result<Option<RouteInfo>> {
    runtime()?.block_on(async move {
        let n = Netlink::current()?;
        let routes = n.routes(false).await?;
        let links = n.links().await?;
        let best = routes
            .iter()
            .filter(|r| r.dst.contains(&IpAddr::V4(ip)))
            .max_by_key(|r| r.dst.prefix_len());
        Ok(best.map(|r| {
            let dev = r
                .oif
                .and_then(|i| links.iter().find(|l| l.index == i))
                .map(|l| l.name.clone())
                .unwrap_or_else(|| "?".into());
            let dst = if r.dst.prefix_len() == 0 {
                "default".to_string()
            } else {
                r.dst.to_string()
            };
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            RouteInfo {
                text: format!("route {dst}{via} dev {dev}"),
                dev,
                gateway: r.gateway,
            }
        }))
    })
}

/// (neighbour MAC of `gw` on `vtep`, FDB destination of that MAC).
pub fn vtep_entries(h: &Host, vtep: &str, gw: IpAddr) -> Result<(Option<String>, Option<IpAddr>)> {
    let vtep = vtep.to_string();
    on(h, move || {
        runtime()?.block_on(async move {
            let n = Netlink::current()?;
            let Some(l) = n.link_by_name(&vtep).await? else {
                return Ok((None, None));
            };
            let mac = n
                .neighbours(l.index)
                .await?
                .into_iter()
                .find(|x| x.ip == gw)
                .map(|x| x.mac);
            let dst = match mac {
                Some(m) => n
                    .fdb_entries(l.index)
                    .await?
                    .into_iter()
                    .find(|f| f.mac == m)
                    .map(|f| f.dst),
                None => None,
            };
            Ok((mac.map(|m| m.to_string()), dst))
        })
    })
}

#[cfg(test)]
mod tests {
    use weft_kernel::nft::{Chain, Rule, Set, SetFlag, SetKey, Verdict};

    use super::*;

    fn policy() -> Table {
        let key = SetKey::types(&["mark", "ipv4_addr", "inet_proto", "inet_service"]);
        let ports = Set::map("allow_ports", key, "verdict")
            .with_flags(&[SetFlag::Interval])
            .with_elements([
                Element::pair(
                    Value::concat([
                        Value::Int(2),
                        Value::literal("10.255.0.1"),
                        Value::literal("tcp"),
                        Value::Int(8080),
                    ]),
                    Value::Verdict(Verdict::Accept),
                ),
                Element::pair(
                    Value::concat([
                        Value::Int(3),
                        Value::literal("10.255.0.1"),
                        Value::literal("tcp"),
                        Value::range(Value::Int(8000), Value::Int(8100)),
                    ]),
                    Value::Verdict(Verdict::Accept),
                ),
            ]);
        let forward = Chain::base("forward", "filter", "forward", 0, Verdict::Accept)
            .with_rule(Rule::new(
                "meta mark . ip daddr . meta l4proto . th dport vmap @allow_ports",
            ))
            .with_rule(Rule::new("").counter().drop().comment("default deny"));
        Table::new(Family::Inet, POLICY)
            .with_comment("weft policy v3 enforce=true")
            .with_set(ports)
            .with_chain(forward)
    }

    fn key(mark: u64, ip: &str, port: u64) -> Value {
        Value::concat([
            Value::Int(mark),
            Value::literal(ip),
            Value::literal("tcp"),
            Value::Int(port),
        ])
    }

    #[test]
    fn allow_ports_lookup_finds_ports_and_ranges() {
        let t = policy();
        let found = |m, ip, p| lookup(&t, "allow_ports", &key(m, ip, p)).map(|e| e.to_string());
        assert_eq!(
            found(2, "10.255.0.1", 8080).as_deref(),
            Some("2 . 10.255.0.1 . tcp . 8080 : accept")
        );
        assert_eq!(found(2, "10.255.0.1", 9090), None);
        assert_eq!(
            found(3, "10.255.0.1", 8050).as_deref(),
            Some("3 . 10.255.0.1 . tcp . 8000-8100 : accept")
        );
        assert_eq!(found(3, "10.255.0.1", 8101), None);
        assert_eq!(found(3, "10.255.0.2", 8050), None);
        assert_eq!(found(4, "10.255.0.1", 8080), None);
    }

    #[test]
    fn rules_are_named_by_table_chain_and_listing() {
        let t = policy();
        assert_eq!(
            rule(&t, "forward", "@allow_ports").as_deref(),
            Some("inet weft-policy forward: meta mark . ip daddr . meta l4proto . th dport vmap @allow_ports")
        );
        assert_eq!(
            rule_by_comment(&t, "default deny").as_deref(),
            Some("inet weft-policy forward: counter drop comment \"default deny\"")
        );
        assert_eq!(rule(&t, "forward", "no such text"), None);
        assert_eq!(rule(&t, "no chain", "drop"), None);
        assert_eq!(enforced(Some(&t)), Some(true));
        assert_eq!(enforced(None), None);
    }
}
