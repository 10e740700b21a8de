//! q-log: which job and attempt, both streams in order, --stdout, --stderr,
//! --path, -f, how a failed job ended, and the errors. The
//! logs are written by a real `q-run --once`; jobs block on marker files
//! the test creates, so output grows exactly when the test says.

#[allow(unused_imports)]
use crate::util::*;
use crate::ctl::{claim, token};
use std::io::Read;
use std::sync::{Arc, Mutex};

/// Run the next ready job with `q-run --once`; returns its exit status.
fn run_once(q: &QDir) -> i32 {
    q.run("q-run", &["--once"]).code()
}

fn log_file(q: &QDir, id: &str, a: u32, ext: &str) -> PathBuf {
    q.queue.join("var").join(id).join(format!("{a}.{ext}"))
}

#[test]
fn log_prints_both_streams_and_with_a_flag_one() {
    let q = QDir::new();
    let id = q.push(&["--sh", "printf 'hello\\nworld\\n'; echo oops >&2"]);
    assert_eq!(run_once(&q), 0);
    let o = q.run("q-log", &["--stdout", &id]);
    o.ok();
    assert_eq!(o.stdout, "hello\nworld\n");
    let o = q.run("q-log", &["--stderr", &id]);
    o.ok();
    assert_eq!(o.stdout, "oops\n");
    let o = q.run("q-log", &[&id]);
    o.ok();
    assert_eq!(o.stdout, "hello\nworld\noops\n");
    assert_eq!(o.stderr, "", "a job that ended done gets no line");
}

/// A shell snippet that waits until the runner has this attempt's `ext`
/// log with something in it: the next write is then read after it.
fn kept(ext: &str) -> String {
    format!("while [ ! -s \"$Q_DIR/var/$Q_JOB_ID/$Q_ATTEMPT.{ext}\" ]; do sleep 0.01; done")
}

/// A failed gzip showed nothing: its error was on stderr, which q-log left
/// out. Both streams come in the order they were written, and the job's
/// end is said on stderr.
#[test]
fn log_interleaves_the_streams_in_written_order_and_says_how_a_job_failed() {
    let q = QDir::new();
    let script = format!("echo out1; {}; echo err1 >&2; {}; echo out2; exit 3", kept("out"), kept("err"));
    let id = q.push(&["--name", "gz", "--sh", &script]);
    assert_eq!(run_once(&q), 3);
    let o = q.run("q-log", &[&id]);
    o.ok();
    assert_eq!(o.stdout, "out1\nerr1\nout2\n");
    assert_eq!(o.stderr, format!("q-log: job {id} (gz) ended dead: exit status 3 (attempt 1); see: q-log {id}\n"));
    // -q: the output only.
    let o = q.run("q-log", &["-q", &id]);
    assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("out1\nerr1\nout2\n", ""));
}

/// An attempt run before the order was recorded: stdout, then stderr.
#[test]
fn log_of_an_attempt_without_an_order_prints_stdout_then_stderr() {
    let q = QDir::new();
    let id = q.push(&["--sh", "echo a; echo b >&2; echo c"]);
    assert_eq!(run_once(&q), 0);
    std::fs::remove_file(log_file(&q, &id, 1, "order")).unwrap();
    let o = q.run("q-log", &[&id]);
    o.ok();
    assert_eq!(o.stdout, "a\nc\nb\n");
}

#[test]
fn log_without_id_means_the_newest_job() {
    let q = QDir::new();
    q.push(&["--", "echo", "first"]);
    assert_eq!(run_once(&q), 0);
    q.push(&["--", "echo", "second"]);
    assert_eq!(run_once(&q), 0);
    assert_eq!(q.run("q-log", &[]).stdout, "second\n");
    // A newer job that has not run: it is the one meant, not an older one.
    let third = q.push(&["--", "echo", "third"]);
    let o = q.run("q-log", &[]);
    o.expect_code(66);
    assert!(o.stdout.is_empty(), "no older job's output: {}", o.stdout);
    assert!(o.stderr.contains(&format!("job {third} has not run yet")), "{}", o.stderr);
    // With -f it waits for it.
    let mut f = q.cmd("q-log");
    f.args(["-f"]).stdout(Stdio::piped());
    let mut f = Proc::spawn(f);
    let got = collect(&mut f);
    assert_eq!(run_once(&q), 0);
    assert_eq!(f.wait_for(Duration::from_secs(30)), 0);
    wait_until("its output", Duration::from_secs(10), || *got.lock().unwrap() == "third\n");
}

#[test]
fn log_attempt_picks_an_attempt_and_defaults_to_the_newest() {
    let q = QDir::new();
    let id = q.push(&["--attempts", "3", "--backoff", "1ms", "--sh", "echo \"try $Q_ATTEMPT\"; echo \"e$Q_ATTEMPT\" >&2; exit 1"]);
    assert_eq!(run_once(&q), 1);
    // The retry is due within a millisecond or two.
    wait_until("the second attempt ran", Duration::from_secs(30), || run_once(&q) != 75);
    assert_eq!(q.job(&id)["attempt"], 2);
    assert_eq!(q.run("q-log", &["--stdout", &id]).stdout, "try 2\n");
    assert_eq!(q.run("q-log", &["--stdout", "--attempt", "1", &id]).stdout, "try 1\n");
    assert_eq!(q.run("q-log", &["--attempt", "1", "--stderr", &id]).stdout, "e1\n");
    let o = q.run("q-log", &["--attempt", "3", &id]);
    o.expect_code(66);
    assert!(o.stderr.contains("no attempt 3"), "{}", o.stderr);
}

#[test]
fn log_path_prints_the_path_only() {
    let q = QDir::new();
    let id = q.push(&["--", "echo", "x"]);
    assert_eq!(run_once(&q), 0);
    let o = q.run("q-log", &["--path", &id]);
    o.ok();
    assert_eq!(o.stdout, format!("{}\n{}\n", log_file(&q, &id, 1, "out").display(), log_file(&q, &id, 1, "err").display()));
    let o = q.run("q-log", &["--path", "--stdout", &id]);
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
    assert!(o.stderr.contains("has not run yet"), "{}", o.stderr);
    let o = q.run("q-log", &["01ZZZZZZZZZZZZZZZZZZZZZZZZ"]);
    o.expect_code(66);
    assert!(o.stderr.contains("no such job"), "{}", o.stderr);
    // Claimed and settled by hand: no runner wrote a log.
    let c = claim(&q, &[]);
    q.run("q-ctl", &["ack", &id, "--token", &token(&c)]).ok();
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

/// A shell snippet that blocks until the file `name` exists (in the job's
/// directory, the test's scratch dir).
fn until(name: &str) -> String {
    format!("while [ ! -e {name} ]; do sleep 0.02; done")
}

#[test]
fn serial_log_follow_streams_until_the_job_ends() {
    let q = QDir::new();
    let script = format!("echo a; {}; echo b; {}; echo c", until("go1"), until("go2"));
    let id = q.push(&["--sh", &script]);
    // Started before the job: it waits for it to start, then follows.
    let mut f = q.cmd("q-log");
    f.args(["-f", &id]).stdout(Stdio::piped());
    let mut f = Proc::spawn(f);
    let got = collect(&mut f);
    let mut r = q.cmd("q-run");
    r.args(["--once"]).stdout(Stdio::null());
    let mut r = Proc::spawn(r);
    let within = Duration::from_secs(30);
    wait_until("the first output", within, || *got.lock().unwrap() == "a\n");
    std::fs::write(q.file("go1"), "").unwrap();
    wait_until("output written while running", within, || *got.lock().unwrap() == "a\nb\n");
    assert!(f.child.try_wait().unwrap().is_none(), "still following while the job runs");
    assert_eq!(q.state(&id), "running");
    std::fs::write(q.file("go2"), "").unwrap();
    assert_eq!(r.wait_for(within), 0);
    assert_eq!(f.wait_for(within), 0, "-f ends with the attempt");
    wait_until("the rest", within, || *got.lock().unwrap() == "a\nb\nc\n");
}

#[test]
fn serial_log_follow_of_a_finished_job_prints_and_ends() {
    let q = QDir::new();
    let id = q.push(&["--", "echo", "over"]);
    assert_eq!(run_once(&q), 0);
    let o = q.run("q-log", &["-f", &id]);
    o.ok();
    assert_eq!(o.stdout, "over\n");
}

#[test]
fn log_closed_stdout_ends_quietly() {
    let q = QDir::new();
    let id = q.push(&["--sh", "i=0; while [ $i -lt 16384 ]; do echo 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde; i=$((i+1)); done"]);
    assert_eq!(run_once(&q), 0);
    assert!(std::fs::metadata(log_file(&q, &id, 1, "out")).unwrap().len() >= 1 << 20);
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
