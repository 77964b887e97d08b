//! An initramfs as a list of entries, written as a gzip-compressed newc cpio archive.
//!
//! Entries are written sorted by path with fixed owners and times, so the same inputs give
//! the same bytes. Parent directories are added automatically.

use crate::ImageError;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
    CharDev { major: u32, minor: u32, mode: u32 },
}

/// The contents of an initramfs, keyed by absolute path.
#[derive(Default, Debug)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

fn key(path: &str) -> Result<String, ImageError> {
    let rel = path
        .strip_prefix('/')
        .ok_or_else(|| ImageError::BadImagePath(path.into()))?;
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(ImageError::BadImagePath(path.into()));
    }
    Ok(rel.to_string())
}

impl Initramfs {
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    fn parents(&mut self, rel: &str) {
        let mut at = 0;
        while let Some(i) = rel[at..].find('/') {
            let dir = &rel[..at + i];
            self.entries
                .entry(dir.to_string())
                .or_insert(Entry::Dir { mode: 0o755 });
            at += i + 1;
        }
    }

    pub fn add(&mut self, path: &str, entry: Entry) -> Result<(), ImageError> {
        let rel = key(path)?;
        self.parents(&rel);
        self.entries.insert(rel, entry);
        Ok(())
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), ImageError> {
        self.add(path, Entry::Dir { mode })
    }

    pub fn file(
        &mut self,
        path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<(), ImageError> {
        self.add(
            path,
            Entry::File {
                data: data.into(),
                mode,
            },
        )
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), ImageError> {
        self.add(
            path,
            Entry::Symlink {
                target: target.into(),
            },
        )
    }

    /// Copies a host file (following symlinks) to `path`.
    pub fn copy(&mut self, host: &Path, path: &str, mode: u32) -> Result<(), ImageError> {
        let data = std::fs::read(host).map_err(|source| ImageError::Read {
            path: host.to_path_buf(),
            source,
        })?;
        self.file(path, data, mode)
    }

    /// Copies a program and every library it loads, each library at the path the loader
    /// will look for it.
    pub fn program(&mut self, host: &Path, path: &str) -> Result<(), ImageError> {
        self.copy(host, path, 0o755)?;
        for lib in crate::libs::needed(host)? {
            let in_image = lib.to_string_lossy().into_owned();
            if !self.entries.contains_key(&key(&in_image)?) {
                self.copy(&lib, &in_image, 0o755)?;
            }
        }
        Ok(())
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        key(path).ok().and_then(|k| self.entries.get(&k))
    }

    /// Total bytes of file contents.
    pub fn payload_bytes(&self) -> usize {
        self.entries
            .values()
            .map(|e| match e {
                Entry::File { data, .. } => data.len(),
                _ => 0,
            })
            .sum()
    }

    /// Writes the archive (newc cpio), uncompressed, to `w`.
    pub fn write_cpio<W: Write>(&self, mut w: W, mtime: u32) -> std::io::Result<W> {
        for (ino, (name, entry)) in self.entries.iter().enumerate() {
            let b = cpio::newc::Builder::new(name)
                .ino(ino as u32 + 1)
                .uid(0)
                .gid(0)
                .mtime(mtime);
            let (b, data): (_, &[u8]) = match entry {
                Entry::Dir { mode } => (b.mode(0o040000 | mode).nlink(2), &[]),
                Entry::File { data, mode } => (b.mode(0o100000 | mode).nlink(1), data),
                Entry::Symlink { target } => (b.mode(0o120777).nlink(1), target.as_bytes()),
                Entry::CharDev { major, minor, mode } => (
                    b.mode(0o020000 | mode)
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    &[],
                ),
            };
            let mut writer = b.write(w, data.len() as u32);
            writer.write_all(data)?;
            w = writer.finish()?;
        }
        cpio::newc::trailer(w)
    }

    /// Writes the gzip-compressed archive to `out` (via a temp file and rename).
    pub fn write_gz(&self, out: &Path, mtime: u32) -> Result<u64, ImageError> {
        let wrap = |source| ImageError::Write {
            path: out.to_path_buf(),
            source,
        };
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(wrap)?;
        }
        let tmp: PathBuf = out.with_extension("tmp");
        let file = std::fs::File::create(&tmp).map_err(wrap)?;
        let gz = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(file),
            flate2::Compression::best(),
        );
        let gz = self.write_cpio(gz, mtime).map_err(wrap)?;
        let buf = gz.finish().map_err(wrap)?;
        let file = buf.into_inner().map_err(|e| wrap(e.into_error()))?;
        file.sync_all().map_err(wrap)?;
        let size = file.metadata().map_err(wrap)?.len();
        std::fs::rename(&tmp, out).map_err(wrap)?;
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_added_and_paths_checked() {
        let mut i = Initramfs::new();
        i.file("/bin/tool", "x", 0o755).unwrap();
        assert_eq!(i.paths().collect::<Vec<_>>(), vec!["bin", "bin/tool"]);
        assert!(i.file("relative", "", 0o644).is_err());
        assert!(i.file("/a/../b", "", 0o644).is_err());
    }

    #[test]
    fn archive_reads_back_with_types_and_contents() {
        let mut i = Initramfs::new();
        i.add(
            "/dev/console",
            Entry::CharDev {
                major: 5,
                minor: 1,
                mode: 0o600,
            },
        )
        .unwrap();
        i.file("/init", "ELF", 0o755).unwrap();
        i.symlink("/sbin/mkfs.ext4", "mke2fs").unwrap();
        let bytes = i.write_cpio(Vec::new(), 0).unwrap();
        let mut rest = &bytes[..];
        let mut seen = Vec::new();
        loop {
            let r = cpio::newc::Reader::new(rest).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let e = r.entry();
            seen.push((
                e.name().to_string(),
                e.mode(),
                e.rdev_major(),
                e.file_size(),
            ));
            rest = r.finish().unwrap();
        }
        assert_eq!(
            seen,
            vec![
                ("dev".into(), 0o040755, 0, 0),
                ("dev/console".into(), 0o020600, 5, 0),
                ("init".into(), 0o100755, 0, 3),
                ("sbin".into(), 0o040755, 0, 0),
                ("sbin/mkfs.ext4".into(), 0o120777, 0, 6),
            ]
        );
    }
}
