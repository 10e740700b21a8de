//! Moving jobs between queues: `q-ctl export` prints every pending,
//! waiting and held job as an import record; `q-ctl import` takes such
//! records into another queue (either backend) with their ids, one batch
//! at a time, each whole or not at all ([`q_queue::Backend::import`]).

use super::TOOL;
use crate::cli::Common;
use crate::exit;
use crate::out;
use anyhow::{Context, Result, bail};
use q_queue::{Counters, Import, Job, Kind, NewJob, State, time};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::sync::Arc;

/// One job as `export` prints it and `import` reads it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    /// pending, waiting or held
    state: String,
    /// When it is due (a retry's backoff included).
    run_at: String,
    priority: i32,
    attempt: u32,
    failures: u32,
    interrupts: u32,
    /// The job record as pushed (without its queue-local `env_ref`).
    job: Job,
    /// The pusher's recorded environment (`env_from: pusher`), if any.
    env: Option<BTreeMap<String, String>>,
}

/// `q-ctl export`: one `import` line per pending, waiting and held job, in
/// the order they were pushed (ids sort by creation): a job comes after
/// those it was pushed to wait for, so an import in batches finds them.
pub fn export(common: &Common) -> Result<u8> {
    let Some(q) = common.open()? else { return Ok(exit::OK) };
    let mut status = exit::OK;
    let mut entries = q.entries(&[State::Pending, State::Waiting, State::Held])?;
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    for e in entries {
        // Gone or moved on meanwhile (claimed): not exported.
        let Some((e, mut job)) = q.job(&e)? else { continue };
        if !matches!(e.state, State::Pending | State::Waiting | State::Held) {
            continue;
        }
        let env = match job.env_ref.take() {
            // The caller's own environments only: in a shared queue another
            // member's is refused (77) and that job is not exported.
            Some(r) => match q.load_env(&r, None) {
                Ok(env) => Some(env),
                Err(err) => {
                    eprintln!("{TOOL}: error: job {}: its recorded environment cannot be read: {err}; not exported", e.id);
                    status = exit::code_of(&err.into());
                    continue;
                }
            },
            None => None,
        };
        let c = e.c.unwrap_or_default();
        let rec = Record {
            kind: "import".into(),
            id: e.id.clone(),
            state: e.state.as_str().into(),
            run_at: time::rfc3339(e.run_at_ms.unwrap_or_else(|| time::parse_time(&job.run_at).unwrap_or(0))),
            priority: job.priority,
            attempt: c.attempt,
            failures: c.failures,
            interrupts: c.interrupts,
            job,
            env,
        };
        if !out::line(&serde_json::to_value(&rec)?)? {
            break;
        }
    }
    Ok(status)
}

/// `q-ctl import`: read import records from stdin, `batch` at a time (all
/// of them: 0), each batch whole or not at all; one `ctl` line per job.
pub fn import(common: &Common, batch: usize) -> Result<u8> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!(q_queue::Error::new(Kind::Data, "pipe import records on stdin (q-ctl export's output)"));
    }
    let mut jobs = Vec::new();
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.context("read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        jobs.push(parse(&line).with_context(|| format!("stdin line {}", n + 1))?);
    }
    if jobs.is_empty() {
        bail!(q_queue::Error::new(Kind::NoJob, "no import records on stdin (q-ctl export prints them)"));
    }
    let q = common.create(None)?;
    let size = if batch == 0 { jobs.len() } else { batch };
    room_for_keys(&jobs, size);
    let total = jobs.len();
    let mut done = 0;
    let mut it = jobs.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<Import> = it.by_ref().take(size).collect();
        let ids: Vec<(String, State)> = chunk.iter().map(|j| (j.new.job.id.clone(), j.state)).collect();
        if let Err(e) = q.import(chunk) {
            // Say what earlier batches brought in (their lines are printed).
            if done > 0 {
                return Err(anyhow::Error::new(e).context(format!("{done} of the {total} jobs came in (the batches before this one); this batch and the rest did not")));
            }
            return Err(e.into());
        }
        done += ids.len();
        for (id, state) in ids {
            if !out::line(&serde_json::json!({"type": "ctl", "action": "import", "id": id, "state": state.as_str()}))? {
                return Ok(exit::OK);
            }
        }
    }
    Ok(exit::OK)
}

/// One import record, checked.
fn parse(line: &str) -> Result<Import> {
    let bad = |why: String| q_queue::Error::new(Kind::Data, why);
    let rec: Record = serde_json::from_str(line).map_err(|e| bad(format!("not an import record: {e}")))?;
    if rec.kind != "import" {
        bail!(bad(format!("\"type\" is {:?}, not \"import\"", rec.kind)));
    }
    if rec.job.id != rec.id {
        bail!(bad(format!("\"id\" {} is not the job's id {}", rec.id, rec.job.id)));
    }
    if rec.job.priority != rec.priority {
        bail!(bad(format!("\"priority\" {} is not the job's priority {}", rec.priority, rec.job.priority)));
    }
    let state = match State::parse(&rec.state) {
        Some(s @ (State::Pending | State::Waiting | State::Held)) => s,
        _ => bail!(bad(format!("\"state\" {:?} is not pending, waiting or held", rec.state))),
    };
    let run_at_ms = time::parse_time(&rec.run_at).map_err(|e| bad(format!("\"run_at\": {e}")))?;
    let mut job = rec.job;
    job.env_ref = None;
    Ok(Import {
        new: NewJob { job, run_at_ms, pusher_env: rec.env.map(Arc::new) },
        state,
        c: Counters { attempt: rec.attempt, failures: rec.failures, interrupts: rec.interrupts },
    })
}

/// A directory import holds the file of each dedupe key of its batch open
/// until the batch is in place: raise the soft limit of open files to what
/// the largest batch needs (up to the hard limit).
fn room_for_keys(jobs: &[q_queue::Import], size: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let most = jobs.chunks(size.max(1)).map(|b| b.iter().filter(|j| j.new.job.key.is_some()).count()).max().unwrap_or(0) as u64;
    let want = most + 256;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < want
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
    }
}
