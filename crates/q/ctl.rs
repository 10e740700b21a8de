//! `q-ctl`: change state by hand. Pause or resume the whole queue; cancel,
//! retry, hold, release or remove jobs (ids from arguments or stdin); settle
//! or extend a claim yourself (`ack`, `nack`, `touch` with its token).
//!
//! Invariants: every change goes through the library's fenced or no-replace
//! moves, so q-ctl racing a worker can never produce two outcomes; a stale
//! token changes nothing (exit 76). Each id is acted on independently: one
//! unknown id (66) or refused move is reported and the others still run; the
//! exit status is that of the first failure.

use crate::cli::{self, Common};
use crate::exit;
use crate::ids;
use crate::out;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use crate::cli::Queue;
use nix::sys::signal::Signal;
use q_queue::{Ask, Kind, Outcome, Reason, SettleOpts, State, time};
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

mod moving;
mod reach;

const TOOL: &str = "q-ctl";

#[derive(Debug, Parser)]
#[command(
    name = "q-ctl",
    version,
    about = "Change state: pause/resume the queue, cancel, retry, hold, release or remove jobs, change queued ones, signal, stop, resume or restart running ones, settle a claim by hand, move jobs to another queue",
    long_about = "Change the state of a q queue or of its jobs. Job ids come from the arguments, or from stdin when none are given (bare ids or JSON lines with an \"id\" field, so `q-ls ... | q-ctl retry` works). Prints one {\"type\":\"ctl\",...} JSON line per job acted on (`was`: the state it was found in, `state`: the state now); ack and nack print the job's `result` line. An unknown id is reported (exit 66) and the other ids are still handled. An ID on the command line may also be a unique suffix or prefix of at least 6 characters, or the name of a unique unfinished job (ambiguous: exit 66, listing the candidates); an id in JSON is exact only.",
    after_help = "Examples:\n  q-ls --state dead | q-ctl retry       # give every dead job a fresh failure budget\n  q-ctl workers 8                      # the live supervisor keeps 8 workers until it exits\n  q-ctl export | Q_DIR=postgres://db/jobs q-ctl import   # move the queued jobs to another queue"
)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Stop new claims (running jobs go on) until `resume`, or for DUR
    Pause {
        /// Resume by itself after this long (90s, 10m, 1h)
        #[arg(long = "for", value_name = "DUR", value_parser = cli::duration)]
        for_ms: Option<u64>,
    },
    /// Allow claims again and wake waiting workers
    Resume,
    /// Cancel jobs: a queued one ends canceled at once; a running one is
    /// stopped by its runner (process group terminated) within a heartbeat
    Cancel {
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Put finished (done, dead, canceled) jobs back to pending with a fresh
    /// failure budget; attempt numbers go on
    Retry {
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Hold pending or waiting jobs: never claimed until released
    Hold {
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Release held jobs (to pending, or waiting while dependencies are unfinished)
    Release {
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Delete finished jobs with their results and logs
    Rm {
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Settle a claim as succeeded (the job ends done)
    Ack(Settle),
    /// Settle a claim as failed: retried after backoff (or --delay) while the
    /// job has attempts left, else it ends dead
    Nack {
        #[command(flatten)]
        s: Settle,
        /// The exit code to record
        #[arg(long, value_name = "N", default_value_t = 1, allow_hyphen_values = true)]
        exit_code: i32,
        /// Retry after this long instead of the job's backoff
        #[arg(long, value_name = "DUR", value_parser = cli::duration)]
        delay: Option<u64>,
    },
    /// Extend a claim's lease (a heartbeat)
    Touch(Settle),
    /// Print every pending, waiting and held job as an import record (id,
    /// fields, run time, priority, counters, recorded environment)
    Export,
    /// Take import records (q-ctl export's output) from stdin into this
    /// queue with their ids, a batch at a time, each whole or not at all;
    /// refused when the queue has one of the ids already
    Import {
        /// Jobs per batch (0: all of the input is one batch)
        #[arg(long, value_name = "N", default_value_t = 0)]
        batch: usize,
    },
    /// Change a pending, waiting or held job (validated as a push); a job
    /// claimed meanwhile is not changed (exit 75)
    Set(SetArgs),
    /// Open a pending, waiting or held job's JSON in $VISUAL or $EDITOR and
    /// apply the edit, validated as a push (a bad edit changes nothing)
    Edit {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Deliver a signal to running jobs' process groups, wherever they run:
    /// `signal ID SIG`, or `signal -s SIG` with ids as arguments or on stdin
    Signal {
        /// The signal (USR1, SIGUSR1, 10); without it, the last argument
        #[arg(short = 's', long = "signal", value_name = "SIG")]
        signal: Option<String>,
        /// ID... SIG, or ID... with -s
        #[arg(value_name = "ID")]
        args: Vec<String>,
    },
    /// Pause running jobs (SIGSTOP to the process group); their lease is
    /// kept alive and their timeout, wall-clock, keeps running
    Stop {
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Resume stopped jobs (SIGCONT to the process group)
    Cont {
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// End running jobs' attempts and queue them again at once, counting no
    /// failure (reason `restarted`)
    Restart {
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Change how many workers the live supervisor keeps, until it exits:
    /// more start at once; when fewer, the workers beyond N take no more
    /// jobs and exit once their running job ends (none is stopped)
    Workers {
        #[arg(value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65535))]
        n: u32,
        #[command(flatten)]
        to: Reach,
    },
    /// Change the live supervisor's slots, until it exits (gpu=2; gpu=0:
    /// none): each worker takes them once its running job ends
    Slots {
        #[arg(value_name = "NAME=N", required = true, value_delimiter = ',', value_parser = cli::slot_or_none)]
        slots: Vec<(String, u32)>,
        #[command(flatten)]
        to: Reach,
    },
    /// Change the live supervisor's group limits, until it exits (io=1;
    /// io=0: no limit), as `slots`
    Limit {
        #[arg(value_name = "NAME=N", required = true, value_delimiter = ',', value_parser = cli::slot_or_none)]
        limits: Vec<(String, u32)>,
        #[command(flatten)]
        to: Reach,
    },
    /// Change the live supervisor's rates, until it exits (mail=5/s: the
    /// jobs of group mail; 2/s: all jobs; mail=0 or 0: no rate), as `slots`
    Rate {
        #[arg(value_name = "[NAME=]N/s", required = true, value_delimiter = ',', value_parser = cli::rate_or_none)]
        rates: Vec<(Option<String>, String)>,
        #[command(flatten)]
        to: Reach,
    },
}

/// Which live supervisor to change.
#[derive(Debug, clap::Args)]
struct Reach {
    /// The host whose supervisor to change, when several serve the queue
    /// (a PostgreSQL queue, one supervisor per host)
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
}

/// What `set` changes: the job-line fields of the same names.
#[derive(Debug, clap::Args)]
struct SetArgs {
    #[arg(value_name = "ID")]
    id: String,
    /// -9999..9999, higher runs first
    #[arg(long, allow_hyphen_values = true)]
    priority: Option<i64>,
    /// Run no earlier than this time (as q-push --at: RFC 3339, Unix seconds, HH:MM, today/tomorrow HH:MM, YYYY-MM-DD HH:MM in $TZ)
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Run no earlier than this long from now (90s, 5m, 1h30m)
    #[arg(long, value_name = "DUR", conflicts_with = "at")]
    delay: Option<String>,
    /// The job's name
    #[arg(long, value_name = "N")]
    name: Option<String>,
    /// Wall-clock limit of one attempt
    #[arg(long, value_name = "DUR")]
    timeout: Option<String>,
    /// Most failures of the job itself before it ends dead
    #[arg(long, value_name = "N")]
    attempts: Option<u64>,
    /// Retry delay: base, doubling per failure, capped (5s or 5s:10m)
    #[arg(long, value_name = "BASE[:MAX]")]
    backoff: Option<String>,
    /// Run only after job ID is done (repeatable): the new list of dependencies
    #[arg(long, value_name = "ID")]
    after: Vec<String>,
    /// The dedupe key: refused (75) while another unfinished job holds it;
    /// the old key is free at once
    #[arg(long, value_name = "KEY", conflicts_with = "no_key")]
    key: Option<String>,
    /// Take the job's dedupe key away (a later push with it is not deduped against this job)
    #[arg(long)]
    no_key: bool,
    /// pusher: run in your environment, recorded now as q-push records it; worker: in the worker's
    #[arg(long, value_name = "FROM", value_parser = ["pusher", "worker"])]
    env_from: Option<String>,
}

impl SetArgs {
    /// Does it name no change at all? (Said before the queue is opened.)
    fn is_empty(&self) -> bool {
        let SetArgs { id: _, priority, at, delay, name, timeout, attempts, backoff, after, key, no_key, env_from } = self;
        priority.is_none()
            && at.is_none()
            && delay.is_none()
            && name.is_none()
            && timeout.is_none()
            && attempts.is_none()
            && backoff.is_none()
            && after.is_empty()
            && key.is_none()
            && !no_key
            && env_from.is_none()
    }

    /// The changes as job-line fields: `--at` in any form q-push takes
    /// (local civil times in `$TZ` included), `--after` ids as people type
    /// them (resolved in `q`).
    fn changes(&self, q: &crate::cli::Queue) -> Result<serde_json::Map<String, Value>> {
        let at = match &self.at {
            Some(v) => Some(time::rfc3339(time::parse_at(v, time::now_ms(), &jiff::tz::TimeZone::system())?)),
            None => None,
        };
        let after = self.after.iter().map(|t| ids::resolve_one(Some(q), t)).collect::<Result<Vec<String>>>()?;
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put("priority", self.priority.map(Value::from));
        put("run_at", at.map(Value::from));
        put("delay", self.delay.clone().map(Value::from));
        put("name", self.name.clone().map(Value::from));
        put("timeout", self.timeout.clone().map(Value::from));
        put("attempts", self.attempts.map(Value::from));
        put("backoff", self.backoff.clone().map(Value::from));
        put("after", (!after.is_empty()).then(|| Value::from(after)));
        put("key", self.key.clone().map(Value::from).or_else(|| self.no_key.then_some(Value::Null)));
        put("env_from", self.env_from.clone().map(Value::from));
        Ok(m)
    }
}

/// A claim to settle: ID and --token, or claim lines (`q-claim` output) on
/// stdin.
#[derive(Debug, clap::Args)]
struct Settle {
    /// The job id (omit both ID and --token to read claim lines from stdin)
    #[arg(value_name = "ID", requires = "token")]
    id: Option<String>,
    /// The token of the claim line
    #[arg(long, value_name = "T", requires = "id")]
    token: Option<String>,
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    exit::run(TOOL, || run(args))
}

/// The first failure's status sticks; later ones are reported only.
#[derive(Default)]
struct Status(u8);

impl Status {
    fn fail(&mut self, e: &anyhow::Error) {
        eprintln!("{TOOL}: error: {e:#}");
        if self.0 == exit::OK {
            self.0 = exit::code_of(e);
        }
    }
}

fn run(a: Args) -> Result<u8> {
    let quiet = a.common.quiet;
    match a.cmd {
        Cmd::Pause { for_ms } => {
            // A queue may be paused before its first push: made as that push would.
            let q = a.common.create(None)?;
            let until = for_ms.map(|d| time::now_ms().saturating_add(d as i64));
            q.pause(until)?;
            let until = until.map(time::rfc3339);
            if !quiet && out::stderr_is_tty() {
                match &until {
                    Some(u) => eprintln!("{TOOL}: paused until {u} (q-ctl resume to resume earlier)"),
                    None => eprintln!("{TOOL}: paused; running jobs go on (q-ctl resume to resume)"),
                }
            }
            out::line(&json!({"type": "ctl", "action": "pause", "paused": true, "paused_until": until}))?;
            Ok(exit::OK)
        }
        Cmd::Resume => {
            let q = a.common.open_existing()?;
            let was = q.resume()?;
            q.wake();
            out::line(&json!({"type": "ctl", "action": "resume", "paused": false, "was_paused": was}))?;
            Ok(exit::OK)
        }
        Cmd::Cancel { ids } => per_id(&a.common, &ids, "cancel", |q, id| cancel(q, id, quiet)),
        Cmd::Retry { ids } => per_id(&a.common, &ids, "retry", |q, id| {
            let was = q.locate(id)?.map(|l| l.state.as_str());
            q.retry(id)?;
            Ok(json!({"was": was}))
        }),
        Cmd::Hold { ids } => per_id(&a.common, &ids, "hold", hold),
        Cmd::Release { ids } => per_id(&a.common, &ids, "release", |q, id| {
            let was = q.release(id)?;
            if was != State::Held {
                note(quiet, &format!("job {id} is {} (not held): nothing to release", was.as_str()));
            }
            Ok(json!({"was": was.as_str()}))
        }),
        Cmd::Rm { ids } => per_id(&a.common, &ids, "rm", |q, id| {
            let was = q.remove(id)?;
            Ok(json!({"was": was.as_str(), "state": Value::Null}))
        }),
        Cmd::Ack(s) => settle_each(&a.common, &s, |q, id, token| {
            settle(q, id, token, Reason::Ok, None, None)
        }),
        Cmd::Nack { s, exit_code, delay } => settle_each(&a.common, &s, |q, id, token| {
            settle(q, id, token, Reason::Exit, Some(exit_code), delay)
        }),
        Cmd::Set(s) => {
            if s.is_empty() {
                bail!(crate::exit::Usage("nothing to change: give --priority, --at, --delay, --name, --timeout, --attempts, --backoff, --after, --key, --no-key or --env-from".into()));
            }
            let changes = s.changes(&a.common.open_existing()?)?;
            revise_one(&a.common, &s.id, "set", |line| Ok(Some(q_queue::job::merge(line, changes))))
        }
        Cmd::Edit { id } => revise_one(&a.common, &id, "edit", |line| edit_in_editor(&id, line)),
        Cmd::Signal { signal, args } => {
            let (sig, ids) = signal_args(signal, args)?;
            per_id(&a.common, &ids, "signal", |q, id| ask_running(q, id, Ask::Signal { signal: sig as i32 }))
        }
        Cmd::Stop { ids } => per_id(&a.common, &ids, "stop", |q, id| ask_running(q, id, Ask::Signal { signal: Signal::SIGSTOP as i32 })),
        Cmd::Cont { ids } => per_id(&a.common, &ids, "cont", |q, id| ask_running(q, id, Ask::Signal { signal: Signal::SIGCONT as i32 })),
        Cmd::Restart { ids } => per_id(&a.common, &ids, "restart", |q, id| ask_running(q, id, Ask::Restart)),
        Cmd::Touch(s) => settle_each(&a.common, &s, |q, id, token| {
            let until = q.touch(id, token)?;
            Ok(json!({"type": "ctl", "action": "touch", "id": id, "token": token, "lease_expires_at": time::rfc3339(until)}))
        }),
        Cmd::Workers { n, to } => reach::change(&a.common, "workers", to.host.as_deref(), q_queue::supervisor::SupAsk { workers: Some(n), ..Default::default() }),
        Cmd::Slots { slots, to } => reach::change(&a.common, "slots", to.host.as_deref(), q_queue::supervisor::SupAsk { slots: reach::pairs(&slots), ..Default::default() }),
        Cmd::Limit { limits, to } => reach::change(&a.common, "limit", to.host.as_deref(), q_queue::supervisor::SupAsk { limits: reach::pairs(&limits), ..Default::default() }),
        Cmd::Rate { rates, to } => {
            let (rate, rates) = cli::rates(&rates).map_err(exit::Usage)?;
            reach::change(&a.common, "rate", to.host.as_deref(), q_queue::supervisor::SupAsk { rate, rates, ..Default::default() })
        }
        Cmd::Export => moving::export(&a.common),
        Cmd::Import { batch } => moving::import(&a.common, batch),
    }
}

fn note(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("{TOOL}: {msg}");
    }
}

/// Act on each id; the action returns extra fields for the `ctl` line
/// (`was`, and `state` when it knows it better than a fresh look-up).
fn per_id(common: &Common, args: &[String], action: &str, act: impl Fn(&Queue, &str) -> Result<Value>) -> Result<u8> {
    let tokens = ids::collect(args, TOOL)?;
    if tokens.is_empty() {
        // An example of the kind of job the action is for.
        let example = match action {
            "signal" => "q-ls --state running --json | q-ctl signal -s USR1".to_owned(),
            "stop" | "cont" | "restart" => format!("q-ls --state running --json | q-ctl {action}"),
            "release" => "q-ls --state held | q-ctl release".to_owned(),
            "cancel" | "hold" => format!("q-ls --state pending | q-ctl {action}"),
            _ => format!("q-ls --state dead | q-ctl {action}"),
        };
        bail!(q_queue::Error::new(Kind::NoJob, format!("no job ids given: pass IDs as arguments or pipe them in (e.g. {example})")));
    }
    // Malformed ids are refused (65) before a missing queue is (66).
    let q = common.open()?;
    let ids = ids::resolve(q.as_ref(), tokens)?;
    let q = common.existing(q)?;
    let mut st = Status::default();
    for id in &ids {
        let mut rec = match act(&q, id) {
            Ok(v) => v,
            Err(e) => {
                st.fail(&e);
                continue;
            }
        };
        if rec.get("state").is_none() {
            let now = q.locate(id).ok().flatten().map(|l| l.state.as_str());
            rec["state"] = json!(now);
        }
        let mut line = json!({"type": "ctl", "action": action, "id": id});
        if let (Some(line), Some(extra)) = (line.as_object_mut(), rec.as_object()) {
            line.extend(extra.clone());
        }
        if !out::line(&line)? {
            break;
        }
    }
    Ok(st.0)
}

fn cancel(q: &Queue, id: &str, quiet: bool) -> Result<Value> {
    let was = q.cancel(id)?;
    Ok(match was {
        State::Running => json!({"was": "running", "cancel_requested": true}),
        s if s.is_terminal() => {
            note(quiet, &format!("job {id} is {} already: nothing to cancel", s.as_str()));
            json!({"was": s.as_str(), "state": s.as_str()})
        }
        s => json!({"was": s.as_str(), "state": "canceled"}),
    })
}

/// Change one queued job: its job line, as `change` makes it from the
/// current one (`None`: left as it is), validated as a push, written only
/// if the job was not claimed meanwhile (else 75, nothing changed).
fn revise_one(common: &Common, id: &str, action: &str, change: impl FnOnce(&serde_json::Map<String, Value>) -> Result<Option<serde_json::Map<String, Value>>>) -> Result<u8> {
    let q = common.open_existing()?;
    let id = ids::resolve_one(Some(&q), id)?;
    let found = q.locate(&id)?.ok_or_else(|| q_queue::Error::no_job(&id))?;
    if !matches!(found.state, State::Pending | State::Waiting | State::Held) {
        bail!(q_queue::Error::new(Kind::Busy, format!("job {id} is {}: only pending, waiting or held jobs can be changed", found.state.as_str())));
    }
    let (found, job) = q.job(&found)?.ok_or_else(|| q_queue::Error::no_job(&id))?;
    let mut line = job.to_line();
    // A queued job is due when its place in the queue says (a retry moves it).
    if let Some(ms) = found.run_at_ms {
        line.insert("run_at".into(), Value::from(time::rfc3339(ms)));
    }
    let Some(new_line) = change(&line)? else {
        note(common.quiet, &format!("job {id}: no change"));
        out::line(&json!({"type": "ctl", "action": action, "id": id, "was": found.state.as_str(), "state": found.state.as_str(), "changed": []}))?;
        return Ok(exit::OK);
    };
    // Switched to env_from "pusher", the job takes this environment, as a
    // push would record it.
    let env = crate::push::context(common)?.env;
    let new = job.revised(&new_line, time::now_ms(), &env)?;
    let old = serde_json::to_value(&job)?;
    let now = serde_json::to_value(&new.job)?;
    let mut changed: Vec<&str> = old.as_object().into_iter().chain(now.as_object()).flat_map(|o| o.keys().map(String::as_str)).filter(|k| old.get(k) != now.get(k) && *k != "env_ref").collect();
    changed.sort_unstable();
    changed.dedup();
    if found.run_at_ms != Some(new.run_at_ms) && !changed.contains(&"run_at") {
        changed.push("run_at");
    }
    let seen = found.c.map_or(0, |c| c.attempt);
    let was = q.revise(&id, seen, &new)?;
    out::line(&json!({"type": "ctl", "action": action, "id": id, "was": was.as_str(), "state": was.as_str(), "changed": changed}))?;
    Ok(exit::OK)
}

/// The job line after a person edited it in `$VISUAL`/`$EDITOR` (`vi`
/// without either); `None` when it was left as it was. A file that is not
/// a JSON object is refused (65) and kept for another try.
fn edit_in_editor(id: &str, line: &serde_json::Map<String, Value>) -> Result<Option<serde_json::Map<String, Value>>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let before = serde_json::to_string_pretty(line)? + "\n";
    let path = std::env::temp_dir().join(format!("q-edit.{id}.{}.json", std::process::id()));
    {
        // The job's environment may hold secrets: readable by its owner only.
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).with_context(|| format!("create {}", path.display()))?;
        f.write_all(before.as_bytes()).with_context(|| format!("write {}", path.display()))?;
    }
    let editor = std::env::var("VISUAL").ok().filter(|e| !e.is_empty()).or_else(|| std::env::var("EDITOR").ok().filter(|e| !e.is_empty())).unwrap_or_else(|| "vi".into());
    let st = std::process::Command::new("/bin/sh").arg("-c").arg(format!("{editor} \"$1\"")).arg("sh").arg(&path).status();
    let result = (|| {
        let st = st.with_context(|| format!("run the editor {editor:?}"))?;
        if !st.success() {
            bail!(q_queue::Error::new(Kind::Data, format!("the editor {editor:?} failed ({st}): nothing changed")));
        }
        let after = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        if after == before {
            return Ok(None);
        }
        match serde_json::from_str::<Value>(&after) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => bail!(q_queue::Error::new(Kind::Data, "the edited job is not a JSON object: nothing changed")),
            Err(e) => bail!(q_queue::Error::new(Kind::Data, format!("the edited job is not JSON ({e}): nothing changed"))),
        }
    })();
    match &result {
        Err(e) if exit::code_of(e) == q_queue::status::DATA => eprintln!("{TOOL}: your edit is kept in {}", path.display()),
        _ => {
            let _ = std::fs::remove_file(&path);
        }
    }
    result
}

/// Ask a running job's runner (a signal, a restart); a job that is not
/// running is refused (75): there is nothing to reach.
fn ask_running(q: &Queue, id: &str, ask: Ask) -> Result<Value> {
    let was = q.request(id, ask)?;
    if was != State::Running {
        bail!(q_queue::Error::new(Kind::Busy, format!("job {id} is {}: only a running job can be reached", was.as_str())));
    }
    let mut rec = json!({"was": "running", "requested": true});
    if let Ask::Signal { signal } = ask {
        rec["signal"] = json!(Signal::try_from(signal).map_or_else(|_| signal.to_string(), |s| s.as_str().to_owned()));
    }
    Ok(rec)
}

/// The signal and the ids of `signal`: `-s SIG ID...`, or `ID... SIG`.
fn signal_args(flag: Option<String>, mut args: Vec<String>) -> Result<(Signal, Vec<String>)> {
    let sig = match flag {
        Some(s) => s,
        None => match args.pop() {
            Some(s) if !args.is_empty() => s,
            _ => bail!(crate::exit::Usage("give ID SIG (e.g. q-ctl signal 01J... USR1), or -s SIG with ids as arguments or on stdin".into())),
        },
    };
    Ok((parse_signal(&sig)?, args))
}

/// A signal by name (`USR1`, `SIGUSR1`, `usr1`) or number.
fn parse_signal(s: &str) -> Result<Signal> {
    let bad = || q_queue::Error::new(Kind::Data, format!("unknown signal {s:?}: give a name (TERM, USR1, HUP, INT, STOP, CONT, ...) or a number"));
    let sig = match s.parse::<i32>() {
        Ok(n) => Signal::try_from(n).map_err(|_| bad())?,
        Err(_) => {
            let up = s.to_ascii_uppercase();
            let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
            name.parse::<Signal>().map_err(|_| bad())?
        }
    };
    Ok(sig)
}

fn hold(q: &Queue, id: &str) -> Result<Value> {
    let was = q.hold(id)?;
    match was {
        State::Pending | State::Waiting => Ok(json!({"was": was.as_str(), "state": "held"})),
        State::Held => Ok(json!({"was": "held", "state": "held"})),
        s => bail!(q_queue::Error::new(
            Kind::Busy,
            format!("job {id} is {}: only pending or waiting jobs can be held", s.as_str())
        )),
    }
}

/// Settle (ack/nack) one claim and return its `result` record.
fn settle(q: &Queue, id: &str, token: &str, reason: Reason, exit_code: Option<i32>, delay_ms: Option<u64>) -> Result<Value> {
    // The claim time stands in for the start: a hand-settled attempt ran
    // somewhere between its claim and now.
    let started = q.lease(id, token).and_then(|l| time::parse_time(&l.claimed_at).ok());
    let outcome = Outcome { exit_code: exit_code.or((reason == Reason::Ok).then_some(0)), started_at_ms: started, ..Outcome::default() };
    let opts = SettleOpts { delay_ms, worker_id: Some(cli::worker_id()), rand: cli::random_u64(), ..SettleOpts::default() };
    let rec = q.settle(id, token, reason, &outcome, &opts)?;
    Ok(serde_json::to_value(rec)?)
}

/// Run a claim action for ID/--token, or for every claim line on stdin.
fn settle_each(common: &Common, s: &Settle, act: impl Fn(&Queue, &str, &str) -> Result<Value>) -> Result<u8> {
    let q = common.open_existing()?;
    let claims: Vec<(String, String)> = match (&s.id, &s.token) {
        (Some(id), Some(t)) => vec![(ids::resolve_one(Some(&q), id)?, t.clone())],
        _ => claims_from_stdin()?,
    };
    let mut st = Status::default();
    for (id, token) in &claims {
        let r = q_queue::id::check_id(id).map_err(anyhow::Error::from).and_then(|_| {
            if q.locate(id)?.is_none() {
                bail!(q_queue::Error::no_job(id));
            }
            act(&q, id, token)
        });
        match r {
            Ok(v) => {
                if !out::line(&v)? {
                    break;
                }
            }
            Err(e) => st.fail(&e),
        }
    }
    Ok(st.0)
}

/// Claim lines (`{"id":..,"token":..}`, as q-claim prints) from stdin.
fn claims_from_stdin() -> Result<Vec<(String, String)>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!(q_queue::Error::new(Kind::Data, "give ID and --token, or pipe the claim line (q-claim's output) on stdin"));
    }
    let mut v = Vec::new();
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.context("read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        v.push(ids::claim_line(&line).with_context(|| format!("stdin line {}", n + 1))?);
    }
    if v.is_empty() {
        bail!(q_queue::Error::new(Kind::NoJob, "no claim lines on stdin: give ID and --token"));
    }
    Ok(v)
}
