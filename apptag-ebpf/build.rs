use which::which;

// The eBPF binary is linked by bpf-linker, which cargo does not know about. Rebuild when it
// changes, and fail early with a message that says how to get it.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => {
            println!(
                "cargo:warning=bpf-linker not found in PATH: run `cargo xtask setup` \
                 (it builds bpf-linker against Debian's LLVM 22)"
            );
            std::process::exit(1);
        }
    }
}
