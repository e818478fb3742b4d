//! # weft-controller
//!
//! weft's control plane: per-host overlay subnet leases, 16-bit app tags and policies behind one
//! HTTP API, stored in SQLite (embedded default) or PostgreSQL (several controllers), with a
//! watch stream of every change. See `crates/weft-controller/README.md` for the API.
//!
//! Dataflow: [`api`](crate) handler → [`controller::Controller`] (one transaction per operation)
//! → [`leases`] / [`apps`] / [`policies`] (the SQL of each resource, written once) →
//! [`changelog`] (revision per change) → [`store`] (SQLite or PostgreSQL) → [`watch`] (feed +
//! JSON-lines streams). Around it: [`server`] (TCP or TLS connections, [`tls`]), [`auth`] (who
//! may call what), [`limits`] (connections, time, body size), [`metrics`], [`openapi`], and
//! [`daemon`], the `weft controller` arguments that put it together.
//!
//! This crate is the server only. What travels over the wire (the resources, the paths, the
//! error body) is `weft-api`'s [`model`](weft_api::model) and [`paths`](weft_api::paths); the
//! typed client is [`weft_api::Client`] and the client commands (`weft leases`, `apps`,
//! `policy`, `certs`) live in the `weft` CLI. Nothing here is needed to speak to a controller:
//! the agent depends on `weft-api`, not on this crate.
//!
//! ## Mounting the daemon in a binary
//!
//! [`ControllerArgs`] derives `clap::Args`: the `weft` binary mounts it as
//! `Controller(weft_controller::ControllerArgs)` and runs `args.run().await` inside a tokio
//! runtime (multi-threaded recommended). `ControllerArgs::run` installs a tracing subscriber
//! (env `WEFT_LOG`, `--log-format`) unless one is already set, and stops on SIGINT or SIGTERM.
//!
//! ## Starting a controller in-process (tests, agent tests)
//!
//! ```ignore
//! let args = weft_controller::ControllerArgs::from_args(["--listen", "127.0.0.1:0",
//!     "--store", "sqlite::memory:", "--insecure-http"])?;
//! let server = args.start().await?;          // RunningServer: url(), controller(), shutdown()
//! let client = weft_api::Client::builder(server.url()).build()?;
//! // ...
//! server.shutdown().await;
//! ```

#![recursion_limit = "256"]
mod api;
pub mod apps;
pub mod auth;
pub mod changelog;
pub mod controller;
pub mod daemon;
pub mod egress;
pub mod error;
pub mod filter;
pub mod instances;
pub mod leases;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod policies;
pub mod server;
pub mod store;
pub mod tls;
pub mod watch;

pub use daemon::ControllerArgs;
