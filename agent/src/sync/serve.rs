//! The primary's side of a pull: its tree, chunk lists and chunks, paced with the limit
//! the backup sends.

use super::limit::Pacer;
use super::local::{LocalIndex, Snapshot};
use super::tree::{self, DirNode, Hash, Node};
use super::wire::{self, ChunksRequest, FilesReply, FilesRequest, TreeRequest, WireDir, WireNode};
use axum::body::Body;
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The tree as the backup needs it: every subtree it already has is left as its hash.
pub fn wire_tree(dir: &DirNode, have: &HashSet<Hash>) -> WireDir {
    WireDir {
        hash: dir.hash,
        entries: dir
            .entries
            .iter()
            .map(|(name, node)| {
                let w = match node {
                    Node::Dir(d) if have.contains(&d.hash) => WireNode::Have(d.hash),
                    Node::Dir(d) => WireNode::Dir(wire_tree(d, have)),
                    Node::File(f) => WireNode::File(f.meta),
                };
                (name.clone(), w)
            })
            .collect(),
    }
}

/// The pacer every answer of the sync goes through: one, so that consecutive answers of a
/// pull share one schedule and the limit holds across them.
pub type SharedPacer = Arc<std::sync::Mutex<Pacer>>;

pub fn shared_pacer() -> SharedPacer {
    Arc::new(std::sync::Mutex::new(Pacer::new(None)))
}

pub async fn tree(
    index: &Arc<LocalIndex>,
    pacer: &SharedPacer,
    req: TreeRequest,
) -> std::io::Result<Body> {
    let (snapshot, counts) = index.refresh().await?;
    tracing::debug!(
        files = counts.files,
        read = counts.read,
        "sync: the index is up to date for a pull"
    );
    let have: HashSet<Hash> = req.have.into_iter().collect();
    let packed = wire::pack(&wire::WireTree {
        root: wire_tree(&snapshot.tree, &have),
    });
    Ok(paced(pacer, req.limit, move |tx| async move {
        let _ = tx.send(packed).await;
    }))
}

pub fn files(index: &LocalIndex, pacer: &SharedPacer, req: FilesRequest) -> Body {
    let snapshot = index.last();
    let reply = FilesReply {
        files: req
            .hashes
            .iter()
            .filter_map(|h| {
                let list = snapshot.as_ref()?.chunk_lists.get(h)?;
                Some((*h, list.clone()))
            })
            .collect(),
    };
    let packed = wire::pack(&reply);
    paced(pacer, req.limit, move |tx| async move {
        let _ = tx.send(packed).await;
    })
}

/// Chunks read this many at a time off the disk.
const READ_GROUP: usize = 16;

pub fn chunks(index: &LocalIndex, pacer: &SharedPacer, req: ChunksRequest) -> Body {
    let snapshot = index.last();
    let root = index.site_dir().to_path_buf();
    paced(pacer, req.limit, move |tx| async move {
        for group in req.hashes.chunks(READ_GROUP) {
            let group = group.to_vec();
            let snapshot = snapshot.clone();
            let root = root.clone();
            let frames =
                crate::store::blocking(move || read_group(&root, snapshot.as_deref(), &group))
                    .await;
            for f in frames {
                if tx.send(f).await.is_err() {
                    return;
                }
            }
        }
    })
}

fn read_group(root: &std::path::Path, snapshot: Option<&Snapshot>, group: &[Hash]) -> Vec<Vec<u8>> {
    group
        .iter()
        .map(|h| {
            let data = snapshot
                .and_then(|s| s.places.get(h))
                .and_then(|place| tree::read_place(root, place, h).ok());
            wire::frame(h, data.as_deref())
        })
        .collect()
}

/// A response body fed by `produce` through the shared pacer at `limit` bytes per second.
fn paced<F, Fut>(pacer: &SharedPacer, limit: Option<u64>, produce: F) -> Body
where
    F: FnOnce(mpsc::Sender<Vec<u8>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (blobs_tx, mut blobs) = mpsc::channel::<Vec<u8>>(8);
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(produce(blobs_tx));
    let pacer = pacer.clone();
    pacer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_rate(limit);
    tokio::spawn(async move {
        while let Some(blob) = blobs.recv().await {
            let blob = Bytes::from(blob);
            let mut at = 0;
            while at < blob.len() {
                let (n, wait) = {
                    let mut p = pacer.lock().unwrap_or_else(|p| p.into_inner());
                    let n = p.piece().min(blob.len() - at);
                    (
                        n,
                        p.book(n + super::limit::PIECE_OVERHEAD, std::time::Instant::now()),
                    )
                };
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                if body_tx.send(Ok(blob.slice(at..at + n))).await.is_err() {
                    return;
                }
                at += n;
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtrees_the_backup_has_travel_as_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/deep")).unwrap();
        std::fs::write(dir.path().join("a/deep/f"), b"f").unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/g"), b"g").unwrap();
        let (t, _) = tree::scan(dir.path(), None).unwrap();
        let Some(Node::Dir(a)) = t.entries.get("a") else {
            panic!()
        };
        let have: HashSet<Hash> = [a.hash].into();
        let w = wire_tree(&t, &have);
        assert_eq!(w.entries[0], ("a".to_string(), WireNode::Have(a.hash)));
        assert!(matches!(&w.entries[1].1, WireNode::Dir(b) if b.entries.len() == 1));
        let everything = wire_tree(&t, &HashSet::new());
        assert!(matches!(&everything.entries[0].1, WireNode::Dir(_)));
    }
}
