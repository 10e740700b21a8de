//! The integration tests: one binary (see STYLE). They spawn the built tools
//! on temporary queues; timing-sensitive ones are named `serial_*` and run
//! one at a time (`.config/nextest.toml`).

mod util;
mod records;

mod claim;
mod ctl;
mod docs;
mod gc;
mod ids;
mod hosts;
mod live;
mod log;
mod ls;
mod owners;
mod pg;
mod push;
mod reach;
mod run;
mod seam;
mod slots;
mod supervise;
mod top;
mod torture;
mod wait;
