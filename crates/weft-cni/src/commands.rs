//! The six CNI commands, in the order the spec describes them. Each reads like its steps:
//! decide (config, allocation, plan, host ports; under the network's lock), then do
//! (kernel, through the mode's [`Driver`]), and undo exactly what was decided when doing
//! fails.
//!
//! An attachment is (container id, interface name) in one network namespace: ADD into the
//! plugin's own namespace is refused, a repeat ADD into another namespace than the
//! recorded one is refused (while that one exists), and a repeat ADD applies the port
//! mappings it asks for (or refuses them), never ignores them.

use std::collections::HashSet;

use serde_json::Value;
use weft_kernel::netns::Netns;
use weft_kernel::Netlink;

use crate::bridge;
use crate::config::{self, Mode, NetworkConf};
use crate::driver::{self, Driver};
use crate::firewall;
use crate::ipam;
use crate::naming;
use crate::overlay;
use crate::ports::{self, Change, Holder, Reserved};
use crate::spec::{self, code, CniError, CniResult, Command, Env};
use crate::store::{Lock, NetworkStore, Owner};
use weft_api::records::{HostLease, Plan};

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

// ---- ADD ------------------------------------------------------------------------------------

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
    refuse_ports_without_ipv4(&conf)?;
    let store = open_store(&conf)?;
    let att = Attachment::new(&store, &conf.network, &env.container_id, &env.ifname);
    let host = Netlink::current()?;
    let reserved = if conf.port_mappings.is_empty() {
        Vec::new()
    } else {
        ports::reserved(lease.as_ref(), &host).await?
    };

    // Decide, under the network's lock.
    let Decision { plan, fresh, moved } = {
        let lock = store.lock()?;
        let decision = match recorded_here(env, &att, &lock, &ns, &host).await? {
            Some(plan) => decide_repeat(plan, &conf, &att, &reserved)?,
            None => decide_new(env, &conf, lease.as_ref(), &att, &lock, &reserved)?,
        };
        if let Err(e) = firewall::ensure(&decision.plan, &conf, &store, &lock) {
            if decision.fresh {
                if !decision.moved.add.is_empty() {
                    let _ = ports::sync(&att.holder, &[], &[], &[]);
                }
                att.release(&lock, &decision.plan);
            }
            return Err(e);
        }
        decision
    };
    ports::forget_flows(&host, &moved).await;

    // Do.
    if let Err(e) = plan.setup(&host, &ns).await {
        if fresh {
            if let Err(u) = att.undo(&plan, &host).await {
                tracing::warn!(error = %u, "ADD failed and its undo failed too; GC will finish it");
            }
        }
        return Err(e);
    }
    let mut mine = driver::result(&plan);
    mine.dns = conf.dns.clone();
    let result = match prev {
        Some(p) => p.merge(mine),
        None => mine,
    };
    Ok(result.to_version(&conf.cni_version))
}

/// Port mappings lead to an IPv4 address: a network without one cannot have them.
fn refuse_ports_without_ipv4(conf: &NetworkConf) -> Result<(), CniError> {
    let has_v4 = conf
        .range_sets
        .iter()
        .flatten()
        .any(|r| r.subnet.addr().is_ipv4());
    if conf.port_mappings.is_empty() || has_v4 {
        return Ok(());
    }
    Err(CniError::new(
        code::UNSUPPORTED_FIELD,
        "runtimeConfig.portMappings: port mappings lead to an IPv4 address; the network has none",
    ))
}

/// What ADD decided under the lock: the plan, whether it is new (undone when applying it
/// fails), and what changed in the host ports' table.
struct Decision {
    plan: Plan,
    fresh: bool,
    moved: Change,
}

/// The recorded plan of this attachment if it is in this namespace. Refused when it is in
/// another namespace that exists; undone and forgotten when its namespace is gone.
async fn recorded_here(
    env: &Env,
    att: &Attachment<'_>,
    lock: &Lock,
    ns: &Netns,
    host: &Netlink,
) -> Result<Option<Plan>, CniError> {
    let Some(p) = att.store.read_record::<Plan>(&att.owner)? else {
        return Ok(None);
    };
    match recorded_netns(&p, &env.netns, ns)? {
        Recorded::Same => Ok(Some(p)),
        Recorded::Elsewhere => Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "CNI_NETNS: container {} interface {} of network {} is attached in another \
                 network namespace ({}); DEL it first",
                env.container_id,
                env.ifname,
                att.holder.network,
                p.netns()
            ),
        )),
        Recorded::Gone => {
            tracing::info!(container = %env.container_id, ifname = %env.ifname, old = %p.netns(),
                "replacing an attachment whose network namespace is gone");
            if let Err(e) = att.undo_kernel(&p, host).await {
                tracing::warn!(error = %e, "undoing the stale attachment");
            }
            att.release(lock, &p);
            Ok(None)
        }
    }
}

/// A repeat ADD: the recorded plan with the port mappings asked for now (claimed, or
/// refused with nothing changed).
fn decide_repeat(
    mut plan: Plan,
    conf: &NetworkConf,
    att: &Attachment<'_>,
    reserved: &[Reserved],
) -> Result<Decision, CniError> {
    let mut moved = Change::default();
    let asked = conf.port_mappings.clone();
    let had: Vec<_> = plan.port_mappings().into_iter().map(|(pm, _)| pm).collect();
    if asked != had || !asked.is_empty() {
        let mut next = plan.clone();
        next.set_port_mappings(&asked);
        moved = ports::sync(
            &att.holder,
            &ports::legacy_targets(&plan),
            &ports::wanted(&next, &att.holder),
            reserved,
        )?;
        if next != plan {
            att.store.write_record(&att.owner, &next)?;
            plan = next;
        }
    }
    Ok(Decision {
        plan,
        fresh: false,
        moved,
    })
}

/// A new attachment: allocate, compute the plan, record it, claim its host ports. On
/// failure nothing stays allocated, recorded or claimed.
fn decide_new(
    env: &Env,
    conf: &NetworkConf,
    lease: Option<&HostLease>,
    att: &Attachment<'_>,
    lock: &Lock,
    reserved: &[Reserved],
) -> Result<Decision, CniError> {
    let allocs = ipam::allocate(
        att.store,
        lock,
        &att.owner,
        &conf.range_sets,
        &conf.requested_ips,
    )?;
    let plan = match (lease, allocs.first().map(|a| a.ip)) {
        (Some(lease), Some(std::net::IpAddr::V4(ip))) => Plan::Overlay(overlay::plan(
            conf,
            lease,
            &env.container_id,
            &env.ifname,
            &env.netns,
            ip,
        )),
        _ => Plan::Bridge(bridge::plan(
            conf,
            &env.container_id,
            &env.ifname,
            &env.netns,
            &allocs,
        )),
    };
    if let Err(e) = att.store.write_record(&att.owner, &plan) {
        att.release(lock, &plan);
        return Err(e);
    }
    let want = ports::wanted(&plan, &att.holder);
    let moved = if want.is_empty() {
        Change::default()
    } else {
        match ports::sync(&att.holder, &[], &want, reserved) {
            Ok(c) => c,
            Err(e) => {
                att.release(lock, &plan);
                return Err(e);
            }
        }
    };
    Ok(Decision {
        plan,
        fresh: true,
        moved,
    })
}

// ---- DEL ------------------------------------------------------------------------------------

/// DEL: undo what ADD recorded. Succeeds when the container, its namespace or its state is
/// already gone.
async fn del(env: &Env, conf: &NetworkConf) -> Result<(), CniError> {
    if !conf.data_dir.join(&conf.network).exists() {
        return Ok(());
    }
    let store = open_store(conf)?;
    let att = Attachment::new(&store, &conf.network, &env.container_id, &env.ifname);
    let host = Netlink::current()?;
    if let Some(plan) = store.read_record::<Plan>(&att.owner)? {
        return att.undo(&plan, &host).await;
    }
    // No record (an ADD killed before writing it, or DEL twice): remove what could exist by
    // name and any address still held by this attachment. (Host ports are claimed only
    // after the record is written.)
    host.del_link_by_name(&naming::host_veth_name(
        &conf.network,
        &env.container_id,
        &env.ifname,
    ))
    .await?;
    let lock = store.lock()?;
    for (ip, o) in store.own_allocations()? {
        if o == att.owner {
            store.release(&lock, ip, &att.owner)?;
        }
    }
    Ok(())
}

// ---- CHECK ----------------------------------------------------------------------------------

/// CHECK: the attachment exists in this namespace and the kernel matches its plan: links,
/// addresses and routes (the mode's), host ports, the network's table.
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
    for ip in plan.addresses() {
        if !prev.ips.iter().any(|c| c.address.addr() == ip) {
            return Err(CniError::mismatch(format!(
                "prevResult does not list address {ip}"
            )));
        }
    }
    let ns = open_netns(&env.netns)?;
    if !matches!(recorded_netns(&plan, &env.netns, &ns)?, Recorded::Same) {
        return Err(CniError::mismatch(format!(
            "the attachment is in network namespace {}, not in {}",
            plan.netns(),
            env.netns
        )));
    }
    let host = Netlink::current()?;
    plan.check(&host, &ns).await?;
    ports::check(&plan, &Holder::of(&conf.network, &owner))?;
    firewall::check(&plan, conf)
}

// ---- GC -------------------------------------------------------------------------------------

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
            let att = Attachment::new(&store, &conf.network, plan.container_id(), plan.ifname());
            att.undo(&plan, &host).await?;
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
        .map(|o| Holder::of(&conf.network, o))
        .collect();
    ports::prune(&conf.network, &keep)?;
    let prefix = naming::alias_prefix(&conf.network);
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

// ---- STATUS ---------------------------------------------------------------------------------

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

// ---- what the commands share ----------------------------------------------------------------

/// One attachment (container id, interface) of one network: where its state is, who owns
/// its addresses, who holds its host ports.
struct Attachment<'s> {
    store: &'s NetworkStore,
    owner: Owner,
    holder: Holder,
}

impl<'s> Attachment<'s> {
    fn new(store: &'s NetworkStore, network: &str, container_id: &str, ifname: &str) -> Self {
        let owner = Owner::new(container_id, ifname);
        Attachment {
            store,
            holder: Holder::of(network, &owner),
            owner,
        }
    }

    /// Releases the plan's addresses and removes its record.
    fn release(&self, lock: &Lock, plan: &Plan) {
        for ip in plan.addresses() {
            let _ = self.store.release(lock, ip, &self.owner);
        }
        let _ = self.store.remove_record(&self.owner);
    }

    /// Undoes the kernel side of the attachment: its links, its host ports, and the
    /// conntrack entries of its addresses (a later container with the same address starts
    /// clean; a TCP entry would otherwise live for days).
    ///
    /// The conntrack dump walks the kernel's whole conntrack hash (tens of ms whatever it
    /// returns) and removing a veth waits for the kernel's RCU grace periods: the dump runs
    /// on a thread of its own (a new thread is in its creator's network namespace) while
    /// links and host ports go. A container being removed sends nothing any more; an entry a
    /// late packet makes meanwhile is as stale as one made just after the removal.
    async fn undo_kernel(&self, plan: &Plan, host: &Netlink) -> Result<(), CniError> {
        let ips = plan.addresses();
        let flows = {
            let ips = ips.clone();
            std::thread::spawn(move || weft_kernel::conntrack::delete_by_ips(&ips))
        };
        let mut err = plan.teardown(host).await.err();
        if !plan.port_mappings().is_empty() {
            if let Err(e) = ports::sync(&self.holder, &ports::legacy_targets(plan), &[], &[]) {
                err.get_or_insert(e);
            }
        }
        // Best effort: a kernel without ctnetlink has no entries to inherit either.
        match flows.join() {
            Ok(Ok(n)) if n > 0 => tracing::info!(?ips, entries = n, "conntrack entries removed"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(?ips, error = %e, "could not remove conntrack entries"),
            Err(_) => tracing::warn!(?ips, "the conntrack clean-up panicked"),
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Undoes the attachment completely: kernel objects, host ports, flows, addresses,
    /// record.
    async fn undo(&self, plan: &Plan, host: &Netlink) -> Result<(), CniError> {
        let first_err = self.undo_kernel(plan, host).await.err();
        let lock = self.store.lock()?;
        self.release(&lock, plan);
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
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
            let l = overlay::read_lease(lease_file)?;
            conf.range_sets = vec![vec![overlay::lease_range(&l)]];
            Some(l)
        }
    };
    Ok((conf, lease))
}
