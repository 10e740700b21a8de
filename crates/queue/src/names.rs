//! File-name codecs. A job's state is the directory its file sits in; its
//! order and counters are in its file name, so that a claim needs no file
//! content and every state change is one rename to a name never used before.
//!
//! * waiting, held and pending jobs: `<P>.<RUNAT>.<ID>.<A>.<F>.<I>.json`
//!   (pending ones inside a segment directory named `<P>.<RUNAT>.<ID>`)
//! * leased jobs: `<ID>.<A>.<F>.<I>.json`; terminal jobs: `<ID>.json`
//!
//! `P` is 9999 − priority, five digits, so that names sort most urgent first;
//! `RUNAT` is the not-before time in Unix ms, 13 digits; `A` the number of
//! claims so far (the fence of the latest), `F` failures, `I` interruptions in
//! a row.

use crate::id::is_valid_id;
use std::cmp::Ordering;
use std::fmt;

pub const MIN_PRIORITY: i32 = -9999;
pub const MAX_PRIORITY: i32 = 9999;

pub use crate::record::Counters;

/// The sort key of a pending job: priority, due time, id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// 9999 − priority: lower runs first.
    pub inv_prio: u32,
    pub run_at: i64,
    pub id: String,
}

impl Key {
    pub fn new(priority: i32, run_at: i64, id: &str) -> Key {
        Key {
            inv_prio: (MAX_PRIORITY - priority.clamp(MIN_PRIORITY, MAX_PRIORITY)) as u32,
            run_at: run_at.clamp(0, crate::time::MAX_MS),
            id: id.to_owned(),
        }
    }

    #[cfg(test)]
    pub fn priority(&self) -> i32 {
        MAX_PRIORITY - self.inv_prio as i32
    }

    pub fn parse(s: &str) -> Option<Key> {
        let mut it = s.splitn(3, '.');
        let p = it.next()?;
        let r = it.next()?;
        let id = it.next()?;
        if p.len() != 5 || r.len() != 13 || !is_valid_id(id) {
            return None;
        }
        let inv_prio: u32 = digits(p)?;
        if inv_prio > (MAX_PRIORITY - MIN_PRIORITY) as u32 {
            return None;
        }
        Some(Key { inv_prio, run_at: digits(r)?, id: id.to_owned() })
    }

    /// The due-time bucket (~65 s) a segment may gather jobs from.
    pub fn bucket(&self) -> i64 {
        self.run_at >> 16
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:05}.{:013}.{}", self.inv_prio, self.run_at, self.id)
    }
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn counters(a: &str, f: &str, i: &str) -> Option<Counters> {
    // Only the spelling q writes: "0", or no leading zero. A second spelling
    // ("01") would name a file that settling (which re-renders the name)
    // could never find.
    let canon = |s: &str| s == "0" || !s.starts_with('0');
    if !(canon(a) && canon(f) && canon(i)) {
        return None;
    }
    Some(Counters { attempt: digits(a)?, failures: digits(f)?, interrupts: digits(i)? })
}

/// The class of a pending job that says what it takes to run: its `needs`
/// and `group`, canonical. Its pending segments live in a directory of
/// their own, `pending/c.<CLASS>/`, so that a claimer that can never take
/// the class passes over all of it by the name alone (docs/FORMAT.md,
/// "Classes"). `<CLASS>` is `NAME=N` for each need, in name order, joined
/// by `,`, then `@GROUP` if the job has a group: `gpu=1`, `gpu=2,mem=4@render`,
/// `@render`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Class {
    pub needs: std::collections::BTreeMap<String, u32>,
    pub group: Option<String>,
}

/// The prefix of a class directory's name in `pending/` (a segment's name
/// starts with a digit).
pub const CLASS_PREFIX: &str = "c.";

/// The longest class directory name: a job whose class would be longer
/// stays in the plain segments (judged by its record, as every job there).
pub const MAX_CLASS_NAME: usize = 200;

impl Class {
    /// The class of a job with these needs and group; `None` for a job that
    /// takes nothing (the plain segments), or whose class name would be too
    /// long.
    pub fn of(needs: &std::collections::BTreeMap<String, u32>, group: Option<&str>) -> Option<Class> {
        if needs.is_empty() && group.is_none() {
            return None;
        }
        let c = Class { needs: needs.clone(), group: group.map(str::to_owned) };
        (c.dir_name().len() <= MAX_CLASS_NAME).then_some(c)
    }

    /// Its directory's name in `pending/`.
    pub fn dir_name(&self) -> String {
        format!("{CLASS_PREFIX}{}", self.text())
    }

    /// The class as text, `gpu=2,mem=4@render` (PostgreSQL's `class`
    /// column holds the same, and '' for a job that takes nothing).
    pub fn text(&self) -> String {
        let items: Vec<String> = self.needs.iter().map(|(k, n)| format!("{k}={n}")).collect();
        let group = self.group.as_ref().map(|g| format!("@{g}")).unwrap_or_default();
        format!("{}{group}", items.join(","))
    }

    /// The class a directory name of `pending/` says, if it is one, spelled
    /// exactly as [`Class::dir_name`] spells it (one class, one directory).
    pub fn parse(s: &str) -> Option<Class> {
        let c = Class::parse_text(s.strip_prefix(CLASS_PREFIX)?)?;
        (c.dir_name().len() <= MAX_CLASS_NAME).then_some(c)
    }

    /// The class [`Class::text`] spells as `rest` (of any length).
    pub fn parse_text(rest: &str) -> Option<Class> {
        let (items, group) = match rest.split_once('@') {
            Some((i, g)) => (i, Some(g)),
            None => (rest, None),
        };
        let mut needs = std::collections::BTreeMap::new();
        if !items.is_empty() {
            for item in items.split(',') {
                let (k, n) = item.split_once('=')?;
                crate::slots::check_name(k).ok()?;
                let n: u32 = digits(n).filter(|n| (1..=crate::slots::MAX_SLOTS).contains(n))?;
                needs.insert(k.to_owned(), n);
            }
        }
        if let Some(g) = group {
            crate::slots::check_name(g).ok()?;
        }
        if needs.is_empty() && group.is_none() {
            return None;
        }
        let c = Class { needs, group: group.map(str::to_owned) };
        (c.text() == rest).then_some(c)
    }
}

/// Name of a pending, waiting or held job file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedName {
    pub key: Key,
    pub c: Counters,
}

impl QueuedName {
    pub fn parse(s: &str) -> Option<QueuedName> {
        let stem = s.strip_suffix(".json")?;
        let parts: Vec<&str> = stem.split('.').collect();
        if parts.len() != 6 {
            return None;
        }
        let key = Key::parse(&format!("{}.{}.{}", parts[0], parts[1], parts[2]))?;
        Some(QueuedName { key, c: counters(parts[3], parts[4], parts[5])? })
    }
}

impl fmt::Display for QueuedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}.{}.json", self.key, self.c.attempt, self.c.failures, self.c.interrupts)
    }
}

impl PartialOrd for QueuedName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for QueuedName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

/// Name of a leased job file: `<ID>.<A>.<F>.<I>.json`. The token of a claim is
/// `<A>.<F>.<I>`: completing a claim renames exactly this name, so a stale
/// token names a file that is no longer there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedName {
    pub id: String,
    pub c: Counters,
}

impl LeasedName {
    pub fn parse(s: &str) -> Option<LeasedName> {
        let stem = s.strip_suffix(".json")?;
        let parts: Vec<&str> = stem.split('.').collect();
        if parts.len() != 4 || !is_valid_id(parts[0]) {
            return None;
        }
        Some(LeasedName { id: parts[0].to_owned(), c: counters(parts[1], parts[2], parts[3])? })
    }

    pub fn token(&self) -> String {
        format!("{}.{}.{}", self.c.attempt, self.c.failures, self.c.interrupts)
    }

    /// Rebuild the leased name from an id and a token; `None` if the token is
    /// not of the token form.
    pub fn from_token(id: &str, token: &str) -> Option<LeasedName> {
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 || !is_valid_id(id) {
            return None;
        }
        Some(LeasedName { id: id.to_owned(), c: counters(parts[0], parts[1], parts[2])? })
    }
}

impl fmt::Display for LeasedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.json", self.id, self.token())
    }
}

/// Name of a terminal job file: `<ID>.json`.
pub fn terminal_name(id: &str) -> String {
    format!("{id}.json")
}

pub fn parse_terminal(s: &str) -> Option<&str> {
    s.strip_suffix(".json").filter(|id| is_valid_id(id))
}

/// The files of a job's directory `var/<ID>/` (docs/FORMAT.md): every
/// name is made here.
pub mod var {
    use crate::record::Stream;

    /// The lease record of attempt `a` (its mtime is the heartbeat).
    pub fn lease(a: u32) -> String {
        format!("{a}.lease.json")
    }

    /// The result record of attempt `a`: published once, it decides.
    pub fn result(a: u32) -> String {
        format!("{a}.result.json")
    }

    /// The attempt of a result record's name.
    pub fn parse_result(n: &str) -> Option<u32> {
        n.strip_suffix(".result.json")?.parse().ok()
    }

    /// A request to cancel running attempt `a`.
    pub fn cancel(a: u32) -> String {
        format!("{a}.cancel")
    }

    /// Any other request to running attempt `a` (a signal, a restart):
    /// `<A>.req.<ULID>.json`, one file each, in the order of their ULIDs.
    pub fn request(a: u32) -> String {
        format!("{a}.req.{}.json", crate::id::new_id())
    }

    /// The key (the ULID) of a request's name, if `n` is a request of attempt `a`.
    pub fn parse_request(n: &str, a: u32) -> Option<&str> {
        let rest = n.strip_prefix(a.to_string().as_str())?.strip_prefix(".req.")?;
        rest.strip_suffix(".json").filter(|k| crate::id::is_valid_id(k))
    }

    /// The workspace of attempt `a`.
    pub fn workspace(a: u32) -> String {
        format!("{a}.work")
    }

    /// The stdout or stderr log of attempt `a`.
    pub fn log(a: u32, stream: Stream) -> String {
        match stream {
            Stream::Stdout => format!("{a}.out"),
            Stream::Stderr => format!("{a}.err"),
        }
    }

    /// The order in which attempt `a` wrote its two streams (one line per
    /// chunk).
    pub fn order(a: u32) -> String {
        format!("{a}.order")
    }

    /// The record of a job that ended without an attempt.
    pub const END: &str = "end.json";

    /// An `end.json` set aside (stale, or before a retry).
    pub fn archived_end() -> String {
        format!("end.{}.json", crate::id::new_id())
    }

    /// The marker a job waiting on this one leaves: `then.<ID>`.
    pub const THEN: &str = "then.";

    pub fn then(dependent: &str) -> String {
        format!("{THEN}{dependent}")
    }

    /// The attempt number a file of `var/<ID>/` belongs to, if any.
    pub fn attempt_of(n: &str) -> Option<u32> {
        n.split('.').next()?.parse().ok()
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn queued_roundtrip(p in -9999i32..=9999, r in 0i64..=crate::time::MAX_MS,
                            id in "[0-9A-Za-z_-]{1,40}", a in 0u32..100000, f in 0u32..1000, i in 0u32..10) {
            let n = QueuedName { key: Key::new(p, r, &id), c: Counters { attempt: a, failures: f, interrupts: i } };
            let s = n.to_string();
            prop_assert_eq!(QueuedName::parse(&s), Some(n.clone()));
            prop_assert_eq!(n.key.priority(), p);
        }

        #[test]
        fn leased_roundtrip(id in "[0-9A-Za-z_-]{1,40}", a in 0u32..100000, f in 0u32..1000, i in 0u32..10) {
            let n = LeasedName { id, c: Counters { attempt: a, failures: f, interrupts: i } };
            prop_assert_eq!(LeasedName::parse(&n.to_string()), Some(n.clone()));
            prop_assert_eq!(LeasedName::from_token(&n.id, &n.token()), Some(n));
        }

        #[test]
        fn names_sort_like_keys(p1 in -9999i32..=9999, p2 in -9999i32..=9999,
                                r1 in 0i64..=crate::time::MAX_MS, r2 in 0i64..=crate::time::MAX_MS) {
            let a = Key::new(p1, r1, "A");
            let b = Key::new(p2, r2, "A");
            // Higher priority first, then earlier due time.
            let expect = p2.cmp(&p1).then(r1.cmp(&r2));
            prop_assert_eq!(a.cmp(&b), expect);
            prop_assert_eq!(a.to_string().cmp(&b.to_string()), expect);
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,80}") {
            let _ = QueuedName::parse(&s);
            let _ = LeasedName::parse(&s);
            let _ = Key::parse(&s);
            let _ = parse_terminal(&s);
        }
    }

    #[test]
    fn class_names() {
        let needs = |v: &[(&str, u32)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>();
        assert_eq!(Class::of(&needs(&[]), None), None, "a plain job has no class");
        for (n, g, name) in [
            (needs(&[("gpu", 1)]), None, "c.gpu=1"),
            (needs(&[("mem", 4), ("gpu", 2)]), Some("render"), "c.gpu=2,mem=4@render"),
            (needs(&[]), Some("render"), "c.@render"),
        ] {
            let c = Class::of(&n, g).unwrap();
            assert_eq!(c.dir_name(), name);
            assert_eq!(Class::parse(name), Some(c));
            assert!(Key::parse(name).is_none(), "never a segment's name");
        }
        for bad in ["c.", "c.gpu", "c.gpu=0", "c.gpu=01", "c.mem=1,gpu=1", "c.gpu=1@", "c.GPU=1", "c.gpu=1,,mem=1", "c.gpu=1@a@b", "gpu=1", "c.gpu=1/..", "c.gpu=1025"] {
            assert_eq!(Class::parse(bad), None, "{bad}");
        }
        let long: std::collections::BTreeMap<String, u32> = (0..20).map(|i| (format!("slot_name_number_{i}"), 1)).collect();
        assert_eq!(Class::of(&long, None), None, "too long a name: the plain segments");
    }

    #[test]
    fn rejects_traversal() {
        assert!(LeasedName::from_token("../x", "1.0.0").is_none());
        assert!(LeasedName::from_token("x", "1.0").is_none());
        assert!(QueuedName::parse("00000.0000000000000.../x.1.0.0.json").is_none());
    }
}
