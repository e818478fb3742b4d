//! The agent's Prometheus metrics: packets allowed per policy element and denied per app pair
//! (read from the policy table's counters at scrape time), packets dropped per reason (every
//! dropping rule of the table: default deny, spoofed sources, forged or misdirected VXLAN,
//! traffic from outside the overlay), and a few gauges. The per-pair deny counts come from a
//! bounded set whose elements time out: they say who was denied lately; the
//! `reason="default deny"` counter counts every denied packet. Served on `--metrics-listen` with a
//! deliberately tiny HTTP/1 responder (GET /metrics only).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_api::client::{Reconnect, WatchStats};
use weft_kernel::nft::{Table, Value};

/// What the agent knows to give names to the kernel's numbers.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// tag -> app id
    pub apps_by_tag: BTreeMap<u16, String>,
    /// local container ip -> app id
    pub app_of_ip: BTreeMap<Ipv4Addr, String>,
    pub remote_cells: usize,
    pub policies: usize,
    /// The fast path's counters (a map of the loaded programs), when it runs.
    pub fastpath: Option<weft_kernel::bpf::Map>,
    /// When the agent's client certificate expires (unix seconds), when it has one.
    pub cert_not_after: Option<i64>,
    /// What the watch of the controller has been through.
    pub watch: Option<Arc<WatchStats>>,
    /// Policy (and fence) transactions that failed (each retried with backoff).
    pub policy_apply_failures: Arc<AtomicU64>,
    /// The audit log's counters, when it runs.
    pub audit: Option<Arc<crate::audit::Stats>>,
    /// The DNS server's counters, when it runs.
    pub dns: Option<Arc<crate::dns::Stats>>,
}

/// One counted element of the policy table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub tag: u16,
    pub dst: Ipv4Addr,
    /// "tcp"/"udp" and port range for allow_ports, "icmp" for allow_icmp, empty for denied.
    pub protocol: String,
    pub ports: String,
    pub packets: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub allowed: Vec<Counted>,
    pub denied: Vec<Counted>,
    /// Packets dropped per rule (its comment, see `policy::drops`).
    pub dropped: BTreeMap<&'static str, u64>,
}

/// The counted elements of set or map `name`: `tag . ip [. proto . ports]` keys.
fn counted(
    table: &Table,
    name: &str,
    protocol: impl Fn(&[Value]) -> Option<(String, String)>,
) -> Vec<Counted> {
    table
        .elements(name)
        .iter()
        .filter_map(|e| {
            let parts = e.key.parts();
            let tag = u16::try_from(parts.first()?.as_int()?).ok()?;
            let dst = match parts.get(1)?.as_ip()? {
                std::net::IpAddr::V4(v4) => v4,
                std::net::IpAddr::V6(_) => return None,
            };
            let (protocol, ports) = protocol(parts)?;
            Some(Counted {
                tag,
                dst,
                protocol,
                ports,
                packets: e.counter.map_or(0, |c| c.packets),
            })
        })
        .collect()
}

/// `8080` or `9000-9010`, as nft lists a port interval.
fn ports_text(v: &Value) -> Option<String> {
    let (lo, hi) = v.as_int_range()?;
    Some(if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    })
}

/// Pure: the counters of the policy table as the kernel lists it (typed readers: element
/// and rule counters, never listing text).
pub fn parse(table: &Table) -> Counters {
    use crate::policy::sets::{ALLOW_ICMP, ALLOW_PORTS, DENIED};
    let mut allowed = counted(table, ALLOW_PORTS, |p| {
        Some((p.get(2)?.as_str()?.to_string(), ports_text(p.get(3)?)?))
    });
    allowed.extend(counted(table, ALLOW_ICMP, |_| {
        Some(("icmp".to_string(), String::new()))
    }));
    let mut c = Counters {
        allowed,
        denied: counted(table, DENIED, |_| Some((String::new(), String::new()))),
        dropped: BTreeMap::new(),
    };
    for reason in crate::policy::drops::ALL {
        c.dropped.insert(
            reason,
            table.counter_of_rule(reason).map_or(0, |n| n.packets),
        );
    }
    c
}

/// Pure: the exposition text.
pub fn render(c: &Counters, v: &View) -> String {
    let app = |tag: u16| {
        v.apps_by_tag
            .get(&tag)
            .cloned()
            .unwrap_or_else(|| format!("tag:{tag}"))
    };
    let dst_app = |ip: &Ipv4Addr| v.app_of_ip.get(ip).cloned().unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "# HELP weft_policy_allowed_packets_total Packets of new connections a policy allowed, per policy element.");
    let _ = writeln!(s, "# TYPE weft_policy_allowed_packets_total counter");
    for e in &c.allowed {
        let _ = writeln!(
            s,
            "weft_policy_allowed_packets_total{{src_app=\"{}\",dst_app=\"{}\",dst_ip=\"{}\",protocol=\"{}\",ports=\"{}\"}} {}",
            app(e.tag),
            dst_app(&e.dst),
            e.dst,
            e.protocol,
            e.ports,
            e.packets
        );
    }
    let _ = writeln!(s, "# HELP weft_policy_denied_packets_total Packets default deny dropped, per source app and destination.");
    let _ = writeln!(s, "# TYPE weft_policy_denied_packets_total counter");
    for e in &c.denied {
        let _ = writeln!(
            s,
            "weft_policy_denied_packets_total{{src_app=\"{}\",dst_app=\"{}\",dst_ip=\"{}\"}} {}",
            app(e.tag),
            dst_app(&e.dst),
            e.dst,
            e.packets
        );
    }
    let _ = writeln!(
        s,
        "# HELP weft_dropped_packets_total Packets the policy table dropped, per rule (reason)."
    );
    let _ = writeln!(s, "# TYPE weft_dropped_packets_total counter");
    for (reason, n) in &c.dropped {
        let _ = writeln!(s, "weft_dropped_packets_total{{reason=\"{reason}\"}} {n}");
    }
    let dropped = |r: &str| c.dropped.get(r).copied().unwrap_or(0);
    use crate::policy::drops;
    let _ = writeln!(s, "# TYPE weft_spoofed_packets_dropped_total counter");
    let _ = writeln!(
        s,
        "weft_spoofed_packets_dropped_total {}",
        dropped(drops::SPOOFED)
    );
    let _ = writeln!(s, "# TYPE weft_vxlan_unleased_dropped_total counter");
    let _ = writeln!(
        s,
        "weft_vxlan_unleased_dropped_total {}",
        dropped(drops::VXLAN_UNLEASED)
    );
    let _ = writeln!(
        s,
        "# HELP weft_policy_apply_failures_total Policy table transactions that failed (the kernel kept its table; retried with backoff).\n\
         # TYPE weft_policy_apply_failures_total counter\nweft_policy_apply_failures_total {}",
        v.policy_apply_failures.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        s,
        "# TYPE weft_agent_remote_cells gauge\nweft_agent_remote_cells {}",
        v.remote_cells
    );
    let _ = writeln!(
        s,
        "# TYPE weft_agent_local_containers gauge\nweft_agent_local_containers {}",
        v.app_of_ip.len()
    );
    let _ = writeln!(
        s,
        "# TYPE weft_agent_policies gauge\nweft_agent_policies {}",
        v.policies
    );
    if let Some(not_after) = v.cert_not_after {
        let _ = writeln!(
            s,
            "# HELP weft_agent_certificate_expiry_seconds Seconds until the agent's client certificate expires (negative: expired).\n\
             # TYPE weft_agent_certificate_expiry_seconds gauge\nweft_agent_certificate_expiry_seconds {}",
            not_after - crate::agent::unix_now()
        );
    }
    s
}

async fn scrape(view: &Arc<Mutex<View>>) -> String {
    let table = tokio::task::spawn_blocking(|| {
        weft_kernel::nft::Nft::new()
            .and_then(|mut n| n.list_table(crate::policy::FAMILY, crate::policy::TABLE))
    })
    .await
    .ok()
    .and_then(|r| r.ok())
    .flatten();
    let v = view.lock().map(|v| v.clone()).unwrap_or_default();
    let counters = table.as_ref().map(parse).unwrap_or_default();
    let mut s = render(&counters, &v);
    let stats = v
        .fastpath
        .as_ref()
        .and_then(|m| crate::fastpath::read_stats(m).ok());
    s += &render_fastpath(stats);
    if let Some(w) = &v.watch {
        s += &render_watch(w);
    }
    if let Some(a) = &v.audit {
        s += &crate::audit::render_metrics(a, table.as_ref());
    }
    if let Some(d) = &v.dns {
        s += &d.render();
    }
    s
}

/// The watch's counters: reconnects by reason, resumes without a snapshot, snapshots.
pub fn render_watch(w: &WatchStats) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# HELP weft_agent_watch_reconnects_total Times the watch of the controller was made again, by reason (silence: no heartbeat within the deadline).");
    let _ = writeln!(s, "# TYPE weft_agent_watch_reconnects_total counter");
    for r in Reconnect::ALL {
        let _ = writeln!(
            s,
            "weft_agent_watch_reconnects_total{{reason=\"{}\"}} {}",
            r.as_str(),
            w.reconnects(r)
        );
    }
    let counters = [
        (
            "weft_agent_watch_streams_total",
            "Watch streams the controller answered.",
            &w.streams,
        ),
        (
            "weft_agent_watch_resumes_total",
            "Watch streams that resumed after the last revision, without a snapshot.",
            &w.resumed,
        ),
        (
            "weft_agent_watch_snapshots_total",
            "Snapshots the watch received.",
            &w.snapshots,
        ),
        (
            "weft_agent_watch_skipped_total",
            "Watch lines of a kind this version does not know, skipped.",
            &w.skipped,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        s,
        "# HELP weft_agent_watch_deadline_seconds Silence after which the watch takes the controller for lost.\n# TYPE weft_agent_watch_deadline_seconds gauge\nweft_agent_watch_deadline_seconds {}",
        w.deadline_ms.load(Ordering::Relaxed) as f64 / 1000.0
    );
    s
}

/// The fast path's counters (`weft_fastpath_enabled 0` when it does not run).
pub fn render_fastpath(stats: Option<crate::fastpath::Stats>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# TYPE weft_fastpath_enabled gauge\nweft_fastpath_enabled {}",
        u8::from(stats.is_some())
    );
    if let Some(st) = stats {
        let _ = writeln!(s, "# HELP weft_fastpath_packets_total Packets of established connections the BPF fast path encapsulated (tx) or delivered (rx).");
        let _ = writeln!(s, "# TYPE weft_fastpath_packets_total counter");
        let _ = writeln!(
            s,
            "weft_fastpath_packets_total{{direction=\"tx\"}} {}",
            st.tx_packets
        );
        let _ = writeln!(
            s,
            "weft_fastpath_packets_total{{direction=\"rx\"}} {}",
            st.rx_packets
        );
        let _ = writeln!(s, "# TYPE weft_fastpath_bytes_total counter");
        let _ = writeln!(
            s,
            "weft_fastpath_bytes_total{{direction=\"tx\"}} {}",
            st.tx_bytes
        );
        let _ = writeln!(
            s,
            "weft_fastpath_bytes_total{{direction=\"rx\"}} {}",
            st.rx_bytes
        );
    }
    s
}

/// Serves GET /metrics until the task is dropped.
pub async fn serve(addr: SocketAddr, view: Arc<Mutex<View>>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics");
    loop {
        let (mut sock, _) = listener.accept().await?;
        let view = view.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < buf.len() {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /metrics") {
                ("200 OK", scrape(&view).await)
            } else {
                ("404 Not Found", "only GET /metrics here\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::policy::{drops, sets, Layout};
    use weft_kernel::nft::{Counter, Element, Verdict};

    /// The policy table as `Nft::list_table` gives it back: elements and rules with their
    /// counters.
    fn listed() -> Table {
        let mut t = crate::policy::table(&Layout::test(true, None));
        let counted = |key: Vec<Value>, value: Option<Value>, packets: u64| {
            let mut e = Element::key(Value::concat(key));
            e.value = value;
            e.counter = Some(Counter {
                packets,
                bytes: packets * 60,
            });
            e
        };
        let ip = || Value::literal("10.255.1.1");
        let tcp = || Value::literal("tcp");
        for set in &mut t.sets {
            match set.name.as_str() {
                sets::ALLOW_PORTS => {
                    set.elements = vec![
                        counted(
                            vec![Value::Int(1), ip(), tcp(), Value::Int(8080)],
                            Some(Verdict::Accept.into()),
                            3,
                        ),
                        counted(
                            vec![
                                Value::Int(1),
                                ip(),
                                tcp(),
                                Value::range(Value::Int(9000), Value::Int(9010)),
                            ],
                            Some(Verdict::Accept.into()),
                            0,
                        ),
                    ]
                }
                // A mark as the text listing prints it is the same number.
                sets::DENIED => {
                    set.elements = vec![counted(vec![Value::literal("0x00000003"), ip()], None, 2)]
                }
                _ => {}
            }
        }
        for chain in &mut t.chains {
            for rule in &mut chain.rules {
                rule.counted = match rule.comment.as_deref() {
                    Some(drops::SPOOFED) => Some(Counter {
                        packets: 7,
                        bytes: 420,
                    }),
                    Some(drops::DEFAULT_DENY) => Some(Counter {
                        packets: 11,
                        bytes: 660,
                    }),
                    Some(_) if rule.counter => Some(Counter::default()),
                    _ => None,
                };
            }
        }
        t
    }

    #[test]
    fn certificate_expiry_is_a_gauge_in_seconds() {
        let v = View {
            cert_not_after: Some(crate::agent::unix_now() + 86_400),
            ..View::default()
        };
        let text = render(&Counters::default(), &v);
        let line = text
            .lines()
            .find(|l| l.starts_with("weft_agent_certificate_expiry_seconds "))
            .expect("gauge");
        let secs: i64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((86_300..=86_400).contains(&secs), "{line}");
        assert!(!render(&Counters::default(), &View::default())
            .contains("weft_agent_certificate_expiry_seconds"));
    }

    #[test]
    fn parses_counters() {
        let c = parse(&listed());
        assert_eq!(c.allowed.len(), 2);
        assert_eq!(c.allowed[0].packets, 3);
        assert_eq!(c.allowed[1].ports, "9000-9010");
        assert_eq!(
            c.denied,
            vec![Counted {
                tag: 3,
                dst: "10.255.1.1".parse().unwrap(),
                protocol: String::new(),
                ports: String::new(),
                packets: 2
            }]
        );
        assert_eq!(c.dropped["spoofed source"], 7);
        assert_eq!(c.dropped["default deny"], 11);
        assert_eq!(c.dropped["vxlan from an address without a lease"], 0);
    }

    #[test]
    fn renders_with_app_names() {
        let mut v = View::default();
        v.apps_by_tag.insert(1, "app-b".into());
        v.app_of_ip
            .insert("10.255.1.1".parse().unwrap(), "app-a".into());
        let s = render(&parse(&listed()), &v);
        assert!(s.contains("weft_policy_allowed_packets_total{src_app=\"app-b\",dst_app=\"app-a\",dst_ip=\"10.255.1.1\",protocol=\"tcp\",ports=\"8080\"} 3"));
        assert!(s.contains("weft_policy_denied_packets_total{src_app=\"tag:3\",dst_app=\"app-a\",dst_ip=\"10.255.1.1\"} 2"));
        assert!(s.contains("weft_spoofed_packets_dropped_total 7"));
        assert!(s.contains("weft_dropped_packets_total{reason=\"default deny\"} 11"));
        assert!(s.contains("weft_dropped_packets_total{reason=\"to a VXLAN port\"} 0"));
        assert!(s.contains("weft_policy_apply_failures_total 0"));
        v.policy_apply_failures.fetch_add(2, Ordering::Relaxed);
        let s = render(&parse(&listed()), &v);
        assert!(s.contains("weft_policy_apply_failures_total 2"));
    }
}
