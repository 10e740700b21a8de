//! The heartbeat: one thread that extends every lease this process holds
//! (every third of its length) and notices when one was taken over.

use crate::cli::Queue;
use q_queue::Claim;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A claim this process holds, kept alive by the heartbeat.
pub struct Held {
    pub claim: Claim,
    last_touch: Mutex<Instant>,
    /// The lease was taken over: stop the job, its result will be refused.
    pub lost: AtomicBool,
    /// When this process took the claim.
    since: Instant,
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
        if !q.extend(&self.claim) {
            self.lost.store(true, Ordering::Relaxed);
        }
        if let Ok(mut t) = self.last_touch.lock() {
            *t = Instant::now();
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
    /// Signaled when a claim is held: with none, the thread sleeps on it
    /// (an idle worker has no wake-ups of its own here).
    some: Arc<Condvar>,
}

impl Heartbeat {
    pub fn start(q: &Queue) -> Heartbeat {
        let hb = Heartbeat { q: Arc::clone(q), held: Arc::new(Mutex::new(Vec::new())), some: Arc::new(Condvar::new()) };
        let held = Arc::clone(&hb.held);
        let some = Arc::clone(&hb.some);
        let q = Arc::clone(q);
        std::thread::spawn(move || {
            loop {
                if let Ok(g) = held.lock() {
                    drop(some.wait_while(g, |l| l.is_empty()));
                }
                std::thread::sleep(Duration::from_millis(50));
                let list: Vec<Arc<Held>> = held.lock().map(|l| l.clone()).unwrap_or_default();
                for h in list.iter().filter(|h| h.due()) {
                    h.beat(&q);
                }
                sync_claims(&q, &list);
            }
        });
        hb
    }

    /// Hold a claim this process made (its lease was written just now:
    /// the first beat is a third of it away).
    pub fn hold(&self, c: Claim) -> Arc<Held> {
        let h = Arc::new(Held { claim: c, last_touch: Mutex::new(Instant::now()), lost: AtomicBool::new(false), since: Instant::now() });
        if let Ok(mut l) = self.held.lock() {
            l.push(Arc::clone(&h));
        }
        self.some.notify_one();
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
