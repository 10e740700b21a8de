//! What `--exit-on-idle` says it left behind. Whether there is work left
//! is the backend's to tell (`Backend::idle`).

use q_queue::Idle;

/// The jobs that stay behind, in words ("" when none).
pub fn left_behind(s: &Idle) -> String {
    let mut parts = Vec::new();
    if s.paused && s.due > 0 {
        parts.push(format!("{} pending in the paused queue (q-ctl resume)", s.due));
    }
    if s.later > 0 {
        parts.push(format!("{} scheduled after the idle horizon", s.later));
    }
    if s.held > 0 {
        parts.push(format!("{} held (q-ctl release ID)", s.held));
    }
    if s.waiting > 0 {
        parts.push(format!("{} waiting on jobs that are held or scheduled later", s.waiting));
    }
    if s.newer > 0 {
        parts.push(format!("{} written by a newer q (run them with it)", s.newer));
    }
    if s.others > 0 {
        parts.push(others(s.others));
    }
    if s.unfit > 0 {
        parts.push(unfit(s.unfit));
    }
    if parts.is_empty() {
        return String::new();
    }
    let n = (if s.paused { s.due } else { 0 }) + s.later + s.held + s.waiting + s.newer + s.others + s.unfit;
    format!("{n} job{} wait: {}", if n == 1 { "" } else { "s" }, parts.join(", "))
}

/// Due jobs whose needs the slots can never fit, in words.
pub fn unfit(n: u64) -> String {
    format!("{n} needing slots these workers do not have (--slots, --limit)")
}

/// Due jobs of other users a worker left alone, in words.
pub fn others(n: u64) -> String {
    format!("{n} of other users (a shared queue: left for their owners' workers, or root's)")
}
