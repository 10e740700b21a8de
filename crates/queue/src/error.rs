//! One typed error for the whole format crate. Every error knows which class of
//! failure it is, and the class decides the exit status the tools report.

use std::fmt;
use std::io;
use std::path::Path;

/// The exit statuses of the tools (SPEC "Exit status"), all in one place:
/// the sysexits classes an [`Error`]'s [`Kind`] maps to, and the statuses
/// the tools decide themselves.
pub mod status {
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
    /// `q-run --once`: the job ran out of time (as GNU timeout).
    pub const TIMED_OUT: u8 = 124;
    /// `q-run --once`: q-run itself failed.
    pub const RUN_FAILED: u8 = 125;
    /// `q-run --once`: the command could not be run.
    pub const CANNOT_RUN: u8 = 126;
    /// `q-run --once`: the command was not found.
    pub const NOT_FOUND: u8 = 127;
    /// Killed by signal N: 128 + N.
    pub const SIGNALED: u8 = 128;
    pub const INTERRUPTED: u8 = 130;
}

/// What went wrong, coarsely: this decides the exit status (SPEC "Exit status").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad input data: a job line, a field, a record (65).
    Data,
    /// No such job or dependency (66).
    NoJob,
    /// Cannot create the queue or a file in it (73).
    Create,
    /// An I/O error, disk full included (74).
    Io,
    /// Temporary: a lock is held, nothing is ready (75).
    Busy,
    /// A stale token: the lease was taken over (76).
    LeaseLost,
    /// Refused for safety: foreign-writable queue, not a queue (77).
    Permission,
    /// The queue's format is newer than this tool (78).
    Format,
}

impl Kind {
    /// The exit status the tools use for this class (sysexits, SPEC).
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Data => status::DATA,
            Kind::NoJob => status::NO_JOB,
            Kind::Create => status::CANT_CREATE,
            Kind::Io => status::IO,
            Kind::Busy => status::TEMP,
            Kind::LeaseLost => status::LEASE_LOST,
            Kind::Permission => status::PERM,
            Kind::Format => status::FORMAT,
        }
    }
}

/// An error of the queue library: a class, a message that says what was being
/// done (with the path), and the underlying I/O error if any.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub msg: String,
    pub source: Option<io::Error>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Error {
        Error { kind, msg: msg.into(), source: None }
    }

    /// An I/O error while doing `what` on `path`; ENOSPC and friends stay `Io`.
    pub fn io(what: &str, path: &Path, err: io::Error) -> Error {
        Error {
            kind: Kind::Io,
            msg: format!("{what} {}", path.display()),
            source: Some(err),
        }
    }

    pub fn with_kind(mut self, kind: Kind) -> Error {
        self.kind = kind;
        self
    }

    pub fn lease_lost(id: &str, token: &str) -> Error {
        Error::new(
            Kind::LeaseLost,
            format!("lease-lost: job {id} token {token} is no longer the current claim (its lease was taken over or the job was settled)"),
        )
    }

    pub fn no_job(id: &str) -> Error {
        Error::new(Kind::NoJob, format!("no such job: {id}"))
    }

    /// The raw OS error number of the I/O source, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.as_ref().and_then(io::Error::raw_os_error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)?;
        if let Some(e) = &self.source {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Attach a path and an action to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}
