//! q-push: argv and JSON-lines forms, validation, dedupe, dependencies,
//! durability of what it acknowledges, and the queue's safety checks.

use crate::util::*;

#[test]
fn argv_push_creates_queue_and_prints_pushed() {
    let q = QDir::new();
    let o = q.run("q-push", &["--name", "n1", "--priority", "7", "--tag", "a", "--", "echo", "hi there"]);
    o.ok();
    let l = &o.lines()[0];
    assert_eq!(l["type"], "pushed");
    assert_eq!(l["state"], "pending");
    assert_eq!(l["deduped"], false);
    let id = l["id"].as_str().unwrap();
    assert_eq!(id.len(), 26);
    let j = q.job(id);
    assert_eq!(j["cmd"], json!(["echo", "hi there"]));
    assert_eq!(j["priority"], 7);
    assert_eq!(j["tags"], json!(["a"]));
    assert_eq!(j["name"], "n1");
    // Created private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&q.queue).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn stdin_lines_flags_are_defaults() {
    let q = QDir::new();
    let input = "{\"cmd\":[\"a\"]}\n\n{\"sh\":\"b\",\"priority\":-5}\n";
    let o = q.run_in("q-push", &["--priority", "3", "--tag", "batch"], input);
    o.ok();
    let lines = o.lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["line"], 1);
    assert_eq!(lines[1]["line"], 3);
    let a = q.job(lines[0]["id"].as_str().unwrap());
    let b = q.job(lines[1]["id"].as_str().unwrap());
    assert_eq!(a["priority"], 3);
    assert_eq!(b["priority"], -5);
    assert_eq!(b["sh"], "b");
    assert_eq!(a["tags"], json!(["batch"]));
}

/// Each bad line: a clear error with its line number and field, exit 65,
/// valid lines still queued, nothing half-written.
#[test]
fn bad_lines_are_rejected_with_line_numbers() {
    let q = QDir::new();
    let big = format!("{{\"cmd\":[\"{}\"]}}", "x".repeat(10 << 20));
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "not a JSON object"),
        ("{\"cmd\":[\"a\"],\"colour\":1}".into(), "unknown field \"colour\""),
        ("{\"cmd\":\"ls\"}".into(), "field \"cmd\": must be an array"),
        ("{\"cmd\":[]}".into(), "field \"cmd\": is empty"),
        ("{\"cmd\":[\"a\"],\"sh\":\"b\"}".into(), "give one, not both"),
        ("{\"cmd\":[\"a\\u0000b\"]}".into(), "NUL"),
        ("{\"cmd\":[\"a\"],\"priority\":\"high\"}".into(), "field \"priority\""),
        ("{\"cmd\":[\"a\"],\"attempts\":3,\"delivery\":\"at-most-once\"}".into(), "field \"attempts\""),
        (big, "over the"),
        ("[1,2]".into(), "not a JSON object"),
    ];
    let mut input = String::from("{\"cmd\":[\"good\",\"first\"]}\n");
    for (l, _) in &cases {
        input.push_str(l);
        input.push('\n');
    }
    input.push_str("{\"cmd\":[\"good\",\"last\"]}\n");
    let o = q.run_in("q-push", &[], &input);
    o.expect_code(65);
    for (i, (_, needle)) in cases.iter().enumerate() {
        let n = i + 2;
        let want = format!("line {n}: ");
        let line = o.stderr.lines().find(|l| l.contains(&want)).unwrap_or_else(|| panic!("no error for line {n}: {}", o.stderr));
        assert!(line.contains(needle), "line {n}: want {needle:?} in {line:?}");
    }
    let pushed = o.lines();
    assert_eq!(pushed.len(), 2, "only the two valid lines are queued");
    assert_eq!(pushed[1]["line"], cases.len() + 2);
    assert_eq!(q.files("pending").len(), 2);
    assert!(q.files("tmp").is_empty(), "nothing half-written in tmp/");
}

#[test]
fn invalid_utf8_is_rejected() {
    let q = QDir::new();
    let mut c = q.cmd("q-push");
    let input = b"{\"cmd\":[\"\xff\xfe\"]}\n{\"cmd\":[\"ok\"]}\n".to_vec();
    let o = run_cmd_bytes(&mut c, input);
    o.expect_code(65);
    assert!(o.stderr.contains("line 1: not valid UTF-8"), "{}", o.stderr);
    assert_eq!(o.lines().len(), 1);
}

fn run_cmd_bytes(c: &mut Command, input: Vec<u8>) -> Out {
    let c2 = std::mem::replace(c, Command::new("true"));
    run_cmd(c2, Some(input))
}

#[test]
fn atomic_commits_all_or_nothing() {
    let q = QDir::new();
    let o = q.run_in("q-push", &["--atomic"], "{\"cmd\":[\"a\"]}\n{\"cmd\":[]}\n");
    o.expect_code(65);
    assert!(o.lines().is_empty());
    assert!(q.files("pending").is_empty());
    let o = q.run_in("q-push", &["--atomic"], "{\"cmd\":[\"a\"]}\n{\"cmd\":[\"b\"]}\n");
    o.ok();
    assert_eq!(q.files("pending").len(), 2);
}

#[test]
fn twenty_concurrent_pushes_with_one_key_make_one_job() {
    let q = QDir::new();
    q.push(&["--", "true"]); // create the queue first
    let kids: Vec<Child> = (0..20)
        .map(|_| {
            let mut c = q.cmd("q-push");
            c.args(["--key", "nightly", "--", "make", "nightly"]).stdout(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut deduped = 0;
    for k in kids {
        let o = k.wait_with_output().unwrap();
        assert!(o.status.success());
        let l: Value = serde_json::from_slice(&o.stdout).unwrap();
        ids.insert(l["id"].as_str().unwrap().to_owned());
        if l["deduped"] == true {
            deduped += 1;
        }
    }
    assert_eq!(ids.len(), 1, "all pushes name one job: {ids:?}");
    assert_eq!(deduped, 19);
    assert_eq!(q.files("pending").len(), 2);
}

#[test]
fn key_is_free_again_once_the_job_finished() {
    let q = QDir::new();
    let a = q.push(&["--key", "k", "--", "true"]);
    let c = q.run("q-claim", &[]);
    c.ok();
    let tok = c.lines()[0]["token"].as_str().unwrap().to_owned();
    // Still running: deduped.
    let o = q.run("q-push", &["--key", "k", "--", "true"]);
    assert_eq!(o.lines()[0]["id"], a);
    assert_eq!(o.lines()[0]["deduped"], true);
    finish(&q, &a, &tok);
    let b = q.push(&["--key", "k", "--", "true"]);
    assert_ne!(a, b);
}

/// Settle a claim as done through the library (the hand-written consumer's ack).
pub fn finish(q: &QDir, id: &str, token: &str) {
    let queue = q_queue::Queue::open(&q.queue).unwrap().unwrap();
    queue.settle(id, token, q_queue::Reason::Ok, &Default::default(), &Default::default()).unwrap();
}

#[test]
fn after_unknown_id_is_refused() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    let o = q.run("q-push", &["--after", "01ZZZZZZZZZZZZZZZZZZZZZZZZ", "--", "true"]);
    o.expect_code(66);
    assert!(o.stderr.contains("no such job"), "{}", o.stderr);
    let o = q.run("q-push", &["--after", "../x", "--", "true"]);
    o.expect_code(65);
}

#[test]
fn after_makes_a_job_wait_until_its_dependency_is_done() {
    let q = QDir::new();
    let a = q.push(&["--", "true"]);
    let o = q.run("q-push", &["--after", &a, "--", "true"]);
    let b = o.lines()[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(o.lines()[0]["state"], "waiting");
    let c = q.run("q-claim", &["-n", "5"]);
    assert_eq!(c.lines().len(), 1, "only the dependency is claimable");
    let tok = c.lines()[0]["token"].as_str().unwrap().to_owned();
    finish(&q, &a, &tok);
    assert_eq!(q.state(&b), "pending");
}

#[test]
fn group_writable_queue_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let q = QDir::new();
    q.push(&["--", "true"]);
    std::fs::set_permissions(&q.queue, std::fs::Permissions::from_mode(0o777)).unwrap();
    for tool in ["q-push", "q-claim", "q-ls"] {
        let args: &[&str] = if tool == "q-push" { &["--", "true"] } else { &[] };
        let o = q.run(tool, args);
        o.expect_code(77);
        assert!(o.stderr.contains("writable by others"), "{tool}: {}", o.stderr);
    }
    std::fs::set_permissions(&q.queue, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(q.queue.join("pending"), std::fs::Permissions::from_mode(0o777)).unwrap();
    q.run("q-claim", &[]).expect_code(77);
}

#[test]
fn a_foreign_writable_job_file_is_never_run() {
    use std::os::unix::fs::PermissionsExt;
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let f = q.queue.join("pending");
    let path = walkdir::WalkDir::new(&f).into_iter().filter_map(|e| e.ok()).find(|e| e.file_type().is_file() && e.file_name().to_string_lossy().contains(&id)).unwrap();
    std::fs::set_permissions(path.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    q.run("q-claim", &[]).expect_code(1);
    assert_eq!(q.files("corrupt").iter().filter(|n| !n.ends_with(".why")).count(), 1, "quarantined");
}

/// A queue under a directory another user could write (they could swap
/// the queue for one of their own) is refused like a foreign-writable
/// queue (77), before anything is written; a root-owned sticky directory
/// (/tmp) is fine.
#[test]
fn a_queue_path_others_could_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let q = QDir::new();
    let open = q.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut c = q.cmd("q-push");
    c.args(["--", "true"]).env("Q_DIR", open.join("q"));
    let o = run_cmd(c, None);
    o.expect_code(77);
    assert!(o.stderr.contains("is on its path") && o.stderr.contains("others may write it"), "{o:?}");
    assert!(!open.join("q").exists(), "nothing written");
    // Through a symlink from a safe place, the same.
    std::os::unix::fs::symlink(&open, q.path().join("link")).unwrap();
    let mut c = q.cmd("q-ls");
    c.env("Q_DIR", q.path().join("link").join("q"));
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
    run_cmd(c, None).ok(); // no queue there yet: empty, nothing refused
    let mut c = q.cmd("q-push");
    c.args(["--", "true"]).env("Q_DIR", q.path().join("link").join("q"));
    run_cmd(c, None).ok();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut c = q.cmd("q-ls");
    c.env("Q_DIR", q.path().join("link").join("q"));
    run_cmd(c, None).expect_code(77);
    if nix::unistd::geteuid().is_root() {
        // Sticky and root's: only an entry's owner may move it.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let mut c = q.cmd("q-ls");
        c.env("Q_DIR", open.join("q"));
        run_cmd(c, None).ok();
        // Owned by another user (who may chmod it at will).
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(&open, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let mut c = q.cmd("q-ls");
        c.env("Q_DIR", open.join("q"));
        let o = run_cmd(c, None);
        o.expect_code(77);
        assert!(o.stderr.contains("it is owned by"), "{o:?}");
    }
}

#[test]
fn a_directory_that_is_not_a_queue_is_never_written() {
    let q = QDir::new();
    std::fs::create_dir_all(&q.queue).unwrap();
    std::fs::write(q.queue.join("notes.txt"), "mine").unwrap();
    let o = q.run("q-push", &["--", "true"]);
    o.expect_code(73);
    assert!(o.stderr.contains("not a q queue"), "{}", o.stderr);
    let names: Vec<_> = std::fs::read_dir(&q.queue).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "nothing written: {names:?}");
    // An empty directory is adopted.
    let q2 = QDir::new();
    std::fs::create_dir_all(&q2.queue).unwrap();
    q2.push(&["--", "true"]);
}

#[test]
fn newer_format_is_refused_with_78() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    std::fs::write(q.queue.join("FORMAT"), "{\"magic\":\"q-queue\",\"version\":2,\"created_at\":\"x\"}\n").unwrap();
    for tool in ["q-push", "q-claim", "q-ls"] {
        let args: &[&str] = if tool == "q-push" { &["--", "true"] } else { &[] };
        let o = q.run(tool, args);
        o.expect_code(78);
        assert!(o.stderr.contains("upgrade q"), "{}", o.stderr);
    }
    assert_eq!(q.files("pending").len(), 1, "nothing written");
}

#[test]
fn missing_queue_is_empty_for_readers() {
    let q = QDir::new();
    q.run("q-ls", &[]).ok();
    let c = q.run("q-ls", &["--counts"]);
    c.ok();
    assert_eq!(c.lines()[0]["ready"], 0);
    q.run("q-claim", &[]).expect_code(1);
    assert!(!q.queue.exists(), "readers never create the queue");
}

#[test]
fn traversal_ids_are_refused_everywhere() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    q.run("q-ls", &["../x"]).expect_code(65);
    q.run("q-ls", &["a/b"]).expect_code(65);
}

#[test]
fn delay_and_at_set_due_time() {
    let q = QDir::new();
    let o = q.run("q-push", &["--delay", "1h", "--", "true"]);
    let due = o.lines()[0]["run_at"].as_str().unwrap().to_owned();
    let o2 = q.run("q-push", &["--at", "2030-01-01T10:00:00+02:00", "--", "true"]);
    assert_eq!(o2.lines()[0]["run_at"], "2030-01-01T08:00:00.000Z");
    assert!(due.as_str() > "2026");
    q.run("q-claim", &[]).expect_code(1);
    let c = q.run("q-ls", &["--counts"]);
    assert_eq!(c.lines()[0]["scheduled"], 2);
    q.run("q-push", &["--delay", "soon", "--", "true"]).expect_code(65);
}

/// The recorded environment leaves out `_` (the shell's last argument), so
/// pushes from one shell share one record.
#[test]
fn volatile_underscore_is_not_recorded() {
    let q = QDir::new();
    for v in ["/usr/bin/a", "/usr/bin/b"] {
        let mut c = q.cmd("q-push");
        c.env("_", v).env("Q_TEST_KEEP", "yes").args(["--", "true"]);
        run_cmd(c, None).ok();
    }
    let envs: Vec<_> = std::fs::read_dir(q.queue.join("env")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(envs.len(), 1, "one record for both pushes: {envs:?}");
    let rec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&envs[0]).unwrap()).unwrap();
    assert!(rec.get("_").is_none());
    assert_eq!(rec["Q_TEST_KEEP"], "yes");
}

/// A batch is written with one open file per job (docs/FORMAT.md, Push). A
/// low open-file limit that q-push cannot raise makes it write in smaller
/// waves: every job is still queued, once.
#[test]
fn a_batch_fits_a_low_open_file_limit() {
    let q = QDir::new();
    let n = 300;
    let input: String = (0..n).map(|i| format!("{{\"cmd\":[\"true\",\"{i}\"]}}\n")).collect();
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg("ulimit -S -n 80 && ulimit -H -n 80 && exec \"$0\" \"$@\"").arg(bin("q-push")).env("Q_DIR", &q.queue);
    let o = run_cmd(c, Some(input.into_bytes()));
    o.ok();
    assert_eq!(o.lines().len(), n);
    let c = q.run("q-ls", &["--counts"]);
    assert_eq!(c.lines()[0]["ready"], n as u64);
    assert!(q.files("tmp").is_empty(), "nothing left in tmp/: {:?}", q.files("tmp"));
}

/// An unknown group name is refused before anything is written.
#[test]
fn unknown_shared_group_is_refused() {
    let q = QDir::new();
    let o = q.run("q-push", &["--shared-group", "no-such-group-q", "--", "true"]);
    o.expect_code(65);
    assert!(o.stderr.contains("no such group \"no-such-group-q\""), "{}", o.stderr);
    assert!(!q.queue.exists(), "no queue was created");
}

/// A big batch is written and linked by two threads, each into its own
/// segment (docs/FORMAT.md, Push): every job is queued once, acknowledged
/// in input order, and each segment stays within its 1,000 jobs.
#[test]
fn a_big_batch_is_queued_whole_and_in_order() {
    let q = QDir::new();
    let n = 2500;
    let input: String = (0..n).map(|i| format!("{{\"cmd\":[\"true\",\"{i}\"]}}\n")).collect();
    let o = q.run_in("q-push", &[], &input);
    o.ok();
    let lines = o.lines();
    assert_eq!(lines.len(), n);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["line"], i as u64 + 1, "acknowledged in input order");
    }
    let ids: std::collections::HashSet<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), n);
    let c = q.run("q-ls", &["--counts"]);
    assert_eq!(c.lines()[0]["ready"], n as u64);
    let mut segments = 0;
    for seg in std::fs::read_dir(q.queue.join("pending")).unwrap().filter_map(|e| e.ok()).filter(|e| e.path().is_dir()) {
        let len = std::fs::read_dir(seg.path()).unwrap().count();
        assert!(len <= 1000, "{} holds {len} jobs", seg.path().display());
        segments += 1;
    }
    assert!(segments >= 3, "{segments} segments for {n} jobs");
    assert!(q.files("tmp").is_empty());
}

/// A push killed after it left its dependency marker and before its job
/// was written: the marker names a job that never appeared, and the
/// dependency still runs and settles, harmlessly (FORMAT, Push "With
/// `after`"). Nothing was acknowledged, and only the dependency exists.
#[test]
fn a_push_killed_after_its_dependency_marker_leaves_a_harmless_marker() {
    let q = QDir::new();
    let a = q.push(&["--", "true"]);
    let mut c = q.cmd("q-push");
    c.env("Q_FAILPOINTS", "push.after_dependent_marker").args(["--after", &a, "--", "true"]);
    let o = run_cmd(c, None);
    assert_eq!(o.code(), 134, "killed at the failpoint: {o:?}");
    assert!(o.stdout.is_empty(), "nothing acknowledged: {o:?}");
    let markers: Vec<String> = std::fs::read_dir(q.queue.join("var").join(&a)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("then.")).collect();
    assert_eq!(markers.len(), 1, "the marker was left: {markers:?}");
    let c = q.run("q-ls", &["--counts"]);
    assert_eq!(c.lines()[0]["ready"], 1, "only the dependency: {c:?}");
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(q.state(&a), "done");
    let c = q.run("q-ls", &["--counts"]);
    assert_eq!((c.lines()[0]["done"].as_u64(), c.lines()[0]["waiting"].as_u64()), (Some(1), Some(0)));
}

/// Each `pushed` line names the job of its own input line, whatever order
/// the jobs are written in (a scheduled job and a high-priority one sort
/// apart from the others).
#[test]
fn pushed_lines_name_the_job_of_their_line() {
    let q = QDir::new();
    let input = "{\"cmd\":[\"true\"],\"name\":\"one\",\"delay\":\"1h\"}\n{\"cmd\":[\"true\"],\"name\":\"two\"}\n{\"cmd\":[\"true\"],\"name\":\"three\",\"priority\":9}\n{\"cmd\":[\"true\"],\"name\":\"four\",\"delay\":\"2h\"}\n";
    let pushed = q.run_in("q-push", &[], input).ok().lines();
    let names = ["one", "two", "three", "four"];
    assert_eq!(pushed.len(), names.len());
    for (n, (p, want)) in pushed.iter().zip(names).enumerate() {
        assert_eq!(p["line"], n + 1, "{p}");
        let id = p["id"].as_str().unwrap();
        assert_eq!(q.job(id)["name"], want, "line {} printed the id of another line's job", n + 1);
    }
}

/// `-q` drops q-push's acknowledgements, never the reason for a failure:
/// `q-push -q --name x </dev/null` exited 1 with no word at all.
#[test]
fn quiet_push_still_says_why_it_failed() {
    let q = QDir::new();
    let o = q.run("q-push", &["-q", "--name", "x"]);
    o.expect_code(1);
    assert_eq!(o.stdout, "");
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(o.stderr.contains("nothing pushed"), "{}", o.stderr);
    let o = q.run("q-push", &["-q", "--", "true"]);
    o.ok();
    assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("", ""), "-q drops the pushed line");
}

/// `--queue FILE` (a regular file) said "is a non-empty directory that is
/// not a q queue"; it says it is a file.
#[test]
fn a_queue_that_is_a_file_is_named_so() {
    let q = QDir::new();
    std::fs::write(&q.queue, "x").unwrap();
    let o = q.run("q-push", &["--", "true"]);
    o.expect_code(73);
    assert!(o.stderr.contains("is a file, not a directory"), "{}", o.stderr);
    assert!(!o.stderr.contains("non-empty directory"), "{}", o.stderr);
}
