//! Who and where a process is: host name, boot id, pid namespace, and a pid's
//! start time (so that a reused pid is never mistaken for the process that
//! held a lease).

use std::fs;
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub host: String,
    pub boot_id: String,
    pub pidns: String,
}

/// This machine's identity (cached for the life of the process).
pub fn host() -> &'static Host {
    static H: OnceLock<Host> = OnceLock::new();
    H.get_or_init(|| Host {
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into()),
        boot_id: crate::failpoint::override_str("Q_BOOT_ID").unwrap_or_else(|| {
            fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        }),
        pidns: fs::read_link("/proc/self/ns/pid")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
    })
}

/// When this host booted, Unix ms (`btime` in `/proc/stat`); 0 if unknown.
/// Whatever was claimed before it was claimed by a process that is gone.
pub fn boot_time_ms() -> i64 {
    static B: OnceLock<i64> = OnceLock::new();
    *B.get_or_init(|| {
        let btime = fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<i64>().ok())
        });
        crate::failpoint::override_ms("Q_BOOT_TIME_MS", btime.map_or(0, |b| b * 1000))
    })
}

/// What q reads of a process in `/proc/PID/stat`: parsed here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `Z`, ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// The start time in clock ticks since boot (field 22).
    pub start_ticks: u64,
}

/// The stat of process `pid`, or `None` when there is no such process.
pub fn stat(pid: i32) -> Option<Stat> {
    let s = read_stat(pid)?;
    // The command name (field 2) may contain spaces and parentheses: skip to
    // the last ')'. Then: state (3), ppid (4), pgrp (5), session (6), ...,
    // starttime (22).
    let mut f = s[s.rfind(')')? + 1..].split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    let session = f.next()?.parse().ok()?;
    let start_ticks = f.nth(15)?.parse().ok()?;
    Some(Stat { state, ppid, pgrp, session, start_ticks })
}

/// The start time of a process in clock ticks since boot, or `None` when
/// there is no such process.
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat(pid).map(|s| s.start_ticks)
}

/// Is the process `pid` with this start time still alive (and not a zombie)?
pub fn alive(pid: i32, ticks: u64) -> bool {
    stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X') && s.start_ticks == ticks)
}

/// `/proc/PID/stat`, in one read where it fits (it is a few hundred bytes;
/// `read_to_string` would take six small reads).
fn read_stat(pid: i32) -> Option<String> {
    use std::io::Read;
    let mut f = fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = Vec::with_capacity(1024);
    f.by_ref().take(1024).read_to_end(&mut buf).ok()?;
    if buf.len() == 1024 {
        f.read_to_end(&mut buf).ok()?;
    }
    String::from_utf8(buf).ok()
}

/// This process's pid and start time.
pub fn me() -> (i32, u64) {
    static ME: OnceLock<(i32, u64)> = OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id() as i32;
        (pid, start_ticks(pid).unwrap_or(0))
    })
}

/// Kill what is left of a job's process group, if it is provably the group
/// that was recorded: if a process with the leader's pid exists it must have
/// the recorded start time (a reused pid is never signalled). While any
/// member of a group lives, its number cannot be reused by a new process.
/// Returns whether a signal was sent.
pub fn kill_group(pgid: i32, leader_start: u64, sig: nix::sys::signal::Signal) -> bool {
    use nix::unistd::Pid;
    if pgid <= 1 {
        return false;
    }
    if let Some(t) = start_ticks(pgid)
        && t != leader_start
    {
        return false;
    }
    nix::sys::signal::killpg(Pid::from_raw(pgid), sig).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn self_is_alive() {
        let (pid, t) = super::me();
        assert!(t > 0);
        assert!(super::alive(pid, t));
        assert!(!super::alive(pid, t + 1));
        assert!(!super::host().boot_id.is_empty());
    }

    #[test]
    fn this_process_stat() {
        use super::*;
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert_eq!(s.pgrp, nix::unistd::getpgrp().as_raw());
        assert_eq!(s.session, nix::unistd::getsid(None).unwrap().as_raw());
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert!(s.start_ticks > 0 && alive(me, s.start_ticks));
        assert!(!alive(me, s.start_ticks + 1), "another start time is another process");
    }
}
