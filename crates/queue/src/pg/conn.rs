//! Where a PostgreSQL queue is and how q connects to it: the URL with q's
//! own parameters (`schema`, `queue`) taken out, the password from the URL,
//! the environment the tool was given, or a `.pgpass` file's text (this
//! crate reads no environment itself), and connections that come back
//! after the server went away.

use crate::error::{Error, Kind, Result};
use postgres::config::SslMode;
use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres::{Client, Config, GenericClient, Socket, Statement};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A parsed `postgres://` location.
#[derive(Clone)]
pub(crate) struct Target {
    pub config: Config,
    /// How the connection is encrypted and the server checked.
    pub tls: Tls,
    pub schema: String,
    pub queue: String,
    /// The location for messages (password masked).
    pub shown: String,
}

/// `sslmode` as libpq reads it: `disable`, `allow`/`prefer` (TLS if the
/// server offers it, unchecked), `require` (TLS, unchecked), `verify-ca`
/// (TLS, the certificate signed by `sslrootcert`), `verify-full` (and the
/// host name in it). The default is `prefer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Clone)]
pub(crate) struct Tls {
    mode: TlsMode,
    /// `sslrootcert`: the certificate authority to trust (PEM).
    root: Option<Vec<u8>>,
    /// The connector, made when a server first takes TLS and then kept
    /// for the process: making one loads the system's certificate store,
    /// tens of milliseconds of CPU that a server without TLS (`prefer`)
    /// never needs.
    made: Arc<OnceLock<std::result::Result<native_tls::TlsConnector, String>>>,
}

impl Tls {
    fn connector(&self) -> std::result::Result<native_tls::TlsConnector, String> {
        self.made
            .get_or_init(|| {
                let mut b = native_tls::TlsConnector::builder();
                match self.mode {
                    TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => {
                        b.danger_accept_invalid_certs(true);
                    }
                    TlsMode::VerifyCa => {
                        b.danger_accept_invalid_hostnames(true);
                    }
                    TlsMode::VerifyFull => {}
                }
                if let Some(pem) = &self.root {
                    let cert = native_tls::Certificate::from_pem(pem).map_err(|e| format!("sslrootcert: {e}"))?;
                    b.add_root_certificate(cert);
                }
                b.build().map_err(|e| e.to_string())
            })
            .clone()
    }
}

/// TLS for a connection, made only once the server said it takes TLS.
struct LazyTls(Tls);

struct LazyConnect {
    tls: Tls,
    domain: String,
}

impl MakeTlsConnect<Socket> for LazyTls {
    type Stream = postgres_native_tls::TlsStream<Socket>;
    type TlsConnect = LazyConnect;
    type Error = std::convert::Infallible;

    fn make_tls_connect(&mut self, domain: &str) -> std::result::Result<LazyConnect, Self::Error> {
        Ok(LazyConnect { tls: self.0.clone(), domain: domain.to_owned() })
    }
}

impl TlsConnect<Socket> for LazyConnect {
    type Stream = postgres_native_tls::TlsStream<Socket>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Self::Stream, Self::Error>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let made = self.tls.connector();
        Box::pin(async move {
            let c = postgres_native_tls::TlsConnector::new(made?, &self.domain);
            TlsConnect::<Socket>::connect(c, stream).await.map_err(Into::into)
        })
    }
}

/// Passwords a tool found for q (never printed, never passed on in argv).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// `PGPASSWORD`, or the variable q passes to the tools it starts.
    pub password: Option<String>,
    /// The text of `~/.pgpass` (or `$PGPASSFILE`).
    pub pgpass: Option<String>,
}

fn bad(shown: &str, why: impl std::fmt::Display) -> Error {
    Error::new(Kind::Data, format!("queue {shown}: {why}"))
}

/// A schema name q accepts: a plain lower-case SQL identifier.
fn valid_schema(s: &str) -> bool {
    !s.is_empty() && s.len() <= 48 && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Target {
    pub fn parse(url: &str, secrets: &Secrets) -> Result<Target> {
        let shown = crate::backend::redact(url);
        // `pg:` is short for `postgres:` (`pg://h/db`), or takes libpq's
        // key=value form (`pg:host=h dbname=db`).
        let url = match url.strip_prefix("pg:") {
            Some(rest) if rest.starts_with("//") => format!("postgres:{rest}"),
            Some(rest) => rest.to_owned(),
            None => url.to_owned(),
        };
        let (mut schema, mut queue) = ("q".to_owned(), "default".to_owned());
        let (mut sslmode, mut sslrootcert) = (None::<String>, None::<String>);
        let rest = if url.contains("://") {
            // q's own query parameters go; the others are the driver's.
            let (base, query) = url.split_once('?').unwrap_or((&url, ""));
            let mut kept = Vec::new();
            for kv in query.split('&').filter(|s| !s.is_empty()) {
                match kv.split_once('=') {
                    Some(("schema", v)) => schema = v.to_owned(),
                    Some(("queue", v)) => queue = crate::backend::percent_decode(v),
                    Some(("sslmode", v)) => sslmode = Some(v.to_owned()),
                    Some(("sslrootcert", v)) => sslrootcert = Some(crate::backend::percent_decode(v)),
                    _ => kept.push(kv),
                }
            }
            if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
        } else {
            let mut kept = Vec::new();
            for kv in url.split_whitespace() {
                match kv.split_once('=') {
                    Some(("schema", v)) => schema = v.to_owned(),
                    Some(("queue", v)) => queue = v.to_owned(),
                    Some(("sslmode", v)) => sslmode = Some(v.to_owned()),
                    Some(("sslrootcert", v)) => sslrootcert = Some(v.to_owned()),
                    _ => kept.push(kv),
                }
            }
            kept.join(" ")
        };
        if !valid_schema(&schema) {
            return Err(bad(&shown, format!("schema {schema:?}: use lower-case letters, digits and _ (at most 48)")));
        }
        if queue.is_empty() || queue.len() > 200 {
            return Err(bad(&shown, "the queue name must be 1 to 200 characters"));
        }
        let mut config = Config::from_str(&rest).map_err(|e| bad(&shown, e))?;
        if config.get_user().is_none() {
            return Err(bad(&shown, "no user: give one (postgres://USER@HOST/DB)"));
        }
        if config.get_password().is_none()
            && let Some(p) = secrets.password.clone().or_else(|| pgpass_lookup(&config, secrets.pgpass.as_deref()?))
        {
            config.password(p);
        }
        let mode = match sslmode.as_deref().unwrap_or("prefer") {
            "disable" => TlsMode::Disable,
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => return Err(bad(&shown, format!("sslmode {other:?}: use disable, allow, prefer, require, verify-ca or verify-full"))),
        };
        let root = match &sslrootcert {
            Some(path) => Some(std::fs::read(path).map_err(|e| bad(&shown, format!("sslrootcert {path}: {e}")))?),
            None => None,
        };
        if matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull) && root.is_none() {
            return Err(bad(&shown, "sslmode=verify-ca and verify-full need sslrootcert=FILE (the certificate authority to trust)"));
        }
        config.ssl_mode(match mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        config.connect_timeout(Duration::from_secs(10));
        // A server behind a silent network (a partition, a dead host):
        // what was sent and never acknowledged for this long ends the
        // connection, which is then made again (`Conn::with`), rather than
        // waiting for TCP's retransmissions for a quarter of an hour.
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
        config.application_name("q");
        if let Some(pem) = &root {
            native_tls::Certificate::from_pem(pem).map_err(|e| bad(&shown, format!("TLS: sslrootcert: {e}")))?;
        }
        Ok(Target { config, tls: Tls { mode, root, made: Default::default() }, schema, queue, shown })
    }

    /// A new connection.
    pub fn connect(&self) -> Result<Client> {
        match self.tls.mode {
            TlsMode::Disable => self.config.connect(postgres::NoTls),
            _ => self.config.connect(LazyTls(self.tls.clone())),
        }
        .map_err(|e| unreachable(&self.shown, &e))
    }
}

/// The password `.pgpass` gives this host, port, database and user
/// (`host:port:db:user:password`, `*` matches anything, `\` escapes).
fn pgpass_lookup(c: &Config, text: &str) -> Option<String> {
    let host = match c.get_hosts().first()? {
        postgres::config::Host::Tcp(h) => h.clone(),
        postgres::config::Host::Unix(_) => "localhost".to_owned(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = c.get_user()?.to_owned();
    let db = c.get_dbname().unwrap_or(&user).to_owned();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f = split_pgpass(line);
        if f.len() != 5 {
            continue;
        }
        let want = [&host, &port, &db, &user];
        if f[..4].iter().zip(want).all(|(f, w)| f == "*" || f == w) {
            return Some(f[4].clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut esc = false;
    for ch in line.chars() {
        match (esc, ch) {
            (true, _) => {
                out.last_mut().unwrap().push(ch);
                esc = false;
            }
            (false, '\\') => esc = true,
            (false, ':') => out.push(String::new()),
            (false, _) => out.last_mut().unwrap().push(ch),
        }
    }
    out
}

/// The server cannot be reached: a temporary failure (75).
pub(crate) fn unreachable(shown: &str, e: &postgres::Error) -> Error {
    Error::new(Kind::Busy, format!("cannot reach the PostgreSQL server of queue {shown}: {e}; try again once it is up"))
}

/// Did this error lose the connection (so that a retry on a new one may help)?
/// Besides a closed socket: the server ending the session in reply to a
/// statement (a fast or immediate shutdown, a terminated backend: 57P01,
/// 57P02), a server not yet taking connections (57P03), and the
/// connection exceptions (class 08). None of these committed the statement.
pub(crate) fn lost(e: &postgres::Error) -> bool {
    e.is_closed()
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        || e.code().is_some_and(|c| {
            let c = c.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
        })
}

/// One connection, made when first needed and made again after the
/// server went away (with backoff).
pub(crate) struct Conn {
    target: Target,
    client: Mutex<Option<Client>>,
    /// Run on every new connection (`LISTEN`, advisory locks it holds).
    setup: Mutex<Vec<String>>,
    /// Connected once: a server that goes away later is waited for.
    ever: std::sync::atomic::AtomicBool,
    /// Statements prepared on the current connection, by their text
    /// (emptied when a new connection is made): a statement run again is
    /// one round trip instead of two.
    prepared: Mutex<HashMap<String, Statement>>,
}

/// How long sent data may stay unacknowledged before a connection is
/// given up (`TCP_USER_TIMEOUT`).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);

/// Set on every session q opens: the server ends a session whose client
/// vanished (a host that died or was cut off sends no FIN) within about
/// 25 s — keepalives from the server's side when the session is idle,
/// `tcp_user_timeout` when the server's own data goes unacknowledged
/// (a `NOTIFY` to a listener, say) — instead of the system's minutes to
/// hours: until then the session's advisory locks (a supervisor's, a
/// worker's presence) stay held. A transaction it left open keeps its row
/// locks, so that is bounded too (q's own transactions never wait between
/// statements).
const SESSION: &str = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3; SET tcp_user_timeout = 25000; SET idle_in_transaction_session_timeout = '60s'";

/// How long a lost connection is tried again before an operation fails.
const RECONNECT_FOR: Duration = Duration::from_secs(30);

impl Conn {
    pub fn new(target: Target) -> Conn {
        Conn { target, client: Mutex::new(None), setup: Mutex::new(Vec::new()), ever: Default::default(), prepared: Default::default() }
    }

    /// `stmt` prepared on this connection: once, then from the cache. Only
    /// inside [`Conn::with`] (or its kin), on the client it gave, or a
    /// transaction of it: a statement belongs to the connection that
    /// prepared it, and the cache is emptied when a new one is made.
    pub fn prepared(&self, c: &mut impl GenericClient, stmt: &str) -> std::result::Result<Statement, postgres::Error> {
        if let Some(s) = self.prepared.lock().unwrap_or_else(|e| e.into_inner()).get(stmt) {
            return Ok(s.clone());
        }
        let s = c.prepare(stmt)?;
        self.prepared.lock().unwrap_or_else(|e| e.into_inner()).insert(stmt.to_owned(), s.clone());
        Ok(s)
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Run `stmt` now and on every new connection, until [`Conn::forget`].
    pub fn keep(&self, stmt: String) -> Result<()> {
        self.setup.lock().unwrap_or_else(|e| e.into_inner()).push(stmt.clone());
        self.with(|c| c.batch_execute(&stmt).map_err(|e| sql(&self.target.shown, e)))
    }

    /// Stop running `stmt` on new connections; run `undo` now.
    pub fn forget(&self, stmt: &str, undo: &str) {
        self.setup.lock().unwrap_or_else(|e| e.into_inner()).retain(|s| s != stmt);
        let _ = self.with(|c| c.batch_execute(undo).map_err(|e| sql(&self.target.shown, e)));
    }

    fn guard(&self) -> MutexGuard<'_, Option<Client>> {
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on the connection; when the connection was lost, connect
    /// again (backing off, for up to [`RECONNECT_FOR`]) and run it again:
    /// `f` must be safe to repeat.
    pub fn with<T>(&self, f: impl FnMut(&mut Client) -> std::result::Result<T, Error>) -> Result<T> {
        self.with_patience(RECONNECT_FOR, f)
    }

    /// Run `f` now if the connection is free and up; `None` when another
    /// thread uses it (it may be waiting on a silent network), when it is
    /// down after it was up (the heartbeat makes it again), or when `f`
    /// failed. For a look that is tried again soon (a
    /// running job's cancel check) and must never make its caller wait.
    pub fn try_now<T>(&self, mut f: impl FnMut(&mut Client) -> std::result::Result<T, Error>) -> Option<T> {
        let mut g = match self.client.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        if !self.ever.load(std::sync::atomic::Ordering::Relaxed) {
            // Never connected yet: the first connection is made here.
            drop(g);
            return self.with(f).ok();
        }
        let c = g.as_mut().filter(|c| !c.is_closed())?;
        match f(c) {
            Ok(v) => Some(v),
            Err(e) => {
                if e.kind == Kind::Busy && e.msg.starts_with(LOST) {
                    *g = None;
                }
                None
            }
        }
    }

    /// [`Conn::with`], waiting for a lost server at most `patience` (the
    /// heartbeat must not wait longer than a lease).
    pub fn with_patience<T>(&self, patience: Duration, mut f: impl FnMut(&mut Client) -> std::result::Result<T, Error>) -> Result<T> {
        let mut g = self.guard();
        let until = std::time::Instant::now() + patience;
        let mut pause = Duration::from_millis(50);
        loop {
            if g.as_ref().is_none_or(Client::is_closed) {
                match self.target.connect().and_then(|mut c| {
                    let setup = std::iter::once(SESSION.to_owned()).chain(self.setup.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned()).collect::<Vec<_>>().join(";");
                    c.batch_execute(&setup).map_err(|e| unreachable(&self.target.shown, &e))?;
                    Ok(c)
                }) {
                    Ok(c) => {
                        self.prepared.lock().unwrap_or_else(|e| e.into_inner()).clear();
                        *g = Some(c);
                        self.ever.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) if self.ever.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < until => {
                        let _ = e;
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_secs(2));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let c = g.as_mut().expect("connected");
            match f(c) {
                Err(e) if e.kind == Kind::Busy && e.msg.starts_with(LOST) && std::time::Instant::now() < until => {
                    *g = None;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                r => return r,
            }
        }
    }
}

const LOST: &str = "connection lost";
/// A transaction the server ended for another's sake (a deadlock, a
/// serialization failure): done again by [`crate::pg::PgQueue`]'s `tx`.
pub(crate) const CONFLICT: &str = "a conflict with another transaction";

/// A database error as q's: a lost connection is temporary (and retried by
/// [`Conn::with`]); a missing privilege says what to grant.
pub(crate) fn sql(shown: &str, e: postgres::Error) -> Error {
    if lost(&e) {
        return Error::new(Kind::Busy, format!("{LOST}: queue {shown}: {e}"));
    }
    let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
    let what = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    match code.as_str() {
        "42501" => Error::new(Kind::Permission, format!("queue {shown}: {what}")),
        // The server ended the transaction for another's sake: try again.
        "40P01" | "40001" => Error::new(Kind::Busy, format!("{CONFLICT}: queue {shown}: {what}")),
        _ => Error::new(Kind::Io, format!("queue {shown}: {what}")),
    }
}
