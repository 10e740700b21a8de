//! `q top` (and `q-ls --watch`): a live view of a queue, redrawn in place
//! every second: the counts, what runs where (worker, host, job, elapsed),
//! the jobs that ended last (reason, duration), throughput and ETA, and,
//! when jobs take slots or have groups, the slots in use (`gpu 1/2`, out of
//! what the live supervisors have) and the running jobs per group (`io
//! 1/1` under a limit). It looks at the queue only through the `Backend`
//! trait (counts, entries, the listing of the running jobs, last results),
//! so it shows a queue of either backend, served by supervisors and workers
//! started anywhere; it never writes to the queue.
//!
//! `View` is what is known of the queue (refreshed from the backend, with
//! what a finished job cannot change kept between looks); `View::frame` lays
//! it out for a screen size; `term` owns the terminal.

mod term;

use crate::cli::{Common, Queue};
use crate::exit;
use crate::table::{self, Col};
use anyhow::Result;
use q_queue::{Counts, Listed, ResultRecord, State, time};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How often the queue is looked at (and elapsed times move on).
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Throughput is measured over the jobs that ended this recently.
const WINDOW_MS: i64 = 5 * 60 * 1000;

/// Run the view until `q`, Ctrl-C (130) or SIGTERM/SIGHUP. `tool` names
/// it in messages (`q`, or `q-ls` for `--watch`).
pub fn run(tool: &str, common: &Common, every: Duration) -> Result<u8> {
    if !term::usable() {
        eprintln!("{tool}: error: the live view needs a terminal on stdin and stdout (off a terminal, q-ls --json lists the jobs and q-ls --counts counts them)");
        return Ok(exit::USAGE);
    }
    let mut view = View::new(common.clone());
    let term = term::Term::enter()?;
    let mut frame = 0;
    loop {
        frame += 1;
        panic_point(frame);
        view.refresh();
        let (w, h) = term.size();
        term.draw(&view.frame(w, h))?;
        let mut event = term.wait(every)?;
        while event == term::Event::Resize {
            let (w, h) = term.size();
            term.draw(&view.frame(w, h))?;
            event = term.wait(every)?;
        }
        match event {
            term::Event::Quit => return Ok(exit::OK),
            term::Event::Interrupt => return Ok(exit::INTERRUPTED),
            term::Event::Tick | term::Event::Resize => {}
        }
    }
}

/// A panic for the test that the terminal is given back (feature
/// `failpoints` only): `Q_PANIC_AT=top.frame@N` panics before frame N.
fn panic_point(frame: u64) {
    #[cfg(feature = "failpoints")]
    if std::env::var("Q_PANIC_AT").ok().and_then(|v| v.strip_prefix("top.frame@")?.parse().ok()) == Some(frame) {
        panic!("Q_PANIC_AT=top.frame@{frame}");
    }
    let _ = frame;
}

/// A running job as the view shows it.
struct Running {
    id: String,
    worker: String,
    host: String,
    since_ms: Option<i64>,
    label: String,
}

/// A finished job: when it ended (as the backend says), and, once shown or
/// measured, its last result and label. A finished job changes only by
/// leaving its state (retry, rm), so this is kept while it stays.
struct Ended {
    state: State,
    at_ms: i64,
    result: Option<Option<ResultRecord>>,
    label: Option<String>,
}

/// A running job as the view shows it, from its listing: where and since
/// when it runs (its run record, else its lease record) and its label.
fn running_of(l: &Listed) -> Running {
    let (lease, run) = (l.lease.as_ref(), l.run.as_ref());
    let worker = run.and_then(|r| r.worker_id.clone()).or_else(|| lease.and_then(|l| l.worker_id.clone()));
    let host = run.map(|r| r.host.clone()).or_else(|| lease.map(|l| l.host.clone()));
    let since = run.map(|r| r.started_at.as_str()).or(lease.map(|l| l.claimed_at.as_str()));
    Running {
        id: l.entry.id.clone(),
        worker: worker.unwrap_or_default(),
        host: host.unwrap_or_default(),
        since_ms: since.and_then(|s| time::parse_time(s).ok()),
        label: table::job_label(&l.job),
    }
}

pub struct View {
    common: Common,
    /// The queue, once it exists (a view may start before the first push).
    q: Option<Queue>,
    place: String,
    counts: Counts,
    paused: bool,
    running: Vec<Running>,
    ended: HashMap<String, Ended>,
    /// The needs and group of each running job.
    classes: HashMap<String, (BTreeMap<String, u32>, Option<String>)>,
    /// The live supervisors' slots and limits, summed.
    totals: (BTreeMap<String, u32>, BTreeMap<String, u32>),
    error: Option<String>,
    now: i64,
}

impl View {
    fn new(common: Common) -> View {
        View {
            place: common.location().display(),
            common,
            q: None,
            counts: Counts::default(),
            paused: false,
            running: Vec::new(),
            ended: HashMap::new(),
            classes: HashMap::new(),
            totals: Default::default(),
            error: None,
            now: time::now_ms(),
        }
    }

    /// Look at the queue again. An error (a database that went away) is
    /// shown in the frame, and the next look tries again.
    fn refresh(&mut self) {
        self.now = time::now_ms();
        self.error = self.look().err().map(|e| format!("{e:#}"));
    }

    fn look(&mut self) -> Result<()> {
        if self.q.is_none() {
            self.q = self.common.open()?;
        }
        let Some(q) = self.q.clone() else {
            anyhow::bail!("no queue at {} yet (the first push creates it)", self.place);
        };
        self.counts = q.counts()?;
        self.paused = q.paused(self.now).is_some();
        // The running jobs with their jobs and records, in one listing (a
        // few queries on a database, whatever their number).
        let mut running = q.listed(&q.entries(&[State::Running])?)?;
        running.retain(|l| l.entry.state == State::Running);
        self.running = running.iter().map(running_of).collect();
        self.running.sort_by(|a, b| (&a.worker, &a.host, a.since_ms).cmp(&(&b.worker, &b.host, b.since_ms)));
        self.classes = running.into_iter().map(|l| (l.entry.id, (l.job.needs, l.job.group))).collect();
        let mut totals: (BTreeMap<String, u32>, BTreeMap<String, u32>) = Default::default();
        for sup in q.supervisors().unwrap_or_default() {
            for (into, from) in [(&mut totals.0, &sup.settings.slots), (&mut totals.1, &sup.settings.limits)] {
                for (k, n) in from {
                    *into.entry(k.clone()).or_default() += n;
                }
            }
        }
        self.totals = totals;
        let finished = q.entries(&[State::Done, State::Dead, State::Canceled])?;
        let mut seen = HashMap::with_capacity(finished.len());
        for e in &finished {
            let kept = self.ended.remove(&e.id).filter(|x| x.state == e.state);
            let x = match kept {
                Some(x) => x,
                None => Ended { state: e.state, at_ms: q.changed_at_ms(e).unwrap_or(0), result: None, label: None },
            };
            seen.insert(e.id.clone(), x);
        }
        self.ended = seen;
        Ok(())
    }

    /// "slots: gpu 1/2 · groups: io 1/1, render 2": the slots the running
    /// jobs hold out of the live supervisors' (no total: none known), and
    /// the running jobs of each group (out of its limit, if one is known);
    /// `None` when no job or supervisor has any.
    fn slots_line(&self) -> Option<String> {
        let mut used: BTreeMap<String, u32> = self.totals.0.keys().map(|k| (k.clone(), 0)).collect();
        let mut groups: BTreeMap<String, u32> = self.totals.1.keys().map(|k| (k.clone(), 0)).collect();
        for (needs, group) in self.classes.values() {
            for (k, n) in needs {
                *used.entry(k.clone()).or_default() += n;
            }
            if let Some(g) = group {
                *groups.entry(g.clone()).or_default() += 1;
            }
        }
        let of = |m: &BTreeMap<String, u32>, totals: &BTreeMap<String, u32>| {
            m.iter().map(|(k, n)| match totals.get(k) {
                Some(t) => format!("{k} {n}/{t}"),
                None => format!("{k} {n}"),
            }).collect::<Vec<_>>().join(", ")
        };
        let mut parts = Vec::new();
        if !used.is_empty() {
            parts.push(format!("slots: {}", of(&used, &self.totals.0)));
        }
        if !groups.is_empty() {
            parts.push(format!("groups running: {}", of(&groups, &self.totals.1)));
        }
        (!parts.is_empty()).then(|| parts.join(" · "))
    }

    /// The most recently ended jobs, newest first, with their results read.
    fn last_ended(&mut self, n: usize) -> Vec<(String, &Ended)> {
        let mut recent: Vec<(i64, String)> = self.ended.iter().map(|(id, x)| (x.at_ms, id.clone())).collect();
        recent.sort_unstable_by(|a, b| b.cmp(a));
        recent.truncate(n);
        for (_, id) in &recent {
            self.fill(id);
        }
        recent.into_iter().filter_map(|(_, id)| self.ended.get(&id).map(|x| (id, x))).collect()
    }

    /// Read a finished job's last result and label, once.
    fn fill(&mut self, id: &str) {
        let (Some(q), Some(x)) = (&self.q, self.ended.get_mut(id)) else { return };
        if x.result.is_none() {
            x.result = Some(q.last_result(id));
        }
        if x.label.is_none() {
            let named = x.result.as_ref().and_then(|r| r.as_ref()).and_then(|r| r.name.clone());
            x.label = Some(match named {
                Some(n) => n,
                None => match q.locate(id) {
                    Ok(Some(e)) => table::label(q, &e),
                    _ => String::new(),
                },
            });
        }
    }

    /// Jobs per second over the jobs that ended in the last five minutes:
    /// their number over the time since the first of them started. `None`
    /// when too few ended to say.
    fn throughput(&mut self) -> Option<(f64, u64)> {
        let since = self.now - WINDOW_MS;
        let mut recent: Vec<(i64, String)> = self.ended.iter().filter(|(_, x)| x.at_ms > since).map(|(id, x)| (x.at_ms, id.clone())).collect();
        if recent.len() < 2 {
            return None;
        }
        recent.sort_unstable();
        let (first_end, first) = recent[0].clone();
        self.fill(&first);
        let started = self.ended.get(&first).and_then(|x| x.result.as_ref()?.as_ref()?.started_at.as_deref().and_then(|s| time::parse_time(s).ok()));
        let from = started.unwrap_or(first_end).min(first_end);
        let span = (self.now - from).max(1000);
        Some((recent.len() as f64 * 1000.0 / span as f64, span as u64))
    }

    /// The frame for a screen of `w` columns and `h` rows: at most `h`
    /// lines, none wider than `w`.
    pub fn frame(&mut self, w: usize, h: usize) -> Vec<String> {
        let c = self.counts.clone();
        let mut head = vec![
            format!("q top · {} · {}", self.place, table::local_time(self.now)),
            [
                (c.ready, "ready"),
                (c.scheduled, "scheduled"),
                (c.waiting, "waiting"),
                (c.held, "held"),
                (c.running, "running"),
                (c.done, "done"),
                (c.dead, "dead"),
                (c.canceled, "canceled"),
            ]
            .iter()
            .map(|(n, what)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(" · ")
                + if self.paused { " · paused" } else { "" },
        ];
        if let Some(l) = self.slots_line() {
            head.push(l);
        }
        head.push(match self.throughput() {
            Some((rate, span)) => {
                let left = c.ready + c.running;
                let eta = if left > 0 { format!(" · ETA {} for {left} ready and running", time::human_duration((left as f64 / rate * 1000.0) as u64)) } else { String::new() };
                format!("{rate:.2} jobs/s over the last {}{eta}", time::human_duration(span))
            }
            None => "throughput: too few jobs ended in the last 5m to say".to_owned(),
        });
        if let Some(e) = &self.error {
            head.push(format!("error: {e}"));
        }
        let foot = "q: quit";
        // Rows left for the two tables, each with a title and a heading.
        let room = h.saturating_sub(head.len() + 1 + 2 + 2 + 2);
        let ended_want = self.ended.len().min(room);
        let run_rows = self.running.len().min(room.saturating_sub(ended_want.min(3)));
        let end_rows = room.saturating_sub(run_rows).min(ended_want);

        let mut lines = head;
        lines.push(String::new());
        lines.push(more("RUNNING", self.running.len(), run_rows));
        let ids: Vec<&str> = self.running.iter().map(|r| r.id.as_str()).collect();
        // Short ids are unique among every job the view knows.
        let known: Vec<String> = self.ended.keys().chain(self.running.iter().map(|r| &r.id)).cloned().collect();
        let among: Vec<&str> = known.iter().map(String::as_str).collect();
        let short = table::unique_suffixes(&ids, &among);
        let rows: Vec<Vec<String>> = self
            .running
            .iter()
            .zip(short)
            .take(run_rows)
            .map(|(r, id)| {
                let el = r.since_ms.map(|s| time::human_duration(u64::try_from(self.now - s).unwrap_or(0))).unwrap_or_default();
                vec![r.worker.clone(), r.host.clone(), id, el, r.label.clone()]
            })
            .collect();
        lines.extend(table::render(
            &[Col::fixed("WORKER"), Col::flexible("HOST"), Col::fixed("JOB"), Col::right("ELAPSED"), Col::flexible("NAME")],
            &rows,
            Some(w),
        ));
        lines.push(String::new());
        let total = self.ended.len();
        lines.push(more("ENDED", total, end_rows));
        let ended = self.last_ended(end_rows);
        let ids: Vec<&str> = ended.iter().map(|(id, _)| id.as_str()).collect();
        let among: Vec<&str> = known.iter().map(String::as_str).collect();
        let short = table::unique_suffixes(&ids, &among);
        let rows: Vec<Vec<String>> = ended
            .iter()
            .zip(short)
            .map(|((_, x), id)| {
                let r = x.result.as_ref().and_then(|r| r.as_ref());
                let how = r.and_then(|r| serde_json::to_value(r).ok()).map(|v| table::how(&v)).unwrap_or_default();
                let took = r.and_then(|r| r.duration_ms).map(time::human_duration).unwrap_or_default();
                vec![id, x.state.as_str().to_owned(), how, took, table::local_time(x.at_ms), x.label.clone().unwrap_or_default()]
            })
            .collect();
        lines.extend(table::render(
            &[Col::fixed("JOB"), Col::fixed("STATE"), Col::fixed("REASON"), Col::right("TOOK"), Col::fixed("ENDED"), Col::flexible("NAME")],
            &rows,
            Some(w),
        ));
        lines.truncate(h.saturating_sub(1));
        while lines.len() + 1 < h {
            lines.push(String::new());
        }
        lines.push(foot.to_owned());
        lines.into_iter().map(|l| table::fit(&l, w)).collect()
    }
}

/// A section's title: how many there are, and how many fit.
fn more(title: &str, n: usize, shown: usize) -> String {
    if shown < n { format!("{title} {n} ({shown} shown)") } else { format!("{title} {n}") }
}
