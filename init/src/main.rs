//! `/init`: everything lives in the library; see `appliance_init::run`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // `run` only returns when this process is not PID 1 (someone ran the binary by hand):
    // then it must not mount, format, kill or reboot anything.
    let Err(e) = appliance_init::run();
    let _ = writeln!(std::io::stderr(), "appliance-init: {e}");
    ExitCode::from(2)
}
