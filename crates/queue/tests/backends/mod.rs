//! The backends the conformance suite runs on, each a fresh, private
//! queue, with the few hooks a test needs that no tool has: make a claim's
//! lease run out, and ask whether it has. A second backend joins the suite
//! by adding its constructor to [`all`].

#![allow(dead_code)] // each test binary uses part of this

use q_queue::job::{PushContext, validate};
use q_queue::{Backend, Durability, Location, OpenOpts};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct Fixture {
    pub name: &'static str,
    pub b: Arc<dyn Backend>,
    kind: Kind,
    _keep: tempfile::TempDir,
}

enum Kind {
    Dir(PathBuf),
}

impl Fixture {
    /// A fresh directory queue.
    pub fn dir(durability: Durability) -> Fixture {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("q");
        let b = q_queue::backend::create(&Location::Dir(root.clone()), None, OpenOpts { durability }).unwrap();
        Fixture { name: "dir", b, kind: Kind::Dir(root), _keep: d }
    }

    /// The queue directory, for checks of the directory's own invariants.
    pub fn queue_dir(&self) -> Option<q_queue::Queue> {
        match &self.kind {
            Kind::Dir(root) => q_queue::Queue::open(root).unwrap(),
        }
    }

    /// Make the lease of attempt `attempt` of job `id` run out (its
    /// holder stalled for two minutes).
    pub fn expire(&self, id: &str, attempt: u32) {
        match &self.kind {
            Kind::Dir(_) => {
                let q = self.queue_dir().unwrap();
                let f = std::fs::File::options().write(true).open(q.lease_path(id, attempt)).unwrap();
                f.set_modified(SystemTime::now() - Duration::from_secs(120)).unwrap();
            }
        }
    }

    /// Has that lease run out?
    pub fn expired(&self, id: &str, attempt: u32) -> bool {
        match &self.kind {
            Kind::Dir(_) => {
                let q = self.queue_dir().unwrap();
                let m = std::fs::metadata(q.lease_path(id, attempt)).unwrap();
                m.modified().unwrap().elapsed().unwrap_or_default() > Duration::from_secs(60)
            }
        }
    }

    /// Push job lines (as one push); their ids.
    pub fn push(&self, lines: &[serde_json::Value]) -> Vec<String> {
        let ctx = PushContext { cwd: "/".into(), env: Default::default(), now_ms: q_queue::time::now_ms() };
        let jobs = lines.iter().map(|l| validate(l.as_object().unwrap(), &ctx).unwrap()).collect();
        self.b.push(jobs).into_iter().map(|r| r.unwrap().id).collect()
    }
}

/// Every backend this build has, fresh.
pub fn all(durability: Durability) -> Vec<Fixture> {
    vec![Fixture::dir(durability)]
}
