//! JSON lines on stdout: one object per line, flushed per line. A closed
//! stdout is not a crash: writes report it so the caller can stop quietly
//! (or, for `q-claim`, hand the claim back).

use serde::Serialize;
use std::io::{self, Write};

/// Write one JSON line to stdout. `Ok(false)` when stdout is closed.
pub fn line<T: Serialize + ?Sized>(v: &T) -> io::Result<bool> {
    lines(std::slice::from_ref(&v))
}

/// Write several JSON lines with one write. `Ok(false)` when stdout is closed.
pub fn lines<T: Serialize>(vs: &[T]) -> io::Result<bool> {
    let mut buf = Vec::with_capacity(vs.len() * 128);
    for v in vs {
        serde_json::to_writer(&mut buf, v).map_err(io::Error::other)?;
        buf.push(b'\n');
    }
    let mut out = io::stdout().lock();
    match out.write_all(&buf).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// Is stdout a terminal?
pub fn stdout_is_tty() -> bool {
    use std::io::IsTerminal;
    io::stdout().is_terminal()
}

pub fn stderr_is_tty() -> bool {
    use std::io::IsTerminal;
    io::stderr().is_terminal()
}

/// The width in columns of the terminal a stream is, if it is one.
pub fn width(stream: &impl std::os::fd::AsFd) -> Option<usize> {
    terminal_size::terminal_size_of(stream).map(|(w, _)| usize::from(w.0)).filter(|&w| w > 10)
}
