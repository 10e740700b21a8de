//! Crash points for the crash-safety tests. Compiled only with the
//! `failpoints` feature: `Q_FAILPOINTS=push.after_rename` makes the process
//! abort (like a SIGKILL, but at an exact step) when it reaches that point;
//! `Q_FAILPOINTS=settle.after_result@2` aborts at its second hit. Several
//! points are separated by commas.

/// Abort here if the named failpoint is armed (feature `failpoints` only).
#[macro_export]
macro_rules! failpoint {
    ($name:expr) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::hit($name);
    };
}

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    // (name, abort at this hit, hits so far)
    static ARMED: OnceLock<Vec<(String, u32, AtomicU32)>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("Q_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once('@') {
                Some((n, k)) => (n.to_owned(), k.parse().unwrap_or(1), AtomicU32::new(0)),
                None => (s.to_owned(), 1, AtomicU32::new(0)),
            })
            .collect()
    });
    for (n, at, hits) in armed {
        if n == name && hits.fetch_add(1, Ordering::SeqCst) + 1 >= *at {
            std::process::abort();
        }
    }
}

/// Is the fast path `name` switched off, so that a test can take the
/// portable path on a machine that has the fast one? Feature `failpoints`
/// only: `Q_DISABLE=unnamed-files` (several separated by commas). Without
/// the feature this is always false.
pub fn disabled(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    if std::env::var("Q_DISABLE").is_ok_and(|v| v.split(',').any(|n| n == name)) {
        return true;
    }
    let _ = name;
    false
}

/// A duration the crash tests may shorten (feature `failpoints` only): the
/// value of environment variable `var` in ms, else `default`. Without the
/// feature this is always `default`.
pub fn override_ms(var: &str, default: i64) -> i64 {
    #[cfg(feature = "failpoints")]
    if let Some(v) = std::env::var(var).ok().and_then(|v| v.parse().ok()) {
        return v;
    }
    let _ = var;
    default
}

/// A value the power-loss tests set to simulate the reboot that follows a
/// power cut (feature `failpoints` only): the value of environment variable
/// `var`. Without the feature this is always `None`.
pub fn override_str(var: &str) -> Option<String> {
    #[cfg(feature = "failpoints")]
    if let Ok(v) = std::env::var(var) {
        return Some(v);
    }
    let _ = var;
    None
}
