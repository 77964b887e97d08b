//! The backup's side: pull the primary's site into a staging generation, then swap it in
//! whole.
//!
//! ```text
//! <data>/sync/
//!   index.bin    this appliance's index of <data>/site (crate::sync::local)
//!   state.toml   the root hash of the generation in force, and of one being installed
//!   chunks/      chunks that arrived, by hash: what an interrupted pull keeps
//!   next/        the staging generation while it is built; the old one after the swap
//! ```
//!
//! 1. Refresh the local index; send the primary every directory hash it has.
//! 2. Get the primary's tree (subtrees the backup has come back as their hash), then the
//!    chunk lists of the files it has no copy of (by content, under any name).
//! 3. Fetch the chunks it has nowhere (not in a local file, not in `chunks/`), in batches
//!    sized to half a second at the bandwidth limit in force when each batch starts.
//! 4. Build `next/`: unchanged files and subtrees hard-linked from the generation in
//!    force, the rest written from chunks and checked against their hash; every
//!    directory's hash checked against the primary's.
//! 5. `syncfs`, then `renameat2(RENAME_EXCHANGE)` of `next/` and `<data>/site`, then the
//!    old generation removed and `chunks/` emptied.
//!
//! Whatever stops a pull before step 5 (link cut, disk full, power cut, a kill) leaves the
//! generation in force untouched; the chunks that arrived stay in `chunks/` and are not
//! asked for again.

use super::local::{LocalIndex, Snapshot};
use super::tree::{self, ChunkRef, DirNode, FileNode, Hash, Node};
use super::wire::{
    self, ChunksRequest, FilesReply, FilesRequest, Frame, TreeRequest, WireDir, WireNode,
};
use crate::failover::link::{LinkError, PeerLink};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a stream may stay silent before the pull gives up.
pub const IDLE: Duration = Duration::from_secs(10);
/// How long the primary may take to answer a tree request (it brings its index up to
/// date first: reading every changed file).
pub const TREE_WAIT: Duration = Duration::from_secs(600);
/// The largest batch of chunks asked for at once (its request stays under the API's
/// 64 KiB body limit).
const MAX_BATCH_CHUNKS: usize = 1000;
/// At most this many directory hashes go with a tree request (the shallowest first); a
/// subtree left out only travels in full.
const MAX_HAVE: usize = 1900;
/// The largest batch in bytes when unlimited.
const MAX_BATCH_BYTES: u64 = 32 << 20;
/// At most this many file chunk lists per request.
const MAX_FILES_ASKED: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("the primary: {0}")]
    Link(#[from] LinkError),
    #[error("{0}")]
    Io(String),
    #[error("the primary's answer is not understood: {0}")]
    Protocol(String),
    #[error("the primary's site changed during the sync; the next sync picks up the change")]
    SourceChanged,
}

fn io_err(what: &str) -> impl Fn(io::Error) -> PullError + '_ {
    move |e| PullError::Io(format!("{what}: {e}"))
}

/// Where a pull works.
#[derive(Clone, Debug)]
pub struct Paths {
    pub site: PathBuf,
    pub sync: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path) -> Paths {
        Paths {
            site: data_dir.join("site"),
            sync: data_dir.join("sync"),
        }
    }
    pub fn chunks(&self) -> PathBuf {
        self.sync.join("chunks")
    }
    pub fn next(&self) -> PathBuf {
        self.sync.join("next")
    }
    fn state_file(&self) -> PathBuf {
        self.sync.join("state.toml")
    }
    fn base_file(&self) -> PathBuf {
        self.sync.join("base.bin")
    }
}

/// What the pulls have installed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullState {
    /// The root hash of the generation the last pull installed.
    #[serde(default)]
    pub base: Option<String>,
    /// The root hash of a generation being swapped in (a crash may leave it in force).
    #[serde(default)]
    pub installing: Option<String>,
    /// This appliance served as primary since its last pull: its site may hold files the
    /// other one lacks.
    #[serde(default)]
    pub served: bool,
}

impl PullState {
    pub fn load(paths: &Paths) -> PullState {
        fs::read_to_string(paths.state_file())
            .ok()
            .and_then(|t| toml::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Records that this appliance serves as primary (once; a failure is logged).
    pub fn mark_served(paths: &Paths) {
        let mut state = PullState::load(paths);
        if !state.served {
            state.served = true;
            if let Err(e) = state.save(paths) {
                tracing::warn!("sync: cannot record that this appliance serves: {e}");
            }
        }
    }

    fn save(&self, paths: &Paths) -> Result<(), PullError> {
        fs::create_dir_all(&paths.sync).map_err(io_err("the sync directory"))?;
        let text = toml::to_string(self).map_err(|e| PullError::Io(e.to_string()))?;
        crate::store::write_atomic(&paths.state_file(), text.as_bytes(), 0o600)
            .map_err(|e| PullError::Io(e.to_string()))
    }
}

/// Progress, as the pull goes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub phase: String,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_on_wire: u64,
}

/// What a finished pull did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pulled {
    pub files_changed: u64,
    pub bytes_on_wire: u64,
    pub root: Hash,
}

/// What the pull needs from its caller.
pub struct Ctx<'a> {
    pub link: &'a mut PeerLink,
    pub index: &'a Arc<LocalIndex>,
    pub paths: &'a Paths,
    /// The bandwidth limit in force now (read before each request).
    pub limit: &'a (dyn Fn() -> Option<u64> + Send + Sync),
    /// Called as the counters change.
    pub progress: &'a (dyn Fn(&Counters) + Send + Sync),
}

/// Reads a whole answer body, counting its bytes.
async fn read_all(body: hyper::body::Incoming, wire_bytes: &mut u64) -> Result<Vec<u8>, PullError> {
    let mut body = body;
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(IDLE, body.frame())
            .await
            .map_err(|_| LinkError::Unreachable("the primary went silent".into()))?;
        match frame {
            None => return Ok(out),
            Some(Err(e)) => return Err(LinkError::Unreachable(e.to_string()).into()),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    *wire_bytes += data.len() as u64;
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap_or_default()
}

pub async fn pull(ctx: Ctx<'_>) -> Result<Pulled, PullError> {
    let t0 = Instant::now();
    let mut c = Counters {
        phase: "comparing".into(),
        ..Counters::default()
    };
    (ctx.progress)(&c);
    fs::create_dir_all(ctx.paths.chunks()).map_err(io_err("the chunk store"))?;
    let (mut local, _) = ctx
        .index
        .refresh()
        .await
        .map_err(io_err("reading this site"))?;
    // Changed since the last pull installed it: this appliance served as primary in the
    // meantime (a conflict, or an old primary that came back). Its files go to the
    // primary first, so that the mirror that follows loses none.
    let state = PullState::load(ctx.paths);
    let root = tree::hex(&local.tree.hash);
    let changed_here =
        state.base.as_ref().is_some_and(|b| *b != root) && state.installing.as_ref() != Some(&root);
    if state.served || changed_here {
        c.phase = "merging".into();
        (ctx.progress)(&c);
        let merged = offer(&mut *ctx.link, ctx.paths, &local, &mut c).await?;
        tracing::info!(
            placed = merged.placed,
            conflicts = merged.conflicts,
            "sync: this appliance's own changes went to the primary first"
        );
        c.phase = "comparing".into();
        local = ctx
            .index
            .refresh()
            .await
            .map_err(io_err("reading this site"))?
            .0;
    }
    let local_dirs = local.tree.dirs_by_hash();
    let mut by_depth: Vec<(usize, Hash)> = local_dirs
        .iter()
        .map(|(h, p)| (p.components().count(), *h))
        .collect();
    by_depth.sort();
    let have: Vec<Hash> = by_depth
        .into_iter()
        .take(MAX_HAVE)
        .map(|(_, h)| h)
        .collect();

    let req = encode(&TreeRequest {
        have,
        limit: (ctx.limit)(),
    });
    c.bytes_on_wire += req.len() as u64;
    let body = ctx
        .link
        .open("POST", wire::TREE, Some((req, wire::BINARY)), TREE_WAIT)
        .await?;
    let packed = read_all(body, &mut c.bytes_on_wire).await?;
    let remote: wire::WireTree = wire::unpack(&packed).map_err(PullError::Protocol)?;

    // The files this backup has no copy of.
    let local_files = local.tree.files_by_hash();
    let mut missing = Vec::new();
    let mut seen = HashSet::new();
    let mut total_files = 0u64;
    walk_files(&remote.root, &mut |meta| {
        total_files += 1;
        if !local_files.contains_key(&meta.hash) && seen.insert(meta.hash) {
            missing.push(meta.hash);
        }
    });
    for h in walk_haves(&remote.root) {
        if !local_dirs.contains_key(&h) {
            return Err(PullError::Protocol(
                "a subtree this appliance does not have".into(),
            ));
        }
    }
    c.files_total = missing.len() as u64;
    let mut lists: HashMap<Hash, Vec<ChunkRef>> = HashMap::new();
    for batch in missing.chunks(MAX_FILES_ASKED) {
        let req = encode(&FilesRequest {
            hashes: batch.to_vec(),
            limit: (ctx.limit)(),
        });
        c.bytes_on_wire += req.len() as u64;
        let body = ctx
            .link
            .open("POST", wire::FILES, Some((req, wire::BINARY)), IDLE)
            .await?;
        let packed = read_all(body, &mut c.bytes_on_wire).await?;
        let reply: FilesReply = wire::unpack(&packed).map_err(PullError::Protocol)?;
        lists.extend(reply.files);
    }
    if missing.iter().any(|h| !lists.contains_key(h)) {
        return Err(PullError::SourceChanged);
    }

    // The chunks it has nowhere.
    let store = ctx.paths.chunks();
    let mut wanted: Vec<ChunkRef> = Vec::new();
    let mut wanted_seen = HashSet::new();
    for h in &missing {
        for chunk in &lists[h] {
            if local.places.contains_key(&chunk.hash) || !wanted_seen.insert(chunk.hash) {
                continue;
            }
            if store.join(tree::hex(&chunk.hash)).exists() {
                continue;
            }
            wanted.push(*chunk);
        }
    }
    c.bytes_total = wanted.iter().map(|w| u64::from(w.len)).sum();
    tracing::info!(ms = t0.elapsed().as_millis() as u64, "sync: compared");
    c.phase = "transferring".into();
    (ctx.progress)(&c);
    let mut next = 0;
    while next < wanted.len() {
        let limit = (ctx.limit)();
        let budget = match limit {
            Some(rate) => (rate / 2).max(1),
            None => MAX_BATCH_BYTES,
        };
        let mut bytes = 0u64;
        let mut end = next;
        while end < wanted.len()
            && end - next < MAX_BATCH_CHUNKS
            && (end == next || bytes + u64::from(wanted[end].len) <= budget)
        {
            bytes += u64::from(wanted[end].len);
            end += 1;
        }
        let batch: Vec<Hash> = wanted[next..end].iter().map(|w| w.hash).collect();
        fetch(&mut *ctx.link, &store, batch, limit, &mut c, ctx.progress).await?;
        next = end;
    }

    // Build the new generation and swap it in.
    tracing::info!(ms = t0.elapsed().as_millis() as u64, "sync: transferred");
    c.phase = "installing".into();
    (ctx.progress)(&c);
    let paths = ctx.paths.clone();
    let local2 = local.clone();
    let root = remote.root.clone();
    let built = crate::store::blocking(move || build(&paths, &root, &local2, &lists)).await?;
    c.files_done = c.files_total;
    (ctx.progress)(&c);
    let paths = ctx.paths.clone();
    let index = ctx.index.clone();
    let root_hash = built.0.hash;
    tracing::info!(ms = t0.elapsed().as_millis() as u64, "sync: built");
    crate::store::blocking(move || install(&paths, &index, built.0)).await?;
    tracing::info!(ms = t0.elapsed().as_millis() as u64, "sync: installed");
    c.phase = "done".into();
    (ctx.progress)(&c);
    Ok(Pulled {
        files_changed: built.1,
        bytes_on_wire: c.bytes_on_wire,
        root: root_hash,
    })
}

pub(crate) async fn fetch(
    link: &mut PeerLink,
    store: &Path,
    batch: Vec<Hash>,
    limit: Option<u64>,
    c: &mut Counters,
    progress: &(dyn Fn(&Counters) + Send + Sync),
) -> Result<(), PullError> {
    let asked: HashSet<Hash> = batch.iter().copied().collect();
    let req = encode(&ChunksRequest {
        hashes: batch,
        limit,
    });
    c.bytes_on_wire += req.len() as u64;
    let mut body = link
        .open("POST", wire::CHUNKS, Some((req, wire::BINARY)), IDLE)
        .await?;
    let mut buf = bytes::BytesMut::new();
    let mut got = 0usize;
    let mut last_report = Instant::now();
    let result = async {
        loop {
            let frame = tokio::time::timeout(IDLE, body.frame())
                .await
                .map_err(|_| LinkError::Unreachable("the primary went silent".into()))?;
            let data = match frame {
                None => break,
                Some(Err(e)) => return Err(LinkError::Unreachable(e.to_string()).into()),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue,
                },
            };
            c.bytes_on_wire += data.len() as u64;
            buf.extend_from_slice(&data);
            // Every whole frame that came, checked, then stored in one go.
            let mut arrived = Vec::new();
            while let Some(frame) = wire::take_frame(&mut buf).map_err(PullError::Protocol)? {
                match frame {
                    Frame::Missing(_) => return Err(PullError::SourceChanged),
                    Frame::Chunk { hash, data } => {
                        if !asked.contains(&hash) {
                            return Err(PullError::Protocol(
                                "a chunk that was not asked for".into(),
                            ));
                        }
                        c.bytes_done += data.len() as u64;
                        got += 1;
                        arrived.push((hash, data));
                    }
                }
            }
            if !arrived.is_empty() {
                let store = store.to_path_buf();
                crate::store::blocking(move || {
                    arrived
                        .iter()
                        .try_for_each(|(hash, data)| put_chunk(&store, hash, data))
                })
                .await
                .map_err(io_err("the chunk store"))?;
            }
            if last_report.elapsed() >= Duration::from_millis(200) {
                progress(c);
                last_report = Instant::now();
            }
        }
        if got != asked.len() || !buf.is_empty() {
            return Err(PullError::Protocol(format!(
                "{got} of {} chunks came",
                asked.len()
            )));
        }
        progress(c);
        Ok(())
    }
    .await;
    if result.is_err() {
        link.reset();
    }
    result
}

/// How long the primary may take to fetch what a backup offers.
const OFFER_WAIT: Duration = Duration::from_secs(3600);
/// An offer request stays under the API's 64 KiB body limit.
const MAX_OFFER_BYTES: usize = 48 * 1024;

/// Offers the primary every file under `files/` that changed here since the last pull.
async fn offer(
    link: &mut PeerLink,
    paths: &Paths,
    local: &Snapshot,
    c: &mut Counters,
) -> Result<wire::Merged, PullError> {
    let base = load_base(paths);
    let mut changed = Vec::new();
    for (path, node) in local.tree.files() {
        let Some(p) = path.to_str() else { continue };
        if !p.starts_with("files/") {
            continue;
        }
        if base.as_ref().and_then(|b| b.get(p)) == Some(&node.meta.hash) {
            continue;
        }
        changed.push((p.to_string(), node.meta, node.chunks.clone()));
    }
    let mut total = wire::Merged::default();
    let mut batch = wire::Offer::default();
    let mut size = 0;
    let mut batches = Vec::new();
    for f in changed {
        let cost = f.0.len() + 64 + f.2.len() * 40;
        if size + cost > MAX_OFFER_BYTES && !batch.files.is_empty() {
            batches.push(std::mem::take(&mut batch));
            size = 0;
        }
        size += cost;
        batch.files.push(f);
    }
    if !batch.files.is_empty() {
        batches.push(batch);
    }
    for b in batches {
        let req = encode(&b);
        c.bytes_on_wire += req.len() as u64;
        let body = link
            .open("POST", wire::OFFER, Some((req, wire::BINARY)), OFFER_WAIT)
            .await?;
        let bytes = read_all(body, &mut c.bytes_on_wire).await?;
        let merged: wire::Merged =
            serde_json::from_slice(&bytes).map_err(|e| PullError::Protocol(e.to_string()))?;
        total.placed += merged.placed;
        total.conflicts += merged.conflicts;
    }
    Ok(total)
}

fn save_base(paths: &Paths, tree: &DirNode) {
    let files: Vec<(String, Hash)> = tree
        .files()
        .into_iter()
        .filter_map(|(p, f)| Some((p.to_str()?.to_string(), f.meta.hash)))
        .collect();
    let saved = postcard::to_stdvec(&files)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            crate::store::write_atomic(&paths.base_file(), &b, 0o600).map_err(|e| e.to_string())
        });
    if let Err(e) = saved {
        tracing::warn!(
            "sync: the list of synced files is not saved ({e}): a later merge offers every file"
        );
    }
}

fn load_base(paths: &Paths) -> Option<HashMap<String, Hash>> {
    let bytes = fs::read(paths.base_file()).ok()?;
    let files: Vec<(String, Hash)> = postcard::from_bytes(&bytes).ok()?;
    Some(files.into_iter().collect())
}

/// Writes a file from its chunks (local ones first, then the chunk store) and checks it.
pub(crate) fn write_from_chunks(
    site: &Path,
    store: &Path,
    local: &Snapshot,
    meta: &tree::FileMeta,
    chunks: &[ChunkRef],
    at: &Path,
) -> Result<(), PullError> {
    let mut out = io::BufWriter::with_capacity(
        1 << 20,
        fs::File::create(at).map_err(io_err("writing a file"))?,
    );
    let mut whole = blake3::Hasher::new();
    for chunk in chunks {
        let data = match local.places.get(&chunk.hash) {
            Some(place) => tree::read_place(site, place, &chunk.hash).ok(),
            None => None,
        };
        let data = match data {
            Some(d) => d,
            None => {
                let path = store.join(tree::hex(&chunk.hash));
                let d = fs::read(&path).map_err(io_err("a chunk that should have arrived"))?;
                if blake3::hash(&d).as_bytes() != &chunk.hash {
                    let _ = fs::remove_file(&path);
                    return Err(PullError::Io(
                        "a stored chunk was damaged; it is fetched again next time".into(),
                    ));
                }
                d
            }
        };
        whole.update(&data);
        out.write_all(&data).map_err(io_err("writing a file"))?;
    }
    out.flush().map_err(io_err("writing a file"))?;
    drop(out);
    if whole.finalize().as_bytes() != &meta.hash {
        return Err(PullError::Protocol(format!(
            "{} does not match its hash",
            at.display()
        )));
    }
    set_meta(at, meta).map_err(io_err("setting a file's time"))
}

/// The primary's side of an offer: every offered file it lacks goes where it was on the
/// backup; one it has in another version goes under `files/conflicts/<time>/`.
pub async fn take_offer(
    link: &mut PeerLink,
    index: &Arc<LocalIndex>,
    paths: &Paths,
    offer: wire::Offer,
) -> Result<wire::Merged, PullError> {
    let (local, _) = index.refresh().await.map_err(io_err("reading this site"))?;
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "conflict".into());
    let mut merged = wire::Merged::default();
    let mut places: Vec<(PathBuf, tree::FileMeta, Vec<ChunkRef>)> = Vec::new();
    for (path, meta, chunks) in offer.files {
        let rel = PathBuf::from(&path);
        let ok = path.starts_with("files/")
            && rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !ok {
            return Err(PullError::Protocol(format!(
                "a bad path in an offer: {path:?}"
            )));
        }
        let dest = match local.tree.get(&rel) {
            Some(Node::File(f)) if f.meta.hash == meta.hash => continue,
            None if !blocked_by_file(&local.tree, &rel) => {
                merged.placed += 1;
                rel
            }
            _ => {
                merged.conflicts += 1;
                let rest = rel.strip_prefix("files").unwrap_or(&rel);
                Path::new("files/conflicts").join(&stamp).join(rest)
            }
        };
        places.push((dest, meta, chunks));
    }
    let store = paths.chunks();
    fs::create_dir_all(&store).map_err(io_err("the chunk store"))?;
    let mut wanted = Vec::new();
    let mut seen = HashSet::new();
    for (_, _, chunks) in &places {
        for c in chunks {
            if !local.places.contains_key(&c.hash) && seen.insert(c.hash) {
                wanted.push(c.hash);
            }
        }
    }
    let mut c = Counters::default();
    let quiet = |_: &Counters| {};
    for batch in wanted.chunks(MAX_BATCH_CHUNKS) {
        fetch(link, &store, batch.to_vec(), None, &mut c, &quiet).await?;
    }
    let paths = paths.clone();
    crate::store::blocking(move || {
        let tmp_dir = paths.sync.join("merge");
        fs::create_dir_all(&tmp_dir).map_err(io_err("the merge directory"))?;
        for (n, (dest, meta, chunks)) in places.iter().enumerate() {
            let tmp = tmp_dir.join(n.to_string());
            write_from_chunks(&paths.site, &paths.chunks(), &local, meta, chunks, &tmp)?;
            let target = paths.site.join(dest);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io_err("a directory for a merged file"))?;
            }
            fs::rename(&tmp, &target).map_err(io_err("placing a merged file"))?;
        }
        let _ = remove_tree(&tmp_dir);
        let _ = remove_tree(&paths.chunks());
        Ok::<(), PullError>(())
    })
    .await?;
    Ok(merged)
}

/// Whether some parent of `path` is a file here (the offered file cannot go there).
fn blocked_by_file(tree: &DirNode, path: &Path) -> bool {
    let mut at = PathBuf::new();
    for part in path.parent().into_iter().flat_map(|p| p.iter()) {
        at.push(part);
        if let Some(Node::File(_)) = tree.get(&at) {
            return true;
        }
    }
    false
}

/// Stores one chunk under its name (not synced one by one: the pull syncs the file system
/// once before the swap; a chunk torn by a power cut fails its check when it is used, is
/// removed, and is fetched again by the next pull).
fn put_chunk(store: &Path, hash: &Hash, data: &[u8]) -> io::Result<()> {
    fs::write(store.join(tree::hex(hash)), data)
}

fn walk_files(dir: &WireDir, visit: &mut impl FnMut(&tree::FileMeta)) {
    for (_, node) in &dir.entries {
        match node {
            WireNode::File(meta) => visit(meta),
            WireNode::Dir(d) => walk_files(d, visit),
            WireNode::Have(_) => {}
        }
    }
}

fn walk_haves(dir: &WireDir) -> Vec<Hash> {
    let mut out = Vec::new();
    for (_, node) in &dir.entries {
        match node {
            WireNode::Have(h) => out.push(*h),
            WireNode::Dir(d) => out.extend(walk_haves(d)),
            WireNode::File(_) => {}
        }
    }
    out
}

/// A name from the primary must be one path segment.
fn safe_name(name: &str) -> Result<&str, PullError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(PullError::Protocol(format!(
            "a bad name in the tree: {name:?}"
        )));
    }
    Ok(name)
}

struct Builder<'a> {
    site: &'a Path,
    store: PathBuf,
    local: &'a Snapshot,
    local_dirs: HashMap<Hash, PathBuf>,
    local_files: HashMap<Hash, (PathBuf, &'a FileNode)>,
    lists: &'a HashMap<Hash, Vec<ChunkRef>>,
    changed: u64,
}

/// Builds `next/` from the primary's tree; answers the new tree and how many files were
/// written (not linked).
fn build(
    paths: &Paths,
    remote: &WireDir,
    local: &Snapshot,
    lists: &HashMap<Hash, Vec<ChunkRef>>,
) -> Result<(DirNode, u64), PullError> {
    let next = paths.next();
    remove_tree(&next).map_err(io_err("clearing the staging generation"))?;
    let mut b = Builder {
        site: &paths.site,
        store: paths.chunks(),
        local,
        local_dirs: local.tree.dirs_by_hash(),
        local_files: local.tree.files_by_hash(),
        lists,
        changed: 0,
    };
    let tree = b.dir(remote, &next)?;
    Ok((tree, b.changed))
}

impl Builder<'_> {
    fn dir(&mut self, remote: &WireDir, at: &Path) -> Result<DirNode, PullError> {
        fs::create_dir(at).map_err(io_err("the staging generation"))?;
        let mut out = DirNode::default();
        for (name, node) in &remote.entries {
            let name = safe_name(name)?;
            let path = at.join(name);
            let built = match node {
                WireNode::Dir(d) => Node::Dir(self.dir(d, &path)?),
                WireNode::Have(h) => {
                    let from = self.local_dirs.get(h).ok_or_else(|| {
                        PullError::Protocol("a subtree this appliance does not have".into())
                    })?;
                    let Some(Node::Dir(d)) = (if from.as_os_str().is_empty() {
                        Some(Node::Dir(self.local.tree.clone()))
                    } else {
                        self.local.tree.get(from).cloned()
                    }) else {
                        return Err(PullError::Protocol("a subtree moved while building".into()));
                    };
                    link_tree(&self.site.join(from), &path, &d)
                        .map_err(io_err("linking an unchanged subtree"))?;
                    Node::Dir(d)
                }
                WireNode::File(meta) => Node::File(self.file(meta, &path)?),
            };
            out.entries.insert(name.to_string(), built);
        }
        out.rehash();
        if out.hash != remote.hash {
            return Err(PullError::Protocol(format!(
                "{} does not match the primary's directory",
                at.display()
            )));
        }
        Ok(out)
    }

    fn file(&mut self, meta: &tree::FileMeta, at: &Path) -> Result<FileNode, PullError> {
        if let Some((path, node)) = self.local_files.get(&meta.hash) {
            let from = self.site.join(path);
            if node.meta == *meta {
                fs::hard_link(&from, at).map_err(io_err("linking an unchanged file"))?;
            } else {
                // Same content, other time or mode: a local copy, nothing on the wire.
                fs::copy(&from, at).map_err(io_err("copying a file"))?;
                set_meta(at, meta).map_err(io_err("setting a file's time"))?;
            }
            return Ok(FileNode {
                meta: *meta,
                chunks: node.chunks.clone(),
                stat: node.stat,
            });
        }
        let chunks = self
            .lists
            .get(&meta.hash)
            .ok_or_else(|| PullError::Protocol("a file without its chunk list".into()))?;
        write_from_chunks(self.site, &self.store, self.local, meta, chunks, at)?;
        self.changed += 1;
        Ok(FileNode {
            meta: *meta,
            chunks: chunks.clone(),
            stat: tree::StatKey::of(&fs::symlink_metadata(at).map_err(io_err("a new file"))?),
        })
    }
}

fn set_meta(path: &Path, meta: &tree::FileMeta) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))?;
    let mtime = std::time::UNIX_EPOCH + Duration::from_nanos(meta.mtime_ns.max(0) as u64);
    fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(mtime)
}

/// Hard-links every file of an unchanged subtree into the new generation.
fn link_tree(from: &Path, to: &Path, dir: &DirNode) -> io::Result<()> {
    fs::create_dir(to)?;
    for (name, node) in &dir.entries {
        match node {
            Node::Dir(d) => link_tree(&from.join(name), &to.join(name), d)?,
            Node::File(_) => fs::hard_link(from.join(name), to.join(name))?,
        }
    }
    Ok(())
}

fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Swaps the built generation in and cleans up after it.
fn install(paths: &Paths, index: &LocalIndex, tree: DirNode) -> Result<(), PullError> {
    let next = paths.next();
    let dir = fs::File::open(&next).map_err(io_err("the staging generation"))?;
    let t0 = Instant::now();
    nix::unistd::syncfs(&dir).map_err(|e| PullError::Io(format!("syncing the disk: {e}")))?;
    drop(dir);
    tracing::info!(
        ms = t0.elapsed().as_millis() as u64,
        "sync: the disk is synced"
    );
    let root = tree::hex(&tree.hash);
    let mut state = PullState::load(paths);
    state.installing = Some(root.clone());
    state.save(paths)?;
    if paths.site.exists() {
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &next,
            nix::fcntl::AT_FDCWD,
            &paths.site,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| PullError::Io(format!("swapping the site in: {e}")))?;
    } else {
        fs::rename(&next, &paths.site).map_err(io_err("putting the site in place"))?;
    }
    fs::File::open(paths.site.parent().unwrap_or(Path::new("/")))
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing the data directory"))?;
    // The old generation and the chunks are no longer needed: moved aside at once and
    // removed in the background (tens of thousands of unlinks need not hold the pull up).
    discard(paths, &next);
    discard(paths, &paths.chunks());
    // Links and unlinks changed the inodes' ctimes: take the stats as they are now.
    let mut tree = tree;
    refresh_stats(&paths.site, &mut tree);
    index.save(&tree);
    save_base(paths, &tree);
    index.put(tree);
    state.base = Some(root);
    state.installing = None;
    state.served = false;
    state.save(paths)
}

/// Moves `path` into `<sync>/trash/` and removes it there on a thread of its own; what a
/// crash leaves in the trash is removed at the next start ([`clean_up`]).
fn discard(paths: &Paths, path: &Path) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let trash = paths.sync.join("trash");
    if let Err(e) = fs::create_dir_all(&trash) {
        tracing::warn!("sync: no trash directory: {e}");
        return;
    }
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let aside = trash.join(format!("{}-{n}", std::process::id()));
    match fs::rename(path, &aside) {
        Ok(()) => {
            std::thread::spawn(move || {
                if let Err(e) = remove_tree(&aside) {
                    tracing::warn!("sync: {} is not removed: {e}", aside.display());
                }
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("sync: {} is not moved aside: {e}", path.display()),
    }
}

fn refresh_stats(at: &Path, dir: &mut DirNode) {
    for (name, node) in dir.entries.iter_mut() {
        match node {
            Node::Dir(d) => refresh_stats(&at.join(name), d),
            Node::File(f) => {
                if let Ok(m) = fs::symlink_metadata(at.join(name)) {
                    f.stat = tree::StatKey::of(&m);
                }
            }
        }
    }
}

/// Clears what an interrupted pull left that cannot be reused (a half-built staging
/// generation, or an old one a crash left after the swap); the chunk store stays.
pub fn clean_up(paths: &Paths) {
    for dir in [paths.next(), paths.sync.join("trash")] {
        if let Err(e) = remove_tree(&dir) {
            tracing::warn!("sync: {} is not removed: {e}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_is_recorded_on_a_data_disk_that_never_synced() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        assert!(!paths.sync.exists());
        PullState::mark_served(&paths);
        let state = PullState::load(&paths);
        assert!(state.served, "{state:?}");
        assert_eq!(state.base, None);
    }
}
