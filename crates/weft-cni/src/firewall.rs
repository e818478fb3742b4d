//! The network's own nftables table, in both modes: one table per network (`inet
//! weft-<network>`), written once, when the first container of the network needs it, in one
//! transaction, under the network's lock. Host ports are not here: every network's port
//! mappings are in the host's one table ([`crate::ports`]).
//!
//! ```text
//! table inet weft-NET
//!   chain postrouting (nat)   masquerade: subnet -> elsewhere (ipMasq, bridge mode);
//!                             hairpin: a container reaching a mapped port of its own network
//!   chain forward   (filter)  bridge mode: accept the subnet's traffic and replies to it
//! ```
//!
//! Invariants: the table's comment holds a fingerprint of what it was written from
//! ([`NetworkFirewall::fingerprint`]); a different fingerprint rewrites the whole table in one
//! transaction (never a half table). A stamp file in the network's state directory says the
//! table was written in this network namespace since this boot, so ADD skips nftables when
//! nothing changed; CHECK always compares the kernel's table.
//!
//! Kernel objects owned: the table `inet weft-<network>` (left in place for the network's
//! other containers; never removed by DEL; [`remove`] removes it with the network).

use ipnet::IpNet;
use weft_kernel::nft::{Chain, Family, Nft, Rule, Table, Transaction, Verdict};

use crate::config::NetworkConf;
use crate::ports;
use crate::spec::CniError;
use crate::store::{self, Lock, NetworkStore};
use weft_api::records::Plan;

/// The family of the networks' tables.
pub const FAMILY: Family = Family::Inet;
/// Their chains.
pub mod chains {
    pub const POSTROUTING: &str = "postrouting";
    pub const FORWARD: &str = "forward";
}

/// The network's table name.
pub fn table_name(network: &str) -> String {
    format!("weft-{network}")
}

/// What the per-network table depends on; a change of these recreates the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFirewall {
    pub table: String,
    /// The containers' subnets (overlay mode: the host's lease).
    pub subnets: Vec<IpNet>,
    pub ip_masq: bool,
    /// Accept rules in a forward chain (bridge mode; in overlay mode the agent's policy
    /// decides what is forwarded).
    pub forward: bool,
}

impl NetworkFirewall {
    /// A short fingerprint written into the table's comment.
    pub fn fingerprint(&self) -> String {
        let subnets: Vec<String> = self.subnets.iter().map(|s| s.to_string()).collect();
        format!(
            "weft v2 {} masq={} forward={}",
            subnets.join(","),
            self.ip_masq,
            self.forward
        )
    }

    fn set_of(&self, v6: bool) -> Option<String> {
        let s: Vec<String> = self
            .subnets
            .iter()
            .filter(|n| n.addr().is_ipv6() == v6)
            .map(|n| n.to_string())
            .collect();
        if s.is_empty() {
            None
        } else {
            Some(format!("{{ {} }}", s.join(", ")))
        }
    }

    /// What the network's stamp file says when the table was written in this network
    /// namespace, since this boot, with this fingerprint. A matching stamp lets ADD skip
    /// nftables entirely (no library load, no table dump); CHECK still compares the kernel's
    /// table with the configuration.
    pub fn stamp(&self) -> String {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let ns = weft_kernel::netns::Netns::current()
            .and_then(|n| n.id())
            .map(|(d, i)| format!("{d}:{i}"))
            .unwrap_or_default();
        format!("{}\n{}\n{ns}\n", self.fingerprint(), boot.trim())
    }

    /// The whole table (on weft-kernel's typed model).
    pub fn table(&self) -> Table {
        let mut post = Vec::new();
        let mut fwd = Vec::new();
        for (fam, v6) in [("ip", false), ("ip6", true)] {
            let Some(set) = self.set_of(v6) else { continue };
            if self.ip_masq {
                let mcast = if v6 { "ff00::/8" } else { "224.0.0.0/4" };
                post.push(Rule::new(format!(
                    "{fam} saddr {set} {fam} daddr != {set} {fam} daddr != {mcast} masquerade fully-random"
                )));
            }
            // Hairpin: a container reaching a mapped port of its own network (also itself).
            post.push(Rule::new(format!(
                "ct status dnat {fam} saddr {set} {fam} daddr {set} masquerade"
            )));
            if self.forward {
                fwd.push(
                    Rule::new(format!("{fam} daddr {set} ct state established,related")).accept(),
                );
                fwd.push(Rule::new(format!("{fam} saddr {set}")).accept());
                fwd.push(Rule::new(format!("{fam} daddr {set} ct status dnat")).accept());
            }
        }
        let nat = Chain::base(
            chains::POSTROUTING,
            "nat",
            "postrouting",
            100,
            Verdict::Accept,
        );
        let t = Table::new(FAMILY, &self.table)
            .with_comment(self.fingerprint())
            .with_chain(nat.with_rules(post));
        if !self.forward {
            return t;
        }
        t.with_chain(
            Chain::base(chains::FORWARD, "filter", "forward", 0, Verdict::Accept).with_rules(fwd),
        )
    }

    /// The whole table as one script: `add table` + `delete table` first, so the script
    /// replaces whatever is there in the same transaction.
    pub fn render(&self) -> String {
        self.table().replace_script()
    }
}

/// The table an attachment needs, if any: masquerade (ipMasq) and hairpin for port
/// mappings.
pub fn wanted(plan: &Plan, conf: &NetworkConf) -> Option<NetworkFirewall> {
    let table = table_name(plan.network());
    match plan {
        Plan::Bridge(p) if p.ip_masq || !p.port_mappings.is_empty() => Some(NetworkFirewall {
            table,
            subnets: conf.range_sets.iter().flatten().map(|r| r.subnet).collect(),
            ip_masq: p.ip_masq,
            forward: true,
        }),
        Plan::Overlay(p) if !p.port_mappings.is_empty() => Some(NetworkFirewall {
            table,
            subnets: vec![p.subnet.into()],
            ip_masq: false,
            forward: false,
        }),
        _ => None,
    }
}

/// Writes the network's table unless its stamp says it is there. Called under the
/// network's lock, so two first containers do not both write it.
pub fn ensure(
    plan: &Plan,
    conf: &NetworkConf,
    store: &NetworkStore,
    _lock: &Lock,
) -> Result<(), CniError> {
    let Some(fw) = wanted(plan, conf) else {
        return Ok(());
    };
    let stamp_path = store.dir().join("firewall");
    let stamp = fw.stamp();
    if std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }
    let mut nft = Nft::new()?;
    if !nft.table_matches(FAMILY.as_str(), &fw.table, &fw.fingerprint())? {
        // An older version's table of this network may hold host ports, which rewriting it
        // would drop: they move to the host's table first.
        ports::adopt_older()?;
        nft.apply(Transaction::new().replace_table(&fw.table()))?;
    }
    store::write_atomic(&stamp_path, stamp.as_bytes())
}

/// Removes the network's table and its stamp (so the next first container writes it
/// again). For a front end that removes a network with its last container (netavark's
/// model); DEL never calls it. Called under the network's lock; no table is success.
pub fn remove(store: &NetworkStore, _lock: &Lock, network: &str) -> Result<(), CniError> {
    let table = table_name(network);
    let mut nft = Nft::new()?;
    if nft.table_exists("inet", &table)? {
        nft.run(&format!("delete table inet {table}"))?;
    }
    match std::fs::remove_file(store.dir().join("firewall")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CniError::new(
            crate::spec::code::IO_FAILURE,
            format!("removing the firewall stamp of {network}: {e}"),
        )),
    }
}

/// CHECK: the table the attachment needs is in the kernel as its configuration says.
pub fn check(plan: &Plan, conf: &NetworkConf) -> Result<(), CniError> {
    let Some(fw) = wanted(plan, conf) else {
        return Ok(());
    };
    let ok = Nft::new()
        .and_then(|mut n| n.table_matches(FAMILY.as_str(), &fw.table, &fw.fingerprint()))
        .map_err(|e| CniError::mismatch(format!("firewall table {}: {e}", fw.table)))?;
    if !ok {
        return Err(CniError::mismatch(format!(
            "firewall table {} is missing or differs from the configuration",
            fw.table
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rules_follow_config() {
        let fw = NetworkFirewall {
            table: table_name("n"),
            subnets: vec!["10.88.0.0/16".parse().unwrap()],
            ip_masq: true,
            forward: true,
        };
        let s = fw.render();
        // What the plugin wrote before the typed model, byte for byte.
        assert_eq!(
            s,
            "add table inet weft-n\ndelete table inet weft-n\ntable inet weft-n {\n\
             \x20 comment \"weft v2 10.88.0.0/16 masq=true forward=true\"\n\
             \x20 chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n\
             \x20   ip saddr { 10.88.0.0/16 } ip daddr != { 10.88.0.0/16 } ip daddr != 224.0.0.0/4 masquerade fully-random\n\
             \x20   ct status dnat ip saddr { 10.88.0.0/16 } ip daddr { 10.88.0.0/16 } masquerade\n  }\n\
             \x20 chain forward {\n    type filter hook forward priority 0; policy accept;\n\
             \x20   ip daddr { 10.88.0.0/16 } ct state established,related accept\n\
             \x20   ip saddr { 10.88.0.0/16 } accept\n\
             \x20   ip daddr { 10.88.0.0/16 } ct status dnat accept\n  }\n}\n"
        );
        assert!(!s.contains("ip6 saddr"));
        assert!(s.starts_with("add table inet weft-n\ndelete table inet weft-n\n"));
        assert!(
            !s.contains("pm_any") && !s.contains("dnat ip to"),
            "host ports live in weft-ports"
        );
        let fw2 = NetworkFirewall {
            ip_masq: false,
            ..fw.clone()
        };
        assert!(!fw2.render().contains("fully-random"));
        assert_ne!(fw.fingerprint(), fw2.fingerprint());
        // Overlay: hairpin only, no forward chain.
        let ov = NetworkFirewall {
            ip_masq: false,
            forward: false,
            ..fw.clone()
        };
        let s = ov.render();
        assert!(s.contains(
            "ct status dnat ip saddr { 10.88.0.0/16 } ip daddr { 10.88.0.0/16 } masquerade"
        ));
        assert!(!s.contains("chain forward"));
    }
}
