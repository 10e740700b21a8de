//! Exit statuses (SPEC "Exit status") and the one place that turns an error
//! into a message on stderr and a status.

use std::process::ExitCode;

pub use q_queue::status::*;

/// The status for an error: the class of a queue error, else 74 for I/O,
/// else 1.
pub fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
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
