//! routectl: operator CLI (see `routed::cli`).

use clap::Parser;
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
            return ExitCode::from(1);
        }
    };
    runtime.block_on(routed::cli::run(cli))
}
