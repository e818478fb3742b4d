//! `WEFT_COMMIT` for `weft_build_info{commit}`: the environment's if set (CI, packages), else
//! `git rev-parse --short HEAD`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=WEFT_COMMIT");
    let commit = std::env::var("WEFT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            if let Ok(dir) = Command::new("git")
                .args(["rev-parse", "--absolute-git-dir"])
                .output()
            {
                let dir = String::from_utf8_lossy(&dir.stdout).trim().to_string();
                if !dir.is_empty() {
                    println!("cargo:rerun-if-changed={dir}/HEAD");
                    println!("cargo:rerun-if-changed={dir}/logs/HEAD");
                }
            }
            let c = String::from_utf8(out.stdout).ok()?.trim().to_string();
            (out.status.success() && !c.is_empty()).then_some(c)
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=WEFT_COMMIT={commit}");
}
