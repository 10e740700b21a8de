//! The logs of a directory queue: `var/<ID>/<A>.out|.err`, written by the
//! runner while the job runs (created on the first byte, appended to), read
//! by `q-log` from any process on the host. Beside them `var/<ID>/<A>.order`
//! records the order of the two streams: after each chunk of output is in
//! its log, one line `o|e OFFSET LEN MS` is appended (one `write` on an
//! `O_APPEND` file, so the lines of both streams never mix), so a reader
//! that sees a line finds its bytes in the log.

use crate::error::{Error, Kind, Result};
use crate::fsx;
use crate::names::var;
use crate::queue::Queue;
use crate::record::{Chunk, Stream};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

impl Queue {
    /// The log file of one attempt's stream.
    pub fn log_path(&self, id: &str, attempt: u32, stream: Stream) -> PathBuf {
        self.var(id).join(var::log(attempt, stream))
    }

    /// Open an attempt's log for appending, never through a symlink
    /// planted in the queue. It is the job's `owner`'s (made so by a root
    /// worker), mode 0600, or 0640 in a group-shared queue when the pusher
    /// shares its logs.
    pub fn log_writer(&self, id: &str, attempt: u32, stream: Stream, owner: Option<u32>, share: bool) -> Result<File> {
        open_append(&self.log_path(id, attempt, stream), "open log", owner, share)
    }

    /// A writer of one stream of an attempt that records, chunk by chunk,
    /// the order of the streams in `<A>.order`.
    pub fn ordered_log_writer(&self, id: &str, attempt: u32, stream: Stream, owner: Option<u32>, share: bool) -> Result<OrderedLog> {
        let data = self.log_writer(id, attempt, stream, owner, share)?;
        let order = open_append(&self.var(id).join(var::order(attempt)), "open log order", owner, share)?;
        let offset = data.metadata().map_or(0, |m| m.len());
        Ok(OrderedLog { data, order, stream, offset })
    }

    /// The chunks of an attempt's output from the `from`-th on, in the
    /// order they were written; `None` when no order was recorded (an
    /// attempt without output yet, or run by an older q). A partial last
    /// line (a runner that died mid-write) is not a chunk yet.
    pub fn log_order(&self, id: &str, attempt: u32, from: usize) -> Result<Option<Vec<Chunk>>> {
        let path = self.var(id).join(var::order(attempt));
        let bytes = match fsx::open_read(&path).and_then(|mut f| {
            let mut b = Vec::new();
            io::Read::read_to_end(&mut f, &mut b).map(|_| b)
        }) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(not_yours(id, &path, e)),
        };
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&bytes[..complete]);
        Ok(Some(text.lines().skip(from).filter_map(parse_chunk).collect()))
    }

    /// Open an attempt's log for reading; `Ok(None)` when it has none.
    pub fn log_reader(&self, id: &str, attempt: u32, stream: Stream) -> Result<Option<File>> {
        let path = self.log_path(id, attempt, stream);
        match fsx::open_read(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(not_yours(id, &path, e)),
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

/// A log another user may not read: 77, saying who may.
fn not_yours(id: &str, path: &std::path::Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::PermissionDenied {
        return Error::new(
            Kind::Permission,
            format!("the output of job {id} is readable only by the user who pushed it and root (the pusher may share it: q-push --share-logs)"),
        );
    }
    Error::io("read", path, e)
}

/// Open a file of an attempt for appending, never through a symlink
/// planted in the queue, nor into a file someone else planted there: it
/// must be this process's or the job owner's. Made the owner's (a root
/// worker running another user's job), mode 0600 (0640 in a group-shared
/// queue when `share`).
fn open_append(path: &std::path::Path, what: &str, owner: Option<u32>, share: bool) -> Result<File> {
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(what, path, e))?;
    let m = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    let me = crate::owner::euid();
    if m.uid() != me && Some(m.uid()) != owner {
        return Err(Error::new(Kind::Permission, format!("{}: made by {}, not by this worker or the job's owner: not written", path.display(), crate::owner::describe(m.uid()))));
    }
    if let Some(o) = owner.filter(|&o| o != m.uid()) {
        nix::unistd::fchown(&f, Some(nix::unistd::Uid::from_raw(o)), None).map_err(|e| Error::io("chown", path, e.into()))?;
    }
    let access = if share { fsx::Access::GroupReads } else { fsx::Access::Owner };
    let mode = if fsx::is_shared() { access.shared_mode() } else { 0o600 };
    if m.mode() & 0o7777 != mode {
        f.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| Error::io("chmod", path, e))?;
    }
    Ok(f)
}

/// One stream's log of a running attempt, recording its chunks' order.
pub struct OrderedLog {
    data: File,
    order: File,
    stream: Stream,
    offset: u64,
}

impl Write for OrderedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.data.write_all(buf)?;
        let s = match self.stream {
            Stream::Stdout => 'o',
            Stream::Stderr => 'e',
        };
        let line = format!("{s} {} {} {}\n", self.offset, buf.len(), crate::time::now_ms());
        self.offset += buf.len() as u64;
        self.order.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn parse_chunk(l: &str) -> Option<Chunk> {
    let mut f = l.split(' ');
    let stream = match f.next()? {
        "o" => Stream::Stdout,
        "e" => Stream::Stderr,
        _ => return None,
    };
    Some(Chunk { stream, offset: f.next()?.parse().ok()?, len: f.next()?.parse().ok()?, at_ms: f.next()?.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_parse_and_bad_lines_are_skipped() {
        assert_eq!(parse_chunk("e 10 5 1700000000000"), Some(Chunk { stream: Stream::Stderr, offset: 10, len: 5, at_ms: 1_700_000_000_000 }));
        for bad in ["x 1 2 3", "o 1 2", "o a 2 3", ""] {
            assert_eq!(parse_chunk(bad), None, "{bad:?}");
        }
    }
}
