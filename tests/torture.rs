//! "Prove it": the torture tests of DESIGN §9. A shared history checker
//! (`history`), the kill -9 storm (T1, `storm`), the crash-point sweep (T2,
//! `sweep`), the bad-input matrix of §9.4 (`matrix`) and the security cases
//! (`security`). What they show is summarised in docs/RELIABILITY.md.

mod crashfs;
mod history;
mod storm;
mod sweep;
mod matrix;
mod security;
mod power;
