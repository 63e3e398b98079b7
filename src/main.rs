//! The `rdaemon` binary: parse, dispatch, exit.

use rdaemon::ExitCode;
use rdaemon::cli::Cli;

fn main() -> ExitCode {
    rdaemon::logger::init();
    match Cli::try_parse() {
        Ok(cli) => rdaemon::commands::run(cli),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Success
            }
        }
    }
}
