//! The `apps.internal` zone (pure): which instances a name stands for.
//!
//! - `APP.apps.internal` → an A record per running instance of APP (every host);
//! - `INDEX.APP.apps.internal` → the instance with that index;
//! - any other name under `apps.internal`, or an app with no instance → NXDOMAIN;
//! - a name outside the zone → forwarded to the host's resolvers.
//!
//! Names are compared case-insensitively, with or without the final dot.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The zone's suffix.
pub const ZONE: &str = "apps.internal";

/// One running instance, as the controller's placement reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    pub app: String,
    pub index: u32,
    pub ip: Ipv4Addr,
}

/// The zone's instances from the controller's placement. An instance reported without an
/// index gets one: per app, in (host, container id) order, the lowest index no other
/// instance of the app holds (stable while the app's instances stay; CF's INSTANCE_INDEX
/// wins where the runtime reports it).
pub fn from_placement<'a>(
    instances: impl IntoIterator<Item = &'a weft_api::model::Instance>,
) -> Vec<Instance> {
    let mut by_app: BTreeMap<&str, Vec<&weft_api::model::Instance>> = BTreeMap::new();
    for i in instances {
        by_app.entry(i.app.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    for (app, mut list) in by_app {
        list.sort_by(|a, b| (&a.host, &a.id).cmp(&(&b.host, &b.id)));
        let taken: std::collections::BTreeSet<u32> = list.iter().filter_map(|i| i.index).collect();
        let mut free = (0u32..).filter(|n| !taken.contains(n));
        for i in list {
            let index = match i.index {
                Some(n) => n,
                None => free.next().unwrap_or(u32::MAX),
            };
            out.push(Instance {
                app: app.to_string(),
                index,
                ip: i.ip,
            });
        }
    }
    out
}

/// What a name gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// In the zone and known: these addresses (for A queries; other types get none).
    Addresses(Vec<Ipv4Addr>),
    /// In the zone, unknown.
    NxDomain,
    /// Outside the zone.
    Forward,
}

/// app → index → addresses (an index held by two instances during a move gives both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    apps: BTreeMap<String, BTreeMap<u32, Vec<Ipv4Addr>>>,
}

impl Zone {
    pub fn new(instances: impl IntoIterator<Item = Instance>) -> Zone {
        let mut apps: BTreeMap<String, BTreeMap<u32, Vec<Ipv4Addr>>> = BTreeMap::new();
        for i in instances {
            let ips = apps
                .entry(i.app.to_ascii_lowercase())
                .or_default()
                .entry(i.index)
                .or_default();
            if !ips.contains(&i.ip) {
                ips.push(i.ip);
                ips.sort();
            }
        }
        Zone { apps }
    }

    /// How many addresses the zone holds.
    pub fn len(&self) -> usize {
        self.apps
            .values()
            .flat_map(|m| m.values())
            .map(Vec::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn lookup(&self, name: &str) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(rest) = name
            .strip_suffix(ZONE)
            .filter(|r| r.is_empty() || r.ends_with('.'))
        else {
            return Answer::Forward;
        };
        let labels: Vec<&str> = rest.trim_end_matches('.').split('.').collect();
        let found = match labels.as_slice() {
            [app] if !app.is_empty() => self
                .apps
                .get(*app)
                .map(|m| {
                    let mut v: Vec<Ipv4Addr> = m.values().flatten().copied().collect();
                    v.sort();
                    v.dedup();
                    v
                })
                .filter(|v| !v.is_empty()),
            [index, app] => index
                .parse::<u32>()
                .ok()
                .filter(|_| index.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|i| self.apps.get(*app)?.get(&i).cloned())
                .filter(|v| !v.is_empty()),
            _ => None,
        };
        found.map_or(Answer::NxDomain, Answer::Addresses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(app: &str, index: u32, ip: &str) -> Instance {
        Instance {
            app: app.into(),
            index,
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn placement_without_indexes_gets_the_free_ones_in_order() {
        let api = |host: &str, id: &str, app: &str, index: Option<u32>, ip: &str| {
            weft_api::model::Instance {
                host: host.into(),
                id: id.into(),
                app: app.into(),
                index,
                ip: ip.parse().unwrap(),
            }
        };
        let list = [
            api("cell2", "c", "web", None, "10.255.2.2"),
            api("cell1", "b", "web", Some(0), "10.255.1.2"),
            api("cell1", "a", "web", None, "10.255.1.3"),
            api("cell1", "d", "db", None, "10.255.1.4"),
        ];
        let got = from_placement(&list);
        let z = Zone::new(got);
        let one = |n: &str| match z.lookup(n) {
            Answer::Addresses(v) => v.iter().map(ToString::to_string).collect::<Vec<_>>(),
            other => panic!("{n}: {other:?}"),
        };
        assert_eq!(one("0.web.apps.internal"), ["10.255.1.2"]);
        assert_eq!(one("1.web.apps.internal"), ["10.255.1.3"]);
        assert_eq!(one("2.web.apps.internal"), ["10.255.2.2"]);
        assert_eq!(one("0.db.apps.internal"), ["10.255.1.4"]);
        assert_eq!(one("web.apps.internal").len(), 3);
    }

    #[test]
    fn apps_indexes_unknown_names_and_the_rest() {
        let z = Zone::new([
            inst("web", 0, "10.255.1.2"),
            inst("web", 1, "10.255.2.7"),
            inst("db", 0, "10.255.1.3"),
        ]);
        let ips = |v: &[&str]| Answer::Addresses(v.iter().map(|s| s.parse().unwrap()).collect());
        assert_eq!(
            z.lookup("web.apps.internal"),
            ips(&["10.255.1.2", "10.255.2.7"])
        );
        assert_eq!(
            z.lookup("WEB.Apps.Internal."),
            ips(&["10.255.1.2", "10.255.2.7"])
        );
        assert_eq!(z.lookup("1.web.apps.internal"), ips(&["10.255.2.7"]));
        assert_eq!(z.lookup("0.db.apps.internal."), ips(&["10.255.1.3"]));
        for nx in [
            "api.apps.internal",
            "2.web.apps.internal",
            "+1.web.apps.internal",
            "x.web.apps.internal",
            "a.b.web.apps.internal",
            "apps.internal",
            ".apps.internal",
        ] {
            assert_eq!(z.lookup(nx), Answer::NxDomain, "{nx}");
        }
        for fwd in [
            "example.com",
            "xapps.internal",
            "internal",
            "apps.internal.example.",
        ] {
            assert_eq!(z.lookup(fwd), Answer::Forward, "{fwd}");
        }
        assert_eq!(z.len(), 3);
        assert_eq!(Zone::new([]).lookup("web.apps.internal"), Answer::NxDomain);
    }
}
