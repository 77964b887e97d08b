//! The index of a site directory: every regular file cut into content-defined chunks
//! (FastCDC, pinned, so both peers cut alike) named by BLAKE3, and a hash over every
//! directory so that two trees compare subtree by subtree.
//!
//! A directory's hash covers the names, kinds, sizes, modes, modification times and
//! content hashes of everything below it, and not its own name: a renamed directory keeps
//! its hash, which is how a backup finds it under its old name. Updating the index re-reads
//! only files whose inode, size, mtime or ctime changed since the last scan; symlinks and
//! special files are left out (the site holds none).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub type Hash = [u8; 32];

/// The chunker's sizes: 8 KiB minimum, 32 KiB on average, 128 KiB at most. Small enough
/// that an edit costs little more than itself, large enough that a chunk's 32-byte name is
/// 0.1% of it. Both peers must use the same values: they are part of the protocol.
pub const MIN_CHUNK: usize = 8 * 1024;
pub const AVG_CHUNK: usize = 32 * 1024;
pub const MAX_CHUNK: usize = 128 * 1024;

/// One chunk of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub hash: Hash,
    pub len: u32,
}

/// What a file is, as both peers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// BLAKE3 of the whole content.
    pub hash: Hash,
}

/// What says a file has not changed since it was read: if all of it is the same, the
/// content is taken from the index without reading the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatKey {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl StatKey {
    pub fn of(m: &fs::Metadata) -> StatKey {
        StatKey {
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileNode {
    pub meta: FileMeta,
    pub chunks: Vec<ChunkRef>,
    pub stat: StatKey,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirNode {
    pub hash: Hash,
    pub entries: BTreeMap<String, Node>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    Dir(DirNode),
    File(FileNode),
}

/// Where a chunk or a file can be read locally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// Relative to the tree's root.
    pub path: PathBuf,
    pub offset: u64,
    pub len: u32,
}

/// How much work a scan did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanCounts {
    pub files: u64,
    pub bytes: u64,
    /// Files read because they were new or changed.
    pub read: u64,
    pub read_bytes: u64,
}

impl DirNode {
    /// Recomputes this directory's hash from its entries (whose own hashes are current).
    pub fn rehash(&mut self) {
        let mut h = blake3::Hasher::new();
        for (name, node) in &self.entries {
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            match node {
                Node::Dir(d) => {
                    h.update(b"d");
                    h.update(&d.hash);
                }
                Node::File(f) => {
                    h.update(b"f");
                    hash_meta(&mut h, &f.meta);
                }
            }
        }
        self.hash = *h.finalize().as_bytes();
    }

    /// Every file below, with its path relative to this directory.
    pub fn files(&self) -> Vec<(PathBuf, &FileNode)> {
        let mut out = Vec::new();
        self.walk_files(Path::new(""), &mut |p, f| out.push((p.to_path_buf(), f)));
        out
    }

    fn walk_files<'a>(&'a self, at: &Path, visit: &mut impl FnMut(&Path, &'a FileNode)) {
        for (name, node) in &self.entries {
            let path = at.join(name);
            match node {
                Node::Dir(d) => d.walk_files(&path, visit),
                Node::File(f) => visit(&path, f),
            }
        }
    }

    /// Every directory below (this one included, as the empty path) by its hash.
    pub fn dirs_by_hash(&self) -> HashMap<Hash, PathBuf> {
        let mut out = HashMap::new();
        self.walk_dirs(Path::new(""), &mut out);
        out
    }

    fn walk_dirs(&self, at: &Path, out: &mut HashMap<Hash, PathBuf>) {
        out.entry(self.hash).or_insert_with(|| at.to_path_buf());
        for (name, node) in &self.entries {
            if let Node::Dir(d) = node {
                d.walk_dirs(&at.join(name), out);
            }
        }
    }

    /// Where each chunk can be read locally (the first file that has it).
    pub fn chunk_places(&self) -> HashMap<Hash, Place> {
        let mut out = HashMap::new();
        self.walk_files(Path::new(""), &mut |p, f| {
            let mut offset = 0u64;
            for c in &f.chunks {
                out.entry(c.hash).or_insert_with(|| Place {
                    path: p.to_path_buf(),
                    offset,
                    len: c.len,
                });
                offset += u64::from(c.len);
            }
        });
        out
    }

    /// Every file by its content hash (the first path that has it).
    pub fn files_by_hash(&self) -> HashMap<Hash, (PathBuf, &FileNode)> {
        let mut out = HashMap::new();
        self.walk_files(Path::new(""), &mut |p, f| {
            out.entry(f.meta.hash)
                .or_insert_with(|| (p.to_path_buf(), f));
        });
        out
    }

    pub fn get(&self, path: &Path) -> Option<&Node> {
        let mut names = path.iter();
        let first = names.next()?.to_str()?;
        let mut node = self.entries.get(first)?;
        for name in names {
            match node {
                Node::Dir(d) => node = d.entries.get(name.to_str()?)?,
                Node::File(_) => return None,
            }
        }
        Some(node)
    }
}

pub fn hash_meta(h: &mut blake3::Hasher, m: &FileMeta) {
    h.update(&m.size.to_le_bytes());
    h.update(&m.mtime_ns.to_le_bytes());
    h.update(&m.mode.to_le_bytes());
    h.update(&m.hash);
}

/// Cuts a reader into chunks; returns the whole content's hash, the chunks and the size.
/// `each` sees every chunk's data (to store or send it).
pub fn chunk_reader(
    reader: impl Read,
    mut each: impl FnMut(&ChunkRef, &[u8]) -> io::Result<()>,
) -> io::Result<(Hash, Vec<ChunkRef>, u64)> {
    let mut whole = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    for chunk in fastcdc::v2020::StreamCDC::new(reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK) {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => io::Error::other(other.to_string()),
        })?;
        whole.update(&chunk.data);
        let r = ChunkRef {
            hash: *blake3::hash(&chunk.data).as_bytes(),
            len: chunk.length as u32,
        };
        each(&r, &chunk.data)?;
        size += chunk.length as u64;
        chunks.push(r);
    }
    Ok((*whole.finalize().as_bytes(), chunks, size))
}

/// Reads and cuts one file.
pub fn index_file(path: &Path, m: &fs::Metadata) -> io::Result<FileNode> {
    let file = fs::File::open(path)?;
    let (hash, chunks, size) =
        chunk_reader(io::BufReader::with_capacity(1 << 20, file), |_, _| Ok(()))?;
    let after = fs::symlink_metadata(path)?;
    let stat = StatKey::of(&after);
    if stat != StatKey::of(m) || size != stat.size {
        return Err(io::Error::other(format!(
            "{} changed while it was read",
            path.display()
        )));
    }
    Ok(FileNode {
        meta: meta_of(&after, hash),
        chunks,
        stat,
    })
}

pub fn meta_of(m: &fs::Metadata, hash: Hash) -> FileMeta {
    FileMeta {
        size: m.size(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        mode: m.permissions().mode() & 0o7777,
        hash,
    }
}

/// Scans `root` into a tree, reusing from `previous` every file whose [`StatKey`] is the
/// same at the same path. A missing root is an empty tree.
pub fn scan(root: &Path, previous: Option<&DirNode>) -> io::Result<(DirNode, ScanCounts)> {
    let mut counts = ScanCounts::default();
    let dir = match fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => scan_dir(root, previous, &mut counts)?,
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                root.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut d = DirNode::default();
            d.rehash();
            d
        }
        Err(e) => return Err(e),
    };
    Ok((dir, counts))
}

fn scan_dir(
    dir: &Path,
    previous: Option<&DirNode>,
    counts: &mut ScanCounts,
) -> io::Result<DirNode> {
    let mut out = DirNode::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            tracing::warn!(path = %entry.path().display(), "sync: a name that is not UTF-8 is left out");
            continue;
        };
        let path = entry.path();
        let m = fs::symlink_metadata(&path)?;
        let before = previous.and_then(|p| p.entries.get(&name));
        if m.is_dir() {
            let prev = match before {
                Some(Node::Dir(d)) => Some(d),
                _ => None,
            };
            out.entries
                .insert(name, Node::Dir(scan_dir(&path, prev, counts)?));
        } else if m.is_file() {
            let stat = StatKey::of(&m);
            let node = match before {
                Some(Node::File(f)) if f.stat == stat => f.clone(),
                _ => {
                    counts.read += 1;
                    counts.read_bytes += m.size();
                    index_file(&path, &m)?
                }
            };
            counts.files += 1;
            counts.bytes += node.meta.size;
            out.entries.insert(name, Node::File(node));
        }
    }
    out.rehash();
    Ok(out)
}

/// Reads one chunk from a local file and checks it is what its name says.
pub fn read_place(root: &Path, place: &Place, want: &Hash) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = fs::File::open(root.join(&place.path))?;
    let mut buf = vec![0u8; place.len as usize];
    file.read_exact_at(&mut buf, place.offset)?;
    if blake3::hash(&buf).as_bytes() != want {
        return Err(io::Error::other(format!(
            "{} changed since it was indexed",
            place.path.display()
        )));
    }
    Ok(buf)
}

pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic incompressible bytes.
    pub fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut n = 0u64;
        while out.len() < len {
            let mut h = blake3::Hasher::new();
            h.update(&seed.to_le_bytes());
            h.update(&n.to_le_bytes());
            out.extend_from_slice(h.finalize().as_bytes());
            n += 1;
        }
        out.truncate(len);
        out
    }

    fn cut(data: &[u8]) -> Vec<ChunkRef> {
        chunk_reader(data, |_, _| Ok(())).unwrap().1
    }

    #[test]
    fn chunk_boundaries_survive_an_insertion_in_the_middle() {
        let data = noise(1, 2 << 20);
        let before = cut(&data);
        assert!(before.len() > 20, "{} chunks", before.len());
        assert!(before.iter().all(|c| (c.len as usize) <= MAX_CHUNK));
        let mut edited = data[..1 << 20].to_vec();
        edited.extend_from_slice(&noise(2, 10_000));
        edited.extend_from_slice(&data[1 << 20..]);
        let after = cut(&edited);
        let old: std::collections::HashSet<_> = before.iter().map(|c| c.hash).collect();
        let new_bytes: u64 = after
            .iter()
            .filter(|c| !old.contains(&c.hash))
            .map(|c| u64::from(c.len))
            .sum();
        // The insertion and the chunks around it: a few chunks, not the rest of the file.
        assert!(
            new_bytes < 10_000 + 3 * MAX_CHUNK as u64,
            "{new_bytes} new bytes"
        );
        assert_eq!(cut(&data), before, "the same data cuts the same way");
    }

    #[test]
    fn a_scan_rereads_only_changed_files_and_hashes_subtrees() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/one"), noise(3, 50_000)).unwrap();
        fs::write(root.join("a/two"), b"two").unwrap();
        fs::create_dir_all(root.join("c")).unwrap();
        fs::write(root.join("c/three"), b"three").unwrap();
        let (first, counts) = scan(root, None).unwrap();
        assert_eq!((counts.files, counts.read), (3, 3));
        let (again, counts) = scan(root, Some(&first)).unwrap();
        assert_eq!(
            (counts.files, counts.read),
            (3, 0),
            "nothing changed: nothing read"
        );
        assert_eq!(again, first);

        fs::write(root.join("c/three"), b"THREE").unwrap();
        let (changed, counts) = scan(root, Some(&first)).unwrap();
        assert_eq!(counts.read, 1);
        assert_ne!(changed.hash, first.hash);
        let sub = |t: &DirNode, n: &str| match t.entries.get(n) {
            Some(Node::Dir(d)) => d.hash,
            _ => panic!("{n}"),
        };
        assert_eq!(
            sub(&changed, "a"),
            sub(&first, "a"),
            "an unchanged subtree keeps its hash"
        );
        assert_ne!(sub(&changed, "c"), sub(&first, "c"));

        fs::rename(root.join("a"), root.join("renamed")).unwrap();
        let (moved, _) = scan(root, Some(&changed)).unwrap();
        assert_eq!(
            sub(&moved, "renamed"),
            sub(&first, "a"),
            "a rename keeps the hash"
        );
        assert_eq!(
            moved.dirs_by_hash()[&sub(&first, "a")],
            PathBuf::from("renamed")
        );
        let places = moved.chunk_places();
        let Some(Node::File(one)) = moved.get(Path::new("renamed/b/one")) else {
            panic!("one")
        };
        let c = one.chunks[1];
        let data = read_place(root, &places[&c.hash], &c.hash).unwrap();
        assert_eq!(data.len(), c.len as usize);
    }
}
