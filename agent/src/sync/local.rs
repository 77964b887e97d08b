//! This appliance's own index of its site directory, kept in `<data>/sync/index.bin` so a
//! restart does not read every file again. Both roles use it: the primary to answer its
//! backup, the backup to know what it already has.

use super::tree::{self, ChunkRef, DirNode, Hash, Place, ScanCounts};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The index at one moment, with the lookups a sync needs.
pub struct Snapshot {
    pub tree: DirNode,
    pub places: HashMap<Hash, Place>,
    pub chunk_lists: HashMap<Hash, Vec<ChunkRef>>,
}

impl Snapshot {
    pub fn new(tree: DirNode) -> Snapshot {
        let places = tree.chunk_places();
        let chunk_lists = tree
            .files_by_hash()
            .into_iter()
            .map(|(h, (_, f))| (h, f.chunks.clone()))
            .collect();
        Snapshot {
            tree,
            places,
            chunk_lists,
        }
    }
}

pub struct LocalIndex {
    site_dir: PathBuf,
    file: PathBuf,
    current: Mutex<Option<Arc<Snapshot>>>,
    /// One scan at a time.
    scanning: tokio::sync::Mutex<()>,
}

impl LocalIndex {
    pub fn new(site_dir: &Path, sync_dir: &Path) -> LocalIndex {
        LocalIndex {
            site_dir: site_dir.to_path_buf(),
            file: sync_dir.join("index.bin"),
            current: Mutex::new(None),
            scanning: tokio::sync::Mutex::new(()),
        }
    }

    pub fn site_dir(&self) -> &Path {
        &self.site_dir
    }

    /// The last snapshot taken, if any.
    pub fn last(&self) -> Option<Arc<Snapshot>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Brings the index up to date with the directory (reading only what changed) and
    /// returns it.
    pub async fn refresh(self: &Arc<Self>) -> std::io::Result<(Arc<Snapshot>, ScanCounts)> {
        let _one = self.scanning.lock().await;
        let me = self.clone();
        crate::store::blocking(move || me.refresh_blocking()).await
    }

    fn refresh_blocking(&self) -> std::io::Result<(Arc<Snapshot>, ScanCounts)> {
        let previous = match self.last() {
            Some(s) => Some(s.tree.clone()),
            None => self.load(),
        };
        let (tree, counts) = tree::scan(&self.site_dir, previous.as_ref())?;
        if previous.as_ref() != Some(&tree) {
            self.save(&tree);
        }
        Ok((self.put(tree), counts))
    }

    /// Puts a tree known to match the directory in force (after a sync built it).
    pub fn put(&self, tree: DirNode) -> Arc<Snapshot> {
        let snapshot = Arc::new(Snapshot::new(tree));
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        snapshot
    }

    pub fn save(&self, tree: &DirNode) {
        match postcard::to_stdvec(tree) {
            Ok(bytes) => {
                if let Err(e) = crate::store::write_atomic(&self.file, &bytes, 0o600) {
                    tracing::warn!(
                        "sync: the index is not saved ({e}): the next start reads the site again"
                    );
                }
            }
            Err(e) => tracing::warn!("sync: the index does not encode: {e}"),
        }
    }

    fn load(&self) -> Option<DirNode> {
        let bytes = std::fs::read(&self.file).ok()?;
        match postcard::from_bytes(&bytes) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(
                    "sync: the saved index is not readable ({e}): reading the site again"
                );
                None
            }
        }
    }
}
