//! The UEFI disk image: a unified kernel image (UKI) on a FAT32 EFI system partition, two
//! reserved firmware slots and a blank data partition, in the GPT layout of
//! [`appliance_proto::gpt::appliance_layout`].
//!
//! The UKI is systemd's EFI stub (Debian's `systemd-boot-efi`) with the kernel, the
//! initramfs, the command line and an os-release added as PE sections by `objcopy`, one
//! after the other above the stub's own image. The firmware runs it from the
//! removable-media path `EFI/BOOT/BOOTX64.EFI`, so no boot entry in NVRAM is needed.
//!
//! Nothing here needs root or loop devices: the FAT file system is made in a file by
//! `mkfs.vfat` and filled by `mcopy`, then copied into the image at the ESP's offset; the
//! partition table is written by [`appliance_proto::gpt`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use appliance_proto::gpt::{self, Guid, MIB, SECTOR};

use crate::ImageError;

/// Where Debian's `systemd-boot-efi` puts the EFI stub.
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// The ESP's path that firmware boots from removable (and never-registered) disks.
pub const BOOT_PATH: &str = "EFI/BOOT/BOOTX64.EFI";
/// Size of the data partition in the image; init grows it on a larger disk.
pub const DEFAULT_DATA_SIZE: u64 = 128 * MIB;

/// What goes into the unified kernel image.
pub struct Uki<'a> {
    pub stub: &'a Path,
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub cmdline: &'a str,
    pub os_release: &'a str,
}

fn tool_error(tool: &str, detail: impl Into<String>) -> ImageError {
    ImageError::Tool {
        tool: tool.to_string(),
        detail: detail.into(),
    }
}

fn run(cmd: &mut Command) -> Result<(), ImageError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| {
        tool_error(
            &tool,
            format!("cannot run it ({e}); install dosfstools, mtools and binutils"),
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(tool_error(
        &tool,
        format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

/// Image base plus size of image of a PE32+ file: where added sections may start.
pub fn pe_image_end(pe: &[u8]) -> Option<u64> {
    let le32 =
        |at: usize| -> Option<u32> { pe.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes) };
    let pe_at = le32(0x3c)? as usize;
    if pe.get(pe_at..pe_at + 4)? != b"PE\0\0" {
        return None;
    }
    let opt = pe_at + 24;
    if pe.get(opt..opt + 2)? != [0x0b, 0x02] {
        return None;
    }
    let base = u64::from_le_bytes(pe.get(opt + 24..opt + 32)?.try_into().ok()?);
    Some(base + u64::from(le32(opt + 56)?))
}

fn align(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    std::fs::write(path, bytes).map_err(|source| ImageError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds the UKI at `out` with `objcopy`; `work` holds the section files meanwhile.
pub fn build_uki(uki: &Uki, work: &Path, out: &Path) -> Result<u64, ImageError> {
    let stub = read(uki.stub)?;
    let end = pe_image_end(&stub).ok_or_else(|| {
        tool_error(
            "objcopy",
            format!("{} is not a PE32+ EFI stub", uki.stub.display()),
        )
    })?;
    let osrel = work.join("os-release");
    write(&osrel, uki.os_release.as_bytes())?;
    let cmdline = work.join("cmdline");
    write(&cmdline, uki.cmdline.as_bytes())?;
    let sections: [(&str, &Path); 4] = [
        (".osrel", &osrel),
        (".cmdline", &cmdline),
        (".linux", uki.kernel),
        (".initrd", uki.initramfs),
    ];
    let mut cmd = Command::new("objcopy");
    let mut vma = align(end, 4096);
    for (name, file) in sections {
        let len = std::fs::metadata(file)
            .map_err(|source| ImageError::Read {
                path: file.to_path_buf(),
                source,
            })?
            .len();
        cmd.arg("--add-section")
            .arg(format!("{name}={}", file.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}={vma:#x}"));
        vma = align(vma + len, 4096);
    }
    cmd.arg(uki.stub).arg(out);
    run(&mut cmd)?;
    std::fs::metadata(out)
        .map(|m| m.len())
        .map_err(|source| ImageError::Read {
            path: out.to_path_buf(),
            source,
        })
}

/// Makes a FAT32 file system of `size` bytes in the file `esp` holding `uki` at
/// [`BOOT_PATH`].
pub fn build_esp(uki: &Path, esp: &Path, size: u64) -> Result<(), ImageError> {
    let _ = std::fs::remove_file(esp);
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-S", "512", "-s", "1", "-n", "ESP", "-C"])
        .arg(esp)
        .arg((size / 1024).to_string()))?;
    let img = esp.to_string_lossy();
    run(Command::new("mmd").args(["-i", &img, "::EFI", "::EFI/BOOT"]))?;
    run(Command::new("mcopy")
        .args(["-i", &img])
        .arg(uki)
        .arg(format!("::{BOOT_PATH}")))
}

fn random_guids() -> Result<[Guid; 5], ImageError> {
    let mut bytes = [0u8; 80];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| ImageError::Read {
            path: PathBuf::from("/dev/urandom"),
            source,
        })?;
    let mut guids = [Guid([0; 16]); 5];
    for (g, chunk) in guids.iter_mut().zip(bytes.chunks(16)) {
        let mut b = [0u8; 16];
        b.copy_from_slice(chunk);
        *g = Guid::random(b);
    }
    Ok(guids)
}

/// Writes the disk image at `out` (through a temp file and a rename): the GPT, the ESP
/// built from `uki`, blank firmware slots and a blank data partition of `data_size`
/// bytes. Returns the image's size.
pub fn build_disk(uki: &Path, out: &Path, data_size: u64) -> Result<gpt::Table, ImageError> {
    let size = gpt::ALIGN + gpt::ESP_SIZE + 2 * gpt::FIRMWARE_SLOT_SIZE + data_size + gpt::ALIGN;
    let sectors = size / SECTOR;
    let table = gpt::appliance_layout(sectors, random_guids()?)
        .map_err(|e| tool_error("gpt", e.to_string()))?;
    let enc = table
        .encode(sectors)
        .map_err(|e| tool_error("gpt", e.to_string()))?;
    let wrap = |source| ImageError::Write {
        path: out.to_path_buf(),
        source,
    };
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(wrap)?;
    let esp_file = dir.join(".esp.img.tmp");
    let esp = table
        .find(gpt::ESP_NAME, gpt::ESP_TYPE)
        .map(|(_, p)| p.clone())
        .ok_or_else(|| tool_error("gpt", "the layout has no ESP"))?;
    build_esp(uki, &esp_file, esp.size())?;
    let esp_bytes = read(&esp_file)?;
    let _ = std::fs::remove_file(&esp_file);

    let tmp = out.with_extension("img.tmp");
    let mut f = File::create(&tmp).map_err(wrap)?;
    f.set_len(size).map_err(wrap)?;
    let mut put = |offset: u64, bytes: &[u8]| -> std::io::Result<()> {
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(bytes)
    };
    put(0, &enc.head).map_err(wrap)?;
    // Only the ESP's non-zero blocks are written: the image stays sparse.
    for (i, block) in esp_bytes.chunks(64 * 1024).enumerate() {
        if block.iter().any(|&b| b != 0) {
            put(esp.first_lba * SECTOR + (i * 64 * 1024) as u64, block).map_err(wrap)?;
        }
    }
    put(enc.tail_offset, &enc.tail).map_err(wrap)?;
    f.sync_all().map_err(wrap)?;
    std::fs::rename(&tmp, out).map_err(wrap)?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_end_of_a_pe32_plus_header() {
        let mut pe = vec![0u8; 512];
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        let opt = 0x80 + 24;
        pe[opt..opt + 2].copy_from_slice(&[0x0b, 0x02]);
        pe[opt + 24..opt + 32].copy_from_slice(&0x1000_0000u64.to_le_bytes());
        pe[opt + 56..opt + 60].copy_from_slice(&0x19300u32.to_le_bytes());
        assert_eq!(pe_image_end(&pe), Some(0x1001_9300));
        pe[opt] = 0x0a;
        assert_eq!(pe_image_end(&pe), None, "PE32 is refused");
        assert_eq!(pe_image_end(&[]), None);
    }

    /// The whole path with the real tools (dosfstools, mtools, fdisk are host packages of
    /// `make deps`): a disk that sfdisk reads back as our layout, with the EFI file on
    /// the ESP.
    #[test]
    fn a_disk_image_that_sfdisk_and_mtools_read_back() {
        let dir = std::env::temp_dir().join(format!("appliance-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uki = dir.join("fake.efi");
        std::fs::write(&uki, b"MZ not really an EFI file").unwrap();
        let out = dir.join("appliance.img");
        let table = build_disk(&uki, &out, 32 * MIB).unwrap();
        let size = std::fs::metadata(&out).unwrap().len();
        assert_eq!(size, 226 * MIB);
        let json = Command::new("sfdisk")
            .arg("--json")
            .arg(&out)
            .output()
            .unwrap();
        assert!(json.status.success(), "{json:?}");
        let text: String = String::from_utf8_lossy(&json.stdout)
            .to_ascii_lowercase()
            .split_whitespace()
            .collect();
        for (name, guid) in [
            ("ESP", gpt::ESP_TYPE),
            ("APPLIANCE_FW_A", gpt::FIRMWARE_TYPE),
            ("APPLIANCE_FW_B", gpt::FIRMWARE_TYPE),
            ("APPLIANCE_DATA", gpt::DATA_TYPE),
        ] {
            let (n, p) = table.find(name, guid).unwrap();
            let line = format!(
                "\"start\":{},\"size\":{},\"type\":\"{guid}\"",
                p.first_lba,
                p.size() / SECTOR
            );
            assert!(
                text.contains(&line),
                "partition {n} {name}: {line} not in {text}"
            );
            assert!(
                text.contains(&format!("\"name\":\"{}\"", name.to_ascii_lowercase())),
                "{text}"
            );
        }
        let verify = Command::new("sfdisk")
            .arg("--verify")
            .arg(&out)
            .output()
            .unwrap();
        assert!(verify.status.success(), "{verify:?}");
        // The EFI file, read back from the ESP at its offset.
        let esp = dir.join("esp");
        let (_, p) = table.find("ESP", gpt::ESP_TYPE).unwrap();
        let all = std::fs::read(&out).unwrap();
        let start = (p.first_lba * SECTOR) as usize;
        std::fs::write(&esp, &all[start..start + p.size() as usize]).unwrap();
        let back = dir.join("back.efi");
        let status = Command::new("mcopy")
            .arg("-i")
            .arg(&esp)
            .arg(format!("::{BOOT_PATH}"))
            .arg(&back)
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(std::fs::read(&back).unwrap(), b"MZ not really an EFI file");
        // The data partition is blank.
        let (_, d) = table.find("APPLIANCE_DATA", gpt::DATA_TYPE).unwrap();
        let d0 = (d.first_lba * SECTOR) as usize;
        assert!(all[d0..d0 + d.size() as usize].iter().all(|&b| b == 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
