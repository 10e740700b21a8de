//! Security: symlinks planted in the queue are never followed, ids that try
//! path traversal are refused by every tool, a job runs only with the
//! environment and directory recorded at push. (Foreign-writable queues
//! and job files: see tests/push.rs; group-shared queues and their users:
//! tests/owners.rs.)

use super::history::*;
use crate::util::*;
use std::fs;

/// A symlink planted as a job's `var/<ID>` directory, or as the log file of
/// its next attempt, is never written through: the runner quarantines or
/// refuses it, and nothing outside the queue changes.
#[test]
fn security_var_symlinks_are_never_written_through() {
    let q = QDir::new();
    let outside = q.file("outside");
    fs::create_dir_all(&outside).unwrap();
    let victim = q.file("victim.txt");
    fs::write(&victim, "precious\n").unwrap();
    let marker = q.file("ran");
    let a = q.push(&["--", "/bin/sh", "-c", &format!("echo output; echo ran >> {}", marker.display())]);
    std::os::unix::fs::symlink(&outside, q.queue.join("var").join(&a)).unwrap();
    let b = q.push(&["--", "/bin/sh", "-c", "echo output; echo errors >&2"]);
    fs::create_dir_all(q.queue.join("var").join(&b)).unwrap();
    std::os::unix::fs::symlink(&victim, q.queue.join("var").join(&b).join("1.out")).unwrap();
    std::os::unix::fs::symlink(&victim, q.queue.join("var").join(&b).join("1.err")).unwrap();
    q.run("q-run", &["--exit-on-idle"]);
    assert!(names(&outside).is_empty(), "written through var/{a} -> {}: {:?}", outside.display(), names(&outside));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n", "a log was written through a symlink");
    // Recovery ends both jobs cleanly, nothing is lost.
    let mut c = q.cmd("q-gc");
    c.env("Q_NO_LEASE_GRACE_MS", "0");
    run_cmd(c, None);
    q.run("q-run", &["--exit-on-idle"]);
    for id in [&a, &b] {
        let st = q.state(id);
        assert!(matches!(st.as_str(), "done" | "pending" | "dead"), "job {id} is {st}");
    }
    assert!(names(&outside).is_empty());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}

/// A job that leaves a marker file: the proof that it ran.
fn marker_job(q: &QDir, marker: &Path) -> String {
    q.push(&["--", "/bin/sh", "-c", &format!("echo ran >> {}", marker.display())])
}

#[test]
fn security_symlinks_in_the_queue_are_never_followed() {
    let q = QDir::new();
    let outside = q.file("outside");
    fs::create_dir_all(&outside).unwrap();
    let marker = q.file("ran");
    // 1. A symlink in a pending segment, pointing at a job record outside.
    let id = marker_job(&q, &marker);
    let d = read_disk(&q.queue);
    let real = d.locs[&id][0].path.clone();
    let evil = outside.join("evil.json");
    fs::write(&evil, fs::read_to_string(&real).unwrap().replace(&marker.display().to_string(), &q.file("evil-ran").display().to_string())).unwrap();
    fs::remove_file(&real).unwrap();
    std::os::unix::fs::symlink(&evil, &real).unwrap();
    // 2. A job whose var/<ID> is a symlink to a directory outside.
    let id2 = marker_job(&q, &marker);
    fs::create_dir_all(q.queue.join("var")).unwrap();
    std::os::unix::fs::symlink(&outside, q.queue.join("var").join(&id2)).unwrap();
    // 3. A symlink in leased/ named like a claim.
    let id3 = "01M8ZZZZZZZZZZZZZZZZZZZZZZ";
    std::os::unix::fs::symlink(&evil, q.queue.join("leased").join(format!("{id3}.1.0.0.json"))).unwrap();
    let before: Vec<String> = names(&outside);
    // The runner quarantines the planted link instead of failing on it.
    let o = q.run("q-run", &["--exit-on-idle"]);
    assert_eq!(o.code(), 0, "{o:?}");
    for _ in 0..2 {
        q.run("q-run", &["--exit-on-idle"]);
        q.run("q-gc", &[]);
    }
    assert!(!q.file("evil-ran").exists(), "the planted job record was run");
    assert_eq!(names(&outside), before, "something was written through a symlink into {}", outside.display());
    assert!(fs::read_to_string(&evil).unwrap().contains("evil-ran"), "the target is untouched");
    // Every planted link ended in corrupt/ (never deleted, never followed).
    for p in [real.clone(), q.queue.join("var").join(&id2), q.queue.join("leased").join(format!("{id3}.1.0.0.json"))] {
        assert!(p.symlink_metadata().is_err() || !p.symlink_metadata().unwrap().file_type().is_symlink(), "{} still a symlink in the queue", p.display());
    }
    assert!(names(&q.queue.join("corrupt")).len() >= 3, "quarantined: {:?}", names(&q.queue.join("corrupt")));
    // The honest job with the planted var link still runs, in a real directory.
    assert_eq!(q.state(&id2), "done", "{:?}", q.job(&id2));
    assert!(!q.queue.join("var").join(&id2).symlink_metadata().unwrap().file_type().is_symlink());
}

#[test]
fn security_traversal_ids_are_refused_everywhere() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let bad = ["../x", "a/b", "..", "x.json", "/etc/passwd", "a\u{0}b"];
    for b in bad {
        if b.contains('\0') {
            continue;
        }
        for (tool, args) in [
            ("q-ls", vec![b]),
            ("q-wait", vec![b]),
            ("q-log", vec![b]),
            ("q-ctl", vec!["cancel", b]),
            ("q-ctl", vec!["ack", b, "--token", "1.0.0"]),
            ("q-push", vec!["--after", b, "--", "true"]),
        ] {
            let o = q.run(tool, &args);
            assert!(matches!(o.code(), 65 | 66), "{tool} {args:?}: {o:?}");
        }
    }
    // A token that tries traversal.
    let c = q.run("q-claim", &[]).lines()[0].clone();
    for t in ["../../x", "1.0.0/../../x", "1.0"] {
        q.run("q-ctl", &["ack", &id, "--token", t]).expect_code(65);
    }
    // A claim line with a traversal id, handed to q-run --stdin.
    // (A name of this test's own: whatever else /tmp holds is not ours.)
    let target = format!("../../../tmp/q-forged-{}", std::process::id());
    let forged = json!({"type": "claim", "id": target, "token": c["token"], "job": c["job"]});
    let o = q.run_in("q-run", &["--stdin"], &format!("{forged}\n"));
    assert!(o.stderr.contains("invalid"), "{o:?}");
    assert!(!q.queue.join(&target).exists());
    assert_eq!(q.state(&id), "running", "the real claim is untouched");
}

#[test]
fn security_job_runs_in_its_recorded_environment_and_directory() {
    let q = QDir::new();
    let home = q.file("pusher-home");
    let elsewhere = q.file("worker-home");
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&elsewhere).unwrap();
    let out = q.file("seen");
    let script = format!("echo \"$(pwd) FOO=$FOO EVIL=${{EVIL:-unset}}\" > {}", out.display());
    let mut c = q.cmd("q-push");
    c.args(["--sh", &script]).current_dir(&home).env("FOO", "pushed");
    let id = run_cmd(c, None).lines()[0]["id"].as_str().unwrap().to_owned();
    let mut c = q.cmd("q-run");
    c.args(["--exit-on-idle"]).current_dir(&elsewhere).env("FOO", "worker").env("EVIL", "1").env("LD_PRELOAD", "/nonexistent.so");
    run_cmd(c, None).ok();
    assert_eq!(q.state(&id), "done");
    let home_c = fs::canonicalize(&home).unwrap();
    assert_eq!(fs::read_to_string(&out).unwrap().trim(), format!("{} FOO=pushed EVIL=unset", home_c.display()));
    // Its recorded directory is gone: it does not run at all (not in the
    // worker's directory instead).
    let gone = q.file("gone");
    fs::create_dir_all(&gone).unwrap();
    let marker = q.file("ran-elsewhere");
    let mut c = q.cmd("q-push");
    c.args(["--sh", &format!("pwd > {}", marker.display())]).current_dir(&gone);
    let id = run_cmd(c, None).lines()[0]["id"].as_str().unwrap().to_owned();
    fs::remove_dir(&gone).unwrap();
    let mut c = q.cmd("q-run");
    c.args(["--exit-on-idle"]).current_dir(&elsewhere);
    run_cmd(c, None);
    assert!(!marker.exists(), "ran in {:?}", fs::read_to_string(&marker));
    assert_eq!(q.job(&id)["last_result"]["reason"].as_str().or(q.job(&id)["result"]["reason"].as_str()).unwrap_or("spawn-failed"), "spawn-failed", "{:?}", q.job(&id));
    // Its recorded environment is gone: it does not run in the worker's.
    let marker2 = q.file("ran-with-worker-env");
    let mut c = q.cmd("q-push");
    c.args(["--sh", &format!("echo $FOO > {}", marker2.display())]).env("FOO", "pushed2").env("UNIQUE_ENV", "1");
    let id = run_cmd(c, None).lines()[0]["id"].as_str().unwrap().to_owned();
    let env_ref = read_disk(&q.queue).jobs[&id].env_ref.clone().unwrap();
    fs::remove_file(q.queue.join("env").join(format!("{env_ref}.json"))).unwrap();
    let mut c = q.cmd("q-run");
    c.args(["--exit-on-idle"]).env("FOO", "worker");
    run_cmd(c, None);
    assert!(!marker2.exists(), "ran with {:?}", fs::read_to_string(&marker2));
    assert_ne!(q.state(&id), "done");
}
