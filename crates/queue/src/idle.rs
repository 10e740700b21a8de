//! When is a queue drained (`q-supervise --exit-on-idle`)? Work is: a running job; a
//! ready job; a job scheduled within the idle horizon (retries included, so
//! a Makefile drain waits for them). A paused queue's pending jobs and held
//! jobs are not work. Waiting jobs whose dependencies all finished are moved
//! on first (promoted, or ended dependency-failed); the waiting jobs left
//! then wait on something that is itself not work (held, or due after the
//! horizon), so they are not work either.
//!
//! The scan lists `leased/` before and after `pending/`: a job claimed while
//! we look is in one of the three listings, so it is never missed.

use crate::error::Result;
use crate::fsx;
use crate::names::QueuedName;
use crate::job::Peek;
use crate::queue::Queue;
use crate::slots::Fit;
use crate::time;
use std::path::Path;

/// Why a due job is not this process's work.
enum Left {
    Newer,
    Others,
    Unfit,
}

impl Queue {
    /// Is the due job at `path` left alone by this process's claims (with
    /// the slots of `fit`), and why?
    fn left_alone(&self, path: &Path, fit: &Fit) -> Option<Left> {
        match self.read_record(path) {
            Ok((b, uid)) => {
                let p = Peek::of(&b).unwrap_or_default();
                if p.newer() {
                    Some(Left::Newer)
                } else if self.leaves(uid) {
                    Some(Left::Others)
                } else if !fit.can_fit(&fit.demand(&p.needs, p.group.as_deref())) {
                    Some(Left::Unfit)
                } else {
                    None
                }
            }
            Err(_) => self.newer_record(path).then_some(Left::Newer),
        }
    }
}

/// What the scan found.
#[derive(Debug, Default, Clone)]
pub struct Idle {
    /// There is work: do not exit.
    pub busy: bool,
    pub paused: bool,
    pub running: u64,
    /// Pending jobs due within the horizon (ready now or soon).
    pub due: u64,
    /// Pending jobs scheduled after the horizon.
    pub later: u64,
    pub waiting: u64,
    pub held: u64,
    /// Due jobs of a newer format, which this q leaves alone.
    pub newer: u64,
    /// Due jobs of other users in a group-shared queue, which a worker
    /// that is not root leaves for their owners' workers or root's.
    pub others: u64,
    /// Due jobs whose needs the claimer's slots can never fit.
    pub unfit: u64,
}

impl Queue {
    /// Look at the queue once. `horizon_ms`: how far ahead a scheduled job
    /// still counts (`None`: any).
    pub fn idle(&self, horizon_ms: Option<u64>, fit: Option<&Fit>) -> Result<Idle> {
        let q = self;
        let no_slots = Fit::default();
        let fit = fit.unwrap_or(&no_slots);
        let mut promoted_once = false;
        loop {
            let now = time::now_ms();
            let limit = horizon_ms.map_or(i64::MAX, |h| now.saturating_add(h as i64));
            let mut s = Idle {
                paused: q.paused(now).is_some(),
                ..Idle::default()
            };
            s.running = fsx::list(&q.dir("leased"))?.len() as u64;
            if s.running > 0 {
                s.busy = true;
                return Ok(s);
            }
            let (_, classes) = q.pending_dirs()?;
            // A class these slots never fit: its due jobs are counted from
            // the listings, without reading them (FORMAT "Classes").
            let rule = crate::slots::Filter::new(Some(fit));
            let unfit: Vec<std::path::PathBuf> =
                classes.iter().filter(|c| rule.never(&c.needs, c.group.as_deref())).map(|c| q.tree(Some(c))).collect();
            for dir in q.segment_dirs()? {
                let never = dir.parent().is_some_and(|t| unfit.iter().any(|u| u == t));
                for n in fsx::list(&dir)? {
                    let Some(name) = QueuedName::parse(&n) else {
                        continue;
                    };
                    if name.key.run_at > limit {
                        s.later += 1;
                    } else if never {
                        s.unfit += 1;
                    } else if let Some(left) = q.left_alone(&dir.join(&n), fit) {
                        // A newer q's job, another user's, or one these slots never fit: no worker
                        // of this process's user will run it.
                        match left {
                            Left::Newer => s.newer += 1,
                            Left::Others => s.others += 1,
                            Left::Unfit => s.unfit += 1,
                        }
                    } else {
                        s.due += 1;
                        if !s.paused {
                            s.busy = true;
                            return Ok(s);
                        }
                    }
                }
            }
            s.running = fsx::list(&q.dir("leased"))?.len() as u64;
            if s.running > 0 {
                s.busy = true;
                return Ok(s);
            }
            s.held = fsx::list(&q.dir("held"))?.len() as u64;
            s.waiting = fsx::list(&q.dir("waiting"))?.len() as u64;
            if s.waiting > 0 && !promoted_once {
                // Move on the waiting jobs whose dependencies ended, then look again.
                promoted_once = true;
                if q.promote_stranded()? > 0 {
                    continue;
                }
            }
            return Ok(s);
        }
    }
}
