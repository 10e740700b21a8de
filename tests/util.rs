//! Test harness: a temporary queue per test, commands wired to it with a
//! scrubbed environment, JSON-line helpers, and waiting on conditions with a
//! deadline (never a bare sleep). Processes a test starts are killed (by
//! their own pid only) when the handle drops.

#![allow(dead_code, unused_imports)]

pub use serde_json::{Value, json};
pub use std::path::{Path, PathBuf};
pub use std::process::{Child, Command, Output, Stdio};
pub use std::time::{Duration, Instant};
use std::io::Write;

/// Path of a built tool.
pub fn bin(name: &str) -> PathBuf {
    let p = match name {
        "q-push" => env!("CARGO_BIN_EXE_q-push"),
        "q-claim" => env!("CARGO_BIN_EXE_q-claim"),
        "q-ls" => env!("CARGO_BIN_EXE_q-ls"),
        "q-run" => env!("CARGO_BIN_EXE_q-run"),
        "q-wait" => env!("CARGO_BIN_EXE_q-wait"),
        "q-log" => env!("CARGO_BIN_EXE_q-log"),
        "q-ctl" => env!("CARGO_BIN_EXE_q-ctl"),
        "q-supervise" => env!("CARGO_BIN_EXE_q-supervise"),
        "q-gc" => env!("CARGO_BIN_EXE_q-gc"),
        "q" => env!("CARGO_BIN_EXE_q"),
        other => panic!("unknown tool {other}"),
    };
    PathBuf::from(p)
}

/// A temporary directory holding a queue (at `root/q`) and scratch files.
pub struct QDir {
    pub tmp: tempfile::TempDir,
    pub queue: PathBuf,
    /// Variables every command of this queue gets (the power-loss tests
    /// set the simulated boot and the durability here).
    pub env: std::sync::Mutex<Vec<(String, String)>>,
}

impl QDir {
    pub fn new() -> QDir {
        let tmp = tempfile::Builder::new().prefix("qtest").tempdir().expect("tempdir");
        let queue = tmp.path().join("q");
        QDir { tmp, queue, env: Default::default() }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// A command for a tool, on this queue, with a scrubbed environment.
    pub fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(bin(tool));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("Q_") {
                c.env_remove(&k);
            }
        }
        c.env("Q_DIR", &self.queue);
        c.envs(self.env.lock().unwrap().iter().map(|(k, v)| (k, v)));
        c.current_dir(self.tmp.path());
        c.stdin(Stdio::null());
        c
    }

    /// Run a tool to completion (with a 60 s guard) and return its output.
    pub fn run(&self, tool: &str, args: &[&str]) -> Out {
        let mut c = self.cmd(tool);
        c.args(args);
        run_cmd(c, None)
    }

    /// Run a tool with `input` on stdin.
    pub fn run_in(&self, tool: &str, args: &[&str], input: &str) -> Out {
        let mut c = self.cmd(tool);
        c.args(args);
        run_cmd(c, Some(input.as_bytes().to_vec()))
    }

    /// Push job lines (JSON) in one q-push; their ids, in order.
    pub fn push_lines(&self, lines: &[Value]) -> Vec<String> {
        let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let o = self.run_in("q-push", &[], &input);
        o.ok();
        o.lines().iter().map(|l| l["id"].as_str().expect("id").to_owned()).collect()
    }

    /// Push one argv job and return its id.
    pub fn push(&self, args: &[&str]) -> String {
        let o = self.run("q-push", args);
        o.ok();
        o.lines()[0]["id"].as_str().expect("id").to_owned()
    }

    /// Names of the files in a state directory (recursively for pending).
    pub fn files(&self, dir: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in walkdir::WalkDir::new(self.queue.join(dir)).min_depth(1) {
            let e = e.expect("walk");
            if e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.') {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }

    /// The state of a job per `q-ls ID`.
    pub fn state(&self, id: &str) -> String {
        let o = self.run("q-ls", &["--json", id]);
        o.lines().first().map(|v| v["state"].as_str().unwrap_or("").to_owned()).unwrap_or_default()
    }

    /// `q-ls --json ID` record.
    pub fn job(&self, id: &str) -> Value {
        self.run("q-ls", &["--json", id]).lines().into_iter().next().unwrap_or(Value::Null)
    }

    /// Set a variable for every later command of this queue.
    pub fn set_env(&self, k: &str, v: &str) {
        let mut e = self.env.lock().unwrap();
        e.retain(|(key, _)| key != k);
        e.push((k.to_owned(), v.to_owned()));
    }

    /// A file path in the scratch area.
    pub fn file(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// The captured result of a finished command.
#[derive(Debug)]
pub struct Out {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub what: String,
}

impl Out {
    pub fn code(&self) -> i32 {
        self.status.unwrap_or(-1)
    }

    /// Assert success; panics with everything we know otherwise.
    pub fn ok(&self) -> &Out {
        assert_eq!(self.status, Some(0), "command failed: {self:#?}");
        self
    }

    pub fn expect_code(&self, code: i32) -> &Out {
        assert_eq!(self.status, Some(code), "unexpected status: {self:#?}");
        self
    }

    /// Stdout parsed as JSON lines (every line must parse).
    pub fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}\n{self:#?}")))
            .inspect(crate::records::check)
            .collect()
    }
}

pub fn run_cmd(mut c: Command, input: Option<Vec<u8>>) -> Out {
    let what = format!("{c:?}");
    let records = prints_records(c.get_program());
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    if let Some(inp) = input {
        let mut sin = child.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            let _ = sin.write_all(&inp);
        });
    }
    let guard = Killer::new(child.id());
    let o = child.wait_with_output().expect("wait");
    guard.disarm();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    if records {
        crate::records::check_text(&stdout);
    }
    Out {
        status: o.status.code().or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            o.status.signal().map(|s| 128 + s)
        }),
        stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        what,
    }
}

/// Is `program` a tool whose stdout is records only? Not q-log (a job's
/// output) nor the `q` front door (any tool).
fn prints_records(program: &std::ffi::OsStr) -> bool {
    let name = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or("");
    ["q-push", "q-claim", "q-run", "q-ls", "q-wait", "q-ctl", "q-gc"].contains(&name)
}

/// Kills a pid after 120 s unless disarmed: a hung child fails the test
/// instead of hanging CI.
pub struct Killer {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Killer {
    pub fn new(pid: u32) -> Killer {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            while Instant::now() < until {
                if d.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !d.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
            }
        });
        Killer { done }
    }

    pub fn disarm(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A spawned process that is killed (SIGKILL, by its own pid) when dropped.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn spawn(mut c: Command) -> Proc {
        Proc { child: c.spawn().expect("spawn") }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Wait for exit with a deadline; panics if it does not exit in time.
    pub fn wait_for(&mut self, within: Duration) -> i32 {
        self.wait_or_say(within, String::new)
    }

    /// [`Proc::wait_for`], and when it does not exit in time the panic
    /// says what `say` tells (a log of the process, say).
    pub fn wait_or_say(&mut self, within: Duration, say: impl Fn() -> String) -> i32 {
        let until = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                use std::os::unix::process::ExitStatusExt;
                return st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
            }
            assert!(Instant::now() < until, "process {} did not exit within {within:?}{}", self.pid(), say());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Collect the remaining stdout (after exit) as a string.
    pub fn stdout(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Wait until `cond` holds, polling every 20 ms, or panic after `within`.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < until, "timed out after {within:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Does a process with this pid exist (and is not a zombie)?
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Parse JSON lines from a string.
pub fn parse_lines(s: &str) -> Vec<Value> {
    s.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("json line")).inspect(crate::records::check).collect()
}

/// Wait until process `pid` catches signal `sig` (its bit in SigCgt of
/// /proc/PID/status): its handler is installed.
pub fn wait_catches(pid: i32, sig: nix::sys::signal::Signal) {
    let status = format!("/proc/{pid}/status");
    let bit = 1u64 << (sig as i32 - 1);
    wait_until("the process catches the signal", Duration::from_secs(30), || {
        std::fs::read_to_string(&status)
            .ok()
            .and_then(|s| {
                let hex = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?.trim().to_owned();
                u64::from_str_radix(&hex, 16).ok()
            })
            .is_some_and(|m| m & bit != 0)
    });
}

/// A tool running on a pseudo-terminal, its screen kept by a terminal
/// model (vt100) fed from the pty by a thread. Killed (by its own pid) when
/// dropped.
pub struct Screen {
    pub master: Box<dyn portable_pty::MasterPty + Send>,
    /// Set when the pty's output has all been read (every slave closed).
    read_all: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub child: Box<dyn portable_pty::Child + Send + Sync>,
    pub parser: std::sync::Arc<std::sync::Mutex<vt100::Parser>>,
    writer: Box<dyn std::io::Write + Send>,
}

impl Screen {
    /// Start `tool ARGS` on this queue in a `cols`×`rows` terminal, with
    /// the queue's scrubbed environment plus `env`.
    pub fn start(q: &QDir, tool: &str, args: &[&str], (cols, rows): (u16, u16), env: &[(&str, &str)]) -> Screen {
        use portable_pty::{CommandBuilder, PtySize, native_pty_system};
        let pair = native_pty_system().openpty(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 }).expect("openpty");
        let mut c = CommandBuilder::new(bin(tool));
        c.args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("Q_") {
                c.env_remove(&k);
            }
        }
        c.env("Q_DIR", &q.queue);
        c.env("TERM", "xterm-256color");
        for (k, v) in env {
            c.env(k, v);
        }
        c.cwd(q.path());
        let child = pair.slave.spawn_command(c).expect("spawn on the pty");
        drop(pair.slave);
        let parser = std::sync::Arc::new(std::sync::Mutex::new(vt100::Parser::new(nz(rows), nz(cols), 0)));
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let p = std::sync::Arc::clone(&parser);
        let read_all = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = std::sync::Arc::clone(&read_all);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match std::io::Read::read(&mut reader, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => p.lock().unwrap().process(&buf[..n]),
                }
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        let writer = pair.master.take_writer().expect("pty writer");
        Screen { master: pair.master, read_all, child, parser, writer }
    }

    /// The screen's text, one string per row (trailing spaces cut).
    pub fn rows(&self) -> Vec<String> {
        let p = self.parser.lock().unwrap();
        let (_, cols) = p.screen().size();
        p.screen().rows(0, cols.get()).map(|r| r.trim_end().to_owned()).collect()
    }

    /// Wait until the screen satisfies `cond`, or panic showing it.
    pub fn wait_for(&self, what: &str, within: Duration, mut cond: impl FnMut(&[String], &vt100::Screen) -> bool) -> Vec<String> {
        let until = Instant::now() + within;
        loop {
            let rows = self.rows();
            if cond(&rows, self.parser.lock().unwrap().screen()) {
                return rows;
            }
            assert!(Instant::now() < until, "timed out after {within:?} waiting for: {what}; the screen:\n{}", rows.join("\n"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resize the terminal (the model first, so that what is drawn after
    /// the change is read at the new size).
    pub fn resize(&self, cols: u16, rows: u16) {
        self.parser.lock().unwrap().screen_mut().set_size(nz(rows), nz(cols));
        self.master.resize(portable_pty::PtySize { rows, cols, pixel_width: 0, pixel_height: 0 }).expect("resize");
    }

    /// Type on the terminal.
    pub fn keys(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the pty");
        self.writer.flush().expect("flush the pty");
    }

    /// Wait for the tool to exit and everything it wrote to be read; its
    /// status.
    pub fn wait_exit(&mut self, within: Duration) -> u32 {
        let until = Instant::now() + within;
        let mut status = None;
        loop {
            if status.is_none() {
                status = self.child.try_wait().expect("try_wait").map(|st| st.exit_code());
            }
            if let Some(code) = status.filter(|_| self.read_all.load(std::sync::atomic::Ordering::Acquire)) {
                return code;
            }
            assert!(Instant::now() < until, "the tool on the pty did not exit within {within:?}; the screen:\n{}", self.rows().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Is the terminal's line discipline back in cooked mode (echo, lines)?
    pub fn cooked(&self) -> bool {
        use nix::sys::termios::LocalFlags;
        let want = LocalFlags::ICANON.bits() | LocalFlags::ECHO.bits() | LocalFlags::ISIG.bits();
        self.master.get_termios().is_some_and(|t| t.local_flags.bits() & want == want)
    }
}

fn nz(n: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(n).expect("a terminal has rows and columns")
}

impl Drop for Screen {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
