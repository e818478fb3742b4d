//! Internal DNS (issue 18 item 2): every agent answers DNS at [`ADDRESS`]:53 (CF's
//! 169.254.0.2), reachable from every container on its host.
//!
//! - [`zone`]: `APP.apps.internal` / `INDEX.APP.apps.internal` → instances (pure)
//! - [`server`]: the hickory-server request handler; other names go to the host's resolvers
//!   (`nameserver` lines of `--dns-resolv-conf`), REFUSED when there are none
//!
//! The address lives on a link weft owns in the host's namespace, [`LINK`] (a bridge without
//! ports: the kernel has no dummy device here), as a /32: containers reach it through their
//! default route (overlay: via 169.254.0.1, the host end of their veth; bridge mode: via the
//! bridge), so it is a host service. The policy table lets containers reach only port 53 on
//! it (see `policy`), and the server binds that address alone. Answers are not access: the
//! policy still decides what a container may reach at the addresses it learns.

pub mod server;
pub mod zone;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use ipnet::{IpNet, Ipv4Net};
use weft_kernel::Netlink;

pub use server::Stats;
pub use zone::{Instance, Zone};

/// The address every agent answers DNS on (Cloud Foundry's).
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);
/// The link in the host's namespace that holds [`ADDRESS`].
pub const LINK: &str = "weft.dns";
/// How long a TCP client may stay idle.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Pure: the resolvers of a resolv.conf (port 53), without our own address.
pub fn resolvers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = w.next()?.split('%').next()?.parse().ok()?;
            (ip != IpAddr::V4(ADDRESS)).then_some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The running server's zone and counters.
#[derive(Debug, Clone)]
pub struct Dns {
    zone: Arc<RwLock<Zone>>,
    pub stats: Arc<Stats>,
}

impl Dns {
    /// Puts [`ADDRESS`] on [`LINK`] (both made if missing), binds UDP and TCP port 53 on
    /// it and serves. `resolv_conf` names the resolvers other names go to (a missing file:
    /// none, REFUSED).
    pub async fn start(nl: &Netlink, resolv_conf: &Path) -> Result<Dns> {
        let link = nl
            .ensure_bridge(LINK, None, None)
            .await
            .with_context(|| format!("dns: link {LINK}"))?;
        let net = IpNet::V4(Ipv4Net::new(ADDRESS, 32).expect("/32"));
        nl.add_address(link.index, net)
            .await
            .with_context(|| format!("dns: address {ADDRESS} on {LINK}"))?;
        let upstreams = std::fs::read_to_string(resolv_conf)
            .map(|t| resolvers(&t))
            .unwrap_or_default();
        let at = SocketAddr::from((ADDRESS, 53));
        let udp = tokio::net::UdpSocket::bind(at)
            .await
            .with_context(|| format!("dns: bind udp {at}"))?;
        let tcp = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("dns: bind tcp {at}"))?;
        let dns = Dns {
            zone: Default::default(),
            stats: Default::default(),
        };
        let handler = server::Handler {
            zone: dns.zone.clone(),
            upstreams: Arc::new(upstreams.clone()),
            stats: dns.stats.clone(),
        };
        let mut srv = hickory_server::Server::new(handler);
        srv.register_socket(udp);
        srv.register_listener(tcp, TCP_TIMEOUT, 64 * 1024);
        tokio::spawn(async move {
            if let Err(e) = srv.block_until_done().await {
                tracing::warn!(error = %e, "dns server stopped");
            }
        });
        tracing::info!(address = %at, upstreams = ?upstreams, "dns: serving apps.internal");
        Ok(dns)
    }

    /// Takes these instances as the zone (when they differ from it).
    pub fn update(&self, instances: impl IntoIterator<Item = Instance>) {
        let z = Zone::new(instances);
        if let Ok(mut cur) = self.zone.write() {
            if *cur != z {
                tracing::debug!(addresses = z.len(), "dns: zone updated");
                *cur = z;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_but_ours() {
        let t = "# c\nsearch x\nnameserver 192.0.2.53\nnameserver 169.254.0.2\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:2\n";
        assert_eq!(
            resolvers(t),
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert!(resolvers("").is_empty());
    }
}
