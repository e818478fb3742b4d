//! The six CNI commands, in the order the spec describes them. Each reads like its steps:
//! decide (config, allocation, plan; under the network's lock), then do (kernel), and undo
//! exactly what was decided when doing fails.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::Value;
use weft_kernel::netns::Netns;
use weft_kernel::nft::Nft;
use weft_kernel::Netlink;

use crate::bridge;
use crate::config::{self, Mode, NetworkConf};
use crate::ipam;
use crate::lease::HostLease;
use crate::overlay;
use crate::plan::{self, Plan};
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

/// ADD: allocate, record the plan, apply it; on failure undo and release.
async fn add(env: &Env, conf: &NetworkConf) -> Result<Value, CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .map(CniResult::from_prev)
        .transpose()?;
    let ns = open_netns(&env.netns)?;
    let mut conf = conf.clone();
    let lease = match &conf.mode {
        Mode::Bridge => None,
        Mode::Overlay { lease_file } => {
            let l = HostLease::read(lease_file)?;
            conf.range_sets = vec![vec![l.range()]];
            Some(l)
        }
    };
    let store = NetworkStore::open(&conf.data_dir, &conf.network)?;
    let owner = Owner::new(&env.container_id, &env.ifname);
    let host = Netlink::current()?;

    let (plan, fresh) = {
        let lock = store.lock()?;
        let (plan, fresh) = match store.read_record::<Plan>(&owner)? {
            Some(p) => (p, false),
            None => (
                decide(&conf, lease.as_ref(), env, &store, &lock, &owner)?,
                true,
            ),
        };
        if let Plan::Bridge(bp) = &plan {
            if let Some(fw) = bridge::network_firewall(bp, subnets(&conf)) {
                let stamp_path = store.dir().join("firewall");
                let stamp = bridge::firewall_stamp(&fw);
                let table_ok =
                    std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str());
                let r = if table_ok && bp.port_mappings.is_empty() {
                    Ok(())
                } else {
                    Nft::new().map_err(CniError::from).and_then(|mut nft| {
                        if !table_ok {
                            bridge::ensure_network_firewall(&mut nft, &fw, &lock)?;
                            crate::store::write_atomic(&stamp_path, stamp.as_bytes())?;
                        }
                        bridge::add_port_mappings(&mut nft, bp, &fw.table)
                    })
                };
                if let Err(e) = r {
                    if fresh {
                        release_all(&store, &lock, &owner, &plan);
                    }
                    return Err(e);
                }
            }
        }
        (plan, fresh)
    };

    let applied = match &plan {
        Plan::Bridge(p) => bridge::apply(p, &host, &ns).await,
        Plan::Overlay(p) => overlay::apply(p, &host, &ns).await,
    };
    if let Err(e) = applied {
        if fresh {
            if let Err(u) = undo(&store, &owner, &plan, &host).await {
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

/// Undoes an attachment completely: kernel objects, port mappings, addresses, record.
async fn undo(
    store: &NetworkStore,
    owner: &Owner,
    plan: &Plan,
    host: &Netlink,
) -> Result<(), CniError> {
    let first_err = match plan {
        Plan::Bridge(p) => {
            let mut err = bridge::teardown(p, host).await.err();
            if !p.port_mappings.is_empty() {
                let table = crate::firewall::table_name(&p.network);
                if let Err(e) = Nft::new()
                    .map_err(CniError::from)
                    .and_then(|mut n| bridge::del_port_mappings(&mut n, p, &table))
                {
                    err.get_or_insert(e);
                }
            }
            err
        }
        Plan::Overlay(p) => overlay::teardown(p, host).await.err(),
    };
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
    let store = NetworkStore::open(&conf.data_dir, &conf.network)?;
    let owner = Owner::new(&env.container_id, &env.ifname);
    let host = Netlink::current()?;
    match store.read_record::<Plan>(&owner)? {
        Some(plan) => undo(&store, &owner, &plan, &host).await,
        None => {
            // No record (an ADD killed before writing it, or DEL twice): remove what could
            // exist by name and any address still held by this attachment.
            host.del_link_by_name(&plan::host_veth_name(
                &conf.network,
                &env.container_id,
                &env.ifname,
            ))
            .await?;
            let lock = store.lock()?;
            for (ip, o) in store.allocations()? {
                if o == owner {
                    store.release(&lock, ip, &owner)?;
                }
            }
            Ok(())
        }
    }
}

/// CHECK: the attachment exists and the kernel matches its plan.
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
    let store = NetworkStore::open(&conf.data_dir, &conf.network)?;
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
            return Err(CniError::new(
                code::CHECK_MISMATCH,
                format!("prevResult does not list address {ip}"),
            ));
        }
    }
    let ns = open_netns(&env.netns)?;
    let host = Netlink::current()?;
    match &plan {
        Plan::Overlay(p) => overlay::check(p, &host, &ns).await,
        Plan::Bridge(p) => {
            bridge::check(p, &host, &ns).await?;
            if let Some(fw) = bridge::network_firewall(p, subnets(conf)) {
                let listing = Nft::new()
                    .and_then(|mut n| n.run(&format!("list table inet {}", fw.table)))
                    .map_err(|e| {
                        CniError::new(
                            code::CHECK_MISMATCH,
                            format!("firewall table {}: {e}", fw.table),
                        )
                    })?;
                for (pm, to) in &p.port_mappings {
                    if !crate::firewall::listing_has_mapping(&listing, pm, *to) {
                        return Err(CniError::new(
                            code::CHECK_MISMATCH,
                            format!("port mapping {}/{} is missing", pm.host_port, pm.protocol),
                        ));
                    }
                }
            }
            Ok(())
        }
    }
}

/// GC: remove every attachment of this network that the runtime does not list as valid,
/// addresses held by no attachment, and weft links of this network that belong to none.
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
    let store = NetworkStore::open(&conf.data_dir, &conf.network)?;
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
            undo(&store, &owner, &plan, &host).await?;
        }
    }
    {
        let lock = store.lock()?;
        for (ip, owner) in store.allocations()? {
            if !kept_owners.contains(&owner) && !valid.contains(&owner) {
                tracing::info!(%ip, container = %owner.container_id, "gc: releasing orphaned address");
                store.release(&lock, ip, &owner)?;
            }
        }
    }
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
    let mut conf = conf.clone();
    if let Mode::Overlay { lease_file } = &conf.mode {
        let l = HostLease::read(lease_file).map_err(|e| unavailable(e.msg))?;
        conf.range_sets = vec![vec![l.range()]];
    }
    let store =
        NetworkStore::open(&conf.data_dir, &conf.network).map_err(|e| unavailable(e.msg))?;
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
