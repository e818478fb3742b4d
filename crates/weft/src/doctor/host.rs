//! The host as weft finds it: sysctls (read, never written), the libraries weft loads
//! in-process (libnftables, libbpf) with their versions, the CNI plugin binary.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::Check;

pub fn checks(cni_bin_dirs: &[PathBuf]) -> Vec<Check> {
    let mut out = sysctls();
    let dpkg = dpkg_status();
    out.push(library(
        "libnftables",
        "libnftables.so.1",
        dpkg_version(&dpkg, "nftables").or_else(|| dpkg_version(&dpkg, "libnftables1")),
        true,
        "apt-get install nftables (weft loads libnftables.so.1 in-process)",
    ));
    out.push(library(
        "libbpf",
        "libbpf.so.1",
        dpkg_version(&dpkg, "libbpf1"),
        false,
        "apt-get install libbpf1 (only the agent's BPF fast path needs it)",
    ));
    out.push(cni_plugin(cni_bin_dirs));
    out
}

fn sysctls() -> Vec<Check> {
    let get = |k: &str| weft_kernel::sysctl::get(k).map(|v| v.trim().to_string());
    let mut out = Vec::new();
    out.push(match get("net.ipv4.ip_forward") {
        Ok(v) if v == "1" => Check::ok("sysctl ip_forward", "net.ipv4.ip_forward = 1"),
        Ok(v) => Check::warn(
            "sysctl ip_forward",
            format!("net.ipv4.ip_forward = {v}: containers reach nothing beyond this host until the agent or weft-cni turns it on"),
            "sysctl -w net.ipv4.ip_forward=1 (and net.ipv4.ip_forward = 1 in /etc/sysctl.d/)",
        ),
        Err(e) => Check::fail("sysctl ip_forward", format!("cannot read: {e}"), "mount /proc"),
    });
    // br_netfilter makes bridged frames pass iptables: a FORWARD policy of DROP (Docker's)
    // then drops weft's bridge traffic.
    out.push(match get("net.bridge.bridge-nf-call-iptables") {
        Ok(v) if v == "1" => Check::warn(
            "sysctl bridge-nf-call",
            "net.bridge.bridge-nf-call-iptables = 1: bridged container traffic also passes iptables' FORWARD chain",
            "sysctl -w net.bridge.bridge-nf-call-iptables=0, or make sure iptables' FORWARD chain accepts weft's bridges",
        ),
        Ok(v) => Check::ok("sysctl bridge-nf-call", format!("net.bridge.bridge-nf-call-iptables = {v}")),
        Err(_) => Check::ok("sysctl bridge-nf-call", "br_netfilter is not loaded: bridged traffic skips iptables"),
    });
    out.push(match get("net.core.bpf_jit_enable") {
        Ok(v) if v == "0" => Check::warn(
            "sysctl bpf_jit",
            "net.core.bpf_jit_enable = 0: the fast path's programs run interpreted (slowly) or not at all",
            "sysctl -w net.core.bpf_jit_enable=1",
        ),
        Ok(v) => Check::ok("sysctl bpf_jit", format!("net.core.bpf_jit_enable = {v}")),
        Err(_) => Check::ok("sysctl bpf_jit", "no net.core.bpf_jit_enable (JIT always on)"),
    });
    out
}

/// The directories the dynamic loader searches first, for this architecture.
fn lib_dirs() -> Vec<PathBuf> {
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    ["/usr/lib", "/lib"]
        .iter()
        .map(|d| Path::new(d).join(&triplet))
        .chain(
            ["/usr/lib64", "/lib64", "/usr/lib", "/usr/local/lib"]
                .iter()
                .map(PathBuf::from),
        )
        .collect()
}

/// The library file `soname` resolves to (its name carries the version: libbpf.so.1.5.0).
fn find_library(soname: &str) -> Option<PathBuf> {
    lib_dirs()
        .into_iter()
        .map(|d| d.join(soname))
        .find(|p| p.exists())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

fn library(name: &str, soname: &str, package: Option<String>, needed: bool, fix: &str) -> Check {
    let check = format!("library {name}");
    match find_library(soname) {
        Some(path) => {
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or(soname);
            let version = file.strip_prefix(&format!("{name}.so.")).unwrap_or(file);
            let pkg = package
                .map(|p| format!(", package {p}"))
                .unwrap_or_default();
            Check::ok(
                check,
                format!("{soname} is {} (version {version}{pkg})", path.display()),
            )
        }
        None if needed => Check::fail(check, format!("no {soname} in {:?}", lib_dirs()), fix),
        None => Check::warn(check, format!("no {soname}"), fix),
    }
}

/// dpkg's status file (bounded), or nothing off Debian.
fn dpkg_status() -> String {
    let mut s = String::new();
    if let Ok(f) = std::fs::File::open("/var/lib/dpkg/status") {
        let _ = f.take(64 << 20).read_to_string(&mut s);
    }
    s
}

/// An installed package's version in dpkg's status text.
fn dpkg_version(status: &str, package: &str) -> Option<String> {
    status.split("\n\n").find_map(|stanza| {
        let mut lines = stanza.lines();
        if lines.clone().next()? != format!("Package: {package}") {
            return None;
        }
        if !stanza.lines().any(|l| l == "Status: install ok installed") {
            return None;
        }
        lines.find_map(|l| l.strip_prefix("Version: ").map(str::to_string))
    })
}

fn cni_plugin(dirs: &[PathBuf]) -> Check {
    let found: Vec<String> = dirs
        .iter()
        .map(|d| d.join("weft-cni"))
        .filter(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|p| p.display().to_string())
        .collect();
    if found.is_empty() {
        Check::warn(
            "cni plugin",
            format!("no executable weft-cni in {dirs:?}: runtimes cannot attach containers to weft networks"),
            "install the weft package, or copy target/release/weft-cni into your runtime's CNI plugin directory",
        )
    } else {
        Check::ok("cni plugin", found.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::dpkg_version;

    #[test]
    fn dpkg_versions_of_installed_packages_only() {
        let status = "Package: nftables\nStatus: install ok installed\nVersion: 1.0.9-1\n\n\
                      Package: libbpf1\nStatus: deinstall ok config-files\nVersion: 1:1.5.0-1\n\n\
                      Package: libbpf1-dev\nStatus: install ok installed\nVersion: 2\n";
        assert_eq!(dpkg_version(status, "nftables").as_deref(), Some("1.0.9-1"));
        assert_eq!(dpkg_version(status, "libbpf1"), None);
        assert_eq!(dpkg_version(status, "libnftables1"), None);
    }
}
