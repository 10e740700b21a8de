//! T1, the kill -9 storm (DESIGN §9.2): pushers, two supervisor launchers
//! racing for the lock, a standalone worker, `q-gc` every 300 ms and a
//! snooper, while a chaos loop SIGKILLs and SIGSTOPs workers, jobs, pushers,
//! supervisors and gc at random. Then everything is killed, one `q-gc` pass
//! and `q-supervise --exit-on-idle` recover and drain, and the history
//! checker verifies I1–I10.
//!
//! About 20 s in the default suite; `Q_TORTURE_SECS=600` for a long run;
//! `Q_TORTURE_SEED` replays a seed (the schedule of pushes and chaos, not the
//! OS's). Processes are signalled only if we started them, or if the queue
//! records them (a lease's worker pid, a job's pid in the effects log) and
//! their environment says they run on this test's queue — through a pidfd,
//! so a reused pid is never hit.

use super::history::*;
use crate::util::*;
use rustix::process::Signal as Sig;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a direct child of the test is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Pusher,
    Supervisor,
    Worker,
    Gc,
}

struct World {
    q: QDir,
    root: PathBuf,
    script: PathBuf,
    effects: PathBuf,
    stop: AtomicBool,
    rng: Mutex<Rng>,
    hist: Mutex<History>,
    fig: Figures,
    /// Our live direct children: pid → role.
    kids: Mutex<BTreeMap<i32, Role>>,
    /// Pids we SIGKILLed, with the time (ms): a supervisor's span ends there.
    killed_at: Mutex<BTreeMap<i32, i64>>,
    /// Processes we stopped, to continue them.
    stopped: Mutex<Vec<OwnedFd>>,
    seq: AtomicU64,
    long_run: bool,
}

fn now_ms() -> i64 {
    q_queue::time::now_ms()
}

impl World {
    fn rand(&self, lo: u64, hi: u64) -> u64 {
        self.rng.lock().unwrap().range(lo, hi)
    }
    fn pct(&self, p: u64) -> bool {
        self.rng.lock().unwrap().pct(p)
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    fn sleep_ms(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    /// A command on this queue with the storm's settings.
    fn cmd(&self, tool: &str) -> Command {
        let mut c = self.q.cmd(tool);
        // A claimer killed between its claim rename and its lease record
        // leaves a claim without a lease: shorten its grace (60 s) so the
        // storm's own gc passes recover it, as they would after a minute.
        c.env("Q_NO_LEASE_GRACE_MS", "3000");
        c
    }

    /// Spawn a direct child and register it; returns the child.
    fn spawn(&self, mut c: Command, role: Role) -> Option<Child> {
        let child = c.spawn().ok()?;
        self.kids.lock().unwrap().insert(child.id() as i32, role);
        Some(child)
    }

    fn reap(&self, child: &mut Child) -> i32 {
        let st = child.wait().expect("wait");
        self.kids.lock().unwrap().remove(&(child.id() as i32));
        use std::os::unix::process::ExitStatusExt;
        st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
    }

    /// One job line with a unique name.
    fn job_line(&self, acked: &[String]) -> (String, Value) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("j{n}");
        let mut rng = self.rng.lock().unwrap();
        let mode = match rng.range(0, 100) {
            0..=79 => "ok",
            80..=91 => "failfirst",
            _ => "fail",
        };
        let secs = if rng.pct(4) { "1.5".to_owned() } else { format!("0.{:02}", rng.range(0, if self.long_run { 8 } else { 20 })) };
        let secs = if secs == "0.00" { "0".to_owned() } else { secs };
        let mut v = json!({"name": name, "cmd": ["/bin/sh", self.script, mode, secs, self.effects], "attempts": 3, "backoff": "100ms:400ms"});
        if rng.pct(5) {
            v["delivery"] = json!("at-most-once");
            v["attempts"] = json!(1);
        }
        if rng.pct(5) {
            v["delay"] = json!(format!("{}ms", rng.range(100, 2000)));
        }
        if rng.pct(10) {
            v["priority"] = json!(rng.range(0, 5) as i64 - 2);
        }
        if rng.pct(3) && !acked.is_empty() {
            let dep = acked[rng.range(0, acked.len() as u64) as usize].clone();
            v["after"] = json!([dep]);
        }
        if rng.pct(3) {
            v["key"] = json!(format!("k{}", rng.range(0, 5)));
        }
        (name, v)
    }

    fn backlog(&self) -> usize {
        names(&self.root.join("pending")).iter().map(|s| names(&self.root.join("pending").join(s)).len()).sum()
    }
}

/// A pusher: batches of 1–50 lines on stdin (sometimes one argv job),
/// while the backlog is modest.
fn pusher(w: Arc<World>, k: usize) {
    let mut my_acked: Vec<String> = Vec::new();
    while !w.stopping() {
        if w.backlog() > if w.long_run { 1500 } else { 50 } {
            w.sleep_ms(100);
            continue;
        }
        let argv = w.pct(10);
        let n = if argv { 1 } else { w.rand(1, 51) as usize };
        let lines: Vec<(String, Value)> = (0..n).map(|_| w.job_line(&my_acked)).collect();
        {
            let mut h = w.hist.lock().unwrap();
            for (name, _) in &lines {
                h.attempted.insert(name.clone());
            }
        }
        let mut c = w.cmd("q-push");
        if argv {
            let v = &lines[0].1;
            c.args(["--name", v["name"].as_str().unwrap(), "--attempts", "3", "--backoff", "100ms:400ms", "--"]);
            for a in v["cmd"].as_array().unwrap() {
                c.arg(a.as_str().unwrap());
            }
        } else {
            c.stdin(Stdio::piped());
        }
        c.stdout(Stdio::piped()).stderr(Stdio::null());
        let Some(mut child) = w.spawn(c, Role::Pusher) else { continue };
        if let Some(mut sin) = child.stdin.take() {
            let input: String = lines.iter().map(|(_, v)| format!("{v}\n")).collect();
            let _ = sin.write_all(input.as_bytes());
        }
        let mut out = String::new();
        use std::io::Read;
        let _ = child.stdout.take().map(|mut o| o.read_to_string(&mut out));
        w.reap(&mut child);
        w.fig.push_runs.fetch_add(1, Ordering::Relaxed);
        let ids: Vec<String> = out.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter_map(|v| v["id"].as_str().map(str::to_owned)).collect();
        w.fig.pushed.fetch_add(ids.len() as u64, Ordering::Relaxed);
        {
            let mut h = w.hist.lock().unwrap();
            h.acked.extend(ids.iter().cloned());
        }
        my_acked.extend(ids);
        if my_acked.len() > 200 {
            my_acked.drain(..100);
        }
        w.sleep_ms(w.rand(20, if w.long_run { 150 } else { 250 }) + k as u64);
    }
}

/// A supervisor launcher: starts `q-supervise`, which either wins the lock
/// or exits 75; when it ends (killed, or lost the race), it starts another.
fn launcher(w: Arc<World>, k: usize) {
    let mut n = 0;
    while !w.stopping() {
        n += 1;
        let ev = w.q.file(&format!("sup{k}-{n}.events"));
        let mut c = w.cmd("q-supervise");
        let j = if w.long_run { "3" } else { "2" };
        c.args(["-j", j, "--lease", "2s", "--restart-base", "100ms", "--grace", "1s", "--events"]);
        c.stderr(fs::File::create(&ev).unwrap()).stdout(Stdio::null());
        let Some(mut child) = w.spawn(c, Role::Supervisor) else { continue };
        w.fig.supervisor_runs.fetch_add(1, Ordering::Relaxed);
        let pid = child.id() as i32;
        let code = w.reap(&mut child);
        let killed = w.killed_at.lock().unwrap().get(&pid).copied();
        let span = spans_from_events(&ev, killed.or(Some(now_ms())));
        let mut h = w.hist.lock().unwrap();
        if let Some(s) = span {
            h.spans.push(s);
        } else if code != 75 && killed.is_none() {
            h.bad_supervisor_exits.push(format!("supervisor {pid} exited {code} without taking the lock: {}", fs::read_to_string(&ev).unwrap_or_default()));
        }
        if killed.is_none() && !matches!(code, 0 | 75) {
            h.bad_supervisor_exits.push(format!("supervisor {pid} exited {code} though nobody killed it: {}", fs::read_to_string(&ev).unwrap_or_default().lines().rev().take(5).collect::<Vec<_>>().join(" | ")));
        }
        h.event_files.push(ev);
        drop(h);
        w.sleep_ms(w.rand(50, 300));
    }
}

/// A standalone `q-run` worker beside the supervisors' workers.
fn worker(w: Arc<World>, k: usize) {
    let mut n = 0;
    while !w.stopping() {
        n += 1;
        let out = w.q.file(&format!("run{k}-{n}.out"));
        let mut c = w.cmd("q-run");
        c.args(["--lease", "2s", "--grace", "1s"]);
        c.stdout(fs::File::create(&out).unwrap()).stderr(Stdio::null());
        let Some(mut child) = w.spawn(c, Role::Worker) else { continue };
        w.reap(&mut child);
        w.hist.lock().unwrap().run_outputs.push(out);
        w.sleep_ms(w.rand(50, 300));
    }
}

/// `q-gc` every 300 ms, with short TTLs so that it races the workers.
fn collector(w: Arc<World>) {
    let log = w.q.file("gc.out");
    while !w.stopping() {
        let mut c = w.cmd("q-gc");
        c.args(["--tmp-ttl", "5s", "--orphan-ttl", "5s"]);
        c.stdout(fs::OpenOptions::new().create(true).append(true).open(&log).unwrap()).stderr(Stdio::null());
        if let Some(mut child) = w.spawn(c, Role::Gc) {
            w.reap(&mut child);
            w.fig.gc_runs.fetch_add(1, Ordering::Relaxed);
        }
        w.sleep_ms(300);
    }
}

/// The chaos loop: every 50–400 ms, one SIGKILL or SIGSTOP.
fn chaos(w: Arc<World>) {
    let qdir = format!("Q_DIR={}", w.root.display());
    while !w.stopping() {
        // DESIGN: every 50–400 ms; a long run hits harder to reach its kill count.
        w.sleep_ms(if w.long_run { w.rand(20, 120) } else { w.rand(50, 400) });
        let pick = w.rand(0, 100);
        match pick {
            // A job process, from the effects log.
            0..=29 => {
                let text = fs::read_to_string(&w.effects).unwrap_or_default();
                let lines: Vec<&str> = text.lines().rev().take(8).collect();
                if lines.is_empty() {
                    continue;
                }
                let l = lines[w.rand(0, lines.len() as u64) as usize];
                let f: Vec<&str> = l.split_whitespace().collect();
                if let [id, _, pid] = f.as_slice() {
                    let pid: i32 = pid.parse().unwrap_or(0);
                    let sig = if w.pct(15) { Sig::STOP } else { Sig::KILL };
                    if let Some(fd) = signal_verified(pid, &format!("Q_JOB_ID={id}"), sig) {
                        if sig == Sig::KILL {
                            w.fig.kill("job");
                        } else {
                            w.fig.stopped.fetch_add(1, Ordering::Relaxed);
                            cont_later(&w, fd, 1500);
                        }
                    }
                }
            }
            // A worker holding a lease, from its lease record.
            30..=59 => {
                let leased = names(&w.root.join("leased"));
                if leased.is_empty() {
                    continue;
                }
                let n = &leased[w.rand(0, leased.len() as u64) as usize];
                let Some(l) = q_queue::names::LeasedName::parse(n) else { continue };
                let Ok(b) = fs::read(w.root.join("var").join(&l.id).join(format!("{}.lease.json", l.c.attempt))) else { continue };
                let Ok(lease) = serde_json::from_slice::<Value>(&b) else { continue };
                let pid = lease["pid"].as_i64().unwrap_or(0) as i32;
                if fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim() != "q-run" {
                    continue;
                }
                // SIGSTOP past the lease (2 s) forces a takeover of a live owner.
                let stop = w.pct(25);
                let sig = if stop { Sig::STOP } else { Sig::KILL };
                if let Some(fd) = signal_verified(pid, &qdir, sig) {
                    if stop {
                        w.fig.stopped.fetch_add(1, Ordering::Relaxed);
                        cont_later(&w, fd, 3000);
                    } else {
                        w.fig.kill("worker");
                    }
                }
            }
            // One of our own children.
            _ => {
                let kids: Vec<(i32, Role)> = w.kids.lock().unwrap().iter().map(|(p, r)| (*p, *r)).collect();
                let want = match pick {
                    60..=74 => Role::Pusher,
                    75..=84 => Role::Supervisor,
                    85..=94 => Role::Worker,
                    _ => Role::Gc,
                };
                let cands: Vec<i32> = kids.iter().filter(|(_, r)| *r == want).map(|(p, _)| *p).collect();
                if cands.is_empty() {
                    continue;
                }
                let pid = cands[w.rand(0, cands.len() as u64) as usize];
                let stop = want != Role::Gc && w.pct(10);
                let sig = if stop { Sig::STOP } else { Sig::KILL };
                if !stop {
                    w.killed_at.lock().unwrap().insert(pid, now_ms());
                }
                // Our direct child: it cannot be reaped (and its pid reused)
                // before its waiter thread removes it from `kids`.
                if let Some(fd) = signal_verified(pid, &qdir, sig) {
                    if stop {
                        w.fig.stopped.fetch_add(1, Ordering::Relaxed);
                        cont_later(&w, fd, 2500);
                    } else {
                        w.fig.kill(match want {
                            Role::Pusher => "pusher",
                            Role::Supervisor => "supervisor",
                            Role::Worker => "worker",
                            Role::Gc => "gc",
                        });
                    }
                } else if !stop {
                    w.killed_at.lock().unwrap().remove(&pid);
                }
            }
        }
    }
}

/// SIGCONT a stopped process after `ms` (through its pidfd: never another).
fn cont_later(w: &Arc<World>, fd: OwnedFd, ms: u64) {
    let fd = Arc::new(fd);
    w.stopped.lock().unwrap().push(fd.try_clone().expect("dup pidfd"));
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        let _ = rustix::process::pidfd_send_signal(&*fd, Sig::CONT);
    });
}

/// Kill everything that runs on the queue and wait until nothing does.
fn kill_everything(w: &World) {
    for fd in w.stopped.lock().unwrap().drain(..) {
        let _ = rustix::process::pidfd_send_signal(&fd, Sig::CONT);
    }
    let qdir = format!("Q_DIR={}", w.root.display());
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let kids: Vec<i32> = w.kids.lock().unwrap().keys().copied().collect();
        for pid in kids {
            w.killed_at.lock().unwrap().insert(pid, now_ms());
            let _ = signal_verified(pid, &qdir, Sig::KILL);
        }
        let procs = queue_processes(&w.root);
        if procs.is_empty() && w.kids.lock().unwrap().is_empty() {
            return;
        }
        for (pid, _) in &procs {
            let _ = signal_verified(*pid, &qdir, Sig::CONT);
            let _ = signal_verified(*pid, &qdir, Sig::KILL);
        }
        assert!(Instant::now() < until, "processes on the queue would not die: {procs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serial_torture_storm() {
    let seed = seed("serial_torture_storm");
    let secs: u64 = std::env::var("Q_TORTURE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let long_run = secs > 60;
    let q = QDir::new();
    let root = q.queue.clone();
    let script = q.file("job.sh");
    fs::write(&script, JOB_SH).unwrap();
    let effects = q.file("effects.log");
    fs::write(&effects, "").unwrap();
    // Create the queue first, so the snooper has something to read.
    q.run("q-push", &["--name", "j-first", "--", "/bin/sh", script.to_str().unwrap(), "ok", "0", effects.to_str().unwrap()]).ok();
    let w = Arc::new(World {
        root: root.clone(),
        script,
        effects: effects.clone(),
        stop: AtomicBool::new(false),
        rng: Mutex::new(Rng::new(seed)),
        hist: Mutex::new(History::default()),
        fig: Figures::default(),
        kids: Mutex::new(BTreeMap::new()),
        killed_at: Mutex::new(BTreeMap::new()),
        stopped: Mutex::new(Vec::new()),
        seq: AtomicU64::new(0),
        long_run,
        q,
    });
    {
        let mut h = w.hist.lock().unwrap();
        h.attempted.insert("j-first".into());
        let first = names(&root.join("pending")).iter().flat_map(|s| names(&root.join("pending").join(s))).collect::<Vec<_>>();
        for n in first {
            h.acked.insert(q_queue::names::QueuedName::parse(&n).unwrap().key.id);
        }
    }
    let snooper = Snooper::start(root.clone());
    let started = Instant::now();
    let mut threads = Vec::new();
    let pushers = if long_run { 3 } else { 2 };
    for k in 0..pushers {
        let w = w.clone();
        threads.push(std::thread::spawn(move || pusher(w, k)));
    }
    for k in 0..2 {
        let w = w.clone();
        threads.push(std::thread::spawn(move || launcher(w, k)));
    }
    {
        let w = w.clone();
        threads.push(std::thread::spawn(move || worker(w, 0)));
    }
    {
        let w = w.clone();
        threads.push(std::thread::spawn(move || collector(w)));
    }
    let chaos_t = {
        let w = w.clone();
        std::thread::spawn(move || chaos(w))
    };
    let mut next_note = Instant::now() + Duration::from_secs(60);
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200));
        if long_run && Instant::now() >= next_note {
            next_note += Duration::from_secs(60);
            eprintln!(
                "storm: {:>4}s pushed {} killed {} stopped {} queue {:?}",
                started.elapsed().as_secs(),
                w.fig.pushed.load(Ordering::Relaxed),
                w.fig.killed.load(Ordering::Relaxed),
                w.fig.stopped.load(Ordering::Relaxed),
                counts(&root)
            );
        }
    }
    // Stop the chaos and the drivers, then kill whatever still runs.
    w.stop.store(true, Ordering::Relaxed);
    chaos_t.join().unwrap();
    kill_everything(&w);
    for t in threads {
        t.join().unwrap();
    }
    kill_everything(&w);
    let storm_secs = started.elapsed().as_secs_f64();
    let leased_at_kill = names(&root.join("leased")).len();
    // Recovery and the checks (the snooper reads on through the drain).
    let drain_within = Duration::from_secs(if long_run { 1200 } else { 120 });
    let w2 = Arc::clone(&w);
    let mut h = w2.hist.lock().unwrap();
    let partial_now = snooper.bad.lock().unwrap().clone();
    let rep = recover_and_check(&w.q, &mut h, &effects, &partial_now, seed, "serial_torture_storm", drain_within, true);
    let (reads, bad) = snooper.finish();
    assert!(bad.is_empty(), "I6 partial reads (seed {seed}): {bad:#?}");
    let f = &w.fig;
    let killed_by = f.killed_by.lock().unwrap().clone();
    eprintln!(
        "serial_torture_storm figures (seed {seed}, {storm_secs:.0} s of storm):\n  \
         jobs pushed (acknowledged): {}\n  job lines offered: {}\n  q-push runs: {}\n  jobs checked: {} ({} terminal)\n  \
         executions: {} ({} re-executions)\n  processes killed (SIGKILL): {} {:?}\n  processes stopped (SIGSTOP): {}\n  \
         q-supervise runs: {} (spans holding the lock: {})\n  q-gc runs: {}\n  leased at the final kill: {}\n  \
         attempts reclaimed from dead or expired owners: {}\n  leases stolen from live (stopped) owners, refused as lease-lost: {}\n  \
         snooper reads: {}\n  lost: {}\n  double completions: {}\n  partial reads: {}",
        h.acked.len(),
        h.attempted.len(),
        f.push_runs.load(Ordering::Relaxed),
        rep.ids,
        rep.terminal,
        rep.executions,
        rep.reexecutions,
        f.killed.load(Ordering::Relaxed),
        killed_by,
        f.stopped.load(Ordering::Relaxed),
        f.supervisor_runs.load(Ordering::Relaxed),
        h.spans.len(),
        f.gc_runs.load(Ordering::Relaxed),
        leased_at_kill,
        rep.reclaimed,
        rep.lease_lost,
        reads,
        rep.lost,
        rep.double_completions,
        bad.len(),
    );
    assert!(h.acked.len() > 20, "the storm pushed too little to mean anything: {}", h.acked.len());
    assert!(f.killed.load(Ordering::Relaxed) > 5, "the storm killed too little to mean anything");
    assert!(reads > 100, "the snooper read too little: {reads}");
}
