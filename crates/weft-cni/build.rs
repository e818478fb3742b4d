//! Link `weft-cni` with packed relative relocations (DT_RELR) when the linker supports them:
//! a runtime execs the plugin for every ADD and DEL, and the dynamic loader then applies
//! ~7,000 relative relocations one by one; packed, they cost almost nothing (about 0.1 ms of
//! every call on the benchmark machine). Needs GNU ld 2.38+ (probed) and glibc 2.36+ to run.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.contains("linux-gnu") {
        return;
    }
    let supported = Command::new("ld")
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("pack-relative-relocs"))
        .unwrap_or(false);
    if supported {
        println!("cargo:rustc-link-arg-bin=weft-cni=-Wl,-z,pack-relative-relocs");
    }
}
