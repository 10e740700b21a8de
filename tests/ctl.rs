//! q-ctl: pause/resume, cancel, retry, hold/release, rm, and settling a
//! claim by hand (ack/nack/touch), with q-claim as the consumer.

#[allow(unused_imports)]
use crate::util::*;
use std::collections::BTreeMap;

/// Claim one job (`q-claim` + args) and return its claim line.
pub fn claim(q: &QDir, args: &[&str]) -> Value {
    let o = q.run("q-claim", args);
    o.ok();
    o.lines().remove(0)
}

/// The token of a claim line.
pub fn token(c: &Value) -> String {
    c["token"].as_str().expect("token").to_owned()
}

/// Every file under the queue with its contents (dot-files, i.e. the wake
/// marker, excluded): what "nothing changed" is checked against.
pub fn snapshot(q: &QDir) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(&q.queue).sort_by_file_name() {
        let e = e.expect("walk");
        let rel = e.path().strip_prefix(&q.queue).unwrap().to_string_lossy().into_owned();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let body = if e.file_type().is_file() { std::fs::read(e.path()).unwrap_or_default() } else { b"<dir>".to_vec() };
        m.insert(rel, body);
    }
    m
}

fn ctl(q: &QDir, args: &[&str]) -> Out {
    q.run("q-ctl", args)
}

#[test]
fn ctl_pause_stops_claims_until_resume() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    let o = ctl(&q, &["pause"]);
    o.ok();
    assert_eq!(o.lines()[0]["action"], "pause");
    assert_eq!(o.lines()[0]["paused_until"], Value::Null);
    q.run("q-claim", &[]).expect_code(1);
    let c = q.run("q-ls", &["--counts"]);
    assert_eq!(c.lines()[0]["paused"], true);
    let o = ctl(&q, &["resume"]);
    o.ok();
    assert_eq!(o.lines()[0]["was_paused"], true);
    q.run("q-claim", &[]).ok();
    assert_eq!(q.run("q-ls", &["--counts"]).lines()[0]["paused"], false);
}

#[test]
fn ctl_resume_wakes_a_waiting_claimer() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    ctl(&q, &["pause"]).ok();
    let mut c = q.cmd("q-claim");
    c.args(["--wait=60s"]).stdout(Stdio::piped());
    let mut p = Proc::spawn(c);
    // It cannot claim while paused, whatever the timing.
    ctl(&q, &["resume"]).ok();
    assert_eq!(p.wait_for(Duration::from_secs(30)), 0);
    assert_eq!(parse_lines(&p.stdout()).len(), 1);
}

#[test]
fn serial_ctl_pause_for_resumes_by_itself() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    let t0 = Instant::now();
    let o = ctl(&q, &["pause", "--for", "1s"]);
    o.ok();
    assert!(o.lines()[0]["paused_until"].is_string(), "{o:?}");
    let first = q.run("q-claim", &[]);
    if first.code() == 0 {
        // Only possible if this machine took longer than the pause.
        assert!(t0.elapsed() >= Duration::from_secs(1), "claimed while paused: {first:?}");
    } else {
        first.expect_code(1);
        let c = q.run("q-claim", &["--wait=30s"]);
        c.ok();
        assert!(t0.elapsed() >= Duration::from_secs(1), "claimed before the pause ran out");
    }
}

#[test]
fn ctl_cancel_pending_job_then_wait_exits_1() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let o = ctl(&q, &["cancel", &id]);
    o.ok();
    let l = &o.lines()[0];
    assert_eq!((l["type"].as_str(), l["action"].as_str(), l["id"].as_str()), (Some("ctl"), Some("cancel"), Some(id.as_str())));
    assert_eq!(l["was"], "pending");
    assert_eq!(l["state"], "canceled");
    assert_eq!(q.state(&id), "canceled");
    let w = q.run("q-wait", &[&id]);
    w.expect_code(1);
    let r = &w.lines()[0];
    assert_eq!(r["type"], "result");
    assert_eq!(r["state"], "canceled");
    assert_eq!(r["reason"], "canceled");
    assert_eq!(r["started_at"], Value::Null);
}

#[test]
fn ctl_cancel_running_job_asks_its_runner() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let c = claim(&q, &[]);
    let o = ctl(&q, &["cancel", &id]);
    o.ok();
    assert_eq!(o.lines()[0]["was"], "running");
    assert_eq!(o.lines()[0]["cancel_requested"], true);
    assert!(q.queue.join("var").join(&id).join("1.cancel").exists(), "cancel marker for attempt 1");
    assert_eq!(q.state(&id), "running", "the runner settles it, not q-ctl");
    drop(c);
}

#[test]
fn ctl_unknown_id_is_66_but_the_others_are_handled() {
    let q = QDir::new();
    let a = q.push(&["--", "true"]);
    let b = q.push(&["--", "true"]);
    let o = ctl(&q, &["cancel", &a, "01ZZZZZZZZZZZZZZZZZZZZZZZZ", &b]);
    o.expect_code(66);
    assert!(o.stderr.contains("no such job: 01ZZZZZZZZZZZZZZZZZZZZZZZZ"), "{}", o.stderr);
    assert_eq!(o.lines().len(), 2);
    assert_eq!(q.state(&a), "canceled");
    assert_eq!(q.state(&b), "canceled");
}

#[test]
fn ctl_retry_dead_job_resets_failures_and_attempts_go_on() {
    let q = QDir::new();
    let id = q.push(&["--attempts", "1", "--", "false"]);
    let c = claim(&q, &[]);
    assert_eq!(c["attempt"], 1);
    let n = ctl(&q, &["nack", &id, "--token", &token(&c)]);
    n.ok();
    assert_eq!(n.lines()[0]["state"], "dead");
    assert_eq!(n.lines()[0]["failures"], 1);
    let o = ctl(&q, &["retry", &id]);
    o.ok();
    assert_eq!(o.lines()[0]["was"], "dead");
    assert_eq!(o.lines()[0]["state"], "pending");
    let j = q.job(&id);
    assert_eq!(j["state"], "pending");
    assert_eq!(j["failures"], 0, "fresh failure budget: {j}");
    let c2 = claim(&q, &[]);
    assert_eq!(c2["attempt"], 2, "attempt numbers are never reused");
    assert_eq!(c2["fence"], 2);
    // A fresh budget: one more failure ends it dead again, not before.
    let n = ctl(&q, &["nack", &id, "--token", &token(&c2)]);
    assert_eq!(n.lines()[0]["failures"], 1);
    assert_eq!(n.lines()[0]["state"], "dead");
}

#[test]
fn ctl_retry_refuses_unfinished_jobs() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let o = ctl(&q, &["retry", &id]);
    o.expect_code(75);
    assert!(o.stderr.contains("only done, dead or canceled"), "{}", o.stderr);
    assert_eq!(q.state(&id), "pending");
}

#[test]
fn ctl_retry_reads_ls_lines_on_stdin() {
    let q = QDir::new();
    let mut dead = Vec::new();
    for _ in 0..2 {
        let id = q.push(&["--", "false"]);
        let c = claim(&q, &[]);
        ctl(&q, &["nack", &id, "--token", &token(&c)]).ok();
        dead.push(id);
    }
    let ok = q.push(&["--", "true"]);
    let c = claim(&q, &[]);
    ctl(&q, &["ack", &ok, "--token", &token(&c)]).ok();
    let ls = q.run("q-ls", &["--state", "dead"]);
    ls.ok();
    assert_eq!(ls.lines().len(), 2);
    let o = q.run_in("q-ctl", &["retry"], &ls.stdout);
    o.ok();
    assert_eq!(o.lines().len(), 2);
    for id in &dead {
        assert_eq!(q.state(id), "pending");
    }
    assert_eq!(q.state(&ok), "done", "only the listed jobs");
}

#[test]
fn ctl_hold_and_release() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let o = ctl(&q, &["hold", &id]);
    o.ok();
    assert_eq!(o.lines()[0]["state"], "held");
    assert_eq!(q.state(&id), "held");
    q.run("q-claim", &[]).expect_code(1);
    let o = ctl(&q, &["release", &id]);
    o.ok();
    assert_eq!(o.lines()[0]["was"], "held");
    assert_eq!(o.lines()[0]["state"], "pending");
    let c = claim(&q, &[]);
    assert_eq!(c["id"], id.as_str());
    // A running job cannot be held.
    ctl(&q, &["hold", &id]).expect_code(75);
    assert_eq!(q.state(&id), "running");
}

#[test]
fn ctl_release_of_a_job_with_unfinished_dependencies_goes_back_to_waiting() {
    let q = QDir::new();
    let a = q.push(&["--", "true"]);
    let b = q.push(&["--after", &a, "--", "true"]);
    assert_eq!(q.state(&b), "waiting");
    ctl(&q, &["hold", &b]).ok();
    assert_eq!(q.state(&b), "held");
    ctl(&q, &["release", &b]).ok();
    assert_eq!(q.state(&b), "waiting");
    // Held while its dependency finished: released straight to pending.
    ctl(&q, &["hold", &b]).ok();
    let c = claim(&q, &[]);
    ctl(&q, &["ack", &a, "--token", &token(&c)]).ok();
    assert_eq!(q.state(&b), "held");
    ctl(&q, &["release", &b]).ok();
    assert_eq!(q.state(&b), "pending");
}

#[test]
fn ctl_rm_removes_only_finished_jobs() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let o = ctl(&q, &["rm", &id]);
    o.expect_code(75);
    assert!(o.stderr.contains("only finished jobs"), "{}", o.stderr);
    assert_eq!(q.state(&id), "pending");
    let c = claim(&q, &[]);
    ctl(&q, &["rm", &id]).expect_code(75);
    ctl(&q, &["ack", &id, "--token", &token(&c)]).ok();
    assert!(q.queue.join("var").join(&id).exists());
    let o = ctl(&q, &["rm", &id]);
    o.ok();
    assert_eq!(o.lines()[0]["was"], "done");
    assert!(q.files("done").is_empty());
    assert!(!q.queue.join("var").join(&id).exists(), "results and logs go too");
    ctl(&q, &["rm", &id]).expect_code(66);
}

#[test]
fn ctl_ack_prints_the_result_and_ends_done() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let c = claim(&q, &[]);
    let o = ctl(&q, &["ack", &id, "--token", &token(&c)]);
    o.ok();
    let r = &o.lines()[0];
    assert_eq!(r["type"], "result");
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["attempt"], 1);
    assert_eq!(r["state"], "done");
    assert_eq!(r["reason"], "ok");
    assert_eq!(r["token"], c["token"]);
    assert_eq!(q.state(&id), "done");
}

#[test]
fn ctl_ack_takes_the_claim_line_on_stdin() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let c = q.run("q-claim", &[]);
    c.ok();
    let o = q.run_in("q-ctl", &["ack"], &c.stdout);
    o.ok();
    assert_eq!(o.lines()[0]["state"], "done");
    assert_eq!(q.state(&id), "done");
    // ID without --token is a usage error.
    q.run("q-ctl", &["ack", &id]).expect_code(2);
}

#[test]
fn ctl_nack_retries_with_delay_then_ends_dead() {
    let q = QDir::new();
    let id = q.push(&["--attempts", "2", "--", "false"]);
    let c = claim(&q, &[]);
    let o = ctl(&q, &["nack", &id, "--token", &token(&c), "--delay", "1h", "--exit-code", "3"]);
    o.ok();
    let r = &o.lines()[0];
    assert_eq!(r["state"], "pending");
    assert_eq!(r["reason"], "exit");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["failures"], 1);
    assert!(r["next_run_at"].is_string(), "{r}");
    let counts = q.run("q-ls", &["--counts"]).lines().remove(0);
    assert_eq!(counts["scheduled"], 1, "due in an hour: {counts}");
    q.run("q-claim", &[]).expect_code(1);
    // --delay 0s: claimable again at once; the second failure ends it dead.
    let id2 = q.push(&["--attempts", "2", "--backoff", "1h", "--", "false"]);
    let c = claim(&q, &[]);
    assert_eq!(c["id"], id2.as_str());
    let o = ctl(&q, &["nack", &id2, "--token", &token(&c), "--delay", "0s"]);
    assert_eq!(o.lines()[0]["state"], "pending");
    let c2 = claim(&q, &[]);
    assert_eq!(c2["id"], id2.as_str());
    let o = ctl(&q, &["nack", &id2, "--token", &token(&c2)]);
    o.ok();
    assert_eq!(o.lines()[0]["state"], "dead");
    assert_eq!(o.lines()[0]["exit_code"], 1);
    assert_eq!(q.state(&id2), "dead");
}

#[test]
fn ctl_touch_extends_the_lease() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let c = claim(&q, &["--lease", "1h"]);
    let lease = q.queue.join("var").join(&id).join("1.lease.json");
    let old = std::time::SystemTime::now() - Duration::from_secs(600);
    std::fs::File::options().write(true).open(&lease).unwrap().set_modified(old).unwrap();
    let o = ctl(&q, &["touch", &id, "--token", &token(&c)]);
    o.ok();
    assert_eq!(o.lines()[0]["action"], "touch");
    assert!(o.lines()[0]["lease_expires_at"].is_string());
    let m = std::fs::metadata(&lease).unwrap().modified().unwrap();
    assert!(m > old + Duration::from_secs(300), "heartbeat moved the lease's mtime");
    assert_eq!(q.state(&id), "running");
}

#[test]
fn ctl_stale_token_is_refused_and_changes_nothing() {
    let q = QDir::new();
    // Acked once: the token is spent.
    let a = q.push(&["--", "true"]);
    let c = claim(&q, &[]);
    ctl(&q, &["ack", &a, "--token", &token(&c)]).ok();
    let before = snapshot(&q);
    let t = token(&c);
    for action in ["ack", "nack", "touch"] {
        let o = ctl(&q, &[action, &a, "--token", &t]);
        o.expect_code(76);
        assert!(o.stderr.contains("lease-lost"), "{}", o.stderr);
        assert!(o.stdout.is_empty());
    }
    assert_eq!(snapshot(&q), before, "a stale token changes nothing");

    // Nacked (requeued), then reclaimed: attempt 1's token is stale while
    // attempt 2 runs.
    let b = q.push(&["--attempts", "3", "--", "false"]);
    let c1 = claim(&q, &[]);
    assert_eq!(c1["id"], b.as_str());
    ctl(&q, &["nack", &b, "--token", &token(&c1), "--delay", "0s"]).ok();
    let before = snapshot(&q);
    ctl(&q, &["ack", &b, "--token", &token(&c1)]).expect_code(76);
    assert_eq!(snapshot(&q), before);
    let c2 = claim(&q, &[]);
    assert_eq!(c2["attempt"], 2);
    let before = snapshot(&q);
    ctl(&q, &["ack", &b, "--token", &token(&c1)]).expect_code(76);
    ctl(&q, &["touch", &b, "--token", &token(&c1)]).expect_code(76);
    assert_eq!(snapshot(&q), before);
    assert_eq!(q.state(&b), "running");
    // The current claim still settles.
    ctl(&q, &["ack", &b, "--token", &token(&c2)]).ok();
    assert_eq!(q.state(&b), "done");
}

#[test]
fn ctl_settling_an_unknown_job_is_66() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    let o = ctl(&q, &["ack", "01ZZZZZZZZZZZZZZZZZZZZZZZZ", "--token", "1.0.0"]);
    o.expect_code(66);
    assert!(o.stderr.contains("no such job"), "{}", o.stderr);
}

#[test]
fn ctl_traversal_ids_are_refused_everywhere() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let before = snapshot(&q);
    for action in ["cancel", "retry", "hold", "release", "rm"] {
        ctl(&q, &[action, "../x"]).expect_code(65);
        ctl(&q, &[action, &id, "a/b"]).expect_code(65);
        q.run_in("q-ctl", &[action], "../x\n").expect_code(65);
        q.run_in("q-ctl", &[action], "{\"id\":\"../x\"}\n").expect_code(65);
    }
    for action in ["ack", "nack", "touch"] {
        ctl(&q, &[action, "../x", "--token", "1.0.0"]).expect_code(65);
        q.run_in("q-ctl", &[action], "{\"id\":\"../x\",\"token\":\"1.0.0\"}\n").expect_code(65);
    }
    q.run("q-wait", &["../x"]).expect_code(65);
    q.run_in("q-wait", &[], "../x\n").expect_code(65);
    q.run("q-log", &["../x"]).expect_code(65);
    assert_eq!(snapshot(&q), before, "nothing changed");
    assert_eq!(q.state(&id), "pending");
}

#[test]
fn ctl_needs_ids() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    let o = q.run_in("q-ctl", &["cancel"], "");
    o.expect_code(66);
    assert!(o.stderr.contains("no job ids"), "{}", o.stderr);
}

/// A retry killed between archiving the end record and moving the job
/// (its dedupe key already recorded as its own again) leaves the job
/// terminal where it was, holding no key; a second retry finishes.
#[test]
fn crash_between_retry_steps_leaves_a_terminal_job() {
    let q = QDir::new();
    let id = q.push(&["--delay", "1h", "--key", "nightly", "--", "true"]);
    q.run("q-ctl", &["cancel", &id]).ok();
    let var = q.queue.join("var").join(&id);
    assert!(var.join("end.json").exists());
    let mut c = q.cmd("q-ctl");
    c.env("Q_FAILPOINTS", "retry.after_archive").args(["retry", &id]);
    run_cmd(c, None).expect_code(134);
    assert_eq!(q.state(&id), "canceled", "still terminal, where it was");
    assert!(!var.join("end.json").exists());
    let archived = std::fs::read_dir(&var).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("end.")).count();
    assert_eq!(archived, 1, "the end record is kept in the archive");
    // The key record names a finished job: the key is free.
    let other = q.push(&["--key", "nightly", "--", "true"]);
    assert_ne!(other, id, "a terminal job holds no key");
    q.run("q-ctl", &["retry", &id]).expect_code(75);
    q.run("q-ctl", &["cancel", &other]).ok();
    q.run("q-ctl", &["retry", &id]).ok();
    assert_eq!(q.state(&id), "pending");
}

/// A remove killed between unlinking the job and its var/ directory
/// leaves an orphan directory, which q-gc removes.
#[test]
fn crash_between_remove_steps_leaves_an_orphan_for_gc() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(q.state(&id), "done");
    let mut c = q.cmd("q-ctl");
    c.env("Q_FAILPOINTS", "remove.after_unlink").args(["rm", &id]);
    run_cmd(c, None).expect_code(134);
    q.run("q-ls", &[&id]).expect_code(66);
    let var = q.queue.join("var").join(&id);
    assert!(var.exists(), "the job's records are left behind");
    let o = q.run("q-gc", &["--orphan-ttl", "0"]);
    o.ok();
    assert!(o.lines().iter().any(|l| l["action"] == "remove-orphan" && l["id"] == id.as_str()), "{}", o.stdout);
    assert!(!var.exists());
}

/// A queue can be paused before its first push: the push finds it paused.
#[test]
fn pause_before_the_first_push() {
    let q = QDir::new();
    let o = q.run("q-ctl", &["pause"]);
    o.ok();
    assert_eq!(o.lines()[0]["paused"], true);
    let id = q.push(&["--", "true"]);
    assert_eq!(q.run("q-ls", &["--counts"]).ok().lines()[0]["paused"], true);
    q.run("q-claim", &[]).expect_code(1);
    q.run("q-ctl", &["resume"]).ok();
    assert_eq!(q.run("q-claim", &[]).ok().lines()[0]["id"], id.as_str());
}

/// A queue the user may not enter is refused with 77, the reason said once.
#[test]
fn a_queue_we_may_not_enter_is_77_said_once() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    let root = nix::unistd::geteuid().is_root();
    let mut c = if root {
        // Another user: the queue's directory is root's, mode 0700.
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(bin("q-ls"));
        c
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(q.path(), std::fs::Permissions::from_mode(0o000)).unwrap();
        std::process::Command::new(bin("q-ls"))
    };
    c.arg("--queue").arg(&q.queue).current_dir("/");
    let o = run_cmd(c, None);
    if !root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(q.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    assert_eq!(o.code(), 77, "{}", o.stderr);
    assert_eq!(o.stderr.matches("Permission denied").count(), 1, "said once: {}", o.stderr);
}

/// An import killed before its commit point leaves nothing of the batch
/// (it can be run again); killed after it, the batch is committed, and
/// q-gc (or the next import) puts the rest in place.
#[test]
fn crash_in_an_import_leaves_the_batch_whole_or_absent() {
    let src = QDir::new();
    let first = src.push(&["--key", "k-moved", "--", "true"]);
    let second = src.push(&["--after", &first, "--", "true"]);
    let third = src.push(&["--name", "held", "--", "true"]);
    src.run("q-ctl", &["hold", &third]).ok();
    let records = src.run("q-ctl", &["export"]).ok().stdout.clone();
    let ids = [&first, &second, &third];
    let import = |q: &QDir, fp: &str| {
        let mut c = q.cmd("q-ctl");
        c.arg("import");
        if !fp.is_empty() {
            c.env("Q_FAILPOINTS", fp);
        }
        run_cmd(c, Some(records.clone().into_bytes()))
    };
    // Before the commit point: nothing.
    let q = QDir::new();
    import(&q, "import.after_stage").expect_code(134);
    for id in ids {
        assert!(q.job(id).is_null(), "job {id} of an uncommitted batch is visible");
    }
    // Its key record names a job that never appeared: the key is free, and
    // the batch, tried again, is refused (75) while the new holder lives.
    let pushed = |q: &QDir| q.run("q-push", &["--key", "k-moved", "--", "true"]).ok().lines()[0].clone();
    let other = pushed(&q);
    assert_eq!(other["deduped"], false, "{other}");
    let o = import(&q, "");
    o.expect_code(75);
    assert!(o.stderr.contains(other["id"].as_str().unwrap()), "names the holder: {}", o.stderr);
    q.run("q-ctl", &["cancel", other["id"].as_str().unwrap()]).ok();
    import(&q, "").ok();
    assert_eq!((q.state(&first), q.state(&second), q.state(&third)), ("pending".into(), "waiting".into(), "held".into()));
    assert_eq!(pushed(&q)["id"], first.as_str(), "the imported job holds its key");
    // After it: the batch holds its keys before it is in place, and q-gc
    // puts it in place.
    let q = QDir::new();
    import(&q, "import.after_commit").expect_code(134);
    let dup = pushed(&q);
    assert_eq!((dup["id"].as_str(), dup["deduped"].as_bool()), (Some(first.as_str()), Some(true)), "{dup}");
    q.run("q-gc", &[]).ok();
    assert_eq!((q.state(&first), q.state(&second), q.state(&third)), ("pending".into(), "waiting".into(), "held".into()));
    let o = import(&q, "");
    assert_eq!(o.code(), 73, "the committed batch is there: {}", o.stderr);
    // In batches: those before the refused one came in, and it says so.
    let fresh = src.push(&["--", "true"]);
    let mut c = q.cmd("q-ctl");
    c.args(["import", "--batch", "1"]);
    let first_rec = src.run("q-ctl", &["export"]).ok().stdout.lines().find(|l| l.contains(&fresh)).unwrap().to_owned();
    let o = run_cmd(c, Some(format!("{first_rec}\n{records}").into_bytes()));
    assert_eq!(o.code(), 73, "{}", o.stderr);
    assert!(o.stderr.contains("1 of the 4 jobs came in (the batches before this one)"), "{}", o.stderr);
    assert_eq!(o.lines().len(), 1, "the one that came in is printed");
    assert_eq!(q.state(&fresh), "pending");
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(q.state(&second), "done", "the waiting job moved on after its dependency");
}

/// A directory import holds every key file of its batch open until the
/// batch is in place: a batch with more keyed jobs than the process may
/// open files (a hard `ulimit -n` it cannot raise) is refused before
/// anything is written, saying how; smaller batches go in.
#[test]
fn an_import_with_more_keys_than_open_files_says_to_use_batches() {
    let src = QDir::new();
    let lines: String = (0..300).map(|i| format!("{{\"cmd\":[\"true\"],\"key\":\"k{i}\"}}\n")).collect();
    src.run_in("q-push", &[], &lines).ok();
    let records = src.run("q-ctl", &["export"]).ok().stdout.clone();
    let q = QDir::new();
    let import = |batch: &str| {
        let mut c = Command::new("bash");
        c.args(["-c", &format!("ulimit -n 200 && exec \"$0\" import --batch {batch}"), bin("q-ctl").to_str().unwrap()]);
        c.env("Q_DIR", &q.queue).current_dir(q.path());
        run_cmd(c, Some(records.clone().into_bytes()))
    };
    let o = import("0");
    o.expect_code(65);
    assert!(o.stderr.contains("smaller batches (q-ctl import --batch"), "{}", o.stderr);
    assert_eq!(q.run("q-ls", &["--counts"]).ok().lines()[0]["pending"], 0, "nothing of a refused batch");
    import("100").ok();
    let c = &q.run("q-ls", &["--counts"]).ok().lines()[0];
    assert_eq!(c["pending"], 300, "{c}");
    // And each holds its key.
    let o = q.run_in("q-push", &[], "{\"cmd\":[\"true\"],\"key\":\"k7\"}\n").ok().lines()[0].clone();
    assert_eq!(o["deduped"], true, "{o}");
}

/// `q-ctl export` prints jobs in push order: a held job another waits on
/// (listed after the waiting one) comes first, so an import one job per
/// batch finds it in the batch before.
#[test]
fn export_is_in_push_order_so_batches_find_their_dependencies() {
    let src = QDir::new();
    let dep = src.push(&["--", "true"]);
    src.run("q-ctl", &["hold", &dep]).ok();
    let waiting = src.push(&["--after", &dep, "--", "true"]);
    let later = src.push(&["--priority", "9", "--", "true"]);
    let records = src.run("q-ctl", &["export"]);
    records.ok();
    let ids: Vec<String> = records.lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, [dep.clone(), waiting.clone(), later.clone()], "push order");
    let q = QDir::new();
    q.run_in("q-ctl", &["import", "--batch", "1"], &records.stdout).ok();
    assert_eq!((q.state(&dep), q.state(&waiting), q.state(&later)), ("held".into(), "waiting".into(), "pending".into()));
}
