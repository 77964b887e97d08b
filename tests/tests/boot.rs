//! The foundation scenarios: the image boots to an answering API, powers off and reboots
//! cleanly on request, keeps /data, and init restarts a crashed agent.

use appliance_tests::netns::Switch;
use appliance_tests::vm::{TestDir, Vm};
use appliance_tests::{api, wait};
use std::time::Duration;

/// First boot under TCG formats the data disk and makes the TLS key: be generous.
const BOOT: Duration = Duration::from_secs(120);
const POWER_OFF: Duration = Duration::from_secs(60);
const FACTORY: &str = "169.254.1.1";

fn boot(name: &str, append: &str) -> (TestDir, Switch, Vm) {
    let dir = TestDir::new(name);
    let switch = Switch::new(1);
    let mut vm = Vm::new(&dir, &switch, 1, append);
    vm.start();
    (dir, switch, vm)
}

fn last_shutdown(ns: &str) -> (String, String) {
    let s = api::status(ns, FACTORY).expect("status");
    let ls = s.last_shutdown.expect("a last-shutdown record");
    (ls.kind, ls.reason)
}

#[test]
fn boots_to_an_answering_api_with_a_fresh_data_disk() {
    let (_dir, sw, _vm) = boot("boots_to_an_answering_api", "");
    let s = api::wait_status(&sw.name, FACTORY, BOOT);
    let names: Vec<&str> = s.boot_timeline.iter().map(|m| m.name.as_str()).collect();
    for milestone in [
        "init-start",
        "agent-spawned",
        "agent-start",
        "api-listening",
    ] {
        assert!(
            names.contains(&milestone),
            "milestone {milestone} missing from {names:?}"
        );
    }
    assert_eq!(s.data.mode, "persistent", "{:?}", s.data);
    assert!(
        s.data.formatted_this_boot,
        "a blank disk is formatted on first boot"
    );
    assert_eq!(
        s.last_shutdown.map(|l| l.kind).as_deref(),
        Some("first-boot")
    );
    assert_eq!(s.factory_address.address.as_deref(), Some("169.254.1.1/24"));
    assert_eq!(s.factory_address.nic.as_deref(), Some("eth0"));

    // The CLI, from the workstation at 169.254.1.4: human output and --json.
    let out = sw.ctl(FACTORY, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "appliancectl status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("169.254.1.1/24 on eth0"), "{text}");
    let out = sw.ctl(FACTORY, &["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(v["data"]["mode"], "persistent");

    // Without appliance.debug=1 the test hooks do not exist.
    let a = api::call(&sw.name, FACTORY, "POST", "/debug/kill-agent", None).expect("call");
    assert_eq!(a.status, 404);
    assert!(!s.agent.debug_hooks);
}

#[test]
fn shutdown_via_the_api_powers_off_and_is_recorded() {
    let (_dir, sw, mut vm) = boot("shutdown_via_the_api", "");
    api::wait_status(&sw.name, FACTORY, BOOT);
    let out = sw.ctl(
        FACTORY,
        &["shutdown", "--reason", "end of test", "--delay", "3"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("power off in 3 s"));
    // The delay is honoured: the appliance still answers, and a second request is refused.
    assert!(vm.is_running());
    let again = api::call(&sw.name, FACTORY, "POST", "/system/reboot", None).expect("call");
    assert_eq!(
        again.status,
        409,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    let status = vm.wait_exit(POWER_OFF);
    assert!(status.success(), "QEMU exit status {status}");

    vm.start();
    api::wait_status(&sw.name, FACTORY, BOOT);
    assert_eq!(
        last_shutdown(&sw.name),
        ("poweroff".to_string(), "api: end of test".to_string())
    );
}

#[test]
fn reboot_via_the_api_comes_back_with_data_intact() {
    let (_dir, sw, mut vm) = boot("reboot_via_the_api", "appliance.debug=1");
    let before = api::wait_status(&sw.name, FACTORY, BOOT);
    api::ok(
        &sw.name,
        FACTORY,
        "PUT",
        "/debug/data/site/canary.txt",
        Some(b"kept across reboots".to_vec()),
    );
    let cert_before = api::ok(&sw.name, FACTORY, "GET", "/status", None).fingerprint;
    let a = api::ok(
        &sw.name,
        FACTORY,
        "POST",
        "/system/reboot",
        Some(br#"{"reason":"test reboot"}"#.to_vec()),
    );
    assert_eq!(a.status, 202);

    let after = wait::until(
        "the appliance to come back from the reboot",
        BOOT,
        Duration::from_millis(500),
        || {
            let s = api::status(&sw.name, FACTORY)?;
            match &s.last_shutdown {
                Some(ls) if ls.kind == "reboot" => Ok(s),
                other => Err(format!("last shutdown still {other:?}")),
            }
        },
    );
    assert!(vm.is_running(), "a reboot must not stop QEMU");
    assert!(after.uptime_seconds < before.uptime_seconds + 60.0);
    assert_eq!(
        after.last_shutdown.as_ref().map(|l| l.reason.as_str()),
        Some("api: test reboot")
    );
    assert!(
        !after.data.formatted_this_boot,
        "the data disk must not be formatted again"
    );
    let canary = api::ok(
        &sw.name,
        FACTORY,
        "GET",
        "/debug/data/site/canary.txt",
        None,
    );
    assert_eq!(&canary.body[..], b"kept across reboots");
    let cert_after = api::ok(&sw.name, FACTORY, "GET", "/status", None).fingerprint;
    assert_eq!(
        cert_before, cert_after,
        "the certificate made on first boot is kept in /data"
    );
}

#[test]
fn power_button_powers_off_cleanly() {
    let (_dir, sw, mut vm) = boot("power_button", "");
    api::wait_status(&sw.name, FACTORY, BOOT);
    vm.power_button();
    let status = vm.wait_exit(POWER_OFF);
    assert!(status.success(), "QEMU exit status {status}");
    vm.start();
    api::wait_status(&sw.name, FACTORY, BOOT);
    let (kind, reason) = last_shutdown(&sw.name);
    assert_eq!(kind, "poweroff");
    assert!(reason.contains("power button"), "{reason}");
}

#[test]
fn a_killed_agent_is_restarted_by_init() {
    let (_dir, sw, mut vm) = boot("killed_agent", "appliance.debug=1");
    let first = api::wait_status(&sw.name, FACTORY, BOOT);
    let a = api::ok(&sw.name, FACTORY, "POST", "/debug/kill-agent", None);
    assert_eq!(a.status, 202);
    let second = wait::until(
        "a new agent to answer",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || {
            let s = api::status(&sw.name, FACTORY)?;
            if s.agent.pid == first.agent.pid {
                Err(format!("still the old agent (pid {})", s.agent.pid))
            } else if s.factory_address.state != "held" {
                Err(format!(
                    "new agent, factory address {}",
                    s.factory_address.state
                ))
            } else {
                Ok(s)
            }
        },
    );
    assert!(second.agent.running_seconds < first.agent.running_seconds + 60.0);
    assert!(vm.is_running());
    // The new agent re-checks and keeps the address the old one held.
    assert_eq!(
        second.factory_address.address.as_deref(),
        Some("169.254.1.1/24")
    );
}

#[test]
fn a_file_written_to_data_survives_a_clean_shutdown() {
    let (_dir, sw, mut vm) = boot("data_survives_shutdown", "appliance.debug=1");
    api::wait_status(&sw.name, FACTORY, BOOT);
    let content = b"written before a clean shutdown";
    api::ok(
        &sw.name,
        FACTORY,
        "PUT",
        "/debug/data/site/notes/before-shutdown.txt",
        Some(content.to_vec()),
    );
    api::ok(&sw.name, FACTORY, "POST", "/system/shutdown", None);
    assert!(vm.wait_exit(POWER_OFF).success());

    // On the host, the powered-off disk holds the file: it reached the disk, not a cache.
    let out = std::process::Command::new("debugfs")
        .arg("-R")
        .arg("cat /site/notes/before-shutdown.txt")
        .arg(&vm.disk)
        .output()
        .expect("run debugfs");
    assert_eq!(
        out.stdout,
        content,
        "debugfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And the filesystem was unmounted cleanly: e2fsck finds nothing to fix.
    let fsck = std::process::Command::new("e2fsck")
        .args(["-n", "-f"])
        .arg(&vm.disk)
        .output()
        .expect("run e2fsck");
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    vm.start();
    api::wait_status(&sw.name, FACTORY, BOOT);
    let back = api::ok(
        &sw.name,
        FACTORY,
        "GET",
        "/debug/data/site/notes/before-shutdown.txt",
        None,
    );
    assert_eq!(&back.body[..], content);
}

#[test]
fn a_power_cut_is_reported_as_unclean_and_the_disk_is_checked() {
    let (_dir, sw, mut vm) = boot("power_cut_unclean", "appliance.debug=1");
    api::wait_status(&sw.name, FACTORY, BOOT);
    api::ok(
        &sw.name,
        FACTORY,
        "PUT",
        "/debug/data/site/before-cut.txt",
        Some(b"synced".to_vec()),
    );
    vm.power_cut();
    vm.start();
    let s = api::wait_status(&sw.name, FACTORY, BOOT);
    assert_eq!(
        s.last_shutdown.as_ref().map(|l| l.kind.as_str()),
        Some("unclean")
    );
    assert_ne!(
        s.data.detail, "clean (superblock)",
        "a file system that was not unmounted is checked"
    );
    let back = api::ok(
        &sw.name,
        FACTORY,
        "GET",
        "/debug/data/site/before-cut.txt",
        None,
    );
    assert_eq!(
        &back.body[..],
        b"synced",
        "an atomic write survives a power cut"
    );
}

#[test]
fn a_cut_cable_is_noticed_and_the_factory_address_is_checked_again_when_it_returns() {
    let (_dir, sw, mut vm) = boot("cable_cut", "");
    let before = api::wait_status(&sw.name, FACTORY, BOOT);
    assert_eq!(before.factory_address.state, "held");
    vm.set_link(false);
    vm.wait_console("link down", Duration::from_secs(20));
    vm.set_link(true);
    vm.wait_console(
        "link up: checking the factory address again",
        Duration::from_secs(20),
    );
    let after = wait::until(
        "the address held again",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let s = api::status(&sw.name, FACTORY)?;
            if s.factory_address.state == "held" {
                Ok(s)
            } else {
                Err(s.factory_address.state.to_string())
            }
        },
    );
    assert_eq!(
        after.factory_address.address.as_deref(),
        Some("169.254.1.1/24")
    );
    assert!(
        after.factory_address.conflicts.is_empty(),
        "no false conflict: {:?}",
        after.factory_address.conflicts
    );
    assert_eq!(after.agent.pid, before.agent.pid, "the agent rode it out");
}
