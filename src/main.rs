use clap::Parser;

fn main() {
    netwright::ctx::trace("main");
    let cli = netwright::cli::Cli::parse();
    let code = match netwright::cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netwright: {}", netwright::runtime::one_line(&e));
            netwright::runtime::RunError::code_of(&e, 1)
        }
    };
    netwright::ctx::trace("exit");
    std::process::exit(code);
}
