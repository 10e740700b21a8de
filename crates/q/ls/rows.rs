//! `q-ls`'s table: one row per job, in the order the jobs run (running ones
//! by start, pending ones in claim order — ready ones first — waiting, held,
//! then finished ones by when they ended), built from the same `job` records
//! that `--json` prints: a job's usage over its life (TOOK, CPU, RSS) is
//! their `usage`, read with the rest of the listing (`Backend::listed`).

use crate::table::{self, Col};
use q_queue::{Entry, Job, State, time};
use serde_json::Value;

/// A listed job: its entry, its job, and its `job` record.
pub struct Listed {
    pub entry: Entry,
    pub job: Job,
    pub v: Value,
}

const COLS: [Col; 11] = [
    Col::fixed("ID"),
    Col::fixed("STATE"),
    Col::right("PRI"),
    Col::right("TRY"),
    Col::fixed("WHEN"),
    Col::right("TOOK"),
    Col::right("CPU"),
    Col::right("RSS"),
    Col::fixed("INFO"),
    Col::flexible("NAME"),
    Col::flexible("COMMAND"),
];

/// The lines of the table (heading first) for these jobs, at a terminal's
/// width (`None`: nothing is cut); each id is shown by its shortest suffix
/// that no job of `among` (the queue's) shares. NAME is left out when no
/// job has a name, CPU and RSS when no attempt was measured.
pub fn table(mut rows: Vec<Listed>, among: &[&str], now: i64, width: Option<usize>) -> Vec<String> {
    rows.sort_by_cached_key(|r| place(&r.entry, &r.v, now));
    let ids: Vec<&str> = rows.iter().map(|r| r.entry.id.as_str()).collect();
    let short = table::unique_suffixes(&ids, among);
    let cells: Vec<Vec<String>> = rows.iter().zip(short).map(|(r, id)| row(r, id, now)).collect();
    let named = rows.iter().any(|r| r.job.name.is_some());
    let measured = rows.iter().any(|r| measured(&r.v).is_some());
    let keep = |c: &Col| match c.head {
        "NAME" => named,
        "CPU" | "RSS" => measured,
        _ => true,
    };
    let cols: Vec<Col> = COLS.iter().copied().filter(keep).collect();
    let cells: Vec<Vec<String>> = cells.into_iter().map(|r| r.into_iter().zip(COLS.iter()).filter(|(_, c)| keep(c)).map(|(s, _)| s).collect()).collect();
    table::render(&cols, &cells, width)
}

/// The `usage` of a job's record, if an attempt of it was measured (a
/// runner records its peak RSS; an attempt settled by hand has none).
fn measured(v: &Value) -> Option<&Value> {
    let u = &v["usage"];
    (u["max_rss_kb"].as_u64().unwrap_or(0) > 0).then_some(u)
}

/// Where a job's row goes: its group, then its order within the group.
fn place(e: &Entry, v: &Value, now: i64) -> (u8, i64, impl Ord + use<>) {
    let prio = v["priority"].as_i64().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    let run_at = e.run_at_ms.or_else(|| ms(&v["run_at"])).unwrap_or(0);
    let claim = q_queue::claim_order(prio, run_at, &e.id);
    match e.state {
        State::Running => (0, ms(&v["started_at"]).or(ms(&v["claimed_at"])).unwrap_or(0), claim),
        State::Pending if run_at <= now => (1, 0, claim),
        State::Pending => (2, run_at, claim),
        State::Waiting => (3, 0, claim),
        State::Held => (4, 0, claim),
        _ => (5, ms(&v["result"]["finished_at"]).unwrap_or(0), claim),
    }
}

/// The cells of a job's row.
fn row(l: &Listed, id: String, now: i64) -> Vec<String> {
    let (e, v) = (&l.entry, &l.v);
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let attempt = v["attempt"].as_u64().unwrap_or(0);
    let tries = match v["attempts"].as_u64() {
        Some(n) if n > 1 => format!("{attempt}/{n}"),
        _ => attempt.to_string(),
    };
    let r = &v["result"];
    // Over the job's life: wall time and CPU of its ended attempts
    // together, and the highest peak RSS.
    let total = v["usage"]["wall_ms"].as_u64().filter(|w| *w > 0);
    let (cpu, rss) = match measured(v) {
        Some(u) => (
            time::human_duration(u["cpu_user_ms"].as_u64().unwrap_or(0) + u["cpu_sys_ms"].as_u64().unwrap_or(0)),
            table::human_kb(u["max_rss_kb"].as_u64().unwrap_or(0)),
        ),
        None => (String::new(), String::new()),
    };
    let (when, took, info) = match e.state {
        State::Running => {
            let since = ms(&v["started_at"]).or(ms(&v["claimed_at"]));
            let on = match (v["worker_id"].as_str(), v["host"].as_str()) {
                (Some(w), Some(h)) => format!("{w}@{h}"),
                (None, Some(h)) => h.to_owned(),
                _ => String::new(),
            };
            (since.map(table::local_time), since.map(|t| elapsed(now, t)), on)
        }
        State::Pending => {
            let due = ms(&v["run_at"]);
            let mut info = match due {
                Some(t) if t > now => format!("in {}", time::human_duration((t - now) as u64)),
                _ => "ready".to_owned(),
            };
            let last = table::how(&v["result"]);
            if !last.is_empty() {
                // A retry: how the last attempt ended.
                info = format!("{info} (was {last})");
            }
            (due.map(table::local_time), total.map(time::human_duration), info)
        }
        State::Held => (ms(&v["run_at"]).map(table::local_time), total.map(time::human_duration), String::new()),
        State::Waiting => {
            let after: Vec<&str> = v["after"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let after: Vec<String> = after.iter().map(|a| a[a.len().saturating_sub(table::MIN_SUFFIX)..].to_owned()).collect();
            (None, total.map(time::human_duration), format!("after {}", after.join(" ")))
        }
        _ => (
            ms(&r["finished_at"]).map(table::local_time),
            total.or(r["duration_ms"].as_u64()).map(time::human_duration),
            table::how(r),
        ),
    };
    vec![
        id,
        s("state"),
        v["priority"].to_string(),
        tries,
        when.unwrap_or_default(),
        took.unwrap_or_default(),
        cpu,
        rss,
        info,
        s("name"),
        table::command(&l.job),
    ]
}

/// Time since `t`, for people.
fn elapsed(now: i64, t: i64) -> String {
    time::human_duration(u64::try_from(now - t).unwrap_or(0))
}

/// An RFC 3339 field of a record as Unix ms.
fn ms(v: &Value) -> Option<i64> {
    v.as_str().and_then(|s| time::parse_time(s).ok())
}
