//! Import (`q-ctl import`) on a directory queue: jobs moved from another
//! queue keep their ids, fields, run times and counters, and a batch comes
//! in whole or not at all (docs/FORMAT.md, "Import").
//!
//! The batch's job files are written under a fresh directory of `tmp/`,
//! one subdirectory per state, and made durable; renaming that directory
//! to `imports/<ULID>` is the commit point. Then each file is renamed into
//! its place (a pending segment, `waiting/`, `held/`) and the batch
//! directory removed. A crash before the commit point leaves a directory
//! in `tmp/` that q-gc removes; after it, the next import or q-gc puts the
//! rest of the batch in place (a rename moves each file once: doing it
//! again does only what is left). Imports hold `locks/import.lock`, so two
//! of them cannot both take one id.

use crate::error::{Error, IoContext, Kind, Result};
use crate::fsx;
use crate::job::NewJob;
use crate::names::{Key, QueuedName};
use crate::queue::Queue;
use crate::record::{Counters, State};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One job to import.
#[derive(Debug, Clone)]
pub struct Import {
    /// The job (its id, fields and run time) and its recorded environment
    /// (`pusher_env`, for `env_from: pusher`).
    pub new: NewJob,
    /// Pending, waiting or held.
    pub state: State,
    /// Its attempts, failures and interruptions so far.
    pub c: Counters,
}

/// The states a job can be imported in.
const STATES: [State; 3] = [State::Pending, State::Waiting, State::Held];

/// Check a batch before anything is written: states that can be imported,
/// no id twice, and each dependency of a waiting job in the batch or
/// `known` to the queue.
pub(crate) fn check(jobs: &[Import], known: impl Fn(&str) -> Result<bool>) -> Result<()> {
    let mut ids = BTreeSet::new();
    for j in jobs {
        crate::id::check_id(&j.new.job.id)?;
        if !STATES.contains(&j.state) {
            return Err(Error::new(Kind::Data, format!("job {}: only pending, waiting and held jobs are imported, not {}", j.new.job.id, j.state.as_str())));
        }
        if !ids.insert(j.new.job.id.as_str()) {
            return Err(Error::new(Kind::Data, format!("job {} is twice in the batch", j.new.job.id)));
        }
    }
    // Every imported job is unfinished: a key belongs to one of them.
    let mut keys = HashMap::new();
    for j in jobs {
        if let Some(k) = j.new.job.key.as_deref()
            && let Some(other) = keys.insert(k, j.new.job.id.as_str())
        {
            return Err(Error::new(Kind::Data, format!("jobs {other} and {} of the batch have key {k:?}: a key belongs to one unfinished job", j.new.job.id)));
        }
    }
    for j in jobs {
        for dep in &j.new.job.after {
            if !ids.contains(dep.as_str()) && !known(dep)? {
                return Err(Error::new(Kind::NoJob, format!("job {}: field \"after\": no such job {dep} in the batch or the queue", j.new.job.id)));
            }
        }
    }
    Ok(())
}

/// Can this process hold the files of `n` keys open at once (with some to
/// spare)? Else the batch is refused before anything is written, saying
/// how to import it (`q-ctl import` raises its limit first).
fn room_for_keys(n: usize) -> Result<()> {
    use nix::sys::resource::{Resource, getrlimit};
    const SPARE: u64 = 64;
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if n as u64 + SPARE > soft => Err(Error::new(
            Kind::Data,
            format!(
                "the batch has {n} jobs with dedupe keys, and an import holds each key's file open until the batch is in place: more than this process may open (ulimit -n {soft}); import it in smaller batches (q-ctl import --batch {})",
                soft.saturating_sub(SPARE).max(1)
            ),
        )),
        _ => Ok(()),
    }
}

/// What a batch refused for a key did not do.
pub(crate) const NOT_IMPORTED: &str = "nothing of the batch was imported";

/// The refusal of ids the queue has already.
pub(crate) fn taken(ids: &[String]) -> Error {
    let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
    let more = if ids.len() > 5 { format!(" and {} more", ids.len() - 5) } else { String::new() };
    Error::new(Kind::Create, format!("the queue has job {}{more} already: nothing of the batch was imported", shown.join(", ")))
}

impl Queue {
    /// Import a batch (see the module's doc). Returns how many jobs came in.
    pub fn import(&self, mut jobs: Vec<Import>) -> Result<usize> {
        let _lock = self.import_lock()?;
        self.finish_batches()?;
        check(&jobs, |id| Ok(self.locate(id)?.is_some()))?;
        let have: Vec<String> = jobs.iter().map(|j| j.new.job.id.clone()).filter(|id| self.locate(id).ok().flatten().is_some()).collect();
        if !have.is_empty() {
            return Err(taken(&have));
        }
        if jobs.is_empty() {
            return Ok(0);
        }
        // Dedupe keys, as a push takes them: each key's lock (held until
        // the batch is in place), its holder (one refuses the batch), and
        // the record naming the imported job, written before the commit
        // point (a crash before it leaves records of jobs that never
        // appeared: free keys).
        let keys: Vec<&str> = jobs.iter().filter_map(|j| j.new.job.key.as_deref()).collect();
        room_for_keys(keys.len())?;
        let key_locks = self.lock_keys(&keys)?;
        for k in &keys {
            let f = key_locks.file(self, k).expect("locked above");
            if let Some(h) = self.key_holder(f, k)? {
                return Err(crate::revise::key_taken(k, &h.id, h.state, NOT_IMPORTED));
            }
        }
        // Stage: the environments, then every job file, durable.
        let mut env_refs = HashMap::new();
        for j in &mut jobs {
            if let Some(env) = j.new.pusher_env.take() {
                j.new.job.env_ref = Some(self.store_env(&env, &mut env_refs)?);
            }
        }
        let batch = crate::id::new_id();
        let stage = self.tmp().join(format!("import.{batch}"));
        let staged = (|| -> Result<()> {
            fsx::mkdir(&stage)?;
            for st in STATES {
                fsx::mkdir(&stage.join(st.dir()))?;
            }
            for j in &jobs {
                let name = QueuedName { key: Key::new(j.new.job.priority, j.new.run_at_ms, &j.new.job.id), c: j.c };
                let path = stage.join(j.state.dir()).join(name.to_string());
                let mut f = fsx::create_new(&path)?;
                f.write_all(&j.new.job.to_bytes()).ctx("write", &path)?;
                f.sync_all().ctx("fsync", &path)?;
            }
            for st in STATES {
                fsx::fsync_dir(&stage.join(st.dir()))?;
            }
            fsx::fsync_dir(&stage)
        })();
        if let Err(e) = staged {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(e);
        }
        let recorded = jobs.iter().try_for_each(|j| match j.new.job.key.as_deref() {
            Some(k) => self.write_key(key_locks.file(self, k).expect("locked above"), k, &j.new.job.id),
            None => Ok(()),
        });
        if let Err(e) = recorded {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(e);
        }
        crate::failpoint!("import.after_stage");
        // The commit point.
        let imports = self.dir("imports");
        fsx::mkdir(&imports)?;
        fsx::fsync_dir(self.root())?;
        let committed = imports.join(&batch);
        std::fs::rename(&stage, &committed).ctx("rename", &committed)?;
        fsx::fsync_dir(&imports)?;
        fsx::fsync_dir(&self.tmp())?;
        crate::failpoint!("import.after_commit");
        self.finish_import(&committed)?;
        drop(key_locks);
        Ok(jobs.len())
    }

    /// Where job `id` is in a committed batch not yet in place (after a
    /// crash between the commit point and the moves): a dedupe key's record
    /// may name it, and it holds the key as the job it will be.
    pub(crate) fn importing(&self, id: &str) -> Result<Option<crate::settle::Located>> {
        let imports = self.dir("imports");
        let batches = fsx::list(&imports)?;
        for b in batches.into_iter().filter(|b| crate::id::check_id(b).is_ok()) {
            for st in STATES {
                let dir = imports.join(&b).join(st.dir());
                let Ok(names) = fsx::list(&dir) else { continue };
                for n in names {
                    if let Some(q) = QueuedName::parse(&n).filter(|q| q.key.id == id) {
                        return Ok(Some(crate::settle::Located { state: st, path: dir.join(n), c: Some(q.c), run_at_ms: Some(q.key.run_at) }));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Imports, and whoever finishes their batches, one at a time.
    fn import_lock(&self) -> Result<std::fs::File> {
        let path = self.dir("locks").join("import.lock");
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).ctx("open", &path)?;
        f.lock().ctx("lock", &path)?;
        Ok(f)
    }

    /// Put in place what committed imports left (after a crash).
    pub(crate) fn finish_imports(&self) -> Result<()> {
        if !fsx::exists(&self.dir("imports")) {
            return Ok(());
        }
        let _lock = self.import_lock()?;
        self.finish_batches()
    }

    fn finish_batches(&self) -> Result<()> {
        let imports = self.dir("imports");
        let batches = match std::fs::read_dir(&imports) {
            Ok(_) => fsx::list(&imports)?,
            Err(_) => return Ok(()),
        };
        for b in batches.into_iter().filter(|b| crate::id::check_id(b).is_ok()) {
            self.finish_import(&imports.join(b))?;
        }
        Ok(())
    }

    /// Move each file of a committed batch into its place, then remove it.
    fn finish_import(&self, batch: &Path) -> Result<()> {
        let mut dirty: Vec<PathBuf> = Vec::new();
        let mut waiting = Vec::new();
        for st in STATES {
            let from = batch.join(st.dir());
            let names = match std::fs::read_dir(&from) {
                Ok(_) => fsx::list(&from)?,
                Err(_) => continue,
            };
            let mut parsed: Vec<(String, QueuedName)> = names.into_iter().filter_map(|n| QueuedName::parse(&n).map(|q| (n, q))).collect();
            parsed.sort_by(|a, b| a.1.cmp(&b.1));
            if st == State::Pending {
                // Each into the segments of its class: its record says which
                // (one that cannot be read goes with the plain ones, where
                // its claim quarantines it).
                let keys: Vec<_> = parsed.iter().map(|(n, q)| (self.read_job(&from.join(n)).ok().and_then(|j| j.class()), q.key.clone())).collect();
                for ((n, _), seg) in parsed.iter().zip(self.place(&keys)?) {
                    self.rename_into_segment(&from.join(n), &seg, n, &mut dirty)?;
                }
            } else {
                let to = self.dir(st.dir());
                for (n, q) in &parsed {
                    if st == State::Waiting {
                        let job = self.read_job(&from.join(n))?;
                        for dep in &job.after {
                            self.note_dependent(dep, &q.key.id)?;
                        }
                        waiting.push(q.key.id.clone());
                    }
                    match fsx::rename_noreplace(&from.join(n), &to.join(n))? {
                        fsx::Renamed::Done | fsx::Renamed::SourceGone => {}
                        fsx::Renamed::Exists => return Err(Error::new(Kind::Io, format!("{n} exists already in {}", to.display()))),
                    }
                }
                if !dirty.contains(&to) {
                    dirty.push(to);
                }
            }
        }
        fsx::fsync_dirs(&dirty)?;
        // A waiting job whose dependencies all ended done moves on now.
        for id in &waiting {
            self.promote_if_ready(id)?;
        }
        for st in STATES {
            let _ = std::fs::remove_dir(batch.join(st.dir()));
        }
        std::fs::remove_dir(batch).ctx("remove", batch)?;
        if let Some(p) = batch.parent() {
            fsx::fsync_dir(p)?;
        }
        self.wake();
        Ok(())
    }
}
