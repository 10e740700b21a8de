//! One attempt: spawn the job in its own process group, stream its output
//! into the queue under a cap, keep watch (timeout, cancel, lost lease,
//! drain), stop it when asked (SIGTERM to the group, grace, SIGKILL), reap
//! it with its resource usage, and settle.

use super::Ctx;
use super::heartbeat::Held;
use crate::exit;
use crate::sys;
use anyhow::Result;
use nix::sys::signal::Signal;
use q_queue::{Ask, Outcome, Reason, ResultRecord, RunInfo, SettleOpts, Stream, State, ident, time};
use std::ffi::OsString;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// An attempt whose job has ended, not yet settled: [`commit`] settles it.
pub struct Ended {
    reason: Reason,
    outcome: Outcome,
    /// `q-run --once` exit status, unless the settle finds the lease lost.
    once_code: u8,
    workspace: Option<std::path::PathBuf>,
    /// Refused, never to run (`SettleOpts::refused`).
    refused: Option<String>,
}

/// Why we are stopping the job, and when we sent SIGTERM.
struct Stopping {
    reason: Reason,
    term_at: Instant,
    killed: bool,
}

/// Run the held claim's job to its end (or to its stop), with the slots
/// it holds named in its environment (`Q_SLOT_<NAME>`).
pub fn run(ctx: &Ctx, held: &Held, slots: &[(String, String)]) -> Result<Ended> {
    let q = &ctx.q;
    let job = &held.job;
    let a = held.attempt();
    // What is left of the job's max_runtime (only a job that has one asks).
    let budget = job.max_runtime_ms.map(|m| m.saturating_sub(q.usage(&held.id).map_or(0, |u| u.wall_ms)));
    if budget == Some(0) {
        eprintln!("q-run: job {}: its max_runtime ran out in earlier attempts", held.id);
        let outcome = Outcome { finished_at_ms: Some(time::now_ms()), ..Outcome::default() };
        return Ok(Ended { reason: Reason::MaxRuntime, outcome, once_code: exit::TIMED_OUT, workspace: None, refused: None });
    }
    let output_limit = job.output_limit.unwrap_or(ctx.output_limit);
    let mut out_log = Log::new(q, held, Stream::Stdout);
    let mut err_log = Log::new(q, held, Stream::Stderr);
    let started_ms = time::now_ms();
    // As whom it runs: a job no user of this host owns is refused for good.
    let run_as = match super::spawn::RunAs::of(held.owner) {
        Ok(r) => r,
        Err(r) => {
            err_log.write(format!("q-run: the job is refused: {}\n", r.why).as_bytes());
            let mut ended = spawn_failed(held, started_ms, &r.why, exit::RUN_FAILED);
            ended.refused = r.for_good.then_some(r.why);
            return Ok(ended);
        }
    };
    let workspace = ctx.workspaces.make(&held.id, a, held.owner)?;
    let mut cmd = match build_command(ctx, held, &workspace, run_as.as_ref(), slots) {
        Ok(c) => c,
        Err(e) => {
            err_log.write(format!("q-run: cannot run the job: {e}\n").as_bytes());
            return Ok(spawn_failed(held, started_ms, &e.to_string(), exit::RUN_FAILED));
        }
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_RUN,
            };
            err_log.write(format!("q-run: cannot run the job: {e}\n").as_bytes());
            return Ok(spawn_failed(held, started_ms, &e.to_string(), code));
        }
    };
    let pid = child.id() as i32;
    let leader_start = ident::start_ticks(pid).unwrap_or(0);
    held.running(pid, leader_start);
    write_run_record(ctx, held, pid, leader_start, started_ms);
    q_queue::failpoint!("run.after_spawn");

    // The payload (or the claim line, for a handler) on stdin.
    if let Some(mut sin) = child.stdin.take() {
        let input = stdin_bytes(ctx, held);
        std::thread::spawn(move || {
            let _ = sin.write_all(&input);
        });
    }
    let mut pout = child.stdout.take();
    let mut perr = child.stderr.take();
    for p in [pout.as_ref().map(|p| p.as_fd()), perr.as_ref().map(|p| p.as_fd())].into_iter().flatten() {
        let _ = nix::fcntl::fcntl(p, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
    }

    // Readable when the leader exits: wakes the loop without polling.
    let pidfd = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    let start = Instant::now();
    let deadline = job.timeout_ms.map(|t| start + Duration::from_millis(t));
    let budget_end = budget.map(|b| start + Duration::from_millis(b));
    let mut written: u64 = 0;
    let mut stopping: Option<Stopping> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut last_request_look = Instant::now();
    let mut acted: Vec<String> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let reaped = loop {
        // Output, or up to 100 ms of waiting for it.
        pump(&mut pout, &mut perr, pidfd.as_ref(), &mut out_log, &mut err_log, &mut buf, &mut written, output_limit, Duration::from_millis(100));
        if let Some(r) = sys::wait4(pid, true)? {
            break r;
        }
        let now = Instant::now();
        if written >= output_limit && stopping.is_none() {
            stopping = Some(stop(pid, leader_start, Reason::OutputLimit));
        }
        if budget_end.is_some_and(|d| now >= d) && stopping.is_none() {
            stopping = Some(stop(pid, leader_start, Reason::MaxRuntime));
        }
        if deadline.is_some_and(|d| now >= d) && stopping.is_none() {
            stopping = Some(stop(pid, leader_start, Reason::Timeout));
        }
        if held.lost() {
            // Taken over: end it now, its result will be refused anyway.
            ident::kill_group(pid, leader_start, Signal::SIGKILL);
            if stopping.is_none() {
                stopping = Some(Stopping { reason: Reason::LeaseLost, term_at: now, killed: true });
            }
        }
        if stopping.is_none() && now.duration_since(last_request_look) >= REQUEST_LOOK {
            last_request_look = now;
            stopping = act_on_requests(q, held, pid, leader_start, &mut acted);
        }
        match ctx.signals.load(Ordering::Relaxed) {
            0 => {}
            1 => {
                let d = *drain_deadline.get_or_insert(now + ctx.grace);
                if now >= d && stopping.is_none() {
                    stopping = Some(stop(pid, leader_start, Reason::WorkerShutdown));
                }
            }
            _ => {
                ident::kill_group(pid, leader_start, Signal::SIGKILL);
                if stopping.as_ref().is_none_or(|s| s.reason != Reason::WorkerShutdown) && stopping.is_none() {
                    stopping = Some(Stopping { reason: Reason::WorkerShutdown, term_at: now, killed: true });
                }
            }
        }
        if let Some(s) = stopping.as_mut()
            && !s.killed && now.duration_since(s.term_at) >= ctx.grace
        {
            ident::kill_group(pid, leader_start, Signal::SIGKILL);
            s.killed = true;
        }
    };
    // The leader is gone: so is whatever it left in its group.
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    pump(&mut pout, &mut perr, None, &mut out_log, &mut err_log, &mut buf, &mut written, output_limit, Duration::ZERO);
    drop(child);
    let finished_ms = time::now_ms();

    let reason = match &stopping {
        Some(s) => s.reason,
        // The lease clock killed it (the loop waited elsewhere meanwhile).
        None if held.lost() => Reason::LeaseLost,
        // It wrote beyond its limit and ended before the loop stopped it:
        // the same outcome as if it had been stopped (its log is cut).
        None if written > output_limit => Reason::OutputLimit,
        None if reaped.exit_code == Some(0) => Reason::Ok,
        None if reaped.signal.is_some() => Reason::Signal,
        None => Reason::Exit,
    };
    let outcome = Outcome {
        exit_code: reaped.exit_code,
        signal: reaped.signal,
        started_at_ms: Some(started_ms),
        finished_at_ms: Some(finished_ms),
        cpu_user_ms: Some(reaped.user_ms),
        cpu_sys_ms: Some(reaped.sys_ms),
        max_rss_kb: Some(reaped.max_rss_kb),
    };
    let once_code = match reason {
        Reason::Ok => 0,
        Reason::Timeout | Reason::MaxRuntime => exit::TIMED_OUT,
        Reason::LeaseLost => exit::LEASE_LOST,
        Reason::OutputLimit => 1,
        _ => match (reaped.exit_code, reaped.signal) {
            (Some(c), _) => c.clamp(0, 255) as u8,
            (None, Some(s)) => (i32::from(exit::SIGNALED) + s).clamp(0, 255) as u8,
            _ => exit::RUN_FAILED,
        },
    };
    Ok(Ended { reason, outcome, once_code, workspace: Some(workspace), refused: None })
}

/// Settle an ended attempt, print its result line, and remove the
/// workspace of a job that is done. Returns the `--once` exit status.
pub fn commit(ctx: &Ctx, held: &Held, ended: Ended) -> u8 {
    let settled = commit_group(ctx, &[(held, &ended)]).pop().flatten();
    if settled.is_none() { exit::LEASE_LOST } else { ended.once_code }
}

/// Settle several ended attempts as one group commit
/// ([`q_queue::Queue::settle_group`]; one alone is settled alone), print
/// their result lines in the given order, and give back the workspaces of
/// jobs that are done. Each answer is `None` when the lease was lost or the
/// outcome could not be recorded.
pub fn commit_group(ctx: &Ctx, group: &[(&Held, &Ended)]) -> Vec<Option<ResultRecord>> {
    q_queue::failpoint!("run.before_settle");
    let settling: Vec<usize> = (0..group.len()).filter(|&i| group[i].1.reason != Reason::LeaseLost).collect();
    let opts: Vec<SettleOpts> = settling.iter().map(|&i| settle_opts(ctx, group[i].1)).collect();
    let asks: Vec<q_queue::ToSettle> = settling
        .iter()
        .zip(&opts)
        .map(|(&i, o)| {
            let (held, ended) = group[i];
            q_queue::ToSettle { claim: &held.claim, reason: ended.reason, outcome: &ended.outcome, opts: o }
        })
        .collect();
    let answers = settle_while_leased(ctx, &settling.iter().map(|&i| group[i].0).collect::<Vec<_>>(), &asks);
    let mut answers = answers.into_iter();
    group
        .iter()
        .map(|&(held, ended)| {
            let rec = if ended.reason == Reason::LeaseLost {
                lease_lost(ctx, held, &ended.outcome)
            } else {
                let r = answers.next().expect("one answer per settled attempt");
                answered(ctx, held, &ended.outcome, r)
            };
            finished(ctx, rec.as_ref(), ended);
            rec
        })
        .collect()
}

/// Settle `asks` (of `helds`, in the same order); a settle the queue could
/// not record (a server refusing writes, a full disk: not a lost lease,
/// not bad data) is tried again, with backoff, while its lease is still
/// this worker's, for at most one lease from the first refusal (the
/// heartbeat keeps extending the lease meanwhile: an error that never goes
/// away must not keep the job forever). Then it is given up: the lease
/// runs out and the reclaim decides, as before.
fn settle_while_leased(ctx: &Ctx, helds: &[&Held], asks: &[q_queue::ToSettle]) -> Vec<q_queue::Result<ResultRecord>> {
    let mut answers = ctx.q.settle_group(asks);
    let again = |r: &q_queue::Result<ResultRecord>| matches!(r, Err(e) if matches!(e.kind, q_queue::Kind::Io | q_queue::Kind::Busy));
    let mut pause = Duration::from_millis(100);
    let mut said = false;
    let since = Instant::now();
    loop {
        let retry: Vec<usize> =
            (0..asks.len()).filter(|&i| again(&answers[i]) && helds[i].alive() && since.elapsed() < Duration::from_millis(helds[i].lease_ms)).collect();
        if retry.is_empty() {
            return answers;
        }
        if !said {
            for &i in &retry {
                if let Err(e) = &answers[i] {
                    eprintln!("q-run: job {}: cannot record its result yet ({e}); trying again while its lease lasts", helds[i].id);
                }
            }
            said = true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
        let sub: Vec<q_queue::ToSettle> = retry.iter().map(|&i| q_queue::ToSettle { claim: asks[i].claim, reason: asks[i].reason, outcome: asks[i].outcome, opts: asks[i].opts }).collect();
        for (i, r) in retry.into_iter().zip(ctx.q.settle_group(&sub)) {
            // A try that failed past its commit point (the directory's
            // result was published): the next one finds its own result.
            answers[i] = match r {
                Err(e) if e.kind == q_queue::Kind::LeaseLost => match ctx.q.last_result(&helds[i].id) {
                    Some(rec) if rec.token.as_deref() == Some(helds[i].token.as_str()) && rec.attempt == helds[i].attempt() => Ok(rec),
                    _ => Err(e),
                },
                r => r,
            };
        }
    }
}

fn settle_opts(ctx: &Ctx, ended: &Ended) -> SettleOpts {
    SettleOpts { delay_ms: None, worker_id: Some(ctx.worker_id.clone()), rand: crate::cli::random_u64(), refused: ended.refused.clone() }
}

/// After the settle: a job that is done gives its workspace back.
fn finished(ctx: &Ctx, rec: Option<&ResultRecord>, ended: &Ended) {
    if let Some(w) = &ended.workspace
        && rec.is_some_and(|r| r.state == State::Done)
    {
        ctx.workspaces.done_with(w);
    }
}

/// Print the answer of a settle; `None` when the lease was lost (a
/// lease-lost line is printed instead) or the outcome could not be recorded.
fn answered(ctx: &Ctx, held: &Held, outcome: &Outcome, r: q_queue::Result<ResultRecord>) -> Option<ResultRecord> {
    match r {
        Ok(rec) => {
            super::report(&rec);
            Some(rec)
        }
        Err(e) if e.kind == q_queue::Kind::LeaseLost => lease_lost(ctx, held, outcome),
        Err(e) => {
            eprintln!("q-run: error: cannot record the result of job {}: {e}; its lease will expire and it will be retried", held.id);
            None
        }
    }
}

/// The attempt's lease was taken over: print a lease-lost line (its
/// outcome is refused) naming where the job is now.
fn lease_lost(ctx: &Ctx, held: &Held, outcome: &Outcome) -> Option<ResultRecord> {
    eprintln!("q-run: job {} attempt {}: lease-lost: the lease was taken over; this result is refused", held.id, held.attempt());
    let state = ctx.q.locate(&held.id).ok().flatten().map_or(State::Pending, |l| l.state);
    let rec = ResultRecord {
        kind: "result".into(),
        id: held.id.clone(),
        attempt: held.attempt(),
        token: Some(held.token.clone()),
        state,
        reason: Reason::LeaseLost,
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        started_at: outcome.started_at_ms.map(time::rfc3339),
        finished_at: outcome.finished_at_ms.map(time::rfc3339),
        duration_ms: outcome.started_at_ms.zip(outcome.finished_at_ms).map(|(s, f)| (f - s).max(0) as u64),
        cpu_user_ms: outcome.cpu_user_ms,
        cpu_sys_ms: outcome.cpu_sys_ms,
        max_rss_kb: outcome.max_rss_kb,
        failures: held.c.failures,
        next_run_at: None,
        name: held.job.name.clone(),
        host: Some(ident::host().host.clone()),
        worker_id: Some(ctx.worker_id.clone()),
        detail: None,
    };
    super::report(&rec);
    None
}

fn spawn_failed(held: &Held, started_ms: i64, why: &str, code: u8) -> Ended {
    let outcome = Outcome { exit_code: Some(i32::from(code)), started_at_ms: Some(started_ms), finished_at_ms: Some(time::now_ms()), ..Outcome::default() };
    eprintln!("q-run: job {}: cannot run its command: {why}", held.id);
    Ended { reason: Reason::SpawnFailed, outcome, once_code: code, workspace: None, refused: None }
}

/// SIGTERM the job's group (and SIGCONT, so that a stopped job hears it)
/// and note why.
fn stop(pid: i32, leader_start: u64, reason: Reason) -> Stopping {
    ident::kill_group(pid, leader_start, Signal::SIGTERM);
    ident::kill_group(pid, leader_start, Signal::SIGCONT);
    Stopping { reason, term_at: Instant::now(), killed: false }
}

/// How often a runner looks for requests to its job (`q-ctl cancel`,
/// `signal`, `stop`, `cont`, `restart`): well within the 1 s SPEC allows.
const REQUEST_LOOK: Duration = Duration::from_millis(200);

/// Act on the requests not acted on yet, in order: a signal is delivered
/// to the job's group; a cancel or a restart stops the job (and ends the
/// look: what comes after it does not matter any more).
fn act_on_requests(q: &crate::cli::Queue, held: &Held, pid: i32, leader_start: u64, acted: &mut Vec<String>) -> Option<Stopping> {
    for r in q.requests(&held.claim) {
        if acted.contains(&r.key) {
            continue;
        }
        acted.push(r.key);
        match r.ask {
            Ask::Signal { signal } => {
                if let Ok(sig) = Signal::try_from(signal) {
                    ident::kill_group(pid, leader_start, sig);
                }
            }
            Ask::Cancel => return Some(stop(pid, leader_start, Reason::Canceled)),
            Ask::Restart => return Some(stop(pid, leader_start, Reason::Restarted)),
        }
    }
    None
}

/// The job's command, run as `run_as` when it is another user's.
fn build_command(ctx: &Ctx, held: &Held, workspace: &std::path::Path, run_as: Option<&super::spawn::RunAs>, slots: &[(String, String)]) -> Result<Command> {
    let job = &held.job;
    if run_as.is_some() && job.env_from == q_queue::job::EnvFrom::Worker {
        anyhow::bail!("it asks for its worker's environment (env_from: worker), which a root worker does not hand to another user's job");
    }
    let (prog, args): (OsString, Vec<OsString>) = if !ctx.handler.is_empty() {
        (ctx.handler[0].clone(), ctx.handler[1..].to_vec())
    } else if let Some(argv) = &job.cmd {
        (argv[0].clone().into(), argv[1..].iter().map(OsString::from).collect())
    } else if let Some(sh) = &job.sh {
        ("/bin/sh".into(), vec!["-c".into(), sh.into()])
    } else {
        anyhow::bail!("job {} has no cmd or sh: it is data for a handler (run q-run -- HANDLER...)", job.id);
    };
    // The PATH the job runs with, when it is not ours.
    let mut job_path: Option<OsString> = None;
    let mut recorded = None;
    if job.env_from == q_queue::job::EnvFrom::Pusher
        && let Some(r) = &job.env_ref
    {
        let mut cache = ctx.envs.lock().unwrap_or_else(|e| e.into_inner());
        // Each record is checked against the job's owner: kept per owner.
        let key = (held.owner, r.clone());
        if !cache.contains_key(&key) {
            let env = ctx.q.load_env(r, held.owner)?;
            cache.insert(key.clone(), std::sync::Arc::new(env));
        }
        job_path = cache[&key].get("PATH").map(OsString::from);
        recorded = Some(std::sync::Arc::clone(&cache[&key]));
    }
    if let Some(p) = job.env.get("PATH") {
        job_path = Some(p.into());
    }
    let mut cmd = Command::new(match &job_path {
        Some(path) => ctx.programs.resolve(&prog, path, std::path::Path::new(&job.cwd)),
        None => prog.into(),
    });
    cmd.args(args);
    if job.env_from == q_queue::job::EnvFrom::Pusher {
        cmd.env_clear();
        if let Some(env) = &recorded {
            cmd.envs(env.iter());
        }
    }
    match run_as {
        // The directory is entered as the owner, after the switch.
        Some(r) => r.apply(&mut cmd, std::path::Path::new(&job.cwd)).map_err(anyhow::Error::msg)?,
        None => {
            cmd.current_dir(&job.cwd);
        }
    }
    cmd.envs(&job.env);
    cmd.env("Q_DIR", &ctx.for_jobs)
        .env("Q_QUEUE", &ctx.for_jobs)
        .env("Q_JOB_ID", &job.id)
        .env("Q_ATTEMPT", held.attempt().to_string())
        .env("Q_FENCE", format!("{}:{}", job.id, held.attempt()))
        .env("Q_WORKSPACE", workspace)
        .envs(slots.iter().map(|(k, v)| (k, v)));
    cmd.env_remove("Q_SUPERVISOR_PID").env_remove("Q_WORKER_ID").env_remove(crate::cli::PASSWORD_VAR);
    let has_input = !ctx.handler.is_empty() || job.payload.is_some();
    cmd.stdin(if has_input { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);
    Ok(cmd)
}

fn stdin_bytes(ctx: &Ctx, held: &Held) -> Vec<u8> {
    let mut v = if !ctx.handler.is_empty() {
        serde_json::to_vec(&serde_json::json!({
            "type": "claim",
            "id": held.id,
            "token": held.token,
            "fence": held.attempt(),
            "attempt": held.attempt(),
            "lease_ms": held.lease_ms,
            "job": held.job,
        }))
        .unwrap_or_default()
    } else {
        serde_json::to_vec(held.job.payload.as_ref().unwrap_or(&serde_json::Value::Null)).unwrap_or_default()
    };
    v.push(b'\n');
    v
}

fn write_run_record(ctx: &Ctx, held: &Held, pid: i32, leader_start: u64, started_ms: i64) {
    let h = ident::host();
    let (me, me_start) = ident::me();
    let rec = RunInfo {
        v: 1,
        host: h.host.clone(),
        boot_id: h.boot_id.clone(),
        pidns: h.pidns.clone(),
        pid: me,
        pid_start: me_start,
        pgid: pid,
        leader_start,
        started_at: time::rfc3339(started_ms),
        worker_id: Some(ctx.worker_id.clone()),
    };
    if let Err(e) = ctx.q.record_start(&held.claim, &rec) {
        eprintln!("q-run: warning: job {}: cannot record its process group: {e}", held.id);
    }
}

/// Move available output into the logs, waiting up to `wait` for some.
#[allow(clippy::too_many_arguments)]
fn pump(
    pout: &mut Option<std::process::ChildStdout>,
    perr: &mut Option<std::process::ChildStderr>,
    pidfd: Option<&std::os::fd::OwnedFd>,
    out_log: &mut Log,
    err_log: &mut Log,
    buf: &mut [u8],
    written: &mut u64,
    limit: u64,
    wait: Duration,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut first = true;
    // Bounded, so that a chatty job cannot keep the watch loop from its checks.
    for _ in 0..64 {
        let mut fds = Vec::new();
        if let Some(p) = pout.as_ref() {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if let Some(p) = perr.as_ref() {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        let pipes = fds.len();
        if let Some(p) = pidfd {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if fds.is_empty() {
            if first && !wait.is_zero() {
                std::thread::sleep(wait.min(Duration::from_millis(5)));
            }
            return;
        }
        if pipes == 0 && !first {
            return;
        }
        let t = if first { PollTimeout::try_from(wait.as_millis() as i32).unwrap_or(PollTimeout::ZERO) } else { PollTimeout::ZERO };
        first = false;
        match poll(&mut fds, t) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let exited = fds.get(pipes).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
        drop(fds);
        let mut progressed = false;
        if let Some(p) = pout.as_mut() {
            match read_into(p, out_log, buf, written, limit) {
                Some(0) => *pout = None,
                Some(_) => progressed = true,
                None => {}
            }
        }
        if let Some(p) = perr.as_mut() {
            match read_into(p, err_log, buf, written, limit) {
                Some(0) => *perr = None,
                Some(_) => progressed = true,
                None => {}
            }
        }
        if exited || (!progressed && (pout.is_some() || perr.is_some())) {
            return;
        }
    }
}

/// Read once: `Some(0)` at end of file, `Some(n)` bytes read, `None` would block.
fn read_into(r: &mut impl Read, log: &mut Log, buf: &mut [u8], written: &mut u64, limit: u64) -> Option<usize> {
    match r.read(buf) {
        Ok(0) => Some(0),
        Ok(n) => {
            let room = limit.saturating_sub(*written) as usize;
            let keep = n.min(room);
            if keep > 0 {
                log.write(&buf[..keep]);
            }
            *written = written.saturating_add(n as u64);
            Some(n)
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => None,
        Err(_) => Some(0),
    }
}

/// A log created on the first byte: a job without output leaves none.
pub struct Log<'a> {
    q: &'a crate::cli::Queue,
    held: &'a Held,
    stream: Stream,
    out: Option<Box<dyn Write + Send>>,
    failed: bool,
}

impl<'a> Log<'a> {
    fn new(q: &'a crate::cli::Queue, held: &'a Held, stream: Stream) -> Log<'a> {
        Log { q, held, stream, out: None, failed: false }
    }

    fn write(&mut self, b: &[u8]) {
        if self.out.is_none() && !self.failed {
            match self.q.log_writer(&self.held.claim, self.stream) {
                Ok(w) => self.out = Some(w),
                Err(e) => {
                    self.failed = true;
                    eprintln!("q-run: warning: job {}: cannot keep its output: {e}", self.held.id);
                }
            }
        }
        if let Some(w) = self.out.as_mut() {
            let _ = w.write_all(b);
        }
    }
}
