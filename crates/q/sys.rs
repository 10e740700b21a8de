//! The one module with `unsafe`: a system call the safe crates do not
//! offer. Audited here, used through a safe wrapper.
//!
//! * `wait4`: per-job resource usage (user/system CPU, peak RSS). The
//!   children-wide `getrusage` would report a lifetime maximum RSS.
#![allow(unsafe_code)]

use nix::libc;
use std::io;

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
