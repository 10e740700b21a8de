//! `q-log`: print (or follow) the output of a job's attempt, which `q-run`
//! keeps in the queue while the job runs: both streams in the order they
//! were written (the runner records it chunk by chunk), or one of them.
//!
//! Invariants: q-log only reads. Without an id it picks the newest job (ids
//! sort by creation time), whether it ran or not; without `--attempt` the
//! newest attempt that started. `-f` copies what is there, then polls for
//! more every 100 ms while that attempt is running, and ends after copying
//! the rest once the attempt is over (its runner closes the logs before
//! settling, so nothing is lost). A closed stdout ends quietly. A job that
//! did not end `done` gets one line on stderr saying how it ended.

use crate::cli::Common;
use crate::exit;
use anyhow::{Context, Result, bail};
use clap::Parser;
use crate::cli::Queue;
use q_queue::{Kind, State, Stream};
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const TOOL: &str = "q-log";
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Parser)]
#[command(
    name = "q-log",
    version,
    about = "Print or follow the output of a job",
    long_about = "Print the output of a job's attempt as q-run recorded it: stdout and stderr together, in the order they were written (attempts run by an older q: stdout, then stderr), or with --stdout or --stderr one of them. Without ID, the newest job; without --attempt, its newest attempt that started. With -f, keep printing new output while the attempt runs (a job not started yet is waited for) and end when it is over. A job that did not end done ends with one line on stderr saying how (reason, exit status, attempt); -q leaves it out. Exit 66 when the job is unknown or the attempt has no log (it never started, or q-gc pruned it). An ID on the command line may also be a unique suffix or prefix of at least 6 characters, or the name of a unique unfinished job (ambiguous: exit 66, listing the candidates); an id in JSON is exact only.",
    after_help = "Examples:\n  q-log                                  # output of the newest job\n  q-log -f \"$(q-push -- make build | jq -r .id)\"   # watch a job from start to end\n  q-log --stderr --attempt 2 01J9ZK3QH8T4W1V6C2M5X7B0RA"
)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// The job [default: the newest job]
    #[arg(value_name = "ID")]
    id: Option<String>,
    /// Which attempt [default: the newest that started]
    #[arg(long, value_name = "N")]
    attempt: Option<u32>,
    /// Only the stdout log
    #[arg(long, conflicts_with = "stderr")]
    stdout: bool,
    /// Only the stderr log
    #[arg(long)]
    stderr: bool,
    /// Follow: print new output while the attempt runs; end when it is over
    #[arg(short, long)]
    follow: bool,
    /// Print the log files' paths instead of their contents
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
    let stream = match (a.stdout, a.stderr) {
        (true, _) => Some(Stream::Stdout),
        (_, true) => Some(Stream::Stderr),
        _ => None,
    };
    let q = a.common.open()?;
    let id = a.id.as_deref().map(|t| crate::ids::resolve_one(q.as_ref(), t)).transpose()?;
    let Some(q) = q else {
        bail!(no_log(match &id {
            Some(id) => format!("no such job: {id} (there is no queue at {})", a.common.location().display()),
            None => format!("no jobs yet (there is no queue at {})", a.common.location().display()),
        }));
    };
    let interrupted = crate::cli_signals::interrupt_flag()?;
    let id = match id {
        Some(id) => id,
        None => newest_job(&q)?,
    };
    let attempt = match a.attempt {
        Some(n) => n,
        // Following: the running attempt, or the next one to start.
        None if a.follow => match wait_for_start(&q, &id, stream, &interrupted)? {
            Some(n) => n,
            None => return Ok(exit::INTERRUPTED),
        },
        None => match newest_attempt(&q, &id) {
            Some(n) => n,
            None => bail!(no_log(why_no_log(&q, &id, None, stream)?)),
        },
    };
    let running = || q.locate(&id).ok().flatten().is_some_and(|l| l.state == State::Running && l.c.is_some_and(|c| c.attempt == attempt));
    let started = || q.log_attempts(&id).contains(&attempt);
    let streams = stream.map_or_else(|| vec![Stream::Stdout, Stream::Stderr], |s| vec![s]);
    if a.path {
        if !started() && streams.iter().all(|&s| q.log_reader(&id, attempt, s).ok().flatten().is_none()) {
            bail!(no_log(why_no_log(&q, &id, Some(attempt), stream)?));
        }
        let mut text = String::new();
        for &s in &streams {
            let Some(path) = q.log_location(&id, attempt, s) else {
                bail!(q_queue::Error::new(Kind::Data, format!("queue {} keeps logs in the database, not in files: print them with q-log", q.location().display())));
            };
            text.push_str(&path);
            text.push('\n');
        }
        let mut out = io::stdout().lock();
        return match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(exit::OK),
        };
    }
    let code = match stream {
        Some(stream) => one_stream(&q, &id, attempt, stream, a.follow, &running, &started, &interrupted)?,
        None if !a.follow && !started() && q.log_order(&id, attempt, 0)?.is_none() && no_logs(&q, &id, attempt) => {
            bail!(no_log(why_no_log(&q, &id, Some(attempt), None)?))
        }
        None => both_streams(&q, &id, attempt, a.follow, &running, &interrupted)?,
    };
    if code == exit::OK && !a.common.quiet {
        say_how_it_ended(&q, &id, attempt, &a.common);
    }
    Ok(code)
}

/// Has the attempt no log of either stream?
fn no_logs(q: &Queue, id: &str, attempt: u32) -> bool {
    [Stream::Stdout, Stream::Stderr].iter().all(|&s| q.log_reader(id, attempt, s).ok().flatten().is_none())
}

/// One line on stderr when the job ended other than done (and this is its
/// last attempt).
fn say_how_it_ended(q: &Queue, id: &str, attempt: u32, common: &Common) {
    let Some(r) = q.last_result(id) else { return };
    if r.state == State::Done || !r.state.is_terminal() || (r.attempt != attempt && r.attempt != 0) {
        return;
    }
    let _ = io::stdout().flush();
    eprintln!("{TOOL}: {}", crate::ended::line(&r, None, Some(common)));
}

/// Both streams, in the order the runner wrote them.
fn both_streams(q: &Queue, id: &str, attempt: u32, keep: bool, running: &dyn Fn() -> bool, interrupted: &AtomicBool) -> Result<u8> {
    let mut out = io::stdout().lock();
    let mut readers: [Option<Box<dyn Read + Send>>; 2] = [None, None];
    let mut next = 0usize;
    loop {
        // Decide before reading: whatever was written before the attempt
        // ended is listed by the time we read the order.
        let more = keep && running();
        match q.log_order(id, attempt, next)? {
            Some(chunks) => {
                for c in chunks {
                    next += 1;
                    let k = usize::from(c.stream == Stream::Stderr);
                    if readers[k].is_none() {
                        readers[k] = q.log_reader(id, attempt, c.stream)?;
                    }
                    let Some(r) = readers[k].as_mut() else { continue };
                    match io::copy(&mut r.by_ref().take(c.len), &mut out) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(exit::OK),
                        Err(e) => return Err(e).context("copy the log"),
                    }
                }
            }
            // No order recorded, and none will be: stdout, then stderr.
            None if !more => {
                drop(out);
                for s in [Stream::Stdout, Stream::Stderr] {
                    if let Some(r) = q.log_reader(id, attempt, s)? {
                        follow(r, false, &|| false, interrupted)?;
                    }
                }
                return Ok(exit::OK);
            }
            None => {}
        }
        match out.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(exit::OK),
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        if !more {
            return Ok(exit::OK);
        }
        if interrupted.load(Ordering::Relaxed) {
            return Ok(exit::INTERRUPTED);
        }
        std::thread::sleep(POLL);
    }
}

/// One stream's log (`--stdout`, `--stderr`).
#[allow(clippy::too_many_arguments)]
fn one_stream(
    q: &Queue,
    id: &str,
    attempt: u32,
    stream: Stream,
    keep: bool,
    running: &dyn Fn() -> bool,
    started: &dyn Fn() -> bool,
    interrupted: &AtomicBool,
) -> Result<u8> {
    let log = match q.log_reader(id, attempt, stream)? {
        Some(r) => r,
        // A runner creates the log on the job's first output: wait for it.
        None if keep && running() => match wait_for_log(q, id, attempt, stream, running, interrupted)? {
            Some(r) => r,
            None if interrupted.load(Ordering::Relaxed) => return Ok(exit::INTERRUPTED),
            // The attempt ended without writing to this stream.
            None => return Ok(exit::OK),
        },
        // It ran and wrote nothing to this stream.
        None if started() => return Ok(exit::OK),
        None => bail!(no_log(why_no_log(q, id, Some(attempt), Some(stream))?)),
    };
    follow(log, keep, running, interrupted)
}

/// Copy the log to stdout; with `keep`, go on while `running()` holds.
fn follow(mut file: Box<dyn Read + Send>, keep: bool, running: &dyn Fn() -> bool, interrupted: &AtomicBool) -> Result<u8> {
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
                Err(e) => return Err(e).context("read the log"),
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

/// Wait for a running attempt's log to appear. `None` when the attempt
/// ended without one, or on an interrupt.
fn wait_for_log(
    q: &Queue,
    id: &str,
    attempt: u32,
    stream: Stream,
    running: &dyn Fn() -> bool,
    interrupted: &AtomicBool,
) -> Result<Option<Box<dyn Read + Send>>> {
    loop {
        let still = running();
        if let Some(r) = q.log_reader(id, attempt, stream)? {
            return Ok(Some(r));
        }
        if !still || interrupted.load(Ordering::Relaxed) {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// The attempt to follow: the running one; for a job not started yet, the
/// next one to start (waited for); for a finished job, its newest with a
/// log. `None` on an interrupt.
fn wait_for_start(q: &Queue, id: &str, stream: Option<Stream>, interrupted: &AtomicBool) -> Result<Option<u32>> {
    let mut told = false;
    loop {
        match q.locate(id)? {
            None => bail!(no_log(format!("no such job: {id}"))),
            Some(l) if l.state == State::Running => return Ok(Some(l.c.unwrap_or_default().attempt)),
            Some(l) if l.state.is_terminal() => {
                return match newest_attempt(q, id) {
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

fn newest_attempt(q: &Queue, id: &str) -> Option<u32> {
    q.log_attempts(id).last().copied()
}

/// The newest job, whatever its state (ids sort by creation time).
fn newest_job(q: &Queue) -> Result<String> {
    q.entries(&State::ALL)?
        .into_iter()
        .map(|e| e.id)
        .max()
        .ok_or_else(|| no_log(format!("no jobs yet in queue {}", q.location().display())))
}

/// Why there is no log to show: what the user should know.
fn why_no_log(q: &Queue, id: &str, attempt: Option<u32>, stream: Option<Stream>) -> Result<String> {
    let Some(l) = q.locate(id)? else {
        if !q.log_attempts(id).is_empty() {
            return Ok(format!("job {id} has no log (its job record is gone)"));
        }
        return Ok(format!("no such job: {id}"));
    };
    let last = l.c.map_or_else(|| q.last_attempt(id), |c| c.attempt);
    let kind = match stream {
        Some(Stream::Stderr) => "stderr ",
        Some(Stream::Stdout) => "stdout ",
        None => "",
    };
    let have = q.log_attempts(id);
    let have = if have.is_empty() {
        String::new()
    } else {
        format!(" (attempts with a {kind}log: {})", have.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
    };
    Ok(match attempt {
        Some(n) if n == 0 || n > last => {
            format!("job {id} has no attempt {n}: it has been claimed {last} time(s) and is {}{have}", l.state.as_str())
        }
        Some(n) => format!("attempt {n} of job {id} has no {kind}log: it never started, was not run by q-run, or its log was pruned{have}"),
        None if l.state == State::Running && have.is_empty() => {
            format!("job {id} is running (attempt {last}) but has no {kind}log yet (q-log -f waits for it)")
        }
        None if last == 0 => format!("job {id} has not run yet: it is {} (q-log -f waits for it)", l.state.as_str()),
        None => format!("job {id} has no {kind}log: it is {} after {last} attempt(s) not run by q-run, or its logs were pruned", l.state.as_str()),
    })
}
