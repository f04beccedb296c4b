//! Builds the kernel programs (`apptag-ebpf`) for bpfel-unknown-none with aya-build, so that
//! an ordinary `cargo build -p apptag` embeds a fresh object in the binary.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true") {
        // Pure user-space work (pcapng, report) can build without the eBPF toolchain; the
        // binary then says at run time that it carries no kernel programs.
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
        std::fs::write(out.join("apptag"), b"").context("writing the empty kernel object")?;
        return Ok(());
    }
    preflight()?;
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading the workspace metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "apptag-ebpf")
        .ok_or_else(|| anyhow!("apptag-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context(
        "building the eBPF programs failed; if the toolchain is missing, run `cargo xtask setup` \
         (installs rust-src for nightly and bpf-linker built against LLVM 22)",
    )
}

/// Fails with an actionable message instead of a wall of linker errors.
fn preflight() -> anyhow::Result<()> {
    let how = "run `cargo xtask setup` (it installs the nightly rust-src component and builds \
               bpf-linker against Debian's LLVM 22), or set AYA_BUILD_SKIP=1 to build without \
               the kernel programs";
    let linker_found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("bpf-linker").is_file()))
        .unwrap_or(false);
    if !linker_found {
        return Err(anyhow!("bpf-linker is not in PATH: {how}"));
    }
    let sysroot = std::process::Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output();
    match sysroot {
        Ok(out) if out.status.success() => {
            let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let src = std::path::Path::new(&root).join("lib/rustlib/src/rust/library/core");
            if !src.is_dir() {
                return Err(anyhow!(
                    "the nightly toolchain lacks the rust-src component: {how}"
                ));
            }
        }
        _ => return Err(anyhow!("no nightly toolchain found through rustup: {how}")),
    }
    Ok(())
}
