//! routectl: operator CLI (see `routed::cli`; exit codes in `routed::cli::error`).

use clap::Parser;
use routed::cli::error::exit;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = routed::cli::Cli::parse();
    routed::logging::init_cli();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("routectl: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    runtime.block_on(routed::cli::run(cli))
}
