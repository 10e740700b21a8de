//! The backend contract: scenarios every backend must pass, run through
//! `&dyn Backend` alone on each of `backends::all()`. (The state-machine
//! property test in props.rs is the other half.) What only a directory
//! does (files, quarantine, flock) is tested beside the directory code.

mod backends;

use backends::Fixture;
use q_queue::lock::Acquired;
use q_queue::{Ask, Candidate, ClaimOpts, Resolved, Durability, Kind, Liveness, Outcome, Reason, RunInfo, SettleOpts, Singleton, State, Stream, ToSettle};
use serde_json::json;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn each(f: impl Fn(&Fixture)) {
    for fx in backends::all(Durability::Full) {
        f(&fx);
    }
}

fn opts(liveness: Liveness) -> ClaimOpts {
    ClaimOpts { lease_ms: 60_000, worker_id: Some("conformance".into()), liveness, fit: None }
}

fn ok() -> Outcome {
    Outcome { exit_code: Some(0), ..Outcome::default() }
}

fn failed() -> Outcome {
    Outcome { exit_code: Some(1), ..Outcome::default() }
}

fn so() -> SettleOpts {
    SettleOpts { delay_ms: Some(0), ..SettleOpts::default() }
}

/// Highest priority first, then the earliest due time, then the oldest;
/// a job due later is not claimed before its time.
#[test]
fn claims_come_in_order() {
    each(|fx| {
        let b = fx.b.as_ref();
        let ids = fx.push(&[
            json!({"cmd": ["true"], "priority": 0}),
            json!({"cmd": ["true"], "priority": 5}),
            json!({"cmd": ["true"], "priority": 0}),
            json!({"cmd": ["true"], "priority": 9, "delay": "1h"}),
            json!({"cmd": ["true"], "priority": 5, "run_at": "2000-01-01T00:00:00Z"}),
        ]);
        let c = b.counts().unwrap();
        assert_eq!((c.ready, c.scheduled), (4, 1), "{}", fx.name);
        let got: Vec<String> = b.claim(10, &opts(Liveness::Flock)).unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(got, [ids[4].clone(), ids[1].clone(), ids[0].clone(), ids[2].clone()], "{}: priority, due time, age", fx.name);
        assert!(b.claim(1, &opts(Liveness::Flock)).unwrap().is_empty(), "{}: the scheduled job waits", fx.name);
    });
}

/// A settle or touch with a token that is not the current claim's changes
/// nothing and says `LeaseLost`, before and after the job was taken over.
#[test]
fn stale_tokens_are_refused() {
    each(|fx| {
        let b = fx.b.as_ref();
        let id = fx.push(&[json!({"cmd": ["true"], "attempts": 3})]).remove(0);
        let c = b.claim(1, &opts(Liveness::Ttl)).unwrap().remove(0);
        assert!(b.touch(&id, &c.token).unwrap() > 0);
        let bogus = fx.other_token(&c.token);
        assert_eq!(b.settle(&id, &bogus, Reason::Ok, &ok(), &so()).unwrap_err().kind, Kind::LeaseLost, "{}", fx.name);
        assert_eq!(b.touch(&id, &bogus).unwrap_err().kind, Kind::LeaseLost, "{}", fx.name);
        // Taken over: the lease ran out and the reaper requeued the job.
        fx.expire(&id, c.attempt());
        let r = b.reclaim(false).unwrap();
        assert_eq!(r.len(), 1, "{}", fx.name);
        assert_eq!((r[0].state, r[0].reason), (State::Pending, Reason::LeaseExpired));
        let again = b.claim(1, &opts(Liveness::Ttl)).unwrap().remove(0);
        assert_eq!(again.attempt(), c.attempt() + 1, "{}: the fence grows", fx.name);
        assert_eq!(b.touch(&id, &c.token).unwrap_err().kind, Kind::LeaseLost, "{}", fx.name);
        assert_eq!(b.settle(&id, &c.token, Reason::Ok, &ok(), &so()).unwrap_err().kind, Kind::LeaseLost, "{}", fx.name);
        assert_eq!(b.locate(&id).unwrap().unwrap().state, State::Running, "{}: the stale settle changed nothing", fx.name);
        let rec = b.settle(&id, &again.token, Reason::Ok, &ok(), &so()).unwrap();
        assert_eq!((rec.state, rec.attempt), (State::Done, again.attempt()));
        assert_eq!(b.settle(&id, &again.token, Reason::Ok, &ok(), &so()).unwrap_err().kind, Kind::LeaseLost, "{}: settled once", fx.name);
    });
}

/// The reaper: a live lease is left alone; an expired one is requeued
/// (an interruption, not a failure); an at-most-once job whose holder
/// vanished ends dead and never runs again.
#[test]
fn the_reaper_requeues_and_at_most_once_ends_dead() {
    each(|fx| {
        let b = fx.b.as_ref();
        let ids = fx.push(&[json!({"cmd": ["true"], "priority": 1}), json!({"cmd": ["true"], "delivery": "at-most-once"})]);
        let claims = b.claim(2, &opts(Liveness::Ttl)).unwrap();
        assert_eq!(claims.len(), 2);
        assert!(b.reclaim(false).unwrap().is_empty(), "{}: live leases are not reclaimed", fx.name);
        for c in &claims {
            fx.expire(&c.id, c.attempt());
        }
        assert_eq!(b.reclaim(true).unwrap().len(), 2, "{}: a dry run reports", fx.name);
        assert_eq!(b.locate(&ids[0]).unwrap().unwrap().state, State::Running, "{}: a dry run changes nothing", fx.name);
        let mut r = b.reclaim(false).unwrap();
        r.sort_by_key(|x| ids.iter().position(|i| *i == x.id));
        assert_eq!(r.iter().map(|x| (x.state, x.reason)).collect::<Vec<_>>(), [(State::Pending, Reason::LeaseExpired), (State::Dead, Reason::LeaseExpired)], "{}", fx.name);
        let e = b.locate(&ids[0]).unwrap().unwrap();
        assert_eq!(e.c.map(|c| (c.attempt, c.failures, c.interrupts)), Some((1, 0, 1)), "{}", fx.name);
        assert_eq!(b.finished(&ids[1]), Some(State::Dead));
        let next = b.claim(5, &opts(Liveness::Ttl)).unwrap();
        assert_eq!(next.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), [ids[0].clone()], "{}: the at-most-once job never runs again", fx.name);
    });
}

/// Pause stops claims until resumed, or until its time is up.
#[test]
fn pause_and_resume() {
    each(|fx| {
        let b = fx.b.as_ref();
        fx.push(&[json!({"cmd": ["true"]})]);
        b.pause(None).unwrap();
        assert!(b.paused(q_queue::time::now_ms()).is_some());
        assert!(b.claim(1, &opts(Liveness::Flock)).unwrap().is_empty(), "{}: paused", fx.name);
        assert!(b.resume().unwrap(), "{}: it was paused", fx.name);
        assert!(!b.resume().unwrap(), "{}: not any more", fx.name);
        b.pause(Some(q_queue::time::now_ms() - 1)).unwrap();
        assert!(b.paused(q_queue::time::now_ms()).is_none(), "{}: a pause that ran out", fx.name);
        assert_eq!(b.claim(1, &opts(Liveness::Flock)).unwrap().len(), 1, "{}", fx.name);
    });
}

/// A key names one unfinished job: pushing it again returns that job; once
/// it is finished, the key is free again.
#[test]
fn dedupe_keys() {
    each(|fx| {
        let b = fx.b.as_ref();
        let first = fx.push(&[json!({"cmd": ["true"], "key": "nightly"})]).remove(0);
        let ctx = q_queue::PushContext { cwd: "/".into(), env: Default::default(), now_ms: q_queue::time::now_ms() };
        let again = q_queue::job::validate(json!({"cmd": ["true"], "key": "nightly"}).as_object().unwrap(), &ctx).unwrap();
        let p = b.push(vec![again]).pop().unwrap().unwrap();
        assert_eq!((p.id.as_str(), p.deduped), (first.as_str(), true), "{}", fx.name);
        assert_eq!(b.counts().unwrap().ready, 1);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        b.settle(&c.id, &c.token, Reason::Ok, &ok(), &so()).unwrap();
        let later = fx.push(&[json!({"cmd": ["true"], "key": "nightly"})]).remove(0);
        assert_ne!(later, first, "{}: a finished job's key is free", fx.name);
        // A retry brings the key back with the job, unless another
        // unfinished job holds it now: refused (75), nothing changed.
        let e = b.retry(&first).unwrap_err();
        assert_eq!(e.kind, Kind::Busy, "{}: {e}", fx.name);
        assert!(e.to_string().contains(&later), "{}: names the holder: {e}", fx.name);
        assert_eq!(b.finished(&first), Some(State::Done), "{}: nothing changed", fx.name);
        b.cancel(&later).unwrap();
        b.retry(&first).unwrap();
        assert_eq!(b.locate(&first).unwrap().unwrap().state, State::Pending, "{}", fx.name);
        let p = b.push(vec![q_queue::job::validate(json!({"cmd": ["true"], "key": "nightly"}).as_object().unwrap(), &ctx).unwrap()]).pop().unwrap().unwrap();
        assert_eq!((p.id.as_str(), p.deduped), (first.as_str(), true), "{}: the retried job holds its key again", fx.name);
    });
}

/// `after`: a job waits for its dependencies; done moves it on; a failure
/// cancels it (`dependency-failed`), and that cascades down the chain.
#[test]
fn dependencies_and_their_failure_cascade() {
    each(|fx| {
        let b = fx.b.as_ref();
        let a = fx.push(&[json!({"cmd": ["true"]})]).remove(0);
        let ok_child = fx.push(&[json!({"cmd": ["true"], "after": [a]})]).remove(0);
        assert_eq!(b.locate(&ok_child).unwrap().unwrap().state, State::Waiting, "{}", fx.name);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!(c.id, a, "{}: a waiting job is not claimed", fx.name);
        b.settle(&c.id, &c.token, Reason::Ok, &ok(), &so()).unwrap();
        assert_eq!(b.locate(&ok_child).unwrap().unwrap().state, State::Pending, "{}: done frees it", fx.name);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        b.settle(&c.id, &c.token, Reason::Ok, &ok(), &so()).unwrap();

        let bad = fx.push(&[json!({"cmd": ["false"]})]).remove(0);
        let mid = fx.push(&[json!({"cmd": ["true"], "after": [bad]})]).remove(0);
        let last = fx.push(&[json!({"cmd": ["true"], "after": [mid]})]).remove(0);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        let rec = b.settle(&c.id, &c.token, Reason::Exit, &failed(), &so()).unwrap();
        assert_eq!(rec.state, State::Dead, "{}: one attempt", fx.name);
        for id in [&mid, &last] {
            assert_eq!(b.finished(id), Some(State::Canceled), "{}: {id}", fx.name);
            assert_eq!(b.last_result(id).unwrap().reason, Reason::DependencyFailed, "{}", fx.name);
        }
        // Many at once, in order; unfinished and unknown jobs are None.
        let open = fx.push(&[json!({"cmd": ["true"]})]).remove(0);
        let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        assert_eq!(
            b.finished_all(&[&mid, &open, &bad, unknown, &c.id, &last]),
            [Some(State::Canceled), None, Some(State::Dead), None, Some(State::Dead), Some(State::Canceled)],
            "{}",
            fx.name
        );
        b.cancel(&open).unwrap();
        assert_eq!(b.counts().unwrap().waiting, 0);
    });
}

/// A worker's settle (the group settle, as a runner makes it) moves the
/// jobs that wait on its job however they came to wait: pushed, revised or
/// imported while it ran, or pushed at the very moment it settles. None is
/// left waiting on a job that ended.
#[test]
fn dependents_made_while_a_job_runs_move_on() {
    use q_queue::job::validate;
    use q_queue::{Counters, Import, PushContext};
    let settle = |b: &dyn q_queue::Backend, c: &q_queue::Claim, reason: Reason, outcome: &Outcome| {
        let so = so();
        b.settle_group(&[ToSettle { claim: c, reason, outcome, opts: &so }]).pop().unwrap().unwrap()
    };
    each(|fx| {
        let b = fx.b.as_ref();
        // Pushed, revised and imported while the job runs; then it ends done.
        let a = fx.push(&[json!({"cmd": ["true"], "priority": 9})]).remove(0);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!(c.id, a);
        let pushed = fx.push(&[json!({"cmd": ["true"], "after": [a]})]).remove(0);
        let other = fx.push(&[json!({"cmd": ["true"], "after": [pushed]})]).remove(0);
        let (seen, new) = revised(b, &other, json!({"after": [a]}));
        b.revise(&other, seen, &new).unwrap();
        let ctx = PushContext { cwd: "/".into(), env: Arc::new(Default::default()), now_ms: q_queue::time::now_ms() };
        let moved = validate(json!({"cmd": ["true"], "after": [a]}).as_object().unwrap(), &ctx).unwrap();
        let moved_id = moved.job.id.clone();
        b.import(vec![Import { new: moved, state: State::Waiting, c: Counters::default() }]).unwrap();
        for id in [&pushed, &other, &moved_id] {
            assert_eq!(b.locate(id).unwrap().unwrap().state, State::Waiting, "{}: {id}", fx.name);
        }
        assert_eq!(settle(b, &c, Reason::Ok, &ok()).state, State::Done);
        for id in [&pushed, &other, &moved_id] {
            assert_eq!(b.locate(id).unwrap().unwrap().state, State::Pending, "{}: {id} moves on", fx.name);
        }
        for c in b.claim(3, &opts(Liveness::Flock)).unwrap() {
            settle(b, &c, Reason::Ok, &ok());
        }
        // Within an imported batch: the job waited on is imported with its
        // dependent, then claimed and settled.
        let first = validate(json!({"cmd": ["true"], "priority": 9}).as_object().unwrap(), &ctx).unwrap();
        let first_id = first.job.id.clone();
        let second = validate(json!({"cmd": ["true"], "after": [first_id]}).as_object().unwrap(), &ctx).unwrap();
        let second_id = second.job.id.clone();
        b.import(vec![
            Import { new: first, state: State::Pending, c: Counters::default() },
            Import { new: second, state: State::Waiting, c: Counters::default() },
        ])
        .unwrap();
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!(c.id, first_id);
        settle(b, &c, Reason::Ok, &ok());
        assert_eq!(b.locate(&second_id).unwrap().unwrap().state, State::Pending, "{}: the batch's dependent moves on", fx.name);
        settle(b, &b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0), Reason::Ok, &ok());
        // A dependent pushed while its job settles, on another thread: it
        // ends pending (done first) or waiting then moved (pushed first),
        // never waiting on a job that ended; failures cancel it.
        for round in 0..40 {
            let fails = round % 2 == 1;
            let a = fx.push(&[json!({"cmd": ["true"], "attempts": 1})]).remove(0);
            let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
            let go = std::sync::Barrier::new(2);
            let dependent = std::thread::scope(|s| {
                let t = s.spawn(|| {
                    go.wait();
                    fx.push(&[json!({"cmd": ["true"], "after": [a]})]).remove(0)
                });
                go.wait();
                if fails {
                    settle(b, &c, Reason::Exit, &failed());
                } else {
                    settle(b, &c, Reason::Ok, &ok());
                }
                t.join().unwrap()
            });
            let want = if fails { State::Canceled } else { State::Pending };
            assert_eq!(b.locate(&dependent).unwrap().unwrap().state, want, "{}: round {round}", fx.name);
            if !fails {
                settle(b, &b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0), Reason::Ok, &ok());
            }
        }
        assert_eq!(b.counts().unwrap().waiting, 0, "{}", fx.name);
    });
}

/// Cancel: a queued job ends at once; a running one is asked to stop (its
/// runner sees the request and settles `canceled`).
#[test]
fn cancel_queued_and_running() {
    each(|fx| {
        let b = fx.b.as_ref();
        let ids = fx.push(&[json!({"cmd": ["true"], "priority": 1}), json!({"cmd": ["true"]})]);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!(c.id, ids[0]);
        assert!(b.requests(&c).is_empty());
        assert_eq!(b.cancel(&ids[0]).unwrap(), State::Running, "{}", fx.name);
        assert_eq!(b.requests(&c).into_iter().map(|r| r.ask).collect::<Vec<_>>(), [Ask::Cancel], "{}: the runner sees the request", fx.name);
        let rec = b.settle(&c.id, &c.token, Reason::Canceled, &Outcome::default(), &so()).unwrap();
        assert_eq!(rec.state, State::Canceled, "{}", fx.name);
        assert_eq!(b.cancel(&ids[1]).unwrap(), State::Pending, "{}", fx.name);
        assert_eq!(b.finished(&ids[1]), Some(State::Canceled));
        assert_eq!(b.cancel(&ids[1]).unwrap(), State::Canceled, "{}: nothing to cancel", fx.name);
        assert_eq!(b.cancel("01J00000000000000000000000").unwrap_err().kind, Kind::NoJob, "{}", fx.name);
    });
}

/// Requests to a running attempt (signals, restart, cancel): seen by its
/// runner in order, each under a key that stays the same; a job that is not
/// running is not asked; a restart queues the job again counting nothing,
/// and the reaper settles a dead runner's attempt as it was asked.
#[test]
fn requests_reach_the_running_attempt() {
    each(|fx| {
        let b = fx.b.as_ref();
        let ids = fx.push(&[json!({"cmd": ["true"], "priority": 2}), json!({"cmd": ["true"], "priority": 1}), json!({"cmd": ["true"]})]);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!(c.id, ids[0]);
        assert_eq!(b.request(&ids[1], Ask::Restart).unwrap(), State::Pending, "{}: a pending job is not asked", fx.name);
        assert_eq!(b.request(&ids[0], Ask::Signal { signal: 10 }).unwrap(), State::Running, "{}", fx.name);
        assert_eq!(b.request(&ids[0], Ask::Signal { signal: 19 }).unwrap(), State::Running);
        let seen = b.requests(&c);
        assert_eq!(seen.iter().map(|r| r.ask).collect::<Vec<_>>(), [Ask::Signal { signal: 10 }, Ask::Signal { signal: 19 }], "{}: in order", fx.name);
        assert_ne!(seen[0].key, seen[1].key);
        b.request(&ids[0], Ask::Restart).unwrap();
        let again = b.requests(&c);
        assert_eq!(again[..2], seen[..], "{}: keys stay", fx.name);
        assert_eq!(again[2].ask, Ask::Restart);
        let rec = b.settle(&c.id, &c.token, Reason::Restarted, &Outcome { started_at_ms: Some(0), ..Outcome::default() }, &so()).unwrap();
        assert_eq!((rec.state, rec.failures), (State::Pending, 0), "{}: queued again, no failure", fx.name);
        let e = b.locate(&ids[0]).unwrap().unwrap();
        assert_eq!(e.c.map(|c| (c.attempt, c.failures, c.interrupts)), Some((1, 0, 0)), "{}: nor an interruption", fx.name);
        assert_eq!(b.request("01J00000000000000000000000", Ask::Restart).unwrap_err().kind, Kind::NoJob, "{}", fx.name);
        // The next attempt starts with no requests; the pending job was never asked.
        let next = b.claim(2, &opts(Liveness::Ttl)).unwrap();
        assert_eq!(next.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), [ids[0].clone(), ids[1].clone()], "{}", fx.name);
        assert!(next.iter().all(|c| b.requests(c).is_empty()), "{}: requests are per attempt", fx.name);
        // A runner gone before it acted: the reaper settles as asked.
        b.request(&ids[0], Ask::Restart).unwrap();
        b.request(&ids[1], Ask::Signal { signal: 10 }).unwrap();
        for c in &next {
            fx.expire(&c.id, c.attempt());
        }
        let mut r = b.reclaim(false).unwrap();
        r.sort_by_key(|x| ids.iter().position(|i| *i == x.id));
        assert_eq!(r.iter().map(|x| x.reason).collect::<Vec<_>>(), [Reason::Restarted, Reason::LeaseExpired], "{}", fx.name);
        assert_eq!(b.locate(&ids[0]).unwrap().unwrap().c.map(|c| c.interrupts), Some(0), "{}", fx.name);
    });
}

/// The job of `id` with `changes` over its job line, validated as a push;
/// and the attempt counter it was read with.
fn revised(b: &dyn q_queue::Backend, id: &str, changes: serde_json::Value) -> (u32, q_queue::NewJob) {
    let e = b.locate(id).unwrap().unwrap();
    let (e, job) = b.job(&e).unwrap().unwrap();
    let line = q_queue::job::merge(&job.to_line(), changes.as_object().unwrap().clone());
    (e.c.map_or(0, |c| c.attempt), job.revised(&line, q_queue::time::now_ms(), &Default::default()).unwrap())
}

/// Revise a queued job: a pending one takes its new place in the order and
/// is claimed with its new record; a waiting one still waits for its
/// dependencies; a held one stays held; a running or stale one is refused.
#[test]
fn revising_a_queued_job() {
    each(|fx| {
        let b = fx.b.as_ref();
        let ids = fx.push(&[json!({"cmd": ["true"], "priority": 5}), json!({"cmd": ["a"], "name": "low"})]);
        let dep = &ids[0];
        let waiting = fx.push(&[json!({"cmd": ["w"], "after": [dep]})]).remove(0);
        let held = fx.push(&[json!({"cmd": ["h"]})]).remove(0);
        b.hold(&held).unwrap();
        let (seen, new) = revised(b, &ids[1], json!({"priority": 9, "name": "high", "timeout": "90s"}));
        assert_eq!(b.revise(&ids[1], seen, &new).unwrap(), State::Pending, "{}", fx.name);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!((c.id.as_str(), c.job.priority, c.job.name.as_deref(), c.job.timeout_ms), (ids[1].as_str(), 9, Some("high"), Some(90_000)), "{}: claimed first, new record", fx.name);
        assert_eq!(b.revise(&ids[1], seen, &new).unwrap_err().kind, Kind::Busy, "{}: running now", fx.name);
        let (seen_w, new_w) = revised(b, &waiting, json!({"name": "still waits"}));
        assert_eq!(b.revise(&waiting, seen_w, &new_w).unwrap(), State::Waiting, "{}", fx.name);
        assert_eq!(b.locate(&waiting).unwrap().unwrap().state, State::Waiting, "{}", fx.name);
        let (seen_h, new_h) = revised(b, &held, json!({"priority": -3}));
        assert_eq!(b.revise(&held, seen_h + 1, &new_h).unwrap_err().kind, Kind::Busy, "{}: a stale attempt counter", fx.name);
        assert_eq!(b.revise(&held, seen_h, &new_h).unwrap(), State::Held, "{}", fx.name);
        let e = b.locate(&held).unwrap().unwrap();
        assert_eq!((e.state, b.job(&e).unwrap().unwrap().1.priority), (State::Held, -3), "{}", fx.name);
        assert_eq!(b.revise("01J00000000000000000000000", 0, &new_h).unwrap_err().kind, Kind::NoJob, "{}", fx.name);
        // The dependency rule still holds for the revised waiting job.
        let d = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!(d.id, *dep);
        b.settle(&d.id, &d.token, Reason::Ok, &ok(), &so()).unwrap();
        let w = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!((w.id.as_str(), w.job.name.as_deref()), (waiting.as_str(), Some("still waits")), "{}", fx.name);
        assert!(b.claim(1, &opts(Liveness::Flock)).unwrap().is_empty(), "{}: the held job stays held", fx.name);
    });
}

/// Revising `after` runs the dependency rules again: a job given an
/// unfinished dependency waits for it, one whose dependencies are taken
/// away is ready; an unknown dependency is 66, a failed one or a cycle 65.
#[test]
fn revising_dependencies() {
    each(|fx| {
        let b = fx.b.as_ref();
        let ids = fx.push(&[json!({"cmd": ["true"], "priority": 1}), json!({"cmd": ["true"]})]);
        let (a, x) = (&ids[0], &ids[1]);
        let y = fx.push(&[json!({"cmd": ["true"], "after": [x]})]).remove(0);
        let z = fx.push(&[json!({"cmd": ["true"]})]).remove(0);
        b.cancel(&z).unwrap();
        for (after, kind) in [(json!([y]), Kind::Data), (json!([x]), Kind::Data), (json!(["01J00000000000000000000000"]), Kind::NoJob), (json!([z]), Kind::Data)] {
            let (seen, new) = revised(b, x, json!({"after": after}));
            assert_eq!(b.revise(x, seen, &new).unwrap_err().kind, kind, "{}: after {after}", fx.name);
        }
        assert_eq!(b.locate(x).unwrap().unwrap().state, State::Pending, "{}: refused, nothing changed", fx.name);
        // x now waits on a; y no longer waits on x.
        let (seen, new) = revised(b, x, json!({"after": [a]}));
        assert_eq!(b.revise(x, seen, &new).unwrap(), State::Pending, "{}", fx.name);
        assert_eq!(b.locate(x).unwrap().unwrap().state, State::Waiting, "{}", fx.name);
        let (seen, new) = revised(b, &y, json!({"after": []}));
        assert_eq!(b.revise(&y, seen, &new).unwrap(), State::Waiting, "{}", fx.name);
        assert_eq!(b.locate(&y).unwrap().unwrap().state, State::Pending, "{}", fx.name);
        let got: Vec<String> = b.claim(5, &opts(Liveness::Flock)).unwrap().into_iter().map(|c| {
            b.settle(&c.id, &c.token, Reason::Ok, &ok(), &so()).unwrap();
            c.id
        }).collect();
        assert_eq!(got.iter().collect::<BTreeSet<_>>(), [a, &y].into_iter().collect(), "{}: x waits for a", fx.name);
        let next = b.claim(5, &opts(Liveness::Flock)).unwrap();
        assert_eq!(next.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(x), "{}: a done, x runs", fx.name);
    });
}

/// Revising `key` runs the dedupe rule again: a key another unfinished job
/// holds is refused (75, naming it, nothing changed); a changed or removed
/// key is free at once for a push; a key whose holder ended can be taken.
#[test]
fn revising_a_key() {
    each(|fx| {
        let b = fx.b.as_ref();
        let ids = fx.push(&[json!({"cmd": ["a"], "key": "k1", "priority": 1}), json!({"cmd": ["b"], "key": "k2"})]);
        let (a, bj) = (&ids[0], &ids[1]);
        let key_of = |id: &str| {
            let e = b.locate(id).unwrap().unwrap();
            b.job(&e).unwrap().unwrap().1.key
        };
        let (seen, new) = revised(b, a, json!({"key": "k2"}));
        let err = b.revise(a, seen, &new).unwrap_err();
        assert_eq!(err.kind, Kind::Busy, "{}: {err}", fx.name);
        assert!(err.to_string().contains(bj.as_str()), "{}: the holder is named: {err}", fx.name);
        assert_eq!((key_of(a).as_deref(), b.locate(a).unwrap().unwrap().state), (Some("k1"), State::Pending), "{}: nothing changed", fx.name);
        // Its own key again is no conflict; a new one frees the old.
        let (seen, new) = revised(b, a, json!({"key": "k3", "name": "a3"}));
        assert_eq!(b.revise(a, seen, &new).unwrap(), State::Pending, "{}", fx.name);
        let again = fx.push(&[json!({"cmd": ["c"], "key": "k3"}), json!({"cmd": ["c"], "key": "k1"})]);
        assert_eq!(again[0], *a, "{}: k3 is a's now: deduped", fx.name);
        assert_ne!(again[1], *a, "{}: k1 is free: a new job", fx.name);
        let c = again[1].clone();
        assert_eq!(key_of(&c).as_deref(), Some("k1"), "{}", fx.name);
        // Taken away: free too.
        let (seen, new) = revised(b, a, json!({"key": null}));
        b.revise(a, seen, &new).unwrap();
        assert_eq!(key_of(a), None, "{}", fx.name);
        let d = fx.push(&[json!({"cmd": ["d"], "key": "k3"})]).remove(0);
        assert_ne!(d, *a, "{}: k3 is free", fx.name);
        // A held job takes a key whose holder ended.
        b.hold(a).unwrap();
        let cl = b.claim(5, &opts(Liveness::Flock)).unwrap();
        let held_b = cl.iter().find(|x| x.id == *bj).unwrap();
        b.settle(&held_b.id, &held_b.token, Reason::Ok, &ok(), &so()).unwrap();
        let (seen, new) = revised(b, a, json!({"key": "k2"}));
        assert_eq!(b.revise(a, seen, &new).unwrap(), State::Held, "{}: b is done: k2 is free", fx.name);
        assert_eq!(fx.push(&[json!({"cmd": ["e"], "key": "k2"})]), std::slice::from_ref(a), "{}: and a holds it", fx.name);
    });
}

/// Revising `env_from`: switched to `"pusher"`, the job runs in the
/// environment of whoever changed it (recorded as a push records it);
/// switched to `"worker"`, in none recorded; unchanged, in its own.
#[test]
fn revising_env_from() {
    each(|fx| {
        let b = fx.b.as_ref();
        let id = fx.push(&[json!({"cmd": ["true"], "env_from": "worker"})]).remove(0);
        let e = b.locate(&id).unwrap().unwrap();
        let (e, job) = b.job(&e).unwrap().unwrap();
        assert_eq!(job.env_ref, None, "{}", fx.name);
        let env = Arc::new(std::collections::BTreeMap::from([("REVISED_BY".to_owned(), "me".to_owned())]));
        let line = q_queue::job::merge(&job.to_line(), json!({"env_from": "pusher"}).as_object().unwrap().clone());
        let new = job.revised(&line, q_queue::time::now_ms(), &env).unwrap();
        b.revise(&id, e.c.map_or(0, |c| c.attempt), &new).unwrap();
        // A change of something else keeps the recorded environment.
        let (seen, new) = revised(b, &id, json!({"name": "n"}));
        b.revise(&id, seen, &new).unwrap();
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        let r = c.job.env_ref.clone().expect("recorded");
        assert_eq!(b.load_env(&r, None).unwrap(), *env, "{}", fx.name);
        b.settle(&c.id, &c.token, Reason::Exit, &failed(), &so()).unwrap();
        b.retry(&id).unwrap();
        let (seen, new) = revised(b, &id, json!({"env_from": "worker"}));
        b.revise(&id, seen, &new).unwrap();
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!((c.job.env_from, c.job.env_ref), (q_queue::job::EnvFrom::Worker, None), "{}", fx.name);
    });
}

/// Revisions racing claims: for each job exactly one wins. A revision that
/// was answered is what the claim took; one refused changed nothing (the
/// claim took the old record); no job is lost or claimed twice; the key
/// the job holds is its claimed record's (the other is free).
#[test]
fn a_revision_racing_a_claim_one_wins() {
    each(|fx| {
        let b = Arc::clone(&fx.b);
        let n = 40;
        let lines: Vec<_> = (0..n).map(|i| json!({"cmd": ["true"], "name": "old", "key": format!("old-{i}")})).collect();
        let ids = fx.push(&lines);
        let claimer = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let until = std::time::Instant::now() + Duration::from_secs(60);
                while got.len() < n && std::time::Instant::now() < until {
                    got.extend(b.claim(1, &opts(Liveness::Ttl)).unwrap().into_iter().map(|c| (c.id, c.job.name)));
                }
                got
            })
        };
        let mut answered = std::collections::HashMap::new();
        // From the newest: the claimer takes the oldest first, so the two meet.
        for id in ids.iter().rev() {
            let Some(e) = b.locate(id).unwrap() else { continue };
            let Some((e, job)) = b.job(&e).unwrap() else { continue };
            if e.state != State::Pending {
                answered.insert(id.clone(), false);
                continue;
            }
            let i = ids.iter().position(|x| x == id).unwrap();
            let line = q_queue::job::merge(&job.to_line(), json!({"name": "new", "key": format!("new-{i}")}).as_object().unwrap().clone());
            let new = job.revised(&line, q_queue::time::now_ms(), &Default::default()).unwrap();
            match b.revise(id, e.c.map_or(0, |c| c.attempt), &new) {
                Ok(_) => answered.insert(id.clone(), true),
                Err(err) => {
                    assert_eq!(err.kind, Kind::Busy, "{}: {err}", fx.name);
                    answered.insert(id.clone(), false)
                }
            };
        }
        let got = claimer.join().unwrap();
        assert_eq!(got.len(), n, "{}: every job claimed once", fx.name);
        assert_eq!(got.iter().map(|g| &g.0).collect::<BTreeSet<_>>().len(), n, "{}: none twice", fx.name);
        let mut wins = 0;
        for (id, name) in &got {
            let changed = answered.get(id).copied().unwrap_or(false);
            assert_eq!(name.as_deref(), Some(if changed { "new" } else { "old" }), "{}: job {id}: the claim took the record the answer implies", fx.name);
            wins += usize::from(changed);
            // The key the running job holds is the one of its record.
            let i = ids.iter().position(|x| x == id).unwrap();
            let (held, free) = if changed { ("new", "old") } else { ("old", "new") };
            let again = fx.push(&[json!({"cmd": ["true"], "key": format!("{held}-{i}")}), json!({"cmd": ["true"], "key": format!("{free}-{i}")})]);
            assert_eq!(again[0], *id, "{}: job {id} holds its {held} key", fx.name);
            assert_ne!(again[1], *id, "{}: job {id}'s {free} key is free", fx.name);
        }
        eprintln!("{}: {wins} of {n} revisions won their race", fx.name);
    });
}

/// Usage: the totals of a job's ended attempts (wall time and CPU summed,
/// the highest peak RSS).
#[test]
fn usage_totals_over_attempts() {
    each(|fx| {
        let b = fx.b.as_ref();
        let id = fx.push(&[json!({"cmd": ["true"], "attempts": 3})]).remove(0);
        assert_eq!(b.usage(&id).unwrap(), q_queue::Usage::default(), "{}: nothing yet", fx.name);
        for (outcome, reason) in [
            (Outcome { exit_code: Some(1), signal: None, started_at_ms: Some(1_000), finished_at_ms: Some(2_000), cpu_user_ms: Some(10), cpu_sys_ms: Some(1), max_rss_kb: Some(100) }, Reason::Exit),
            (Outcome { exit_code: Some(0), signal: None, started_at_ms: Some(5_000), finished_at_ms: Some(5_500), cpu_user_ms: Some(5), cpu_sys_ms: Some(2), max_rss_kb: Some(300) }, Reason::Ok),
        ] {
            let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
            b.settle(&c.id, &c.token, reason, &outcome, &so()).unwrap();
        }
        let u = b.usage(&id).unwrap();
        assert_eq!((u.attempts, u.wall_ms, u.cpu_user_ms, u.cpu_sys_ms, u.max_rss_kb), (2, 1_500, 15, 3, 300), "{}", fx.name);
        // Both in one look: the same answers as each on its own, after an
        // attempt and after an end without one (a retried job canceled).
        let both = |id: &str| {
            let (last, u) = b.last_result_and_usage(id);
            (serde_json::to_value(last).unwrap(), u.unwrap())
        };
        let apart = |id: &str| (serde_json::to_value(b.last_result(id)).unwrap(), b.usage(id).unwrap());
        assert_eq!(both(&id), apart(&id), "{}", fx.name);
        assert_eq!(both(&id).0["reason"], "ok", "{}", fx.name);
        b.retry(&id).unwrap();
        b.cancel(&id).unwrap();
        assert_eq!(both(&id), apart(&id), "{}", fx.name);
        assert_eq!((both(&id).0["reason"].as_str(), both(&id).1.attempts), (Some("canceled"), 2), "{}", fx.name);
        let fresh = fx.push(&[json!({"cmd": ["true"]})]).remove(0);
        assert_eq!(both(&fresh), (serde_json::Value::Null, q_queue::Usage::default()), "{}", fx.name);
    });
}

/// A listing in one call (`listed`) says what asking per entry says
/// (`job`, `last_result_and_usage`, `live_records`), in the entries'
/// order, for a job in each state: a running one with its lease and run
/// records, one done after a retry with usage summed over its attempts,
/// one that ended without an attempt. A job gone meanwhile is left out; an
/// entry given twice is listed twice.
#[test]
fn a_listing_says_what_each_look_says() {
    each(|fx| {
        let b = fx.b.as_ref();
        let n = fx.name;
        let usage = |start: i64, took: i64, rss: u64| Outcome {
            started_at_ms: Some(start),
            finished_at_ms: Some(start + took),
            cpu_user_ms: Some(7),
            cpu_sys_ms: Some(1),
            max_rss_kb: Some(rss),
            ..Outcome::default()
        };
        let retried = fx.push(&[json!({"cmd": ["true"], "attempts": 3, "name": "retried"})]).remove(0);
        for (outcome, reason) in [(Outcome { exit_code: Some(1), ..usage(1_000, 1_000, 100) }, Reason::Exit), (Outcome { exit_code: Some(0), ..usage(5_000, 500, 300) }, Reason::Ok)] {
            let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
            b.settle(&c.id, &c.token, reason, &outcome, &so()).unwrap();
        }
        let dead = fx.push(&[json!({"cmd": ["false"], "attempts": 1})]).remove(0);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        b.settle(&c.id, &c.token, Reason::Exit, &Outcome { exit_code: Some(1), ..usage(9_000, 10, 50) }, &so()).unwrap();
        let running = fx.push(&[json!({"cmd": ["sleep", "60"], "group": "g", "tags": ["t"]})]).remove(0);
        let held_claim = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        let h = q_queue::ident::host();
        let (pid, pid_start) = q_queue::ident::me();
        let run = RunInfo { v: 1, host: h.host.clone(), boot_id: h.boot_id.clone(), pidns: h.pidns.clone(), pid, pid_start, pgid: pid, leader_start: pid_start, started_at: q_queue::time::rfc3339(q_queue::time::now_ms()), worker_id: Some("w1".into()) };
        b.record_start(&held_claim, &run).unwrap();
        let ids = fx.push(&[
            json!({"cmd": ["true"], "priority": 3}),
            json!({"cmd": ["true"], "delay": "1h"}),
            json!({"cmd": ["true"], "name": "held"}),
            json!({"cmd": ["true"]}),
            json!({"cmd": ["true"]}),
        ]);
        let (pending, scheduled, held, canceled, gone) = (&ids[0], &ids[1], &ids[2], &ids[3], &ids[4]);
        let waiting = fx.push(&[json!({"cmd": ["true"], "after": [pending]})]).remove(0);
        b.hold(held).unwrap();
        b.cancel(canceled).unwrap();
        b.cancel(gone).unwrap();
        let mut entries = b.entries(&State::ALL).unwrap();
        entries.sort_by(|x, y| y.id.cmp(&x.id));
        let twice = entries.iter().find(|e| e.id == *pending).unwrap().clone();
        entries.insert(3, twice);
        b.remove(gone).unwrap();

        // Everything a listing shows of a job, comparable.
        let shown = |e: &q_queue::Entry, job: &q_queue::Job, last: &Option<q_queue::ResultRecord>, usage: &Option<q_queue::Usage>, lease: &Option<q_queue::Lease>, run: &Option<RunInfo>| {
            json!({
                "entry": [e.id, e.state.as_str(), e.c.map(|c| (c.attempt, c.failures, c.interrupts)), e.run_at_ms],
                "job": job, "last": last, "usage": usage, "lease": lease, "run": run,
            })
        };
        let apart: Vec<serde_json::Value> = entries
            .iter()
            .filter_map(|e| {
                let (e, job) = b.job(e).unwrap()?;
                let (last, usage) = b.last_result_and_usage(&e.id);
                let (lease, run) = if e.state == State::Running { b.live_records(&e.id, e.c.unwrap().attempt) } else { (None, None) };
                Some(shown(&e, &job, &last, &usage.ok(), &lease, &run))
            })
            .collect();
        let listed = b.listed(&entries).unwrap();
        let batch: Vec<serde_json::Value> = listed.iter().map(|l| shown(&l.entry, &l.job, &l.last, &l.usage, &l.lease, &l.run)).collect();
        assert_eq!(batch, apart, "{n}");

        // What each look said is what the jobs are.
        let of = |id: &str| listed.iter().find(|l| l.entry.id == id).unwrap_or_else(|| panic!("{n}: {id} listed"));
        let want: Vec<&str> = entries.iter().map(|e| e.id.as_str()).filter(|id| id != gone).collect();
        let got: Vec<&str> = listed.iter().map(|l| l.entry.id.as_str()).collect();
        assert_eq!((got.clone(), got.len()), (want, 9), "{n}: in order, all but the job gone, the pending one twice");
        assert_eq!(got.iter().filter(|id| **id == pending.as_str()).count(), 2, "{n}");
        assert!(!got.contains(&gone.as_str()), "{n}: a job gone meanwhile is left out");
        let states: [(&str, State); 8] = [
            (pending, State::Pending),
            (scheduled, State::Pending),
            (&waiting, State::Waiting),
            (held, State::Held),
            (&running, State::Running),
            (&retried, State::Done),
            (&dead, State::Dead),
            (canceled, State::Canceled),
        ];
        for (id, st) in states {
            assert_eq!(of(id).entry.state, st, "{n}: {id}");
            assert_eq!(of(id).lease.is_some(), st == State::Running, "{n}: {id}: a lease record only while it runs");
        }
        let r = of(&running);
        assert_eq!((r.lease.as_ref().unwrap().worker_id.as_deref(), r.run.as_ref().map(|r| (r.pgid, r.worker_id.clone()))), (Some("conformance"), Some((pid, Some("w1".into())))), "{n}");
        assert_eq!((r.job.group.as_deref(), r.job.tags.clone()), (Some("g"), vec!["t".to_string()]), "{n}");
        let u = of(&retried).usage.unwrap();
        assert_eq!((u.attempts, u.wall_ms, u.cpu_user_ms, u.cpu_sys_ms, u.max_rss_kb), (2, 1_500, 14, 2, 300), "{n}: summed over both attempts");
        assert_eq!(of(&retried).last.as_ref().map(|r| (r.attempt, r.state)), Some((2, State::Done)), "{n}");
        assert_eq!(of(&dead).last.as_ref().map(|r| (r.state, r.exit_code)), Some((State::Dead, Some(1))), "{n}");
        assert_eq!(of(canceled).last.as_ref().map(|r| (r.state, r.attempt)), Some((State::Canceled, 0)), "{n}: ended without an attempt");
        assert_eq!(of(canceled).usage.unwrap().attempts, 0, "{n}");
        assert!(of(pending).last.is_none() && of(pending).usage.unwrap() == q_queue::Usage::default(), "{n}");
        assert_eq!(of(held).job.name.as_deref(), Some("held"), "{n}");
        assert_eq!(of(&waiting).job.after, std::slice::from_ref(pending), "{n}");
        assert!(b.listed(&[]).unwrap().is_empty(), "{n}");
        b.settle(&held_claim.id, &held_claim.token, Reason::Ok, &ok(), &so()).unwrap();
    });
}

/// When a listed job last changed state (`changed_at_ms`, by which q-ls
/// keeps the most recently finished jobs): the time of its last move, not
/// of its push.
#[test]
fn a_listed_job_says_when_it_last_moved() {
    each(|fx| {
        let b = fx.b.as_ref();
        let ids = fx.push(&[json!({"cmd": ["true"]}), json!({"cmd": ["true"]})]);
        std::thread::sleep(Duration::from_millis(50));
        let t0 = q_queue::time::now_ms();
        // Ended in the other order than pushed.
        b.cancel(&ids[1]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        b.cancel(&ids[0]).unwrap();
        let t1 = q_queue::time::now_ms();
        let entries = b.entries(&[State::Canceled]).unwrap();
        let at = |id: &str| b.changed_at_ms(entries.iter().find(|e| e.id == id).unwrap()).unwrap_or_else(|| panic!("{}: {id}", fx.name));
        assert!(at(&ids[1]) + 30 <= at(&ids[0]), "{}: {} then {}", fx.name, at(&ids[1]), at(&ids[0]));
        for id in &ids {
            // A second either way: a file's time is the kernel's coarse clock.
            assert!((t0 - 1000..=t1 + 1000).contains(&at(id)), "{}: {id} moved at {} (canceled within {t0}..{t1})", fx.name, at(id));
        }
    });
}

/// Hold, release, retry, remove.
#[test]
fn operator_moves() {
    each(|fx| {
        let b = fx.b.as_ref();
        let id = fx.push(&[json!({"cmd": ["true"]})]).remove(0);
        assert_eq!(b.hold(&id).unwrap(), State::Pending);
        assert!(b.claim(1, &opts(Liveness::Flock)).unwrap().is_empty(), "{}: held", fx.name);
        assert_eq!(b.release(&id).unwrap(), State::Held);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        b.settle(&c.id, &c.token, Reason::Exit, &failed(), &so()).unwrap();
        assert_eq!(b.finished(&id), Some(State::Dead));
        b.retry(&id).unwrap();
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!(c.attempt(), 2, "{}: attempts go on after a retry", fx.name);
        assert_eq!(b.remove(&id).unwrap_err().kind, Kind::Busy, "{}: only finished jobs are removed", fx.name);
        b.settle(&c.id, &c.token, Reason::Ok, &ok(), &so()).unwrap();
        assert_eq!(b.last_attempt(&id), 2);
        assert_eq!(b.remove(&id).unwrap(), State::Done);
        assert!(b.locate(&id).unwrap().is_none(), "{}: removed", fx.name);
    });
}

/// Ids people type (`Backend::resolve`): the exact id, then a unique
/// suffix or prefix of 6 or more characters (any case), then the name of a
/// unique unfinished job; several matches are ambiguous and listed; a full
/// id is exact only; a token that is not an id is compared with names
/// only. `last_pushed`: this user's newest job.
#[test]
fn ids_people_type() {
    each(|fx| {
        let b = fx.b.as_ref();
        let n = fx.name;
        assert_eq!(b.last_pushed().unwrap(), None, "{n}: nothing pushed yet");
        assert_eq!(b.resolve("build").unwrap(), Resolved::None, "{n}");
        let a = fx.push(&[json!({"cmd": ["true"], "name": "build"})]).remove(0);
        assert_eq!(b.last_pushed().unwrap().as_deref(), Some(a.as_str()), "{n}");
        assert_eq!(b.resolve(&a).unwrap(), Resolved::Id(a.clone()), "{n}: exact");
        assert_eq!(b.resolve(&a[20..]).unwrap(), Resolved::Id(a.clone()), "{n}: a suffix");
        assert_eq!(b.resolve(&a[18..].to_lowercase()).unwrap(), Resolved::Id(a.clone()), "{n}: in lower case");
        assert_eq!(b.resolve(&a[..6]).unwrap(), Resolved::Id(a.clone()), "{n}: a prefix (the only job)");
        assert_eq!(b.resolve(&a[21..]).unwrap(), Resolved::None, "{n}: 5 characters are too few");
        assert_eq!(b.resolve("build").unwrap(), Resolved::Id(a.clone()), "{n}: a name");

        let more = fx.push(&[
            json!({"cmd": ["true"], "name": "deploy"}),
            json!({"cmd": ["true"], "name": "deploy"}),
            json!({"cmd": ["true"], "name": "../x"}),
            json!({"cmd": ["true"], "name": "01ZZZZZZZZZZZZZZZZZZZZZZZZ"}),
        ]);
        let all: Vec<&String> = std::iter::once(&a).chain(&more).collect();
        let cand = |id: &String, name: &str| Candidate { id: id.clone(), state: State::Pending, name: Some(name.into()) };
        let names = ["build", "deploy", "deploy", "../x", "01ZZZZZZZZZZZZZZZZZZZZZZZZ"];
        // Ids pushed together share a long prefix: all that do are listed.
        let lcp = more[0].bytes().zip(more[1].bytes()).take_while(|(x, y)| x == y).count();
        let p = &more[0][..lcp.clamp(6, 25)];
        let want: Vec<Candidate> =
            all.iter().zip(names).filter(|(id, _)| id.starts_with(p) || id.ends_with(p)).map(|(id, nm)| cand(id, nm)).collect();
        match b.resolve(p).unwrap() {
            Resolved::Ambiguous { first, total } => {
                assert_eq!(first, want, "{n}: every candidate, by id, with state and name");
                assert_eq!(total, want.len(), "{n}");
            }
            other => assert!(want.len() == 1 && other == Resolved::Id(want[0].id.clone()), "{n}: {p}: {other:?}"),
        }
        let both = Resolved::Ambiguous { first: vec![cand(&more[0], "deploy"), cand(&more[1], "deploy")], total: 2 };
        assert_eq!(b.resolve("deploy").unwrap(), both, "{n}");
        assert_eq!(b.resolve("../x").unwrap(), Resolved::Id(more[2].clone()), "{n}: not an id: a name");
        assert_eq!(b.resolve("01ZZZZZZZZZZZZZZZZZZZZZZZZ").unwrap(), Resolved::None, "{n}: a full id is exact only");
        assert_eq!(b.resolve("0%").unwrap(), Resolved::None, "{n}: no pattern");
        assert_eq!(b.resolve("nobody").unwrap(), Resolved::None, "{n}");
        assert_eq!(b.last_pushed().unwrap().as_ref(), all.iter().max().copied(), "{n}: the newest");

        // Names are those of unfinished jobs; ids are anyone's.
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!(c.id, a, "{n}");
        b.settle(&c.id, &c.token, Reason::Ok, &ok(), &so()).unwrap();
        assert_eq!(b.resolve("build").unwrap(), Resolved::None, "{n}: a finished job's name");
        assert_eq!(b.resolve(&a[20..]).unwrap(), Resolved::Id(a.clone()), "{n}: a finished job's suffix");
        b.cancel(&more[0]).unwrap();
        assert_eq!(b.resolve("deploy").unwrap(), Resolved::Id(more[1].clone()), "{n}: one unfinished job of the name left");

        // Many candidates: the first 10 by id, and how many.
        let mut same = fx.push(&vec![json!({"cmd": ["true"], "name": "same"}); 12]);
        same.sort();
        match b.resolve("same").unwrap() {
            Resolved::Ambiguous { first, total } => {
                assert_eq!(total, 12, "{n}");
                assert_eq!(first.iter().map(|c| &c.id).collect::<Vec<_>>(), same[..10].iter().collect::<Vec<_>>(), "{n}");
            }
            other => panic!("{n}: {other:?}"),
        }
    });
}

/// N claimers at once (each with its own claimer, as workers have), each
/// settling what it claims: every job is completed exactly once.
#[test]
fn concurrent_claimers_never_complete_a_job_twice() {
    each(|fx| {
        const JOBS: usize = 300;
        let lines: Vec<serde_json::Value> = (0..JOBS).map(|i| json!({"cmd": ["true", i.to_string()]})).collect();
        let ids: BTreeSet<String> = fx.push(&lines).into_iter().collect();
        let done = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            for w in 0..4 {
                let b = Arc::clone(&fx.b);
                let done = Arc::clone(&done);
                s.spawn(move || {
                    let mut claimer = b.claimer();
                    let o = ClaimOpts { lease_ms: 60_000, worker_id: Some(format!("w{w}")), liveness: Liveness::Flock, fit: None };
                    loop {
                        let got = claimer.claim(1 + w % 2, &o).unwrap();
                        if got.is_empty() {
                            break;
                        }
                        let (outcome, so) = (ok(), SettleOpts::default());
                        let group: Vec<ToSettle> = got.iter().map(|c| ToSettle { claim: c, reason: Reason::Ok, outcome: &outcome, opts: &so }).collect();
                        for r in b.settle_group(&group) {
                            done.lock().unwrap().push(r.unwrap().id);
                        }
                    }
                });
            }
        });
        let mut done = done.lock().unwrap().clone();
        done.sort();
        let n = done.len();
        done.dedup();
        assert_eq!(n, done.len(), "{}: a job completed twice", fx.name);
        assert_eq!(done.into_iter().collect::<BTreeSet<_>>(), ids, "{}: every job completed", fx.name);
        assert_eq!(fx.b.counts().unwrap().done, JOBS as u64);
    });
}

/// A group settle fences each attempt on its own.
#[test]
fn a_group_settle_refuses_only_the_stale_attempt() {
    each(|fx| {
        let b = fx.b.as_ref();
        fx.push(&[json!({"cmd": ["true"]}), json!({"cmd": ["true"]}), json!({"cmd": ["true"]})]);
        let claims = b.claimer().claim(3, &opts(Liveness::Flock)).unwrap();
        assert_eq!(claims.len(), 3);
        b.settle(&claims[1].id, &claims[1].token, Reason::WorkerShutdown, &Outcome::default(), &so()).unwrap();
        let (outcome, so) = (ok(), SettleOpts::default());
        let group: Vec<ToSettle> = claims.iter().map(|c| ToSettle { claim: c, reason: Reason::Ok, outcome: &outcome, opts: &so }).collect();
        let answers = b.settle_group(&group);
        assert_eq!(answers[0].as_ref().unwrap().state, State::Done, "{}", fx.name);
        assert_eq!(answers[1].as_ref().unwrap_err().kind, Kind::LeaseLost, "{}", fx.name);
        assert_eq!(answers[2].as_ref().unwrap().state, State::Done, "{}", fx.name);
        assert!(claims.iter().all(|c| !c.durable_pending()), "{}: settled claims are durable", fx.name);
    });
}

/// A runner's log: written while the job runs, read from anywhere (a
/// reader sees what is appended later), and the attempt counts as started.
#[test]
fn logs_are_written_and_read() {
    each(|fx| {
        let b = fx.b.as_ref();
        let id = fx.push(&[json!({"cmd": ["true"]})]).remove(0);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert!(b.log_reader(&id, 1, Stream::Stdout).unwrap().is_none(), "{}: no log yet", fx.name);
        let h = q_queue::ident::host();
        let (pid, pid_start) = q_queue::ident::me();
        let run = RunInfo { v: 1, host: h.host.clone(), boot_id: h.boot_id.clone(), pidns: h.pidns.clone(), pid, pid_start, pgid: pid, leader_start: pid_start, started_at: q_queue::time::rfc3339(q_queue::time::now_ms()), worker_id: None };
        b.record_start(&c, &run).unwrap();
        assert_eq!(b.log_attempts(&id), [1], "{}: a started attempt", fx.name);
        assert_eq!(b.live_records(&id, 1).1.map(|r| r.pgid), Some(pid), "{}: its process group", fx.name);
        let mut w = b.log_writer(&c, Stream::Stdout).unwrap();
        w.write_all(b"hello\n").unwrap();
        w.flush().unwrap();
        let mut r = b.log_reader(&id, 1, Stream::Stdout).unwrap().expect("a log");
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello\n", "{}", fx.name);
        w.write_all(b"more\n").unwrap();
        w.flush().unwrap();
        got.clear();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "more\n", "{}: a follower sees what comes later", fx.name);
        let mut e = b.log_writer(&c, Stream::Stderr).unwrap();
        e.write_all(b"oops\n").unwrap();
        e.flush().unwrap();
        let mut got = String::new();
        b.log_reader(&id, 1, Stream::Stderr).unwrap().unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "oops\n", "{}: stderr kept apart", fx.name);
        b.settle(&c.id, &c.token, Reason::Ok, &ok(), &so()).unwrap();
        assert_eq!(b.log_attempts(&id), [1], "{}", fx.name);
    });
}

/// The order of an attempt's output: each write of either stream is one
/// chunk, listed in the order written, readable at its offset; a reader
/// asks for the chunks after those it has.
#[test]
fn log_order_interleaves_the_streams() {
    each(|fx| {
        let b = fx.b.as_ref();
        let id = fx.push(&[json!({"cmd": ["true"]})]).remove(0);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        assert_eq!(b.log_order(&id, 1, 0).unwrap(), None, "{}: no output, no order", fx.name);
        let mut o = b.log_writer(&c, Stream::Stdout).unwrap();
        let mut e = b.log_writer(&c, Stream::Stderr).unwrap();
        o.write_all(b"one\n").unwrap();
        e.write_all(b"two!\n").unwrap();
        o.write_all(b"three\n").unwrap();
        let got = b.log_order(&id, 1, 0).unwrap().expect("an order");
        let seen: Vec<(Stream, u64, u64)> = got.iter().map(|c| (c.stream, c.offset, c.len)).collect();
        assert_eq!(seen, [(Stream::Stdout, 0, 4), (Stream::Stderr, 0, 5), (Stream::Stdout, 4, 6)], "{}", fx.name);
        assert!(got.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "{}: times in order", fx.name);
        e.write_all(b"four\n").unwrap();
        let more = b.log_order(&id, 1, 3).unwrap().expect("an order");
        assert_eq!(more.iter().map(|c| (c.stream, c.offset, c.len)).collect::<Vec<_>>(), [(Stream::Stderr, 5, 5)], "{}: only the new chunks", fx.name);
        let mut all = String::new();
        b.log_reader(&id, 1, Stream::Stdout).unwrap().unwrap().read_to_string(&mut all).unwrap();
        assert_eq!(all, "one\nthree\n", "{}: the streams stay apart", fx.name);
        b.settle(&c.id, &c.token, Reason::Ok, &ok(), &so()).unwrap();
        assert_eq!(b.log_order(&id, 1, 4).unwrap(), Some(vec![]), "{}: nothing after the end", fx.name);
    });
}

/// Workers announce themselves for as long as they hold their presence.
#[test]
fn workers_announce_their_presence() {
    each(|fx| {
        let b = fx.b.as_ref();
        assert_eq!(b.live_workers(), 0, "{}", fx.name);
        let one = b.announce_worker().unwrap();
        let two = b.announce_worker().unwrap();
        assert_eq!(b.live_workers(), 2, "{}", fx.name);
        drop(one);
        assert_eq!(b.live_workers(), 1, "{}", fx.name);
        drop(two);
        assert_eq!(b.live_workers(), 0, "{}", fx.name);
    });
}

/// One supervisor, one collector: a second holder is told who holds it.
#[test]
fn singletons_have_one_holder() {
    each(|fx| {
        let b = fx.b.as_ref();
        for which in [Singleton::Supervisor, Singleton::Collector] {
            assert!(!b.is_locked(which), "{}", fx.name);
            let Acquired::Held(g) = b.lock(which, Duration::ZERO).unwrap() else { panic!("{}: free", fx.name) };
            assert!(b.is_locked(which), "{}", fx.name);
            // A second holder is refused, and told who holds it.
            let Acquired::Busy(holder) = b.lock(which, Duration::ZERO).unwrap() else { panic!("{}: two holders", fx.name) };
            assert!(holder.is_some_and(|h| h.is_me()), "{}: the holder is named", fx.name);
            g.release();
            assert!(!b.is_locked(which), "{}: released", fx.name);
        }
    });
}

/// Reaching a live supervisor: its record counts only while it holds the
/// lock; an ask reaches the supervisor it is addressed to, once, in order;
/// an ask for a supervisor that stopped or was replaced is refused (75),
/// and one left for a predecessor is never applied by its successor.
#[test]
fn a_live_supervisor_is_reached() {
    use q_queue::supervisor::{Settings, SupAsk, Supervisor};
    each(|fx| {
        let b = fx.b.as_ref();
        let ask = |to: &str, workers: Option<u32>, slots: &[(&str, u32)]| SupAsk {
            id: q_queue::id::new_id(),
            to: to.to_owned(),
            workers,
            slots: slots.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            ..SupAsk::default()
        };
        assert!(b.supervisors().unwrap().is_empty(), "{}", fx.name);
        let mut s1 = Supervisor::me(Settings { workers: 2, slots: [("gpu".to_string(), 2)].into(), ..Settings::default() });
        // A record without the lock is no live supervisor's.
        b.publish_supervisor(&s1).unwrap();
        assert!(b.supervisors().unwrap().is_empty(), "{}: not locked", fx.name);
        let Acquired::Held(g) = b.lock(Singleton::Supervisor, Duration::ZERO).unwrap() else { panic!("{}: free", fx.name) };
        b.publish_supervisor(&s1).unwrap();
        assert_eq!(b.supervisors().unwrap(), [s1.clone()], "{}", fx.name);
        assert_eq!(b.ask_supervisor(&ask("01J00000000000000000000000", Some(1), &[])).unwrap_err().kind, Kind::Busy, "{}: no such supervisor", fx.name);
        let (a1, a2) = (ask(&s1.id, Some(4), &[]), ask(&s1.id, None, &[("gpu", 1)]));
        b.ask_supervisor(&a1).unwrap();
        b.ask_supervisor(&a2).unwrap();
        let got = b.take_supervisor_asks(&s1.id).unwrap();
        assert_eq!(got, [a1.clone(), a2.clone()], "{}: in order", fx.name);
        assert!(b.take_supervisor_asks(&s1.id).unwrap().is_empty(), "{}: taken once", fx.name);
        s1.apply(&got);
        b.publish_supervisor(&s1).unwrap();
        let live = b.supervisors().unwrap();
        assert_eq!(live[0].settings, Settings { workers: 4, slots: [("gpu".to_string(), 1)].into(), ..Settings::default() }, "{}", fx.name);
        assert_eq!(live[0].applied, [a1.id.clone(), a2.id.clone()], "{}", fx.name);
        // A successor (a new id) never applies what was left for s1.
        b.ask_supervisor(&ask(&s1.id, Some(9), &[])).unwrap();
        let s2 = Supervisor::me(Settings { workers: 1, ..Settings::default() });
        b.publish_supervisor(&s2).unwrap();
        assert!(b.take_supervisor_asks(&s2.id).unwrap().is_empty(), "{}: not the successor's", fx.name);
        assert_eq!(b.ask_supervisor(&ask(&s1.id, Some(3), &[])).unwrap_err().kind, Kind::Busy, "{}: replaced", fx.name);
        b.ask_supervisor(&ask(&s2.id, Some(3), &[])).unwrap();
        g.release();
        assert!(b.supervisors().unwrap().is_empty(), "{}: stopped", fx.name);
        assert_eq!(b.ask_supervisor(&ask(&s2.id, Some(3), &[])).unwrap_err().kind, Kind::Busy, "{}: stopped", fx.name);
    });
}

/// Counts per group: each state of each group, the jobs of no group
/// under `None`, adding up to the counts per state.
#[test]
fn counts_by_group() {
    each(|fx| {
        let b = fx.b.as_ref();
        fx.push(&[
            json!({"cmd": ["true"], "group": "io", "priority": 9}),
            json!({"cmd": ["true"], "group": "io"}),
            json!({"cmd": ["true"], "group": "io", "delay": "1h"}),
            json!({"cmd": ["true"], "group": "render"}),
            json!({"cmd": ["true"]}),
        ]);
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap();
        b.settle(&c[0].id, &c[0].token, Reason::Ok, &ok(), &so()).unwrap();
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap();
        let g = b.group_counts().unwrap();
        let io = &g[&Some("io".to_string())];
        let got = |c: &q_queue::Counts| (c.ready, c.scheduled, c.running, c.done);
        assert_eq!(g.len(), 3, "{}: {g:?}", fx.name);
        // The io job of priority 9 ran; the second claim took the older io job.
        assert_eq!(got(io), (0, 1, 1, 1), "{}: {g:?}", fx.name);
        assert_eq!(got(&g[&Some("render".to_string())]), (1, 0, 0, 0), "{}: {g:?}", fx.name);
        assert_eq!(got(&g[&None]), (1, 0, 0, 0), "{}: {g:?}", fx.name);
        let all = b.counts().unwrap();
        let sum = |f: fn(&q_queue::Counts) -> u64| g.values().map(f).sum::<u64>();
        assert_eq!((sum(|c| c.ready), sum(|c| c.scheduled), sum(|c| c.running), sum(|c| c.done)), (all.ready, all.scheduled, all.running, all.done), "{}", fx.name);
        b.settle(&c[0].id, &c[0].token, Reason::Ok, &ok(), &so()).unwrap();
    });
}

/// Adopting a claim made elsewhere: refused when it is not current.
#[test]
fn adopting_a_claim() {
    each(|fx| {
        let b = fx.b.as_ref();
        let id = fx.push(&[json!({"cmd": ["true"]})]).remove(0);
        let c = b.claim(1, &opts(Liveness::Ttl)).unwrap().remove(0);
        let token = c.token.clone();
        drop(c);
        let held = b.adopt(&id, &token).unwrap();
        assert_eq!((held.id.as_str(), held.attempt()), (id.as_str(), 1), "{}", fx.name);
        assert!(b.extend(&held).unwrap(), "{}: the adopted lease is ours", fx.name);
        assert_eq!(b.adopt(&id, &token).unwrap_err().kind, Kind::Busy, "{}: run by another holder", fx.name);
        b.settle(&id, &token, Reason::Ok, &ok(), &so()).unwrap();
        assert!(!b.extend(&held).unwrap(), "{}: a settled claim is not extended", fx.name);
        drop(held);
        assert_eq!(b.adopt(&id, &token).unwrap_err().kind, Kind::LeaseLost, "{}: settled", fx.name);
    });
}

/// `idle`: running, ready, scheduled within or after the horizon, held.
#[test]
fn the_idle_look() {
    each(|fx| {
        let b = fx.b.as_ref();
        assert!(!b.idle(None).unwrap().busy, "{}: empty", fx.name);
        fx.push(&[json!({"cmd": ["true"], "delay": "1h"})]);
        assert!(b.idle(None).unwrap().busy, "{}: a scheduled job is work", fx.name);
        let s = b.idle(Some(60_000)).unwrap();
        assert!(!s.busy && s.later == 1, "{}: beyond the horizon: {s:?}", fx.name);
        let held = fx.push(&[json!({"cmd": ["true"]})]).remove(0);
        b.hold(&held).unwrap();
        let s = b.idle(Some(60_000)).unwrap();
        assert!(!s.busy && s.held == 1, "{}: held is not work: {s:?}", fx.name);
        b.release(&held).unwrap();
        let c = b.claim(1, &opts(Liveness::Flock)).unwrap().remove(0);
        let s = b.idle(Some(60_000)).unwrap();
        assert!(s.busy && s.running >= 1 && !s.paused, "{}: running: {s:?}", fx.name);
        // A running job is work even in a paused queue, which the look says.
        b.pause(None).unwrap();
        let s = b.idle(Some(60_000)).unwrap();
        assert!(s.busy && s.paused, "{}: running, paused: {s:?}", fx.name);
        b.resume().unwrap();
        b.settle(&c.id, &c.token, Reason::Ok, &ok(), &so()).unwrap();
        assert!(!b.idle(Some(60_000)).unwrap().busy, "{}", fx.name);
    });
}

/// Import: a batch comes in with its ids, fields, due times, counters,
/// states and recorded environment; a waiting job waits on a job of the
/// batch; a batch naming an id the queue has is refused whole; a waiting
/// job's unknown dependency is refused.
#[test]
fn imports_keep_everything_and_are_whole() {
    use q_queue::job::validate;
    use q_queue::{Counters, Import, PushContext};
    each(|fx| {
        let b = fx.b.as_ref();
        let env: std::collections::BTreeMap<String, String> = [("MOVED".to_owned(), "yes".to_owned())].into();
        let ctx = PushContext { cwd: "/srv".into(), env: Arc::new(env.clone()), now_ms: q_queue::time::now_ms() };
        let new = |line: serde_json::Value| validate(line.as_object().unwrap(), &ctx).unwrap();
        let first = new(json!({"cmd": ["echo", "first"], "priority": 4, "name": "first", "tags": ["a"], "attempts": 5, "env_from": "pusher", "payload": {"k": 1}}));
        let first_id = first.job.id.clone();
        let mut later = new(json!({"sh": "true", "after": [first_id], "key": "k-imported"}));
        later.run_at_ms = 4_102_444_800_000; // 2100
        let later_id = later.job.id.clone();
        let held = new(json!({"cmd": ["true"], "timeout": "5s"}));
        let held_id = held.job.id.clone();
        let batch = vec![
            Import { new: first.clone(), state: State::Pending, c: Counters { attempt: 2, failures: 1, interrupts: 1 } },
            Import { new: later.clone(), state: State::Waiting, c: Counters::default() },
            Import { new: held.clone(), state: State::Held, c: Counters::default() },
        ];
        assert_eq!(b.import(batch).unwrap(), 3, "{}", fx.name);
        let e = b.locate(&first_id).unwrap().unwrap();
        assert_eq!((e.state, e.c), (State::Pending, Some(Counters { attempt: 2, failures: 1, interrupts: 1 })), "{}", fx.name);
        let (_, job) = b.job(&e).unwrap().unwrap();
        let mut want = first.job.clone();
        want.env_ref = job.env_ref.clone();
        assert_eq!(serde_json::to_value(&job).unwrap(), serde_json::to_value(&want).unwrap(), "{}: every field", fx.name);
        assert_eq!(b.load_env(job.env_ref.as_deref().unwrap(), None).unwrap(), env, "{}: the recorded environment", fx.name);
        let w = b.locate(&later_id).unwrap().unwrap();
        assert_eq!((w.state, w.run_at_ms), (State::Waiting, Some(later.run_at_ms)), "{}", fx.name);
        assert_eq!(b.locate(&held_id).unwrap().unwrap().state, State::Held, "{}", fx.name);
        // Whole or nothing: one id the queue has refuses the batch.
        let fresh = new(json!({"cmd": ["true"]}));
        let again = vec![
            Import { new: fresh.clone(), state: State::Pending, c: Counters::default() },
            Import { new: held, state: State::Pending, c: Counters::default() },
        ];
        assert_eq!(b.import(again).unwrap_err().kind, Kind::Create, "{}", fx.name);
        assert!(b.locate(&fresh.job.id).unwrap().is_none(), "{}: nothing of a refused batch", fx.name);
        // Dedupe keys: an imported job holds its key (a push with it is
        // deduped to it); a batch with a key an unfinished job holds is
        // refused whole (75), as is one with a key twice (65).
        let dup = b.push(vec![new(json!({"cmd": ["true"], "key": "k-imported"}))]).remove(0).unwrap();
        assert_eq!((dup.id.as_str(), dup.deduped), (later_id.as_str(), true), "{}: the imported job holds its key", fx.name);
        let (k1, k2) = (new(json!({"cmd": ["true"]})), new(json!({"cmd": ["true"], "key": "k-imported"})));
        let e = b
            .import(vec![Import { new: k1.clone(), state: State::Pending, c: Counters::default() }, Import { new: k2, state: State::Pending, c: Counters::default() }])
            .unwrap_err();
        assert_eq!(e.kind, Kind::Busy, "{}: {e}", fx.name);
        assert!(e.to_string().contains(&later_id), "{}: names the holder: {e}", fx.name);
        assert!(b.locate(&k1.job.id).unwrap().is_none(), "{}: nothing of a refused batch", fx.name);
        let twice = |k: &str| Import { new: new(json!({"cmd": ["true"], "key": k})), state: State::Held, c: Counters::default() };
        let e = b.import(vec![twice("k-twice"), twice("k-twice")]).unwrap_err();
        assert_eq!(e.kind, Kind::Data, "{}: {e}", fx.name);
        let orphan = new(json!({"cmd": ["true"], "after": ["01ARZ3NDEKTSV4RRFFQ69G5FAV"]}));
        let e = b.import(vec![Import { new: orphan, state: State::Waiting, c: Counters::default() }]).unwrap_err();
        assert_eq!(e.kind, Kind::NoJob, "{}: {e}", fx.name);
        // They run: the claim's attempt goes on from the imported counters;
        // the waiting job moves on when its dependency is done.
        let c = b.claim(1, &opts(Liveness::Ttl)).unwrap().remove(0);
        assert_eq!((c.id.as_str(), c.attempt()), (first_id.as_str(), 3), "{}", fx.name);
        b.settle(&c.id, &c.token, Reason::Ok, &ok(), &so()).unwrap();
        assert_eq!(b.locate(&later_id).unwrap().unwrap().state, State::Pending, "{}", fx.name);
    });
}

/// Slots (`needs`, `group`): a claimer without slots takes only jobs
/// without needs; with slots, the rule of `q_queue::slots` in claim order:
/// a job waiting for its slots holds back later jobs needing the same ones
/// but not others, a job that never fits is passed over, and a limited
/// group counts. `idle_for` does not count a job that never fits as work.
#[test]
fn claims_with_slots_and_limits() {
    use q_queue::slots::{Fit, Res};
    let fit = |gpu_total: u32, gpu_free: u32, io_free: u32| {
        let (g, io) = (Res::Slot("gpu".into()), Res::Group("io".into()));
        Some(Fit { total: [(g.clone(), gpu_total), (io.clone(), 1)].into(), free: [(g, gpu_free), (io, io_free)].into() })
    };
    each(|fx| {
        let b = fx.b.as_ref();
        let ids = fx.push(&[
            json!({"cmd": ["true"], "needs": {"gpu": 2}, "priority": 9}),
            json!({"cmd": ["true"], "needs": {"tpu": 1}, "priority": 8}),
            json!({"cmd": ["true"], "needs": {"gpu": 1}, "priority": 7}),
            json!({"cmd": ["true"], "group": "io", "priority": 6}),
            json!({"cmd": ["true"], "priority": 5}),
        ]);
        let held = Mutex::new(Vec::new());
        let claim = |n: usize, fit: Option<Fit>| -> Vec<String> {
            let o = ClaimOpts { fit, ..opts(Liveness::Flock) };
            let got = b.claim(n, &o).unwrap();
            let ids = got.iter().map(|c| c.id.clone()).collect();
            held.lock().unwrap().extend(got);
            ids
        };
        // One GPU free of two, no place in io: the gpu:2 job waits and holds
        // back the gpu:1 job; the tpu job never fits; the plain job runs.
        assert_eq!(claim(5, fit(2, 1, 0)), [ids[4].clone()], "{}", fx.name);
        // Without slots: the job of a group (no needs) only.
        assert_eq!(claim(5, None), [ids[3].clone()], "{}", fx.name);
        // Both GPUs free: the gpu:2 job takes them, the gpu:1 job waits.
        assert_eq!(claim(5, fit(2, 2, 1)), [ids[0].clone()], "{}", fx.name);
        assert_eq!(claim(5, fit(2, 1, 1)), [ids[2].clone()], "{}", fx.name);
        assert!(claim(5, fit(2, 2, 1)).is_empty(), "{}: only the tpu job is left", fx.name);
        for c in held.lock().unwrap().drain(..) {
            b.settle(&c.id, &c.token, Reason::Ok, &ok(), &so()).unwrap();
        }
        // The job that never fits is not work, and is counted.
        let s = b.idle_for(None, fit(2, 2, 1).as_ref()).unwrap();
        assert_eq!((s.busy, s.unfit, s.due), (false, 1, 0), "{}: {s:?}", fx.name);
        let s = b.idle(None).unwrap();
        assert_eq!((s.busy, s.unfit), (false, 1), "{}: {s:?}", fx.name);
        let tpu = Some(Fit { total: [(Res::Slot("tpu".into()), 1)].into(), free: Default::default() });
        assert!(b.idle_for(None, tpu.as_ref()).unwrap().busy, "{}: it fits a tpu slot", fx.name);
    });
}

/// A ready job behind many more urgent jobs that a claimer's slots cannot
/// take now (its GPU is busy) or ever (a slot it has not), in classes of
/// their own, is claimed all the same, and in claim order with the jobs
/// of the classes it can take: however many jobs wait ahead of it, not
/// only within the first few hundred.
#[test]
fn a_ready_job_behind_many_it_cannot_take_is_claimed() {
    use q_queue::slots::{Fit, Res};
    each(|fx| {
        let b = fx.b.as_ref();
        let gpu = json!({"cmd": ["true"], "needs": {"gpu": 1}, "priority": 9});
        let tpu = json!({"cmd": ["true"], "needs": {"tpu": 1}, "priority": 9});
        let mut lines = vec![gpu; 300];
        lines.extend(vec![tpu; 300]);
        fx.push(&lines);
        let ids = fx.push(&[json!({"cmd": ["true"], "group": "io", "priority": 2}), json!({"cmd": ["true"], "priority": 1})]);
        let g = Res::Slot("gpu".into());
        let busy = Fit { total: [(g.clone(), 1)].into(), free: [(g.clone(), 0)].into() };
        let o = ClaimOpts { fit: Some(busy), ..opts(Liveness::Flock) };
        let got: Vec<String> = b.claim(5, &o).unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(got, ids, "{}", fx.name);
        // With the GPU free, its most urgent job comes first.
        fx.push(&[json!({"cmd": ["true"], "priority": 1})]);
        let free = Fit { total: [(g.clone(), 1)].into(), free: [(g, 1)].into() };
        let o = ClaimOpts { fit: Some(free), ..opts(Liveness::Flock) };
        let got = b.claim(5, &o).unwrap();
        assert_eq!(got.len(), 2, "{}: one gpu job and the plain one", fx.name);
        assert_eq!(got[0].job.needs.get("gpu"), Some(&1), "{}", fx.name);
        assert!(got[1].job.needs.is_empty(), "{}", fx.name);
    });
}
