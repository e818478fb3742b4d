//! The CNI plugin binary: `"type": "weft-cni"` in a network configuration list.
fn main() -> std::process::ExitCode {
    weft_cni::main()
}
