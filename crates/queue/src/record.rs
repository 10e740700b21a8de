//! The small write-once records that sit beside a job in `var/<ID>/`: the
//! lease of an attempt, what its runner started, and how it ended.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a lease holder proves it is alive on its own host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Liveness {
    /// The holder keeps the lease file flock'ed: a free lock on the same host
    /// means the holder is dead.
    Flock,
    /// A one-shot `q-claim` printed the claim and exited: only the lease
    /// deadline (or a runner taking the lock) says anything.
    Ttl,
}

/// `var/<ID>/<A>.lease.json`; its mtime is the heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub v: u32,
    pub id: String,
    pub attempt: u32,
    pub token: String,
    pub claimed_at: String,
    pub lease_ms: u64,
    pub host: String,
    pub boot_id: String,
    pub pidns: String,
    pub pid: i32,
    pub pid_start: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    pub liveness: Liveness,
}

/// The second line of `var/<ID>/<A>.lease.json`: appended by the runner once
/// the job is started, so that whoever reclaims the lease can kill what is
/// left of the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub v: u32,
    pub host: String,
    pub boot_id: String,
    pub pidns: String,
    /// The runner (`q-run`).
    pub pid: i32,
    pub pid_start: u64,
    /// The job's process group; its leader's pid equals it.
    pub pgid: i32,
    pub leader_start: u64,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

/// Why an attempt (or a job) ended. Kebab-case everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Ok,
    Exit,
    Signal,
    Timeout,
    OutputLimit,
    SpawnFailed,
    Canceled,
    LeaseExpired,
    WorkerShutdown,
    LeaseLost,
    DependencyFailed,
    /// `q-ctl restart`: the attempt was ended on purpose and the job queued
    /// again; it counts neither as a failure nor as an interruption.
    Restarted,
    /// The job's `max_runtime` (wall time over all its attempts) ran out.
    MaxRuntime,
}

impl Reason {
    /// An attempt that failed by the job's own fault (counts against `attempts`).
    pub fn is_failure(self) -> bool {
        matches!(self, Reason::Exit | Reason::Signal | Reason::Timeout | Reason::OutputLimit | Reason::SpawnFailed)
    }

    /// An interruption that was not the job's fault.
    pub fn is_interruption(self) -> bool {
        matches!(self, Reason::LeaseExpired | Reason::WorkerShutdown)
    }

    /// The reason named `s` (as in a result record), if there is one.
    pub fn parse(s: &str) -> Option<Reason> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Exit => "exit",
            Reason::Signal => "signal",
            Reason::Timeout => "timeout",
            Reason::OutputLimit => "output-limit",
            Reason::SpawnFailed => "spawn-failed",
            Reason::Canceled => "canceled",
            Reason::LeaseExpired => "lease-expired",
            Reason::WorkerShutdown => "worker-shutdown",
            Reason::LeaseLost => "lease-lost",
            Reason::DependencyFailed => "dependency-failed",
            Reason::Restarted => "restarted",
            Reason::MaxRuntime => "max-runtime",
        }
    }
}

/// What someone asked of a running attempt (`q-ctl cancel`, `signal`,
/// `stop`, `cont`, `restart`). Its runner looks for requests while the
/// job runs and acts on each once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Ask {
    /// Stop the job; it ends `canceled`.
    Cancel,
    /// Deliver signal `signal` to the job's process group.
    Signal { signal: i32 },
    /// Stop the job and queue it again (reason `restarted`).
    Restart,
}

/// A request to a running attempt, with a key that names it for as long
/// as the attempt lasts (so that a runner acts on it once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub key: String,
    pub ask: Ask,
}

/// Job states as users see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Pending,
    Waiting,
    Held,
    Running,
    Done,
    Dead,
    Canceled,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Done | State::Dead | State::Canceled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Waiting => "waiting",
            State::Held => "held",
            State::Running => "running",
            State::Done => "done",
            State::Dead => "dead",
            State::Canceled => "canceled",
        }
    }

    /// The directory of a state.
    pub fn dir(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Waiting => "waiting",
            State::Held => "held",
            State::Running => "leased",
            State::Done => "done",
            State::Dead => "dead",
            State::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "waiting" => State::Waiting,
            "held" => State::Held,
            "running" => State::Running,
            "done" => State::Done,
            "dead" => State::Dead,
            "canceled" => State::Canceled,
            _ => return None,
        })
    }

    pub const ALL: [State; 7] =
        [State::Pending, State::Waiting, State::Held, State::Running, State::Done, State::Dead, State::Canceled];
}

/// What ended an attempt, as the runner measured it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub cpu_user_ms: Option<u64>,
    pub cpu_sys_ms: Option<u64>,
    pub max_rss_kb: Option<u64>,
}

/// The `result` record: one per attempt (`var/<ID>/<A>.result.json`), or for
/// a job that ended without an attempt (`var/<ID>/end.json`). The same JSON is
/// the `result` line `q-run` and `q-wait` print.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultRecord {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub attempt: u32,
    pub token: Option<String>,
    pub state: State,
    pub reason: Reason,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub cpu_user_ms: Option<u64>,
    pub cpu_sys_ms: Option<u64>,
    pub max_rss_kb: Option<u64>,
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Extra words, e.g. which dependency failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

impl ResultRecord {
    /// The record of a job that ended (`to`, for `reason`) without an
    /// attempt: canceled while queued, or its dependency failed.
    pub(crate) fn ended(id: &str, c: Counters, to: State, reason: Reason, name: Option<String>, detail: Option<Value>, now_ms: i64) -> ResultRecord {
        ResultRecord {
            kind: "result".into(),
            id: id.to_owned(),
            attempt: c.attempt,
            token: None,
            state: to,
            reason,
            exit_code: None,
            signal: None,
            started_at: None,
            finished_at: Some(crate::time::rfc3339(now_ms)),
            duration_ms: None,
            cpu_user_ms: None,
            cpu_sys_ms: None,
            max_rss_kb: None,
            failures: c.failures,
            next_run_at: None,
            name,
            host: Some(crate::ident::host().host.clone()),
            worker_id: None,
            detail,
        }
    }

    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// What a job used over its ended attempts (their result records): the
/// totals `q-ls` shows, and what `max_runtime` is counted against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Attempts with a result.
    pub attempts: u32,
    /// Wall time, summed.
    pub wall_ms: u64,
    pub cpu_user_ms: u64,
    pub cpu_sys_ms: u64,
    /// The highest peak resident set size of any attempt.
    pub max_rss_kb: u64,
}

impl Usage {
    /// Add one attempt's result.
    pub fn add(&mut self, r: &ResultRecord) {
        self.attempts += 1;
        self.wall_ms += r.duration_ms.unwrap_or(0);
        self.cpu_user_ms += r.cpu_user_ms.unwrap_or(0);
        self.cpu_sys_ms += r.cpu_sys_ms.unwrap_or(0);
        self.max_rss_kb = self.max_rss_kb.max(r.max_rss_kb.unwrap_or(0));
    }
}

/// A job's counters (SPEC "Fields"): they travel with the job (in its
/// file name, for a directory queue) and are part of its claim token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Claims so far: the attempt number of the latest claim (0 before any).
    pub attempt: u32,
    /// Attempts that failed by the job's own fault.
    pub failures: u32,
    /// Interruptions in a row that were not the job's fault.
    pub interrupts: u32,
}

/// Which output stream of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One piece of an attempt's output, as its runner wrote it: which stream,
/// where in that stream, how long, and when. The chunks of an attempt, in
/// order, say how its two streams interleaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub stream: Stream,
    /// Where the chunk starts in its stream's log.
    pub offset: u64,
    pub len: u64,
    /// When it was written (Unix ms).
    pub at_ms: i64,
}
