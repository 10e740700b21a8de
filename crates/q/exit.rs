//! Exit statuses (SPEC "Exit status") and the one place that turns an error
//! into a message on stderr and a status.

use std::process::ExitCode;

pub use q_queue::status::*;

/// A command line that does not say what to do, found after clap's own
/// checks (a `q-ctl signal` without its signal): status 2, as clap's.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The status for an error: 2 for [`Usage`], the class of a queue error,
/// else 74 for I/O, else 1.
pub fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<Usage>().is_some() {
            return USAGE;
        }
        if let Some(qe) = cause.downcast_ref::<q_queue::Error>() {
            return qe.kind.exit_code();
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return IO;
        }
    }
    NOTHING
}

/// Run a tool's body: errors are printed as `tool: error: ...` and become
/// the exit status.
pub fn run(tool: &str, body: impl FnOnce() -> anyhow::Result<u8>) -> ExitCode {
    match body() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{tool}: error: {e:#}");
            ExitCode::from(code_of(&e))
        }
    }
}
