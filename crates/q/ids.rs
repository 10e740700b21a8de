//! Job ids from arguments, or from stdin when it is not a terminal: bare ids
//! or JSON lines with an `id` field (so `q-push ... | q-wait` and
//! `q-ls --state dead | q-ctl retry` just work). Every id is validated.

use anyhow::{Result, bail};
use std::io::{BufRead, IsTerminal};

/// The ids to act on. Errors on a malformed id (65).
pub fn collect(args: &[String], tool: &str) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    if !args.is_empty() {
        for a in args {
            ids.push(checked(a)?);
        }
        return Ok(ids);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(ids);
    }
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line?;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with('{') {
            let v: serde_json::Value = match serde_json::from_str(t) {
                Ok(v) => v,
                Err(e) => bail!(q_queue::Error::new(q_queue::Kind::Data, format!("{tool}: stdin line {}: not JSON: {e}", n + 1))),
            };
            match v.get("id").and_then(|i| i.as_str()) {
                Some(id) => ids.push(checked(id)?),
                None => bail!(q_queue::Error::new(q_queue::Kind::Data, format!("stdin line {}: no \"id\" field", n + 1))),
            }
        } else {
            ids.push(checked(t)?);
        }
    }
    Ok(ids)
}

fn checked(id: &str) -> Result<String> {
    Ok(q_queue::id::check_id(id)?.to_owned())
}

/// The id and token of a claim line (as `q-claim` prints it).
pub fn claim_line(line: &str) -> Result<(String, String)> {
    let bad = |why: &str| q_queue::Error::new(q_queue::Kind::Data, format!("expected a claim line with \"id\" and \"token\" ({why})"));
    let v: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| bad(&format!("not JSON: {e}")))?;
    match (v["id"].as_str(), v["token"].as_str()) {
        (Some(id), Some(t)) => Ok((checked(id)?, t.to_owned())),
        (None, _) => Err(bad("no \"id\"").into()),
        (_, None) => Err(bad("no \"token\"").into()),
    }
}
