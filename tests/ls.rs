#[allow(unused_imports)]
use crate::util::*;

/// A job file that is still in place but cannot be read (writable by
/// others: refused) is left out of `q-ls --json`; the listing goes on
/// with the other jobs instead of looking the file up for ever.
#[test]
fn an_unreadable_job_file_is_left_out_of_the_listing() {
    use std::os::unix::fs::PermissionsExt;
    let q = QDir::new();
    let good = q.push(&["--", "true"]);
    let bad = q.push(&["--", "true", "bad"]);
    let path = q_queue::Queue::open(&q.queue).unwrap().unwrap().locate(&bad).unwrap().unwrap().path;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = q.run("q-ls", &["--json"]);
    o.ok();
    let ids: Vec<String> = o.lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, [good]);
}

/// `q-ls --table` with `TZ=America/New_York`, split into lines (heading
/// first) of characters.
fn table(q: &QDir, args: &[&str]) -> Vec<Vec<char>> {
    let mut c = q.cmd("q-ls");
    c.arg("--table").args(args).env("TZ", "America/New_York");
    let o = run_cmd(c, None);
    o.ok();
    o.stdout.lines().map(|l| l.chars().collect()).collect()
}

/// Where each heading of the table starts and ends (in characters).
fn columns(head: &[char]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < head.len() {
        if head[i] == ' ' {
            i += 1;
            continue;
        }
        let start = i;
        while i < head.len() && head[i] != ' ' {
            i += 1;
        }
        out.push((head[start..i].iter().collect(), start, i));
    }
    out
}

/// The text of a row's cell that starts at `start` (flush left) or ends at
/// `end` (flush right).
fn cell(row: &[char], (start, end): (usize, usize), right: bool) -> String {
    let s: String = if right {
        let from = row[..end.min(row.len())].iter().rposition(|c| *c == ' ').map_or(0, |p| p + 1);
        row[from..end.min(row.len())].iter().collect()
    } else {
        row.get(start..).unwrap_or_default().iter().take_while(|c| **c != ' ').collect()
    };
    s
}

/// Every row of the table starts each column where its heading does (flush
/// left), or ends it where its heading does (flush right numbers and
/// durations), whatever the width of the values; ids are shown by their
/// shortest unique suffix; a finished job shows how long it took and how it
/// ended.
#[test]
fn the_table_lines_up_every_column() {
    let q = QDir::new();
    let mut ids = Vec::new();
    for (prio, name) in [("-5", "a"), ("10", "a-much-longer-name"), ("9999", "mid")] {
        ids.push(q.push(&["--priority", prio, "--name", name, "--", "true"]));
    }
    ids.push(q.push(&["--", "false"]));
    q.run("q-run", &["--exit-on-idle"]);
    ids.push(q.push(&["--attempts", "3", "--sh", "exit 7"]));
    ids.push(q.push(&["--delay", "2h", "--", "echo", "later"]));
    q.run("q-run", &["--exit-on-idle"]);
    let rows = table(&q, &["--all"]);
    let text: String = rows.iter().map(|r| r.iter().collect::<String>() + "\n").collect();
    let cols = columns(&rows[0]);
    let heads: Vec<&str> = cols.iter().map(|(h, _, _)| h.as_str()).collect();
    assert_eq!(heads, ["ID", "STATE", "PRI", "TRY", "WHEN", "TOOK", "CPU", "RSS", "INFO", "NAME", "COMMAND"], "{text}");
    let at = |h: &str| cols.iter().find(|c| c.0 == h).map(|c| (c.1, c.2)).unwrap();
    assert_eq!(rows.len(), 1 + ids.len(), "one row per job:\n{text}");
    for row in &rows[1..] {
        for (h, start, _) in &cols {
            if ["PRI", "TRY", "TOOK", "CPU", "RSS"].contains(&h.as_str()) {
                continue;
            }
            assert!(*start == 0 || row.get(start - 1) == Some(&' '), "column {h} starts at {start} in every row:\n{text}");
        }
        for h in ["PRI", "TRY", "TOOK", "CPU", "RSS"] {
            let (_, end) = at(h);
            assert!(row.get(end).is_none_or(|c| *c == ' '), "column {h} ends at {end} in every row:\n{text}");
        }
        let id = cell(row, at("ID"), false);
        assert!(id.len() >= 6, "an id suffix of at least 6 characters: {id:?}\n{text}");
        let full: Vec<&String> = ids.iter().filter(|i| i.ends_with(&id)).collect();
        assert_eq!(full.len(), 1, "{id} is the suffix of exactly one id:\n{text}");
        let state = cell(row, at("STATE"), false);
        let pri = cell(row, at("PRI"), true);
        assert!(pri.parse::<i32>().is_ok(), "priority {pri:?}:\n{text}");
        if state == "done" || state == "dead" {
            let took = cell(row, at("TOOK"), true);
            assert!(took.ends_with("ms") || took.ends_with('s'), "a finished job's duration {took:?}:\n{text}");
        }
    }
    let line_of = |id: &str| rows.iter().map(|r| r.iter().collect::<String>()).find(|r| r.starts_with(&id[id.len() - 6..]) || r.contains(&id[id.len() - 6..])).unwrap();
    assert!(line_of(&ids[4]).contains("(was exit 7)") && line_of(&ids[4]).contains("1/3"), "a job to retry, and how its last attempt ended:\n{text}");
    assert!(line_of(&ids[5]).contains("in 1h59m"), "when a scheduled job is due:\n{text}");
}

/// A command of several lines stays on its row (its newlines shown as ⏎).
#[test]
fn a_multi_line_command_stays_one_row() {
    let q = QDir::new();
    q.push(&["--sh", "echo one\necho two\n\techo three"]);
    q.push(&["--", "true"]);
    let rows = table(&q, &[]);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let row: String = rows.iter().map(|r| r.iter().collect::<String>()).find(|r| r.contains("sh:")).unwrap();
    assert!(row.ends_with("sh: echo one⏎echo two⏎ echo three"), "{row}");
}

/// Pending rows come in the order jobs are claimed: priority, then due
/// time, then id, the ready ones first; then the scheduled ones by due time.
/// The ready ones' order is the order q-claim then takes them in.
#[test]
fn pending_rows_are_in_claim_order() {
    let q = QDir::new();
    let a = q.push(&["--", "true", "a"]);
    let b = q.push(&["--priority", "5", "--", "true", "b"]);
    let c = q.push(&["--delay", "1h", "--priority", "9", "--", "true", "c"]);
    let d = q.push(&["--delay", "30m", "--", "true", "d"]);
    let e = q.push(&["--priority", "-1", "--", "true", "e"]);
    let f = q.push(&["--", "true", "f"]);
    let g = q.push(&["--at", "2000-01-01T00:00:00Z", "--", "true", "g"]);
    let rows = table(&q, &[]);
    let order: Vec<String> = rows[1..]
        .iter()
        .map(|r| r.iter().take_while(|c| **c != ' ').collect::<String>())
        .map(|s| [&a, &b, &c, &d, &e, &f, &g].iter().find(|i| i.ends_with(&s)).unwrap().to_string())
        .collect();
    assert_eq!(order, [&b, &g, &a, &f, &e, &d, &c].map(|s| s.to_string()));
    let claimed: Vec<String> = q.run("q-claim", &["-n", "10"]).lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(claimed, order[..5], "the table's ready rows are the claim order");
}

/// The table shows local time with its zone (TZ), the JSON stays UTC.
#[test]
fn times_are_local_with_their_zone_json_stays_utc() {
    let q = QDir::new();
    let winter = q.push(&["--at", "2030-01-15T17:30:00Z", "--", "true"]);
    let summer = q.push(&["--at", "2030-07-15T17:30:00Z", "--", "true"]);
    let rows: Vec<String> = table(&q, &[]).iter().map(|r| r.iter().collect()).collect();
    let row = |id: &str| rows.iter().find(|r| r.starts_with(&id[id.len() - 6..])).unwrap().clone();
    assert!(row(&winter).contains("2030-01-15 12:30 EST"), "{rows:#?}");
    assert!(row(&summer).contains("2030-07-15 13:30 EDT"), "{rows:#?}");
    let mut c = q.cmd("q-ls");
    c.args(["--json", &winter]).env("TZ", "America/New_York");
    assert_eq!(run_cmd(c, None).lines()[0]["run_at"], "2030-01-15T17:30:00.000Z");
    // Today's times leave the date out.
    q.push(&["--", "true"]);
    let mut c = q.cmd("q-ls");
    c.args(["--table", "--state", "pending"]).env("TZ", "UTC");
    let o = run_cmd(c, None);
    let today = o.stdout.lines().find(|l| l.contains("ready")).unwrap().to_owned();
    assert!(today.split_whitespace().any(|w| w.len() == 8 && w.as_bytes()[2] == b':') && today.contains(" UTC"), "{today}");
}

/// `--name` keeps the jobs of those names (any of them).
#[test]
fn name_filters_by_name() {
    let q = QDir::new();
    let a1 = q.push(&["--name", "a", "--", "true"]);
    let b = q.push(&["--name", "b", "--", "true"]);
    let a2 = q.push(&["--name", "a", "--", "true"]);
    q.push(&["--", "true"]);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = q.run("q-ls", args).ok().lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
        v.sort();
        v
    };
    let mut want = vec![a1.clone(), a2.clone()];
    want.sort();
    assert_eq!(ids(&["--json", "--name", "a"]), want);
    want.push(b);
    want.sort();
    assert_eq!(ids(&["--json", "--name", "a", "--name", "b"]), want);
    assert!(ids(&["--json", "--name", "nobody"]).is_empty());
}

/// `--since` keeps the jobs pushed or finished since a time (or that long
/// ago); a bad time is a usage error.
#[test]
fn since_keeps_what_was_pushed_or_ended_since() {
    let q = QDir::new();
    let old = q.push(&["--delay", "1h", "--", "true"]);
    let ran = q.push(&["--priority", "9", "--", "true"]);
    let created = q.job(&ran)["created_at"].as_str().unwrap().to_owned();
    let t = q_queue::time::parse_time(&created).unwrap() + 1;
    wait_until("the clock passes the pushes", Duration::from_secs(5), || q_queue::time::now_ms() > t);
    let new = q.push(&["--delay", "1h", "--", "true"]);
    q.run("q-run", &["--once"]).ok();
    let ids = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = q.run("q-ls", args).ok().lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
        v.sort();
        v
    };
    let since = q_queue::time::rfc3339(t);
    let mut want = vec![ran.clone(), new.clone()];
    want.sort();
    assert_eq!(ids(&["--json", "--since", &since]), want, "pushed since (new) or ended since (ran), not {old}");
    let mut all = vec![old, ran, new];
    all.sort();
    assert_eq!(ids(&["--json", "--since", "1h"]), all);
    assert_eq!(ids(&["--json", "--since", &(t / 1000 + 3600).to_string()]), Vec::<String>::new());
    let o = q.run("q-ls", &["--since", "yesterday-ish"]);
    o.expect_code(2);
    assert!(o.stderr.contains("--since"), "{}", o.stderr);
}

/// A running job shows its elapsed time and where it runs.
#[test]
fn a_running_job_shows_elapsed_time_and_where() {
    let q = QDir::new();
    let release = q.file("release");
    let started = q.file("started");
    let id = q.push(&["--sh", &format!("touch {}; while [ ! -e {} ]; do sleep 0.05; done", started.display(), release.display())]);
    let mut run = q.cmd("q-run");
    run.arg("--once").stdout(Stdio::null()).stderr(Stdio::null());
    let mut run = Proc::spawn(run);
    wait_until("the job runs", Duration::from_secs(30), || started.exists());
    let rows: Vec<String> = table(&q, &[]).iter().map(|r| r.iter().collect()).collect();
    let row = rows.iter().find(|r| r.starts_with(&id[id.len() - 6..])).unwrap();
    let host = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    assert!(row.contains("running") && row.contains(&host), "{row}");
    let cols = columns(&rows[0].chars().collect::<Vec<_>>());
    let (_, _, end) = cols.iter().find(|c| c.0 == "TOOK").unwrap();
    let took = cell(&row.chars().collect::<Vec<_>>(), (0, *end), true);
    assert!(q_queue::time::parse_duration(&took).is_ok() && took.ends_with('s'), "elapsed {took:?} in {row}");
    std::fs::write(&release, "").unwrap();
    assert_eq!(run.wait_for(Duration::from_secs(30)), 0);
}

/// On a terminal the table is as wide as the terminal: a long command is
/// cut with …, nothing wraps, one line per job.
#[test]
fn on_a_terminal_the_table_fits_its_width() {
    let q = QDir::new();
    q.push(&["--name", "long", "--sh", &format!("echo {}", "word ".repeat(40))]);
    q.push(&["--", "true"]);
    let mut s = Screen::start(&q, "q-ls", &[], (80, 20), &[]);
    assert_eq!(s.wait_exit(Duration::from_secs(30)), 0);
    let rows: Vec<String> = s.rows().into_iter().filter(|r| !r.is_empty()).collect();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert!(rows.iter().all(|r| r.chars().count() <= 80), "{rows:#?}");
    assert!(rows.iter().any(|r| r.contains("long") && r.ends_with('…')), "{rows:#?}");
    let screen = s.parser.lock().unwrap().screen().clone();
    assert!((0..20).all(|i| !screen.row_wrapped(i)), "{rows:#?}");
}

/// The table shows a job's usage over its life, as `--json`'s `usage`
/// does: TOOK the wall time of its attempts together (not only the last
/// one's), CPU their user and system time, RSS the highest peak. A listing
/// with no measured attempt has no CPU or RSS column.
#[test]
fn the_table_shows_usage_over_a_jobs_life() {
    let q = QDir::new();
    q.push(&["--delay", "1h", "--", "true"]);
    let heads = |rows: &[Vec<char>]| columns(&rows[0]).into_iter().map(|c| c.0).collect::<Vec<String>>();
    assert!(!heads(&table(&q, &[])).iter().any(|h| h == "CPU" || h == "RSS"), "nothing ran yet");

    // Attempt 1 fails after 0.3 s, attempt 2 succeeds after 0.3 s.
    let id = q.push(&["--attempts", "2", "--backoff", "10ms", "--sh", "sleep 0.3; [ \"$Q_ATTEMPT\" = 2 ]"]);
    for _ in 0..2 {
        wait_until("the job is due", Duration::from_secs(20), || q.run("q-ls", &["--counts"]).lines()[0]["ready"] == 1);
        q.run("q-run", &["--once"]);
    }
    let j = q.job(&id);
    assert_eq!((j["state"].as_str(), j["usage"]["attempts"].as_u64()), (Some("done"), Some(2)), "{j}");
    let u = &j["usage"];
    let rows = table(&q, &["--all"]);
    let text: String = rows.iter().map(|r| r.iter().collect::<String>() + "\n").collect();
    let cols = columns(&rows[0]);
    assert_eq!(heads(&rows), ["ID", "STATE", "PRI", "TRY", "WHEN", "TOOK", "CPU", "RSS", "INFO", "COMMAND"], "{text}");
    let at = |h: &str| cols.iter().find(|c| c.0 == h).map(|c| (c.1, c.2)).unwrap();
    let row = rows.iter().find(|r| r.iter().collect::<String>().starts_with(&id[id.len() - 6..])).unwrap();
    let took = cell(row, at("TOOK"), true);
    let wall = u["wall_ms"].as_u64().unwrap();
    assert!(wall >= 600 && wall > j["result"]["duration_ms"].as_u64().unwrap(), "both attempts: {j}");
    assert_eq!(took, q_queue::time::human_duration(wall), "TOOK is the total:\n{text}");
    let cpu = u["cpu_user_ms"].as_u64().unwrap() + u["cpu_sys_ms"].as_u64().unwrap();
    assert_eq!(cell(row, at("CPU"), true), q_queue::time::human_duration(cpu), "{text}");
    assert_eq!(cell(row, at("RSS"), true), q::table::human_kb(u["max_rss_kb"].as_u64().unwrap()), "{text}");
    assert!(u["max_rss_kb"].as_u64().unwrap() > 0, "{j}");
}
