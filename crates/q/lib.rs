//! The q tools. Each tool module exposes `main()`; the binaries in `bin/` are
//! shims. Nothing below `exit::run` ends the process.

pub mod cli;
pub mod cli_signals;
pub mod ended;
pub mod exit;
pub mod ids;
pub mod out;
pub mod sys;
pub mod table;

pub mod claim;
pub mod ctl;
pub mod front;
pub mod gc;
pub mod log;
pub mod ls;
pub mod push;
pub mod run;
pub mod supervise;
pub mod top;
pub mod wait;
