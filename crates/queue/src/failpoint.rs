//! Crash points for the crash-safety tests. Compiled only with the
//! `failpoints` feature: `Q_FAILPOINTS=push.after_rename` makes the process
//! abort (like a SIGKILL, but at an exact step) when it reaches that point.

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
    use std::sync::OnceLock;
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("Q_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    });
    if armed.iter().any(|a| a == name) {
        std::process::abort();
    }
}
