//! The `netwright` binary: the Docker-shaped CLI and the container process runtime, thin
//! callers of the engine (`netwright-engine`).

mod cli;
mod runtime;

use clap::Parser;

fn main() {
    netwright_engine::ctx::trace("main");
    let cli = cli::Cli::parse();
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
