//! `weft lab`, `weft demo` and `weft trace` (issue 6), driven as a person would: the CLI, then
//! `ip`/`nft`/`ps` to check what it made. Every lab gets a unique name (its namespaces are
//! `wl-<name>.*`) and a private state directory, and is taken down by a guard, also when the
//! test fails; each test then checks that nothing of it is left.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{weft_bin, TempDir};
use serde_json::Value;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// A lab name no other test uses (at most 16 characters).
fn lab_name(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{tag}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// A lab's name and state dir; `lab down` on drop.
struct Lab {
    name: String,
    dir: TempDir,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        Lab {
            name: lab_name(tag),
            dir: TempDir::new("lab"),
        }
    }

    fn weft(&self, args: &[&str]) -> Output {
        Command::new(weft_bin())
            .args(args)
            .env("WEFT_LAB_DIR", &self.dir.path)
            .output()
            .expect("run weft")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.weft(args);
        assert!(
            out.status.success(),
            "weft {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn up(&self, file: &str) -> String {
        let f = example(file);
        self.ok(&["lab", "up", f.to_str().unwrap(), "--name", &self.name, "-q"])
    }

    fn prefix(&self) -> String {
        format!("wl-{}.", self.name)
    }

    fn ns(&self, thing: &str) -> String {
        format!("wl-{}.{thing}", self.name)
    }

    /// The lab's namespaces that exist.
    fn namespaces(&self) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&self.prefix()))
            .map(str::to_string)
            .collect()
    }

    fn sh(&self, ns: &str, cmd: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns), "sh", "-c", cmd])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Takes the lab down and checks that nothing is left.
    fn down_clean(&self) {
        self.ok(&["lab", "down", &self.name]);
        assert_eq!(self.namespaces(), Vec::<String>::new(), "namespaces left");
        assert!(
            !self.dir.path.join(&self.name).exists(),
            "state directory left"
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.weft(&["lab", "down", &self.name, "-q"]);
    }
}

fn root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Well-formed XML (python3's parser), and the text it contains.
fn check_svg(svg: &str, dir: &Path) {
    let f = dir.join("g.svg");
    std::fs::write(&f, svg).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])",
            f.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SVG is not well-formed XML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(svg.contains("<svg"), "{svg}");
}

#[test]
fn c2c_lab_up_check_graph_down() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new("c2c");
    lab.up("c2c.toml");
    // The seed's expected outcome.
    let out = lab.ok(&["lab", "check", &lab.name, "--json"]);
    let results: Value = serde_json::from_str(&out).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 5);
    for r in results {
        assert_eq!(r["pass"], true, "{r}");
    }
    // What a user would check by hand: the VTEP with GBP, routes to the other cell, policy.
    let vtep = lab.sh("cell1", "ip -d link show weft.vtep");
    assert!(
        vtep.contains("vxlan id 1") && vtep.contains("gbp"),
        "{vtep}"
    );
    let lease2 = lab.sh("cell2", "ip -4 -o addr show weft.vtep");
    let subnet2 = lease2
        .split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string();
    let routes = lab.sh("cell1", "ip route show dev weft.vtep");
    assert!(
        routes.contains(subnet2.split('/').next().unwrap_or("x")),
        "cell1 has no route to cell2's subnet ({subnet2}): {routes}"
    );
    // The underlay switch's address was set (3, NET_ADDR_SET), so it does not follow its
    // lowest port's as cells join: the cells' gateway keeps its MAC.
    let assigned = lab.sh("underlay", "cat /sys/class/net/br0/addr_assign_type");
    assert_eq!(
        assigned.trim(),
        "3",
        "br0's address was not set: {assigned}"
    );
    let allow = lab.sh("cell2", "nft list map inet weft-policy allow_ports");
    assert!(allow.contains("tcp . 8080"), "{allow}");
    // status --json: every namespace, process and container
    let st: Value = serde_json::from_str(&lab.ok(&["lab", "status", &lab.name, "--json"])).unwrap();
    let st = &st[0];
    assert_eq!(st["complete"], true);
    assert!(st["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["exists"] == true));
    assert!(st["processes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["running"] == true));
    let containers = st["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 3);
    for c in containers {
        assert!(
            c["ip"].as_str().is_some_and(|ip| ip.starts_with("10.255.")),
            "{c}"
        );
        assert!(c["tag"].as_u64().is_some(), "{c}");
    }
    // The picture: every cell, container, IP and policy.
    let svg = lab.ok(&["lab", "graph", &lab.name]);
    check_svg(&svg, &lab.dir.path);
    for s in [
        "cell1",
        "cell2",
        "app-a-0",
        "app-b-0",
        "app-c-0",
        "198.18.0.1",
        "198.18.0.2",
    ] {
        assert!(svg.contains(s), "SVG lacks {s}");
    }
    for c in containers {
        let ip = c["ip"].as_str().unwrap();
        assert!(svg.contains(ip), "SVG lacks {ip}");
    }
    // Every policy as an allowed arrow, every denied check as a denied one.
    assert!(
        svg.contains("<title>app-b → app-a tcp 8080 allowed</title>"),
        "SVG lacks the policy arrow"
    );
    for denied in [
        "app-b → app-a tcp 9090 denied",
        "app-a → app-b tcp 8080 denied",
        "app-c → app-a tcp 8080 denied",
    ] {
        assert!(svg.contains(denied), "SVG lacks the denied path {denied}");
    }
    assert!(svg.contains("class=\"edge allowed\"") && svg.contains("class=\"edge denied\""));
    let dot = lab.ok(&["lab", "graph", &lab.name, "--format", "dot"]);
    assert!(dot.contains("digraph") && dot.contains("app-b") && dot.contains("app-a"));
    lab.down_clean();
}

#[test]
fn trace_names_steps_and_objects() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new("tr");
    lab.up("c2c.toml");
    let trace = |dst: &str, probe: bool| -> Value {
        let mut args = vec!["trace", "app-b", dst, "--lab", &lab.name, "--json"];
        if probe {
            args.push("--probe");
        }
        serde_json::from_str(&lab.ok(&args)).unwrap()
    };
    let veth_b = lab.sh(
        "cell1",
        "ip -o link show type veth | grep -o 'weft[0-9a-f]*' | head -1",
    );
    let veth_b = veth_b.trim();
    let fdb = lab.sh("cell1", "bridge fdb show dev weft.vtep");

    // Allowed: app-b -> app-a:8080, across cells.
    let t = trace("app-a:8080", true);
    assert_eq!(t["path"], "across cells");
    assert_eq!(t["decision"]["allowed"], true, "{t:#}");
    assert!(t["decision"]["by"]
        .as_str()
        .unwrap()
        .contains("policy app-b -> app-a tcp 8080"));
    let steps = t["steps"].as_array().unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| s["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
    let objs = |n: usize| steps[n - 1]["objects"].to_string();
    assert!(
        objs(2).contains(veth_b),
        "step 2 names the veth {veth_b}: {}",
        objs(2)
    );
    assert!(
        objs(3).contains("map @tags") && objs(3).contains("element tags"),
        "{}",
        objs(3)
    );
    assert!(objs(4).contains("dev weft.vtep"), "{}", objs(4));
    assert!(
        objs(5).contains("neighbour") && objs(5).contains("dst 198.18.0.2"),
        "{}",
        objs(5)
    );
    // the FDB entry the trace names is the kernel's
    let mac = objs(5)
        .split("fdb ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert!(
        fdb.contains(&mac) && fdb.contains("198.18.0.2"),
        "{mac} not in {fdb}"
    );
    assert!(objs(8).contains("element cells"), "{}", objs(8));
    assert!(objs(8).contains("element cell_subnets"), "{}", objs(8));
    assert!(objs(10).contains("element allow_ports"), "{}", objs(10));
    assert!(objs(11).contains("app-a-0"), "{}", objs(11));
    let probe = &t["probe"];
    assert_eq!(probe["outcome"]["outcome"], "reached", "{probe:#}");
    assert!(probe["dropped_by"].is_null());

    // Denied: port 9090 has no policy; the probe names the rule that dropped it.
    let t = trace("app-a:9090", true);
    assert_eq!(t["decision"]["allowed"], false);
    assert!(t["decision"]["by"]
        .as_str()
        .unwrap()
        .contains("default deny"));
    assert_eq!(t["steps"][10]["skipped"], true);
    let d = &t["probe"]["dropped_by"];
    assert_eq!(d["host"], "cell2", "{:#}", t["probe"]);
    assert_eq!(d["table"], "inet weft-policy");
    assert_eq!(d["chain"], "forward");
    let rule = d["rule"].as_str().unwrap();
    assert!(
        rule.contains("drop comment \"default deny\""),
        "the last rule of the forward chain: {rule}"
    );
    // that rule is in the kernel with that handle
    let handle = rule.rsplit("# handle ").next().unwrap().trim();
    let listing = lab.sh("cell2", "nft -a list chain inet weft-policy forward");
    assert!(
        listing.contains(&format!("drop comment \"default deny\" # handle {handle}")),
        "{listing}"
    );
    // The temporary trace table is gone.
    for cell in ["cell1", "cell2"] {
        let tables = lab.sh(cell, "nft list tables");
        assert!(!tables.contains("weft-trace"), "{cell}: {tables}");
    }

    // Same cell (app-c -> app-a): no overlay steps.
    let out = lab.ok(&["trace", "app-c", "app-a:8080", "--lab", &lab.name]);
    assert!(out.contains("same cell") && out.contains("DENIED"), "{out}");
    // Outside: masqueraded to cell1's underlay address.
    let t = trace("internet:80", false);
    assert_eq!(t["path"], "outside the overlay");
    assert!(t["steps"][3]["note"]
        .as_str()
        .unwrap()
        .contains("198.18.0.1"));

    // On a real host (no --lab, run on cell1 itself): its own kernel objects, and the far
    // side named from the controller's leases.
    let a_ip = trace("app-a:8080", false)["dst_ip"]
        .as_str()
        .unwrap()
        .to_string();
    let d = lab.dir.path.join(&lab.name).join("cells").join("cell1");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns("cell1"), weft_bin(), "trace"])
        .arg(format!("{}-app-b-0", lab.name))
        .arg(format!("{a_ip}:8080"))
        .arg("--data-dir")
        .arg(d.join("cni"))
        .arg("--lease-file")
        .arg(d.join("lease.json"))
        .args(["--controller", "https://198.18.0.254:7070", "--json"])
        .arg("--ca")
        .arg(lab.dir.path.join(&lab.name).join("pki").join("ca.pem"))
        .arg("--cert")
        .arg(
            lab.dir
                .path
                .join(&lab.name)
                .join("pki")
                .join("agent-cell1.pem"),
        )
        .arg("--key")
        .arg(
            lab.dir
                .path
                .join(&lab.name)
                .join("pki")
                .join("agent-cell1-key.pem"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["decision"]["known"], false, "{t:#}");
    assert!(
        t["decision"]["by"].as_str().unwrap().contains("host cell2"),
        "{t:#}"
    );
    assert!(t["steps"][4]["objects"]
        .to_string()
        .contains("dst 198.18.0.2"));

    // Bad input is named.
    let out = lab.weft(&["trace", "nosuch", "app-a:8080", "--lab", &lab.name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("source \"nosuch\""));
    let out = lab.weft(&["trace", "app-b", "app-a:http", "--lab", &lab.name]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a port"));
    lab.down_clean();
}

#[test]
fn veth_and_bridge_labs_pass_their_seed_checks() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    // seed 002
    let lab = Lab::new("veth");
    lab.up("veth.toml");
    let out = lab.ok(&["lab", "check", &lab.name]);
    assert!(out.contains("4 of 4 checks passed"), "{out}");
    let lo = lab.sh("web-0", "ip -o link show lo");
    assert!(lo.contains("UP") || lo.contains("LOOPBACK,UP"), "{lo}");
    let route = lab.sh("web-0", "ip route show default");
    assert!(route.contains("169.254.0.1"), "{route}");
    lab.down_clean();

    // seed 003
    let lab = Lab::new("br");
    lab.up("bridge-nat.toml");
    let out = lab.ok(&["lab", "check", &lab.name]);
    assert!(out.contains("5 of 5 checks passed"), "{out}");
    let br = lab.sh("host", "ip -o link show type bridge");
    assert!(br.contains("weft0"), "{br}");
    let nft = lab.sh("host", "nft list ruleset");
    assert!(nft.contains("masquerade"), "{nft}");
    let svg = lab.ok(&["lab", "graph", &lab.name]);
    check_svg(&svg, &lab.dir.path);
    for s in ["host", "red-0", "blue-0", "10.88.0."] {
        assert!(svg.contains(s), "SVG lacks {s}");
    }
    lab.down_clean();
}

#[test]
fn lab_errors_name_the_problem() {
    let lab = Lab::new("err");
    let bad = lab.dir.path.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[[cells]]\nname = \"c1\"\n[[apps]]\nname = \"a\"\ncells = [\"c9\"]\n",
    )
    .unwrap();
    let out = lab.weft(&["lab", "up", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("apps[0].cells[0]") && err.contains("c9"),
        "{err}"
    );
    let out = lab.weft(&["lab", "check", "nosuchlab"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not up"));
    let out = lab.weft(&["lab", "down", "Bad_Name"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("lab name"));
}

#[test]
fn down_after_a_killed_up_leaves_nothing() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new("kill");
    let f = example("c2c.toml");
    let mut child = Command::new(weft_bin())
        .args(["lab", "up", f.to_str().unwrap(), "--name", &lab.name, "-q"])
        .env("WEFT_LAB_DIR", &lab.dir.path)
        .spawn()
        .unwrap();
    // Kill it as soon as the controller runs (some of the lab exists, not all).
    let start = Instant::now();
    let ul = lab.ns("underlay");
    loop {
        let pids = Command::new("ip")
            .args(["netns", "pids", &ul])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        // The controller itself, not a short-lived helper that passes through the namespace
        // while it is set up.
        let controller = pids.lines().any(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.trim()))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("controller"))
        });
        if controller || start.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !lab.namespaces().is_empty(),
        "nothing was made before the kill"
    );
    // A process running in a lab namespace (the controller, maybe agents) is stopped by down.
    let out = lab.ok(&["lab", "down", &lab.name, "--json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert!(r["processes"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(lab.namespaces(), Vec::<String>::new());
    assert!(!lab.dir.path.join(&lab.name).exists());
    // And the lab can be built again under the same name.
    lab.up("c2c.toml");
    lab.down_clean();
}

#[test]
fn demo_runs_end_to_end() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new("demo");
    let svg = lab.dir.path.join("demo.svg");
    let out = lab.ok(&[
        "demo",
        "--name",
        &lab.name,
        "--graph",
        svg.to_str().unwrap(),
    ]);
    assert!(out.contains("demo done"), "{out}");
    let deny = out.find("DENIED").expect("a denied step");
    let allow = out.find("ALLOWED").expect("an allowed step");
    assert!(
        deny < allow,
        "deny is shown before the policy allows: {out}"
    );
    assert!(
        out.contains("dropped by: [cell2] inet weft-policy forward"),
        "{out}"
    );
    check_svg(&std::fs::read_to_string(&svg).unwrap(), &lab.dir.path);
    // The demo cleaned up after itself.
    assert_eq!(lab.namespaces(), Vec::<String>::new());
    assert!(!lab.dir.path.join(&lab.name).exists());
}
