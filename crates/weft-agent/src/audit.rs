//! The audit log (issue 18 item 3): denied connection attempts, and with `--audit-accepted`
//! accepted new connections, as JSON lines ([`Record`]) — what CF's iptables-logger and
//! Cilium's Hubble give.
//!
//! The kernel hands the packets over through NFLOG ([`weft_kernel::nflog`]):
//!
//! - deny: in `inet weft-policy`'s forward chain, right before the unconditional
//!   "default deny" drop, a rule of its own without a verdict:
//!   `limit rate R/second burst 2R packets counter log group G prefix "weft:deny"`. Whether
//!   the limit is over, the log fails or nobody listens, the packet goes on to the drop:
//!   logging never decides (issue 14: counting never decides).
//! - accept: a base chain `audit` on the forward hook at priority 10, after the policy chain
//!   (priority 0) has accepted the packet (a drop there ends the packet before it gets here),
//!   with no verdict at all: `ct state new ip saddr OVERLAY oifname @veths limit ... log`.
//!
//! The reader (a thread of its own, never the agent's loop) takes the packets off the socket,
//! holds to the same rate with a token bucket, names both ends (the mark is the source app's
//! tag; addresses of this host's containers give app and container id; the policy that
//! allowed an accepted packet is found from its app pair, protocol and port) and appends one
//! line per packet to `--audit-log` (`-`: standard output). What the limits drop is counted
//! in `weft_audit_dropped_total` by stage (the kernel's limit, the reader's, a full socket).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use weft_api::model::{Policy, Protocol};
use weft_kernel::nflog::{LogPacket, NflogListener};

use weft_kernel::nft::{Chain, Rule, Table, Verdict};

use crate::policy::{chains, sets, Layout, LocalContainer};

/// The log statements' prefixes.
pub const PREFIX_DENY: &str = "weft:deny";
pub const PREFIX_ACCEPT: &str = "weft:accept";
/// Comments of the log rules (their counters tell what the kernel's limit let through).
pub const COMMENT_DENY: &str = "audit: default deny";
pub const COMMENT_ACCEPT: &str = "audit: accepted";

/// The highest `--audit-rate`.
pub const MAX_RATE: u32 = 100_000;

/// The audit rules of the policy table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// NFLOG group.
    pub group: u16,
    /// Records per second at most (burst: twice as many).
    pub rate: u32,
    /// Also log accepted new connections.
    pub accepted: bool,
}

impl Rules {
    /// Short: the table's comment (its fingerprint) holds 128 characters at most.
    pub fn fingerprint(&self) -> String {
        let what = if self.accepted { 'a' } else { 'd' };
        format!("{}{what}{}", self.group, self.rate)
    }

    /// The log rule: a limit, its counter and the log statement, no verdict.
    fn log(&self, prefix: &str) -> String {
        let r = self.rate.max(1);
        format!(
            "limit rate {r}/second burst {} packets counter log group {} prefix \"{prefix}\"",
            r.saturating_mul(2),
            self.group
        )
    }
}

/// Pure: the audit parts of the policy table for `l`: the deny log rule (to stand before the
/// default deny drop; none without audit or without enforcement, where nothing is denied)
/// and the `audit` base chain (none unless accepted connections are logged).
pub fn render_rules(l: &Layout) -> (Option<Rule>, Option<Chain>) {
    let Some(a) = &l.audit else {
        return (None, None);
    };
    let deny = l
        .enforce
        .then(|| Rule::new(a.log(PREFIX_DENY)).comment(COMMENT_DENY));
    let chain = a.accepted.then(|| {
        Chain::base(chains::AUDIT, "filter", "forward", 10, Verdict::Accept).with_rule(
            Rule::new(format!(
                "ct state new ip saddr {} oifname @{} {}",
                l.overlay,
                sets::VETHS,
                a.log(PREFIX_ACCEPT)
            ))
            .comment(COMMENT_ACCEPT),
        )
    });
    (deny, chain)
}

/// One end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The app (from the packet's mark at the source, from this host's containers at the
    /// destination); absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The container id, for containers on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub ip: Ipv4Addr,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub src: Endpoint,
    pub dst: Endpoint,
    /// "tcp", "udp", "icmp" or the protocol number.
    pub proto: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// "deny" or "accept".
    pub verdict: String,
    /// What decided: "default deny", or the policy that allowed ("app-b -> app-a tcp 8080").
    pub rule: String,
}

/// What the reader knows to name a packet's ends, refreshed at every policy sync.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub app_of_tag: BTreeMap<u16, String>,
    /// This host's containers: ip -> (app, container id).
    pub local: BTreeMap<Ipv4Addr, (Option<String>, Option<String>)>,
    /// Every host's instances (the controller's placement): ip -> (app, container id).
    pub placed: BTreeMap<Ipv4Addr, (Option<String>, Option<String>)>,
    pub policies: Vec<Policy>,
    pub enforce: bool,
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

fn policy_text(p: &Policy) -> String {
    let d = &p.destination;
    match d.ports {
        Some(r) if r.start == r.end => format!(
            "{} -> {} {} {}",
            p.source.id,
            d.id,
            d.protocol.as_str(),
            r.start
        ),
        Some(r) => format!(
            "{} -> {} {} {}-{}",
            p.source.id,
            d.id,
            d.protocol.as_str(),
            r.start,
            r.end
        ),
        None => format!("{} -> {} {}", p.source.id, d.id, d.protocol.as_str()),
    }
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// Pure: the record of a logged packet (None: not one of ours, or not IPv4).
pub fn record(p: &LogPacket, names: &Names, time: String) -> Option<Record> {
    let verdict = match p.prefix.as_str() {
        PREFIX_DENY => "deny",
        PREFIX_ACCEPT => "accept",
        _ => return None,
    };
    let (src_ip, dst_ip, proto) = p.ipv4()?;
    let tag = p
        .mark
        .and_then(|m| u16::try_from(m).ok())
        .filter(|t| *t != 0);
    let local = |ip: &Ipv4Addr| {
        names
            .local
            .get(ip)
            .or_else(|| names.placed.get(ip))
            .cloned()
            .unwrap_or((None, None))
    };
    let (src_local_app, src_instance) = local(&src_ip);
    let src_app = tag
        .and_then(|t| names.app_of_tag.get(&t).cloned())
        .or(src_local_app);
    let (dst_app, dst_instance) = local(&dst_ip);
    let port = p.dport();
    let rule = if verdict == "deny" {
        crate::policy::drops::DEFAULT_DENY.to_string()
    } else {
        let wanted = match proto {
            1 => Some(Protocol::Icmp),
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        };
        names
            .policies
            .iter()
            .find(|pol| {
                Some(&pol.source.id) == src_app.as_ref()
                    && Some(&pol.destination.id) == dst_app.as_ref()
                    && Some(pol.destination.protocol) == wanted
                    && match (pol.destination.ports, port) {
                        (Some(r), Some(p)) => r.start <= p && p <= r.end,
                        (None, _) => pol.destination.protocol == Protocol::Icmp,
                        _ => false,
                    }
            })
            .map(policy_text)
            .unwrap_or_else(|| {
                if names.enforce {
                    "policy".to_string()
                } else {
                    "enforcement off".to_string()
                }
            })
    };
    Some(Record {
        time,
        src: Endpoint {
            app: src_app,
            instance: src_instance,
            ip: src_ip,
        },
        dst: Endpoint {
            app: dst_app,
            instance: dst_instance,
            ip: dst_ip,
        },
        proto: proto_name(proto),
        port,
        verdict: verdict.to_string(),
        rule,
    })
}

/// A token bucket: `rate` tokens a second, at most `burst` kept.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: u32, now: Instant) -> Bucket {
        let rate = f64::from(rate.max(1));
        Bucket {
            rate,
            burst: 2.0 * rate,
            tokens: 2.0 * rate,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The reader's counters (metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub written: AtomicU64,
    /// Packets the reader's bucket refused.
    pub limited: AtomicU64,
    /// Times the socket overflowed (each lost an unknown number of packets).
    pub overruns: AtomicU64,
    /// Lines that could not be written.
    pub write_errors: AtomicU64,
}

/// The running audit log: its reader thread's names and counters.
#[derive(Debug)]
pub struct Audit {
    names: Arc<RwLock<Names>>,
    pub stats: Arc<Stats>,
    cni_data_dir: PathBuf,
    /// The container IPs whose ids were last read from weft-cni's records.
    known: std::sync::Mutex<BTreeSet<Ipv4Addr>>,
}

impl Audit {
    /// Binds the NFLOG group (in the calling thread's namespace), opens `out` (`-`: standard
    /// output) for appending and starts the reader thread.
    pub fn start(rules: &Rules, out: &Path, cni_data_dir: PathBuf) -> Result<Audit> {
        let listener = NflogListener::open(rules.group)
            .with_context(|| format!("--audit-group {}", rules.group))?;
        let writer: Box<dyn Write + Send> = if out == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(out)
                    .with_context(|| format!("--audit-log: open {}", out.display()))?,
            )
        };
        let names: Arc<RwLock<Names>> = Default::default();
        let stats: Arc<Stats> = Default::default();
        let (n, s, rate) = (names.clone(), stats.clone(), rules.rate);
        std::thread::Builder::new()
            .name("weft-audit".into())
            .spawn(move || read_loop(listener, writer, n, s, rate))
            .context("starting the audit reader")?;
        tracing::info!(group = rules.group, rate = rules.rate, accepted = rules.accepted, out = %out.display(), "audit log on");
        Ok(Audit {
            names,
            stats,
            cni_data_dir,
            known: Default::default(),
        })
    }

    /// Takes every host's instances (placement): remote ends get their app and container id.
    pub fn set_instances<'a>(
        &self,
        instances: impl IntoIterator<Item = &'a weft_api::model::Instance>,
    ) {
        let placed = instances
            .into_iter()
            .map(|i| (i.ip, (Some(i.app.clone()), Some(i.id.clone()))))
            .collect();
        self.names.write().unwrap_or_else(|e| e.into_inner()).placed = placed;
    }

    /// Takes the agent's view after a policy sync: tags, local containers, policies.
    pub fn update(
        &self,
        tags: &BTreeMap<String, u16>,
        containers: &[LocalContainer],
        policies: &[Policy],
        enforce: bool,
    ) {
        let ips: BTreeSet<Ipv4Addr> = containers.iter().map(|c| c.ip).collect();
        // Container ids come from weft-cni's records, read again only when the set of
        // containers changed.
        let ids: Option<BTreeMap<Ipv4Addr, String>> = {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            (*known != ips).then(|| {
                *known = ips.clone();
                weft_api::records::attachments(&self.cni_data_dir)
                    .into_iter()
                    .filter_map(|p| match p {
                        weft_api::records::Plan::Overlay(o) => Some((o.ip, o.container_id)),
                        weft_api::records::Plan::Bridge(_) => None,
                    })
                    .collect()
            })
        };
        let mut n = self.names.write().unwrap_or_else(|e| e.into_inner());
        n.app_of_tag = tags.iter().map(|(a, t)| (*t, a.clone())).collect();
        let old = std::mem::take(&mut n.local);
        n.local = containers
            .iter()
            .map(|c| {
                let id = match &ids {
                    Some(ids) => ids.get(&c.ip).cloned(),
                    None => old.get(&c.ip).and_then(|(_, id)| id.clone()),
                };
                (c.ip, (c.app.clone(), id))
            })
            .collect();
        n.policies = policies.to_vec();
        n.enforce = enforce;
    }
}

fn read_loop(
    mut listener: NflogListener,
    mut out: Box<dyn Write + Send>,
    names: Arc<RwLock<Names>>,
    stats: Arc<Stats>,
    rate: u32,
) {
    let mut bucket = Bucket::new(rate, Instant::now());
    let mut overruns = 0;
    loop {
        let packets = match listener.next(Duration::from_secs(1)) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "audit: reading NFLOG failed");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if listener.overruns() != overruns {
            stats
                .overruns
                .fetch_add(listener.overruns() - overruns, Ordering::Relaxed);
            overruns = listener.overruns();
        }
        if packets.is_empty() {
            continue;
        }
        let mut buf = String::new();
        {
            let n = names.read().unwrap_or_else(|e| e.into_inner());
            let now = rfc3339(std::time::SystemTime::now());
            for p in &packets {
                if !bucket.take(Instant::now()) {
                    stats.limited.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if let Some(r) = record(p, &n, now.clone()) {
                    if let Ok(line) = serde_json::to_string(&r) {
                        buf += &line;
                        buf.push('\n');
                        stats.written.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if let Err(e) = out.write_all(buf.as_bytes()).and_then(|()| out.flush()) {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "audit: writing the log failed");
        }
    }
}

/// The audit metrics; `table` is the policy table as the kernel lists it (the kernel's
/// limit: packets default deny dropped that its log rule did not log).
pub fn render_metrics(s: &Stats, table: Option<&Table>) -> String {
    let counter = |c: &str| {
        table
            .and_then(|t| t.counter_of_rule(c))
            .map_or(0, |n| n.packets)
    };
    let kernel = counter(crate::policy::drops::DEFAULT_DENY).saturating_sub(counter(COMMENT_DENY));
    let mut out = String::new();
    let _ = writeln!(out, "# HELP weft_audit_records_total Audit log lines written.\n# TYPE weft_audit_records_total counter\nweft_audit_records_total {}", s.written.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP weft_audit_dropped_total Denied packets not in the audit log, by where the rate limit took them (kernel: the log rule's limit; reader: the agent's token bucket; socket: times the NFLOG socket overflowed), and lines that could not be written.\n# TYPE weft_audit_dropped_total counter");
    for (stage, n) in [
        ("kernel", kernel),
        ("reader", s.limited.load(Ordering::Relaxed)),
        ("socket", s.overruns.load(Ordering::Relaxed)),
        ("write", s.write_errors.load(Ordering::Relaxed)),
    ] {
        let _ = writeln!(out, "weft_audit_dropped_total{{stage=\"{stage}\"}} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::model::Ports;

    fn layout(enforce: bool, audit: Option<Rules>) -> Layout {
        Layout::test(enforce, audit)
    }

    fn rules(accepted: bool) -> Rules {
        Rules {
            group: 2626,
            rate: 100,
            accepted,
        }
    }

    /// The log rules have no verdict and sit where no verdict depends on them: the deny log
    /// right before the unconditional drop, the accept log in a chain of its own after the
    /// policy chain.
    #[test]
    fn log_rules_never_decide() {
        let t = crate::policy::table(&layout(true, Some(rules(true)))).replace_script();
        let lines: Vec<&str> = t.lines().map(str::trim).collect();
        let drop = lines
            .iter()
            .position(|l| *l == "counter drop comment \"default deny\"")
            .expect("default deny");
        assert_eq!(
            lines[drop - 1],
            "limit rate 100/second burst 200 packets counter log group 2626 prefix \"weft:deny\" comment \"audit: default deny\""
        );
        assert!(t.contains(
            "chain audit {\n    type filter hook forward priority 10; policy accept;\n    ct state new ip saddr 10.255.0.0/16 oifname @veths limit rate 100/second burst 200 packets counter log group 2626 prefix \"weft:accept\" comment \"audit: accepted\"\n  }"
        ));
        for l in lines.iter().filter(|l| l.contains("log group")) {
            // The words outside quoted strings (prefixes and comments may say anything).
            let words: Vec<&str> = l
                .split('"')
                .step_by(2)
                .flat_map(str::split_whitespace)
                .collect();
            for verdict in ["accept", "drop", "jump", "goto", "reject", "vmap", "return"] {
                assert!(!words.contains(&verdict), "a verdict in a log rule: {l}");
            }
        }
        // Without audit: no log rule, and the fingerprint is the one tables had before.
        let plain_table = crate::policy::table(&layout(true, None));
        let (fp, plain) = (
            plain_table.comment.clone().unwrap_or_default(),
            plain_table.replace_script(),
        );
        assert!(!plain.contains("log"));
        assert!(!fp.contains("audit"));
        let fp2 = crate::policy::table(&layout(true, Some(rules(false)))).comment;
        let fp2 = fp2.unwrap_or_default();
        assert_ne!(fp, fp2, "turning audit on rewrites the table");
        // The fingerprint fits nftables' comment with the longest names and numbers.
        let mut long = layout(
            true,
            Some(Rules {
                group: u16::MAX,
                rate: MAX_RATE,
                accepted: true,
            }),
        );
        long.vtep = "v".repeat(15);
        long.underlay = "u".repeat(15);
        long.overlay = "100.100.100.100/32".parse().unwrap();
        long.vxlan_port = u16::MAX;
        assert!(long.fingerprint().len() <= 128, "{}", long.fingerprint());
        // Enforcement off: nothing is denied, nothing to log as denied.
        let off = crate::policy::table(&layout(false, Some(rules(false)))).replace_script();
        assert!(!off.contains("weft:deny") && !off.contains("chain audit"));
    }

    fn packet(
        prefix: &str,
        mark: u32,
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        dport: u16,
    ) -> LogPacket {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&40000u16.to_be_bytes());
        ip.extend_from_slice(&dport.to_be_bytes());
        LogPacket {
            family: 2,
            prefix: prefix.into(),
            mark: Some(mark),
            payload: ip,
            ..LogPacket::default()
        }
    }

    fn names() -> Names {
        Names {
            app_of_tag: [(11, "app-b".to_string()), (10, "app-a".to_string())].into(),
            local: [
                (
                    "10.255.2.3".parse().unwrap(),
                    (Some("app-a".to_string()), Some("ctr-a".to_string())),
                ),
                (
                    "10.255.2.4".parse().unwrap(),
                    (Some("app-b".to_string()), Some("ctr-b".to_string())),
                ),
            ]
            .into(),
            placed: [(
                "10.255.1.2".parse().unwrap(),
                (Some("app-b".to_string()), Some("ctr-remote".to_string())),
            )]
            .into(),
            policies: vec![Policy::new(
                "app-b",
                "app-a",
                Protocol::Tcp,
                Some(Ports {
                    start: 8000,
                    end: 8100,
                }),
            )],
            enforce: true,
        }
    }

    #[test]
    fn records_name_both_ends_the_port_and_the_rule() {
        let n = names();
        let r = record(
            &packet(PREFIX_DENY, 11, [10, 255, 1, 2], [10, 255, 2, 3], 6, 9090),
            &n,
            "t".into(),
        )
        .expect("record");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({
                "time": "t",
                "src": {"app": "app-b", "instance": "ctr-remote", "ip": "10.255.1.2"},
                "dst": {"app": "app-a", "instance": "ctr-a", "ip": "10.255.2.3"},
                "proto": "tcp", "port": 9090, "verdict": "deny", "rule": "default deny"
            })
        );
        // Accepted, from a local container: its instance too, and the policy that allowed.
        let r = record(
            &packet(PREFIX_ACCEPT, 11, [10, 255, 2, 4], [10, 255, 2, 3], 6, 8080),
            &n,
            "t".into(),
        )
        .expect("record");
        assert_eq!(r.src.instance.as_deref(), Some("ctr-b"));
        assert_eq!(
            (r.verdict.as_str(), r.rule.as_str()),
            ("accept", "app-b -> app-a tcp 8000-8100")
        );
        // Not ours, not IPv4: nothing.
        assert!(record(&packet("other", 11, [1; 4], [2; 4], 6, 1), &n, "t".into()).is_none());
        let mut v6 = packet(PREFIX_DENY, 11, [1; 4], [2; 4], 6, 1);
        v6.payload[0] = 0x60;
        assert!(record(&v6, &n, "t".into()).is_none());
        // Unknown mark and address: only the addresses.
        let r = record(
            &packet(PREFIX_DENY, 99, [10, 9, 9, 9], [10, 9, 9, 8], 17, 53),
            &n,
            "t".into(),
        )
        .unwrap();
        assert_eq!(
            (r.src.app, r.dst.app, r.proto.as_str()),
            (None, None, "udp")
        );
    }

    #[test]
    fn the_bucket_holds_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, t0);
        let burst = (0..100).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 20, "the burst is twice the rate");
        // One second later: ten more, not more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| b.take(t1)).count(), 10);
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(t2)).count(), 20);
    }

    #[test]
    fn metrics_count_what_the_kernel_limit_left_out() {
        let s = Stats::default();
        s.limited.store(3, Ordering::Relaxed);
        // The table as the kernel lists it: the deny log rule let 40 through, default deny
        // dropped 100.
        let mut t = crate::policy::table(&layout(true, Some(rules(false))));
        for r in t.chains.iter_mut().flat_map(|c| c.rules.iter_mut()) {
            let packets = match r.comment.as_deref() {
                Some(COMMENT_DENY) => 40,
                Some(crate::policy::drops::DEFAULT_DENY) => 100,
                _ => continue,
            };
            r.counted = Some(weft_kernel::nft::Counter { packets, bytes: 1 });
        }
        let m = render_metrics(&s, Some(&t));
        assert!(render_metrics(&s, None).contains("weft_audit_dropped_total{stage=\"kernel\"} 0\n"));
        assert!(
            m.contains("weft_audit_dropped_total{stage=\"kernel\"} 60\n"),
            "{m}"
        );
        assert!(m.contains("weft_audit_dropped_total{stage=\"reader\"} 3\n"));
    }
}
