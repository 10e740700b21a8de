//! The tables of a PostgreSQL queue (docs/POSTGRES.md, "Tables"), created on
//! the first push under an advisory lock, versioned in `meta`.

use super::conn::{Target, sql};
use crate::error::{Error, Kind, Result};
use postgres::Client;

/// The schema version this q writes and reads.
pub const VERSION: i64 = 1;

/// `{s}` is the schema, quoted.
const DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE {s}.meta (k text PRIMARY KEY, v text NOT NULL);
CREATE TABLE {s}.queue (
  name text PRIMARY KEY,
  paused_since timestamptz,
  paused_until timestamptz);
CREATE SEQUENCE {s}.token_seq;
CREATE TABLE {s}.job (
  queue text NOT NULL,
  id text NOT NULL,
  state text NOT NULL CHECK (state IN ('pending','waiting','held','running','done','dead','canceled')),
  priority int NOT NULL,
  run_at timestamptz NOT NULL,
  attempt int NOT NULL DEFAULT 0,
  failures int NOT NULL DEFAULT 0,
  interrupts int NOT NULL DEFAULT 0,
  token bigint,
  lease_ms bigint,
  lease_until timestamptz,
  key text,
  spec jsonb NOT NULL,
  changed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (queue, id));
CREATE INDEX job_ready ON {s}.job (queue, priority DESC, run_at, id) WHERE state = 'pending';
CREATE INDEX job_running ON {s}.job (queue, lease_until) WHERE state = 'running';
CREATE INDEX job_state ON {s}.job (queue, state, changed_at);
CREATE UNIQUE INDEX job_key ON {s}.job (queue, key) WHERE key IS NOT NULL AND state IN ('pending','waiting','held','running');
ALTER TABLE {s}.job SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);
CREATE TABLE {s}.attempt (
  queue text NOT NULL,
  id text NOT NULL,
  attempt int NOT NULL,
  token bigint NOT NULL,
  lease jsonb NOT NULL,
  run jsonb,
  cancel boolean NOT NULL DEFAULT false,
  requests jsonb NOT NULL DEFAULT '[]',
  result jsonb,
  PRIMARY KEY (queue, id, attempt));
CREATE TABLE {s}.ended (
  queue text NOT NULL,
  id text NOT NULL,
  rec jsonb NOT NULL,
  PRIMARY KEY (queue, id));
CREATE TABLE {s}.dep (
  queue text NOT NULL,
  id text NOT NULL,
  dep text NOT NULL,
  PRIMARY KEY (queue, id, dep));
CREATE INDEX dep_of ON {s}.dep (queue, dep);
CREATE TABLE {s}.env (
  queue text NOT NULL,
  ref text NOT NULL,
  env jsonb NOT NULL,
  owner name NOT NULL DEFAULT current_user,
  PRIMARY KEY (queue, ref));
ALTER TABLE {s}.env ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.env FORCE ROW LEVEL SECURITY;
CREATE POLICY env_of_its_pusher ON {s}.env USING (owner = current_user) WITH CHECK (owner = current_user);
CREATE SEQUENCE {s}.output_seq;
CREATE TABLE {s}.output (
  queue text NOT NULL,
  id text NOT NULL,
  attempt int NOT NULL,
  stream smallint NOT NULL,
  seq bigint NOT NULL DEFAULT nextval('{s}.output_seq'),
  at timestamptz NOT NULL DEFAULT clock_timestamp(),
  chunk bytea NOT NULL,
  PRIMARY KEY (queue, id, attempt, seq));
CREATE TABLE {s}.worker (
  queue text NOT NULL,
  key bigint NOT NULL,
  holder jsonb NOT NULL,
  PRIMARY KEY (queue, key));
CREATE TABLE {s}.holder (
  queue text NOT NULL,
  what text NOT NULL,
  holder jsonb NOT NULL,
  PRIMARY KEY (queue, what));
INSERT INTO {s}.meta VALUES ('version', '{v}');
"#;

/// The schema's quoted name.
pub fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// The schema's version: `None` when there is no queue schema yet.
pub fn version(c: &mut Client, t: &Target) -> Result<Option<i64>> {
    let exists = c
        .query_opt("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'meta'", &[&t.schema])
        .map_err(|e| sql(&t.shown, e))?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let row = c
        .query_opt(&format!("SELECT v FROM {}.meta WHERE k = 'version'", quoted(&t.schema)), &[])
        .map_err(|e| sql(&t.shown, e))?;
    Ok(row.and_then(|r| r.get::<_, String>(0).parse().ok()))
}

/// Check a version this q can use: a newer schema is refused (78).
pub fn check(t: &Target, v: i64) -> Result<()> {
    if v > VERSION {
        return Err(Error::new(
            Kind::Format,
            format!("queue {}: schema {:?} has version {v}; this q knows version {VERSION}: upgrade q", t.shown, t.schema),
        ));
    }
    Ok(())
}

/// Create the schema if it is missing; hosts racing here all succeed (an
/// advisory lock orders them). A role without CREATE is told what to run.
pub fn ensure(c: &mut Client, t: &Target) -> Result<()> {
    if let Some(v) = version(c, t)? {
        return check(t, v);
    }
    let mut tx = c.transaction().map_err(|e| sql(&t.shown, e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&super::key(&t.schema, "", "create")]).map_err(|e| sql(&t.shown, e))?;
    let exists = tx
        .query_opt("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'meta'", &[&t.schema])
        .map_err(|e| sql(&t.shown, e))?
        .is_some();
    if !exists {
        let ddl = DDL.replace("{s}", &quoted(&t.schema)).replace("{v}", &VERSION.to_string());
        if let Err(e) = tx.batch_execute(&ddl) {
            if e.code().is_some_and(|c| c.code() == "42501") {
                let db = t.config.get_dbname().unwrap_or("postgres");
                return Err(Error::new(
                    Kind::Permission,
                    format!(
                        "queue {}: this role may not create the queue's schema ({e}); have the database owner run: GRANT CREATE ON DATABASE \"{db}\" TO \"{}\"; or create it once with a role that may",
                        t.shown,
                        t.config.get_user().unwrap_or("")
                    ),
                ));
            }
            return Err(sql(&t.shown, e));
        }
    }
    tx.commit().map_err(|e| sql(&t.shown, e))
}
