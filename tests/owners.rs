//! A group-shared queue runs each job as the user who pushed it, or not at
//! all (docs/FORMAT.md, "Owners"), tried with real users: `q-test-a` and
//! `q-test-b` in group `q-test`, `q-test-c` outside it, made by the tests
//! themselves (root only; under CI=true not being root, or lacking
//! useradd/setpriv, fails). Each tool runs as its user through
//! `setpriv --reuid --regid --init-groups`. The queue lives in a fresh
//! directory under /tmp that those users can reach.

use crate::util::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const GROUP: &str = "q-test";
const A: &str = "q-test-a";
const B: &str = "q-test-b";
const C: &str = "q-test-c";

/// Can this run make users? Under CI=true it must.
fn can_make_users() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let why = if !nix::unistd::geteuid().is_root() {
        Some("making users needs root")
    } else if ["useradd", "userdel", "groupadd", "setpriv"].iter().any(|t| Command::new(t).arg("--help").output().is_err()) {
        Some("useradd, userdel, groupadd or setpriv is not installed")
    } else {
        None
    };
    match why {
        None => true,
        Some(w) if ci => panic!("cannot run under CI: {w}"),
        Some(w) => {
            eprintln!("not run: {w}");
            false
        }
    }
}

/// Run `f` holding the lock that serializes making users across processes
/// (other checkouts may run these tests at the same time).
fn with_user_lock<T>(f: impl FnOnce() -> T) -> T {
    let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open("/tmp/q-test-users.lock").expect("user lock");
    lock.lock().expect("lock");
    f()
}

fn sh(cmd: &[&str]) -> Output {
    Command::new(cmd[0]).args(&cmd[1..]).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Make `user` (no home directory made, /bin/sh), in `group` if given;
/// nothing if it exists already (its group membership is ensured).
fn ensure_user(user: &str, group: Option<&str>) {
    if !sh(&["id", "-u", user]).status.success() {
        let mut c = vec!["useradd", "-M", "-s", "/bin/sh"];
        if let Some(g) = group {
            c.extend(["-G", g]);
        }
        c.push(user);
        let o = sh(&c);
        // 9: it exists (made meanwhile by a process outside our lock).
        assert!(o.status.success() || o.status.code() == Some(9), "useradd {user}: {}", String::from_utf8_lossy(&o.stderr));
    }
    if let Some(g) = group {
        let o = sh(&["usermod", "-a", "-G", g, user]);
        assert!(o.status.success(), "usermod {user}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

fn uid_of(user: &str) -> u32 {
    String::from_utf8_lossy(&sh(&["id", "-u", user]).stdout).trim().parse().expect("uid")
}

/// A user's home directory, from the user database.
fn home_of(user: &str) -> String {
    let o = sh(&["getent", "passwd", user]);
    String::from_utf8_lossy(&o.stdout).trim().split(':').nth(5).expect("home field").to_owned()
}

/// A shared queue (group `q-test`, created by A) in a directory every test
/// user can reach.
struct Shared {
    q: QDir,
}

impl Shared {
    fn new() -> Option<Shared> {
        if !can_make_users() {
            return None;
        }
        with_user_lock(|| {
            let o = sh(&["groupadd", "-f", GROUP]);
            assert!(o.status.success(), "groupadd: {}", String::from_utf8_lossy(&o.stderr));
            ensure_user(A, Some(GROUP));
            ensure_user(B, Some(GROUP));
            ensure_user(C, None);
        });
        let q = QDir::new();
        // The scratch directory is root's (0755): the users pass through it.
        // The queue directory is made empty, A's and the group's, and A's
        // first push adopts it.
        fs::set_permissions(q.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(&q.queue).unwrap();
        assert!(sh(&["chown", &format!("{A}:{GROUP}"), &q.queue.display().to_string()]).status.success());
        let s = Shared { q };
        s.run(A, "q-push", &["--shared-group", GROUP, "--", "true"]).ok();
        // That first job out of the way (it ran as A).
        s.run(A, "q-run", &["--exit-on-idle"]).ok();
        Some(s)
    }

    /// A command run as `user` (with their groups).
    fn cmd(&self, user: &str, prog: &Path) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={user}")).arg(format!("--regid={user}")).arg("--init-groups").arg(prog);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("Q_") {
                c.env_remove(&k);
            }
        }
        c.env("Q_DIR", &self.q.queue).current_dir(self.q.path()).stdin(Stdio::null());
        c
    }

    /// Run a tool as `user`.
    fn run(&self, user: &str, tool: &str, args: &[&str]) -> Out {
        let mut c = self.cmd(user, &bin(tool));
        c.args(args);
        run_cmd(c, None)
    }

    fn run_in(&self, user: &str, tool: &str, args: &[&str], input: &str) -> Out {
        let mut c = self.cmd(user, &bin(tool));
        c.args(args);
        run_cmd(c, Some(input.as_bytes().to_vec()))
    }

    /// Push as `user`; the job's id.
    fn push(&self, user: &str, args: &[&str]) -> String {
        let o = self.run(user, "q-push", args);
        o.ok();
        o.lines()[0]["id"].as_str().expect("id").to_owned()
    }

    /// The path of a job's file, wherever it is.
    fn job_file(&self, id: &str) -> PathBuf {
        walkdir::WalkDir::new(&self.q.queue)
            .into_iter()
            .filter_map(|e| e.ok())
            .find(|e| e.file_type().is_file() && e.file_name().to_string_lossy().contains(id) && !e.path().starts_with(self.q.queue.join("var")))
            .unwrap_or_else(|| panic!("no file of job {id}"))
            .into_path()
    }
}

/// A's job is not run by B's worker, which says it left it; root's worker
/// runs it as A: A's uid, A's groups, A's home, and its workspace and logs
/// are A's. B's own job runs as B.
#[test]
fn serial_owners_a_job_runs_as_its_owner() {
    let Some(s) = Shared::new() else { return };
    let script = r#"id -u; id -G; echo "$HOME"; echo "$USER"; stat -c %u "$Q_WORKSPACE""#;
    let a_job = s.push(A, &["--sh", script]);
    let b_job = s.push(B, &["--sh", "id -u"]);

    let o = s.run(B, "q-run", &["--exit-on-idle"]);
    o.ok();
    assert!(o.stderr.contains("1 of other users"), "B's worker says what it left: {o:?}");
    assert_eq!(s.q.state(&a_job), "pending", "B's worker left A's job");
    assert_eq!(s.q.state(&b_job), "done");
    let log = s.q.run("q-log", &[&b_job]);
    assert_eq!(log.ok().stdout.trim(), uid_of(B).to_string(), "B's job ran as B");
    // B's supervisor does not wait for A's job either.
    let o = s.run(B, "q-supervise", &["-j", "1", "--exit-on-idle"]);
    o.ok();
    assert!(o.stderr.contains("1 of other users"), "B's supervisor says what it left: {o:?}");
    assert_eq!(s.q.state(&a_job), "pending");

    // A's own worker would run it too; root's does, as A.
    s.q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(s.q.state(&a_job), "done", "{:?}", s.q.job(&a_job));
    let out = s.q.run("q-log", &[&a_job]).ok().stdout.clone();
    let lines: Vec<&str> = out.lines().collect();
    let groups = |s: &str| {
        let mut v: Vec<u32> = s.split_whitespace().map(|g| g.parse().unwrap()).collect();
        v.sort_unstable();
        v
    };
    let want_groups = groups(&String::from_utf8_lossy(&sh(&["id", "-G", A]).stdout));
    assert!(want_groups.contains(&nix::unistd::Group::from_name(GROUP).unwrap().unwrap().gid.as_raw()));
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(lines[0], uid_of(A).to_string(), "id -u");
    assert_eq!(groups(lines[1]), want_groups, "id -G: A's groups from the user database, not root's");
    assert_eq!(lines[2], home_of(A), "HOME from A's passwd entry, not the pusher's ({})", std::env::var("HOME").unwrap_or_default());
    assert_eq!(lines[3], A, "USER");
    assert_eq!(lines[4], uid_of(A).to_string(), "the workspace is A's");
    let out_log = s.q.queue.join("var").join(&a_job).join("1.out");
    let m = fs::metadata(&out_log).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (uid_of(A), 0o600), "the log is A's alone");
}

/// B may list A's jobs but not read A's environment or logs (unless A
/// shared them), not rewrite A's job file, and not cancel, retry, hold or
/// remove A's jobs (77, said once); A and root may.
#[test]
fn serial_owners_members_keep_out_of_each_others_jobs() {
    let Some(s) = Shared::new() else { return };
    let mut c = s.cmd(A, &bin("q-push"));
    c.args(["--sh", "echo secret-output"]).env("SECRET_TOKEN", "hunter2");
    let o = run_cmd(c, None);
    let private = o.ok().lines()[0]["id"].as_str().unwrap().to_owned();
    let shared = s.push(A, &["--share-logs", "--sh", "echo shared-output"]);
    s.q.run("q-run", &["--exit-on-idle"]).ok();
    let queued = s.push(A, &["--sh", "echo later"]);

    // Listing is the group's: commands included.
    let o = s.run(B, "q-ls", &["--all", "--json"]);
    assert!(o.ok().stdout.contains("echo later"), "{o:?}");

    // A's environment: A's file, 0600; B cannot read it.
    let mut seen = 0;
    for e in fs::read_dir(s.q.queue.join("env")).unwrap() {
        let p = e.unwrap().path();
        if !fs::read_to_string(&p).unwrap().contains("hunter2") {
            continue;
        }
        seen += 1;
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (uid_of(A), 0o600), "{}", p.display());
        let mut c = s.cmd(B, Path::new("/bin/cat"));
        c.arg(&p);
        let o = run_cmd(c, None);
        assert_ne!(o.code(), 0, "B read A's environment: {o:?}");
        assert!(!o.stdout.contains("hunter2"));
    }
    assert_eq!(seen, 1, "A's environment is recorded once");

    // Logs: A's alone, unless shared.
    let o = s.run(B, "q-log", &[&private]);
    assert_eq!(o.code(), 77, "{o:?}");
    assert!(o.stderr.contains("readable only by the user who pushed it"), "{o:?}");
    assert!(!o.stdout.contains("secret-output"));
    assert!(s.run(A, "q-log", &[&private]).ok().stdout.contains("secret-output"));
    assert!(s.run(B, "q-log", &[&shared]).ok().stdout.contains("shared-output"), "A shared these");

    // A's job file: 0640, B cannot rewrite it.
    let file = s.job_file(&queued);
    let before = fs::read(&file).unwrap();
    let m = fs::metadata(&file).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (uid_of(A), 0o640));
    let mut c = s.cmd(B, Path::new("/bin/sh"));
    c.args(["-c", r#"printf '{"cmd":["id"]}' > "$1""#, "sh"]).arg(&file);
    assert_ne!(run_cmd(c, None).code(), 0, "B rewrote A's job file");
    assert_eq!(fs::read(&file).unwrap(), before);

    // Changes: A's and root's only.
    for (args, id) in [
        (vec!["cancel"], &queued),
        (vec!["hold"], &queued),
        (vec!["retry"], &private),
        (vec!["rm"], &private),
        (vec!["set", "--priority", "5"], &queued),
        (vec!["restart"], &queued),
        (vec!["signal", "-s", "USR1"], &queued),
    ] {
        let mut args = args.clone();
        args.push(id);
        let o = s.run(B, "q-ctl", &args);
        assert_eq!(o.code(), 77, "B's q-ctl {args:?}: {o:?}");
        assert_eq!(o.stderr.lines().count(), 1, "said once: {o:?}");
        assert!(o.stderr.contains(&format!("job {id} belongs to {A}")), "{o:?}");
    }
    assert_eq!(s.q.state(&queued), "pending");
    assert_eq!(s.q.state(&private), "done");
    s.run(A, "q-ctl", &["cancel", &queued]).ok();
    assert_eq!(s.q.state(&queued), "canceled");
    s.q.run("q-ctl", &["retry", &queued]).ok();
    assert_eq!(s.q.state(&queued), "pending", "root may");
    assert_eq!(fs::metadata(s.job_file(&queued)).unwrap().uid(), uid_of(A), "a retry keeps the owner");
    // Root's change of A's job keeps it A's (and not group-writable): it
    // still runs as A, and a claim does not quarantine it.
    s.q.run("q-ctl", &["set", &queued, "--priority", "5"]).ok();
    let m = fs::metadata(s.job_file(&queued)).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (uid_of(A), 0o640), "a change keeps the owner");
    assert_eq!(s.q.job(&queued)["priority"], 5);
}

/// A job file that its group could write, or that has a second link, is
/// never run: the claim quarantines it, with a note saying why.
#[test]
fn serial_owners_unsafe_job_files_are_quarantined() {
    let Some(s) = Shared::new() else { return };
    let writable = s.push(A, &["--sh", "echo ran"]);
    let linked = s.push(A, &["--sh", "echo ran"]);
    let honest = s.push(A, &["--sh", "echo ran"]);
    fs::set_permissions(s.job_file(&writable), fs::Permissions::from_mode(0o660)).unwrap();
    fs::hard_link(s.job_file(&linked), s.q.path().join("second-name")).unwrap();
    s.q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(s.q.state(&honest), "done");
    for id in [&writable, &linked] {
        assert!(!s.q.queue.join("var").join(id.as_str()).join("1.out").exists(), "job {id} ran");
        assert_ne!(s.q.state(id), "done");
    }
    let notes: String = fs::read_dir(s.q.queue.join("corrupt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "why"))
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    assert!(notes.contains(&writable) && notes.contains("writable by its group"), "{notes}");
    assert!(notes.contains(&linked) && notes.contains("2 links"), "{notes}");
    let o = s.run(A, "q-ls", &[]);
    assert!(o.stderr.contains("2 file(s) quarantined"), "reported: {o:?}");
}

/// A job whose owner no longer exists ends dead at once (spawn-failed,
/// saying why), whatever attempts it has left; a job asking for the
/// worker's environment is not run by root's worker as another user.
#[test]
fn serial_owners_jobs_root_refuses() {
    let Some(s) = Shared::new() else { return };
    let gone = format!("q-test-g{}", std::process::id());
    with_user_lock(|| {
        let _ = sh(&["userdel", &gone]);
        ensure_user(&gone, Some(GROUP));
    });
    let orphan = s.push(&gone, &["--attempts", "3", "--sh", "echo ran"]);
    with_user_lock(|| assert!(sh(&["userdel", &gone]).status.success()));
    let o = s.run_in(A, "q-push", &[], "{\"sh\":\"echo ran\",\"env_from\":\"worker\"}\n");
    let worker_env = o.ok().lines()[0]["id"].as_str().unwrap().to_owned();
    let o = s.q.run("q-run", &["--exit-on-idle"]);
    o.ok();
    let results: Vec<Value> = o.lines();
    let find = |id: &str| results.iter().find(|r| r["id"] == id).cloned().unwrap_or_else(|| panic!("no result of {id}: {o:?}"));
    let r = find(&orphan);
    assert_eq!((r["state"].as_str(), r["reason"].as_str()), (Some("dead"), Some("spawn-failed")), "{r}");
    assert!(r["detail"]["refused"].as_str().unwrap_or("").contains("no user of this host"), "{r}");
    assert!(o.stderr.contains("no user of this host"), "{o:?}");
    let r = find(&worker_env);
    assert_eq!(r["reason"].as_str(), Some("spawn-failed"), "{r}");
    let log = s.q.run("q-log", &[&worker_env]);
    assert!(log.stdout.contains("env_from: worker") || log.stderr.contains("env_from: worker"), "{log:?}");
}

/// The group shares the queue; a user outside it is refused and changes
/// nothing. Batches (unnamed files) are the group's to list and their
/// owner's to run.
#[test]
fn serial_owners_shared_queue_trusts_exactly_its_group() {
    let Some(s) = Shared::new() else { return };
    let batch: String = (0..20).map(|i| format!("{{\"cmd\":[\"true\",\"{i}\"]}}\n")).collect();
    let o = s.run_in(B, "q-push", &[], &batch);
    assert_eq!(o.code(), 0, "{B} pushes a batch: {o:?}");
    let o = s.run(B, "q-run", &["--exit-on-idle"]);
    assert_eq!(o.lines().len(), 20, "B runs its own batch: {o:?}");
    s.run(A, "q-ls", &["--all"]).ok();
    // `--after last` is each user's own last job, though B pushed since.
    let o = s.run(A, "q-push", &["--", "true"]);
    let a_last = o.ok().lines()[0]["id"].as_str().unwrap().to_owned();
    s.run(B, "q-push", &["--", "true"]).ok();
    let o = s.run(A, "q-push", &["--after", "last", "--", "true"]);
    let id = o.ok().lines()[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(s.run(A, "q-ls", &["--json", &id]).ok().lines()[0]["after"], serde_json::json!([a_last]));
    let before = s.q.files("pending").len() + s.q.files("done").len();
    for (tool, args) in [("q-push", &["--", "true"][..]), ("q-claim", &[][..])] {
        let o = s.run(C, tool, args);
        assert!(matches!(o.code(), 73 | 74 | 77), "{C} {tool}: {o:?}");
    }
    assert_eq!(s.q.files("pending").len() + s.q.files("done").len(), before);
}
