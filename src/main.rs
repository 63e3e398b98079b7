//! The `rdaemon` binary: parse, dispatch, exit.

use rdaemon::ExitCode;

fn main() -> ExitCode {
    rdaemon::logger::init();
    match rdaemon::cli::try_parse() {
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
