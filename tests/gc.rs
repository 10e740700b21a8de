//! q-gc: dry runs change nothing and predict the real run; planted garbage
//! is quarantined or removed as documented; dead leases are reclaimed;
//! duplicates, retention, promotion, and a second gc beside the first.

use crate::util::*;
use std::collections::BTreeSet;
use nix::sys::signal::Signal;
use std::time::SystemTime;

/// Set a file's (or directory's) mtime `ago` in the past.
fn age(p: &Path, ago: Duration) {
    let f = std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.set_modified(SystemTime::now() - ago).expect("set mtime");
}

const HOURS_2: Duration = Duration::from_secs(7200);

/// Every path under the queue with its size, mtime and link target: what a
/// dry run must leave exactly as it was.
fn snapshot(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.expect("walk");
        let m = e.path().symlink_metadata().expect("stat");
        let link = std::fs::read_link(e.path())
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let len = if m.is_dir() { 0 } else { m.len() };
        out.push(format!("{} {len} {mtime} {link}", e.path().display()));
    }
    out
}

fn gc_lines(o: &Out) -> Vec<Value> {
    let v = o.lines();
    for l in &v {
        assert_eq!(l["type"], "gc", "{l}");
        assert!(
            l["action"].is_string() && l["path"].is_string() && l["reason"].is_string(),
            "{l}"
        );
    }
    v
}

/// (action, id, path) of each line: what a dry run predicts.
fn keys(v: &[Value]) -> BTreeSet<(String, String, String)> {
    v.iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_owned(),
                l["id"].as_str().unwrap_or("").to_owned(),
                l["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn find<'a>(v: &'a [Value], action: &str, path_ends: &str) -> &'a Value {
    v.iter()
        .find(|l| l["action"] == action && l["path"].as_str().unwrap().ends_with(path_ends))
        .unwrap_or_else(|| panic!("no {action} of …{path_ends} in {v:#?}"))
}

/// The headline: planted garbage of every kind; `--dry-run` changes nothing
/// and lists exactly what the real run then does; the real run quarantines
/// (never deletes) what is malformed, removes what is abandoned, and a
/// second run has nothing to do.
#[test]
fn gc_dry_run_predicts_and_garbage_is_handled() {
    let q = QDir::new();
    let ok = q.push(&["--", "true"]);
    let failing = q.push(&["--", "false"]);
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(q.state(&ok), "done");
    assert_eq!(q.state(&failing), "dead");
    let root = q.queue.clone();

    // A partial staging file left by a writer that died, and an old one
    // that a live writer still holds locked.
    let partial = root.join("tmp/01J0000000000000000000PART.999.pub.tmp");
    std::fs::write(&partial, b"{\"v\":1,\"id\":\"01J").unwrap();
    age(&partial, HOURS_2);
    let locked = root.join("tmp/01J0000000000000000000LOCK.999.lease.tmp");
    std::fs::write(&locked, b"{}").unwrap();
    age(&locked, HOURS_2);
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&locked)
        .unwrap();
    held.lock().unwrap();
    // A fresh staging file (a push under way) is left alone.
    let fresh = root.join("tmp/01J0000000000000000000NEW0.999.pub.tmp");
    std::fs::write(&fresh, b"{").unwrap();
    // A job file with bad JSON, a symlink where a job belongs, a bad name.
    let bad_json = root.join("done/BADJSON.json");
    std::fs::write(&bad_json, b"{\"v\":1, this is not json").unwrap();
    let symlink = root.join("dead/SYMLINK.json");
    std::os::unix::fs::symlink("/etc/hostname", &symlink).unwrap();
    let bad_name = root.join("waiting/not-a-job");
    std::fs::write(&bad_name, b"hello").unwrap();
    // A record whose id does not match its name.
    let mismatch = root.join("done/OTHERID.json");
    std::fs::copy(root.join(format!("done/{ok}.json")), &mismatch).unwrap();
    // A job file others may write into.
    let foreign = root.join("canceled/FOREIGN.json");
    std::fs::write(
        &foreign,
        std::fs::read_to_string(root.join(format!("done/{ok}.json")))
            .unwrap()
            .replace(&ok, "FOREIGN"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o666)).unwrap();
    // The abandoned workspace of the failed attempt, and an orphan var dir.
    let ws = root.join(format!("var/{failing}/1.work"));
    assert!(ws.is_dir(), "q-run keeps the workspace of a failed attempt");
    std::fs::write(ws.join("scratch"), b"x").unwrap();
    age(&ws, HOURS_2);
    age(&root.join(format!("var/{failing}/1.result.json")), HOURS_2);
    let orphan = root.join("var/ORPHANJOB");
    std::fs::create_dir_all(orphan.join("1.work")).unwrap();
    std::fs::write(orphan.join("1.out"), b"old output").unwrap();
    for p in [orphan.join("1.work"), orphan.join("1.out"), orphan.clone()] {
        age(&p, HOURS_2);
    }

    let before = snapshot(&root);
    let dry = q.run("q-gc", &["--dry-run"]);
    dry.ok();
    let dry_lines = gc_lines(&dry);
    assert_eq!(snapshot(&root), before, "--dry-run changed the queue");
    assert!(dry_lines.iter().all(|l| l["dry_run"] == true));

    let real = q.run("q-gc", &[]);
    real.ok();
    let real_lines = gc_lines(&real);
    assert_eq!(
        keys(&dry_lines),
        keys(&real_lines),
        "dry run:\n{dry_lines:#?}\nreal run:\n{real_lines:#?}"
    );

    // Removed: the partial tmp file, the workspace, the orphan directory.
    find(&real_lines, "remove-tmp", "PART.999.pub.tmp");
    assert!(!partial.exists());
    assert!(locked.exists(), "a locked staging file is never removed");
    assert!(fresh.exists(), "a fresh staging file is left alone");
    let w = find(&real_lines, "remove-workspace", "/1.work");
    assert_eq!(w["id"], failing.as_str());
    assert!(!ws.exists());
    assert!(
        root.join(format!("var/{failing}/1.result.json")).exists(),
        "the attempt's records stay"
    );
    assert_eq!(
        find(&real_lines, "remove-orphan", "var/ORPHANJOB")["id"],
        "ORPHANJOB"
    );
    assert!(!orphan.exists());
    // Quarantined, never deleted: each with a note saying why.
    for (p, why) in [
        (&bad_json, "JSON"),
        (&symlink, "symlink"),
        (&bad_name, "name"),
        (&mismatch, "id"),
        (&foreign, "writable"),
    ] {
        let l = find(
            &real_lines,
            "quarantine",
            &p.file_name().unwrap().to_string_lossy(),
        );
        assert!(l["reason"].as_str().unwrap().contains(why), "{l}");
        assert!(
            !p.exists() && p.symlink_metadata().is_err(),
            "{} still there",
            p.display()
        );
        let to = PathBuf::from(l["to"].as_str().expect("to"));
        assert!(to.starts_with(root.join("corrupt")), "{to:?}");
        assert!(to.symlink_metadata().is_ok(), "{to:?} kept");
        assert!(PathBuf::from(format!("{}.why", to.display())).exists());
    }
    assert!(
        std::fs::read_link(
            root.join("corrupt")
                .read_dir()
                .unwrap()
                .flatten()
                .find(
                    |e| e.file_name().to_string_lossy().starts_with("SYMLINK.json")
                        && !e.file_name().to_string_lossy().ends_with(".why")
                )
                .unwrap()
                .path()
        )
        .is_ok(),
        "the symlink itself was moved"
    );
    // The good jobs are untouched.
    assert_eq!(q.state(&ok), "done");
    assert_eq!(q.state(&failing), "dead");
    // Nothing left to do: no output at all.
    let again = q.run("q-gc", &[]);
    again.ok();
    assert_eq!(again.stdout, "", "second pass: {}", again.stdout);
    drop(held);
}

/// A runner killed mid-job: its lease is reclaimed at once (same host, dead
/// owner), not after the lease runs out, and its job is requeued.
#[test]
fn serial_gc_reclaims_the_lease_of_a_killed_runner() {
    let q = QDir::new();
    let marker = q.file("started");
    let id = q.push(&["--sh", &format!("echo $$ > {}; sleep 30", marker.display())]);
    let mut c = q.cmd("q-run");
    c.args(["--exit-on-idle", "--lease", "5m"])
        .stdout(Stdio::null());
    let mut runner = Proc::spawn(c);
    wait_until("the job started", Duration::from_secs(20), || {
        std::fs::read_to_string(&marker).is_ok_and(|s| s.ends_with('\n'))
    });
    let job_pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    runner.signal(nix::sys::signal::Signal::SIGKILL);
    runner.wait_for(Duration::from_secs(10));
    let o = q.run("q-gc", &[]);
    o.ok();
    let lines = gc_lines(&o);
    let r = lines
        .iter()
        .find(|l| l["action"] == "reclaim")
        .unwrap_or_else(|| panic!("no reclaim: {lines:#?}"));
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["state"], "pending");
    assert!(
        r["reason"].as_str().unwrap().contains("lease-expired"),
        "{r}"
    );
    assert_eq!(q.state(&id), "pending");
    wait_until("the job's process is gone", Duration::from_secs(5), || {
        !pid_alive(job_pid)
    });
}

/// The same job in two places: done wins, the pending copy is quarantined;
/// a second name of the same file (a hard link) is just unlinked.
#[test]
fn gc_repairs_duplicates() {
    let q = QDir::new();
    let a = q.push(&["--", "true"]);
    let b = q.push(&["--", "true"]);
    q.run("q-run", &["--exit-on-idle"]).ok();
    let root = q.queue.clone();
    let seg = root.join("pending/09999.0000000000000.AAAA");
    std::fs::create_dir_all(&seg).unwrap();
    let copy = seg.join(format!("09999.0000000000000.{a}.0.0.0.json"));
    std::fs::copy(root.join(format!("done/{a}.json")), &copy).unwrap();
    let link = root.join(format!("held/09999.0000000000000.{b}.0.0.0.json"));
    std::fs::hard_link(root.join(format!("done/{b}.json")), &link).unwrap();
    let o = q.run("q-gc", &[]);
    o.ok();
    let lines = gc_lines(&o);
    let l = find(
        &lines,
        "quarantine",
        &copy.file_name().unwrap().to_string_lossy(),
    );
    assert_eq!(l["id"], a.as_str());
    assert!(l["reason"].as_str().unwrap().contains("also done"), "{l}");
    assert_eq!(
        find(
            &lines,
            "remove-duplicate",
            &link.file_name().unwrap().to_string_lossy()
        )["id"],
        b.as_str()
    );
    assert!(!copy.exists() && !link.exists());
    assert_eq!(q.state(&a), "done");
    assert_eq!(q.state(&b), "done");
    find(&lines, "remove-segment", "09999.0000000000000.AAAA");
}

/// Retention: finished jobs past their TTL are deleted with their var dirs;
/// `never` keeps them; a done job a waiting job depends on is kept.
#[test]
fn gc_retention() {
    let q = QDir::new();
    let blocker = q.push(&["--", "true"]);
    q.run("q-ctl", &["hold", &blocker]).ok();
    let dep = q.push(&["--", "true"]);
    let plain = q.push(&["--", "true"]);
    let dead = q.push(&["--", "false"]);
    q.run("q-run", &["--exit-on-idle"]).ok();
    let waiter = q.push(&["--after", &dep, "--after", &blocker, "--", "true"]);
    assert_eq!(q.state(&waiter), "waiting");
    // Default dead TTL is never; done TTL 0 expires done jobs at once.
    let o = q.run("q-gc", &["--done-ttl", "0"]);
    o.ok();
    let lines = gc_lines(&o);
    let e = find(&lines, "expire", &format!("done/{plain}.json"));
    assert_eq!(e["state"], "done");
    assert!(!q.queue.join(format!("var/{plain}")).exists());
    assert_eq!(q.state(&plain), "");
    assert_eq!(
        q.state(&dep),
        "done",
        "a dependency of a waiting job is kept"
    );
    assert_eq!(q.state(&dead), "dead", "dead jobs are kept by default");
    let o = q.run("q-gc", &["--done-ttl", "never", "--dead-ttl", "0s"]);
    find(&gc_lines(&o), "expire", &format!("dead/{dead}.json"));
    assert_eq!(q.state(&dead), "");
    assert_eq!(q.state(&dep), "done");
}

/// A waiting job whose dependency finished while nobody promoted it (a
/// crash between the two steps) is moved on by gc.
#[test]
fn gc_promotes_waiting_jobs() {
    let q = QDir::new();
    let x = q.push(&["--", "true"]);
    let y = q.push(&["--after", &x, "--", "true"]);
    assert_eq!(q.state(&y), "waiting");
    // X finishes, and its worker dies right after the move (its result
    // published), before the promotion step.
    let mut c = q.cmd("q-run");
    c.env("Q_FAILPOINTS", "settle.after_commit_rename").arg("--exit-on-idle");
    run_cmd(c, None).expect_code(134);
    assert_eq!((q.state(&x).as_str(), q.state(&y).as_str()), ("done", "waiting"));
    let o = q.run("q-gc", &["--dry-run"]);
    let l = gc_lines(&o);
    assert_eq!(find(&l, "promote", "")["id"], y.as_str());
    assert_eq!(q.state(&y), "waiting", "dry run");
    let o = q.run("q-gc", &[]);
    let l = find(&gc_lines(&o), "promote", "").clone();
    assert_eq!(l["id"], y.as_str());
    assert_eq!(l["state"], "pending");
    assert_eq!(q.state(&y), "pending");
}

/// R8: a finished job whose outcome a power loss did not keep (relaxed
/// durability: the move reached the disk, the records did not) is sent
/// back to run: with no record of any attempt, straight to pending; with
/// its last result cut short, the partial record to `corrupt/` and the
/// attempt settled anew as interrupted. Both then run to done.
#[test]
fn gc_reruns_finished_jobs_whose_outcome_was_lost() {
    let q = QDir::new();
    let bare = q.push(&["--", "true"]);
    let cut = q.push(&["--", "true"]);
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!((q.state(&bare).as_str(), q.state(&cut).as_str()), ("done", "done"));
    std::fs::remove_dir_all(q.queue.join("var").join(&bare)).unwrap();
    let res = q.queue.join(format!("var/{cut}/1.result.json"));
    let whole = std::fs::read(&res).unwrap();
    std::fs::write(&res, &whole[..whole.len() / 2]).unwrap();
    let o = q.run("q-gc", &[]);
    o.ok();
    let l = gc_lines(&o);
    assert_eq!(find(&l, "lost-outcome", &format!("done/{bare}.json"))["state"], "pending");
    assert_eq!(find(&l, "lost-outcome", &format!("done/{cut}.json"))["state"], "pending");
    assert_eq!((q.state(&bare).as_str(), q.state(&cut).as_str()), ("pending", "pending"));
    assert_eq!(q.files("corrupt").iter().filter(|n| n.contains("result.json") && !n.ends_with(".why")).count(), 1, "{:?}", q.files("corrupt"));
    let rec: Value = serde_json::from_slice(&std::fs::read(&res).unwrap()).unwrap();
    assert_eq!((rec["state"].as_str(), rec["reason"].as_str()), (Some("pending"), Some("lease-expired")));
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!((q.state(&bare).as_str(), q.state(&cut).as_str()), ("done", "done"));
    assert!(q.queue.join(format!("var/{cut}/2.result.json")).exists(), "the lost attempt's job ran again, as attempt 2");
}

/// A second gc beside a running one exits 0 at once, doing nothing; a
/// missing queue is nothing to do.
#[test]
fn gc_beside_another_gc_and_without_queue() {
    let q = QDir::new();
    let o = q.run("q-gc", &[]);
    o.ok();
    assert_eq!(o.stdout, "");
    assert!(!q.queue.exists(), "gc does not create a queue");
    let id = q.push(&["--", "true"]);
    q.run("q-run", &["--exit-on-idle"]).ok();
    let lock = q.queue.join("locks/gc.lock");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .unwrap();
    f.lock().unwrap();
    let o = q.run("q-gc", &["--done-ttl", "0"]);
    o.ok();
    assert_eq!(o.stdout, "", "the second gc did nothing");
    assert_eq!(q.state(&id), "done");
    drop(f);
    // Garbage in the lock file does not matter.
    std::fs::write(&lock, b"\x00\x01garbage").unwrap();
    let o = q.run("q-gc", &["--done-ttl", "0"]);
    o.ok();
    find(&gc_lines(&o), "expire", &format!("{id}.json"));
}

/// Dedupe-key records of finished jobs are pruned under the key's lock;
/// the key then works again.
#[test]
fn gc_prunes_finished_key_records() {
    let q = QDir::new();
    let a = q.push(&["--key", "nightly", "--", "true"]);
    let again = q.run("q-push", &["--key", "nightly", "--", "true"]);
    assert_eq!(again.lines()[0]["deduped"], true);
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(q.state(&a), "done");
    let o = q.run("q-gc", &[]);
    let l = gc_lines(&o);
    assert!(
        find(&l, "prune-key", ".json")["reason"]
            .as_str()
            .unwrap()
            .contains("1 dedupe-key")
    );
    let b = q.push(&["--key", "nightly", "--", "true"]);
    assert_ne!(a, b);
    // A live job's key record is kept.
    let o = q.run("q-gc", &[]);
    assert!(
        gc_lines(&o).iter().all(|l| l["action"] != "prune-key"),
        "{}",
        o.stdout
    );
}

/// `-q`: errors only. The work is still done, silently (cron mails output).
#[test]
fn gc_quiet_prints_nothing_but_acts() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    let plant = |name: &str| {
        let p = q.queue.join("tmp").join(name);
        std::fs::write(&p, "partial").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3 * 3600);
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        p
    };
    let a = plant("01AAAAAAAAAAAAAAAAAAAAAAAA.1.job.tmp");
    let o = q.run("q-gc", &[]);
    o.ok();
    assert!(!o.lines().is_empty(), "without -q, an action line: {o:?}");
    assert!(!a.exists());
    let b = plant("01BBBBBBBBBBBBBBBBBBBBBBBB.1.job.tmp");
    let o = q.run("q-gc", &["-q"]);
    o.ok();
    assert_eq!(o.stdout, "", "-q prints nothing");
    assert!(!b.exists(), "but still collects");
}

/// A worker parks the empty workspace of a successful job in tmp/ for its
/// next job. Killed with one parked, it leaves that directory behind: q-gc
/// removes it as a stale staging entry, and the next worker makes its own.
#[test]
fn serial_parked_workspace_of_a_killed_worker_is_collected() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let mut c = q.cmd("q-run");
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut runner = Proc::spawn(c);
    let parked = || -> Vec<String> {
        std::fs::read_dir(q.queue.join("tmp"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".work.tmp")).collect())
            .unwrap_or_default()
    };
    wait_until("the job's workspace is parked", Duration::from_secs(10), || parked().len() == 1);
    assert_eq!(q.state(&id), "done");
    runner.signal(Signal::SIGKILL);
    runner.wait_for(Duration::from_secs(5));
    let name = parked().pop().expect("the killed worker's parked workspace is left");
    let o = q.run("q-gc", &["--tmp-ttl", "0"]);
    o.ok();
    find(&gc_lines(&o), "remove-tmp", &name);
    assert!(parked().is_empty());
    // The next worker runs a job with a fresh workspace of its own.
    let id2 = q.push(&["--sh", "test -d \"$Q_WORKSPACE\" && test -z \"$(ls -A \"$Q_WORKSPACE\")\""]);
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(q.state(&id2), "done");
}

/// Recorded environments: one that no job names and that was not used for
/// an hour is removed (a dry run says so first, changing nothing); one that
/// a job names, or that was used lately, stays; a push that reuses a record
/// marks it used (a fresh mtime).
#[test]
fn gc_removes_environments_no_job_names() {
    let q = QDir::new();
    let push_with = |val: &str| {
        let mut c = q.cmd("q-push");
        c.env("Q_TEST_ENV_MARK", val).args(["--", "true"]);
        let o = run_cmd(c, None);
        o.ok();
        o.lines()[0]["id"].as_str().unwrap().to_owned()
    };
    let kept = push_with("kept");
    let gone = push_with("gone");
    // The record a pending job names (read from its job file).
    let env_of = |id: &str| -> PathBuf {
        let file = walkdir::WalkDir::new(q.queue.join("pending"))
            .into_iter()
            .filter_map(|e| e.ok())
            .find(|e| e.file_type().is_file() && e.file_name().to_string_lossy().contains(id))
            .unwrap()
            .into_path();
        let v: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        q.queue.join("env").join(format!("{}.json", v["env_ref"].as_str().unwrap()))
    };
    let (kept_env, gone_env) = (env_of(&kept), env_of(&gone));
    assert_ne!(kept_env, gone_env, "two environments, two records");
    // The second job goes; both records are old.
    q.run("q-ctl", &["cancel", &gone]).ok();
    q.run("q-ctl", &["rm", &gone]).ok();
    age(&kept_env, HOURS_2);
    age(&gone_env, HOURS_2);
    let before = snapshot(&q.queue);
    let dry = gc_lines(&q.run("q-gc", &["--dry-run"]));
    find(&dry, "remove-env", &gone_env.file_name().unwrap().to_string_lossy());
    assert_eq!(snapshot(&q.queue), before, "a dry run changes nothing");
    let o = q.run("q-gc", &[]);
    o.ok();
    let real = gc_lines(&o);
    assert_eq!(keys(&dry), keys(&real), "the dry run predicted the run");
    assert!(!gone_env.exists(), "no job names it: removed");
    assert!(kept_env.exists(), "a pending job names it: kept");
    // Written again by the next push of that environment; a push that
    // reuses a record marks it used, and a record used lately stays even
    // when no job names it any more.
    let third = push_with("gone");
    let again = env_of(&third);
    assert_eq!(again, gone_env, "the same environment, the same record, written again");
    age(&again, HOURS_2);
    let fourth = push_with("gone");
    let fresh = std::fs::metadata(&again).unwrap().modified().unwrap().elapsed().unwrap();
    assert!(fresh < Duration::from_secs(600), "reused by a push: marked used ({fresh:?} ago)");
    for id in [&third, &fourth] {
        q.run("q-ctl", &["cancel", id]).ok();
        q.run("q-ctl", &["rm", id]).ok();
    }
    q.run("q-gc", &[]).ok();
    assert!(again.exists(), "no job names it, but it was used a moment ago: kept");
}

/// A q-gc killed between setting a recorded environment aside and deciding
/// on it leaves the record in tmp/ under a name that says where it belongs:
/// the next pass puts it back before anything else (and only then, finding
/// it unused, removes it for good).
#[test]
fn gc_killed_while_removing_an_environment_puts_it_back_next_time() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    q.run("q-ctl", &["cancel", &id]).ok();
    q.run("q-ctl", &["rm", &id]).ok();
    let env: Vec<PathBuf> = std::fs::read_dir(q.queue.join("env")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(env.len(), 1, "{env:?}");
    age(&env[0], HOURS_2);
    let mut c = q.cmd("q-gc");
    c.env("Q_FAILPOINTS", "gc.env_aside");
    assert_eq!(run_cmd(c, None).code(), 134, "killed at the failpoint");
    assert!(!env[0].exists(), "set aside");
    let aside: Vec<String> = std::fs::read_dir(q.queue.join("tmp")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(aside.len() == 1 && aside[0].contains(".env-"), "{aside:?}");
    let o = q.run("q-gc", &[]);
    o.ok();
    let lines = gc_lines(&o);
    let actions: Vec<&str> = lines.iter().map(|l| l["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["restore-env", "remove-env"], "put back first, then judged: {lines:#?}");
    assert_eq!(std::fs::read_dir(q.queue.join("tmp")).unwrap().count(), 0);
}
