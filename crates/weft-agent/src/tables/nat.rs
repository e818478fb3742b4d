//! The host's own nftables table (`ip weft-agent`): overlay traffic that leaves the overlay is
//! masqueraded to the host's address with fully random source ports (Cloud Foundry's
//! MASQUERADE without them caused SNAT port collisions under load), and forwarded.
//!
//! The table is built on weft-kernel's typed model ([`table`], pure) and written whole, in
//! one transaction, unless the kernel's copy carries the same fingerprint (its comment).

use ipnet::Ipv4Net;
use weft_kernel::nft::{Chain, Family, Nft, Rule, Table, Transaction, Verdict};

pub const TABLE: &str = "weft-agent";

/// Pure: the table for an overlay and a VTEP.
pub fn table(overlay: Ipv4Net, vtep: &str) -> Table {
    Table::new(Family::Ip, TABLE)
        .with_comment(format!("weft agent overlay={overlay} vtep={vtep}"))
        .with_chain(
            Chain::base("postrouting", "nat", "postrouting", 100, Verdict::Accept).with_rule(
                Rule::new(format!(
                    "ip saddr {overlay} ip daddr != {overlay} ip daddr != 224.0.0.0/4 \
                     oifname != \"{vtep}\" masquerade fully-random"
                )),
            ),
        )
        .with_chain(
            Chain::base("forward", "filter", "forward", 0, Verdict::Accept).with_rules([
                Rule::new(format!("ip saddr {overlay}")).accept(),
                Rule::new(format!("ip daddr {overlay} ct state established,related")).accept(),
                Rule::new(format!("ip daddr {overlay}")).accept(),
            ]),
        )
}

/// Writes the table unless it is already there for this overlay.
pub fn ensure(overlay: Ipv4Net, vtep: &str) -> weft_kernel::Result<()> {
    if Nft::new()?.ensure(&table(overlay, vtep))? {
        tracing::info!(%overlay, "nat table written");
    }
    Ok(())
}

/// Removes the table (agent leaving the overlay).
pub fn remove() -> weft_kernel::Result<()> {
    let mut nft = Nft::new()?;
    if nft.table_exists(Family::Ip.as_str(), TABLE)? {
        nft.apply(Transaction::new().delete_table(Family::Ip, TABLE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay() -> Ipv4Net {
        "10.255.0.0/16".parse().unwrap()
    }

    /// The script is, byte for byte, what the agent wrote before the typed model.
    #[test]
    fn renders_the_same_script_as_before() {
        assert_eq!(
            table(overlay(), "weft.vtep").replace_script(),
            "add table ip weft-agent\ndelete table ip weft-agent\n\
             table ip weft-agent {\n  comment \"weft agent overlay=10.255.0.0/16 vtep=weft.vtep\"\n\
             \x20 chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n\
             \x20   ip saddr 10.255.0.0/16 ip daddr != 10.255.0.0/16 ip daddr != 224.0.0.0/4 oifname != \"weft.vtep\" masquerade fully-random\n  }\n\
             \x20 chain forward {\n    type filter hook forward priority 0; policy accept;\n\
             \x20   ip saddr 10.255.0.0/16 accept\n    ip daddr 10.255.0.0/16 ct state established,related accept\n    ip daddr 10.255.0.0/16 accept\n  }\n}\n"
        );
    }

    #[test]
    fn masquerades_only_what_leaves_the_overlay() {
        let t = table(overlay(), "weft.vtep");
        let post = t.chain("postrouting").expect("postrouting");
        assert_eq!(post.rules.len(), 1);
        assert!(post.rules[0]
            .expr
            .starts_with("ip saddr 10.255.0.0/16 ip daddr != 10.255.0.0/16"));
        assert!(post.rules[0].expr.ends_with("masquerade fully-random"));
        // The fingerprint names what the table depends on: another VTEP is another table.
        assert!(t.matches("weft agent overlay=10.255.0.0/16 vtep=weft.vtep"));
        assert!(!table(overlay(), "weft.vtep2").matches(t.comment.as_deref().unwrap()));
    }

    /// Needs root (skipped otherwise). In a namespace private to a thread of its own, which
    /// the kernel frees (with the table) when the thread ends: what the agent writes is what
    /// the kernel then lists, and writing again is a no-op.
    #[test]
    fn the_kernel_holds_the_table_as_written() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        weft_kernel::netns::in_new_netns(|| {
            ensure(overlay(), "weft.vtep").expect("write");
            let mut nft = Nft::new().expect("libnftables");
            let read = nft
                .list_table(Family::Ip, TABLE)
                .expect("list")
                .expect("the table");
            assert_eq!(
                read.definition(),
                table(overlay(), "weft.vtep").definition()
            );
            assert!(!nft.ensure(&table(overlay(), "weft.vtep")).expect("again"));
            remove().expect("remove");
            assert_eq!(nft.list_table(Family::Ip, TABLE).expect("list"), None);
            remove().expect("removing a missing table is fine");
        })
        .expect("a thread in a namespace of its own");
    }
}
