//! The test bed: the namespace plumbing of a simulated data centre, written once for `weft
//! lab` (which keeps what it builds until `weft lab down`) and the integration tests (which
//! remove it when their guard drops, also on panic).
//!
//! - [`add_namespace`]: a named network namespace with `lo` up (`/run/netns/NAME`);
//! - [`Underlay`]: the data centre's switch, a bridge with a fixed MAC address holding the
//!   gateway address, in its own namespace, which forwards;
//! - [`Uplink`]: a veth from one namespace to another (`eth0` there) with addresses and a
//!   default route: a cell on the underlay bridge, or the internet behind the underlay;
//! - [`sysctl_in`]: a sysctl inside a namespace;
//! - [`bench`]: Ctrl-C that cleans up, and percentiles, for the benches.
//!
//! Everything talks netlink through weft-kernel, on a thread of its own (so a caller inside
//! an async runtime may call it), and touches only the namespaces it is given: never the
//! machine's own.

pub mod bench;

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use ipnet::{IpNet, Ipv4Net};
use weft_kernel::netns::{self, Netns};
use weft_kernel::route::Route;
use weft_kernel::{MacAddr, Netlink};

/// Runs `f` (netlink work) on a thread of its own with a runtime of its own.
fn on_thread<T: Send, F: std::future::Future<Output = Result<T>>>(
    f: impl FnOnce() -> F + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(f())
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the netlink thread panicked")))
    })
}

/// The host ends of weft's veth pairs (`weft` and 10 hex digits) in the output of
/// `ip -o link show`, as the tests look for leftovers.
pub fn weft_host_links(ip_o_link_show: &str) -> Vec<String> {
    ip_o_link_show
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or("").to_string())
        .filter(|n| n.starts_with("weft") && n.len() == 14)
        .collect()
}

pub fn netlink_in(ns: &str) -> Result<Netlink> {
    let n = Netns::open(netns::named_path(ns)).with_context(|| format!("namespace {ns}"))?;
    Ok(Netlink::in_netns(&n)?)
}

/// A named network namespace with `lo` up, as `weft netns add` and `ip netns add` make it;
/// nothing is left when bringing `lo` up fails.
pub fn add_namespace(name: &str) -> Result<Netns> {
    let ns = netns::add_named(name).with_context(|| format!("create namespace {name}"))?;
    let up = on_thread(|| async {
        Netlink::in_netns(&ns)?.set_up_by_name("lo").await?;
        Ok(())
    });
    if let Err(e) = up {
        let _ = netns::del_named(name);
        return Err(e.context(format!("bringing up lo in {name}")));
    }
    Ok(ns)
}

/// Sets `key` to `value` inside namespace `ns`.
pub fn sysctl_in(ns: &str, key: &str, value: &str) -> Result<()> {
    let (k, v) = (key.to_string(), value.to_string());
    Netns::named(ns)?.run(move || weft_kernel::sysctl::set(&k, &v))??;
    Ok(())
}

/// The underlay: a bridge in namespace `ns` holding the gateway address, forwarding on.
pub struct Underlay<'a> {
    pub ns: &'a str,
    pub bridge: &'a str,
    /// A fixed address: a bridge without one takes its lowest port's, so the gateway's
    /// address would change as cells join and cut off the cells that resolved it before
    /// (their packets to the controller dropped until they resolve it again).
    pub mac: MacAddr,
    /// The gateway's address and the underlay's prefix length.
    pub gateway: Ipv4Net,
    /// Switch off br_netfilter's hooks for this namespace's bridge (when the module is
    /// loaded): the underlay stands for the data centre's switches, which run no host's
    /// firewall, so a benchmark does not bill the switch's work to the overlay.
    pub bridge_netfilter_off: bool,
}

impl Underlay<'_> {
    /// Makes the bridge (in an existing namespace).
    pub fn build(&self) -> Result<()> {
        on_thread(|| async {
            let n = netlink_in(self.ns)?;
            let br = n.ensure_bridge(self.bridge, None, Some(self.mac)).await?;
            n.add_address(br.index, IpNet::V4(self.gateway)).await?;
            Ok(())
        })?;
        sysctl_in(self.ns, "net.ipv4.ip_forward", "1")?;
        if self.bridge_netfilter_off {
            for k in ["iptables", "ip6tables", "arptables"] {
                // Absent when br_netfilter is not loaded: nothing to switch off then.
                let _ = sysctl_in(self.ns, &format!("net.bridge.bridge-nf-call-{k}"), "0");
            }
        }
        Ok(())
    }
}

/// A veth from namespace `upper_ns` (`upper_if`, on bridge `upper_master` or with address
/// `upper_addr`) to `eth0` in `lower_ns`, which gets `lower_addr` and a default route via
/// `lower_gateway`: `ip link add UP type veth peer name eth0 netns LOWER; addresses; up;
/// default route`.
pub struct Uplink<'a> {
    pub upper_ns: &'a str,
    pub upper_if: &'a str,
    pub upper_master: Option<&'a str>,
    pub upper_addr: Option<Ipv4Net>,
    pub lower_ns: &'a str,
    pub lower_addr: Ipv4Net,
    pub lower_gateway: Ipv4Addr,
}

impl Uplink<'_> {
    pub fn build(&self) -> Result<()> {
        on_thread(|| self.link())
    }

    async fn link(&self) -> Result<()> {
        let (upper_ns, upper_if, lower_ns) = (self.upper_ns, self.upper_if, self.lower_ns);
        let up = netlink_in(upper_ns)?;
        let lower = Netns::open(netns::named_path(lower_ns))
            .with_context(|| format!("namespace {lower_ns}"))?;
        let master = match self.upper_master {
            Some(m) => Some(
                up.link_by_name(m)
                    .await?
                    .with_context(|| format!("{m} missing in {upper_ns}"))?
                    .index,
            ),
            None => None,
        };
        let local = weft_kernel::link::VethEnd {
            master,
            up: true,
            ..weft_kernel::link::VethEnd::new(upper_if)
        };
        let peer = weft_kernel::link::VethEnd::new("eth0");
        up.add_veth(&local, &peer, &lower).await?;
        if let Some(a) = self.upper_addr {
            let l = up
                .link_by_name(upper_if)
                .await?
                .with_context(|| format!("{upper_if} missing in {upper_ns}"))?;
            up.add_address(l.index, IpNet::V4(a)).await?;
        }
        let low = Netlink::in_netns(&lower)?;
        let eth0 = low
            .link_by_name("eth0")
            .await?
            .with_context(|| format!("eth0 missing in {lower_ns}"))?;
        low.add_address(eth0.index, IpNet::V4(self.lower_addr))
            .await?;
        low.set_up(eth0.index).await?;
        low.replace_route(&Route {
            dst: "0.0.0.0/0".parse()?,
            gateway: Some(self.lower_gateway.into()),
            oif: Some(eth0.index),
            link_scope: false,
        })
        .await?;
        Ok(())
    }
}

/// The command line of a test bed's controller: TLS with the test bed's server certificate,
/// agents' client certificates checked against `client_ca`, leases of `overlay_cidr` as
/// `/host_prefix` per cell, state kept in `state_dir`. Callers append their own flags.
pub struct ControllerCmd<'a> {
    pub weft: &'a str,
    pub cert: &'a std::path::Path,
    pub key: &'a std::path::Path,
    pub client_ca: &'a std::path::Path,
    pub listen: String,
    pub state_dir: &'a std::path::Path,
    pub overlay_cidr: String,
    pub host_prefix: u8,
}

impl ControllerCmd<'_> {
    pub fn argv(&self) -> Vec<String> {
        let path = |p: &std::path::Path| p.display().to_string();
        vec![
            self.weft.to_string(),
            "controller".into(),
            "--tls-cert".into(),
            path(self.cert),
            "--tls-key".into(),
            path(self.key),
            "--client-ca".into(),
            path(self.client_ca),
            "--listen".into(),
            self.listen.clone(),
            "--state-dir".into(),
            path(self.state_dir),
            "--overlay-cidr".into(),
            self.overlay_cidr.clone(),
            "--host-prefix".into(),
            self.host_prefix.to_string(),
        ]
    }
}
