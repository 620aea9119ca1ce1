//! Builds `netwright-monitor` (monitor/netwright-monitor.rs): the program a `run -d`
//! monitor becomes once its container runs, carried inside the `netwright` binary.
//!
//! Why not a `[[bin]]`: it must be freestanding (no std, no libc, static, non-PIE) to cost
//! a few kB per running container, and a no_std binary needs `panic = "abort"` — a
//! setting cargo only takes for the whole workspace, where netwright itself wants
//! unwinding (a panicking resolver task must not take the resolver down). So it is one
//! direct rustc call, with the same compiler and target cargo uses.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "monitor/netwright-monitor.rs";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed=build.rs");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" || !matches!(arch.as_str(), "x86_64" | "aarch64") {
        panic!("netwright's monitor is written for Linux on x86_64 or aarch64, not {os} on {arch}");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("netwright-monitor");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition", "2024", "--crate-type", "bin", "--crate-name", "netwright_monitor", "--target", &target])
        .args(["-C", "panic=abort", "-C", "opt-level=s", "-C", "debuginfo=0", "-C", "strip=symbols"])
        .args(["-C", "relocation-model=static", "-C", "target-feature=+crt-static"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib", "-C", "link-arg=-static"])
        .args(["-C", "link-arg=-no-pie", "-D", "warnings"])
        .arg("-o")
        .arg(&out)
        .arg(SOURCE);
    let status = cmd.status().expect("running rustc for netwright-monitor");
    if !status.success() {
        panic!("building {SOURCE} failed (see above)");
    }
}
