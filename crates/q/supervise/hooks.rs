//! Hooks (`--on-finish CMD`, `--on-fail CMD`): after a job of this
//! supervisor's workers ends (a `result` line with a terminal state), CMD
//! runs with that line on stdin. One hook runs at a time, on a thread of
//! its own, so the supervisor never waits for one; each has a timeout
//! (`--hook-timeout`), after which its process group is killed. A hook
//! never changes an outcome: it runs after the outcome is recorded, and how
//! it ends is only reported. Results wait in memory for their hooks: a
//! backlog is reported as it grows, and what a supervisor could not run
//! before it exited (within `--grace`) is reported; after a supervisor
//! crash the hooks of results it had seen are not run (at most once per
//! result).

use super::report::Reporter;
use serde_json::json;
use std::io::Write;
use std::os::fd::AsFd;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the hooks are.
#[derive(Clone)]
pub struct HookCfg {
    pub on_finish: Option<String>,
    pub on_fail: Option<String>,
    pub timeout: Duration,
    /// The queue, as the hook's `Q_DIR` (so `q-log "$Q_JOB_ID"` works).
    pub queue: std::ffi::OsString,
    pub events: bool,
    pub quiet: bool,
}

/// A result waiting for its hooks.
struct Due {
    id: String,
    line: String,
    failed: bool,
}

/// The hooks running now, by pid, with their wait status once the
/// supervisor's reaper (which waits for any child) got it first.
type Running = Arc<Mutex<HashMap<i32, Option<WaitStatus>>>>;

/// The hook thread and the way to it.
pub struct Hooks {
    tx: Option<Sender<Due>>,
    running: Running,
    waiting: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The backlog size last reported (reported again at ten times it).
    reported: usize,
    cfg: HookCfg,
}

/// A backlog this long is worth a word (then at ten times it, and so on).
const BACKLOG_FIRST: usize = 10;

impl Hooks {
    /// `None` when no hook is set.
    pub fn start(cfg: HookCfg) -> Option<Hooks> {
        if cfg.on_finish.is_none() && cfg.on_fail.is_none() {
            return None;
        }
        let (tx, rx) = channel::<Due>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let running: Running = Arc::default();
        let (w, c, r) = (Arc::clone(&waiting), cfg.clone(), Arc::clone(&running));
        let thread = std::thread::spawn(move || {
            let mut rep = quiet_reporter(&c);
            for due in rx {
                for (which, cmd) in [("on-finish", c.on_finish.as_deref()), ("on-fail", c.on_fail.as_deref().filter(|_| due.failed))] {
                    if let Some(cmd) = cmd {
                        run_one(&mut rep, &c, &r, which, cmd, &due);
                    }
                }
                w.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Some(Hooks { tx: Some(tx), running, waiting, thread: Some(thread), reported: 0, cfg })
    }

    /// A child the supervisor reaped: `true` when it was a hook (its status
    /// is handed to the hook thread).
    pub fn reaped(&self, pid: i32, status: WaitStatus) -> bool {
        let Ok(mut r) = self.running.lock() else { return false };
        match r.get_mut(&pid) {
            Some(slot) => {
                *slot = Some(status);
                true
            }
            None => false,
        }
    }

    /// Do `f` with the pids of the hooks running now (not orphans to
    /// kill); no hook starts meanwhile.
    pub fn while_running<T>(&self, f: impl FnOnce(&[i32]) -> T) -> T {
        let r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let pids: Vec<i32> = r.keys().copied().collect();
        f(&pids)
    }

    /// A `result` line of a job that ended (`failed`: not done).
    pub fn ended(&mut self, rep: &mut Reporter, id: &str, line: &str, failed: bool) {
        if self.cfg.on_finish.is_none() && !failed {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let n = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        if tx.send(Due { id: id.to_owned(), line: line.to_owned(), failed }).is_err() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            rep.error(&format!("job {id}: its hook cannot run (the hook thread is gone)"));
            return;
        }
        let backlog = n.saturating_sub(1);
        if backlog == 0 {
            self.reported = 0;
        } else if backlog >= BACKLOG_FIRST.max(self.reported * 10) {
            self.reported = backlog;
            if rep.events {
                rep.event("hook-backlog", None, Some(std::process::id() as i32), json!({"waiting": backlog}));
            } else {
                rep.note(&format!("{backlog} ended jobs wait for their hooks (one hook runs at a time)"));
            }
        }
    }

    /// Let the hooks of the results seen so far run, for up to `patience`;
    /// report those that could not.
    pub fn finish(mut self, rep: &mut Reporter, patience: Duration) {
        drop(self.tx.take());
        let until = Instant::now() + patience;
        while self.waiting.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = self.waiting.load(Ordering::SeqCst);
        if left > 0 {
            rep.error(&format!("the hooks of {left} ended jobs were not run: the supervisor exited (--grace {})", q_queue::time::human_duration(patience.as_millis() as u64)));
            return; // the thread ends with the process
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The hook thread's own reporter: never a progress block.
fn quiet_reporter(c: &HookCfg) -> Reporter {
    let mut r = Reporter::new(c.events, c.quiet);
    r.progress = false;
    r
}

/// Run one hook to its end or its timeout, and say how it went when it
/// did not succeed (with `--events`: always, `hook-finished`).
fn run_one(rep: &mut Reporter, c: &HookCfg, running: &Running, which: &str, cmd: &str, due: &Due) {
    let start = Instant::now();
    // The hook's output goes to our stderr: stdout is the supervisor's.
    let out = std::io::stderr().as_fd().try_clone_to_owned().map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    let err = std::io::stderr().as_fd().try_clone_to_owned().map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    // Registered before the supervisor's reaper can see it end.
    let mut reg = running.lock().unwrap_or_else(|e| e.into_inner());
    let spawned = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("Q_JOB_ID", &due.id)
        .env("Q_DIR", &c.queue)
        // A database password handed to this supervisor is not the hook's.
        .env_remove(crate::cli::PASSWORD_VAR)
        .env_remove("Q_SUPERVISOR_PID")
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            drop(reg);
            rep.error(&format!("job {}: cannot run the --{which} hook: {e}", due.id));
            return;
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    reg.insert(pid.as_raw(), None);
    drop(reg);
    if let Some(mut sin) = child.stdin.take() {
        let line = format!("{}\n", due.line);
        // A hook that does not read its stdin is not waited for here.
        std::thread::spawn(move || {
            let _ = sin.write_all(line.as_bytes());
        });
    }
    let deadline = start + c.timeout;
    let mut timed_out = false;
    let status = loop {
        let st = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(st) => Some(st),
            // Reaped by the supervisor: it left the status here.
            Err(_) => running.lock().ok().and_then(|r| r.get(&pid.as_raw()).copied().flatten()),
        };
        if let Some(st) = st {
            break st;
        }
        if !timed_out && Instant::now() >= deadline {
            let _ = killpg(pid, Signal::SIGKILL);
            timed_out = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Ok(mut r) = running.lock() {
        r.remove(&pid.as_raw());
    }
    // Whatever the hook left in its group goes with it.
    let _ = killpg(pid, Signal::SIGKILL);
    let (code, signal) = match status {
        WaitStatus::Exited(_, c) => (Some(c), None),
        WaitStatus::Signaled(_, s, _) => (None, Some(s as i32)),
        _ => (None, None),
    };
    let ms = start.elapsed().as_millis() as u64;
    if rep.events {
        rep.event(
            "hook-finished",
            None,
            Some(std::process::id() as i32),
            json!({"hook": which, "id": due.id, "exit_code": code, "signal": signal, "timed_out": timed_out, "duration_ms": ms}),
        );
        return;
    }
    let how = match (timed_out, code, signal) {
        (true, ..) => format!("timed out after {} and was killed", q_queue::time::human_duration(c.timeout.as_millis() as u64)),
        (_, Some(0), _) => return,
        (_, Some(n), _) => format!("exited with status {n}"),
        (_, _, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended unknown".to_owned(),
    };
    rep.error(&format!("job {}: the --{which} hook {how} (the job's outcome stands)", due.id));
}
