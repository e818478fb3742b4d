//! weft's own set-up on this host: the agent's config file (read exactly as `weft agent
//! --config` reads it), its certificate and key, the controller it names, the lease it keeps,
//! and the CNI network configurations that use weft-cni (parsed by the runtime's rules and
//! then by weft-cni's own).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use weft_agent::AgentArgs;
use weft_api::records::{HostLease, RecordError};

use super::{Check, DoctorArgs};

/// Where the package puts the agent's settings.
pub const DEFAULT_AGENT_CONFIG: &str = "/etc/weft/agent.toml";

/// A certificate closer than this to its end is a warning.
const CERT_WARN_DAYS: i64 = 30;

/// Largest CNI configuration file read, and most files looked at.
const MAX_CNI_FILE: u64 = 1 << 20;
const MAX_CNI_FILES: usize = 256;

pub fn checks(args: &DoctorArgs) -> Vec<Check> {
    let mut out = Vec::new();
    let given = args.config.as_path() != Path::new(DEFAULT_AGENT_CONFIG);
    let agent = if !args.config.exists() && !given {
        out.push(Check::warn(
            "agent config",
            format!("no {DEFAULT_AGENT_CONFIG}: the controller, certificate and lease are not checked"),
            "install the weft package (it ships a commented /etc/weft/agent.toml), or give --config FILE",
        ));
        None
    } else {
        match crate::config::from_file::<AgentArgs>(&args.config) {
            Ok(a) if a.controller.trim().is_empty() => {
                out.push(Check::fail(
                    "agent config",
                    format!("{}: no controller", args.config.display()),
                    format!(
                        "set `controller = \"https://HOST:7070\"` in {}",
                        args.config.display()
                    ),
                ));
                None
            }
            Ok(a) => {
                out.push(Check::ok(
                    "agent config",
                    format!("{} parses", args.config.display()),
                ));
                Some(a)
            }
            Err(e) => {
                out.push(Check::fail(
                    "agent config",
                    format!("{e:#}"),
                    format!(
                        "fix {} (every key is listed in /etc/weft/agent.toml as shipped)",
                        args.config.display()
                    ),
                ));
                None
            }
        }
    };
    if let Some(a) = &agent {
        out.extend(credentials(a));
        out.push(controller(a, Duration::from_secs_f64(args.timeout)));
        out.push(lease(a));
    }
    out.extend(cni_configs(&args.cni_conf_dir));
    out
}

fn credentials(a: &AgentArgs) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(ca) = &a.ca {
        out.push(match weft_api::tls::roots(ca) {
            Ok(_) => Check::ok(
                "controller ca",
                format!("{} holds a CA certificate", ca.display()),
            ),
            Err(e) => Check::fail(
                "controller ca",
                format!("{}: {e:#}", ca.display()),
                "point `ca` at the PEM file of the CA that signed the controller's certificate",
            ),
        });
    }
    let (Some(cert), Some(key)) = (&a.cert, &a.key) else {
        if a.token.is_none() && a.controller.starts_with("https:") {
            out.push(Check::warn(
                "client certificate",
                "no client certificate and no token: the controller will refuse this agent",
                "set `cert` and `key` (made by `weft certs --agent HOST`) or `token`",
            ));
        }
        return out;
    };
    out.push(certificate(cert, now()));
    if let Ok(host) = weft_api::tls::host_of_file(cert) {
        if host.is_none() && a.token.is_none() {
            out.push(Check::fail(
                "client certificate",
                format!("{} names no host (no URI SAN urn:weft:host:NAME): the controller refuses its lease", cert.display()),
                "issue one with `weft certs --agent HOST`",
            ));
        }
    }
    out.push(match weft_api::tls::load_key(key) {
        Ok(_) => Check::ok(
            "client key",
            format!("{} holds a private key", key.display()),
        ),
        Err(e) => Check::fail(
            "client key",
            format!("{}: {e:#}", key.display()),
            "point `key` at the PEM private key of the client certificate",
        ),
    });
    out
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The client certificate's validity at `now` (Unix seconds).
fn certificate(cert: &Path, now: i64) -> Check {
    match weft_api::tls::not_after(cert) {
        Ok(end) if end <= now => Check::fail(
            "client certificate",
            format!("{} expired {} days ago", cert.display(), (now - end) / 86_400),
            "issue a new one (`weft certs --agent HOST`) and replace the file: the agent re-reads it",
        ),
        Ok(end) if (end - now) / 86_400 < CERT_WARN_DAYS => Check::warn(
            "client certificate",
            format!("{} expires in {} days", cert.display(), (end - now) / 86_400),
            "issue a new one and replace the file before then: the agent re-reads it",
        ),
        Ok(end) => Check::ok(
            "client certificate",
            format!("{} valid for {} more days", cert.display(), (end - now) / 86_400),
        ),
        Err(e) => Check::fail(
            "client certificate",
            format!("{}: {e:#}", cert.display()),
            "point `cert` at the PEM certificate made by `weft certs --agent HOST`",
        ),
    }
}

/// The controller the agent would use, asked for its leases with the agent's credentials.
fn controller(a: &AgentArgs, timeout: Duration) -> Check {
    let fix = "start the controller (systemctl start weft-controller) or fix `controller`, \
               `ca`, `cert`, `key`, `token` in the agent's config; check firewalls between the hosts";
    let mut b = weft_api::Client::builder(a.controller.clone());
    if let Some(ca) = &a.ca {
        b = b.ca(ca.clone());
    }
    if let (Some(c), Some(k)) = (&a.cert, &a.key) {
        b = b.identity(c.clone(), k.clone());
    }
    if let Some(t) = &a.token {
        b = b.token(t.clone());
    }
    let client = match b.timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => return Check::fail("controller", format!("{}: {e:#}", a.controller), fix),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Check::fail("controller", format!("no runtime: {e}"), fix),
    };
    match rt.block_on(async { tokio::time::timeout(timeout, client.leases()).await }) {
        Ok(Ok(list)) => Check::ok(
            "controller",
            format!(
                "{} answers: overlay {}, /{} per host, {} leases",
                a.controller,
                list.overlay,
                list.host_prefix,
                list.leases.len()
            ),
        ),
        Ok(Err(e)) => Check::fail("controller", format!("{}: {e}", a.controller), fix),
        Err(_) => Check::fail(
            "controller",
            format!("{}: no answer within {timeout:?}", a.controller),
            fix,
        ),
    }
}

fn lease(a: &AgentArgs) -> Check {
    match HostLease::read(&a.lease_file) {
        Ok(l) => Check::ok(
            "lease",
            format!("{}: host {} holds {} of {}", a.lease_file.display(), l.host, l.subnet, l.overlay),
        ),
        Err(RecordError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Check::warn(
                "lease",
                format!("no {} yet: overlay networks cannot start containers", a.lease_file.display()),
                "start the agent (systemctl start weft-agent): it writes the lease once the controller gives one",
            )
        }
        Err(e) => Check::fail(
            "lease",
            format!("{e}"),
            "stop the agent, remove the file and start the agent again: it writes a new one",
        ),
    }
}

/// The CNI network configurations in `dir` that use weft-cni.
fn cni_configs(dir: &Path) -> Vec<Check> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            return vec![Check::warn(
                "cni config",
                format!("{}: {e}", dir.display()),
                "write a weft network configuration there (README: weft-cni) for your runtime",
            )]
        }
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files.into_iter().take(MAX_CNI_FILES) {
        let mut bytes = Vec::new();
        let read = std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_CNI_FILE + 1).read_to_end(&mut bytes));
        let name = format!(
            "cni config {}",
            path.file_name().and_then(|f| f.to_str()).unwrap_or("")
        );
        match read {
            Err(e) => out.push(Check::fail(
                name,
                format!("{}: {e}", path.display()),
                "make it readable",
            )),
            Ok(_) if bytes.len() as u64 > MAX_CNI_FILE => out.push(Check::fail(
                name,
                format!("{}: larger than {MAX_CNI_FILE} bytes", path.display()),
                "a network configuration is a few hundred bytes: rewrite it",
            )),
            Ok(_) => out.extend(cni_config(&name, &path, &bytes)),
        }
    }
    if out.is_empty() {
        out.push(Check::warn(
            "cni config",
            format!(
                "no network configuration in {} uses weft-cni",
                dir.display()
            ),
            "write one (README: weft-cni; examples/) with cniVersion 1.0.0",
        ));
    }
    out
}

/// One file's check, if it is about weft (a file of another plugin's gives none unless it
/// is not even JSON: the runtime would refuse it too).
fn cni_config(name: &str, path: &Path, bytes: &[u8]) -> Option<Check> {
    let fail = |detail: String, fix: &str| {
        Some(Check::fail(
            name,
            format!("{}: {detail}", path.display()),
            fix,
        ))
    };
    let v: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                format!("not JSON: {e}"),
                "fix the JSON (runtimes skip or refuse the whole file)",
            )
        }
    };
    let is_list = path.extension().is_some_and(|e| e == "conflist");
    // The plugin configurations as the runtime hands them to each plugin.
    let plugins: Vec<Value> = if is_list {
        match v.get("plugins").and_then(Value::as_array) {
            Some(p) => p.clone(),
            None => {
                return fail(
                    "no \"plugins\" list".into(),
                    "a .conflist holds {\"cniVersion\", \"name\", \"plugins\": [...]}",
                )
            }
        }
    } else {
        vec![v.clone()]
    };
    let weft: Vec<&Value> = plugins
        .iter()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("weft-cni"))
        .collect();
    if weft.is_empty() {
        return None;
    }
    let version = v.get("cniVersion").and_then(Value::as_str).unwrap_or("");
    let net = v.get("name").and_then(Value::as_str).unwrap_or("");
    if net.is_empty() {
        return fail("no network \"name\"".into(), "give the network a name");
    }
    if !weft_cni::spec::SUPPORTED_VERSIONS.contains(&version) {
        return fail(
            format!(
                "cniVersion {version:?} is not one weft-cni speaks ({})",
                weft_cni::spec::SUPPORTED_VERSIONS.join(", ")
            ),
            "use \"cniVersion\": \"1.0.0\"",
        );
    }
    for p in weft {
        let mut conf = p.clone();
        if let Some(o) = conf.as_object_mut() {
            o.insert("name".into(), Value::String(net.into()));
            o.insert("cniVersion".into(), Value::String(version.into()));
        }
        let bytes = serde_json::to_vec(&conf).unwrap_or_default();
        let parsed = weft_cni::config::parse_netconf(&bytes)
            .and_then(|nc| weft_cni::config::NetworkConf::from_netconf(nc, &BTreeMap::new()));
        if let Err(e) = parsed {
            return fail(
                format!("weft-cni refuses it: {e}"),
                "fix the field it names (README: weft-cni)",
            );
        }
    }
    if version == "1.1.0" {
        return Some(Check::warn(
            name,
            format!("{}: network {net:?}, cniVersion 1.1.0, which containerd 1.6 and 1.7 refuse", path.display()),
            "use \"cniVersion\": \"1.0.0\" unless every runtime on this host takes 1.1.0 (podman 4, CRI-O)",
        ));
    }
    Some(Check::ok(
        name,
        format!("{}: network {net:?}, cniVersion {version}", path.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(file: &str, text: &str) -> Option<Check> {
        cni_config("cni config x", Path::new(file), text.as_bytes())
    }

    #[test]
    fn cni_configs_by_the_runtimes_rules_and_weft_cnis() {
        let good = r#"{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"weft-cni","ipam":{"subnet":"10.88.0.0/16"}},{"type":"portmap"}]}"#;
        assert_eq!(
            check("/e/10-weft.conflist", good).unwrap().status,
            super::super::Status::Ok
        );
        let newer = good.replace("1.0.0", "1.1.0");
        assert_eq!(
            check("/e/10-weft.conflist", &newer).unwrap().status,
            super::super::Status::Warn
        );
        // Not weft's: no opinion.
        assert!(check(
            "/e/87-podman.conflist",
            r#"{"cniVersion":"1.0.0","name":"podman","plugins":[{"type":"bridge"}]}"#
        )
        .is_none());
        for bad in [
            "{not json",
            r#"{"cniVersion":"9.9.9","name":"weft","plugins":[{"type":"weft-cni","ipam":{"subnet":"10.88.0.0/16"}}]}"#,
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"weft-cni","ipam":{"subnet":"10.88.0.0/16"}}]}"#,
            r#"{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"weft-cni","ipam":{"subnet":"bad"}}]}"#,
            r#"{"cniVersion":"1.0.0","name":"weft","plugins":[{"type":"weft-cni","mtu":"big","ipam":{"subnet":"10.88.0.0/16"}}]}"#,
        ] {
            let c = check("/e/10-weft.conflist", bad).expect(bad);
            assert_eq!(c.status, super::super::Status::Fail, "{bad}: {c:?}");
            assert!(c.fix.is_some());
        }
        // A single plugin's .conf.
        let conf = r#"{"cniVersion":"1.0.0","name":"w","type":"weft-cni","ipam":{"subnet":"10.88.0.0/16"}}"#;
        assert_eq!(
            check("/e/w.conf", conf).unwrap().status,
            super::super::Status::Ok
        );
    }

    #[test]
    fn unreadable_certificates_fail() {
        let p = std::env::temp_dir().join(format!("weft-doctor-cert-{}.pem", std::process::id()));
        std::fs::write(&p, "not a certificate").unwrap();
        let c = certificate(&p, now());
        std::fs::remove_file(&p).unwrap();
        assert_eq!(c.status, super::super::Status::Fail, "{c:?}");
        let c = certificate(Path::new("/nonexistent/weft.pem"), now());
        assert_eq!(c.status, super::super::Status::Fail, "{c:?}");
    }
}
