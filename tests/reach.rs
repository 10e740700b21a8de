//! Reaching a running job: `q-ctl signal`, `stop`, `cont` and `restart`
//! deliver to the job's whole process group through its runner.

#[allow(unused_imports)]
use crate::util::*;

/// The state letter of a process (`/proc/PID/stat`): `T` when stopped.
fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit(')').next()?.split_whitespace().next()?.chars().next()
}

fn read_pid(p: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(p).ok().filter(|s| s.ends_with('\n'))?.trim().parse().ok()
}

/// A job with a process tree (a shell and a child shell, both trapping
/// USR1) reached by signal, stop, cont and restart; a restart queues it
/// again without a failure; then cancel ends it.
#[test]
fn serial_signal_stop_cont_restart_reach_a_process_tree() {
    let q = QDir::new();
    let m = q.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let script = format!(
        r#"M={m}
trap 'echo x >> $M/usr1.$Q_ATTEMPT' USR1
sh -c 'trap "echo x >> {m}/child-usr1.$Q_ATTEMPT" USR1; echo $$ > {m}/child.$Q_ATTEMPT; while :; do sleep 0.05; done' &
echo $$ > $M/leader.$Q_ATTEMPT
while :; do sleep 0.05; done"#,
        m = m.display()
    );
    let id = q.push(&["--sh", &script]);
    let waiting = q.push(&["--after", &id, "--", "true"]);
    let mut c = q.cmd("q-run");
    c.args(["--exit-on-idle", "--grace", "2s"]).stdout(std::process::Stdio::piped());
    let mut worker = Proc::spawn(c);
    let _guard = Killer::new(worker.pid() as u32);
    let within = Duration::from_secs(20);
    wait_until("attempt 1 started", within, || read_pid(&m.join("leader.1")).is_some() && read_pid(&m.join("child.1")).is_some());
    let (leader, child) = (read_pid(&m.join("leader.1")).unwrap(), read_pid(&m.join("child.1")).unwrap());

    // A signal reaches the whole group: the leader and its child.
    let o = q.run("q-ctl", &["signal", &id, "usr1"]);
    o.ok();
    let l = &o.lines()[0];
    assert_eq!((l["action"].as_str(), l["was"].as_str(), l["signal"].as_str(), l["requested"].as_bool()), (Some("signal"), Some("running"), Some("SIGUSR1"), Some(true)), "{l}");
    wait_until("both caught USR1", within, || m.join("usr1.1").exists() && m.join("child-usr1.1").exists());
    // -s with ids on stdin.
    q.run_in("q-ctl", &["signal", "-s", "SIGUSR1"], &format!("{id}\n")).ok();
    wait_until("USR1 again", within, || std::fs::read_to_string(m.join("usr1.1")).is_ok_and(|s| s.lines().count() == 2));

    // Stop and cont: the group pauses and resumes.
    q.run("q-ctl", &["stop", &id]).ok();
    wait_until("both stopped", within, || proc_state(leader) == Some('T') && proc_state(child) == Some('T'));
    assert_eq!(q.state(&id), "running", "a stopped job keeps its lease");
    q.run("q-ctl", &["cont", &id]).ok();
    wait_until("both running again", within, || {
        proc_state(leader).is_some_and(|s| s != 'T') && proc_state(child).is_some_and(|s| s != 'T')
    });

    // Not running: refused with 75, nothing asked; a bad signal is 65.
    let o = q.run("q-ctl", &["signal", &waiting, "USR1"]);
    o.expect_code(75);
    assert!(o.stderr.contains("is waiting: only a running job"), "{}", o.stderr);
    let o = q.run("q-ctl", &["signal", &id, "NOPE"]);
    o.expect_code(65);
    assert!(o.stderr.contains("unknown signal"), "{}", o.stderr);
    // No ids: 66, with an example that fits the action.
    let o = q.run_in("q-ctl", &["signal", "-s", "HUP"], "");
    o.expect_code(66);
    assert!(o.stderr.contains("q-ls --state running --json | q-ctl signal -s"), "{}", o.stderr);
    // No signal named: a usage error (2), like clap's own, saying how.
    for args in [&["signal", id.as_str()][..], &["signal"][..]] {
        let o = q.run("q-ctl", args);
        o.expect_code(2);
        assert!(o.stderr.contains("give ID SIG"), "{args:?}: {}", o.stderr);
    }
    q.run("q-ctl", &["stop", &id]).ok();
    wait_until("stopped again", within, || proc_state(leader) == Some('T'));

    // Restart, even of a stopped job: attempt 1 ends (its whole tree), the
    // job runs again as attempt 2 with no failure counted.
    let o = q.run("q-ctl", &["restart", &id]);
    o.ok();
    assert_eq!(o.lines()[0]["action"], "restart");
    wait_until("attempt 2 started", within, || read_pid(&m.join("leader.2")).is_some());
    wait_until("attempt 1's tree is gone", within, || !pid_alive(leader) && !pid_alive(child));
    let j = q.job(&id);
    assert_eq!((j["state"].as_str(), j["attempt"].as_u64(), j["failures"].as_u64()), (Some("running"), Some(2), Some(0)), "{j}");

    q.run("q-ctl", &["cancel", &id]).ok();
    assert_eq!(worker.wait_for(within), 0);
    let lines = parse_lines(&worker.stdout());
    let ours: Vec<(&str, &str)> = lines.iter().filter(|l| l["id"] == id.as_str()).map(|l| (l["state"].as_str().unwrap(), l["reason"].as_str().unwrap())).collect();
    assert_eq!(ours, [("pending", "restarted"), ("canceled", "canceled")], "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l["id"] == id.as_str()).map(|l| l["failures"].as_u64()).collect::<Vec<_>>(), [Some(0), Some(0)]);
}

/// `q-ctl set` changes a queued job's fields, validated as a push; a
/// running job is refused (75); an unknown one is 66; a bad value 65.
#[test]
fn ctl_set_changes_a_queued_job() {
    let q = QDir::new();
    let a = q.push(&["--name", "a", "--", "true"]);
    let b = q.push(&["--name", "b", "--", "true"]);
    let o = q.run("q-ctl", &["set", &b, "--priority", "7", "--name", "bee", "--timeout", "90s", "--delay", "0s"]);
    o.ok();
    let l = &o.lines()[0];
    assert_eq!((l["action"].as_str(), l["was"].as_str()), (Some("set"), Some("pending")), "{l}");
    assert_eq!(l["changed"], serde_json::json!(["name", "priority", "run_at", "timeout_ms"]), "{l}");
    let j = q.job(&b);
    assert_eq!((j["priority"].as_i64(), j["name"].as_str()), (Some(7), Some("bee")), "{j}");
    let c = q.run("q-claim", &[]);
    assert_eq!(c.lines()[0]["id"], b.as_str(), "the new priority decides the order");
    assert_eq!(c.lines()[0]["job"]["timeout_ms"], 90_000);
    let o = q.run("q-ctl", &["set", &b, "--priority", "1"]);
    o.expect_code(75);
    assert!(o.stderr.contains("is running: only pending, waiting or held"), "{}", o.stderr);
    let o = q.run("q-ctl", &["set", &a, "--priority", "100000"]);
    o.expect_code(65);
    assert!(o.stderr.contains("priority"), "{}", o.stderr);
    assert_eq!(q.job(&a)["priority"], 0, "a bad set changes nothing");
    q.run("q-ctl", &["set", "01J00000000000000000000000", "--priority", "1"]).expect_code(66);
    // New dependencies: the job waits for the running one; a cycle is 65.
    let o = q.run("q-ctl", &["set", &a, "--after", &b]);
    o.ok();
    assert_eq!((o.lines()[0]["changed"][0].as_str(), q.state(&a).as_str()), (Some("after"), "waiting"));
    let c2 = q.push(&["--after", &a, "--", "true"]);
    let o = q.run("q-ctl", &["set", &a, "--after", &c2]);
    o.expect_code(65);
    assert!(o.stderr.contains("would wait on itself"), "{}", o.stderr);
    // Nothing to change: a usage error, saying what can be changed.
    let o = q.run("q-ctl", &["set", &a]);
    o.expect_code(2);
    assert!(o.stderr.contains("nothing to change: give --priority"), "{}", o.stderr);
    // Said before the queue is looked at: also where there is none.
    let none = QDir::new();
    let o = none.run("q-ctl", &["set", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    o.expect_code(2);
    assert!(o.stderr.contains("nothing to change"), "{}", o.stderr);
}

/// `q-ctl edit` opens the job's JSON in $EDITOR: an edit is applied as a
/// push validates it; a bad edit (an unknown field, a key another job
/// holds, an unknown dependency, not JSON) changes nothing and says why; a file that
/// is not a job is kept; no edit, no change.
#[test]
fn ctl_edit_applies_a_valid_edit_and_refuses_a_bad_one() {
    let q = QDir::new();
    let id = q.push(&["--name", "before", "--", "echo", "hi"]);
    let holder = q.push(&["--key", "k", "--", "true"]);
    let held_by = format!("field \"key\": \"k\" is held by job {holder} (pending)");
    let editor = |q: &QDir, script: &str| {
        let p = q.path().join("editor");
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    };
    let edit = |script: &str| {
        let p = editor(&q, script);
        let mut c = q.cmd("q-ctl");
        c.args(["edit", &id]).env("EDITOR", &p).env_remove("VISUAL");
        run_cmd(c, None)
    };
    let o = edit(r#"sed -i 's/"before"/"after"/; s/"hi"/"bye"/' "$1""#);
    o.ok();
    assert_eq!(o.lines()[0]["changed"], serde_json::json!(["cmd", "name"]), "{}", o.stdout);
    let j = q.job(&id);
    assert_eq!((j["name"].as_str(), j["cmd"][1].as_str()), (Some("after"), Some("bye")), "{j}");

    for (script, code, why) in [
        (r#"sed -i 's/"name"/"nmae"/' "$1""#, 65, "unknown field \"nmae\""),
        (r#"sed -i 's/^{/{"key":"k",/' "$1""#, 75, &held_by),
        (r#"sed -i 's/^{/{"after":["01J00000000000000000000000"],/' "$1""#, 66, "field \"after\": no such job"),
        (r#"echo '{not json' > "$1""#, 65, "not JSON"),
        ("exit 3", 65, "failed"),
    ] {
        let o = edit(script);
        o.expect_code(code);
        assert!(o.stderr.contains(why), "{script}: {}", o.stderr);
        assert_eq!(q.job(&id)["name"], "after", "{script}: nothing changed");
    }
    assert!(std::fs::read_dir(std::env::temp_dir()).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with(&format!("q-edit.{id}."))), "the bad edit is kept");
    for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(&format!("q-edit.{id}.")) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let o = edit("true");
    o.ok();
    assert_eq!(o.lines()[0]["changed"], serde_json::json!([]), "no edit, no change");
}

/// A crash of `q-ctl set` at each step leaves the job whole: held (with
/// the old record after the first step, the new one after the exchange),
/// never lost, never twice.
#[test]
fn ctl_set_crash_leaves_the_job_held_never_lost() {
    for (site, name) in [("revise.after_aside", "old"), ("revise.after_exchange", "new")] {
        let q = QDir::new();
        let id = q.push(&["--name", "old", "--", "true"]);
        let mut c = q.cmd("q-ctl");
        c.args(["set", &id, "--name", "new"]).env("Q_FAILPOINTS", site);
        let o = run_cmd(c, None);
        assert_eq!(o.code(), 134, "{site}: aborted: {}", o.stderr);
        let j = q.job(&id);
        assert_eq!((j["state"].as_str(), j["name"].as_str()), (Some("held"), Some(name)), "{site}: {j}");
        let all: usize = ["pending", "held", "waiting", "leased"].iter().map(|d| q.files(d).iter().filter(|f| f.contains(&id)).count()).sum();
        assert_eq!(all, 1, "{site}: one copy");
        q.run("q-ctl", &["release", &id]).ok();
        q.run("q-ctl", &["set", &id, "--name", "again"]).ok();
        assert_eq!(q.job(&id)["name"], "again");
        assert_eq!(q.state(&id), "pending");
    }
}

/// Whether a push with `key` is deduped, and against which job.
fn push_key(q: &QDir, key: &str) -> (String, bool) {
    let o = q.run("q-push", &["--key", key, "--", "true"]);
    o.ok();
    let l = &o.lines()[0];
    (l["id"].as_str().unwrap().to_owned(), l["deduped"].as_bool().unwrap())
}

/// `q-ctl set --key` and `--no-key` run the dedupe rule again: a key
/// another unfinished job holds is refused (75, naming that job; nothing
/// changed); a new key frees the old one at once; `q-ctl edit` takes a key
/// away as well; a key whose holder ended can be taken.
#[test]
fn ctl_set_key_runs_the_dedupe_rule() {
    let q = QDir::new();
    let a = q.push(&["--key", "k1", "--name", "a", "--", "true"]);
    let b = q.push(&["--key", "k2", "--", "true"]);
    let o = q.run("q-ctl", &["set", &a, "--key", "k2", "--name", "changed"]);
    o.expect_code(75);
    assert!(o.stderr.contains(&format!("field \"key\": \"k2\" is held by job {b} (pending): nothing changed")), "{}", o.stderr);
    assert_eq!(q.job(&a)["name"], "a", "nothing changed");
    assert_eq!(push_key(&q, "k1"), (a.clone(), true), "a still holds k1");

    let o = q.run("q-ctl", &["set", &a, "--key", "k3"]);
    o.ok();
    assert_eq!(o.lines()[0]["changed"], serde_json::json!(["key"]), "{}", o.stdout);
    assert_eq!(push_key(&q, "k3"), (a.clone(), true), "a holds k3");
    let (c, deduped) = push_key(&q, "k1");
    assert!(!deduped && c != a, "k1 is free: a new job");

    let o = q.run("q-ctl", &["set", &a, "--no-key"]);
    o.ok();
    assert_eq!(o.lines()[0]["changed"], serde_json::json!(["key"]), "{}", o.stdout);
    assert!(!push_key(&q, "k3").1, "k3 is free");
    q.run("q-ctl", &["set", &a, "--key", "x", "--no-key"]).expect_code(2);

    // edit: the key's line deleted, or a key another job holds.
    let edit = |id: &str, script: &str| {
        let p = q.path().join("editor");
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mut cmd = q.cmd("q-ctl");
        cmd.args(["edit", id]).env("EDITOR", &p).env_remove("VISUAL");
        run_cmd(cmd, None)
    };
    let o = edit(&c, r#"sed -i '/"key"/d' "$1""#);
    o.ok();
    assert_eq!(o.lines()[0]["changed"], serde_json::json!(["key"]), "{}", o.stdout);
    assert!(!push_key(&q, "k1").1, "k1 is free");

    // The holder of k2 ends: its key can be taken.
    q.run("q-ctl", &["cancel", &b]).ok();
    q.run("q-ctl", &["set", &a, "--key", "k2"]).ok();
    assert_eq!(push_key(&q, "k2"), (a.clone(), true));
}

/// `q-ctl set --env-from pusher` records the environment of the `q-ctl`
/// caller, as a push records its pusher's: the job runs in it; `worker`
/// drops it again.
#[test]
fn ctl_set_env_from_records_the_callers_environment() {
    let q = QDir::new();
    let out = q.path().join("out");
    let id = q.push(&["--env-from", "worker", "--sh", &format!("echo \"${{MARK-unset}}\" >> {}", out.display())]);
    let mut c = q.cmd("q-ctl");
    c.args(["set", &id, "--env-from", "pusher"]).env("MARK", "from-ctl");
    let o = run_cmd(c, None);
    o.ok();
    assert_eq!(o.lines()[0]["changed"], serde_json::json!(["env_from"]), "{}", o.stdout);
    q.run("q-run", &["--once"]).ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "from-ctl\n", "the job ran in the caller's environment");
    q.run("q-ctl", &["retry", &id]).ok();
    q.run("q-ctl", &["set", &id, "--env-from", "worker"]).ok();
    let mut w = q.cmd("q-run");
    w.arg("--once").env("MARK", "from-worker");
    run_cmd(w, None).ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "from-ctl\nfrom-worker\n", "the worker's environment");
}

/// A crash of `q-ctl set --key` between its steps leaves one holder per
/// key: after the new key's record, the job still holds its old key (the
/// new one is free); after the exchange, the new key (the old one is
/// free). Either way q-gc drops the record that names the job for a key it
/// does not hold.
#[test]
fn ctl_set_key_crash_leaves_one_holder_per_key() {
    for (site, holds, free) in [("revise.after_key", "old", "new"), ("revise.after_exchange", "new", "old")] {
        let q = QDir::new();
        let id = q.push(&["--key", "old", "--", "true"]);
        let mut c = q.cmd("q-ctl");
        c.args(["set", &id, "--key", "new"]).env("Q_FAILPOINTS", site);
        let o = run_cmd(c, None);
        assert_eq!(o.code(), 134, "{site}: aborted: {}", o.stderr);
        assert_eq!(q.state(&id), "held", "{site}");
        // The record that names the job for the key it does not hold is stale.
        let o = q.run("q-gc", &[]);
        o.ok();
        assert_eq!(o.lines().iter().filter(|l| l["action"] == "prune-key").count(), 1, "{site}: {}", o.stdout);
        assert_eq!(push_key(&q, holds), (id.clone(), true), "{site}: the job holds {holds:?}");
        let (other, deduped) = push_key(&q, free);
        assert!(!deduped && other != id, "{site}: {free:?} is free");
        assert_eq!(push_key(&q, free), (other, true), "{site}: and now the new job's");
        q.run("q-ctl", &["release", &id]).ok();
        assert_eq!(push_key(&q, holds), (id.clone(), true), "{site}: released, it still holds {holds:?}");
    }
}

/// Run `q-supervise --exit-on-idle --events ARGS` to its end: its exit
/// status and its events.
fn supervise_events(q: &QDir, args: &[&str], mut meanwhile: impl FnMut()) -> (i32, Vec<Value>) {
    let mut c = q.cmd("q-supervise");
    c.args(["--exit-on-idle", "--events"]).args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut p = Proc::spawn(c);
    let _guard = Killer::new(p.pid() as u32);
    let err = p.child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    meanwhile();
    let code = p.wait_for(Duration::from_secs(90));
    let events = parse_lines(&reader.join().unwrap());
    (code, events)
}

fn hook_events(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["event"] == "hook-finished").collect()
}

/// `--on-finish` gets every ended job's result line on stdin, `--on-fail`
/// only those that did not end done; a backlog is reported; the outcomes
/// (and the exit status) are the jobs' own.
#[test]
fn serial_hooks_get_the_result_line_and_a_backlog_is_reported() {
    let q = QDir::new();
    let m = q.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let ok = q.push(&["--", "true"]);
    let bad = q.push(&["--", "false"]);
    let more: Vec<String> = (0..10).map(|_| q.push(&["--", "true"])).collect();
    let on_finish = format!("while [ ! -e {m}/go ]; do sleep 0.05; done; cat >> {m}/finished", m = m.display());
    let on_fail = format!("cat >> {m}/failed; {ls} --json \"$Q_JOB_ID\" > {m}/failed-ls", m = m.display(), ls = bin("q-ls").display());
    let (code, events) = supervise_events(&q, &["-j", "2", "--grace", "60s", "--on-finish", &on_finish, "--on-fail", &on_fail], || {
        wait_until("every job ended", Duration::from_secs(60), || {
            let c = &q.run("q-ls", &["--counts"]).lines()[0];
            c["done"].as_u64().unwrap_or(0) + c["dead"].as_u64().unwrap_or(0) == 12
        });
        std::fs::write(m.join("go"), "").unwrap();
    });
    assert_eq!(code, 1, "a job failed: {events:?}");
    let finished = parse_lines(&std::fs::read_to_string(m.join("finished")).unwrap());
    assert_eq!(finished.len(), 12, "one result line per job");
    assert!(finished.iter().all(|r| r["type"] == "result"));
    let mut ids: Vec<&str> = finished.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut want: Vec<&str> = more.iter().map(String::as_str).chain([ok.as_str(), bad.as_str()]).collect();
    want.sort_unstable();
    assert_eq!(ids, want);
    let failed = parse_lines(&std::fs::read_to_string(m.join("failed")).unwrap());
    assert_eq!(failed.iter().map(|r| (r["id"].as_str(), r["state"].as_str())).collect::<Vec<_>>(), [(Some(bad.as_str()), Some("dead"))]);
    let seen = parse_lines(&std::fs::read_to_string(m.join("failed-ls")).unwrap());
    assert_eq!((seen[0]["id"].as_str(), seen[0]["state"].as_str()), (Some(bad.as_str()), Some("dead")), "the hook reaches the queue (Q_DIR)");
    assert!(events.iter().any(|e| e["event"] == "hook-backlog" && e["waiting"].as_u64() >= Some(10)), "{events:?}");
    assert_eq!(hook_events(&events).len(), 13, "12 on-finish and 1 on-fail");
}

/// A hook that hangs is killed at its timeout; one killed mid-run is
/// reported; either way the job's outcome stands and later hooks run.
#[test]
fn serial_a_hook_that_hangs_times_out_and_one_killed_is_reported() {
    let q = QDir::new();
    let m = q.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let a = q.push(&["--", "true"]);
    let hook = format!(r#"echo $$ > {m}/pid.$Q_JOB_ID; cat > /dev/null; sleep 30"#, m = m.display());
    let (code, events) = supervise_events(&q, &["-j", "1", "--on-finish", &hook, "--hook-timeout", "1s"], || {});
    assert_eq!(code, 0, "{events:?}");
    let h = hook_events(&events);
    assert_eq!((h.len(), h[0]["id"].as_str(), h[0]["timed_out"].as_bool()), (1, Some(a.as_str()), Some(true)), "{h:?}");
    let pid = read_pid(&m.join(format!("pid.{a}"))).unwrap();
    assert!(!pid_alive(pid), "the hung hook was killed");
    assert_eq!(q.state(&a), "done");

    let b = q.push(&["--", "true"]);
    let c = q.push(&["--", "false"]);
    let (code, events) = supervise_events(&q, &["-j", "1", "--on-finish", &hook, "--hook-timeout", "60s"], || {
        for id in [&b, &c] {
            wait_until("the hook runs", Duration::from_secs(60), || read_pid(&m.join(format!("pid.{id}"))).is_some());
            let pid = read_pid(&m.join(format!("pid.{id}"))).unwrap();
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        }
    });
    assert_eq!(code, 1, "c failed: {events:?}");
    let h = hook_events(&events);
    assert_eq!(h.iter().map(|e| e["signal"].as_i64()).collect::<Vec<_>>(), [Some(9), Some(9)], "{h:?}");
    assert_eq!((q.state(&b).as_str(), q.state(&c).as_str()), ("done", "dead"), "outcomes stand");
}

/// Without --events, a hook that fails says so on stderr, once.
#[test]
fn serial_a_failing_hook_is_reported_on_stderr() {
    let q = QDir::new();
    let a = q.push(&["--", "true"]);
    let o = q.run("q-supervise", &["-j", "1", "--exit-on-idle", "--on-finish", "cat >/dev/null; exit 3"]);
    o.ok();
    assert!(o.stderr.contains(&format!("job {a}: the --on-finish hook exited with status 3 (the job's outcome stands)")), "{}", o.stderr);
}

/// `q-supervise --output-limit` reaches its workers: a job writing past it
/// ends `output-limit`.
#[test]
fn supervise_output_limit_is_passed_to_its_workers() {
    let q = QDir::new();
    let id = q.push(&["--sh", "head -c 5000 /dev/zero"]);
    let o = q.run("q-supervise", &["-j", "1", "--exit-on-idle", "--output-limit", "1K"]);
    o.expect_code(1);
    let j = q.job(&id);
    assert_eq!((j["state"].as_str(), j["result"]["reason"].as_str()), (Some("dead"), Some("output-limit")), "{j}");
}

/// `max_runtime` counts wall time over all attempts: a job that used most
/// of it in a failed attempt is stopped in its retry when the total runs
/// out, and ends dead (`max-runtime`) though attempts are left; `q-ls`
/// shows the totals.
#[test]
fn serial_max_runtime_across_a_retry() {
    let q = QDir::new();
    let id = q.push(&["--attempts", "5", "--backoff", "10ms", "--max-runtime", "2s", "--sh", "sleep 1.4; exit 1"]);
    // A worker per attempt: the retry is due 10 ms after the first ends.
    let mut results = Vec::new();
    while results.len() < 2 {
        wait_until("the job is due", Duration::from_secs(20), || q.run("q-ls", &["--counts"]).lines()[0]["ready"] == 1);
        results.extend(q.run("q-run", &["--once"]).lines());
    }
    let got: Vec<(&str, &str)> = results.iter().map(|r| (r["state"].as_str().unwrap(), r["reason"].as_str().unwrap())).collect();
    assert_eq!(got, [("pending", "exit"), ("dead", "max-runtime")], "{results:?}");
    let second = results[1]["duration_ms"].as_u64().unwrap();
    assert!(second < 1_400, "the retry was stopped before its own end: {second} ms");
    let j = q.job(&id);
    assert_eq!((j["state"].as_str(), j["failures"].as_u64()), (Some("dead"), Some(1)), "{j}");
    let u = &j["usage"];
    assert_eq!(u["attempts"], 2, "{j}");
    let wall = u["wall_ms"].as_u64().unwrap();
    assert!((2_000..2_000 + 1_400).contains(&wall), "the total is the budget, give or take a look: {wall} ms");
    // A job whose budget is spent ends at its next claim without running.
    q.run("q-ctl", &["retry", &id]).ok();
    let o = q.run("q-run", &["--once"]);
    let r = &o.lines()[0];
    assert_eq!((r["state"].as_str(), r["reason"].as_str(), r["started_at"].as_str()), (Some("dead"), Some("max-runtime"), None), "{r}");
}

/// A job's own `output_limit` replaces the worker's.
#[test]
fn a_jobs_output_limit_replaces_the_workers() {
    let q = QDir::new();
    // It goes on after its output: it is stopped, not just cut short.
    let small = q.push(&["--output-limit", "1K", "--sh", "head -c 5000 /dev/zero; sleep 30"]);
    let big = q.push(&["--output-limit", "8K", "--sh", "head -c 5000 /dev/zero"]);
    let o = q.run("q-run", &["--exit-on-idle", "--output-limit", "2K"]);
    let lines = o.lines();
    let reasons: Vec<(&str, &str)> = lines.iter().map(|r| (r["id"].as_str().unwrap(), r["reason"].as_str().unwrap())).collect();
    assert!(reasons.contains(&(small.as_str(), "output-limit")), "{reasons:?}");
    assert!(reasons.contains(&(big.as_str(), "ok")), "{reasons:?}");
    let o = q.run("q-push", &["--output-limit", "lots", "--", "true"]);
    o.expect_code(65);
    assert!(o.stderr.contains("output_limit"), "{}", o.stderr);
}
