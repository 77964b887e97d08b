//! Files on the data partition, written so a power cut leaves the old or the new content.
//!
//! [`write_atomic`] writes a temp file in the same directory, fsyncs it, renames it over the
//! target and fsyncs the directory. Everything the agent persists goes through it.
//! [`read_if_present`] is the other half: a missing file is not an error, anything else
//! that stops the read is.
//!
//! Settings files are [`Document`]s (`store/document.rs`): typed, versioned, with a
//! revision counter, read once and refused rather than overwritten when they do not parse.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub mod document;
pub use document::{Document, DocumentError, Loaded, Schema};

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct StoreError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Runs blocking file work (a write and its fsyncs) on the blocking pool, so a slow disk
/// never stalls the async workers (and with them the API and, next, the heartbeats).
pub async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Replaces `path` with `contents` atomically and durably; `mode` applies to the new file.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), StoreError> {
    let wrap = |source| StoreError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| wrap(io::ErrorKind::InvalidInput.into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(wrap)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The text of `path`, or `None` if there is no such file.
pub fn read_if_present(path: &Path) -> Result<Option<String>, ReadError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReadError {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Like [`write_atomic`], first creating the parent directory (mode 0700) if it is missing.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        ensure_dir(dir, 0o700)?;
    }
    write_atomic(path, contents, mode)
}

/// Creates a directory (and parents) with `mode` if it is missing, fsyncing the parent of
/// each directory it creates so the new entry survives a power cut.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<(), StoreError> {
    ensure_dir_with(&mut RealDirs, path, mode)
}

/// The directory operations [`ensure_dir`] needs: a seam so a test can see the fsyncs.
trait DirOps {
    fn is_dir(&self, path: &Path) -> bool;
    /// Creates one directory; an existing one is not an error.
    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    fn sync_dir(&mut self, path: &Path) -> io::Result<()>;
}

struct RealDirs;

impl DirOps for RealDirs {
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        match fs::DirBuilder::new().mode(mode).create(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
            other => other,
        }
    }
    fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
}

fn ensure_dir_with(ops: &mut impl DirOps, path: &Path, mode: u32) -> Result<(), StoreError> {
    let wrap = |p: &Path, source| StoreError {
        path: p.to_path_buf(),
        source,
    };
    // The missing directories, deepest first.
    let missing: Vec<&Path> = path
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .take_while(|p| !ops.is_dir(p))
        .collect();
    for dir in missing.into_iter().rev() {
        ops.mkdir(dir, mode).map_err(|e| wrap(dir, e))?;
        let parent = dir
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        ops.sync_dir(parent).map_err(|e| wrap(parent, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.toml")]);
    }

    #[test]
    fn a_missing_file_reads_as_none_and_other_failures_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/config.toml");
        assert_eq!(read_if_present(&p).unwrap(), None);
        replace(&p, b"one", 0o600).unwrap();
        assert_eq!(read_if_present(&p).unwrap().as_deref(), Some("one"));
        let err = read_if_present(dir.path()).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    /// Real directories, with every fsync recorded.
    struct Recording(Vec<PathBuf>);

    impl DirOps for Recording {
        fn is_dir(&self, path: &Path) -> bool {
            RealDirs.is_dir(path)
        }
        fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
            RealDirs.mkdir(path, mode)
        }
        fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
            self.0.push(path.to_path_buf());
            RealDirs.sync_dir(path)
        }
    }

    #[test]
    fn a_created_directory_has_its_parent_fsynced() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        let mut ops = Recording(Vec::new());
        ensure_dir_with(&mut ops, &deep, 0o700).unwrap();
        assert!(deep.is_dir());
        assert_eq!(
            fs::metadata(&deep).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(ops.0, vec![dir.path().to_path_buf(), dir.path().join("a")]);
        // Nothing to create, nothing to sync.
        let mut ops = Recording(Vec::new());
        ensure_dir_with(&mut ops, &deep, 0o700).unwrap();
        assert!(ops.0.is_empty());
    }

    #[test]
    fn failure_names_the_path() {
        let err = write_atomic(Path::new("/nonexistent-dir/x"), b"", 0o600).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x"));
    }
}
