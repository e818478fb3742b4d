//! # weft-api
//!
//! The contract between weft's controller and its clients (the agent on every host, the
//! `weft` CLI, the lab and the tests), in one crate that depends on no other weft crate (but
//! weft-kernel, for MacAddr) and on no server crate: no axum, no hyper server, no SQL. The controller (`weft-controller`)
//! serves this contract; everything else only speaks it.
//!
//! What it owns:
//! - [`model`]: the resources as they travel over the wire (leases, apps and tags, policies,
//!   changes, watch messages and lines, the error body) and what a set of policies allows
//!   ([`model::allowing`]);
//! - [`paths`]: the API's paths and how they are versioned;
//! - [`client`]: the typed HTTP client ([`Client`]), every request bounded in time, and the
//!   watch that resumes by itself with heartbeats, deadlines and backoff;
//! - [`tls`]: loading PEM files and re-reading them on change, the client TLS configuration,
//!   and the host identity an agent's certificate carries (`urn:weft:host:NAME`), read the
//!   same way by the controller and the agent;
//! - [`records`]: the host's files the CNI plugin, the agent and the CLI share: the host's
//!   lease ([`records::HostLease`]) and the attachment records ([`records::Plan`]);
//! - `pki` (feature `pki`, off by default): a lab CA and certificates made with rcgen, and the
//!   policy-write token file, for `weft certs`, the controller's first start without
//!   certificates, the lab and the tests. The agent does not enable it, so it builds no
//!   certificate generator.
//!
//! Invariant: the same types serialize on the server and deserialize in every client; a
//! client skips what a newer controller adds instead of failing (see [`paths`] on versions).
//! The client and TLS are feature `client` (on by default); the CNI plugin takes the crate
//! without it (the model and the records only). `tests/dependencies.rs` keeps the agent and the CNI plugin free of the server's crates.

#[cfg(feature = "client")]
pub mod client;
pub mod egress;
pub mod logging;
pub mod model;
pub mod paths;
#[cfg(feature = "pki")]
pub mod pki;
pub mod records;
#[cfg(feature = "client")]
pub mod tls;

#[cfg(feature = "client")]
pub use client::Client;
