//! Subnet leases: each host holds one subnet of the overlay network, with a VTEP MAC derived from
//! it, until the lease expires unrenewed or is released.
//!
//! Expiry takes a cutoff from the caller ([`crate::controller::Expiry`]): none during the grace
//! after a controller start or stall, so that no path (sweep or acquisition) expires a lease
//! its host could not renew while the controller was away. A host without a lease may ask for
//! the subnet it had; it gets it when no other host holds it.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use crate::changelog;
use crate::error::{Error, FieldErrors, Result};
use crate::store::{Row, Tx, Value};
use weft_api::model::{Event, Lease};

/// Largest number of subnets a pool may have (keeps allocation queries and metrics sane).
const MAX_POOL_SIZE: u64 = 1 << 24;

/// The overlay network cut into per-host subnets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    overlay: Ipv4Net,
    host_prefix: u8,
}

impl Pool {
    pub fn new(overlay: Ipv4Net, host_prefix: u8) -> std::result::Result<Pool, String> {
        let overlay = overlay.trunc();
        if host_prefix < overlay.prefix_len() {
            return Err(format!(
                "--host-prefix /{host_prefix} is shorter than the overlay network {overlay}"
            ));
        }
        if host_prefix > 30 {
            return Err(format!(
                "--host-prefix /{host_prefix} leaves no room for containers (at most /30)"
            ));
        }
        if host_prefix - overlay.prefix_len() > 24 {
            return Err(format!(
                "overlay {overlay} with /{host_prefix} per host has more than {MAX_POOL_SIZE} subnets"
            ));
        }
        Ok(Pool {
            overlay,
            host_prefix,
        })
    }

    pub fn overlay(&self) -> Ipv4Net {
        self.overlay
    }

    pub fn host_prefix(&self) -> u8 {
        self.host_prefix
    }

    /// Number of host subnets in the pool.
    pub fn size(&self) -> u64 {
        1u64 << (self.host_prefix - self.overlay.prefix_len())
    }

    /// The `idx`-th host subnet.
    pub fn subnet(&self, idx: u64) -> Option<Ipv4Net> {
        if idx >= self.size() {
            return None;
        }
        let base = u32::from(self.overlay.network()) as u64;
        let addr = base + (idx << (32 - self.host_prefix));
        let addr = Ipv4Addr::from(u32::try_from(addr).ok()?);
        Ipv4Net::new(addr, self.host_prefix).ok()
    }

    /// The index of `subnet` in the pool: `None` unless it is one of the pool's subnets
    /// exactly (right prefix length, network address, inside the overlay).
    pub fn index(&self, subnet: Ipv4Net) -> Option<u64> {
        if subnet.prefix_len() != self.host_prefix
            || subnet != subnet.trunc()
            || !self.overlay.contains(&subnet)
        {
            return None;
        }
        let offset = u32::from(subnet.network()) - u32::from(self.overlay.network());
        Some((offset >> (32 - self.host_prefix)) as u64)
    }

    /// The VTEP MAC of the host holding `subnet`: `ee:ee:` followed by the subnet's address, as
    /// Cloud Foundry's silk does. Unique because subnets are.
    pub fn vtep_mac(subnet: Ipv4Net) -> String {
        let o = subnet.network().octets();
        format!("ee:ee:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    }
}

/// Current time in unix seconds.
pub use weft_api::model::unix_now as now;

/// Checks a host name: 1..=253 printable characters without whitespace.
pub fn validate_host(field: &str, host: &str, errors: &mut FieldErrors) {
    if host.is_empty() {
        errors.push(field, "is required");
    } else if host.len() > 253 {
        errors.push(field, "must be at most 253 characters");
    } else if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.push(field, "must not contain whitespace or control characters");
    }
}

const COLUMNS: &str = "host, idx, subnet, underlay_ip, vtep_mac, acquired_at, expires_at";

fn lease_from_row(row: &Row) -> Result<Lease> {
    let subnet = row.text(2)?;
    let underlay = row.text(3)?;
    Ok(Lease {
        host: row.text(0)?,
        subnet: subnet
            .parse()
            .map_err(|e| Error::Store(format!("stored subnet {subnet:?}: {e}")))?,
        underlay_ip: underlay
            .parse()
            .map_err(|e| Error::Store(format!("stored underlay_ip {underlay:?}: {e}")))?,
        vtep_mac: row.text(4)?,
        acquired_at: row.int(5)?,
        expires_at: row.int(6)?,
    })
}

async fn find(tx: &mut dyn Tx, column: &str, value: &str) -> Result<Option<Lease>> {
    let sql = format!("SELECT {COLUMNS} FROM leases WHERE {column} = $1");
    let rows = tx.query(&sql, &[Value::from(value)]).await?;
    rows.first().map(lease_from_row).transpose()
}

/// Whether some host holds the subnet at `idx`.
async fn taken(tx: &mut dyn Tx, idx: u64) -> Result<bool> {
    let rows = tx
        .query(
            "SELECT 1 FROM leases WHERE idx = $1",
            &[Value::Int(idx as i64)],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// All leases, by subnet order.
pub async fn list(tx: &mut dyn Tx) -> Result<Vec<Lease>> {
    let rows = tx
        .query(&format!("SELECT {COLUMNS} FROM leases ORDER BY idx"), &[])
        .await?;
    rows.iter().map(lease_from_row).collect()
}

pub async fn count(tx: &mut dyn Tx) -> Result<i64> {
    let rows = tx.query("SELECT COUNT(*) FROM leases", &[]).await?;
    rows.first().map(|r| r.int(0)).unwrap_or(Ok(0))
}

/// The lease `host` holds (expired or not: until the sweep takes it).
pub async fn get(tx: &mut dyn Tx, host: &str) -> Result<Option<Lease>> {
    find(tx, "host", host).await
}

/// Whether `host` holds a lease (expired or not: until the sweep takes it).
pub async fn holds(tx: &mut dyn Tx, host: &str) -> Result<bool> {
    Ok(find(tx, "host", host).await?.is_some())
}

/// Deletes a lease; the host's app claims and reported instances go with it.
async fn delete(tx: &mut dyn Tx, lease: Lease) -> Result<Event> {
    tx.execute(
        "DELETE FROM leases WHERE host = $1",
        &[Value::from(&lease.host)],
    )
    .await?;
    let event = Event::LeaseDeleted { lease };
    changelog::append(tx, &event).await?;
    if let Event::LeaseDeleted { lease } = &event {
        crate::apps::drop_host_claims(tx, &lease.host).await?;
        crate::instances::drop_host(tx, &lease.host).await?;
    }
    Ok(event)
}

async fn put(tx: &mut dyn Tx, idx: u64, lease: &Lease) -> Result<()> {
    tx.execute(
        "INSERT INTO leases (host, idx, subnet, underlay_ip, vtep_mac, acquired_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (host) DO UPDATE SET underlay_ip = excluded.underlay_ip, \
         expires_at = excluded.expires_at",
        &[
            Value::from(&lease.host),
            Value::Int(idx as i64),
            Value::Text(lease.subnet.to_string()),
            Value::Text(lease.underlay_ip.to_string()),
            Value::from(&lease.vtep_mac),
            Value::Int(lease.acquired_at),
            Value::Int(lease.expires_at),
        ],
    )
    .await?;
    changelog::append(
        tx,
        &Event::LeasePut {
            lease: lease.clone(),
        },
    )
    .await?;
    Ok(())
}

/// Deletes every lease that expired at or before `cutoff` (unix seconds) and returns them;
/// their subnets return to the pool. Callers take the cutoff from
/// [`crate::controller::Expiry`], which honours the grace after a controller start.
pub async fn expire(tx: &mut dyn Tx, cutoff: i64) -> Result<Vec<Lease>> {
    let rows = tx
        .query(
            &format!("SELECT {COLUMNS} FROM leases WHERE expires_at <= $1 ORDER BY idx"),
            &[Value::Int(cutoff)],
        )
        .await?;
    let mut expired = Vec::new();
    for row in &rows {
        let lease = lease_from_row(row)?;
        delete(tx, lease.clone()).await?;
        expired.push(lease);
    }
    Ok(expired)
}

/// The lowest free subnet index at or after `from`, wrapping around once.
async fn free_index(tx: &mut dyn Tx, pool: &Pool, from: u64) -> Result<Option<u64>> {
    let size = pool.size();
    for start in [from % size, 0] {
        let rows = tx
            .query(
                "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM leases WHERE idx = CAST($1 AS BIGINT)) \
                 THEN CAST($1 AS BIGINT) ELSE \
                 (SELECT MIN(l.idx + 1) FROM leases l WHERE l.idx >= CAST($1 AS BIGINT) AND \
                  NOT EXISTS (SELECT 1 FROM leases m WHERE m.idx = l.idx + 1)) END",
                &[Value::Int(start as i64)],
            )
            .await?;
        if let Some(idx) = rows.first().map(|r| r.opt_int(0)).transpose()?.flatten() {
            if (idx as u64) < size {
                return Ok(Some(idx as u64));
            }
        }
    }
    Ok(None)
}

/// What an acquisition needs besides the request.
#[derive(Debug, Clone, Copy)]
pub struct Acquire<'a> {
    pub pool: &'a Pool,
    pub ttl_secs: i64,
    /// Leases expired at or before this unix time may be reclaimed; `None` during the grace
    /// after a controller start (nothing expires then, see [`crate::controller::Expiry`]).
    pub expire_before: Option<i64>,
}

/// The lease given, and the leases that expired to make room (to be logged and counted).
#[derive(Debug, Clone)]
pub struct Acquired {
    pub lease: Lease,
    pub expired: Vec<Lease>,
}

/// Gives `host` a lease: its current one, renewed, if it holds one; otherwise `wanted` (the
/// subnet it held before) if that is free, else a free subnet.
pub async fn acquire(
    tx: &mut dyn Tx,
    how: &Acquire<'_>,
    host: &str,
    underlay_ip: &str,
    wanted: Option<Ipv4Net>,
) -> Result<Acquired> {
    let pool = how.pool;
    let mut errors = FieldErrors::default();
    validate_host("host", host, &mut errors);
    let underlay: Option<IpAddr> = match underlay_ip.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
            errors.push("underlay_ip", format!("{ip} is not a unicast host address"));
            None
        }
        Ok(ip) => Some(ip),
        Err(_) if underlay_ip.is_empty() => {
            errors.push("underlay_ip", "is required");
            None
        }
        Err(_) => {
            errors.push(
                "underlay_ip",
                format!("{underlay_ip:?} is not an IPv4 or IPv6 address"),
            );
            None
        }
    };
    let wanted_idx = match wanted {
        Some(w) => match pool.index(w) {
            Some(idx) => Some(idx),
            None => {
                errors.push(
                    "subnet",
                    format!(
                        "{w} is not a /{} subnet of the overlay {}",
                        pool.host_prefix(),
                        pool.overlay()
                    ),
                );
                None
            }
        },
        None => None,
    };
    errors.into_result()?;
    let Some(underlay) = underlay else {
        return Err(Error::field("underlay_ip", "is required"));
    };
    let now = now();
    let mut expired = Vec::new();
    let expirable = |l: &Lease| {
        how.expire_before
            .is_some_and(|cutoff| l.expires_at <= cutoff)
    };

    // Another host on the same underlay address: only once its lease has expired (and the
    // grace after a controller start is over).
    if let Some(other) = find(tx, "underlay_ip", &underlay.to_string()).await? {
        if other.host != host {
            if !expirable(&other) {
                return Err(Error::Conflict(format!(
                    "underlay_ip {underlay} is held by host {:?} until its lease expires or is released",
                    other.host
                )));
            }
            delete(tx, other.clone()).await?;
            expired.push(other);
        }
    }

    if let Some(mut lease) = find(tx, "host", host).await? {
        // Renewal, or a restarted host: same subnet, new expiry (and maybe a new underlay IP).
        lease.underlay_ip = underlay;
        lease.expires_at = now + how.ttl_secs;
        let idx = index_of(pool, &lease)?;
        put(tx, idx, &lease).await?;
        return Ok(Acquired { lease, expired });
    }

    if let Some(cutoff) = how.expire_before {
        expired.extend(expire(tx, cutoff).await?);
    }
    let free = match wanted_idx {
        Some(idx) if !taken(tx, idx).await? => Some(idx),
        _ => None,
    };
    let idx = match free {
        Some(idx) => idx,
        None => {
            let cursor = changelog::meta(tx, "lease_cursor")
                .await?
                .unwrap_or(0)
                .max(0) as u64;
            let Some(idx) = free_index(tx, pool, cursor).await? else {
                return Err(Error::PoolExhausted(format!(
                    "no free /{} subnet left in overlay {}: all {} are leased",
                    pool.host_prefix(),
                    pool.overlay(),
                    pool.size()
                )));
            };
            changelog::set_meta(tx, "lease_cursor", ((idx + 1) % pool.size()) as i64).await?;
            idx
        }
    };
    let subnet = pool
        .subnet(idx)
        .ok_or_else(|| Error::Store(format!("subnet index {idx} outside the pool")))?;
    let lease = Lease {
        host: host.to_string(),
        underlay_ip: underlay,
        subnet,
        vtep_mac: Pool::vtep_mac(subnet),
        acquired_at: now,
        expires_at: now + how.ttl_secs,
    };
    put(tx, idx, &lease).await?;
    Ok(Acquired { lease, expired })
}

/// The pool index of a stored lease; fails if the store was made with another overlay.
fn index_of(pool: &Pool, lease: &Lease) -> Result<u64> {
    pool.index(lease.subnet).ok_or_else(|| {
        Error::Conflict(format!(
            "stored lease of host {:?} has subnet {} outside the configured overlay {} /{}",
            lease.host,
            lease.subnet,
            pool.overlay(),
            pool.host_prefix()
        ))
    })
}

/// Extends the lease `host` holds.
pub async fn renew(tx: &mut dyn Tx, pool: &Pool, ttl_secs: i64, host: &str) -> Result<Lease> {
    let mut errors = FieldErrors::default();
    validate_host("host", host, &mut errors);
    errors.into_result()?;
    let Some(mut lease) = find(tx, "host", host).await? else {
        return Err(Error::NotFound(format!(
            "host {host:?} holds no lease (it expired or was released): acquire a new one"
        )));
    };
    lease.expires_at = now() + ttl_secs;
    let idx = index_of(pool, &lease)?;
    put(tx, idx, &lease).await?;
    Ok(lease)
}

/// Returns the lease of `host` to the pool. Releasing a lease that is not held is not an error.
pub async fn release(tx: &mut dyn Tx, host: &str) -> Result<Option<Lease>> {
    let mut errors = FieldErrors::default();
    validate_host("host", host, &mut errors);
    errors.into_result()?;
    match find(tx, "host", host).await? {
        Some(lease) => {
            delete(tx, lease.clone()).await?;
            Ok(Some(lease))
        }
        None => Ok(None),
    }
}

/// Checks that every stored lease fits the configured pool (the overlay was not changed under
/// existing leases).
pub async fn check_pool(tx: &mut dyn Tx, pool: &Pool) -> Result<()> {
    for lease in list(tx).await? {
        index_of(pool, &lease)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_cuts_overlay_into_host_subnets() {
        let pool = Pool::new("10.255.0.0/16".parse().unwrap(), 24).unwrap();
        assert_eq!(pool.size(), 256);
        assert_eq!(pool.subnet(0).unwrap().to_string(), "10.255.0.0/24");
        assert_eq!(pool.subnet(255).unwrap().to_string(), "10.255.255.0/24");
        assert!(pool.subnet(256).is_none());
        assert_eq!(
            Pool::vtep_mac(pool.subnet(7).unwrap()),
            "ee:ee:0a:ff:07:00".to_string()
        );
    }

    #[test]
    fn pool_rejects_bad_prefixes() {
        let net: Ipv4Net = "10.255.0.0/16".parse().unwrap();
        assert!(Pool::new(net, 8).unwrap_err().contains("shorter"));
        assert!(Pool::new(net, 31).unwrap_err().contains("at most /30"));
        let big: Ipv4Net = "10.0.0.0/4".parse().unwrap();
        assert!(Pool::new(big, 30).is_err());
    }

    #[test]
    fn index_round_trips() {
        let pool = Pool::new("10.240.0.0/12".parse().unwrap(), 28).unwrap();
        for idx in [0u64, 1, 4095, 65535] {
            let subnet = pool.subnet(idx).unwrap();
            let lease = Lease {
                host: "h".into(),
                underlay_ip: "10.0.0.1".parse().unwrap(),
                subnet,
                vtep_mac: Pool::vtep_mac(subnet),
                acquired_at: 0,
                expires_at: 0,
            };
            assert_eq!(index_of(&pool, &lease).unwrap(), idx);
        }
    }
}
