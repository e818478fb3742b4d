//! The paths of the controller's HTTP API: one home for the requests the [`Client`] sends and
//! the routes the controller serves (and documents in its OpenAPI document).
//!
//! Versioning: the `/v1/` resources (and Cloud Foundry's `/networking/v1/external/` policy
//! API) change only by addition. A client skips what it does not know (watch kinds, event
//! types, fields: see [`crate::client`]), so a newer controller serves older agents; a change
//! that would break them gets a new version prefix beside the old one.
//!
//! Templates name their parameters in braces (`{id}`), as the controller's router writes them;
//! [`fill`] puts a percent-encoded value in.
//!
//! [`Client`]: crate::Client

/// Liveness and store reachability ([`crate::model::Health`]); no authentication.
pub const HEALTHZ: &str = "/healthz";
/// Prometheus metrics; no authentication.
pub const METRICS: &str = "/metrics";
/// The OpenAPI 3 document; no authentication.
pub const OPENAPI: &str = "/openapi.json";
/// All leases and the pool ([`crate::model::LeaseList`]).
pub const LEASES: &str = "/v1/leases";
/// Get (or renew) a host's subnet ([`crate::model::AcquireLease`]).
pub const LEASES_ACQUIRE: &str = "/v1/leases/acquire";
/// Extend a host's lease ([`crate::model::HostRef`]).
pub const LEASES_RENEW: &str = "/v1/leases/renew";
/// Return a host's subnet to the pool ([`crate::model::HostRef`]).
pub const LEASES_RELEASE: &str = "/v1/leases/release";
/// Apps and their tags ([`crate::model::AppList`]).
pub const APPS: &str = "/v1/apps";
/// One app: read, claim (`PUT`), unclaim (`DELETE`); `?host=` names the claiming host.
pub const APP: &str = "/v1/apps/{id}";
/// The apps a host claims ([`crate::model::ClaimSet`]).
pub const HOST_APPS: &str = "/v1/hosts/{host}/apps";
/// The containers a host runs (`PUT` [`crate::model::ContainerSet`], `GET`): its reported
/// instances ([`crate::model::InstanceList`]).
pub const HOST_CONTAINERS: &str = "/v1/hosts/{host}/containers";
/// Every running instance ([`crate::model::InstanceList`]); `?app=` for one app's.
pub const INSTANCES: &str = "/v1/instances";
/// The watch stream (JSON lines, [`crate::model::WatchLine`]); `?since=`, `?snapshot=parts`.
pub const WATCH: &str = "/v1/watch";
/// List (`GET`) and create (`POST`) policies ([`crate::model::PolicyList`]), as Cloud
/// Foundry's policy server.
pub const POLICIES: &str = "/networking/v1/external/policies";
/// Delete policies ([`crate::model::PolicyList`]).
pub const POLICIES_DELETE: &str = "/networking/v1/external/policies/delete";

/// Every app's tag ([`crate::model::TagList`]), as Cloud Foundry's policy server lists them.
pub const TAGS: &str = "/networking/v1/external/tags";

/// The network-wide egress mode: read (`GET`), set (`PUT`, [`crate::egress::EgressSettings`]).
pub const EGRESS: &str = "/v1/egress";
/// List (`GET`) and create or replace (`POST`) egress destinations
/// ([`crate::egress::DestinationList`]), in the spirit of Cloud Foundry's dynamic egress API.
pub const DESTINATIONS: &str = "/networking/v1/external/destinations";
/// Delete one destination (`DELETE`); 409 while egress policies name it.
pub const DESTINATION: &str = "/networking/v1/external/destinations/{id}";
/// List (`GET`) and create (`POST`) egress policies ([`crate::egress::EgressPolicyList`]).
pub const EGRESS_POLICIES: &str = "/networking/v1/external/egress_policies";
/// Delete egress policies ([`crate::egress::EgressPolicyList`]).
pub const EGRESS_POLICIES_DELETE: &str = "/networking/v1/external/egress_policies/delete";

/// Every path of the API.
pub const ALL: [&str; 21] = [
    HEALTHZ,
    METRICS,
    OPENAPI,
    LEASES,
    LEASES_ACQUIRE,
    LEASES_RENEW,
    LEASES_RELEASE,
    APPS,
    APP,
    HOST_APPS,
    HOST_CONTAINERS,
    INSTANCES,
    WATCH,
    POLICIES,
    POLICIES_DELETE,
    TAGS,
    EGRESS,
    DESTINATIONS,
    DESTINATION,
    EGRESS_POLICIES,
    EGRESS_POLICIES_DELETE,
];

/// `template` with its parameter `{name}` replaced by `value`, percent-encoded.
pub fn fill(template: &str, name: &str, value: &str) -> String {
    template.replace(&format!("{{{name}}}"), &encode(value))
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a path segment or a query
/// value).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_encoded() {
        assert_eq!(fill(APP, "id", "a b/c"), "/v1/apps/a%20b%2Fc");
        assert_eq!(fill(HOST_APPS, "host", "cell-1"), "/v1/hosts/cell-1/apps");
        assert_eq!(encode("ü~"), "%C3%BC~");
    }

    #[test]
    fn every_path_is_listed_once() {
        let mut all = ALL.to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), ALL.len());
        assert!(ALL.iter().all(|p| p.starts_with('/')));
    }
}
