//! The terminal of a live view: raw mode and the alternate screen while it
//! runs, a frame drawn in place from the top-left corner, keys read from
//! stdin, and SIGWINCH, SIGINT, SIGTERM and SIGHUP turned into events.
//!
//! Invariant: the terminal is given back as it was found (its termios, the
//! main screen, a visible cursor) however the view ends: a return, an error,
//! a signal, or a panic (the panic hook gives it back before the message is
//! printed, so the message lands on the main screen).

use anyhow::{Result, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, SetArg, Termios};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGWINCH};
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The termios found at the start, while the view has the terminal.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";

/// What ended a wait.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Time to look at the queue again.
    Tick,
    /// The terminal changed size.
    Resize,
    /// `q` was pressed, or SIGTERM/SIGHUP came.
    Quit,
    /// Ctrl-C (the key, or SIGINT).
    Interrupt,
}

/// Are stdin and stdout a terminal, as the view needs?
pub fn usable() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// The terminal, held by a live view.
pub struct Term {
    wake: UnixStream,
    winch: Arc<AtomicBool>,
    int: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
}

impl Term {
    /// Take the terminal: raw mode, the alternate screen, no cursor.
    pub fn enter() -> Result<Term> {
        if !usable() {
            bail!("the live view needs a terminal on stdin and stdout");
        }
        let (wake, ping) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        let (winch, int, quit) = (Arc::default(), Arc::default(), Arc::<AtomicBool>::default());
        for (sig, flag) in [(SIGWINCH, &winch), (SIGINT, &int), (SIGTERM, &quit), (SIGHUP, &quit)] {
            signal_hook::flag::register(sig, Arc::clone(flag))?;
            signal_hook::low_level::pipe::register(sig, ping.try_clone()?)?;
        }
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        install_panic_hook();
        *SAVED.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(saved);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        write_out(ENTER)?;
        Ok(Term { wake, winch, int, quit })
    }

    /// Columns and rows (80×24 when the terminal cannot say).
    pub fn size(&self) -> (usize, usize) {
        terminal_size::terminal_size_of(std::io::stdout())
            .map_or((80, 24), |(w, h)| (usize::from(w.0).max(1), usize::from(h.0).max(1)))
    }

    /// Draw a frame: each line over the old one, the rest of the screen
    /// cleared. Lines must already fit the width; there are at most as many
    /// as the screen has rows, the last one without a newline, so nothing
    /// scrolls.
    pub fn draw(&self, lines: &[String]) -> Result<()> {
        let mut s = String::from("\x1b[H");
        for (i, l) in lines.iter().enumerate() {
            if i > 0 {
                s.push_str("\r\n");
            }
            s.push_str(l);
            s.push_str("\x1b[K");
        }
        s.push_str("\x1b[J");
        write_out(&s)
    }

    /// Wait up to `timeout` for a key, a signal or the time to pass.
    pub fn wait(&self, timeout: Duration) -> Result<Event> {
        let stdin = std::io::stdin();
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN), PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let key = fds[0].revents().is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP));
        let mut drain = [0u8; 64];
        while matches!((&self.wake).read(&mut drain), Ok(n) if n > 0) {}
        if self.int.swap(false, Ordering::Relaxed) {
            return Ok(Event::Interrupt);
        }
        if self.quit.swap(false, Ordering::Relaxed) {
            return Ok(Event::Quit);
        }
        if key {
            let mut buf = [0u8; 64];
            let n = stdin.lock().read(&mut buf)?;
            if n == 0 {
                // The terminal hung up.
                return Ok(Event::Quit);
            }
            for b in &buf[..n] {
                match b {
                    b'q' | b'Q' => return Ok(Event::Quit),
                    0x03 => return Ok(Event::Interrupt),
                    _ => {}
                }
            }
        }
        if self.winch.swap(false, Ordering::Relaxed) {
            return Ok(Event::Resize);
        }
        Ok(Event::Tick)
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        restore();
    }
}

/// Give the terminal back, once: the main screen, the cursor, the termios.
fn restore() {
    let saved = SAVED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    if let Some(t) = saved {
        let _ = write_out(LEAVE);
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &t);
    }
}

/// A panic gives the terminal back first, so that its message can be read.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            prev(info);
        }));
    });
}

fn write_out(s: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())?;
    o.flush()?;
    Ok(())
}
