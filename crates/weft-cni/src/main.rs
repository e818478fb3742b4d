//! The CNI plugin binary: `"type": "weft-cni"` in a network configuration list. Runtimes
//! exec it from their CNI plugin directory with CNI_* set and the configuration on stdin.

use std::io::Read;
use std::process::ExitCode;

use weft_cni::spec::{code, CniError, Env};

/// The plugin's entry point: reads CNI_* and stdin, runs the command, prints the result or
/// the error JSON, and returns the exit code (0 or 1).
fn main() -> ExitCode {
    weft_cni::exec::init_logging();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = weft_cni::config::peek_version(&stdin).unwrap_or_else(|| "1.1.0".to_string());
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
            rt.block_on(weft_cni::commands::run(&env, &stdin))
        }),
    };
    weft_cni::exec::finish(outcome, |e| e.to_json(&version).to_string())
}
