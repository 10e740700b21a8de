//! A q queue: the [`Backend`] seam every tool speaks to, and its first
//! implementation, the queue directory (docs/FORMAT.md) with every protocol
//! that moves a job through it: push, claim, heartbeat, settle, reclaim,
//! list. The tools in the `q` package are thin layers over the trait.
//!
//! Invariants: this crate never prints, never exits the process, and never
//! reads the environment (except the test-only failpoints). Every state
//! change of a directory queue is a rename to a name that never existed
//! before. The layout of a directory queue (`fsx`, `names`, `Queue`) is
//! private: only with the test-only feature `layout` can anything outside
//! this crate see it.

pub mod backend;
pub mod error;
pub mod failpoint;
pub mod gc;
pub mod id;
pub mod ident;
pub mod job;
pub mod local;
pub mod lock;
pub mod owner;
pub mod record;
pub mod rate;
pub mod resolve;
pub mod slots;
pub mod supervisor;
pub mod time;
#[cfg(test)]
mod testkit;

/// Declare modules that are the directory's layout: public only with the
/// test-only feature `layout` (tests that must look at files use it).
macro_rules! layout_modules {
    ($($m:ident),*) => {$(
        #[cfg(feature = "layout")]
        pub mod $m;
        #[cfg(not(feature = "layout"))]
        mod $m;
    )*};
}
layout_modules!(fsx, names, queue);

mod claim;
mod deps;
mod dir;
mod idle;
mod import;
mod list;
mod logs;
mod pending;
#[cfg(feature = "postgres")]
pub mod pg;
mod presence;
mod push;
mod reclaim;
mod revise;
mod settle;
mod wake;

pub use backend::{Backend, Claimer, Location, OpenOpts, Presence, Singleton, Waiter};
pub use claim::{Claim, ClaimOpts};
pub use error::{Error, Kind, Result, status};
pub use idle::Idle;
pub use import::Import;
pub use job::{Job, NewJob, PushContext};
pub use list::{Counts, Entry, Listed, claim_order};
pub use push::{Pushed, SEG_CAP};
pub use queue::{Durability, Pause};
pub use reclaim::Reclaimed;
pub use resolve::{Candidate, Resolved};
pub use record::{Ask, Chunk, Counters, Lease, Liveness, Outcome, Reason, Request, ResultRecord, RunInfo, State, Stream, Usage};
pub use settle::{MAX_INTERRUPTS, SettleOpts, ToSettle};

#[cfg(feature = "layout")]
pub use claim::DirClaimer;
#[cfg(feature = "layout")]
pub use queue::Queue;
#[cfg(feature = "layout")]
pub use settle::{Located, remove_tree};
