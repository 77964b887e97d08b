//! Two fresh appliances booted together on one switch.

use appliance_tests::api;
use appliance_tests::netns::Switch;
use appliance_tests::vm::{TestDir, Vm};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(150);

#[test]
fn two_fresh_appliances_booted_together_end_on_1_and_2_and_both_answer() {
    let dir = TestDir::new("pair_factory_addresses");
    let sw = Switch::new(2);
    let mut a = Vm::new(&dir, &sw, 1, "");
    let mut b = Vm::new(&dir, &sw, 2, "");
    a.start();
    b.start();
    let s1 = api::wait_status(&sw.name, "169.254.1.1", BOOT);
    let s2 = api::wait_status(&sw.name, "169.254.1.2", BOOT);
    assert_eq!(
        s1.factory_address.address.as_deref(),
        Some("169.254.1.1/24")
    );
    assert_eq!(
        s2.factory_address.address.as_deref(),
        Some("169.254.1.2/24")
    );
    assert_ne!(
        s1.factory_address.mac, s2.factory_address.mac,
        "two different appliances answered"
    );
    // The one on .2 saw .1 taken (or lost a simultaneous probe) and says so.
    assert!(
        !s2.factory_address.conflicts.is_empty(),
        "{:?}",
        s2.factory_address
    );
    assert!(s2
        .factory_address
        .conflicts
        .iter()
        .all(|c| c.address == "169.254.1.1"));
    for host in ["169.254.1.1", "169.254.1.2"] {
        let out = sw.ctl(host, &["status"]);
        assert!(
            out.status.success(),
            "{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{host}/24 on eth0")));
    }
}
