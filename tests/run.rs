//! q-run: process groups, timeouts, retries with backoff, fencing against a
//! paused worker, crashes of the runner, cancel, output cap, pipelines,
//! dependencies, environment.

use crate::util::*;
use nix::sys::signal::Signal;

fn read_pids(p: &Path) -> Vec<i32> {
    std::fs::read_to_string(p).unwrap_or_default().split_whitespace().filter_map(|s| s.parse().ok()).collect()
}

fn results(o: &Out) -> Vec<Value> {
    o.lines().into_iter().filter(|l| l["type"] == "result").collect()
}

/// A job that spawns a grandchild and ignores SIGTERM is killed within
/// timeout + grace, with no process of its tree left; reason timeout.
#[test]
fn serial_timeout_kills_the_whole_tree() {
    let q = QDir::new();
    let pids = q.file("pids");
    let script = format!("trap '' TERM; (trap '' TERM; echo $(sh -c 'echo $PPID') >> {p}; sleep 60) & echo $$ >> {p}; sleep 60", p = pids.display());
    let id = q.push(&["--timeout", "1s", "--sh", &script]);
    let t0 = Instant::now();
    let o = q.run("q-run", &["--exit-on-idle", "--grace", "500ms"]);
    let took = t0.elapsed();
    o.ok();
    let r = &results(&o)[0];
    assert_eq!(r["reason"], "timeout");
    assert_eq!(r["state"], "dead");
    assert_eq!(r["signal"], 9, "SIGTERM was ignored, SIGKILL ended it");
    assert!(took < Duration::from_secs(20), "bounded by timeout + grace (+ slack): {took:?}");
    let ps = read_pids(&pids);
    assert_eq!(ps.len(), 2, "leader and grandchild recorded: {ps:?}");
    wait_until("no process of the job's tree is left", Duration::from_secs(5), || ps.iter().all(|p| !pid_alive(*p)));
    assert_eq!(q.state(&id), "dead");
}

/// Fails twice, then succeeds: done on attempt 3, with backoff between.
#[test]
fn serial_retries_with_backoff_then_done() {
    let q = QDir::new();
    let count = q.file("count");
    let script = format!("n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ]", c = count.display());
    let id = q.push(&["--attempts", "3", "--backoff", "300ms:5s", "--sh", &script]);
    let mut all = Vec::new();
    let t0 = Instant::now();
    while q.state(&id) != "done" && q.state(&id) != "dead" {
        assert!(t0.elapsed() < Duration::from_secs(30));
        let o = q.run("q-run", &["--exit-on-idle"]);
        all.extend(results(&o));
        if all.len() < 3 {
            // Wait for the retry to be due (its own next_run_at).
            let due = all.last().and_then(|r| r["next_run_at"].as_str()).map(str::to_owned);
            if let Some(d) = due {
                let due_ms = jiff_ms(&d);
                wait_until("retry due", Duration::from_secs(10), || now_ms() >= due_ms);
            }
        }
    }
    assert_eq!(q.state(&id), "done");
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_eq!(all[0]["reason"], "exit");
    assert_eq!(all[0]["state"], "pending");
    assert_eq!(all[1]["failures"], 2);
    assert_eq!(all[2]["attempt"], 3);
    assert_eq!(all[2]["reason"], "ok");
    // Backoff: base 300ms doubling with equal jitter: the first delay lies in
    // [150, 300] ms, the second in [300, 600] ms after the failure.
    for (i, (lo, hi)) in [(150, 300), (300, 600)].into_iter().enumerate() {
        let fin = jiff_ms(all[i]["finished_at"].as_str().unwrap());
        let next = jiff_ms(all[i]["next_run_at"].as_str().unwrap());
        let d = next - fin;
        assert!(d >= lo - 5 && d <= hi + 5, "delay {i}: {d} ms not in [{lo}, {hi}]");
        let started_next = jiff_ms(all[i + 1]["started_at"].as_str().unwrap());
        assert!(started_next >= next, "attempt {} started before its backoff ran out", i + 2);
    }
    // With attempts=2 the same job ends dead.
    std::fs::remove_file(&count).unwrap();
    let id2 = q.push(&["--attempts", "2", "--backoff", "100ms", "--sh", &script]);
    let t0 = Instant::now();
    while !["done", "dead"].contains(&q.state(&id2).as_str()) {
        assert!(t0.elapsed() < Duration::from_secs(30));
        q.run("q-run", &["--exit-on-idle"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(q.state(&id2), "dead");
    assert_eq!(q.job(&id2)["result"]["failures"], 2);
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

pub fn jiff_ms(s: &str) -> i64 {
    q_queue::time::parse_time(s).unwrap()
}

/// A worker SIGSTOPped past its lease, whose job another worker then
/// completes: when continued, it refuses to commit (76) and the recorded
/// result is the other worker's.
#[test]
fn serial_paused_worker_cannot_overwrite_the_takeover() {
    let q = QDir::new();
    let started = q.file("started");
    let script = format!("echo $Q_ATTEMPT >> {s}; sleep 1.5; echo done-$Q_ATTEMPT", s = started.display());
    let id = q.push(&["--sh", &script]);
    let mut c = q.cmd("q-run");
    c.args(["--once", "--lease", "600ms"]).env("Q_WORKER_ID", "first").stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut first = Proc::spawn(c);
    wait_until("first attempt started", Duration::from_secs(10), || std::fs::read_to_string(&started).is_ok_and(|s| s.contains('1')));
    first.signal(Signal::SIGSTOP);
    let queue = q_queue::Queue::open(&q.queue).unwrap().unwrap();
    // The lease runs out 600 ms after the last heartbeat; reclaim then.
    wait_until("the stopped worker's lease is reclaimed", Duration::from_secs(10), || !queue.reclaim(false).unwrap().is_empty());
    let o = q.run("q-run", &["--once"]);
    o.ok();
    assert_eq!(results(&o)[0]["attempt"], 2);
    assert_eq!(q.state(&id), "done");
    first.signal(Signal::SIGCONT);
    let code = first.wait_for(Duration::from_secs(20));
    assert_eq!(code, 76, "the late worker is refused");
    let out = first.stdout();
    let late = parse_lines(&out);
    assert_eq!(late[0]["reason"], "lease-lost", "{out}");
    let rec = queue.last_result(&id).unwrap();
    assert_eq!(rec.attempt, 2, "the recorded result is the second worker's");
    assert_eq!(rec.worker_id.as_deref().map(|w| w != "first"), Some(true));
    assert_eq!(q.state(&id), "done");
}

/// SIGKILL of q-run mid-job: the job's tree dies too; after reclaim the job
/// runs again (at-least-once) or ends dead (at-most-once).
#[test]
fn serial_sigkill_of_runner_kills_tree_and_requeues() {
    for (flag, expect) in [(None, "done"), (Some("--at-most-once"), "dead")] {
        let q = QDir::new();
        let pids = q.file("pids");
        let leader = q.file("leader");
        let script = format!(
            "(sleep 60 & echo $! >> {p}; wait) & echo $$ > {l}.tmp; mv {l}.tmp {l}; if [ $Q_ATTEMPT = 1 ]; then sleep 60; fi",
            p = pids.display(),
            l = leader.display()
        );
        let mut args = vec![];
        if let Some(f) = flag {
            args.push(f);
        }
        args.extend(["--sh", &script]);
        let id = q.push(&args);
        let mut c = q.cmd("q-run");
        c.args(["--exit-on-idle"]).stdout(Stdio::null()).stderr(Stdio::null());
        let mut runner = Proc::spawn(c);
        wait_until("job started", Duration::from_secs(10), || !read_pids(&pids).is_empty() && leader.exists());
        let mut ps = read_pids(&leader);
        ps.extend(read_pids(&pids));
        runner.signal(Signal::SIGKILL);
        runner.wait_for(Duration::from_secs(5));
        // The runner is gone, its job is not: the reclaim on this host
        // (the lock is free) kills the whole tree, leader included.
        assert!(pid_alive(ps[0]), "the job's leader outlives its runner until the reclaim");
        let queue = q_queue::Queue::open(&q.queue).unwrap().unwrap();
        let rec = queue.reclaim(false).unwrap();
        assert_eq!(rec.len(), 1, "the dead runner's claim is reclaimed at once (same host, free lock)");
        wait_until("no process of the tree is left", Duration::from_secs(5), || ps.iter().all(|p| !pid_alive(*p)));
        if expect == "done" {
            assert_eq!(q.state(&id), "pending");
            q.run("q-run", &["--exit-on-idle"]).ok();
            let j = q.job(&id);
            assert_eq!(j["state"], "done");
            assert_eq!(j["attempt"], 2);
        } else {
            assert_eq!(q.state(&id), "dead");
            let j = q.job(&id);
            assert_eq!(j["result"]["reason"], "lease-expired");
        }
    }
}

/// The next q-run on the host cleans up after a q-run killed mid-job: it
/// reclaims the dead runner's claim at start (killing the job's leftover
/// tree) and runs the job again.
#[test]
fn serial_next_runner_reclaims_a_killed_runners_job() {
    let q = QDir::new();
    let pids = q.file("pids");
    let script = format!(
        "echo $$ >> {p}; if [ $Q_ATTEMPT = 1 ]; then sleep 60 & echo $! >> {p}; wait; fi",
        p = pids.display()
    );
    let id = q.push(&["--sh", &script]);
    let mut c = q.cmd("q-run");
    c.args(["--exit-on-idle"]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut runner = Proc::spawn(c);
    wait_until("job started", Duration::from_secs(10), || read_pids(&pids).len() >= 2);
    let first = read_pids(&pids);
    runner.signal(Signal::SIGKILL);
    runner.wait_for(Duration::from_secs(5));
    assert!(first.iter().all(|p| pid_alive(*p)), "nothing has reclaimed the job yet");
    let o = q.run("q-run", &["--exit-on-idle"]);
    o.ok();
    wait_until("the dead runner's tree was killed", Duration::from_secs(5), || first.iter().all(|p| !pid_alive(*p)));
    let j = q.job(&id);
    assert_eq!(j["state"], "done");
    assert_eq!(j["attempt"], 2);
}

/// Cancel of a running job ends its whole process tree; reason canceled.
#[test]
fn serial_cancel_running_job_kills_tree() {
    let q = QDir::new();
    let pids = q.file("pids");
    let script = format!("sleep 60 & echo $! >> {p}; echo $$ >> {p}; wait", p = pids.display());
    let id = q.push(&["--sh", &script]);
    let mut c = q.cmd("q-run");
    c.args(["--once", "--grace", "1s"]).stdout(Stdio::piped());
    let mut runner = Proc::spawn(c);
    wait_until("job started", Duration::from_secs(10), || read_pids(&pids).len() >= 2);
    let queue = q_queue::Queue::open(&q.queue).unwrap().unwrap();
    assert_eq!(queue.cancel(&id).unwrap(), q_queue::State::Running);
    runner.wait_for(Duration::from_secs(10));
    let r = parse_lines(&runner.stdout());
    assert_eq!(r[0]["reason"], "canceled");
    assert_eq!(r[0]["state"], "canceled");
    assert_eq!(q.state(&id), "canceled");
    let ps = read_pids(&pids);
    wait_until("tree gone", Duration::from_secs(5), || ps.iter().all(|p| !pid_alive(*p)));
}

#[test]
fn output_past_the_cap_ends_with_output_limit() {
    let q = QDir::new();
    let id = q.push(&["--sh", "yes hello | head -c 2000000; sleep 30"]);
    let o = q.run("q-run", &["--exit-on-idle", "--output-limit", "64K", "--grace", "200ms"]);
    let r = &results(&o)[0];
    assert_eq!(r["reason"], "output-limit");
    assert_eq!(r["state"], "dead");
    let log = q.queue.join("var").join(&id).join("1.out");
    assert_eq!(std::fs::metadata(log).unwrap().len(), 64 * 1024, "the log holds exactly the cap");
}

#[test]
fn stdout_and_stderr_are_kept_apart() {
    let q = QDir::new();
    let id = q.push(&["--sh", "echo to-out; echo to-err >&2"]);
    q.run("q-run", &["--exit-on-idle"]).ok();
    let var = q.queue.join("var").join(&id);
    assert_eq!(std::fs::read_to_string(var.join("1.out")).unwrap(), "to-out\n");
    assert_eq!(std::fs::read_to_string(var.join("1.err")).unwrap(), "to-err\n");
}

#[test]
fn claim_pipe_to_run_stdin() {
    let q = QDir::new();
    let id = q.push(&["--sh", "exit 3"]);
    let sh = format!("{} | {} --stdin --once", bin("q-claim").display(), bin("q-run").display());
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(&sh).env("Q_DIR", &q.queue);
    let o = run_cmd(c, None);
    assert_eq!(o.code(), 3, "--once exits with the job's status: {o:?}");
    assert_eq!(results(&o)[0]["id"], id.as_str());
    assert_eq!(q.state(&id), "dead");
}

#[test]
fn job_environment_cwd_and_payload() {
    let q = QDir::new();
    let dir = q.file("work");
    std::fs::create_dir(&dir).unwrap();
    let mut c = q.cmd("q-push");
    c.current_dir(&dir)
        .env("PUSHER_VAR", "from-pusher")
        .args(["--env", "EXTRA=1", "--payload", "{\"x\":1}", "--sh", "pwd; echo $PUSHER_VAR $EXTRA; echo $Q_JOB_ID $Q_ATTEMPT $Q_FENCE; test -d \"$Q_WORKSPACE\" && echo ws; cat; echo \"[$WORKER_ONLY]\""]);
    let o = run_cmd(c, None);
    let id = o.lines()[0]["id"].as_str().unwrap().to_owned();
    let mut r = q.cmd("q-run");
    r.args(["--exit-on-idle"]).env("WORKER_ONLY", "leak");
    run_cmd(r, None).ok();
    let out = std::fs::read_to_string(q.queue.join("var").join(&id).join("1.out")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], std::fs::canonicalize(&dir).unwrap().to_str().unwrap());
    assert_eq!(lines[1], "from-pusher 1");
    assert_eq!(lines[2], format!("{id} 1 {id}:1"));
    assert_eq!(lines[3], "ws");
    assert_eq!(lines[4], "{\"x\":1}");
    assert_eq!(lines[5], "[]", "the worker's environment does not leak into a pusher-env job");
    // The workspace is removed after success.
    assert!(!q.queue.join("var").join(&id).join("1.work").exists());
}

#[test]
fn handler_gets_the_claim_line() {
    let q = QDir::new();
    let id = q.push(&["--payload", "{\"file\":\"a.txt\"}", "--", "unused"]);
    let o = q.run("q-run", &["--exit-on-idle", "--", "/bin/sh", "-c", "cat"]);
    o.ok();
    let out = std::fs::read_to_string(q.queue.join("var").join(&id).join("1.out")).unwrap();
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["type"], "claim");
    assert_eq!(v["job"]["payload"]["file"], "a.txt");
}

#[test]
fn missing_command_is_spawn_failed_127() {
    let q = QDir::new();
    let id = q.push(&["--", "/nonexistent/program"]);
    let o = q.run("q-run", &["--once"]);
    o.expect_code(127);
    assert_eq!(results(&o)[0]["reason"], "spawn-failed");
    assert_eq!(q.state(&id), "dead");
    q.run("q-run", &["--once"]).expect_code(75);
}

/// A bare program name is looked up in the job's own PATH (the pusher's,
/// recorded), not the worker's; one found nowhere fails like execvp: 127.
#[test]
fn program_is_found_in_the_jobs_own_path() {
    use std::os::unix::fs::PermissionsExt;
    let q = QDir::new();
    let bin = q.path().join("jobbin");
    std::fs::create_dir(&bin).unwrap();
    let prog = bin.join("only-here");
    std::fs::write(&prog, "#!/bin/sh\necho found \"$0\"\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let mut c = q.cmd("q-push");
    c.env("PATH", &path).args(["--", "only-here"]);
    let o = run_cmd(c, None);
    o.ok();
    let id = o.lines()[0]["id"].as_str().unwrap().to_owned();
    let mut c = q.cmd("q-push");
    c.env("PATH", &path).args(["--", "found-nowhere"]);
    run_cmd(c, None).ok();
    // The worker's PATH does not have the directory.
    let o = q.run("q-run", &["--once"]);
    o.ok();
    let out = std::fs::read_to_string(q.queue.join("var").join(&id).join("1.out")).unwrap();
    assert_eq!(out.trim(), format!("found {}", prog.display()));
    let o = q.run("q-run", &["--once"]);
    o.expect_code(127);
    assert_eq!(results(&o)[0]["reason"], "spawn-failed");
}

/// a → b → c run in order; if a fails, b and c end canceled.
#[test]
fn dependency_chain() {
    let q = QDir::new();
    let log = q.file("order");
    let a = q.push(&["--sh", &format!("echo a >> {}", log.display())]);
    let b = q.push(&["--after", &a, "--sh", &format!("echo b >> {}", log.display())]);
    let c = q.push(&["--after", &b, "--sh", &format!("echo c >> {}", log.display())]);
    assert_eq!(q.state(&c), "waiting");
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "a\nb\nc\n");
    let a2 = q.push(&["--sh", "exit 1"]);
    let b2 = q.push(&["--after", &a2, "--", "true"]);
    let c2 = q.push(&["--after", &b2, "--", "true"]);
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(q.state(&a2), "dead");
    for j in [&b2, &c2] {
        let v = q.job(j);
        assert_eq!(v["state"], "canceled");
        assert_eq!(v["result"]["reason"], "dependency-failed");
    }
}

/// SIGTERM to a worker: the running job may finish within --grace.
#[test]
fn serial_sigterm_lets_the_job_finish_within_grace() {
    let q = QDir::new();
    let started = q.file("started");
    let id = q.push(&["--sh", &format!("touch {}; sleep 0.5; echo fin", started.display())]);
    let mut c = q.cmd("q-run");
    c.args(["--grace", "10s"]).stdout(Stdio::piped());
    let mut w = Proc::spawn(c);
    wait_until("job started", Duration::from_secs(10), || started.exists());
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_for(Duration::from_secs(15)), 0, "a worker stopped as asked exits 0");
    assert_eq!(q.state(&id), "done");
}

/// Ctrl-C (SIGINT) to a worker, idle or running a job, and to one waiting
/// for the first push: 130, so `q-run ... && next` stops; SIGTERM: 0.
#[test]
fn serial_sigint_to_a_worker_is_130_and_sigterm_0() {
    let q = QDir::new();
    for (sig, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 0)] {
        // No queue yet: waiting for the first push.
        let mut w = Proc::spawn(q.cmd("q-run"));
        wait_catches(w.pid(), sig);
        w.signal(sig);
        assert_eq!(w.wait_for(Duration::from_secs(15)), code, "{sig} before the first push");
    }
    let started = q.file("started");
    let id = q.push(&["--sh", &format!("touch {}; sleep 60", started.display())]);
    let mut c = q.cmd("q-run");
    c.args(["--grace", "100ms"]).stdout(Stdio::null());
    let mut w = Proc::spawn(c);
    wait_until("job started", Duration::from_secs(10), || started.exists());
    w.signal(Signal::SIGINT);
    assert_eq!(w.wait_for(Duration::from_secs(15)), 130, "running a job");
    assert_eq!(q.state(&id), "pending");
    q.run("q-ctl", &["cancel", &id]).ok();
    for (sig, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 0)] {
        let mut w = Proc::spawn(q.cmd("q-run"));
        wait_catches(w.pid(), sig);
        w.signal(sig);
        assert_eq!(w.wait_for(Duration::from_secs(15)), code, "{sig} while idle");
    }
}

/// SIGTERM, job outlasting --grace: terminated and requeued (worker-shutdown).
#[test]
fn serial_sigterm_requeues_a_job_past_grace() {
    let q = QDir::new();
    let started = q.file("started");
    let id = q.push(&["--sh", &format!("touch {}; sleep 60", started.display())]);
    let mut c = q.cmd("q-run");
    c.args(["--grace", "300ms"]).stdout(Stdio::piped());
    let mut w = Proc::spawn(c);
    wait_until("job started", Duration::from_secs(10), || started.exists());
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_for(Duration::from_secs(15)), 0);
    let r = parse_lines(&w.stdout());
    assert_eq!(r[0]["reason"], "worker-shutdown");
    assert_eq!(q.state(&id), "pending");
    assert_eq!(q.job(&id)["failures"], 0, "an interruption is not a failure");
}

/// Settles committed as one group (a group window longer than the run: the
/// worker settles once it is idle) still settle each
/// attempt as it ended: one result line per attempt in the order the jobs
/// ended; done, dead and retried jobs where their lines say; a dependent
/// freed by a job of the group; no staged record left in tmp/.
#[test]
fn settles_of_a_group_are_each_printed_and_on_disk() {
    let q = QDir::new();
    let mut input = String::new();
    for i in 0..12 {
        let code = if i % 4 == 3 { 1 } else { 0 };
        // j7 may run twice, an hour apart: its retry stays pending.
        let attempts = if i == 7 { 2 } else { 1 };
        input.push_str(&format!("{{\"name\":\"j{i}\",\"sh\":\"exit {code}\",\"attempts\":{attempts},\"backoff\":\"1h\"}}\n"));
    }
    let pushed: Vec<String> = q.run_in("q-push", &[], &input).lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    let after = q.push(&["--after", &pushed[0], "--name", "dependent", "--", "true"]);
    let mut c = q.cmd("q-run");
    c.args(["--exit-on-idle", "--group-window", "1h"]);
    let o = run_cmd(c, None);
    o.ok();
    let rs = results(&o);
    let names: Vec<&str> = rs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    // The dependent runs once j0's settle (in the group) freed it.
    let mut want: Vec<String> = (0..12).map(|i| format!("j{i}")).collect();
    want.push("dependent".into());
    assert_eq!(names, want, "one line per attempt, in the order the jobs ran");
    for (i, id) in pushed.iter().enumerate() {
        let want = match i {
            7 => "pending",
            _ if i % 4 == 3 => "dead",
            _ => "done",
        };
        assert_eq!(q.state(id), want, "j{i}");
        assert_eq!(rs[i]["state"], want, "j{i}'s line");
    }
    assert_eq!(rs[7]["failures"], 1);
    assert_eq!(q.state(&after), "done");
    let tmp: Vec<String> = std::fs::read_dir(q.queue.join("tmp")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.contains(".pub.")).collect();
    assert!(tmp.is_empty(), "staged records left in tmp/: {tmp:?}");
}

/// A worker starts a job before its claim is durable and makes the claim
/// durable in the attempt's settle, before the outcome (FORMAT "Claim",
/// step 4). Killed right after that sync, the job has run but no outcome
/// is published: the next worker reclaims and runs it again. Claims that
/// must be durable before the job starts (at-most-once jobs, claims printed
/// by q-claim) and claims that need no sync (relaxed) never reach it.
#[test]
fn a_worker_makes_its_claim_durable_in_the_settle() {
    let q = QDir::new();
    let marker = q.path().join("ran");
    let m = marker.to_str().unwrap();
    let id = q.push(&["--sh", &format!("echo x >> {m}")]);
    let mut c = q.cmd("q-run");
    // The heartbeat would sync the claim of a job that runs 50 ms: not here.
    c.env("Q_FAILPOINTS", "settle.after_claim_sync").env("Q_CLAIM_SYNC_AFTER_MS", "3600000").arg("--exit-on-idle");
    let o = run_cmd(c, None);
    assert_eq!(o.code(), 134, "the settle reached the claim's sync: {o:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "x\n", "the job ran before the sync");
    assert_eq!(q.state(&id), "running", "no outcome published");
    assert!(!q.queue.join("var").join(&id).join("1.result.json").exists());
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(q.state(&id), "done");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "x\nx\n", "run again after the crash");

    let cases: [(&str, &[&str], bool); 3] = [
        ("relaxed", &["--", "true"], false),
        ("at-most-once", &["--at-most-once", "--", "true"], false),
        ("q-claim | q-run --stdin", &["--", "true"], true),
    ];
    for (what, args, piped) in cases {
        let q = QDir::new();
        let id = q.push(args);
        let o = if piped {
            let claim = q.run("q-claim", &[]);
            claim.ok();
            let mut c = q.cmd("q-run");
            c.env("Q_FAILPOINTS", "settle.after_claim_sync").arg("--stdin");
            run_cmd(c, Some(claim.stdout.clone().into_bytes()))
        } else {
            let mut c = q.cmd("q-run");
            c.env("Q_FAILPOINTS", "settle.after_claim_sync").arg("--exit-on-idle");
            if what == "relaxed" {
                c.env("Q_DURABILITY", "relaxed");
            }
            run_cmd(c, None)
        };
        o.ok();
        assert_eq!(q.state(&id), "done", "{what}");
    }
}

/// The group window decides when a worker settles: with a window longer
/// than the run (given to q-supervise, which passes it to its worker, or
/// in `Q_GROUP_WINDOW`, read by q-run) every result is published after the
/// last job ended, at once when the worker found nothing more to claim;
/// with no window the first result is published while later jobs still
/// run.
#[test]
fn serial_the_group_window_decides_when_results_are_published() {
    // (first result published, last job ended) in ms.
    let spans = |q: &QDir, ids: &[String]| -> (i64, i64) {
        let mut published = Vec::new();
        let mut ended = Vec::new();
        for id in ids {
            let p = q.queue.join("var").join(id).join("1.result.json");
            let m = std::fs::metadata(&p).unwrap().modified().unwrap();
            published.push(m.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64);
            let rec: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            ended.push(jiff_ms(rec["finished_at"].as_str().unwrap()));
        }
        (*published.iter().min().unwrap(), *ended.iter().max().unwrap())
    };
    let push = |q: &QDir| -> Vec<String> {
        let input = "{\"sh\":\"sleep 0.2\"}\n".repeat(4);
        q.run_in("q-push", &[], &input).lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect()
    };

    let q = QDir::new();
    let ids = push(&q);
    q.run("q-supervise", &["--exit-on-idle", "-j", "1", "--group-window", "1h"]).ok();
    let (first, last) = spans(&q, &ids);
    // File times come from a coarse clock (a few ms behind): a margin.
    assert!(first + 20 >= last, "grouped: the first result ({first}) is published after the last job ended ({last})");

    let q = QDir::new();
    let ids = push(&q);
    let mut c = q.cmd("q-run");
    c.env("Q_GROUP_WINDOW", "1h").arg("--exit-on-idle");
    run_cmd(c, None).ok();
    let (first, last) = spans(&q, &ids);
    assert!(first + 20 >= last, "grouped by Q_GROUP_WINDOW: the first result ({first}) is published after the last job ended ({last})");

    let q = QDir::new();
    let ids = push(&q);
    q.run("q-run", &["--exit-on-idle", "--group-window", "0"]).ok();
    let (first, last) = spans(&q, &ids);
    // Three jobs of 200 ms ran after the first was settled.
    assert!(first + 300 < last, "no window: the first result ({first}) is published before the last job ended ({last})");
}

/// A job that runs longer than a moment has its claim made durable by the
/// heartbeat, while it runs, not only by its settle: killed right after
/// that sync, the worker leaves the job started, unsettled and counted; the
/// next worker reclaims it (the interruption recorded) and runs it again.
#[test]
fn serial_the_heartbeat_makes_a_running_jobs_claim_durable() {
    let q = QDir::new();
    let marker = q.path().join("started");
    let m = marker.to_str().unwrap();
    let id = q.push(&["--sh", &format!("echo x >> {m}; sleep 1")]);
    let mut c = q.cmd("q-run");
    c.env("Q_FAILPOINTS", "run.heartbeat_claim_sync").args(["--exit-on-idle", "--grace", "1s"]);
    let o = run_cmd(c, None);
    assert_eq!(o.code(), 134, "the heartbeat synced the claim while the job ran: {o:?}");
    assert_eq!(q.state(&id), "running", "no outcome published");
    assert!(!q.queue.join("var").join(&id).join("1.result.json").exists());
    let o = q.run("q-run", &["--exit-on-idle"]);
    o.ok();
    assert_eq!(q.state(&id), "done");
    let r = q.job(&id)["result"].clone();
    assert_eq!(r["attempt"], 2, "the first claim was counted: {r}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "x\nx\n");
}

/// The wake-ups of all threads of a process so far (voluntary context
/// switches, summed over /proc/PID/task/*/status).
fn wakeups(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| s.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")).and_then(|v| v.trim().parse::<u64>().ok()))
        .sum()
}

/// An idle worker woke every 50 ms on its heartbeat thread with nothing to
/// beat: idle now means the waiter's rescan (at most twice a second) and
/// the reclaim pass, not 20 wake-ups a second.
#[test]
fn serial_an_idle_worker_does_not_spin() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    let mut c = q.cmd("q-run");
    c.stdout(Stdio::null());
    let w = Proc::spawn(c);
    wait_until("the job ran", Duration::from_secs(30), || q.files("done").len() == 1);
    let before = wakeups(w.pid());
    // The measured interval (not a synchronisation): 2 s of idleness.
    std::thread::sleep(Duration::from_secs(2));
    let woke = wakeups(w.pid()) - before;
    eprintln!("idle worker: {woke} wake-ups in 2 s");
    assert!(woke <= 25, "an idle worker woke {woke} times in 2 s (53 with a 50 ms heartbeat tick)");
}
