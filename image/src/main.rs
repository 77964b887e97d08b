//! `appliance-image`: packs the initramfs, writes the blank data disk and the UEFI disk
//! image.

use appliance_image::disk::{self, Uki};
use appliance_image::initramfs::{Entry, Initramfs};
use appliance_image::{blank_disk, ImageError};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "Build the appliance's initramfs and data disk")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pack init, the agent, appliancectl and the tools they need.
    Initramfs {
        /// Directory holding appliance-init, appliance-agent and appliancectl.
        #[arg(long)]
        bin_dir: PathBuf,
        /// Output file (gzip-compressed newc cpio).
        #[arg(long)]
        out: PathBuf,
        /// Firmware version written to /etc/os-release.
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
        /// Build identity written to /etc/os-release.
        #[arg(long, default_value = "dev")]
        build: String,
    },
    /// Write a blank, sparse data disk that the appliance formats on first boot.
    DataDisk {
        #[arg(long)]
        out: PathBuf,
        /// Size in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
    },
    /// Write the UEFI disk image: GPT, an ESP with the unified kernel image at
    /// EFI/BOOT/BOOTX64.EFI, two blank firmware slots and a blank data partition.
    DiskImage {
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initramfs: PathBuf,
        /// Kernel command line baked into the unified kernel image.
        #[arg(long)]
        cmdline: String,
        /// systemd's EFI stub (Debian: systemd-boot-efi).
        #[arg(long, default_value = disk::DEFAULT_STUB)]
        stub: PathBuf,
        /// Output disk image; the UKI is also kept beside it as <out>.efi.
        #[arg(long)]
        out: PathBuf,
        /// Size of the data partition in the image, in MiB (it grows on a larger disk).
        #[arg(long, default_value_t = disk::DEFAULT_DATA_SIZE >> 20)]
        data_mib: u64,
        /// Firmware version written to the UKI's os-release.
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
        #[arg(long, default_value = "dev")]
        build: String,
    },
}

fn os_release(version: &str, build: &str) -> String {
    format!("NAME=\"Appliance OS\"\nID=appliance\nVERSION_ID={version}\nBUILD_ID={build}\n")
}

#[allow(clippy::too_many_arguments)]
fn disk_image(
    kernel: &Path,
    initramfs: &Path,
    cmdline: &str,
    stub: &Path,
    out: &Path,
    data_mib: u64,
    version: &str,
    build: &str,
) -> Result<(), ImageError> {
    if data_mib < 16 {
        return Err(ImageError::DiskTooSmall(data_mib << 20));
    }
    let uki_path = out.with_extension("efi");
    let work = out.with_extension("uki.tmp");
    std::fs::create_dir_all(&work).map_err(|source| ImageError::Write {
        path: work.clone(),
        source,
    })?;
    let uki = Uki {
        stub,
        kernel,
        initramfs,
        cmdline,
        os_release: &os_release(version, build),
    };
    let uki_size = disk::build_uki(&uki, &work, &uki_path);
    let _ = std::fs::remove_dir_all(&work);
    let uki_size = uki_size?;
    let table = disk::build_disk(&uki_path, out, data_mib << 20)?;
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "disk image: {} ({} MiB; UKI {:.1} MiB at {}; command line {cmdline:?})",
        out.display(),
        size >> 20,
        uki_size as f64 / 1048576.0,
        disk::BOOT_PATH
    );
    for (part, number) in table.partitions.iter().zip(1..) {
        println!(
            "  {number}: {:<15} {:>5} MiB at {:>4} MiB, type {}",
            part.name,
            part.size() >> 20,
            (part.first_lba * 512) >> 20,
            part.type_guid
        );
    }
    Ok(())
}

/// Host tools the appliance runs, with the names they are also known by.
const TOOLS: &[(&str, &[&str])] = &[
    ("/sbin/mke2fs", &["mkfs.ext4"]),
    ("/sbin/e2fsck", &["fsck.ext4"]),
];

fn initramfs(bin_dir: &Path, out: &Path, version: &str, build: &str) -> Result<(), ImageError> {
    let mut img = Initramfs::new();
    for (dir, mode) in [
        ("/dev", 0o755),
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/run", 0o755),
        ("/tmp", 0o1777),
        ("/data", 0o755),
        ("/root", 0o700),
    ] {
        img.dir(dir, mode)?;
    }
    // The kernel opens /dev/console for PID 1 before anything mounts devtmpfs.
    img.add(
        "/dev/console",
        Entry::CharDev {
            major: 5,
            minor: 1,
            mode: 0o600,
        },
    )?;
    img.program(&bin_dir.join("appliance-init"), "/init")?;
    img.program(&bin_dir.join("appliance-agent"), "/bin/appliance-agent")?;
    img.program(&bin_dir.join("appliancectl"), "/bin/appliancectl")?;
    for (tool, aliases) in TOOLS {
        img.program(Path::new(tool), tool)?;
        let name = Path::new(tool)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for alias in *aliases {
            img.symlink(&format!("/sbin/{alias}"), &name)?;
        }
    }
    if Path::new("/etc/mke2fs.conf").exists() {
        img.copy(Path::new("/etc/mke2fs.conf"), "/etc/mke2fs.conf", 0o644)?;
    }
    img.file("/etc/passwd", "root:x:0:0:root:/root:/bin/false\n", 0o644)?;
    img.file("/etc/group", "root:x:0:\n", 0o644)?;
    img.file(
        "/etc/hosts",
        "127.0.0.1 localhost appliance\n::1 localhost\n",
        0o644,
    )?;
    img.file("/etc/os-release", os_release(version, build), 0o644)?;
    let mtime = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let size = img.write_gz(out, mtime)?;
    println!(
        "initramfs: {} ({} entries, {:.1} MiB of files, {:.1} MiB compressed)",
        out.display(),
        img.paths().count(),
        img.payload_bytes() as f64 / 1048576.0,
        size as f64 / 1048576.0
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Cmd::Initramfs {
            bin_dir,
            out,
            version,
            build,
        } => initramfs(&bin_dir, &out, &version, &build),
        Cmd::DiskImage {
            kernel,
            initramfs,
            cmdline,
            stub,
            out,
            data_mib,
            version,
            build,
        } => disk_image(
            &kernel, &initramfs, &cmdline, &stub, &out, data_mib, &version, &build,
        ),
        Cmd::DataDisk { out, size_mib } => blank_disk(&out, size_mib << 20).map(|()| {
            println!("data disk: {} ({size_mib} MiB, blank)", out.display());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("appliance-image: {e}");
            ExitCode::FAILURE
        }
    }
}
