//! weft-cni: a CNI 1.1 plugin. Bridge mode does, per container, what seed 003 does by hand.
//!
//! - [`spec`]: the CNI protocol (environment, errors, results of every version)
//! - [`config`]: the network configuration, checked field by field
//! - [`store`], [`ipam`]: state on disk and address allocation
//! - [`plan`]: what one container's network should be (pure)
//! - [`bridge`], [`firewall`]: bridge mode, applying and undoing a plan (kernel, nftables)
//! - [`ports`]: host ports of every network on the host, one registry (nftables)
//! - [`overlay`], [`lease`]: overlay mode (routed /32 veth, address from the host's lease)
//! - [`commands`]: ADD, DEL, CHECK, GC, STATUS, VERSION

pub mod bridge;
pub mod commands;
pub mod config;
pub mod firewall;
pub mod ipam;
pub mod lease;
pub mod overlay;
pub mod plan;
pub mod ports;
pub mod spec;
pub mod store;
pub mod veth;

use std::io::{Read, Write};
use std::process::ExitCode;

use spec::{code, CniError, Env};

/// The plugin's entry point: reads CNI_* and stdin, runs the command, prints the result or
/// the error JSON, and returns the exit code (0 or 1).
pub fn main() -> ExitCode {
    if std::env::var_os("WEFT_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("WEFT_LOG"))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = crate::config::peek_version(&stdin).unwrap_or_else(|| "1.1.0".to_string());
    let outcome = match read {
        Err(e) => Err(CniError::new(
            code::IO_FAILURE,
            format!("reading stdin: {e}"),
        )),
        Ok(_) => Env::from_vars(|k| std::env::var(k).ok()).and_then(|env| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CniError::new(code::IO_FAILURE, format!("starting runtime: {e}")))?;
            rt.block_on(crate::commands::run(&env, &stdin))
        }),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}
