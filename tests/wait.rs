//! q-wait: ids from arguments or stdin, results printed once, exit status
//! (0 done, 1 otherwise, 66 unknown/no ids, 124 timeout), `--all`. Jobs are
//! driven by hand with q-claim + q-ctl ack/nack.

#[allow(unused_imports)]
use crate::util::*;
use crate::ctl::{claim, token};

fn ack(q: &QDir, id: &str, c: &Value) {
    q.run("q-ctl", &["ack", id, "--token", &token(c)]).ok();
}

fn nack(q: &QDir, id: &str, c: &Value) {
    q.run("q-ctl", &["nack", id, "--token", &token(c)]).ok();
}

#[test]
fn wait_done_job_exits_0_and_prints_its_result() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let c = claim(&q, &[]);
    ack(&q, &id, &c);
    let o = q.run("q-wait", &[&id]);
    o.ok();
    let l = o.lines();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["type"], "result");
    assert_eq!(l[0]["id"], id.as_str());
    assert_eq!(l[0]["state"], "done");
    assert_eq!(l[0]["reason"], "ok");
    assert_eq!(l[0]["attempt"], 1);
}

#[test]
fn wait_dead_job_exits_1() {
    let q = QDir::new();
    let ok = q.push(&["--", "true"]);
    let bad = q.push(&["--attempts", "1", "--", "false"]);
    let c = claim(&q, &[]);
    ack(&q, &ok, &c);
    let c = claim(&q, &[]);
    nack(&q, &bad, &c);
    let o = q.run("q-wait", &[&ok, &bad]);
    o.expect_code(1);
    let l = o.lines();
    assert_eq!(l.len(), 2);
    assert_eq!(l[1]["state"], "dead");
    assert_eq!(l[1]["reason"], "exit");
    assert_eq!(l[1]["failures"], 1);
    // The failed one is named on stderr; -q leaves the line out.
    assert!(o.stderr.starts_with(&format!("q-wait: job {bad} ended dead: exit")), "{}", o.stderr);
    assert!(o.stderr.contains(&format!("see: q-log {bad}")), "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    let o = q.run("q-wait", &["-q", &ok, &bad]);
    o.expect_code(1);
    assert_eq!((o.lines().len(), o.stderr.as_str()), (2, ""));
    // Alone, the done one is a success.
    q.run("q-wait", &[&ok]).ok();
}

#[test]
fn wait_reads_push_lines_on_stdin() {
    let q = QDir::new();
    let p = q.run_in("q-push", &[], "{\"cmd\":[\"true\"]}\n{\"cmd\":[\"true\"]}\n");
    p.ok();
    let ids: Vec<String> = p.lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    for id in &ids {
        let c = claim(&q, &[]);
        assert_eq!(c["id"], id.as_str());
        ack(&q, id, &c);
    }
    let o = q.run_in("q-wait", &[], &p.stdout);
    o.ok();
    let got: Vec<String> = o.lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got, ids);
    // Bare ids, and the same id twice: one result line.
    let o = q.run_in("q-wait", &[], &format!("{}\n{}\n", ids[0], ids[0]));
    o.ok();
    assert_eq!(o.lines().len(), 1);
}

#[test]
fn wait_with_zero_ids_is_66() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    let o = q.run_in("q-wait", &[], "");
    o.expect_code(66);
    assert!(o.stderr.contains("no job ids"), "{}", o.stderr);
    // A q-push that fails prints no id: the pipeline fails too.
    let sh = format!("{} --no-such-flag -- true | {}", bin("q-push").display(), bin("q-wait").display());
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(&sh).env("Q_DIR", &q.queue).current_dir(q.path()).stdin(Stdio::null());
    run_cmd(c, None).expect_code(66);
}

#[test]
fn wait_push_pipe_blocks_until_the_job_is_acked() {
    let q = QDir::new();
    let p = q.run("q-push", &["--", "true"]);
    p.ok();
    let id = p.lines()[0]["id"].as_str().unwrap().to_owned();
    let mut w = q.cmd("q-wait");
    w.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut w = Proc::spawn(w);
    {
        use std::io::Write;
        let mut sin = w.child.stdin.take().unwrap();
        sin.write_all(p.stdout.as_bytes()).unwrap();
    }
    let c = claim(&q, &[]);
    // The job is running: q-wait cannot have finished.
    assert!(w.child.try_wait().unwrap().is_none(), "q-wait returned before the job finished");
    ack(&q, &id, &c);
    assert_eq!(w.wait_for(Duration::from_secs(30)), 0);
    let l = parse_lines(&w.stdout());
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["state"], "done");
}

#[test]
fn wait_follows_a_retried_job_to_its_end() {
    let q = QDir::new();
    let id = q.push(&["--attempts", "2", "--", "false"]);
    let mut w = q.cmd("q-wait");
    w.arg(&id).stdout(Stdio::piped());
    let mut w = Proc::spawn(w);
    let c = claim(&q, &[]);
    q.run("q-ctl", &["nack", &id, "--token", &token(&c), "--delay", "0s"]).ok();
    assert_eq!(q.state(&id), "pending");
    let c = claim(&q, &[]);
    assert!(w.child.try_wait().unwrap().is_none(), "q-wait returned while the job was being retried");
    nack(&q, &id, &c);
    assert_eq!(w.wait_for(Duration::from_secs(30)), 1);
    let l = parse_lines(&w.stdout());
    assert_eq!(l.len(), 1, "only the final result");
    assert_eq!(l[0]["attempt"], 2);
    assert_eq!(l[0]["state"], "dead");
}

#[test]
fn serial_wait_timeout_is_124() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let o = q.run("q-wait", &["--timeout", "300ms", &id]);
    o.expect_code(124);
    assert!(o.stdout.is_empty());
    assert!(o.stderr.contains("timed out"), "{}", o.stderr);
    assert!(o.stderr.contains(&id), "names what is unfinished: {}", o.stderr);
}

#[test]
fn wait_unknown_id_is_66() {
    let q = QDir::new();
    // No queue at all.
    q.run("q-wait", &["01ZZZZZZZZZZZZZZZZZZZZZZZZ"]).expect_code(66);
    let id = q.push(&["--", "true"]);
    let o = q.run("q-wait", &[&id, "01ZZZZZZZZZZZZZZZZZZZZZZZZ"]);
    o.expect_code(66);
    assert!(o.stderr.contains("no such job: 01ZZZZZZZZZZZZZZZZZZZZZZZZ"), "{}", o.stderr);
}

#[test]
fn serial_wait_sigint_is_130() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let mut w = q.cmd("q-wait");
    w.arg(&id).stderr(Stdio::piped());
    let mut w = Proc::spawn(w);
    wait_catches(w.pid(), nix::sys::signal::SIGINT);
    w.signal(nix::sys::signal::SIGINT);
    assert_eq!(w.wait_for(Duration::from_secs(30)), 130);
}

#[test]
fn wait_all_drains_and_prints_what_finished() {
    let q = QDir::new();
    let a = q.push(&["--", "true"]);
    let b = q.push(&["--", "false"]);
    let mut w = q.cmd("q-wait");
    w.arg("--all").stdout(Stdio::piped());
    let mut w = Proc::spawn(w);
    let ca = claim(&q, &[]);
    assert_eq!(ca["id"], a.as_str());
    ack(&q, &a, &ca);
    assert!(w.child.try_wait().unwrap().is_none(), "one job is still pending");
    let cb = claim(&q, &[]);
    nack(&q, &b, &cb);
    assert_eq!(w.wait_for(Duration::from_secs(30)), 1, "one ended dead");
    let l = parse_lines(&w.stdout());
    let states: Vec<_> = l.iter().map(|r| (r["id"].as_str().unwrap().to_owned(), r["state"].as_str().unwrap().to_owned())).collect();
    assert!(states.contains(&(b.clone(), "dead".into())), "{states:?}");
    // An empty (or missing) queue: nothing to wait for.
    q.run("q-wait", &["--all"]).ok();
    QDir::new().run("q-wait", &["--all"]).ok();
}

#[test]
fn wait_all_does_not_hang_on_held_jobs_or_a_paused_queue() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    q.run("q-ctl", &["hold", &id]).ok();
    let o = q.run("q-wait", &["--all"]);
    o.expect_code(1);
    assert!(o.stderr.contains("held"), "{}", o.stderr);
    q.run("q-ctl", &["release", &id]).ok();
    q.run("q-ctl", &["pause"]).ok();
    let o = q.run("q-wait", &["--all"]);
    o.expect_code(1);
    assert!(o.stderr.contains("paused"), "{}", o.stderr);
    // A job waiting on a held one cannot run either.
    q.run("q-ctl", &["resume"]).ok();
    q.run("q-ctl", &["hold", &id]).ok();
    q.push(&["--after", &id, "--", "true"]);
    let o = q.run("q-wait", &["--all"]);
    o.expect_code(1);
    assert!(o.stderr.contains("dependencies"), "{}", o.stderr);
}

#[test]
fn serial_wait_all_timeout_is_124() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    q.run("q-wait", &["--all", "--timeout", "300ms"]).expect_code(124);
}

#[test]
fn wait_many_ids_from_stdin() {
    let q = QDir::new();
    let lines: String = (0..12).map(|_| "{\"cmd\":[\"true\"]}\n").collect();
    let p = q.run_in("q-push", &[], &lines);
    p.ok();
    let ids: Vec<String> = p.lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 12);
    for _ in 0..11 {
        let c = claim(&q, &[]);
        ack(&q, c["id"].as_str().unwrap(), &c);
    }
    let mut w = q.cmd("q-wait");
    w.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut w = Proc::spawn(w);
    {
        use std::io::Write;
        w.child.stdin.take().unwrap().write_all(p.stdout.as_bytes()).unwrap();
    }
    let last = claim(&q, &[]);
    assert!(w.child.try_wait().unwrap().is_none(), "one job is still running");
    ack(&q, last["id"].as_str().unwrap(), &last);
    assert_eq!(w.wait_for(Duration::from_secs(30)), 0);
    let got = parse_lines(&w.stdout());
    assert_eq!(got.len(), 12);
    assert!(got.iter().all(|r| r["state"] == "done"));
    // Many ids, one unknown: 66 before any waiting.
    let mut many = p.stdout.clone();
    many.push_str("01ZZZZZZZZZZZZZZZZZZZZZZZZ\n");
    let o = q.run_in("q-wait", &[], &many);
    o.expect_code(66);
    assert!(o.stdout.is_empty());
}

#[test]
fn serial_wait_all_waits_out_a_timed_pause() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    q.run("q-ctl", &["pause", "--for", "1s"]).ok();
    let mut w = q.cmd("q-wait");
    w.args(["--all", "--timeout", "60s"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut w = Proc::spawn(w);
    // Claimable once the pause ran out.
    let c = claim(&q, &["--wait=30s"]);
    assert!(w.child.try_wait().unwrap().is_none(), "q-wait --all gave up on a pause that ends by itself");
    ack(&q, &id, &c);
    assert_eq!(w.wait_for(Duration::from_secs(30)), 0);
    let l = parse_lines(&w.stdout());
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["id"], id.as_str());
}

#[test]
fn serial_wait_push_pipeline_with_a_worker() {
    let q = QDir::new();
    q.push(&["--", "true"]); // the queue exists before the worker starts
    let mut w = q.cmd("q-run");
    w.stdout(Stdio::null()).stderr(Stdio::null());
    let _worker = Proc::spawn(w);
    let pipeline = |job: &str| {
        let sh = format!("{} --sh '{job}' | {}", bin("q-push").display(), bin("q-wait").display());
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(&sh).env("Q_DIR", &q.queue).current_dir(q.path()).stdin(Stdio::null());
        run_cmd(c, None)
    };
    let o = pipeline("exit 0");
    o.ok();
    assert_eq!(o.lines()[0]["reason"], "ok");
    let o = pipeline("exit 3");
    o.expect_code(1);
    assert_eq!(o.lines()[0]["reason"], "exit");
    assert_eq!(o.lines()[0]["exit_code"], 3);
    assert_eq!(o.lines()[0]["state"], "dead");
}

/// `q-push ... | q-wait` on a queue nothing serves waited for ever without
/// a word: it now says so once (and how to start a worker), keeps waiting,
/// and ends when a worker comes and runs the job.
#[test]
fn serial_wait_says_once_when_nothing_serves_the_queue() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let mut c = q.cmd("q-wait");
    c.arg(&id).env("Q_UNSERVED_AFTER", "100ms").stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut w = Proc::spawn(c);
    let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut pipe = w.child.stderr.take().unwrap();
    let e = std::sync::Arc::clone(&err);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
            if n == 0 {
                break;
            }
            e.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    wait_until("the notice", Duration::from_secs(30), || err.lock().unwrap().contains("nothing serves queue"));
    assert!(err.lock().unwrap().contains("q-supervise --exit-on-idle"), "{}", err.lock().unwrap());
    assert!(w.child.try_wait().unwrap().is_none(), "it keeps waiting");
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(w.wait_for(Duration::from_secs(30)), 0);
    assert_eq!(parse_lines(&w.stdout())[0]["state"], "done");
    wait_until("stderr closed", Duration::from_secs(10), || std::sync::Arc::strong_count(&err) == 1);
    assert_eq!(err.lock().unwrap().matches("nothing serves").count(), 1, "said once: {}", err.lock().unwrap());
}

/// A queue with one held job and a worker that has announced itself and
/// waits for work.
fn held_job_and_an_idle_worker() -> (QDir, String, Proc) {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    q.run("q-ctl", &["hold", &id]).ok();
    let mut worker = q.cmd("q-run");
    worker.stdout(Stdio::null());
    let worker = Proc::spawn(worker);
    wait_until("the worker announced itself", Duration::from_secs(30), || {
        q.files("locks").iter().any(|f| f.starts_with("worker."))
    });
    (q, id, worker)
}

/// A live worker (idle, waiting for jobs) serves the queue: q-wait on a
/// held job says nothing about it, and -q never does.
#[test]
fn serial_wait_is_quiet_while_a_worker_serves_the_queue() {
    let (q, id, mut worker) = held_job_and_an_idle_worker();
    // Longer than the notice's delay: a timeout of 1 s with the notice at 10 ms.
    let mut c = q.cmd("q-wait");
    c.args([&id, "--timeout", "1s"]).env("Q_UNSERVED_AFTER", "10ms");
    let o = run_cmd(c, None);
    o.expect_code(124);
    assert!(!o.stderr.contains("nothing serves"), "{}", o.stderr);
    worker.signal(nix::sys::signal::SIGTERM);
    assert_eq!(worker.wait_for(Duration::from_secs(15)), 0);
    assert!(!q.files("locks").iter().any(|f| f.starts_with("worker.")), "the worker's presence went with it");
    let mut c = q.cmd("q-wait");
    c.args(["-q", &id, "--timeout", "1s"]).env("Q_UNSERVED_AFTER", "10ms");
    let o = run_cmd(c, None);
    o.expect_code(124);
    assert_eq!(o.stderr, "q-wait: timed out with 1 job(s) unfinished: ".to_owned() + &id + "\n", "-q: only why it failed");
}

/// A worker killed outright (no chance to unlink its presence) does not
/// count as serving the queue: its lock is free, so q-wait says nothing
/// serves it, and the dead worker's file is removed.
#[test]
fn serial_a_killed_workers_presence_does_not_count() {
    let (q, id, mut worker) = held_job_and_an_idle_worker();
    worker.signal(nix::sys::signal::SIGKILL);
    worker.wait_for(Duration::from_secs(15));
    assert!(q.files("locks").iter().any(|f| f.starts_with("worker.")), "a killed worker leaves its file");
    let mut c = q.cmd("q-wait");
    c.args([&id, "--timeout", "1s"]).env("Q_UNSERVED_AFTER", "10ms");
    let o = run_cmd(c, None);
    o.expect_code(124);
    assert!(o.stderr.contains("nothing serves"), "a dead worker serves nothing: {}", o.stderr);
    assert!(!q.files("locks").iter().any(|f| f.starts_with("worker.")), "its file was removed by whoever found it free");
}
