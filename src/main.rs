//! The `rdaemon` binary: parse, dispatch, exit.
//!
//! The entry point is C's `main`, not Rust's: std's set-up before `main`
//! (finding the main thread's stack guard, which glibc does by reading
//! `/proc/self/maps`, and an alternate signal stack) costs about 0.2 ms of
//! every start on a glibc build (BENCHMARKS.md, "Start"), and rdaemon
//! needs none of it. The two things of it that matter here, standard
//! descriptors that are surely open and SIGPIPE ignored, are done by
//! [`rdaemon::__cli::enter`].
#![no_main]

use std::ffi::{CStr, OsString, c_char, c_int};
use std::os::unix::ffi::OsStringExt;

use rdaemon::__cli::{Cli, ExitCode, enter, exit_with, init_logging, run};

/// musl's malloc hands memory back to the kernel at once, so a run of
/// rdaemon spent about a third of its time in mmap and munmap; dlmalloc
/// keeps what it got (BENCHMARKS.md, "Start").
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// # Safety
/// Called by the C runtime with `argc` valid strings in `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let args: Vec<OsString> = (0..argc.max(0) as usize)
        .map(|i| {
            // SAFETY: the C runtime passes argc valid NUL-terminated strings.
            let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
            OsString::from_vec(arg.to_bytes().to_vec())
        })
        .collect();
    enter();
    init_logging();
    let code = match Cli::try_parse_from(args) {
        Ok(cli) => run(cli),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Success
            }
        }
    };
    exit_with(code)
}
