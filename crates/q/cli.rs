//! Options every tool shares, and how they become an open queue.

use anyhow::Result;
use clap::Args;
use q_queue::{Durability, Location, OpenOpts};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

/// An open queue, whatever its backend.
pub type Queue = Arc<dyn q_queue::Backend>;

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The queue: a directory (or dir:PATH) [default: $XDG_STATE_HOME/q/default, i.e. ~/.local/state/q/default]
    #[arg(long, env = "Q_DIR", hide_env_values = true, value_name = "DIR", global = true)]
    pub queue: Option<OsString>,

    /// No progress, notes or per-job lines on stderr (JSON on stdout stays, but q-push and q-gc acknowledgements); a failure still says why
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// full: every state change is durable before it is reported; relaxed:
    /// claims and completions of at-least-once jobs skip their fsyncs (a
    /// crash may re-run a job, never lose one). Pushes are always durable.
    #[arg(long, env = "Q_DURABILITY", value_name = "MODE", default_value = "full", global = true, value_parser = ["full", "relaxed"])]
    pub durability: String,
}

impl Common {
    /// Where the queue is: --queue, $Q_DIR, or the default directory.
    pub fn location(&self) -> Location {
        if let Some(q) = &self.queue {
            return Location::parse(q);
        }
        Location::Dir(state_home().join("q").join("default"))
    }

    fn opts(&self) -> OpenOpts {
        let durability = Durability::parse(&self.durability).unwrap_or_default();
        let loc = self.location();
        if !matches!(loc, Location::Postgres(_)) {
            return OpenOpts { durability, ..OpenOpts::default() };
        }
        OpenOpts {
            durability,
            local: Some(state_home().join("q").join("pg")),
            secrets: q_queue::pg::Secrets { password: password(&loc), pgpass: pgpass() },
        }
    }

    /// Open the queue for reading: `None` when it does not exist yet.
    pub fn open(&self) -> Result<Option<Queue>> {
        Ok(q_queue::backend::open(&self.location(), self.opts())?)
    }

    /// Open the queue, creating it if needed.
    pub fn create(&self, group: Option<u32>) -> Result<Queue> {
        Ok(q_queue::backend::create(&self.location(), group, self.opts())?)
    }

    /// Open a queue that must exist (for tools that change a job).
    pub fn open_existing(&self) -> Result<Queue> {
        self.existing(self.open()?)
    }

    /// The queue [`Common::open`] found, which must exist.
    pub fn existing(&self, q: Option<Queue>) -> Result<Queue> {
        match q {
            Some(q) => Ok(q),
            None => Err(q_queue::Error::new(
                q_queue::Kind::NoJob,
                format!("no queue at {} (push a job first, or pass --queue)", self.location().display()),
            )
            .into()),
        }
    }
}

/// `$XDG_STATE_HOME`, else `~/.local/state`.
fn state_home() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// The variable through which a q tool hands a database password to the
/// q tools it starts (never in their argv); jobs never see it.
pub const PASSWORD_VAR: &str = "Q_PG_PASSWORD";

/// A database queue's password: in its URL, else handed on by the q tool
/// that started this one, else `PGPASSWORD`.
fn password(loc: &Location) -> Option<String> {
    if !matches!(loc, Location::Postgres(_)) {
        return None;
    }
    loc.password().or_else(|| std::env::var(PASSWORD_VAR).ok()).or_else(|| std::env::var("PGPASSWORD").ok()).filter(|p| !p.is_empty())
}

/// The text of the password file (`$PGPASSFILE`, else `~/.pgpass`), which
/// libpq would read: only if no one else may read it, as libpq requires.
fn pgpass() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = std::env::var_os("PGPASSFILE").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let m = std::fs::metadata(&path).ok()?;
    if m.mode() & 0o077 != 0 {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// Give a q tool this one starts what it needs to open the same queue:
/// the password of a database queue goes in its environment, never in
/// its argv.
pub fn hand_on(cmd: &mut std::process::Command, loc: &Location) {
    if let Some(p) = password(loc) {
        cmd.env(PASSWORD_VAR, p);
    }
}

/// How a job names its queue (`Q_DIR`): a directory by its absolute path.
pub fn for_jobs(loc: &Location) -> OsString {
    match loc {
        Location::Dir(p) => Location::Dir(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).to_arg(),
        other => other.to_arg(),
    }
}

/// Parse a duration flag (`90s`, `5m`, `1h30m`) for clap.
pub fn duration(s: &str) -> Result<u64, String> {
    q_queue::time::parse_duration(s).map_err(|e| e.to_string())
}

/// `NAME=N` of `--slots` and `--limit` (several: repeat, or `a=1,b=2`).
pub fn slot(s: &str) -> Result<(String, u32), String> {
    let (name, n) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected NAME=N, e.g. gpu=2"))?;
    q_queue::slots::check_name(name)?;
    let n: u32 = n.parse().map_err(|_| format!("{s:?}: {n:?} is not a whole number"))?;
    if !(1..=q_queue::slots::MAX_SLOTS).contains(&n) {
        return Err(format!("{s:?}: the count must be in 1..{}", q_queue::slots::MAX_SLOTS));
    }
    Ok((name.to_owned(), n))
}

/// `NAME=N` as `q-ctl slots` and `limit` take it: 0 too (none).
pub fn slot_or_none(s: &str) -> Result<(String, u32), String> {
    match s.split_once('=') {
        Some((name, "0")) => {
            q_queue::slots::check_name(name)?;
            Ok((name.to_owned(), 0))
        }
        _ => slot(s),
    }
}

/// The totals of `--slots` and `--limit`; `None` when neither was given.
pub fn slot_totals(slots: &[(String, u32)], limits: &[(String, u32)]) -> Option<std::collections::BTreeMap<q_queue::slots::Res, u32>> {
    use q_queue::slots::Res;
    let t: std::collections::BTreeMap<Res, u32> = slots
        .iter()
        .map(|(k, n)| (Res::Slot(k.clone()), *n))
        .chain(limits.iter().map(|(k, n)| (Res::Group(k.clone()), *n)))
        .collect();
    (!t.is_empty()).then_some(t)
}

/// `--rate N/s` (or `N/m`, `N/h`; a bare N is per second): starts per
/// second.
pub fn rate(s: &str) -> Result<f64, String> {
    let (n, per) = match s.split_once('/') {
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some((n, "h")) => (n, 3600.0),
        Some(_) => return Err(format!("{s:?}: expected N/s, N/m or N/h")),
        None => (s, 1.0),
    };
    let n: f64 = n.parse().map_err(|_| format!("{s:?}: expected N/s, N/m or N/h, N a number (5/s, 30/m, 0.5/s)"))?;
    if !(n.is_finite() && n > 0.0 && n / per <= 1000.0) {
        return Err(format!("{s:?}: must be more than 0 and at most 1000/s"));
    }
    Ok(n / per)
}

/// A rate as a live supervisor's settings keep it: starts per second.
pub fn rate_text(per_second: f64) -> String {
    format!("{per_second}/s")
}

/// `q-ctl rate`: `[NAME=]N/s` as [`rate_arg`] (kept as [`rate_text`]), or
/// `[NAME=]0` for no rate.
pub fn rate_or_none(s: &str) -> Result<(Option<String>, String), String> {
    let (group, r) = match s.split_once('=') {
        Some((g, r)) => {
            q_queue::slots::check_name(g)?;
            (Some(g.to_owned()), r)
        }
        None => (None, s),
    };
    if matches!(r, "0" | "0/s" | "0/m" | "0/h") {
        return Ok((group, q_queue::supervisor::NO_RATE.to_owned()));
    }
    Ok((group, rate_text(rate(r)?)))
}

/// `--rate N/s` (all jobs) or `--rate NAME=N/s` (the jobs of group NAME).
pub fn rate_arg(s: &str) -> Result<(Option<String>, f64), String> {
    match s.split_once('=') {
        Some((g, r)) => {
            q_queue::slots::check_name(g)?;
            Ok((Some(g.to_owned()), rate(r)?))
        }
        None => Ok((None, rate(s)?)),
    }
}

/// `--rate` given as a list: the one for all jobs, and those per group;
/// each at most once.
pub fn rates<R: Clone>(list: &[(Option<String>, R)]) -> Result<(Option<R>, std::collections::BTreeMap<String, R>), String> {
    let mut global = None;
    let mut groups = std::collections::BTreeMap::new();
    for (g, r) in list {
        let dup = match g {
            None => global.replace(r.clone()).is_some(),
            Some(g) => groups.insert(g.clone(), r.clone()).is_some(),
        };
        if dup {
            return Err(format!("the rate of {} is given twice", g.as_deref().map_or("all jobs".to_owned(), |g| format!("group {g}"))));
        }
    }
    Ok((global, groups))
}

/// The worker id of this process: `$Q_WORKER_ID`, else `<host>-<pid>`.
pub fn worker_id() -> String {
    std::env::var("Q_WORKER_ID")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}-{}", q_queue::ident::host().host, std::process::id()))
}

/// A random u64 for backoff jitter: xorshift64*, seeded once per process
/// from the kernel.
pub fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        let mut b = [0u8; 8];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            use std::io::Read;
            let _ = f.read_exact(&mut b);
        }
        x = u64::from_ne_bytes(b) | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    STATE.store(x, Ordering::Relaxed);
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}
