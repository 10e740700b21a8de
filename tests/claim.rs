//! q-claim: strict order, exclusive claims under a many-process race,
//! fencing of stale tokens, and crash safety of push and claim.

use crate::util::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

fn claim_ids(q: &QDir, n: usize) -> Vec<String> {
    let o = q.run("q-claim", &["-n", &n.to_string()]);
    o.lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn order_is_priority_then_due_then_fifo() {
    let q = QDir::new();
    let low = q.push(&["--priority", "-5", "--", "true"]);
    let a = q.push(&["--", "true"]);
    let b = q.push(&["--", "true"]);
    let high = q.push(&["--priority", "9999", "--", "true"]);
    let due_earlier = q.push(&["--at", "2020-01-01T00:00:00Z", "--", "true"]);
    let later = q.push(&["--delay", "1h", "--priority", "9999", "--", "true"]);
    let got = claim_ids(&q, 10);
    assert_eq!(got, vec![high, due_earlier, a, b, low], "strict order; the delayed job is not claimable");
    assert_eq!(q.state(&later), "pending");
    q.run("q-claim", &[]).expect_code(1);
}

#[test]
fn claim_line_carries_lease_and_job() {
    let q = QDir::new();
    let id = q.push(&["--payload", "{\"k\":[1,2]}", "--", "true"]);
    let o = q.run("q-claim", &["--lease", "90s"]);
    o.ok();
    let c = &o.lines()[0];
    assert_eq!(c["type"], "claim");
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["attempt"], 1);
    assert_eq!(c["fence"], 1);
    assert_eq!(c["lease_ms"], 90000);
    assert_eq!(c["job"]["payload"], json!({"k":[1,2]}));
    assert!(c["token"].is_string() && c["lease_expires_at"].is_string());
    assert_eq!(q.state(&id), "running");
}

#[test]
fn claim_into_closed_pipe_gives_the_job_back() {
    let q = QDir::new();
    let id = q.push(&["--", "true"]);
    let mut c = q.cmd("q-claim");
    let (r, w) = std::io::pipe().unwrap();
    drop(r);
    c.stdout(w).stderr(Stdio::piped());
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(74), "{o:?}");
    assert_eq!(q.state(&id), "pending", "the claim was released, not lost");
}

/// Parses every visible file of the queue in a loop; any partial or
/// unparsable job file is recorded.
fn snooper(root: PathBuf, stop: Arc<AtomicBool>, bad: Arc<std::sync::Mutex<Vec<String>>>, reads: Arc<AtomicUsize>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for dir in ["pending", "leased", "done", "dead", "waiting", "held"] {
                for e in walkdir::WalkDir::new(root.join(dir)).min_depth(1).into_iter().filter_map(|e| e.ok()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !e.file_type().is_file() || name.starts_with('.') {
                        continue;
                    }
                    // Unreadable: moved away meanwhile, which is fine.
                    if let Ok(b) = std::fs::read(e.path()) {
                        reads.fetch_add(1, Ordering::Relaxed);
                        let ok = serde_json::from_slice::<Value>(&b).map(|v| v["id"].as_str().is_some_and(|id| name.contains(id))).unwrap_or(false);
                        if !ok {
                            bad.lock().unwrap().push(format!("{}: {:?}", e.path().display(), String::from_utf8_lossy(&b)));
                        }
                    }
                }
            }
        }
    })
}

/// 8 concurrent claim loops against 2,000 pushed jobs while 2 pushers keep
/// pushing: every job claimed exactly once, none lost, no partial file read.
#[test]
fn serial_many_process_claim_race() {
    let q = QDir::new();
    let mut input = String::new();
    for i in 0..2000 {
        input.push_str(&format!("{{\"cmd\":[\"true\",\"{i}\"]}}\n"));
    }
    let o = q.run_in("q-push", &[], &input);
    o.ok();
    let mut pushed: BTreeSet<String> = o.lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(pushed.len(), 2000);

    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reads = Arc::new(AtomicUsize::new(0));
    let snoop = snooper(q.queue.clone(), stop.clone(), bad.clone(), reads.clone());

    // Two pushers keep pushing, in batches and one by one.
    let pushers: Vec<_> = (0..2)
        .map(|p| {
            let mut c = q.cmd("q-push");
            c.stdout(Stdio::piped());
            let script = format!(
                "for i in $(seq 1 100); do echo '{{\"cmd\":[\"true\",\"p{p}-'$i'\"]}}'; done | {push}; for i in $(seq 1 60); do {push} -- true p{p}-single-$i; done",
                push = bin("q-push").display()
            );
            let mut sh = Command::new("/bin/sh");
            sh.arg("-c").arg(script).env("Q_DIR", &q.queue).stdout(Stdio::piped()).stdin(Stdio::null());
            drop(c);
            sh.spawn().unwrap()
        })
        .collect();
    // Eight claimers loop until the queue stays empty after the pushers end.
    let claimers: Vec<_> = (0..8)
        .map(|_| {
            let script = format!(
                "idle=0; while [ $idle -lt 20 ]; do if {claim} -n 3; then idle=0; elif [ -e {done} ]; then idle=$((idle+1)); fi; done",
                claim = bin("q-claim").display(),
                done = q.file("pushers-done").display()
            );
            let mut sh = Command::new("/bin/sh");
            sh.arg("-c").arg(script).env("Q_DIR", &q.queue).stdout(Stdio::piped()).stdin(Stdio::null());
            sh.spawn().unwrap()
        })
        .collect();
    for p in pushers {
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success());
        for l in parse_lines(&String::from_utf8_lossy(&o.stdout)) {
            pushed.insert(l["id"].as_str().unwrap().to_owned());
        }
    }
    std::fs::write(q.file("pushers-done"), "").unwrap();
    let mut claims: BTreeMap<String, usize> = BTreeMap::new();
    for c in claimers {
        let o = c.wait_with_output().unwrap();
        for l in parse_lines(&String::from_utf8_lossy(&o.stdout)) {
            *claims.entry(l["id"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    snoop.join().unwrap();

    assert_eq!(pushed.len(), 2000 + 2 * 160);
    let dup: Vec<_> = claims.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "claimed more than once: {dup:?}");
    let claimed: BTreeSet<String> = claims.keys().cloned().collect();
    let lost: Vec<_> = pushed.difference(&claimed).collect();
    assert!(lost.is_empty(), "{} pushed jobs never claimed: {:?}", lost.len(), &lost[..lost.len().min(5)]);
    assert!(claimed.is_subset(&pushed), "claimed something never pushed");
    assert_eq!(q.files("leased").len(), pushed.len(), "every job sits in leased/ exactly once");
    let bad = bad.lock().unwrap();
    assert!(bad.is_empty(), "partial or foreign files seen: {:?}", &bad[..bad.len().min(3)]);
    assert!(reads.load(Ordering::Relaxed) > 100, "the reader did read files");
}

/// After a lease is taken over, every operation with the old token is
/// refused (76) and changes nothing.
#[test]
fn serial_stale_token_is_refused_after_takeover() {
    let q = QDir::new();
    let id = q.push(&["--attempts", "3", "--", "true"]);
    let c1 = q.run("q-claim", &["--lease", "1s"]);
    let old = c1.lines()[0]["token"].as_str().unwrap().to_owned();
    let queue = q_queue::Queue::open(&q.queue).unwrap().unwrap();
    // Wait past the lease (deadline from the lease itself), then reclaim.
    let until = Instant::now() + Duration::from_millis(1000);
    wait_until("lease expiry", Duration::from_secs(10), || Instant::now() > until + Duration::from_millis(50) && !queue.reclaim(false).unwrap().is_empty());
    let c2 = q.run("q-claim", &[]);
    c2.ok();
    let new = c2.lines()[0]["token"].as_str().unwrap().to_owned();
    assert_eq!(c2.lines()[0]["fence"], 2);
    assert_ne!(old, new);
    let before = snapshot(&q);
    let err = queue.settle(&id, &old, q_queue::Reason::Ok, &Default::default(), &Default::default()).unwrap_err();
    assert_eq!(err.kind.exit_code(), 76);
    let err = queue.touch(&id, &old).unwrap_err();
    assert_eq!(err.kind.exit_code(), 76);
    let err = queue.settle(&id, &old, q_queue::Reason::Exit, &Default::default(), &Default::default()).unwrap_err();
    assert_eq!(err.kind.exit_code(), 76);
    assert_eq!(before, snapshot(&q), "a refused operation changes nothing");
    // The current token still works.
    queue.touch(&id, &new).unwrap();
    queue.settle(&id, &new, q_queue::Reason::Ok, &Default::default(), &Default::default()).unwrap();
    assert_eq!(q.state(&id), "done");
    let rec = queue.last_result(&id).unwrap();
    assert_eq!(rec.attempt, 2);
}

/// Names and contents of every file in the queue (mtimes excluded).
pub fn snapshot(q: &QDir) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(&q.queue)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().strip_prefix(&q.queue).unwrap().display().to_string(), std::fs::read(e.path()).unwrap_or_default()))
        .collect();
    v.sort();
    v
}

/// A push or claim killed at any step leaves a queue that reads correctly:
/// each job is either absent or whole, and nothing acknowledged is lost.
#[test]
fn crash_points_in_push_and_claim() {
    let push_points = ["publish.before_rename", "push.after_tmp_write", "push.after_tmp_fsync", "push.after_rename", "push.before_ack"];
    let claim_points = ["claim.after_lease_tmp", "claim.after_claim_rename", "claim.after_lease_publish"];
    // A batch of 20 takes the unnamed-file path (O_TMPFILE, on this
    // machine's filesystem) or, switched off, the portable staged path; one
    // of 100 is shared by two threads.
    for fp in push_points {
        for (batch, unnamed) in [(1usize, false), (20, true), (20, false), (100, true)] {
            let q = QDir::new();
            q.push(&["--", "true", "seed"]);
            let input: String = (0..batch).map(|i| format!("{{\"cmd\":[\"true\",\"{i}\"]}}\n")).collect();
            let mut c = q.cmd("q-push");
            c.env("Q_FAILPOINTS", fp);
            if !unnamed {
                c.env("Q_DISABLE", "unnamed-files");
            }
            let o = run_cmd(c, Some(input.into_bytes()));
            let acked = o.lines().len();
            assert!(o.code() != 0 || acked == batch, "{fp}: {o:?}");
            check_readable(&q, fp);
            let c = q.run("q-ls", &["--counts"]);
            let n = c.lines()[0]["ready"].as_u64().unwrap() as usize;
            assert!(n > acked && n <= 1 + batch, "{fp}: {n} jobs after a crash with {acked} acked");
            // Killed after writing: staged files wait in tmp/ for q-gc;
            // unnamed ones vanished with the process.
            if fp == "push.after_tmp_write" {
                let left = std::fs::read_dir(q.queue.join("tmp")).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".job.tmp")).count();
                let want = if unnamed { 0 } else { batch };
                assert_eq!(left, want, "{fp}, batch {batch}, unnamed {unnamed}: job files left in tmp/");
            }
        }
    }
    for fp in claim_points {
        let q = QDir::new();
        let id = q.push(&["--", "true"]);
        let mut c = q.cmd("q-claim");
        c.env("Q_FAILPOINTS", fp);
        let o = run_cmd(c, None);
        assert_eq!(o.code(), 134, "{fp}: aborted: {o:?}");
        check_readable(&q, fp);
        let st = q.state(&id);
        assert!(st == "pending" || st == "running", "{fp}: job is {st}");
        // Recovery returns it (the claimer is dead).
        let queue = q_queue::Queue::open(&q.queue).unwrap().unwrap();
        if st == "running" && fp != "claim.after_claim_rename" {
            assert_eq!(queue.reclaim(false).unwrap().len(), 0, "{fp}: a ttl claim is kept until its lease runs out");
        }
    }
}

/// Every visible job file parses and every tool reads the queue.
fn check_readable(q: &QDir, fp: &str) {
    for dir in ["pending", "leased", "done", "dead"] {
        for e in walkdir::WalkDir::new(q.queue.join(dir)).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file()) {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let b = std::fs::read(e.path()).unwrap();
            assert!(serde_json::from_slice::<Value>(&b).is_ok(), "{fp}: partial file {}", e.path().display());
        }
    }
    q.run("q-ls", &["--all"]).ok();
}

/// SIGKILL a pusher in the middle of a large batch: what it acknowledged is
/// there, nothing partial is visible.
#[test]
fn serial_sigkill_mid_batch_push() {
    let q = QDir::new();
    q.push(&["--", "true"]);
    let mut c = q.cmd("q-push");
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut p = Proc::spawn(c);
    let mut sin = p.child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for i in 0..200_000 {
            if writeln!(sin, "{{\"cmd\":[\"true\",\"{i}\"]}}").is_err() {
                break;
            }
        }
    });
    let mut stdout = p.child.stdout.take().unwrap();
    // Wait until it acknowledged something, then kill it.
    let mut first = [0u8; 1];
    use std::io::Read;
    stdout.read_exact(&mut first).unwrap();
    p.signal(nix::sys::signal::SIGKILL);
    p.wait_for(Duration::from_secs(10));
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest);
    let _ = writer.join();
    let text = format!("{}{}", first[0] as char, String::from_utf8_lossy(&rest));
    let acked: Vec<String> = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).map(|v| v["id"].as_str().unwrap().to_owned()).collect();
    assert!(!acked.is_empty());
    check_readable(&q, "sigkill");
    let all: BTreeSet<String> = q.run("q-ls", &["--json", "--all"]).lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    for id in &acked {
        assert!(all.contains(id), "acknowledged job {id} lost");
    }
}

/// A worker's cached candidate list never hides a more urgent job pushed
/// after it was built: the push wakes the claimer, which looks again.
#[test]
fn worker_cache_sees_a_later_urgent_push() {
    let q = QDir::new();
    let input: String = (0..50).map(|i| format!("{{\"cmd\":[\"true\",\"{i}\"]}}\n")).collect();
    q.run_in("q-push", &[], &input).ok();
    let queue = q_queue::backend::open(&q_queue::Location::Dir(q.queue.clone()), Default::default()).unwrap().unwrap();
    let mut claimer = queue.claimer();
    let opts = q_queue::ClaimOpts { lease_ms: 60_000, worker_id: None, liveness: q_queue::Liveness::Flock, fit: None };
    let first = claimer.claim(1, &opts).unwrap();
    assert_eq!(first.len(), 1);
    let urgent = q.push(&["--priority", "100", "--", "true"]);
    let next = claimer.claim(1, &opts).unwrap();
    assert_eq!(next[0].id, urgent, "the urgent job comes next, cache or not");
    // And the cache is used without losing anything: all the rest come out once.
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let c = claimer.claim(3, &opts).unwrap();
        if c.is_empty() {
            break;
        }
        for x in c {
            assert!(seen.insert(x.id.clone()), "claimed twice");
        }
    }
    assert_eq!(seen.len(), 49);
}
