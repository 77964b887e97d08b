//! The site's file store: files under `<data>/site/files/`, put, read, listed and deleted
//! through `/login/api/v1/files` (`crate::api::files`), and carried to a backup by data sync.
//!
//! - **Where**: the store's directory is asked of [`SiteStore::files_dir`] and opened
//!   afresh for every operation: sync replaces `<data>/site` whole, so a directory handle
//!   kept across requests would point at a generation that is gone.
//! - **Paths** are [`SitePath`]s (relative, no `.` or `..`, bounded) and every lookup goes
//!   through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the store's directory:
//!   a symbolic link anywhere on the way, the file itself included, is refused
//!   ([`PathError::Symlink`]), so nothing outside the store is ever read or written.
//! - **Uploads** ([`Upload`]) stream into a new file under `<data>/tmp/uploads/` (the same
//!   file system as the site, outside it, so sync never sees a half file), hashed as they
//!   arrive; [`Upload::commit`] fsyncs it, creates the parent directories (each fsynced in
//!   its parent), renames it into place and fsyncs the directory. An upload dropped before
//!   its commit (client gone, disk full) removes its file; one cut by a crash leaves it in
//!   `tmp/uploads`, emptied when the agent starts. A file is never written in place: sync
//!   hard-links unchanged files between generations, so a file is only replaced by rename.
//! - **Hashes**: the listing gives each file's SHA-256. They are kept in memory, keyed by
//!   the file's identity (device, inode, size, mtime and ctime to the nanosecond): an
//!   upload fills its entry as it writes, and any other file (one a sync brought, or the
//!   first listing after a restart) is hashed once when a listing meets it. A file replaced
//!   by rename has a new inode, so a stale hash is never served. A listing of the whole
//!   store drops the entries of files no longer there.
//! - **Space**: an upload that announces more bytes than the data partition has free is
//!   refused before a byte is read; running out of space while writing
//!   ([`FilesError::DiskFull`]) abandons the upload and leaves the previous version.
//!
//! Limits: only regular files and directories are served (anything else found in the
//! store, such as a symbolic link, is left out of listings and refused by name); names
//! that are not UTF-8 (which only something other than the API could create) are skipped.

pub mod path;

pub use path::{PathError, Prefix, SitePath};

use crate::site::SiteStore;
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, renameat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fsync, unlinkat, UnlinkatFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Where uploads are written until they are complete, below the data directory.
pub const UPLOADS_DIR: &str = "tmp/uploads";

/// What the store says of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInfo {
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// The last change, RFC 3339 in UTC.
    pub modified: String,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
}

/// A listing, sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileList {
    pub files: Vec<FileInfo>,
}

/// A file put in the store.
#[derive(Debug)]
pub struct Stored {
    pub info: FileInfo,
    /// Whether the path was new (else an older version was replaced).
    pub created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("bad path: {0}")]
    BadPath(#[from] PathError),
    #[error("no file {0:?} in the file store")]
    NotFound(String),
    #[error("{0:?} is a directory of the file store, not a file (list it with ?prefix={0}/)")]
    IsADirectory(String),
    #[error("a parent of {0:?} is a file, not a directory")]
    ParentNotADirectory(String),
    #[error("the upload announces {needed} bytes but the data partition has {free} free: delete files or upload a smaller one")]
    NoSpace { needed: u64, free: u64 },
    #[error("the data partition is full: the upload of {0:?} was abandoned and nothing changed; delete files and try again")]
    DiskFull(String),
    #[error("the upload of {0:?} ended before its last byte: nothing changed")]
    Incomplete(String),
    #[error("cannot {op} {path:?} in the file store: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl FilesError {
    /// The HTTP status and stable code.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            FilesError::BadPath(_) => (400, "bad_path"),
            FilesError::NotFound(_) => (404, "not_found"),
            FilesError::IsADirectory(_) => (409, "is_a_directory"),
            FilesError::ParentNotADirectory(_) => (409, "parent_not_a_directory"),
            FilesError::NoSpace { .. } | FilesError::DiskFull(_) => (507, "insufficient_storage"),
            FilesError::Incomplete(_) => (400, "upload_incomplete"),
            FilesError::Io { .. } => (500, "internal"),
        }
    }
}

/// The resolution every lookup uses: below the store's directory, no symbolic links.
fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Opens `rel` (a relative path, `.` for `dir` itself) below `dir`. A link anywhere, the
/// last component included, fails with `ELOOP` (no `O_NOFOLLOW`: with `O_DIRECTORY` it
/// would turn a link at the end into `ENOTDIR`).
fn open_beneath(dir: &OwnedFd, rel: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
        .resolve(beneath());
    openat2(dir, rel, how)
}

/// Opens the directory `segments` names below `root` (`root` itself when empty).
fn open_dir(root: &OwnedFd, segments: &[&str]) -> Result<OwnedFd, Errno> {
    let rel = if segments.is_empty() {
        ".".to_string()
    } else {
        segments.join("/")
    };
    open_beneath(root, &rel, OFlag::O_DIRECTORY | OFlag::O_RDONLY)
}

/// The file type bits of a stat.
fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// An error of a lookup that reads: a missing file, or a file where a directory should be,
/// is not found; a symbolic link is a bad path.
fn lookup_error(e: Errno, path: &str, op: &'static str) -> FilesError {
    match e {
        Errno::ENOENT | Errno::ENOTDIR => FilesError::NotFound(path.to_string()),
        Errno::ELOOP | Errno::EXDEV => FilesError::BadPath(PathError::Symlink),
        e => io_error(e, path, op),
    }
}

/// An error of a step that writes.
fn write_error(e: Errno, path: &str, op: &'static str) -> FilesError {
    match e {
        Errno::ENOTDIR => FilesError::ParentNotADirectory(path.to_string()),
        Errno::EISDIR => FilesError::IsADirectory(path.to_string()),
        Errno::ENOSPC | Errno::EDQUOT => FilesError::DiskFull(path.to_string()),
        Errno::ELOOP | Errno::EXDEV => FilesError::BadPath(PathError::Symlink),
        e => io_error(e, path, op),
    }
}

fn io_error(e: impl Into<std::io::Error>, path: &str, op: &'static str) -> FilesError {
    FilesError::Io {
        op,
        path: path.to_string(),
        source: e.into(),
    }
}

/// What identifies one version of one file: a file replaced by rename (an upload, a
/// sync) has another inode, and one changed in place another size, mtime or ctime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Identity {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl From<&FileStat> for Identity {
    fn from(st: &FileStat) -> Identity {
        Identity {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// RFC 3339 in UTC of a stat's mtime.
fn modified(st: &FileStat) -> String {
    let nanos = i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn info(path: String, st: &FileStat, sha256: &[u8; 32]) -> FileInfo {
    FileInfo {
        path,
        size: u64::try_from(st.st_size).unwrap_or(0),
        modified: modified(st),
        sha256: hex(sha256),
    }
}

/// SHA-256 of everything `file` holds from where it stands.
fn hash_file(mut file: File) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}

/// The content of an open file as a stream of chunks of at most `chunk` bytes, for a
/// body that must not hold the whole file (a download, the CLI's upload).
pub fn read_chunks(
    file: tokio::fs::File,
    chunk: usize,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    futures_util::stream::unfold(Some(file), move |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buf = bytes::BytesMut::with_capacity(chunk);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(file))),
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// The file store of one appliance (see the module documentation).
pub struct FileStore {
    site: Arc<SiteStore>,
    uploads: PathBuf,
    hashes: Mutex<HashMap<Identity, [u8; 32]>>,
    /// Held while directories are created or removed and files renamed into place, so a
    /// delete never removes a directory an upload is about to land in.
    tree: Mutex<()>,
    next_upload: AtomicU64,
}

impl FileStore {
    /// The store of `site`, with uploads under `uploads` (on the site's file system). What
    /// an earlier run left there (uploads a crash cut off) is removed.
    pub fn open(site: Arc<SiteStore>, uploads: PathBuf) -> FileStore {
        if let Ok(entries) = std::fs::read_dir(&uploads) {
            for entry in entries.flatten() {
                let p = entry.path();
                let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                match removed {
                    Ok(()) => tracing::info!("removed an unfinished upload: {}", p.display()),
                    Err(e) => tracing::warn!("cannot remove {}: {e}", p.display()),
                }
            }
        }
        if let Err(e) = crate::store::ensure_dir(&uploads, 0o700) {
            tracing::error!("no directory for uploads: {e}");
        }
        FileStore {
            site,
            uploads,
            hashes: Mutex::new(HashMap::new()),
            tree: Mutex::new(()),
            next_upload: AtomicU64::new(0),
        }
    }

    fn hashes(&self) -> MutexGuard<'_, HashMap<Identity, [u8; 32]>> {
        self.hashes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_tree(&self) -> MutexGuard<'_, ()> {
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store's directory as it is now (created if a new site generation lacks it).
    fn root(&self) -> Result<OwnedFd, FilesError> {
        let dir = self.site.files_dir();
        let open = || {
            nix::fcntl::open(
                &dir,
                OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
        };
        match open() {
            Err(Errno::ENOENT) => {
                crate::store::ensure_dir(&dir, 0o700).map_err(|e| FilesError::Io {
                    op: "create",
                    path: String::new(),
                    source: e.source,
                })?;
                open()
            }
            other => other,
        }
        .map_err(|e| io_error(e, "", "open"))
    }

    fn uploads_dir(&self) -> Result<OwnedFd, FilesError> {
        crate::store::ensure_dir(&self.uploads, 0o700).map_err(|e| FilesError::Io {
            op: "create the upload directory for",
            path: String::new(),
            source: e.source,
        })?;
        nix::fcntl::open(
            &self.uploads,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(e, "", "open the upload directory for"))
    }

    /// Opens a file for reading: the open file and its size.
    pub fn open_file(&self, path: &SitePath) -> Result<(File, u64), FilesError> {
        let root = self.root()?;
        let fd = open_beneath(&root, path.as_str(), OFlag::O_RDONLY | OFlag::O_NONBLOCK)
            .map_err(|e| lookup_error(e, path.as_str(), "open"))?;
        let st = fstat(&fd).map_err(|e| io_error(e, path.as_str(), "stat"))?;
        match kind(&st) {
            SFlag::S_IFREG => {}
            SFlag::S_IFDIR => return Err(FilesError::IsADirectory(path.to_string())),
            _ => return Err(FilesError::NotFound(path.to_string())),
        }
        Ok((File::from(fd), u64::try_from(st.st_size).unwrap_or(0)))
    }

    /// Starts an upload to `path`: refuses at once what is bound to fail (a bad path, a
    /// directory there, a file where a parent should be, more bytes announced than free).
    pub fn begin(
        self: &Arc<Self>,
        path: SitePath,
        announced: Option<u64>,
    ) -> Result<Upload, FilesError> {
        self.check_target(&path)?;
        let uploads = self.uploads_dir()?;
        if let Some(needed) = announced {
            let vfs = nix::sys::statvfs::fstatvfs(&uploads)
                .map_err(|e| io_error(e, path.as_str(), "measure the free space for"))?;
            let free = vfs.blocks_available().saturating_mul(vfs.fragment_size());
            if needed > free {
                return Err(FilesError::NoSpace { needed, free });
            }
        }
        let name = format!(
            "{}-{}.part",
            std::process::id(),
            self.next_upload.fetch_add(1, Ordering::Relaxed)
        );
        let fd = openat(
            &uploads,
            name.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| write_error(e, path.as_str(), "create an upload file for"))?;
        Ok(Upload {
            store: self.clone(),
            path,
            file: File::from(fd),
            uploads,
            name,
            hasher: Sha256::new(),
            size: 0,
            committed: false,
        })
    }

    /// What can be seen of `path` before its upload: the parents that exist are
    /// directories (not links), the file is not a directory (nor a link).
    fn check_target(&self, path: &SitePath) -> Result<(), FilesError> {
        let root = self.root()?;
        let (dirs, leaf) = path.split_parent();
        let parent = match open_dir(&root, &dirs) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(write_error(e, path.as_str(), "open")),
        };
        check_leaf(&parent, leaf, path).map(|_| ())
    }

    /// Lists the regular files whose path starts with `prefix`, sorted by path.
    pub fn list(&self, prefix: &Prefix) -> Result<Vec<FileInfo>, FilesError> {
        let root = self.root()?;
        let start: Vec<&str> = prefix.dirs().iter().map(String::as_str).collect();
        let mut files = Vec::new();
        let mut seen = HashSet::new();
        let mut pending = vec![start.join("/")];
        let mut first = true;
        while let Some(rel) = pending.pop() {
            let fd = match open_beneath(
                &root,
                if rel.is_empty() { "." } else { &rel },
                OFlag::O_DIRECTORY | OFlag::O_RDONLY,
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
                Err(Errno::ELOOP | Errno::EXDEV) if first => {
                    return Err(FilesError::BadPath(PathError::Symlink))
                }
                Err(Errno::ELOOP | Errno::EXDEV) => continue,
                Err(e) => return Err(io_error(e, &rel, "list")),
            };
            first = false;
            let copy = fd.try_clone().map_err(|e| io_error(e, &rel, "list"))?;
            let mut dir = Dir::from_fd(copy).map_err(|e| io_error(e, &rel, "list"))?;
            for entry in dir.iter() {
                let entry = entry.map_err(|e| io_error(e, &rel, "list"))?;
                let Ok(name) = std::str::from_utf8(entry.file_name().to_bytes()) else {
                    continue;
                };
                if name == "." || name == ".." {
                    continue;
                }
                let child = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                if child.len() > path::MAX_PATH {
                    continue;
                }
                let st = match entry.file_type() {
                    Some(Type::Directory) => None,
                    Some(Type::File) | None => {
                        match fstatat(&fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                            Ok(st) => Some(st),
                            Err(Errno::ENOENT) => continue,
                            Err(e) => return Err(io_error(e, &child, "stat")),
                        }
                    }
                    Some(_) => continue,
                };
                let is_dir = st.as_ref().is_none_or(|st| kind(st) == SFlag::S_IFDIR);
                if is_dir {
                    if prefix.matches(&format!("{child}/")) {
                        pending.push(child);
                    }
                    continue;
                }
                let Some(st) = st.filter(|st| kind(st) == SFlag::S_IFREG) else {
                    continue;
                };
                if !prefix.matches(&child) {
                    continue;
                }
                let Some(found) = self.describe(&fd, name, child, &st)? else {
                    continue;
                };
                seen.insert(found.0);
                files.push(found.1);
            }
        }
        if prefix.dirs().is_empty() && prefix.to_string().is_empty() {
            self.hashes().retain(|id, _| seen.contains(id));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// A file's listing entry, its hash from the cache or read now (`None`: it went away).
    fn describe(
        &self,
        dir: &OwnedFd,
        name: &str,
        path: String,
        st: &FileStat,
    ) -> Result<Option<(Identity, FileInfo)>, FilesError> {
        let id = Identity::from(st);
        if let Some(sha) = self.hashes().get(&id).copied() {
            return Ok(Some((id, info(path, st, &sha))));
        }
        let fd = match openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ELOOP) => return Ok(None),
            Err(e) => return Err(io_error(e, &path, "open")),
        };
        let st = fstat(&fd).map_err(|e| io_error(e, &path, "stat"))?;
        if kind(&st) != SFlag::S_IFREG {
            return Ok(None);
        }
        let sha = hash_file(File::from(fd)).map_err(|e| io_error(e, &path, "read"))?;
        let id = Identity::from(&st);
        self.hashes().insert(id, sha);
        Ok(Some((id, info(path, &st, &sha))))
    }

    /// Deletes a file, and the directories it leaves empty (never the store's own).
    pub fn delete(&self, path: &SitePath) -> Result<(), FilesError> {
        let _tree = self.lock_tree();
        let root = self.root()?;
        let (dirs, leaf) = path.split_parent();
        let parent = open_dir(&root, &dirs).map_err(|e| lookup_error(e, path.as_str(), "open"))?;
        let st = check_leaf(&parent, leaf, path)?
            .ok_or_else(|| FilesError::NotFound(path.to_string()))?;
        unlinkat(&parent, leaf, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| lookup_error(e, path.as_str(), "delete"))?;
        fsync(&parent).map_err(|e| io_error(e, path.as_str(), "sync the directory of"))?;
        self.hashes().remove(&Identity::from(&st));
        tracing::info!(target: "remote", "file store: {path} deleted");
        for depth in (1..=dirs.len()).rev() {
            let (Some(above), Some(name)) = (dirs.get(..depth - 1), dirs.get(depth - 1)) else {
                break;
            };
            let Ok(above) = open_dir(&root, above) else {
                break;
            };
            if unlinkat(&above, *name, UnlinkatFlags::RemoveDir).is_err() {
                break;
            }
            let _ = fsync(&above);
        }
        Ok(())
    }
}

/// The stat of `leaf` in `parent` if there is one; refused if it is a directory or a link.
fn check_leaf(
    parent: &OwnedFd,
    leaf: &str,
    path: &SitePath,
) -> Result<Option<FileStat>, FilesError> {
    match fstatat(parent, leaf, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => match kind(&st) {
            SFlag::S_IFDIR => Err(FilesError::IsADirectory(path.to_string())),
            SFlag::S_IFLNK => Err(FilesError::BadPath(PathError::Symlink)),
            _ => Ok(Some(st)),
        },
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(write_error(e, path.as_str(), "stat")),
    }
}

/// Opens (creating as needed, each new one fsynced in its parent) the directories
/// `segments` below `root`.
fn make_dirs(root: &OwnedFd, segments: &[&str], path: &SitePath) -> Result<OwnedFd, FilesError> {
    let fail = |e| write_error(e, path.as_str(), "create the directories of");
    let mut dir = open_dir(root, &[]).map_err(fail)?;
    for segment in segments {
        let next = match open_dir(&dir, &[segment]) {
            Err(Errno::ENOENT) => {
                match mkdirat(&dir, *segment, Mode::S_IRWXU) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(fail(e)),
                }
                fsync(&dir).map_err(fail)?;
                open_dir(&dir, &[segment])
            }
            other => other,
        }
        .map_err(fail)?;
        dir = next;
    }
    Ok(dir)
}

/// What the connection hands an upload: bytes, then the end of the body. A source that
/// runs dry without [`Chunk::End`] broke off.
pub enum Chunk {
    Data(bytes::Bytes),
    End,
}

/// An upload under way: bytes go to its own file in `<data>/tmp/uploads`; dropped before
/// [`Upload::commit`], the file is removed and nothing changed.
pub struct Upload {
    store: Arc<FileStore>,
    path: SitePath,
    file: File,
    uploads: OwnedFd,
    name: String,
    hasher: Sha256,
    size: u64,
    committed: bool,
}

impl Upload {
    pub fn path(&self) -> &SitePath {
        &self.path
    }

    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), FilesError> {
        self.file.write_all(bytes).map_err(|e| self.io_failure(e))?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn io_failure(&self, e: std::io::Error) -> FilesError {
        match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENOSPC | Errno::EDQUOT) => FilesError::DiskFull(self.path.to_string()),
            _ => io_error(e, self.path.as_str(), "write"),
        }
    }

    /// Writes what `next` gives until [`Chunk::End`], then commits; a source that runs
    /// dry first abandons the upload ([`FilesError::Incomplete`]).
    pub fn receive(
        mut self,
        mut next: impl FnMut() -> Option<Chunk>,
    ) -> Result<Stored, FilesError> {
        while let Some(chunk) = next() {
            match chunk {
                Chunk::Data(bytes) => self.write(&bytes)?,
                Chunk::End => return self.commit(),
            }
        }
        Err(FilesError::Incomplete(self.path.to_string()))
    }

    /// Makes the file durable, then visible at its path in one rename.
    pub fn commit(mut self) -> Result<Stored, FilesError> {
        self.file.sync_all().map_err(|e| self.io_failure(e))?;
        let store = self.store.clone();
        let _tree = store.lock_tree();
        let root = store.root()?;
        let (dirs, leaf) = self.path.split_parent();
        let parent = make_dirs(&root, &dirs, &self.path)?;
        let existed = check_leaf(&parent, leaf, &self.path)?.is_some();
        renameat(&self.uploads, self.name.as_str(), &parent, leaf).map_err(|e| match e {
            // Here EXDEV is no escape: the uploads and the site are on two file systems.
            Errno::EXDEV => io_error(e, self.path.as_str(), "rename into place"),
            e => write_error(e, self.path.as_str(), "rename into place"),
        })?;
        self.committed = true;
        fsync(&parent).map_err(|e| io_error(e, self.path.as_str(), "sync the directory of"))?;
        let st = fstat(&self.file).map_err(|e| io_error(e, self.path.as_str(), "stat"))?;
        let sha: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        store.hashes().insert(Identity::from(&st), sha);
        tracing::info!(
            target: "remote",
            "file store: {} ({} bytes) {}",
            self.path,
            self.size,
            if existed { "replaced" } else { "added" }
        );
        Ok(Stored {
            info: info(self.path.to_string(), &st, &sha),
            created: !existed,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.committed {
            let _ = unlinkat(
                &self.uploads,
                self.name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    struct Fixture {
        dir: tempfile::TempDir,
        store: Arc<FileStore>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let site = Arc::new(SiteStore::open(&dir.path().join("site")));
            let store = Arc::new(FileStore::open(site, dir.path().join(UPLOADS_DIR)));
            Fixture { dir, store }
        }

        fn files(&self) -> PathBuf {
            self.dir.path().join("site/files")
        }

        fn uploads(&self) -> Vec<String> {
            names(&self.dir.path().join(UPLOADS_DIR))
        }

        fn put(&self, path: &str, content: &[u8]) -> Result<Stored, FilesError> {
            let mut up = self
                .store
                .begin(path.parse()?, Some(content.len() as u64))?;
            for piece in content.chunks(7) {
                up.write(piece)?;
            }
            up.commit()
        }

        fn get(&self, path: &str) -> Result<Vec<u8>, FilesError> {
            let (mut f, size) = self.store.open_file(&path.parse()?)?;
            let mut out = Vec::new();
            f.read_to_end(&mut out).unwrap();
            assert_eq!(out.len() as u64, size);
            Ok(out)
        }

        fn list(&self, prefix: &str) -> Vec<(String, u64, String)> {
            self.store
                .list(&Prefix::try_from(prefix).unwrap())
                .unwrap()
                .into_iter()
                .map(|f| (f.path, f.size, f.sha256))
                .collect()
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn sha(content: &[u8]) -> String {
        hex(&Sha256::digest(content))
    }

    #[test]
    fn an_upload_is_invisible_until_committed_and_gone_if_abandoned() {
        let fx = Fixture::new();
        let stored = fx.put("a/b/one.txt", b"first version").unwrap();
        assert!(stored.created);
        assert_eq!(stored.info.sha256, sha(b"first version"));
        assert_eq!(fx.get("a/b/one.txt").unwrap(), b"first version");

        // Half a new version: the old one is what is there, the half is only in uploads.
        let mut up = fx
            .store
            .begin("a/b/one.txt".parse().unwrap(), None)
            .unwrap();
        up.write(b"second, but only ha").unwrap();
        assert_eq!(fx.get("a/b/one.txt").unwrap(), b"first version");
        assert_eq!(fx.uploads().len(), 1);
        drop(up);
        assert_eq!(fx.uploads(), Vec::<String>::new());
        assert_eq!(fx.get("a/b/one.txt").unwrap(), b"first version");

        // A source that runs dry without the end marker abandons too.
        let up = fx.store.begin("new.txt".parse().unwrap(), None).unwrap();
        let mut chunks = vec![Chunk::Data(bytes::Bytes::from_static(b"abc"))].into_iter();
        let e = up.receive(|| chunks.next()).unwrap_err();
        assert!(matches!(e, FilesError::Incomplete(_)), "{e}");
        assert!(matches!(fx.get("new.txt"), Err(FilesError::NotFound(_))));
        assert!(fx.uploads().is_empty());

        // With its end, it lands, replacing by rename (another inode).
        let before = std::fs::metadata(fx.files().join("a/b/one.txt")).unwrap();
        let up = fx
            .store
            .begin("a/b/one.txt".parse().unwrap(), None)
            .unwrap();
        let mut chunks = vec![
            Chunk::Data(bytes::Bytes::from_static(b"second ")),
            Chunk::Data(bytes::Bytes::from_static(b"version")),
            Chunk::End,
        ]
        .into_iter();
        let stored = up.receive(|| chunks.next()).unwrap();
        assert!(!stored.created);
        assert_eq!(fx.get("a/b/one.txt").unwrap(), b"second version");
        let after = std::fs::metadata(fx.files().join("a/b/one.txt")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(before.ino(), after.ino(), "replaced, not rewritten");
        assert!(fx.uploads().is_empty());
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_at_start() {
        let fx = Fixture::new();
        let up = fx.store.begin("x".parse().unwrap(), None).unwrap();
        std::mem::forget(up);
        assert_eq!(fx.uploads().len(), 1);
        let site = Arc::new(SiteStore::open(&fx.dir.path().join("site")));
        let _again = FileStore::open(site, fx.dir.path().join(UPLOADS_DIR));
        assert!(fx.uploads().is_empty());
        assert!(matches!(fx.get("x"), Err(FilesError::NotFound(_))));
    }

    #[test]
    fn the_listing_gives_sizes_and_hashes_and_follows_a_replaced_file() {
        let fx = Fixture::new();
        fx.put("b.txt", b"bee").unwrap();
        fx.put("a/z.txt", b"zed").unwrap();
        fx.put("a/y/x.txt", b"").unwrap();
        fx.put("ab.txt", b"ab").unwrap();
        assert_eq!(
            fx.list(""),
            vec![
                ("a/y/x.txt".into(), 0, sha(b"")),
                ("a/z.txt".into(), 3, sha(b"zed")),
                ("ab.txt".into(), 2, sha(b"ab")),
                ("b.txt".into(), 3, sha(b"bee")),
            ]
        );
        let paths = |p: &str| fx.list(p).into_iter().map(|f| f.0).collect::<Vec<_>>();
        assert_eq!(paths("a/"), ["a/y/x.txt", "a/z.txt"]);
        assert_eq!(paths("a"), ["a/y/x.txt", "a/z.txt", "ab.txt"]);
        assert_eq!(paths("a/y"), ["a/y/x.txt"]);
        assert_eq!(paths("nothing/here/"), Vec::<String>::new());
        assert_eq!(paths("b.txt/"), Vec::<String>::new());

        // A sync puts another file there by rename: the listing hashes the new one.
        let tmp = fx.dir.path().join("elsewhere");
        std::fs::write(&tmp, b"BEE").unwrap();
        std::fs::rename(&tmp, fx.files().join("b.txt")).unwrap();
        assert!(fx.list("b").contains(&("b.txt".into(), 3, sha(b"BEE"))));
        // Files brought by something else (a sync, before a restart) are hashed too.
        std::fs::create_dir(fx.files().join("synced")).unwrap();
        std::fs::write(fx.files().join("synced/s"), b"from the primary").unwrap();
        assert_eq!(
            fx.list("synced/"),
            vec![("synced/s".into(), 16, sha(b"from the primary"))]
        );
    }

    #[test]
    fn symbolic_links_are_refused_and_nothing_outside_is_touched() {
        let fx = Fixture::new();
        let outside = fx.dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(&outside, fx.files().join("evil")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), fx.files().join("link")).unwrap();
        fx.put("real/file", b"ok").unwrap();
        std::os::unix::fs::symlink("../real", fx.files().join("real/loop")).unwrap();

        let symlink = |r: Result<_, FilesError>| {
            let ok = matches!(r, Err(FilesError::BadPath(PathError::Symlink)));
            assert!(ok, "{r:?}");
            ok
        };
        assert!(symlink(fx.put("evil/new", b"x").map(|_| ())));
        assert!(symlink(fx.put("evil/deep/new", b"x").map(|_| ())));
        assert!(symlink(fx.put("link", b"x").map(|_| ())));
        assert!(symlink(fx.get("evil/secret").map(|_| ())));
        assert!(symlink(fx.get("link").map(|_| ())));
        assert!(symlink(fx.get("real/loop/file").map(|_| ())));
        assert!(symlink(fx.store.delete(&"link".parse().unwrap())));
        assert!(symlink(fx.store.delete(&"evil/secret".parse().unwrap())));
        assert!(symlink(
            fx.store
                .list(&Prefix::try_from("evil/").unwrap())
                .map(|_| ())
        ));
        // The listing leaves the links out.
        assert_eq!(fx.list(""), vec![("real/file".into(), 2, sha(b"ok"))]);
        assert_eq!(names(&outside), ["secret"]);
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
        assert!(fx.uploads().is_empty());
    }

    #[test]
    fn directories_and_files_in_the_wrong_place_are_refused() {
        let fx = Fixture::new();
        fx.put("d/f", b"1").unwrap();
        assert!(matches!(
            fx.put("d", b"x"),
            Err(FilesError::IsADirectory(_))
        ));
        assert!(matches!(fx.get("d"), Err(FilesError::IsADirectory(_))));
        assert!(matches!(
            fx.store.delete(&"d".parse().unwrap()),
            Err(FilesError::IsADirectory(_))
        ));
        assert!(matches!(
            fx.put("d/f/g", b"x"),
            Err(FilesError::ParentNotADirectory(_))
        ));
        assert!(matches!(fx.get("d/f/g"), Err(FilesError::NotFound(_))));
        assert!(matches!(fx.get("nope"), Err(FilesError::NotFound(_))));
        assert!(matches!(
            fx.store.delete(&"nope".parse().unwrap()),
            Err(FilesError::NotFound(_))
        ));
        assert_eq!(fx.get("d/f").unwrap(), b"1");
    }

    #[test]
    fn delete_removes_the_file_and_the_directories_it_empties() {
        let fx = Fixture::new();
        fx.put("a/b/c/one", b"1").unwrap();
        fx.put("a/two", b"2").unwrap();
        fx.store.delete(&"a/b/c/one".parse().unwrap()).unwrap();
        assert_eq!(names(&fx.files()), ["a"]);
        assert_eq!(names(&fx.files().join("a")), ["two"]);
        fx.store.delete(&"a/two".parse().unwrap()).unwrap();
        assert!(names(&fx.files()).is_empty());
        assert!(fx.files().is_dir(), "the store's own directory stays");
        assert!(fx.list("").is_empty());
    }

    #[test]
    fn an_upload_announcing_more_than_the_free_space_is_refused_at_once() {
        let fx = Fixture::new();
        let e = fx
            .store
            .begin("big".parse().unwrap(), Some(u64::MAX))
            .err()
            .unwrap();
        assert!(matches!(e, FilesError::NoSpace { .. }), "{e}");
        assert_eq!(e.status_and_code(), (507, "insufficient_storage"));
        assert!(fx.uploads().is_empty());
    }

    #[test]
    fn a_new_site_generation_is_used_by_the_next_request() {
        let fx = Fixture::new();
        fx.put("old", b"old").unwrap();
        // What sync does: another site directory swapped in under the same name.
        let next = fx.dir.path().join("next");
        std::fs::create_dir_all(next.join("files")).unwrap();
        std::fs::write(next.join("files/new"), b"new").unwrap();
        let site = fx.dir.path().join("site");
        let previous = fx.dir.path().join("previous");
        std::fs::rename(&site, &previous).unwrap();
        std::fs::rename(&next, &site).unwrap();
        assert_eq!(fx.get("new").unwrap(), b"new");
        assert!(matches!(fx.get("old"), Err(FilesError::NotFound(_))));
        fx.put("put-after", b"p").unwrap();
        assert!(site.join("files/put-after").exists());
    }
}
