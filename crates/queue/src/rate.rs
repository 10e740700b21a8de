//! Spaced starts (`q-supervise --rate N/s`): the workers of a queue on one
//! host take turns through one lock file, `rate` in the host's slot
//! directory, which holds the time slot of the last start (Unix ms,
//! decimal). A worker locks it (blocking) and takes the next slot: one
//! interval after the last, or now when the last start is more than two
//! intervals ago (the starts keep to their grid through a start that came
//! late, and begin a new one after a pause). It waits for that time,
//! claims, records the slot if it claimed, and unlocks. A worker that dies
//! lets go of the lock with it; a lost or unreadable slot is "long ago".

use crate::error::{IoContext, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

pub struct Rate {
    path: PathBuf,
    interval_ms: u64,
}

/// A worker's turn to claim, held until dropped.
pub struct Turn {
    file: File,
    path: PathBuf,
    slot: i64,
}

impl Rate {
    /// `dir`: the host's slot directory ([`crate::Backend::slot_dir`]).
    pub fn new(dir: PathBuf, interval_ms: u64) -> Rate {
        Rate { path: dir.join("rate"), interval_ms }
    }

    /// Wait for this worker's turn: `None` when `stop` said to stop first.
    pub fn turn(&self, stop: &dyn Fn() -> bool) -> Result<Option<Turn>> {
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d).ctx("create", d)?;
        }
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path).ctx("open", &self.path)?;
        file.lock().ctx("lock", &self.path)?;
        let mut s = String::new();
        let _ = file.read_to_string(&mut s);
        let last: i64 = s.trim().parse().unwrap_or(0);
        let next = last.saturating_add(self.interval_ms as i64);
        let now = crate::time::now_ms();
        let due = if now - next < self.interval_ms as i64 { next } else { now };
        loop {
            if stop() {
                return Ok(None);
            }
            let now = crate::time::now_ms();
            if now >= due {
                return Ok(Some(Turn { file, path: self.path.clone(), slot: due }));
            }
            std::thread::sleep(Duration::from_millis(((due - now) as u64).min(50)));
        }
    }
}

impl Turn {
    /// A job was claimed in this turn: the next starts one interval later.
    pub fn started(mut self) -> Result<()> {
        let slot = self.slot.to_string();
        let w = self.file.set_len(0).and_then(|()| self.file.rewind()).and_then(|()| self.file.write_all(slot.as_bytes()));
        w.map_err(|e| crate::Error::io("write", &self.path, e))
    }
}
