//! `q-wait`: block until the given jobs (or the whole queue) are finished,
//! print each job's final `result` line as it finishes, and say in the exit
//! status whether all of them ended `done`.
//!
//! Invariants: q-wait only reads the queue. It looks again whenever the
//! queue's waiter reports a change (inotify) and at least every
//! `q_queue::wake::MAX_SLEEP`; a job's result line is printed exactly once.
//! Finding whether a job is finished costs three `stat`s on a directory,
//! one query for all of them on PostgreSQL; only jobs not yet finished are
//! located fully, and that at most every few seconds, so
//! waiting on thousands of ids does not rescan the queue thousands of times.

use crate::cli::{self, Common};
use crate::exit;
use crate::ids;
use crate::out;
use anyhow::{Result, bail};
use clap::Parser;
use crate::cli::Queue;
use q_queue::{Kind, State, time};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const TOOL: &str = "q-wait";
/// How often an unfinished job is located fully (to notice it vanished).
const RELOCATE: Duration = Duration::from_secs(5);
/// The least time between two looks, however busy the queue is.
const MIN_GAP: Duration = Duration::from_millis(50);
/// The same for `--all`, whose look lists the whole queue.
const MIN_GAP_ALL: Duration = Duration::from_millis(200);

#[derive(Debug, Parser)]
#[command(
    name = "q-wait",
    version,
    about = "Block until jobs finish; print their results; exit 0 when all ended done",
    long_about = "Block until every given job is finished (done, dead or canceled) and print each job's final {\"type\":\"result\",...} line as it finishes. Ids come from the arguments, or from stdin when none are given (bare ids, or JSON lines with an \"id\" field such as q-push prints). Reading no ids at all is an error (66), so a failed q-push in `q-push ... | q-wait` fails the pipeline. An unknown id fails at once (66) without waiting for the others.\n\n--all waits until the queue has nothing ready, scheduled, waiting or running, and prints the results of the jobs that finish meanwhile. It does not wait for what cannot run: when only held jobs (or jobs waiting on them) remain, or the queue is paused with nothing running (a `pause --for` is waited out), it says so and exits 1, so a Makefile target fails instead of hanging.\n\nExit status: 0 all ended done (or --all drained the queue and every job it saw finish ended done); 1 some ended dead or canceled, or --all found work that cannot run; 66 unknown id or no ids; 124 --timeout ran out; 130 interrupted. A progress line is shown on stderr when it is a terminal. When nothing serves the queue (no q-supervise, no live q-run worker) for 2 s (Q_UNSERVED_AFTER), it says so once on stderr and keeps waiting. An ID on the command line may also be a unique suffix or prefix of at least 6 characters, or the name of a unique unfinished job (ambiguous: exit 66, listing the candidates); an id in JSON is exact only.",
    after_help = "Examples:\n  q-push --attempts 3 -- ./flaky.sh | q-wait     # fail a Makefile target if the job fails\n  q-wait --timeout 10m 01J9ZK3QH8T4W1V6C2M5X7B0RA 01J9ZK3QH8T4W1V6C2M5X7B0RB\n  q-wait --all --timeout 1h                      # until the queue is drained (while workers serve it)"
)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Wait for the whole queue instead of given ids
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Give up after this long (exit 124)
    #[arg(long, value_name = "DUR", value_parser = cli::duration)]
    timeout: Option<u64>,
    /// Jobs to wait for [default: read from stdin]
    #[arg(value_name = "ID")]
    ids: Vec<String>,
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    exit::run(TOOL, || run(args))
}

/// Nothing serving the queue this long is said once (`Q_UNSERVED_AFTER`,
/// a duration, makes it shorter in tests).
const UNSERVED_AFTER: Duration = Duration::from_secs(2);
/// How often to look whether anything serves the queue.
const SERVED_LOOK: Duration = Duration::from_millis(250);

/// Does a supervisor or a worker serve the queue? Said once on stderr when
/// nothing has for a while: `q-push ... | q-wait` on a queue nothing serves
/// would otherwise wait for ever without a word.
struct Served {
    after: Duration,
    unserved_since: Option<Instant>,
    last_look: Option<Instant>,
    told: bool,
    quiet: bool,
}

impl Served {
    fn new(quiet: bool) -> Served {
        let after = std::env::var("Q_UNSERVED_AFTER")
            .ok()
            .and_then(|d| q_queue::time::parse_duration(&d).ok())
            .map_or(UNSERVED_AFTER, Duration::from_millis);
        Served { after, unserved_since: None, last_look: None, told: false, quiet }
    }

    fn look(&mut self, q: &Queue, bar: &mut Progress) {
        if self.told || self.quiet || self.last_look.is_some_and(|t| t.elapsed() < SERVED_LOOK) {
            return;
        }
        let now = Instant::now();
        self.last_look = Some(now);
        if q.is_locked(q_queue::Singleton::Supervisor) || q.live_workers() > 0 {
            self.unserved_since = None;
            return;
        }
        let since = *self.unserved_since.get_or_insert(now);
        if now.duration_since(since) >= self.after {
            self.told = true;
            bar.clear();
            eprintln!(
                "{TOOL}: nothing serves queue {} (no q-supervise, no q-run worker); start one with `q-supervise --exit-on-idle` or `q-run`, or push with `q-push --start`; still waiting",
                q.location().display()
            );
        }
    }
}

/// What stops the wait early.
struct Stop {
    deadline: Option<Instant>,
    interrupted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Stop {
    /// `Some(status)` when the wait must end now.
    fn check(&self) -> Option<u8> {
        if self.interrupted.load(Ordering::Relaxed) {
            return Some(exit::INTERRUPTED);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(exit::TIMED_OUT);
        }
        None
    }

    fn left(&self) -> Duration {
        self.deadline.map_or(Duration::from_secs(1), |d| d.saturating_duration_since(Instant::now()))
    }
}

fn run(a: Args) -> Result<u8> {
    let stop = Stop {
        deadline: a.timeout.map(|ms| Instant::now() + Duration::from_millis(ms)),
        interrupted: crate::cli_signals::interrupt_flag()?,
    };
    let progress = !a.common.quiet && out::stderr_is_tty();
    if a.all {
        return wait_all(&a.common, &stop, progress);
    }
    let tokens = ids::collect(&a.ids, TOOL)?;
    if tokens.is_empty() {
        bail!(q_queue::Error::new(
            Kind::NoJob,
            "no job ids to wait for: pass IDs, pipe them in (q-push ... | q-wait), or use --all (if q-wait was fed by a pipe, the command before it printed no ids: see its error)"
        ));
    }
    let q = a.common.open()?;
    let ids = ids::resolve(q.as_ref(), tokens)?;
    wait_ids(&a.common, q, dedup(ids), &stop, progress)
}

fn dedup(ids: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    ids.into_iter().filter(|id| seen.insert(id.clone())).collect()
}

/// One job being waited for.
struct Waited {
    id: String,
    finished: bool,
    last_located: Instant,
}

fn wait_ids(common: &Common, q: Option<Queue>, ids: Vec<String>, stop: &Stop, progress: bool) -> Result<u8> {
    let Some(q) = q else {
        for id in &ids {
            eprintln!("{TOOL}: error: no such job: {id} (there is no queue at {})", common.location().display());
        }
        return Ok(exit::NO_JOB);
    };
    // Every id must exist before anything is waited for: a typo fails now,
    // not after the others took an hour.
    let now = Instant::now();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut unknown = 0;
    for (id, st) in ids.iter().zip(states_of(&q, &refs)?) {
        if st.is_none() {
            eprintln!("{TOOL}: error: no such job: {id}");
            unknown += 1;
        }
    }
    if unknown > 0 {
        return Ok(exit::NO_JOB);
    }
    let mut jobs: Vec<Waited> = ids.into_iter().map(|id| Waited { id, finished: false, last_located: now }).collect();
    let mut all_done = true;
    let mut vanished = false;
    let mut waiter = None;
    let mut bar = Progress::new(progress, jobs.len());
    let mut served = Served::new(common.quiet);
    let mut stdout_open = true;
    loop {
        let looked = Instant::now();
        // Which jobs finished (None: vanished), cheaply; the others are
        // located fully only now and then.
        let mut found: Vec<(usize, Option<State>)> = Vec::new();
        let mut relocate = Vec::new();
        let open: Vec<usize> = (0..jobs.len()).filter(|&i| !jobs[i].finished).collect();
        let ended = q.finished_all(&open.iter().map(|&i| jobs[i].id.as_str()).collect::<Vec<_>>());
        for (i, st) in open.into_iter().zip(ended) {
            let j = &jobs[i];
            match st {
                Some(s) => found.push((i, Some(s))),
                None if j.last_located.elapsed() >= RELOCATE => relocate.push(i),
                None => {}
            }
        }
        if !relocate.is_empty() {
            let refs: Vec<&str> = relocate.iter().map(|&i| jobs[i].id.as_str()).collect();
            let states = states_of(&q, &refs)?;
            for (&i, st) in relocate.iter().zip(states) {
                jobs[i].last_located = Instant::now();
                match st {
                    Some(s) if !s.is_terminal() => {}
                    st => found.push((i, st)),
                }
            }
        }
        for (i, st) in found {
            let j = &mut jobs[i];
            j.finished = true;
            let Some(state) = st else {
                bar.clear();
                eprintln!("{TOOL}: error: job {} vanished before it was seen finished (removed by q-ctl rm or q-gc?)", j.id);
                vanished = true;
                all_done = false;
                continue;
            };
            all_done &= state == State::Done;
            bar.clear();
            if state != State::Done && !common.quiet {
                eprintln!("{TOOL}: {}", crate::ended::of_job(&q, &j.id, state, Some(common)));
            }
            if stdout_open {
                stdout_open = out::line(&result_line(&q, &j.id, state))?;
            }
        }
        let left = jobs.iter().filter(|j| !j.finished).count();
        if left == 0 {
            bar.clear();
            return Ok(if vanished {
                exit::NO_JOB
            } else if all_done {
                exit::OK
            } else {
                exit::NOTHING
            });
        }
        if let Some(code) = stop.check() {
            bar.clear();
            // Why it failed is said even with -q.
            if code == exit::TIMED_OUT {
                let rest: Vec<&str> = jobs.iter().filter(|j| !j.finished).map(|j| j.id.as_str()).take(5).collect();
                let more = if left > rest.len() { format!(" and {} more", left - rest.len()) } else { String::new() };
                eprintln!("{TOOL}: timed out with {left} job(s) unfinished: {}{more}", rest.join(" "));
            }
            return Ok(code);
        }
        served.look(&q, &mut bar);
        bar.show(jobs.len() - left, "");
        // Each look stats every unfinished job: look less often when there
        // are many.
        let gap = MIN_GAP + Duration::from_micros(20 * left as u64);
        pause(&q, &mut waiter, stop, looked, gap);
    }
}

/// Sleep until the queue changes (or a short while), but not sooner than
/// `gap` after the last look.
fn pause(q: &Queue, waiter: &mut Option<Box<dyn q_queue::Waiter>>, stop: &Stop, looked: Instant, gap: Duration) {
    let w = waiter.get_or_insert_with(|| q.waiter());
    w.wait(stop.left());
    let since = looked.elapsed();
    if since < gap {
        std::thread::sleep((gap - since).min(stop.left()));
    }
}

/// Where each job is (None: unknown). A few are located one by one; many
/// are found with one listing of the unfinished jobs, so that waiting on
/// thousands of ids does not scan the pending jobs thousands of times.
fn states_of(q: &Queue, ids: &[&str]) -> Result<Vec<Option<State>>> {
    if ids.len() <= 8 {
        return ids.iter().map(|id| Ok(q.locate(id)?.map(|l| l.state))).collect();
    }
    let live: HashMap<String, State> =
        q.entries(&[State::Pending, State::Waiting, State::Held, State::Running])?.into_iter().map(|e| (e.id, e.state)).collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let st = match live.get(*id).copied().or_else(|| terminal_state(q, id)) {
            Some(s) => Some(s),
            // Moving between states while we listed: look once more.
            None => q.locate(id)?.map(|l| l.state),
        };
        out.push(st);
    }
    Ok(out)
}

/// The terminal state of a job, cheaply (for a directory: three `stat`s).
fn terminal_state(q: &Queue, id: &str) -> Option<State> {
    q.finished(id)
}

/// The final `result` line of a finished job: its latest result record, or
/// (if there is none that agrees with where the job is) one with the state
/// and null fields.
fn result_line(q: &Queue, id: &str, state: State) -> Value {
    if let Some(v) = q.last_result(id).filter(|r| r.state == state).and_then(|r| serde_json::to_value(r).ok()) {
        return v;
    }
    json!({
        "type": "result",
        "id": id,
        "attempt": q.last_attempt(id),
        "token": null,
        "state": state.as_str(),
        "reason": null,
        "exit_code": null,
        "signal": null,
        "started_at": null,
        "finished_at": null,
        "duration_ms": null,
        "cpu_user_ms": null,
        "cpu_sys_ms": null,
        "max_rss_kb": null,
        "failures": null,
    })
}

/// `--all`: until nothing is ready, scheduled, waiting or running.
fn wait_all(common: &Common, stop: &Stop, progress: bool) -> Result<u8> {
    let Some(q) = common.open()? else { return Ok(exit::OK) };
    let live = [State::Pending, State::Waiting, State::Held, State::Running];
    // Jobs seen unfinished, whose results are printed when they finish.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut finished = 0usize;
    let mut all_done = true;
    let mut waiter = None;
    let mut bar = Progress::new(progress, 0);
    let mut served = Served::new(common.quiet);
    let mut stdout_open = true;
    loop {
        let looked = Instant::now();
        let entries = q.entries(&live)?;
        let now_live: BTreeSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let gone: Vec<String> = seen.iter().filter(|id| !now_live.contains(id.as_str())).cloned().collect();
        for id in gone {
            // Not live any more: finished, or in flight between two states.
            let state = match terminal_state(&q, &id) {
                Some(s) => s,
                None => match q.locate(&id)? {
                    Some(l) if !l.state.is_terminal() => continue,
                    Some(l) => l.state,
                    None => {
                        seen.remove(&id);
                        continue;
                    }
                },
            };
            seen.remove(&id);
            finished += 1;
            all_done &= state == State::Done;
            bar.clear();
            if state != State::Done && !common.quiet {
                eprintln!("{TOOL}: {}", crate::ended::of_job(&q, &id, state, Some(common)));
            }
            if stdout_open {
                stdout_open = out::line(&result_line(&q, &id, state))?;
            }
        }
        seen.extend(now_live.iter().map(|s| (*s).to_owned()));
        let count = |st: State| entries.iter().filter(|e| e.state == st).count();
        let (pending, waiting, held, running) = (count(State::Pending), count(State::Waiting), count(State::Held), count(State::Running));
        let pause = q.paused(time::now_ms());
        let paused_for_good = pause.as_ref().is_some_and(|p| p.until_ms.is_none());
        if pending + waiting + running == 0 {
            bar.clear();
            if held > 0 {
                note(&format!("{held} held job(s) will not run until released (q-ctl release); not waiting for them"));
                return Ok(exit::NOTHING);
            }
            return Ok(if all_done { exit::OK } else { exit::NOTHING });
        }
        let runnable = if paused_for_good { 0 } else { pending };
        if runnable + running == 0 {
            bar.clear();
            if paused_for_good && pending > 0 {
                note(&format!("the queue is paused with {pending} pending job(s) and nothing running (q-ctl resume); not waiting"));
            } else {
                let held_note = if held > 0 { format!(" on {held} held job(s) (q-ctl release)") } else { String::new() };
                note(&format!("{waiting} job(s) wait on dependencies that cannot finish{held_note}; not waiting"));
            }
            return Ok(exit::NOTHING);
        }
        if let Some(code) = stop.check() {
            bar.clear();
            if code == exit::TIMED_OUT {
                note(&format!("timed out with {} job(s) unfinished", pending + waiting + running));
            }
            return Ok(code);
        }
        served.look(&q, &mut bar);
        bar.total = finished + pending + waiting + running;
        let paused_note = if pause.is_some() { ", paused" } else { "" };
        bar.show(finished, &format!(" ({running} running, {pending} pending, {waiting} waiting{paused_note})"));
        self::pause(&q, &mut waiter, stop, looked, MIN_GAP_ALL);
    }
}

/// Why q-wait ends without success: said even with `-q`.
fn note(msg: &str) {
    eprintln!("{TOOL}: {msg}");
}

/// A one-line progress display on stderr (a terminal only).
struct Progress {
    on: bool,
    total: usize,
    start: Instant,
    shown: bool,
    last: String,
}

impl Progress {
    fn new(on: bool, total: usize) -> Progress {
        Progress { on, total, start: Instant::now(), shown: false, last: String::new() }
    }

    fn show(&mut self, finished: usize, extra: &str) {
        if !self.on {
            return;
        }
        let secs = self.start.elapsed().as_secs();
        let text = format!("{TOOL}: {finished}/{} finished{extra}, {}", self.total, time::human_duration(secs * 1000));
        if self.shown && text == self.last {
            return;
        }
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[K{text}");
        let _ = e.flush();
        self.shown = true;
        self.last = text;
    }

    fn clear(&mut self) {
        if self.shown {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[K");
            let _ = e.flush();
            self.shown = false;
        }
    }
}
