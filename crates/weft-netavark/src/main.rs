//! The netavark plugin binary, installed as `weft` in netavark's plugin directory
//! (`/usr/libexec/netavark/weft`). See the crate's docs.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    weft_cni::exec::init_logging();
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
    weft_cni::exec::finish(outcome, |e| {
        serde_json::json!({ "error": e.msg }).to_string()
    })
}
