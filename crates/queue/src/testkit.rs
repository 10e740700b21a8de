//! Helpers of the library's unit tests: a fresh queue in a temporary
//! directory, and pushing job lines into it.

use crate::job::{PushContext, validate};
use crate::queue::Queue;
use std::collections::BTreeMap;

/// A new queue; keep the directory alive as long as the queue.
pub(crate) fn queue() -> (tempfile::TempDir, Queue) {
    let d = tempfile::tempdir().unwrap();
    let q = Queue::create(&d.path().join("q"), None).unwrap();
    (d, q)
}

/// Push job lines as one push by a pusher with environment `env`; their ids.
pub(crate) fn push(q: &Queue, lines: &[serde_json::Value], env: BTreeMap<String, String>) -> Vec<String> {
    let ctx = PushContext { cwd: "/".into(), env: std::sync::Arc::new(env), now_ms: crate::time::now_ms() };
    let jobs = lines.iter().map(|l| validate(l.as_object().unwrap(), &ctx).unwrap()).collect();
    q.push(jobs).into_iter().map(|r| r.unwrap().id).collect()
}
