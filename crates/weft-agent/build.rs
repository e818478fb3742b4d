//! Compiles the fast path's BPF program (bpf/fastpath.c) with clang when it is there. Without
//! clang the agent is built without the fast path and says so when it starts
//! (`--fastpath auto` then runs on the kernel path alone; `--fastpath on` refuses to start).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/fastpath.c");
    println!("cargo:rerun-if-env-changed=WEFT_CLANG");
    println!("cargo:rustc-check-cfg=cfg(weft_fastpath)");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    let obj = out.join("fastpath.o");
    let clang = std::env::var("WEFT_CLANG").unwrap_or_else(|_| "clang".into());
    // <linux/bpf.h> wants <asm/types.h>, which Debian keeps under the multiarch directory.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = Command::new(&clang)
        .args([
            "-g", "-O2", "-target", "bpf", "-Wall", "-Werror", "-I", &multiarch, "-c",
        ])
        .arg("bpf/fastpath.c")
        .arg("-o")
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => println!("cargo:rustc-cfg=weft_fastpath"),
        Ok(s) => println!(
            "cargo:warning=clang failed ({s}) on bpf/fastpath.c: weft-agent is built without the BPF fast path"
        ),
        Err(e) => println!(
            "cargo:warning=no clang ({e}): weft-agent is built without the BPF fast path (apt-get install clang)"
        ),
    }
}
