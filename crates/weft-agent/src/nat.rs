//! The host's own nftables table (`ip weft-agent`): overlay traffic that leaves the overlay is
//! masqueraded to the host's address with fully random source ports (Cloud Foundry's
//! MASQUERADE without them caused SNAT port collisions under load), and forwarded.

use ipnet::Ipv4Net;

pub const TABLE: &str = "weft-agent";

/// Pure: the table for an overlay and a VTEP.
pub fn render(overlay: Ipv4Net, vtep: &str) -> (String, String) {
    let fp = format!("weft agent overlay={overlay} vtep={vtep}");
    let script = format!(
        "add table ip {TABLE}\ndelete table ip {TABLE}\n\
         table ip {TABLE} {{\n  comment \"{fp}\"\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n\
         \x20   ip saddr {overlay} ip daddr != {overlay} ip daddr != 224.0.0.0/4 oifname != \"{vtep}\" masquerade fully-random\n  }}\n\
         \x20 chain forward {{\n    type filter hook forward priority 0; policy accept;\n\
         \x20   ip saddr {overlay} accept\n    ip daddr {overlay} ct state established,related accept\n    ip daddr {overlay} accept\n  }}\n}}\n"
    );
    (fp, script)
}

/// Writes the table unless it is already there for this overlay.
pub fn ensure(overlay: Ipv4Net, vtep: &str) -> weft_kernel::Result<()> {
    let (fp, script) = render(overlay, vtep);
    let mut nft = weft_kernel::nft::Nft::new()?;
    if nft.ensure_table("ip", TABLE, &fp, &script)? {
        tracing::info!(%overlay, "nat table written");
    }
    Ok(())
}

/// Removes the table (agent leaving the overlay).
pub fn remove() -> weft_kernel::Result<()> {
    let mut nft = weft_kernel::nft::Nft::new()?;
    if nft.table_exists("ip", TABLE)? {
        nft.run(&format!("delete table ip {TABLE}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn masquerades_only_what_leaves_the_overlay() {
        let (fp, s) = super::render("10.255.0.0/16".parse().unwrap(), "weft.vtep");
        assert!(s.contains("ip saddr 10.255.0.0/16 ip daddr != 10.255.0.0/16"));
        assert!(s.contains("masquerade fully-random"));
        assert!(s.contains(&fp));
        assert!(s.starts_with("add table ip weft-agent\ndelete table ip weft-agent\n"));
    }
}
