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
