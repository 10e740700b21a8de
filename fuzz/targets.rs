//! The bodies of the fuzz targets, shared by `cargo fuzz` (fuzz_targets/)
//! and by the corpus replay in the normal test suite
//! (crates/queue/tests/fuzz_replay.rs). Each one panics only on a real
//! bug: a parser that panics, or a record that does not survive its own
//! round trip.

#![allow(dead_code)]

use q_queue::job::{Job, PushContext, merge, validate};
use q_queue::names::{Key, LeasedName, QueuedName, parse_terminal, terminal_name};
use q_queue::{Lease, ResultRecord};

/// A `q-push` stdin line: JSON, then field validation; a job it accepts
/// must be written and read back unchanged.
pub fn job_line(data: &[u8]) {
    if data.len() > 1 << 20 {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(text.trim()) else { return };
    let ctx = PushContext { cwd: "/work".into(), env: Default::default(), now_ms: 1_700_000_000_000 };
    let defaults = serde_json::json!({"priority": 1, "sh": "true"}).as_object().cloned().unwrap_or_default();
    for o in [obj.clone(), merge(&defaults, obj)] {
        if let Ok(nj) = validate(&o, &ctx) {
            let bytes = nj.job.to_bytes();
            let back = Job::from_bytes(&bytes).expect("an accepted job must read back");
            assert_eq!(back, nj.job, "job record round trip");
            assert!(bytes.len() as u64 <= q_queue::job::MAX_RECORD + 4096 || data.len() as u64 > q_queue::job::MAX_RECORD / 2);
        }
    }
}

/// The records read from disk: job, result, lease. Whatever parses must
/// survive a write and a read.
pub fn records(data: &[u8]) {
    if let Ok(j) = Job::from_bytes(data) {
        let again = Job::from_bytes(&j.to_bytes()).expect("a job record re-reads");
        assert_eq!(again, j);
    }
    if let Ok(r) = serde_json::from_slice::<ResultRecord>(data) {
        let again: ResultRecord = serde_json::from_slice(&r.to_line()).expect("a result record re-reads");
        assert_eq!(serde_json::to_value(&again).ok(), serde_json::to_value(&r).ok());
    }
    if let Ok(l) = serde_json::from_slice::<Lease>(data) {
        let b = serde_json::to_vec(&l).expect("a lease serializes");
        let again: Lease = serde_json::from_slice(&b).expect("a lease re-reads");
        assert_eq!(serde_json::to_value(&again).ok(), serde_json::to_value(&l).ok());
    }
}

/// File names and tokens: a name that is accepted is the one spelling of
/// that job (no second name for the same file can exist).
pub fn names(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Some(n) = QueuedName::parse(&s) {
        assert_eq!(n.to_string(), s, "queued name is canonical");
    }
    if let Some(n) = LeasedName::parse(&s) {
        assert_eq!(n.to_string(), s, "leased name is canonical");
        assert_eq!(LeasedName::from_token(&n.id, &n.token()), Some(n));
    }
    if let Some(k) = Key::parse(&s) {
        assert_eq!(k.to_string(), s, "segment name is canonical");
    }
    if let Some(id) = parse_terminal(&s) {
        assert_eq!(terminal_name(id), s);
        assert!(!id.contains('/') && !id.contains('.'), "an id never holds a path");
    }
    if let Some((id, token)) = s.split_once(' ')
        && let Some(n) = LeasedName::from_token(id, token)
    {
        assert!(!n.to_string().contains('/'), "a token never makes a path");
    }
}
