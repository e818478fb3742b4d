//! nftables for a bridge network: one table per network (`inet weft-<network>`), written
//! once, when the first container of the network needs it, in one transaction. What is per
//! container (a port mapping) is an element of a map, added and removed by element.
//!
//! ```text
//! table inet weft-NET
//!   map pm_any  proto . hostPort            -> containerIP . containerPort   (any host address)
//!   map pm_ip   hostIP . proto . hostPort   -> containerIP . containerPort
//!   chain prerouting  (nat)   DNAT for local destinations through the maps
//!   chain output      (nat)   the same for connections from the host itself (127.0.0.1 too)
//!   chain postrouting (nat)   masquerade: subnet -> elsewhere (ipMasq), hairpin, localhost
//!   chain forward   (filter)  accept the subnet's traffic and replies to it
//! ```

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::PortMapping;

/// The network's table name.
pub fn table_name(network: &str) -> String {
    format!("weft-{network}")
}

/// What the per-network table depends on; a change of these recreates the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFirewall {
    pub table: String,
    pub subnets: Vec<IpNet>,
    pub ip_masq: bool,
}

impl NetworkFirewall {
    /// A short fingerprint written into the table's comment.
    pub fn fingerprint(&self) -> String {
        let subnets: Vec<String> = self.subnets.iter().map(|s| s.to_string()).collect();
        format!("weft {} masq={}", subnets.join(","), self.ip_masq)
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
            // Hairpin: a container reaching a mapped port of its own network.
            post.push(format!(
                "ct status dnat {fam} saddr {set} {fam} daddr {set} masquerade"
            ));
            fwd.push(format!(
                "{fam} daddr {set} ct state established,related accept"
            ));
            fwd.push(format!("{fam} saddr {set} accept"));
            fwd.push(format!("{fam} daddr {set} ct status dnat accept"));
        }
        // Port mappings reached from the host through 127.0.0.1.
        post.push("ct status dnat ip saddr 127.0.0.0/8 masquerade".into());
        let dnat = [
            "fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pm_ip",
            "fib daddr type local dnat ip to meta l4proto . th dport map @pm_any",
        ];
        let mut s = String::new();
        s += &format!("add table inet {t}\ndelete table inet {t}\n");
        s += &format!("table inet {t} {{\n  comment \"{}\"\n", self.fingerprint());
        s += "  map pm_any { type inet_proto . inet_service : ipv4_addr . inet_service; }\n";
        s += "  map pm_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }\n";
        s += "  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n";
        for r in dnat {
            s += &format!("    {r}\n");
        }
        s += "  }\n  chain output {\n    type nat hook output priority -100; policy accept;\n";
        for r in dnat {
            s += &format!("    {r}\n");
        }
        s += "  }\n  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n";
        for r in &post {
            s += &format!("    {r}\n");
        }
        s += "  }\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n";
        for r in &fwd {
            s += &format!("    {r}\n");
        }
        s += "  }\n}\n";
        s
    }
}

fn element(pm: &PortMapping, to: IpAddr) -> (String, String) {
    match pm.host_ip {
        Some(hip) => (
            "pm_ip".into(),
            format!(
                "{hip} . {} . {} : {to} . {}",
                pm.protocol, pm.host_port, pm.container_port
            ),
        ),
        None => (
            "pm_any".into(),
            format!(
                "{} . {} : {to} . {}",
                pm.protocol, pm.host_port, pm.container_port
            ),
        ),
    }
}

fn key(pm: &PortMapping) -> (String, String) {
    match pm.host_ip {
        Some(hip) => (
            "pm_ip".into(),
            format!("{hip} . {} . {}", pm.protocol, pm.host_port),
        ),
        None => (
            "pm_any".into(),
            format!("{} . {}", pm.protocol, pm.host_port),
        ),
    }
}

/// Adds a container's port mappings (one transaction). `create` fails on a key that is
/// already mapped, so two containers never share a host port.
pub fn render_ports_add(table: &str, mappings: &[(PortMapping, IpAddr)]) -> String {
    mappings
        .iter()
        .map(|(pm, to)| {
            let (map, el) = element(pm, *to);
            format!("create element inet {table} {map} {{ {el} }}\n")
        })
        .collect()
}

/// Removes a container's port mappings.
pub fn render_ports_del(table: &str, mappings: &[(PortMapping, IpAddr)]) -> String {
    mappings
        .iter()
        .map(|(pm, _)| {
            let (map, k) = key(pm);
            format!("delete element inet {table} {map} {{ {k} }}\n")
        })
        .collect()
}

/// Is `(pm -> to)` present in the listing of the table?
pub fn listing_has_mapping(listing: &str, pm: &PortMapping, to: IpAddr) -> bool {
    let (_, el) = element(pm, to);
    listing.contains(&el)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(host_ip: Option<&str>) -> PortMapping {
        PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: host_ip.map(|s| s.parse().unwrap()),
        }
    }

    #[test]
    fn table_rules_follow_config() {
        let fw = NetworkFirewall {
            table: table_name("n"),
            subnets: vec!["10.88.0.0/16".parse().unwrap()],
            ip_masq: true,
        };
        let s = fw.render();
        assert!(s.contains("ip saddr { 10.88.0.0/16 } ip daddr != { 10.88.0.0/16 } ip daddr != 224.0.0.0/4 masquerade"));
        assert!(!s.contains("ip6 saddr"));
        assert!(s.starts_with("add table inet weft-n\ndelete table inet weft-n\n"));
        let fw2 = NetworkFirewall {
            ip_masq: false,
            ..fw.clone()
        };
        assert!(!fw2.render().contains("fully-random"));
        assert_ne!(fw.fingerprint(), fw2.fingerprint());
    }

    #[test]
    fn port_elements() {
        let to: IpAddr = "10.88.0.5".parse().unwrap();
        let add = render_ports_add("weft-n", &[(pm(None), to), (pm(Some("127.0.0.1")), to)]);
        assert_eq!(
            add,
            "create element inet weft-n pm_any { tcp . 8080 : 10.88.0.5 . 80 }\n\
             create element inet weft-n pm_ip { 127.0.0.1 . tcp . 8080 : 10.88.0.5 . 80 }\n"
        );
        let del = render_ports_del("weft-n", &[(pm(None), to)]);
        assert_eq!(del, "delete element inet weft-n pm_any { tcp . 8080 }\n");
        assert!(listing_has_mapping(
            "elements = { tcp . 8080 : 10.88.0.5 . 80 }",
            &pm(None),
            to
        ));
    }
}
