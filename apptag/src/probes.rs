//! Loading and attaching the kernel programs embedded in this binary.

/// The eBPF object built from `apptag-ebpf` by the build script. Empty when built with
/// `AYA_BUILD_SKIP=1`.
pub static KERNEL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/apptag"));
