//! The CNI plugin binary: `"type": "weft-cni"` in a network configuration list. Runtimes
//! exec it from their CNI plugin directory with CNI_* set and the configuration on stdin.

use std::io::{Read, Write};
use std::process::ExitCode;

use weft_cni::spec::{code, CniError, Env};

/// The plugin's entry point: reads CNI_* and stdin, runs the command, prints the result or
/// the error JSON, and returns the exit code (0 or 1).
fn main() -> ExitCode {
    if std::env::var_os("WEFT_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("WEFT_LOG"))
            .with_writer(std::io::stderr)
            .try_init();
    }
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
