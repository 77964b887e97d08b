//! Factory reset on the booted image: `config` brings back factory defaults, `rma` leaves
//! a disk of zeros (and the record of the erase) and powers off, the report is shown again
//! at the next boot, a reset whose reboot has not begun can be cancelled, and a power cut
//! during either is finished at the next boot.

use appliance_proto::state::EraseReport;
use appliance_tests::netns::Switch;
use appliance_tests::vm::{TestDir, Vm};
use appliance_tests::{api, wait};
use serde_json::json;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(120);
const FACTORY: &str = "169.254.1.1";
const CANARY: &[u8] = b"CANARY-7f3a9c-do-not-ship";

/// Canary files in the settings, the keys, the site data and a hidden file.
const CANARY_FILES: [&str; 4] = [
    "config/canary.toml",
    "config/tls/canary.pem",
    "site/records/canary.dat",
    ".hidden-canary",
];

fn boot(name: &str, append: &str) -> (TestDir, Switch, Vm) {
    let dir = TestDir::new(name);
    let switch = Switch::new(1);
    let mut vm = Vm::new(&dir, &switch, 1, append);
    vm.start();
    api::wait_status(&switch.name, FACTORY, BOOT);
    (dir, switch, vm)
}

fn plant_canaries(sw: &Switch) {
    // A file big enough to own whole data blocks, repeated canary inside.
    let big: Vec<u8> = CANARY.iter().copied().cycle().take(48 * 1024).collect();
    for path in CANARY_FILES {
        api::ok(
            &sw.name,
            FACTORY,
            "PUT",
            &format!("/debug/data/{path}"),
            Some(big.clone()),
        );
    }
    api::ok(
        &sw.name,
        FACTORY,
        "PUT",
        "/network/factory-address",
        Some(br#"{"timing": "rfc"}"#.to_vec()),
    );
}

fn assert_factory_state(sw: &Switch, old_fingerprint: &str) {
    let s = api::status(&sw.name, FACTORY).expect("status");
    assert_eq!(
        s.last_shutdown.as_ref().map(|l| l.kind.as_str()),
        Some("factory-reset"),
        "{:?}",
        s.last_shutdown
    );
    assert!(s.data.formatted_this_boot, "a new file system");
    assert_eq!(s.factory_address.address.as_deref(), Some("169.254.1.1/24"));
    assert_eq!(
        s.factory_address.timing.as_str(),
        "fast",
        "settings are back to factory defaults"
    );
    for path in CANARY_FILES {
        let a = api::call(
            &sw.name,
            FACTORY,
            "GET",
            &format!("/debug/data/{path}"),
            None,
        )
        .expect("call");
        assert_eq!(a.status, 404, "{path} survived the reset");
    }
    let fp = api::call(&sw.name, FACTORY, "GET", "/status", None)
        .expect("call")
        .fingerprint;
    assert_ne!(
        fp, old_fingerprint,
        "a new certificate is made after the reset"
    );
}

/// Checks the erased disk holds nothing but zeros and the record; returns the record.
fn scan_disk(vm: &Vm) -> EraseReport {
    let mut disk = std::fs::read(&vm.disk).expect("read the disk image");
    assert!(
        !disk.windows(CANARY.len()).any(|w| w == CANARY),
        "canary bytes left on the disk"
    );
    let record = appliance_tests::erase::scan_erased(&mut disk);
    // No file-system signature is left, so it reads as a blank disk.
    assert_ne!(&disk[1024 + 56..1024 + 58], &[0x53, 0xEF]);
    record
}

/// What an honest report of this VM's erase says: the virtio disk has no secure discard,
/// so zeros over the whole disk, read back with O_DIRECT: NIST SP 800-88 clear.
fn assert_honest_report(r: &EraseReport) {
    assert!(r.verified, "{r:?}");
    assert_eq!(r.bytes, 256 << 20);
    assert_eq!((r.range_start, r.range_end), (0, 256 << 20), "{r:?}");
    assert_eq!(r.scope, "whole disk");
    assert_eq!(r.nist_level, "clear", "{r:?}");
    assert!(
        r.method.contains("BLKSECDISCARD: not available")
            && r.method.contains("BLKZEROOUT")
            && r.method.contains("O_DIRECT"),
        "{}",
        r.method
    );
}

/// No reset pending: 404; a delayed one is cancelled (and power requests wait for it).
fn cancel_a_delayed_reset(sw: &Switch) {
    let delete = || api::call(&sw.name, FACTORY, "DELETE", "/system/reset", None).unwrap();
    let nothing = delete();
    assert_eq!(nothing.status, 404);
    let v: serde_json::Value = serde_json::from_slice(&nothing.body).unwrap();
    assert_eq!(v["error"]["code"], "no_reset_pending");
    let body = json!({"level": "config", "delay_seconds": 600}).to_string();
    let a = api::ok(
        &sw.name,
        FACTORY,
        "POST",
        "/system/reset",
        Some(body.into_bytes()),
    );
    assert_eq!(a.status, 202);
    let reboot = api::call(&sw.name, FACTORY, "POST", "/system/reboot", None).unwrap();
    assert_eq!(reboot.status, 409, "a reboot while a reset is pending");
    let cancelled = delete();
    assert_eq!(
        cancelled.status,
        200,
        "{}",
        String::from_utf8_lossy(&cancelled.body)
    );
    assert!(String::from_utf8_lossy(&cancelled.body).contains("cancelled"));
    assert_eq!(delete().status, 404, "the marker is gone");
}

#[test]
fn a_config_reset_comes_back_on_factory_defaults_with_the_canaries_gone() {
    let (_dir, sw, vm) = boot("reset_config", "appliance.debug=1");
    plant_canaries(&sw);
    let fp = api::call(&sw.name, FACTORY, "GET", "/status", None)
        .unwrap()
        .fingerprint;
    let t0 = Instant::now();
    api::request_reset(&sw.name, FACTORY, "config");
    api::wait_factory_defaults(&sw.name, FACTORY, BOOT);
    eprintln!(
        "config reset: request to API answering on {FACTORY} again: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_factory_state(&sw, &fp);
    // The virtio disk (discard=unmap) takes BLKDISCARD: the old blocks are gone too.
    let console = vm.console();
    assert!(
        console.contains("has a new, empty file system (the old file system's")
            && console.contains("MiB discarded)"),
        "{console}"
    );
}

#[test]
fn a_power_cut_right_after_a_config_reset_request_still_resets() {
    let (_dir, sw, mut vm) = boot("reset_config_power_cut", "appliance.debug=1");
    plant_canaries(&sw);
    let fp = api::call(&sw.name, FACTORY, "GET", "/status", None)
        .unwrap()
        .fingerprint;
    api::request_reset(&sw.name, FACTORY, "config");
    vm.power_cut();
    vm.start();
    api::wait_factory_defaults(&sw.name, FACTORY, BOOT);
    assert_factory_state(&sw, &fp);
}

#[test]
fn an_rma_reset_erases_every_byte_reports_and_powers_off_and_the_report_outlives_it() {
    let (_dir, sw, mut vm) = boot("reset_rma", "appliance.debug=1 appliance.rma_hold=10");
    plant_canaries(&sw);
    cancel_a_delayed_reset(&sw);
    assert_eq!(
        api::call(
            &sw.name,
            FACTORY,
            "GET",
            "/debug/data/config/canary.toml",
            None
        )
        .unwrap()
        .status,
        200,
        "the cancelled reset wiped nothing"
    );
    api::request_reset(&sw.name, FACTORY, "rma");
    // After the erase the appliance comes up on a tmpfs to show the report.
    let s = wait::until("the erase report", BOOT, Duration::from_millis(250), || {
        let s = api::status(&sw.name, FACTORY)?;
        s.erase_report
            .clone()
            .map(|r| (s, r))
            .ok_or_else(|| "no report yet".to_string())
    });
    let (status, report) = s;
    assert_honest_report(&report);
    assert_eq!(
        status.data.mode.as_str(),
        "volatile",
        "the erased disk is not formatted again"
    );
    let rate = (report.bytes as f64 / 1048576.0)
        / ((report.erase_ms + report.verify_ms).max(1) as f64 / 1000.0);
    eprintln!(
        "rma erase: {} MiB zeroed in {} ms, read back in {} ms ({rate:.0} MiB/s overall) by {}",
        report.bytes >> 20,
        report.erase_ms,
        report.verify_ms,
        report.method
    );
    let status = vm.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "QEMU exit {status}");
    assert!(vm.console().contains("ERASE REPORT"));
    let record = scan_disk(&vm);
    assert_eq!(record, report, "the record on the disk is the report shown");

    // Powered off and on again: the report is still there to see.
    vm.start();
    let again = api::wait_status(&sw.name, FACTORY, BOOT);
    assert_eq!(again.erase_report.as_ref(), Some(&report), "{again:?}");
}

#[test]
fn a_power_cut_during_an_rma_erase_is_finished_at_the_next_boot() {
    let (_dir, sw, mut vm) = boot(
        "reset_rma_power_cut",
        "appliance.debug=1 appliance.rma_hold=3",
    );
    plant_canaries(&sw);
    api::request_reset(&sw.name, FACTORY, "rma");
    vm.wait_console("wiping /dev/vda", BOOT);
    vm.power_cut();
    assert!(
        !vm.console().contains("verification: PASSED"),
        "the cut came too late to test anything"
    );
    vm.start();
    let status = vm.wait_exit(BOOT);
    assert!(status.success());
    let console = vm.console();
    assert!(
        console.contains("factory reset (rma) requested"),
        "the second boot found the request"
    );
    assert!(console.contains("verification: PASSED"));
    assert_honest_report(&scan_disk(&vm));
}
