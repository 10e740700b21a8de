//! The worker processes of a supervisor: how a `q-run` worker is started
//! (its own process group, a stable `Q_WORKER_ID`, `Q_SUPERVISOR_PID` so it
//! dies with us, stdout and stderr piped back to us line by line), how
//! children are reaped (all of them: we are a subreaper, so job processes
//! whose worker died become ours), the restart backoff, and the sweep for
//! leftover job processes.
//!
//! Workers must be started from the main thread: the parent-death signal a
//! worker sets fires when the *thread* that forked it ends.

use super::Ev;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;
use std::time::Instant;

/// The longest restart delay, in units of the base (1 s → 30 s).
pub const MAX_DELAY_FACTOR: u64 = 30;
/// A worker that ran this many bases (1 s → 60 s) was healthy: its next
/// restart starts the backoff over.
pub const HEALTHY_FACTOR: u64 = 60;

/// One worker position: its id survives restarts.
#[derive(Debug)]
pub struct Slot {
    pub worker_id: String,
    pub pid: Option<i32>,
    pub pid_start: u64,
    pub started: Instant,
    /// Restarts in a row without a healthy run.
    pub restarts: u32,
    /// When to start it again (set while it is down).
    pub restart_at: Option<Instant>,
    /// Asked to exit after its job (SIGUSR1): restarted at once when it
    /// does, with the settings of now (or let go, beyond the worker count).
    pub retiring: bool,
}

impl Slot {
    /// A position not started yet.
    pub fn new(worker_id: String, restart_at: Option<Instant>) -> Slot {
        Slot { worker_id, pid: None, pid_start: 0, started: Instant::now(), restarts: 0, restart_at, retiring: false }
    }
}

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerCmd {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    /// `--slots`, `--limit` and `--rate` from these (q-ctl may change them
    /// while we live; the worker count is not the worker's).
    pub settings: q_queue::supervisor::Settings,
    /// `-- HANDLER...`, last.
    pub tail: Vec<OsString>,
    /// The queue, to hand on what opens it (a database password) out of argv.
    pub loc: q_queue::Location,
}

impl WorkerCmd {
    /// Start worker `worker_id`; its output lines come to `tx`.
    pub fn spawn(&self, worker_id: &str, tx: &Sender<Ev>) -> std::io::Result<(i32, u64)> {
        let mut c = Command::new(&self.exe);
        crate::cli::hand_on(&mut c, &self.loc);
        c.args(&self.args);
        let s = &self.settings;
        for (flag, list) in [("--slots", &s.slots), ("--limit", &s.limits)] {
            for (name, n) in list {
                c.arg(flag).arg(format!("{name}={n}"));
            }
        }
        if let Some(r) = &s.rate {
            c.arg("--rate").arg(r);
        }
        for (group, r) in &s.rates {
            c.arg("--rate").arg(format!("{group}={r}"));
        }
        c.args(&self.tail)
            .env("Q_WORKER_ID", worker_id)
            .env("Q_SUPERVISOR_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Signals reach it from us only, never from the terminal.
            .process_group(0);
        let mut child = c.spawn()?;
        let pid = child.id() as i32;
        let start = q_queue::ident::start_ticks(pid).unwrap_or(0);
        if let Some(o) = child.stdout.take() {
            read_lines(o, pid, false, tx.clone());
        }
        if let Some(e) = child.stderr.take() {
            read_lines(e, pid, true, tx.clone());
        }
        // Reaped by `reap`, not by std: dropping a Child neither waits nor kills.
        drop(child);
        Ok((pid, start))
    }
}

fn read_lines(r: impl Read + Send + 'static, pid: i32, stderr: bool, tx: Sender<Ev>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    if tx.send(Ev::Line { pid, stderr, line }).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Ev::Eof { pid });
    });
}

/// The delay before restart number `restarts + 1`: base, doubling, capped.
pub fn backoff_ms(base_ms: u64, restarts: u32) -> u64 {
    let factor = 1u64
        .checked_shl(restarts.min(32))
        .unwrap_or(u64::MAX)
        .min(MAX_DELAY_FACTOR);
    base_ms.saturating_mul(factor)
}

/// How a child ended.
#[derive(Debug, Clone, Copy)]
pub struct Exited {
    pub pid: i32,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// As waitpid said it (handed on to a hook's thread).
    pub status: WaitStatus,
}

/// Reap every child that has ended, without blocking.
pub fn reap() -> Vec<Exited> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(st @ WaitStatus::Exited(pid, code)) => out.push(Exited {
                pid: pid.as_raw(),
                code: Some(code),
                signal: None,
                status: st,
            }),
            Ok(st @ WaitStatus::Signaled(pid, sig, _)) => out.push(Exited {
                pid: pid.as_raw(),
                code: None,
                signal: Some(sig as i32),
                status: st,
            }),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

/// SIGKILL a worker and whatever runs in its process group (not its jobs:
/// they have groups of their own), if it is still the process we started.
pub fn kill_worker(pid: i32, start: u64) {
    q_queue::ident::kill_group(pid, start, Signal::SIGKILL);
}

/// Ask a worker to drain (SIGTERM to the worker only: it stops its job itself).
pub fn term_worker(pid: i32, start: u64) {
    if q_queue::ident::alive(pid, start) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Retire a worker: it takes no more jobs, lets its running job finish,
/// then exits 0 (SIGUSR1, see q-run).
pub fn retire_worker(pid: i32, start: u64) {
    if q_queue::ident::alive(pid, start) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGUSR1);
    }
}

/// Processes that became our children because their parent died (we are a
/// subreaper): job processes whose worker is gone. Only those still in our
/// session: a job that left it on purpose (setsid) is outside q's reach.
pub fn orphans(exclude: &[i32]) -> Vec<(i32, i32)> {
    let me = std::process::id() as i32;
    let my_sid = nix::unistd::getsid(None).map(|p| p.as_raw()).unwrap_or(-1);
    let my_pgid = nix::unistd::getpgrp().as_raw();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if exclude.contains(&pid) {
            continue;
        }
        let Some(st) = q_queue::ident::stat(pid) else {
            continue;
        };
        let (ppid, pgrp, sid) = (st.ppid, st.pgrp, st.session);
        if ppid == me && sid == my_sid && pgrp != my_pgid && st.state != 'Z' {
            out.push((pid, pgrp));
        }
    }
    out
}

/// Kill leftover job processes (and their groups) that became ours.
pub fn kill_orphans(exclude: &[i32]) -> usize {
    let list = orphans(exclude);
    for &(pid, pgrp) in &list {
        if pgrp == pid {
            let _ = nix::sys::signal::killpg(Pid::from_raw(pgrp), Signal::SIGKILL);
        } else {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    list.len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_sequence() {
        let v: Vec<u64> = (0..8).map(|r| super::backoff_ms(1000, r)).collect();
        assert_eq!(v, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(super::backoff_ms(100, 40), 3000);
    }
}
