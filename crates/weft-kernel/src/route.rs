//! Routes (main table).
//!
//! Invariant: [`Netlink::replace_route`] is idempotent (the same route again changes
//! nothing; a route to the same destination with another gateway takes the old one's
//! place), deleting what is gone is `Ok(false)`, and every request is bounded in time.
//! Kernel objects owned: routes of the main table (254), IPv4 and IPv6; readers see the
//! destination, gateway, output link and scope.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{IpVersion, RouteMessageBuilder};

use crate::{Error, Netlink, Result};

/// A route as weft plans and reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// Link scope (a directly connected destination without gateway).
    pub link_scope: bool,
}

fn route_of(msg: &RouteMessage) -> Option<Route> {
    let plen = msg.header.destination_prefix_length;
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(IpAddr::V4(*ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => gateway = Some(IpAddr::V6(*ip)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dst = match dst {
        Some(d) => IpNet::new(d, plen).ok()?,
        None => match msg.header.address_family {
            netlink_packet_route::AddressFamily::Inet6 => "::/0".parse().ok()?,
            _ => "0.0.0.0/0".parse().ok()?,
        },
    };
    Some(Route {
        dst,
        gateway,
        oif,
        link_scope: msg.header.scope == RouteScope::Link,
    })
}

fn build(route: &Route) -> Result<RouteMessage> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.addr(), route.dst.prefix_len())
        .map_err(|e| Error::Invalid(format!("route destination {}: {e}", route.dst)))?;
    if let Some(gw) = route.gateway {
        b = b
            .gateway(gw)
            .map_err(|e| Error::Invalid(format!("route gateway {gw}: {e}")))?;
    }
    if let Some(oif) = route.oif {
        b = b.output_interface(oif);
    }
    if route.link_scope {
        b = b.scope(RouteScope::Link);
    }
    Ok(b.build())
}

impl Netlink {
    /// Is `ip` an address of this namespace (the kernel's route lookup says local)?
    pub async fn is_local(&self, ip: IpAddr) -> Result<bool> {
        use netlink_packet_route::route::RouteType;
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(ip, if ip.is_ipv4() { 32 } else { 128 })
            .map_err(|e| Error::Invalid(format!("route lookup of {ip}: {e}")))?
            .build();
        let mut s = self.handle().route().get(msg).execute();
        match self
            .answer(format!("route lookup of {ip}"), s.try_next())
            .await
        {
            Ok(Some(r)) => Ok(r.header.kind == RouteType::Local),
            Ok(None) => Ok(false),
            // No route at all (ENETUNREACH and the like): not local.
            Err(e) if e.errno().is_some() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds or replaces a route (idempotent).
    pub async fn replace_route(&self, route: &Route) -> Result<()> {
        let msg = build(route)?;
        self.answer(
            format!("add route {}", describe(route)),
            self.handle().route().add(msg).replace().execute(),
        )
        .await
    }

    /// Deletes a route; `Ok(false)` if it was not there.
    pub async fn del_route(&self, route: &Route) -> Result<bool> {
        let msg = build(route)?;
        let request = self.handle().route().del(msg).execute();
        match self
            .answer(format!("delete route {}", describe(route)), request)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Routes of the main table for one family.
    pub async fn routes(&self, v6: bool) -> Result<Vec<Route>> {
        let ver = if v6 { IpVersion::V6 } else { IpVersion::V4 };
        let msg = RouteMessageBuilder::<IpAddr>::new().build();
        let mut req = self.handle().route().get(msg);
        req.message_mut().header.address_family = match ver {
            IpVersion::V4 => netlink_packet_route::AddressFamily::Inet,
            IpVersion::V6 => netlink_packet_route::AddressFamily::Inet6,
        };
        let messages = self.dump("list routes", req.execute()).await?;
        Ok(messages
            .iter()
            .filter(|m| m.header.table == 254)
            .filter_map(route_of)
            .collect())
    }
}

fn describe(r: &Route) -> String {
    match (r.gateway, r.oif) {
        (Some(gw), _) => format!("{} via {gw}", r.dst),
        (None, Some(oif)) => format!("{} dev #{oif}", r.dst),
        (None, None) => r.dst.to_string(),
    }
}
