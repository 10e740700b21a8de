//! Waking waiters without polling: whoever makes a job ready touches
//! `pending/.wake`; waiters watch `pending/` with inotify and rescan on any
//! event (events are hints, never trusted alone). Where inotify is not
//! available (NFS, watches exhausted) the waiter polls.

use crate::queue::Queue;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// The longest a waiter sleeps without looking again, event or not.
pub const MAX_SLEEP: Duration = Duration::from_millis(500);

impl Queue {
    /// Tell waiters that a job may be ready. Both times are set: setting
    /// the mtime alone raises `IN_MODIFY`, both `IN_ATTRIB`.
    pub fn wake(&self) {
        let p = self.dir("pending").join(".wake");
        let now = std::time::SystemTime::now();
        match fs::OpenOptions::new().write(true).open(&p) {
            Ok(f) => {
                let _ = f.set_times(fs::FileTimes::new().set_accessed(now).set_modified(now));
            }
            Err(_) => {
                let _ = fs::write(&p, b"");
            }
        }
    }

    /// A waiter that wakes only when a job may have become ready (pushes,
    /// requeues, releases): what a claimer needs; its own claims and
    /// completions do not wake it.
    pub fn pending_waiter(&self) -> DirWaiter {
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok().and_then(|i| {
            // IN_MODIFY too: an older q touched `.wake`'s mtime alone.
            let flags = AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO;
            i.add_watch(&self.dir("pending"), flags).ok()?;
            Some(i)
        });
        DirWaiter { ino: if is_network_fs(self.root()) { None } else { ino } }
    }

    /// A waiter on this queue's pending jobs and on jobs finishing.
    pub fn waiter(&self) -> DirWaiter {
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok().and_then(|i| {
            let flags = AddWatchFlags::IN_ATTRIB
                | AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_CLOSE_WRITE;
            i.add_watch(&self.dir("pending"), flags).ok()?;
            // Results and state changes elsewhere matter to q-wait.
            for d in ["done", "dead", "canceled", "leased", "waiting"] {
                let _ = i.add_watch(&self.dir(d), AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE);
            }
            Some(i)
        });
        let ino = if is_network_fs(self.root()) { None } else { ino };
        DirWaiter { ino }
    }
}

fn is_network_fs(p: &std::path::Path) -> bool {
    use nix::sys::statfs::{NFS_SUPER_MAGIC, statfs};
    statfs(p).map(|s| s.filesystem_type() == NFS_SUPER_MAGIC).unwrap_or(false)
}

/// Blocks until something changed in the queue, or a timeout.
pub struct DirWaiter {
    ino: Option<Inotify>,
}

impl DirWaiter {
    /// Like [`DirWaiter::wait`], but also return as soon as `also` is readable
    /// (a caller's self-pipe, written when a signal arrives).
    pub fn wait_or(&self, timeout: Duration, also: Option<BorrowedFd<'_>>) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let timeout = match &self.ino {
            Some(_) => timeout.min(MAX_SLEEP),
            None => timeout.min(MAX_SLEEP).min(Duration::from_millis(250)),
        };
        let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::NONE);
        let mut fds = Vec::with_capacity(2);
        if let Some(ino) = &self.ino {
            fds.push(PollFd::new(ino.as_fd(), PollFlags::POLLIN));
        }
        if let Some(fd) = also {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        if fds.is_empty() {
            std::thread::sleep(timeout);
            return;
        }
        let _ = poll(&mut fds, ms);
        drop(fds);
        if let Some(ino) = &self.ino {
            // Drain the events: they are only hints.
            while let Ok(ev) = ino.read_events() {
                if ev.is_empty() {
                    break;
                }
            }
        }
    }

    /// Did anything change since the last call (or wait)? Never blocks.
    /// Without inotify the answer is always yes.
    pub fn changed(&self) -> bool {
        match &self.ino {
            Some(ino) => {
                let mut any = false;
                while let Ok(ev) = ino.read_events() {
                    if ev.is_empty() {
                        break;
                    }
                    any = true;
                }
                any
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit;

    /// A push into an existing segment only touches `.wake`: that must wake
    /// a claimer, not leave the job to the 500 ms rescan (it did: setting
    /// the mtime alone raised IN_MODIFY, which was not watched).
    #[test]
    fn touching_wake_wakes_a_pending_waiter() {
        let (_d, q) = testkit::queue();
        q.wake(); // `.wake` exists from now on
        let w = q.pending_waiter();
        assert!(w.ino.is_some(), "inotify is available here");
        let _ = w.changed();
        assert!(!w.changed(), "nothing happened yet");
        q.wake();
        assert!(w.changed(), "a touch of .wake is seen");
    }
}
