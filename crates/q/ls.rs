//! `q-ls`: list jobs and counts. A table on a terminal, JSON lines otherwise.
//! The JSON records are the interface (UTC times, full ids, in state then id
//! order); the table is for people: the order jobs will run in, local times,
//! durations, and ids cut to their shortest unique suffix (`ls/rows.rs`).

mod rows;

use crate::cli::Common;
use crate::cli::Queue;
use crate::exit;
use crate::out;
use anyhow::Result;
use clap::Parser;
use q_queue::{Entry, State, time};
use serde_json::{Value, json};
use std::io::Write;
use std::process::ExitCode;

/// Finished jobs shown by default (the most recent ones).
const RECENT: usize = 20;

/// How many JSON lines go to stdout in one write.
const LINES_PER_WRITE: usize = 256;

#[derive(Debug, Parser)]
#[command(
    name = "q-ls",
    version,
    about = "List the jobs of a q queue, or count them",
    long_about = "List jobs: by default the unfinished ones (pending, waiting, held, running) and the 20 most recently finished. A table on a terminal, one {\"type\":\"job\",...} JSON line per job otherwise (or with --json).\n\nThe table lists jobs in the order they run: running ones, then pending ones in claim order (ready ones by priority, due time and id, then scheduled ones by due time), waiting, held, and finished ones by when they ended. Times are local, with their zone (TZ); an id is shown by its shortest unique suffix (at least 6 characters, which every tool takes for the id). JSON stays UTC with full ids.",
    after_help = "Examples:\n  q-ls                                  # what is queued and running\n  q-ls --state dead | q-ctl retry       # retry every dead job\n  q-ls --name nightly --since 1d        # the nightly jobs pushed or ended in the last day\n  q-ls --counts --by group              # how many jobs of each group wait and run"
)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Only jobs in this state (repeatable): pending waiting held running done dead canceled
    #[arg(long, value_name = "STATE", value_parser = ["pending", "waiting", "held", "running", "done", "dead", "canceled"])]
    state: Vec<String>,
    /// Only jobs with this tag (repeatable: all must match)
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// Only jobs with this name (repeatable: any may match)
    #[arg(long, value_name = "NAME")]
    name: Vec<String>,
    /// Only jobs of this group (repeatable: any may match); with --counts, the counts of these groups
    #[arg(long, value_name = "GROUP")]
    group: Vec<String>,
    /// Only jobs pushed or ended since TIME: a duration ago (1h, 30m, 2d), RFC 3339, or Unix seconds; finished ones are not cut to the 20 most recent
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    since: Option<i64>,
    /// Every job, finished ones included
    #[arg(long)]
    all: bool,
    /// Print the counts per state instead of jobs
    #[arg(long)]
    counts: bool,
    /// With --counts: one count per group (a line each; jobs of no group: group null)
    #[arg(long, value_name = "group", value_parser = ["group"], requires = "counts")]
    by: Option<String>,
    /// JSON lines even on a terminal
    #[arg(long, conflicts_with = "table")]
    json: bool,
    /// The table even when stdout is not a terminal (a log, a pipe to less)
    #[arg(long)]
    table: bool,
    /// The live view, redrawn in place until q or Ctrl-C (the same as q top)
    #[arg(long, conflicts_with_all = ["json", "table", "counts", "ids", "state", "tag", "name", "group", "since", "all"])]
    watch: bool,
    /// Only these jobs
    #[arg(value_name = "ID")]
    ids: Vec<String>,
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    exit::run("q-ls", || run(args))
}

/// `--since`: a duration is that long ago; a bare number is Unix seconds.
fn parse_since(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    if s.parse::<u64>().is_err()
        && let Ok(ago) = time::parse_duration(s)
    {
        return Ok(time::now_ms().saturating_sub(i64::try_from(ago).unwrap_or(i64::MAX)));
    }
    time::parse_time(s).map_err(|_| format!("{s:?} is neither a duration ago (1h, 30m, 2d) nor a time (RFC 3339, or Unix seconds)"))
}

fn run(a: Args) -> Result<u8> {
    if a.watch {
        return crate::top::run("q-ls", &a.common, crate::top::INTERVAL);
    }
    let q = a.common.open()?;
    let table = a.table || (!a.json && out::stdout_is_tty());
    if a.counts && (a.by.is_some() || !a.group.is_empty()) {
        return group_counts(q.as_ref(), &a.group, table);
    }
    if a.counts {
        let v = counts_json(q.as_ref())?;
        if table {
            println!("{}", counts_text(&v));
        } else {
            out::line(&v)?;
        }
        return Ok(exit::OK);
    }
    let Some(q) = q else { return Ok(exit::OK) };
    warn_corrupt(&q, a.common.quiet);
    let mut status = exit::OK;
    let entries: Vec<Entry> = if a.ids.is_empty() {
        let states: Vec<State> = if a.state.is_empty() {
            State::ALL.to_vec()
        } else {
            a.state.iter().filter_map(|s| State::parse(s)).collect()
        };
        let mut e = q.entries(&states)?;
        if a.state.is_empty() && !a.all && a.since.is_none() {
            limit_finished(&q, &mut e);
        }
        e
    } else {
        let mut v = Vec::new();
        for token in &a.ids {
            let id = &crate::ids::resolve_one(Some(&q), token)?;
            match q.locate(id)? {
                Some(e) => v.push(e),
                None => {
                    eprintln!("q-ls: no such job: {id}");
                    status = exit::NO_JOB;
                }
            }
        }
        v
    };
    let mut listed = q.listed(&entries)?;
    drop(entries);
    // The `job` record of a listed job, if it passes the filters.
    let shown = |l: &q_queue::Listed| -> Option<Value> {
        let v = entry_json(l);
        if !a.tag.is_empty() {
            let tags: Vec<&str> = v["tags"].as_array().map(|t| t.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            if !a.tag.iter().all(|t| tags.contains(&t.as_str())) {
                return None;
            }
        }
        if !a.name.is_empty() && !a.name.iter().any(|n| v["name"].as_str() == Some(n.as_str())) {
            return None;
        }
        if !a.group.is_empty() && !a.group.iter().any(|g| l.job.group.as_deref() == Some(g.as_str())) {
            return None;
        }
        if let Some(t) = a.since {
            let at = |k: &Value| k.as_str().and_then(|s| time::parse_time(s).ok());
            if !(at(&v["created_at"]).is_some_and(|c| c >= t) || at(&v["result"]["finished_at"]).is_some_and(|f| f >= t)) {
                return None;
            }
        }
        Some(v)
    };
    if table {
        let rows = listed.into_iter().filter_map(|l| shown(&l).map(|v| rows::Listed { entry: l.entry, job: l.job, v })).collect();
        let width = out::width(&std::io::stdout());
        // Short ids must be unique in the queue, not only among the rows.
        let all: Vec<String> = q.entries(&State::ALL)?.into_iter().map(|e| e.id).collect();
        let among: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut o = std::io::stdout().lock();
        for l in rows::table(rows, &among, time::now_ms(), width) {
            if writeln!(o, "{l}").is_err() {
                break;
            }
        }
    } else {
        // In state then id order; each record is made as it is written, a
        // write per few hundred lines.
        listed.sort_by(|x, y| (x.entry.state as u8, &x.entry.id).cmp(&(y.entry.state as u8, &y.entry.id)));
        for part in listed.chunks(LINES_PER_WRITE) {
            let vs: Vec<Value> = part.iter().filter_map(shown).collect();
            if !vs.is_empty() && !out::lines(&vs)? {
                break;
            }
        }
    }
    Ok(status)
}

/// Keep all unfinished jobs and only the most recently finished ones.
fn limit_finished(q: &Queue, e: &mut Vec<Entry>) {
    let mut fin: Vec<(i64, usize)> = e
        .iter()
        .enumerate()
        .filter(|(_, x)| x.state.is_terminal())
        .map(|(i, x)| (q.changed_at_ms(x).unwrap_or(0), i))
        .collect();
    if fin.len() <= RECENT {
        return;
    }
    fin.sort_unstable_by(|a, b| b.cmp(a));
    let drop: std::collections::HashSet<usize> = fin[RECENT..].iter().map(|(_, i)| *i).collect();
    let mut i = 0;
    e.retain(|_| {
        let keep = !drop.contains(&i);
        i += 1;
        keep
    });
}

fn warn_corrupt(q: &Queue, quiet: bool) {
    if quiet {
        return;
    }
    for w in q.warnings() {
        eprintln!("q-ls: warning: {w}");
    }
}

/// The `counts` record.
pub fn counts_json(q: Option<&Queue>) -> Result<Value> {
    let c = match q {
        Some(q) => q.counts()?,
        None => q_queue::Counts::default(),
    };
    Ok(counts_record(&c, q.and_then(|q| q.paused(time::now_ms())).as_ref(), None))
}

/// A `counts` record; with `group`, the counts of that group (`None`: the
/// jobs of no group).
fn counts_record(c: &q_queue::Counts, pause: Option<&q_queue::Pause>, group: Option<Option<&str>>) -> Value {
    let mut v = json!({"type": "counts"});
    if let Some(g) = group {
        v["group"] = json!(g);
    }
    let rest = json!({
        "pending": c.pending(),
        "ready": c.ready,
        "scheduled": c.scheduled,
        "waiting": c.waiting,
        "held": c.held,
        "running": c.running,
        "done": c.done,
        "dead": c.dead,
        "canceled": c.canceled,
        "paused": pause.is_some(),
        "paused_until": pause.and_then(|p| p.until_ms).map(time::rfc3339),
    });
    if let (Some(m), Value::Object(rest)) = (v.as_object_mut(), rest) {
        m.extend(rest);
    }
    v
}

/// `--counts --by group` (or `--counts --group G`): a `counts` record per
/// group, with its `group` (null: the jobs of no group); on a terminal, a
/// table of them.
fn group_counts(q: Option<&Queue>, only: &[String], table: bool) -> Result<u8> {
    let all = match q {
        Some(q) => q.group_counts()?,
        None => Default::default(),
    };
    let pause = q.and_then(|q| q.paused(time::now_ms()));
    let mut recs = Vec::new();
    for (g, c) in &all {
        if !only.is_empty() && !only.iter().any(|o| g.as_deref() == Some(o.as_str())) {
            continue;
        }
        recs.push(counts_record(c, pause.as_ref(), Some(g.as_deref())));
    }
    // A group asked for by name that has no job counts zero.
    for o in only {
        if !all.contains_key(&Some(o.clone())) {
            recs.push(counts_record(&q_queue::Counts::default(), pause.as_ref(), Some(Some(o))));
        }
    }
    if table {
        const STATES: [&str; 8] = ["ready", "scheduled", "waiting", "held", "running", "done", "dead", "canceled"];
        const HEADS: [&str; 8] = ["READY", "SCHEDULED", "WAITING", "HELD", "RUNNING", "DONE", "DEAD", "CANCELED"];
        let cols: Vec<crate::table::Col> = std::iter::once(crate::table::Col::flexible("GROUP")).chain(HEADS.iter().map(|h| crate::table::Col::right(h))).collect();
        let rows: Vec<Vec<String>> = recs.iter().map(|v| std::iter::once(v["group"].as_str().unwrap_or("-").to_owned()).chain(STATES.iter().map(|k| v[*k].to_string())).collect()).collect();
        let mut o = std::io::stdout().lock();
        for l in crate::table::render(&cols, &rows, out::width(&std::io::stdout())) {
            if writeln!(o, "{l}").is_err() {
                break;
            }
        }
    } else {
        for v in &recs {
            if !out::line(v)? {
                break;
            }
        }
    }
    Ok(exit::OK)
}

pub fn counts_text(v: &Value) -> String {
    let mut s = String::new();
    for k in ["ready", "scheduled", "waiting", "held", "running", "done", "dead", "canceled"] {
        s.push_str(&format!("{k} {}  ", v[k]));
    }
    if v["paused"] == json!(true) {
        s.push_str("(paused)");
    }
    s.trim_end().to_owned()
}

/// The `job` record of a listed job.
fn entry_json(l: &q_queue::Listed) -> Value {
    let (e, job, last) = (&l.entry, &l.job, &l.last);
    let attempt = e.c.map(|c| c.attempt).or(last.as_ref().map(|r| r.attempt)).unwrap_or(0);
    let failures = e.c.map(|c| c.failures).or(last.as_ref().map(|r| r.failures)).unwrap_or(0);
    let mut v = json!({
        "type": "job",
        "id": e.id,
        "state": e.state.as_str(),
        "name": job.name,
        "priority": job.priority,
        "run_at": e.run_at_ms.map_or(job.run_at.clone(), time::rfc3339),
        "attempt": attempt,
        "failures": failures,
        "attempts": job.attempts,
        "tags": job.tags,
        "created_at": job.created_at,
    });
    if let Some(c) = &job.cmd {
        v["cmd"] = json!(c);
    }
    if let Some(s) = &job.sh {
        v["sh"] = json!(s);
    }
    if !job.after.is_empty() {
        v["after"] = json!(job.after);
    }
    if let Some(g) = &job.group {
        v["group"] = json!(g);
    }
    if !job.needs.is_empty() {
        v["needs"] = json!(job.needs);
    }
    // A running job's lease and run records (a listing has none for
    // a job in another state).
    if let Some(l) = &l.lease {
        v["host"] = json!(l.host);
        v["worker_id"] = json!(l.worker_id);
        v["claimed_at"] = json!(l.claimed_at);
    }
    if let Some(r) = &l.run {
        v["pid"] = json!(r.pgid);
        v["started_at"] = json!(r.started_at);
    }
    if let Some(r) = last {
        v["result"] = serde_json::to_value(r).unwrap_or(Value::Null);
    }
    // The totals over its ended attempts (none before its first).
    if attempt > 0
        && let Some(u) = &l.usage
    {
        v["usage"] = serde_json::to_value(u).unwrap_or(Value::Null);
    }
    v
}
