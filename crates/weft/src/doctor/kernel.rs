//! The kernel features weft uses, each probed by creating it in a network namespace of the
//! probe's own (a fresh thread unshares one; the kernel frees it, and everything made in it,
//! when the thread ends): nothing is created in the host's namespace.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use weft_agent::{nat, policy};
use weft_kernel::link::{VethEnd, VxlanSpec};
use weft_kernel::netns::{in_new_netns, Netns};
use weft_kernel::{MacAddr, Netlink};

use super::Check;

/// What each probe found, in a namespace of its own.
pub fn checks() -> Vec<Check> {
    match in_new_netns(probe) {
        Ok(checks) => checks,
        Err(e) => vec![Check::fail(
            "kernel: namespaces",
            format!("cannot make a network namespace to probe in: {e}"),
            "run `weft doctor` as root on a kernel with network namespaces (CONFIG_NET_NS)",
        )],
    }
}

/// Runs in the new namespace (on its own thread).
fn probe() -> Vec<Check> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![Check::fail("kernel", format!("no runtime: {e}"), "")],
    };
    let mut out = rt.block_on(links());
    out.extend(nftables());
    out.push(fastpath());
    out
}

async fn links() -> Vec<Check> {
    let nl = match Netlink::current() {
        Ok(nl) => nl,
        Err(e) => {
            return vec![Check::fail(
                "kernel: netlink",
                format!("cannot open rtnetlink: {e}"),
                "run as root (CAP_NET_ADMIN)",
            )]
        }
    };
    let mut out = Vec::new();
    let here = Netns::current();
    out.push(match here {
        Ok(ns) => match nl
            .add_veth(&VethEnd::new("wdoc0"), &VethEnd::new("wdoc1"), &ns)
            .await
        {
            Ok(()) => Check::ok("kernel: veth", "a veth pair can be made"),
            Err(e) => Check::fail(
                "kernel: veth",
                format!("cannot make a veth pair: {e}"),
                "load the veth module (modprobe veth) or build the kernel with CONFIG_VETH",
            ),
        },
        Err(e) => Check::fail("kernel: veth", format!("{e}"), "run as root"),
    });
    out.push(match nl.ensure_bridge("wdocbr", None, None).await {
        Ok(_) => Check::ok("kernel: bridge", "a bridge can be made"),
        Err(e) => Check::fail(
            "kernel: bridge",
            format!("cannot make a bridge: {e}"),
            "load the bridge module (modprobe bridge) or build with CONFIG_BRIDGE",
        ),
    });
    let spec = VxlanSpec {
        name: "wdocvx".into(),
        vni: 1,
        port: weft_kernel::link::VXLAN_PORT,
        local: Ipv4Addr::LOCALHOST,
        dev: None,
        mtu: 1450,
        mac: MacAddr::from([0x0a, 0x5a, 0, 0, 0, 1]),
    };
    out.push(match nl.add_vxlan(&spec).await {
        Ok(()) => Check::ok(
            "kernel: vxlan gbp",
            "a VXLAN device with group-based policy (the app tag's field) can be made",
        ),
        Err(e) => Check::fail(
            "kernel: vxlan gbp",
            format!("cannot make a VXLAN device with GBP: {e}"),
            "load the vxlan module (modprobe vxlan); GBP needs Linux 4.0 or later",
        ),
    });
    out
}

/// The agent's own tables (the policy table with its maps, concatenations and intervals; the
/// NAT table with masquerade), written as the agent writes them.
fn nftables() -> Vec<Check> {
    let fix = "install Debian's nftables package (libnftables1) and load nf_tables \
               (modprobe nf_tables nft_ct nft_nat nft_masq)";
    let mut nft = match weft_kernel::nft::Nft::new() {
        Ok(n) => n,
        Err(e) => {
            return vec![Check::fail(
                "kernel: nf_tables",
                format!("cannot use libnftables: {e}"),
                fix,
            )]
        }
    };
    let overlay = "10.255.0.0/16".parse().expect("an overlay");
    let layout = policy::Layout {
        overlay,
        vxlan_port: weft_kernel::link::VXLAN_PORT,
        vtep: "weft.vtep".into(),
        underlay: "eth0".into(),
        enforce: true,
        audit: None,
    };
    let elements = policy::elements(&[], &BTreeMap::new(), &[], &[]);
    let mut out = vec![match policy::fence(&mut nft, &layout, &elements) {
        Ok(_) => Check::ok(
            "kernel: nf_tables policy",
            "the agent's policy table (verdict maps on concatenations and intervals, ct, marks) loads",
        ),
        Err(e) => Check::fail(
            "kernel: nf_tables policy",
            format!("the agent's policy table does not load: {e}"),
            fix,
        ),
    }];
    out.push(match nft.ensure(&nat::table(overlay, "weft.vtep")) {
        Ok(_) => Check::ok(
            "kernel: nf_tables nat",
            "the agent's NAT table (masquerade) loads",
        ),
        Err(e) => Check::fail(
            "kernel: nf_tables nat",
            format!("the agent's NAT table does not load: {e}"),
            fix,
        ),
    });
    out
}

/// The BPF fast path: optional (the agent runs on the kernel path without it).
fn fastpath() -> Check {
    match weft_agent::fastpath::FastPath::load() {
        Ok(_) => Check::ok("kernel: bpf fast path", "the fast path's programs load (verifier, BTF, kfuncs)"),
        Err(e) => Check::warn(
            "kernel: bpf fast path",
            format!("the fast path cannot run: {e:#}; the agent uses the kernel path alone"),
            "for the fast path: Linux 6.0+ with BTF, Debian's libbpf1, and clang when building weft",
        ),
    }
}
