//! Regression tests, on the library, for bugs the torture tests found
//! (docs/RELIABILITY.md lists them): each reproduces the failing situation
//! directly and deterministically where it can.

use q_queue::job::{PushContext, validate};
use q_queue::{ClaimOpts, Liveness, Outcome, Queue, Reason, ResultRecord, SettleOpts, State};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn queue() -> (tempfile::TempDir, Queue) {
    let d = tempfile::tempdir().unwrap();
    let q = Queue::create(&d.path().join("q"), None).unwrap();
    (d, q)
}

fn push(q: &Queue, obj: serde_json::Value) -> String {
    push_batch(q, &obj, 1).pop().unwrap()
}

/// `n` copies of one job in one push: more than 8 is a batch (group
/// commit; unnamed files where the filesystem has them).
fn push_batch(q: &Queue, obj: &serde_json::Value, n: usize) -> Vec<String> {
    let ctx = PushContext { cwd: "/".into(), env: Default::default(), now_ms: q_queue::time::now_ms() };
    let jobs = (0..n).map(|_| validate(obj.as_object().unwrap(), &ctx).unwrap()).collect();
    q.push(jobs).into_iter().map(|r| r.unwrap().id).collect()
}

/// The `end.json` a canceller writes for a job at attempt 0.
fn end_record(id: &str, reason: Reason, detail: Option<serde_json::Value>) -> ResultRecord {
    ResultRecord {
        kind: "result".into(),
        id: id.to_owned(),
        attempt: 0,
        token: None,
        state: State::Canceled,
        reason,
        exit_code: None,
        signal: None,
        started_at: None,
        finished_at: None,
        duration_ms: None,
        cpu_user_ms: None,
        cpu_sys_ms: None,
        max_rss_kb: None,
        failures: 0,
        next_run_at: None,
        name: None,
        host: None,
        worker_id: None,
        detail,
    }
}

fn opts() -> ClaimOpts {
    ClaimOpts { lease_ms: 60_000, worker_id: None, liveness: Liveness::Flock, fit: None }
}

/// Found by the crash sweep: claimers remove drained pending segments. A
/// pusher (or a requeue) that renamed a job into a segment which a claimer
/// emptied and removed before the pusher's directory fsync failed with
/// ENOENT — a committed job reported as not pushed — and one that met the
/// removal between its mkdir and its rename could fail ten times over.
#[test]
fn pushes_and_requeues_racing_claimers_never_fail() {
    let (_d, q) = queue();
    let stop = Arc::new(AtomicBool::new(false));
    let mut claimers = Vec::new();
    for _ in 0..3 {
        let (q, stop) = (q.clone(), stop.clone());
        claimers.push(std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match q.claim(1, &opts()) {
                    Ok(cs) => {
                        for c in cs {
                            // Fail once (requeued at once), then succeed.
                            let reason = if c.attempt() == 1 { Reason::Exit } else { Reason::Ok };
                            let so = SettleOpts { delay_ms: Some(0), ..SettleOpts::default() };
                            if let Err(e) = q.settle(&c.id, &c.token, reason, &Outcome::default(), &so) {
                                errors.push(format!("settle: {e}"));
                            }
                        }
                    }
                    Err(e) => errors.push(format!("claim: {e}")),
                }
            }
            errors
        }));
    }
    let mut ids = Vec::new();
    let job = json!({"cmd": ["true"], "attempts": 2, "env_from": "worker"});
    for i in 0..150 {
        ids.push(push(&q, job.clone()));
        // Batches too, whose files are linked into segments that the
        // claimers may empty and remove meanwhile.
        if i % 10 == 0 {
            ids.extend(push_batch(&q, &job, 20));
        }
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ids.iter().any(|id| q.locate(id).unwrap().is_none_or(|l| l.state != State::Done)) {
        assert!(std::time::Instant::now() < until, "the jobs were not all done");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for c in claimers {
        let errors = c.join().unwrap();
        assert!(errors.is_empty(), "{errors:?}");
    }
}

/// The two halves of that fix, deterministically: a segment that is gone
/// needs no fsync, and a segment made a moment ago is not removed as empty.
#[test]
fn vanished_segments_need_no_fsync_and_fresh_ones_stay() {
    let d = tempfile::tempdir().unwrap();
    let gone = d.path().join("gone");
    q_queue::fsx::fsync_dir(&gone).expect("a directory that is gone needs no fsync");
    let fresh = d.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    q_queue::fsx::remove_idle_dir(&fresh);
    assert!(fresh.is_dir(), "a segment made just now is about to receive its job");
    std::fs::File::open(&fresh).unwrap().set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(5)).unwrap();
    q_queue::fsx::remove_idle_dir(&fresh);
    assert!(!fresh.exists(), "an idle empty segment goes");
}

/// Found by the crash sweep (`settle.end_after_record`): a cancel that died
/// after writing `end.json` but before moving the job left a record that
/// said "canceled" for a job that then ran and ended done (readers were told
/// canceled), and that made every later cancel of the job fail as busy.
#[test]
fn a_stale_end_record_decides_nothing() {
    let (_d, q) = queue();
    let id = push(&q, json!({"cmd": ["true"], "attempts": 3, "env_from": "worker"}));
    // The dead canceller's record, written while the job was pending at attempt 0.
    let stale = end_record(&id, Reason::Canceled, None);
    std::fs::create_dir_all(q.var(&id)).unwrap();
    std::fs::write(q.var(&id).join("end.json"), stale.to_line()).unwrap();
    // The job runs and fails once: back to pending at attempt 1.
    let c = q.claim(1, &opts()).unwrap().pop().unwrap();
    let so = SettleOpts { delay_ms: Some(0), ..SettleOpts::default() };
    q.settle(&c.id, &c.token, Reason::Exit, &Outcome::default(), &so).unwrap();
    drop(c);
    assert_eq!(q.last_result(&id).unwrap().reason, Reason::Exit, "readers are told the latest attempt, not the stale end record");
    // A cancel now works (the stale record is archived, not in the way).
    assert_eq!(q.cancel(&id).unwrap(), State::Pending);
    assert_eq!(q.locate(&id).unwrap().unwrap().state, State::Canceled);
    let r = q.last_result(&id).unwrap();
    assert_eq!((r.state, r.attempt), (State::Canceled, 1));
    // And a job that ran to done after such a crash reads as done.
    let id2 = push(&q, json!({"cmd": ["true"], "env_from": "worker"}));
    std::fs::create_dir_all(q.var(&id2)).unwrap();
    std::fs::write(q.var(&id2).join("end.json"), ResultRecord { id: id2.clone(), ..stale }.to_line()).unwrap();
    let c = q.claim(1, &opts()).unwrap().pop().unwrap();
    q.settle(&c.id, &c.token, Reason::Ok, &Outcome::default(), &so).unwrap();
    assert_eq!(q.last_result(&id2).unwrap().state, State::Done);
}

/// Found by the fuzz seeds: `"payload": null` was kept in memory as a null
/// payload (the job's stdin got `null`) but read back from disk as no
/// payload: the record did not survive its own round trip.
#[test]
fn null_payload_is_no_payload() {
    let ctx = PushContext { cwd: "/".into(), env: Default::default(), now_ms: 0 };
    let nj = validate(json!({"cmd": ["true"], "payload": null}).as_object().unwrap(), &ctx).unwrap();
    assert_eq!(nj.job.payload, None);
    assert_eq!(q_queue::Job::from_bytes(&nj.job.to_bytes()).unwrap(), nj.job);
}

/// Found by the `job_line` fuzzer: a number too large for an integer was
/// parsed as a float one way when pushed and another way when the stored
/// record was read back (serde_json's fast float parsing is not exact), so
/// the payload a job received differed from the one recorded. Floats now
/// parse exactly (serde_json `float_roundtrip`).
#[test]
fn float_payload_survives_its_round_trip() {
    let ctx = PushContext { cwd: "/".into(), env: Default::default(), now_ms: 0 };
    for p in ["17021702222222211199999222222211199999999991111111", "0.1", "2.2250738585072014e-308", "1.7976931348623157e308", "123456789.123456789"] {
        let line = format!("{{\"cmd\":[\"true\"],\"payload\":{p}}}");
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line).unwrap();
        let nj = validate(&obj, &ctx).unwrap();
        assert_eq!(q_queue::Job::from_bytes(&nj.job.to_bytes()).unwrap(), nj.job, "payload {p}");
    }
}

/// Found by the crash sweep (`settle.end_after_record@2` in a cancel): the
/// cancel of A cascades to B, waiting on A; the process died after writing
/// B's end record and before moving B. That record (same epoch) then made
/// every later attempt to end B "busy", so B waited for ever and A could
/// never be pruned. Now the record decides and the next pass finishes it.
#[test]
fn an_unfinished_end_record_of_this_epoch_is_finished() {
    let (_d, q) = queue();
    let a = push(&q, json!({"cmd": ["true"], "env_from": "worker"}));
    let b = push(&q, json!({"cmd": ["true"], "env_from": "worker", "after": [a.clone()]}));
    assert_eq!(q.locate(&b).unwrap().unwrap().state, State::Waiting);
    let rec = end_record(&b, Reason::DependencyFailed, Some(json!({"dependency": a})));
    std::fs::create_dir_all(q.var(&b)).unwrap();
    std::fs::write(q.var(&b).join("end.json"), rec.to_line()).unwrap();
    // A is canceled: the cascade meets B's unfinished record and finishes it.
    q.cancel(&a).unwrap();
    assert_eq!(q.locate(&b).unwrap().unwrap().state, State::Canceled);
    assert_eq!(q.last_result(&b).unwrap().reason, Reason::DependencyFailed);
    // And a second cancel of B is a no-op, not an error.
    assert_eq!(q.cancel(&b).unwrap(), State::Canceled);
}

/// A reader that looks at a queue while its first push creates it sees an
/// empty queue or the queue, never "a directory that is not a q queue"
/// (FORMAT is published between its two looks).
#[test]
fn opening_a_queue_while_it_is_created_never_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..300 {
        let root = dir.path().join(format!("q{i}"));
        let r2 = root.clone();
        let creator = std::thread::spawn(move || Queue::create(&r2, None).map(|_| ()));
        loop {
            match Queue::open(&root) {
                Ok(Some(_)) => break,
                Ok(None) => std::thread::yield_now(),
                Err(e) => panic!("round {i}: {e}"),
            }
        }
        creator.join().unwrap().unwrap();
    }
}
