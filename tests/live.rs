//! Changing a live supervisor (`q-ctl workers N`, `q-ctl slots`, `q-ctl
//! limit`, `q-ctl rate`) and per-group rates (`--rate NAME=N/s`), under real workers:
//! jobs that wait for a file of their own to end, markers each job writes
//! when it starts, and the supervisor's events.

use crate::util::*;

/// A job named `name` that writes `started.<name>` (its slots in it) and
/// runs until `go.<name>` exists.
fn gated(q: &QDir, name: &str, needs: Option<Value>) -> Value {
    let (m, go) = (q.file(&format!("started.{name}")), q.file(&format!("go.{name}")));
    let mut j = json!({"name": name, "sh": format!("echo \"$Q_SLOT_GPU\" >'{}'; while [ ! -e '{}' ]; do sleep 0.02; done", m.display(), go.display())});
    if let Some(n) = needs {
        j["needs"] = n;
    }
    j
}

/// The jobs that started so far, by name.
fn started(q: &QDir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(q.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("started.").map(str::to_owned))
        .collect();
    v.sort();
    v
}

fn release(q: &QDir, name: &str) {
    std::fs::write(q.file(&format!("go.{name}")), "").unwrap();
}

fn running(q: &QDir) -> u64 {
    q.run("q-ls", &["--counts"]).ok().lines()[0]["running"].as_u64().unwrap()
}

/// A supervisor with `--events` on stderr to a file.
fn supervisor(q: &QDir, args: &[&str]) -> (Proc, std::path::PathBuf) {
    let ev = q.file("events.log");
    let mut c = q.cmd("q-supervise");
    c.args(args).arg("--events").stdout(Stdio::null()).stderr(std::fs::File::create(&ev).unwrap());
    (Proc::spawn(c), ev)
}

/// The events of one kind the supervisor wrote so far.
fn events(ev: &Path, kind: &str) -> Vec<Value> {
    parse_lines(&std::fs::read_to_string(ev).unwrap_or_default()).into_iter().filter(|e| e["event"] == kind).collect()
}

/// Ask with q-ctl; the change was applied, and the `ctl` line says so.
fn ctl(q: &QDir, args: &[&str]) -> Value {
    let o = q.run("q-ctl", args);
    o.ok();
    let rec = o.lines().remove(0);
    assert_eq!(rec["applied"], true, "{rec}: {}", o.stderr);
    rec
}

/// Two workers run two of six gated jobs; `q-ctl workers 4` makes it four
/// at once; `q-ctl workers 1` stops none of the four (they run on, and end
/// done in their first attempt once released), three workers exit after
/// their job, and from then on one job runs at a time.
#[test]
fn serial_workers_rise_and_fall_on_a_live_supervisor() {
    workers_rise_and_fall(&QDir::new());
}

/// The scenario of `serial_workers_rise_and_fall_on_a_live_supervisor` on
/// any queue (pg.rs runs it on PostgreSQL).
pub fn workers_rise_and_fall(q: &QDir) {
    let names: Vec<String> = (1..=6).map(|i| format!("j{i}")).collect();
    let ids = q.push_lines(&names.iter().map(|n| gated(q, n, None)).collect::<Vec<_>>());
    let (mut sup, ev) = supervisor(q, &["-j", "2"]);
    wait_until("two jobs running", Duration::from_secs(30), || started(q).len() == 2);
    assert_eq!(running(q), 2, "two workers run two jobs");
    let rec = ctl(q, &["workers", "4"]);
    assert_eq!((rec["action"].as_str(), rec["workers"].as_u64(), rec["was_workers"].as_u64()), (Some("workers"), Some(4), Some(2)), "{rec}");
    assert_eq!(rec["pid"], sup.pid(), "{rec}");
    wait_until("four jobs running", Duration::from_secs(30), || started(q).len() == 4 && running(q) == 4);
    let first: Vec<String> = started(q);
    let rec = ctl(q, &["workers", "1"]);
    assert_eq!((rec["workers"].as_u64(), rec["was_workers"].as_u64()), (Some(1), Some(4)), "{rec}");
    // Lowering stops no job: the four run on until released.
    assert_eq!(running(q), 4, "no running job was stopped");
    assert_eq!(events(&ev, "worker-retiring").len(), 3, "three workers retire");
    for n in &first {
        release(q, n);
    }
    wait_until("three retired workers gone", Duration::from_secs(30), || events(&ev, "worker-exited").len() == 3);
    for e in events(&ev, "worker-exited") {
        assert_eq!(e["exit_code"], 0, "a retired worker exits 0: {e}");
    }
    // One worker is left: one job at a time.
    wait_until("the fifth job running", Duration::from_secs(30), || started(q).len() == 5);
    let c = &q.run("q-ls", &["--counts"]).ok().lines()[0];
    assert_eq!((c["running"].as_u64(), c["pending"].as_u64()), (Some(1), Some(1)), "{c}");
    let fifth = started(q).into_iter().find(|n| !first.contains(n)).unwrap();
    release(q, &fifth);
    wait_until("the sixth job running", Duration::from_secs(30), || started(q).len() == 6);
    for n in &names {
        release(q, n);
    }
    wait_until("all done", Duration::from_secs(30), || ids.iter().all(|id| q.state(id) == "done"));
    for id in &ids {
        assert_eq!(q.job(id)["attempt"], 1, "{id} ran once, never stopped");
    }
    sup.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sup.wait_for(Duration::from_secs(30)), 0);
    assert_eq!(events(&ev, "worker-started").len(), 4, "no worker was started but the two and the two added");
    if q.queue.is_dir() {
        assert!(!q.queue.join("locks/supervise.json").exists(), "the supervisor took its record with it");
    }
}

/// `q-ctl slots gpu=2` on a supervisor with one GPU slot: a second GPU job
/// starts on slot 1 while the first runs on; `q-ctl slots gpu=1` again:
/// both run to their end, and the two left run one after the other on
/// slot 0.
#[test]
fn serial_slots_change_on_a_live_supervisor() {
    let q = QDir::new();
    let names = ["g1", "g2", "g3", "g4"];
    let ids = q.push_lines(&names.iter().map(|n| gated(&q, n, Some(json!({"gpu": 1})))).collect::<Vec<_>>());
    let (mut sup, ev) = supervisor(&q, &["-j", "3", "--slots", "gpu=1"]);
    wait_until("one GPU job running", Duration::from_secs(30), || started(&q).len() == 1);
    assert_eq!(running(&q), 1, "one slot, one job");
    let rec = ctl(&q, &["slots", "gpu=2"]);
    assert_eq!((rec["slots"].clone(), rec["was_slots"].clone()), (json!({"gpu": 2}), json!({"gpu": 1})), "{rec}");
    wait_until("two GPU jobs running", Duration::from_secs(30), || started(&q).len() == 2);
    let slot = |n: &str| std::fs::read_to_string(q.file(&format!("started.{n}"))).unwrap().trim().to_owned();
    let two = started(&q);
    let mut slots: Vec<String> = two.iter().map(|n| slot(n)).collect();
    slots.sort();
    assert_eq!(slots, ["0", "1"], "each on a slot of its own");
    assert_eq!(running(&q), 2);
    let exited = events(&ev, "worker-exited").len();
    ctl(&q, &["slots", "gpu=1"]);
    assert_eq!(running(&q), 2, "no running job was stopped");
    // The idle workers take the new slots at once; the two busy ones after their job.
    for n in &two {
        release(&q, n);
    }
    wait_until("the third GPU job running", Duration::from_secs(30), || started(&q).len() == 3);
    let third = started(&q).into_iter().find(|n| !two.contains(n)).unwrap();
    wait_until("the busy workers retired", Duration::from_secs(30), || events(&ev, "worker-exited").len() >= exited + 3);
    assert_eq!(running(&q), 1, "one slot again: the fourth waits");
    assert_eq!(slot(&third), "0");
    release(&q, &third);
    wait_until("the fourth GPU job running", Duration::from_secs(30), || started(&q).len() == 4);
    let fourth = started(&q).into_iter().find(|n| !two.contains(n) && *n != third).unwrap();
    assert_eq!(slot(&fourth), "0");
    release(&q, &fourth);
    wait_until("all done", Duration::from_secs(30), || ids.iter().all(|id| q.state(id) == "done"));
    for id in &ids {
        assert_eq!(q.job(id)["attempt"], 1, "{id} ran once, never stopped");
    }
    // Group limits change the same way; 0 takes one away.
    let rec = ctl(&q, &["limit", "io=2,mail=1"]);
    assert_eq!((rec["limits"].clone(), rec["slots"].clone()), (json!({"io": 2, "mail": 1}), json!({"gpu": 1})), "{rec}");
    let rec = ctl(&q, &["limit", "io=0"]);
    assert_eq!((rec["limits"].clone(), rec["was_limits"].clone()), (json!({"mail": 1}), json!({"io": 2, "mail": 1})), "{rec}");
    sup.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sup.wait_for(Duration::from_secs(30)), 0);
}

/// Without a live supervisor, q-ctl workers says so (75) and how to start
/// one; a host that serves nothing is named; bad counts are usage errors.
#[test]
fn reaching_no_supervisor_is_refused() {
    let q = QDir::new();
    let o = q.run("q-ctl", &["workers", "2"]);
    o.expect_code(66);
    q.push(&["--", "true"]);
    let o = q.run("q-ctl", &["workers", "2"]);
    o.expect_code(75);
    assert!(o.stderr.contains("no supervisor serves queue") && o.stderr.contains("q-supervise -j"), "{}", o.stderr);
    assert!(o.stdout.is_empty());
    let o = q.run("q-ctl", &["slots", "gpu=1", "--host", "elsewhere"]);
    o.expect_code(75);
    assert!(o.stderr.contains("on host elsewhere"), "{}", o.stderr);
    for bad in [&["workers", "0"][..], &["workers", "x"], &["slots", "GPU=1"], &["slots"], &["limit", "io"]] {
        q.run("q-ctl", bad).expect_code(2);
    }
    for bad in [&["--rate", "1/s", "--rate", "2/s"][..], &["--rate", "a=1/s", "--rate", "a=2/s"], &["--rate", "A=1/s"]] {
        let o = q.run("q-supervise", &[bad, &["--exit-on-idle"]].concat());
        o.expect_code(2);
        assert!(o.stderr.contains("--rate"), "{}", o.stderr);
    }
}

/// `--rate mail=5/s`: ten jobs of group mail start spaced 200 ms apart,
/// while ten jobs of no group, pushed after them, all start before the
/// last mail job: only the group is held back.
#[test]
fn serial_a_group_rate_spaces_only_its_group() {
    let q = QDir::new();
    let log = q.file("starts.log");
    let line = |g: Option<&str>| {
        let mut j = json!({"sh": format!("echo \"$(date +%s%N) {}\" >>'{}'", g.unwrap_or("none"), log.display())});
        if let Some(g) = g {
            j["group"] = json!(g);
        }
        j
    };
    let mut lines = vec![line(Some("mail")); 10];
    lines.extend(vec![line(None); 10]);
    let ids = q.push_lines(&lines);
    let o = q.run("q-supervise", &["-j", "3", "--rate", "mail=5/s", "--exit-on-idle"]);
    o.ok();
    for id in &ids {
        assert_eq!(q.state(id), "done", "{}", o.stderr);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let mut mail = Vec::new();
    let mut other = Vec::new();
    for l in text.lines() {
        let (t, g) = l.split_once(' ').unwrap();
        let ms = t.parse::<u64>().unwrap() / 1_000_000;
        if g == "mail" { mail.push(ms) } else { other.push(ms) }
    }
    mail.sort();
    other.sort();
    assert_eq!((mail.len(), other.len()), (10, 10), "{text}");
    let span = (mail[9] - mail[0]) as f64;
    assert!(span >= 9.0 * 200.0 * 0.9, "ten mail starts over {span} ms, not 9 × 200 ms: {mail:?}");
    for w in mail.windows(2) {
        assert!(w[1] - w[0] >= 100, "two mail starts closer than half an interval: {mail:?}");
    }
    assert!(other[9] < mail[9], "the jobs of no group waited for the mail group: {other:?} {mail:?}");
}

/// Counts by group while a supervisor runs under a group limit: the
/// limited group's running and ready jobs, the other group's and those of
/// no group (group null) apart; `--group` narrows counts and listings.
#[test]
fn serial_counts_by_group_under_a_limit() {
    let q = QDir::new();
    let mut lines = Vec::new();
    for (name, group) in [("io1", Some("io")), ("io2", Some("io")), ("io3", Some("io")), ("etl1", Some("etl")), ("etl2", Some("etl")), ("plain", None)] {
        let mut j = gated(&q, name, None);
        if let Some(g) = group {
            j["group"] = json!(g);
        }
        lines.push(j);
    }
    let ids = q.push_lines(&lines);
    let (mut sup, _) = supervisor(&q, &["-j", "6", "--limit", "io=1"]);
    wait_until("one io, both etl and the plain job running", Duration::from_secs(30), || started(&q).len() == 4);
    let by_group = |args: &[&str]| -> std::collections::BTreeMap<String, (u64, u64, u64)> {
        q.run("q-ls", &[&["--counts"][..], args].concat())
            .ok()
            .lines()
            .into_iter()
            .map(|v| (v["group"].as_str().unwrap_or("-").to_owned(), (v["ready"].as_u64().unwrap(), v["running"].as_u64().unwrap(), v["done"].as_u64().unwrap())))
            .collect()
    };
    let want: std::collections::BTreeMap<String, (u64, u64, u64)> = [("io".into(), (2, 1, 0)), ("etl".into(), (0, 2, 0)), ("-".into(), (0, 1, 0))].into();
    assert_eq!(by_group(&["--by", "group"]), want);
    assert_eq!(by_group(&["--group", "io"]), [("io".to_string(), (2, 1, 0))].into());
    let listed = q.run("q-ls", &["--group", "etl", "--json"]).ok().lines();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|v| v["group"] == "etl" && v["state"] == "running"), "{listed:?}");
    let table = q.run("q-ls", &["--counts", "--by", "group", "--table"]).ok().stdout.clone();
    assert!(table.lines().next().is_some_and(|h| h.starts_with("GROUP") && h.contains("RUNNING")), "{table}");
    assert!(table.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["io", "2", "0", "0", "0", "1", "0", "0", "0"]), "{table}");
    for n in ["io1", "io2", "io3", "etl1", "etl2", "plain"] {
        release(&q, n);
    }
    wait_until("all done", Duration::from_secs(30), || ids.iter().all(|id| q.state(id) == "done"));
    assert_eq!(by_group(&["--by", "group"])["io"], (0, 0, 3));
    sup.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sup.wait_for(Duration::from_secs(30)), 0);
}

/// `q-ctl rate mail=50/s` on a supervisor started with `--rate mail=1/s`:
/// the mail jobs that waited a second each start close together from then
/// on; `q-ctl rate mail=0` lifts the rate, and the records say each step.
#[test]
fn serial_a_group_rate_changes_on_a_live_supervisor() {
    let q = QDir::new();
    let log = q.file("starts.log");
    let line = json!({"sh": format!("date +%s%N >>'{}'", log.display()), "group": "mail"});
    let ids = q.push_lines(&vec![line; 12]);
    let (mut sup, ev) = supervisor(&q, &["-j", "3", "--rate", "mail=1/s"]);
    let starts = || std::fs::read_to_string(&log).unwrap_or_default().lines().map(|l| l.parse::<u64>().unwrap() / 1_000_000).collect::<Vec<u64>>();
    wait_until("two mail jobs started", Duration::from_secs(30), || starts().len() >= 2);
    let early = starts();
    assert!(early[1] - early[0] >= 900, "one a second at first: {early:?}");
    let rec = ctl(&q, &["rate", "mail=50/s"]);
    assert_eq!((rec["action"].as_str(), rec["rates"]["mail"].as_str(), rec["was_rates"]["mail"].as_str()), (Some("rate"), Some("50/s"), Some("1/s")), "{rec}");
    assert_eq!((rec["rate"].clone(), rec["workers"].as_u64()), (Value::Null, Some(3)), "the rest is kept: {rec}");
    wait_until("all mail jobs done", Duration::from_secs(30), || ids.iter().all(|id| q.state(id) == "done"));
    let all = starts();
    assert_eq!(all.len(), 12);
    // At 1/s the twelve would start over 11 s, a second apart. The change
    // came within about two seconds of the second start (q-ctl waits for
    // the supervisor, which looks every second): from then on they start
    // 20 ms apart, so most gaps are short and the whole run is short.
    let short = all.windows(2).filter(|w| w[1] - w[0] < 500).count();
    assert!(short >= 6, "{short} of 11 gaps under half a second: {all:?}");
    let span = all[11] - all[0];
    assert!(span < 8_000, "twelve starts over {span} ms: {all:?}");
    let e = events(&ev, "settings-changed");
    assert_eq!(e.last().map(|e| e["rates"]["mail"].clone()), Some(json!("50/s")), "{e:?}");
    let rec = ctl(&q, &["rate", "mail=0/s"]);
    assert_eq!((rec["rates"].clone(), rec["was_rates"]["mail"].as_str()), (json!({}), Some("50/s")), "{rec}");
    // Bad input is refused before anything is asked.
    q.run("q-ctl", &["rate", "mail=fast"]).expect_code(2);
    let o = q.run("q-ctl", &["rate", "mail=5/s,mail=2/s"]);
    o.expect_code(2);
    assert!(o.stderr.contains("given twice"), "{}", o.stderr);
    sup.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(sup.wait_for(Duration::from_secs(30)), 0);
}
