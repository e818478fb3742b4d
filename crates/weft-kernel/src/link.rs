//! Links: veth pairs, bridges, VXLAN devices; their state, master, MTU and MAC.
//!
//! Invariant: creating is safe under races and repeats (an existing bridge is taken, an
//! existing veth is the caller's to judge), deleting what is gone is `Ok(false)`, and every
//! request is bounded in time. Kernel objects owned: links (veth, bridge, vxlan) and their
//! attributes (up, master, MTU, MAC, alias, hairpin).

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::netns::Netns;
use crate::{Error, MacAddr, Netlink, Result};

/// What the kernel says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    /// Index of the bridge (or other controller) this link is enslaved to.
    pub master: Option<u32>,
    /// For a veth: the peer's index, in the peer's namespace.
    pub peer_index: Option<u32>,
    /// For a veth whose peer is in another namespace: that namespace's id as this one knows
    /// it (see [`Netlink::nsid_of`]); `None` when the peer is in the same namespace.
    pub link_netnsid: Option<i32>,
    /// The link's alias (`ip link set NAME alias ...`); weft tags the links it owns with it.
    pub alias: Option<String>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut l = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            master: None,
            peer_index: None,
            link_netnsid: None,
            alias: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Mtu(m) => l.mtu = *m,
                LinkAttribute::Controller(m) => l.master = Some(*m),
                LinkAttribute::Link(p) => l.peer_index = Some(*p),
                LinkAttribute::LinkNetNsId(id) if *id >= 0 => l.link_netnsid = Some(*id),
                LinkAttribute::IfAlias(a) => l.alias = Some(a.clone()),
                LinkAttribute::Address(a) => l.mac = MacAddr::from_slice(a).or(l.mac),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

/// Checks an interface name as the kernel would (IFNAMSIZ, no '/', ':' or spaces).
pub fn validate_ifname(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > 15 {
        return Err(format!("interface name {name:?} is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not allowed"));
    }
    // '%' too: the kernel expands "eth%d" into the next free name instead of taking it.
    if name
        .chars()
        .any(|c| matches!(c, '/' | ':' | '%') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "interface name {name:?} contains '/', ':', '%' or white space"
        ));
    }
    Ok(())
}

/// One end of a veth pair to create.
#[derive(Debug, Clone)]
pub struct VethEnd<'a> {
    pub name: &'a str,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    pub alias: Option<&'a str>,
    /// Turn ARP off (point-to-point links with permanent neighbour entries).
    pub arp_off: bool,
    /// Enslave to this bridge in the create request itself (saves a round trip).
    pub master: Option<u32>,
    /// Create the end up (saves a round trip).
    pub up: bool,
}

impl<'a> VethEnd<'a> {
    /// An end called `name` and nothing else: the kernel's MAC and MTU, no alias, ARP on,
    /// no bridge, down.
    pub fn new(name: &'a str) -> Self {
        VethEnd {
            name,
            mac: None,
            mtu: None,
            alias: None,
            arp_off: false,
            master: None,
            up: false,
        }
    }
}

impl Netlink {
    pub async fn links(&self) -> Result<Vec<Link>> {
        let messages = self
            .dump("list links", self.handle().link().get().execute())
            .await?;
        Ok(messages.iter().map(Link::from_message).collect())
    }

    /// The link called `name`, or `None`.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        Ok(self
            .link_message_by_name(name)
            .await?
            .map(|m| Link::from_message(&m)))
    }

    /// The kernel's message for the link called `name`, or `None`.
    async fn link_message_by_name(&self, name: &str) -> Result<Option<LinkMessage>> {
        let mut s = self
            .handle()
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match self.answer(format!("get link {name}"), s.try_next()).await {
            Ok(m) => Ok(m),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let mut s = self.handle().link().get().match_index(index).execute();
        match self
            .answer(format!("get link #{index}"), s.try_next())
            .await
        {
            Ok(m) => Ok(m.map(|m| Link::from_message(&m))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The id this namespace gives `ns` (what a veth's [`Link::link_netnsid`] says when its
    /// peer is there), or `None` if it has not given it one (then no link of this namespace
    /// has a peer there).
    pub async fn nsid_of(&self, ns: &Netns) -> Result<Option<i32>> {
        use futures::StreamExt;
        use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
        use netlink_packet_route::RouteNetlinkMessage;
        use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};

        let mut msg = NsidMessage::default();
        msg.attributes = vec![NsidAttribute::Fd(ns.raw_fd() as u32)];
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
        req.header.flags = NLM_F_REQUEST;
        let op = || format!("get the id of namespace {}", ns.path().display());
        let mut answers = self
            .handle()
            .clone()
            .request(req)
            .map_err(|e| Error::netlink(op(), e))?;
        while let Some(m) = answers.next().await {
            match m.payload {
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(Error::netlink(op(), rtnetlink::Error::NetlinkError(e)))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                    return Ok(m.attributes.iter().find_map(|a| match a {
                        NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                        _ => None,
                    }));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// The UDP port of the VXLAN device `name`, or `None` if there is no such device (or it
    /// is not VXLAN).
    pub async fn vxlan_port(&self, name: &str) -> Result<Option<u16>> {
        use netlink_packet_route::link::InfoVxlan;
        let msg = self.link_message_by_name(name).await?;
        let port = msg
            .into_iter()
            .flat_map(|m| m.attributes)
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.into_iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Vxlan(v)) => v.into_iter().find_map(|x| match x {
                        InfoVxlan::Port(p) => Some(p),
                        _ => None,
                    }),
                    _ => None,
                }),
                _ => None,
            });
        Ok(port)
    }

    /// Creates a veth pair whose `peer` end is created directly inside `peer_ns` (no move
    /// between namespaces afterwards, as netavark and Calico do). Both ends start down. The
    /// kernel ignores an alias in a create request: the local end's alias is set afterwards.
    pub async fn add_veth(
        &self,
        local: &VethEnd<'_>,
        peer: &VethEnd<'_>,
        peer_ns: &Netns,
    ) -> Result<()> {
        let mut pb = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.name.to_string())
            .setns_by_fd(peer_ns.raw_fd());
        if let Some(mac) = peer.mac {
            pb = pb.address(mac.octets().to_vec());
        }
        if let Some(mtu) = peer.mtu {
            pb = pb.mtu(mtu);
        }
        if peer.arp_off {
            pb = pb.arp(false);
        }
        if peer.up {
            pb = pb.up();
        }
        let mut b = LinkVeth::new(local.name, peer.name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(pb.build())));
        if let Some(mac) = local.mac {
            b = b.address(mac.octets().to_vec());
        }
        if let Some(mtu) = local.mtu {
            b = b.mtu(mtu);
        }
        if local.arp_off {
            b = b.arp(false);
        }
        if let Some(master) = local.master {
            b = b.controller(master);
        }
        if local.up {
            b = b.up();
        }
        self.answer(
            format!("add veth {} <-> {}", local.name, peer.name),
            self.handle().link().add(b.build()).execute(),
        )
        .await?;
        if let Some(alias) = local.alias {
            let msg = LinkUnspec::new_with_name(local.name).alias(alias).build();
            self.answer(
                format!("set alias of {}", local.name),
                self.handle().link().set(msg).execute(),
            )
            .await?;
        }
        Ok(())
    }

    /// Sets a link's alias (`ip link set DEV alias TEXT`).
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).alias(alias).build();
        self.answer(
            format!("set alias of link #{index}"),
            self.handle().link().set(msg).execute(),
        )
        .await
    }

    /// The bridge called `name`, created (up, with `mtu`) if missing. Safe under races: a
    /// concurrent creator's bridge is taken as ours.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<MacAddr>,
    ) -> Result<Link> {
        if let Some(l) = self.link_by_name(name).await? {
            if l.kind.as_deref() != Some("bridge") {
                return Err(Error::Invalid(format!(
                    "{name} exists but is a {} device, not a bridge",
                    l.kind.as_deref().unwrap_or("unknown")
                )));
            }
            if !l.up {
                self.set_up(l.index).await?;
            }
            return Ok(l);
        }
        let mut b = LinkBridge::new(name);
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        // An explicit MAC keeps the bridge's address (the containers' gateway MAC) from
        // changing as ports come and go.
        if let Some(mac) = mac {
            b = b.address(mac.octets().to_vec());
        }
        match self
            .answer(
                format!("add bridge {name}"),
                self.handle().link().add(b.build()).execute(),
            )
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e),
        }
        let l = self
            .link_by_name(name)
            .await?
            .ok_or_else(|| Error::Invalid(format!("bridge {name} vanished after creation")))?;
        if !l.up {
            self.set_up(l.index).await?;
        }
        Ok(l)
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.answer(
            format!("set link #{index} up"),
            self.handle().link().set(msg).execute(),
        )
        .await
    }

    /// Brings up the link called `name` (e.g. `lo`).
    pub async fn set_up_by_name(&self, name: &str) -> Result<()> {
        let l = self
            .link_by_name(name)
            .await?
            .ok_or_else(|| Error::Invalid(format!("no link named {name}")))?;
        self.set_up(l.index).await
    }

    /// Enslaves `index` to the bridge `master`.
    pub async fn set_master(&self, index: u32, master: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).controller(master).build();
        self.answer(
            format!("attach link #{index} to bridge #{master}"),
            self.handle().link().set(msg).execute(),
        )
        .await
    }

    /// Sets the hairpin flag of a bridge port (traffic may leave through the port it came in).
    pub async fn set_hairpin(&self, index: u32, on: bool) -> Result<()> {
        let msg = LinkBridgePort::new(index).hairpin(on).build();
        self.answer(
            format!("set hairpin on link #{index}"),
            self.handle().link().set_port(msg).execute(),
        )
        .await
    }

    pub async fn del_link(&self, index: u32) -> Result<()> {
        self.answer(
            format!("delete link #{index}"),
            self.handle().link().del(index).execute(),
        )
        .await
    }

    /// Deletes the link called `name`; `Ok(false)` if there was none.
    pub async fn del_link_by_name(&self, name: &str) -> Result<bool> {
        match self.link_by_name(name).await? {
            Some(l) => match self.del_link(l.index).await {
                Ok(()) => Ok(true),
                Err(e) if e.is_not_found() => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }
}

/// VXLAN's IANA port (what weft's VTEP uses unless told otherwise).
pub const VXLAN_PORT: u16 = 4789;

/// A VXLAN device as weft's VTEP uses it: unicast only (no multicast group, no learning),
/// group-based policy (GBP) on so a 16-bit mark rides in every packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: std::net::Ipv4Addr,
    /// The underlay device the tunnel's packets leave through.
    pub dev: Option<u32>,
    pub mtu: u32,
    pub mac: MacAddr,
}

impl VxlanSpec {
    /// What identifies the device's configuration; written into its alias so that a restart
    /// can tell "same VTEP, keep it" from "configuration changed, recreate it".
    pub fn fingerprint(&self) -> String {
        format!(
            "weft-vtep vni={} port={} local={} gbp nolearning",
            self.vni, self.port, self.local
        )
    }
}

impl Netlink {
    /// Creates the VXLAN device (down).
    pub async fn add_vxlan(&self, spec: &VxlanSpec) -> Result<()> {
        let mut b = rtnetlink::LinkVxlan::new(&spec.name, spec.vni)
            .port(spec.port)
            .local(spec.local)
            .learning(false)
            .gbp()
            .mtu(spec.mtu)
            .address(spec.mac.octets().to_vec());
        if let Some(dev) = spec.dev {
            b = b.dev(dev);
        }
        self.answer(
            format!("add vxlan {} (vni {})", spec.name, spec.vni),
            self.handle().link().add(b.build()).execute(),
        )
        .await?;
        // The kernel ignores an alias in a create request: set the fingerprint afterwards.
        let l = self
            .link_by_name(&spec.name)
            .await?
            .ok_or_else(|| Error::Invalid(format!("{} vanished after creation", spec.name)))?;
        self.set_alias(l.index, &spec.fingerprint()).await
    }

    /// Sets a link's MTU.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.answer(
            format!("set mtu {mtu} on link #{index}"),
            self.handle().link().set(msg).execute(),
        )
        .await
    }
}
