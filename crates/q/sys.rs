//! The one module with `unsafe`: a system call the safe crates do not
//! offer. Audited here, used through a safe wrapper.
//!
//! * `wait4`: per-job resource usage (user/system CPU, peak RSS). The
//!   children-wide `getrusage` would report a lifetime maximum RSS.
//! * `become_user`: a root worker's child becomes the job's owner before
//!   exec (`CommandExt::pre_exec`, which is `unsafe`: the closure runs
//!   between fork and exec). std's own `uid`/`gid` do not set
//!   supplementary groups (its `groups` is unstable) and drop them to none.
#![allow(unsafe_code)]

use nix::libc;
use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Start `cmd` as user `uid`, group `gid`, supplementary `groups` (looked
/// up before the fork), then enter `cwd` as that user, with no way back:
/// in the child, before exec, `setgroups`, `setresgid`, `setresuid` (real,
/// effective and saved ids all set, so the job can never regain root), a
/// check that root cannot be regained, then `chdir`. Any failure stops the
/// exec (the spawn fails, the job does not run).
pub fn become_user(cmd: &mut Command, uid: u32, gid: u32, groups: Vec<libc::gid_t>, cwd: CString) {
    let hook = move || -> io::Result<()> {
        let fail = || Err(io::Error::last_os_error());
        // SAFETY: `groups` is a live Vec of `groups.len()` gid_t, `cwd` a
        // live NUL-terminated string, both made before the fork and only
        // read here. Each call is async-signal-safe (a plain system call)
        // and nothing is allocated: `last_os_error` reads errno only.
        unsafe {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                return fail();
            }
            if libc::setresgid(gid, gid, gid) != 0 || libc::setresuid(uid, uid, uid) != 0 {
                return fail();
            }
            if uid != 0 && (libc::setresuid(0, 0, 0) == 0 || libc::geteuid() != uid) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            if libc::chdir(cwd.as_ptr()) != 0 {
                return fail();
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec and does
    // only what is async-signal-safe (above); it touches no lock, no
    // allocator, no state shared with other threads of the parent.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// How a reaped child ended, with its resource usage.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub user_ms: u64,
    pub sys_ms: u64,
    pub max_rss_kb: u64,
}

/// `wait4(pid, WNOHANG?)`: `Ok(None)` while the child runs (with `nohang`).
pub fn wait4(pid: i32, nohang: bool) -> io::Result<Option<Reaped>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data; zeroed is a valid value and the
    // kernel fills it. `status` and `ru` are valid, exclusive pointers for
    // the duration of the call.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: see above; wait4 has no other preconditions.
        let r = unsafe { libc::wait4(pid, &raw mut status, flags, &raw mut ru) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        break;
    }
    let ms = |tv: libc::timeval| (tv.tv_sec as u64) * 1000 + (tv.tv_usec as u64) / 1000;
    let (exit_code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Ok(Some(Reaped {
        exit_code,
        signal,
        user_ms: ms(ru.ru_utime),
        sys_ms: ms(ru.ru_stime),
        max_rss_kb: ru.ru_maxrss.max(0) as u64,
    }))
}
