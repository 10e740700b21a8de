//! One line for a person about a job that did not end `done`: what q-log,
//! q-wait and q-supervise print on stderr, so that under make, cron or CI
//! whoever reads the output can tell which job failed, how, and how to see
//! its output.

use crate::cli::{Common, Queue};
use q_queue::{Reason, ResultRecord, State};

/// The line for a job the queue says ended in `state`: from its latest
/// result, or (a job that ended without one) its state alone.
pub fn of_job(q: &Queue, id: &str, state: State, see: Option<&Common>) -> String {
    match q.last_result(id).filter(|r| r.state == state) {
        Some(r) => line(&r, None, see),
        None => format!("job {id} ended {}", state.as_str()),
    }
}

/// `job ID (NAME) ended dead: exit status 1 (attempt 2)`, with what
/// follows `; see: q-log ID` when `see` is given.
pub fn line(r: &ResultRecord, name: Option<&str>, see: Option<&Common>) -> String {
    let name = name.or(r.name.as_deref()).map_or_else(String::new, |n| format!(" ({n})"));
    let how = match (r.reason, r.exit_code, r.signal) {
        (Reason::Exit, Some(c), _) => format!("exit status {c}"),
        (Reason::Signal, _, Some(s)) => format!("killed by signal {s}"),
        (Reason::Timeout, ..) => "timed out".to_owned(),
        (reason, ..) => reason.as_str().to_owned(),
    };
    let state = match r.state {
        State::Pending => "failed, to be retried".to_owned(),
        s => format!("ended {}", s.as_str()),
    };
    let attempt = if r.attempt > 0 { format!(" (attempt {})", r.attempt) } else { String::new() };
    let mut s = format!("job {}{name} {state}: {how}{attempt}", r.id);
    if let Some(c) = see.filter(|_| r.attempt > 0) {
        s.push_str(&format!("; see: q-log{} {}", queue_flag(c), r.id));
    }
    s
}

/// ` --queue LOC` when the queue was named on the command line (a job's
/// or the environment's `Q_DIR` is seen by q-log too).
fn queue_flag(c: &Common) -> String {
    let Some(q) = &c.queue else { return String::new() };
    if std::env::var_os("Q_DIR").as_ref() == Some(q) {
        return String::new();
    }
    let shown = c.location().display();
    if shown.chars().all(|ch| ch.is_ascii_alphanumeric() || "/._-:+@%,=".contains(ch)) {
        format!(" --queue {shown}")
    } else {
        format!(" --queue '{}'", shown.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: State, reason: Reason, exit: Option<i32>, signal: Option<i32>) -> ResultRecord {
        serde_json::from_value(serde_json::json!({
            "type": "result", "id": "01J9ZK3QH8T4W1V6C2M5X7B0RA", "attempt": 2, "token": null,
            "state": state.as_str(), "reason": reason.as_str(), "exit_code": exit, "signal": signal,
            "started_at": null, "finished_at": null, "duration_ms": null, "cpu_user_ms": null,
            "cpu_sys_ms": null, "max_rss_kb": null, "failures": 2,
        }))
        .unwrap()
    }

    #[test]
    fn says_how_a_job_ended() {
        assert_eq!(line(&rec(State::Dead, Reason::Exit, Some(3), None), Some("gz"), None), "job 01J9ZK3QH8T4W1V6C2M5X7B0RA (gz) ended dead: exit status 3 (attempt 2)");
        assert_eq!(line(&rec(State::Dead, Reason::Signal, None, Some(9)), None, None), "job 01J9ZK3QH8T4W1V6C2M5X7B0RA ended dead: killed by signal 9 (attempt 2)");
        assert_eq!(line(&rec(State::Canceled, Reason::Canceled, None, None), None, None), "job 01J9ZK3QH8T4W1V6C2M5X7B0RA ended canceled: canceled (attempt 2)");
        assert_eq!(line(&rec(State::Pending, Reason::Timeout, None, None), None, None), "job 01J9ZK3QH8T4W1V6C2M5X7B0RA failed, to be retried: timed out (attempt 2)");
    }
}
