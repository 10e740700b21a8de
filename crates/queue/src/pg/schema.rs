//! The tables of a PostgreSQL queue (docs/POSTGRES.md, "Tables"), created on
//! the first push under an advisory lock, versioned in `meta`.

use super::conn::{Target, sql};
use crate::error::{Error, Kind, Result};
use postgres::Client;

/// The schema version this q writes and reads.
pub const VERSION: i64 = 5;

/// Version 1. `{s}` is the schema, quoted. A new schema is made as version
/// 1 and then upgraded by every step of [`UPGRADES`], as an old one is.
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
INSERT INTO {s}.meta VALUES ('version', '1');
"#;

/// `UPGRADES[i]` takes a schema from version `i + 1` to `i + 2`.
const UPGRADES: [&str; 4] = [
    // 2: ids people type and `--after last`. The role that pushed a job
    // (NULL for jobs pushed before); indexes for an id's prefix and suffix
    // (upper case: ULIDs ignore case), for a name among unfinished jobs,
    // and for a role's newest job. Requests to a running attempt other
    // than a cancel (`q-ctl signal/stop/cont/restart`).
    r#"
ALTER TABLE {s}.attempt ADD COLUMN requests jsonb NOT NULL DEFAULT '[]';
ALTER TABLE {s}.job ADD COLUMN pusher name;
ALTER TABLE {s}.job ALTER COLUMN pusher SET DEFAULT current_user;
CREATE INDEX job_id_prefix ON {s}.job (queue, upper(id) text_pattern_ops);
CREATE INDEX job_id_suffix ON {s}.job (queue, upper(reverse(id)) text_pattern_ops);
CREATE INDEX job_name ON {s}.job (queue, (spec->>'name')) WHERE state IN ('pending','waiting','held','running');
CREATE INDEX job_pusher ON {s}.job (queue, pusher, id COLLATE "C");
"#,
    // 3: a settle in one statement. Whether another job was ever made to
    // wait on this one (set before its `dep` row is written): a job no one
    // waits on settles without looking for dependents.
    r#"
ALTER TABLE {s}.job ADD COLUMN waited boolean NOT NULL DEFAULT false;
UPDATE {s}.job j SET waited = true WHERE EXISTS (SELECT 1 FROM {s}.dep d WHERE d.queue = j.queue AND d.dep = j.id);
"#,
    // 4: reaching a live supervisor (`q-ctl workers`, `slots`, `limit`):
    // per host, the record its supervisor publishes and the asks left for it.
    r#"
CREATE TABLE {s}.supervisor (
  queue text NOT NULL,
  host text NOT NULL,
  rec jsonb NOT NULL,
  asks jsonb NOT NULL DEFAULT '[]',
  PRIMARY KEY (queue, host));
"#,
    // 5: claims that stay flat beside many jobs of classes a claimer
    // cannot take. A job's class: what it takes to run, canonical as the
    // directory backend names it (`gpu=2,mem=4@render`; '' for a job that
    // takes nothing), kept by the server from the job's spec; an index of
    // the ready jobs of each class in claim order, which a claim visits
    // class by class (POSTGRES.md, "Claim").
    r#"
CREATE FUNCTION {s}.class_of(spec jsonb) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
  SELECT coalesce((SELECT string_agg(k || '=' || v, ',' ORDER BY k COLLATE "C")
                     FROM jsonb_each_text(CASE WHEN jsonb_typeof(spec->'needs') = 'object' THEN spec->'needs' END) AS e(k, v)), '')
      || coalesce('@' || (spec->>'group'), '')
$f$;
ALTER TABLE {s}.job ADD COLUMN class text GENERATED ALWAYS AS ({s}.class_of(spec)) STORED;
CREATE INDEX job_class_ready ON {s}.job (queue, class, priority DESC, run_at, id) WHERE state = 'pending';
"#,
];

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

/// Create the schema if it is missing, or upgrade it to [`VERSION`];
/// hosts racing here all succeed (an advisory lock orders them). A role
/// without CREATE is told what to run.
pub fn ensure(c: &mut Client, t: &Target) -> Result<()> {
    if let Some(v) = version(c, t)? {
        check(t, v)?;
        if v == VERSION {
            return Ok(());
        }
    }
    let mut tx = c.transaction().map_err(|e| sql(&t.shown, e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&super::key(&t.schema, "", "create")]).map_err(|e| sql(&t.shown, e))?;
    let s = quoted(&t.schema);
    let found = tx
        .query_opt("SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'meta'", &[&t.schema])
        .map_err(|e| sql(&t.shown, e))?
        .is_some();
    if !found {
        tx.batch_execute(&DDL.replace("{s}", &s)).map_err(|e| refused(t, e))?;
    }
    let row = tx.query_one(&format!("SELECT v FROM {s}.meta WHERE k = 'version'"), &[]).map_err(|e| sql(&t.shown, e))?;
    let mut v: i64 = row.get::<_, String>(0).parse().unwrap_or(VERSION);
    check(t, v)?;
    while v < VERSION {
        let step = UPGRADES[usize::try_from(v - 1).unwrap_or(0)];
        tx.batch_execute(&step.replace("{s}", &s)).map_err(|e| refused(t, e))?;
        v += 1;
        tx.execute(&format!("UPDATE {s}.meta SET v = $1 WHERE k = 'version'"), &[&v.to_string()]).map_err(|e| sql(&t.shown, e))?;
    }
    tx.commit().map_err(|e| sql(&t.shown, e))
}

/// A statement of the schema's creation or upgrade failed; a role that
/// may not make or change it is told what to ask for.
fn refused(t: &Target, e: postgres::Error) -> Error {
    if e.code().is_none_or(|c| c.code() != "42501") {
        return sql(&t.shown, e);
    }
    let db = t.config.get_dbname().unwrap_or("postgres");
    Error::new(
        Kind::Permission,
        format!(
            "queue {}: this role may not create or upgrade the queue's schema ({e}); have the database owner run: GRANT CREATE ON DATABASE \"{db}\" TO \"{}\"; or run any q tool on it once with the role that owns it",
            t.shown,
            t.config.get_user().unwrap_or("")
        ),
    )
}
