//! Property tests of the library (DESIGN §9.3): name and record codecs
//! round-trip and reject garbage without panicking (extending the unit tests
//! in names.rs and job.rs), backoff bounds, and a state-machine test of the
//! protocol — push, claim, heartbeat, settle ok/fail, kill (drop the claim's
//! lease handle), lease expiry (the lease file's mtime set into the past),
//! reclaim, stale settles — run through the `Backend` trait on every
//! backend (tests/backends) against a reference model, with the invariants
//! checked after every step (and a directory queue's own, on its files).
//!
//! `PROPTEST_CASES` raises the number of cases (default 48 here).

mod backends;

use backends::Fixture;
use proptest::prelude::*;
use q_queue::job::{Backoff, Job, PushContext, validate};
use q_queue::names::{Counters, Key, LeasedName, QueuedName, parse_terminal, terminal_name};
use q_queue::{Backend, ClaimOpts, Kind, Liveness, Outcome, Queue, Reason, ResultRecord, SettleOpts, State};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// A name the codecs accept is exactly the name they would write: no
    /// second spelling of one job (a leading zero, a sign) can exist.
    #[test]
    fn accepted_names_are_canonical(s in "[0-9A-Za-z._+-]{0,60}") {
        if let Some(n) = QueuedName::parse(&s) {
            prop_assert_eq!(n.to_string(), s.clone());
        }
        if let Some(n) = LeasedName::parse(&s) {
            prop_assert_eq!(n.to_string(), s.clone());
        }
        if let Some(k) = Key::parse(&s) {
            prop_assert_eq!(k.to_string(), s.clone());
        }
        if let Some(id) = parse_terminal(&s) {
            prop_assert_eq!(terminal_name(id), s.clone());
        }
    }

    /// Counters spelled with a leading zero or a sign are not a second name
    /// of the same job: refused, or (never) accepted with another spelling.
    #[test]
    fn noncanonical_counters_are_refused(id in "[0-9A-HJKMNP-TV-Z]{26}", a in 0u32..1000, pad in "(0|00|\\+|-)", at in 0usize..3) {
        let mut c = [a.to_string(), "0".to_owned(), "1".to_owned()];
        c[at] = format!("{pad}{}", c[at]);
        let leased = format!("{id}.{}.{}.{}.json", c[0], c[1], c[2]);
        let queued = format!("00001.0000000000001.{id}.{}.{}.{}.json", c[0], c[1], c[2]);
        prop_assert_eq!(LeasedName::parse(&leased), None);
        prop_assert_eq!(QueuedName::parse(&queued), None);
        prop_assert_eq!(LeasedName::from_token(&id, &format!("{}.{}.{}", c[0], c[1], c[2])), None);
    }

    /// Name-like garbage: digits and dots in every arrangement.
    #[test]
    fn namelike_garbage_never_panics(s in "[0-9.]{0,40}(\\.json)?", id in "[0-9A-Z./]{0,30}") {
        let t = format!("{s}{id}.json");
        for x in [&s, &t] {
            let _ = QueuedName::parse(x);
            let _ = LeasedName::parse(x);
            let _ = Key::parse(x);
            let _ = LeasedName::from_token(&id, x);
        }
    }

    /// Job records round-trip, unknown fields of a newer writer included.
    #[test]
    fn job_records_roundtrip_with_unknown_fields(
        cmd in proptest::collection::vec("\\PC{1,12}", 1..4), prio in -9999i64..=9999, attempts in 1u64..50,
        tags in proptest::collection::vec("[a-z]{1,8}", 0..3), extra_key in "x_[a-z]{1,8}", extra in any::<i64>(),
        payload in proptest::option::of(any::<i32>()),
    ) {
        let mut obj = Map::new();
        obj.insert("cmd".into(), json!(cmd));
        obj.insert("priority".into(), json!(prio));
        obj.insert("attempts".into(), json!(attempts));
        obj.insert("tags".into(), json!(tags));
        if let Some(p) = payload {
            obj.insert("payload".into(), json!(p));
        }
        let ctx = PushContext { cwd: "/tmp".into(), env: Default::default(), now_ms: 1_700_000_000_000 };
        let nj = validate(&obj, &ctx).unwrap();
        let mut bytes = nj.job.to_bytes();
        prop_assert_eq!(&Job::from_bytes(&bytes).unwrap(), &nj.job);
        // A newer writer's field survives a read and a write.
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        v[&extra_key] = json!(extra);
        bytes = serde_json::to_vec(&v).unwrap();
        let j = Job::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&j.extra[&extra_key], &json!(extra));
        let again: Value = serde_json::from_slice(&j.to_bytes()).unwrap();
        prop_assert_eq!(again, v);
    }

    /// Any JSON object (known field names with values of any type, and
    /// unknown ones) is validated or refused as data, never a panic.
    #[test]
    fn validate_never_panics(fields in proptest::collection::vec((0usize..20, json_value()), 0..8)) {
        const KEYS: [&str; 20] = ["cmd", "sh", "cwd", "env", "env_from", "payload", "name", "priority", "run_at", "delay",
            "timeout", "attempts", "backoff", "key", "after", "tags", "delivery", "bogus", "", "v"];
        let obj: Map<String, Value> = fields.into_iter().map(|(k, v)| (KEYS[k].to_owned(), v)).collect();
        let ctx = PushContext { cwd: "/".into(), env: Default::default(), now_ms: 0 };
        if let Err(e) = validate(&obj, &ctx) {
            prop_assert_eq!(e.kind, Kind::Data);
        }
    }

    /// Arbitrary bytes never panic the record readers.
    #[test]
    fn record_readers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Job::from_bytes(&b);
        let _ = serde_json::from_slice::<ResultRecord>(&b);
        let _ = serde_json::from_slice::<q_queue::Lease>(&b);
    }

    /// Backoff: within [d/2, d] where d = min(max, base·2^(f−1)); before
    /// jitter it never decreases with more failures, and never passes max.
    #[test]
    fn backoff_bounds(base in 1u64..100_000, extra in 0u64..1_000_000, f in 1u32..80, r in any::<u64>()) {
        let b = Backoff { base_ms: base, max_ms: base + extra };
        let d = b.delay_ms(f, r);
        let full = base.saturating_mul(1u64 << (f - 1).min(62)).min(b.max_ms);
        prop_assert!(d <= b.max_ms);
        prop_assert!(d >= full - full / 2 && d <= full, "f={} d={} full={}", f, d, full);
        prop_assert!(b.delay_ms(f + 1, 0) >= b.delay_ms(f, 0));
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,10}".prop_map(Value::String),
        Just(json!("5s")),
        Just(json!("at-most-once")),
        Just(json!("2030-01-01T00:00:00Z")),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---- The state machine ----

#[derive(Debug, Clone)]
enum Op {
    /// A job; with `group`, one of a class (`"group": "g"`, which a
    /// claimer without slots takes: its segments are `pending/c.@g/`), so
    /// that the claim order is checked across classes too.
    Push { priority: i32, group: bool },
    Claim { w: usize },
    Touch { w: usize },
    Ok { w: usize },
    Fail { w: usize },
    /// The worker dies: its lease lock is released.
    Kill { w: usize },
    /// The worker stalls past its lease: the file's mtime goes 2 min back.
    Expire { w: usize },
    Reclaim,
}

const WORKERS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WORKERS;
    prop_oneof![
        3 => (-2i32..3, any::<bool>()).prop_map(|(priority, group)| Op::Push { priority, group }),
        4 => w.clone().prop_map(|w| Op::Claim { w }),
        1 => w.clone().prop_map(|w| Op::Touch { w }),
        3 => w.clone().prop_map(|w| Op::Ok { w }),
        2 => w.clone().prop_map(|w| Op::Fail { w }),
        1 => w.clone().prop_map(|w| Op::Kill { w }),
        1 => w.clone().prop_map(|w| Op::Expire { w }),
        2 => Just(Op::Reclaim),
    ]
}

/// The model of one job.
#[derive(Debug, Clone, PartialEq)]
struct MJob {
    state: State,
    /// Claims so far.
    attempt: u32,
    failures: u32,
    interrupts: u32,
    priority: i32,
}

/// A worker's claim: live, or taken over (a stale token it still holds).
struct WClaim {
    id: String,
    token: String,
    /// The claim itself: holding it holds its lease (dropping it is the worker's death).
    file: Option<q_queue::Claim>,
    stale: bool,
}

const ATTEMPTS: u32 = 2;

fn run_machine(fx: &Fixture, ops: &[Op]) -> Result<(), TestCaseError> {
    let q: &dyn Backend = fx.b.as_ref();
    let mut model: BTreeMap<String, MJob> = BTreeMap::new();
    let mut workers: Vec<Option<WClaim>> = (0..WORKERS).map(|_| None).collect();
    let ctx = PushContext { cwd: "/".into(), env: Default::default(), now_ms: q_queue::time::now_ms() };
    let settle_opts = SettleOpts { delay_ms: Some(0), ..SettleOpts::default() };
    for (step, op) in ops.iter().enumerate() {
        let why = format!("step {step}: {op:?}");
        match *op {
            Op::Push { priority, group } => {
                let mut obj = json!({"cmd": ["true"], "priority": priority, "attempts": ATTEMPTS, "env_from": "worker"});
                if group {
                    obj["group"] = json!("g");
                }
                let nj = validate(obj.as_object().unwrap(), &ctx).unwrap();
                let p = q.push(vec![nj]).pop().unwrap().unwrap();
                model.insert(p.id, MJob { state: State::Pending, attempt: 0, failures: 0, interrupts: 0, priority });
            }
            Op::Claim { w } => {
                if workers[w].as_ref().is_some_and(|c| !c.stale) {
                    continue; // one claim at a time per worker
                }
                let opts = ClaimOpts { lease_ms: 60_000, worker_id: Some(format!("w{w}")), liveness: Liveness::Flock, fit: None };
                let got = q.claim(1, &opts).unwrap();
                let ready: Vec<(&String, &MJob)> = model.iter().filter(|(_, j)| j.state == State::Pending).collect();
                match got.into_iter().next() {
                    None => prop_assert!(ready.is_empty(), "{why}: nothing claimed though {} jobs are pending", ready.len()),
                    Some(c) => {
                        // Strict order: the most urgent pending job, oldest first.
                        let best = ready.iter().map(|(_, j)| j.priority).max().unwrap();
                        let m = model.get_mut(&c.id).unwrap();
                        prop_assert_eq!(m.state, State::Pending, "{}: claimed a job that is not pending", why);
                        prop_assert_eq!(m.priority, best, "{}: not the most urgent job", why);
                        prop_assert_eq!(c.attempt(), m.attempt + 1, "{}: attempt", why);
                        m.state = State::Running;
                        m.attempt += 1;
                        workers[w] = Some(WClaim { id: c.id.clone(), token: c.token.clone(), file: Some(c), stale: false });
                    }
                }
            }
            Op::Touch { w } => {
                let Some(c) = &workers[w] else { continue };
                if c.file.is_none() && !c.stale {
                    continue; // a dead worker does not touch
                }
                let r = q.touch(&c.id, &c.token);
                if c.stale {
                    prop_assert!(matches!(&r, Err(e) if e.kind == Kind::LeaseLost), "{}: a stale touch: {:?}", why, r);
                } else {
                    prop_assert!(r.is_ok(), "{}: {:?}", why, r);
                }
            }
            Op::Ok { w } | Op::Fail { w } => {
                let Some(c) = workers[w].take() else { continue };
                let ok = matches!(op, Op::Ok { .. });
                let reason = if ok { Reason::Ok } else { Reason::Exit };
                let outcome = Outcome { exit_code: Some(if ok { 0 } else { 1 }), started_at_ms: Some(q_queue::time::now_ms()), ..Outcome::default() };
                let r = q.settle(&c.id, &c.token, reason, &outcome, &settle_opts);
                if c.stale || c.file.is_none() && model[&c.id].state != State::Running {
                    prop_assert!(matches!(&r, Err(e) if e.kind == Kind::LeaseLost), "{}: a stale settle was accepted: {:?}", why, r);
                    continue;
                }
                let rec = r.map_err(|e| TestCaseError::fail(format!("{why}: {e}")))?;
                let m = model.get_mut(&c.id).unwrap();
                if ok {
                    m.state = State::Done;
                    m.interrupts = 0;
                } else {
                    m.failures += 1;
                    m.interrupts = 0;
                    m.state = if m.failures < ATTEMPTS { State::Pending } else { State::Dead };
                }
                prop_assert_eq!(rec.state, m.state, "{}", why);
            }
            Op::Kill { w } => {
                if let Some(c) = workers[w].as_mut()
                    && let Some(held) = c.file.take()
                {
                    fx.died(held);
                }
            }
            Op::Expire { w } => {
                let Some(c) = &workers[w] else { continue };
                if c.stale {
                    continue;
                }
                let a = c.file.as_ref().map_or(model[&c.id].attempt, |h| h.attempt());
                fx.expire(&c.id, a);
            }
            Op::Reclaim => {
                let got = q.reclaim(false).unwrap();
                for r in &got {
                    let m = model.get_mut(&r.id).unwrap();
                    prop_assert_eq!(m.state, State::Running, "{}: reclaimed a job that is not running", why);
                    m.interrupts += 1;
                    m.state = if m.interrupts >= q_queue::MAX_INTERRUPTS { State::Dead } else { State::Pending };
                    prop_assert_eq!(r.state, m.state, "{}", why);
                    for c in workers.iter_mut().flatten() {
                        if c.id == r.id && !c.stale {
                            c.stale = true;
                        }
                    }
                }
                // Exactly the claims whose owner died or whose lease ran out.
                for c in workers.iter().flatten() {
                    let m = &model[&c.id];
                    if m.state == State::Running && !c.stale {
                        let old = fx.expired(&c.id, m.attempt);
                        prop_assert!(c.file.is_some() && !old, "{}: job {} should have been reclaimed", why, c.id);
                    }
                }
            }
        }
        check(q, &model, &why)?;
        if let Some(dir) = fx.queue_dir() {
            check_files(&dir, &model, &why)?;
        }
    }
    Ok(())
}

/// Through the trait: every job is where the model says, with the model's
/// counters, and a finished one's last result agrees.
fn check(q: &dyn Backend, model: &BTreeMap<String, MJob>, why: &str) -> Result<(), TestCaseError> {
    let listed = q.entries(&State::ALL).unwrap();
    prop_assert_eq!(listed.len(), model.len(), "{}: jobs listed {:?}", why, listed.iter().map(|e| &e.id).collect::<Vec<_>>());
    for (id, m) in model {
        let l = q.locate(id).unwrap().unwrap();
        prop_assert_eq!(l.state, m.state, "{}: job {}", why, id);
        if let Some(c) = l.c {
            prop_assert_eq!(c, Counters { attempt: m.attempt, failures: m.failures, interrupts: m.interrupts }, "{}: counters of {}", why, id);
        }
        if m.state.is_terminal() {
            prop_assert_eq!(q.finished(id), Some(m.state), "{}: job {}", why, id);
            prop_assert_eq!(q.last_result(id).map(|r| r.state), Some(m.state), "{}: last result of {}", why, id);
        } else {
            prop_assert_eq!(q.finished(id), None, "{}: job {}", why, id);
        }
    }
    Ok(())
}

/// A directory queue's own: I1 (every job is where the model says), I3
/// (one place, one terminal record), I4/I5 (the counters in the name are
/// the model's).
fn check_files(q: &Queue, model: &BTreeMap<String, MJob>, why: &str) -> Result<(), TestCaseError> {
    let mut places: BTreeMap<String, usize> = BTreeMap::new();
    for dir in ["leased", "done", "dead", "canceled", "waiting", "held"] {
        for e in std::fs::read_dir(q.dir(dir)).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            let id = LeasedName::parse(&n).map(|l| l.id).or_else(|| parse_terminal(&n).map(str::to_owned)).unwrap_or(n);
            *places.entry(id).or_default() += 1;
        }
    }
    // The plain segments, and those of each class (`pending/c.<CLASS>/`).
    let mut segs = Vec::new();
    for seg in std::fs::read_dir(q.dir("pending")).unwrap() {
        let seg = seg.unwrap();
        let n = seg.file_name().to_string_lossy().into_owned();
        if n.starts_with("c.") {
            segs.extend(std::fs::read_dir(seg.path()).unwrap().map(|s| s.unwrap().path()));
        } else if !n.starts_with('.') {
            segs.push(seg.path());
        }
    }
    for seg in segs {
        for e in std::fs::read_dir(&seg).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            *places.entry(QueuedName::parse(&n).unwrap().key.id).or_default() += 1;
        }
    }
    prop_assert_eq!(places.len(), model.len(), "{}: jobs on disk {:?}", why, places);
    for (id, m) in model {
        prop_assert_eq!(places.get(id).copied(), Some(1), "{}: job {} in {:?} places", why, id, places.get(id));
        let l = q.locate(id).unwrap().unwrap();
        prop_assert_eq!(l.state, m.state, "{}: job {}", why, id);
        if let Some(c) = l.c {
            prop_assert_eq!(c, Counters { attempt: m.attempt, failures: m.failures, interrupts: m.interrupts }, "{}: counters of {}", why, id);
        }
        let terminal = (1..=m.attempt)
            .filter_map(|a| std::fs::read(q.var(id).join(format!("{a}.result.json"))).ok())
            .filter_map(|b| serde_json::from_slice::<ResultRecord>(&b).ok())
            .filter(|r| r.state.is_terminal())
            .count();
        prop_assert!(terminal <= 1, "{}: job {} has {} terminal results", why, id, terminal);
        prop_assert_eq!(terminal == 1, m.state.is_terminal(), "{}: job {}", why, id);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn protocol_state_machine(ops in proptest::collection::vec(op(), 1..40)) {
        for fx in backends::all(q_queue::Durability::Relaxed) {
            run_machine(&fx, &ops).map_err(|e| TestCaseError::fail(format!("{}: {e}", fx.name)))?;
        }
    }
}
