//! The watchdog: a small process a supervisor starts once it holds its lock,
//! so that no worker and no job outlives a supervisor that dies without
//! cleaning up (SIGKILL, a crash). The supervisor tells it, on a pipe, which
//! workers it started (`worker PID START`) and which ended (`gone PID`), and
//! says `bye` when it exits cleanly. End of input without `bye` means the
//! supervisor died: the watchdog kills the workers' process groups (identity
//! checked: pid and start time), waits until they are gone, then reclaims
//! their leases at once, which kills what is left of each job's process
//! group and requeues the job. Then it exits.
//!
//! It runs in its own process group with stdio on /dev/null (it must not
//! keep a caller's pipe open), and holds nothing the supervisor holds.

use crate::cli::Common;
use anyhow::Result;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The supervisor's end of the pipe.
pub struct Watchdog {
    pub pid: i32,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Start the watchdog for queue `common`.
    pub fn start(common: &Common) -> std::io::Result<Watchdog> {
        let exe = std::env::current_exe()?;
        let mut c = Command::new(exe);
        crate::cli::hand_on(&mut c, &common.location());
        c.arg("--watchdog")
            .arg("--queue")
            .arg(common.location().to_arg())
            .arg("--durability")
            .arg(&common.durability);
        c.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = c.spawn()?;
        let pid = child.id() as i32;
        let stdin = child.stdin.take();
        drop(child);
        Ok(Watchdog { pid, stdin })
    }

    fn say(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut()
            && s.write_all(format!("{line}\n").as_bytes()).is_err()
        {
            self.stdin = None;
        }
    }

    pub fn worker(&mut self, pid: i32, start: u64) {
        self.say(&format!("worker {pid} {start}"));
    }

    pub fn gone(&mut self, pid: i32) {
        self.say(&format!("gone {pid}"));
    }

    /// A clean exit: the watchdog leaves without doing anything.
    pub fn bye(mut self) {
        self.say("bye");
        self.stdin = None;
    }
}

/// The watchdog process (`q-supervise --watchdog`, started by a supervisor).
pub fn run(common: &Common) -> Result<u8> {
    let mut workers: HashMap<i32, u64> = HashMap::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["worker", pid, start] => {
                if let (Ok(p), Ok(s)) = (pid.parse(), start.parse()) {
                    workers.insert(p, s);
                }
            }
            ["gone", pid] => {
                if let Ok(p) = pid.parse::<i32>() {
                    workers.remove(&p);
                }
            }
            ["bye"] => return Ok(crate::exit::OK),
            _ => {}
        }
    }
    // The supervisor died without saying goodbye.
    for (&pid, &start) in &workers {
        q_queue::ident::kill_group(pid, start, Signal::SIGKILL);
    }
    let until = Instant::now() + Duration::from_secs(5);
    while workers.iter().any(|(&p, &s)| q_queue::ident::alive(p, s)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(q) = common.open()? {
        // Their leases are free now: requeue at once, killing leftovers.
        for _ in 0..3 {
            let _ = q.reclaim(false);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(crate::exit::OK)
}
