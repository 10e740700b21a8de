//! Push: validated jobs become files in `pending/` (or `waiting/`), each
//! published by write → rename, and acknowledged only after the batch is
//! durable (one group commit per batch). Dedupe keys and dependencies are
//! checked here.

use crate::error::{Error, IoContext, Kind, Result};
use crate::fsx::{self, Renamed};
use crate::job::{Job, NewJob};
use crate::names::{Counters, Key, QueuedName};
use crate::queue::Queue;
use crate::record::{Reason, State};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

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

/// A job file staged in `tmp/`, waiting for its rename.
struct Staged {
    tmp: PathBuf,
    name: QueuedName,
    state: State,
    job: Job,
}

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

    /// Store the pusher's environment once per distinct content.
    fn store_env(&self, env: &BTreeMap<String, String>, cache: &mut HashMap<u64, String>) -> Result<String> {
        let mut bytes = serde_json::to_vec(env).unwrap_or_default();
        bytes.push(b'\n');
        let h = fnv64(&bytes);
        if let Some(r) = cache.get(&h) {
            return Ok(r.clone());
        }
        let dir = self.dir("env");
        for n in 0..100 {
            let name = if n == 0 { format!("{h:016x}") } else { format!("{h:016x}-{n}") };
            let path = dir.join(format!("{name}.json"));
            match fsx::read_capped(&path, 16 << 20) {
                Ok(existing) if existing == bytes => {
                    cache.insert(h, name.clone());
                    return Ok(name);
                }
                Ok(_) => continue, // a hash collision: try the next name
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("read", &path, e)),
            }
            match fsx::publish(&self.tmp(), &path, &bytes, true)? {
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

    /// Read a recorded environment.
    pub fn load_env(&self, env_ref: &str) -> Result<BTreeMap<String, String>> {
        if !env_ref.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(Error::new(Kind::Data, format!("bad environment reference {env_ref:?}")));
        }
        let path = self.dir("env").join(format!("{env_ref}.json"));
        let bytes = fsx::read_capped(&path, 16 << 20).ctx("read", &path)?;
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
        let mut pushed = self.commit(vec![(nj, state)])?;
        let p = pushed.pop().ok_or_else(|| Error::new(Kind::Io, "push lost its job"))?;
        if state == State::Waiting {
            // A dependency may have finished while we wrote: look again.
            self.promote_if_ready(&id)?;
            if let Some(l) = self.locate(&id)? {
                return Ok(Pushed { state: l.state, ..p });
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
    fn lock_key(&self, key: &str) -> Result<(File, Option<Pushed>)> {
        let path = self.dir("keys").join(format!("{:016x}.json", fnv64(key.as_bytes())));
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags_nofollow()
            .open(&path)
            .ctx("open key file", &path)?;
        let _ = fsx::share(&f); // group-shared queue: the group locks it too
        f.lock().ctx("lock key file", &path)?;
        let mut s = String::new();
        (&f).read_to_string(&mut s).ok();
        // Several keys may share a hash: the file holds one record per line.
        for line in s.lines() {
            let Ok(rec) = serde_json::from_str::<KeyRecord>(line) else { continue };
            if rec.key != key || crate::id::check_id(&rec.id).is_err() {
                continue;
            }
            if let Some(l) = self.locate(&rec.id)?
                && !l.state.is_terminal()
            {
                return Ok((f, Some(Pushed { id: rec.id, state: l.state, run_at_ms: l.run_at_ms.unwrap_or(0), deduped: true })));
            }
        }
        Ok((f, None))
    }

    /// Record that `id` now holds `key` (under the key's lock, before the
    /// job is committed: a crash leaves a record naming a job that never
    /// appeared, which the next pusher treats as free).
    fn write_key(&self, f: &File, key: &str, id: &str) -> Result<()> {
        let path = self.dir("keys");
        let mut s = String::new();
        (&*f).rewind().ctx("read key file", &path)?;
        (&*f).read_to_string(&mut s).ok();
        let mut lines: Vec<String> = s
            .lines()
            .filter(|l| serde_json::from_str::<KeyRecord>(l).is_ok_and(|r| r.key != key))
            .map(str::to_owned)
            .collect();
        lines.push(serde_json::to_string(&KeyRecord { key: key.into(), id: id.into() }).unwrap_or_default());
        let mut body = lines.join("\n");
        body.push('\n');
        f.set_len(0).ctx("truncate key file", &path)?;
        (&*f).rewind().ctx("write key file", &path)?;
        (&*f).write_all(body.as_bytes()).ctx("write key file", &path)?;
        f.sync_data().ctx("fsync key file", &path)
    }

    /// Stage every job in `tmp/`, make the data durable, rename each into
    /// its state directory, make the directories durable: the commit point.
    fn commit(&self, jobs: Vec<(NewJob, State)>) -> Result<Vec<Pushed>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let tmp_dir = self.tmp();
        let many = jobs.len() > 8;
        let mut staged: Vec<Staged> = Vec::with_capacity(jobs.len());
        let cleanup = |staged: &[Staged]| {
            for s in staged {
                let _ = fs::remove_file(&s.tmp);
            }
        };
        for (nj, state) in jobs {
            let tmp = tmp_dir.join(fsx::tmp_name("job"));
            let bytes = nj.job.to_bytes();
            let res = (|| {
                let mut f = fsx::create_new(&tmp)?;
                f.write_all(&bytes).ctx("write", &tmp)?;
                if !many {
                    f.sync_all().ctx("fsync", &tmp)?;
                }
                Ok(())
            })();
            let name = QueuedName { key: Key::new(nj.job.priority, nj.run_at_ms, &nj.job.id), c: Counters::default() };
            staged.push(Staged { tmp, name, state, job: nj.job });
            if let Err(e) = res {
                cleanup(&staged);
                return Err(e);
            }
        }
        crate::failpoint!("push.after_tmp_write");
        if many {
            // Group commit: one filesystem sync for all the staged data.
            let f = File::open(&tmp_dir).ctx("open", &tmp_dir)?;
            if let Err(e) = nix::unistd::syncfs(&f) {
                cleanup(&staged);
                return Err(Error::io("sync filesystem", &tmp_dir, e.into()));
            }
        }
        crate::failpoint!("push.after_tmp_fsync");
        staged.sort_by(|a, b| a.name.cmp(&b.name));
        let mut dirty: Vec<PathBuf> = Vec::new();
        let mut out = Vec::with_capacity(staged.len());
        let pending_jobs: Vec<&Staged> = staged.iter().filter(|s| s.state == State::Pending).collect();
        let placement = self.place(&pending_jobs.iter().map(|s| s.name.key.clone()).collect::<Vec<_>>())?;
        let mut seg_of: HashMap<&str, Key> = HashMap::new();
        for (s, seg) in pending_jobs.iter().zip(placement) {
            seg_of.insert(s.job.id.as_str(), seg);
        }
        for (n, s) in staged.iter().enumerate() {
            let res = match s.state {
                State::Pending => {
                    let seg = &seg_of[s.job.id.as_str()];
                    self.rename_into_segment(&s.tmp, seg, &s.name.to_string(), &mut dirty)
                }
                other => {
                    let dir = self.dir(other.dir());
                    let r = fsx::rename_noreplace(&s.tmp, &dir.join(s.name.to_string()));
                    if !dirty.contains(&dir) {
                        dirty.push(dir);
                    }
                    r.and_then(|r| match r {
                        Renamed::Done => Ok(()),
                        _ => Err(Error::new(Kind::Io, format!("cannot publish job {}", s.job.id))),
                    })
                }
            };
            if let Err(e) = res {
                cleanup(&staged[n..]);
                return Err(e);
            }
            crate::failpoint!("push.after_rename");
            out.push(Pushed { id: s.job.id.clone(), state: s.state, run_at_ms: s.name.key.run_at, deduped: false });
        }
        for d in &dirty {
            fsx::fsync_dir(d)?;
        }
        crate::failpoint!("push.before_ack");
        if out.iter().any(|p| p.state == State::Pending) {
            self.wake();
        }
        Ok(out)
    }

    /// Rename a staged file into a pending segment, re-creating the segment
    /// if a claimer removed it as empty meanwhile.
    pub(crate) fn rename_into_segment(&self, from: &std::path::Path, seg: &Key, name: &str, dirty: &mut Vec<PathBuf>) -> Result<()> {
        let pending = self.dir("pending");
        let seg_dir = pending.join(seg.to_string());
        for _ in 0..10 {
            if !seg_dir.is_dir() {
                fsx::mkdir(&seg_dir)?;
                if !dirty.contains(&pending) {
                    dirty.push(pending.clone());
                }
            }
            match fsx::rename_noreplace(from, &seg_dir.join(name)) {
                Ok(Renamed::Done) => {
                    if !dirty.contains(&seg_dir) {
                        dirty.push(seg_dir);
                    }
                    return Ok(());
                }
                Ok(Renamed::SourceGone) => {
                    return Err(Error::new(Kind::Io, format!("{} vanished before it was queued", from.display())));
                }
                Ok(Renamed::Exists) => {
                    return Err(Error::new(Kind::Io, format!("{name} exists already in {}", seg_dir.display())));
                }
                Err(e) if e.errno() == Some(nix::libc::ENOENT) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(Kind::Io, format!("cannot create segment {}", seg_dir.display())))
    }

    /// Choose a segment for each key (keys sorted). A segment is named by the
    /// least key it may hold; a job may join a segment whose name is not
    /// greater than its key, of the same priority and due-time bucket, while
    /// it holds fewer than `SEG_CAP` jobs. Otherwise it starts a new one.
    pub(crate) fn place(&self, keys: &[Key]) -> Result<Vec<Key>> {
        let mut out = Vec::with_capacity(keys.len());
        if keys.is_empty() {
            return Ok(out);
        }
        let top = self.segments()?;
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
                Some(s) if n < SEG_CAP / 4 && self.segment_len(s) + n <= SEG_CAP => s.clone(),
                _ => k.clone(),
            };
            for _ in i..j {
                out.push(seg.clone());
            }
            i = j;
        }
        Ok(out)
    }

    /// The segment names in `pending/`, parsed (foreign names are left to gc).
    pub(crate) fn segments(&self) -> Result<Vec<Key>> {
        let mut v: Vec<Key> = fsx::list(&self.dir("pending"))?.iter().filter_map(|n| Key::parse(n)).collect();
        v.sort();
        Ok(v)
    }

    /// An upper bound of the number of jobs in a segment, from one `stat`:
    /// no filesystem spends fewer than 20 bytes of directory size per entry
    /// (tmpfs spends exactly 20, ext4 about 60), and a directory never
    /// shrinks, so this never undercounts. Reading the directory would cost
    /// a push far more.
    fn segment_len(&self, seg: &Key) -> usize {
        fs::symlink_metadata(self.dir("pending").join(seg.to_string()))
            .map(|m| (m.len() / 20) as usize)
            .unwrap_or(usize::MAX / 2)
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
