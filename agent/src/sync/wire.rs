//! The sync's messages on the peer channel (`/peer/v1/sync/...`, proved like every peer
//! request). Requests and the tree are postcard; the tree and the file lists travel zstd-
//! compressed; chunks travel as frames, each compressed when that makes it smaller.
//!
//! | route | the backup asks | the primary answers |
//! | --- | --- | --- |
//! | `POST /sync/tree` | [`TreeRequest`]: the directory hashes it has | [`WireTree`]: its tree, with the subtrees the backup has left as their hash |
//! | `POST /sync/files` | [`FilesRequest`]: content hashes | [`FilesReply`]: their chunk lists |
//! | `POST /sync/chunks` | [`ChunksRequest`]: chunk hashes | a stream of [`Frame`]s |
//! | `POST /sync/done` | [`Done`]: the pull's result | nothing (it feeds the no-pull alert) |
//! | `POST /sync/pause` | pause the site for a final sync | nothing |
//! | `POST /sync/pull` | (from the primary) pull now | nothing, or when `wait` the result |
//! | `POST /sync/offer` | [`Offer`]: files it changed while it served (before a merge) | [`Merged`], once the primary fetched them from it (`/sync/chunks` the other way) |
//!
//! Every answer that carries data is paced with the backup's bandwidth limit, which it
//! sends along (`limit`), so its setting is the one in force.

use super::tree::{ChunkRef, FileMeta, Hash};
use serde::{Deserialize, Serialize};

pub const TREE: &str = "/peer/v1/sync/tree";
pub const FILES: &str = "/peer/v1/sync/files";
pub const CHUNKS: &str = "/peer/v1/sync/chunks";
pub const DONE: &str = "/peer/v1/sync/done";
pub const PAUSE: &str = "/peer/v1/sync/pause";
pub const PULL: &str = "/peer/v1/sync/pull";
pub const OFFER: &str = "/peer/v1/sync/offer";

/// The content type of postcard bodies.
pub const BINARY: &str = "application/octet-stream";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TreeRequest {
    pub have: Vec<Hash>,
    pub limit: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTree {
    pub root: WireDir,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDir {
    pub hash: Hash,
    pub entries: Vec<(String, WireNode)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireNode {
    /// A directory the backup said it has (by hash).
    Have(Hash),
    Dir(WireDir),
    File(FileMeta),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FilesRequest {
    pub hashes: Vec<Hash>,
    pub limit: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FilesReply {
    pub files: Vec<(Hash, Vec<ChunkRef>)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunksRequest {
    pub hashes: Vec<Hash>,
    pub limit: Option<u64>,
}

/// Files a backup changed while it served as primary: the primary takes them before the
/// backup mirrors it, so no file is lost.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Offer {
    /// Path under the site directory (always under `files/`), what it is, its chunks.
    pub files: Vec<(String, FileMeta, Vec<ChunkRef>)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Merged {
    /// Files put where they were on the backup.
    pub placed: u64,
    /// Files the primary had in another version: kept under `files/conflicts/<time>/`.
    pub conflicts: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Done {
    pub ok: bool,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PullRequest {
    /// Answer only when the pull is over (a final sync), with its result.
    pub wait: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PauseRequest {
    /// Pause (true) or open again (false).
    pub pause: bool,
}

/// How a chunk travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Raw = 0,
    Zstd = 1,
    /// The primary no longer has it (the file changed since the tree was sent).
    Missing = 2,
}

/// `hash (32) | encoding (1) | length (4, big-endian) | data`.
pub const FRAME_HEADER: usize = 37;
/// Largest frame data: a chunk never compresses to more than this.
pub const MAX_FRAME: usize = super::tree::MAX_CHUNK + 1024;

/// Encodes one chunk as a frame, compressed when that saves at least an eighth.
pub fn frame(hash: &Hash, data: Option<&[u8]>) -> Vec<u8> {
    let (encoding, body): (Encoding, std::borrow::Cow<[u8]>) = match data {
        None => (Encoding::Missing, (&[][..]).into()),
        // A sample first: data that does not compress (most of a site's large files) is
        // not run through zstd whole.
        Some(d) if !worth_compressing(d) => (Encoding::Raw, d.into()),
        Some(d) => match zstd::bulk::compress(d, 1) {
            Ok(z) if z.len() < d.len() - d.len() / 8 => (Encoding::Zstd, z.into()),
            _ => (Encoding::Raw, d.into()),
        },
    };
    let mut out = Vec::with_capacity(FRAME_HEADER + body.len());
    out.extend_from_slice(hash);
    out.push(encoding as u8);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Whether the first 4 KiB of `data` shrink by at least an eighth.
fn worth_compressing(data: &[u8]) -> bool {
    const SAMPLE: usize = 4096;
    if data.len() <= SAMPLE {
        return true;
    }
    let sample = &data[..SAMPLE];
    zstd::bulk::compress(sample, 1).is_ok_and(|z| z.len() < SAMPLE - SAMPLE / 8)
}

/// A frame taken off the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Chunk { hash: Hash, data: Vec<u8> },
    Missing(Hash),
}

/// Takes one whole frame off the front of `buf`, if there is one; checks the chunk's
/// hash after decompressing it.
pub fn take_frame(buf: &mut bytes::BytesMut) -> Result<Option<Frame>, String> {
    use bytes::Buf;
    if buf.len() < FRAME_HEADER {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[33], buf[34], buf[35], buf[36]]) as usize;
    if len > MAX_FRAME {
        return Err(format!("a frame of {len} bytes is over the limit"));
    }
    if buf.len() < FRAME_HEADER + len {
        return Ok(None);
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&buf[..32]);
    let encoding = buf[32];
    buf.advance(FRAME_HEADER);
    let body = buf.split_to(len);
    let data = match encoding {
        0 => body.to_vec(),
        1 => zstd::bulk::decompress(&body, super::tree::MAX_CHUNK)
            .map_err(|e| format!("a chunk does not decompress: {e}"))?,
        2 => return Ok(Some(Frame::Missing(hash))),
        other => return Err(format!("unknown chunk encoding {other}")),
    };
    if blake3::hash(&data).as_bytes() != &hash {
        return Err(format!(
            "chunk {} does not match its hash",
            super::tree::hex(&hash)
        ));
    }
    Ok(Some(Frame::Chunk { hash, data }))
}

/// postcard, then zstd: for the tree and the file lists.
pub fn pack<T: Serialize>(value: &T) -> Vec<u8> {
    let raw = postcard::to_stdvec(value).unwrap_or_default();
    zstd::bulk::compress(&raw, 3).unwrap_or_default()
}

/// The largest unpacked tree or file list: 512 MiB.
const MAX_UNPACKED: usize = 512 << 20;

pub fn unpack<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    let raw = zstd::bulk::decompress(bytes, MAX_UNPACKED).map_err(|e| e.to_string())?;
    postcard::from_bytes(&raw).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_compressed_or_not_and_are_checked() {
        let text = b"sync sync sync sync sync sync sync sync sync sync sync".repeat(100);
        let noise: Vec<u8> = (0..5000u32)
            .flat_map(|i| blake3::hash(&i.to_le_bytes()).as_bytes()[..3].to_vec())
            .collect();
        let mut buf = bytes::BytesMut::new();
        for data in [&text[..], &noise[..]] {
            let hash = *blake3::hash(data).as_bytes();
            let f = frame(&hash, Some(data));
            if data == &text[..] {
                assert!(f.len() < data.len() / 4, "text compresses");
            } else {
                assert_eq!(f.len(), FRAME_HEADER + data.len(), "noise goes raw");
            }
            buf.extend_from_slice(&f[..10]);
            assert_eq!(take_frame(&mut buf).unwrap(), None, "a partial frame waits");
            buf.extend_from_slice(&f[10..]);
            assert_eq!(
                take_frame(&mut buf).unwrap(),
                Some(Frame::Chunk {
                    hash,
                    data: data.to_vec()
                })
            );
        }
        buf.extend_from_slice(&frame(&[7; 32], None));
        assert_eq!(take_frame(&mut buf).unwrap(), Some(Frame::Missing([7; 32])));
        let mut bad = frame(&[1; 32], Some(b"not what the hash says"));
        let mut buf = bytes::BytesMut::from(&bad[..]);
        assert!(take_frame(&mut buf).unwrap_err().contains("does not match"));
        bad[33] = 0xff;
        let mut buf = bytes::BytesMut::from(&bad[..]);
        assert!(take_frame(&mut buf).unwrap_err().contains("over the limit"));
    }
}
