//! `q top` / `q-ls --watch`, the live view, through a pseudo-terminal whose
//! screen a terminal model (vt100) keeps: what it shows of a queue served by
//! a supervisor this test starts, its redraw after a resize, `q` and Ctrl-C,
//! and the terminal given back. The README's capture of the view comes from
//! here: `Q_BLESS=1` writes this test's screen into it; otherwise the test
//! checks that the capture's headings are the ones the view shows now.

#[allow(unused_imports)]
use crate::util::*;

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
const BEGIN: &str = "<!-- q top capture: written by tests/top.rs with Q_BLESS=1 -->\n```\n";
const END: &str = "```\n<!-- end of q top capture -->";

/// Push a job (`q-push ARGS`) and return its id.
fn push(q: &QDir, args: &[&str]) -> String {
    q.push(args)
}

/// The view of a queue served by a supervisor started elsewhere: the counts,
/// both running jobs with their worker and elapsed time, the jobs that ended
/// with their reason, throughput; after a resize the redrawn frame fits the
/// new size; `q` quits with 0 and gives the terminal back.
#[test]
fn serial_q_top_shows_a_served_queue_live_and_follows_a_resize() {
    let q = QDir::new();
    let release = q.file("release");
    let hold = format!("touch \"$Q_JOB_ID.started\"; while [ ! -e {} ]; do sleep 0.05; done", release.display());
    for n in ["fetch", "lint", "test"] {
        push(&q, &["--name", n, "--priority", "9", "--", "true"]);
    }
    push(&q, &["--name", "flaky", "--priority", "9", "--sh", "exit 3"]);
    let build = push(&q, &["--name", "build", "--priority", "5", "--needs", "gpu=1", "--sh", &hold]);
    let deploy = push(&q, &["--name", "deploy", "--priority", "5", "--group", "deploy", "--sh", &hold]);

    let mut sup = q.cmd("q-supervise");
    sup.args(["-j", "2", "-q", "--slots", "gpu=2", "--limit", "deploy=1"]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut sup = Proc::spawn(sup);
    for id in [&build, &deploy] {
        let marker = q.path().join(format!("{id}.started"));
        wait_until("both long jobs run", Duration::from_secs(60), || marker.exists());
    }
    // Pushed once both workers are busy, so that they stay ready: a worker
    // that finds the slots taken for a moment (another worker holds them
    // while it claims) may pass the slot jobs over for later ones.
    push(&q, &["--name", "report", "--", "true"]);
    push(&q, &["--name", "notify", "--", "true"]);

    wait_until("the quick jobs are settled", Duration::from_secs(60), || {
        let c = q.run("q-ls", &["--counts"]).lines().remove(0);
        c["done"] == 3 && c["dead"] == 1 && c["running"] == 2
    });
    // A long interval: after the first frame, only a resize (SIGWINCH)
    // redraws.
    let mut s = Screen::start(&q, "q", &["top", "--interval", "1h"], (100, 30), &[("TZ", "America/New_York"), ("Q_DIR", "q")]);
    let rows = s.wait_for("the view shows the running jobs, what ended and the counts", Duration::from_secs(30), |rows, _| {
        let text = rows.join("\n");
        ["RUNNING 2", "build", "deploy", "ENDED 4", "flaky", "exit 3", "2 ready", "2 running", "3 done", "1 dead", "jobs/s", "ETA", "EST", "slots: gpu 1/2", "groups running: deploy 1/1"]
            .iter()
            .all(|w| text.contains(w))
    });
    let text = rows.join("\n");
    assert!(!s.cooked(), "the view reads keys in raw mode");
    // Each running job on one row with its worker and elapsed time.
    for name in ["build", "deploy"] {
        let row = rows.iter().find(|r| r.ends_with(name)).unwrap_or_else(|| panic!("a row for {name}:\n{text}"));
        assert!(row.split_whitespace().any(is_duration), "elapsed time in {row:?}");
    }
    let id_cell = &deploy[deploy.len() - 6..];
    assert!(text.contains(id_cell), "the job's short id {id_cell}:\n{text}");
    assert!(rows.iter().all(|r| unicode_len(r) <= 100), "{text}");
    bless_or_check(&rows);

    // A narrower, shorter terminal: SIGWINCH redraws the frame to fit it,
    // nothing wraps.
    s.resize(60, 16);
    s.wait_for("a frame drawn for 60×16", Duration::from_secs(30), |rows, screen| {
        rows.len() == 16
            && rows[15] == "q: quit"
            && rows.iter().any(|r| r.starts_with("RUNNING 2"))
            && (0..16).all(|i| !screen.row_wrapped(i))
            && rows.iter().all(|r| unicode_len(r) <= 60)
    });

    s.keys(b"q");
    assert_eq!(s.wait_exit(Duration::from_secs(30)), 0);
    let screen = s.parser.lock().unwrap().screen().clone();
    assert!(!screen.alternate_screen(), "back on the main screen");
    assert!(!screen.hide_cursor(), "the cursor is shown again");
    assert!(s.cooked(), "the terminal is back in cooked mode");

    std::fs::write(&release, "").unwrap();
    wait_until("the long jobs end", Duration::from_secs(60), || q.state(&build) == "done" && q.state(&deploy) == "done");
    sup.signal(nix::sys::signal::SIGTERM);
    sup.wait_for(Duration::from_secs(60));
}

/// Slots in use and running jobs per group, out of what the live supervisor
/// has, follow `q-ctl slots` and the jobs that end.
#[test]
fn serial_q_top_shows_slots_in_use_and_groups() {
    let q = QDir::new();
    let release = q.file("release");
    let hold = format!("touch \"$Q_JOB_ID.started\"; while [ ! -e {} ]; do sleep 0.05; done", release.display());
    let a = push(&q, &["--needs", "gpu=2", "--group", "train", "--sh", &hold]);
    let b = push(&q, &["--group", "etl", "--sh", &hold]);
    let mut sup = q.cmd("q-supervise");
    sup.args(["-j", "3", "-q", "--slots", "gpu=3", "--limit", "etl=2"]).stdout(Stdio::null()).stderr(Stdio::null());
    let mut sup = Proc::spawn(sup);
    for id in [&a, &b] {
        let marker = q.path().join(format!("{id}.started"));
        wait_until("both jobs run", Duration::from_secs(60), || marker.exists());
    }
    let mut s = Screen::start(&q, "q", &["top", "--interval", "100ms"], (100, 24), &[]);
    s.wait_for("slots and groups", Duration::from_secs(30), |rows, _| rows.iter().any(|r| r.trim_end() == "slots: gpu 2/3 · groups running: etl 1/2, train 1"));
    let o = q.run("q-ctl", &["slots", "gpu=4"]);
    o.ok();
    s.wait_for("the new total", Duration::from_secs(30), |rows, _| rows.iter().any(|r| r.contains("slots: gpu 2/4")));
    std::fs::write(&release, "").unwrap();
    s.wait_for("nothing in use", Duration::from_secs(30), |rows, _| rows.iter().any(|r| r.trim_end() == "slots: gpu 0/4 · groups running: etl 0/2"));
    s.keys(b"q");
    assert_eq!(s.wait_exit(Duration::from_secs(30)), 0);
    sup.signal(nix::sys::signal::SIGTERM);
    assert_eq!(sup.wait_for(Duration::from_secs(60)), 0);
}

/// `q-ls --watch` is the same view; Ctrl-C quits it with 130, as every
/// waiting tool does, and the terminal is given back.
#[test]
fn serial_ls_watch_quits_on_ctrl_c_with_130() {
    let q = QDir::new();
    push(&q, &["--name", "waits", "--delay", "1h", "--", "true"]);
    let mut s = Screen::start(&q, "q-ls", &["--watch"], (80, 24), &[]);
    s.wait_for("the view", Duration::from_secs(30), |rows, screen| {
        screen.alternate_screen() && rows.iter().any(|r| r.contains("1 scheduled")) && rows.iter().any(|r| r == "q: quit")
    });
    assert!(!s.cooked(), "the view reads keys in raw mode");
    s.keys(&[0x03]);
    assert_eq!(s.wait_exit(Duration::from_secs(30)), 130);
    let screen = s.parser.lock().unwrap().screen().clone();
    assert!(!screen.alternate_screen() && !screen.hide_cursor(), "the terminal is given back");
    assert!(s.cooked(), "the terminal is back in cooked mode");
}

/// A view started before the queue exists says so, and shows the queue
/// once the first push has made it.
#[test]
fn serial_q_top_waits_for_the_queue_to_exist() {
    let q = QDir::new();
    let mut s = Screen::start(&q, "q", &["top", "--interval", "100ms"], (100, 24), &[]);
    s.wait_for("no queue yet", Duration::from_secs(30), |rows, _| rows.iter().any(|r| r.contains("no queue at") && r.contains("yet")));
    push(&q, &["--", "true"]);
    s.wait_for("the new queue's counts", Duration::from_secs(30), |rows, _| {
        rows.iter().any(|r| r.starts_with("1 ready")) && !rows.iter().any(|r| r.contains("no queue at"))
    });
    s.keys(b"q");
    assert_eq!(s.wait_exit(Duration::from_secs(30)), 0);
}

/// SIGTERM ends the view like `q`, the terminal given back.
#[test]
fn serial_q_top_gives_the_terminal_back_on_sigterm() {
    let q = QDir::new();
    push(&q, &["--", "true"]);
    let mut s = Screen::start(&q, "q", &["top", "--interval", "200ms"], (80, 24), &[]);
    s.wait_for("the view", Duration::from_secs(30), |rows, _| rows.iter().any(|r| r.contains("1 ready")));
    let pid = s.child.process_id().expect("pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap();
    assert_eq!(s.wait_exit(Duration::from_secs(30)), 0);
    assert!(!s.parser.lock().unwrap().screen().alternate_screen());
    assert!(s.cooked());
}

/// A panic in the view gives the terminal back before its message is
/// printed, so the message is on the main screen (feature `failpoints`).
#[test]
fn serial_q_top_gives_the_terminal_back_on_a_panic() {
    let q = QDir::new();
    push(&q, &["--", "true"]);
    let mut s = Screen::start(&q, "q", &["top", "--interval", "100ms"], (80, 24), &[("Q_PANIC_AT", "top.frame@3"), ("RUST_BACKTRACE", "0")]);
    assert_eq!(s.wait_exit(Duration::from_secs(30)), 101, "a panic's status");
    let screen = s.parser.lock().unwrap().screen().clone();
    assert!(!screen.alternate_screen() && !screen.hide_cursor(), "the terminal is given back");
    assert!(s.cooked(), "the terminal is back in cooked mode");
    let text = s.rows().join("\n");
    assert!(text.contains("panicked") && text.contains("Q_PANIC_AT=top.frame@3"), "the message is on the main screen:\n{text}");
}

/// Off a terminal the view refuses with a usage error (2) that says what to
/// use instead, and a queue that does not exist is an error too.
#[test]
fn q_top_needs_a_terminal() {
    let q = QDir::new();
    push(&q, &["--", "true"]);
    let o = q.run("q", &["top"]);
    o.expect_code(2);
    assert!(o.stderr.contains("needs a terminal") && o.stderr.contains("q-ls"), "{}", o.stderr);
    let o = q.run("q-ls", &["--watch"]);
    o.expect_code(2);
    let o = q.run("q", &["top", "--interval", "10ms"]);
    o.expect_code(2);
}

/// A duration as people read it (`28ms`, `2s`, `1m05s`).
fn is_duration(w: &str) -> bool {
    w.ends_with(|c: char| c.is_ascii_alphabetic()) && q_queue::time::parse_duration(w).is_ok()
}

fn unicode_len(s: &str) -> usize {
    s.chars().count()
}

/// With `Q_BLESS=1`, write the screen into the README's capture; otherwise
/// check that the capture's headings (the lines without numbers) are on
/// the screen as they are now, so that a change of layout cannot leave an
/// old capture behind.
fn bless_or_check(rows: &[String]) {
    let readme = std::fs::read_to_string(README).unwrap();
    let start = readme.find(BEGIN).expect("the README has the q top capture block") + BEGIN.len();
    let end = start + readme[start..].find(END).expect("the capture block ends");
    if std::env::var_os("Q_BLESS").is_some_and(|v| v == "1") {
        let mut shown: Vec<&str> = rows.iter().map(String::as_str).collect();
        while shown.len() > 1 && shown[shown.len() - 2].is_empty() {
            shown.remove(shown.len() - 2);
        }
        let capture: String = shown.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(README, format!("{}{capture}{}", &readme[..start], &readme[end..])).unwrap();
        return;
    }
    let capture = &readme[start..end];
    for heading in capture.lines().filter(|l| !l.is_empty() && !l.chars().any(|c| c.is_ascii_digit())) {
        let words: Vec<&str> = heading.split_whitespace().collect();
        assert!(
            rows.iter().any(|r| r.split_whitespace().collect::<Vec<_>>() == words),
            "the README's capture has {heading:?}, which the view no longer shows: run this test with Q_BLESS=1 to write it again"
        );
    }
}
