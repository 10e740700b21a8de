//! Exit statuses (SPEC "Exit status") and the one place that turns an error
//! into a message on stderr and a status.

use std::process::ExitCode;

pub const OK: u8 = 0;
/// Nothing to do / not all jobs succeeded.
pub const NOTHING: u8 = 1;
pub const USAGE: u8 = 2;
pub const DATA: u8 = 65;
pub const NO_JOB: u8 = 66;
pub const CANT_CREATE: u8 = 73;
pub const IO: u8 = 74;
pub const TEMP: u8 = 75;
pub const LEASE_LOST: u8 = 76;
pub const PERM: u8 = 77;
pub const FORMAT: u8 = 78;
pub const TIMED_OUT: u8 = 124;
pub const INTERRUPTED: u8 = 130;

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
