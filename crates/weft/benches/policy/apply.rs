//! Step 1: how long `weft_agent::policy::apply` takes to write the policy table, full and
//! incremental.

use super::*;

// ---------------------------------------------------------------------------------------
// 1. apply

pub struct ApplyRow {
    pub n: usize,
    pub elements_ms: f64,
    pub full_ms: Vec<f64>,
    pub incr_ms: Vec<f64>,
    pub in_kernel: usize,
}

pub fn bench_apply() -> Vec<ApplyRow> {
    let ns = Ns::new("pa");
    let path = ns.path();
    in_ns(&path, || {
        let mut nft = Nft::new().expect("libnftables");
        let layout = policy::Layout {
            overlay: OVERLAY.parse().expect("overlay"),
            vxlan_port: 4789,
            vtep: "weft.vtep".into(),
            underlay: "eth0".into(),
            enforce: true,
            audit: None,
        };
        let mut tags: BTreeMap<String, u16> = BTreeMap::new();
        for a in 0..=100u16 {
            tags.insert(format!("bg{a}"), a + 1);
        }
        tags.insert("dst".into(), 1000);
        let containers = vec![LocalContainer {
            ip: Ipv4Addr::new(10, 255, 1, 2),
            host_ifname: "weftdst0000000".into(),
            app: Some("dst".into()),
            mac: None,
        }];
        let cells = vec![weft_agent::remote::RemoteCell {
            subnet: "10.255.2.0/24".parse().expect("subnet"),
            vtep_ip: Ipv4Addr::new(10, 255, 2, 0),
            vtep_mac: weft_kernel::MacAddr::new([2, 0, 0, 0, 0, 2]),
            underlay_ip: "198.18.0.2".parse().expect("ip"),
        }];
        let mut rows = Vec::new();
        for n in SIZES {
            check_interrupted();
            let mut ps: Vec<Policy> = (0..n).map(|i| bg_policy(i, "dst")).collect();
            let t = Instant::now();
            let e = policy::elements(&ps, &tags, &containers, &cells);
            let elements_ms = ms(t.elapsed());
            assert_eq!(e.allow_ports.len(), n, "one element per policy");
            let mut full = Vec::new();
            for _ in 0..3 {
                // A fresh host: no table yet, so apply writes the table and every element.
                let _ = nft.run(&format!("delete table inet {}", policy::TABLE));
                let t = Instant::now();
                policy::apply(&mut nft, &layout, None, &e, false).expect("apply full");
                full.push(ms(t.elapsed()));
            }
            let in_kernel = count_allow_ports(&mut nft);
            // One more policy on top (a new port of an existing source app), and back.
            ps.push(tcp_policy("bg100", "dst", (60_000, 60_000)));
            let e1 = policy::elements(&ps, &tags, &containers, &cells);
            assert_eq!(e1.allow_ports.len(), n + 1);
            let mut incr = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                policy::apply(&mut nft, &layout, Some(&e), &e1, false).expect("apply +1");
                incr.push(ms(t.elapsed()));
                policy::apply(&mut nft, &layout, Some(&e1), &e, false).expect("apply -1");
            }
            eprintln!(
                "[apply] n={n}: elements {elements_ms:.1} ms, full {full:?} ms, +1 {incr:?} ms"
            );
            rows.push(ApplyRow {
                n,
                elements_ms,
                full_ms: sorted(full),
                incr_ms: sorted(incr),
                in_kernel,
            });
        }
        rows
    })
}
