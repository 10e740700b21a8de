//! Job ids from arguments, or from stdin when it is not a terminal: bare ids
//! or JSON lines with an `id` field (so `q-push ... | q-wait` and
//! `q-ls --state dead | q-ctl retry` just work).
//!
//! What a person types is resolved by the queue (`Backend::resolve`): the
//! exact id, a unique suffix or prefix of at least 6 characters, or the
//! name of a unique unfinished job; ambiguous is 66, with the candidates.
//! An `id` read from JSON is exact only: it is validated, never looked up
//! by suffix or name. A token that names no job goes on as the id it is
//! (the tool says "no such job" as before), or is refused (65) when it is
//! not a well-formed id.

use crate::cli::Queue;
use anyhow::{Result, bail};
use q_queue::{Kind, Resolved};
use std::io::{BufRead, IsTerminal};

/// A job named on the command line or on stdin.
#[derive(Debug, Clone)]
pub enum Token {
    /// Typed by a person: an id, a short form or a name.
    Typed(String),
    /// An `id` read from JSON: exact only (already validated).
    Exact(String),
}

/// The jobs named by the arguments, or by stdin when there are none.
/// Errors on stdin that is not JSON, or an `id` in JSON that is malformed
/// (65).
pub fn collect(args: &[String], tool: &str) -> Result<Vec<Token>> {
    if !args.is_empty() {
        return Ok(args.iter().map(|a| Token::Typed(a.clone())).collect());
    }
    let mut tokens = Vec::new();
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(tokens);
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
                Err(e) => bail!(q_queue::Error::new(Kind::Data, format!("{tool}: stdin line {}: not JSON: {e}", n + 1))),
            };
            match v.get("id").and_then(|i| i.as_str()) {
                Some(id) => tokens.push(Token::Exact(checked(id)?)),
                None => bail!(q_queue::Error::new(Kind::Data, format!("stdin line {}: no \"id\" field", n + 1))),
            }
        } else {
            tokens.push(Token::Typed(t.to_owned()));
        }
    }
    Ok(tokens)
}

/// The ids the tokens name, in order. Every token is resolved before the
/// tool acts on any: an ambiguous one (66) or a malformed one that names
/// nothing (65) stops the tool before it changed anything. `q` is `None`
/// when there is no queue yet (then only well-formed ids pass).
pub fn resolve(q: Option<&Queue>, tokens: Vec<Token>) -> Result<Vec<String>> {
    tokens
        .into_iter()
        .map(|t| match t {
            Token::Exact(id) => Ok(id),
            Token::Typed(s) => resolve_one(q, &s),
        })
        .collect()
}

/// The id one typed token names (see [`resolve`]).
pub fn resolve_one(q: Option<&Queue>, token: &str) -> Result<String> {
    // A full id names that job or none: the tool looks it up itself (so a
    // thousand ids piped into q-wait cost no lookup each).
    let found = match q {
        Some(q) if !q_queue::resolve::is_full_id(token) => q.resolve(token)?,
        _ => Resolved::None,
    };
    match found {
        Resolved::Id(id) => Ok(id),
        Resolved::Ambiguous { first, total } => Err(ambiguous(token, &first, total).into()),
        Resolved::None if q_queue::id::is_valid_id(token) => Ok(token.to_owned()),
        Resolved::None => Err(q_queue::Error::new(
            Kind::Data,
            format!("no job has the id or name {token:?} (an id consists only of letters, digits, '_' and '-'; a name must be an unfinished job's)"),
        )
        .into()),
    }
}

fn ambiguous(token: &str, first: &[q_queue::Candidate], total: usize) -> q_queue::Error {
    let mut msg = format!("{token:?} names {total} jobs; give more of the id:");
    for j in first {
        msg.push_str(&format!("\n  {}  {:<8}  {}", j.id, j.state.as_str(), j.name.as_deref().unwrap_or("-")));
    }
    if total > first.len() {
        msg.push_str(&format!("\n  ... and {} more", total - first.len()));
    }
    q_queue::Error::new(Kind::NoJob, msg)
}

fn checked(id: &str) -> Result<String> {
    Ok(q_queue::id::check_id(id)?.to_owned())
}

/// The id and token of a claim line (as `q-claim` prints it).
pub fn claim_line(line: &str) -> Result<(String, String)> {
    let bad = |why: &str| q_queue::Error::new(Kind::Data, format!("expected a claim line with \"id\" and \"token\" ({why})"));
    let v: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| bad(&format!("not JSON: {e}")))?;
    match (v["id"].as_str(), v["token"].as_str()) {
        (Some(id), Some(t)) => Ok((checked(id)?, t.to_owned())),
        (None, _) => Err(bad("no \"id\"").into()),
        (_, None) => Err(bad("no \"token\"").into()),
    }
}
