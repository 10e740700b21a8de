//! q-log: which job and attempt, --stderr, --path, -f, and the errors.
//!
//! The logs are written by hand where q-run would write them
//! (`var/<ID>/<A>.out|.err`), with the job claimed by q-claim and settled by
//! q-ctl: `attempt_by_hand` is the one place to switch to a real
//! `q-claim | q-run --stdin` (or `q-run --once`) run of a `--sh` job.

#[allow(unused_imports)]
use crate::util::*;
use crate::ctl::{claim, token};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// Claim the next job and write its attempt's logs as q-run would.
/// Returns the claim line.
fn attempt_by_hand(q: &QDir, out: &str, err: &str) -> Value {
    let c = claim(q, &["--lease", "10m"]);
    let (id, a) = (c["id"].as_str().unwrap(), c["attempt"].as_u64().unwrap());
    let var = q.queue.join("var").join(id);
    std::fs::write(var.join(format!("{a}.out")), out).unwrap();
    std::fs::write(var.join(format!("{a}.err")), err).unwrap();
    c
}

fn log_file(q: &QDir, id: &str, a: u32, ext: &str) -> PathBuf {
    q.queue.join("var").join(id).join(format!("{a}.{ext}"))
}

/// `q-ctl ack|nack` a claim (a nack retries at once).
fn settle(q: &QDir, action: &str, c: &Value) {
    let t = token(c);
    let mut args = vec![action, c["id"].as_str().unwrap(), "--token", &t];
    if action == "nack" {
        args.extend(["--delay", "0s"]);
    }
    q.run("q-ctl", &args).ok();
}

#[test]
fn log_prints_stdout_and_with_stderr_flag_stderr() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let c = attempt_by_hand(&q, "hello\nworld\n", "oops\n");
    // While running and after.
    let o = q.run("q-log", &[&id]);
    o.ok();
    assert_eq!(o.stdout, "hello\nworld\n");
    settle(&q, "ack", &c);
    let o = q.run("q-log", &[&id]);
    o.ok();
    assert_eq!(o.stdout, "hello\nworld\n");
    let o = q.run("q-log", &["--stderr", &id]);
    o.ok();
    assert_eq!(o.stdout, "oops\n");
}

#[test]
fn log_without_id_shows_the_newest_job_with_a_log() {
    let q = QDir::new();
    let _a = q.push(&["--", "true"]);
    let ca = attempt_by_hand(&q, "first\n", "");
    settle(&q, "ack", &ca);
    let _b = q.push(&["--", "true"]);
    let cb = attempt_by_hand(&q, "second\n", "");
    // A newer job that never ran has no log: it is skipped.
    let _c = q.push(&["--", "true"]);
    let o = q.run("q-log", &[]);
    o.ok();
    assert_eq!(o.stdout, "second\n");
    settle(&q, "ack", &cb);
    assert_eq!(q.run("q-log", &[]).stdout, "second\n");
}

#[test]
fn log_attempt_picks_an_attempt_and_defaults_to_the_newest() {
    let q = QDir::new();
    let id = q.push(&["--attempts", "3", "--", "false"]);
    let c1 = attempt_by_hand(&q, "one\n", "e1\n");
    settle(&q, "nack", &c1);
    let c2 = attempt_by_hand(&q, "two\n", "e2\n");
    assert_eq!(c2["attempt"], 2);
    settle(&q, "nack", &c2);
    assert_eq!(q.run("q-log", &[&id]).stdout, "two\n");
    assert_eq!(q.run("q-log", &["--attempt", "1", &id]).stdout, "one\n");
    assert_eq!(q.run("q-log", &["--attempt", "1", "--stderr", &id]).stdout, "e1\n");
    let o = q.run("q-log", &["--attempt", "3", &id]);
    o.expect_code(66);
    assert!(o.stderr.contains("no attempt 3"), "{}", o.stderr);
}

#[test]
fn log_path_prints_the_path_only() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    attempt_by_hand(&q, "x\n", "y\n");
    let o = q.run("q-log", &["--path", &id]);
    o.ok();
    assert_eq!(o.stdout.trim_end(), log_file(&q, &id, 1, "out").to_string_lossy());
    let o = q.run("q-log", &["--path", "--stderr", &id]);
    assert_eq!(o.stdout.trim_end(), log_file(&q, &id, 1, "err").to_string_lossy());
}

#[test]
fn log_missing_log_is_66_with_a_reason() {
    let q = QDir::new();
    // No queue.
    q.run("q-log", &[]).expect_code(66);
    q.run("q-log", &["01ZZZZZZZZZZZZZZZZZZZZZZZZ"]).expect_code(66);
    let id = q.push(&["--", "true"]);
    let o = q.run("q-log", &[&id]);
    o.expect_code(66);
    assert!(o.stderr.contains("has not run yet"), "{}", o.stderr);
    let o = q.run("q-log", &[]);
    o.expect_code(66);
    assert!(o.stderr.contains("no job has a log"), "{}", o.stderr);
    let o = q.run("q-log", &["01ZZZZZZZZZZZZZZZZZZZZZZZZ"]);
    o.expect_code(66);
    assert!(o.stderr.contains("no such job"), "{}", o.stderr);
    // Claimed but its runner never wrote a log (a hand-settled job).
    let c = claim(&q, &[]);
    settle(&q, "ack", &c);
    let o = q.run("q-log", &["--attempt", "1", &id]);
    o.expect_code(66);
    assert!(o.stderr.contains("attempt 1"), "{}", o.stderr);
}

/// Collect a child's stdout in the background.
fn collect(p: &mut Proc) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let mut out = p.child.stdout.take().unwrap();
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = out.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

fn append(p: &Path, s: &str) {
    std::fs::OpenOptions::new().append(true).open(p).unwrap().write_all(s.as_bytes()).unwrap();
}

#[test]
fn serial_log_follow_streams_until_the_job_ends() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let c = attempt_by_hand(&q, "a\n", "");
    let mut f = q.cmd("q-log");
    f.args(["-f", &id]).stdout(Stdio::piped());
    let mut f = Proc::spawn(f);
    let got = collect(&mut f);
    let within = Duration::from_secs(30);
    wait_until("the existing output", within, || *got.lock().unwrap() == "a\n");
    let path = log_file(&q, &id, 1, "out");
    append(&path, "b\n");
    wait_until("output appended while running", within, || *got.lock().unwrap() == "a\nb\n");
    assert!(f.child.try_wait().unwrap().is_none(), "still following while the job runs");
    // Written just before the attempt ends: still printed, then it stops.
    append(&path, "c\n");
    settle(&q, "ack", &c);
    assert_eq!(f.wait_for(within), 0);
    wait_until("the rest", within, || *got.lock().unwrap() == "a\nb\nc\n");
}

#[test]
fn serial_log_follow_waits_for_a_pending_job_to_start() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let mut f = q.cmd("q-log");
    f.args(["-f", &id]).stdout(Stdio::piped());
    let mut f = Proc::spawn(f);
    let got = collect(&mut f);
    let c = attempt_by_hand(&q, "started\n", "");
    let within = Duration::from_secs(30);
    wait_until("the output of the attempt that started", within, || *got.lock().unwrap() == "started\n");
    settle(&q, "ack", &c);
    assert_eq!(f.wait_for(within), 0);
}

#[test]
fn log_closed_stdout_ends_quietly() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let big = "0123456789abcdef".repeat(64 * 1024);
    attempt_by_hand(&q, &big, "");
    let mut c = q.cmd("q-log");
    c.arg(&id).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut p = Proc::spawn(c);
    let mut first = [0u8; 16];
    p.child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"0123456789abcdef");
    drop(p.child.stdout.take());
    assert_eq!(p.wait_for(Duration::from_secs(30)), 0);
    let mut err = String::new();
    p.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.is_empty(), "no error for a closed pipe: {err}");
}
