//! The queue directory: where things are, how a queue is created or opened,
//! and the safety checks every tool relies on (a queue runs commands as its
//! owner, so nobody else may be able to write into it).

use crate::error::{Error, IoContext, Kind, Result};
use crate::fsx;
use crate::time;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The format version this tool writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The feature a queue's `FORMAT` names once it holds a class directory
/// (`pending/c.<CLASS>/`, docs/FORMAT.md "Classes"): a q that does not know
/// it refuses the queue rather than miss, or quarantine, those jobs.
pub const FEATURE_CLASSES: &str = "classes";

/// The features this tool knows.
pub const FEATURES: &[&str] = &[FEATURE_CLASSES];
const MAGIC: &str = "q-queue";

/// The directories of a queue, in creation order. `FORMAT` is written last.
pub const DIRS: &[&str] = &[
    "tmp", "pending", "waiting", "held", "leased", "done", "dead", "canceled", "corrupt", "var",
    "env", "keys", "locks",
];

/// How much the tools fsync. `Full`: every state change is durable before it
/// is reported. `Relaxed`: pushes are still durable, but claims and
/// completions of at-least-once jobs skip their directory fsyncs (a crash may
/// then re-run a job, never lose one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    #[default]
    Full,
    Relaxed,
}

impl Durability {
    pub fn parse(s: &str) -> Result<Durability> {
        match s {
            "full" => Ok(Durability::Full),
            "relaxed" => Ok(Durability::Relaxed),
            _ => Err(Error::new(Kind::Data, format!("durability {s:?}: use \"full\" or \"relaxed\""))),
        }
    }
}

/// The `FORMAT` file: what this directory is and which version wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FormatRecord {
    pub magic: String,
    pub version: u32,
    pub created_at: String,
    #[serde(default)]
    pub features: Vec<String>,
    /// A group-shared queue trusts exactly this group id (opt-in at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
}

/// An open queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    root: PathBuf,
    pub durability: Durability,
    /// The trusted group of a group-shared queue.
    pub group: Option<u32>,
    /// Whether `tmp/` takes unnamed files (`O_TMPFILE`), found out by the
    /// first batch push and kept (see `push.rs`).
    pub(crate) unnamed_files: std::sync::OnceLock<bool>,
    /// Whether `syncfs` makes this queue's files durable (not on FUSE; see
    /// [`fsx::syncfs_reaches_disk`]), found out once.
    pub(crate) syncfs_works: std::sync::OnceLock<bool>,
    /// Whether `FORMAT` names the feature `classes` (as far as this
    /// process knows: set when it opened the queue, or added it).
    pub(crate) classes: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The pause record: `PAUSED` in the queue root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pause {
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
}

impl Queue {
    /// Open an existing queue. `Ok(None)` when the directory does not exist
    /// (for readers a missing queue is an empty queue).
    pub fn open(root: &Path) -> Result<Option<Queue>> {
        match fs::symlink_metadata(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open queue", root, e)),
            Ok(_) => {}
        }
        let format = root.join("FORMAT");
        if !fsx::exists(&format) {
            if is_empty_or_partial(root)? {
                return Ok(None);
            }
            // A creator may have finished (FORMAT is published last)
            // between the two looks: a queue now, not a stranger.
            if !fsx::exists(&format) {
                return Err(not_a_queue(root));
            }
        }
        Queue::open_checked(root).map(Some)
    }

    /// Open a queue, creating it (mode 0700) when missing or when `root` is an
    /// empty directory. `group`: create it group-shared, trusting that group.
    pub fn create(root: &Path, group: Option<u32>) -> Result<Queue> {
        if let Some(q) = Queue::open(root)? {
            return Ok(q);
        }
        check_path(root, group)?;
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e).with_kind(Kind::Create))?;
        }
        fsx::mkdir(root)?;
        fsx::set_group_shared(group.is_some());
        let mode = if group.is_some() { 0o2770 } else { 0o700 };
        if let Some(gid) = group {
            nix::unistd::chown(root, None, Some(nix::unistd::Gid::from_raw(gid)))
                .map_err(|e| Error::io("chown", root, e.into()).with_kind(Kind::Create))?;
        }
        fs::set_permissions(root, fs::Permissions::from_mode(mode)).ctx("chmod", root)?;
        // A concurrent creator may be doing the same: every step tolerates it.
        if !is_empty_or_partial(root)? && !fsx::exists(&root.join("FORMAT")) {
            return Err(not_a_queue(root));
        }
        for d in DIRS {
            let p = root.join(d);
            fsx::mkdir(&p)?;
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).ctx("chmod", &p)?;
        }
        let rec = FormatRecord {
            magic: MAGIC.into(),
            version: FORMAT_VERSION,
            created_at: time::rfc3339(time::now_ms()),
            features: Vec::new(),
            group,
        };
        let mut bytes = serde_json::to_vec(&rec).unwrap_or_default();
        bytes.push(b'\n');
        // Publish FORMAT last: link-style no-replace, so two creators agree.
        fsx::publish(&root.join("tmp"), &root.join("FORMAT"), &bytes, true)?;
        fsx::fsync_dir(root)?;
        Queue::open_checked(root)
    }

    fn open_checked(root: &Path) -> Result<Queue> {
        let format = root.join("FORMAT");
        let bytes = fsx::read_capped(&format, 64 * 1024).ctx("read", &format)?;
        let rec: FormatRecord = serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(Kind::Format, format!("{} is not a q queue format file ({e})", format.display()))
        })?;
        if rec.magic != MAGIC {
            return Err(Error::new(Kind::Format, format!("{} is not a q queue format file", format.display())));
        }
        if rec.version > FORMAT_VERSION || rec.features.iter().any(|f| !FEATURES.contains(&f.as_str())) {
            return Err(Error::new(
                Kind::Format,
                format!(
                    "queue {} has format version {} (features {:?}); this tool reads version {FORMAT_VERSION}: upgrade q",
                    root.display(),
                    rec.version,
                    rec.features
                ),
            ));
        }
        let classes = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(rec.features.iter().any(|f| f == FEATURE_CLASSES)));
        let q = Queue { root: root.to_path_buf(), durability: Durability::Full, group: rec.group, unnamed_files: Default::default(), syncfs_works: Default::default(), classes };
        fsx::set_group_shared(rec.group.is_some());
        check_path(root, rec.group)?;
        q.check_owner(root)?;
        for d in DIRS {
            let p = root.join(d);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                    return Err(Error::new(
                        Kind::Permission,
                        format!("{} is not a directory (a symlink or file was planted there): refusing to use this queue", p.display()),
                    ));
                }
                Ok(m) => q.check_meta(&p, &m)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fsx::mkdir(&p)?;
                }
                Err(e) => return Err(Error::io("stat", &p, e)),
            }
        }
        Ok(q)
    }

    /// Make sure `FORMAT` names the feature `classes` before the first
    /// class directory is made: publish the record again with it (staged
    /// and fsynced in `tmp/`, renamed over `FORMAT`, the root fsynced).
    /// Two processes doing it at once write the same record. Crash before
    /// the rename: a `tmp/` file (q-gc); after it: the feature without a
    /// class directory, which changes nothing but that a q without the
    /// feature refuses the queue.
    pub(crate) fn enable_classes(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.classes.load(Ordering::Acquire) {
            return Ok(());
        }
        let format = self.root.join("FORMAT");
        let bytes = fsx::read_capped(&format, 64 * 1024).ctx("read", &format)?;
        let mut rec: FormatRecord = serde_json::from_slice(&bytes)
            .map_err(|e| Error::new(Kind::Format, format!("{} is not a q queue format file ({e})", format.display())))?;
        if !rec.features.iter().any(|f| f == FEATURE_CLASSES) {
            rec.features.push(FEATURE_CLASSES.to_owned());
            let mut bytes = serde_json::to_vec(&rec).unwrap_or_default();
            bytes.push(b'\n');
            let tmp = fsx::stage(&self.tmp(), &bytes, true)?;
            crate::failpoint!("classes.before_format");
            fs::rename(&tmp, &format).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::io("rename", &format, e)
            })?;
            fsx::fsync_dir(&self.root)?;
            crate::failpoint!("classes.after_format");
        }
        self.classes.store(true, Ordering::Release);
        Ok(())
    }

    /// Refuse a path that another user could write (SPEC: exit 77).
    pub fn check_owner(&self, p: &Path) -> Result<()> {
        let m = fs::symlink_metadata(p).ctx("stat", p)?;
        self.check_meta(p, &m)
    }

    /// The same check on metadata already at hand (e.g. of an open file).
    pub fn check_meta(&self, p: &Path, m: &fs::Metadata) -> Result<()> {
        let uid = crate::owner::euid();
        let mode = m.mode();
        let refuse = |why: String| {
            Err(Error::new(
                Kind::Permission,
                format!("refusing {}: {why}; a queue runs commands as you, so only you may write into it (fix with chmod go-w, or create the queue group-shared)", p.display()),
            ))
        };
        match self.group {
            None => {
                if m.uid() != uid && uid != 0 && m.uid() != 0 {
                    return refuse(format!("it is owned by uid {}", m.uid()));
                }
                if mode & 0o022 != 0 {
                    return refuse(format!("it is writable by {} (mode {:o})", if mode & 0o002 != 0 { "others" } else { "its group" }, mode & 0o7777));
                }
            }
            Some(gid) => {
                if mode & 0o002 != 0 {
                    return refuse(format!("it is writable by others (mode {:o})", mode & 0o7777));
                }
                if mode & 0o020 != 0 && m.gid() != gid {
                    return refuse(format!("it is writable by group {}, but the queue trusts only group {gid}", m.gid()));
                }
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Per-job directory for leases, results, logs and workspaces.
    pub fn var(&self, id: &str) -> PathBuf {
        self.root.join("var").join(id)
    }

    /// Make `var/<ID>/` if it is missing and return it. Something planted
    /// in its place (a symlink, a file) is quarantined first, never
    /// written through.
    pub(crate) fn make_var(&self, id: &str) -> Result<PathBuf> {
        let var = self.var(id);
        if fs::symlink_metadata(&var).is_ok_and(|m| !m.is_dir()) {
            self.quarantine(&var, "a symlink or file where the job's var directory belongs");
        }
        fsx::mkdir(&var)?;
        Ok(var)
    }

    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// May group commits rely on one `syncfs` for many files? Not on a
    /// filesystem that does not pass it on (FUSE): per-file fsyncs there.
    pub(crate) fn syncfs_trusted(&self) -> bool {
        // `Q_DISABLE=syncfs-fallback` (tests only) trusts it anyway, to
        // show what the fallback prevents.
        *self.syncfs_works.get_or_init(|| crate::failpoint::disabled("syncfs-fallback") || fsx::syncfs_reaches_disk(&self.root))
    }

    /// Should claims and completions of this job fsync their directories?
    pub fn sync_claims(&self, at_most_once: bool) -> bool {
        at_most_once || self.durability == Durability::Full
    }

    /// The pause record, if the queue is paused now.
    pub fn paused(&self, now: i64) -> Option<Pause> {
        let bytes = fsx::read_capped(&self.root.join("PAUSED"), 4096).ok()?;
        let p: Pause = serde_json::from_slice(&bytes).ok()?;
        match p.until_ms {
            Some(u) if u <= now => None,
            _ => Some(p),
        }
    }

    pub fn pause(&self, until_ms: Option<i64>) -> Result<()> {
        let p = Pause { since: time::rfc3339(time::now_ms()), until_ms };
        let mut bytes = serde_json::to_vec(&p).unwrap_or_default();
        bytes.push(b'\n');
        let tmp = self.tmp().join(fsx::tmp_name("pause"));
        let mut f = fsx::create_new(&tmp)?;
        std::io::Write::write_all(&mut f, &bytes).ctx("write", &tmp)?;
        f.sync_all().ctx("fsync", &tmp)?;
        drop(f);
        fs::rename(&tmp, self.root.join("PAUSED")).ctx("rename", &tmp)?;
        fsx::fsync_dir(&self.root)
    }

    pub fn resume(&self) -> Result<bool> {
        let p = self.root.join("PAUSED");
        let was = fsx::exists(&p);
        fsx::remove(&p)?;
        fsx::fsync_dir(&self.root)?;
        Ok(was)
    }

    /// Free space check before a push (Postfix `queue_minfree`): refuse when
    /// fewer than `min_free` bytes would remain.
    pub fn check_free_space(&self, need: u64, min_free: u64) -> Result<()> {
        if let Ok(st) = nix::sys::statvfs::statvfs(&self.root) {
            let free = st.blocks_available() * st.fragment_size();
            if free < need.saturating_add(min_free) {
                return Err(Error::new(
                    Kind::Io,
                    format!(
                        "disk nearly full: {} has {} KiB free, below the {} KiB reserve; free some space (q-gc prunes finished jobs) and push again",
                        self.root.display(),
                        free / 1024,
                        min_free / 1024
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Refuse a queue that another user could swap for one of their own: every
/// directory above it, along the path as given and as it resolves, must be
/// root's or this user's and writable by no one else, but for a root-owned
/// sticky directory such as /tmp (whose entries only their owners may move)
/// and, for a group-shared queue, write access of its trusted group.
/// (77, like a queue another user could write.) A directory that cannot be
/// looked at is skipped: the queue cannot be reached through it either.
fn check_path(root: &Path, group: Option<u32>) -> Result<()> {
    let me = crate::owner::euid();
    let abs = if root.is_absolute() { root.to_path_buf() } else { std::env::current_dir().ctx("find the current directory for", root)?.join(root) };
    let mut dirs: Vec<PathBuf> = abs.ancestors().skip(1).map(Path::to_path_buf).collect();
    if let Ok(real) = fs::canonicalize(&abs) {
        dirs.extend(real.ancestors().skip(1).map(Path::to_path_buf));
    }
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        let Ok(m) = fs::metadata(&d) else { continue };
        let mode = m.mode() & 0o7777;
        let root_sticky = m.uid() == 0 && mode & 0o1000 != 0;
        let why = if m.uid() != 0 && m.uid() != me {
            Some(format!("it is owned by {}", crate::owner::describe(m.uid())))
        } else if mode & 0o002 != 0 && !root_sticky {
            Some(format!("others may write it (mode {mode:o})"))
        } else if mode & 0o020 != 0 && !root_sticky && group != Some(m.gid()) {
            Some(format!("its group (gid {}) may write it (mode {mode:o})", m.gid()))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Error::new(
                Kind::Permission,
                format!(
                    "refusing queue {}: {} is on its path and {why}, so another user could replace the queue; keep queues under directories only you or root can write (or a sticky one such as /tmp)",
                    root.display(),
                    d.display()
                ),
            ));
        }
    }
    Ok(())
}

fn not_a_queue(root: &Path) -> Error {
    let what = match fs::symlink_metadata(root) {
        Ok(m) if !m.is_dir() => "is a file, not a directory: a queue is a directory",
        _ => "is a non-empty directory that is not a q queue: refusing to write into it",
    };
    Error::new(Kind::Create, format!("{} {what} (choose another --queue)", root.display()))
}

/// Empty, or holding only what an interrupted `Queue::create` leaves.
fn is_empty_or_partial(root: &Path) -> Result<bool> {
    let names = match fs::read_dir(root) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => return Err(not_a_queue(root)),
        Err(e) => return Err(Error::io("read directory", root, e)),
    };
    Ok(names.iter().all(|n| DIRS.contains(&n.as_str())))
}
