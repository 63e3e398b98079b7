//! The `rdaemon` binary: parse, dispatch, exit.

use rdaemon::__cli::{Cli, ExitCode, init_logging, run};

fn main() -> ExitCode {
    init_logging();
    match Cli::try_parse() {
        Ok(cli) => run(cli),
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
