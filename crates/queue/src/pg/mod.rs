//! The PostgreSQL backend (docs/POSTGRES.md): a row per job, claims by
//! `FOR UPDATE SKIP LOCKED`, every state change fenced by the claim's token
//! (`WHERE token = $t AND state = 'running'`), lease times from the
//! server's clock. What is per host (workspaces) lives in a local
//! directory the tool chooses.

mod conn;
mod schema;
mod sup;

pub use conn::Secrets;

use crate::backend::{Backend, Claimer, Location, Presence, Singleton, Waiter};
use crate::claim::{Claim, ClaimOpts, Hold};
use crate::error::{Error, Kind, Result};
use crate::gc::{Action, GcOpts};
use crate::idle::Idle;
use crate::import::Import;
use crate::ident;
use crate::job::{Job, NewJob};
use crate::list::{Counts, Entry, Listed};
use crate::local::Workspaces;
use crate::lock::{Acquired, Holder, LockGuard};
use crate::push::Pushed;
use crate::queue::{Durability, Pause};
use crate::reclaim::Reclaimed;
use crate::record::{Chunk, Counters, Lease, Liveness, Outcome, Reason, Request, ResultRecord, RunInfo, State, Stream};
use crate::resolve::{self, Candidate, Resolved};
use crate::settle::{SettleOpts, ToSettle, decide};
use crate::time;
use conn::{Conn, Target, sql};
use postgres::types::ToSql;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{GenericClient, Row};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Milliseconds since the epoch of a timestamptz expression.
macro_rules! ms {
    ($e:literal) => {
        concat!("(extract(epoch from ", $e, ") * 1000)::int8")
    };
}

/// An advisory-lock key (and NOTIFY channel seed) of a schema and queue.
pub(crate) fn key(schema: &str, queue: &str, what: &str) -> i64 {
    crate::push::fnv64(format!("q\0{schema}\0{queue}\0{what}").as_bytes()) as i64
}

/// The most output kept of one attempt's streams together (as a directory
/// queue's runner caps it; q-run stops the job at its own limit first).
const OUTPUT_CAP: i64 = 256 << 20;

/// A queue in a PostgreSQL schema.
pub struct PgQueue {
    url: String,
    t: Target,
    /// Claims, settles, reads: one long-lived connection.
    main: Arc<Conn>,
    /// The heartbeat, cancel checks, output, and `LISTEN`: one more.
    side: Arc<Conn>,
    /// Where this host keeps its workspaces.
    local: PathBuf,
    /// `NOTIFY` channel: hashed, so that it fits in 63 bytes.
    channel: String,
}

impl PgQueue {
    fn new(url: &str, secrets: &Secrets, local: PathBuf) -> Result<PgQueue> {
        let t = Target::parse(url, secrets)?;
        let channel = format!("q_{:016x}", key(&t.schema, &t.queue, "wake") as u64);
        Ok(PgQueue { url: url.to_owned(), main: Arc::new(Conn::new(t.clone())), side: Arc::new(Conn::new(t.clone())), t, local, channel })
    }

    /// Open an existing queue: `None` when its schema does not exist.
    pub fn open(url: &str, secrets: &Secrets, local: PathBuf) -> Result<Option<PgQueue>> {
        let q = PgQueue::new(url, secrets, local)?;
        let t = q.t.clone();
        match q.main.with(|c| schema::version(c, &t))? {
            None => Ok(None),
            Some(v) => {
                schema::check(&t, v)?;
                if v < schema::VERSION {
                    q.main.with(|c| schema::ensure(c, &t))?;
                }
                Ok(Some(q))
            }
        }
    }

    /// Open a queue, creating its schema and queue row when missing.
    pub fn create(url: &str, secrets: &Secrets, local: PathBuf) -> Result<PgQueue> {
        let q = PgQueue::new(url, secrets, local)?;
        let t = q.t.clone();
        q.main.with(|c| schema::ensure(c, &t))?;
        q.exec("INSERT INTO {s}.queue (name) VALUES ($1) ON CONFLICT DO NOTHING", &[&t.queue])?;
        Ok(q)
    }

    /// The statement with the schema filled in.
    fn q(&self, stmt: &str) -> String {
        stmt.replace("{s}", &schema::quoted(&self.t.schema))
    }

    fn err(&self, e: postgres::Error) -> Error {
        sql(&self.t.shown, e)
    }

    // One statement on the main connection, prepared once per connection
    // (its text must be one of a fixed few: it stays in the cache).

    fn exec(&self, stmt: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let stmt = self.q(stmt);
        self.main.with(|c| {
            let st = self.main.prepared(c, &stmt).map_err(|e| self.err(e))?;
            c.execute(&st, params).map_err(|e| self.err(e))
        })
    }

    fn rows(&self, stmt: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let stmt = self.q(stmt);
        self.main.with(|c| {
            let st = self.main.prepared(c, &stmt).map_err(|e| self.err(e))?;
            c.query(&st, params).map_err(|e| self.err(e))
        })
    }

    fn row(&self, stmt: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let stmt = self.q(stmt);
        self.main.with(|c| {
            let st = self.main.prepared(c, &stmt).map_err(|e| self.err(e))?;
            c.query_opt(&st, params).map_err(|e| self.err(e))
        })
    }

    /// Run `f` in a transaction on the main connection; again, on a new
    /// connection, if the old one was lost before the commit, and again
    /// (a few times) when the server ended it for another's sake (a
    /// deadlock).
    fn tx<T>(&self, mut f: impl FnMut(&PgQueue, &mut postgres::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            tries += 1;
            let r = self.main.with(|c| {
                let mut tx = c.transaction().map_err(|e| self.err(e))?;
                let v = f(self, &mut tx)?;
                tx.commit().map_err(|e| self.err(e))?;
                Ok(v)
            });
            match r {
                Err(e) if e.kind == Kind::Busy && e.msg.starts_with(conn::CONFLICT) && tries < 5 => continue,
                r => return r,
            }
        }
    }

    fn job_of(&self, spec: Value) -> Result<Job> {
        serde_json::from_value(spec).map_err(|e| Error::new(Kind::Data, format!("queue {}: a job record: {e}", self.t.shown)))
    }
}

/// The columns of a job row as an [`Entry`].
const ENTRY_COLS: &str = concat!("id, state, attempt, failures, interrupts, ", ms!("run_at"), ", ", ms!("changed_at"));

fn entry(r: &Row) -> Entry {
    let state = State::parse(r.get::<_, &str>(1)).unwrap_or(State::Dead);
    let c = Counters { attempt: r.get::<_, i32>(2) as u32, failures: r.get::<_, i32>(3) as u32, interrupts: r.get::<_, i32>(4) as u32 };
    let queued = matches!(state, State::Pending | State::Waiting | State::Held);
    Entry {
        id: r.get(0),
        state,
        c: (!state.is_terminal()).then_some(c),
        run_at_ms: queued.then(|| r.get(5)),
        path: PathBuf::new(),
        changed_at_ms: Some(r.get(6)),
    }
}

/// A job's latest outcome: the result of its highest attempt that ended,
/// or its end record (an end without an attempt: a queued job canceled)
/// unless an attempt was claimed after it.
fn latest(last: Option<Value>, end: Option<Value>) -> Option<ResultRecord> {
    let last: Option<ResultRecord> = last.and_then(|v| serde_json::from_value(v).ok());
    let end: Option<ResultRecord> = end.and_then(|v| serde_json::from_value(v).ok());
    match (last, end) {
        (Some(l), Some(e)) => Some(if e.attempt >= l.attempt { e } else { l }),
        (l, e) => e.or(l),
    }
}

/// How many jobs [`LISTED`] reads at once.
const LISTED_ROWS: usize = 5000;

/// The jobs of a listing (`Backend::listed`), `$2` their ids: each job's
/// entry columns and record (0–7), the totals of its attempts' results
/// (8–12, NULL when none ended), its highest attempt's result (13), its end
/// record (14), and the lease and run records of a running job's attempt
/// (15–16). One statement for a few thousand jobs, where asking per job
/// took three round trips each.
const LISTED: &str = concat!(
    "SELECT j.id, j.state, j.attempt, j.failures, j.interrupts, ",
    ms!("j.run_at"),
    ", ",
    ms!("j.changed_at"),
    ", j.spec, u.n, u.wall, u.usr, u.sys, u.rss, u.last, e.rec, a.lease, a.run
     FROM {s}.job j
     LEFT JOIN (SELECT id, count(*) AS n,
                       sum(coalesce((result->>'duration_ms')::int8, 0))::int8 AS wall,
                       sum(coalesce((result->>'cpu_user_ms')::int8, 0))::int8 AS usr,
                       sum(coalesce((result->>'cpu_sys_ms')::int8, 0))::int8 AS sys,
                       max(coalesce((result->>'max_rss_kb')::int8, 0)) AS rss,
                       (array_agg(result ORDER BY attempt DESC))[1] AS last
                FROM {s}.attempt WHERE queue = $1 AND id = ANY($2) AND result IS NOT NULL GROUP BY id) u ON u.id = j.id
     LEFT JOIN {s}.ended e ON e.queue = j.queue AND e.id = j.id
     LEFT JOIN {s}.attempt a ON j.state = 'running' AND a.queue = j.queue AND a.id = j.id AND a.attempt = j.attempt
     WHERE j.queue = $1 AND j.id = ANY($2)"
);

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// One settle: a claim named by its token, and how it ended.
struct Ask<'a> {
    id: &'a str,
    token: &'a str,
    reason: Reason,
    outcome: &'a Outcome,
    opts: &'a SettleOpts,
}

/// One settle inside a transaction: fenced by the token; `LeaseLost` when
/// the claim is no longer current — unless this very settle committed
/// before (a COMMIT whose answer was lost), which finds its own result.
fn settle_in(q: &PgQueue, tx: &mut postgres::Transaction<'_>, ask: &Ask<'_>, again: bool, notify: &mut bool) -> Result<ResultRecord> {
    let &Ask { id, token, reason, outcome, opts } = ask;
    let lost = || Error::lease_lost(id, token);
    let tok: i64 = token.parse().map_err(|_| Error::new(Kind::Data, format!("invalid token {token:?}: give the token of the claim line")))?;
    let row = tx
        .query_opt(
            &q.q(concat!(
                "SELECT attempt, failures, interrupts, spec, ",
                ms!("now()"),
                " FROM {s}.job WHERE queue = $1 AND id = $2 AND token = $3 AND state = 'running' FOR UPDATE"
            )),
            &[&q.t.queue, &id, &tok],
        )
        .map_err(|e| q.err(e))?;
    let Some(row) = row else {
        // Settled already: by this very settle, whose commit's answer was
        // lost (only a try on a new connection asks), or by another.
        if !again {
            return Err(lost());
        }
        let done = tx
            .query_opt(&q.q("SELECT result FROM {s}.attempt WHERE queue = $1 AND id = $2 AND token = $3 AND result IS NOT NULL"), &[&q.t.queue, &id, &tok])
            .map_err(|e| q.err(e))?;
        if let Some(r) = done
            && let Ok(rec) = serde_json::from_value::<ResultRecord>(r.get(0))
            && rec.reason == reason
            && rec.worker_id == opts.worker_id
        {
            return Ok(rec);
        }
        return Err(lost());
    };
    let c = Counters { attempt: row.get::<_, i32>(0) as u32, failures: row.get::<_, i32>(1) as u32, interrupts: row.get::<_, i32>(2) as u32 };
    let job = q.job_of(row.get(3))?;
    let now: i64 = row.get(4);
    let d = decide(id, token, c, &job, reason, outcome, opts, now);
    let state = d.rec.state;
    tx.execute(&q.q("UPDATE {s}.attempt SET result = $4 WHERE queue = $1 AND id = $2 AND attempt = $3"), &[&q.t.queue, &id, &(c.attempt as i32), &json(&d.rec)])
        .map_err(|e| q.err(e))?;
    let delay = d.delay_ms.unwrap_or(0) as f64 / 1000.0;
    tx.execute(
        &q.q(
            "UPDATE {s}.job SET state = $3, failures = $4, interrupts = $5, token = NULL, lease_until = NULL, lease_ms = NULL,
               run_at = CASE WHEN $3 = 'pending' THEN now() + make_interval(secs => $6) ELSE run_at END, changed_at = now()
             WHERE queue = $1 AND id = $2",
        ),
        &[&q.t.queue, &id, &state.as_str(), &(d.c.failures as i32), &(d.c.interrupts as i32), &delay],
    )
    .map_err(|e| q.err(e))?;
    if state == State::Pending {
        *notify = true;
    }
    if state.is_terminal() {
        *notify |= on_terminal(q, tx, id, state)?;
    }
    Ok(d.rec)
}

/// Job `id` ended in `state`: what waits on it moves on (all its
/// dependencies done), or ends canceled `dependency-failed`, which
/// cascades. Returns whether a job became ready.
fn on_terminal(q: &PgQueue, tx: &mut postgres::Transaction<'_>, id: &str, state: State) -> Result<bool> {
    let mut ended = vec![(id.to_owned(), state)];
    let mut ready = false;
    while let Some((dep, st)) = ended.pop() {
        let waiting = tx
            .query(
                &q.q("SELECT j.id FROM {s}.dep d JOIN {s}.job j ON j.queue = d.queue AND j.id = d.id WHERE d.queue = $1 AND d.dep = $2 AND j.state = 'waiting' FOR UPDATE OF j"),
                &[&q.t.queue, &dep],
            )
            .map_err(|e| q.err(e))?;
        for r in waiting {
            let w: String = r.get(0);
            if st == State::Done {
                ready |= promote_in(q, tx, &w)?.is_some_and(|s| s == State::Pending);
            } else {
                end_in(q, tx, &w, State::Canceled, Reason::DependencyFailed, Some(serde_json::json!({"dependency": dep})))?;
                ended.push((w, State::Canceled));
            }
        }
    }
    Ok(ready)
}

/// A waiting job whose dependencies all ended moves on: pending when all are
/// done, canceled when one failed (the cascade is the caller's). Its new
/// state, if it moved.
fn promote_in(q: &PgQueue, tx: &mut postgres::Transaction<'_>, id: &str) -> Result<Option<State>> {
    let deps = tx
        .query(
            &q.q("SELECT d.dep, j.state FROM {s}.dep d LEFT JOIN {s}.job j ON j.queue = d.queue AND j.id = d.dep WHERE d.queue = $1 AND d.id = $2"),
            &[&q.t.queue, &id],
        )
        .map_err(|e| q.err(e))?;
    let mut all_done = true;
    for r in &deps {
        match r.get::<_, Option<&str>>(1).and_then(State::parse) {
            Some(State::Done) => {}
            Some(State::Dead | State::Canceled) | None => {
                let dep: String = r.get(0);
                end_in(q, tx, id, State::Canceled, Reason::DependencyFailed, Some(serde_json::json!({"dependency": dep})))?;
                return Ok(Some(State::Canceled));
            }
            Some(_) => all_done = false,
        }
    }
    if !all_done {
        return Ok(None);
    }
    let n = tx
        .execute(&q.q("UPDATE {s}.job SET state = 'pending', changed_at = now() WHERE queue = $1 AND id = $2 AND state = 'waiting'"), &[&q.t.queue, &id])
        .map_err(|e| q.err(e))?;
    Ok((n == 1).then_some(State::Pending))
}

/// End a job that is not running without an attempt (cancel, a failed
/// dependency): its `ended` record, its state.
fn end_in(q: &PgQueue, tx: &mut postgres::Transaction<'_>, id: &str, to: State, reason: Reason, detail: Option<Value>) -> Result<ResultRecord> {
    let row = tx
        .query_one(&q.q("SELECT attempt, failures, spec FROM {s}.job WHERE queue = $1 AND id = $2"), &[&q.t.queue, &id])
        .map_err(|e| q.err(e))?;
    let job = q.job_of(row.get(2)).ok();
    let c = Counters { attempt: row.get::<_, i32>(0) as u32, failures: row.get::<_, i32>(1) as u32, interrupts: 0 };
    let rec = ResultRecord::ended(id, c, to, reason, job.and_then(|j| j.name), detail, time::now_ms());
    tx.execute(
        &q.q("INSERT INTO {s}.ended (queue, id, rec) VALUES ($1, $2, $3) ON CONFLICT (queue, id) DO UPDATE SET rec = EXCLUDED.rec"),
        &[&q.t.queue, &id, &json(&rec)],
    )
    .map_err(|e| q.err(e))?;
    tx.execute(&q.q("UPDATE {s}.job SET state = $3, changed_at = now() WHERE queue = $1 AND id = $2"), &[&q.t.queue, &id, &to.as_str()])
        .map_err(|e| q.err(e))?;
    Ok(rec)
}

impl PgQueue {
    /// A singleton's name (in `holder`) and advisory lock: the collector,
    /// or this host's supervisor ([`PgQueue::supervisor_key`]).
    fn singleton(&self, which: Singleton) -> (String, i64) {
        let what = match which {
            Singleton::Supervisor => supervisor_of(&ident::host().host),
            Singleton::Collector => "gc".to_owned(),
        };
        let k = key(&self.t.schema, &self.t.queue, &what);
        (what, k)
    }

    /// The advisory lock of the supervisor of `host`.
    pub(super) fn supervisor_key(&self, host: &str) -> i64 {
        key(&self.t.schema, &self.t.queue, &supervisor_of(host))
    }

    fn notify(&self, tx: &mut postgres::Transaction<'_>) -> Result<()> {
        tx.execute("SELECT pg_notify($1, '')", &[&self.channel]).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Settle held claims: decided here from each claim (while its token
    /// holds, the row's counters and job are the claim's), and written in
    /// one statement, one commit for the group. A claim whose job others
    /// wait on (`waited`), whose token no longer holds, or whose statement
    /// may have committed before a lost answer takes [`PgQueue::settle_many`],
    /// which reads the row, moves dependents, and finds its own result.
    fn settle_held(&self, group: &[ToSettle]) -> Vec<Result<ResultRecord>> {
        const FAST: &str = "WITH u AS (SELECT * FROM unnest($2::text[], $3::int8[], $4::text[], $5::int4[], $6::int4[], $7::float8[], $8::int4[], $9::jsonb[])
                                AS u(id, token, state, failures, interrupts, delay, attempt, result)),
                 j AS (UPDATE {s}.job j SET state = u.state, failures = u.failures, interrupts = u.interrupts, token = NULL, lease_until = NULL, lease_ms = NULL,
                              run_at = CASE WHEN u.state = 'pending' THEN now() + make_interval(secs => u.delay) ELSE j.run_at END, changed_at = now()
                         FROM u WHERE j.queue = $1 AND j.id = u.id AND j.token = u.token AND j.state = 'running' AND NOT j.waited
                       RETURNING j.id, j.state),
                 a AS (UPDATE {s}.attempt a SET result = u.result FROM u JOIN j ON j.id = u.id
                        WHERE a.queue = $1 AND a.id = u.id AND a.attempt = u.attempt)
            SELECT j.id, CASE WHEN j.state = 'pending' THEN pg_notify($10, '') IS NOT NULL END FROM j";
        let now = time::now_ms();
        let decided: Vec<Option<crate::settle::Decision>> = group
            .iter()
            .map(|s| s.claim.token.parse::<i64>().ok().map(|_| decide(&s.claim.id, &s.claim.token, s.claim.c, &s.claim.job, s.reason, s.outcome, s.opts, now)))
            .collect();
        let fast: Vec<(&ToSettle, &crate::settle::Decision)> = group.iter().zip(&decided).filter_map(|(s, d)| Some((s, d.as_ref()?))).collect();
        let ids: Vec<&str> = fast.iter().map(|(s, _)| s.claim.id.as_str()).collect();
        let tokens: Vec<i64> = fast.iter().map(|(s, _)| s.claim.token.parse().unwrap_or(-1)).collect();
        let states: Vec<&str> = fast.iter().map(|(_, d)| d.rec.state.as_str()).collect();
        let failures: Vec<i32> = fast.iter().map(|(_, d)| d.c.failures as i32).collect();
        let interrupts: Vec<i32> = fast.iter().map(|(_, d)| d.c.interrupts as i32).collect();
        let delays: Vec<f64> = fast.iter().map(|(_, d)| d.delay_ms.unwrap_or(0) as f64 / 1000.0).collect();
        let attempts: Vec<i32> = fast.iter().map(|(s, _)| s.claim.c.attempt as i32).collect();
        let results: Vec<Value> = fast.iter().map(|(_, d)| json(&d.rec)).collect();
        let stmt = self.q(FAST);
        let tries = std::cell::Cell::new(0);
        let settled = self.main.with(|c| {
            tries.set(tries.get() + 1);
            let st = self.main.prepared(c, &stmt).map_err(|e| self.err(e))?;
            let rows = c
                .query(&st, &[&self.t.queue, &ids, &tokens, &states, &failures, &interrupts, &delays, &attempts, &results, &self.channel])
                .map_err(|e| self.err(e))?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect::<std::collections::HashSet<String>>())
        });
        let settled = match settled {
            Ok(v) => v,
            Err(e) => return group.iter().map(|_| Err(Error::new(e.kind, e.to_string()))).collect(),
        };
        let rest: Vec<Ask> = group
            .iter()
            .zip(&decided)
            .filter(|(s, d)| d.is_none() || !settled.contains(&s.claim.id))
            .map(|(s, _)| Ask { id: &s.claim.id, token: &s.claim.token, reason: s.reason, outcome: s.outcome, opts: s.opts })
            .collect();
        let mut slow = if rest.is_empty() { Vec::new() } else { self.settle_asks(&rest, tries.get() > 1) }.into_iter();
        group
            .iter()
            .zip(decided)
            .map(|(s, d)| match d {
                Some(d) if settled.contains(&s.claim.id) => Ok(d.rec),
                _ => slow.next().unwrap_or_else(|| Err(Error::lease_lost(&s.claim.id, &s.claim.token))),
            })
            .collect()
    }

    fn settle_many(&self, asks: &[Ask<'_>]) -> Vec<Result<ResultRecord>> {
        self.settle_asks(asks, false)
    }

    /// Settles in one transaction, each reading its row first; `again`: an
    /// earlier try of them may have committed (its answer lost), so a
    /// settle that finds its token gone looks for its own result.
    fn settle_asks(&self, asks: &[Ask<'_>], again: bool) -> Vec<Result<ResultRecord>> {
        // Again on a new connection: the first try's COMMIT may have
        // happened, and then each settle finds its own result.
        let tries = std::cell::Cell::new(if again { 1 } else { 0 });
        self.each_in_savepoint(
            asks,
            |_, _| {
                tries.set(tries.get() + 1);
                Ok(())
            },
            |q, sp, ask| {
                let mut notify = false;
                let rec = settle_in(q, sp, ask, tries.get() > 1, &mut notify)?;
                Ok((rec, notify))
            },
        )
    }

    /// Do `each` item in one transaction, each behind a savepoint so that a
    /// refused one does not undo the others (a lost connection undoes all,
    /// and the transaction is tried again, `prepare` first); one `NOTIFY`
    /// at most, when one of them asked for it.
    fn each_in_savepoint<I, T>(
        &self,
        items: &[I],
        mut prepare: impl FnMut(&PgQueue, &mut postgres::Transaction<'_>) -> Result<()>,
        mut each: impl FnMut(&PgQueue, &mut postgres::Transaction<'_>, &I) -> Result<(T, bool)>,
    ) -> Vec<Result<T>> {
        let r = self.tx(|q, tx| {
            prepare(q, tx)?;
            let refs: Vec<&I> = items.iter().collect();
            let (out, notify) = in_savepoints(q, tx, &refs, &mut each)?;
            if notify {
                q.notify(tx)?;
            }
            Ok(out)
        });
        match r {
            Ok(v) => v,
            Err(e) => items.iter().map(|_| Err(Error::new(e.kind, e.to_string()))).collect(),
        }
    }

    fn claim_rows(&self, n: usize, opts: &ClaimOpts) -> Result<Vec<Claim>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // The classes of the pending jobs (what they take to run; '' for
        // nothing), from the index of ready jobs by class: a loose index
        // scan, one probe per class, whatever the number of jobs.
        const CLASSES: &str = "WITH RECURSIVE cls AS (
                 (SELECT class FROM {s}.job WHERE queue = $1 AND state = 'pending' ORDER BY class LIMIT 1)
                 UNION ALL
                 SELECT (SELECT j.class FROM {s}.job j WHERE j.queue = $1 AND j.state = 'pending' AND j.class > cls.class ORDER BY j.class LIMIT 1)
                   FROM cls WHERE cls.class IS NOT NULL)";
        // The first $2 ready jobs of each class in `c` (in claim order within
        // it), locked; merged in claim order.
        const READY: &str = " CROSS JOIN LATERAL (
                 SELECT id, priority, run_at FROM {s}.job
                  WHERE queue = $1 AND state = 'pending' AND class = c.class AND run_at <= now()
                    AND NOT EXISTS (SELECT 1 FROM {s}.queue WHERE name = $1 AND paused_since IS NOT NULL
                                      AND (paused_until IS NULL OR paused_until > now()))
                  ORDER BY priority DESC, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) j";
        const ORDER: &str = " ORDER BY j.priority DESC, j.run_at, j.id";
        // The claim and its attempt row in one statement (one round trip,
        // one commit): the lease record is made here with the id, attempt
        // and token the server chose filled in.
        const UPDATE: &str = concat!(
            ", claimed AS (UPDATE {s}.job j SET state = 'running', attempt = j.attempt + 1, token = nextval('{s}.token_seq'),
                                lease_ms = $3, lease_until = now() + $3::int8 * interval '1 millisecond', changed_at = now()
                           FROM next WHERE j.queue = $1 AND j.id = next.id
                         RETURNING j.id, j.token, j.attempt, j.failures, j.interrupts, j.spec, j.priority, ",
            ms!("j.run_at"),
            " AS run_at_ms, ",
            ms!("j.lease_until"),
            " AS lease_until_ms),
               made AS (INSERT INTO {s}.attempt (queue, id, attempt, token, lease)
                        SELECT $1, id, attempt, token, $4::jsonb || jsonb_build_object('id', id, 'attempt', attempt, 'token', token::text) FROM claimed
                        ON CONFLICT (queue, id, attempt) DO UPDATE SET token = EXCLUDED.token, lease = EXCLUDED.lease, run = NULL, cancel = false, requests = '[]', result = NULL)
             SELECT * FROM claimed"
        );
        // The lease record but for what the server fills in.
        let lease = json(&Lease::mine("", 0, "", time::now_ms(), opts));
        let rows = match &opts.fit {
            // Without slots: the jobs that take nothing, or only a place in
            // a group (not limited here), in one statement (autocommitted).
            None => {
                let stmt = self.q(&format!(
                    "{CLASSES}, next AS (SELECT j.id FROM (SELECT class FROM cls WHERE class = '' OR class LIKE '@%') c{READY}{ORDER} LIMIT $2){UPDATE}"
                ));
                self.main.with(|c| {
                    let st = self.main.prepared(c, &stmt).map_err(|e| self.err(e))?;
                    c.query(&st, &[&self.t.queue, &(n as i64), &(opts.lease_ms as i64), &lease]).map_err(|e| self.err(e))
                })?
            }
            Some(fit) => {
                // With slots: the classes these slots may take (one they
                // never fit is passed over whole), then the rule of
                // `crate::slots` over the first n of each, merged in claim
                // order: a class that is not free blocks with its first.
                // The candidates are read without locks, so that another
                // claimer judging them does not hide them (the rows behind
                // them would overtake them); the rows chosen are locked by
                // the update, and one another claimer took meanwhile is
                // passed over (then the rule is applied again).
                let rule = crate::slots::Filter::new(Some(fit));
                let mut tries = 0;
                loop {
                    tries += 1;
                    let classes: Vec<String> = self
                        .rows(&format!("{CLASSES} SELECT class FROM cls WHERE class IS NOT NULL"), &[&self.t.queue])?
                        .iter()
                        .map(|r| r.get::<_, String>(0))
                        .filter(|c| c.is_empty() || crate::names::Class::parse_text(c).is_some_and(|c| !rule.never(&c.needs, c.group.as_deref())))
                        .collect();
                    let cands = self.rows(
                        &format!("SELECT j.id, c.class FROM unnest($3::text[]) AS c(class){}{ORDER}", READY.replace(" FOR UPDATE SKIP LOCKED", "")),
                        &[&self.t.queue, &(n as i64), &classes],
                    )?;
                    let mut filter = crate::slots::Filter::new(Some(fit));
                    let mut ids: Vec<String> = Vec::new();
                    for c in cands {
                        if ids.len() >= n {
                            break;
                        }
                        let class = crate::names::Class::parse_text(&c.get::<_, String>(1));
                        let (needs, group) = class.map(|c| (c.needs, c.group)).unwrap_or_default();
                        if filter.judge(&needs, group.as_deref()) == crate::slots::Verdict::Take {
                            filter.taken(&needs, group.as_deref());
                            ids.push(c.get(0));
                        }
                    }
                    if ids.is_empty() {
                        break Vec::new();
                    }
                    let rows = self.rows(
                        &format!("WITH next AS (SELECT id FROM {{s}}.job WHERE queue = $1 AND id = ANY($2) AND state = 'pending' FOR UPDATE SKIP LOCKED){UPDATE}"),
                        &[&self.t.queue, &ids, &(opts.lease_ms as i64), &lease],
                    )?;
                    if !rows.is_empty() || tries >= 3 {
                        break rows;
                    }
                }
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        let mut keys = Vec::with_capacity(rows.len());
        for r in rows {
            let job = self.job_of(r.get(5))?;
            let c = Counters { attempt: r.get::<_, i32>(2) as u32, failures: r.get::<_, i32>(3) as u32, interrupts: r.get::<_, i32>(4) as u32 };
            keys.push((-r.get::<_, i32>(6), r.get::<_, i64>(7), r.get::<_, String>(0)));
            out.push(Claim {
                id: r.get(0),
                token: r.get::<_, i64>(1).to_string(),
                c,
                lease_ms: opts.lease_ms,
                expires_at_ms: r.get(8),
                job,
                owner: None,
                hold: Hold::Row(None),
                sync_pending: Default::default(),
            });
        }
        // The rows come back in any order: most urgent first.
        let mut both: Vec<_> = keys.into_iter().zip(out).collect();
        both.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(both.into_iter().map(|(_, c)| c).collect())
    }

    /// Is the owner of a running claim gone? (lease, run, expired)
    fn owner_gone(lease: Option<&Lease>, run: Option<&RunInfo>, expired: bool, lease_until: i64) -> Option<String> {
        if expired {
            return Some(format!("its lease expired at {}", time::rfc3339(lease_until)));
        }
        let here = ident::host();
        // On this host, a holder that is gone is known at once.
        let local = |h: &str, b: &str, ns: &str| h == here.host && ns == here.pidns && b == here.boot_id;
        if let Some(r) = run
            && local(&r.host, &r.boot_id, &r.pidns)
            && !ident::alive(r.pid, r.pid_start)
        {
            return Some(format!("its owner (pid {}) is gone", r.pid));
        }
        if run.is_none()
            && let Some(l) = lease
            && l.liveness == Liveness::Flock
            && local(&l.host, &l.boot_id, &l.pidns)
            && !ident::alive(l.pid, l.pid_start)
        {
            return Some(format!("its owner (pid {}) is gone", l.pid));
        }
        None
    }
}

impl Backend for PgQueue {
    fn location(&self) -> Location {
        Location::Postgres(self.url.clone())
    }
    fn settles_sync(&self) -> bool {
        true
    }

    fn push(&self, jobs: Vec<NewJob>) -> Vec<Result<Pushed>> {
        // One transaction. Jobs of one push share one environment: stored
        // once, before them. Jobs without a key or dependencies go in
        // together, up to PUSH_ROWS per statement; the others one by one,
        // each behind a savepoint so that a refused one does not undo the
        // rest.
        let r = self.tx(|q, tx| {
            let mut envs: BTreeMap<*const BTreeMap<String, String>, String> = BTreeMap::new();
            for env in jobs.iter().filter_map(|nj| nj.pusher_env.as_ref()) {
                if let std::collections::btree_map::Entry::Vacant(v) = envs.entry(std::sync::Arc::as_ptr(env)) {
                    v.insert(store_env(q, tx, env)?);
                }
            }
            let with_env = |nj: &NewJob| {
                let mut job = nj.job.clone();
                if let Some(env) = &nj.pusher_env {
                    job.env_ref = envs.get(&std::sync::Arc::as_ptr(env)).cloned();
                }
                job
            };
            // The batch's key locks, all at once and in one order, before
            // any row lock; held until the commit.
            lock_keys(q, tx, jobs.iter().filter_map(|nj| nj.job.key.as_deref()))?;
            let mut out: Vec<Option<Result<Pushed>>> = jobs.iter().map(|_| None).collect();
            let (plain, guarded): (Vec<usize>, Vec<usize>) = (0..jobs.len()).partition(|&i| jobs[i].job.key.is_none() && jobs[i].job.after.is_empty());
            let mut notify = false;
            for chunk in plain.chunks(PUSH_ROWS) {
                let batch: Vec<(Job, i64)> = chunk.iter().map(|&i| (with_env(&jobs[i]), jobs[i].run_at_ms)).collect();
                for (&i, p) in chunk.iter().zip(push_plain(q, tx, &batch)?) {
                    notify |= p.state == State::Pending;
                    out[i] = Some(Ok(p));
                }
            }
            let refs: Vec<&usize> = guarded.iter().collect();
            let (answers, n) = in_savepoints(q, tx, &refs, &mut |q, sp, &i| {
                let p = push_one(q, sp, &with_env(&jobs[i]), jobs[i].run_at_ms)?;
                let ready = p.state == State::Pending && !p.deduped;
                Ok((p, ready))
            })?;
            for (&i, a) in guarded.iter().zip(answers) {
                out[i] = Some(a);
            }
            if notify || n {
                q.notify(tx)?;
            }
            Ok(out.into_iter().map(|o| o.unwrap_or_else(|| Err(Error::new(Kind::Io, "job not pushed")))).collect::<Vec<_>>())
        });
        match r {
            Ok(v) => v,
            Err(e) => jobs.iter().map(|_| Err(Error::new(e.kind, e.to_string()))).collect(),
        }
    }

    fn load_env(&self, env_ref: &str, _owner: Option<u32>) -> Result<BTreeMap<String, String>> {
        let r = self
            .row("SELECT env FROM {s}.env WHERE queue = $1 AND ref = $2", &[&self.t.queue, &env_ref])?
            .ok_or_else(|| Error::new(Kind::Data, format!("queue {}: no recorded environment {env_ref:?}", self.t.shown)))?;
        serde_json::from_value(r.get(0)).map_err(|e| Error::new(Kind::Data, format!("recorded environment {env_ref}: {e}")))
    }

    fn claim(&self, n: usize, opts: &ClaimOpts) -> Result<Vec<Claim>> {
        self.claim_rows(n, opts)
    }

    fn claimer(&self) -> Box<dyn Claimer> {
        Box::new(PgClaimer { q: self.clone_handle(), waiter: None })
    }

    fn adopt(&self, id: &str, token: &str) -> Result<Claim> {
        crate::id::check_id(id)?;
        let tok: i64 = token.parse().map_err(|_| Error::new(Kind::Data, format!("invalid token {token:?}")))?;
        let r = self
            .row(
                concat!(
                    "SELECT j.attempt, j.failures, j.interrupts, j.spec, j.lease_ms, ",
                    ms!("j.lease_until"),
                    ", a.run FROM {s}.job j JOIN {s}.attempt a ON a.queue = j.queue AND a.id = j.id AND a.attempt = j.attempt
                     WHERE j.queue = $1 AND j.id = $2 AND j.token = $3 AND j.state = 'running'"
                ),
                &[&self.t.queue, &id, &tok],
            )?
            .ok_or_else(|| Error::lease_lost(id, token))?;
        let c = Counters { attempt: r.get::<_, i32>(0) as u32, failures: r.get::<_, i32>(1) as u32, interrupts: r.get::<_, i32>(2) as u32 };
        let busy = || Error::new(Kind::Busy, format!("job {id} attempt {} is already being run by another process", c.attempt));
        let here = ident::host();
        let live_here = |host: &str, boot: &str, ns: &str, pid: i32, start: u64| host == here.host && boot == here.boot_id && ns == here.pidns && ident::alive(pid, start);
        if let Some(run) = r.get::<_, Option<Value>>(6).and_then(|v| serde_json::from_value::<RunInfo>(v).ok())
            && (live_here(&run.host, &run.boot_id, &run.pidns, run.pid, run.pid_start) || run.host != here.host)
        {
            return Err(busy());
        }
        // The runner takes the claim over: it becomes the lease's holder, and
        // a second runner that finds a live holder is refused.
        let taken = self.tx(|q, tx| {
            let lease = tx
                .query_opt(&q.q("SELECT lease FROM {s}.attempt WHERE queue = $1 AND id = $2 AND attempt = $3 FOR UPDATE"), &[&q.t.queue, &id, &(c.attempt as i32)])
                .map_err(|e| q.err(e))?
                .and_then(|r| serde_json::from_value::<Lease>(r.get(0)).ok());
            let Some(mut lease) = lease else { return Ok(false) };
            if lease.liveness == Liveness::Flock && live_here(&lease.host, &lease.boot_id, &lease.pidns, lease.pid, lease.pid_start) && (lease.pid, lease.pid_start) != ident::me() {
                return Ok(false);
            }
            (lease.pid, lease.pid_start) = ident::me();
            (lease.host, lease.boot_id, lease.pidns) = (here.host.clone(), here.boot_id.clone(), here.pidns.clone());
            lease.liveness = Liveness::Flock;
            tx.execute(&q.q("UPDATE {s}.attempt SET lease = $4 WHERE queue = $1 AND id = $2 AND attempt = $3"), &[&q.t.queue, &id, &(c.attempt as i32), &json(&lease)])
                .map_err(|e| q.err(e))?;
            Ok(true)
        })?;
        if !taken {
            return Err(busy());
        }
        let Some(mark) = Adopted::mark(&self.t, id, token) else {
            return Err(busy());
        };
        Ok(Claim {
            id: id.to_owned(),
            token: token.to_owned(),
            c,
            lease_ms: r.get::<_, Option<i64>>(4).unwrap_or(60_000) as u64,
            expires_at_ms: r.get(5),
            job: self.job_of(r.get(3))?,
            owner: None,
            hold: Hold::Row(Some(mark)),
            sync_pending: Default::default(),
        })
    }

    fn extend(&self, c: &Claim) -> Result<bool> {
        let Ok(tok) = c.token.parse::<i64>() else { return Ok(false) };
        let stmt = self.q("UPDATE {s}.job SET lease_until = now() + make_interval(secs => lease_ms::float8 / 1000) WHERE queue = $1 AND id = $2 AND token = $3 AND state = 'running'");
        // Not ours any more only when the server says so: a server that is
        // away is not a lost lease (the runner's own clock decides that).
        let patience = Duration::from_millis(c.lease_ms / 3);
        Ok(self.side.with_patience(patience, |cl| {
            let st = self.side.prepared(cl, &stmt).map_err(|e| self.err(e))?;
            cl.execute(&st, &[&self.t.queue, &c.id, &tok]).map_err(|e| self.err(e))
        })? == 1)
    }

    fn make_durable(&self, _claims: &[&Claim]) -> Result<()> {
        Ok(()) // a claim is committed before it is handed out
    }

    fn record_start(&self, c: &Claim, run: &RunInfo) -> Result<()> {
        // Committed without waiting for its WAL flush (for this statement's
        // transaction only): the next commit on the server that does wait,
        // or the WAL writer within 200 ms, makes it durable. A server crash
        // in between loses the record, not the claim (docs/POSTGRES.md).
        self.exec(
            "WITH quick AS (SELECT set_config('synchronous_commit', 'off', true))
             UPDATE {s}.attempt SET run = $4 FROM quick WHERE queue = $1 AND id = $2 AND attempt = $3",
            &[&self.t.queue, &c.id, &(c.attempt() as i32), &json(run)],
        )?;
        Ok(())
    }

    fn requests(&self, c: &Claim) -> Vec<Request> {
        let stmt = self.q("SELECT cancel, requests FROM {s}.attempt WHERE queue = $1 AND id = $2 AND attempt = $3");
        // Never waits: the heartbeat may be waiting on the side connection
        // for a server that does not answer, and the runner must go on
        // watching its job's lease meanwhile; the next look comes soon.
        let look = |cl: &mut postgres::Client| {
            let st = self.side.prepared(cl, &stmt).map_err(|e| self.err(e))?;
            cl.query_opt(&st, &[&self.t.queue, &c.id, &(c.attempt() as i32)]).map_err(|e| self.err(e))
        };
        let Some(r) = self.side.try_now(look).flatten() else {
            return Vec::new();
        };
        asked(r.get(0), r.get(1))
    }

    fn log_writer(&self, c: &Claim, stream: Stream) -> Result<Box<dyn std::io::Write + Send>> {
        Ok(Box::new(LogWriter { q: self.clone_handle(), id: c.id.clone(), attempt: c.attempt() as i32, stream: stream_no(stream) }))
    }

    fn workspaces(&self) -> Workspaces {
        let _ = std::fs::create_dir_all(self.local.join("tmp"));
        Workspaces::new(self.local.join("tmp"), self.local.join("var"), true)
    }

    fn touch(&self, id: &str, token: &str) -> Result<i64> {
        crate::id::check_id(id)?;
        let tok: i64 = token.parse().map_err(|_| Error::new(Kind::Data, format!("invalid token {token:?}: give the token of the claim line")))?;
        let r = self.row(
            concat!(
                "UPDATE {s}.job SET lease_until = now() + make_interval(secs => lease_ms::float8 / 1000) WHERE queue = $1 AND id = $2 AND token = $3 AND state = 'running' RETURNING ",
                ms!("lease_until")
            ),
            &[&self.t.queue, &id, &tok],
        )?;
        r.map(|r| r.get(0)).ok_or_else(|| Error::lease_lost(id, token))
    }

    fn settle(&self, id: &str, token: &str, reason: Reason, outcome: &Outcome, opts: &SettleOpts) -> Result<ResultRecord> {
        crate::id::check_id(id)?;
        self.settle_many(&[Ask { id, token, reason, outcome, opts }]).pop().expect("one answer")
    }

    fn settle_group(&self, group: &[ToSettle]) -> Vec<Result<ResultRecord>> {
        self.settle_held(group)
    }

    fn reclaim(&self, dry_run: bool) -> Result<Vec<Reclaimed>> {
        let rows = self.rows(
            concat!(
                "SELECT j.id, j.token, j.attempt, lease_until < now(), ",
                ms!("lease_until"),
                ", a.lease, a.run, a.cancel, a.requests FROM {s}.job j LEFT JOIN {s}.attempt a ON a.queue = j.queue AND a.id = j.id AND a.attempt = j.attempt
                 WHERE j.queue = $1 AND j.state = 'running'"
            ),
            &[&self.t.queue],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = r.get(0);
            let token = r.get::<_, Option<i64>>(1).unwrap_or(0).to_string();
            let attempt = r.get::<_, i32>(2) as u32;
            let lease: Option<Lease> = r.get::<_, Option<Value>>(5).and_then(|v| serde_json::from_value(v).ok());
            let run: Option<RunInfo> = r.get::<_, Option<Value>>(6).and_then(|v| serde_json::from_value(v).ok());
            let Some(why) = PgQueue::owner_gone(lease.as_ref(), run.as_ref(), r.get(3), r.get(4)) else { continue };
            // What was asked of the attempt decides for it: a cancel, else a restart.
            let asks: Vec<crate::record::Ask> = asked(r.get::<_, Option<bool>>(7).unwrap_or(false), r.get::<_, Option<Value>>(8).unwrap_or(Value::Null)).into_iter().map(|r| r.ask).collect();
            let reason = if asks.contains(&crate::record::Ask::Cancel) {
                Reason::Canceled
            } else if asks.contains(&crate::record::Ask::Restart) {
                Reason::Restarted
            } else {
                Reason::LeaseExpired
            };
            let worker_id = lease.as_ref().and_then(|l| l.worker_id.clone());
            if dry_run {
                out.push(Reclaimed { id, token, attempt, state: State::Pending, reason, why, killed_group: false, worker_id });
                continue;
            }
            let here = ident::host();
            let mut killed = false;
            if let Some(run) = &run
                && run.host == here.host && run.boot_id == here.boot_id && run.pidns == here.pidns
            {
                killed = ident::kill_group(run.pgid, run.leader_start, nix::sys::signal::Signal::SIGKILL);
            }
            let started = run.as_ref().and_then(|r| time::parse_time(&r.started_at).ok()).or_else(|| lease.as_ref().and_then(|l| time::parse_time(&l.claimed_at).ok()));
            let outcome = Outcome { started_at_ms: started.or(Some(time::now_ms())), ..Outcome::default() };
            let opts = SettleOpts { worker_id: Some("reclaim".into()), ..SettleOpts::default() };
            match self.settle(&id, &token, reason, &outcome, &opts) {
                Ok(rec) => out.push(Reclaimed { id, token, attempt, state: rec.state, reason, why, killed_group: killed, worker_id }),
                Err(e) if e.kind == Kind::LeaseLost => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn counts(&self) -> Result<Counts> {
        let rows = self.rows(
            concat!("SELECT state, run_at <= now(), count(*), min(", ms!("run_at"), ") FROM {s}.job WHERE queue = $1 GROUP BY 1, 2"),
            &[&self.t.queue],
        )?;
        let mut c = Counts::default();
        for r in rows {
            let (Some(state), due) = (State::parse(r.get(0)), r.get::<_, bool>(1)) else { continue };
            c.add(state, due, r.get::<_, i64>(2) as u64);
            if state == State::Pending && !due {
                c.next_due_ms = r.get(3);
            }
        }
        Ok(c)
    }

    fn group_counts(&self) -> Result<BTreeMap<Option<String>, Counts>> {
        let rows = self.rows("SELECT spec->>'group', state, run_at <= now(), count(*) FROM {s}.job WHERE queue = $1 GROUP BY 1, 2, 3", &[&self.t.queue])?;
        let mut out: BTreeMap<Option<String>, Counts> = BTreeMap::new();
        for r in rows {
            let Some(state) = State::parse(r.get(1)) else { continue };
            out.entry(r.get(0)).or_default().add(state, r.get(2), r.get::<_, i64>(3) as u64);
        }
        Ok(out)
    }

    fn entries(&self, states: &[State]) -> Result<Vec<Entry>> {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let rows = self.rows(&format!("SELECT {ENTRY_COLS} FROM {{s}}.job WHERE queue = $1 AND state = ANY($2)"), &[&self.t.queue, &names])?;
        Ok(rows.iter().map(entry).collect())
    }

    fn locate(&self, id: &str) -> Result<Option<Entry>> {
        crate::id::check_id(id)?;
        Ok(self.row(&format!("SELECT {ENTRY_COLS} FROM {{s}}.job WHERE queue = $1 AND id = $2"), &[&self.t.queue, &id])?.as_ref().map(entry))
    }

    fn resolve(&self, token: &str) -> Result<Resolved> {
        if crate::id::is_valid_id(token) && self.locate(token)?.is_some() {
            return Ok(Resolved::Id(token.to_owned()));
        }
        // Each step: the first candidates by id and how many there are.
        let step = |filter: &str, arg: &[&(dyn ToSql + Sync)]| -> Result<Resolved> {
            let stmt = format!(
                "SELECT id, state, spec->>'name', count(*) OVER () FROM {{s}}.job WHERE queue = $1 AND {filter} ORDER BY id COLLATE \"C\" LIMIT {}",
                resolve::LISTED
            );
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.t.queue];
            params.extend_from_slice(arg);
            let rows = self.rows(&stmt, &params)?;
            let total = rows.first().map_or(0, |r| usize::try_from(r.get::<_, i64>(3)).unwrap_or(usize::MAX));
            let mut first: Vec<Candidate> =
                rows.iter().map(|r| Candidate { id: r.get(0), state: State::parse(r.get(1)).unwrap_or(State::Dead), name: r.get(2) }).collect();
            Ok(match total {
                0 => Resolved::None,
                1 => Resolved::Id(first.remove(0).id),
                total => Resolved::Ambiguous { first, total },
            })
        };
        if resolve::may_be_short(token) {
            // Ids hold no `%`; `_` is escaped. Indexed: job_id_prefix, job_id_suffix.
            let like = |t: String| format!("{}%", t.to_uppercase().replace('_', "\\_"));
            let (prefix, suffix) = (like(token.to_owned()), like(token.chars().rev().collect()));
            let found = step("(upper(id) LIKE $2 OR upper(reverse(id)) LIKE $3) AND length(id) > $4", &[&prefix, &suffix, &(token.len() as i32)])?;
            if found != Resolved::None {
                return Ok(found);
            }
        }
        if !resolve::may_be_name(token) {
            return Ok(Resolved::None);
        }
        // Indexed: job_name.
        step("spec->>'name' = $2 AND state IN ('pending','waiting','held','running')", &[&token])
    }

    fn last_pushed(&self) -> Result<Option<String>> {
        let r = self.row(
            "SELECT id FROM {s}.job WHERE queue = $1 AND pusher = current_user ORDER BY id COLLATE \"C\" DESC LIMIT 1",
            &[&self.t.queue],
        )?;
        Ok(r.map(|r| r.get(0)))
    }

    fn finished(&self, id: &str) -> Option<State> {
        self.locate(id).ok().flatten().map(|e| e.state).filter(|s| s.is_terminal())
    }

    fn finished_all(&self, ids: &[&str]) -> Vec<Option<State>> {
        let ended: HashMap<String, State> = self
            .rows("SELECT id, state FROM {s}.job WHERE queue = $1 AND id = ANY($2) AND state IN ('done', 'dead', 'canceled')", &[&self.t.queue, &ids])
            .unwrap_or_default()
            .iter()
            .filter_map(|r| Some((r.get::<_, String>(0), State::parse(r.get(1))?)))
            .collect();
        ids.iter().map(|id| ended.get(*id).copied()).collect()
    }

    fn job(&self, e: &Entry) -> Result<Option<(Entry, Job)>> {
        let Some(r) = self.row(&format!("SELECT {ENTRY_COLS}, spec FROM {{s}}.job WHERE queue = $1 AND id = $2"), &[&self.t.queue, &e.id])? else {
            return Ok(None);
        };
        Ok(Some((entry(&r), self.job_of(r.get(7))?)))
    }

    fn changed_at_ms(&self, e: &Entry) -> Option<i64> {
        // A listing read it with the entry.
        if e.changed_at_ms.is_some() {
            return e.changed_at_ms;
        }
        self.row(concat!("SELECT ", ms!("changed_at"), " FROM {s}.job WHERE queue = $1 AND id = $2"), &[&self.t.queue, &e.id]).ok().flatten().map(|r| r.get(0))
    }

    fn last_result(&self, id: &str) -> Option<ResultRecord> {
        let r = self
            .row(
                "SELECT (SELECT result FROM {s}.attempt WHERE queue = $1 AND id = $2 AND result IS NOT NULL ORDER BY attempt DESC LIMIT 1),
                        (SELECT rec FROM {s}.ended WHERE queue = $1 AND id = $2)",
                &[&self.t.queue, &id],
            )
            .ok()??;
        latest(r.get(0), r.get(1))
    }

    fn last_attempt(&self, id: &str) -> u32 {
        // The row's counter: claims never go back, whatever the state.
        self.row("SELECT attempt FROM {s}.job WHERE queue = $1 AND id = $2", &[&self.t.queue, &id]).ok().flatten().map_or(0, |r| r.get::<_, i32>(0) as u32)
    }

    fn lease(&self, id: &str, token: &str) -> Option<Lease> {
        let tok: i64 = token.parse().ok()?;
        let r = self.row("SELECT lease FROM {s}.attempt WHERE queue = $1 AND id = $2 AND token = $3", &[&self.t.queue, &id, &tok]).ok()??;
        serde_json::from_value(r.get(0)).ok()
    }

    fn listed(&self, entries: &[Entry]) -> Result<Vec<Listed>> {
        // Ids listed more than once (`q-ls A A`) are shown each time.
        let mut times: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
        for e in entries {
            *times.entry(e.id.as_str()).or_default() += 1;
        }
        let ids: Vec<&str> = times.keys().copied().collect();
        let mut found: Vec<Option<Listed>> = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LISTED_ROWS) {
            for r in self.rows(LISTED, &[&self.t.queue, &chunk])? {
                // A record that cannot be read is left out, as `job` leaves it.
                let Ok(postgres::types::Json(job)) = r.try_get::<_, postgres::types::Json<Job>>(7) else { continue };
                let entry = entry(&r);
                let total = |i: usize| r.get::<_, Option<i64>>(i).unwrap_or(0);
                let usage = crate::record::Usage {
                    attempts: total(8) as u32,
                    wall_ms: total(9) as u64,
                    cpu_user_ms: total(10) as u64,
                    cpu_sys_ms: total(11) as u64,
                    max_rss_kb: total(12) as u64,
                };
                let last = latest(r.get(13), r.get(14));
                let running = entry.state == State::Running;
                let lease = r.get::<_, Option<Value>>(15).filter(|_| running).and_then(|v| serde_json::from_value(v).ok());
                let run = r.get::<_, Option<Value>>(16).filter(|_| running).and_then(|v| serde_json::from_value(v).ok());
                found.push(Some(Listed { entry, job, last, usage: Some(usage), lease, run }));
            }
        }
        let at: HashMap<String, usize> = found.iter().enumerate().filter_map(|(i, l)| Some((l.as_ref()?.entry.id.clone(), i))).collect();
        let mut out = Vec::with_capacity(found.len());
        for e in entries {
            let (Some(&i), Some(n)) = (at.get(&e.id), times.get_mut(e.id.as_str())) else { continue };
            *n -= 1;
            out.extend(if *n == 0 { found[i].take() } else { found[i].clone() });
        }
        Ok(out)
    }

    fn live_records(&self, id: &str, attempt: u32) -> (Option<Lease>, Option<RunInfo>) {
        let Ok(Some(r)) = self.row("SELECT lease, run FROM {s}.attempt WHERE queue = $1 AND id = $2 AND attempt = $3", &[&self.t.queue, &id, &(attempt as i32)]) else {
            return (None, None);
        };
        (
            serde_json::from_value(r.get(0)).ok(),
            r.get::<_, Option<Value>>(1).and_then(|v| serde_json::from_value(v).ok()),
        )
    }

    fn idle_for(&self, horizon_ms: Option<u64>, fit: Option<&crate::slots::Fit>) -> Result<Idle> {
        // A running job is work: then the other kinds are not counted (as
        // on a directory). One probe of the index of running jobs, where
        // the counts read the whole queue: a supervisor draining with
        // --exit-on-idle looks every few milliseconds.
        let running = self
            .row(
                "SELECT EXISTS (SELECT 1 FROM {s}.job WHERE queue = $1 AND state = 'running'),
                        EXISTS (SELECT 1 FROM {s}.queue WHERE name = $1 AND paused_since IS NOT NULL AND (paused_until IS NULL OR paused_until > now()))",
                &[&self.t.queue],
            )?
            .expect("a row");
        let paused: bool = running.get(1);
        if running.get::<_, bool>(0) {
            return Ok(Idle { busy: true, paused, running: 1, ..Idle::default() });
        }
        let mut promoted = false;
        loop {
            let horizon = horizon_ms.map_or(f64::INFINITY, |h| h as f64 / 1000.0);
            let r = self
                .row(
                    "SELECT count(*) FILTER (WHERE state = 'running'),
                            count(*) FILTER (WHERE state = 'pending' AND ($2 = 'Infinity'::float8 OR run_at <= now() + make_interval(secs => $2))),
                            count(*) FILTER (WHERE state = 'pending' AND $2 <> 'Infinity'::float8 AND run_at > now() + make_interval(secs => $2)),
                            count(*) FILTER (WHERE state = 'waiting'),
                            count(*) FILTER (WHERE state = 'held')
                       FROM {s}.job WHERE queue = $1",
                    &[&self.t.queue, &horizon],
                )?
                .expect("an aggregate row");
            let n = |i: usize| r.get::<_, i64>(i) as u64;
            let mut s = Idle { paused, running: n(0), due: n(1), later: n(2), waiting: n(3), held: n(4), ..Idle::default() };
            if s.due > 0 {
                // Due jobs that say what they take: those these slots never fit are not work.
                let no_slots = crate::slots::Fit::default();
                let fit = fit.unwrap_or(&no_slots);
                let rows = self.rows(
                    "SELECT spec->'needs', spec->>'group' FROM {s}.job
                      WHERE queue = $1 AND state = 'pending' AND (spec ? 'needs' OR spec ? 'group')
                        AND ($2 = 'Infinity'::float8 OR run_at <= now() + make_interval(secs => $2))",
                    &[&self.t.queue, &horizon],
                )?;
                for r in rows {
                    let needs: BTreeMap<String, u32> = r.get::<_, Option<Value>>(0).and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
                    let group: Option<String> = r.get(1);
                    if !fit.can_fit(&fit.demand(&needs, group.as_deref())) {
                        s.unfit += 1;
                    }
                }
                s.due -= s.unfit;
            }
            s.busy = s.running > 0 || (s.due > 0 && !paused);
            if !s.busy && s.waiting > 0 && !promoted {
                promoted = true;
                if self.promote_stranded()? > 0 {
                    continue;
                }
            }
            return Ok(s);
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.health()
    }

    fn supervisors(&self) -> Result<Vec<crate::supervisor::Supervisor>> {
        self.sup_list()
    }

    fn publish_supervisor(&self, s: &crate::supervisor::Supervisor) -> Result<()> {
        self.sup_publish(s)
    }

    fn unpublish_supervisor(&self, id: &str) -> Result<()> {
        self.sup_unpublish(id)
    }

    fn ask_supervisor(&self, ask: &crate::supervisor::SupAsk) -> Result<()> {
        self.sup_ask(ask)
    }

    fn take_supervisor_asks(&self, id: &str) -> Result<Vec<crate::supervisor::SupAsk>> {
        self.sup_take(id)
    }

    fn health(&self) -> Vec<String> {
        let mut out = Vec::new();
        // Dead row versions the vacuum has not taken: claims and settles
        // get slower as they pile up.
        if let Ok(Some(r)) = self.row(
            "SELECT n_dead_tup, n_live_tup FROM pg_catalog.pg_stat_user_tables WHERE schemaname = $1 AND relname = 'job'",
            &[&self.t.schema],
        ) {
            let (dead, live): (i64, i64) = (r.get(0), r.get(1));
            if dead > 100_000 && dead > live {
                out.push(format!("table {}.job holds {dead} dead row versions (and {live} live ones): its vacuum is behind or blocked", self.t.schema));
            }
        }
        // An old transaction keeps the vacuum from taking any of them.
        let old_ms = crate::failpoint::override_ms("Q_PG_OLD_XACT_MS", 10 * 60 * 1000);
        if let Ok(Some(r)) = self.row(
            concat!(
                "SELECT pid, ",
                ms!("now() - xact_start"),
                ", coalesce(application_name, '') FROM pg_catalog.pg_stat_activity
                 WHERE datname = current_database() AND xact_start IS NOT NULL AND pid <> pg_backend_pid()
                 ORDER BY xact_start LIMIT 1"
            ),
            &[],
        ) {
            let (pid, age): (i32, i64) = (r.get(0), r.get(1));
            if age >= old_ms {
                out.push(format!(
                    "a transaction open for {} (server pid {pid}, application {:?}) keeps the vacuum from removing dead rows of the queue's tables",
                    time::human_duration(age.max(0) as u64),
                    r.get::<_, String>(2)
                ));
            }
        }
        out
    }

    fn log_attempts(&self, id: &str) -> Vec<u32> {
        let rows = self
            .rows(
                "SELECT attempt FROM {s}.attempt WHERE queue = $1 AND id = $2 AND (run IS NOT NULL OR result ? 'cpu_user_ms' AND result->'cpu_user_ms' <> 'null'::jsonb)
                 UNION SELECT DISTINCT attempt FROM {s}.output WHERE queue = $1 AND id = $2 ORDER BY 1",
                &[&self.t.queue, &id],
            )
            .unwrap_or_default();
        rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect()
    }

    fn log_reader(&self, id: &str, attempt: u32, stream: Stream) -> Result<Option<Box<dyn std::io::Read + Send>>> {
        let st = stream_no(stream);
        let any = self.row("SELECT 1 FROM {s}.output WHERE queue = $1 AND id = $2 AND attempt = $3 AND stream = $4 LIMIT 1", &[&self.t.queue, &id, &(attempt as i32), &st])?;
        if any.is_none() {
            return Ok(None);
        }
        Ok(Some(Box::new(LogReader { q: self.clone_handle(), id: id.to_owned(), attempt: attempt as i32, stream: st, next: 0, buf: Vec::new(), at: 0 })))
    }

    fn log_order(&self, id: &str, attempt: u32, from: usize) -> Result<Option<Vec<Chunk>>> {
        let rows = self.rows(
            concat!(
                "SELECT stream, length(chunk)::int8, (sum(length(chunk)) OVER (PARTITION BY stream ORDER BY seq) - length(chunk))::int8, ",
                ms!("at"),
                " FROM {s}.output WHERE queue = $1 AND id = $2 AND attempt = $3 ORDER BY seq"
            ),
            &[&self.t.queue, &id, &(attempt as i32)],
        )?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .skip(from)
                .map(|r| Chunk {
                    stream: if r.get::<_, i16>(0) == 2 { Stream::Stderr } else { Stream::Stdout },
                    offset: r.get::<_, i64>(2) as u64,
                    len: r.get::<_, i64>(1) as u64,
                    at_ms: r.get(3),
                })
                .collect(),
        ))
    }

    fn log_location(&self, _id: &str, _attempt: u32, _stream: Stream) -> Option<String> {
        None
    }

    fn cancel(&self, id: &str) -> Result<State> {
        crate::id::check_id(id)?;
        self.tx(|q, tx| {
            let (st, attempt, _) = locked(q, tx, id)?;
            match st {
                State::Pending | State::Waiting | State::Held => {
                    end_in(q, tx, id, State::Canceled, Reason::Canceled, None)?;
                    on_terminal(q, tx, id, State::Canceled)?;
                }
                State::Running => ask_in(q, tx, id, attempt, crate::record::Ask::Cancel)?,
                _ => {}
            }
            Ok(st)
        })
    }

    fn retry(&self, id: &str) -> Result<()> {
        crate::id::check_id(id)?;
        self.tx(|q, tx| {
            // A dedupe key comes back with the job, if no other unfinished
            // job took it meanwhile: the key's lock first, as a push takes
            // it (before any row lock).
            let key: Option<String> = tx
                .query_opt(&q.q("SELECT key FROM {s}.job WHERE queue = $1 AND id = $2"), &[&q.t.queue, &id])
                .map_err(|e| q.err(e))?
                .and_then(|r| r.get(0));
            lock_keys(q, tx, key.as_deref())?;
            let st = locked_state(q, tx, id)?;
            if !st.is_terminal() {
                return Err(Error::new(Kind::Busy, format!("job {id} is {}: only done, dead or canceled jobs can be retried", st.as_str())));
            }
            if let Some(k) = &key
                && let Some((holder, state)) = key_holder(q, tx, k, id)?
            {
                return Err(crate::revise::key_taken(k, &holder, state, crate::revise::NOTHING_CHANGED));
            }
            tx.execute(&q.q("DELETE FROM {s}.ended WHERE queue = $1 AND id = $2"), &[&q.t.queue, &id]).map_err(|e| q.err(e))?;
            tx.execute(
                &q.q("UPDATE {s}.job SET state = 'pending', failures = 0, interrupts = 0, run_at = now(), changed_at = now() WHERE queue = $1 AND id = $2"),
                &[&q.t.queue, &id],
            )
            .map_err(|e| q.err(e))?;
            q.notify(tx)
        })
    }

    fn hold(&self, id: &str) -> Result<State> {
        crate::id::check_id(id)?;
        self.tx(|q, tx| {
            let st = locked_state(q, tx, id)?;
            if matches!(st, State::Pending | State::Waiting) {
                tx.execute(&q.q("UPDATE {s}.job SET state = 'held', changed_at = now() WHERE queue = $1 AND id = $2"), &[&q.t.queue, &id]).map_err(|e| q.err(e))?;
            }
            Ok(st)
        })
    }

    fn release(&self, id: &str) -> Result<State> {
        crate::id::check_id(id)?;
        self.tx(|q, tx| {
            let (st, _, spec) = locked(q, tx, id)?;
            if st != State::Held {
                return Ok(st);
            }
            let job = q.job_of(spec)?;
            let to = if job.after.is_empty() { "pending" } else { "waiting" };
            tx.execute(&q.q("UPDATE {s}.job SET state = $3, changed_at = now() WHERE queue = $1 AND id = $2"), &[&q.t.queue, &id, &to]).map_err(|e| q.err(e))?;
            if to == "waiting" {
                let moved = promote_in(q, tx, id)?;
                if moved == Some(State::Canceled) {
                    on_terminal(q, tx, id, State::Canceled)?;
                }
            }
            q.notify(tx)?;
            Ok(st)
        })
    }

    fn remove(&self, id: &str) -> Result<State> {
        crate::id::check_id(id)?;
        self.tx(|q, tx| {
            let st = locked_state(q, tx, id)?;
            if !st.is_terminal() {
                return Err(Error::new(Kind::Busy, format!("job {id} is {}: cancel it first, only finished jobs are removed", st.as_str())));
            }
            for t in ["output", "attempt", "ended", "dep", "job"] {
                tx.execute(&q.q(&format!("DELETE FROM {{s}}.{t} WHERE queue = $1 AND id = $2")), &[&q.t.queue, &id]).map_err(|e| q.err(e))?;
            }
            Ok(st)
        })
    }

    fn pause(&self, until_ms: Option<i64>) -> Result<()> {
        let until = until_ms.map(|ms| ms as f64 / 1000.0);
        self.exec(
            "INSERT INTO {s}.queue (name, paused_since, paused_until) VALUES ($1, now(), to_timestamp($2))
             ON CONFLICT (name) DO UPDATE SET paused_since = now(), paused_until = to_timestamp($2)",
            &[&self.t.queue, &until],
        )?;
        Ok(())
    }

    fn resume(&self) -> Result<bool> {
        self.tx(|q, tx| {
            let was = q.paused_in(tx)?.is_some();
            tx.execute(&q.q("UPDATE {s}.queue SET paused_since = NULL, paused_until = NULL WHERE name = $1"), &[&q.t.queue]).map_err(|e| q.err(e))?;
            q.notify(tx)?;
            Ok(was)
        })
    }

    fn paused(&self, now_ms: i64) -> Option<Pause> {
        let p = self.main.with(|c| self.paused_in(c)).ok()??;
        match p.until_ms {
            Some(u) if u <= now_ms => None,
            _ => Some(p),
        }
    }

    fn wake(&self) {
        let _ = self.exec("SELECT pg_notify($1, '')", &[&self.channel]);
    }

    fn waiter(&self) -> Box<dyn Waiter> {
        Box::new(PgWaiter::new(self))
    }

    fn lock(&self, which: Singleton, patience: Duration) -> Result<Acquired> {
        let (what, k) = self.singleton(which);
        let until = Instant::now() + patience;
        let mut c = self.main.target().connect()?;
        loop {
            let got: bool = c.query_one("SELECT pg_try_advisory_lock($1)", &[&k]).map_err(|e| self.err(e))?.get(0);
            if got {
                let me = json(&Holder::me());
                c.execute(
                    &self.q("INSERT INTO {s}.holder (queue, what, holder) VALUES ($1, $2, $3) ON CONFLICT (queue, what) DO UPDATE SET holder = EXCLUDED.holder"),
                    &[&self.t.queue, &what, &me],
                )
                .map_err(|e| self.err(e))?;
                return Ok(Acquired::Held(LockGuard::session(Box::new(HeldSingleton { c, k }))));
            }
            if Instant::now() >= until {
                let h = c
                    .query_opt(&self.q("SELECT holder FROM {s}.holder WHERE queue = $1 AND what = $2"), &[&self.t.queue, &what])
                    .ok()
                    .flatten()
                    .and_then(|r| serde_json::from_value::<Holder>(r.get(0)).ok());
                return Ok(Acquired::Busy(h));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn is_locked(&self, which: Singleton) -> bool {
        let (_, k) = self.singleton(which);
        self.advisory_held(k)
    }

    fn announce_worker(&self) -> Result<Presence> {
        // A session advisory lock on the side connection (taken again if it
        // is made again): the server lets go when the worker dies.
        let k = key(&self.t.schema, &self.t.queue, &format!("worker\0{}", crate::id::new_id()));
        self.exec(
            "INSERT INTO {s}.worker (queue, key, holder) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&self.t.queue, &k, &json(&Holder::me())],
        )?;
        let take = format!("SELECT pg_advisory_lock({k})");
        self.side.keep(take.clone())?;
        Ok(Presence::new(Box::new(Announced { q: self.clone_handle(), key: k, take })))
    }

    fn live_workers(&self) -> usize {
        let Ok(rows) = self.rows("SELECT key FROM {s}.worker WHERE queue = $1", &[&self.t.queue]) else { return 0 };
        rows.iter().filter(|r| self.advisory_held(r.get(0))).count()
    }

    fn promote_stranded(&self) -> Result<usize> {
        self.tx(|q, tx| {
            let waiting = tx
                .query(&q.q("SELECT id FROM {s}.job WHERE queue = $1 AND state = 'waiting' FOR UPDATE SKIP LOCKED"), &[&q.t.queue])
                .map_err(|e| q.err(e))?;
            let mut moved = 0;
            let mut ready = false;
            for r in waiting {
                let id: String = r.get(0);
                match promote_in(q, tx, &id)? {
                    Some(State::Pending) => {
                        moved += 1;
                        ready = true;
                    }
                    Some(st) => {
                        moved += 1;
                        ready |= on_terminal(q, tx, &id, st)?;
                    }
                    None => {}
                }
            }
            if ready {
                q.notify(tx)?;
            }
            Ok(moved)
        })
    }

    fn import(&self, jobs: Vec<Import>) -> Result<usize> {
        // One transaction: the whole batch or nothing.
        self.tx(|q, tx| {
            if import_in(q, tx, &jobs)? {
                q.notify(tx)?;
            }
            Ok(())
        })?;
        // A waiting job whose dependencies all ended moves on now.
        self.promote_stranded()?;
        Ok(jobs.len())
    }

    fn gc(&self, opts: &GcOpts, out: &mut dyn FnMut(Action)) -> Result<Vec<Error>> {
        let mut errors = Vec::new();
        match self.reclaim(opts.dry_run) {
            Ok(list) => {
                for r in list {
                    out(Action { action: "reclaim", id: Some(r.id.clone()), path: format!("job {}", r.id).into(), reason: r.why, to: None, state: Some(r.state) });
                }
            }
            Err(e) => errors.push(e),
        }
        for (st, ttl) in [(State::Done, opts.done_ttl_ms), (State::Dead, opts.dead_ttl_ms), (State::Canceled, opts.canceled_ttl_ms)] {
            let Some(ttl) = ttl else { continue };
            let secs = ttl as f64 / 1000.0;
            // A finished job that a waiting job still depends on is kept.
            let old = self.rows(
                "SELECT j.id FROM {s}.job j WHERE j.queue = $1 AND j.state = $2 AND j.changed_at < now() - make_interval(secs => $3)
                   AND NOT EXISTS (SELECT 1 FROM {s}.dep d JOIN {s}.job w ON w.queue = d.queue AND w.id = d.id
                                    WHERE d.queue = j.queue AND d.dep = j.id AND w.state IN ('waiting', 'held'))
                 LIMIT 5000",
                &[&self.t.queue, &st.as_str(), &secs],
            );
            match old {
                Ok(rows) => {
                    for r in rows {
                        let id: String = r.get(0);
                        if !opts.dry_run
                            && let Err(e) = self.remove(&id)
                        {
                            errors.push(e);
                            continue;
                        }
                        out(Action { action: "expire", id: Some(id.clone()), path: format!("job {id}").into(), reason: format!("{} longer than its retention", st.as_str()), to: None, state: None });
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        Ok(errors)
    }

    fn revise(&self, id: &str, seen: u32, new: &NewJob) -> Result<State> {
        crate::id::check_id(id)?;
        let secs = new.run_at_ms as f64 / 1000.0;
        self.tx(|q, tx| {
            // A key's pushers and revisers in turn, as a push takes it:
            // before the row's lock, as a push (which may wait on the row
            // for its `after`) does.
            lock_keys(q, tx, new.job.key.as_deref())?;
            let (st, attempt, spec) = locked(q, tx, id)?;
            if !matches!(st, State::Pending | State::Waiting | State::Held) {
                return Err(Error::new(Kind::Busy, format!("job {id} is {}: only pending, waiting or held jobs can be changed", st.as_str())));
            }
            if attempt as u32 != seen {
                return Err(Error::new(Kind::Busy, format!("job {id} was claimed or moved meanwhile: nothing changed")));
            }
            let old: Job = serde_json::from_value(spec).map_err(|e| Error::new(Kind::Data, format!("job {id}: bad record: {e}")))?;
            let mut job = new.job.clone();
            // A new key must be free (the unique index would only refuse);
            // the old one is free once the row no longer names it.
            if let Some(k) = &new.job.key
                && old.key.as_ref() != Some(k)
                && let Some((holder, state)) = key_holder(q, tx, k, id)?
            {
                return Err(crate::revise::key_taken(k, &holder, state, crate::revise::NOTHING_CHANGED));
            }
            // Switched to the pusher's environment: the reviser's.
            if let Some(env) = &new.pusher_env {
                job.env_ref = Some(store_env(q, tx, env)?);
            }
            let mut to = st;
            if old.after != new.job.after {
                let waits = revise_deps(q, tx, id, &new.job.after)?;
                if st != State::Held {
                    to = if waits { State::Waiting } else { State::Pending };
                }
            }
            tx.execute(
                &q.q("UPDATE {s}.job SET spec = $3, priority = $4, run_at = to_timestamp($5), state = $6, key = $7, changed_at = now() WHERE queue = $1 AND id = $2"),
                &[&q.t.queue, &id, &json(&job), &job.priority, &secs, &to.as_str(), &job.key],
            )
            .map_err(|e| q.err(e))?;
            if to == State::Pending {
                q.notify(tx)?;
            }
            Ok(st)
        })
    }

    fn usage(&self, id: &str) -> Result<crate::record::Usage> {
        crate::id::check_id(id)?;
        let rows = self.rows("SELECT result FROM {s}.attempt WHERE queue = $1 AND id = $2 AND result IS NOT NULL", &[&self.t.queue, &id])?;
        let mut u = crate::record::Usage::default();
        for r in rows {
            if let Ok(rec) = serde_json::from_value::<ResultRecord>(r.get(0)) {
                u.add(&rec);
            }
        }
        Ok(u)
    }
    fn request(&self, id: &str, ask: crate::record::Ask) -> Result<State> {
        crate::id::check_id(id)?;
        self.tx(|q, tx| {
            let (st, attempt, _) = locked(q, tx, id)?;
            if st == State::Running {
                ask_in(q, tx, id, attempt, ask)?;
            }
            Ok(st)
        })
    }

    fn slot_dir(&self) -> PathBuf {
        self.local.join("slots")
    }
}

/// The new dependencies of a revised job, checked as a push checks them
/// (each exists, none failed) and for a cycle (none waits, however
/// indirectly, on the job), then recorded. `Ok(true)` when one is
/// unfinished.
fn revise_deps(q: &PgQueue, tx: &mut postgres::Transaction<'_>, id: &str, after: &[String]) -> Result<bool> {
    let mut waits = false;
    for dep in after {
        if dep == id {
            return Err(Error::new(Kind::Data, format!("field \"after\": job {id} would wait on itself")));
        }
        // Marked as waited on, and locked: it cannot end while we look and
        // write, and its settle takes the path that moves its dependents.
        let r = tx
            .query_opt(&q.q(WAITED_ON_ONE), &[&q.t.queue, dep])
            .map_err(|e| q.err(e))?
            .ok_or_else(|| Error::new(Kind::NoJob, format!("field \"after\": no such job {dep}")))?;
        match State::parse(r.get(0)) {
            Some(State::Done) => {}
            Some(s @ (State::Dead | State::Canceled)) => {
                return Err(Error::new(Kind::Data, format!("field \"after\": job {dep} is {}: this job would never run", s.as_str())));
            }
            _ => waits = true,
        }
    }
    let cycle = tx
        .query_opt(
            &q.q("WITH RECURSIVE up(id) AS (SELECT unnest($2::text[]) UNION SELECT d.dep FROM {s}.dep d JOIN up ON d.queue = $1 AND d.id = up.id) SELECT 1 FROM up WHERE id = $3"),
            &[&q.t.queue, &after, &id],
        )
        .map_err(|e| q.err(e))?;
    if cycle.is_some() {
        return Err(Error::new(Kind::Data, format!("field \"after\": job {id} would wait on itself")));
    }
    tx.execute(&q.q("DELETE FROM {s}.dep WHERE queue = $1 AND id = $2"), &[&q.t.queue, &id]).map_err(|e| q.err(e))?;
    for dep in after {
        tx.execute(&q.q("INSERT INTO {s}.dep (queue, id, dep) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"), &[&q.t.queue, &id, dep]).map_err(|e| q.err(e))?;
    }
    Ok(waits)
}

/// Record a request to the running attempt `attempt` of job `id`: a cancel
/// sets `attempt.cancel`, anything else is appended to `attempt.requests`.
fn ask_in(q: &PgQueue, tx: &mut postgres::Transaction<'_>, id: &str, attempt: i32, ask: crate::record::Ask) -> Result<()> {
    let r = match ask {
        crate::record::Ask::Cancel => tx.execute(&q.q("UPDATE {s}.attempt SET cancel = true WHERE queue = $1 AND id = $2 AND attempt = $3"), &[&q.t.queue, &id, &attempt]),
        _ => tx.execute(
            &q.q("UPDATE {s}.attempt SET requests = requests || jsonb_build_array($4::jsonb) WHERE queue = $1 AND id = $2 AND attempt = $3"),
            &[&q.t.queue, &id, &attempt, &json(&ask)],
        ),
    };
    r.map_err(|e| q.err(e))?;
    Ok(())
}

/// The requests of an attempt from its row: those appended, oldest first
/// (each keyed by its place), then a cancel.
fn asked(cancel: bool, requests: Value) -> Vec<Request> {
    let mut out: Vec<Request> = match requests {
        Value::Array(v) => v
            .into_iter()
            .enumerate()
            .filter_map(|(i, a)| Some(Request { key: format!("r{i}"), ask: serde_json::from_value(a).ok()? }))
            .collect(),
        _ => Vec::new(),
    };
    if cancel {
        out.push(Request { key: "cancel".into(), ask: crate::record::Ask::Cancel });
    }
    out
}

/// Push one job inside the push's transaction: a dedupe key that a live job
/// holds answers with that job; dependencies decide waiting, pending or
/// canceled; an id pushed before (a retried push) answers as it is.
/// Jobs per statement of a push's multi-row insert.
const PUSH_ROWS: usize = 1000;

/// Do `each` item behind a savepoint of `tx`, so that a refused one does
/// not undo the others (a lost connection fails the whole transaction).
/// The answers, and whether one of them asked for a `NOTIFY`.
fn in_savepoints<I: ?Sized, T>(
    q: &PgQueue,
    tx: &mut postgres::Transaction<'_>,
    items: &[&I],
    each: &mut impl FnMut(&PgQueue, &mut postgres::Transaction<'_>, &I) -> Result<(T, bool)>,
) -> Result<(Vec<Result<T>>, bool)> {
    let mut notify = false;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut sp = tx.transaction().map_err(|e| q.err(e))?;
        match each(q, &mut sp, item) {
            Ok((v, n)) => {
                sp.commit().map_err(|e| q.err(e))?;
                notify |= n;
                out.push(Ok(v));
            }
            Err(e) if e.kind == Kind::Busy => return Err(e),
            Err(e) => {
                sp.rollback().map_err(|e| q.err(e))?;
                out.push(Err(e));
            }
        }
    }
    Ok((out, notify))
}

/// Insert jobs without a key or dependencies in one statement (pending).
/// An id the queue has already is a push retried after its commit's answer
/// was lost: answered as that job is.
fn push_plain(q: &PgQueue, tx: &mut postgres::Transaction<'_>, jobs: &[(Job, i64)]) -> Result<Vec<Pushed>> {
    let ids: Vec<&str> = jobs.iter().map(|(j, _)| j.id.as_str()).collect();
    let prios: Vec<i32> = jobs.iter().map(|(j, _)| j.priority).collect();
    let secs: Vec<f64> = jobs.iter().map(|(_, ms)| *ms as f64 / 1000.0).collect();
    let specs: Vec<Value> = jobs.iter().map(|(j, _)| json(j)).collect();
    let inserted: std::collections::HashSet<String> = tx
        .query(
            &q.q("INSERT INTO {s}.job (queue, id, state, priority, run_at, spec)
                  SELECT $1, u.id, 'pending', u.priority, to_timestamp(u.secs), u.spec
                    FROM unnest($2::text[], $3::int4[], $4::float8[], $5::jsonb[]) AS u(id, priority, secs, spec)
                  ON CONFLICT (queue, id) DO NOTHING RETURNING id"),
            &[&q.t.queue, &ids, &prios, &secs, &specs],
        )
        .map_err(|e| q.err(e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    jobs.iter()
        .map(|(j, ms)| {
            if inserted.contains(&j.id) {
                return Ok(Pushed { id: j.id.clone(), state: State::Pending, run_at_ms: *ms, deduped: false });
            }
            let r = tx
                .query_one(&q.q(concat!("SELECT state, ", ms!("run_at"), " FROM {s}.job WHERE queue = $1 AND id = $2")), &[&q.t.queue, &j.id])
                .map_err(|e| q.err(e))?;
            Ok(Pushed { id: j.id.clone(), state: State::parse(r.get(0)).unwrap_or(State::Pending), run_at_ms: r.get(1), deduped: false })
        })
        .collect()
}

fn push_one(q: &PgQueue, tx: &mut postgres::Transaction<'_>, job: &Job, run_at_ms: i64) -> Result<Pushed> {
    if let Some(r) = tx
        .query_opt(&q.q(concat!("SELECT state, ", ms!("run_at"), " FROM {s}.job WHERE queue = $1 AND id = $2")), &[&q.t.queue, &job.id])
        .map_err(|e| q.err(e))?
    {
        return Ok(Pushed { id: job.id.clone(), state: State::parse(r.get(0)).unwrap_or(State::Pending), run_at_ms: r.get(1), deduped: false });
    }
    if let Some(key) = &job.key {
        // Pushers of one key in turn (the unique index would only refuse):
        // the call holds the key's lock ([`lock_keys`], all of them first).
        if let Some(r) = tx
            .query_opt(
                &q.q(concat!("SELECT id, state, ", ms!("run_at"), " FROM {s}.job WHERE queue = $1 AND key = $2 AND state IN ('pending','waiting','held','running')")),
                &[&q.t.queue, key],
            )
            .map_err(|e| q.err(e))?
        {
            return Ok(Pushed { id: r.get(0), state: State::parse(r.get(1)).unwrap_or(State::Pending), run_at_ms: r.get(2), deduped: true });
        }
    }
    let mut state = State::Pending;
    let mut failed = None;
    if !job.after.is_empty() {
        // Marked as waited on, and locked: a dependency cannot end while
        // we look and write, and its settle moves its dependents.
        let rows = tx
            .query(&q.q(WAITED_ON), &[&q.t.queue, &job.after])
            .map_err(|e| q.err(e))?;
        for dep in &job.after {
            match rows.iter().find(|r| r.get::<_, &str>(0) == dep).and_then(|r| State::parse(r.get(1))) {
                None => return Err(Error::new(Kind::NoJob, format!("field \"after\": no such job {dep}"))),
                Some(State::Done) => {}
                Some(State::Dead | State::Canceled) => failed = Some(dep.clone()),
                Some(_) => state = State::Waiting,
            }
        }
    }
    let secs = run_at_ms as f64 / 1000.0;
    let first = if failed.is_some() { State::Held } else { state };
    tx.execute(
        &q.q("INSERT INTO {s}.job (queue, id, state, priority, run_at, key, spec) VALUES ($1, $2, $3, $4, to_timestamp($5), $6, $7)"),
        &[&q.t.queue, &job.id, &first.as_str(), &job.priority, &secs, &job.key, &json(job)],
    )
    .map_err(|e| q.err(e))?;
    for dep in &job.after {
        tx.execute(&q.q("INSERT INTO {s}.dep (queue, id, dep) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"), &[&q.t.queue, &job.id, dep])
            .map_err(|e| q.err(e))?;
    }
    if let Some(dep) = failed {
        end_in(q, tx, &job.id, State::Canceled, Reason::DependencyFailed, Some(serde_json::json!({"dependency": dep})))?;
        state = State::Canceled;
    }
    Ok(Pushed { id: job.id.clone(), state, run_at_ms, deduped: false })
}

/// Record a pusher's environment; its reference. Each role its own records
/// (only it may read them): the role is part of the name.
fn store_env(q: &PgQueue, tx: &mut postgres::Transaction<'_>, env: &BTreeMap<String, String>) -> Result<String> {
    let body = json(env);
    let user = q.t.config.get_user().unwrap_or("");
    let r = format!("{:016x}", crate::push::fnv64(format!("{user}\0{body}").as_bytes()));
    tx.execute(&q.q("INSERT INTO {s}.env (queue, ref, env) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"), &[&q.t.queue, &r, &body])
        .map_err(|e| q.err(e))?;
    Ok(r)
}

/// Import a batch in the transaction: refused whole when one id is taken.
fn import_in(q: &PgQueue, tx: &mut postgres::Transaction<'_>, jobs: &[Import]) -> Result<bool> {
    let ids: Vec<&str> = jobs.iter().map(|j| j.new.job.id.as_str()).collect();
    let have: Vec<String> = tx
        .query(&q.q("SELECT id FROM {s}.job WHERE queue = $1 AND id = ANY($2)"), &[&q.t.queue, &ids])
        .map_err(|e| q.err(e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !have.is_empty() {
        return Err(crate::import::taken(&have));
    }
    // Dedupe keys: their locks (as a push takes them, before any row
    // lock), then their holders: a key an unfinished job holds refuses the
    // batch.
    let keys: Vec<&str> = jobs.iter().filter_map(|j| j.new.job.key.as_deref()).collect();
    lock_keys(q, tx, keys.iter().copied())?;
    if let Some(r) = tx
        .query_opt(&q.q(&format!("SELECT key, id, state FROM {{s}}.job WHERE queue = $1 AND key = ANY($2) AND {UNFINISHED} LIMIT 1")), &[&q.t.queue, &keys])
        .map_err(|e| q.err(e))?
    {
        return Err(crate::revise::key_taken(r.get(0), r.get(1), State::parse(r.get(2)).unwrap_or(State::Pending), crate::import::NOT_IMPORTED));
    }
    // Dependencies outside the batch: marked and locked, as a push does.
    let deps: Vec<&str> = jobs.iter().flat_map(|j| j.new.job.after.iter().map(String::as_str)).filter(|d| !ids.contains(d)).collect();
    let known: BTreeMap<String, State> = tx
        .query(&q.q(WAITED_ON), &[&q.t.queue, &deps])
        .map_err(|e| q.err(e))?
        .iter()
        .map(|r| (r.get(0), State::parse(r.get(1)).unwrap_or(State::Dead)))
        .collect();
    crate::import::check(jobs, |id| Ok(known.contains_key(id)))?;
    let mut envs: BTreeMap<*const BTreeMap<String, String>, String> = BTreeMap::new();
    let mut ready = false;
    for j in jobs {
        let mut job = j.new.job.clone();
        if let Some(env) = &j.new.pusher_env {
            let r = match envs.entry(std::sync::Arc::as_ptr(env)) {
                std::collections::btree_map::Entry::Occupied(o) => o.get().clone(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(store_env(q, tx, env)?).clone(),
            };
            job.env_ref = Some(r);
        }
        let secs = j.new.run_at_ms as f64 / 1000.0;
        tx.execute(
            &q.q("INSERT INTO {s}.job (queue, id, state, priority, run_at, attempt, failures, interrupts, key, spec) VALUES ($1, $2, $3, $4, to_timestamp($5), $6, $7, $8, $9, $10)"),
            &[&q.t.queue, &job.id, &j.state.as_str(), &job.priority, &secs, &(j.c.attempt as i32), &(j.c.failures as i32), &(j.c.interrupts as i32), &job.key, &json(&job)],
        )
        .map_err(|e| q.err(e))?;
        for dep in &job.after {
            tx.execute(&q.q("INSERT INTO {s}.dep (queue, id, dep) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"), &[&q.t.queue, &job.id, dep])
                .map_err(|e| q.err(e))?;
        }
        ready |= j.state == State::Pending;
    }
    // Jobs of the batch that others of it wait on (not yet seen by anyone).
    let inner: Vec<&str> = jobs.iter().flat_map(|j| j.new.job.after.iter().map(String::as_str)).filter(|d| ids.contains(d)).collect();
    if !inner.is_empty() {
        tx.execute(&q.q(WAITED_ON), &[&q.t.queue, &inner]).map_err(|e| q.err(e))?;
    }
    Ok(ready)
}

/// The state of job `id`, its row locked until the transaction ends.
fn locked_state(q: &PgQueue, tx: &mut postgres::Transaction<'_>, id: &str) -> Result<State> {
    Ok(locked(q, tx, id)?.0)
}

/// Job `id`'s row, locked until the transaction ends (the row lock orders
/// every change of a job with its claims and settles: whichever comes
/// second sees what the first did): its state, attempt counter and record
/// (`spec`). 66 when there is no such job.
fn locked(q: &PgQueue, tx: &mut postgres::Transaction<'_>, id: &str) -> Result<(State, i32, Value)> {
    let r = tx
        .query_opt(&q.q("SELECT state, attempt, spec FROM {s}.job WHERE queue = $1 AND id = $2 FOR UPDATE"), &[&q.t.queue, &id])
        .map_err(|e| q.err(e))?
        .ok_or_else(|| Error::no_job(id))?;
    Ok((State::parse(r.get(0)).unwrap_or(State::Dead), r.get(1), r.get(2)))
}

/// Mark jobs as waited on (`job.waited`) and lock their rows; their ids
/// and states as they are now. A job gets a dependent only through this
/// statement, before the dependent's `dep` row is written: the update
/// makes a settle racing it see the mark (its fast path is fenced by `NOT
/// waited` and steps aside), and a settle that went first is seen here
/// (the update waits for it, then returns the state it left).
const WAITED_ON: &str = "UPDATE {s}.job SET waited = true WHERE queue = $1 AND id = ANY($2) RETURNING id, state";
/// [`WAITED_ON`] for one job: its state.
const WAITED_ON_ONE: &str = "UPDATE {s}.job SET waited = true WHERE queue = $1 AND id = $2 RETURNING state";

/// The advisory lock of a dedupe key: one of [`KEY_LOCKS`] per queue (a
/// batch with many keys takes at most that many of the server's lock
/// slots; two keys of one lock only wait on each other).
/// The singleton name of the supervisor of `host`.
fn supervisor_of(host: &str) -> String {
    format!("supervise@{host}")
}

/// The unfinished job other than `except` that holds `key`, and its state
/// (under the key's lock).
fn key_holder(q: &PgQueue, tx: &mut postgres::Transaction<'_>, key: &str, except: &str) -> Result<Option<(String, State)>> {
    Ok(tx
        .query_opt(&q.q(&format!("SELECT id, state FROM {{s}}.job WHERE queue = $1 AND key = $2 AND {UNFINISHED} AND id <> $3")), &[&q.t.queue, &key, &except])
        .map_err(|e| q.err(e))?
        .map(|r| (r.get(0), State::parse(r.get(1)).unwrap_or(State::Pending))))
}

/// The states of an unfinished job, as SQL (the unique index of keys, and
/// who holds a key).
const UNFINISHED: &str = "state IN ('pending','waiting','held','running')";

fn key_lock(q: &PgQueue, key: &str) -> i64 {
    self::key(&q.t.schema, &q.t.queue, &format!("key\0{}", crate::push::fnv64(key.as_bytes()) % KEY_LOCKS))
}

const KEY_LOCKS: u64 = 1024;

/// Take the locks of `keys` in one order (that of the lock numbers), as
/// every transaction that takes several does, before any row lock: two
/// never wait on each other.
fn lock_keys<'k>(q: &PgQueue, tx: &mut postgres::Transaction<'_>, keys: impl IntoIterator<Item = &'k str>) -> Result<()> {
    let mut locks: Vec<i64> = keys.into_iter().map(|k| key_lock(q, k)).collect();
    locks.sort_unstable();
    locks.dedup();
    if !locks.is_empty() {
        tx.execute("SELECT pg_advisory_xact_lock(l) FROM unnest($1::int8[]) WITH ORDINALITY AS t(l, n) ORDER BY n", &[&locks]).map_err(|e| q.err(e))?;
    }
    Ok(())
}

fn stream_no(s: Stream) -> i16 {
    match s {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    }
}

/// A singleton held: its session's advisory lock. Letting go unlocks it
/// before the session closes, so that the lock is free when the release
/// returns (a closed session's locks go only when the server has noticed).
struct HeldSingleton {
    c: postgres::Client,
    k: i64,
}

impl Drop for HeldSingleton {
    fn drop(&mut self) {
        let _ = self.c.query_one("SELECT pg_advisory_unlock($1)", &[&self.k]);
    }
}

/// A worker's presence: its advisory lock on the side connection.
struct Announced {
    q: PgQueue,
    key: i64,
    take: String,
}

impl Drop for Announced {
    fn drop(&mut self) {
        self.q.side.forget(&self.take, &format!("SELECT pg_advisory_unlock({})", self.key));
        let _ = self.q.exec("DELETE FROM {s}.worker WHERE queue = $1 AND key = $2", &[&self.q.t.queue, &self.key]);
    }
}

impl PgQueue {
    /// Does some session hold advisory lock `k`?
    fn advisory_held(&self, k: i64) -> bool {
        self.row(
            "SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
                AND classid = (($1::int8 >> 32) & 4294967295)::oid AND objid = ($1::int8 & 4294967295)::oid LIMIT 1",
            &[&k],
        )
        .is_ok_and(|r| r.is_some())
    }

    /// Another handle on the same queue and connections (for a log writer
    /// or reader, a claimer).
    fn clone_handle(&self) -> PgQueue {
        PgQueue { url: self.url.clone(), t: self.t.clone(), main: Arc::clone(&self.main), side: Arc::clone(&self.side), local: self.local.clone(), channel: self.channel.clone() }
    }

    fn paused_in(&self, c: &mut impl GenericClient) -> Result<Option<Pause>> {
        let r = c
            .query_opt(
                &self.q(concat!(
                    "SELECT ",
                    ms!("paused_since"),
                    ", CASE WHEN paused_until IS NULL THEN NULL ELSE ",
                    ms!("paused_until"),
                    " END FROM {s}.queue WHERE name = $1 AND paused_since IS NOT NULL AND (paused_until IS NULL OR paused_until > now())"
                )),
                &[&self.t.queue],
            )
            .map_err(|e| self.err(e))?;
        Ok(r.map(|r| Pause { since: time::rfc3339(r.get(0)), until_ms: r.get(1) }))
    }
}

/// A worker's claimer: claims, and waits on `LISTEN`.
struct PgClaimer {
    q: PgQueue,
    waiter: Option<PgWaiter>,
}


impl Claimer for PgClaimer {
    fn claim(&mut self, n: usize, opts: &ClaimOpts) -> Result<Vec<Claim>> {
        self.q.claim_rows(n, opts)
    }
    fn wait_or(&mut self, timeout: Duration, also: Option<BorrowedFd<'_>>) {
        let q = &self.q;
        self.waiter.get_or_insert_with(|| PgWaiter::new(q)).wait_or(timeout, also);
    }
}

/// Waits for a `NOTIFY` of the queue on the side connection (which
/// listens from its first wait on), or polls: a notification is a hint,
/// and is not kept while nobody listens.
struct PgWaiter {
    side: Arc<Conn>,
    listen: String,
    listening: std::sync::atomic::AtomicBool,
}

/// The longest wait without a look at the queue.
const MAX_SLEEP: Duration = Duration::from_millis(500);

impl PgWaiter {
    fn new(q: &PgQueue) -> PgWaiter {
        PgWaiter { side: Arc::clone(&q.side), listen: format!("LISTEN {}", q.channel), listening: Default::default() }
    }
}

impl Waiter for PgWaiter {
    fn wait_or(&self, timeout: Duration, also: Option<BorrowedFd<'_>>) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::sync::atomic::Ordering;
        let until = Instant::now() + timeout.min(MAX_SLEEP);
        if !self.listening.swap(true, Ordering::Relaxed) && self.side.keep(self.listen.clone()).is_err() {
            self.listening.store(false, Ordering::Relaxed);
        }
        loop {
            if let Some(fd) = also {
                let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
                if matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
                    return;
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // In slices, so that the heartbeat's statements get their turn.
            let slice = left.min(Duration::from_millis(50));
            let woke = self.side.with(|c| {
                let mut n = c.notifications();
                let got = matches!(n.timeout_iter(slice).next(), Ok(Some(_)));
                if got {
                    // Drain what else came: hints only.
                    while let Ok(Some(_)) = n.iter().next() {}
                }
                Ok(got)
            });
            match woke {
                Ok(true) => return,
                Ok(false) => {}
                Err(_) => std::thread::sleep(slice),
            }
        }
    }
}

/// An attempt's output: each write is one row (the runner writes what it
/// read from the job's pipe at once, so a row is a pipe's worth), in the
/// order written across both streams. Never a NOTIFY per row.
struct LogWriter {
    q: PgQueue,
    id: String,
    attempt: i32,
    stream: i16,
}

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if b.is_empty() {
            return Ok(0);
        }
        let stmt = self.q.q(
            "INSERT INTO {s}.output (queue, id, attempt, stream, chunk)
             SELECT $1, $2, $3, $4, $5 FROM {s}.output WHERE queue = $1 AND id = $2 AND attempt = $3
             HAVING coalesce(sum(length(chunk)), 0) < $6",
        );
        let q = &self.q;
        q.side
            .with(|c| c.execute(&stmt, &[&q.t.queue, &self.id, &self.attempt, &self.stream, &b, &OUTPUT_CAP]).map_err(|e| q.err(e)))
            .map_err(std::io::Error::other)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads an attempt's output chunk by chunk; at the end of what is there it
/// says so (0), and a later read sees what was added since.
struct LogReader {
    q: PgQueue,
    id: String,
    attempt: i32,
    stream: i16,
    /// The last chunk read.
    next: i64,
    buf: Vec<u8>,
    at: usize,
}

impl std::io::Read for LogReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at >= self.buf.len() {
            let rows = self
                .q
                .rows(
                    "SELECT seq, chunk FROM {s}.output WHERE queue = $1 AND id = $2 AND attempt = $3 AND stream = $4 AND seq > $5 ORDER BY seq LIMIT 64",
                    &[&self.q.t.queue, &self.id, &self.attempt, &self.stream, &self.next],
                )
                .map_err(std::io::Error::other)?;
            self.buf.clear();
            self.at = 0;
            for r in rows {
                self.next = r.get(0);
                self.buf.extend_from_slice(r.get::<_, &[u8]>(1));
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Claims this process took over (`adopt`), so that a second runner in
/// the same process is refused as one in another process is.
static ADOPTED: std::sync::Mutex<std::collections::BTreeSet<String>> = std::sync::Mutex::new(std::collections::BTreeSet::new());

/// This process holds an adopted claim; dropping the claim lets go.
#[derive(Debug)]
pub struct Adopted(String);

impl Adopted {
    fn mark(t: &Target, id: &str, token: &str) -> Option<Adopted> {
        let k = format!("{}\0{}\0{id}\0{token}", t.schema, t.queue);
        let fresh = ADOPTED.lock().unwrap_or_else(|e| e.into_inner()).insert(k.clone());
        // (Made only when it is ours: dropping one lets go of its key.)
        if fresh { Some(Adopted(k)) } else { None }
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        ADOPTED.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.0);
    }
}

/// How a tool opens a PostgreSQL queue: with the passwords it found and the
/// host-local directory it chose.
pub fn open(url: &str, secrets: &Secrets, local: PathBuf, _d: Durability) -> Result<Option<PgQueue>> {
    PgQueue::open(url, secrets, local)
}

pub fn create(url: &str, secrets: &Secrets, local: PathBuf, _d: Durability) -> Result<PgQueue> {
    PgQueue::create(url, secrets, local)
}
