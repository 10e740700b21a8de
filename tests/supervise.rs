//! q-supervise: one supervisor per queue (and takeover from a dead one),
//! worker restarts with backoff and immediate requeue of a dead worker's
//! job, drain on SIGTERM (and a second signal), recovery after the
//! supervisor itself is killed, and --exit-on-idle with retries, held jobs
//! and a paused queue. Observed through `--events` on stderr.

use crate::util::*;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};

/// A running supervisor whose `--events` lines are collected as they come.
struct Sup {
    p: Proc,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sup {
    fn start(q: &QDir, args: &[&str]) -> Sup {
        let mut c = q.cmd("q-supervise");
        c.arg("--events")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut p = Proc::spawn(c);
        let err = p.child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        });
        Sup { p, lines }
    }

    /// Every event so far (each stderr line must be a JSON event).
    fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("not a JSON line on stderr with --events: {l:?}: {e}")
                });
                assert_eq!(v["type"], "event", "{v}");
                crate::records::check(&v);
                v
            })
            .collect()
    }

    /// Wait for an event `name` matching `pred`; returns (index, event).
    fn wait(&self, name: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> (usize, Value) {
        let until = Instant::now() + within;
        loop {
            if let Some(found) = self
                .events()
                .into_iter()
                .enumerate()
                .find(|(_, e)| e["event"] == name && pred(e))
            {
                return found;
            }
            assert!(
                Instant::now() < until,
                "no {name} event within {within:?}; events so far:\n{:#?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn all(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    fn worker_pids(&self) -> Vec<i32> {
        self.all("worker-started")
            .iter()
            .map(|e| e["pid"].as_i64().unwrap() as i32)
            .collect()
    }
}

fn kill(pid: i32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Pids written by jobs into a file, one or more per line.
fn pids_in(p: &Path) -> Vec<i32> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A job that records its shell's and its child's pid, ignores SIGTERM
/// (the child too), and runs `secs` unless `skip` exists (a second run
/// then ends at once, done).
fn stubborn_job(pids: &Path, secs: u32, skip: Option<&Path>) -> String {
    let skip = skip
        .map(|s| {
            format!(
                "if [ -e {s} ]; then exit 0; fi; touch {s}; ",
                s = s.display()
            )
        })
        .unwrap_or_default();
    format!(
        "{skip}trap '' TERM; sleep {secs} & echo \"$! $$\" >> {p}; wait",
        p = pids.display()
    )
}

/// Five supervisors started at once: one runs, four exit 75 naming it (and
/// garbage in the lock file does not matter). Killed with SIGKILL, the
/// supervisor's lock is free at once: the next one takes over immediately.
#[test]
fn serial_one_supervisor_per_queue_and_takeover() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    std::fs::write(q.queue.join("locks/supervise.lock"), b"\x00{not json").unwrap();
    let mut sups: Vec<Sup> = (0..5).map(|_| Sup::start(&q, &["-j", "1"])).collect();
    let mut exited = Vec::new();
    wait_until("four supervisors gave up", Duration::from_secs(30), || {
        for (i, s) in sups.iter_mut().enumerate() {
            if !exited.contains(&i) && s.p.child.try_wait().unwrap().is_some() {
                exited.push(i);
            }
        }
        exited.len() >= 4
    });
    let live: Vec<usize> = (0..5).filter(|i| !exited.contains(i)).collect();
    assert_eq!(
        live.len(),
        1,
        "exactly one supervisor runs; exited: {exited:?}"
    );
    let winner = live[0];
    let wpid = sups[winner].p.pid();
    sups[winner].wait("supervisor-started", Duration::from_secs(10), |_| true);
    assert!(
        sups[winner].p.child.try_wait().unwrap().is_none(),
        "the winner keeps running"
    );
    for &i in &exited {
        let code = sups[i].p.wait_for(Duration::from_secs(5));
        assert_eq!(code, 75, "a second supervisor exits 75");
        wait_until("its message", Duration::from_secs(5), || {
            !sups[i].lines.lock().unwrap().is_empty()
        });
        let err = sups[i].lines.lock().unwrap().join("\n");
        assert!(
            err.contains(&format!("pid {wpid}")),
            "the message names the live supervisor (pid {wpid}): {err}"
        );
    }
    // --skip-if-running: exit 0, silently.
    let o = q.run("q-supervise", &["--skip-if-running", "-j", "1"]);
    o.ok();
    assert_eq!(o.stderr, "");
    // SIGKILL the one: the next one takes over at once.
    sups[winner].p.signal(Signal::SIGKILL);
    sups[winner].p.wait_for(Duration::from_secs(5));
    let next = Sup::start(&q, &["-j", "1"]);
    next.wait("supervisor-started", Duration::from_secs(5), |_| true);
    let o = q.run("q-supervise", &["-j", "1"]);
    o.expect_code(75);
    assert!(
        o.stderr.contains(&format!("pid {}", next.p.pid())),
        "{}",
        o.stderr
    );
    let mut next = next;
    next.p.signal(Signal::SIGTERM);
    assert_eq!(next.p.wait_for(Duration::from_secs(20)), 0);
}

/// A worker killed with SIGKILL: its claimed job is requeued in the same
/// pass (before the worker is restarted, long before its 60 s lease could
/// run out) and what was left of the job is killed; the worker is
/// restarted under the same id after base·1, 2, 4, 8.
#[test]
fn serial_worker_killed_restarts_with_backoff_and_job_requeued_at_once() {
    let q = QDir::new();
    let pids = q.file("pids");
    let id = q.push(&["--sh", &stubborn_job(&pids, 30, Some(&q.file("ran")))]);
    let sup = Sup::start(
        &q,
        &["-j", "1", "--restart-base", "100ms", "--lease", "60s"],
    );
    let (_, first) = sup.wait("worker-started", Duration::from_secs(10), |_| true);
    let w1 = first["pid"].as_i64().unwrap() as i32;
    let worker_id = first["worker_id"].as_str().unwrap().to_owned();
    assert!(worker_id.ends_with("-w1"), "{worker_id}");
    wait_until("the job started", Duration::from_secs(20), || {
        pids_in(&pids).len() == 2
    });
    let job_pids = pids_in(&pids);
    sup.wait("job-claimed", Duration::from_secs(5), |e| {
        e["id"] == id.as_str()
    });
    kill(w1, Signal::SIGKILL);
    let (ix_exit, ex) = sup.wait("worker-exited", Duration::from_secs(10), |e| e["pid"] == w1);
    assert_eq!(ex["signal"], 9);
    let (ix_recl, rec) = sup.wait("lease-reclaimed", Duration::from_secs(10), |e| {
        e["id"] == id.as_str()
    });
    assert_eq!(rec["state"], "pending");
    assert_eq!(rec["reason"], "lease-expired");
    assert_eq!(rec["worker_id"], worker_id.as_str());
    assert!(ix_recl > ix_exit);
    let (ix_restart, r) = sup.wait("worker-restarting", Duration::from_secs(10), |e| {
        e["pid"] == w1
    });
    assert_eq!(r["delay_ms"], 100);
    assert!(
        ix_recl < ix_restart,
        "requeued in the same pass, before the restart"
    );
    let (_, second) = sup.wait("worker-started", Duration::from_secs(10), |e| {
        e["pid"] != w1
    });
    assert_eq!(
        second["worker_id"],
        worker_id.as_str(),
        "a stable worker id"
    );
    wait_until(
        "what was left of the job is killed",
        Duration::from_secs(5),
        || job_pids.iter().all(|&p| !pid_alive(p)),
    );
    // The requeued job runs again (attempt 2) and is done.
    sup.wait("job-finished", Duration::from_secs(20), |e| {
        e["id"] == id.as_str() && e["state"] == "done"
    });
    assert_eq!(q.job(&id)["attempt"], 2);
    // Keep killing the worker: 200, 400, 800 ms.
    let mut prev = second["pid"].as_i64().unwrap() as i32;
    for expect in [200, 400, 800] {
        kill(prev, Signal::SIGKILL);
        let (_, r) = sup.wait("worker-restarting", Duration::from_secs(10), |e| {
            e["pid"] == prev
        });
        assert_eq!(r["delay_ms"], expect, "{:#?}", sup.all("worker-restarting"));
        assert_eq!(r["worker_id"], worker_id.as_str());
        let (_, s) = sup.wait("worker-started", Duration::from_secs(10), |e| {
            e["pid"] != prev && !sup_seen(&sup, e, prev)
        });
        prev = s["pid"].as_i64().unwrap() as i32;
    }
    let mut sup = sup;
    sup.p.signal(Signal::SIGTERM);
    assert_eq!(sup.p.wait_for(Duration::from_secs(20)), 0);
}

/// Was this worker-started event for a worker started before `prev`?
fn sup_seen(sup: &Sup, e: &Value, prev: i32) -> bool {
    let pids = sup.worker_pids();
    let me = e["pid"].as_i64().unwrap() as i32;
    let (Some(a), Some(b)) = (
        pids.iter().position(|&p| p == me),
        pids.iter().position(|&p| p == prev),
    ) else {
        return false;
    };
    a < b
}

/// Ctrl-C (SIGINT) drains as SIGTERM does, then exits 130, so that
/// `q-supervise ... && deploy` does not deploy after an interrupt; with or
/// without --exit-on-idle. A drain that found all work done exits 0.
#[test]
fn serial_sigint_drains_then_exits_130() {
    for idle in [false, true] {
        let q = QDir::new();
        let started = q.file("started");
        let id = q.push(&["--sh", &format!("touch {}; exec sleep 30", started.display())]);
        let mut args = vec!["-j", "1", "--grace", "100ms"];
        if idle {
            args.push("--exit-on-idle");
        }
        let mut sup = Sup::start(&q, &args);
        wait_until("the job started", Duration::from_secs(20), || started.exists());
        sup.p.signal(Signal::SIGINT);
        assert_eq!(sup.p.wait_for(Duration::from_secs(30)), 130, "exit-on-idle: {idle}");
        assert_eq!(q.state(&id), "pending", "the drained job is back in the queue");
    }
    // Nothing left to do when the signal came: 0.
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let sup = Sup::start(&q, &["-j", "1"]);
    sup.wait("job-finished", Duration::from_secs(20), |e| e["id"] == id.as_str());
    let mut sup = sup;
    wait_catches(sup.p.pid(), Signal::SIGINT);
    sup.p.signal(Signal::SIGINT);
    assert_eq!(sup.p.wait_for(Duration::from_secs(30)), 0);
}

/// SIGTERM drains: jobs that ignore SIGTERM get it after --grace, then
/// SIGKILL after --grace more; they are requeued (worker-shutdown) and the
/// supervisor exits, with no process of any job, and no worker, left.
#[test]
fn serial_drain_terminates_and_requeues_jobs() {
    let q = QDir::new();
    let pids = q.file("pids");
    let log = q.file("terms");
    let script = format!(
        "trap 'echo TERM >> {l}' TERM; (trap '' TERM; exec sleep 10) & echo \"$! $$\" >> {p}; while ! wait; do :; done",
        l = log.display(),
        p = pids.display()
    );
    let a = q.push(&["--sh", &script]);
    let b = q.push(&["--sh", &script]);
    let mut sup = Sup::start(&q, &["-j", "2", "--grace", "1s"]);
    wait_until("both jobs started", Duration::from_secs(20), || {
        pids_in(&pids).len() == 4
    });
    let workers = sup.worker_pids();
    assert_eq!(workers.len(), 2);
    let t0 = Instant::now();
    sup.p.signal(Signal::SIGTERM);
    let code = sup.p.wait_for(Duration::from_secs(30));
    let took = t0.elapsed();
    assert_eq!(code, 0, "drained jobs are requeued, not failed");
    assert!(
        took < Duration::from_secs(8),
        "the 10 s jobs were stopped (2 x grace), not waited for: {took:?}"
    );
    sup.wait("supervisor-exited", Duration::from_secs(5), |e| {
        e["status"] == 0
    });
    let fin = sup.all("job-finished");
    assert_eq!(fin.len(), 2, "{fin:#?}");
    for f in &fin {
        assert_eq!(f["reason"], "worker-shutdown");
        assert_eq!(f["state"], "pending");
        assert_eq!(f["signal"], 9, "SIGTERM was ignored; SIGKILL ended it");
    }
    assert_eq!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count(),
        2,
        "each job got SIGTERM first"
    );
    assert_eq!(q.state(&a), "pending");
    assert_eq!(q.state(&b), "pending");
    let all: Vec<i32> = pids_in(&pids).into_iter().chain(workers).collect();
    wait_until("no process left", Duration::from_secs(3), || {
        all.iter().all(|&p| !pid_alive(p))
    });
}

/// A second signal stops at once: no waiting for --grace.
#[test]
fn serial_second_signal_stops_at_once() {
    let q = QDir::new();
    let pids = q.file("pids");
    let id = q.push(&["--sh", &stubborn_job(&pids, 60, None)]);
    let mut sup = Sup::start(&q, &["-j", "1", "--grace", "30s"]);
    wait_until("the job started", Duration::from_secs(20), || {
        pids_in(&pids).len() == 2
    });
    sup.p.signal(Signal::SIGTERM);
    sup.wait("draining", Duration::from_secs(5), |_| true);
    let t0 = Instant::now();
    sup.p.signal(Signal::SIGTERM);
    sup.p.wait_for(Duration::from_secs(20));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "it did not wait for the 30 s grace: {:?}",
        t0.elapsed()
    );
    let workers = sup.worker_pids();
    let all: Vec<i32> = pids_in(&pids).into_iter().chain(workers).collect();
    wait_until("no process left", Duration::from_secs(3), || {
        all.iter().all(|&p| !pid_alive(p))
    });
    assert_eq!(q.state(&id), "pending", "requeued");
}

/// SIGKILL of the supervisor itself mid-run: its workers and their jobs die
/// with it; a new supervisor plus q-gc recover every in-flight job, and
/// after --exit-on-idle every pushed job is done.
#[test]
fn serial_supervisor_killed_mid_run_recovers() {
    let q = QDir::new();
    let pids = q.file("pids");
    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(q.push(&[
            "--sh",
            &stubborn_job(&pids, 30, Some(&q.file(&format!("ran{i}")))),
        ]));
    }
    for _ in 0..4 {
        ids.push(q.push(&["--", "true"]));
    }
    let mut sup = Sup::start(&q, &["-j", "2"]);
    wait_until("both long jobs started", Duration::from_secs(20), || {
        pids_in(&pids).len() == 4
    });
    let workers = sup.worker_pids();
    sup.p.signal(Signal::SIGKILL);
    sup.p.wait_for(Duration::from_secs(5));
    let all: Vec<i32> = pids_in(&pids).into_iter().chain(workers).collect();
    wait_until(
        "workers and jobs died with the supervisor",
        Duration::from_secs(10),
        || all.iter().all(|&p| !pid_alive(p)),
    );
    let g = q.run("q-gc", &[]);
    g.ok();
    for l in g.lines() {
        assert_eq!(l["type"], "gc");
    }
    let o = q.run("q-supervise", &["-j", "2", "--exit-on-idle"]);
    o.ok();
    for id in &ids {
        assert_eq!(q.state(id), "done", "job {id}");
    }
}

/// --exit-on-idle waits for a scheduled retry and exits 0 when it succeeds.
#[test]
fn serial_exit_on_idle_waits_for_the_retry() {
    let q = QDir::new();
    let count = q.file("count");
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 2 ]",
        c = count.display()
    );
    let id = q.push(&["--attempts", "2", "--backoff", "1s", "--sh", &script]);
    let o = q.run("q-supervise", &["-j", "1", "--exit-on-idle", "--events"]);
    o.ok();
    let ev: Vec<Value> = parse_lines(&o.stderr)
        .into_iter()
        .filter(|e| e["event"] == "job-finished")
        .collect();
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert_eq!(ev[0]["state"], "pending");
    assert_eq!(ev[0]["reason"], "exit");
    assert_eq!(ev[1]["state"], "done");
    assert_eq!(q.state(&id), "done");
}

/// --exit-on-idle: a missing queue is idle; the status says whether every
/// job ended done; held jobs and a paused queue do not keep it alive, and
/// it says how many jobs wait.
#[test]
fn exit_on_idle_status_held_and_paused() {
    let q = QDir::new();
    let o = q.run("q-supervise", &["--exit-on-idle"]);
    o.ok();
    assert!(!q.queue.exists());
    let bad = q.push(&["--name", "gz", "--", "false"]);
    // Off a terminal a failure is one line on stderr: which job, how, and
    // how to see its output (under make, cron or CI it was silent).
    let o = q.run("q-supervise", &["-j", "1", "--exit-on-idle"]);
    o.expect_code(1);
    assert_eq!(o.stderr, format!("q-supervise: job {bad} (gz) ended dead: exit status 1 (attempt 1); see: q-log {bad}\n"));
    // Named with --queue: the q-log command names it too.
    let bad = q.push(&["--", "false"]);
    let mut c = q.cmd("q-supervise");
    c.env_remove("Q_DIR").arg("--queue").arg(&q.queue).args(["-j", "1", "--exit-on-idle"]);
    let o = run_cmd(c, None);
    o.expect_code(1);
    assert_eq!(o.stderr, format!("q-supervise: job {bad} ended dead: exit status 1 (attempt 1); see: q-log --queue {} {bad}\n", q.queue.display()));
    // -q: not even that; the status says it.
    q.push(&["--", "false"]);
    let o = q.run("q-supervise", &["-q", "-j", "1", "--exit-on-idle"]);
    o.expect_code(1);
    assert_eq!(o.stderr, "");
    let ok = q.push(&["--", "true"]);
    let o = q.run("q-supervise", &["-j", "1", "--exit-on-idle"]);
    o.ok();
    assert_eq!(o.stderr, "", "quiet when not on a terminal");
    assert_eq!(q.state(&ok), "done");
    let held = q.push(&["--", "true"]);
    q.run("q-ctl", &["hold", &held]).ok();
    let o = q.run("q-supervise", &["-j", "1", "--exit-on-idle"]);
    o.ok();
    assert!(
        o.stderr.contains("1 job wait") && o.stderr.contains("held"),
        "{}",
        o.stderr
    );
    assert_eq!(q.state(&held), "held");
    q.run("q-ctl", &["pause"]).ok();
    let ready = q.push(&["--", "true"]);
    let o = q.run("q-supervise", &["-j", "1", "--exit-on-idle"]);
    o.ok();
    assert!(o.stderr.contains("paused"), "{}", o.stderr);
    assert_eq!(q.state(&ready), "pending");
    // --idle-horizon: a job due in an hour does not keep it alive.
    q.run("q-ctl", &["resume"]).ok();
    let later = q.push(&["--delay", "1h", "--", "true"]);
    let o = q.run(
        "q-supervise",
        &["-j", "1", "--exit-on-idle", "--idle-horizon", "1m"],
    );
    o.ok();
    assert!(
        o.stderr.contains("scheduled after the idle horizon"),
        "{}",
        o.stderr
    );
    assert_eq!(q.state(&ready), "done");
    assert_eq!(q.state(&later), "pending");
}

/// `q-push --start` starts a detached supervisor that runs the job and
/// exits when idle.
#[test]
fn serial_push_start_serves_the_queue() {
    let q = QDir::new();
    let o = q.run("q-push", &["--start=2", "--", "true"]);
    o.ok();
    let id = o.lines()[0]["id"].as_str().unwrap().to_owned();
    wait_until("the job is done", Duration::from_secs(30), || {
        q.state(&id) == "done"
    });
    let lock = q.queue.join("locks/supervise.lock");
    wait_until(
        "the supervisor exited when idle",
        Duration::from_secs(30),
        || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&lock)
                .is_ok_and(|f| f.try_lock().is_ok())
        },
    );
}

/// --exit-on-idle and dependencies: a job waiting on one that can still
/// finish is work (both run, status 0); one waiting on a held job is not
/// (it exits, saying what waits).
#[test]
fn exit_on_idle_with_dependencies() {
    let q = QDir::new();
    let a = q.push(&["--sh", "sleep 0.3"]);
    let b = q.push(&["--after", &a, "--", "true"]);
    let o = q.run("q-supervise", &["-j", "1", "--exit-on-idle"]);
    o.ok();
    assert_eq!((q.state(&a), q.state(&b)), ("done".to_owned(), "done".to_owned()));
    let h = q.push(&["--", "true"]);
    q.run("q-ctl", &["hold", &h]).ok();
    let c = q.push(&["--after", &h, "--", "true"]);
    let o = q.run("q-supervise", &["-j", "1", "--exit-on-idle"]);
    o.ok();
    assert!(o.stderr.contains("2 jobs wait") && o.stderr.contains("1 held") && o.stderr.contains("1 waiting"), "{}", o.stderr);
    assert_eq!(q.state(&c), "waiting");
}

/// A job written by a newer q (its record's `v` is higher) is left alone:
/// q-claim finds nothing to claim (1), q-supervise --exit-on-idle does not
/// wait for it and says why it stays, and the file is untouched.
#[test]
fn a_newer_format_job_is_left_alone() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let seg = std::fs::read_dir(q.queue.join("pending")).unwrap().filter_map(|e| e.ok()).find(|e| e.path().is_dir()).unwrap().path();
    let file = std::fs::read_dir(&seg).unwrap().next().unwrap().unwrap().path();
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    rec["v"] = json!(3);
    let bytes = serde_json::to_vec(&rec).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    q.run("q-claim", &[]).expect_code(1);
    let o = q.run("q-supervise", &["-j", "1", "--exit-on-idle"]);
    o.ok();
    assert!(o.stderr.contains("newer q"), "{}", o.stderr);
    assert_eq!(q.state(&id), "pending");
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "left as it was");
}

/// A waiting job whose dependency ended without its marker being read (the
/// marker lost in a crash) is moved on by a long-running supervisor, which
/// looks at waiting jobs when it starts (and every few minutes), not only
/// when it is idle with --exit-on-idle.
#[test]
fn serial_a_supervisor_moves_on_a_stranded_waiting_job() {
    let q = QDir::new();
    let a = q.push(&["--", "true"]);
    let b = q.push(&["--after", &a, "--", "true"]);
    std::fs::remove_file(q.queue.join("var").join(&a).join(format!("then.{b}"))).unwrap();
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!((q.state(&a).as_str(), q.state(&b).as_str()), ("done", "waiting"), "no marker: its settle left b");
    let mut c = q.cmd("q-supervise");
    c.args(["-j", "1"]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut p = Proc::spawn(c);
    wait_until("b done", Duration::from_secs(30), || q.state(&b) == "done");
    p.signal(Signal::SIGTERM);
    assert_eq!(p.wait_for(Duration::from_secs(30)), 0);
}
