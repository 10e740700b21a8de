//! The heartbeat: one thread that extends every lease this process holds
//! (every third of its length) and notices when one was taken over; and
//! the lease clock, a second thread that kills the process group of a job
//! whose lease is lost, wherever the others wait (a worker cut off from
//! its server may wait on it in any call).

use crate::cli::Queue;
use q_queue::Claim;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A claim this process holds, kept alive by the heartbeat.
pub struct Held {
    pub claim: Claim,
    last_touch: Mutex<Instant>,
    /// When the backend last extended the lease (or the claim was taken).
    extended: Mutex<Instant>,
    /// The lease was taken over: stop the job, its result will be refused.
    lost: AtomicBool,
    /// The heartbeat is waiting for the backend (shared by every claim of
    /// the process: while it waits on one, none is extended).
    asking: Arc<AtomicBool>,
    /// When this process took the claim.
    since: Instant,
    /// The job's process group (leader pid and start time) once it runs.
    group: Mutex<Option<(i32, u64)>>,
}

impl std::ops::Deref for Held {
    type Target = Claim;
    fn deref(&self) -> &Claim {
        &self.claim
    }
}

/// A deferred claim whose job runs this long is made durable by the
/// heartbeat rather than by its settle: a job that takes the host down
/// soon after it starts is still counted (its attempt number is not run
/// again after a power loss), while short jobs leave the sync to their
/// settles, in groups. (Tests of failpoint builds may change it:
/// `Q_CLAIM_SYNC_AFTER_MS`.)
const CLAIM_SYNC_AFTER_MS: i64 = 50;

impl Held {
    fn beat(&self, q: &Queue) {
        let now = Instant::now();
        match q.extend(&self.claim) {
            Ok(true) => {
                if let Ok(mut t) = self.extended.lock() {
                    *t = now;
                }
            }
            Ok(false) => self.lost.store(true, Ordering::Relaxed),
            // Cut off: the lease is ours until it runs out by our own
            // (monotonic) clock; then another holder may have the job.
            Err(_) => {
                if self.extended.lock().map(|t| t.elapsed() >= Duration::from_millis(self.lease_ms)).unwrap_or(true) {
                    self.lost.store(true, Ordering::Relaxed);
                }
            }
        }
        if let Ok(mut t) = self.last_touch.lock() {
            *t = now;
        }
    }

    /// Is the lease lost? Taken over (the backend said so), or run out by
    /// this process's own monotonic clock while the backend does not
    /// answer (cut off from the server: a request can wait on a silent
    /// network for minutes, and another host may hold the job already).
    pub fn lost(&self) -> bool {
        if self.lost.load(Ordering::Relaxed) {
            return true;
        }
        let run_out = self.asking.load(Ordering::Relaxed) && self.extended.lock().map(|t| t.elapsed() >= Duration::from_millis(self.lease_ms)).unwrap_or(true);
        if run_out {
            self.lost.store(true, Ordering::Relaxed);
        }
        run_out
    }

    /// Is the lease still ours by this process's own clock (not taken
    /// over, and extended less than a lease ago)?
    pub fn alive(&self) -> bool {
        !self.lost() && self.extended.lock().map(|t| t.elapsed() < Duration::from_millis(self.lease_ms)).unwrap_or(false)
    }

    /// The job runs in this process group: the lease clock kills it if
    /// the lease is lost.
    pub fn running(&self, pid: i32, start: u64) {
        if let Ok(mut g) = self.group.lock() {
            *g = Some((pid, start));
        }
    }

    fn due(&self) -> bool {
        let every = Duration::from_millis((self.lease_ms / 3).max(50));
        self.last_touch.lock().map(|t| t.elapsed() >= every).unwrap_or(true)
    }
}

/// The set of held claims and the thread that keeps them alive.
#[derive(Clone)]
pub struct Heartbeat {
    q: Queue,
    held: Arc<Mutex<Vec<Arc<Held>>>>,
    /// The thread is extending leases (see [`Held::lost`]).
    asking: Arc<AtomicBool>,
    /// Signaled when a claim is held: with none, the thread sleeps on it
    /// (an idle worker has no wake-ups of its own here).
    some: Arc<Condvar>,
}

impl Heartbeat {
    pub fn start(q: &Queue) -> Heartbeat {
        let hb = Heartbeat { q: Arc::clone(q), held: Arc::new(Mutex::new(Vec::new())), asking: Arc::new(AtomicBool::new(false)), some: Arc::new(Condvar::new()) };
        hb.start_clock();
        let held = Arc::clone(&hb.held);
        let asking = Arc::clone(&hb.asking);
        let some = Arc::clone(&hb.some);
        let q = Arc::clone(q);
        std::thread::spawn(move || {
            loop {
                if let Ok(g) = held.lock() {
                    drop(some.wait_while(g, |l| l.is_empty()));
                }
                std::thread::sleep(Duration::from_millis(50));
                let list: Vec<Arc<Held>> = held.lock().map(|l| l.clone()).unwrap_or_default();
                asking.store(true, Ordering::Relaxed);
                for h in list.iter().filter(|h| h.due()) {
                    h.beat(&q);
                }
                asking.store(false, Ordering::Relaxed);
                sync_claims(&q, &list);
            }
        });
        hb
    }

    /// The lease clock: every 100 ms while a claim is held, kill the
    /// process group of each job whose lease is lost ([`Held::lost`]). The
    /// worker's own loop notices too, and says why its job ended; this
    /// thread waits on nothing but the clock, so a job never outlives its
    /// lease by more than a tick, whatever the worker waits for.
    fn start_clock(&self) {
        let held = Arc::clone(&self.held);
        let some = Arc::clone(&self.some);
        std::thread::spawn(move || {
            loop {
                if let Ok(g) = held.lock() {
                    drop(some.wait_while(g, |l| l.is_empty()));
                }
                std::thread::sleep(Duration::from_millis(100));
                let list: Vec<Arc<Held>> = held.lock().map(|l| l.clone()).unwrap_or_default();
                for h in list.iter().filter(|h| h.lost()) {
                    if let Some((pid, start)) = h.group.lock().ok().and_then(|g| *g) {
                        q_queue::ident::kill_group(pid, start, nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
        });
    }

    /// Hold a claim this process made (its lease was written just now:
    /// the first beat is a third of it away).
    pub fn hold(&self, c: Claim) -> Arc<Held> {
        let h = Arc::new(Held { claim: c, last_touch: Mutex::new(Instant::now()), extended: Mutex::new(Instant::now()), lost: AtomicBool::new(false), asking: Arc::clone(&self.asking), since: Instant::now(), group: Mutex::new(None) });
        if let Ok(mut l) = self.held.lock() {
            l.push(Arc::clone(&h));
        }
        self.some.notify_all();
        h
    }

    /// Hold a claim made elsewhere (`Backend::adopt`): extend its lease at once.
    pub fn adopt(&self, c: Claim) -> Arc<Held> {
        let h = self.hold(c);
        h.beat(&self.q);
        h
    }

    /// Stop extending a claim (it was settled, or lost).
    pub fn release(&self, h: &Arc<Held>) {
        if let Ok(mut l) = self.held.lock() {
            l.retain(|x| !Arc::ptr_eq(x, h));
        }
    }
}

/// Make the deferred claims of jobs running for [`CLAIM_SYNC_AFTER_MS`]
/// durable, all at once.
fn sync_claims(q: &Queue, list: &[Arc<Held>]) {
    let after = Duration::from_millis(q_queue::failpoint::override_ms("Q_CLAIM_SYNC_AFTER_MS", CLAIM_SYNC_AFTER_MS).max(0) as u64);
    let due: Vec<&Claim> = list.iter().filter(|h| h.durable_pending() && h.since.elapsed() >= after).map(|h| &h.claim).collect();
    if due.is_empty() {
        return;
    }
    let _ = q.make_durable(&due);
    q_queue::failpoint!("run.heartbeat_claim_sync");
}
