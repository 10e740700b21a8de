//! Ids people type (SPEC, "Ids"). A token from a command line names a job
//! by, in this order: its exact id; a unique suffix or prefix of at least
//! [`MIN_SHORT`] characters (ids pushed together share their first 25
//! characters, so the end is what differs); the `name` of a unique
//! unfinished job. More than one match at the first step that matches is
//! [`Resolved::Ambiguous`]. A full id (a ULID, as q makes them) is exact
//! only. A token that is not a well-formed id is only compared with names,
//! never made into a file name or a pattern.
//!
//! Each backend finds the candidates ([`crate::Backend::resolve`]); the
//! rules that judge them are here, once.

use crate::record::State;

/// The shortest suffix or prefix that may name a job.
pub const MIN_SHORT: usize = 6;

/// Most candidates an ambiguous answer holds (the first by id).
pub const LISTED: usize = 10;

/// A job a token could name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub state: State,
    pub name: Option<String>,
}

/// What a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// One job: its id.
    Id(String),
    /// Several jobs: the token must be longer. `first` holds the first
    /// [`LISTED`] of them by id; `total` says how many there are.
    Ambiguous { first: Vec<Candidate>, total: usize },
    /// No job.
    None,
}

/// Is this token a full id, as q makes them (a ULID: 26 Crockford base32
/// characters)? Then it names that job or none.
pub fn is_full_id(token: &str) -> bool {
    token.len() == 26 && ulid::Ulid::from_string(token).is_ok()
}

/// May this token be a short form of an id (a suffix or prefix)?
pub fn may_be_short(token: &str) -> bool {
    crate::id::is_valid_id(token) && token.len() >= MIN_SHORT && !is_full_id(token)
}

/// May this token be a job's name?
pub fn may_be_name(token: &str) -> bool {
    !is_full_id(token)
}

/// Does `token` (a short form) end or begin `id`? Letters compare without
/// case: ULIDs are Crockford base32, where case does not matter.
pub fn is_short_of(token: &str, id: &str) -> bool {
    let (t, i) = (token.as_bytes(), id.as_bytes());
    i.len() > t.len() && (i[i.len() - t.len()..].eq_ignore_ascii_case(t) || i[..t.len()].eq_ignore_ascii_case(t))
}

/// Judge the candidates of one step: none, one, or ambiguous.
pub(crate) fn judge(mut cands: Vec<Candidate>) -> Resolved {
    cands.sort_by(|a, b| a.id.cmp(&b.id));
    cands.dedup_by(|a, b| a.id == b.id);
    match cands.len() {
        0 => Resolved::None,
        1 => Resolved::Id(cands.remove(0).id),
        total => {
            cands.truncate(LISTED);
            Resolved::Ambiguous { first: cands, total }
        }
    }
}

/// The states whose jobs a name may name.
pub(crate) const UNFINISHED: [State; 4] = [State::Pending, State::Waiting, State::Held, State::Running];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms() {
        let id = "01J9ZK3QH8T4W1V6C2M5X7B0RA";
        assert!(is_short_of("X7B0RA", id));
        assert!(is_short_of("x7b0ra", id), "case does not matter");
        assert!(is_short_of("01J9ZK", id));
        assert!(!is_short_of("9ZK3QH", id), "a middle part is neither");
        assert!(!is_short_of(id, id), "a full id is not its own short form");
        assert!(may_be_short("X7B0RA"));
        assert!(!may_be_short("B0RA"), "shorter than 6");
        assert!(!may_be_short(id), "a full id");
        assert!(is_full_id(id) && !may_be_name(id));
        assert!(may_be_short("nightly-backup-of-the-database"), "26 characters or more, not a ULID");
        assert!(!is_full_id("nightly-backup-of-the-data"));
        assert!(!may_be_short("../x/y"), "not an id");
    }

    #[test]
    fn judging() {
        let c = |id: &str| Candidate { id: id.into(), state: State::Pending, name: None };
        assert_eq!(judge(vec![]), Resolved::None);
        assert_eq!(judge(vec![c("B"), c("B")]), Resolved::Id("B".into()), "one job found twice");
        assert_eq!(judge(vec![c("B"), c("A")]), Resolved::Ambiguous { first: vec![c("A"), c("B")], total: 2 });
        let many: Vec<Candidate> = (0..25).rev().map(|i| c(&format!("J{i:02}"))).collect();
        let Resolved::Ambiguous { first, total } = judge(many) else { panic!("ambiguous") };
        assert_eq!(total, 25);
        assert_eq!(first.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["J00", "J01", "J02", "J03", "J04", "J05", "J06", "J07", "J08", "J09"], "the first by id");
    }
}
