//! What a supervisor says on stderr. With `--events`: one JSON line per event
//! (`{"type":"event","event":...,"time":...,"worker_id":...,"pid":...}` plus
//! what the event is about), and workers' own messages wrapped as
//! `worker-stderr` events, so that stderr stays JSON lines. On a terminal:
//! a live progress block redrawn in place, messages printed above it.
//! Otherwise: errors and workers' messages only (and, with `--exit-on-idle`,
//! which jobs were left waiting).

use serde_json::{Value, json};
use std::io::Write;

pub struct Reporter {
    pub events: bool,
    pub progress: bool,
    pub quiet: bool,
    /// Lines of the progress block on screen now.
    drawn: usize,
}

impl Reporter {
    pub fn new(events: bool, quiet: bool) -> Reporter {
        let progress = !events && !quiet && crate::out::stderr_is_tty();
        Reporter {
            events,
            progress,
            quiet,
            drawn: 0,
        }
    }

    fn write(&mut self, text: &str) {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(text.as_bytes());
        let _ = e.flush();
    }

    /// An event line (only with `--events`).
    pub fn event(&mut self, event: &str, worker_id: Option<&str>, pid: Option<i32>, extra: Value) {
        if !self.events {
            return;
        }
        let mut v = json!({
            "type": "event",
            "event": event,
            "time": q_queue::time::rfc3339(q_queue::time::now_ms()),
            "worker_id": worker_id,
            "pid": pid,
        });
        if let (Some(m), Value::Object(x)) = (v.as_object_mut(), extra) {
            m.extend(x);
        }
        let mut s = serde_json::to_string(&v).unwrap_or_default();
        s.push('\n');
        self.write(&s);
    }

    /// A message for people (not with `--quiet`; an event with `--events`).
    pub fn note(&mut self, msg: &str) {
        if self.quiet {
            return;
        }
        if self.events {
            return self.event(
                "note",
                None,
                Some(std::process::id() as i32),
                json!({"message": msg}),
            );
        }
        self.clear();
        self.write(&format!("q-supervise: {msg}\n"));
    }

    /// An error: always shown (with `--events`, as an `error` event).
    pub fn error(&mut self, msg: &str) {
        if self.events {
            return self.event(
                "error",
                None,
                Some(std::process::id() as i32),
                json!({"message": msg}),
            );
        }
        self.clear();
        self.write(&format!("q-supervise: error: {msg}\n"));
    }

    /// A line a worker wrote on its stderr.
    pub fn relay(&mut self, worker_id: Option<&str>, pid: i32, line: &str) {
        if self.events {
            return self.event("worker-stderr", worker_id, Some(pid), json!({"line": line}));
        }
        self.clear();
        self.write(&format!("{line}\n"));
    }

    /// Redraw the progress block.
    pub fn draw(&mut self, lines: &[String]) {
        if !self.progress {
            return;
        }
        let mut s = String::new();
        if self.drawn > 0 {
            s.push_str(&format!("\x1b[{}F", self.drawn));
        }
        s.push_str("\x1b[J");
        let width = terminal_width();
        for l in lines {
            let l: String = l.chars().take(width.saturating_sub(1)).collect();
            s.push_str(&l);
            s.push('\n');
        }
        self.drawn = lines.len();
        self.write(&s);
    }

    /// Remove the progress block (before a message, and at the end).
    pub fn clear(&mut self) {
        if self.drawn > 0 {
            let s = format!("\x1b[{}F\x1b[J", self.drawn);
            self.drawn = 0;
            self.write(&s);
        }
    }
}

/// Lines are cut to the terminal's width (80 when it cannot be asked), so
/// that the block's height is its number of lines.
fn terminal_width() -> usize {
    crate::out::width(&std::io::stderr()).unwrap_or(80)
}
