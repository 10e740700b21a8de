//! The tools on a PostgreSQL queue, against the private server the tests
//! start (crates/queue/tests/backends/pg.rs): the same commands and
//! records as on a directory, and a password that never leaves the process
//! it was given to.

#[path = "../crates/queue/tests/backends/pg.rs"]
pub(crate) mod pgserver;

use crate::util::*;
use std::path::PathBuf;
use std::time::Duration;

/// A queue in a fresh schema of the test server, as `Q_DIR` names it.
pub(crate) fn pg_queue(password: Option<&str>) -> (QDir, String) {
    let s = pgserver::server();
    let schema = pgserver::schema();
    let url = match password {
        Some(p) => s.url.replacen("postgres://q@", &format!("postgres://q:{p}@"), 1),
        None => s.url.clone(),
    };
    let url = format!("{url}?schema={schema}&queue=tools");
    let mut q = QDir::new();
    q.queue = PathBuf::from(&url);
    (q, schema)
}

fn admin() -> postgres::Client {
    postgres::Client::connect(&pgserver::server().url, postgres::NoTls).unwrap()
}

/// Push, run under a supervisor, list, read logs, wait, retry, collect:
/// the records are the directory's.
#[test]
fn the_tools_work_on_postgres() {
    let (q, _) = pg_queue(None);
    let both = q.push(&["--name", "both", "--", "sh", "-c", "echo out; echo err >&2"]);
    let bad = q.push(&["--name", "bad", "--sh", "exit 3"]);
    let after = q.push(&["--after", &both, "--", "true"]);
    let cascade = q.push(&["--after", &bad, "--", "true"]);
    assert_eq!(q.job(&after)["state"], "waiting");
    let o = q.run("q-supervise", &["-j", "2", "--exit-on-idle"]);
    o.expect_code(1);
    assert!(o.stderr.contains(&bad), "the failed job is named on stderr: {}", o.stderr);
    for (id, want) in [(&both, "done"), (&bad, "dead"), (&after, "done"), (&cascade, "canceled")] {
        assert_eq!(q.job(id)["state"], want, "job {id}");
    }
    assert_eq!(q.job(&bad)["result"]["exit_code"], 3);
    assert_eq!(q.job(&cascade)["result"]["reason"], "dependency-failed");
    let o = q.run("q-log", &[&both]);
    o.ok();
    assert_eq!(o.stdout, "out\nerr\n", "both streams, in order");
    assert_eq!(q.run("q-log", &["--stderr", &both]).ok().stdout, "err\n");
    let w = q.run("q-wait", &[&both]);
    w.ok();
    assert_eq!(w.lines()[0]["state"], "done");
    q.run("q-wait", &[&bad]).expect_code(1);
    let c = q.run("q-ls", &["--counts"]).ok().lines().remove(0);
    assert_eq!((c["done"].as_u64(), c["dead"].as_u64(), c["canceled"].as_u64()), (Some(2), Some(1), Some(1)));
    let r = q.run_in("q-ctl", &["retry"], &format!("{bad}\n"));
    r.ok();
    assert_eq!(q.job(&bad)["state"], "pending");
    q.run("q-ctl", &["pause"]).ok();
    assert_eq!(q.run("q-ls", &["--counts"]).ok().lines()[0]["paused"], true);
    q.run("q-ctl", &["resume"]).ok();
    q.run("q-ctl", &["cancel", &bad]).ok();
    let gc = q.run("q-gc", &["--done-ttl", "0s"]).ok().lines();
    let expired: Vec<&str> = gc.iter().filter(|l| l["action"] == "expire").filter_map(|l| l["id"].as_str()).collect();
    assert!(expired.contains(&both.as_str()) && expired.contains(&after.as_str()), "{gc:?}");
    assert!(q.job(&both).is_null(), "pruned");
}

/// A claim by hand: q-claim, then ack with its token; a stale token is
/// refused with 76.
#[test]
fn claims_and_tokens_on_postgres() {
    let (q, _) = pg_queue(None);
    let id = q.push(&["--", "true"]);
    let claim = q.run("q-claim", &[]).ok().lines().remove(0);
    assert_eq!(claim["id"], id.as_str());
    let token = claim["token"].as_str().unwrap().to_owned();
    q.run("q-ctl", &["touch", &id, "--token", &token]).ok();
    q.run("q-ctl", &["ack", &id, "--token", &token]).ok();
    q.run("q-ctl", &["ack", &id, "--token", &token]).expect_code(76);
    q.run("q-ctl", &["touch", &id, "--token", &token]).expect_code(76);
    // Handed to a runner: q-claim | q-run --stdin.
    let id2 = q.push(&["--", "sh", "-c", "echo ran"]);
    let claim = q.run("q-claim", &[]).ok().stdout.clone();
    let r = q.run_in("q-run", &["--stdin", "--once"], &claim);
    r.ok();
    assert_eq!(r.lines()[0]["id"], id2.as_str());
    assert_eq!(q.run("q-log", &[&id2]).ok().stdout, "ran\n");
}

/// A password given in the URL reaches no argv of any q process (workers,
/// watchdog), no job (neither its environment nor its Q_DIR), no recorded
/// environment, and no message.
#[test]
fn serial_the_password_never_leaves_the_process() {
    const PW: &str = "Sekr3t-pw-4711";
    let (q, schema) = pg_queue(Some(PW));
    let marker = q.path().join("started");
    let gate = q.path().join("go");
    let script = format!("env; echo \"QDIR=$Q_DIR\"; touch {}; while [ ! -e {} ]; do sleep 0.05; done", marker.display(), gate.display());
    let id = q.push(&["--sh", &script]);
    let mut sup = q.cmd("q-supervise");
    sup.args(["-j", "1", "--exit-on-idle"]);
    sup.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut p = Proc::spawn(sup);
    wait_until("the job started", Duration::from_secs(30), || marker.exists());
    // Every process of the supervisor's tree: its argv.
    let mut tree = vec![p.pid()];
    let mut seen = 0;
    while seen < tree.len() {
        let parent = tree[seen];
        seen += 1;
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let ppid: i32 = stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(1).unwrap().parse().unwrap();
            if ppid == parent && !tree.contains(&pid) {
                tree.push(pid);
            }
        }
    }
    assert!(tree.len() >= 4, "supervisor, watchdog, worker and job: {tree:?}");
    for pid in &tree {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&argv).contains(PW), "pid {pid}'s argv holds the password: {}", String::from_utf8_lossy(&argv));
    }
    std::fs::write(&gate, "").unwrap();
    assert_eq!(p.wait_for(Duration::from_secs(60)), 0);
    let log = q.run("q-log", &[&id]).ok().stdout.clone();
    assert!(log.contains("QDIR=postgres://q@"), "the job knows its queue: {log}");
    assert!(!log.contains(PW), "the job's environment holds the password:\n{log}");
    // The recorded environments, and what the tools printed.
    let mut db = admin();
    for row in db.query(&format!("SELECT env::text FROM \"{schema}\".env"), &[]).unwrap() {
        assert!(!row.get::<_, String>(0).contains(PW), "a recorded environment holds the password");
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(p.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains(PW), "{stderr}");
    // A message about this queue: the server on a port where none listens.
    let port = pgserver::server().url.rsplit(':').next().unwrap().split('/').next().unwrap().to_owned();
    let mut bad = QDir::new();
    bad.queue = PathBuf::from(q.queue.to_str().unwrap().replace(&format!(":{port}/"), ":9/"));
    let o = bad.run("q-ls", &[]);
    assert_ne!(o.code(), 0);
    assert!(o.stderr.contains("***"), "the password is shown masked: {}", o.stderr);
    assert!(!o.stderr.contains(PW) && !o.stdout.contains(PW), "{}", o.stderr);
    let help = q.run("q-ls", &["--help"]).stdout;
    assert!(!help.contains(PW), "--help shows Q_DIR's value");
}

/// The server crashes and comes back while a supervisor drains the queue:
/// every host's connections are made again, nothing is lost, and no job is
/// completed twice.
#[test]
fn serial_a_server_restart_mid_drain_loses_nothing() {
    let cluster = pgserver::Cluster::private();
    let mut q = QDir::new();
    q.queue = PathBuf::from(format!("{}?schema=restart&queue=drain", cluster.url()));
    let effects = q.path().join("effects");
    let lines: String = (0..150).map(|i| format!("{{\"sh\":\"echo $Q_JOB_ID >> {} # {i}\"}}\n", effects.display())).collect();
    let ids: Vec<String> = q.run_in("q-push", &[], &lines).ok().lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 150);
    let mut sup = q.cmd("q-supervise");
    sup.args(["-j", "2", "--exit-on-idle", "--lease", "2s", "--restart-base", "100ms"]);
    sup.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut p = Proc::spawn(sup);
    let ran = || std::fs::read_to_string(&effects).map(|s| s.lines().count()).unwrap_or(0);
    wait_until("some jobs ran", Duration::from_secs(60), || ran() >= 30);
    cluster.restart();
    let before = ran();
    assert!(before < 150, "the restart came mid-drain ({before} of 150 had run)");
    assert_eq!(p.wait_for(Duration::from_secs(120)), 0, "every job ended done");
    let c = q.run("q-ls", &["--counts"]).ok().lines().remove(0);
    assert_eq!(c["done"].as_u64(), Some(150), "nothing lost: {c}");
    let mut db = postgres::Client::connect(&cluster.url(), postgres::NoTls).unwrap();
    let twice: i64 = db
        .query_one("SELECT count(*) FROM (SELECT id FROM restart.attempt WHERE result->>'state' = 'done' GROUP BY id HAVING count(*) > 1) twice", &[])
        .unwrap()
        .get(0);
    assert_eq!(twice, 0, "a job completed twice");
    let done: i64 = db.query_one("SELECT count(*) FROM restart.attempt WHERE result->>'state' = 'done'", &[]).unwrap().get(0);
    assert_eq!(done, 150, "one done result per job");
    let effects = std::fs::read_to_string(&effects).unwrap();
    for id in &ids {
        assert!(effects.lines().any(|l| l == id), "job {id} never ran");
    }
}

/// TLS as libpq's `sslmode` says, against a server that takes TLS
/// connections only: `verify-full` with the right authority works, with
/// another one it is refused; `disable` is refused by the server; the
/// default (`prefer`) encrypts.
#[test]
fn serial_tls_by_sslmode() {
    let (cluster, certs) = pgserver::Cluster::private_tls();
    let at = |params: &str| {
        let mut q = QDir::new();
        q.queue = PathBuf::from(format!("{}?schema=tls&{params}", cluster.url()));
        q
    };
    let ca = certs.join("ca.pem");
    let good = at(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let id = good.push(&["--", "true"]);
    assert_eq!(good.job(&id)["state"], "pending");
    assert_eq!(at("").job(&id)["state"], "pending", "prefer: TLS, unchecked");
    assert_eq!(at("sslmode=require").job(&id)["state"], "pending");
    // Another authority: the server's certificate is not trusted.
    let other = certs.join("other.pem");
    let o = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "/dev/null", "-days", "1", "-subj", "/CN=other"])
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = at(&format!("sslmode=verify-full&sslrootcert={}", other.display())).run("q-ls", &[]);
    assert_eq!(o.code(), 75, "an untrusted server is not used: {}", o.stderr);
    assert!(o.stderr.contains("cannot reach"), "{}", o.stderr);
    let o = at("sslmode=disable").run("q-ls", &[]);
    assert_eq!(o.code(), 75, "the server takes TLS only: {}", o.stderr);
    let o = at("sslmode=verify-full").run("q-ls", &[]);
    assert_eq!(o.code(), 65, "verify-full needs an authority: {}", o.stderr);
    assert!(o.stderr.contains("sslrootcert"), "{}", o.stderr);
    let o = at("sslmode=sometimes").run("q-ls", &[]);
    assert_eq!(o.code(), 65, "{}", o.stderr);
}

/// The kill -9 storm on PostgreSQL: pushers, two supervisor launchers
/// racing for the host's lock, and a chaos loop that SIGKILLs pushers,
/// supervisors, workers and jobs at random (only processes of the trees we
/// started). Then everything is killed, a supervisor drains, and the
/// history is checked in the database: every acknowledged push is there,
/// every job ended, none was completed twice, and each done job ran.
/// `Q_TORTURE_SECS` makes it longer.
#[test]
fn serial_kill_storm_on_postgres() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let secs: u64 = std::env::var("Q_TORTURE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let (q, schema) = pg_queue(None);
    let q = Arc::new(q);
    let effects = q.path().join("effects");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let kids = Arc::new(Mutex::new(BTreeSet::<i32>::new()));
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let rng = Arc::new(Mutex::new(seed | 1));
    let rand = {
        let rng = Arc::clone(&rng);
        move |n: u64| {
            let mut x = rng.lock().unwrap();
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x % n.max(1)
        }
    };
    let spawn_kid = |c: std::process::Command, kids: &Mutex<BTreeSet<i32>>| {
        let mut c = c;
        let child = c.spawn().expect("spawn");
        kids.lock().unwrap().insert(child.id() as i32);
        child
    };
    let mut threads = Vec::new();
    for k in 0..2 {
        // Pushers: batches of 1-5 jobs; what a pusher printed is acknowledged.
        let (q, stop, acked, kids, effects, rand) = (Arc::clone(&q), Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&kids), effects.clone(), rand.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let lines: String = (0..1 + rand(5))
                    .map(|_| {
                        n += 1;
                        format!("{{\"sh\":\"echo start $Q_JOB_ID >> {e}; sleep 0.0{}; echo end $Q_JOB_ID >> {e}\",\"name\":\"p{k}-{n}\"}}\n", rand(9), e = effects.display())
                    })
                    .collect();
                let mut c = q.cmd("q-push");
                c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null());
                let mut child = spawn_kid(c, &kids);
                let pid = child.id() as i32;
                let mut sin = child.stdin.take().unwrap();
                let _ = std::io::Write::write_all(&mut sin, lines.as_bytes());
                drop(sin);
                let out = child.wait_with_output().unwrap();
                kids.lock().unwrap().remove(&pid);
                for l in String::from_utf8_lossy(&out.stdout).lines() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
                        && let Some(id) = v["id"].as_str()
                    {
                        acked.lock().unwrap().insert(id.to_owned());
                    }
                }
            }
        }));
    }
    for _ in 0..2 {
        // Supervisor launchers: one wins the host's lock, the other exits 75.
        let (q, stop, kids) = (Arc::clone(&q), Arc::clone(&stop), Arc::clone(&kids));
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut c = q.cmd("q-supervise");
                c.args(["-j", "2", "--lease", "2s", "--restart-base", "50ms", "--grace", "1s"]);
                c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
                let mut child = spawn_kid(c, &kids);
                let pid = child.id() as i32;
                while !stop.load(Ordering::Relaxed) && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if stop.load(Ordering::Relaxed) {
                    let _ = child.kill();
                }
                let _ = child.wait();
                kids.lock().unwrap().remove(&pid);
            }
        }));
    }
    // Chaos: SIGKILL a process of one of our trees.
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut kills = 0;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50 + rand(200)));
        let roots: Vec<i32> = kids.lock().unwrap().iter().copied().collect();
        let tree = descendants(&roots);
        if tree.is_empty() {
            continue;
        }
        let victim = tree[rand(tree.len() as u64) as usize];
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGKILL);
        kills += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // Whatever is left of the trees (the watchdogs clean up after their supervisors).
    wait_until("every process of the storm is gone", Duration::from_secs(30), || {
        let roots: Vec<i32> = kids.lock().unwrap().iter().copied().collect();
        let tree = descendants(&roots);
        for p in &tree {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::Signal::SIGKILL);
        }
        tree.is_empty()
    });
    // Recovery: one supervisor drains (its reaper requeues the dead owners' claims).
    let o = q.run("q-supervise", &["-j", "2", "--exit-on-idle", "--lease", "2s"]);
    assert!(matches!(o.code(), 0 | 1), "{}", o.stderr);
    let mut db = admin();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "the storm pushed too little to mean anything: {}", acked.len());
    let rows = db.query(&format!("SELECT id, state FROM \"{schema}\".job"), &[]).unwrap();
    let states: std::collections::BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut problems = Vec::new();
    for id in &acked {
        match states.get(id).map(String::as_str) {
            None => problems.push(format!("acknowledged job {id} is lost")),
            Some("done" | "dead") => {}
            Some(s) => problems.push(format!("job {id} is still {s} after the drain")),
        }
    }
    let twice = db
        .query(&format!("SELECT id FROM \"{schema}\".attempt WHERE result->>'state' = 'done' GROUP BY id HAVING count(*) > 1"), &[])
        .unwrap();
    for r in twice {
        problems.push(format!("job {} completed twice", r.get::<_, String>(0)));
    }
    let effects = std::fs::read_to_string(&effects).unwrap_or_default();
    let ended: BTreeSet<&str> = effects.lines().filter_map(|l| l.strip_prefix("end ")).collect();
    for (id, st) in &states {
        if st == "done" && !ended.contains(id.as_str()) {
            problems.push(format!("job {id} is done but never ran to its end"));
        }
        if st == "dead" {
            // A job that exits 0 dies only of the interruption bound, or of
            // the chaos killing its own process (signal 9: its failure).
            let rec: serde_json::Value = db
                .query_one(&format!("SELECT result FROM \"{schema}\".attempt WHERE id = $1 AND result IS NOT NULL ORDER BY attempt DESC LIMIT 1"), &[id])
                .unwrap()
                .get(0);
            if !["lease-expired", "worker-shutdown", "signal"].contains(&rec["reason"].as_str().unwrap_or("")) {
                problems.push(format!("job {id} is dead for {}", rec["reason"]));
            }
        }
    }
    let done = states.values().filter(|s| *s == "done").count();
    eprintln!("kill storm on postgres: {secs} s, {} acknowledged, {done} done, {kills} kills, seed {seed}", acked.len());
    assert!(problems.is_empty(), "seed {seed}:\n  {}", problems.join("\n  "));
    assert!(kills > 10 && done > 10, "the storm must both kill and complete: {kills} kills, {done} done");
}

/// Every live process below these roots (the roots included).
fn descendants(roots: &[i32]) -> Vec<i32> {
    let mut parent: Vec<(i32, i32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let mut f = rest.split(' ');
        let state = f.next().unwrap_or("");
        let ppid: i32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if state != "Z" {
            parent.push((pid, ppid));
        }
    }
    let mut out: Vec<i32> = roots.iter().copied().filter(|r| parent.iter().any(|(p, _)| p == r)).collect();
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        for (c, pp) in &parent {
            if *pp == p && !out.contains(c) {
                out.push(*c);
            }
        }
        i += 1;
    }
    out
}

/// q-gc warns when an old transaction keeps the vacuum from the queue's
/// dead rows (the age lowered for the test), and not once it ended.
#[test]
fn serial_gc_warns_of_an_old_transaction() {
    let cluster = pgserver::Cluster::private();
    let mut q = QDir::new();
    q.queue = PathBuf::from(format!("{}?schema=health", cluster.url()));
    q.push(&["--", "true"]);
    let gc = |q: &QDir, quiet: bool| {
        let mut c = q.cmd("q-gc");
        c.env("Q_PG_OLD_XACT_MS", "300");
        if quiet {
            c.arg("-q");
        }
        run_cmd(c, None)
    };
    let o = gc(&q, false);
    o.ok();
    assert!(!o.stderr.contains("warning"), "nothing to warn of yet: {}", o.stderr);
    let mut other = postgres::Client::connect(&cluster.url(), postgres::NoTls).unwrap();
    let mut tx = other.transaction().unwrap();
    tx.execute("SELECT count(*) FROM health.job", &[]).unwrap();
    let since = std::time::Instant::now();
    wait_until("the transaction is old", Duration::from_secs(10), || since.elapsed() >= Duration::from_millis(400));
    let o = gc(&q, false);
    o.ok();
    assert!(o.stderr.contains("q-gc: warning: a transaction open for"), "{}", o.stderr);
    assert!(gc(&q, true).stderr.is_empty(), "-q: errors only");
    tx.commit().unwrap();
    let o = gc(&q, false);
    assert!(!o.stderr.contains("warning"), "it ended: {}", o.stderr);
}

/// A pusher's recorded environment is readable by its own role only: a
/// worker of another role cannot load it (the job does not run with it),
/// nor can that role select it.
#[test]
fn serial_recorded_environments_are_their_pushers_own() {
    let cluster = pgserver::Cluster::private();
    let mut admin = postgres::Client::connect(&cluster.url(), postgres::NoTls).unwrap();
    admin.batch_execute("CREATE ROLE ann LOGIN; CREATE ROLE bob LOGIN; GRANT CREATE ON DATABASE postgres TO ann").unwrap();
    let at = |role: &str| {
        let mut q = QDir::new();
        q.queue = PathBuf::from(format!("{}?schema=shared", cluster.url().replacen("postgres://q@", &format!("postgres://{role}@"), 1)));
        q
    };
    let (ann, bob) = (at("ann"), at("bob"));
    let push = |q: &QDir| {
        let mut c = q.cmd("q-push");
        c.args(["--", "sh", "-c", "echo \"secret=$SECRET_X\""]).env("SECRET_X", "ann-only-4711");
        let o = run_cmd(c, None);
        o.ok();
        o.lines()[0]["id"].as_str().unwrap().to_owned()
    };
    let first = push(&ann);
    admin
        .batch_execute("GRANT USAGE ON SCHEMA shared TO bob; GRANT ALL ON ALL TABLES IN SCHEMA shared TO bob; GRANT ALL ON ALL SEQUENCES IN SCHEMA shared TO bob")
        .unwrap();
    // `--after last` is a role's own: bob pushed nothing.
    let o = bob.run("q-push", &["--after", "last", "--", "true"]);
    assert_eq!(o.code(), 66, "{o:?}");
    let mut as_bob = postgres::Client::connect(&cluster.url().replacen("postgres://q@", "postgres://bob@", 1), postgres::NoTls).unwrap();
    let seen: i64 = as_bob.query_one("SELECT count(*) FROM shared.env", &[]).unwrap().get(0);
    assert_eq!(seen, 0, "bob sees none of ann's recorded environments");
    // bob's worker takes ann's job: it cannot run in ann's environment.
    bob.run("q-run", &["--exit-on-idle"]);
    let j = ann.job(&first);
    assert_eq!(j["state"], "dead", "{j}");
    assert_eq!(j["result"]["reason"], "spawn-failed", "{j}");
    assert!(!ann.run("q-log", &[&first]).stdout.contains("ann-only"), "the secret never reached bob's worker");
    // ann's own worker runs ann's job in ann's environment.
    let second = push(&ann);
    ann.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(ann.job(&second)["state"], "done");
    assert_eq!(ann.run("q-log", &[&second]).ok().stdout, "secret=ann-only-4711\n");
}

/// The schema: hosts racing the first push all succeed (an advisory lock
/// orders them); a role that may not create it is told what to ask for
/// (77); a newer schema than this q knows is refused (78).
#[test]
fn the_schema_is_made_once_and_checked() {
    let (q, schema) = pg_queue(None);
    let racers: Vec<std::process::Child> = (0..4)
        .map(|i| {
            let mut c = q.cmd("q-push");
            c.args(["--name", &format!("racer{i}"), "--", "true"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for r in racers {
        let o = r.wait_with_output().unwrap();
        assert!(o.status.success(), "a racing first push failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(q.run("q-ls", &["--counts"]).ok().lines()[0]["ready"], 4);
    // A role without CREATE on the database.
    let mut db = admin();
    let role = format!("nocreate_{}", &schema[2..12]);
    db.batch_execute(&format!("CREATE ROLE {role} LOGIN")).unwrap();
    let mut other = QDir::new();
    other.queue = PathBuf::from(format!("{}?schema=s_{role}", pgserver::server().url.replacen("postgres://q@", &format!("postgres://{role}@"), 1)));
    let o = other.run("q-push", &["--", "true"]);
    assert_eq!(o.code(), 77, "{}", o.stderr);
    assert!(o.stderr.contains("GRANT CREATE ON DATABASE"), "says what to ask for: {}", o.stderr);
    // A newer schema.
    db.batch_execute(&format!("UPDATE \"{schema}\".meta SET v = '99' WHERE k = 'version'")).unwrap();
    let o = q.run("q-ls", &[]);
    assert_eq!(o.code(), 78, "{}", o.stderr);
    assert!(o.stderr.contains("upgrade q"), "{}", o.stderr);
}

/// Ids people type and `--after last` on PostgreSQL, on a schema of
/// version 1 that the first tool to open it upgrades (jobs pushed before
/// have no recorded pusher, so `--after last` does not see them).
#[test]
fn ids_and_after_last_on_an_upgraded_schema() {
    let (q, schema) = pg_queue(None);
    let old = q.push(&["--name", "old", "--", "true"]);
    let waits = q.push(&["--after", &old, "--", "true"]);
    let o = q.run_in("q-push", &[], "{\"cmd\": [\"true\"], \"needs\": {\"mem\": 4, \"gpu\": 2}, \"group\": \"render\"}\n");
    let gpu = o.ok().lines()[0]["id"].as_str().unwrap().to_owned();
    // Back to version 1, as an older q made it.
    let mut db = admin();
    db.batch_execute(&format!(
        "DROP INDEX \"{schema}\".job_id_prefix, \"{schema}\".job_id_suffix, \"{schema}\".job_name, \"{schema}\".job_pusher, \"{schema}\".job_class_ready;
         ALTER TABLE \"{schema}\".job DROP COLUMN pusher, DROP COLUMN class, DROP COLUMN waited;
         DROP FUNCTION \"{schema}\".class_of;
         ALTER TABLE \"{schema}\".attempt DROP COLUMN requests;
         DROP TABLE \"{schema}\".supervisor;
         UPDATE \"{schema}\".meta SET v = '1' WHERE k = 'version'"
    ))
    .unwrap();
    // A reader opens it: upgraded.
    assert_eq!(q.run("q-ls", &["--json", &old[20..]]).ok().lines()[0]["id"], old.as_str());
    let v: String = db.query_one(&format!("SELECT v FROM \"{schema}\".meta WHERE k = 'version'"), &[]).unwrap().get(0);
    assert_eq!(v, "5");
    // Version 3 marks the jobs others wait on (their settle moves them).
    let marked: Vec<String> = db
        .query(&format!("SELECT id FROM \"{schema}\".job WHERE waited"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(marked, vec![old.clone()], "{waits} waits on {old}");
    let indexes: i64 = db
        .query_one("SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname IN ('job_id_prefix','job_id_suffix','job_name','job_pusher','job_class_ready')", &[&schema])
        .unwrap()
        .get(0);
    assert_eq!(indexes, 5);
    // The class of a job pushed before, as the directory backend names it.
    let class: String = db.query_one(&format!("SELECT class FROM \"{schema}\".job WHERE id = $1"), &[&gpu]).unwrap().get(0);
    assert_eq!(class, "gpu=2,mem=4@render");
    let o = q.run("q-push", &["--after", "last", "--", "true"]);
    o.expect_code(66);
    assert!(o.stderr.contains("--after last"), "a job of version 1 has no pusher: {}", o.stderr);
    let a = q.push(&["--name", "build", "--", "true"]);
    let b = q.push(&["--after", "last", "--", "true"]);
    assert_eq!(q.job(&b)["after"], serde_json::json!([a]));
    // A suffix, a prefix, a name; ambiguous names list their jobs.
    q.run("q-ctl", &["hold", &a[20..]]).ok();
    assert_eq!(q.state(&a), "held");
    q.run("q-ctl", &["release", "build"]).ok();
    q.push(&["--name", "build", "--", "true"]);
    let o = q.run("q-ctl", &["cancel", "build"]);
    o.expect_code(66);
    assert!(o.stderr.contains("\"build\" names 2 jobs") && o.stderr.contains(&a), "{}", o.stderr);
    q.run_in("q-ctl", &["cancel"], &format!("{{\"id\":\"{}\"}}\n", &a[20..])).expect_code(66);
    assert_eq!(q.state(&a), "pending", "JSON ids are exact only");
    q.run("q-run", &["--slots", "gpu=2,mem=4", "--limit", "render=1", "--exit-on-idle"]).ok();
    assert_eq!(q.state(&gpu), "done", "a worker with the slots claims it");
}

/// `q top` on a PostgreSQL queue served by a supervisor started elsewhere:
/// the same view, through the same backend operations, and the URL's
/// password is not on the screen.
#[test]
fn serial_q_top_on_postgres() {
    let (q, _) = pg_queue(Some("top-s3cret"));
    let release = q.file("release");
    let started = q.file("started");
    for n in ["one", "two"] {
        q.push(&["--name", n, "--priority", "9", "--", "true"]);
    }
    let long = q.push(&["--name", "long", "--sh", &format!("touch {}; while [ ! -e {} ]; do sleep 0.05; done", started.display(), release.display())]);
    q.push(&["--name", "next", "--priority", "-1", "--", "true"]);
    let mut sup = q.cmd("q-supervise");
    sup.args(["-j", "1", "-q"]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut sup = Proc::spawn(sup);
    wait_until("the long job runs", Duration::from_secs(60), || started.exists());
    let mut s = Screen::start(&q, "q", &["top"], (120, 30), &[]);
    let rows = s.wait_for("the view of the database queue", Duration::from_secs(30), |rows, _| {
        let text = rows.join("\n");
        ["RUNNING 1", "long", "ENDED 2", "one", "two", "1 ready", "1 running", "2 done", "postgres://"].iter().all(|w| text.contains(w))
    });
    assert!(!rows.join("\n").contains("top-s3cret"), "the password is not shown:\n{}", rows.join("\n"));
    let row = rows.iter().find(|r| r.ends_with("long")).unwrap();
    assert!(row.contains(&long[long.len() - 6..]), "{row}");
    s.keys(b"q");
    assert_eq!(s.wait_exit(Duration::from_secs(30)), 0);
    assert!(s.cooked());
    std::fs::write(&release, "").unwrap();
    wait_until("the long job ends", Duration::from_secs(60), || q.state(&long) == "done");
    sup.signal(nix::sys::signal::SIGTERM);
    sup.wait_for(Duration::from_secs(60));
}

/// A queue moved dir → PostgreSQL → dir with `q-ctl export | q-ctl
/// import` keeps every field of every pending, waiting and held job (ids,
/// fields, due times, priorities, counters, recorded environments); an
/// import of ids the queue has is refused whole (73); the moved jobs run.
#[test]
fn export_and_import_round_trip_dir_postgres_dir() {
    let a = QDir::new();
    let mut c = a.cmd("q-push");
    c.args(["--name", "envy", "--env-from", "pusher", "--", "sh", "-c", "echo \"moved=$MOVED_VAR\""]).env("MOVED_VAR", "kept-4711");
    let envy = run_cmd(c, None).ok().lines()[0]["id"].as_str().unwrap().to_owned();
    let later = a.push(&["--name", "later", "--priority", "7", "--at", "2099-01-01T00:00:00Z", "--tag", "t1", "--timeout", "9s", "--attempts", "4", "--", "true"]);
    let waiting = a.push(&["--after", &later, "--key", "k-move", "--", "true"]);
    let held = a.push(&["--name", "held", "--", "true"]);
    a.run("q-ctl", &["hold", &held]).ok();
    let failing = a.push(&["--attempts", "3", "--sh", "exit 3"]);
    a.run("q-ctl", &["hold", &envy]).ok();
    a.run("q-run", &["--once"]).expect_code(3); // `failing`: attempt 1 failed, retried later
    a.run("q-ctl", &["release", &envy]).ok();
    let exported = |q: &QDir| -> Vec<Value> {
        let mut v = q.run("q-ctl", &["export"]).ok().lines();
        v.sort_by(|x, y| x["id"].as_str().cmp(&y["id"].as_str()));
        v
    };
    let from_a = exported(&a);
    assert_eq!(from_a.len(), 5, "{from_a:?}");
    let f = from_a.iter().find(|r| r["id"] == failing.as_str()).unwrap();
    assert_eq!((f["attempt"].as_u64(), f["failures"].as_u64()), (Some(1), Some(1)), "{f}");
    assert_eq!(from_a.iter().find(|r| r["id"] == waiting.as_str()).unwrap()["state"], "waiting");
    assert_eq!(from_a.iter().find(|r| r["id"] == held.as_str()).unwrap()["state"], "held");
    assert_eq!(from_a.iter().find(|r| r["id"] == envy.as_str()).unwrap()["env"]["MOVED_VAR"], "kept-4711");
    let input: String = from_a.iter().map(|r| format!("{r}\n")).collect();

    let (p, _) = pg_queue(None);
    let o = p.run_in("q-ctl", &["import", "--batch", "2"], &input);
    o.ok();
    assert_eq!(o.lines().len(), 5);
    assert_eq!(exported(&p), from_a, "dir → postgres keeps every field");
    let o = p.run_in("q-ctl", &["import"], &input);
    assert_eq!(o.code(), 73, "ids it has are refused: {}", o.stderr);
    assert!(o.stderr.contains("already"), "{}", o.stderr);

    let b = QDir::new();
    b.run_in("q-ctl", &["import"], &exported(&p).iter().map(|r| format!("{r}\n")).collect::<String>()).ok();
    assert_eq!(exported(&b), from_a, "postgres → dir keeps every field");
    assert_eq!(b.job(&waiting)["state"], "waiting");
    // The moved jobs run, in their recorded environment.
    b.run("q-ctl", &["hold", &failing]).ok();
    b.run("q-run", &["--once"]).ok();
    assert_eq!(b.job(&envy)["state"], "done");
    assert_eq!(b.run("q-log", &[&envy]).ok().stdout, "moved=kept-4711\n");
    // Bad input: nothing imported.
    let c = QDir::new();
    let o = c.run_in("q-ctl", &["import"], &format!("{}\nnot json\n", from_a[0]));
    assert_eq!(o.code(), 65, "{}", o.stderr);
    assert!(c.run("q-ctl", &["export"]).stdout.is_empty(), "nothing of a bad input is imported");
}

/// Reaching a job on PostgreSQL: q-ctl signal and restart through the
/// attempt's requests, set on a queued job (its key too), usage in q-ls.
#[test]
fn serial_reach_a_job_on_postgres() {
    let (q, _) = pg_queue(None);
    let m = q.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let script = format!("trap 'echo x >> {m}/usr1.$Q_ATTEMPT' USR1; echo $$ > {m}/leader.$Q_ATTEMPT; while :; do sleep 0.05; done", m = m.display());
    let id = q.push(&["--sh", &script]);
    let held = q.push(&["--", "true"]);
    q.run("q-ctl", &["hold", &held]).ok();
    let o = q.run("q-ctl", &["set", &held, "--priority", "4", "--name", "edited"]);
    o.ok();
    assert_eq!(o.lines()[0]["changed"], serde_json::json!(["name", "priority"]));
    let j = q.job(&held);
    assert_eq!((j["state"].as_str(), j["priority"].as_i64(), j["name"].as_str()), (Some("held"), Some(4), Some("edited")), "{j}");
    // A key another unfinished job holds is refused, naming it; a changed
    // key frees the old one.
    let keyed = q.push(&["--key", "k1", "--", "true"]);
    let o = q.run("q-ctl", &["set", &held, "--key", "k1"]);
    o.expect_code(75);
    assert!(o.stderr.contains(&format!("\"k1\" is held by job {keyed} (pending)")), "{}", o.stderr);
    q.run("q-ctl", &["set", &keyed, "--key", "k2"]).ok();
    let deduped = |key: &str| {
        let o = q.run("q-push", &["--key", key, "--", "true"]);
        (o.lines()[0]["id"].as_str().unwrap().to_owned(), o.lines()[0]["deduped"].as_bool().unwrap())
    };
    assert_eq!(deduped("k2"), (keyed.clone(), true));
    assert!(!deduped("k1").1, "k1 is free");
    let mut c = q.cmd("q-run");
    c.args(["--exit-on-idle"]).stdout(std::process::Stdio::null());
    let mut worker = Proc::spawn(c);
    let within = Duration::from_secs(30);
    wait_until("attempt 1 started", within, || std::fs::read_to_string(m.join("leader.1")).is_ok_and(|s| s.ends_with('\n')));
    q.run("q-ctl", &["signal", &id, "USR1"]).ok();
    wait_until("USR1 caught", within, || m.join("usr1.1").exists());
    q.run("q-ctl", &["restart", &id]).ok();
    wait_until("attempt 2 started", within, || std::fs::read_to_string(m.join("leader.2")).is_ok_and(|s| s.ends_with('\n')));
    let j = q.job(&id);
    assert_eq!((j["attempt"].as_u64(), j["failures"].as_u64(), j["result"]["reason"].as_str()), (Some(2), Some(0), Some("restarted")), "{j}");
    assert_eq!(j["usage"]["attempts"], 1, "{j}");
    q.run("q-ctl", &["cancel", &id]).ok();
    assert_eq!(worker.wait_for(within), 0);
    assert_eq!(q.job(&id)["state"], "canceled");
}

/// The server ends a worker's session while a statement of it waits (as a
/// fast shutdown ends every session: SQLSTATE 57P01 in reply to the
/// statement, not a closed socket): the statement did not commit, so the
/// worker makes its connection again and runs it again. Here a statement
/// of the worker whose job has finished (its settle, or its heartbeat)
/// waits on the job's row, which the test holds; that session is ended;
/// the job still ends done, in one attempt, and the worker says nothing.
#[test]
fn serial_a_session_the_server_ends_mid_statement_is_made_again() {
    let (q, schema) = pg_queue(None);
    let release = q.file("release");
    let id = q.push(&["--sh", &format!("while [ ! -e {} ]; do sleep 0.05; done", release.display())]);
    let mut c = q.cmd("q-run");
    c.args(["--exit-on-idle", "--lease", "60s"]).stdout(Stdio::piped());
    let mut worker = Proc::spawn(c);
    let within = Duration::from_secs(30);
    wait_until("the job runs", within, || q.state(&id) == "running");
    let mut holder = admin();
    let mut tx = holder.transaction().unwrap();
    tx.query(&format!("SELECT 1 FROM \"{schema}\".job WHERE id = $1 FOR UPDATE"), &[&id]).unwrap();
    std::fs::write(&release, "").unwrap();
    let mut spy = admin();
    let waiting = format!("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%{schema}%'");
    wait_until("the worker's settle waits on the job's row", within, || !spy.query(&waiting, &[]).unwrap().is_empty());
    let ended = spy.query(&format!("SELECT pg_terminate_backend(pid) FROM ({waiting}) w"), &[]).unwrap();
    assert!(!ended.is_empty() && ended.iter().all(|r| r.get::<_, bool>(0)), "a waiting session was ended");
    tx.rollback().unwrap();
    assert_eq!(worker.wait_for(Duration::from_secs(60)), 0, "the worker");
    let results = parse_lines(&worker.stdout());
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!((results[0]["state"].as_str(), results[0]["reason"].as_str()), (Some("done"), Some("ok")), "{results:?}");
    let j = q.job(&id);
    assert_eq!((j["state"].as_str(), j["attempt"].as_u64()), (Some("done"), Some(1)), "{j}");
}

/// Slots and group limits on PostgreSQL: the effects log of the directory
/// scenario (no slot runs two jobs, the group limit holds, the gpu:2 job is
/// not starved), claims judged by the same rule in the database's order.
#[test]
fn serial_slots_on_postgres() {
    let (q, _) = pg_queue(None);
    crate::slots::never_shared_and_not_starved(&q);
}

/// A server that refuses the settle's writes for a while (as a full disk
/// does: SQLSTATE 53100), not a lost connection: the worker keeps the
/// result and tries again while its lease lasts, and when the server takes
/// writes again the job ends done in its first attempt, once, with no
/// wait for the lease to run out.
#[test]
fn serial_a_refused_settle_is_tried_again_while_the_lease_lasts() {
    let (q, schema) = pg_queue(None);
    let id = q.push(&["--", "true"]);
    let mut db = admin();
    db.batch_execute(&format!(
        "CREATE FUNCTION \"{schema}\".full_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$;
         CREATE TRIGGER full_disk BEFORE UPDATE ON \"{schema}\".job FOR EACH ROW WHEN (NEW.state = 'done') EXECUTE FUNCTION \"{schema}\".full_disk()"
    ))
    .unwrap();
    let err = q.path().join("run.err");
    let mut run = q.cmd("q-run");
    run.args(["--exit-on-idle", "--lease", "60s"]);
    run.stdout(std::process::Stdio::piped()).stderr(std::fs::File::create(&err).unwrap());
    let mut p = Proc::spawn(run);
    wait_until("the worker says it will try again", Duration::from_secs(30), || {
        std::fs::read_to_string(&err).unwrap_or_default().contains("trying again while its lease lasts")
    });
    assert_eq!(q.state(&id), "running", "nothing recorded while the server refuses");
    db.batch_execute(&format!("DROP TRIGGER full_disk ON \"{schema}\".job")).unwrap();
    assert_eq!(p.wait_for(Duration::from_secs(30)), 0, "{}", std::fs::read_to_string(&err).unwrap_or_default());
    let out = parse_lines(&p.stdout());
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0]["state"].as_str(), out[0]["attempt"].as_u64()), (Some("done"), Some(1)), "{out:?}");
    assert_eq!(q.state(&id), "done");
    let attempts: i64 = db.query_one(&format!("SELECT count(*) FROM \"{schema}\".attempt WHERE id = $1"), &[&id]).unwrap().get(0);
    assert_eq!(attempts, 1, "no second attempt");
}

/// `q-ctl workers N` on PostgreSQL: the supervisor is reached through its
/// row (from any host), and the directory scenario holds: more workers
/// start at once, fewer stop no job.
#[test]
fn serial_workers_change_on_postgres() {
    let (q, schema) = pg_queue(None);
    crate::live::workers_rise_and_fall(&q);
    let rows: i64 = admin().query_one(&format!("SELECT count(*) FROM \"{schema}\".supervisor"), &[]).unwrap().get(0);
    assert_eq!(rows, 0, "the supervisor took its row with it");
}

/// q-ls on PostgreSQL, whose listing is a few queries for all its jobs:
/// every filter, ids named on the command line (one twice), a claimed job
/// with its lease, the table, and by default only the 20 most recently
/// finished jobs (by when they ended, not when they were pushed).
#[test]
fn q_ls_lists_and_filters_on_postgres() {
    let (q, _) = pg_queue(None);
    // Pushed first, canceled last: the 20 shown by default.
    let recent: Vec<String> = (0..20).map(|_| q.push(&["--", "true"])).collect();
    let old: Vec<String> = (0..2).map(|_| q.push(&["--", "true"])).collect();
    for id in &old {
        q.run("q-ctl", &["cancel", id]).ok();
    }
    std::thread::sleep(Duration::from_millis(50));
    q.run_in("q-ctl", &["cancel"], &recent.join("\n")).ok();
    let claimed = q.push(&["--priority", "9", "--name", "claimed", "--", "true"]);
    assert_eq!(q.run("q-claim", &[]).ok().lines()[0]["id"], claimed.as_str());
    let a1 = q.push(&["--name", "a", "--tag", "x", "--group", "g1", "--", "true"]);
    let a2 = q.push(&["--name", "a", "--tag", "x", "--tag", "y", "--", "true"]);
    let b = q.push(&["--name", "b", "--group", "g2", "--delay", "1h", "--", "true"]);
    let held = q.push(&["--", "true"]);
    q.run("q-ctl", &["hold", &held]).ok();
    let waiting = q.push(&["--after", &a1, "--", "true"]);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = q.run("q-ls", &[&["--json"], args].concat()).ok().lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
        v.sort();
        v
    };
    let sorted = |v: &[&String]| -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|s| (*s).clone()).collect();
        v.sort();
        v
    };
    let unfinished = [&claimed, &a1, &a2, &b, &held, &waiting];
    assert_eq!(ids(&[]), sorted(&unfinished.iter().copied().chain(&recent).collect::<Vec<_>>()), "the unfinished jobs and the 20 that ended last");
    assert_eq!(ids(&["--all"]).len(), 28);
    assert_eq!(ids(&["--state", "canceled"]), sorted(&recent.iter().chain(&old).collect::<Vec<_>>()));
    assert_eq!(ids(&["--state", "pending"]), sorted(&[&a1, &a2, &b]));
    assert_eq!(ids(&["--state", "waiting", "--state", "held"]), sorted(&[&held, &waiting]));
    assert_eq!(ids(&["--tag", "x"]), sorted(&[&a1, &a2]));
    assert_eq!(ids(&["--tag", "x", "--tag", "y"]), sorted(&[&a2]));
    assert_eq!(ids(&["--name", "a", "--name", "b"]), sorted(&[&a1, &a2, &b]));
    assert_eq!(ids(&["--group", "g1", "--group", "g2"]), sorted(&[&a1, &b]));
    assert_eq!(ids(&["--since", "1h", "--name", "claimed"]), sorted(&[&claimed]));
    assert_eq!(ids(&["--since", &(q_queue::time::now_ms() / 1000 + 3600).to_string()]), Vec::<String>::new());
    assert_eq!(ids(&[&a2, &old[0], &a2]), sorted(&[&a2, &a2, &old[0]]), "named jobs, finished or not, each time named");
    let c = q.job(&claimed);
    let host = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    assert_eq!((c["state"].as_str(), c["host"].as_str(), c["attempt"].as_u64()), (Some("running"), Some(host.as_str()), Some(1)), "{c}");
    assert!(c["claimed_at"].is_string() && c["worker_id"].is_string(), "{c}");
    let j = q.job(&old[0]);
    assert_eq!((j["state"].as_str(), j["result"]["reason"].as_str(), j["attempt"].as_u64()), (Some("canceled"), Some("canceled"), Some(0)), "{j}");
    let table = q.run("q-ls", &["--table", "--all"]).ok().stdout.clone();
    assert_eq!(table.lines().count(), 29, "a heading and a row per job:\n{table}");
    for id in unfinished.iter().copied().chain(&recent).chain(&old) {
        assert!(table.contains(&id[id.len() - 6..]), "{id} in\n{table}");
    }
}

/// Two pushes whose batches name the same dedupe keys in opposite orders,
/// at the same time, round after round: each takes all its keys' locks in
/// one order before any other, so neither waits on the other forever (the
/// server would end one with a deadlock error), and every key has one job.
#[test]
fn keyed_pushes_in_opposite_orders_both_succeed() {
    let (q, schema) = pg_queue(None);
    for round in 0..6 {
        let keys: Vec<String> = (0..150).map(|i| format!("r{round}-k{i}")).collect();
        let lines = |rev: bool| {
            let mut k = keys.clone();
            if rev {
                k.reverse();
            }
            k.iter().map(|k| format!("{{\"cmd\":[\"true\"],\"key\":\"{k}\"}}\n")).collect::<String>()
        };
        let procs: Vec<(std::process::Child, String)> = [false, true]
            .into_iter()
            .map(|rev| {
                let mut c = q.cmd("q-push");
                c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
                (c.spawn().expect("q-push"), lines(rev))
            })
            .collect();
        // Both inputs written at once (then both waited for): the pushes overlap.
        let go = std::sync::Arc::new(std::sync::Barrier::new(2));
        let children: Vec<std::process::Child> = procs
            .into_iter()
            .map(|(mut child, input)| {
                let mut stdin = child.stdin.take().unwrap();
                let go = std::sync::Arc::clone(&go);
                std::thread::spawn(move || {
                    go.wait();
                    std::io::Write::write_all(&mut stdin, input.as_bytes())
                });
                child
            })
            .collect();
        let outs: Vec<std::process::Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        for o in &outs {
            assert!(o.status.success(), "round {round}: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let rows: i64 = admin().query_one(&format!("SELECT count(*) FROM \"{schema}\".job"), &[]).unwrap().get(0);
    assert_eq!(rows, 6 * 150, "one job per key");
}
