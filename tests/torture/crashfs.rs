//! crashfs: a test filesystem that forgets what was not synced (T7, DESIGN
//! §9.2; the idea of LazyFS and of SQLite's crash VFS, as a FUSE
//! filesystem mounted by the test process itself).
//!
//! Every operation passes through to a backing directory, and for every
//! file and directory the filesystem keeps the state last made durable:
//! a file's data as of its last `fsync`/`fdatasync`, a directory's entries
//! (creates, links, unlinks, renames in or out) as of its last fsync. A
//! [`CrashFs::cut`] is a power cut: the filesystem is unmounted (the
//! kernel's page cache goes with the mount), the backing directory is
//! rebuilt from the durable state alone — entries never synced undone,
//! data never synced dropped, kept, or cut short at a random byte — and
//! mounted again. The model, and what it leaves out, is written down in
//! docs/RELIABILITY.md ("Power loss").
//!
//! A rename is atomic, as on the journaling filesystems q assumes: when
//! either of its two directories is fsynced the whole rename is durable
//! (the new name appears, the old one goes, and the directories leading to
//! the new name exist), never one half of it, and so are the earlier
//! renames of the same file (the journal's order); likewise the fsync of a new
//! directory makes its own name durable. `syncfs(2)` never reaches a
//! FUSE daemon (the kernel passes it to virtiofs only): it syncs nothing
//! here, and q, which finds FUSE by its `statfs` type, does not rely on it.

use super::history::Rng;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

type Ino = u64;
const ROOT: Ino = 1;
const TTL: Duration = Duration::ZERO;

#[derive(Debug, Default)]
struct Node {
    dir: bool,
    /// Its current names: (directory, name).
    links: Vec<(Ino, OsString)>,
    /// Directories: the current entries.
    children: BTreeMap<OsString, Ino>,
    /// Directories: the entries as of the last fsync of the directory.
    durable_children: BTreeMap<OsString, Ino>,
    /// Files: the data as of the last fsync (none: never synced, empty).
    durable_data: Option<Vec<u8>>,
    /// Files without a name left: where their data went (it may still be
    /// named by a durable entry).
    grave: Option<PathBuf>,
}

/// A rename between two directories not yet made durable.
#[derive(Debug)]
struct Rename {
    from: (Ino, OsString),
    to: (Ino, OsString),
    node: Ino,
}

/// What the filesystem saw, for the tests' figures and the probes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub fsyncs: u64,
    pub dir_fsyncs: u64,
    pub renames: u64,
    pub writes: u64,
}

/// What a cut did.
#[derive(Debug, Default, Clone, Copy)]
pub struct CutReport {
    /// Files whose data was not all synced: dropped back to what was.
    pub dropped: u64,
    /// ... kept whole anyway (the kernel had written them back).
    pub kept: u64,
    /// ... cut short at a random byte.
    pub cut_short: u64,
    /// Entries (names) that were not durable and vanished.
    pub names_undone: u64,
}

struct Model {
    backing: PathBuf,
    graves: PathBuf,
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    renames: Vec<Rename>,
    handles: HashMap<u64, File>,
    next_fh: u64,
    counts: Counts,
}

impl Model {
    /// Everything in `backing` is durable: the state right after a cut.
    fn load(backing: &Path, graves: &Path) -> io::Result<Model> {
        let mut m = Model {
            backing: backing.to_path_buf(),
            graves: graves.to_path_buf(),
            nodes: HashMap::new(),
            next_ino: ROOT + 1,
            renames: Vec::new(),
            handles: HashMap::new(),
            next_fh: 1,
            counts: Counts::default(),
        };
        m.nodes.insert(ROOT, Node { dir: true, ..Node::default() });
        m.load_dir(ROOT, backing)?;
        Ok(m)
    }

    fn load_dir(&mut self, ino: Ino, path: &Path) -> io::Result<()> {
        for e in fs::read_dir(path)? {
            let e = e?;
            let t = e.file_type()?;
            let child = self.new_node(t.is_dir());
            self.link(ino, e.file_name(), child);
            if t.is_dir() {
                self.load_dir(child, &e.path())?;
            } else {
                self.nodes.get_mut(&child).expect("node").durable_data = Some(fs::read(e.path())?);
            }
        }
        let n = self.nodes.get_mut(&ino).expect("node");
        n.durable_children = n.children.clone();
        Ok(())
    }

    fn new_node(&mut self, dir: bool) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, Node { dir, ..Node::default() });
        ino
    }

    fn link(&mut self, parent: Ino, name: OsString, child: Ino) {
        self.nodes.get_mut(&parent).expect("parent").children.insert(name.clone(), child);
        self.nodes.get_mut(&child).expect("child").links.push((parent, name));
    }

    fn unlink_name(&mut self, parent: Ino, name: &OsStr) -> Option<Ino> {
        let child = self.nodes.get_mut(&parent)?.children.remove(name)?;
        let n = self.nodes.get_mut(&child).expect("child");
        n.links.retain(|(p, nm)| !(*p == parent && nm == name));
        Some(child)
    }

    /// The current path of a node in the backing directory.
    fn path(&self, ino: Ino) -> Option<PathBuf> {
        if ino == ROOT {
            return Some(self.backing.clone());
        }
        let n = self.nodes.get(&ino)?;
        match n.links.first() {
            Some((p, name)) => Some(self.path(*p)?.join(name)),
            None => n.grave.clone(),
        }
    }

    /// The backing path of a name about to be made in `parent`.
    fn new_name(&self, parent: Ino, name: &OsStr) -> Result<PathBuf, Errno> {
        if self.child(parent, name).is_some() {
            return Err(Errno::EEXIST);
        }
        Ok(self.path(parent).ok_or(Errno::ENOENT)?.join(name))
    }

    fn child(&self, parent: Ino, name: &OsStr) -> Option<Ino> {
        self.nodes.get(&parent)?.children.get(name).copied()
    }

    fn attr(&self, ino: Ino) -> io::Result<FileAttr> {
        let p = self.path(ino).ok_or_else(|| io::Error::from_raw_os_error(nix::libc::ENOENT))?;
        let m = fs::symlink_metadata(&p)?;
        let t = |s: i64, ns: i64| SystemTime::UNIX_EPOCH + Duration::new(s.max(0) as u64, ns as u32);
        Ok(FileAttr {
            ino: INodeNo(ino),
            size: m.size(),
            blocks: m.blocks(),
            atime: t(m.atime(), m.atime_nsec()),
            mtime: t(m.mtime(), m.mtime_nsec()),
            ctime: t(m.ctime(), m.ctime_nsec()),
            crtime: t(m.ctime(), m.ctime_nsec()),
            kind: if m.is_dir() { FileType::Directory } else { FileType::RegularFile },
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// A file that loses its last name keeps its data in the graveyard: a
    /// durable entry may still name it.
    fn bury(&mut self, ino: Ino, path: &Path) -> io::Result<()> {
        let n = self.nodes.get(&ino).expect("node");
        if n.dir || !n.links.is_empty() {
            return if n.dir { Ok(()) } else { fs::remove_file(path) };
        }
        let grave = self.graves.join(ino.to_string());
        fs::rename(path, &grave)?;
        self.nodes.get_mut(&ino).expect("node").grave = Some(grave);
        Ok(())
    }

    /// fsync of a directory: its entries are durable, and so is every
    /// rename in or out of it, whole (both of its directories).
    fn sync_dir(&mut self, ino: Ino) {
        let renames = std::mem::take(&mut self.renames);
        // Due: the renames in or out of this directory, and, in the
        // journal's order, the earlier renames of the same files.
        let mut due = vec![false; renames.len()];
        let mut nodes = std::collections::HashSet::new();
        for (i, r) in renames.iter().enumerate().rev() {
            if r.from.0 == ino || r.to.0 == ino || nodes.contains(&r.node) {
                due[i] = true;
                nodes.insert(r.node);
            }
        }
        for (r, due) in renames.into_iter().zip(due) {
            if !due {
                self.renames.push(r);
                continue;
            }
            if let Some(n) = self.nodes.get_mut(&r.from.0)
                && n.durable_children.get(&r.from.1) == Some(&r.node)
            {
                n.durable_children.remove(&r.from.1);
            }
            self.nodes.get_mut(&r.to.0).expect("dir").durable_children.insert(r.to.1.clone(), r.node);
            self.make_reachable(r.to.0);
        }
        let n = self.nodes.get_mut(&ino).expect("dir");
        n.durable_children = n.children.clone();
        self.make_reachable(ino);
    }

    /// The journal's order: a directory made durable (its fsync, or a
    /// durable rename into it) carries its own creation and that of the
    /// directories above it, as on ext4, xfs and btrfs, where the `mkdir`
    /// was journaled before.
    fn make_reachable(&mut self, mut ino: Ino) {
        while ino != ROOT {
            let Some((parent, name)) = self.nodes.get(&ino).and_then(|n| n.links.first().cloned()) else { return };
            let p = self.nodes.get_mut(&parent).expect("dir");
            if p.durable_children.get(&name) == Some(&ino) {
                return;
            }
            p.durable_children.insert(name, ino);
            ino = parent;
        }
    }

    fn sync_file(&mut self, ino: Ino) -> io::Result<()> {
        let p = self.path(ino).ok_or_else(|| io::Error::from_raw_os_error(nix::libc::ENOENT))?;
        let data = fs::read(p)?;
        self.nodes.get_mut(&ino).expect("node").durable_data = Some(data);
        Ok(())
    }

    /// Rebuild `dst` as a power cut leaves the store: durable entries only,
    /// each file's data as synced, or (never synced data) dropped, kept or
    /// cut short by the draw of `rng`.
    fn rebuild(&self, dst: &Path, rng: &mut Rng, rep: &mut CutReport) -> io::Result<()> {
        fs::create_dir(dst)?;
        self.rebuild_dir(ROOT, dst, rng, rep, 0)
    }

    fn rebuild_dir(&self, ino: Ino, dst: &Path, rng: &mut Rng, rep: &mut CutReport, depth: usize) -> io::Result<()> {
        let n = &self.nodes[&ino];
        rep.names_undone += n.children.iter().filter(|(k, v)| n.durable_children.get(*k) != Some(v)).count() as u64;
        for (name, &child) in &n.durable_children {
            let c = &self.nodes[&child];
            let p = dst.join(name);
            let cur = self.path(child).and_then(|cp| fs::symlink_metadata(&cp).ok().map(|m| (cp, m)));
            if c.dir {
                if depth > 64 || p.exists() {
                    continue;
                }
                fs::create_dir(&p)?;
                self.rebuild_dir(child, &p, rng, rep, depth + 1)?;
                let mode = cur.as_ref().map_or(0o700, |(_, m)| m.mode() & 0o7777);
                fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
            } else {
                let durable = c.durable_data.clone().unwrap_or_default();
                let current = cur.as_ref().and_then(|(cp, _)| fs::read(cp).ok()).unwrap_or_else(|| durable.clone());
                let data = if current == durable {
                    durable
                } else {
                    match rng.range(0, 3) {
                        0 => {
                            rep.dropped += 1;
                            durable
                        }
                        1 => {
                            rep.kept += 1;
                            current
                        }
                        _ if current.len() > durable.len() && current.starts_with(&durable) => {
                            rep.cut_short += 1;
                            let at = rng.range(durable.len() as u64, current.len() as u64) as usize;
                            current[..at].to_vec()
                        }
                        _ => {
                            rep.dropped += 1;
                            durable
                        }
                    }
                };
                fs::write(&p, &data)?;
                if let Some((_, m)) = &cur {
                    fs::set_permissions(&p, fs::Permissions::from_mode(m.mode() & 0o7777))?;
                    if let Ok(t) = m.modified() {
                        File::options().write(true).open(&p)?.set_modified(t)?;
                    }
                } else {
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
                }
            }
        }
        Ok(())
    }
}

/// The FUSE side: every operation under one lock (the tests' traffic is
/// small; one lock keeps the model simple to read).
struct Fs(Arc<Mutex<Option<Model>>>);

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(nix::libc::EIO))
}

impl Fs {
    fn m(&self) -> MutexGuard<'_, Option<Model>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry(&self, m: &Model, ino: Ino, reply: ReplyEntry) {
        match m.attr(ino) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _r: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let g = self.m();
        let m = g.as_ref().expect("mounted");
        match m.child(parent.0, name) {
            Some(ino) => self.entry(m, ino, reply),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _r: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let g = self.m();
        match g.as_ref().expect("mounted").attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _r: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut g = self.m();
        let m = g.as_mut().expect("mounted");
        let Some(p) = m.path(ino.0) else { return reply.error(Errno::ENOENT) };
        let r = (|| -> io::Result<()> {
            if let Some(mode) = mode {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if let Some(size) = size {
                OpenOptions::new().write(true).open(&p)?.set_len(size)?;
            }
            if atime.is_some() || mtime.is_some() {
                let ts = |t: Option<TimeOrNow>| match t {
                    None => nix::sys::time::TimeSpec::new(0, nix::libc::UTIME_OMIT),
                    Some(TimeOrNow::Now) => nix::sys::time::TimeSpec::new(0, nix::libc::UTIME_NOW),
                    Some(TimeOrNow::SpecificTime(t)) => {
                        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                        nix::sys::time::TimeSpec::new(d.as_secs() as i64, i64::from(d.subsec_nanos()))
                    }
                };
                nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, &p, &ts(atime), &ts(mtime), nix::sys::stat::UtimensatFlags::NoFollowSymlink)?;
            }
            Ok(())
        })();
        match r.and_then(|()| m.attr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(&self, _r: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut g = self.m();
        let m = g.as_mut().expect("mounted");
        let p = match m.new_name(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let r = fs::create_dir(&p).and_then(|()| fs::set_permissions(&p, fs::Permissions::from_mode(mode & !umask & 0o7777)));
        if let Err(e) = r {
            return reply.error(errno(&e));
        }
        let ino = m.new_node(true);
        m.link(parent.0, name.to_owned(), ino);
        self.entry(m, ino, reply);
    }

    fn create(&self, _r: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let mut g = self.m();
        let m = g.as_mut().expect("mounted");
        let p = match m.new_name(parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let f = OpenOptions::new().read(true).write(true).create_new(true).mode(mode & !umask & 0o7777).open(&p);
        let f = match f.and_then(|f| f.set_permissions(fs::Permissions::from_mode(mode & !umask & 0o7777)).map(|()| f)) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        let _ = flags;
        let ino = m.new_node(false);
        m.link(parent.0, name.to_owned(), ino);
        let fh = m.next_fh;
        m.next_fh += 1;
        m.handles.insert(fh, f);
        match m.attr(ino) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _r: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut g = self.m();
        let m = g.as_mut().expect("mounted");
        let Some(p) = m.path(ino.0) else { return reply.error(Errno::ENOENT) };
        // Read-write where the mode allows it (the kernel checked access).
        let f = OpenOptions::new().read(true).write(true).open(&p).or_else(|_| File::open(&p));
        match f {
            Ok(f) => {
                let fh = m.next_fh;
                m.next_fh += 1;
                m.handles.insert(fh, f);
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(&self, _r: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, size: u32, _f: OpenFlags, _l: Option<fuser::LockOwner>, reply: ReplyData) {
        let g = self.m();
        let Some(f) = g.as_ref().expect("mounted").handles.get(&fh.0) else { return reply.error(Errno::EBADF) };
        let mut buf = vec![0; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(&self, _r: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, data: &[u8], _w: WriteFlags, _f: OpenFlags, _l: Option<fuser::LockOwner>, reply: ReplyWrite) {
        let mut g = self.m();
        let m = g.as_mut().expect("mounted");
        m.counts.writes += 1;
        let Some(f) = m.handles.get(&fh.0) else { return reply.error(Errno::EBADF) };
        match f.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&self, _r: &Request, _ino: INodeNo, _fh: FileHandle, _l: fuser::LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(&self, _r: &Request, _ino: INodeNo, fh: FileHandle, _f: OpenFlags, _l: Option<fuser::LockOwner>, _flush: bool, reply: ReplyEmpty) {
        self.m().as_mut().expect("mounted").handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _r: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut g = self.m();
        let m = g.as_mut().expect("mounted");
        m.counts.fsyncs += 1;
        match m.sync_file(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsyncdir(&self, _r: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let mut g = self.m();
        let m = g.as_mut().expect("mounted");
        m.counts.dir_fsyncs += 1;
        if m.nodes.get(&ino.0).is_some_and(|n| n.dir) {
            m.sync_dir(ino.0);
        }
        reply.ok();
    }

    fn readdir(&self, _r: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let g = self.m();
        let m = g.as_ref().expect("mounted");
        let Some(n) = m.nodes.get(&ino.0) else { return reply.error(Errno::ENOENT) };
        let mut all: Vec<(Ino, FileType, OsString)> = vec![(ino.0, FileType::Directory, ".".into()), (ino.0, FileType::Directory, "..".into())];
        for (name, &c) in &n.children {
            let t = if m.nodes[&c].dir { FileType::Directory } else { FileType::RegularFile };
            all.push((c, t, name.clone()));
        }
        for (i, (c, t, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(c), (i + 1) as u64, t, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn unlink(&self, _r: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut g = self.m();
        let m = g.as_mut().expect("mounted");
        let Some(pp) = m.path(parent.0) else { return reply.error(Errno::ENOENT) };
        let Some(ino) = m.child(parent.0, name) else { return reply.error(Errno::ENOENT) };
        if m.nodes[&ino].dir {
            return reply.error(Errno::EISDIR);
        }
        m.unlink_name(parent.0, name);
        match m.bury(ino, &pp.join(name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _r: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut g = self.m();
        let m = g.as_mut().expect("mounted");
        let Some(pp) = m.path(parent.0) else { return reply.error(Errno::ENOENT) };
        if m.child(parent.0, name).is_none() {
            return reply.error(Errno::ENOENT);
        }
        match fs::remove_dir(pp.join(name)) {
            Ok(()) => {
                m.unlink_name(parent.0, name);
                reply.ok();
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(&self, _r: &Request, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, flags: RenameFlags, reply: ReplyEmpty) {
        let mut g = self.m();
        let m = g.as_mut().expect("mounted");
        m.counts.renames += 1;
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let (Some(from_dir), Some(to_dir)) = (m.path(parent.0), m.path(newparent.0)) else { return reply.error(Errno::ENOENT) };
        let Some(ino) = m.child(parent.0, name) else { return reply.error(Errno::ENOENT) };
        let (from, to) = (from_dir.join(name), to_dir.join(newname));
        if let Some(old) = m.child(newparent.0, newname) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EEXIST);
            }
            if old == ino {
                return reply.ok();
            }
            // The file replaced keeps its data for the durable entries
            // that may name it.
            if m.nodes[&old].dir {
                if let Err(e) = fs::remove_dir(&to) {
                    return reply.error(errno(&e));
                }
                m.unlink_name(newparent.0, newname);
            } else {
                m.unlink_name(newparent.0, newname);
                if let Err(e) = m.bury(old, &to) {
                    return reply.error(errno(&e));
                }
            }
        }
        if let Err(e) = fs::rename(&from, &to) {
            return reply.error(errno(&e));
        }
        m.unlink_name(parent.0, name);
        m.link(newparent.0, newname.to_owned(), ino);
        if parent != newparent {
            m.renames.push(Rename { from: (parent.0, name.to_owned()), to: (newparent.0, newname.to_owned()), node: ino });
        }
        reply.ok();
    }

    fn link(&self, _r: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let mut g = self.m();
        let m = g.as_mut().expect("mounted");
        if m.child(newparent.0, newname).is_some() {
            return reply.error(Errno::EEXIST);
        }
        let (Some(src), Some(dir)) = (m.path(ino.0), m.path(newparent.0)) else { return reply.error(Errno::ENOENT) };
        if let Err(e) = fs::hard_link(&src, dir.join(newname)) {
            return reply.error(errno(&e));
        }
        m.link(newparent.0, newname.to_owned(), ino.0);
        self.entry(m, ino.0, reply);
    }

    fn statfs(&self, _r: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let g = self.m();
        match nix::sys::statvfs::statvfs(&g.as_ref().expect("mounted").backing) {
            Ok(s) => reply.statfs(s.blocks(), s.blocks_free(), s.blocks_available(), s.files(), s.files_free(), s.block_size() as u32, 255, s.fragment_size() as u32),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }
}

/// A mounted crashfs: `mnt` shows `store/backing`.
pub struct CrashFs {
    pub mnt: PathBuf,
    store: PathBuf,
    state: Arc<Mutex<Option<Model>>>,
    session: Option<fuser::BackgroundSession>,
    pub cuts: u64,
    pub total: CutReport,
}

/// Can this machine mount a FUSE filesystem? `Err` says what is missing.
/// With `CI=true` a missing piece fails the test instead of skipping it.
pub fn available() -> Result<(), String> {
    let mut missing = Vec::new();
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse");
    }
    let in_path = |b: &str| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()));
    if !in_path("fusermount3") {
        missing.push("fusermount3 (package fuse3)");
    }
    if missing.is_empty() { Ok(()) } else { Err(format!("cannot mount a FUSE filesystem: missing {}", missing.join(", "))) }
}

/// `true` if the test may run; `false` (after saying why) if it must be
/// skipped; a panic under CI, where a skip would count as a pass.
pub fn usable(test: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{test}: {why} (CI=true: this is a failure, not a skip; .ci/run installs fuse3)"),
        Err(why) => {
            eprintln!("{test}: skipped: {why}");
            false
        }
    }
}

impl CrashFs {
    /// Mount a fresh, empty crashfs at `mnt` (created), its store beside.
    pub fn mount(mnt: &Path) -> CrashFs {
        let store = mnt.with_extension("crashfs");
        fs::create_dir_all(store.join("backing")).expect("backing dir");
        fs::create_dir_all(store.join("graves")).expect("graves dir");
        fs::create_dir_all(mnt).expect("mount point");
        let mut c = CrashFs { mnt: mnt.to_path_buf(), store, state: Arc::new(Mutex::new(None)), session: None, cuts: 0, total: CutReport::default() };
        c.mount_again();
        c
    }

    fn mount_again(&mut self) {
        let m = Model::load(&self.store.join("backing"), &self.store.join("graves")).expect("load the store");
        *self.state.lock().unwrap() = Some(m);
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![fuser::MountOption::FSName("crashfs".into()), fuser::MountOption::RW];
        let s = fuser::spawn_mount(Fs(self.state.clone()), &self.mnt, &cfg).expect("mount crashfs");
        self.session = Some(s);
        let mnt = self.mnt.clone();
        super::super::util::wait_until("crashfs to be mounted", Duration::from_secs(10), || mounted(&mnt));
    }

    /// What the filesystem saw since the last mount.
    pub fn counts(&self) -> Counts {
        self.state.lock().unwrap().as_ref().map(|m| m.counts).unwrap_or_default()
    }

    /// A power cut. Every process using the filesystem must be gone (the
    /// caller killed them): unmount, rebuild the store from what was
    /// durable, mount again.
    pub fn cut(&mut self, rng: &mut Rng) -> CutReport {
        let s = self.session.take().expect("mounted");
        let until = Instant::now() + Duration::from_secs(20);
        // Unmounting fails while a file is still open (a process on its
        // way out): try again until the deadline.
        let mut s = Some(s);
        while let Some(sess) = s.take() {
            let unmounter_ok = std::process::Command::new("fusermount3").arg("-u").arg(&self.mnt).stderr(std::process::Stdio::null()).status().is_ok_and(|st| st.success());
            if unmounter_ok || !mounted(&self.mnt) {
                let _ = sess.join();
                break;
            }
            assert!(Instant::now() < until, "crashfs at {} stayed busy: cannot cut", self.mnt.display());
            s = Some(sess);
            std::thread::sleep(Duration::from_millis(50));
        }
        let model = self.state.lock().unwrap().take().expect("model");
        let backing = self.store.join("backing");
        let next = self.store.join("backing.cut");
        let mut rep = CutReport::default();
        model.rebuild(&next, rng, &mut rep).expect("rebuild the store");
        drop(model);
        fs::remove_dir_all(&backing).expect("old store");
        fs::rename(&next, &backing).expect("new store");
        let graves = self.store.join("graves");
        fs::remove_dir_all(&graves).expect("graves");
        fs::create_dir(&graves).expect("graves");
        self.cuts += 1;
        self.total.dropped += rep.dropped;
        self.total.kept += rep.kept;
        self.total.cut_short += rep.cut_short;
        self.total.names_undone += rep.names_undone;
        self.mount_again();
        rep
    }
}

impl Drop for CrashFs {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(&self.mnt).status();
            let _ = s.join();
        }
        let _ = fs::remove_dir_all(&self.store);
    }
}

/// Is a FUSE filesystem mounted at `mnt`?
pub fn mounted(mnt: &Path) -> bool {
    let canon = fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|s| {
        s.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() > 4 && Path::new(f[4]) == canon && l.contains(" - fuse")
        })
    })
}
