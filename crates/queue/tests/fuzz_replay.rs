//! The fuzz targets' seeds and saved regressions, replayed as plain tests
//! (the fuzzers themselves run outside CI with `cargo fuzz`, see
//! fuzz/README.md; any input that ever crashed one is kept in
//! fuzz/regressions/<target>/ and replayed here).

#[path = "../../../fuzz/targets.rs"]
mod targets;

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for kind in ["seeds", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let data = std::fs::read(e.path()).unwrap();
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(r.is_ok(), "{} crashes {target}", e.path().display());
            n += 1;
        }
    }
    assert!(n > 0, "no seeds for {target} under {}", root.display());
}

#[test]
fn fuzz_replay_job_line() {
    replay("job_line", targets::job_line);
}

#[test]
fn fuzz_replay_records() {
    replay("records", targets::records);
}

#[test]
fn fuzz_replay_names() {
    replay("names", targets::names);
}
