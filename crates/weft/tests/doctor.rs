//! `weft doctor` as a person runs it: on a configured host (a namespace of the test's own with
//! a controller in it) every check it makes passes; with a broken set-up (a certificate that
//! is not one, a config file that is not there, a network configuration no runtime takes,
//! an unreachable controller) it exits 1 and names each failure with its fix.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A directory and a namespace of the test's own, removed (with the controller) on drop.
struct Host {
    dir: PathBuf,
    ns: String,
    controller: Option<Child>,
}

impl Host {
    fn new(tag: &str) -> Host {
        let ns = format!("wdoc{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&ns);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let h = Host {
            dir,
            ns,
            controller: None,
        };
        run(&["ip", "netns", "add", &h.ns]);
        run(&["ip", "-n", &h.ns, "link", "set", "lo", "up"]);
        h
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn write(&self, p: &str, text: &str) -> PathBuf {
        let path = self.path(p);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A controller in the namespace on 127.0.0.1:7070 (plain HTTP), up when this returns.
    fn start_controller(&mut self) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                WEFT,
                "controller",
                "--listen",
                "127.0.0.1:7070",
            ])
            .args([
                "--insecure-http",
                "--store",
                "sqlite::memory:",
                "--state-dir",
            ])
            .arg(self.path("controller"))
            .env("WEFT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("weft controller");
        self.controller = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            let up = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns,
                    "bash",
                    "-c",
                    "echo > /dev/tcp/127.0.0.1/7070",
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the controller did not come up");
    }

    /// `weft doctor --json ARGS` in the namespace: (exit code, report).
    fn doctor(&self, args: &[&str]) -> (i32, Value) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                WEFT,
                "doctor",
                "--json",
                "--timeout",
                "3",
            ])
            .args(["--cni-conf-dir"])
            .arg(self.path("net.d"))
            .args(["--cni-bin-dirs"])
            .arg(self.path("bin"))
            .args(args)
            .output()
            .expect("weft doctor");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor's output is not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(argv: &[&str]) {
    let st = Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .expect(argv[0]);
    assert!(st.success(), "{argv:?}");
}

/// name -> (status, check) of a report.
fn by_name(report: &Value) -> std::collections::BTreeMap<String, (String, Value)> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                (c["status"].as_str().unwrap().to_string(), c.clone()),
            )
        })
        .collect()
}

fn executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_configured_host_passes_every_check() {
    let mut h = Host::new("ok");
    h.start_controller();
    let lease = h.write(
        "lease.json",
        r#"{"host":"h1","subnet":"10.255.7.0/24","overlay":"10.255.0.0/16","vtep":"weft.vtep","mtu":1450}"#,
    );
    let config = h.write(
        "agent.toml",
        &format!(
            "controller = \"http://127.0.0.1:7070\"\nlease-file = \"{}\"\n",
            lease.display()
        ),
    );
    h.write(
        "net.d/10-weft.conflist",
        r#"{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"weft-cni","ipam":{"subnet":"10.88.0.0/16"}}]}"#,
    );
    executable(&h.path("bin/weft-cni"));
    let (code, report) = h.doctor(&["--config", config.to_str().unwrap()]);
    let checks = by_name(&report);
    for name in [
        "kernel: veth",
        "kernel: bridge",
        "kernel: vxlan gbp",
        "kernel: nf_tables policy",
        "kernel: nf_tables nat",
        "library libnftables",
        "agent config",
        "controller",
        "lease",
        "cni config 10-weft.conflist",
        "cni plugin",
    ] {
        let (status, c) = checks
            .get(name)
            .unwrap_or_else(|| panic!("no check {name}: {report:#}"));
        assert_eq!(status, "ok", "{name}: {c}");
    }
    assert!(checks["controller"].1["detail"]
        .as_str()
        .unwrap()
        .contains("10.255.0.0/16"));
    assert!(checks["lease"].1["detail"]
        .as_str()
        .unwrap()
        .contains("10.255.7.0/24"));
    assert_eq!((code, &report["ok"]), (0, &Value::Bool(true)), "{report:#}");
    // The probes left nothing in the namespace doctor ran in (they run in one of their own).
    let links = Command::new("ip")
        .args(["-n", &h.ns, "-o", "link"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("wdoc"), "{links}");
    let tables = Command::new("ip")
        .args(["netns", "exec", &h.ns, "nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&tables.stdout).trim().is_empty());
}

#[test]
fn a_broken_set_up_fails_and_says_how_to_fix_it() {
    let h = Host::new("bad");
    h.write(
        "agent.pem",
        "-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n",
    );
    h.write("agent-key.pem", "not a key");
    let config = h.write(
        "agent.toml",
        &format!(
            "controller = \"https://127.0.0.1:7070\"\ncert = \"{0}/agent.pem\"\nkey = \"{0}/agent-key.pem\"\nlease-file = \"{0}/lease.json\"\n",
            h.dir.display()
        ),
    );
    h.write(
        "net.d/10-weft.conflist",
        r#"{"cniVersion":"2.0.0","name":"weft","plugins":[{"type":"weft-cni","ipam":{"subnet":"10.88.0.0/16"}}]}"#,
    );
    let (code, report) = h.doctor(&["--config", config.to_str().unwrap()]);
    assert_eq!(
        (code, &report["ok"]),
        (1, &Value::Bool(false)),
        "{report:#}"
    );
    let checks = by_name(&report);
    for (name, status) in [
        ("client certificate", "fail"),
        ("client key", "fail"),
        ("controller", "fail"),
        ("cni config 10-weft.conflist", "fail"),
        ("lease", "warn"),
        ("cni plugin", "warn"),
    ] {
        let (s, c) = checks
            .get(name)
            .unwrap_or_else(|| panic!("no check {name}: {report:#}"));
        assert_eq!(s, status, "{name}: {c}");
        assert!(
            c["fix"].as_str().is_some_and(|f| !f.is_empty()),
            "{name} says no fix: {c}"
        );
    }
    // The kernel is fine all the same: only the set-up failed.
    assert_eq!(checks["kernel: vxlan gbp"].0, "ok");

    // A config file given but not there.
    let (code, report) = h.doctor(&["--config", "/nonexistent/weft/agent.toml"]);
    assert_eq!(code, 1, "{report:#}");
    let checks = by_name(&report);
    assert_eq!(checks["agent config"].0, "fail");
    assert!(checks["agent config"].1["detail"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/weft/agent.toml"));
}
