//! A private PostgreSQL server for the tests: one cluster per test run
//! (nextest's run id), started by the first test that needs it on a free
//! loopback port, as the `postgres` user when the tests run as root (the
//! server refuses root). Every test gets a schema of its own. A missing
//! server is a failure, never a skip: the suite says what to install.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where Debian puts the server's programs.
const PG_BINS: &[&str] = &["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"];

pub struct Server {
    /// `postgres://q@127.0.0.1:PORT/postgres`
    pub url: String,
}

fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("Q_TEST_PG_BIN") {
        return PathBuf::from(d);
    }
    PG_BINS.iter().map(PathBuf::from).find(|d| d.join("initdb").is_file()).unwrap_or_else(|| {
        panic!("PostgreSQL's server is not installed (no initdb in {PG_BINS:?}): install it (Debian: apt-get install postgresql), or set Q_TEST_PG_BIN")
    })
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Run a server program, as `postgres` when we are root.
fn pg(prog: &str, args: &[&str]) -> std::process::Output {
    let exe = bin_dir().join(prog);
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    c.args(args).current_dir("/");
    c.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The server of this test run.
pub fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(start)
}

fn start() -> Server {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pg");
    fs::create_dir_all(&base).unwrap();
    let lock = fs::File::create(base.join("lock")).unwrap();
    lock.lock().unwrap();
    let run = std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| format!("pid-{}", std::process::id()));
    let state = base.join("run");
    if let Ok(s) = fs::read_to_string(&state)
        && let Some((r, port)) = s.trim().split_once(' ')
    {
        if r == run {
            return Server { url: format!("postgres://q@127.0.0.1:{port}/postgres") };
        }
        // An earlier run's cluster: stopped, so each run has its own.
        let data = base.join("data");
        if data.join("postmaster.pid").exists() {
            pg("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        }
    }
    let data = base.join("data");
    let _ = fs::remove_dir_all(&data);
    let sock = base.join("sock");
    let _ = fs::remove_dir_all(&sock);
    fs::create_dir_all(&sock).unwrap();
    if is_root() {
        // The server's user must reach and own its directories.
        for d in [&base, &sock] {
            Command::new("chown").arg("postgres").arg(d).status().unwrap();
        }
        let mut p = base.parent();
        while let Some(d) = p {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = fs::metadata(d)
                && m.permissions().mode() & 0o001 == 0
            {
                panic!("{} is not searchable by the postgres user: the test server cannot live under it", d.display());
            }
            p = d.parent();
        }
    }
    let out = pg("initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "q", "--no-sync", "-E", "UTF8", "--no-locale"]);
    assert!(out.status.success(), "initdb failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let opts = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c full_page_writes=off -c max_connections=200",
        sock.display()
    );
    let log = base.join("log");
    let out = pg("pg_ctl", &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "-o", &opts, "start"]);
    assert!(
        out.status.success(),
        "the test server did not start:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(&log).unwrap_or_default()
    );
    let mut f = fs::File::create(&state).unwrap();
    writeln!(f, "{run} {port}").unwrap();
    Server { url: format!("postgres://q@127.0.0.1:{port}/postgres") }
}

/// A fresh schema name for one test.
pub fn schema() -> String {
    format!("t_{}", q_queue::id::new_id().to_lowercase())
}
