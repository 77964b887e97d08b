//! The UEFI disk image on a VM booted like a physical box (OVMF, NVMe disk larger than the
//! image, e1000e NIC, no `-kernel`): it boots to the API on the factory address with its
//! data partition grown and formatted, a config reset works on the data partition, a
//! shutdown powers off, and an RMA erase zeroes the data partition and says so; the ESP and
//! the firmware slots are never written.

use appliance_proto::gpt::{self, MIB, SECTOR};
use appliance_tests::netns::Switch;
use appliance_tests::vm::{TestDir, Vm};
use appliance_tests::{api, wait};
use std::time::{Duration, Instant};

/// OVMF under TCG adds several seconds to a boot.
const BOOT: Duration = Duration::from_secs(180);
const POWER_OFF: Duration = Duration::from_secs(60);
const FACTORY: &str = "169.254.1.1";
const DISK: u64 = 1 << 30;

fn partition_table(path: &std::path::Path) -> (gpt::Table, gpt::Header) {
    let bytes = std::fs::read(path).expect("read the disk");
    gpt::read_primary(&bytes[..(gpt::HEAD_SECTORS * SECTOR) as usize]).expect("a valid GPT")
}

#[test]
fn a_uefi_boot_from_the_disk_image_grows_data_resets_powers_off_and_erases_for_rma() {
    let dir = TestDir::new("uefi_disk");
    let sw = Switch::new(1);
    let mut vm = Vm::new_uefi(&dir, &sw, 1);
    let started = Instant::now();
    vm.start();
    let s = api::wait_status(&sw.name, FACTORY, BOOT);
    eprintln!(
        "UEFI boot: QEMU start to API answering: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The data partition grew to the 1 GiB disk and was formatted: /data is persistent.
    let console = vm.console();
    assert!(
        console.contains("grew the data partition /dev/nvme0n1p4"),
        "{console}"
    );
    assert_eq!(
        s.data.device.as_deref(),
        Some("/dev/nvme0n1p4"),
        "{:?}",
        s.data
    );
    assert!(s.data.formatted_this_boot, "{:?}", s.data);
    assert!(
        s.basics.disks.iter().any(|d| d.size_bytes == DISK),
        "{:?}",
        s.basics.disks
    );
    assert!(
        s.basics
            .nics
            .iter()
            .any(|n| n.name == "eth0" && n.driver.as_deref() == Some("e1000e")),
        "{:?}",
        s.basics.nics
    );

    // A config reset: the admin password the harness changed is the factory default
    // again, on a new file system on the same partition.
    api::request_reset(&sw.name, FACTORY, "config");
    api::wait_factory_defaults(&sw.name, FACTORY, BOOT);
    let s = api::status(&sw.name, FACTORY).expect("status");
    assert!(s.data.formatted_this_boot);
    assert_eq!(s.data.device.as_deref(), Some("/dev/nvme0n1p4"));
    let last = s.last_shutdown.map(|l| l.kind);
    assert_eq!(last.as_deref(), Some("factory-reset"));

    // Shutdown powers the machine off.
    let out = sw.ctl(FACTORY, &["shutdown", "--reason", "uefi test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = vm.wait_exit(POWER_OFF);
    assert!(status.success(), "QEMU exit status {status}");

    // On the disk: the backup table moved to the end, and the data partition ends a MiB
    // short of it.
    let (table, header) = partition_table(&vm.disk);
    assert_eq!(header.backup_lba, DISK / SECTOR - 1);
    let (_, data) = table.find(gpt::DATA_NAME, gpt::DATA_TYPE).unwrap();
    assert_eq!((data.last_lba + 1) * SECTOR, DISK - MIB);
    let data_range = (data.first_lba * SECTOR) as usize..((data.last_lba + 1) * SECTOR) as usize;

    // An RMA erase works on the partition: the report says so, and the partition is zeros
    // but for the erase record.
    vm.start();
    api::wait_status(&sw.name, FACTORY, BOOT);
    api::request_reset(&sw.name, FACTORY, "rma");
    let report = wait::until("the erase report", BOOT, Duration::from_millis(250), || {
        api::status(&sw.name, FACTORY)?
            .erase_report
            .ok_or_else(|| "no report yet".to_string())
    });
    assert!(report.verified, "{report:?}");
    assert_eq!(report.scope, "partition", "{report:?}");
    assert_eq!(report.bytes, data_range.len() as u64, "{report:?}");
    let status = vm.wait_exit(POWER_OFF);
    assert!(status.success(), "QEMU exit status {status}");
    let mut disk = std::fs::read(&vm.disk).unwrap();
    let record = appliance_tests::erase::scan_erased(&mut disk[data_range]);
    assert_eq!(
        record, report,
        "the record on the partition is the report shown"
    );

    // Neither the reset nor the erase wrote the ESP or a firmware slot: they are byte for
    // byte the image's.
    let image = std::fs::read(appliance_tests::images().join("appliance-test.img")).unwrap();
    for p in &table.partitions[..3] {
        let range = (p.first_lba * SECTOR) as usize..((p.last_lba + 1) * SECTOR) as usize;
        assert!(
            image[range.clone()] == disk[range],
            "partition {} was written",
            p.name
        );
    }
}
