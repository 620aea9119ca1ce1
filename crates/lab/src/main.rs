//! `netwright-lab`: the demo, the benchmark and the side-by-side comparison with the peers.
//! Lives outside the product: it drives the `netwright` binary as a user would, inside
//! throwaway sandboxes (`netwright-testkit`).
//!
//!     cargo run --release -p netwright-lab -- demo
//!     cargo run --release -p netwright-lab -- bench [--compare | --overlay | --services | --ipv6 | --scale] ...

mod bench;
mod compare;
mod demo;
mod overlay;
mod scale;
mod services;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "netwright-lab", about = "netwright's demo, benchmark and comparison with netavark and CNI")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build a throwaway sandbox and show netwright at work (leaves nothing behind)
    Demo,
    /// Time container setup and release, publishing, throughput and DNS in a sandbox
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = netwright_bin().and_then(|bin| match cli.command {
        Cmd::Demo => demo::run(&bin),
        Cmd::Bench(args) => bench::run(&bin, &args),
    });
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("netwright-lab: {}", netwright_engine::error::one_line(&e));
            std::process::exit(1);
        }
    }
}

/// The `netwright` binary beside this one (the same cargo target directory). Under `cargo
/// run` it is built first, so `cargo run -p netwright-lab -- demo` is one command and never
/// measures a stale binary.
fn netwright_bin() -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating netwright-lab")?;
    let dir = me.parent().context("netwright-lab has no directory")?;
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--quiet", "-p", "netwright", "--bin", "netwright"]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().context("building netwright with cargo")?;
        if !status.success() {
            bail!("building the netwright binary failed (see above)");
        }
    }
    let bin = dir.join("netwright");
    if !bin.exists() {
        bail!("{} not found: build it first (`cargo build -p netwright`)", bin.display());
    }
    Ok(bin)
}
