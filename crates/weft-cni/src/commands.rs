//! The six CNI commands, in the order the spec describes them. Each reads like its steps:
//! decide (config, allocation, plan, host ports; under the network's lock), then do
//! (kernel), and undo exactly what was decided when doing fails.
//!
//! An attachment is (container id, interface name) in one network namespace: ADD into the
//! plugin's own namespace is refused, a repeat ADD into another namespace than the
//! recorded one is refused (while that one exists), and a repeat ADD applies the port
//! mappings it asks for (or refuses them), never ignores them.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;
use weft_kernel::netns::Netns;
use weft_kernel::nft::Nft;
use weft_kernel::Netlink;

use crate::bridge;
use crate::config::{self, Mode, NetworkConf};
use crate::firewall::{self, NetworkFirewall};
use crate::ipam;
use crate::lease::HostLease;
use crate::overlay;
use crate::plan::{self, Plan};
use crate::ports::{self, Change, Element, Holder, Key, Reserved};
use crate::spec::{self, code, CniError, CniResult, Command, Env};
use crate::store::{Lock, NetworkStore, Owner};

/// Runs one command; `Ok(Some(json))` is printed on stdout, `Ok(None)` prints nothing.
pub async fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        let v = config::peek_version(stdin).unwrap_or_else(|| "1.1.0".to_string());
        return Ok(Some(spec::version_info(&v)));
    }
    let nc = config::parse_netconf(stdin)?;
    if !spec::supported(&nc.cni_version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {:?} is not supported (supported: {})",
                nc.cni_version,
                spec::SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let needs = match env.command {
        Command::Check => Some("0.4.0"),
        Command::Status | Command::Gc => Some("1.1.0"),
        _ => None,
    };
    if let Some(min) = needs {
        if !spec::version_at_least(&nc.cni_version, min) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "{:?} needs cniVersion {min} or later, the configuration says {}",
                    env.command, nc.cni_version
                ),
            ));
        }
    }
    let conf = NetworkConf::from_netconf(nc, &env.args)?;
    match env.command {
        Command::Add => add(env, &conf).await.map(Some),
        Command::Del => del(env, &conf).await.map(|()| None),
        Command::Check => check(env, &conf).await.map(|()| None),
        Command::Gc => gc(&conf).await.map(|()| None),
        Command::Status => status(&conf).map(|()| None),
        Command::Version => Ok(None),
    }
}

fn subnets(conf: &NetworkConf) -> Vec<ipnet::IpNet> {
    conf.range_sets.iter().flatten().map(|r| r.subnet).collect()
}

fn open_netns(path: &str) -> Result<Netns, CniError> {
    Netns::open(path).map_err(|e| CniError::new(code::CONTAINER_UNKNOWN, format!("CNI_NETNS: {e}")))
}

/// The container's namespace must not be the plugin's own (the host's): compared by
/// namespace identity, not by path (`/proc/self/ns/net` names it too).
fn refuse_own_netns(ns: &Netns, path: &str) -> Result<(), CniError> {
    if ns.same_as(&Netns::current()?)? {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_NETNS: {path} is the plugin's own (the host's) network namespace, not a container's"),
        ));
    }
    Ok(())
}

/// Where a recorded attachment's namespace stands, seen from CNI_NETNS.
enum Recorded {
    /// The same namespace (by identity; the path may differ).
    Same,
    /// Another namespace that exists: a different container, not to be taken over.
    Elsewhere,
    /// Its namespace is gone (the container died without DEL): its veth went with it.
    Gone,
}

fn recorded_netns(plan: &Plan, env_path: &str, ns: &Netns) -> Result<Recorded, CniError> {
    if plan.netns() == env_path {
        return Ok(Recorded::Same);
    }
    match Netns::open(plan.netns()) {
        Ok(r) if r.same_as(ns)? => Ok(Recorded::Same),
        Ok(_) => Ok(Recorded::Elsewhere),
        Err(weft_kernel::Error::Invalid(_)) => Ok(Recorded::Gone),
        Err(e) if e.is_not_found() => Ok(Recorded::Gone),
        Err(e) => Err(e.into()),
    }
}

/// The network's state: its own address space in bridge mode, the lease's in overlay mode.
fn open_store(conf: &NetworkConf) -> Result<NetworkStore, CniError> {
    match &conf.mode {
        Mode::Bridge => NetworkStore::open(&conf.data_dir, &conf.network),
        Mode::Overlay { lease_file } => {
            NetworkStore::open_on_lease(&conf.data_dir, &conf.network, lease_file)
        }
    }
}

/// Overlay mode: the host's lease, whose range replaces the configuration's.
fn with_lease(conf: &NetworkConf) -> Result<(NetworkConf, Option<HostLease>), CniError> {
    let mut conf = conf.clone();
    let lease = match &conf.mode {
        Mode::Bridge => None,
        Mode::Overlay { lease_file } => {
            let l = HostLease::read(lease_file)?;
            conf.range_sets = vec![vec![l.range()]];
            Some(l)
        }
    };
    Ok((conf, lease))
}

fn holder_of(network: &str, owner: &Owner) -> Holder {
    Holder::new(network, &owner.container_id, &owner.ifname)
}

/// The host-port elements a plan asks for.
fn wanted(plan: &Plan, holder: &Holder) -> Vec<Element> {
    plan.port_mappings()
        .iter()
        .filter_map(|(pm, to)| Element::of(pm, *to, holder))
        .collect()
}

/// The container's IPv4 addresses: elements of older versions (no holder) that lead there
/// are its.
fn legacy_targets(plan: &Plan) -> Vec<Ipv4Addr> {
    plan.addresses()
        .into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// Host ports weft keeps for itself: the VTEP's UDP port (a container mapping it would
/// receive the overlay's packets, and could forge them). Overlay mode: the lease's VTEP
/// (VXLAN's port while the agent has not made it yet); bridge mode on a host that also runs
/// the agent: the VTEP of the default name, if there is one.
async fn reserved_ports(
    lease: Option<&HostLease>,
    host: &Netlink,
) -> Result<Vec<Reserved>, CniError> {
    let (vtep, fallback) = match lease {
        Some(l) => (l.vtep.as_str(), Some(weft_kernel::link::VXLAN_PORT)),
        None => (config::DEFAULT_VTEP, None),
    };
    let port = host.vxlan_port(vtep).await?.or(fallback);
    Ok(port
        .map(|port| Reserved {
            key: Key {
                proto: "udp".into(),
                port,
                host_ip: None,
            },
            what: format!("the overlay's VXLAN port (VTEP {vtep})"),
        })
        .into_iter()
        .collect())
}

/// The per-network table an attachment needs, if any: masquerade (ipMasq) and hairpin for
/// port mappings.
fn network_firewall(plan: &Plan, conf: &NetworkConf) -> Option<NetworkFirewall> {
    let table = firewall::table_name(plan.network());
    match plan {
        Plan::Bridge(p) if p.ip_masq || !p.port_mappings.is_empty() => Some(NetworkFirewall {
            table,
            subnets: subnets(conf),
            ip_masq: p.ip_masq,
            forward: true,
        }),
        Plan::Overlay(p) if !p.port_mappings.is_empty() => Some(NetworkFirewall {
            table,
            subnets: vec![p.subnet.into()],
            ip_masq: false,
            forward: false,
        }),
        _ => None,
    }
}

/// Writes the network's table unless its stamp says it is there. Called under the
/// network's lock, so two first containers do not both write it.
fn ensure_network_firewall(
    plan: &Plan,
    conf: &NetworkConf,
    store: &NetworkStore,
    _lock: &Lock,
) -> Result<(), CniError> {
    let Some(fw) = network_firewall(plan, conf) else {
        return Ok(());
    };
    let stamp_path = store.dir().join("firewall");
    let stamp = fw.stamp();
    if std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }
    let mut nft = Nft::new()?;
    if !nft.table_matches("inet", &fw.table, &fw.fingerprint())? {
        // An older version's table of this network may hold host ports, which rewriting it
        // would drop: they move to the host's table first.
        ports::adopt_older()?;
        nft.run(&fw.render())?;
    }
    crate::store::write_atomic(&stamp_path, stamp.as_bytes())
}

/// Decides the plan of a new attachment (under the lock): allocate, compute, record.
fn decide(
    conf: &NetworkConf,
    lease: Option<&HostLease>,
    env: &Env,
    store: &NetworkStore,
    lock: &Lock,
    owner: &Owner,
) -> Result<Plan, CniError> {
    let allocs = ipam::allocate(store, lock, owner, &conf.range_sets, &conf.requested_ips)?;
    let plan = match (lease, allocs.first().map(|a| a.ip)) {
        (Some(lease), Some(IpAddr::V4(ip))) => Plan::Overlay(overlay::plan(
            conf,
            lease,
            &env.container_id,
            &env.ifname,
            &env.netns,
            ip,
        )),
        _ => Plan::Bridge(plan::bridge(
            conf,
            &env.container_id,
            &env.ifname,
            &env.netns,
            &allocs,
        )),
    };
    if let Err(e) = store.write_record(owner, &plan) {
        release_all(store, lock, owner, &plan);
        return Err(e);
    }
    Ok(plan)
}

/// ADD: allocate, record the plan, claim its host ports, apply it; on failure undo and
/// release. A repeat ADD of a recorded attachment in the same namespace applies the port
/// mappings asked for now, and what is missing in the kernel.
async fn add(env: &Env, conf: &NetworkConf) -> Result<Value, CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .map(CniResult::from_prev)
        .transpose()?;
    let ns = open_netns(&env.netns)?;
    refuse_own_netns(&ns, &env.netns)?;
    let (conf, lease) = with_lease(conf)?;
    if !conf.port_mappings.is_empty()
        && !conf
            .range_sets
            .iter()
            .flatten()
            .any(|r| r.subnet.addr().is_ipv4())
    {
        return Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            "runtimeConfig.portMappings: port mappings lead to an IPv4 address; the network has none",
        ));
    }
    let store = open_store(&conf)?;
    let owner = Owner::new(&env.container_id, &env.ifname);
    let holder = holder_of(&conf.network, &owner);
    let host = Netlink::current()?;
    let reserved = if conf.port_mappings.is_empty() {
        Vec::new()
    } else {
        reserved_ports(lease.as_ref(), &host).await?
    };

    let (plan, fresh, moved) = {
        let lock = store.lock()?;
        let recorded = match store.read_record::<Plan>(&owner)? {
            None => None,
            Some(p) => match recorded_netns(&p, &env.netns, &ns)? {
                Recorded::Same => Some(p),
                Recorded::Elsewhere => {
                    return Err(CniError::new(
                        code::INVALID_ENV,
                        format!(
                            "CNI_NETNS: container {} interface {} of network {} is attached in \
                             another network namespace ({}); DEL it first",
                            env.container_id,
                            env.ifname,
                            conf.network,
                            p.netns()
                        ),
                    ))
                }
                Recorded::Gone => {
                    tracing::info!(container = %env.container_id, ifname = %env.ifname, old = %p.netns(),
                        "replacing an attachment whose network namespace is gone");
                    if let Err(e) = undo_kernel(&p, &holder, &host).await {
                        tracing::warn!(error = %e, "undoing the stale attachment");
                    }
                    release_all(&store, &lock, &owner, &p);
                    None
                }
            },
        };
        let (plan, fresh, moved) = match recorded {
            Some(mut plan) => {
                let mut moved = Change::default();
                let asked: Vec<_> = conf.port_mappings.clone();
                let had: Vec<_> = plan.port_mappings().into_iter().map(|(pm, _)| pm).collect();
                if asked != had || !asked.is_empty() {
                    let mut next = plan.clone();
                    next.set_port_mappings(&asked);
                    moved = ports::sync(
                        &holder,
                        &legacy_targets(&plan),
                        &wanted(&next, &holder),
                        &reserved,
                    )?;
                    if next != plan {
                        store.write_record(&owner, &next)?;
                        plan = next;
                    }
                }
                (plan, false, moved)
            }
            None => {
                let plan = decide(&conf, lease.as_ref(), env, &store, &lock, &owner)?;
                let want = wanted(&plan, &holder);
                let moved = if want.is_empty() {
                    Change::default()
                } else {
                    match ports::sync(&holder, &[], &want, &reserved) {
                        Ok(c) => c,
                        Err(e) => {
                            release_all(&store, &lock, &owner, &plan);
                            return Err(e);
                        }
                    }
                };
                (plan, true, moved)
            }
        };
        if let Err(e) = ensure_network_firewall(&plan, &conf, &store, &lock) {
            if fresh {
                if !moved.add.is_empty() {
                    let _ = ports::sync(&holder, &[], &[], &[]);
                }
                release_all(&store, &lock, &owner, &plan);
            }
            return Err(e);
        }
        (plan, fresh, moved)
    };
    ports::forget_flows(&host, &moved).await;

    let applied = match &plan {
        Plan::Bridge(p) => bridge::apply(p, &host, &ns).await,
        Plan::Overlay(p) => overlay::apply(p, &host, &ns).await,
    };
    if let Err(e) = applied {
        if fresh {
            if let Err(u) = undo(&store, &owner, &holder, &plan, &host).await {
                tracing::warn!(error = %u, "ADD failed and its undo failed too; GC will finish it");
            }
        }
        return Err(e);
    }
    let mine = plan.result();
    let result = match prev {
        Some(p) => p.merge(mine),
        None => mine,
    };
    Ok(result.to_version(&conf.cni_version))
}

/// Releases the plan's addresses and removes its record.
fn release_all(store: &NetworkStore, lock: &Lock, owner: &Owner, plan: &Plan) {
    for ip in plan.addresses() {
        let _ = store.release(lock, ip, owner);
    }
    let _ = store.remove_record(owner);
}

/// Undoes the kernel side of an attachment: its links, its host ports, and the conntrack
/// entries of its addresses (a later container with the same address starts clean; a TCP
/// entry would otherwise live for days).
async fn undo_kernel(plan: &Plan, holder: &Holder, host: &Netlink) -> Result<(), CniError> {
    let mut err = match plan {
        Plan::Bridge(p) => bridge::teardown(p, host).await.err(),
        Plan::Overlay(p) => overlay::teardown(p, host).await.err(),
    };
    if !plan.port_mappings().is_empty() {
        if let Err(e) = ports::sync(holder, &legacy_targets(plan), &[], &[]) {
            err.get_or_insert(e);
        }
    }
    // Best effort: a kernel without ctnetlink has no entries to inherit either.
    let ips = plan.addresses();
    match weft_kernel::conntrack::delete_by_ips(&ips) {
        Ok(n) if n > 0 => tracing::info!(?ips, entries = n, "conntrack entries removed"),
        Ok(_) => {}
        Err(e) => tracing::warn!(?ips, error = %e, "could not remove conntrack entries"),
    }
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Undoes an attachment completely: kernel objects, host ports, flows, addresses, record.
async fn undo(
    store: &NetworkStore,
    owner: &Owner,
    holder: &Holder,
    plan: &Plan,
    host: &Netlink,
) -> Result<(), CniError> {
    let first_err = undo_kernel(plan, holder, host).await.err();
    let lock = store.lock()?;
    release_all(store, &lock, owner, plan);
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// DEL: undo what ADD recorded. Succeeds when the container, its namespace or its state is
/// already gone.
async fn del(env: &Env, conf: &NetworkConf) -> Result<(), CniError> {
    if !conf.data_dir.join(&conf.network).exists() {
        return Ok(());
    }
    let store = open_store(conf)?;
    let owner = Owner::new(&env.container_id, &env.ifname);
    let host = Netlink::current()?;
    match store.read_record::<Plan>(&owner)? {
        Some(plan) => {
            undo(
                &store,
                &owner,
                &holder_of(&conf.network, &owner),
                &plan,
                &host,
            )
            .await
        }
        None => {
            // No record (an ADD killed before writing it, or DEL twice): remove what could
            // exist by name and any address still held by this attachment. (Host ports are
            // claimed only after the record is written.)
            host.del_link_by_name(&plan::host_veth_name(
                &conf.network,
                &env.container_id,
                &env.ifname,
            ))
            .await?;
            let lock = store.lock()?;
            for (ip, o) in store.own_allocations()? {
                if o == owner {
                    store.release(&lock, ip, &owner)?;
                }
            }
            Ok(())
        }
    }
}

/// CHECK: the attachment exists in this namespace and the kernel matches its plan.
async fn check(env: &Env, conf: &NetworkConf) -> Result<(), CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                "prevResult: missing (CHECK needs the ADD result)",
            )
        })
        .and_then(CniResult::from_prev)?;
    let store = open_store(conf)?;
    let owner = Owner::new(&env.container_id, &env.ifname);
    let plan = store.read_record::<Plan>(&owner)?.ok_or_else(|| {
        CniError::new(
            code::CONTAINER_UNKNOWN,
            format!(
                "no attachment {} / {} in network {}",
                env.container_id, env.ifname, conf.network
            ),
        )
    })?;
    let mismatch = |m: String| CniError::new(code::CHECK_MISMATCH, m);
    for ip in plan.addresses() {
        if !prev.ips.iter().any(|c| c.address.addr() == ip) {
            return Err(mismatch(format!("prevResult does not list address {ip}")));
        }
    }
    let ns = open_netns(&env.netns)?;
    if !matches!(recorded_netns(&plan, &env.netns, &ns)?, Recorded::Same) {
        return Err(mismatch(format!(
            "the attachment is in network namespace {}, not in {}",
            plan.netns(),
            env.netns
        )));
    }
    let host = Netlink::current()?;
    match &plan {
        Plan::Overlay(p) => overlay::check(p, &host, &ns).await?,
        Plan::Bridge(p) => bridge::check(p, &host, &ns).await?,
    }
    let holder = holder_of(&conf.network, &owner);
    let want = wanted(&plan, &holder);
    if !want.is_empty() {
        let held = ports::held(&holder)?;
        if let Some(w) = want.iter().find(|w| !held.contains(w)) {
            return Err(mismatch(format!(
                "port mapping {} -> {}:{} is missing",
                w.key, w.to.0, w.to.1
            )));
        }
    }
    if let Some(fw) = network_firewall(&plan, conf) {
        let ok = Nft::new()
            .and_then(|mut n| n.table_matches("inet", &fw.table, &fw.fingerprint()))
            .map_err(|e| mismatch(format!("firewall table {}: {e}", fw.table)))?;
        if !ok {
            return Err(mismatch(format!(
                "firewall table {} is missing or differs from the configuration",
                fw.table
            )));
        }
    }
    Ok(())
}

/// GC: remove every attachment of this network that the runtime does not list as valid,
/// addresses held by no attachment, host ports held by no kept attachment, and weft links
/// of this network that belong to none.
async fn gc(conf: &NetworkConf) -> Result<(), CniError> {
    let valid: HashSet<Owner> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| Owner::new(&a.container_id, &a.ifname))
        .collect();
    if !conf.data_dir.join(&conf.network).exists() {
        return Ok(());
    }
    let store = open_store(conf)?;
    let host = Netlink::current()?;
    let mut kept: HashSet<String> = HashSet::new();
    let mut kept_owners: HashSet<Owner> = HashSet::new();
    for plan in store.records::<Plan>()? {
        let owner = Owner::new(plan.container_id(), plan.ifname());
        if valid.contains(&owner) {
            kept.insert(plan.host_veth().to_string());
            kept_owners.insert(owner);
        } else {
            tracing::info!(container = %owner.container_id, ifname = %owner.ifname, "gc: removing stale attachment");
            let holder = holder_of(&conf.network, &owner);
            undo(&store, &owner, &holder, &plan, &host).await?;
        }
    }
    {
        let lock = store.lock()?;
        // Overlay mode: the lease's space is shared; only this network's addresses.
        for (ip, owner) in store.own_allocations()? {
            if !kept_owners.contains(&owner) && !valid.contains(&owner) {
                tracing::info!(%ip, container = %owner.container_id, "gc: releasing orphaned address");
                store.release(&lock, ip, &owner)?;
            }
        }
    }
    let keep: HashSet<Holder> = kept_owners
        .iter()
        .chain(valid.iter())
        .map(|o| holder_of(&conf.network, o))
        .collect();
    ports::prune(&conf.network, &keep)?;
    let prefix = plan::alias_prefix(&conf.network);
    for l in host.links().await? {
        if l.alias.as_deref().is_some_and(|a| a.starts_with(&prefix)) && !kept.contains(&l.name) {
            tracing::info!(link = %l.name, "gc: removing orphaned link");
            match host.del_link(l.index).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// STATUS: ready when the state directory is usable and there is a free address (bridge: in
/// every range set; overlay: in the host's lease, which must exist).
fn status(conf: &NetworkConf) -> Result<(), CniError> {
    let unavailable = |m: String| CniError::new(code::NOT_AVAILABLE, m);
    let (conf, _) = with_lease(conf).map_err(|e| unavailable(e.msg))?;
    let store = open_store(&conf).map_err(|e| unavailable(e.msg))?;
    drop(store.lock().map_err(|e| unavailable(e.msg))?);
    for (i, set) in conf.range_sets.iter().enumerate() {
        if ipam::free_count(&store, set)? == 0 {
            return Err(unavailable(format!(
                "no free address left in range set {i}"
            )));
        }
    }
    if conf.mode == Mode::Bridge {
        weft_kernel::nft::Nft::new().map_err(|e| unavailable(e.to_string()))?;
    }
    Ok(())
}
