//! The bad-input matrix of DESIGN §9.4 (what tests/push.rs does not cover
//! already): each case with its exit status and a check that nothing was
//! lost or half-written. Cases that need root (mounting a tmpfs, dropping
//! privileges) print `skipped: <reason>` when they cannot run.

use super::history::*;
use crate::util::*;
use std::fs;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// No staging file, no partial job file, every tool still reads the queue.
fn assert_whole(q: &QDir, what: &str) {
    let d = read_disk(&q.queue);
    assert!(d.problems.is_empty(), "{what}: {:?}", d.problems);
    q.run("q-ls", &["--all"]).ok();
    let g = q.run("q-gc", &["--tmp-ttl", "0"]);
    assert_eq!(g.code(), 0, "{what}: {g:?}");
    assert!(names(&q.queue.join("tmp")).is_empty(), "{what}: tmp/ not empty after gc: {:?}", names(&q.queue.join("tmp")));
}

fn all_ids(q: &QDir) -> Vec<String> {
    read_disk(&q.queue).locs.keys().cloned().collect()
}

#[test]
fn matrix_blank_long_nul_and_out_of_range_lines() {
    let q = QDir::new();
    let long = format!("{{\"cmd\":[\"true\"],\"payload\":\"{}\"}}", "x".repeat(1_500_000));
    let lines = [
        "",                                               // 1 blank: ignored
        "   ",                                            // 2 blank: ignored
        "{\"cmd\":[\"true\",\"1\"]}",                     // 3 ok
        long.as_str(),                                    // 4 over 1 MiB
        "{\"cmd\":[\"a\\u0000b\"]}",                      // 5 NUL inside a string
        "{\"cmd\":[\"true\"],\"priority\":10000}",        // 6 out of range
        "{\"cmd\":[\"true\"],\"timeout\":\"-5s\"}",       // 7 negative duration
        "{\"cmd\":[\"true\"],\"timeout\":-5}",            // 8 negative number
        "{\"payload\":{\"for\":\"a handler\"}}",          // 9 ok: data for a handler
        "{\"cmd\":[\"true\",\"10\"]}",                    // 10 ok
    ];
    let mut input = lines.join("\n").into_bytes();
    // 11: a raw NUL byte in a line.
    input.extend_from_slice(b"\n{\"cmd\":[\"tr\x00ue\"]}\n");
    let o = q.run_in("q-push", &[], &String::from_utf8(input).unwrap());
    o.expect_code(65);
    let acked: Vec<u64> = o.lines().iter().map(|l| l["line"].as_u64().unwrap()).collect();
    assert_eq!(acked, vec![3, 9, 10], "{o:?}");
    for n in [4, 5, 6, 7, 8, 11] {
        assert!(o.stderr.contains(&format!("line {n}:")), "line {n} not named: {}", o.stderr);
    }
    assert!(!o.stderr.contains("line 1:") && !o.stderr.contains("line 2:"), "blank lines are ignored: {}", o.stderr);
    assert_eq!(all_ids(&q).len(), 3);
    assert_whole(&q, "bad lines");
    // Non-UTF-8 argv: refused (65), nothing queued.
    use std::os::unix::ffi::OsStrExt;
    let mut c = q.cmd("q-push");
    c.arg("--").arg("echo").arg(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    run_cmd(c, None).expect_code(65);
    assert_eq!(all_ids(&q).len(), 3);
}

#[test]
fn matrix_unknown_feature_newer_record_and_junk() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let format = fs::read_to_string(q.queue.join("FORMAT")).unwrap();
    // An unknown feature: refused like a newer version, nothing written.
    fs::write(q.queue.join("FORMAT"), format.replace("\"features\":[]", "\"features\":[\"compression\"]")).unwrap();
    for (tool, args) in [("q-push", &["--", "true"][..]), ("q-claim", &[][..]), ("q-ls", &[][..]), ("q-gc", &[][..]), ("q-run", &["--exit-on-idle"][..])] {
        let o = q.run(tool, args);
        assert_eq!(o.code(), 78, "{tool}: {o:?}");
    }
    assert_eq!(all_ids(&q), vec![id.clone()]);
    fs::write(q.queue.join("FORMAT"), &format).unwrap();
    // A job record of a newer version is left alone by gc, not quarantined.
    let d = read_disk(&q.queue);
    let p = d.locs[&id][0].path.clone();
    let rec = fs::read_to_string(&p).unwrap().replacen("{\"v\":1,", "{\"v\":2,\"future\":true,", 1);
    fs::write(&p, rec).unwrap();
    // Junk and NFS silly-rename files in state directories.
    fs::write(q.queue.join("leased/.nfs000000001"), b"half a file").unwrap();
    fs::write(q.queue.join("done/garbage"), b"\x00\x01").unwrap();
    let seg = names(&q.queue.join("pending"))[0].clone();
    fs::write(q.queue.join("pending").join(&seg).join(".nfs000000002"), b"{").unwrap();
    q.run("q-ls", &["--all"]).ok();
    q.run("q-gc", &[]).ok();
    assert!(p.exists(), "a newer record is left where it is");
    assert!(q.queue.join("leased/.nfs000000001").exists() && q.queue.join("pending").join(&seg).join(".nfs000000002").exists(), "dot-files are ignored");
    assert!(!q.queue.join("done/garbage").exists(), "junk is moved away");
    assert!(names(&q.queue.join("corrupt")).iter().any(|n| n.starts_with("garbage.")), "…to corrupt/, never deleted");
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        if !is_root() {
            return Err("not root".into());
        }
        let dir = tempfile::Builder::new().prefix("qtmpfs").tempdir().map_err(|e| e.to_string())?;
        let o = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"]).arg(dir.path()).output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&o.stderr).trim()));
        }
        Ok(Tmpfs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn on(q: &Path, tool: &str) -> Command {
    let mut c = Command::new(bin(tool));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("Q_") {
            c.env_remove(&k);
        }
    }
    c.env("Q_DIR", q).stdin(Stdio::null());
    c
}

#[test]
fn serial_matrix_full_disk() {
    let fs_ = match Tmpfs::mount("20m") {
        Ok(t) => t,
        Err(why) => return eprintln!("skipped: full disk on a small tmpfs: {why}"),
    };
    let root = fs_.path().join("q");
    let mut c = on(&root, "q-push");
    c.args(["--", "true"]);
    let first = run_cmd(c, None);
    first.ok();
    let first_id = first.lines()[0]["id"].as_str().unwrap().to_owned();
    // A batch bigger than the disk: pushes nothing, says so (74), leaves
    // nothing partial.
    let line = format!("{{\"cmd\":[\"true\"],\"payload\":\"{}\"}}\n", "y".repeat(900_000));
    let mut c = on(&root, "q-push");
    c.stdin(Stdio::piped());
    let o = run_cmd(c, Some(line.repeat(30).into_bytes()));
    assert_eq!(o.code(), 74, "{o:?}");
    assert!(o.lines().is_empty(), "nothing acknowledged: {o:?}");
    let qd = QDir { tmp: tempfile::tempdir().unwrap(), queue: root.clone(), env: Default::default() };
    let d = read_disk(&root);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert!(d.locs.contains_key(&first_id), "the acknowledged job survives");
    run_cmd({ let mut c = on(&root, "q-gc"); c.args(["--tmp-ttl", "0"]); c }, None).ok();
    assert!(names(&root.join("tmp")).is_empty());
    // Below the free-space reserve, a push is refused up front (74).
    let filler = fs_.path().join("filler");
    let fill = |mb: u64| {
        let f = fs::File::create(&filler).unwrap();
        f.set_len(0).unwrap();
        let chunk = vec![1u8; 1 << 20];
        let mut f = f;
        use std::io::Write;
        for _ in 0..mb {
            if f.write_all(&chunk).is_err() {
                break;
            }
        }
    };
    fill(10);
    let mut c = on(&root, "q-push");
    c.args(["--", "true"]);
    let o = run_cmd(c, None);
    assert_eq!(o.code(), 74, "{o:?}");
    assert!(o.stderr.contains("disk nearly full"), "{}", o.stderr);
    fs::remove_file(&filler).unwrap();
    // A result that cannot be written (the job filled the disk): the
    // attempt is not recorded, and it runs again once there is room.
    let script = format!("if [ \"$Q_ATTEMPT\" = 1 ]; then head -c 30000000 /dev/zero > {} 2>/dev/null; fi; exit 0", filler.display());
    let mut c = on(&root, "q-push");
    c.args(["--sh", &script]);
    let id = run_cmd(c, None).lines()[0]["id"].as_str().unwrap().to_owned();
    // Run the first job out of the way, then the filling one. A settle
    // the disk refuses is tried again while the lease lasts: a short one,
    // so the worker gives the attempt up in seconds, not a minute.
    let mut c = on(&root, "q-run");
    c.args(["--exit-on-idle", "--lease", "2s"]);
    let o = run_cmd(c, None);
    assert!(o.stderr.contains("cannot record the result") || o.stderr.contains("No space"), "{o:?}");
    assert_ne!(qd.state(&id), "done", "a result that was never written is not a completion");
    fs::remove_file(&filler).unwrap();
    run_cmd(on(&root, "q-gc"), None).ok();
    let mut c = on(&root, "q-run");
    c.args(["--exit-on-idle"]);
    run_cmd(c, None).ok();
    assert_eq!(qd.state(&id), "done");
    let rec = q_queue::Queue::open(&root).unwrap().unwrap().last_result(&id).unwrap();
    assert!(rec.attempt >= 2, "it ran again: {rec:?}");
    assert_whole(&qd, "full disk");
}

#[test]
fn matrix_file_size_limit_kills_push_cleanly() {
    // The unprivileged variant: RLIMIT_FSIZE makes the write fail (SIGXFSZ).
    if Command::new("prlimit").arg("--version").output().is_err() {
        return eprintln!("skipped: prlimit (util-linux) is not installed");
    }
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let mut c = Command::new("prlimit");
    c.arg("--fsize=2000").arg(bin("q-push"));
    c.env("Q_DIR", &q.queue).env_remove("Q_FAILPOINTS");
    let line = format!("{{\"cmd\":[\"true\"],\"payload\":\"{}\"}}\n", "z".repeat(50_000));
    let o = run_cmd(c, Some(line.repeat(3).into_bytes()));
    assert_ne!(o.code(), 0, "{o:?}");
    assert!(o.lines().is_empty(), "nothing acknowledged: {o:?}");
    assert_eq!(all_ids(&q), vec![id]);
    assert_whole(&q, "file size limit");
}

#[test]
fn matrix_unwritable_queue_under_dropped_privileges() {
    if !is_root() {
        return eprintln!("skipped: dropping privileges needs root");
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return eprintln!("skipped: setpriv is not installed");
    }
    // The tools must be reachable by uid 65534.
    let exe = bin("q-push");
    let ok = Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&exe).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        return eprintln!("skipped: uid 65534 cannot execute {}", exe.display());
    }
    let base = tempfile::Builder::new().prefix("qpriv").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = base.path().join("q");
    run_cmd({ let mut c = on(&root, "q-push"); c.args(["--", "true"]); c }, None).ok();
    let snap = |r: &Path| -> Vec<(String, u64)> {
        walkdir::WalkDir::new(r).sort_by_file_name().into_iter().filter_map(|e| e.ok()).map(|e| (e.path().display().to_string(), e.metadata().map(|m| m.len()).unwrap_or(0))).collect()
    };
    let as_nobody = |tool: &str, args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(bin(tool)).args(args);
        c.env("Q_DIR", &root).env_remove("Q_FAILPOINTS").current_dir("/");
        run_cmd(c, None)
    };
    // 1. A private queue (0700): nobody can neither read nor write it.
    let before = snap(&root);
    for (tool, args) in [("q-push", &["--", "true"][..]), ("q-claim", &[][..]), ("q-gc", &[][..])] {
        let o = as_nobody(tool, args);
        assert!(matches!(o.code(), 73 | 74 | 77), "{tool}: {o:?}");
        assert!(o.stderr.contains("error"), "{tool}: says why: {o:?}");
    }
    assert_eq!(snap(&root), before, "the queue is unchanged");
    // 2. Readable by all, writable by its owner only.
    Command::new("chmod").args(["-R", "go+rX"]).arg(&root).status().unwrap();
    let before = snap(&root);
    for (tool, args) in [("q-push", &["--", "true"][..]), ("q-claim", &[][..]), ("q-run", &["--exit-on-idle"][..])] {
        let o = as_nobody(tool, args);
        assert!(matches!(o.code(), 73 | 74 | 77), "{tool}: {o:?}");
    }
    assert_eq!(snap(&root), before, "the queue is unchanged");
    as_nobody("q-ls", &["--all"]).ok();
}

#[test]
fn matrix_stdout_full_or_closed() {
    let q = QDir::new();
    // q-push into /dev/full: the job is committed, the error reported (74).
    let mut c = q.cmd("q-push");
    c.args(["--", "true"]).stdout(fs::OpenOptions::new().write(true).open("/dev/full").unwrap()).stderr(Stdio::piped());
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(74), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("error"), "{o:?}");
    assert_eq!(all_ids(&q).len(), 1, "committed all the same");
    // q-push into a closed pipe: committed, and said so on stderr.
    let mut c = q.cmd("q-push");
    c.args(["--", "true"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut p = c.spawn().unwrap();
    drop(p.stdout.take());
    let o = p.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("queued"), "{o:?}");
    assert_eq!(all_ids(&q).len(), 2);
    // q-claim into /dev/full: the claim is handed back at once.
    let mut c = q.cmd("q-claim");
    c.args(["-n", "2"]).stdout(fs::OpenOptions::new().write(true).open("/dev/full").unwrap()).stderr(Stdio::piped());
    let o = c.output().unwrap();
    assert_ne!(o.status.code(), Some(0), "{o:?}");
    assert!(names(&q.queue.join("leased")).is_empty(), "the claims were released: {:?}", names(&q.queue.join("leased")));
    let c = q.run("q-ls", &["--counts"]);
    assert_eq!(c.lines()[0]["ready"], 2, "{c:?}");
    assert_whole(&q, "stdout full");
}
