//! The on-disk format of a q queue directory and every protocol that moves a
//! job through it: push, claim, heartbeat, settle, reclaim, list. The tools
//! in the `q` package are thin layers over this crate.
//!
//! Invariants: this crate never prints, never exits the process, and never
//! reads the environment (except the test-only failpoints). Every state
//! change is a rename to a name that never existed before.

pub mod backend;
pub mod error;
pub mod failpoint;
pub mod gc;
pub mod lock;
pub mod fsx;
pub mod id;
pub mod ident;
pub mod job;
pub mod names;
pub mod queue;
pub mod record;
pub mod time;
#[cfg(test)]
mod testkit;

mod claim;
mod deps;
mod list;
mod push;
mod reclaim;
mod settle;
mod wake;

pub use claim::{Claim, ClaimOpts, Claimer};
pub use error::{Error, Kind, Result};
pub use job::{Job, NewJob, PushContext};
pub use list::{Counts, Entry};
pub use push::{Pushed, SEG_CAP};
pub use queue::{Durability, Queue};
pub use record::{Lease, Liveness, Outcome, Reason, ResultRecord, RunInfo, State};
pub use settle::{Located, SettleOpts, ToSettle, remove_tree, MAX_INTERRUPTS};
pub use reclaim::Reclaimed;
pub use wake::Waiter;

/// The supervisor lock file (held by the one live `q-supervise`).
pub fn supervisor_lock_path(q: &Queue) -> std::path::PathBuf {
    q.dir("locks").join("supervise.lock")
}

/// Does a live supervisor hold this queue's lock?
pub fn supervisor_running(q: &Queue) -> bool {
    match fsx::open_rw(&supervisor_lock_path(q)) {
        Ok(f) => f.try_lock().is_err(),
        Err(_) => false,
    }
}

/// Which output stream of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Queue {
    /// The log of one attempt's stdout or stderr: `var/<ID>/<A>.out|.err`.
    pub fn log_path(&self, id: &str, attempt: u32, stream: Stream) -> std::path::PathBuf {
        let ext = match stream {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        };
        self.var(id).join(format!("{attempt}.{ext}"))
    }

    /// The per-attempt workspace (`Q_WORKSPACE`): `var/<ID>/<A>.work/`.
    pub fn workspace_path(&self, id: &str, attempt: u32) -> std::path::PathBuf {
        self.var(id).join(format!("{attempt}.work"))
    }
}
pub use backend::Backend;
