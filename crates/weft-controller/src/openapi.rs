//! The OpenAPI 3.1 document served at `/openapi.json` ([`weft_api::paths::OPENAPI`]), generated
//! by utoipa: the schemas from `weft_api::model` (its `openapi` feature derives `ToSchema`),
//! the operations from the `#[utoipa::path]` annotations on the handlers in [`crate::api`].
//! `tests/openapi.rs` checks that every route the router serves is documented and that real
//! responses validate against the documented schemas.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "weft controller",
        description = "Subnet leases, app tags and policies for weft hosts. Agents authenticate with client certificates (mTLS) that name their host (URI SAN urn:weft:host:NAME) and act only as that host (another host's lease or claims: 403); people and scripts with a bearer token (the scheme is case-insensitive, as the cf CLI sends `bearer`), which may act for any host; policy writes need the token. The /networking/v1/external/ resources are Cloud Foundry's policy server v1 API. Request bodies above --max-body-bytes (default 1 MiB) get 413 before they are read. Every error has the ErrorBody shape (CF's `error` plus a `code` and the bad `fields`).",
    ),
    paths(
        api::healthz,
        api::metrics,
        api::openapi_doc,
        api::list_leases,
        api::acquire_lease,
        api::renew_lease,
        api::release_lease,
        api::list_apps,
        api::get_app,
        api::claim_app,
        api::unclaim_app,
        api::set_claims,
        api::get_claims,
        api::set_containers,
        api::get_containers,
        api::list_instances,
        api::list_policies,
        api::create_policies,
        api::delete_policies,
        api::list_tags,
        api::watch,
        api::get_egress_mode,
        api::set_egress_mode,
        api::list_destinations,
        api::put_destinations,
        api::delete_destination,
        api::list_egress_policies,
        api::create_egress_policies,
        api::delete_egress_policies,
    ),
    components(schemas(weft_api::model::Event, weft_api::model::Change, weft_api::model::Snapshot)),
    modifiers(&Security)
)]
struct Doc;

/// The two ways to authenticate: an agent's client certificate, or the bearer token.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "clientCert",
            SecurityScheme::MutualTls {
                description: Some(
                    "a client certificate signed by the controller's client CA; its URI SAN urn:weft:host:NAME is the host it acts as"
                        .into(),
                ),
                extensions: None,
            },
        );
    }
}

/// The document, with this build's version.
pub fn document() -> serde_json::Value {
    let mut doc = Doc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    serde_json::to_value(doc).expect("the OpenAPI document serializes")
}

#[cfg(test)]
mod tests {
    /// The document names exactly the contract's paths (the ones the router serves).
    #[test]
    fn documents_every_path_of_the_contract() {
        let doc = super::document();
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort();
        let mut contract = weft_api::paths::ALL.to_vec();
        contract.sort();
        assert_eq!(documented, contract);
    }
}
