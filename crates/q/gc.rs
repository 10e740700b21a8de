//! `q-gc`: repair and prune a queue. Safe to run any time, from cron, beside
//! running workers and another `q-gc`: one pass under `locks/gc.lock` (a
//! second gc finds it held and exits 0 without doing anything), one `gc`
//! line per action, nothing when there was nothing to do. The rules are in
//! `q_queue::gc`.

use crate::cli::{self, Common};
use crate::exit;
use crate::out;
use anyhow::Result;
use clap::Parser;
use q_queue::gc::{Action, GcOpts};
use q_queue::Singleton;
use q_queue::lock::Acquired;
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "q-gc",
    version,
    about = "Repair and prune a q queue: reclaim dead leases, quarantine corrupt files, remove what is abandoned or expired",
    long_about = "One pass over the queue: staging files older than --tmp-ttl are removed (never one that is locked); leases whose owner is dead or expired are reclaimed (the job is requeued, or ends dead); files that are not of the queue's form (bad names, symlinks, unparsable records, an id that does not match its name, files others can write) and second copies of a job are moved to corrupt/, never deleted; waiting jobs whose dependencies finished move on; var/ directories of jobs that no longer exist, workspaces of attempts that are over, and stale requests (cancel, signal, restart) are removed after --orphan-ttl; finished jobs are deleted with their logs after --done-ttl, --dead-ttl and --canceled-ttl (a job that a waiting job still depends on is kept); empty pending segments and dedupe-key records of finished jobs go.\n\nPrints one {\"type\":\"gc\",\"action\":...,\"id\":...,\"path\":...,\"reason\":...} line per action, nothing when there was nothing to do. Safe beside running workers and supervisors; a second q-gc that finds one running exits 0 at once without doing anything. Exit 0, or the class of the first error (74 I/O, 77 permission, 78 format newer than this tool).",
    after_help = "Examples:\n  q-gc --dry-run                        # what would be done, changing nothing\n  */10 * * * * q-gc -q                  # crontab: every ten minutes, silent unless something fails\n  q-gc --done-ttl 1d --dead-ttl 30d     # keep finished jobs a day, dead ones a month"
)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Change nothing; print what would be done
    #[arg(long)]
    dry_run: bool,
    /// Remove staging files in tmp/ older than this
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = cli::duration)]
    tmp_ttl: u64,
    /// Remove orphan var/ directories, abandoned workspaces and stale requests (cancel, signal, restart) untouched this long
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = cli::duration)]
    orphan_ttl: u64,
    /// Delete done jobs (and their logs) finished longer ago than this ("never" keeps them)
    #[arg(long, value_name = "DUR|never", default_value = "7d", value_parser = ttl)]
    done_ttl: Ttl,
    /// Delete dead jobs finished longer ago than this
    #[arg(long, value_name = "DUR|never", default_value = "never", value_parser = ttl)]
    dead_ttl: Ttl,
    /// Delete canceled jobs finished longer ago than this
    #[arg(long, value_name = "DUR|never", default_value = "7d", value_parser = ttl)]
    canceled_ttl: Ttl,
}

/// A retention: a duration, or never.
#[derive(Debug, Clone, Copy)]
struct Ttl(Option<u64>);

fn ttl(s: &str) -> Result<Ttl, String> {
    if s == "never" {
        return Ok(Ttl(None));
    }
    cli::duration(s).map(|d| Ttl(Some(d)))
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    exit::run("q-gc", || run(args))
}

fn run(a: Args) -> Result<u8> {
    let Some(q) = a.common.open()? else {
        return Ok(exit::OK);
    };
    let lock = if a.dry_run {
        None
    } else {
        match q.lock(Singleton::Collector, Duration::ZERO)? {
            Acquired::Held(g) => Some(g),
            Acquired::Busy(holder) => {
                // Another pass is doing the work: not an error (cron).
                if !a.common.quiet && out::stderr_is_tty() {
                    let who = holder.map_or_else(
                        || "another process".to_owned(),
                        |h| format!("another q-gc ({})", h.describe()),
                    );
                    eprintln!("q-gc: {who} is collecting this queue; nothing done");
                }
                return Ok(exit::OK);
            }
        }
    };
    let opts = GcOpts {
        tmp_ttl_ms: a.tmp_ttl,
        orphan_ttl_ms: a.orphan_ttl,
        done_ttl_ms: a.done_ttl.0,
        dead_ttl_ms: a.dead_ttl.0,
        canceled_ttl_ms: a.canceled_ttl.0,
        dry_run: a.dry_run,
    };
    let stdout_open = true;
    let mut write_err = None;
    // -q: errors only (cron mails whatever is printed).
    let mut stdout_open = stdout_open && !a.common.quiet;
    let errors = q.gc(&opts, &mut |act: Action| {
        if !stdout_open {
            return;
        }
        match out::line(&action_json(&act, a.dry_run)) {
            Ok(true) => {}
            Ok(false) => stdout_open = false,
            Err(e) => {
                stdout_open = false;
                write_err = Some(e);
            }
        }
    })?;
    if !a.common.quiet {
        for w in q.health() {
            eprintln!("q-gc: warning: {w}");
        }
    }
    let mut code = exit::OK;
    for e in &errors {
        eprintln!("q-gc: error: {e}");
        if code == exit::OK {
            code = e.kind.exit_code();
        }
    }
    if let Some(g) = lock {
        g.release();
    }
    if let Some(e) = write_err {
        return Err(e.into());
    }
    Ok(code)
}

fn action_json(a: &Action, dry_run: bool) -> serde_json::Value {
    let mut v = json!({
        "type": "gc",
        "action": a.action,
        "id": a.id,
        "path": a.path,
        "reason": a.reason,
        "dry_run": dry_run,
    });
    if let Some(to) = &a.to {
        v["to"] = json!(to);
    }
    if let Some(st) = a.state {
        v["state"] = json!(st.as_str());
    }
    v
}
