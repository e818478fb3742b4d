//! nftables for one network: one table per network (`inet weft-<network>`), written once,
//! when the first container of the network needs it, in one transaction. Host ports are
//! not here: every network's port mappings are in the host's one table ([`crate::ports`]).
//!
//! ```text
//! table inet weft-NET
//!   chain postrouting (nat)   masquerade: subnet -> elsewhere (ipMasq, bridge mode);
//!                             hairpin: a container reaching a mapped port of its own network
//!   chain forward   (filter)  bridge mode: accept the subnet's traffic and replies to it
//! ```

use ipnet::IpNet;

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

    /// The whole table as one script: `add table` + `delete table` first, so the script
    /// replaces whatever is there in the same transaction.
    pub fn render(&self) -> String {
        let t = &self.table;
        let mut post = Vec::new();
        let mut fwd = Vec::new();
        for (fam, v6) in [("ip", false), ("ip6", true)] {
            let Some(set) = self.set_of(v6) else { continue };
            if self.ip_masq {
                let mcast = if v6 { "ff00::/8" } else { "224.0.0.0/4" };
                post.push(format!(
                    "{fam} saddr {set} {fam} daddr != {set} {fam} daddr != {mcast} masquerade fully-random"
                ));
            }
            // Hairpin: a container reaching a mapped port of its own network (also itself).
            post.push(format!(
                "ct status dnat {fam} saddr {set} {fam} daddr {set} masquerade"
            ));
            if self.forward {
                fwd.push(format!(
                    "{fam} daddr {set} ct state established,related accept"
                ));
                fwd.push(format!("{fam} saddr {set} accept"));
                fwd.push(format!("{fam} daddr {set} ct status dnat accept"));
            }
        }
        let mut s = String::new();
        s += &format!("add table inet {t}\ndelete table inet {t}\n");
        s += &format!("table inet {t} {{\n  comment \"{}\"\n", self.fingerprint());
        s += "  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n";
        for r in &post {
            s += &format!("    {r}\n");
        }
        s += "  }\n";
        if self.forward {
            s += "  chain forward {\n    type filter hook forward priority 0; policy accept;\n";
            for r in &fwd {
                s += &format!("    {r}\n");
            }
            s += "  }\n";
        }
        s += "}\n";
        s
    }
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
        assert!(s.contains("ip saddr { 10.88.0.0/16 } ip daddr != { 10.88.0.0/16 } ip daddr != 224.0.0.0/4 masquerade"));
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
