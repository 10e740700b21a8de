//! `q-log`: print (or follow) the stdout or stderr log of a job's attempt,
//! `var/<ID>/<A>.out|.err`, which `q-run` writes while the job runs.
//!
//! Invariants: q-log only reads. Without an id it picks the newest job (ids
//! sort by creation time) that has a log; without `--attempt` the newest
//! attempt that has a log of the chosen stream. `-f` copies what is there,
//! then polls for more every 100 ms while that attempt is running, and ends
//! after copying the rest once the attempt is over (its runner closes the log
//! before settling, so nothing is lost). A closed stdout ends quietly.

use crate::cli::Common;
use crate::exit;
use anyhow::{Context, Result, bail};
use clap::Parser;
use q_queue::{Kind, Queue, State, Stream};
use std::fs::File;
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

const TOOL: &str = "q-log";
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Parser)]
#[command(
    name = "q-log",
    version,
    about = "Print or follow the output of a job",
    long_about = "Print the stdout log (or with --stderr the stderr log) of a job's attempt, as q-run recorded it. Without ID, the newest job that has a log; without --attempt, its newest attempt that has one. With -f, keep printing new output while the attempt runs (a job not started yet is waited for) and end when it is over. Exit 66 when the job is unknown or the attempt has no log (it never started, or q-gc pruned it).",
    after_help = "Examples:\n  q-log                                  # stdout of the newest job\n  q-log -f \"$(q-push -- make build | jq -r .id)\"   # watch a job from start to end\n  q-log --stderr --attempt 2 01J9ZK3QH8T4W1V6C2M5X7B0RA"
)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// The job [default: the newest job that has a log]
    #[arg(value_name = "ID")]
    id: Option<String>,
    /// Which attempt [default: the newest that has a log]
    #[arg(long, value_name = "N")]
    attempt: Option<u32>,
    /// The stderr log instead of stdout
    #[arg(long)]
    stderr: bool,
    /// Follow: print new output while the attempt runs; end when it is over
    #[arg(short, long)]
    follow: bool,
    /// Print the log file's path instead of its contents
    #[arg(long)]
    path: bool,
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    exit::run(TOOL, || run(args))
}

fn no_log(msg: String) -> anyhow::Error {
    q_queue::Error::new(Kind::NoJob, msg).into()
}

fn run(a: Args) -> Result<u8> {
    let stream = if a.stderr { Stream::Stderr } else { Stream::Stdout };
    if let Some(id) = &a.id {
        q_queue::id::check_id(id)?;
    }
    let Some(q) = a.common.open()? else {
        bail!(no_log(match &a.id {
            Some(id) => format!("no such job: {id} (there is no queue at {})", a.common.path().display()),
            None => format!("no jobs yet (there is no queue at {})", a.common.path().display()),
        }));
    };
    let interrupted = crate::cli_signals::interrupt_flag()?;
    let id = match &a.id {
        Some(id) => id.clone(),
        None => newest_with_log(&q, stream)?,
    };
    let attempt = match a.attempt {
        Some(n) => n,
        // Following: the running attempt, or the next one to start.
        None if a.follow => match wait_for_start(&q, &id, stream, &interrupted)? {
            Some(n) => n,
            None => return Ok(exit::INTERRUPTED),
        },
        None => match newest_attempt(&q, &id, stream) {
            Some(n) => n,
            None => bail!(no_log(why_no_log(&q, &id, None, stream)?)),
        },
    };
    let path = q.log_path(&id, attempt, stream);
    let running = || q.locate(&id).ok().flatten().is_some_and(|l| l.state == State::Running && l.c.is_some_and(|c| c.attempt == attempt));
    let file = match File::open(&path) {
        Ok(f) => Some(f),
        // A runner creates the log on the job's first output: wait for it.
        Err(e) if e.kind() == io::ErrorKind::NotFound && a.follow && running() => {
            match wait_for_file(&path, &running, &interrupted) {
                Some(f) => Some(f),
                None if interrupted.load(Ordering::Relaxed) => return Ok(exit::INTERRUPTED),
                // The attempt ended without writing to this stream.
                None => return Ok(exit::OK),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && !a.path => {
            if attempts_with_log(&q, &id, stream).contains(&attempt) {
                // It ran and wrote nothing to this stream.
                return Ok(exit::OK);
            }
            bail!(no_log(why_no_log(&q, &id, Some(attempt), stream)?))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !attempts_with_log(&q, &id, stream).contains(&attempt) {
                bail!(no_log(why_no_log(&q, &id, Some(attempt), stream)?));
            }
            None
        }
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    if a.path {
        let mut out = io::stdout().lock();
        return match writeln!(out, "{}", path.display()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(exit::OK),
        };
    }
    match file {
        Some(f) => follow(f, &path, a.follow, &running, &interrupted),
        None => Ok(exit::OK),
    }
}

/// Copy the log to stdout; with `keep`, go on while `running()` holds.
fn follow(mut file: File, path: &std::path::Path, keep: bool, running: &dyn Fn() -> bool, interrupted: &std::sync::atomic::AtomicBool) -> Result<u8> {
    let mut out = io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Decide before draining: whatever was written before the attempt
        // ended is in the file by the time we read to its end.
        let more = keep && running();
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
            };
            match out.write_all(&buf[..n]).and_then(|()| if keep { out.flush() } else { Ok(()) }) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(exit::OK),
                Err(e) => return Err(e.into()),
            }
        }
        if !more {
            return match out.flush() {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(exit::OK),
            };
        }
        if interrupted.load(Ordering::Relaxed) {
            let _ = out.flush();
            return Ok(exit::INTERRUPTED);
        }
        std::thread::sleep(POLL);
    }
}

/// Wait for a running attempt's log file to appear. `None` when the attempt
/// ended without one, or on an interrupt.
fn wait_for_file(path: &std::path::Path, running: &dyn Fn() -> bool, interrupted: &std::sync::atomic::AtomicBool) -> Option<File> {
    loop {
        let still = running();
        if let Ok(f) = File::open(path) {
            return Some(f);
        }
        if !still || interrupted.load(Ordering::Relaxed) {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// The attempt to follow: the running one; for a job not started yet, the
/// next one to start (waited for); for a finished job, its newest with a
/// log. `None` on an interrupt.
fn wait_for_start(q: &Queue, id: &str, stream: Stream, interrupted: &std::sync::atomic::AtomicBool) -> Result<Option<u32>> {
    let mut told = false;
    loop {
        match q.locate(id)? {
            None => bail!(no_log(format!("no such job: {id}"))),
            Some(l) if l.state == State::Running => return Ok(Some(l.c.unwrap_or_default().attempt)),
            Some(l) if l.state.is_terminal() => {
                return match newest_attempt(q, id, stream) {
                    Some(n) => Ok(Some(n)),
                    None => bail!(no_log(why_no_log(q, id, None, stream)?)),
                };
            }
            Some(l) => {
                if !told && crate::out::stderr_is_tty() {
                    eprintln!("{TOOL}: job {id} is {}: waiting for it to start", l.state.as_str());
                    told = true;
                }
            }
        }
        if interrupted.load(Ordering::Relaxed) {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// The attempts of a job that started (and so have a log of each stream:
/// q-run creates a log file on the first byte, so a missing file of a
/// started attempt is an empty log).
fn attempts_with_log(q: &Queue, id: &str, _stream: Stream) -> Vec<u32> {
    let var = q.var(id);
    let mut v: Vec<u32> = q_queue::fsx::list(&var)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| {
            let (a, rest) = n.split_once('.')?;
            let a: u32 = a.parse().ok()?;
            let started = match rest {
                "out" | "err" => true,
                "lease.json" => q.read_run(id, a).is_some(),
                // Run by q-run (which measures its CPU), not settled by hand.
                "result.json" => std::fs::read_to_string(var.join(n))
                    .ok()
                    .and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
                    .is_some_and(|r| r["cpu_user_ms"].is_u64()),
                _ => false,
            };
            started.then_some(a)
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn newest_attempt(q: &Queue, id: &str, stream: Stream) -> Option<u32> {
    attempts_with_log(q, id, stream).last().copied()
}

/// The newest running or finished job that has a log.
fn newest_with_log(q: &Queue, stream: Stream) -> Result<String> {
    let mut ids: Vec<String> = q
        .entries(&[State::Running, State::Done, State::Dead, State::Canceled])?
        .into_iter()
        .map(|e| e.id)
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.into_iter()
        .find(|id| newest_attempt(q, id, stream).is_some())
        .ok_or_else(|| no_log("no job has a log yet (logs are written by q-run while a job runs)".to_owned()))
}

/// Why there is no log to show: what the user should know.
fn why_no_log(q: &Queue, id: &str, attempt: Option<u32>, stream: Stream) -> Result<String> {
    let Some(l) = q.locate(id)? else {
        if q.var(id).exists() {
            return Ok(format!("job {id} has no log (its job record is gone)"));
        }
        return Ok(format!("no such job: {id}"));
    };
    let last = l.c.map_or_else(|| q.last_attempt(id), |c| c.attempt);
    let kind = if stream == Stream::Stderr { "stderr" } else { "stdout" };
    let have = attempts_with_log(q, id, stream);
    let have = if have.is_empty() {
        String::new()
    } else {
        format!(" (attempts with a {kind} log: {})", have.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
    };
    Ok(match attempt {
        Some(n) if n == 0 || n > last => {
            format!("job {id} has no attempt {n}: it has been claimed {last} time(s) and is {}{have}", l.state.as_str())
        }
        Some(n) => format!("attempt {n} of job {id} has no {kind} log: it never started, was not run by q-run, or its log was pruned{have}"),
        None if l.state == State::Running && have.is_empty() => {
            format!("job {id} is running (attempt {last}) but has no {kind} log yet (q-log -f waits for it)")
        }
        None if last == 0 => format!("job {id} has not run yet: it is {} (q-log -f waits for it)", l.state.as_str()),
        None => format!("job {id} has no {kind} log: it is {} after {last} attempt(s) not run by q-run, or its logs were pruned", l.state.as_str()),
    })
}
