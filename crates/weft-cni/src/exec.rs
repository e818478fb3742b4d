//! What a plugin binary does around its command (shared by `weft-cni` and `weft-netavark`):
//! logging to stderr when `WEFT_LOG` is set, and printing the outcome as the exit code and
//! the JSON on stdout.

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

/// Logs to stderr with `WEFT_LOG`'s filter when it is set (stdout carries the result).
pub fn init_logging() {
    if std::env::var_os("WEFT_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("WEFT_LOG"))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Prints the result (if any) or the error as `error_json` renders it on stdout, and returns
/// the exit code: 0 on success, 1 on error.
pub fn finish<E>(
    outcome: Result<Option<Value>, E>,
    error_json: impl FnOnce(E) -> String,
) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(out, "{}", error_json(e));
            ExitCode::FAILURE
        }
    }
}
