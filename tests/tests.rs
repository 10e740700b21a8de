//! The integration tests: one binary (see STYLE). They spawn the built tools
//! on temporary queues; timing-sensitive ones are named `serial_*` and run
//! one at a time (`.config/nextest.toml`).

mod util;
mod records;

mod claim;
mod ctl;
mod docs;
mod gc;
mod log;
mod ls;
mod pg;
mod push;
mod reach;
mod run;
mod seam;
mod supervise;
mod torture;
mod wait;
