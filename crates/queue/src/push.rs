//! Push: validated jobs become files in `pending/` (or `waiting/`), each
//! published by write → rename, and acknowledged only after the batch is
//! durable (one group commit per batch). Dedupe keys and dependencies are
//! checked here.

use crate::error::{Error, IoContext, Kind, Result};
use crate::fsx::{self, Renamed};
use crate::job::{Job, NewJob};
use crate::names::{Class, Counters, Key, QueuedName};
use crate::pending::Seg;
use crate::queue::Queue;
use crate::record::{Reason, State};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Most job files in one pending segment.
pub const SEG_CAP: usize = 1000;

/// Keep this much disk free; pushes beyond it are refused (exit 74).
pub const MIN_FREE: u64 = 16 << 20;

/// What a push did with one job.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub id: String,
    pub state: State,
    pub run_at_ms: i64,
    /// The key matched a live job: this is that job.
    pub deduped: bool,
}

/// Key files locked by a revision (`lock_keys`), released when dropped.
pub(crate) struct KeyLocks {
    files: Vec<(PathBuf, File)>,
}

impl KeyLocks {
    /// The locked file that holds `key`'s records.
    pub(crate) fn file(&self, q: &Queue, key: &str) -> Option<&File> {
        let p = q.key_path(key);
        self.files.iter().find(|(f, _)| *f == p).map(|(_, f)| f)
    }
}

/// The record in `keys/<hash>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct KeyRecord {
    key: String,
    id: String,
}

/// 64-bit FNV-1a, for content-addressed environment files and key files.
pub(crate) fn fnv64(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Keyed or dependent jobs are pushed one by one (under their key's lock);
/// the others wait for the batch's group commit.
fn plain_or_guarded(plain: &mut Vec<(usize, NewJob)>, out: &mut [Option<Result<Pushed>>], i: usize, nj: NewJob, q: &Queue) {
    if nj.job.key.is_some() || !nj.job.after.is_empty() {
        out[i] = Some(q.push_one_guarded(nj));
    } else {
        plain.push((i, nj));
    }
}

/// A job on its way into the queue.
struct Entry {
    name: QueuedName,
    state: State,
    job: Job,
}

impl Entry {
    fn pushed(&self) -> Pushed {
        Pushed { id: self.job.id.clone(), state: self.state, run_at_ms: self.name.key.run_at, deduped: false }
    }
}

/// Where a new job file goes.
#[derive(PartialEq)]
enum Dest {
    Segment(Seg),
    Dir(PathBuf),
}


/// Most unnamed files open at once: what the open-file limit leaves, with
/// room for the rest of the process, and at most one batch's worth.
fn wave_len() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    (soft.saturating_sub(64) as usize).clamp(16, 2000)
}

/// Where to cut a wave in two for two threads: at the change of
/// destination nearest the middle, so that each links into its own segment
/// (a directory takes one insert at a time), else at the middle.
fn split_point(dests: &[Dest]) -> usize {
    let mid = dests.len() / 2;
    (1..dests.len())
        .filter(|&i| dests[i - 1] != dests[i])
        .min_by_key(|&i| i.abs_diff(mid))
        .unwrap_or(mid)
}

/// Was `dir` made within [`YOUNG`]? Then its entry in its parent may not
/// be on disk yet: whoever puts a file in it fsyncs the parent too. Where
/// the filesystem keeps no birth time, every directory counts as young.
fn recently_made(dir: &Path) -> bool {
    match fs::metadata(dir).and_then(|m| m.created()) {
        Ok(born) => born.elapsed().map_or(true, |age| age < YOUNG),
        Err(_) => true,
    }
}

/// How long a new directory's entry may wait for the kernel's writeback
/// (30 s by default) before it is surely on disk, with a wide margin.
const YOUNG: std::time::Duration = std::time::Duration::from_secs(120);

impl Queue {
    /// Push a batch of validated jobs. Each entry of the answer is the job's
    /// outcome, in input order; jobs without a key or dependency go through
    /// one group commit.
    pub fn push(&self, jobs: Vec<NewJob>) -> Vec<Result<Pushed>> {
        let mut out: Vec<Option<Result<Pushed>>> = (0..jobs.len()).map(|_| None).collect();
        if let Err(e) = self.check_free_space(jobs.len() as u64 * 1024, MIN_FREE) {
            return jobs.iter().map(|_| Err(Error::new(e.kind, e.msg.clone()))).collect();
        }
        let mut env_refs: HashMap<u64, String> = HashMap::new();
        // Jobs of one push share one environment: store and hash it once.
        let mut last_env: Option<(std::sync::Arc<BTreeMap<String, String>>, String)> = None;
        let mut plain = Vec::new();
        for (i, mut nj) in jobs.into_iter().enumerate() {
            if let Some(env) = nj.pusher_env.take() {
                if let Some((e, r)) = &last_env
                    && std::sync::Arc::ptr_eq(e, &env)
                {
                    nj.job.env_ref = Some(r.clone());
                    plain_or_guarded(&mut plain, &mut out, i, nj, self);
                    continue;
                }
                match self.store_env(&env, &mut env_refs) {
                    Ok(r) => {
                        last_env = Some((env, r.clone()));
                        nj.job.env_ref = Some(r);
                    }
                    Err(e) => {
                        out[i] = Some(Err(e));
                        continue;
                    }
                }
            }
            plain_or_guarded(&mut plain, &mut out, i, nj, self);
        }
        let idx: Vec<usize> = plain.iter().map(|(i, _)| *i).collect();
        let res = self.commit(plain.into_iter().map(|(_, nj)| (nj, State::Pending)).collect());
        match res {
            Ok(pushed) => {
                for (i, p) in idx.into_iter().zip(pushed) {
                    out[i] = Some(Ok(p));
                }
            }
            Err(e) => {
                for i in idx {
                    out[i] = Some(Err(Error::new(e.kind, e.to_string())));
                }
            }
        }
        out.into_iter().map(|o| o.unwrap_or_else(|| Err(Error::new(Kind::Io, "job not pushed")))).collect()
    }

    /// Store the pusher's environment once per distinct content. It is the
    /// pusher's alone (0600): in a group-shared queue its name counts the
    /// pusher's uid too, so that users never share a record (owner.rs).
    pub(crate) fn store_env(&self, env: &BTreeMap<String, String>, cache: &mut HashMap<u64, String>) -> Result<String> {
        let mut bytes = serde_json::to_vec(env).unwrap_or_default();
        bytes.push(b'\n');
        let h = match self.group {
            Some(_) => fnv64(&[format!("uid {}\n", crate::owner::euid()).as_bytes(), &bytes].concat()),
            None => fnv64(&bytes),
        };
        if let Some(r) = cache.get(&h) {
            return Ok(r.clone());
        }
        let dir = self.dir("env");
        // `n` moves on only past a different record at a name (a hash
        // collision); a lost race to write a name looks at that name again.
        let mut n = 0;
        for _ in 0..200 {
            if n >= 100 {
                break;
            }
            let name = if n == 0 { format!("{h:016x}") } else { format!("{h:016x}-{n}") };
            let path = dir.join(format!("{name}.json"));
            match fsx::read_capped(&path, 16 << 20) {
                Ok(existing) if existing == bytes => {
                    // Reused: its fresh mtime tells q-gc it is in use, before
                    // the job that names it is committed (gc/envs.rs).
                    if fsx::touch_now(&path).is_ok() || fsx::exists(&path) {
                        cache.insert(h, name.clone());
                        return Ok(name);
                    }
                    // Set aside by q-gc just now: written again below.
                }
                // A hash collision (another user's record, in a shared queue):
                // try the next name.
                Ok(_) => {
                    n += 1;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    n += 1;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("read", &path, e)),
            }
            match fsx::publish_as(&self.tmp(), &path, &bytes, true, fsx::Access::Owner)? {
                Renamed::Done => {
                    fsx::fsync_dir(&dir)?;
                    cache.insert(h, name.clone());
                    return Ok(name);
                }
                _ => continue, // a concurrent pusher wrote it: compare again
            }
        }
        Err(Error::new(Kind::Io, "cannot store the environment record"))
    }

    /// Read a recorded environment for a job of `owner`: it must be that
    /// user's file, which nobody else can write (anyone may put a file of
    /// their own in `env/` of a shared queue, and name it in a job).
    pub fn load_env(&self, env_ref: &str, owner: Option<u32>) -> Result<BTreeMap<String, String>> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        if !env_ref.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(Error::new(Kind::Data, format!("bad environment reference {env_ref:?}")));
        }
        let path = self.dir("env").join(format!("{env_ref}.json"));
        let f = fsx::open_read(&path).ctx("read", &path)?;
        let m = f.metadata().ctx("stat", &path)?;
        let owner = owner.unwrap_or_else(crate::owner::euid);
        if m.uid() != owner || m.mode() & 0o022 != 0 || m.nlink() > 1 || !m.is_file() {
            return Err(Error::new(
                Kind::Permission,
                format!("{}: the recorded environment is not the job owner's ({}) alone: not used", path.display(), crate::owner::describe(owner)),
            ));
        }
        let mut bytes = Vec::new();
        f.take(16 << 20).read_to_end(&mut bytes).ctx("read", &path)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::new(Kind::Data, format!("{}: {e}", path.display())))
    }

    /// A job with a dedupe key or dependencies: pushed on its own, holding
    /// the key's lock until it is committed.
    fn push_one_guarded(&self, nj: NewJob) -> Result<Pushed> {
        let _key_lock = match nj.job.key.clone() {
            Some(key) => {
                let (lock, existing) = self.lock_key(&key)?;
                if let Some(p) = existing {
                    return Ok(p);
                }
                self.write_key(&lock, &key, &nj.job.id)?;
                Some(lock)
            }
            None => None,
        };
        let mut state = State::Pending;
        let mut failed_dep = None;
        for dep in &nj.job.after {
            match self.locate(dep)? {
                None => return Err(Error::new(Kind::NoJob, format!("field \"after\": no such job {dep}"))),
                Some(l) => match l.state {
                    State::Done => {}
                    State::Dead | State::Canceled => failed_dep = Some(dep.clone()),
                    _ => state = State::Waiting,
                },
            }
        }
        if let Some(dep) = failed_dep {
            return self.push_canceled(nj, &dep);
        }
        let id = nj.job.id.clone();
        if state == State::Waiting {
            // Where each unfinished dependency's settle will look for us.
            for dep in &nj.job.after {
                self.note_dependent(dep, &id)?;
            }
            crate::failpoint!("push.after_dependent_marker");
        }
        let mut pushed = self.commit(vec![(nj, state)])?;
        let p = pushed.pop().ok_or_else(|| Error::new(Kind::Io, "push lost its job"))?;
        if state == State::Waiting {
            // A dependency may have finished while we wrote: look again
            // (a settle may have moved it on first).
            let state = match self.promote_if_ready(&id)? {
                Some(state) => Some(state),
                None => self.locate(&id)?.map(|l| l.state),
            };
            if let Some(state) = state {
                return Ok(Pushed { state, ..p });
            }
        }
        Ok(p)
    }

    /// A job whose dependency already failed: it is recorded as canceled.
    fn push_canceled(&self, nj: NewJob, dep: &str) -> Result<Pushed> {
        let id = nj.job.id.clone();
        let run_at_ms = nj.run_at_ms;
        let mut pushed = self.commit(vec![(nj, State::Held)])?;
        pushed.pop().ok_or_else(|| Error::new(Kind::Io, "push lost its job"))?;
        self.end_without_attempt(&id, State::Held, State::Canceled, Reason::DependencyFailed, Some(serde_json::json!({"dependency": dep})))?;
        Ok(Pushed { id, state: State::Canceled, run_at_ms, deduped: false })
    }

    /// Take the lock of a dedupe key; if a live job holds the key, return it.
    pub(crate) fn lock_key(&self, key: &str) -> Result<(File, Option<Pushed>)> {
        let f = self.open_key(&self.key_path(key))?;
        let holder = self.key_holder(&f, key)?;
        Ok((f, holder))
    }

    /// The file of a dedupe key's records (several keys may share it).
    fn key_path(&self, key: &str) -> PathBuf {
        self.dir("keys").join(format!("{:016x}.json", fnv64(key.as_bytes())))
    }

    /// Open and lock a key file (held until the file is dropped).
    fn open_key(&self, path: &Path) -> Result<File> {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags_nofollow()
            .open(path)
            .ctx("open key file", path)?;
        let _ = fsx::share(&f); // group-shared queue: the group locks it too
        f.lock().ctx("lock key file", path)?;
        Ok(f)
    }

    /// Lock the files of `keys` (a revision's old and new key), in the
    /// order of their names so that two revisions never wait on each
    /// other, each file once.
    pub(crate) fn lock_keys(&self, keys: &[&str]) -> Result<KeyLocks> {
        let mut paths: Vec<PathBuf> = keys.iter().map(|k| self.key_path(k)).collect();
        paths.sort();
        paths.dedup();
        let files = paths.into_iter().map(|p| self.open_key(&p).map(|f| (p, f))).collect::<Result<Vec<_>>>()?;
        Ok(KeyLocks { files })
    }

    /// The live job that holds `key`, from the records in its locked file
    /// `f`: the job a record names, if it is not terminal and its own
    /// record still has the key (a revision may have changed it: the
    /// record is then stale, and the key free).
    pub(crate) fn key_holder(&self, f: &File, key: &str) -> Result<Option<Pushed>> {
        let mut s = String::new();
        (&*f).rewind().ctx("read key file", &self.dir("keys"))?;
        (&*f).read_to_string(&mut s).ok();
        // Several keys may share a hash: the file holds one record per line.
        for line in s.lines() {
            let Ok(rec) = serde_json::from_str::<KeyRecord>(line) else { continue };
            if rec.key != key || crate::id::check_id(&rec.id).is_err() {
                continue;
            }
            if let Some(l) = self.holds_key(&rec.id, key)? {
                return Ok(Some(Pushed { id: rec.id, state: l.state, run_at_ms: l.run_at_ms.unwrap_or(0), deduped: true }));
            }
        }
        Ok(None)
    }

    /// Where job `id` is, if it holds dedupe key `key`: it is pending,
    /// waiting, held or running (or in a committed import not yet in
    /// place), and its record names the key. A record that cannot be read
    /// counts as holding it (as it did before keys could be revised).
    pub(crate) fn holds_key(&self, id: &str, key: &str) -> Result<Option<crate::settle::Located>> {
        let mut last = None;
        for _ in 0..3 {
            // Not in the queue: maybe a committed import's job not yet in
            // place. A file only ever leaves `imports/` for its place, so
            // a look there and one more in the queue cannot both miss it.
            let found = match self.locate(id)? {
                Some(l) => Some(l),
                None => match self.importing(id)? {
                    Some(l) => Some(l),
                    None => self.locate(id)?,
                },
            };
            let Some(l) = found else { return Ok(None) };
            if l.state.is_terminal() {
                return Ok(None);
            }
            match self.read_job(&l.path) {
                Ok(j) => return Ok((j.key.as_deref() == Some(key)).then_some(l)),
                // Moved meanwhile: look again.
                Err(_) if !fsx::exists(&l.path) => last = Some(l),
                Err(_) => return Ok(Some(l)),
            }
        }
        Ok(last)
    }

    /// Record that `id` now holds `key` (under the key's lock, before the
    /// job is committed: a crash leaves a record naming a job that never
    /// appeared, which the next pusher treats as free).
    pub(crate) fn write_key(&self, f: &File, key: &str, id: &str) -> Result<()> {
        self.rewrite_key_file(f, |r| r.key != key, Some(KeyRecord { key: key.into(), id: id.into() }))
    }

    /// Drop the record that `id` holds `key`, if it is still there (under
    /// the key's lock): the key's next pusher need not read the job.
    pub(crate) fn drop_key(&self, f: &File, key: &str, id: &str) -> Result<()> {
        self.rewrite_key_file(f, |r| r.key != key || r.id != id, None)
    }

    /// Rewrite a locked key file: the records `keep` keeps, then `add`.
    fn rewrite_key_file(&self, f: &File, keep: impl Fn(&KeyRecord) -> bool, add: Option<KeyRecord>) -> Result<()> {
        let path = self.dir("keys");
        let mut s = String::new();
        (&*f).rewind().ctx("read key file", &path)?;
        (&*f).read_to_string(&mut s).ok();
        let mut lines: Vec<String> = s
            .lines()
            .filter(|l| serde_json::from_str::<KeyRecord>(l).is_ok_and(|r| keep(&r)))
            .map(str::to_owned)
            .collect();
        if add.is_none() && lines.len() == s.lines().count() {
            return Ok(());
        }
        lines.extend(add.map(|r| serde_json::to_string(&r).unwrap_or_default()));
        let mut body = lines.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        f.set_len(0).ctx("truncate key file", &path)?;
        (&*f).rewind().ctx("write key file", &path)?;
        (&*f).write_all(body.as_bytes()).ctx("write key file", &path)?;
        f.sync_data().ctx("fsync key file", &path)
    }

    /// Write every job's file, make the data durable, name each in its
    /// state directory, make the names durable: the commit point. A batch
    /// (more than 8 jobs) is one group commit.
    fn commit(&self, jobs: Vec<(NewJob, State)>) -> Result<Vec<Pushed>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut entries: Vec<(usize, Entry)> = jobs
            .into_iter()
            .map(|(nj, state)| Entry {
                name: QueuedName { key: Key::new(nj.job.priority, nj.run_at_ms, &nj.job.id), c: Counters::default() },
                state,
                job: nj.job,
            })
            .enumerate()
            .collect();
        // Written in name order (segments fill in order); answered in input order.
        entries.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        let (order, entries): (Vec<usize>, Vec<Entry>) = entries.into_iter().unzip();
        let dests = self.destinations(&entries)?;
        // A group commit rests on `syncfs`; where it does not reach the
        // store (FUSE), a batch takes the single steps' per-file fsyncs.
        let group = entries.len() > 8 && self.syncfs_trusted();
        let unnamed = group && !crate::failpoint::disabled("unnamed-files") && *self.unnamed_files.get_or_init(|| fsx::unnamed_supported(&self.tmp()));
        let out = if unnamed {
            self.commit_unnamed(&entries, &dests)?
        } else {
            self.commit_staged(&entries, &dests, group)?
        };
        crate::failpoint!("push.before_ack");
        if out.iter().any(|p| p.state == State::Pending) {
            self.wake();
        }
        let mut answers: Vec<Option<Pushed>> = (0..out.len()).map(|_| None).collect();
        for (i, p) in order.into_iter().zip(out) {
            answers[i] = Some(p);
        }
        Ok(answers.into_iter().map(|p| p.expect("one answer per job")).collect())
    }

    /// Where each job goes: its pending segment, or its state directory.
    fn destinations(&self, entries: &[Entry]) -> Result<Vec<Dest>> {
        let pending: Vec<(Option<Class>, Key)> =
            entries.iter().filter(|e| e.state == State::Pending).map(|e| (e.job.class(), e.name.key.clone())).collect();
        let mut segs = self.place(&pending)?.into_iter();
        entries
            .iter()
            .map(|e| match e.state {
                State::Pending => segs.next().map(Dest::Segment).ok_or_else(|| Error::new(Kind::Io, "push lost a job's segment")),
                other => Ok(Dest::Dir(self.dir(other.dir()))),
            })
            .collect()
    }

    /// The portable way: each file is written in `tmp/` under a temporary
    /// name, made durable (fsync, or one `syncfs` for a group), renamed into
    /// place, and every directory renamed into is fsynced.
    fn commit_staged(&self, entries: &[Entry], dests: &[Dest], group: bool) -> Result<Vec<Pushed>> {
        let tmp_dir = self.tmp();
        let mut tmps: Vec<PathBuf> = Vec::with_capacity(entries.len());
        let cleanup = |tmps: &[PathBuf]| {
            for t in tmps {
                let _ = fs::remove_file(t);
            }
        };
        for e in entries {
            let tmp = tmp_dir.join(fsx::tmp_name("job"));
            let res = (|| {
                let mut f = fsx::create_new_as(&tmp, fsx::Access::GroupReads)?;
                f.write_all(&e.job.to_bytes()).ctx("write", &tmp)?;
                if !group {
                    f.sync_all().ctx("fsync", &tmp)?;
                }
                Ok(())
            })();
            tmps.push(tmp);
            if let Err(err) = res {
                cleanup(&tmps);
                return Err(err);
            }
        }
        crate::failpoint!("push.after_tmp_write");
        if group && let Err(err) = fsx::syncfs(&tmp_dir) {
            cleanup(&tmps);
            return Err(err);
        }
        crate::failpoint!("push.after_tmp_fsync");
        let mut dirty: Vec<PathBuf> = Vec::new();
        let mut out = Vec::with_capacity(entries.len());
        for (n, (e, dest)) in entries.iter().zip(dests).enumerate() {
            if let Err(err) = self.move_into(dest, &e.name.to_string(), &mut dirty, |to| fsx::rename_noreplace(&tmps[n], to)) {
                cleanup(&tmps[n..]);
                return Err(err);
            }
            crate::failpoint!("push.after_rename");
            out.push(e.pushed());
        }
        fsx::fsync_dirs(&dirty)?;
        Ok(out)
    }

    /// A group commit without temporary names: each file is made without a
    /// name (`O_TMPFILE`) and written, a `syncfs` makes the data durable,
    /// each file is linked into place, and a last `syncfs` makes the names
    /// durable. One directory update per job instead of three, and a crash
    /// before the links leaves nothing behind. Files are written in waves of
    /// at most [`wave_len`] open files; on two or more cores two threads
    /// share each wave (the kernel's part of making a file — an inode, a
    /// page, a directory entry — is most of the work).
    fn commit_unnamed(&self, entries: &[Entry], dests: &[Dest]) -> Result<Vec<Pushed>> {
        let tmp_dir = self.tmp();
        let mut out = Vec::with_capacity(entries.len());
        let wave = wave_len();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        for (es, ds) in entries.chunks(wave).zip(dests.chunks(wave)) {
            if cores < 2 || es.len() < 64 {
                out.extend(self.write_and_link(&tmp_dir, es, ds)?);
                continue;
            }
            let at = split_point(ds);
            let ((ea, eb), (da, db)) = (es.split_at(at), ds.split_at(at));
            let (ra, rb) = std::thread::scope(|s| {
                let t = s.spawn(|| self.write_and_link(&tmp_dir, eb, db));
                let ra = self.write_and_link(&tmp_dir, ea, da);
                (ra, t.join().unwrap_or_else(|_| Err(Error::new(Kind::Io, "a push thread panicked"))))
            });
            out.extend(ra?);
            out.extend(rb?);
        }
        // The links, the link counts and any new segment, all at once.
        fsx::syncfs(&tmp_dir)?;
        Ok(out)
    }

    /// One thread's share of a wave: write its files unnamed, make their
    /// data durable, link each into place.
    fn write_and_link(&self, tmp_dir: &Path, es: &[Entry], ds: &[Dest]) -> Result<Vec<Pushed>> {
        let files = es
            .iter()
            .map(|e| {
                let mut f = fsx::open_unnamed(tmp_dir, fsx::Access::GroupReads).ctx("create an unnamed file in", tmp_dir)?;
                f.write_all(&e.job.to_bytes()).ctx("write an unnamed file in", tmp_dir)?;
                Ok(f)
            })
            .collect::<Result<Vec<File>>>()?;
        crate::failpoint!("push.after_tmp_write");
        fsx::syncfs(tmp_dir)?;
        crate::failpoint!("push.after_tmp_fsync");
        let mut dirty = Vec::new(); // made durable by the caller's syncfs
        let mut out = Vec::with_capacity(es.len());
        for ((e, dest), f) in es.iter().zip(ds).zip(&files) {
            self.move_into(dest, &e.name.to_string(), &mut dirty, |to| fsx::link_unnamed(f, to))?;
            crate::failpoint!("push.after_rename");
            out.push(e.pushed());
        }
        Ok(out)
    }

    /// Put one file at `name` in its destination with `mv` (a no-replace
    /// rename or link), noting the directories to make durable.
    fn move_into(&self, dest: &Dest, name: &str, dirty: &mut Vec<PathBuf>, mut mv: impl FnMut(&Path) -> Result<Renamed>) -> Result<()> {
        match dest {
            Dest::Segment(seg) => self.move_into_segment(seg, name, dirty, mv),
            Dest::Dir(dir) => {
                let r = mv(&dir.join(name));
                if !dirty.contains(dir) {
                    dirty.push(dir.clone());
                }
                match r? {
                    Renamed::Done => Ok(()),
                    _ => Err(Error::new(Kind::Io, format!("cannot publish job file {name}"))),
                }
            }
        }
    }

    /// Rename a staged file into a pending segment, re-creating the segment
    /// if a claimer removed it as empty meanwhile.
    pub(crate) fn rename_into_segment(&self, from: &Path, seg: &Seg, name: &str, dirty: &mut Vec<PathBuf>) -> Result<()> {
        self.move_into_segment(seg, name, dirty, |to| fsx::rename_noreplace(from, to))
    }

    /// Move a file into a pending segment with `mv`, making the segment
    /// first if it is missing (new, or removed as empty by a claimer
    /// meanwhile), and its class's directory if that is missing too (the
    /// queue's `FORMAT` says `classes` before the first is made).
    fn move_into_segment(&self, seg: &Seg, name: &str, dirty: &mut Vec<PathBuf>, mut mv: impl FnMut(&Path) -> Result<Renamed>) -> Result<()> {
        let pending = self.dir("pending");
        let tree = self.tree(seg.class.as_ref());
        let seg_dir = tree.join(seg.key.to_string());
        let mut made = false;
        let mut made_tree = false;
        for _ in 0..10 {
            match mv(&seg_dir.join(name)) {
                Ok(Renamed::Done) => {
                    if !dirty.contains(&seg_dir) {
                        // A segment someone else made a moment ago may not
                        // be durable in its parent yet (its maker fsyncs
                        // the parent after its own renames, or crashed
                        // first); the same for a class's directory in
                        // pending/.
                        if (made || recently_made(&seg_dir)) && !dirty.contains(&tree) {
                            dirty.push(tree.clone());
                        }
                        if tree != pending && (made_tree || recently_made(&tree)) && !dirty.contains(&pending) {
                            dirty.push(pending);
                        }
                        dirty.push(seg_dir);
                    }
                    return Ok(());
                }
                Ok(Renamed::SourceGone) => {
                    return Err(Error::new(Kind::Io, format!("the file of job {name} vanished before it was queued")));
                }
                Ok(Renamed::Exists) => {
                    return Err(Error::new(Kind::Io, format!("{name} exists already in {}", seg_dir.display())));
                }
                Err(e) if e.errno() == Some(nix::libc::ENOENT) => {
                    if seg.class.is_some() && !fsx::exists(&tree) {
                        // The first of its class (or the class's directory
                        // was removed as empty by q-gc a moment ago).
                        self.enable_classes()?;
                        fsx::mkdir(&tree)?;
                        made_tree = true;
                    }
                    match fsx::mkdir(&seg_dir) {
                        Err(e) if e.errno() == Some(nix::libc::ENOENT) => continue, // its class's directory went: again
                        r => r?,
                    }
                    made = true;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(Kind::Io, format!("cannot create segment {}", seg_dir.display())))
    }

    /// Choose a segment for each job of a class (none: plain) and key (keys
    /// sorted): among the segments of its class (`place_in`).
    pub(crate) fn place(&self, jobs: &[(Option<Class>, Key)]) -> Result<Vec<Seg>> {
        let mut by_class: BTreeMap<Option<&Class>, Vec<usize>> = BTreeMap::new();
        for (i, (c, _)) in jobs.iter().enumerate() {
            by_class.entry(c.as_ref()).or_default().push(i);
        }
        let mut out: Vec<Option<Seg>> = vec![None; jobs.len()];
        for (class, idx) in by_class {
            let keys: Vec<Key> = idx.iter().map(|&i| jobs[i].1.clone()).collect();
            for (i, key) in idx.into_iter().zip(self.place_in(class, &keys)?) {
                out[i] = Some(Seg { class: class.cloned(), key });
            }
        }
        Ok(out.into_iter().map(|s| s.expect("a segment for every job")).collect())
    }

    /// Choose a segment of one class for each key (keys sorted). A segment
    /// is named by the least key it may hold; a job may join a segment whose
    /// name is not greater than its key, of the same priority and due-time
    /// bucket, while it holds fewer than `SEG_CAP` jobs. Otherwise it starts
    /// a new one.
    fn place_in(&self, class: Option<&Class>, keys: &[Key]) -> Result<Vec<Key>> {
        let mut out = Vec::with_capacity(keys.len());
        if keys.is_empty() {
            return Ok(out);
        }
        let top = self.segments_in(class)?;
        let mut i = 0;
        while i < keys.len() {
            let k = &keys[i];
            // Jobs of this batch that can share one segment.
            let mut j = i + 1;
            while j < keys.len() && keys[j].inv_prio == k.inv_prio && keys[j].bucket() == k.bucket() && j - i < SEG_CAP {
                j += 1;
            }
            let n = j - i;
            let joinable = top
                .iter()
                .filter(|s| s.inv_prio == k.inv_prio && s.bucket() == k.bucket() && *s <= k)
                .max();
            let seg = match joinable {
                Some(s) if n < SEG_CAP / 4 && self.segment_len(&self.tree(class).join(s.to_string())) + n <= SEG_CAP => s.clone(),
                _ => k.clone(),
            };
            for _ in i..j {
                out.push(seg.clone());
            }
            i = j;
        }
        Ok(out)
    }

    /// An upper bound of the number of jobs in a segment, from one `stat`:
    /// no filesystem spends fewer than 20 bytes of directory size per entry
    /// (tmpfs spends exactly 20, ext4 about 60), and a directory never
    /// shrinks, so this never undercounts. Reading the directory would cost
    /// a push far more.
    fn segment_len(&self, seg_dir: &Path) -> usize {
        fs::symlink_metadata(seg_dir).map(|m| (m.len() / 20) as usize).unwrap_or(usize::MAX / 2)
    }
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600).custom_flags(nix::libc::O_NOFOLLOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A push joining a segment that another pusher made a moment ago
    /// fsyncs pending/ as well as the segment; one joining an old segment
    /// fsyncs only the segment.
    #[test]
    fn joining_a_young_segment_syncs_pending_too() {
        let (_d, q) = crate::testkit::queue();
        let pending = q.dir("pending");
        let seg = Seg { class: None, key: Key::new(0, 0, "01AAAAAAAAAAAAAAAAAAAAAAAA") };
        let seg_dir = pending.join(seg.key.to_string());
        fs::create_dir(&seg_dir).unwrap(); // made by "another pusher"
        let staged = q.tmp().join("a.tmp");
        fs::write(&staged, b"{}").unwrap();
        let mut dirty = Vec::new();
        q.rename_into_segment(&staged, &seg, "a.json", &mut dirty).unwrap();
        assert_eq!(dirty, [pending.clone(), seg_dir.clone()], "a young segment: pending/ too");
        // The same segment, born long ago (a filesystem without birth
        // times counts every directory as young: nothing to check there).
        if fs::metadata(&seg_dir).and_then(|m| m.created()).is_ok() {
            assert!(recently_made(&seg_dir));
            let old = Path::new("/");
            if fs::metadata(old).and_then(|m| m.created()).is_ok_and(|b| b.elapsed().is_ok_and(|a| a > YOUNG)) {
                assert!(!recently_made(old), "a directory made long ago is not young");
            }
        }
    }
}
