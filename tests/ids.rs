//! Ids people type: a unique suffix or prefix (6+ characters) or an
//! unfinished job's name wherever a tool takes an id on its command line;
//! ambiguous is 66 with the candidates; full ids and JSON ids are exact
//! only; `q-push --after last`; the local forms of `--at`.

use crate::util::*;
use serde_json::Value;

/// The longest common prefix of two ids.
fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

#[test]
fn ids_a_suffix_a_prefix_and_a_name_reach_the_job() {
    let q = QDir::new();
    let id = q.push(&["--name", "hello", "--", "sh", "-c", "echo hi"]);
    // The only job: any 6 characters of either end name it.
    let o = q.run("q-ctl", &["hold", &id[20..]]);
    o.ok();
    assert_eq!(o.lines()[0]["id"], id.as_str(), "the line names the full id");
    assert_eq!(q.state(&id), "held");
    q.run("q-ctl", &["release", &id[..8]]).ok();
    assert_eq!(q.state(&id), "pending");
    // Case does not matter (ids are Crockford base32).
    let o = q.run("q-ls", &["--json", &id[19..].to_lowercase()]);
    assert_eq!(o.ok().lines()[0]["id"], id.as_str());
    // Bare tokens on stdin are typed too.
    q.run_in("q-ctl", &["hold"], &format!("{}\n", &id[18..])).ok();
    q.run("q-ctl", &["release", "hello"]).ok();
    q.run("q-run", &["--exit-on-idle"]).ok();
    assert_eq!(q.run("q-log", &[&id[20..]]).ok().stdout, "hi\n");
    let w = q.run("q-wait", &[&id[20..]]);
    assert_eq!(w.ok().lines()[0]["id"], id.as_str());
    // Done: its name no longer names it, its id still does.
    let o = q.run("q-log", &["hello"]);
    o.expect_code(66);
    assert!(o.stderr.contains("no such job: hello"), "{}", o.stderr);
    q.run("q-ctl", &["retry", &id[20..]]).ok();
    assert_eq!(q.state(&id), "pending");
    // A claim settled by hand: its id may be short too, its token is exact.
    let c = q.run("q-claim", &[]).ok().lines()[0].clone();
    let token = c["token"].as_str().unwrap();
    q.run("q-ctl", &["touch", &id[20..], "--token", token]).ok();
    let o = q.run("q-ctl", &["ack", &id[..7], "--token", token]);
    assert_eq!(o.ok().lines()[0]["state"], "done");
    q.run("q-ctl", &["retry", "hello"]).expect_code(66);
    q.run("q-ctl", &["retry", &id[20..]]).ok();
    // Five characters are not enough.
    q.run("q-ctl", &["cancel", &id[21..]]).expect_code(66);
    q.run("q-ctl", &["cancel", "hello"]).ok();
    assert_eq!(q.state(&id), "canceled");
}

#[test]
fn ids_an_ambiguous_token_is_66_listing_the_candidates() {
    let q = QDir::new();
    let o = q.run_in("q-push", &[], "{\"cmd\":[\"true\"],\"name\":\"deploy\"}\n{\"cmd\":[\"true\"],\"name\":\"deploy\"}\n");
    let ids: Vec<String> = o.ok().lines().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    let other = q.push(&["--", "true"]);
    let before: Vec<String> = q.files("pending");
    for (tool, args) in [
        ("q-ctl", vec!["cancel", "deploy"]),
        ("q-ctl", vec!["hold", other.as_str(), "deploy"]),
        ("q-wait", vec!["deploy"]),
        ("q-log", vec!["deploy"]),
        ("q-ls", vec!["deploy"]),
        ("q-push", vec!["--after", "deploy", "--", "true"]),
    ] {
        let o = q.run(tool, &args);
        o.expect_code(66);
        assert!(o.stderr.contains("\"deploy\" names 2 jobs"), "{tool}: {}", o.stderr);
        for id in &ids {
            assert!(o.stderr.lines().any(|l| l.contains(id.as_str()) && l.contains("pending") && l.contains("deploy")), "{tool}: lists {id}: {}", o.stderr);
        }
    }
    assert_eq!(q.files("pending"), before, "nothing was done, not even to the unambiguous id");
    // Ids pushed together share a prefix: a short one names them all.
    let n = common_prefix(&ids[0], &ids[1]);
    if n >= 6 {
        let o = q.run("q-ctl", &["cancel", &ids[0][..n]]);
        o.expect_code(66);
        assert!(o.stderr.contains(&ids[0]) && o.stderr.contains(&ids[1]), "{}", o.stderr);
    }
    // One more character of the id tells them apart.
    let o = q.run("q-ctl", &["cancel", &ids[1][..n + 1]]);
    o.ok();
    assert_eq!(q.state(&ids[1]), "canceled");
    q.run("q-ctl", &["cancel", "deploy"]).ok();
    assert_eq!(q.state(&ids[0]), "canceled", "one unfinished job of that name is left");
    // Many: the first ten, and how many more.
    q.run_in("q-push", &[], &"{\"cmd\":[\"true\"],\"name\":\"many\"}\n".repeat(12)).ok();
    let o = q.run("q-wait", &["many"]);
    o.expect_code(66);
    assert!(o.stderr.contains("\"many\" names 12 jobs") && o.stderr.contains("... and 2 more"), "{}", o.stderr);
    assert_eq!(o.stderr.lines().filter(|l| l.contains("  many")).count(), 10, "{}", o.stderr);
}

#[test]
fn ids_full_ids_and_json_ids_are_exact_only() {
    let q = QDir::new();
    let full = "01ZZZZZZZZZZZZZZZZZZZZZZZZ";
    let id = q.push(&["--name", full, "--", "true"]);
    // A full id names the job of that id or none, never a name.
    let o = q.run("q-ctl", &["hold", full]);
    o.expect_code(66);
    assert!(o.stderr.contains("no such job"), "{}", o.stderr);
    assert_eq!(q.state(&id), "pending");
    // An id read from JSON is not a short form nor a name.
    let o = q.run_in("q-ctl", &["hold"], &format!("{{\"id\":\"{}\"}}\n", &id[20..]));
    o.expect_code(66);
    q.run_in("q-wait", &[], &format!("{{\"id\":\"{}\"}}\n", &id[20..])).expect_code(66);
    assert_eq!(q.state(&id), "pending");
    // A bare line is typed: resolved.
    q.run_in("q-ctl", &["hold"], &format!("{}\n", &id[20..])).ok();
    assert_eq!(q.state(&id), "held");
    // As its full id in JSON, it is found.
    q.run_in("q-ctl", &["release"], &format!("{{\"id\":\"{id}\"}}\n")).ok();
    assert_eq!(q.state(&id), "pending");
}

#[test]
fn ids_a_name_is_only_looked_up_never_a_path() {
    let q = QDir::new();
    // No queue yet: a malformed id is still 65, a well-formed one 66.
    for tool in [vec!["q-ctl", "hold"], vec!["q-wait"], vec!["q-log"]] {
        let (t, args) = (tool[0], &tool[1..]);
        q.run(t, &[args, &["../x"]].concat()).expect_code(65);
        q.run(t, &[args, &["x7b0ra"]].concat()).expect_code(66);
    }
    assert!(!q.queue.exists(), "readers never create the queue");
    let id = q.push(&["--name", "../x", "--", "true"]);
    let o = q.run("q-ctl", &["hold", "../x"]);
    o.ok();
    assert_eq!(o.lines()[0]["id"], id.as_str());
    q.run("q-ctl", &["release", "../x"]).ok();
    for bad in ["../y", "x.json", "/etc/passwd"] {
        let o = q.run("q-ctl", &["hold", bad]);
        o.expect_code(65);
        assert!(o.stderr.contains("no job has the id or name"), "{}", o.stderr);
    }
    assert_eq!(q.state(&id), "pending");
    assert!(!q.path().join("x").exists() && !q.queue.join("x").exists());
}

#[test]
fn push_after_last_is_the_last_job_pushed_here() {
    let q = QDir::new();
    let o = q.run("q-push", &["--after", "last", "--", "true"]);
    o.expect_code(66);
    assert!(o.stderr.contains("--after last"), "{}", o.stderr);
    let a = q.push(&["--", "true"]);
    let b = q.push(&["--after", "last", "--", "true"]);
    assert_eq!(q.job(&b)["after"], serde_json::json!([a]));
    assert_eq!(q.state(&b), "waiting");
    // Lines on stdin take the flag's `after` as their default.
    let o = q.run_in("q-push", &["--after", "last"], "{\"cmd\":[\"true\"]}\n");
    let c = o.ok().lines()[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(q.job(&c)["after"], serde_json::json!([b]));
    // With a short form beside it.
    let d = q.push(&["--after", "last", "--after", &a[20..], "--", "true"]);
    assert_eq!(q.job(&d)["after"], serde_json::json!([c, a]));
    // In JSON, `after` stays exact: "last" is no id there.
    q.run_in("q-push", &[], "{\"cmd\":[\"true\"],\"after\":[\"last\"]}\n").expect_code(66);
}

/// `--at` in the local zone ($TZ): HH:MM is its next occurrence; a DST gap
/// moves forward, a fold takes the earlier time; JSON `run_at` is unchanged.
#[test]
fn push_at_takes_local_civil_times() {
    let q = QDir::new();
    q.set_env("TZ", "America/New_York");
    let at = |when: &str| -> Value {
        let o = q.run("q-push", &["--at", when, "--", "true"]);
        o.ok().lines()[0]["run_at"].clone()
    };
    // 2030-03-10: clocks jump from 02:00 EST to 03:00 EDT.
    assert_eq!(at("2030-03-10 02:30"), "2030-03-10T07:30:00.000Z", "in the gap: 03:30 EDT");
    // 2030-11-03: 01:00-02:00 happens twice (EDT, then EST).
    assert_eq!(at("2030-11-03 01:30"), "2030-11-03T05:30:00.000Z", "in the fold: the earlier, EDT");
    assert_eq!(at("2030-07-01 09:00"), "2030-07-01T13:00:00.000Z");
    // HH:MM two hours from now is today's or tomorrow's, two hours ahead.
    let tz = jiff::tz::TimeZone::get("America/New_York").unwrap();
    let target = jiff::Timestamp::now().to_zoned_datetime(tz.clone()).checked_add(jiff::SignedDuration::from_hours(2)).unwrap();
    let hm = format!("{:02}:{:02}", target.hour(), target.minute());
    let want = tz.to_ambiguous_zoned_datetime(target.date().at(target.hour(), target.minute(), 0, 0)).compatible().unwrap().timestamp();
    assert_eq!(at(&hm), format!("{:.3}", want).as_str(), "{hm}");
    let local = |v: Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap().to_zoned_datetime(tz.clone()).datetime();
    let today = jiff::Timestamp::now().to_zoned_datetime(tz.clone()).date();
    assert_eq!(local(at("today 00:00")), today.at(0, 0, 0, 0), "today, though it passed");
    assert_eq!(local(at("tomorrow 23:59")), today.tomorrow().unwrap().at(23, 59, 0, 0));
    // The forms that were there before.
    assert_eq!(at("2030-01-01T00:00:00+01:00"), "2029-12-31T23:00:00.000Z");
    assert_eq!(at("1900000000"), "2030-03-17T17:46:40.000Z");
    let o = q.run("q-push", &["--at", "25:00", "--", "true"]);
    o.expect_code(65);
    assert!(o.stderr.contains("HH:MM"), "{}", o.stderr);
    // JSON run_at takes RFC 3339 and Unix seconds only.
    q.run_in("q-push", &[], "{\"cmd\":[\"true\"],\"run_at\":\"10:00\"}\n").expect_code(65);
}
