//! Every record a tool prints is checked against `schema/records.schema.json`:
//! the harness calls [`check`] on each JSON line it parses from a tool (and
//! on every stdout line of a tool whose stdout is records only), so the
//! whole suite is the schema's test. A record must match its type's
//! definition, and every field it has must be listed there (the schema
//! itself stays open, since fields are only ever added; the suite keeps it
//! complete).

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::OnceLock;

struct Schemas {
    doc: Value,
    /// One validator per record type.
    by_type: BTreeMap<String, jsonschema::Validator>,
    /// The whole schema: one of the record types.
    any: jsonschema::Validator,
}

fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/records.schema.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
        let any = jsonschema::draft202012::new(&doc).unwrap_or_else(|e| panic!("{path} is not a valid schema: {e}"));
        let mut by_type = BTreeMap::new();
        for alt in doc["oneOf"].as_array().expect("oneOf lists the record types") {
            let r = alt["$ref"].as_str().expect("each alternative is a $ref");
            let name = r.trim_start_matches("#/$defs/").to_owned();
            let mut one = doc.clone();
            let o = one.as_object_mut().expect("the schema is an object");
            o.remove("oneOf");
            o.insert("$ref".into(), Value::String(r.to_owned()));
            let v = jsonschema::draft202012::new(&one).unwrap_or_else(|e| panic!("{name}: {e}"));
            by_type.insert(name, v);
        }
        Schemas { doc, by_type, any }
    })
}

/// The record types the schema defines.
pub fn types() -> Vec<String> {
    schemas().by_type.keys().cloned().collect()
}

/// Panics unless `v` (one printed line) is a record valid against its
/// type's schema, with no field the schema does not list.
pub fn check(v: &Value) {
    let s = schemas();
    let Some(kind) = v.get("type").and_then(Value::as_str) else {
        panic!("a printed record without a string \"type\": {v}");
    };
    let Some(val) = s.by_type.get(kind) else {
        panic!("no schema for record type {kind:?} (add it to schema/records.schema.json): {v}");
    };
    let errors: Vec<String> = val.iter_errors(v).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "a {kind} record does not match schema/records.schema.json:\n  {}\nrecord: {v}", errors.join("\n  "));
    assert!(s.any.is_valid(v), "a {kind} record matches its type but not exactly one type of the schema: {v}");
    unlisted(&s.doc, &s.doc["$defs"][kind], v, kind);
}

/// Fields of `v` that `def` (and the definitions it refers to for nested
/// records) does not list.
fn unlisted(doc: &Value, def: &Value, v: &Value, at: &str) {
    let Some(props) = def.get("properties").and_then(Value::as_object) else { return };
    let Some(obj) = v.as_object() else { return };
    for (k, val) in obj {
        let Some(p) = props.get(k) else {
            panic!("field {at}.{k} is printed but not in schema/records.schema.json (add it, with a description): {v}");
        };
        if let Some(r) = p.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/$defs/");
            // A stored job keeps fields written by newer tools as they are.
            if name != "stored_job" {
                unlisted(doc, &doc["$defs"][name], val, &format!("{at}.{k}"));
            }
        }
    }
}

/// Check every line of a tool's stdout that is a JSON object.
pub fn check_text(text: &str) {
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('{')
            && let Ok(v) = serde_json::from_str::<Value>(t)
        {
            check(&v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::*;
    use std::collections::BTreeSet;

    /// Every record type the schema defines is printed by a real run of the
    /// tools, and each printed line is checked (by the harness) against it.
    #[test]
    fn every_record_type_is_printed_and_matches_the_schema() {
        let q = QDir::new();
        let mut seen = BTreeSet::new();
        let mut note = |out: &Out| {
            for v in out.lines() {
                seen.insert(v["type"].as_str().unwrap().to_owned());
            }
        };
        let ok = q.push(&["--name", "first", "--", "true"]);
        let retrying = q.run_in("q-push", &[], "{\"sh\":\"exit 3\",\"attempts\":2,\"backoff\":\"1h\"}\n");
        note(retrying.ok());
        let retrying = retrying.lines()[0]["id"].as_str().unwrap().to_owned();
        let claim = q.run("q-claim", &["-n", "1"]);
        note(claim.ok());
        let c = &claim.lines()[0];
        let (id, token) = (c["id"].as_str().unwrap(), c["token"].as_str().unwrap());
        assert_eq!(id, ok);
        note(q.run("q-ctl", &["touch", id, "--token", token]).ok());
        note(q.run("q-ctl", &["ack", id, "--token", token]).ok());
        let ran = q.run("q-run", &["--exit-on-idle"]);
        note(&ran);
        assert!(ran.lines().iter().any(|r| r["next_run_at"].is_string()), "a retry's result says when: {ran:#?}");
        note(q.run("q-ls", &["--json"]).ok());
        note(q.run("q-ls", &["--counts"]).ok());
        note(q.run("q-ctl", &["pause"]).ok());
        note(q.run("q-ctl", &["resume"]).ok());
        note(q.run("q-wait", &[ok.as_str()]).ok());
        let later = q.push(&["--at", "2099-01-01T00:00:00Z", "--", "true"]);
        let export = q.run("q-ctl", &["export"]);
        note(export.ok());
        assert!(export.lines().iter().any(|r| r["id"] == later.as_str()), "{export:#?}");
        note(q.run("q-ctl", &["cancel", retrying.as_str(), later.as_str()]).ok());
        note(q.run("q-gc", &["--done-ttl", "0s"]).ok());
        let mut sup = q.cmd("q-supervise");
        sup.args(["-j", "1", "--exit-on-idle", "--events"]);
        q.push(&["--", "true"]);
        let out = run_cmd(sup, None);
        let events: Vec<Value> = out.stderr.lines().map(|l| serde_json::from_str(l).expect("an event line")).collect();
        assert!(events.iter().any(|e| e["event"] == "job-finished"), "{out:#?}");
        for e in &events {
            check(e);
            seen.insert(e["type"].as_str().unwrap().to_owned());
        }
        let all: BTreeSet<String> = types().into_iter().collect();
        assert_eq!(seen, all, "record types printed vs the types schema/records.schema.json defines");
    }

    fn refused(v: Value) -> String {
        let r = std::panic::catch_unwind(|| check(&v));
        match r {
            Ok(()) => panic!("the check passed {v}"),
            Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
        }
    }

    /// The check can fail: a missing, mistyped, renamed or unlisted field,
    /// and a type the schema does not know, are each caught.
    #[test]
    fn the_record_check_catches_what_it_should() {
        let good = json!({"type": "pushed", "id": "01J9ZK3QH8T4W1V6C2M5X7B0RA", "state": "pending",
                          "run_at": "2026-01-02T03:04:05.678Z", "deduped": false, "line": 1});
        check(&good);
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("deduped");
        assert!(refused(missing).contains("deduped"));
        let mut mistyped = good.clone();
        mistyped["line"] = json!("1");
        assert!(refused(mistyped).contains("does not match"));
        let mut local = good.clone();
        local["run_at"] = json!("2026-01-02T03:04:05+01:00");
        assert!(refused(local).contains("does not match"));
        let mut renamed = good.clone();
        renamed.as_object_mut().unwrap().remove("state");
        renamed["status"] = json!("pending");
        refused(renamed);
        let mut extra = good.clone();
        extra["surprise"] = json!(1);
        assert!(refused(extra).contains("pushed.surprise"));
        let mut nested = json!({"type": "job", "id": "01J9ZK3QH8T4W1V6C2M5X7B0RA", "state": "dead", "name": null,
                                "priority": 0, "run_at": "2026-01-02T03:04:05.678Z", "attempt": 0, "failures": 0,
                                "tags": [], "created_at": "2026-01-02T03:04:05.678Z"});
        check(&nested);
        nested["result"] = json!({"type": "result", "id": "01J9ZK3QH8T4W1V6C2M5X7B0RA", "attempt": 0, "token": null,
                                  "state": "dead", "reason": "canceled", "exit_code": null, "signal": null,
                                  "started_at": null, "finished_at": null, "duration_ms": null, "cpu_user_ms": null,
                                  "cpu_sys_ms": null, "max_rss_kb": null, "failures": 0, "surprise": true});
        assert!(refused(nested).contains("job.result.surprise"));
        assert!(refused(json!({"type": "nonesuch"})).contains("no schema"));
    }
}
