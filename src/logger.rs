//! The `log` backend: rdaemon's own messages.
//!
//! Until a supervisor opens its output, messages go to stderr as
//! `rdaemon: warning: …`. A supervisor then routes them into the same place
//! as COMMAND's output (log file or syslog) with [`route_to`].

use std::io::Write;
use std::sync::Mutex;

type Route = Box<dyn FnMut(log::Level, &str) + Send>;

static ROUTE: Mutex<Option<Route>> = Mutex::new(None);

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let mut route = ROUTE.lock().unwrap_or_else(|p| p.into_inner());
        match route.as_mut() {
            Some(f) => f(record.level(), &msg),
            None => {
                let prefix = match record.level() {
                    log::Level::Error => "error: ",
                    log::Level::Warn => "warning: ",
                    _ => "",
                };
                let _ = writeln!(std::io::stderr(), "rdaemon: {prefix}{msg}");
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (once; later calls do nothing).
pub fn init() {
    static LOGGER: Logger = Logger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Sends every later message to `f` instead of stderr.
pub fn route_to(f: impl FnMut(log::Level, &str) + Send + 'static) {
    *ROUTE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
}
