//! weft-netavark: weft as a netavark plugin, so that podman 5 (netavark only, no CNI)
//! runs containers on weft networks: `podman network create -d weft NAME`. netavark execs
//! the plugin from its plugin directory (`/usr/libexec/netavark/weft`) with one of `create`,
//! `setup NETNS`, `teardown NETNS`, `info`, JSON on stdin and stdout, and
//! `{"error": "..."}` with a non-zero exit on failure (containers/netavark plugin-API.md).
//!
//! A third front end on the CNI plugin's machinery, not a copy: `setup` and `teardown` turn
//! netavark's input into the network configuration and environment of a CNI ADD and DEL
//! ([`translate`]) and run weft-cni's own commands in this process. So addresses, records,
//! host ports (and their conflict rules), the network's table, masquerade, anti-spoofing
//! and overlay mode are the CNI plugin's, and `weft containers`, the agent and `weft trace`
//! see podman's containers like any other.
//!
//! - [`api`]: netavark's types (what podman stores, what netavark passes, the status block)
//! - [`settings`]: a network's options, checked; `create`
//! - [`translate`]: netavark's setup/teardown input → weft-cni's configuration and
//!   environment; weft-cni's result → the status block

pub mod api;
pub mod settings;
pub mod translate;

use serde_json::Value;
use weft_cni::spec::{CniError, Command};

/// The most netavark may send on stdin: a network and one container's options are a few
/// KiB; the bound keeps a runaway writer from filling memory.
pub const MAX_INPUT: u64 = 1 << 20;

/// A failure, as netavark shows it to the podman user (`{"error": msg}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct Error {
    pub msg: String,
}

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error { msg: msg.into() }
    }
}

impl From<CniError> for Error {
    fn from(e: CniError) -> Self {
        Error::new(format!("weft-cni (code {}): {e}", e.code))
    }
}

/// The subcommand netavark asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subcommand {
    Info,
    Create,
    Setup { netns: String },
    Teardown { netns: String },
}

impl Subcommand {
    /// Reads the arguments after the program's name.
    pub fn parse(args: &[String]) -> Result<Subcommand, Error> {
        let netns = |cmd: &str| {
            args.get(1)
                .filter(|s| !s.is_empty())
                .cloned()
                .ok_or_else(|| {
                    Error::new(format!(
                        "{cmd}: the network namespace path argument is missing"
                    ))
                })
        };
        match args.first().map(String::as_str) {
            None | Some("info") => Ok(Subcommand::Info),
            Some("create") => Ok(Subcommand::Create),
            Some("setup") => Ok(Subcommand::Setup {
                netns: netns("setup")?,
            }),
            Some("teardown") => Ok(Subcommand::Teardown {
                netns: netns("teardown")?,
            }),
            Some(other) => Err(Error::new(format!(
                "unknown subcommand {other:?} (create, setup NETNS, teardown NETNS, info)"
            ))),
        }
    }
}

/// `info`: the plugin's version and the API version it speaks.
pub fn info() -> Value {
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "api_version": api::API_VERSION,
        "description": "weft container networking (bridge and overlay modes)",
    })
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, stdin: &[u8]) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(stdin);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            Error::new(format!("{what}: {}", e.inner()))
        } else {
            Error::new(format!("{path}: {}", e.inner()))
        }
    })
}

/// Runs one subcommand; `Ok(Some(json))` is printed on stdout.
pub async fn run(cmd: &Subcommand, stdin: &[u8]) -> Result<Option<Value>, Error> {
    match cmd {
        Subcommand::Info => Ok(Some(info())),
        Subcommand::Create => {
            let net: api::Network = decode("network configuration", stdin)?;
            let out = settings::create(net)?;
            Ok(Some(
                serde_json::to_value(out).map_err(|e| Error::new(e.to_string()))?,
            ))
        }
        Subcommand::Setup { netns } => {
            let exec: api::PluginExec = decode("setup input", stdin)?;
            let status = setup(netns, &exec).await?;
            Ok(Some(
                serde_json::to_value(status).map_err(|e| Error::new(e.to_string()))?,
            ))
        }
        Subcommand::Teardown { netns } => {
            let exec: api::PluginExec = decode("teardown input", stdin)?;
            teardown(netns, &exec).await?;
            Ok(None)
        }
    }
}

/// `setup NETNS`: a CNI ADD of this container's interface on this network.
pub async fn setup(netns: &str, exec: &api::PluginExec) -> Result<api::StatusBlock, Error> {
    let s = settings::Settings::of(&exec.network)?;
    let ports_held_elsewhere = translate::ports_held_elsewhere(&s, exec);
    let call = translate::call(Command::Add, &s, exec, netns, !ports_held_elsewhere)?;
    let result = weft_cni::commands::run(&call.env, &call.conf)
        .await?
        .ok_or_else(|| Error::new("weft-cni ADD returned no result"))?;
    translate::status(&result, &exec.network_options.interface_name)
}

/// `teardown NETNS`: a CNI DEL; nothing recorded (a second teardown) is success. The last
/// container out removes the network's bridge and table, as netavark's bridge driver does.
pub async fn teardown(netns: &str, exec: &api::PluginExec) -> Result<(), Error> {
    let s = settings::Settings::of(&exec.network)?;
    let call = translate::call(Command::Del, &s, exec, netns, false)?;
    weft_cni::commands::run(&call.env, &call.conf).await?;
    remove_network_if_unused(&s).await
}

/// Removes the network's kernel objects when no container is attached: its table (and
/// stamp) and, in bridge mode, its bridge unless something else is still enslaved to it.
/// Under the network's lock: an ADD records its attachment under that lock before it
/// creates anything, so it either sees the network removed or keeps it.
pub async fn remove_network_if_unused(s: &settings::Settings) -> Result<(), Error> {
    use weft_cni::store::NetworkStore;
    let dir = translate::data_dir(s);
    if !dir.join(&s.name).exists() {
        return Ok(());
    }
    let store = match &s.mode {
        settings::Mode::Bridge { .. } => NetworkStore::open(&dir, &s.name)?,
        settings::Mode::Overlay { lease_file } => {
            let lease = lease_file
                .clone()
                .unwrap_or_else(|| weft_api::records::DEFAULT_LEASE_FILE.into());
            NetworkStore::open_on_lease(&dir, &s.name, &lease)?
        }
    };
    let lock = store.lock()?;
    if !store.records::<weft_api::records::Plan>()?.is_empty() {
        return Ok(());
    }
    weft_cni::firewall::remove(&store, &lock, &s.name)?;
    if let settings::Mode::Bridge { bridge } = &s.mode {
        let host = weft_kernel::Netlink::current().map_err(CniError::from)?;
        let links = host.links().await.map_err(CniError::from)?;
        if let Some(br) = links.iter().find(|l| &l.name == bridge) {
            if links.iter().any(|l| l.master == Some(br.index)) {
                tracing::info!(%bridge, "the bridge still has ports: left in place");
            } else {
                host.del_link_by_name(bridge)
                    .await
                    .map_err(CniError::from)?;
            }
        }
    }
    Ok(())
}
