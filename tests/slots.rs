//! Slots and group limits (`needs`, `group`, `--slots`, `--limit`) under
//! real workers: an effects log of each job's start and end per slot shows
//! that no slot ever runs two jobs, that a job needing two slots is not
//! starved by jobs needing one, that jobs without needs run beside busy
//! slots, and that a worker that dies frees its slot.

use crate::util::*;
use nix::sys::signal::Signal;

/// A job line that logs its start and end with its slots (`Q_SLOT_GPU`)
/// and its group to `log`, holding them for a moment.
fn logging_job(log: &Path, name: &str, needs: Option<Value>, group: Option<&str>) -> Value {
    let sh = format!(
        "echo \"start $Q_SLOT_GPU {name}\" >>'{l}'; sleep 0.05; echo \"end $Q_SLOT_GPU {name}\" >>'{l}'",
        l = log.display()
    );
    let mut j = json!({"sh": sh, "name": name});
    if let Some(n) = needs {
        j["needs"] = n;
    }
    if let Some(g) = group {
        j["group"] = json!(g);
    }
    j
}

/// The job file of a finished job.
fn stored(q: &QDir, id: &str) -> Value {
    serde_json::from_slice(&std::fs::read(q.queue.join("done").join(format!("{id}.json"))).expect("a done job")).expect("a job record")
}

/// Replay the effects log: at no point does a slot (or the limited group)
/// run more than one job; returns the order in which jobs started.
fn replay(log: &Path, group_of: &dyn Fn(&str) -> Option<&'static str>, group_limit: usize) -> Vec<String> {
    let text = std::fs::read_to_string(log).expect("effects log");
    let mut busy: std::collections::BTreeMap<String, usize> = Default::default();
    let mut in_group = 0;
    let mut started = Vec::new();
    for line in text.lines() {
        let mut w = line.split(' ');
        let (what, slots, name) = (w.next().unwrap(), w.next().unwrap(), w.next().unwrap());
        let slots: Vec<&str> = slots.split(',').filter(|s| !s.is_empty()).collect();
        let d: isize = if what == "start" { 1 } else { -1 };
        for s in &slots {
            let n = busy.entry(s.to_string()).or_default();
            *n = n.checked_add_signed(d).expect("an end after its start");
            assert!(*n <= 1, "slot {s} runs two jobs at once:\n{text}");
        }
        if group_of(name).is_some() {
            in_group = (in_group as isize + d) as usize;
            assert!(in_group <= group_limit, "more than {group_limit} of the group at once:\n{text}");
        }
        if what == "start" {
            started.push(name.to_owned());
        }
    }
    started
}

/// Four workers share two GPU slots and a group limited to one. No slot
/// ever runs two jobs, the group never runs two, every job ends done, and
/// the job needing both GPUs, queued behind two `gpu:1` jobs and before a
/// stream of them, starts before any of the later ones: it is not starved.
#[test]
fn serial_slots_are_never_shared_and_a_big_job_is_not_starved() {
    let q = QDir::new();
    let ids = never_shared_and_not_starved(&q);
    assert_eq!(stored(&q, &ids[0])["v"], 2, "a job with needs is of format 2");
    assert_eq!(stored(&q, &ids[14])["v"], 1, "one without stays 1");
}

/// The scenario of `serial_slots_are_never_shared_and_a_big_job_is_not_starved`
/// on any queue (pg.rs runs it on PostgreSQL); the ids it pushed.
pub fn never_shared_and_not_starved(q: &QDir) -> Vec<String> {
    let log = q.path().join("effects.log");
    let mut lines = Vec::new();
    for i in 0..3 {
        lines.push(logging_job(&log, &format!("g{i}"), Some(json!({"gpu": 1})), None));
    }
    lines.push(logging_job(&log, "big", Some(json!({"gpu": 2})), None));
    for i in 3..12 {
        lines.push(logging_job(&log, &format!("g{i}"), Some(json!({"gpu": 1})), None));
    }
    for i in 0..4 {
        lines.push(logging_job(&log, &format!("io{i}"), None, Some("io")));
        lines.push(logging_job(&log, &format!("cpu{i}"), None, None));
    }
    let ids = q.push_lines(&lines);
    let o = q.run("q-supervise", &["-j", "4", "--slots", "gpu=2", "--limit", "io=1", "--exit-on-idle"]);
    o.ok();
    for id in &ids {
        assert_eq!(q.state(id), "done", "{id}: {}", o.stderr);
    }
    let started = replay(&log, &|n| n.starts_with("io").then_some("io"), 1);
    let big = started.iter().position(|n| n == "big").expect("big started");
    for later in 3..12 {
        let at = started.iter().position(|n| *n == format!("g{later}")).expect("started");
        assert!(big < at, "g{later} overtook the gpu:2 job: {started:?}");
    }
    // The big job held both slots, numbered from 0.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("start 0,1 big"), "{text}");
    ids
}

/// While every GPU slot is busy (and a GPU job waits for it), jobs without
/// needs start and finish beside it.
#[test]
fn serial_cpu_jobs_run_while_the_gpu_is_busy() {
    let q = QDir::new();
    let go = q.path().join("go");
    let running = q.path().join("running");
    let hold = json!({"sh": format!("echo $Q_SLOT_GPU >'{}'; while [ ! -e '{}' ]; do sleep 0.02; done", running.display(), go.display()), "needs": {"gpu": 1}});
    let ids = q.push_lines(&[hold, json!({"cmd": ["true"], "needs": {"gpu": 1}}), json!({"cmd": ["true"]}), json!({"cmd": ["true"]})]);
    let mut c = q.cmd("q-supervise");
    c.args(["-j", "2", "--slots", "gpu=1", "--exit-on-idle"]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut p = Proc::spawn(c);
    wait_until("the CPU jobs done", Duration::from_secs(30), || q.state(&ids[2]) == "done" && q.state(&ids[3]) == "done");
    assert_eq!(q.state(&ids[0]), "running", "the GPU job still holds the slot");
    assert_eq!(q.state(&ids[1]), "pending", "the second GPU job waits for it");
    assert_eq!(std::fs::read_to_string(&running).unwrap().trim(), "0", "Q_SLOT_GPU");
    std::fs::write(&go, "").unwrap();
    assert_eq!(p.wait_for(Duration::from_secs(30)), 0);
    assert_eq!(q.state(&ids[1]), "done");
}

/// A worker killed while its job holds the only slot frees it with its
/// death (the kernel drops its lock): the next worker runs a job that
/// needs it.
#[test]
fn serial_a_dead_worker_frees_its_slot() {
    let q = QDir::new();
    let started = q.path().join("started");
    // The first job runs until its worker is gone, then (run again) ends at once.
    let first = json!({"sh": format!("[ -e '{s}' ] && exit 0; touch '{s}'; while kill -0 $PPID 2>/dev/null; do sleep 0.02; done", s = started.display()), "needs": {"gpu": 1}});
    let ids = q.push_lines(&[first, json!({"sh": format!("echo $Q_SLOT_GPU >'{}'", q.path().join("second").display()), "needs": {"gpu": 1}})]);
    let mut c = q.cmd("q-run");
    c.args(["--slots", "gpu=1"]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut w = Proc::spawn(c);
    wait_until("the first job started", Duration::from_secs(30), || started.exists());
    w.signal(Signal::SIGKILL);
    w.wait_for(Duration::from_secs(10));
    let o = q.run("q-run", &["--slots", "gpu=1", "--exit-on-idle"]);
    o.ok();
    assert_eq!(q.state(&ids[1]), "done", "{}", o.stderr);
    assert_eq!(std::fs::read_to_string(q.path().join("second")).unwrap().trim(), "0");
    assert_eq!(q.state(&ids[0]), "done", "reclaimed and run again");
}

/// Workers without slots never take a job with needs: q-claim finds
/// nothing (1), `--exit-on-idle` does not wait for it and says how many
/// it left; a job whose needs exceed the slots is left the same way. A
/// group alone needs no slot.
#[test]
fn jobs_that_cannot_fit_are_left_and_counted() {
    let q = QDir::new();
    let ids = q.push_lines(&[json!({"cmd": ["true"], "needs": {"gpu": 1}}), json!({"cmd": ["true"], "needs": {"gpu": 4}})]);
    q.run("q-claim", &[]).expect_code(1);
    let o = q.run("q-supervise", &["-j", "1", "--exit-on-idle"]);
    o.ok();
    assert!(o.stderr.contains("2 needing slots"), "{}", o.stderr);
    let o = q.run("q-run", &["--slots", "gpu=2", "--exit-on-idle"]);
    o.ok();
    assert_eq!(q.state(&ids[0]), "done");
    assert_eq!(q.state(&ids[1]), "pending");
    assert!(o.stderr.contains("1 needing slots"), "{}", o.stderr);
    let g = q.push_lines(&[json!({"cmd": ["true"], "group": "io"})]);
    let o = q.run("q-claim", &[]);
    o.ok();
    assert_eq!(o.lines()[0]["id"], g[0]);
    assert_eq!(o.lines()[0]["job"]["group"], "io");
}

/// Bad `needs`, `group` and `--slots` are refused with the field or flag named.
#[test]
fn bad_slots_are_refused() {
    let q = QDir::new();
    for (line, field) in [(json!({"cmd": ["true"], "needs": {"gpu": 0}}), "needs"), (json!({"cmd": ["true"], "group": "A B"}), "group")] {
        let o = q.run_in("q-push", &[], &format!("{line}\n"));
        o.expect_code(65);
        assert!(o.stderr.contains(field), "{}", o.stderr);
    }
    for bad in ["gpu", "gpu=0", "GPU=1", "gpu=x"] {
        let o = q.run("q-supervise", &["--slots", bad, "--exit-on-idle"]);
        o.expect_code(2);
        assert!(o.stderr.contains("--slots"), "{}", o.stderr);
    }
}

/// `--rate 20/s`: 50 starts by three workers are spaced evenly, 50 ms
/// apart, the whole within 10 % of 49 intervals.
#[test]
fn serial_rate_spaces_starts() {
    let q = QDir::new();
    let log = q.path().join("starts.log");
    let line = json!({"sh": format!("date +%s%N >>'{}'", log.display())});
    let ids = q.push_lines(&vec![line; 50]);
    let o = q.run("q-supervise", &["-j", "3", "--rate", "20/s", "--exit-on-idle"]);
    o.ok();
    for id in &ids {
        assert_eq!(q.state(id), "done");
    }
    let mut t: Vec<u64> = std::fs::read_to_string(&log).unwrap().lines().map(|l| l.trim().parse::<u64>().unwrap() / 1_000_000).collect();
    t.sort();
    assert_eq!(t.len(), 50);
    let span = (t[49] - t[0]) as f64;
    let want = 49.0 * 50.0;
    assert!((span - want).abs() <= want * 0.1, "50 starts over {span} ms, not {want} ms ± 10 %: {t:?}");
}

/// Where in `pending/` each pending job's file is: id → the directory of
/// its segment's class (`c.gpu=1`), or "" for the plain segments.
fn classes(q: &QDir) -> std::collections::BTreeMap<String, String> {
    let pending = q.queue.join("pending");
    let mut out = std::collections::BTreeMap::new();
    for e in walkdir::WalkDir::new(&pending).min_depth(2) {
        let e = e.expect("walk");
        let n = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().is_file() || n.starts_with('.') {
            continue;
        }
        let rel = e.path().strip_prefix(&pending).unwrap();
        let class = if rel.components().count() == 3 { rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned() } else { String::new() };
        out.insert(n.split('.').nth(2).expect("a queued name").to_owned(), class);
    }
    out
}

/// Jobs that say what they take wait in the segments of their class
/// (`pending/c.<CLASS>/`, FORMAT "Classes"), and every way into pending
/// puts them back there: release, retry, a failure's retry, a revision
/// (which may change the class), an import. Listings and counts see them,
/// q-gc quarantines none of them and removes a drained class's directory,
/// a worker with the slot runs them.
#[test]
fn class_jobs_stay_in_their_class_through_every_move() {
    let q = QDir::new();
    let plain = q.push(&["--", "true"]);
    let ids = q.push_lines(&[json!({"cmd": ["true"], "needs": {"gpu": 1}}), json!({"sh": "exit 3", "needs": {"gpu": 1}, "attempts": 2, "backoff": "10ms"})]);
    let (a, b) = (&ids[0], &ids[1]);
    let want = |v: &[(&String, &str)]| v.iter().map(|(i, c)| (i.to_string(), c.to_string())).collect::<std::collections::BTreeMap<_, _>>();
    assert_eq!(classes(&q), want(&[(&plain, ""), (a, "c.gpu=1"), (b, "c.gpu=1")]));
    assert!(std::fs::read_to_string(q.queue.join("FORMAT")).unwrap().contains("\"classes\""));
    assert_eq!(q.run("q-ls", &["--counts", "--json"]).lines()[0]["pending"], 3);
    assert_eq!(q.state(a), "pending");
    q.run("q-ctl", &["hold", a]).ok();
    assert_eq!(q.state(a), "held");
    q.run("q-ctl", &["release", a]).ok();
    q.run("q-ctl", &["cancel", b]).ok();
    q.run("q-ctl", &["retry", b]).ok();
    assert_eq!(classes(&q), want(&[(&plain, ""), (a, "c.gpu=1"), (b, "c.gpu=1")]));
    // A revision that changes what the job needs moves it to its new class.
    let mut c = q.cmd("q-ctl");
    c.env("EDITOR", r#"sed -i 's/"gpu": *1/"gpu": 2/'"#).args(["edit", b]);
    run_cmd(c, None).ok();
    assert_eq!(classes(&q), want(&[(&plain, ""), (a, "c.gpu=1"), (b, "c.gpu=2")]));
    // Export into another queue: the same classes there.
    let other = QDir::new();
    let exported = q.run("q-ctl", &["export"]);
    exported.ok();
    other.run_in("q-ctl", &["import"], &exported.stdout).ok();
    assert_eq!(classes(&other), classes(&q));
    // q-gc leaves them be.
    let o = q.run("q-gc", &[]);
    o.ok();
    assert!(!o.stdout.contains("quarantine"), "{}", o.stdout);
    // A worker with two GPUs: b fails, goes back to its class, fails again.
    for first in [&plain, a] {
        let o = q.run("q-run", &["--slots", "gpu=2", "--once"]);
        assert_eq!(o.lines()[0]["id"], first.as_str(), "in claim order across classes: {o:#?}");
    }
    let o = q.run("q-run", &["--slots", "gpu=2", "--once"]);
    o.expect_code(3);
    assert_eq!(q.job(b)["failures"], 1);
    assert_eq!(classes(&q), want(&[(b, "c.gpu=2")]));
    q.run("q-run", &["--slots", "gpu=2", "--exit-on-idle"]).ok();
    assert_eq!((q.state(&plain), q.state(a), q.state(b)), ("done".into(), "done".into(), "dead".into()));
    // Drained: q-gc removes the class directories (a push makes one again).
    let o = q.run("q-gc", &[]);
    o.ok();
    let left: Vec<String> = std::fs::read_dir(q.queue.join("pending")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect();
    assert!(left.is_empty(), "{left:?}: {}", o.stdout);
}

/// A crash while the first job of a class is pushed, at each step: the
/// queue's FORMAT is whole and opens, the job was not acknowledged, and
/// the next push of the class and a worker with the slot finish the work;
/// q-gc quarantines nothing.
#[test]
fn a_crash_while_the_first_class_is_made_loses_nothing() {
    for fp in ["classes.before_format", "classes.after_format", "push.after_rename"] {
        let q = QDir::new();
        q.push(&["--", "true"]);
        let mut c = q.cmd("q-push");
        c.env("Q_FAILPOINTS", fp);
        let o = run_cmd(c, Some(format!("{}\n", json!({"cmd": ["true"], "needs": {"gpu": 1}})).into_bytes()));
        assert_eq!(o.status, Some(134), "{fp}: aborted at the failpoint: {o:#?}");
        assert!(o.stdout.is_empty(), "{fp}: nothing acknowledged");
        let format = std::fs::read_to_string(q.queue.join("FORMAT")).unwrap();
        assert_eq!(format.contains("\"classes\""), fp != "classes.before_format", "{fp}: {format}");
        let again = q.push_lines(&[json!({"cmd": ["true"], "needs": {"gpu": 1}})]);
        q.run("q-run", &["--slots", "gpu=1", "--exit-on-idle"]).ok();
        assert_eq!(q.state(&again[0]), "done", "{fp}");
        let o = q.run("q-gc", &["--tmp-ttl", "0s"]);
        o.ok();
        assert!(!o.stdout.contains("quarantine"), "{fp}: {}", o.stdout);
        let counts = q.run("q-ls", &["--counts", "--json"]).lines()[0].clone();
        assert_eq!((counts["pending"].as_u64(), counts["running"].as_u64()), (Some(0), Some(0)), "{fp}: {counts}");
    }
}
