//! What a cell's VTEP knows of the others (routes, neighbours, FDB entries), read with `ip -j`.

use super::*;

/// What the other cells need to reach one cell: route, neighbour, FDB entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub subnet: String,
    pub vtep_ip: String,
    pub mac: String,
    pub underlay: String,
}

/// A cell's VTEP entries: routes `(dst, gateway)`, neighbours `(ip, lladdr, state)`, FDB
/// entries `(mac, dst)`.
#[derive(Debug, Clone, Default)]
pub struct VtepView {
    pub routes: Vec<(String, String)>,
    pub neighbours: Vec<(String, String, String)>,
    pub fdb: Vec<(String, String)>,
}

fn json_list(ns: &Ns, cmd: &str) -> Vec<Value> {
    let out = ns.sh(cmd);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl VtepView {
    pub fn read(ns: &Ns) -> VtepView {
        VtepView {
            routes: json_list(ns, &format!("ip -j route show dev {VTEP}"))
                .iter()
                .filter(|r| r.get("gateway").is_some())
                .map(|r| (s(&r["dst"]), s(&r["gateway"])))
                .collect(),
            neighbours: json_list(ns, &format!("ip -j neigh show dev {VTEP}"))
                .iter()
                .map(|n| (s(&n["dst"]), s(&n["lladdr"]), s(&n["state"])))
                .collect(),
            fdb: json_list(ns, &format!("bridge -j fdb show dev {VTEP}"))
                .iter()
                .map(|f| (s(&f["mac"]), s(&f["dst"])))
                .collect(),
        }
    }

    /// All three entries for `r` are there (the neighbour permanent).
    pub fn knows(&self, r: &Remote) -> bool {
        self.routes
            .iter()
            .any(|(d, g)| *d == r.subnet && *g == r.vtep_ip)
            && self
                .neighbours
                .iter()
                .any(|(ip, mac, st)| *ip == r.vtep_ip && *mac == r.mac && st.contains("PERMANENT"))
            && self
                .fdb
                .iter()
                .any(|(mac, dst)| *mac == r.mac && *dst == r.underlay)
    }

    /// Neither route nor neighbour entry for `r` is left (the FDB is not looked at).
    pub fn unrouted(&self, r: &Remote) -> bool {
        !self
            .routes
            .iter()
            .any(|(d, g)| *d == r.subnet || *g == r.vtep_ip)
            && !self
                .neighbours
                .iter()
                .any(|(ip, mac, _)| *ip == r.vtep_ip || *mac == r.mac)
    }

    /// None of the three entries for `r` is left.
    pub fn forgot(&self, r: &Remote) -> bool {
        self.unrouted(r)
            && !self
                .fdb
                .iter()
                .any(|(mac, dst)| *mac == r.mac || *dst == r.underlay)
    }
}

/// The packet counter of the rule commented `comment` in `chain` of the policy table in `ns`
/// (the kernel's table, read with weft-kernel's typed reader); None when there is no such
/// rule or it does not count.
pub fn policy_counter(ns: &Ns, chain: &str, comment: &str) -> Option<u64> {
    weft_kernel::netns::in_netns(ns.path(), || {
        let t = weft_kernel::nft::Nft::new()
            .ok()?
            .list_table(weft_kernel::nft::Family::Inet, "weft-policy")
            .ok()??;
        let rule = t
            .chain(chain)?
            .rules
            .iter()
            .find(|r| r.comment.as_deref() == Some(comment))?;
        rule.counted.map(|c| c.packets)
    })
    .ok()
    .flatten()
}
