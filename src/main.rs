//! The `netwright` binary: the Docker-shaped CLI and the container process runtime, thin
//! callers of the engine (`netwright-engine`).

mod cli;
mod frontends;
mod runtime;

use clap::Parser;

fn main() {
    // One malloc arena for all threads: a command's second thread (the firewall's and the
    // files' part of an attach) would otherwise make an arena of its own, whose first
    // pages are page faults the short command pays for nothing.
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    netwright_engine::ctx::trace("main");
    // Installed as `netavark` (a link in Podman's helper_binaries_dir): netavark's protocol.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let called = args.first().and_then(|a| std::path::Path::new(a).file_name()).map(|n| n.to_owned());
    if called.as_deref().is_some_and(|n| n == "netavark") {
        args.insert(1, "netavark".into());
    }
    // Installed as `netwright-cni` in a CNI plugin directory: the CNI protocol.
    if called.as_deref().is_some_and(|n| n == "netwright-cni") {
        std::process::exit(frontends::cni::run());
    }
    // Podman looks for aardvark-dns beside netavark; netwright answers names itself.
    if called.as_deref().is_some_and(|n| n == "aardvark-dns") {
        eprintln!("netwright: names are served by netwright's embedded resolver; aardvark-dns has nothing to do");
        std::process::exit(0);
    }
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            e.exit()
        }
        Err(e) => {
            // One line, like every other error (clap's own is several).
            eprintln!("netwright: {}", cli::usage_error(&e));
            std::process::exit(2);
        }
    };
    netwright_engine::ctx::trace("arguments read");
    let code = match cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netwright: {}", netwright_engine::error::one_line(&e));
            runtime::exit_code(&e)
        }
    };
    netwright_engine::ctx::trace("exit");
    std::process::exit(code);
}
