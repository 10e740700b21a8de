//! The heartbeat: one thread that extends every lease this process holds
//! (every third of its length) and notices when one was taken over.

use q_queue::names::LeasedName;
use q_queue::{Claim, Job, Queue};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A claim this process holds: its lease file stays open and flock'ed.
pub struct Held {
    pub id: String,
    pub token: String,
    pub name: LeasedName,
    pub job: Job,
    pub lease_ms: u64,
    pub lease_file: File,
    leased_path: PathBuf,
    last_touch: Mutex<Instant>,
    /// The lease was taken over: stop the job, its result will be refused.
    pub lost: AtomicBool,
    /// The claim is not durable yet: its settle makes it so, or the
    /// heartbeat once the job has run for [`CLAIM_SYNC_AFTER_MS`].
    pub claim_sync_pending: AtomicBool,
    /// When this process took the claim.
    since: Instant,
}

/// A deferred claim whose job runs this long is made durable by the
/// heartbeat rather than by its settle: a job that takes the host down
/// soon after it starts is still counted (its attempt number is not run
/// again after a power loss), while short jobs leave the sync to their
/// settles, in groups. (Tests of failpoint builds may change it:
/// `Q_CLAIM_SYNC_AFTER_MS`.)
const CLAIM_SYNC_AFTER_MS: i64 = 50;

impl Held {
    pub fn attempt(&self) -> u32 {
        self.name.c.attempt
    }

    fn beat(&self) {
        let _ = self.lease_file.set_modified(SystemTime::now());
        if !self.leased_path.exists() {
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
    held: Arc<Mutex<Vec<Arc<Held>>>>,
}

impl Heartbeat {
    pub fn start(q: &Queue) -> Heartbeat {
        let hb = Heartbeat { held: Arc::new(Mutex::new(Vec::new())) };
        let held = Arc::clone(&hb.held);
        let q = q.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let list: Vec<Arc<Held>> = held.lock().map(|l| l.clone()).unwrap_or_default();
                for h in list.iter().filter(|h| h.due()) {
                    h.beat();
                }
                sync_claims(&q, &list);
            }
        });
        hb
    }

    /// Hold a claim this process made.
    pub fn hold(&self, q: &Queue, c: Claim) -> Arc<Held> {
        // Its lease was written just now: the first beat is a third of it away.
        self.track(q, c)
    }

    /// Hold a claim made elsewhere (durable: q-claim made it so) whose lease
    /// file we locked: extend its lease at once.
    pub fn adopt(&self, q: &Queue, id: &str, name: LeasedName, job: Job, lease_file: File, lease_ms: u64) -> Arc<Held> {
        let c = Claim { id: id.to_owned(), name, lease_ms, expires_at_ms: 0, job, lease_file, sync_pending: false };
        let h = self.track(q, c);
        h.beat();
        h
    }

    fn track(&self, q: &Queue, c: Claim) -> Arc<Held> {
        let h = Arc::new(Held {
            token: c.name.token(),
            leased_path: q.dir("leased").join(c.name.to_string()),
            id: c.id,
            name: c.name,
            job: c.job,
            lease_ms: c.lease_ms,
            lease_file: c.lease_file,
            last_touch: Mutex::new(Instant::now()),
            lost: AtomicBool::new(false),
            claim_sync_pending: AtomicBool::new(c.sync_pending),
            since: Instant::now(),
        });
        if let Ok(mut l) = self.held.lock() {
            l.push(Arc::clone(&h));
        }
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
/// durable: one fsync of `leased/` for all of them.
fn sync_claims(q: &Queue, list: &[Arc<Held>]) {
    let after = Duration::from_millis(q_queue::failpoint::override_ms("Q_CLAIM_SYNC_AFTER_MS", CLAIM_SYNC_AFTER_MS).max(0) as u64);
    let due: Vec<&Arc<Held>> = list
        .iter()
        .filter(|h| h.claim_sync_pending.load(Ordering::Acquire) && h.since.elapsed() >= after)
        .collect();
    if due.is_empty() {
        return;
    }
    let synced = q.sync_leased().is_ok();
    q_queue::failpoint!("run.heartbeat_claim_sync");
    if synced {
        for h in due {
            h.claim_sync_pending.store(false, Ordering::Release);
        }
    }
}
