//! routed-cni: the CNI plugin (see `routed::cni`). Prints the result, or the error as JSON, on
//! stdout; exits 1 on error.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = routed::cni::spec::CniError::new(
            routed::cni::spec::code::IO_FAILURE,
            "cannot read stdin",
            e.to_string(),
        );
        println!("{}", serde_json::to_string(&err).unwrap_or_default());
        return ExitCode::from(1);
    }
    match routed::cni::run(&vars, &stdin) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("{}", serde_json::to_string(&err).unwrap_or_default());
            ExitCode::from(1)
        }
    }
}
