//! The logs of a directory queue: `var/<ID>/<A>.out|.err`, written by the
//! runner while the job runs (created on the first byte, appended to), read
//! by `q-log` from any process on the host.

use crate::error::{Error, Result};
use crate::fsx;
use crate::names::var;
use crate::queue::Queue;
use crate::record::Stream;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

impl Queue {
    /// The log file of one attempt's stream.
    pub fn log_path(&self, id: &str, attempt: u32, stream: Stream) -> PathBuf {
        self.var(id).join(var::log(attempt, stream))
    }

    /// Open an attempt's log for appending (mode 0600, or the group's in a
    /// shared queue), never through a symlink planted in the queue.
    pub fn log_writer(&self, id: &str, attempt: u32, stream: Stream) -> Result<File> {
        let path = self.log_path(id, attempt, stream);
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io("open log", &path, e))?;
        let _ = fsx::share(&f);
        Ok(f)
    }

    /// Open an attempt's log for reading; `Ok(None)` when it has none.
    pub fn log_reader(&self, id: &str, attempt: u32, stream: Stream) -> Result<Option<File>> {
        let path = self.log_path(id, attempt, stream);
        match fsx::open_read(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", &path, e)),
        }
    }

    /// The attempts of a job that started, in order (and so have a log of
    /// each stream: a runner creates a log file on the first byte, so a
    /// missing file of a started attempt is an empty log). An attempt
    /// started when it has a log, a run record, or a result with measured
    /// CPU time (run by q-run, not settled by hand).
    pub fn log_attempts(&self, id: &str) -> Vec<u32> {
        let dir = self.var(id);
        let mut v: Vec<u32> = fsx::list(&dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| {
                let a = var::attempt_of(n)?;
                let started = if n == &var::log(a, Stream::Stdout) || n == &var::log(a, Stream::Stderr) {
                    true
                } else if n == &var::lease(a) {
                    self.read_run(id, a).is_some()
                } else if n == &var::result(a) {
                    fsx::read_capped(&dir.join(n), 1 << 20)
                        .ok()
                        .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r).ok())
                        .is_some_and(|r| r["cpu_user_ms"].is_u64())
                } else {
                    false
                };
                started.then_some(a)
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}
