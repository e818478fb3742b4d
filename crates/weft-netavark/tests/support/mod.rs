//! What the netavark tests and bench share: the real `netavark` binary run the way podman
//! runs it (`--config`, `--plugin-directory`, the nftables firewall driver, the setup input
//! podman writes), inside a namespace standing in for the host.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use weft_kernel::netns::{CommandExt as _, Netns};

use crate::common::{Ns, TempDir};

/// The netavark binary: `$WEFT_NETAVARK`, cargo's bin directory (`cargo install netavark`),
/// `PATH`, or podman's libexec. `None` when there is none.
pub fn netavark_bin() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("WEFT_NETAVARK") {
        candidates.push(p.into());
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    if let Some(h) = cargo_home {
        candidates.push(h.join("bin/netavark"));
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        candidates.push(dir.join("netavark"));
    }
    candidates.push("/usr/libexec/podman/netavark".into());
    candidates.into_iter().find(|p| p.is_file())
}

/// The plugin under test.
pub fn plugin_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft-netavark")
}

/// A 64-digit id from a tag (podman's ids are 64 hex digits).
pub fn id64(tag: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for b in tag.bytes().cycle().take(32) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What one netavark call returned.
#[derive(Debug)]
pub struct Reply {
    pub ok: bool,
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    /// netavark's error message (`{"error": ...}` on stdout, or what it printed on stderr).
    pub fn error(&self) -> String {
        match self.json["error"].as_str() {
            Some(e) => e.to_string(),
            None => format!("{}{}", self.stdout, self.stderr),
        }
    }
}

/// netavark on a host namespace, with its own config directory and a plugin directory
/// holding the plugin as `weft` (as the package installs it in /usr/libexec/netavark).
pub struct Netavark {
    pub bin: PathBuf,
    pub host: Ns,
    pub plugins: TempDir,
    pub config: TempDir,
    /// weft's state directory for the networks of this host (`--opt data_dir`).
    pub data: TempDir,
}

impl Netavark {
    /// `None` (after saying why) when netavark is not installed.
    pub fn new(tag: &str) -> Option<Netavark> {
        let Some(bin) = netavark_bin() else {
            eprintln!(
                "SKIP: no netavark binary (WEFT_NETAVARK, ~/.cargo/bin, PATH, /usr/libexec/podman); \
                 .ci/run installs it with `cargo install --locked netavark`"
            );
            return None;
        };
        let plugins = TempDir::new(&format!("{tag}p"));
        std::os::unix::fs::symlink(plugin_bin(), plugins.path.join("weft"))
            .expect("link the plugin into the plugin directory");
        Some(Netavark {
            bin,
            host: Ns::new(tag),
            plugins,
            config: TempDir::new(&format!("{tag}c")),
            data: TempDir::new(&format!("{tag}d")),
        })
    }

    /// Runs `netavark ARGS` in the host namespace with `input` on stdin.
    pub fn run(&self, args: &[&str], input: &Value) -> Reply {
        let host = Netns::open(self.host.path()).expect("open host netns");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(&self.config.path)
            .arg("--plugin-directory")
            .arg(&self.plugins.path)
            .arg("--firewall-driver")
            .arg("nftables")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.netns(&host).expect("enter host netns");
        let mut child = cmd.spawn().expect("spawn netavark");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.to_string().as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait netavark");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Reply {
            ok: out.status.success(),
            json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `netavark create` of a network (podman's `podman network create`); panics on failure.
    pub fn create(&self, network: Value) -> Value {
        let r = self.run(&["create"], &create_input(network));
        assert!(r.ok, "netavark create: {} {}", r.stdout, r.stderr);
        r.json
    }

    /// A weft network (bridge mode) made by `netavark create`, as podman makes it.
    pub fn weft_network(&self, name: &str, subnet: &str) -> Value {
        self.create(json!({
            "name": name, "id": id64(name), "driver": "weft",
            "subnets": [{ "subnet": subnet }],
            "ipv6_enabled": false, "internal": false, "dns_enabled": false,
            "options": { "data_dir": self.data.path.display().to_string() },
        }))
    }

    /// A network of netavark's own bridge driver.
    pub fn bridge_network(&self, name: &str, bridge: &str, subnet: &str) -> Value {
        self.create(json!({
            "name": name, "id": id64(name), "driver": "bridge",
            "network_interface": bridge,
            "subnets": [{ "subnet": subnet }],
            "ipv6_enabled": false, "internal": false, "dns_enabled": false,
            "ipam_options": { "driver": "host-local" },
        }))
    }

    pub fn setup(&self, ns: &Ns, input: &Value) -> Reply {
        self.run(&["setup", &ns.path()], input)
    }

    pub fn teardown(&self, ns: &Ns, input: &Value) -> Reply {
        self.run(&["teardown", &ns.path()], input)
    }
}

/// `netavark create`'s input: the network and what podman knows is in use.
pub fn create_input(network: Value) -> Value {
    json!({
        "network": network,
        "used": { "interfaces": [], "names": {}, "subnets": [] },
        "options": { "subnet_pools": [], "default_interface_name": null, "check_used_subnets": false },
    })
}

/// One network of a container: the network and the container's options on it.
pub struct Attach<'a> {
    pub network: &'a Value,
    pub ifname: &'a str,
    pub static_ip: Option<&'a str>,
    pub static_mac: Option<&'a str>,
}

/// podman's setup/teardown input for one container.
pub fn container(cid: &str, nets: &[Attach<'_>], ports: Value) -> Value {
    let mut networks = Vec::new();
    let mut info = serde_json::Map::new();
    for a in nets {
        let name = a.network["name"]
            .as_str()
            .expect("network name")
            .to_string();
        let mut o = json!({ "name": name, "interface_name": a.ifname, "aliases": [&cid[..12]] });
        if let Some(ip) = a.static_ip {
            o["static_ips"] = json!([ip]);
        }
        if let Some(mac) = a.static_mac {
            o["static_mac"] = json!(mac);
        }
        networks.push(o);
        info.insert(name, a.network.clone());
    }
    json!({
        "container_id": cid,
        "container_name": format!("c{}", &cid[..6]),
        "networks": networks,
        "network_info": info,
        "port_mappings": ports,
    })
}

/// One TCP port mapping in podman's shape.
pub fn port(host: u16, container: u16) -> Value {
    json!([{ "host_ip": "", "container_port": container, "host_port": host, "range": 1, "protocol": "tcp" }])
}

/// A TCP server in `ns` answering every connection with `tag` (python3), killed on drop.
pub fn serve(ns: &Ns, port: u16, tag: &str) -> crate::common::Bg {
    let bg = ns.spawn(&format!(
        "python3 -c 'import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind((\"0.0.0.0\",{port}))\ns.listen(16)\nwhile True:\n c,_=s.accept()\n c.sendall(b\"{tag}\")\n c.close()'"
    ));
    crate::common::wait_until(
        &format!("server {tag}"),
        std::time::Duration::from_secs(10),
        || tcp_get(ns, "127.0.0.1", port).as_deref() == Some(tag),
    );
    bg
}

/// What a TCP server at ip:port says, from `ns`; `None` when it cannot be reached.
pub fn tcp_get(ns: &Ns, ip: &str, port: u16) -> Option<String> {
    let out = ns.sh(&format!(
        "python3 -c 'import socket\ns=socket.create_connection((\"{ip}\",{port}),2)\ns.settimeout(2)\nprint(s.recv(64).decode())'"
    ));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The IPv4 address (without prefix) of `ifname` in a status block's network `net`.
pub fn status_ip(status: &Value, net: &str, ifname: &str) -> String {
    status[net]["interfaces"][ifname]["subnets"][0]["ipnet"]
        .as_str()
        .and_then(|s| s.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// Links in the host namespace whose name starts with one of `prefixes`.
pub fn links_named(host: &Ns, prefixes: &[&str]) -> Vec<String> {
    host.ok("ip -o link show")
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or("").to_string())
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
        .collect()
}

/// The nftables tables of the host namespace (`family name` each).
pub fn nft_tables(host: &Ns) -> Vec<String> {
    host.ok("nft list tables")
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_string)
        .collect()
}

/// Attachment records under a weft state directory.
pub fn records(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for net in std::fs::read_dir(data).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(net.path().join("attachments"))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(f.path());
        }
    }
    out
}
