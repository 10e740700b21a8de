//! The history checker shared by the torture tests (DESIGN §9.1, modelled on
//! Jepsen's queue checker: lost, duplicated, unexpected).
//!
//! A test records what the outside world saw: every job line it tried to
//! push (by its unique `name`), every id a `q-push` acknowledged, every
//! execution the test job appended to the effects log (`$Q_JOB_ID
//! $Q_ATTEMPT $$`, one `O_APPEND` write), every `result` line a runner
//! printed (or a supervisor relayed as a `job-finished` event), the spans of
//! the supervisors that held the lock, and what the concurrent snooper read.
//! `check_queue` then reads the queue directory and verifies I1–I8 (I9 and
//! I10 are steps of the recovery, see `recover_and_check`), and returns a
//! readable report; a test fails with it and with its seed.

use crate::util::*;
use q_queue::names::{LeasedName, QueuedName, parse_terminal};
use q_queue::{Job, ResultRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The test job: appends one execution line, sleeps, exits per its mode.
/// `$1` mode (ok | failfirst | fail), `$2` seconds to sleep, `$3` effects log.
pub const JOB_SH: &str = r#"#!/bin/sh
echo "$Q_JOB_ID $Q_ATTEMPT $$" >> "$3"
[ "$2" = 0 ] || sleep "$2"
case "$1" in
  ok) exit 0 ;;
  failfirst) [ "$Q_ATTEMPT" -le 1 ] && exit 1; exit 0 ;;
  *) exit 1 ;;
esac
"#;

/// A small deterministic random source (xorshift64*), seeded per test.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..hi` (hi exclusive).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
    /// True with probability `pct` percent.
    pub fn pct(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

/// The seed of a run: `Q_TORTURE_SEED`, else from the clock. Printed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("Q_TORTURE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 ^ u64::from(std::process::id())
    });
    eprintln!("{test}: seed {s} (rerun with Q_TORTURE_SEED={s})");
    s
}

/// One result as a runner reported it.
#[derive(Debug, Clone)]
pub struct Reported {
    pub id: String,
    pub attempt: u32,
    pub state: String,
    pub reason: String,
    pub src: String,
}

/// A supervisor that got past its lock: from its `supervisor-started` event
/// to its `supervisor-exited` event or the moment we killed it.
#[derive(Debug, Clone)]
pub struct Span {
    pub pid: i32,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// What the outside world saw.
#[derive(Debug, Default)]
pub struct History {
    /// Names of every job line a pusher was given.
    pub attempted: BTreeSet<String>,
    /// Ids a `q-push` printed, with the line's name (None: argv form).
    pub acked: BTreeSet<String>,
    pub reported: Vec<Reported>,
    pub spans: Vec<Span>,
    /// Runner output files (`q-run` stdout) and supervisor event files to
    /// read when checking.
    pub run_outputs: Vec<PathBuf>,
    pub event_files: Vec<PathBuf>,
    /// Jobs settled by hand (`q-ctl ack`): done without running.
    pub hand_settled: BTreeSet<String>,
    /// Supervisors that exited with a status other than 0, 75 or our kill.
    pub bad_supervisor_exits: Vec<String>,
    /// The queue went through power cuts (`Some(relaxed)`): a claim may be
    /// undone and its attempt number claimed again (FORMAT, Claim step 4),
    /// and records cut short are quarantined (lease records in both
    /// settings, results under relaxed durability only).
    pub power: Option<bool>,
}

/// Counts the runs print at the end (the figures of RELIABILITY.md).
#[derive(Debug, Default)]
pub struct Figures {
    pub pushed: AtomicU64,
    pub push_runs: AtomicU64,
    pub killed: AtomicU64,
    pub killed_by: Mutex<BTreeMap<&'static str, u64>>,
    pub stopped: AtomicU64,
    pub gc_runs: AtomicU64,
    pub supervisor_runs: AtomicU64,
}

impl Figures {
    pub fn kill(&self, what: &'static str) {
        self.killed.fetch_add(1, Ordering::Relaxed);
        *self.killed_by.lock().unwrap().entry(what).or_default() += 1;
    }
}

/// The effects log: (id, attempt) → pids that ran it.
pub fn read_effects(path: &Path) -> BTreeMap<(String, u32), Vec<i32>> {
    let mut out: BTreeMap<(String, u32), Vec<i32>> = BTreeMap::new();
    let text = fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [id, a, pid] = f.as_slice()
            && let (Ok(a), Ok(pid)) = (a.parse(), pid.parse())
        {
            out.entry(((*id).to_owned(), a)).or_default().push(pid);
        }
    }
    out
}

/// Result lines from runner outputs and supervisor events. A trailing
/// partial line of a killed process is skipped.
pub fn read_reported(h: &History) -> Vec<Reported> {
    let mut out = h.reported.clone();
    for p in &h.run_outputs {
        for v in json_lines(p) {
            if v["type"] == "result" {
                out.push(reported(&v, p, "state"));
            }
        }
    }
    for p in &h.event_files {
        for v in json_lines(p) {
            if v["type"] == "event" && v["event"] == "job-finished" {
                out.push(reported(&v, p, "state"));
            }
        }
    }
    out
}

fn reported(v: &Value, p: &Path, st: &str) -> Reported {
    Reported {
        id: v["id"].as_str().unwrap_or("").to_owned(),
        attempt: v["attempt"].as_u64().unwrap_or(0) as u32,
        state: v[st].as_str().unwrap_or("").to_owned(),
        reason: v["reason"].as_str().unwrap_or("").to_owned(),
        src: p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    }
}

pub fn json_lines(p: &Path) -> Vec<Value> {
    let text = fs::read_to_string(p).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

/// Supervisor spans from event files: started-event time to exited-event
/// time, or to `killed_at` (ms) when we killed it.
pub fn spans_from_events(events: &Path, killed_at: Option<i64>) -> Option<Span> {
    let mut start = None;
    let mut end = killed_at;
    let mut pid = 0;
    for v in json_lines(events) {
        let t = v["time"].as_str().and_then(|t| q_queue::time::parse_time(t).ok());
        match v["event"].as_str() {
            Some("supervisor-started") => {
                start = t;
                pid = v["pid"].as_i64().unwrap_or(0) as i32;
            }
            Some("supervisor-exited") => end = t.or(end),
            _ => {}
        }
    }
    Some(Span { pid, start_ms: start?, end_ms: end.unwrap_or(i64::MAX) })
}

/// Where a job file was found.
#[derive(Debug, Clone)]
pub struct Loc {
    pub state: &'static str,
    pub path: PathBuf,
    /// Attempt counter of the name (terminal names carry none).
    pub attempt: Option<u32>,
}

/// What the checker read from the queue.
#[derive(Debug, Default)]
pub struct Disk {
    pub locs: BTreeMap<String, Vec<Loc>>,
    pub jobs: BTreeMap<String, Job>,
    pub results: BTreeMap<String, BTreeMap<u32, ResultRecord>>,
    pub ends: BTreeMap<String, ResultRecord>,
    pub leases: BTreeMap<String, BTreeSet<u32>>,
    pub corrupt: Vec<String>,
    pub problems: Vec<String>,
}

pub const STATE_DIRS: [&str; 6] = ["waiting", "held", "leased", "done", "dead", "canceled"];

/// Read every job file and every record in `var/`.
pub fn read_disk(root: &Path) -> Disk {
    let mut d = Disk::default();
    let add = |d: &mut Disk, state: &'static str, path: PathBuf, id: &str, attempt: Option<u32>| {
        match fs::read(&path).map_err(|e| e.to_string()).and_then(|b| Job::from_bytes(&b).map_err(|e| e.to_string())) {
            Ok(j) => {
                if j.id != id {
                    d.problems.push(format!("{}: record id {} does not match its name", path.display(), j.id));
                }
                d.jobs.insert(id.to_owned(), j);
            }
            Err(e) => d.problems.push(format!("{}: unreadable job file: {e}", path.display())),
        }
        d.locs.entry(id.to_owned()).or_default().push(Loc { state, path, attempt });
    };
    for seg in pending_segments(root) {
        let sn = seg.strip_prefix(root.join("pending")).unwrap_or(&seg).display().to_string();
        for e in fs::read_dir(&seg).map(|r| r.filter_map(|e| e.ok()).collect::<Vec<_>>()).unwrap_or_default() {
            let n = e.file_name().to_string_lossy().into_owned();
            match QueuedName::parse(&n) {
                Some(q) => add(&mut d, "pending", e.path(), &q.key.id, Some(q.c.attempt)),
                None => d.problems.push(format!("pending/{sn}/{n}: not a queue name")),
            }
        }
    }
    for dir in STATE_DIRS {
        for n in names(&root.join(dir)) {
            let p = root.join(dir).join(&n);
            match dir {
                "waiting" | "held" => match QueuedName::parse(&n) {
                    Some(q) => add(&mut d, dir, p, &q.key.id, Some(q.c.attempt)),
                    None => d.problems.push(format!("{dir}/{n}: not a queue name")),
                },
                "leased" => match LeasedName::parse(&n) {
                    Some(l) => add(&mut d, dir, p, &l.id, Some(l.c.attempt)),
                    None => d.problems.push(format!("leased/{n}: not a leased name")),
                },
                _ => match parse_terminal(&n) {
                    Some(id) => {
                        let id = id.to_owned();
                        add(&mut d, dir, p, &id, None)
                    }
                    None => d.problems.push(format!("{dir}/{n}: not a terminal name")),
                },
            }
        }
    }
    for id in names(&root.join("var")) {
        for n in names(&root.join("var").join(&id)) {
            let p = root.join("var").join(&id).join(&n);
            let parts: Vec<&str> = n.splitn(2, '.').collect();
            let rec = || -> Result<ResultRecord, String> {
                let b = fs::read(&p).map_err(|e| e.to_string())?;
                serde_json::from_slice(&b).map_err(|e| format!("{e}: {:?}", String::from_utf8_lossy(&b)))
            };
            match (parts[0].parse::<u32>(), parts.get(1).copied()) {
                (Ok(a), Some("result.json")) => match rec() {
                    Ok(r) => {
                        if r.id != id || r.attempt != a {
                            d.problems.push(format!("{}: says id {} attempt {}", p.display(), r.id, r.attempt));
                        }
                        d.results.entry(id.clone()).or_default().insert(a, r);
                    }
                    Err(e) => d.problems.push(format!("{}: bad result record: {e}", p.display())),
                },
                (Ok(a), Some("lease.json")) => {
                    d.leases.entry(id.clone()).or_default().insert(a);
                }
                _ if n == "end.json" => match rec() {
                    Ok(r) => {
                        d.ends.insert(id.clone(), r);
                    }
                    Err(e) => d.problems.push(format!("{}: bad end record: {e}", p.display())),
                },
                _ => {}
            }
        }
    }
    d.corrupt = names(&root.join("corrupt"));
    d
}

pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The attempts at which a job ran, as the effects log says, with how often.
fn runs_of(eff: &BTreeMap<(String, u32), Vec<i32>>, id: &str) -> Vec<(u32, usize)> {
    eff.range((id.to_owned(), 0)..=(id.to_owned(), u32::MAX)).map(|((_, a), p)| (*a, p.len())).collect()
}

/// What the job's command says it does: (mode, at-most-once).
fn mode_of(j: &Job) -> &str {
    j.cmd.as_ref().and_then(|c| c.get(2)).map(String::as_str).unwrap_or("?")
}

/// The verdict of a check.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<String>,
    pub ids: usize,
    pub terminal: usize,
    pub executions: usize,
    pub reexecutions: usize,
    pub reclaimed: usize,
    pub lease_lost: usize,
    pub double_completions: usize,
    pub lost: usize,
}

impl Report {
    fn v(&mut self, s: String) {
        if self.violations.len() < 200 {
            self.violations.push(s);
        }
    }

    /// Panic with a readable report (and the seed) if anything is wrong.
    pub fn assert_ok(&self, seed: u64, what: &str) {
        if !self.violations.is_empty() {
            panic!(
                "{what}: {} invariant violation(s) (seed {seed}, rerun with Q_TORTURE_SEED={seed}):\n  {}",
                self.violations.len(),
                self.violations.join("\n  ")
            );
        }
    }
}

/// Options of a check.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOpts {
    /// Everything was drained: every acked job must be terminal.
    pub drained: bool,
    /// Nothing may have been quarantined (no garbage was planted).
    pub no_corrupt: bool,
}

/// Verify I1–I8 over the queue directory and the history.
pub fn check_queue(root: &Path, h: &History, effects: &Path, partial_reads: &[String], o: CheckOpts) -> Report {
    let d = read_disk(root);
    let eff = read_effects(effects);
    let reported = read_reported(h);
    let mut r = Report { ids: d.locs.len(), ..Report::default() };
    let queue = q_queue::Queue::open(root).ok().flatten();
    for p in &d.problems {
        r.v(format!("I6 unreadable or malformed: {p}"));
    }
    if o.no_corrupt && !d.corrupt.is_empty() {
        r.v(format!("I2 files were quarantined: {:?}", d.corrupt));
    }
    if let Some(relaxed) = h.power {
        let allowed = |n: &String| {
            let stem = n.trim_end_matches(".why");
            let rec = stem.split('.').skip(1).take(2).collect::<Vec<_>>().join(".");
            rec == "lease.json" || (relaxed && rec == "result.json")
        };
        let bad: Vec<&String> = d.corrupt.iter().filter(|n| !allowed(n)).collect();
        if !bad.is_empty() {
            r.v(format!("I2 files were quarantined after a power cut: {bad:?}"));
        }
    }
    // I1 no loss.
    for id in &h.acked {
        match d.locs.get(id) {
            None => {
                r.lost += 1;
                r.v(format!("I1 lost: acknowledged job {id} is in no state directory"));
            }
            Some(l) if o.drained && !l.iter().any(|l| matches!(l.state, "done" | "dead" | "canceled")) => {
                r.v(format!("I1 not drained: acknowledged job {id} is {}", l[0].state));
            }
            _ => {}
        }
    }
    // I2 no unexpected; names unique.
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, j) in &d.jobs {
        match j.name.as_deref() {
            Some(n) if h.attempted.contains(n) => by_name.entry(n).or_default().push(id),
            other => r.v(format!("I2 unexpected job {id} (name {other:?}) that no pusher was given")),
        }
    }
    for (n, ids) in by_name {
        if ids.len() > 1 {
            r.v(format!("I2 job line {n} became {} jobs: {ids:?}", ids.len()));
        }
    }
    // I3 one place per id.
    for (id, locs) in &d.locs {
        if locs.len() > 1 {
            r.v(format!("I3 job {id} is in {} places: {:?}", locs.len(), locs.iter().map(|l| l.path.display().to_string()).collect::<Vec<_>>()));
        }
    }
    // Per id: attempts, results, executions.
    let mut by_attempt: BTreeMap<(String, u32), Vec<&Reported>> = BTreeMap::new();
    for rep in &reported {
        by_attempt.entry((rep.id.clone(), rep.attempt)).or_default().push(rep);
    }
    for (id, locs) in &d.locs {
        let loc = &locs[0];
        let job = d.jobs.get(id);
        let results = d.results.get(id).cloned().unwrap_or_default();
        let end_rec = d.ends.get(id);
        let a_loc = locs.iter().filter_map(|l| l.attempt).max().unwrap_or(0);
        let a_res = results.keys().max().copied().unwrap_or(0);
        let a_lease = d.leases.get(id).and_then(|s| s.iter().max().copied()).unwrap_or(0);
        let a_eff = eff.range((id.clone(), 0)..=(id.clone(), u32::MAX)).map(|((_, a), _)| *a).max().unwrap_or(0);
        let a_disk = a_loc.max(a_res).max(a_lease);
        // The latest attempt. Executions count too, except after power cuts
        // under relaxed durability: there a cut may undo every step since
        // the last sync (claims, a reclaim's settle, a settle, each with its
        // records: none is synced), and q-gc R8 sends a finished job with no
        // record left back to pending at attempt 0; the attempt numbers
        // that ran and left nothing are claimed again (FORMAT, "Power
        // loss"). What the disk decided is then judged by the disk alone.
        let a_max = if h.power == Some(true) { a_disk } else { a_disk.max(a_eff) };
        // An end record decides only if no attempt was claimed after it (a
        // canceller that died before moving the job leaves a stale one).
        let end = end_rec.filter(|e| e.attempt >= a_max);
        // I5 monotone: the name carries the latest attempt; every earlier
        // attempt was decided by a result record before the next claim.
        if loc.attempt.is_some() && a_loc < a_max {
            r.v(format!("I5 job {id} is {} at attempt {a_loc}, but attempt {a_max} was seen", loc.state));
        }
        for k in 1..a_max {
            // Relaxed durability, power cut: the outcome of an attempt that
            // sent the job back to pending is not synced, and may be lost
            // while the job's move was kept (docs/RELIABILITY.md).
            if !results.contains_key(&k) && h.power != Some(true) {
                r.v(format!("I5 job {id}: attempt {k} has no result record, yet attempt {a_max} was claimed"));
            }
        }
        // I4 single terminal decision.
        let terminal_recs: Vec<String> = results
            .iter()
            .filter(|(_, rec)| rec.state.is_terminal())
            .map(|(a, rec)| format!("attempt {a}: {} ({})", rec.state.as_str(), rec.reason.as_str()))
            .chain(end.iter().filter(|e| e.state.is_terminal()).map(|e| format!("end: {} ({})", e.state.as_str(), e.reason.as_str())))
            .collect();
        if terminal_recs.len() > 1 {
            r.double_completions += 1;
            r.v(format!("I4 job {id} completed more than once: {terminal_recs:?}"));
        }
        for (a, rec) in &results {
            if rec.state.is_terminal() && *a != a_max {
                r.v(format!("I4 job {id}: attempt {a} ended it {}, but attempt {a_max} exists", rec.state.as_str()));
            }
        }
        let terminal = matches!(loc.state, "done" | "dead" | "canceled");
        if terminal {
            r.terminal += 1;
            let decided = results.get(&a_max).filter(|x| x.state.is_terminal()).or(end.filter(|e| e.state.is_terminal()));
            match decided {
                None => r.v(format!(
                    "I4 job {id} is {} but no terminal result record decides it (attempt {a_max}; records {:?}, leases {:?}, executions {:?})",
                    loc.state,
                    results.iter().map(|(a, x)| format!("{a}: {} ({})", x.state.as_str(), x.reason.as_str())).collect::<Vec<_>>(),
                    d.leases.get(id),
                    runs_of(&eff, id)
                )),
                Some(rec) if rec.state.as_str() != loc.state => {
                    r.v(format!("I4 job {id} is {} but its result says {} ({})", loc.state, rec.state.as_str(), rec.reason.as_str()))
                }
                Some(rec) if loc.state == "done" && rec.reason != q_queue::Reason::Ok => r.v(format!("I4 job {id} is done with reason {}", rec.reason.as_str())),
                _ => {}
            }
            // What readers (q-wait, q-ls) report agrees.
            let told = queue.as_ref().and_then(|q| q.last_result(id)).map(|x| x.state.as_str());
            if told != Some(loc.state) {
                r.v(format!("I4 job {id} is {} but readers are told {told:?}", loc.state));
            }
        } else if let Some(rec) = results.get(&a_max)
            && loc.state == "leased"
        {
            // A crash between the result and the move (recovery finishes it).
            let _ = rec;
        }
        // I4 what runners printed agrees with what was committed.
        for a in 1..=a_max {
            let reps = by_attempt.get(&(id.clone(), a)).cloned().unwrap_or_default();
            let committed: Vec<&&Reported> = reps.iter().filter(|x| x.reason != "lease-lost").collect();
            if committed.len() > 1 {
                r.v(format!("I4 job {id} attempt {a}: {} committed result lines: {committed:?}", committed.len()));
            }
            for c in &committed {
                match results.get(&a) {
                    Some(rec) if rec.state.as_str() == c.state && rec.reason.as_str() == c.reason => {}
                    Some(rec) => r.v(format!(
                        "I4 job {id} attempt {a}: a runner printed {} ({}) but the record says {} ({})",
                        c.state,
                        c.reason,
                        rec.state.as_str(),
                        rec.reason.as_str()
                    )),
                    None => r.v(format!("I4 job {id} attempt {a}: a runner printed {} ({}) with no result record", c.state, c.reason)),
                }
            }
            for l in reps.iter().filter(|x| x.reason == "lease-lost") {
                r.lease_lost += 1;
                if !results.contains_key(&a) {
                    r.v(format!("I4 job {id} attempt {a}: lease-lost printed ({}) but nobody else settled the attempt", l.src));
                }
            }
        }
        r.reclaimed += results.values().filter(|x| x.worker_id.as_deref() == Some("reclaim")).count();
        // I5/I7 executions.
        let runs: Vec<(u32, usize)> = (1..=a_max.max(a_eff)).map(|a| (a, eff.get(&(id.clone(), a)).map_or(0, Vec::len))).collect();
        let total: usize = runs.iter().map(|(_, n)| n).sum();
        r.executions += total;
        r.reexecutions += total.saturating_sub(1);
        for (a, n) in &runs {
            if *n > 1 && h.power.is_none() {
                r.v(format!("I7 job {id} attempt {a} was executed {n} times (one claim, one run)"));
            }
        }
        if a_eff > a_disk && h.power != Some(true) {
            r.v(format!("I5 job {id} ran at attempt {a_eff} beyond every claim on disk ({a_disk})"));
        }
        if let Some(j) = job {
            if j.is_at_most_once() && total > 1 {
                r.v(format!("I7 at-most-once job {id} was executed {total} times"));
            }
            if loc.state == "done" && !h.hand_settled.contains(id) {
                if eff.get(&(id.clone(), a_max)).is_none_or(Vec::is_empty) {
                    r.v(format!("I7 job {id} is done at attempt {a_max} but that attempt never ran"));
                }
                match mode_of(j) {
                    "fail" => r.v(format!("I7 job {id} always fails, yet it is done")),
                    "failfirst" if a_max < 2 => r.v(format!("I7 job {id} fails its first attempt, yet it is done at attempt {a_max}")),
                    _ => {}
                }
            }
        }
    }
    // I6 partial reads.
    for p in partial_reads.iter().take(20) {
        r.v(format!("I6 partial or mismatched read: {p}"));
    }
    // I8 one supervisor at a time.
    let mut spans = h.spans.clone();
    spans.sort_by_key(|s| s.start_ms);
    for w in spans.windows(2) {
        if w[1].start_ms + 1 < w[0].end_ms {
            r.v(format!("I8 supervisors overlap: pid {} held the lock {}..{} and pid {} started at {}", w[0].pid, w[0].start_ms, w[0].end_ms, w[1].pid, w[1].start_ms));
        }
    }
    for b in &h.bad_supervisor_exits {
        r.v(format!("I8 {b}"));
    }
    r
}

/// The concurrent reader (I6): reads every visible file in the state and
/// record directories in a loop; `ENOENT` is fine, anything that does not
/// parse, or names another job than its file name, is recorded with its
/// bytes.
pub struct Snooper {
    pub stop: Arc<AtomicBool>,
    pub reads: Arc<AtomicU64>,
    pub bad: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Snooper {
    pub fn start(root: PathBuf) -> Snooper {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let (s, rd, b) = (stop.clone(), reads.clone(), bad.clone());
        let handle = std::thread::spawn(move || {
            // Job files never change once in place, and a name is never
            // used twice: each is read when first seen (records of leased
            // jobs are read every round).
            let mut seen = std::collections::HashSet::new();
            while !s.load(Ordering::Relaxed) {
                snoop_once(&root, &rd, &b, &mut seen);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Snooper { stop, reads, bad, handle: Some(handle) }
    }

    /// Stop and return (reads, bad reads).
    pub fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (self.reads.load(Ordering::Relaxed), self.bad.lock().unwrap().clone())
    }
}

fn snoop_once(root: &Path, reads: &AtomicU64, bad: &Mutex<Vec<String>>, seen: &mut std::collections::HashSet<PathBuf>) {
    let mut files: Vec<(PathBuf, String, &'static str)> = Vec::new();
    for seg in pending_segments(root) {
        for n in names(&seg) {
            files.push((seg.join(&n), n, "job"));
        }
    }
    for dir in STATE_DIRS {
        for n in names(&root.join(dir)) {
            files.push((root.join(dir).join(&n), n, "job"));
        }
    }
    // Records are published while their job is leased: read those of the
    // leased jobs (all of var/ would grow with the run).
    let leased: Vec<String> = names(&root.join("leased")).iter().filter_map(|n| LeasedName::parse(n)).map(|l| l.id).collect();
    for id in leased {
        for n in names(&root.join("var").join(&id)) {
            if n.ends_with(".json") {
                files.push((root.join("var").join(&id).join(&n), id.clone(), "record"));
            }
        }
    }
    for n in names(&root.join("env")) {
        files.push((root.join("env").join(&n), n, "env"));
    }
    files.push((root.join("FORMAT"), String::new(), "format"));
    for (p, name, kind) in files {
        if kind == "job" && seen.contains(&p) {
            continue;
        }
        let b = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.raw_os_error() == Some(nix::libc::EISDIR) => continue,
            Err(e) => {
                bad.lock().unwrap().push(format!("{}: {e}", p.display()));
                continue;
            }
        };
        reads.fetch_add(1, Ordering::Relaxed);
        // A lease file holds the lease and, once the job started, the run
        // record on a second line (appended in one write): every line whole.
        let b = if p.to_string_lossy().ends_with(".lease.json") {
            let mut lines = b.split_inclusive(|c| *c == b'\n');
            let first = lines.next().unwrap_or_default().to_vec();
            for more in lines {
                if serde_json::from_slice::<Value>(more).is_err() || !more.ends_with(b"\n") {
                    bad.lock().unwrap().push(format!("{}: partial run line: {:?}", p.display(), String::from_utf8_lossy(&b)));
                }
            }
            first
        } else {
            b
        };
        let v: Value = match serde_json::from_slice(&b) {
            Ok(v) => v,
            Err(e) => {
                bad.lock().unwrap().push(format!("{}: {e}: {:?}", p.display(), String::from_utf8_lossy(&b)));
                continue;
            }
        };
        if !b.ends_with(b"\n") {
            bad.lock().unwrap().push(format!("{}: no trailing newline: {:?}", p.display(), String::from_utf8_lossy(&b)));
        }
        let id = v["id"].as_str().unwrap_or("");
        let mismatch = match kind {
            "job" => id.is_empty() || !name.contains(id),
            "record" => !id.is_empty() && id != name,
            _ => false,
        };
        if mismatch {
            bad.lock().unwrap().push(format!("{}: names job {id:?}", p.display()));
        } else if kind == "job" {
            seen.insert(p);
        }
    }
}

/// Processes running on this queue (their environment says `Q_DIR=<root>`):
/// workers, jobs, watchdogs, tools. Root may read every environment.
pub fn queue_processes(root: &Path) -> Vec<(i32, String)> {
    let canon = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let needles = [format!("Q_DIR={}", root.display()), format!("Q_DIR={}", canon.display())];
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").map(|r| r.filter_map(|e| e.ok()).collect::<Vec<_>>()).unwrap_or_default() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else { continue };
        let ours = env.split(|b| *b == 0).any(|kv| needles.iter().any(|n| kv == n.as_bytes()));
        if ours {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned();
            out.push((pid, comm));
        }
    }
    out
}

/// Does process `pid`'s environment contain `kv` (e.g. `Q_JOB_ID=…`)?
pub fn env_has(pid: i32, kv: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|b| *b == 0).any(|x| x == kv.as_bytes()))
}

/// Send `sig` to `pid` through a pidfd, after checking (on the pidfd's
/// process, so a reused pid is never signalled) that it runs on our queue.
/// Returns the pidfd for a later SIGCONT.
pub fn signal_verified(pid: i32, must_have: &str, sig: rustix::process::Signal) -> Option<std::os::fd::OwnedFd> {
    let p = rustix::process::Pid::from_raw(pid)?;
    let fd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()?;
    if !env_has(pid, must_have) {
        return None;
    }
    rustix::process::pidfd_send_signal(&fd, sig).ok()?;
    Some(fd)
}

/// After everything was killed: one `q-gc` pass must return every leased
/// job (I9); `q-supervise --exit-on-idle` then drains the queue; the checks
/// run; gc with zero TTLs leaves no orphan (I10) and, with zero retention,
/// an empty queue. Returns the report of the drained check.
#[allow(clippy::too_many_arguments)] // one call per scenario: each argument is the scenario's own
pub fn recover_and_check(q: &QDir, h: &mut History, effects: &Path, partial: &[String], seed: u64, what: &str, drain_within: Duration, no_corrupt: bool) -> Report {
    let root = &q.queue;
    let mut pre = Vec::new();
    // I9: one gc pass. The claimers are dead, so a claim without a lease
    // record need not wait out its grace here.
    let mut c = q.cmd("q-gc");
    if h.power.is_none() {
        c.env("Q_NO_LEASE_GRACE_MS", "0");
    }
    let g = run_cmd(c, None);
    if g.code() != 0 {
        pre.push(format!("I9 recovery q-gc failed: {g:?}"));
    }
    let left = names(&root.join("leased"));
    if !left.is_empty() {
        pre.push(format!("I9 one q-gc pass left {} leased job(s) with dead owners: {left:?}", left.len()));
    }
    // Drain.
    let ev = q.file(&format!("drain-{}.events", h.event_files.len()));
    let mut c = q.cmd("q-supervise");
    c.args(["--exit-on-idle", "-j", "4", "--lease", "5s", "--restart-base", "100ms", "--grace", "2s", "--events"]);
    c.stderr(fs::File::create(&ev).unwrap()).stdout(Stdio::null());
    let mut p = Proc::spawn(c);
    let until = Instant::now() + drain_within;
    let code = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            use std::os::unix::process::ExitStatusExt;
            break st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
        }
        if Instant::now() > until {
            pre.push(format!("I9 the drain did not finish within {drain_within:?}; queue: {:?}", counts(root)));
            p.signal(nix::sys::signal::SIGKILL);
            break -1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !matches!(code, 0 | 1) {
        pre.push(format!("I9 the draining q-supervise exited {code}: {}", fs::read_to_string(&ev).unwrap_or_default().lines().filter(|l| l.contains("error") || l.contains("note")).collect::<Vec<_>>().join(" | ")));
    }
    h.event_files.push(ev);
    eprintln!("{what}: recovery gc and drain took {:.1} s", (drain_within - until.saturating_duration_since(Instant::now())).as_secs_f64());
    let mut rep = check_queue(root, h, effects, partial, CheckOpts { drained: true, no_corrupt });
    rep.violations.splice(0..0, pre);
    // I10 hygiene: zero TTLs leave no staging file, no workspace, no
    // cancel request, no var directory without a job.
    let g = q.run("q-gc", &["--tmp-ttl", "0", "--orphan-ttl", "0", "--done-ttl", "never", "--canceled-ttl", "never"]);
    if g.code() != 0 {
        rep.violations.push(format!("I10 q-gc failed: {g:?}"));
    }
    let tmp = names(&root.join("tmp"));
    if !tmp.is_empty() {
        rep.violations.push(format!("I10 tmp/ not empty after gc: {tmp:?}"));
    }
    let d = read_disk(root);
    for id in names(&root.join("var")) {
        if !d.locs.contains_key(&id) {
            rep.violations.push(format!("I10 var/{id} left without a job"));
        }
        for n in names(&root.join("var").join(&id)) {
            if n.ends_with(".work") || n.ends_with(".cancel") || n.ends_with(".tmp") {
                rep.violations.push(format!("I10 var/{id}/{n} left after gc"));
            }
        }
    }
    // Zero retention: the queue empties completely.
    let g = q.run("q-gc", &["--tmp-ttl", "0", "--orphan-ttl", "0", "--done-ttl", "0", "--dead-ttl", "0", "--canceled-ttl", "0"]);
    if g.code() != 0 {
        rep.violations.push(format!("I10 q-gc (zero retention) failed: {g:?}"));
    }
    for dir in ["pending", "waiting", "held", "leased", "done", "dead", "canceled", "var", "tmp", "corrupt"] {
        if dir == "corrupt" && !no_corrupt {
            continue;
        }
        let left = names(&root.join(dir));
        if !left.is_empty() {
            rep.violations.push(format!("I10 {dir}/ not empty after gc with zero retention: {:?}", &left[..left.len().min(5)]));
        }
    }
    rep.assert_ok(seed, what);
    rep
}

/// Wait until every lease record is older than `ms` (its deadline passed).
pub fn wait_leases_older(root: &Path, ms: u64) {
    wait_until("the leases to run out", Duration::from_millis(ms) + Duration::from_secs(10), || {
        names(&root.join("var")).iter().all(|id| {
            names(&root.join("var").join(id)).iter().filter(|n| n.ends_with(".lease.json")).all(|n| {
                fs::metadata(root.join("var").join(id).join(n)).and_then(|m| m.modified()).map_or(true, |t| t.elapsed().unwrap_or_default() > Duration::from_millis(ms))
            })
        })
    });
}

/// Every pending segment directory: those in `pending/`, and those of each
/// class directory, `pending/c.<CLASS>/` (FORMAT "Classes").
pub fn pending_segments(root: &Path) -> Vec<PathBuf> {
    let pending = root.join("pending");
    let mut out = Vec::new();
    for n in names(&pending) {
        if n.starts_with("c.") {
            out.extend(names(&pending.join(&n)).into_iter().map(|s| pending.join(&n).join(s)));
        } else {
            out.push(pending.join(n));
        }
    }
    out
}

/// Job counts by directory, for messages.
pub fn counts(root: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    let pending: usize = pending_segments(root).iter().map(|s| names(s).len()).sum();
    m.insert("pending".into(), pending);
    for dir in STATE_DIRS {
        m.insert(dir.into(), names(&root.join(dir)).len());
    }
    m
}
