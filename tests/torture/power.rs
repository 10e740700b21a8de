//! T7, power loss (DESIGN §9.2): q on crashfs (`crashfs.rs`), a filesystem
//! that forgets what was not synced. First the model itself: what is not
//! synced is gone after a cut, what q syncs is there, and `syncfs` never
//! reaches it (so q must not lean on it there). Then q under cuts: a batch
//! push, the crash-point sweep with a power cut at every failpoint
//! (`sweep.rs`, `power_sweep_*`), and a storm cut at random moments
//! (`serial_power_storm_*`), at both durability settings, checked by the
//! history checker: no acknowledged push lost, no double completion, no
//! partial file after recovery, at-most-once jobs never started twice.
//!
//! After a cut every later command gets a simulated reboot (`Q_BOOT_ID`,
//! `Q_BOOT_TIME_MS`, test builds only): a power cut takes the host down,
//! and recovery knows the claims of the old boot have no owner.

use super::crashfs::{self, CrashFs};
use super::history::*;
use crate::util::*;
use std::fs;

/// Kill every process on the queue (only those whose environment names
/// this queue, through a pidfd) and wait until none is left.
pub fn kill_queue_processes(root: &Path) {
    let qdir = format!("Q_DIR={}", root.display());
    wait_until("every process on the queue to die", Duration::from_secs(30), || {
        let procs = queue_processes(root);
        for (pid, _) in &procs {
            let _ = signal_verified(*pid, &qdir, rustix::process::Signal::CONT);
            let _ = signal_verified(*pid, &qdir, rustix::process::Signal::KILL);
        }
        procs.is_empty()
    });
}

/// The power cut of a queue on crashfs: everything on it dies at once, the
/// store forgets what was not synced, and what runs next runs on a new
/// boot.
pub fn power_cut(q: &QDir, fsys: &mut CrashFs, rng: &mut Rng) -> crashfs::CutReport {
    kill_queue_processes(&q.queue);
    let rep = fsys.cut(rng);
    q.set_env("Q_BOOT_ID", &format!("crashfs-boot-{}", fsys.cuts));
    q.set_env("Q_BOOT_TIME_MS", &q_queue::time::now_ms().to_string());
    rep
}

/// Write `data` at `dir/name` through a staging file in `tmp`, with or
/// without the fsyncs q uses (file, then the directory renamed into).
fn publish(root: &Path, dir: &str, name: &str, data: &[u8], sync: bool) {
    let tmp = root.join("tmp").join(format!("{name}.tmp"));
    let f = fs::File::create(&tmp).unwrap();
    std::io::Write::write_all(&mut &f, data).unwrap();
    if sync {
        f.sync_all().unwrap();
    }
    fs::rename(&tmp, root.join(dir).join(name)).unwrap();
    if sync {
        fs::File::open(root.join(dir)).unwrap().sync_all().unwrap();
    }
}

fn sync_dir(p: &Path) {
    fs::File::open(p).unwrap().sync_all().unwrap();
}

/// The model: a write and a rename without fsync are gone after a cut;
/// with the fsyncs q uses they are there, whole; a rename between two
/// directories is durable whole when either is synced; data never synced
/// comes back dropped, kept or cut short, never anything else.
#[test]
fn crashfs_forgets_what_was_not_synced() {
    if !crashfs::usable("crashfs_forgets_what_was_not_synced") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("mnt");
    let mut fsys = CrashFs::mount(&root);
    let mut rng = Rng::new(seed("crashfs_forgets_what_was_not_synced"));
    for dir in ["tmp", "a", "s", "b", "c", "e"] {
        fs::create_dir(root.join(dir)).unwrap();
    }
    sync_dir(&root);
    publish(&root, "a", "unsynced", b"gone\n", false);
    publish(&root, "s", "synced", b"whole\n", true);
    // Renames between directories: only the destination synced, only the
    // source synced, neither.
    for (k, which) in ["dest", "source", "neither"].iter().enumerate() {
        let n = format!("moved-{which}");
        publish(&root, "b", &n, format!("{k}\n").as_bytes(), true);
        let to = if *which == "neither" { "e" } else { "c" };
        fs::rename(root.join("b").join(&n), root.join(to).join(&n)).unwrap();
        match *which {
            "dest" => sync_dir(&root.join("c")),
            "source" => sync_dir(&root.join("b")),
            _ => {}
        }
    }
    // Names made durable, data never synced.
    let mut want = Vec::new();
    for i in 0..30 {
        let n = format!("data-{i}");
        let data = format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(40 + i)).into_bytes();
        fs::write(root.join("c").join(&n), &data).unwrap();
        want.push((n, data));
    }
    sync_dir(&root.join("c"));
    let rep = fsys.cut(&mut rng);
    assert!(!root.join("a/unsynced").exists(), "a rename never synced survived the cut");
    assert!(names(&root.join("tmp")).is_empty(), "staging names never synced survived: {:?}", names(&root.join("tmp")));
    assert_eq!(fs::read(root.join("s/synced")).unwrap(), b"whole\n", "a file published with q's fsyncs is not whole");
    for which in ["dest", "source"] {
        let n = format!("moved-{which}");
        assert!(root.join("c").join(&n).exists() && !root.join("b").join(&n).exists(), "a rename synced on its {which} side is not durable whole");
    }
    assert!(root.join("b/moved-neither").exists() && !root.join("e/moved-neither").exists(), "a rename never synced was not undone");
    let mut not_whole = 0;
    for (n, data) in &want {
        let got = fs::read(root.join("c").join(n)).unwrap_or_else(|e| panic!("{n}: a durable name is gone: {e}"));
        assert!(data.starts_with(&got), "{n}: unsynced data came back as something else: {got:?}");
        not_whole += usize::from(got != *data);
    }
    assert!(not_whole > 0, "30 files never synced all came back whole: the cut forgets nothing ({rep:?})");
    assert!(rep.names_undone > 0 && rep.dropped + rep.cut_short > 0, "{rep:?}");
}

/// `syncfs(2)` does not reach a FUSE daemon (the kernel passes it to
/// virtiofs only): the filesystem sees no sync of any kind, and q finds
/// FUSE by its `statfs` type and does not lean on `syncfs` there.
#[test]
fn crashfs_syncfs_does_not_reach_the_daemon() {
    if !crashfs::usable("crashfs_syncfs_does_not_reach_the_daemon") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("mnt");
    let fsys = CrashFs::mount(&root);
    fs::write(root.join("f"), b"data\n").unwrap();
    let before = fsys.counts();
    let f = fs::File::open(&root).unwrap();
    nix::unistd::syncfs(&f).unwrap();
    let after = fsys.counts();
    assert_eq!((after.fsyncs, after.dir_fsyncs), (before.fsyncs, before.dir_fsyncs), "syncfs reached the daemon: this kernel passes it on (update RELIABILITY.md)");
    fs::File::open(root.join("f")).unwrap().sync_all().unwrap();
    assert_eq!(fsys.counts().fsyncs, before.fsyncs + 1, "an fsync does reach it");
    assert!(!q_queue::fsx::syncfs_reaches_disk(&root), "q does not see that syncfs is no use on FUSE");
    assert!(q_queue::fsx::syncfs_reaches_disk(d.path()), "q distrusts syncfs on a local filesystem");
}

/// A batch push (a group commit) on crashfs: every acknowledged id is
/// there, whole, after a cut. The same push trusting `syncfs`
/// (`Q_DISABLE=syncfs-fallback`) loses acknowledged jobs: what the
/// fallback prevents, and proof that the test can fail.
#[test]
fn serial_power_batch_push_survives_a_cut() {
    if !crashfs::usable("serial_power_batch_push_survives_a_cut") {
        return;
    }
    let mut rng = Rng::new(seed("serial_power_batch_push_survives_a_cut"));
    let mut lost_without_fallback = 0;
    for trust_syncfs in [false, true] {
        let q = QDir::new();
        let mut fsys = CrashFs::mount(&q.queue);
        if trust_syncfs {
            q.set_env("Q_DISABLE", "syncfs-fallback");
        }
        let mut acked = Vec::new();
        for round in 0..3 {
            let input: String = (0..40).map(|i| format!("{{\"name\":\"r{round}-{i}\",\"cmd\":[\"true\"],\"payload\":\"{}\"}}\n", "p".repeat(200))).collect();
            let o = q.run_in("q-push", &[], &input);
            o.ok();
            acked.extend(o.lines().iter().map(|v| v["id"].as_str().unwrap().to_owned()));
        }
        power_cut(&q, &mut fsys, &mut rng);
        let d = read_disk(&q.queue);
        let lost: Vec<&String> = acked.iter().filter(|id| !d.jobs.contains_key(*id)).collect();
        if trust_syncfs {
            lost_without_fallback = lost.len();
        } else {
            assert!(lost.is_empty() && d.problems.is_empty(), "acknowledged pushes lost in a cut: {} of {}: {:?} {:?}", lost.len(), acked.len(), lost, d.problems);
        }
        eprintln!("batch push, trusting syncfs {trust_syncfs}: {} acknowledged, {} lost or not whole", acked.len(), lost.len());
    }
    assert!(lost_without_fallback > 0, "trusting syncfs on FUSE lost nothing: the cut does not test the group commit");
}

/// Jobs that end without an attempt (a cancel, a dependency that failed)
/// at full durability, then a cut: every job the cut left in `canceled/`
/// is decided by its `end.json`, and readers are told so. The end record's
/// name must be durable before the move that depends on it (the move's
/// directory is synced, which made the move outlive the record).
#[test]
fn serial_power_end_records_survive_a_cut() {
    if !crashfs::usable("serial_power_end_records_survive_a_cut") {
        return;
    }
    let seed = seed("serial_power_end_records_survive_a_cut");
    let mut rng = Rng::new(seed);
    let q = QDir::new();
    let mut fsys = CrashFs::mount(&q.queue);
    let mut h = History { power: Some(false), ..History::default() };
    let effects = q.file("effects.log");
    let mut push = |q: &QDir, name: &str, args: &[&str]| {
        h.attempted.insert(name.to_owned());
        let mut a = vec!["--name", name];
        a.extend_from_slice(args);
        let id = q.push(&a);
        h.acked.insert(id.clone());
        id
    };
    // Three that fail for good, each with a dependent (canceled by the
    // cascade), and three queued jobs canceled by hand.
    let mut canceled = Vec::new();
    for i in 0..3 {
        let dep = push(&q, &format!("fails-{i}"), &["--attempts", "1", "--", "false"]);
        canceled.push(push(&q, &format!("after-{i}"), &["--after", &dep, "--", "true"]));
        let id = push(&q, &format!("queued-{i}"), &["--delay", "1h", "--", "true"]);
        q.run("q-ctl", &["cancel", &id]).ok();
        canceled.push(id);
    }
    q.run("q-run", &["--exit-on-idle"]).ok();
    let before: Vec<String> = canceled.iter().map(|id| q.state(id)).collect();
    assert!(before.iter().all(|s| s == "canceled"), "{before:?}");
    power_cut(&q, &mut fsys, &mut rng);
    let d = read_disk(&q.queue);
    let rep = check_queue(&q.queue, &h, &effects, &[], CheckOpts { drained: false, no_corrupt: true });
    rep.assert_ok(seed, "end records after a cut");
    for id in &canceled {
        let e = d.ends.get(id).unwrap_or_else(|| panic!("{id}: no end record after the cut ({:?})", d.locs.get(id)));
        assert_eq!(e.state.as_str(), "canceled", "{id}");
    }
}

/// One round's pusher: a batch (or one line) on stdin, its stdout in a file
/// (what it printed before the cut was acknowledged).
fn spawn_push(q: &QDir, lines: &[Value], out: &Path) -> Proc {
    let mut c = q.cmd("q-push");
    let input = tempfile::NamedTempFile::new_in(q.path()).unwrap();
    fs::write(input.path(), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    c.stdin(fs::File::open(input.path()).unwrap()).stdout(fs::File::create(out).unwrap()).stderr(Stdio::null());
    Proc::spawn(c)
}

/// T7 storm: a supervisor (`-j 2`), pushers (batches of 1–12 lines, 0.1–0.4 s apart) and
/// q-gc on crashfs, cut at random moments (0.3–2.5 s apart) for
/// `Q_POWER_SECS` (default 10 s); after each cut a new boot. Then
/// recovery (one q-gc, then `q-supervise --exit-on-idle`) and the history
/// checker.
fn power_storm(test: &str, durability: &str) {
    if !crashfs::usable(test) {
        return;
    }
    let seed = seed(test);
    let mut rng = Rng::new(seed);
    let secs: u64 = std::env::var("Q_POWER_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let q = QDir::new();
    let mut fsys = CrashFs::mount(&q.queue);
    q.set_env("Q_DURABILITY", durability);
    let script = q.file("job.sh");
    fs::write(&script, JOB_SH).unwrap();
    let effects = q.file("effects.log");
    fs::write(&effects, "").unwrap();
    let mut h = History { power: Some(durability == "relaxed"), ..History::default() };
    let (mut n, mut push_runs, mut outs) = (0u64, 0u64, Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        let ev = q.file(&format!("sup-{}.events", fsys.cuts));
        let mut c = q.cmd("q-supervise");
        c.args(["-j", "2", "--lease", "3s", "--restart-base", "100ms", "--events"]).stdout(Stdio::null()).stderr(fs::File::create(&ev).unwrap());
        let _sup = Proc::spawn(c);
        let round_end = Instant::now() + Duration::from_millis(rng.range(300, 2500));
        let mut procs = Vec::new();
        while Instant::now() < round_end {
            let k = if rng.pct(30) { 1 } else { rng.range(2, 13) as usize };
            let acked: Vec<String> = h.acked.iter().cloned().collect();
            let lines: Vec<Value> = (0..k)
                .map(|_| {
                    n += 1;
                    let name = format!("p{n}");
                    h.attempted.insert(name.clone());
                    let mode = if rng.pct(20) { "failfirst" } else { "ok" };
                    let secs = format!("0.{:02}", rng.range(0, 30));
                    let mut v = json!({"name": name, "cmd": ["/bin/sh", script, mode, secs, effects], "attempts": 3, "backoff": "50ms"});
                    if rng.pct(10) {
                        v["delivery"] = json!("at-most-once");
                        v["attempts"] = json!(1);
                    }
                    if rng.pct(5) && !acked.is_empty() {
                        v["after"] = json!([acked[rng.range(0, acked.len() as u64) as usize]]);
                    }
                    v
                })
                .collect();
            let out = q.file(&format!("push-{push_runs}.out"));
            push_runs += 1;
            let p = spawn_push(&q, &lines, &out);
            outs.push(out);
            if rng.pct(25) {
                procs.push(Proc::spawn({
                    let mut g = q.cmd("q-gc");
                    g.stdout(Stdio::null()).stderr(Stdio::null());
                    g
                }));
            }
            // Wait for the push, or cut in the middle of it.
            let next = Instant::now() + Duration::from_millis(rng.range(100, 400));
            while Instant::now() < round_end.min(next) {
                std::thread::sleep(Duration::from_millis(5));
            }
            procs.push(p);
        }
        if h.power == Some(false) {
            h.event_files.push(ev);
        }
        power_cut(&q, &mut fsys, &mut rng);
        drop(procs);
        for out in outs.drain(..) {
            for v in json_lines(&out) {
                if let Some(id) = v["id"].as_str() {
                    h.acked.insert(id.to_owned());
                }
            }
        }
        // I1 right after the cut, before any recovery.
        let d = read_disk(&q.queue);
        let lost: Vec<&String> = h.acked.iter().filter(|id| !d.locs.contains_key(*id)).collect();
        assert!(lost.is_empty(), "{test} (seed {seed}): acknowledged pushes lost in cut {}: {lost:?}", fsys.cuts);
    }
    let rep = recover_and_check(&q, &mut h, &effects, &[], seed, test, Duration::from_secs(120), false);
    let t = fsys.total;
    eprintln!(
        "{test} figures (seed {seed}, {:.0} s): power cuts {}; q-push runs {push_runs}; jobs acknowledged {}; jobs checked {} ({} terminal); \
         executions {} ({} re-executions); files whose unsynced data was dropped {}, kept {}, cut short {}; names undone {}; \
         lost {}; double completions {}",
        started.elapsed().as_secs_f64(),
        fsys.cuts,
        h.acked.len(),
        rep.ids,
        rep.terminal,
        rep.executions,
        rep.reexecutions,
        t.dropped,
        t.kept,
        t.cut_short,
        t.names_undone,
        rep.lost,
        rep.double_completions
    );
    assert!(fsys.cuts >= 3 && h.acked.len() > 20, "{test}: too little happened to mean anything: {} cuts, {} acknowledged", fsys.cuts, h.acked.len());
    // The cuts met unsynced state: names they undid, and files with unsynced
    // data (each cut drops, keeps or cuts such data short at random, so a
    // run whose few such files were all kept still tested the names).
    assert!(t.names_undone > 0 && t.dropped + t.cut_short + t.kept > 0, "{test}: the cuts forgot nothing: {t:?}");
}

#[test]
fn serial_power_storm_full() {
    power_storm("serial_power_storm_full", "full");
}

#[test]
fn serial_power_storm_relaxed() {
    power_storm("serial_power_storm_relaxed", "relaxed");
}
