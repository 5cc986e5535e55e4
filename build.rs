//! Release binaries lay out their code in the order of
//! `link/text-order.txt`: the functions a running gateway executes,
//! hottest first, packed together at the start of `.text`.
//!
//! Why: the kernel maps code in 64 KiB blocks around each page a process
//! touches, and a linker left to itself scatters the ~2 MiB of functions
//! cutover runs across its 11 MiB of code, so about 7 MiB of it was
//! resident. Packed, the same functions take a third of that, and the hot
//! path shares fewer cache lines and TLB entries with code that never
//! runs. `bench/text-order.sh` regenerates the list (docs/performance.md).
//!
//! The option is LLD's, the linker rustc uses by default on
//! x86_64-unknown-linux-gnu since Rust 1.90. Anywhere else, or with a
//! linker of one's own, or with `CUTOVER_TEXT_ORDER=off`, the build links
//! as it would without this file. A symbol the list names that a build no
//! longer has is skipped without a warning: the list only orders.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER: &str = "link/text-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "CUTOVER_TEXT_ORDER",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Some(path) = order_file() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={path}");
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// The ordering file's absolute path, when this build links with the
/// default rust-lld of a release build on x86_64 Linux.
fn order_file() -> Option<String> {
    if env::var("CUTOVER_TEXT_ORDER").as_deref() == Ok("off")
        || env::var("PROFILE").as_deref() != Ok("release")
        || env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return None;
    }
    // A linker chosen in the flags may not be LLD.
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker") || flags.contains("link-self-contained") {
        return None;
    }
    if !rustc_links_with_lld() {
        return None;
    }
    let path = Path::new(&env::var("CARGO_MANIFEST_DIR").ok()?).join(ORDER);
    path.is_file().then(|| path.display().to_string())
}

/// rustc 1.90 or later, which links x86_64-unknown-linux-gnu with its own
/// LLD unless told otherwise.
fn rustc_links_with_lld() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
