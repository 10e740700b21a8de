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

/// Where the test servers live: under `/tmp` (which the `postgres` user
/// can reach wherever the checkout is), one directory per checkout.
fn scratch() -> PathBuf {
    let checkout = env!("CARGO_TARGET_TMPDIR");
    let h = checkout.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let d = Path::new("/tmp").join(format!("q-test-pg-{h:016x}"));
    fs::create_dir_all(&d).unwrap();
    if is_root() {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    d
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
    let base = scratch().join("pg");
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
    let c = Cluster::init(&base);
    let mut f = fs::File::create(&state).unwrap();
    writeln!(f, "{run} {}", c.port).unwrap();
    let url = c.url();
    std::mem::forget(c); // lives for the test run; the next run stops it
    Server { url }
}

/// A cluster of the test server: initialized, started on a free loopback
/// port, and stopped (immediately) when dropped.
pub struct Cluster {
    base: PathBuf,
    pub port: u16,
    /// The addresses it listens on.
    listen: String,
    /// More server options.
    extra: String,
}

impl Cluster {
    /// A private cluster of one test (one that restarts its server).
    pub fn private() -> Cluster {
        let base = scratch().join(format!("private-{}", q_queue::id::new_id().to_lowercase()));
        fs::create_dir_all(&base).unwrap();
        Cluster::init(&base)
    }

    /// A private cluster that takes TLS connections only, with a server
    /// certificate for 127.0.0.1 signed by `ca.pem` in the returned
    /// directory.
    pub fn private_tls() -> (Cluster, PathBuf) {
        let base = scratch().join(format!("tls-{}", q_queue::id::new_id().to_lowercase()));
        fs::create_dir_all(&base).unwrap();
        let certs = base.join("certs");
        fs::create_dir_all(&certs).unwrap();
        let sh = |cmd: &str| {
            let o = Command::new("sh").arg("-c").arg(cmd).current_dir(&certs).output().unwrap();
            assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
        };
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=q-test-ca 2>/dev/null");
        sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null");
        sh("printf 'subjectAltName=IP:127.0.0.1\\n' > san && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san 2>/dev/null");
        if is_root() {
            Command::new("chown").args(["-R", "postgres"]).arg(&certs).status().unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(certs.join("server.key"), fs::Permissions::from_mode(0o600)).unwrap();
        let extra = format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            certs.join("server.crt").display(),
            certs.join("server.key").display()
        );
        let c = Cluster::init_with(&base, &extra, Some("hostssl all all 127.0.0.1/32 trust\n"));
        (c, certs)
    }

    /// A private cluster that also listens on `addr` (an address of this
    /// machine), taking connections from `subnet` with a password
    /// (scram-sha-256) and from 127.0.0.1 without: the test sets the
    /// password of user `q` (`ALTER ROLE`).
    pub fn private_on(addr: &str, subnet: &str) -> Cluster {
        let base = scratch().join(format!("net-{}", q_queue::id::new_id().to_lowercase()));
        fs::create_dir_all(&base).unwrap();
        let hba = format!("host all all 127.0.0.1/32 trust\nhost all all {subnet} scram-sha-256\n");
        Cluster::init_listening(&base, &format!("127.0.0.1,{addr}"), "", Some(&hba))
    }

    fn init(base: &Path) -> Cluster {
        Cluster::init_with(base, "", None)
    }

    fn init_with(base: &Path, extra: &str, hba: Option<&str>) -> Cluster {
        Cluster::init_listening(base, "127.0.0.1", extra, hba)
    }

    fn init_listening(base: &Path, listen: &str, extra: &str, hba: Option<&str>) -> Cluster {
        let data = base.join("data");
        let _ = fs::remove_dir_all(&data);
        let sock = base.join("sock");
        let _ = fs::remove_dir_all(&sock);
        fs::create_dir_all(&sock).unwrap();
        if is_root() {
            // The server's user must reach and own its directories.
            for d in [base, sock.as_path()] {
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
        if let Some(hba) = hba {
            let f = data.join("pg_hba.conf");
            fs::write(&f, format!("local all all trust\n{hba}")).unwrap();
        }
        let c = Cluster { base: base.to_path_buf(), port: free_port(), listen: listen.to_owned(), extra: extra.to_owned() };
        c.start();
        c
    }

    fn data(&self) -> String {
        self.base.join("data").to_string_lossy().into_owned()
    }

    fn opts(&self) -> String {
        format!(
            "-c listen_addresses={} -p {} -k {} -c fsync=off -c full_page_writes=off -c max_connections=200 {}",
            self.listen,
            self.port,
            self.base.join("sock").display(),
            self.extra
        )
    }

    fn start(&self) {
        let log = self.base.join("log");
        let out = pg("pg_ctl", &["-D", &self.data(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "-o", &self.opts(), "start"]);
        assert!(
            out.status.success(),
            "the test server did not start:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stop the server at once, as a crash would (`-m immediate`), and
    /// start it again.
    pub fn restart(&self) {
        self.restart_as("immediate");
    }

    /// Stop the server with `pg_ctl stop -m MODE` (`fast`: every session
    /// is ended, as an administrator's restart does) and start it again.
    pub fn restart_as(&self, mode: &str) {
        let out = pg("pg_ctl", &["-D", &self.data(), "-m", mode, "-w", "stop"]);
        assert!(out.status.success(), "stop: {}", String::from_utf8_lossy(&out.stderr));
        self.start();
    }

    pub fn url(&self) -> String {
        format!("postgres://q@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        pg("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// A fresh schema name for one test.
pub fn schema() -> String {
    format!("t_{}", q_queue::id::new_id().to_lowercase())
}
