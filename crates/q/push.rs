//! `q-push`: add jobs, from the command line or as JSON lines on stdin.

use crate::cli::Common;
use crate::exit;
use crate::out;
use anyhow::{Context, Result};
use clap::Parser;
use q_queue::job::{self, MAX_RECORD, PushContext};
use crate::cli::Queue;
use q_queue::{Kind, Singleton, time};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::process::ExitCode;

/// Lines per group commit when reading a stream.
const BATCH: usize = 2000;

#[derive(Debug, Parser)]
#[command(
    name = "q-push",
    version,
    about = "Add jobs to a q queue: a command, or JSON lines on stdin",
    long_about = "Add jobs to a q queue. With a command after the options, push that one job (argv, run without a shell; or --sh STRING). Without a command, read one JSON job object per line from stdin; the options then give defaults that a line's fields replace. Prints one {\"type\":\"pushed\",...} line per job once it is durable.",
    after_help = "Examples:\n  q-push -- make -C site build\n  q-push --attempts 3 --backoff 5s:1m --max-runtime 10m -- ./flaky.sh | q-wait\n  jq -c '{cmd:[\"convert\",.src,.dst]}' files.json | q-push\n  q-push --start --sh 'sleep 1; echo done'"
)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Human label
    #[arg(long)]
    name: Option<String>,
    /// -9999..9999, higher runs first [default: 0]
    #[arg(long, allow_hyphen_values = true)]
    priority: Option<i64>,
    /// Run no earlier than this long from now (90s, 5m, 1h30m)
    #[arg(long, value_name = "DUR", conflicts_with = "at")]
    delay: Option<String>,
    /// Run no earlier than this time: HH:MM (its next occurrence), today HH:MM,
    /// tomorrow HH:MM, YYYY-MM-DD HH:MM (local time, $TZ), RFC 3339 with any
    /// offset, or Unix seconds
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Wall-clock limit of one attempt
    #[arg(long, value_name = "DUR")]
    timeout: Option<String>,
    /// Most wall time over all attempts together; beyond it the job ends dead (max-runtime)
    #[arg(long, value_name = "DUR")]
    max_runtime: Option<String>,
    /// Cap on one attempt's stdout plus stderr (K, M, G suffixes) [default: the worker's, 64M]
    #[arg(long, value_name = "SIZE")]
    output_limit: Option<String>,
    /// Most failures of the job itself before it ends dead [default: 1]
    #[arg(long, value_name = "N")]
    attempts: Option<u64>,
    /// Retry delay: base, doubling per failure, capped (5s or 5s:10m) [default: 1s:5m]
    #[arg(long, value_name = "BASE[:MAX]")]
    backoff: Option<String>,
    /// Dedupe key: while a job with this key is not finished, pushing returns that job
    #[arg(long)]
    key: Option<String>,
    /// Run only after job ID is done (repeatable); ID may be a unique suffix
    /// or prefix (6+ characters), an unfinished job's name, or `last`: the
    /// last job you pushed to this queue
    #[arg(long, value_name = "ID")]
    after: Vec<String>,
    /// Tag for filtering with q-ls (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Environment variable set for the job (repeatable)
    #[arg(long = "env", value_name = "K=V")]
    envs: Vec<String>,
    /// pusher: run in the pusher's recorded environment; worker: in the worker's
    #[arg(long, value_name = "FROM", value_parser = ["pusher", "worker"])]
    env_from: Option<String>,
    /// Working directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// JSON value written to the job's stdin as one line
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// Never start the job twice (forces --attempts 1)
    #[arg(long)]
    at_most_once: bool,
    /// Run STRING with /bin/sh -c instead of a command
    #[arg(long, value_name = "STRING")]
    sh: Option<String>,
    /// Let the group of a shared queue read the job's output (otherwise only you and root may)
    #[arg(long)]
    share_logs: bool,
    /// Slots the job takes while it runs, e.g. gpu=1 (repeatable, or gpu=1,mem=2): see q-supervise --slots
    #[arg(long, value_name = "NAME=N", value_delimiter = ',', value_parser = crate::cli::slot)]
    needs: Vec<(String, u32)>,
    /// A group a supervisor can limit (q-supervise --limit NAME=N)
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Stdin: validate every line first, push only if all are valid
    #[arg(long)]
    atomic: bool,
    /// After pushing, make sure a supervisor serves the queue (N workers; default: CPUs)
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0")]
    start: Option<usize>,
    /// Create the queue shared with GROUP (its members may push jobs, list the queue, and run their own jobs)
    #[arg(long, value_name = "GROUP")]
    shared_group: Option<String>,
    /// The command to run (after --)
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<std::ffi::OsString>,
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    exit::run("q-push", || run(args))
}

fn defaults(a: &Args, after: Vec<String>) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    if let Some(v) = &a.name {
        put("name", json!(v));
    }
    if let Some(v) = a.priority {
        put("priority", json!(v));
    }
    if let Some(v) = &a.delay {
        put("delay", json!(v));
    }
    if let Some(v) = &a.at {
        let at = time::parse_at(v, time::now_ms(), &jiff::tz::TimeZone::system())?;
        put("run_at", json!(time::rfc3339(at)));
    }
    if let Some(v) = &a.timeout {
        put("timeout", json!(v));
    }
    if let Some(v) = a.attempts {
        put("attempts", json!(v));
    }
    if let Some(v) = &a.max_runtime {
        put("max_runtime", json!(v));
    }
    if let Some(v) = &a.output_limit {
        put("output_limit", json!(v));
    }
    if let Some(v) = &a.backoff {
        put("backoff", json!(v));
    }
    if let Some(v) = &a.key {
        put("key", json!(v));
    }
    if !after.is_empty() {
        put("after", json!(after));
    }
    if !a.tags.is_empty() {
        put("tags", json!(a.tags));
    }
    if !a.envs.is_empty() {
        let mut env = Map::new();
        for kv in &a.envs {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                q_queue::Error::new(Kind::Data, format!("--env {kv:?}: use K=V"))
            })?;
            env.insert(k.to_owned(), json!(v));
        }
        put("env", Value::Object(env));
    }
    if let Some(v) = &a.env_from {
        put("env_from", json!(v));
    }
    if let Some(v) = &a.cwd {
        put("cwd", json!(v));
    }
    if let Some(p) = &a.payload {
        let v: Value = serde_json::from_str(p)
            .map_err(|e| q_queue::Error::new(Kind::Data, format!("--payload is not JSON: {e}")))?;
        put("payload", v);
    }
    if a.at_most_once {
        put("delivery", json!("at-most-once"));
    }
    if let Some(s) = &a.sh {
        put("sh", json!(s));
    }
    if a.share_logs {
        put("share_logs", json!(true));
    }
    if !a.needs.is_empty() {
        put("needs", json!(a.needs.iter().cloned().collect::<BTreeMap<_, _>>()));
    }
    if let Some(g) = &a.group {
        put("group", json!(g));
    }
    Ok(m)
}

/// The pusher's working directory and environment (recorded for
/// `env_from: pusher`, without a database password), and the time.
pub(crate) fn context(common: &Common) -> Result<PushContext> {
    // A database queue's password is never recorded with a job.
    let db = matches!(common.location(), q_queue::Location::Postgres(_));
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let cwd = cwd.to_str().map(str::to_owned).ok_or_else(|| {
        q_queue::Error::new(Kind::Data, "the current directory is not valid UTF-8: pass --cwd")
    })?;
    // `_` is the shell's last command or argument: it differs from one
    // invocation to the next and would make every push record a new
    // environment.
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k != "_" && k != crate::cli::PASSWORD_VAR && !(db && k == "PGPASSWORD"))
        // A database URL in Q_DIR is recorded without its password.
        .map(|(k, v)| {
            if k == "Q_DIR" && db {
                let arg = q_queue::Location::parse(std::ffi::OsStr::new(&v)).to_arg();
                (k, arg.to_string_lossy().into_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    Ok(PushContext { cwd, env: std::sync::Arc::new(env), now_ms: time::now_ms() })
}

fn group_id(name: &str) -> Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(q_queue::Error::new(Kind::Data, format!("--shared-group: no such group {name:?}")).into()),
    }
}

/// The ids `--after` names: each typed token resolved, `last` the newest
/// job this user pushed to the queue (it still holds).
fn after_ids(a: &Args) -> Result<Vec<String>> {
    if a.after.is_empty() {
        return Ok(Vec::new());
    }
    let q = a.common.open()?;
    let mut ids = Vec::new();
    for t in &a.after {
        if t != "last" {
            ids.push(crate::ids::resolve_one(q.as_ref(), t)?);
            continue;
        }
        match q.as_ref().map(|q| q.last_pushed()).transpose()?.flatten() {
            Some(id) => ids.push(id),
            None => {
                return Err(q_queue::Error::new(
                    Kind::NoJob,
                    format!("--after last: queue {} holds no job you pushed", a.common.location().display()),
                )
                .into());
            }
        }
    }
    Ok(ids)
}

fn run(a: Args) -> Result<u8> {
    let defaults = defaults(&a, after_ids(&a)?)?;
    let group = a.shared_group.as_deref().map(group_id).transpose()?;
    let mut status = exit::OK;
    let q;
    if !a.command.is_empty() || a.sh.is_some() {
        // argv form: one job.
        let mut line = Map::new();
        if !a.command.is_empty() {
            if a.sh.is_some() {
                return Err(q_queue::Error::new(Kind::Data, "give a command or --sh, not both").into());
            }
            let mut argv = Vec::new();
            for (i, s) in a.command.iter().enumerate() {
                argv.push(s.to_str().map(str::to_owned).ok_or_else(|| {
                    q_queue::Error::new(Kind::Data, format!("argument {} is not valid UTF-8: q stores commands as UTF-8 JSON", i + 1))
                })?);
            }
            line.insert("cmd".into(), json!(argv));
        }
        let ctx = context(&a.common)?;
        let nj = job::validate(&job::merge(&defaults, line), &ctx)?;
        q = a.common.create(group)?;
        let res = q.push(vec![nj]).pop().expect("one result per job");
        let p = res?;
        report(&a, &p, None)?;
    } else {
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err(q_queue::Error::new(
                Kind::Data,
                "no command given and stdin is a terminal: use `q-push -- CMD ARGS`, or pipe JSON lines in (see q-push --help)",
            )
            .into());
        }
        q = a.common.create(group)?;
        status = push_stream(&a, &q, &defaults)?;
    }
    if let Some(n) = a.start {
        ensure_supervisor(&a.common, &q, n)?;
    }
    Ok(status)
}

fn pushed_json(p: &q_queue::Pushed, line: Option<usize>) -> Value {
    let mut v = json!({
        "type": "pushed",
        "id": p.id,
        "state": p.state.as_str(),
        "run_at": time::rfc3339(p.run_at_ms),
        "deduped": p.deduped,
    });
    if let Some(n) = line {
        v["line"] = json!(n);
    }
    v
}

fn report(a: &Args, p: &q_queue::Pushed, line: Option<usize>) -> Result<()> {
    let v = pushed_json(p, line);
    if a.common.quiet {
        return Ok(());
    }
    if !out::line(&v)? && !a.common.quiet {
        // Stdout closed: the job is queued all the same; say so once.
        eprintln!("q-push: note: stdout is closed; job {} was queued", p.id);
    }
    Ok(())
}

/// Read one line of at most `MAX_RECORD` bytes. `Ok(None)` at end of input;
/// an over-long line is consumed and reported as `Err(len)`.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<Result<(), u64>>> {
    buf.clear();
    let n = r.by_ref().take(MAX_RECORD + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') || (buf.len() as u64) <= MAX_RECORD {
        return Ok(Some(Ok(())));
    }
    // Too long: skip to the end of the line without keeping it.
    let mut skipped = buf.len() as u64;
    buf.clear();
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            break;
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            r.consume(i + 1);
            skipped += i as u64;
            break;
        }
        let l = avail.len();
        skipped += l as u64;
        r.consume(l);
    }
    Ok(Some(Err(skipped)))
}

/// A batch's files are written while open all at once (one per job, see
/// docs/FORMAT.md, Push): raise a low soft open-file limit (1,024 is common)
/// toward the hard one, so that a batch of `BATCH` is one wave.
fn room_for_a_batch() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = (BATCH as u64) * 2;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < want
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
    }
}

/// Is more input ready right now (without blocking)?
fn input_ready(fd: &std::io::Stdin) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

fn push_stream(a: &Args, q: &Queue, defaults: &Map<String, Value>) -> Result<u8> {
    let ctx = context(&a.common)?;
    room_for_a_batch();
    let stdin = std::io::stdin();
    let mut r = BufReader::with_capacity(1 << 16, stdin.lock());
    let mut buf = Vec::new();
    let mut batch: Vec<(usize, q_queue::NewJob)> = Vec::new();
    let mut status = exit::OK;
    let mut lineno = 0usize;
    let mut bad = 0usize;
    loop {
        // Commit when the batch is full, or when the input pauses.
        if !batch.is_empty() && !a.atomic && (batch.len() >= BATCH || (r.buffer().is_empty() && !input_ready(&stdin))) {
            status = status.max(commit(a, q, std::mem::take(&mut batch))?);
        }
        let Some(got) = read_line(&mut r, &mut buf)? else { break };
        lineno += 1;
        let parsed = match got {
            Err(len) => Err(format!("line is {len} bytes, over the {} byte limit", MAX_RECORD)),
            Ok(()) => parse_line(&buf, defaults, &ctx),
        };
        match parsed {
            Ok(None) => {}
            Ok(Some(nj)) => batch.push((lineno, nj)),
            Err(msg) => {
                bad += 1;
                eprintln!("q-push: line {lineno}: {msg}");
                status = exit::DATA;
            }
        }
    }
    if a.atomic && bad > 0 {
        eprintln!("q-push: --atomic: {bad} invalid line(s); nothing was pushed");
        return Ok(exit::DATA);
    }
    if lineno == 0 {
        // A failure says why, even with -q.
        eprintln!("q-push: no input: nothing pushed (give a command after --, or JSON lines on stdin)");
        return Ok(exit::NOTHING);
    }
    status = status.max(commit(a, q, batch)?);
    Ok(status)
}

fn parse_line(buf: &[u8], defaults: &Map<String, Value>, ctx: &PushContext) -> Result<Option<q_queue::NewJob>, String> {
    let text = std::str::from_utf8(buf).map_err(|e| format!("not valid UTF-8 ({e})"))?;
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(t).map_err(|e| format!("not a JSON object: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("not a JSON object: each line must be one job object like {\"cmd\":[\"true\"]}".into());
    };
    let mut ctx = ctx.clone();
    ctx.now_ms = time::now_ms();
    job::validate(&job::merge(defaults, obj), &ctx).map(Some).map_err(|e| e.to_string())
}

fn commit(a: &Args, q: &Queue, batch: Vec<(usize, q_queue::NewJob)>) -> Result<u8> {
    if batch.is_empty() {
        return Ok(exit::OK);
    }
    let lines: Vec<usize> = batch.iter().map(|(n, _)| *n).collect();
    let results = q.push(batch.into_iter().map(|(_, j)| j).collect());
    let mut status = exit::OK;
    let mut records = Vec::with_capacity(results.len());
    for (n, r) in lines.into_iter().zip(results) {
        match r {
            Ok(p) => records.push(pushed_json(&p, Some(n))),
            Err(e) => {
                eprintln!("q-push: line {n}: {e}");
                status = status.max(e.kind.exit_code());
            }
        }
    }
    // One write for the whole committed batch: every line whole, none early.
    if !a.common.quiet && !out::lines(&records)? {
        eprintln!("q-push: note: stdout is closed; the jobs were queued");
    }
    Ok(status)
}

/// `--start[=N]`: if no supervisor holds the queue's lock, start a detached
/// `q-supervise -j N --exit-on-idle` next to this binary.
pub fn ensure_supervisor(common: &Common, q: &Queue, n: usize) -> Result<()> {
    if q.is_locked(Singleton::Supervisor) {
        return Ok(());
    }
    let exe = std::env::current_exe()?.with_file_name("q-supervise");
    let n = if n == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { n };
    let mut cmd = std::process::Command::new(&exe);
    crate::cli::hand_on(&mut cmd, &common.location());
    cmd.arg("-j").arg(n.to_string()).arg("--exit-on-idle").arg("--skip-if-running").arg("--queue").arg(q.location().to_arg());
    cmd.arg("--durability").arg(&common.durability);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    cmd.spawn().with_context(|| format!("cannot start {}", exe.display()))?;
    Ok(())
}
