//! Status > Basics and administration on the booted image.

use appliance_tests::api;
use appliance_tests::netns::Switch;
use appliance_tests::vm::{TestDir, Vm};
use serde_json::json;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(120);
const FACTORY: &str = "169.254.1.1";

#[test]
fn status_shows_the_smbios_identity_and_the_default_password_must_be_changed_first() {
    let dir = TestDir::new("system_basics");
    let sw = Switch::new(1);
    let mut vm = Vm::new(&dir, &sw, 1, "");
    vm.serial_number = "B300-SN-4242".into();
    vm.start();
    // Before anything else: only login and the password change are allowed.
    let probe = appliance_tests::wait::until("the API", BOOT, Duration::from_millis(250), || {
        api::call_raw(&sw.name, FACTORY, "GET", "/status", None)
    });
    assert_eq!(probe.status, 403);
    let body: serde_json::Value = serde_json::from_slice(&probe.body).unwrap();
    assert_eq!(body["error"]["code"], "password_change_required");
    let login = api::call_raw(
        &sw.name,
        FACTORY,
        "POST",
        "/login",
        Some(
            json!({"username":"admin","password":"password"})
                .to_string()
                .into_bytes(),
        ),
    )
    .unwrap();
    let token = serde_json::from_slice::<serde_json::Value>(&login.body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let a = api::raw(
        &sw.name,
        FACTORY,
        "POST",
        "/system/reboot",
        None,
        Some(token),
    )
    .unwrap();
    assert_eq!(
        a.status, 403,
        "a reboot is refused until the password is changed"
    );

    // The harness changes the password and logs in; then status answers.
    let s = api::status(&sw.name, FACTORY).expect("status");
    let id = &s.basics.identity;
    assert_eq!(id.serial_number.as_deref(), Some("B300-SN-4242"), "{id:?}");
    assert_eq!(id.manufacturer.as_deref(), Some("Appliance Project"));
    assert_eq!(id.product_name.as_deref(), Some("B Series VM"));
    assert_eq!(
        id.uuid.as_deref(),
        Some("5e1f0a11-0000-4000-8000-000000000001")
    );
    assert!(s.basics.kernel.starts_with("6.1"), "{}", s.basics.kernel);
    assert_eq!(s.basics.disks.len(), 1, "{:?}", s.basics.disks);
    assert_eq!(s.basics.disks[0].size_bytes, 256 << 20);
    assert!(
        s.basics
            .nics
            .iter()
            .any(|n| n.name == "eth0" && n.driver.as_deref() == Some("virtio_net")),
        "{:?}",
        s.basics.nics
    );
    assert!(s.basics.memory.total_bytes.unwrap_or(0) > 100 << 20);
    assert!(
        s.basics.last_config_change_unix.is_some(),
        "the password change is a settings change"
    );
    let out = sw.ctl(FACTORY, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("B300-SN-4242"), "{text}");
}
