//! The backends the conformance suite runs on, each a fresh, private
//! queue, with the few hooks a test needs that no tool has: make a claim's
//! lease run out, and ask whether it has. A second backend joins the suite
//! by adding its constructor to [`all`].

#![allow(dead_code)] // each test binary uses part of this

pub mod pg;

use q_queue::job::{PushContext, validate};
use q_queue::{Backend, Durability, Location, OpenOpts};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct Fixture {
    pub name: &'static str,
    pub b: Arc<dyn Backend>,
    kind: Kind,
    _keep: tempfile::TempDir,
}

enum Kind {
    Dir(PathBuf),
    /// The server's URL with this test's schema; a client for the hooks.
    Pg { schema: String, admin: Box<std::sync::Mutex<postgres::Client>> },
}

impl Fixture {
    /// A fresh directory queue.
    pub fn dir(durability: Durability) -> Fixture {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("q");
        let b = q_queue::backend::create(&Location::Dir(root.clone()), None, OpenOpts { durability, ..OpenOpts::default() }).unwrap();
        Fixture { name: "dir", b, kind: Kind::Dir(root), _keep: d }
    }

    /// A fresh PostgreSQL queue: a schema of its own on the test run's server.
    pub fn pg(durability: Durability) -> Fixture {
        let server = pg::server();
        let schema = pg::schema();
        let url = format!("{}?schema={schema}&queue=conformance", server.url);
        let d = tempfile::tempdir().unwrap();
        let o = OpenOpts { durability, local: Some(d.path().join("local")), ..OpenOpts::default() };
        let b = q_queue::backend::create(&Location::Postgres(url), None, o).unwrap();
        let admin = postgres::Client::connect(&server.url, postgres::NoTls).unwrap();
        Fixture { name: "postgres", b, kind: Kind::Pg { schema, admin: Box::new(std::sync::Mutex::new(admin)) }, _keep: d }
    }

    /// The queue directory, for checks of the directory's own invariants.
    pub fn queue_dir(&self) -> Option<q_queue::Queue> {
        match &self.kind {
            Kind::Dir(root) => q_queue::Queue::open(root).unwrap(),
            Kind::Pg { .. } => None,
        }
    }

    /// Run a statement on the test's schema (`{s}` in it).
    fn admin(&self, stmt: &str, id: &str) -> postgres::Row {
        let Kind::Pg { schema, admin } = &self.kind else { panic!("not a database fixture") };
        admin.lock().unwrap().query_one(&stmt.replace("{s}", &format!("\"{schema}\"")), &[&id]).unwrap()
    }

    /// Make the lease of attempt `attempt` of job `id` run out (its
    /// holder stalled for two minutes).
    pub fn expire(&self, id: &str, attempt: u32) {
        match &self.kind {
            Kind::Pg { .. } => {
                let _ = attempt;
                self.admin("UPDATE {s}.job SET lease_until = now() - interval '2 minutes' WHERE id = $1 RETURNING 1", id);
            }
            Kind::Dir(_) => {
                let q = self.queue_dir().unwrap();
                let f = std::fs::File::options().write(true).open(q.lease_path(id, attempt)).unwrap();
                f.set_modified(SystemTime::now() - Duration::from_secs(120)).unwrap();
            }
        }
    }

    /// The process holding claim `c` died. A directory knows at once (its
    /// lease lock is free); a database learns it when the lease runs out.
    pub fn died(&self, c: q_queue::Claim) {
        match &self.kind {
            Kind::Dir(_) => drop(c),
            Kind::Pg { .. } => self.expire(&c.id, c.attempt()),
        }
    }

    /// Has that lease run out?
    pub fn expired(&self, id: &str, attempt: u32) -> bool {
        match &self.kind {
            Kind::Pg { .. } => self.admin("SELECT coalesce(lease_until < now(), false) FROM {s}.job WHERE id = $1", id).get(0),
            Kind::Dir(_) => {
                let q = self.queue_dir().unwrap();
                let m = std::fs::metadata(q.lease_path(id, attempt)).unwrap();
                m.modified().unwrap().elapsed().unwrap_or_default() > Duration::from_secs(60)
            }
        }
    }

    /// A token of the right form that is not `token`.
    pub fn other_token(&self, token: &str) -> String {
        match &self.kind {
            Kind::Dir(_) => {
                let (a, rest) = token.split_once('.').unwrap();
                format!("{}.{rest}", a.parse::<u32>().unwrap() + 7)
            }
            Kind::Pg { .. } => (token.parse::<i64>().unwrap() + 1_000_000).to_string(),
        }
    }

    /// Push job lines (as one push); their ids.
    pub fn push(&self, lines: &[serde_json::Value]) -> Vec<String> {
        let ctx = PushContext { cwd: "/".into(), env: Default::default(), now_ms: q_queue::time::now_ms() };
        let jobs = lines.iter().map(|l| validate(l.as_object().unwrap(), &ctx).unwrap()).collect();
        self.b.push(jobs).into_iter().map(|r| r.unwrap().id).collect()
    }
}

/// Every backend this build has, fresh.
pub fn all(durability: Durability) -> Vec<Fixture> {
    vec![Fixture::dir(durability), Fixture::pg(durability)]
}
