//! Several hosts on one queue, on one machine. A test host is a set of
//! namespaces the test makes itself (`unshare --net --uts --pid --mount
//! --fork --mount-proc`): its own host name, `XDG_STATE_HOME` and `TMPDIR`,
//! and a veth pair whose other end is on a bridge of the root namespace,
//! where the test's PostgreSQL server listens (10.231.N.0/24, a range no
//! interface of the machine uses: nothing leaves it). The hosts reach the
//! server over TCP with a password, as real ones do. A host dies when its
//! pid 1 is SIGKILLed (everything in it dies with it); a partition is its
//! link set down. Every name (bridge, links, host names) is unique to the
//! test, and a guard removes what it made even when the test fails.
//!
//! The tests need root and `unshare`, `nsenter` (util-linux) and `ip`
//! (iproute2); without them they are skipped, but under `CI=true` that is a
//! failure (`.ci/run` installs the tools).

use crate::pg::pgserver;
use crate::util::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

const PASSWORD: &str = "Host-pw-7";

/// May this test make hosts? `false` (after saying why) to skip it; a
/// panic under CI, where a skip would count as a pass.
pub(crate) fn usable(test: &str) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (namespaces and links)".to_owned());
    }
    let in_path = |b: &str| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()));
    for (tool, pkg) in [("unshare", "util-linux"), ("nsenter", "util-linux"), ("ip", "iproute2")] {
        if !in_path(tool) {
            missing.push(format!("{tool} ({pkg})"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("cannot make test hosts: missing {}", missing.join(", "));
    assert!(std::env::var("CI").ok().as_deref() != Some("true"), "{test}: {why} (CI=true: this is a failure, not a skip; .ci/run installs the tools)");
    eprintln!("{test}: skipped: {why}");
    false
}

/// Run a command of the root namespace that must succeed.
fn sh(prog: &str, args: &[&str]) {
    let o = Command::new(prog).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    assert!(o.status.success(), "{prog} {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
}

/// The network, the server and the queue of one test.
pub(crate) struct Lab {
    /// A short name unique to this test (in interface and host names).
    tag: String,
    /// `10.231.N`: the bridge is `.1`, host k is `.(k+2)`.
    prefix: String,
    /// Removed last (declared last): the bridge.
    cluster: pgserver::Cluster,
    /// The queue as the root namespace reaches it (127.0.0.1, no password):
    /// pushes and checks.
    pub q: QDir,
    pub schema: String,
    hosts: usize,
    bridge: Bridge,
}

struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).stderr(Stdio::null()).status();
    }
}

impl Lab {
    pub(crate) fn new() -> Lab {
        let id = q_queue::id::new_id().to_lowercase();
        let tag = id[id.len() - 6..].to_owned();
        // A /24 of 10.231.0.0/16 that no interface here has.
        let used = String::from_utf8(Command::new("ip").args(["-o", "-4", "addr", "show"]).output().expect("ip").stdout).unwrap();
        let seed = tag.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        let n = (0..250).map(|i| 2 + (seed + i * 37) % 250).find(|n| !used.contains(&format!("10.231.{n}."))).expect("a free 10.231.N.0/24");
        let prefix = format!("10.231.{n}");
        let bridge = Bridge(format!("qb{tag}"));
        sh("ip", &["link", "add", &bridge.0, "type", "bridge"]);
        sh("ip", &["addr", "add", &format!("{prefix}.1/24"), "dev", &bridge.0]);
        sh("ip", &["link", "set", &bridge.0, "up"]);
        let cluster = pgserver::Cluster::private_on(&format!("{prefix}.1"), &format!("{prefix}.0/24"));
        let mut admin = postgres::Client::connect(&cluster.url(), postgres::NoTls).unwrap();
        admin.batch_execute(&format!("ALTER ROLE q PASSWORD '{PASSWORD}'")).unwrap();
        let schema = "hosts".to_owned();
        let mut q = QDir::new();
        q.queue = PathBuf::from(format!("{}?schema={schema}&queue=work", cluster.url()));
        Lab { tag, prefix, cluster, q, schema, hosts: 0, bridge }
    }

    /// The queue as a host reaches it: over the bridge, with the password.
    fn host_url(&self) -> String {
        format!("postgres://q:{PASSWORD}@{}.1:{}/postgres?schema={}&queue=work", self.prefix, self.cluster.port, self.schema)
    }

    pub(crate) fn admin(&self) -> postgres::Client {
        postgres::Client::connect(&self.cluster.url(), postgres::NoTls).unwrap()
    }

    /// A new host on the bridge.
    pub(crate) fn host(&mut self) -> Host {
        let k = self.hosts;
        self.hosts += 1;
        let letter = (b'a' + k as u8) as char;
        let name = format!("host-{letter}-{}", self.tag);
        let link = format!("qh{}{k}", self.tag);
        let peer = format!("qp{}{k}", self.tag);
        let dir = tempfile::Builder::new().prefix("qhost").tempdir().unwrap();
        for d in ["state", "tmp"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let mut unshare = Command::new("unshare");
        unshare.args(["--net", "--uts", "--pid", "--mount", "--fork", "--mount-proc", "sh", "-c", "while :; do sleep 1; done"]);
        unshare.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let unshare = unshare.spawn().expect("unshare");
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let mut init = 0;
        wait_until("the host's pid 1 started", Duration::from_secs(10), || {
            init = std::fs::read_to_string(&children).ok().and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok())).unwrap_or(0);
            init != 0
        });
        let host = Host { name, init, unshare, link, dir, url: self.host_url(), addr: format!("{}.{}", self.prefix, k + 2) };
        let pid = init.to_string();
        sh("nsenter", &["-t", &pid, "-u", "hostname", &host.name]);
        sh("ip", &["link", "add", &host.link, "type", "veth", "peer", "name", &peer]);
        sh("ip", &["link", "set", &host.link, "master", &self.bridge.0]);
        sh("ip", &["link", "set", &host.link, "up"]);
        sh("ip", &["link", "set", &peer, "netns", &pid]);
        sh("nsenter", &["-t", &pid, "-n", "ip", "addr", "add", &format!("{}/24", host.addr), "dev", &peer]);
        sh("nsenter", &["-t", &pid, "-n", "ip", "link", "set", &peer, "up"]);
        sh("nsenter", &["-t", &pid, "-n", "ip", "link", "set", "lo", "up"]);
        // The host reaches the server: a tool run there says so.
        wait_until("the host reaches the server", Duration::from_secs(20), || run_cmd(host.cmd("q-ls"), None).code() == 0);
        host
    }

    /// `SELECT` one integer.
    fn count(&self, sql: &str) -> i64 {
        self.admin().query_one(&sql.replace("{s}", &self.schema), &[]).unwrap().get(0)
    }
}

/// One host: namespaces with a pid 1 of their own.
pub(crate) struct Host {
    pub name: String,
    /// The host's pid 1, as the root namespace sees it.
    init: i32,
    unshare: Child,
    /// The root namespace's end of the host's veth pair.
    link: String,
    /// Its `XDG_STATE_HOME` (`state/`) and `TMPDIR` (`tmp/`).
    dir: tempfile::TempDir,
    url: String,
    addr: String,
}

impl Host {
    /// A tool run inside the host, on the queue, with a scrubbed
    /// environment of its own.
    fn cmd(&self, tool: &str) -> Command {
        self.inside(bin(tool).as_os_str())
    }

    /// A shell script run inside the host, the tools in its `PATH`.
    pub(crate) fn sh(&self, script: &str) -> Command {
        let mut c = self.inside("bash".as_ref());
        c.args(["-euo", "pipefail", "-c", script]);
        let tools = bin("q-push").parent().unwrap().to_path_buf();
        c.env("PATH", format!("{}:{}", tools.display(), std::env::var("PATH").unwrap_or_default()));
        c
    }

    fn inside(&self, prog: &std::ffi::OsStr) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.init.to_string(), "-n", "-u", "-p", "-m", "--"]).arg(prog);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("Q_") {
                c.env_remove(&k);
            }
        }
        c.env("Q_DIR", &self.url);
        c.env("XDG_STATE_HOME", self.dir.path().join("state")).env("TMPDIR", self.dir.path().join("tmp"));
        c.current_dir(self.dir.path()).stdin(Stdio::null());
        c
    }

    /// A partition: the host's link down (or back up).
    fn set_link(&self, up: bool) {
        sh("ip", &["link", "set", &self.link, if up { "up" } else { "down" }]);
    }

    /// The host dies: SIGKILL to its pid 1 takes everything in it along.
    fn kill(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.init), nix::sys::signal::Signal::SIGKILL);
        let _ = self.unshare.wait();
    }

    /// The host's pid namespace (to find its processes from outside).
    fn pidns(&self) -> PathBuf {
        std::fs::read_link(format!("/proc/{}/ns/pid", self.init)).unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        // The namespace took its end along; this one goes with the pair.
        let _ = Command::new("ip").args(["link", "del", &self.link]).stderr(Stdio::null()).status();
    }
}

/// Processes of a pid namespace whose command line holds `needle`.
fn procs_in(ns: &Path, needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_deref() != Some(ns) || !pid_alive(pid) {
            continue;
        }
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&argv).replace('\0', " ").contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Job lines: each appends `start|end ID ATTEMPT HOST` to `effects`;
/// with `hold_first`, a first attempt waits for the file `release` between
/// the two.
fn job_lines(n: usize, effects: &Path, hold_first: Option<&Path>, prio: i32) -> String {
    let e = effects.display();
    let hold = hold_first.map_or(String::new(), |r| format!("if [ \"$Q_ATTEMPT\" = 1 ]; then while [ ! -e {} ]; do sleep 0.05; done; fi; ", r.display()));
    (0..n)
        .map(|_| {
            let sh = format!("echo start $Q_JOB_ID $Q_ATTEMPT $(uname -n) >> {e}; {hold}echo end $Q_JOB_ID $Q_ATTEMPT $(uname -n) >> {e}");
            format!("{}\n", json!({"sh": sh, "priority": prio}))
        })
        .collect()
}

fn push(q: &QDir, lines: &str) -> Vec<String> {
    q.run_in("q-push", &[], lines).ok().lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect()
}

/// The effects log: (what, id, attempt, host) per line.
fn effects(path: &Path) -> Vec<(String, String, u32, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 4).then(|| (f[0].to_owned(), f[1].to_owned(), f[2].parse().unwrap_or(0), f[3].to_owned()))
        })
        .collect()
}

/// Nothing lost, nothing completed twice: every id is done with exactly
/// one done result, and its effects ended exactly once.
fn check_exactly_once(lab: &Lab, ids: &[String], effects_path: &Path) {
    let mut db = lab.admin();
    let s = &lab.schema;
    let states: BTreeMap<String, String> = db.query(&format!("SELECT id, state FROM {s}.job"), &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    let twice = db.query(&format!("SELECT id FROM {s}.attempt WHERE result->>'state' = 'done' GROUP BY id HAVING count(*) > 1"), &[]).unwrap();
    assert!(twice.is_empty(), "{} jobs completed twice", twice.len());
    let done: i64 = db.query_one(&format!("SELECT count(*) FROM {s}.attempt WHERE result->>'state' = 'done'"), &[]).unwrap().get(0);
    let all = effects(effects_path);
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    for (what, id, _, _) in &all {
        if what == "end" {
            *ends.entry(id.clone()).or_insert(0) += 1;
        }
    }
    for id in ids {
        assert_eq!(states.get(id).map(String::as_str), Some("done"), "job {id} (nothing lost)");
        if ends.get(id) != Some(&1) {
            // Say all that is known of it: its effects and its attempts.
            let mine: Vec<_> = all.iter().filter(|e| &e.1 == id).collect();
            let attempts: Vec<String> = db
                .query(&format!("SELECT attempt, lease::text, result::text FROM {s}.attempt WHERE id = $1 ORDER BY attempt"), &[id])
                .unwrap()
                .iter()
                .map(|r| format!("{} {} {}", r.get::<_, i32>(0), r.get::<_, String>(1), r.get::<_, Option<String>>(2).unwrap_or_default()))
                .collect();
            panic!("job {id} ran to its end {:?} times, not once\neffects: {mine:?}\nattempts:\n{}", ends.get(id), attempts.join("\n"));
        }
    }
    assert_eq!(done, ids.len() as i64, "one done result per job");
}

/// Two hosts, each `q-supervise -j 2` against the server over TCP, drain
/// 2,000 jobs appending to an effects log: every job done exactly once,
/// and each host completed some.
#[test]
fn serial_two_hosts_drain_one_queue() {
    if !usable("serial_two_hosts_drain_one_queue") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = (lab.host(), lab.host());
    let effects_path = lab.q.path().join("effects");
    let ids = push(&lab.q, &job_lines(2000, &effects_path, None, 0));
    assert_eq!(ids.len(), 2000);
    let sup = |h: &Host| {
        let mut c = h.cmd("q-supervise");
        c.args(["-j", "2", "--exit-on-idle", "--lease", "10s"]).stdout(Stdio::null()).stderr(Stdio::piped());
        Proc::spawn(c)
    };
    let (mut pa, mut pb) = (sup(&a), sup(&b));
    assert_eq!(pa.wait_for(Duration::from_secs(240)), 0, "host a's supervisor");
    assert_eq!(pb.wait_for(Duration::from_secs(60)), 0, "host b's supervisor");
    check_exactly_once(&lab, &ids, &effects_path);
    let ef = effects(&effects_path);
    let by_host = |h: &Host| ef.iter().filter(|(w, _, _, host)| w == "end" && *host == h.name).count();
    let (na, nb) = (by_host(&a), by_host(&b));
    eprintln!("two hosts: {na} jobs on {}, {nb} on {}", a.name, b.name);
    assert!(na > 0 && nb > 0, "each host completed jobs: {na} and {nb}");
    assert_eq!(na + nb, 2000);
}

/// A host dies (SIGKILL to its pid 1) while its jobs run: they run again
/// on the other host once their leases ran out by the server's clock;
/// nothing is lost and nothing completed twice.
#[test]
fn serial_a_dead_hosts_jobs_run_again_elsewhere() {
    if !usable("serial_a_dead_hosts_jobs_run_again_elsewhere") {
        return;
    }
    let mut lab = Lab::new();
    let (mut a, b) = (lab.host(), lab.host());
    let effects_path = lab.q.path().join("effects");
    let release = lab.q.path().join("release");
    // Four jobs that hold both hosts' two workers on their first attempt,
    // then 60 short ones.
    let mut ids = push(&lab.q, &job_lines(4, &effects_path, Some(&release), 10));
    ids.extend(push(&lab.q, &job_lines(60, &effects_path, None, 0)));
    // Each supervisor's events go to a file, shown if host b does not drain.
    let sup = |h: &Host, log: &std::path::Path| {
        let mut c = h.cmd("q-supervise");
        c.args(["-j", "2", "--exit-on-idle", "--lease", "3s", "--events"]).stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap());
        Proc::spawn(c)
    };
    let b_log = lab.q.path().join("b.events");
    let _pa = sup(&a, &lab.q.path().join("a.events"));
    let mut pb = sup(&b, &b_log);
    let started_on = |h: &Host| -> Vec<String> { effects(&effects_path).into_iter().filter(|(w, _, n, host)| w == "start" && *n == 1 && *host == h.name).map(|e| e.1).collect() };
    wait_until("both hosts run two held jobs each", Duration::from_secs(60), || started_on(&a).len() == 2 && started_on(&b).len() == 2);
    let victims = started_on(&a);
    for v in &victims {
        let j = lab.q.job(v);
        assert_eq!((j["state"].as_str(), j["host"].as_str()), (Some("running"), Some(a.name.as_str())), "job {v} runs on host a when it dies: {j}");
    }
    a.kill();
    std::fs::write(&release, "").unwrap();
    let said = || format!("; host b's events:\n{}", std::fs::read_to_string(&b_log).unwrap_or_default());
    assert!(matches!(pb.wait_or_say(Duration::from_secs(120), said), 0 | 1), "host b drains the queue: {}", said());
    check_exactly_once(&lab, &ids, &effects_path);
    let ef = effects(&effects_path);
    for v in &victims {
        assert!(
            ef.iter().any(|(w, id, n, host)| w == "end" && id == v && *n >= 2 && *host == b.name),
            "job {v} ran again on host b: {:?}",
            ef.iter().filter(|e| &e.1 == v).collect::<Vec<_>>()
        );
        assert!(!ef.iter().any(|(w, id, n, _)| w == "end" && id == v && *n == 1), "the dead host's attempt of {v} never ended");
        let reason: String = lab
            .admin()
            .query_one(&format!("SELECT result->>'reason' FROM {}.attempt WHERE id = $1 AND attempt = 1", lab.schema), &[v])
            .unwrap()
            .get(0);
        assert_eq!(reason, "lease-expired", "job {v}'s first attempt");
    }
}

/// A partition: host a's link goes down while its job runs past its lease.
/// Host b takes the job over (its attempt exists before the link comes
/// back); host a's worker, by its own monotonic clock, kills its job's
/// process group once the lease ran out. When the link returns, host a's
/// result line says lease-lost, nothing of the job changes, and a touch
/// with the old token is refused (76).
#[test]
fn serial_a_partitioned_host_gives_its_job_up() {
    if !usable("serial_a_partitioned_host_gives_its_job_up") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = (lab.host(), lab.host());
    let effects_path = lab.q.path().join("effects");
    // The first attempt runs for 10 minutes (unless killed); the next one ends at once.
    let line = json!({"sh": format!("echo start $Q_JOB_ID $Q_ATTEMPT $(uname -n) >> {e}; [ \"$Q_ATTEMPT\" = 1 ] && exec sleep 601; echo end $Q_JOB_ID $Q_ATTEMPT $(uname -n) >> {e}", e = effects_path.display())});
    let id = push(&lab.q, &format!("{line}\n")).remove(0);
    let mut w = a.cmd("q-run");
    w.args(["--lease", "2s"]).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut worker = Proc::spawn(w);
    let lines = Arc::new(Mutex::new(Vec::<Value>::new()));
    {
        let out = worker.child.stdout.take().unwrap();
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            for l in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&l) {
                    lines.lock().unwrap().push(v);
                }
            }
        });
    }
    let a_ns = a.pidns();
    wait_until("the job runs on host a", Duration::from_secs(30), || !procs_in(&a_ns, "sleep 601").is_empty());
    let token: String = lab.admin().query_one(&format!("SELECT token::text FROM {}.job WHERE id = $1", lab.schema), &[&id]).unwrap().get(0);
    let mut sb = b.cmd("q-supervise");
    sb.args(["-j", "1", "--lease", "2s"]).stdout(Stdio::null()).stderr(Stdio::null());
    let _sup_b = Proc::spawn(sb);

    a.set_link(false);
    let cut = Instant::now();
    let attempts = |lab: &Lab| lab.count(&format!("SELECT count(*) FROM {{s}}.attempt WHERE id = '{id}'"));
    wait_until("host b took the job over", Duration::from_secs(30), || attempts(&lab) >= 2);
    wait_until("host b's attempt ended done", Duration::from_secs(30), || lab.q.job(&id)["state"] == "done");
    wait_until("host a's worker killed its job, cut off", Duration::from_secs(30), || procs_in(&a_ns, "sleep 601").is_empty());
    let killed_after = cut.elapsed();
    assert!(killed_after >= Duration::from_millis(1000), "not before the lease could have run out by its own clock ({killed_after:?})");
    assert!(lines.lock().unwrap().is_empty(), "host a printed nothing while cut off");
    let snapshot = |lab: &Lab| -> (String, Vec<String>) {
        let mut db = lab.admin();
        let s = &lab.schema;
        let job: String = db.query_one(&format!("SELECT to_jsonb(j)::text FROM {s}.job j WHERE id = $1"), &[&id]).unwrap().get(0);
        let att = db.query(&format!("SELECT to_jsonb(a)::text FROM {s}.attempt a WHERE id = $1 ORDER BY attempt"), &[&id]).unwrap();
        (job, att.iter().map(|r| r.get(0)).collect())
    };
    let before = snapshot(&lab);
    // While cut off, the server ends host a's sessions by its own
    // keepalives (no FIN crossed the link): within about 25 s, not the
    // system's two hours, during which they would hold host a's advisory
    // locks (its worker's presence) and any transaction it left open.
    let sessions: i64 = lab.admin().query_one("SELECT count(*) FROM pg_stat_activity WHERE host(client_addr) = $1", &[&a.addr]).unwrap().get(0);
    assert!(sessions > 0, "host a's worker had sessions on the server when it was cut off");
    wait_until("the server ends the cut-off host's sessions", Duration::from_secs(60), || {
        lab.admin().query_one("SELECT count(*) FROM pg_stat_activity WHERE host(client_addr) = $1", &[&a.addr]).unwrap().get::<_, i64>(0) == 0
    });

    a.set_link(true);
    wait_until("host a's worker says lease-lost", Duration::from_secs(60), || !lines.lock().unwrap().is_empty());
    let r = lines.lock().unwrap()[0].clone();
    assert_eq!((r["type"].as_str(), r["id"].as_str(), r["reason"].as_str()), (Some("result"), Some(id.as_str()), Some("lease-lost")), "{r}");
    assert_eq!(r["attempt"], 1);
    assert_eq!(r["token"].as_str(), Some(token.as_str()));
    let o = lab.q.run("q-ctl", &["touch", &id, "--token", &token]);
    assert_eq!(o.code(), 76, "the old token is refused: {}", o.stderr);
    let o = run_cmd({
        let mut c = a.cmd("q-ctl");
        c.args(["touch", &id, "--token", &token]);
        c
    }, None);
    assert_eq!(o.code(), 76, "from host a too: {}", o.stderr);
    assert_eq!(snapshot(&lab), before, "nothing of the job changed");
    let ef = effects(&effects_path);
    assert_eq!(ef.iter().filter(|(w, ..)| w == "end").map(|e| (e.2, e.3.as_str())).collect::<Vec<_>>(), vec![(2, b.name.as_str())], "{ef:?}");
}

/// The server restarts (`pg_ctl restart -m fast`) while two hosts drain
/// the queue: every host connects again and goes on; nothing is lost and
/// nothing completed twice.
#[test]
fn serial_two_hosts_outlive_a_server_restart() {
    if !usable("serial_two_hosts_outlive_a_server_restart") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = (lab.host(), lab.host());
    let effects_path = lab.q.path().join("effects");
    let lines: String = job_lines(300, &effects_path, None, 0).replace("; echo end", "; sleep 0.02; echo end");
    let ids = push(&lab.q, &lines);
    let sup = |h: &Host| {
        let mut c = h.cmd("q-supervise");
        // A lease far longer than a restart under load takes: a worker that
        // reconnects settles its running jobs itself, so each job ran to
        // its end exactly once (a shorter lease could expire meanwhile and
        // run a job again, which at-least-once allows).
        c.args(["-j", "2", "--exit-on-idle", "--lease", "30s", "--restart-base", "100ms"]).stdout(Stdio::null()).stderr(Stdio::null());
        Proc::spawn(c)
    };
    let (mut pa, mut pb) = (sup(&a), sup(&b));
    let ended = || effects(&effects_path).iter().filter(|e| e.0 == "end").count();
    wait_until("both hosts ran jobs", Duration::from_secs(60), || {
        let ef = effects(&effects_path);
        ef.iter().any(|e| e.3 == a.name) && ef.iter().any(|e| e.3 == b.name) && ended() >= 40
    });
    lab.cluster.restart_as("fast");
    let mark = effects(&effects_path).len();
    assert!(ended() < 300, "the restart came mid-run");
    assert_eq!(pa.wait_for(Duration::from_secs(180)), 0, "host a's supervisor");
    assert_eq!(pb.wait_for(Duration::from_secs(60)), 0, "host b's supervisor");
    check_exactly_once(&lab, &ids, &effects_path);
    let after: BTreeSet<String> = effects(&effects_path)[mark..].iter().filter(|e| e.0 == "end").map(|e| e.3.clone()).collect();
    assert!(after.contains(&a.name) && after.contains(&b.name), "each host ran jobs after the restart: {after:?}");
}
