//! Egress rules at scale beside c2c policies, measured in the same run (issue 18): the time to
//! install N rules (the table and its elements in one transaction) and the cost per new
//! flow through the forward hook with N rules installed, for N = 100, 1,000 and 10,000; the
//! baseline is the same flows with no weft table. Run as root:
//! `cargo bench -p weft-agent --bench egress`. Prints a table; asserts nothing about speed.
//!
//! Lab: three namespaces, `src` (a container, 10.255.1.2, app `src`) and `dst` (203.0.113.2
//! outside the overlay; 10.255.1.3 for c2c, app `dst`) behind `rtr`, which holds the tables.
//! A flow is one UDP datagram from a fresh socket (a new conntrack entry, so a full lookup).

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use weft_agent::{egress, policy};
use weft_api::egress::{
    Destination, DestinationRule, EgressMode, EgressPolicy, EgressProtocol, EgressState,
};
use weft_api::model::{Policy, Ports, Protocol};
use weft_kernel::netns;

const FLOWS: usize = 20_000;
const PORT: u16 = 9000;

fn sh(ns: Option<&str>, cmd: &str) {
    let full = match ns {
        Some(n) => format!("ip netns exec {n} sh -c '{cmd}'"),
        None => cmd.to_string(),
    };
    let out = Command::new("sh")
        .arg("-c")
        .arg(&full)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{full}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces; removed on drop.
struct Lab {
    rtr: String,
    src: String,
    dst: String,
}

impl Lab {
    fn new() -> Lab {
        let p = std::process::id();
        let lab = Lab {
            rtr: format!("cfb{p}r"),
            src: format!("cfb{p}s"),
            dst: format!("cfb{p}d"),
        };
        for n in [&lab.rtr, &lab.src, &lab.dst] {
            sh(None, &format!("ip netns add {n}"));
        }
        let (r, s, d) = (&lab.rtr, &lab.src, &lab.dst);
        sh(
            Some(r),
            "sysctl -qw net.ipv4.ip_forward=1; ip link set lo up",
        );
        // src <-> rtr (the container's veth), dst <-> rtr twice (outside and overlay).
        sh(
            Some(r),
            &format!("ip link add vs0 type veth peer name eth0 netns {s}"),
        );
        sh(
            Some(r),
            &format!("ip link add vo0 type veth peer name eth0 netns {d}"),
        );
        sh(
            Some(r),
            &format!("ip link add vc0 type veth peer name eth1 netns {d}"),
        );
        sh(
            Some(r),
            "ip addr add 10.255.1.1/32 dev vs0; ip addr add 203.0.113.1/24 dev vo0; \
             ip addr add 10.255.1.1/32 dev vc0; ip link set vs0 up; ip link set vo0 up; \
             ip link set vc0 up; ip route add 10.255.1.2/32 dev vs0; ip route add 10.255.1.3/32 dev vc0",
        );
        sh(
            Some(s),
            "ip link set lo up; ip addr add 10.255.1.2/32 dev eth0; ip link set eth0 up; \
             ip route add 10.255.1.1/32 dev eth0; ip route add default via 10.255.1.1",
        );
        sh(
            Some(d),
            "ip link set lo up; ip addr add 203.0.113.2/24 dev eth0; ip link set eth0 up; \
             ip addr add 10.255.1.3/32 dev eth1; ip link set eth1 up; \
             ip route add 10.255.1.1/32 dev eth1; ip route add 10.255.0.0/16 via 10.255.1.1 dev eth1; \
             ip route add default via 203.0.113.1",
        );
        lab
    }

    fn path(n: &str) -> std::path::PathBuf {
        netns::named_path(n)
    }

    /// Flows per second from src to `ip:PORT` (each a fresh socket), and how many arrived.
    fn flows(&self, ip: &str) -> (Duration, usize) {
        let target: std::net::SocketAddr = format!("{ip}:{PORT}").parse().unwrap();
        let dpath = Lab::path(&self.dst);
        let spath = Lab::path(&self.src);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let rx = std::thread::spawn(move || {
            netns::in_netns(&dpath, move || {
                let sock = UdpSocket::bind(("0.0.0.0", PORT)).expect("bind");
                sock.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                let mut n = 0;
                let mut buf = [0u8; 64];
                while sock.recv(&mut buf).is_ok() {
                    n += 1;
                }
                n
            })
            .expect("in dst")
        });
        ready_rx.recv().unwrap();
        let took = netns::in_netns(&spath, move || {
            let start = Instant::now();
            for _ in 0..FLOWS {
                let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                let _ = s.send_to(b"x", target);
            }
            start.elapsed()
        })
        .expect("in src");
        (took, rx.join().unwrap())
    }

    fn in_rtr<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netns::in_netns(Lab::path(&self.rtr), f).expect("in rtr")
    }

    fn reset(&self) {
        sh(
            Some(&self.rtr),
            "nft delete table inet weft-egress 2>/dev/null; nft delete table inet weft-policy 2>/dev/null; conntrack -F 2>/dev/null; true",
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in [&self.rtr, &self.src, &self.dst] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn policy_layout() -> policy::Layout {
    policy::Layout {
        overlay: "10.255.0.0/16".parse().unwrap(),
        vxlan_port: 4789,
        vtep: "weft.vtep".into(),
        underlay: "nounderlay0".into(),
        enforce: true,
        audit: None,
    }
}

fn containers() -> Vec<policy::LocalContainer> {
    vec![
        policy::LocalContainer {
            ip: "10.255.1.2".parse().unwrap(),
            host_ifname: "vs0".into(),
            app: Some("src".into()),
            mac: None,
        },
        policy::LocalContainer {
            ip: "10.255.1.3".parse().unwrap(),
            host_ifname: "vc0".into(),
            app: Some("dst".into()),
            mac: None,
        },
    ]
}

/// Tags: app0.. get 1..=n, src n+1, dst n+2.
fn tags(n: usize) -> BTreeMap<String, u16> {
    let mut t: BTreeMap<String, u16> = (0..n).map(|i| (format!("app{i}"), i as u16 + 1)).collect();
    t.insert("src".into(), n as u16 + 1);
    t.insert("dst".into(), n as u16 + 2);
    t
}

/// n c2c policies (n-1 other apps, and src) to dst on udp PORT.
fn c2c(n: usize) -> Vec<Policy> {
    let ports = Some(Ports {
        start: PORT,
        end: PORT,
    });
    let mut v: Vec<Policy> = (0..n - 1)
        .map(|i| Policy::new(&format!("app{i}"), "dst", Protocol::Udp, ports))
        .collect();
    v.push(Policy::new("src", "dst", Protocol::Udp, ports));
    v
}

/// n egress rules: n-1 other apps each to its own /32, and src to 203.0.113.0/24 udp PORT.
fn egress_state(n: usize) -> EgressState {
    let rule = |ips: String| DestinationRule {
        protocol: EgressProtocol::Udp,
        ips,
        ports: Some(PORT.to_string()),
        description: String::new(),
    };
    let mut destinations: Vec<Destination> = (0..n - 1)
        .map(|i| Destination {
            id: format!("d{i}"),
            name: format!("d{i}"),
            description: String::new(),
            rules: vec![rule(format!("198.18.{}.{}", i / 256, i % 256))],
        })
        .collect();
    destinations.push(Destination {
        id: "out".into(),
        name: "out".into(),
        description: String::new(),
        rules: vec![rule("203.0.113.0/24".into())],
    });
    let mut policies: Vec<EgressPolicy> = (0..n - 1)
        .map(|i| EgressPolicy::new(&format!("app{i}"), &format!("d{i}")))
        .collect();
    policies.push(EgressPolicy::new("src", "out"));
    EgressState {
        mode: EgressMode::Deny,
        destinations,
        policies,
    }
}

/// Installs the policy table (always: it marks src's packets) with `policies`; seconds.
fn install_policy(lab: &Lab, n: usize, policies: &[Policy]) -> Duration {
    let e = policy::elements(policies, &tags(n), &containers(), &[]);
    lab.in_rtr(|| {
        let mut nft = weft_kernel::nft::Nft::new().expect("nft");
        let start = Instant::now();
        policy::apply(&mut nft, &policy_layout(), None, &e, false).expect("policy table");
        start.elapsed()
    })
}

fn install_egress(lab: &Lab, n: usize) -> Duration {
    let e = egress::elements(&egress_state(n), &tags(n));
    assert_eq!(e.len(), n, "one element per rule");
    lab.in_rtr(|| {
        let mut nft = weft_kernel::nft::Nft::new().expect("nft");
        let layout = egress::Layout {
            overlay: "10.255.0.0/16".parse().unwrap(),
            mode: EgressMode::Deny,
        };
        let start = Instant::now();
        egress::apply(&mut nft, &layout, None, &e, false).expect("egress table");
        start.elapsed()
    })
}

fn per_flow(took: Duration, arrived: usize) -> String {
    format!(
        "{:.2} µs ({arrived}/{FLOWS} arrived)",
        took.as_secs_f64() * 1e6 / FLOWS as f64
    )
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("egress bench: needs root (namespaces, nftables); skipped");
        return;
    }
    let lab = Lab::new();
    // Baselines: no weft table.
    lab.reset();
    let (t, n) = lab.flows("203.0.113.2");
    let base_out = per_flow(t, n);
    lab.reset();
    let (t, n) = lab.flows("10.255.1.3");
    let base_c2c = per_flow(t, n);
    println!("flows of {FLOWS} new UDP connections through the forward hook; install = table + elements in one transaction");
    println!();
    println!("| rules | egress install | c2c install | egress per flow | c2c per flow |");
    println!("|---|---|---|---|---|");
    println!("| 0 (no weft table) | - | - | {base_out} | {base_c2c} |");
    for n in [100usize, 1_000, 10_000] {
        // c2c: the policy table with n policies, flows to the overlay container.
        lab.reset();
        let c2c_install = install_policy(&lab, n, &c2c(n));
        let (t, got) = lab.flows("10.255.1.3");
        let c2c_flow = per_flow(t, got);
        // egress: the policy table marks (no c2c policies), the egress table holds n rules.
        lab.reset();
        install_policy(&lab, n, &[]);
        let eg_install = install_egress(&lab, n);
        let (t, got) = lab.flows("203.0.113.2");
        let eg_flow = per_flow(t, got);
        println!(
            "| {n} | {:.1} ms | {:.1} ms | {eg_flow} | {c2c_flow} |",
            eg_install.as_secs_f64() * 1e3,
            c2c_install.as_secs_f64() * 1e3
        );
    }
    // Deny really denies in this lab: a flow to a port no rule allows does not arrive.
    lab.reset();
    install_policy(&lab, 100, &[]);
    install_egress(&lab, 100);
    let before = lab.flows("203.0.113.2").1;
    lab.in_rtr(|| {
        let mut nft = weft_kernel::nft::Nft::new().expect("nft");
        nft.run("flush map inet weft-egress allow_ports")
            .expect("flush");
    });
    let after = lab.flows("203.0.113.2").1;
    println!();
    println!("check: with the rule {before}/{FLOWS} arrive, without it {after}/{FLOWS}");
    lab.reset();
}
