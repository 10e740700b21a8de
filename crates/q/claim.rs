//! `q-claim`: take the next ready job(s) under a lease and print the claim
//! line(s). If a claim cannot be handed over (stdout closed), it is given
//! back at once, not lost until its lease runs out.

use crate::cli::{self, Common};
use crate::exit;
use crate::out;
use anyhow::Result;
use clap::Parser;
use q_queue::{ClaimOpts, Liveness, Outcome, Reason, SettleOpts};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "q-claim",
    version,
    about = "Take the next ready job under a lease and print it as a JSON line",
    long_about = "Take the ready job with the highest priority, then the earliest due time, then the oldest, under a lease, and print one {\"type\":\"claim\",...} line with its id, token, fence, attempt, lease_expires_at and the whole job. Exit 0 when it claimed, 1 when nothing was ready (or the wait ran out). Hand the line to `q-run --stdin`, or settle it yourself with `q-ctl ack|nack|touch ID --token T`.",
    after_help = "Examples:\n  q-claim | q-run --stdin              # take one job and run it here\n  q-claim --wait=30s -n 4              # up to 4 jobs, waiting up to 30s for the first\n  job=$(q-claim --lease 10m) && ... && q-ctl ack \"$(jq -r .id <<<\"$job\")\" --token \"$(jq -r .token <<<\"$job\")\""
)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Lease length: the claim expires this long after its last heartbeat
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = cli::duration)]
    lease: u64,
    /// Block until a job is ready (optionally at most DUR)
    #[arg(long, value_name = "DUR", num_args = 0..=1, default_missing_value = "")]
    wait: Option<String>,
    /// Claim up to N jobs (with --wait: return as soon as there is at least one)
    #[arg(short = 'n', value_name = "N", default_value_t = 1)]
    n: usize,
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    exit::run("q-claim", || run(args))
}

fn run(a: Args) -> Result<u8> {
    let deadline = match a.wait.as_deref() {
        None => Some(Instant::now()),
        Some("") => None,
        Some(d) => Some(Instant::now() + Duration::from_millis(q_queue::time::parse_duration(d)?)),
    };
    let interrupted = crate::cli_signals::interrupt_flag()?;
    let opts = ClaimOpts { lease_ms: a.lease, worker_id: Some(cli::worker_id()), liveness: Liveness::Ttl, fit: None };
    let mut waiter = None;
    loop {
        if let Some(q) = a.common.open()? {
            let claims = q.claim(a.n.max(1), &opts)?;
            if !claims.is_empty() {
                let mut handed = 0;
                for c in claims {
                    // A full or failing stdout hands nothing over either.
                    let ok = out::line(&c.to_json()).unwrap_or_else(|e| {
                        eprintln!("q-claim: error: cannot print the claim of job {} ({e}); it was given back", c.id);
                        false
                    });
                    if ok {
                        handed += 1;
                    } else {
                        // Nobody will run it: give it back now.
                        let _ = q.settle(&c.id, &c.token, Reason::WorkerShutdown, &Outcome::default(), &SettleOpts::default());
                    }
                }
                return Ok(if handed > 0 { exit::OK } else { exit::IO });
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(exit::NOTHING);
            }
            let w = waiter.get_or_insert_with(|| q.waiter());
            let left = deadline.map_or(Duration::from_secs(1), |d| d.saturating_duration_since(Instant::now()));
            w.wait(left);
        } else {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(exit::NOTHING);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(exit::INTERRUPTED);
        }
    }
}
