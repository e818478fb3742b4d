//! # weft-controller
//!
//! weft's control plane: per-host overlay subnet leases, 16-bit app tags and policies behind one
//! HTTP API, stored in SQLite (embedded default) or PostgreSQL (several controllers), with a
//! watch stream of every change. See `crates/weft-controller/README.md` for the API.
//!
//! Dataflow: [`api`](crate) handler → [`controller::Controller`] (one transaction per operation)
//! → [`leases`] / [`apps`] / [`policies`] (the SQL of each resource, written once) →
//! [`changelog`] (revision per change) → [`store`] (SQLite or PostgreSQL) → [`watch`] (feed +
//! JSON-lines streams). [`client::Client`] is the typed client; [`cli`] the `weft` subcommands.
//!
//! ## Mounting the CLI subcommands in the `weft` binary
//!
//! Add `weft-controller = { path = "../weft-controller" }` to `crates/weft/Cargo.toml`, then in
//! the clap-derive `Command` enum of `weft`:
//!
//! ```ignore
//! #[derive(clap::Subcommand)]
//! enum Command {
//!     // ...the existing subcommands...
//!     /// Run the controller (leases, app tags, policies, watch).
//!     Controller(weft_controller::ControllerArgs),
//!     /// Subnet leases held by hosts (list, release HOST).
//!     Leases(weft_controller::LeasesArgs),
//!     /// Apps and their tags.
//!     Apps(weft_controller::AppsArgs),
//!     /// Policies between apps (add, list, rm).
//!     Policy(weft_controller::PolicyArgs),
//!     /// Create a lab CA, controller and agent certificates.
//!     Certs(weft_controller::CertsArgs),
//! }
//! ```
//!
//! and dispatch each with `args.run().await` (each returns `anyhow::Result<()>`), inside a tokio
//! runtime (multi-threaded recommended for `controller`):
//!
//! ```ignore
//! match cli.command {
//!     Command::Controller(a) => a.run().await?,
//!     Command::Leases(a) => a.run().await?,
//!     Command::Apps(a) => a.run().await?,
//!     Command::Policy(a) => a.run().await?,
//!     Command::Certs(a) => a.run().await?,
//!     // ...
//! }
//! ```
//!
//! If `weft`'s `main` is synchronous, wrap the call:
//! `tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(a.run())`.
//! `ControllerArgs::run` installs a tracing subscriber (env `WEFT_LOG`) unless one is already set.
//! The client commands read the controller URL from `--controller` or `WEFT_CONTROLLER`, and
//! `--ca/--cert/--key/--token` or `WEFT_CA/WEFT_CERT/WEFT_KEY/WEFT_TOKEN`; all take `--json`.
//!
//! ## Starting a controller in-process (tests, agent tests)
//!
//! ```ignore
//! let mut args = weft_controller::ControllerArgs::parse_from(["controller",
//!     "--listen", "127.0.0.1:0", "--store", "sqlite::memory:", "--insecure-http"]);
//! let server = args.start().await?;          // RunningServer: url(), controller(), shutdown()
//! let client = weft_controller::Client::builder(server.url()).build()?;
//! // ...
//! server.shutdown().await;
//! ```
//! (`ControllerArgs` derives `clap::Args`; wrap it in a `#[derive(Parser)]` struct with
//! `#[command(flatten)]` to use `parse_from`, or fill the public fields directly as the crate's
//! tests do in `tests/common.rs`.)

#![recursion_limit = "256"]
mod api;
pub mod apps;
pub mod auth;
pub mod changelog;
pub mod client;
pub mod controller;
pub mod error;
pub mod leases;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod policies;
pub mod server;
pub mod store;
pub mod tls;
pub mod watch;

pub use client::Client;
pub mod certs;
pub mod cli;

pub use cli::{AppsArgs, CertsArgs, ControllerArgs, LeasesArgs, PolicyArgs};
