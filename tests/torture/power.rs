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
