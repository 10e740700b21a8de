//! Job ids: ULIDs (26 Crockford base32 characters, sortable by creation time,
//! unique across hosts). Every id that comes from input is validated here, so
//! no path can be smuggled into a file name.

use crate::error::{Error, Kind, Result};
use std::sync::Mutex;

static GEN: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// A new id, strictly greater than every id this process made before.
pub fn new_id() -> String {
    let mut g = GEN.lock().unwrap_or_else(|e| e.into_inner());
    let generator = g.get_or_insert_with(ulid::Generator::new);
    loop {
        if let Ok(u) = generator.generate() {
            return u.to_string();
        }
        // The random part overflowed within one millisecond: wait for the next.
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Is this a well-formed id (`[0-9A-Za-z_-]`, 1..=64 characters)? SPEC keeps
/// ids opaque; q makes ULIDs, but accepts any id of this alphabet.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Validate an id given by a user or read from a record.
pub fn check_id(s: &str) -> Result<&str> {
    if is_valid_id(s) {
        Ok(s)
    } else {
        Err(Error::new(
            Kind::Data,
            format!("invalid job id {s:?}: ids consist only of letters, digits, '_' and '-'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_and_validate() {
        let a = new_id();
        let b = new_id();
        assert!(a < b);
        assert_eq!(a.len(), 26);
        assert!(is_valid_id(&a));
        for bad in ["", "../x", "a/b", "a.b", "x\0", "é"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
