//! The job record: what a job line may say (validated field by field, so an
//! error names the field), and the immutable record written to the queue.

use crate::error::{Error, Kind, Result};
use crate::names::{MAX_PRIORITY, MIN_PRIORITY};
use crate::time;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The version of a job record that uses no field newer than the first
/// format: what this tool writes for most jobs.
pub const JOB_VERSION: u32 = 1;

/// The version of a job record that says what it takes to run (`needs`,
/// `group`): a q that knows only version 1 passes such a job over instead
/// of running it without its slots. The highest version this q knows.
pub const SLOTS_VERSION: u32 = 2;

/// What a claim reads of a job record before it takes it: its format and
/// what it takes to run. One parse of the record, which every claim did
/// for the version alone before `needs` existed.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Peek {
    #[serde(default)]
    pub v: u64,
    #[serde(default)]
    pub needs: BTreeMap<String, u32>,
    #[serde(default)]
    pub group: Option<String>,
}

impl Peek {
    /// `None` when the bytes do not parse: the usual checks deal with them.
    pub fn of(bytes: &[u8]) -> Option<Peek> {
        serde_json::from_slice(bytes).ok()
    }

    /// Written by a newer q (a `v` higher than this q knows)?
    pub fn newer(&self) -> bool {
        self.v > u64::from(SLOTS_VERSION)
    }

    /// Does the record say what [`crate::names::Class`] `c` (none: plain)
    /// says of what it takes?
    pub(crate) fn is_of(&self, c: Option<&crate::names::Class>) -> bool {
        match c {
            None => self.needs.is_empty() && self.group.is_none(),
            Some(c) => c.needs == self.needs && c.group == self.group,
        }
    }
}

/// Is `bytes` a job record of a newer format (a `v` higher than this q
/// knows)? Such a job is left alone. Bytes that do not parse are not
/// "newer": the usual checks deal with them.
pub fn newer_format(bytes: &[u8]) -> bool {
    Peek::of(bytes).is_some_and(|p| p.newer())
}

/// The largest job line (and job record) accepted: 1 MiB.
pub const MAX_RECORD: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EnvFrom {
    #[default]
    Pusher,
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    #[default]
    AtLeastOnce,
    AtMostOnce,
}

/// Retry delay: `base_ms` doubling per failure up to `max_ms`, equal jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { base_ms: 1000, max_ms: 300_000 }
    }
}

impl Backoff {
    /// `"5s"` or `"5s:10m"`.
    pub fn parse(s: &str) -> Result<Backoff> {
        let (b, m) = match s.split_once(':') {
            Some((b, m)) => (time::parse_duration(b)?, time::parse_duration(m)?),
            None => {
                let b = time::parse_duration(s)?;
                (b, b.max(Backoff::default().max_ms))
            }
        };
        if m < b {
            return Err(Error::new(Kind::Data, format!("backoff {s:?}: the cap is below the base")));
        }
        Ok(Backoff { base_ms: b, max_ms: m })
    }

    /// The delay before the retry that follows failure number `failures`
    /// (1-based): `d = min(max, base·2^(failures−1))`, then `d/2 + rand(0..=d/2)`.
    pub fn delay_ms(&self, failures: u32, rand: u64) -> u64 {
        let exp = failures.saturating_sub(1).min(62);
        let d = self.base_ms.saturating_mul(1u64 << exp).min(self.max_ms);
        let half = d / 2;
        d - half + if half == 0 { 0 } else { rand % (half + 1) }
    }
}

/// A job as stored in the queue. Written once at push, never changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub v: u32,
    pub id: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sh: Option<String>,
    pub cwd: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub env_from: EnvFrom,
    /// The recorded environment of the pusher (`env/<ref>.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub priority: i32,
    pub run_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    pub attempts: u32,
    #[serde(default)]
    pub backoff: Backoff,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default)]
    pub delivery: Delivery,
    /// The pusher lets the queue's group read the job's logs (a
    /// group-shared queue; otherwise only the pusher and root read them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub share_logs: bool,
    /// Most wall time over all attempts together (beyond: `dead`,
    /// reason `max-runtime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime_ms: Option<u64>,
    /// Most bytes of output one attempt may write (default: the worker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_limit: Option<u64>,
    /// The slots the job takes while it runs (`{"gpu": 1}`): see `slots.rs`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub needs: BTreeMap<String, u32>,
    /// A name a supervisor can limit (`--limit NAME=N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Fields written by a newer tool, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Job {
    pub fn is_at_most_once(&self) -> bool {
        self.delivery == Delivery::AtMostOnce
    }

    /// The class whose segments the job waits in while pending (none: the
    /// plain segments): what it takes to run (names.rs, [`Class`]).
    ///
    /// [`Class`]: crate::names::Class
    pub(crate) fn class(&self) -> Option<crate::names::Class> {
        crate::names::Class::of(&self.needs, self.group.as_deref())
    }

    /// Parse a stored job record.
    pub fn from_bytes(b: &[u8]) -> Result<Job> {
        serde_json::from_slice(b).map_err(|e| Error::new(Kind::Data, format!("bad job record: {e}")))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// A validated job, ready to push: the record plus what decides its file name.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job: Job,
    pub run_at_ms: i64,
    /// The pusher's environment to record (for `env_from: pusher`).
    pub pusher_env: Option<std::sync::Arc<BTreeMap<String, String>>>,
}

/// What the pusher knows that a job line does not say.
#[derive(Debug, Clone, Default)]
pub struct PushContext {
    /// The pusher's current directory (absolute).
    pub cwd: String,
    /// The pusher's whole environment (shared by all jobs of a push).
    pub env: std::sync::Arc<BTreeMap<String, String>>,
    pub now_ms: i64,
}

const FIELDS: &[&str] = &[
    "cmd", "sh", "cwd", "env", "env_from", "payload", "name", "priority", "run_at", "delay",
    "timeout", "attempts", "backoff", "key", "after", "tags", "delivery", "share_logs", "max_runtime", "output_limit",
    "needs", "group",
];

/// A size in bytes: a number, or a string with an optional K, M or G
/// suffix (powers of 1024), as `--output-limit` takes it.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1u64 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1u64 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)).ok_or_else(|| format!("invalid size {s:?}: use bytes with an optional K, M or G suffix (64M)"))
}

fn field_err(field: &str, what: impl std::fmt::Display) -> Error {
    Error::new(Kind::Data, format!("field {field:?}: {what}"))
}

fn no_nul(field: &str, s: &str) -> Result<()> {
    if s.contains('\0') {
        Err(field_err(field, "contains a NUL character"))
    } else {
        Ok(())
    }
}

fn string(field: &str, v: &Value) -> Result<String> {
    let s = v.as_str().ok_or_else(|| field_err(field, format!("must be a string, not {}", type_name(v))))?;
    no_nul(field, s)?;
    Ok(s.to_owned())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn duration_field(field: &str, v: &Value) -> Result<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|s| s.checked_mul(1000))
            .ok_or_else(|| field_err(field, "must be a non-negative number of seconds or a duration like \"90s\"")),
        Value::String(s) => time::parse_duration(s).map_err(|e| field_err(field, e)),
        _ => Err(field_err(field, format!("must be a duration like \"90s\", not {}", type_name(v)))),
    }
}

fn string_list(field: &str, v: &Value) -> Result<Vec<String>> {
    let arr = v.as_array().ok_or_else(|| field_err(field, format!("must be an array of strings, not {}", type_name(v))))?;
    arr.iter().map(|x| string(field, x)).collect()
}

/// Merge a job line over the defaults from flags: a line's field replaces the
/// default, and `cmd`/`sh`, `run_at`/`delay` replace each other as pairs.
pub fn merge(defaults: &Map<String, Value>, line: Map<String, Value>) -> Map<String, Value> {
    let mut m = defaults.clone();
    let pairs = [("cmd", "sh"), ("run_at", "delay")];
    for (a, b) in pairs {
        if line.contains_key(a) || line.contains_key(b) {
            m.remove(a);
            m.remove(b);
        }
    }
    m.extend(line);
    m
}

/// Validate a job object and build the record. `handler_ok`: a job with
/// neither `cmd` nor `sh` is pure data for a handler (`q-run -- HANDLER`).
pub fn validate(obj: &Map<String, Value>, ctx: &PushContext) -> Result<NewJob> {
    for k in obj.keys() {
        if !FIELDS.contains(&k.as_str()) {
            return Err(Error::new(
                Kind::Data,
                format!("unknown field {k:?} (known fields: {})", FIELDS.join(", ")),
            ));
        }
    }
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());

    let cmd = match get("cmd") {
        Some(v) => {
            let c = string_list("cmd", v)?;
            if c.is_empty() {
                return Err(field_err("cmd", "is empty: give at least the program to run"));
            }
            if c[0].is_empty() {
                return Err(field_err("cmd", "the program name is empty"));
            }
            Some(c)
        }
        None => None,
    };
    let sh = get("sh").map(|v| string("sh", v)).transpose()?;
    if cmd.is_some() && sh.is_some() {
        return Err(Error::new(Kind::Data, "fields \"cmd\" and \"sh\": give one, not both"));
    }
    if sh.as_deref() == Some("") {
        return Err(field_err("sh", "is empty"));
    }

    let cwd = match get("cwd") {
        Some(v) => {
            let c = string("cwd", v)?;
            if c.is_empty() {
                return Err(field_err("cwd", "is empty"));
            }
            if c.starts_with('/') { c } else { format!("{}/{c}", ctx.cwd.trim_end_matches('/')) }
        }
        None => ctx.cwd.clone(),
    };

    let mut env = BTreeMap::new();
    if let Some(v) = get("env") {
        let o = v.as_object().ok_or_else(|| field_err("env", format!("must be an object of strings, not {}", type_name(v))))?;
        for (k, val) in o {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(field_err("env", format!("invalid variable name {k:?}")));
            }
            env.insert(k.clone(), string("env", val)?);
        }
    }
    let env_from = match get("env_from") {
        None => EnvFrom::Pusher,
        Some(v) => match string("env_from", v)?.as_str() {
            "pusher" => EnvFrom::Pusher,
            "worker" => EnvFrom::Worker,
            other => return Err(field_err("env_from", format!("{other:?} is not \"pusher\" or \"worker\""))),
        },
    };

    let name = get("name").map(|v| string("name", v)).transpose()?;
    let priority = match get("priority") {
        None => 0,
        Some(v) => {
            let p = v.as_i64().ok_or_else(|| field_err("priority", format!("must be an integer, not {}", type_name(v))))?;
            if !(i64::from(MIN_PRIORITY)..=i64::from(MAX_PRIORITY)).contains(&p) {
                return Err(field_err("priority", format!("{p} is outside -9999..9999")));
            }
            p as i32
        }
    };

    let run_at_ms = match (get("run_at"), get("delay")) {
        (Some(_), Some(_)) => return Err(Error::new(Kind::Data, "fields \"run_at\" and \"delay\": give one, not both")),
        (Some(v), None) => match v {
            Value::Number(n) => {
                let s = n.as_i64().ok_or_else(|| field_err("run_at", "must be whole Unix seconds"))?;
                time::parse_time(&s.to_string()).map_err(|e| field_err("run_at", e))?
            }
            Value::String(s) => time::parse_time(s).map_err(|e| field_err("run_at", e))?,
            _ => return Err(field_err("run_at", format!("must be an RFC 3339 time or Unix seconds, not {}", type_name(v)))),
        },
        (None, Some(v)) => {
            let d = duration_field("delay", v)?;
            ctx.now_ms.saturating_add(i64::try_from(d).unwrap_or(i64::MAX)).min(time::MAX_MS)
        }
        (None, None) => ctx.now_ms,
    };

    let timeout_ms = get("timeout").map(|v| duration_field("timeout", v)).transpose()?;
    if timeout_ms == Some(0) {
        return Err(field_err("timeout", "must be more than zero"));
    }

    let delivery = match get("delivery") {
        None => Delivery::AtLeastOnce,
        Some(v) => match string("delivery", v)?.as_str() {
            "at-least-once" => Delivery::AtLeastOnce,
            "at-most-once" => Delivery::AtMostOnce,
            other => return Err(field_err("delivery", format!("{other:?} is not \"at-least-once\" or \"at-most-once\""))),
        },
    };
    let attempts = match get("attempts") {
        None => 1,
        Some(v) => {
            let a = v.as_u64().ok_or_else(|| field_err("attempts", format!("must be a positive integer, not {}", type_name(v))))?;
            if a == 0 || a > 10_000 {
                return Err(field_err("attempts", format!("{a} is outside 1..10000")));
            }
            a as u32
        }
    };
    if delivery == Delivery::AtMostOnce && attempts > 1 {
        return Err(field_err("attempts", "must be 1 for an at-most-once job (it is never started twice)"));
    }

    let backoff = match get("backoff") {
        None => Backoff::default(),
        Some(v) => {
            let s = v.as_str().ok_or_else(|| field_err("backoff", format!("must be a string like \"5s\" or \"5s:10m\", not {}", type_name(v))))?;
            Backoff::parse(s).map_err(|e| field_err("backoff", e))?
        }
    };

    let key = get("key").map(|v| string("key", v)).transpose()?;
    if key.as_deref() == Some("") {
        return Err(field_err("key", "is empty"));
    }
    let after = match get("after") {
        None => Vec::new(),
        Some(v) => {
            let ids = string_list("after", v)?;
            for id in &ids {
                crate::id::check_id(id).map_err(|e| field_err("after", e))?;
            }
            ids
        }
    };
    let tags = get("tags").map(|v| string_list("tags", v)).transpose()?.unwrap_or_default();
    let share_logs = match get("share_logs") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| field_err("share_logs", format!("must be true or false, not {}", type_name(v))))?,
    };
    let max_runtime_ms = get("max_runtime").map(|v| duration_field("max_runtime", v)).transpose()?;
    if max_runtime_ms == Some(0) {
        return Err(field_err("max_runtime", "must be more than zero"));
    }
    let output_limit = match get("output_limit") {
        None => None,
        Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| field_err("output_limit", "must be a non-negative number of bytes or a size like \"64M\""))?),
        Some(Value::String(s)) => Some(parse_size(s).map_err(|e| field_err("output_limit", e))?),
        Some(v) => return Err(field_err("output_limit", format!("must be a number of bytes or a size like \"64M\", not {}", type_name(v)))),
    };
    let needs = match get("needs") {
        None => BTreeMap::new(),
        Some(v) => {
            let o = v.as_object().ok_or_else(|| field_err("needs", format!("must be an object like {{\"gpu\": 1}}, not {}", type_name(v))))?;
            let mut needs = BTreeMap::new();
            for (k, n) in o {
                crate::slots::check_name(k).map_err(|e| field_err("needs", e))?;
                let n = n
                    .as_u64()
                    .filter(|n| (1..=u64::from(crate::slots::MAX_SLOTS)).contains(n))
                    .ok_or_else(|| field_err("needs", format!("{k:?}: must be a whole number of slots in 1..{}", crate::slots::MAX_SLOTS)))?;
                needs.insert(k.clone(), n as u32);
            }
            needs
        }
    };
    let group = get("group").map(|v| string("group", v)).transpose()?;
    if let Some(g) = &group {
        crate::slots::check_name(g).map_err(|e| field_err("group", e))?;
    }
    // `"payload": null` is no payload, like every other null field: the
    // stored record could not say otherwise (null reads back as absent).
    let payload = obj.get("payload").filter(|v| !v.is_null()).cloned();
    if let Some(p) = &payload {
        check_no_nul_value(p).map_err(|()| field_err("payload", "contains a NUL character"))?;
    }

    let id = crate::id::new_id();
    let v = if needs.is_empty() && group.is_none() { JOB_VERSION } else { SLOTS_VERSION };
    let job = Job {
        v,
        id,
        created_at: time::rfc3339(ctx.now_ms),
        cmd,
        sh,
        cwd,
        env,
        env_from,
        env_ref: None,
        payload,
        name,
        priority,
        run_at: time::rfc3339(run_at_ms),
        timeout_ms,
        attempts,
        backoff,
        key,
        after,
        tags,
        delivery,
        share_logs,
        max_runtime_ms,
        output_limit,
        needs,
        group,
        extra: Map::new(),
    };
    let pusher_env = (env_from == EnvFrom::Pusher).then(|| std::sync::Arc::clone(&ctx.env));
    Ok(NewJob { job, run_at_ms, pusher_env })
}

impl Job {
    /// The job as a job line (the fields a push takes), for `q-ctl edit`
    /// and `set`: validated again as a line, it gives back this job.
    pub fn to_line(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        if let Some(c) = &self.cmd {
            put("cmd", Value::from(c.clone()));
        }
        if let Some(sh) = &self.sh {
            put("sh", Value::from(sh.clone()));
        }
        put("cwd", Value::from(self.cwd.clone()));
        if !self.env.is_empty() {
            put("env", serde_json::to_value(&self.env).unwrap_or_default());
        }
        put("env_from", serde_json::to_value(self.env_from).unwrap_or_default());
        if let Some(p) = &self.payload {
            put("payload", p.clone());
        }
        if let Some(n) = &self.name {
            put("name", Value::from(n.clone()));
        }
        put("priority", Value::from(self.priority));
        put("run_at", Value::from(self.run_at.clone()));
        if let Some(t) = self.timeout_ms {
            put("timeout", Value::from(format!("{t}ms")));
        }
        put("attempts", Value::from(self.attempts));
        put("backoff", Value::from(format!("{}ms:{}ms", self.backoff.base_ms, self.backoff.max_ms)));
        if let Some(k) = &self.key {
            put("key", Value::from(k.clone()));
        }
        if !self.after.is_empty() {
            put("after", Value::from(self.after.clone()));
        }
        if !self.tags.is_empty() {
            put("tags", Value::from(self.tags.clone()));
        }
        put("delivery", serde_json::to_value(self.delivery).unwrap_or_default());
        if let Some(t) = self.max_runtime_ms {
            put("max_runtime", Value::from(format!("{t}ms")));
        }
        if let Some(n) = self.output_limit {
            put("output_limit", Value::from(n));
        }
        if self.share_logs {
            put("share_logs", Value::from(true));
        }
        if !self.needs.is_empty() {
            put("needs", serde_json::to_value(&self.needs).unwrap_or_default());
        }
        if let Some(g) = &self.group {
            put("group", Value::from(g.clone()));
        }
        m
    }

    /// This job changed as `line` (a whole job line) says, validated as a
    /// push validates it: the id and creation time stay. The recorded
    /// environment stays while `env_from` does; switched to `"pusher"`,
    /// the job takes `env` (the environment of whoever changes it, as a
    /// push records its pusher's: `pusher_env`, stored by the backend's
    /// revise); switched to `"worker"`, it has none. A changed `after` or
    /// `key` is checked by the backend's revise (the dependency and dedupe
    /// rules).
    pub fn revised(&self, line: &Map<String, Value>, now_ms: i64, env: &std::sync::Arc<BTreeMap<String, String>>) -> Result<NewJob> {
        let ctx = PushContext { cwd: self.cwd.clone(), env: std::sync::Arc::clone(env), now_ms };
        let mut n = validate(line, &ctx)?;
        n.job.id = self.id.clone();
        n.job.created_at = self.created_at.clone();
        n.job.extra = self.extra.clone();
        if n.job.env_from == self.env_from {
            n.job.env_ref = self.env_ref.clone();
            n.pusher_env = None;
        }
        Ok(n)
    }
}

fn check_no_nul_value(v: &Value) -> Result<(), ()> {
    match v {
        Value::String(s) if s.contains('\0') => Err(()),
        Value::Array(a) => a.iter().try_for_each(check_no_nul_value),
        Value::Object(o) => o.iter().try_for_each(|(k, v)| {
            if k.contains('\0') { Err(()) } else { check_no_nul_value(v) }
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> PushContext {
        PushContext { cwd: "/tmp".into(), env: Default::default(), now_ms: 1_000_000 }
    }

    fn v(j: Value) -> Result<NewJob> {
        validate(j.as_object().unwrap(), &ctx())
    }

    #[test]
    fn rejects_with_field_names() {
        let cases = [
            (json!({"cmd": []}), "cmd"),
            (json!({"cmd": ["a"], "sh": "b"}), "sh"),
            (json!({"cmd": "ls"}), "cmd"),
            (json!({"cmd": ["a\u{0}b"]}), "NUL"),
            (json!({"cmd": ["a"], "bogus": 1}), "bogus"),
            (json!({"cmd": ["a"], "priority": 10000}), "priority"),
            (json!({"cmd": ["a"], "attempts": 3, "delivery": "at-most-once"}), "attempts"),
            (json!({"cmd": ["a"], "delay": "soon"}), "delay"),
            (json!({"cmd": ["a"], "after": ["../x"]}), "after"),
            (json!({"cmd": ["a"], "needs": {"gpu": 0}}), "needs"),
            (json!({"cmd": ["a"], "needs": {"GPU": 1}}), "needs"),
            (json!({"cmd": ["a"], "needs": ["gpu"]}), "needs"),
            (json!({"cmd": ["a"], "group": "a/b"}), "group"),
        ];
        for (j, needle) in cases {
            let e = v(j.clone()).unwrap_err();
            assert!(e.to_string().contains(needle), "{j}: {e}");
            assert_eq!(e.kind, Kind::Data);
        }
    }

    #[test]
    fn accepts_full_line() {
        let j = v(json!({"cmd":["echo","hi"],"priority":5,"delay":"90s","attempts":3,"backoff":"2s:1m",
                       "tags":["a"],"env":{"X":"1"},"cwd":"sub","payload":{"k":1},"timeout":"5m"}))
        .unwrap();
        assert_eq!(j.run_at_ms, 1_090_000);
        assert_eq!(j.job.cwd, "/tmp/sub");
        assert_eq!(j.job.backoff, Backoff { base_ms: 2000, max_ms: 60_000 });
        let back = Job::from_bytes(&j.job.to_bytes()).unwrap();
        assert_eq!(back, j.job);
    }

    /// Only a job that says what it takes gets the version an older q
    /// passes over.
    #[test]
    fn needs_and_group_bump_the_version() {
        assert_eq!(v(json!({"cmd": ["a"]})).unwrap().job.v, JOB_VERSION);
        let j = v(json!({"cmd": ["a"], "needs": {"gpu": 2}})).unwrap().job;
        assert_eq!((j.v, j.needs["gpu"]), (SLOTS_VERSION, 2));
        assert_eq!(v(json!({"cmd": ["a"], "group": "render"})).unwrap().job.v, SLOTS_VERSION);
        assert!(!newer_format(&j.to_bytes()), "this q knows it");
        let p = Peek::of(&j.to_bytes()).unwrap();
        assert_eq!(p.needs, j.needs);
    }

    /// A job's line (what `q-ctl set` and `edit` change) says everything a
    /// push said: revised unchanged, it is the same job.
    #[test]
    fn a_line_keeps_what_the_job_takes() {
        let j = v(json!({"cmd": ["a"], "needs": {"gpu": 2}, "group": "render", "share_logs": true})).unwrap().job;
        let r = j.revised(&j.to_line(), 0, &Default::default()).unwrap().job;
        assert_eq!((r.needs, r.group, r.share_logs, r.v), (j.needs, j.group, j.share_logs, j.v));
    }

    #[test]
    fn merge_pairs() {
        let d = json!({"sh":"x","delay":"5s","priority":3}).as_object().unwrap().clone();
        let m = merge(&d, json!({"cmd":["y"],"run_at":5}).as_object().unwrap().clone());
        assert!(!m.contains_key("sh") && !m.contains_key("delay"));
        assert_eq!(m["priority"], 3);
    }

    #[test]
    fn backoff_bounds() {
        let b = Backoff { base_ms: 1000, max_ms: 8000 };
        for f in 1..10 {
            for r in [0, 1, 999, u64::MAX] {
                let d = b.delay_ms(f, r);
                let full = (1000u64 << (f - 1).min(3)).min(8000);
                assert!(d >= full / 2 && d <= full, "f={f} d={d}");
            }
        }
    }
}
