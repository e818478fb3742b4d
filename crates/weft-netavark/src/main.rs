//! The netavark plugin binary, installed as `weft` in netavark's plugin directory
//! (`/usr/libexec/netavark/weft`). See the crate's docs.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::var_os("WEFT_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("WEFT_LOG"))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = weft_netavark::Subcommand::parse(&args).and_then(|cmd| {
        let mut stdin = Vec::new();
        if cmd != weft_netavark::Subcommand::Info {
            std::io::stdin()
                .take(weft_netavark::MAX_INPUT + 1)
                .read_to_end(&mut stdin)
                .map_err(|e| weft_netavark::Error::new(format!("reading stdin: {e}")))?;
            if stdin.len() as u64 > weft_netavark::MAX_INPUT {
                return Err(weft_netavark::Error::new(format!(
                    "stdin: more than {} bytes",
                    weft_netavark::MAX_INPUT
                )));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| weft_netavark::Error::new(format!("starting runtime: {e}")))?;
        rt.block_on(weft_netavark::run(&cmd, &stdin))
    });
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(out, "{}", serde_json::json!({ "error": e.msg }));
            ExitCode::FAILURE
        }
    }
}
