//! What can be checked of `buildroot-ext/` without buildroot: its genimage layout gives the
//! same partitions as `make disk-image` (genimage is run on a stand-in kernel), every path
//! the defconfig and Config.in name exists, and the defconfig asks for what the issue
//! requires (our kernel fragment, no busybox init, no shell). The check against a real
//! buildroot tree is `buildroot-ext/scripts/check-defconfig` (see buildroot-ext/README.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use appliance_proto::gpt::{self, Guid, HEAD_SECTORS, MIB, SECTOR};

fn ext() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../buildroot-ext")
}

fn defconfig() -> String {
    std::fs::read_to_string(ext().join("configs/bseries_x86_64_defconfig")).unwrap()
}

#[test]
fn genimage_lays_out_the_same_partitions_as_make_disk_image() {
    let work = std::env::temp_dir().join(format!("appliance-genimage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    for d in ["in", "out", "root", "tmp"] {
        std::fs::create_dir_all(work.join(d)).unwrap();
    }
    std::fs::write(work.join("in/bzImage"), b"MZ stand-in kernel").unwrap();
    let status = Command::new("genimage")
        .arg("--config")
        .arg(ext().join("board/bseries/genimage.cfg"))
        .arg("--inputpath")
        .arg(work.join("in"))
        .arg("--outputpath")
        .arg(work.join("out"))
        .arg("--rootpath")
        .arg(work.join("root"))
        .arg("--tmppath")
        .arg(work.join("tmp/genimage"))
        .output()
        .expect("run genimage (Debian package genimage, see HOST_PACKAGES)");
    assert!(status.status.success(), "{status:?}");
    let img = std::fs::read(work.join("out/appliance.img")).unwrap();
    let data = appliance_image::disk::DEFAULT_DATA_SIZE;
    let size = gpt::ALIGN + gpt::ESP_SIZE + 2 * gpt::FIRMWARE_SLOT_SIZE + data + gpt::ALIGN;
    assert_eq!(img.len() as u64, size, "the image size of make disk-image");
    let (table, header) = gpt::read_primary(&img[..(HEAD_SECTORS * SECTOR) as usize]).unwrap();
    assert_eq!(header.backup_lba, size / SECTOR - 1);
    let ours = gpt::appliance_layout(size / SECTOR, [Guid([0; 16]); 5]).unwrap();
    let shape = |t: &gpt::Table| -> Vec<(String, Guid, u64, u64)> {
        t.partitions
            .iter()
            .map(|p| (p.name.clone(), p.type_guid, p.first_lba, p.last_lba))
            .collect()
    };
    assert_eq!(shape(&table), shape(&ours));
    let (_, data_part) = table.find(gpt::DATA_NAME, gpt::DATA_TYPE).unwrap();
    assert_eq!((data_part.last_lba + 1) * SECTOR, size - MIB);
    // The kernel is on the ESP at the removable-media path.
    let (_, esp) = table.find(gpt::ESP_NAME, gpt::ESP_TYPE).unwrap();
    let start = (esp.first_lba * SECTOR) as usize;
    let esp_file = work.join("esp.vfat");
    std::fs::write(&esp_file, &img[start..start + esp.size() as usize]).unwrap();
    let out = Command::new("mdir")
        .arg("-i")
        .arg(&esp_file)
        .arg("::EFI/BOOT")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("BOOTX64  EFI"),
        "{out:?}"
    );
    std::fs::remove_dir_all(&work).unwrap();
}

#[test]
fn every_path_named_by_the_tree_exists() {
    let root = ext();
    let desc = std::fs::read_to_string(root.join("external.desc")).unwrap();
    assert!(desc.lines().any(|l| l == "name: BSERIES"), "{desc}");
    let mut named = Vec::new();
    for text in [
        defconfig(),
        std::fs::read_to_string(root.join("Config.in")).unwrap(),
    ] {
        for word in text.split(['"', ' ']) {
            for prefix in [
                "$(BR2_EXTERNAL_BSERIES_PATH)/",
                "$BR2_EXTERNAL_BSERIES_PATH/",
            ] {
                if let Some(rel) = word.strip_prefix(prefix) {
                    named.push(rel.to_string());
                }
            }
        }
    }
    assert!(named.len() >= 8, "{named:?}");
    for rel in named {
        assert!(root.join(&rel).exists(), "{rel} is named but missing");
    }
    for pkg in ["appliance-init", "appliance-agent"] {
        let mk = std::fs::read_to_string(root.join(format!("package/{pkg}/{pkg}.mk"))).unwrap();
        assert!(
            mk.contains("$(eval $(cargo-package))"),
            "{pkg}: cargo package"
        );
    }
    for script in [
        "board/bseries/post-build.sh",
        "board/bseries/post-image.sh",
        "scripts/vendor-crates",
        "scripts/check-defconfig",
    ] {
        let path = root.join(script);
        let mode = std::os::unix::fs::PermissionsExt::mode(&path.metadata().unwrap().permissions());
        assert!(mode & 0o111 != 0, "{script} is not executable");
        let ok = Command::new("bash").arg("-n").arg(&path).status().unwrap();
        assert!(ok.success(), "{script}: syntax");
    }
}

#[test]
fn the_defconfig_builds_our_kernel_without_busybox_or_a_shell() {
    let d = defconfig();
    for line in [
        "BR2_INIT_NONE=y",
        "BR2_SYSTEM_BIN_SH_NONE=y",
        "# BR2_PACKAGE_BUSYBOX is not set",
        "BR2_PACKAGE_APPLIANCE_INIT=y",
        "BR2_PACKAGE_APPLIANCE_AGENT=y",
        "BR2_TARGET_ROOTFS_INITRAMFS=y",
    ] {
        assert!(d.lines().any(|l| l == line), "missing {line}");
    }
    let fragments = d
        .lines()
        .find_map(|l| l.strip_prefix("BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES="))
        .unwrap();
    assert!(
        fragments.contains("$(BR2_EXTERNAL_BSERIES_PATH)/../kernel-config/appliance.config"),
        "{fragments}"
    );
}
