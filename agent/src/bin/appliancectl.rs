//! `appliancectl`: the command-line client of the appliance API.

use std::process::ExitCode;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    appliance_agent::cli::main()
}
