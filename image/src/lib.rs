//! Builds the appliance's firmware files: the initramfs, the blank data disk for QEMU's
//! direct kernel boot, and the UEFI disk image ([`disk`]).
//!
//! The kernel is built by `build-kernel.sh` (Debian's linux-source plus
//! `kernel-config/appliance.config`, cached by a hash of its inputs); this crate packs
//! everything that runs in user space.

pub mod disk;
pub mod initramfs;
pub mod libs;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list the libraries of {path}: {detail}")]
    Ldd { path: PathBuf, detail: String },
    #[error("{0} is not an absolute path inside the image")]
    BadImagePath(String),
    #[error("{tool} failed: {detail}")]
    Tool { tool: String, detail: String },
    #[error("the data disk must be at least 16 MiB (asked for {0} bytes)")]
    DiskTooSmall(u64),
}

/// Writes a blank (sparse, all-zero) data disk of `size` bytes; the appliance formats it
/// on first boot.
pub fn blank_disk(path: &Path, size: u64) -> Result<(), ImageError> {
    if size < 16 << 20 {
        return Err(ImageError::DiskTooSmall(size));
    }
    let wrap = |source| ImageError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(wrap)?;
    }
    let tmp = path.with_extension("img.tmp");
    let f = std::fs::File::create(&tmp).map_err(wrap)?;
    f.set_len(size).map_err(wrap)?;
    f.sync_all().map_err(wrap)?;
    std::fs::rename(&tmp, path).map_err(wrap)
}
