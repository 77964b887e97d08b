//! NTP on the booted image, where the agent owns a clock of its own (the VM's): set two
//! hours slow by the debug hook, the agent steps it right from chronyd on the workstation
//! (169.254.1.4) and, polled again, slews the small offset left. This is the one test of
//! the real `clock_settime` and `adjtimex` calls, with the capability the agent keeps.

use appliance_agent::model::ntp::{ClockAction, NtpView};
use appliance_tests::api;
use appliance_tests::chrony::Chrony;
use appliance_tests::netns::Switch;
use appliance_tests::vm::{TestDir, Vm};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BOOT: Duration = Duration::from_secs(120);
const FACTORY: &str = "169.254.1.1";
const WORKSTATION: &str = "169.254.1.4";
const SHIFT: f64 = -7200.0;

fn host_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn call(sw: &Switch, method: &str, path: &str, body: Option<Value>) -> Value {
    let a = api::call(
        &sw.name,
        FACTORY,
        method,
        path,
        body.map(|b| b.to_string().into_bytes()),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    assert_eq!(a.status, 200, "{method} {path}: {v}");
    v
}

fn vm_clock(sw: &Switch) -> f64 {
    call(sw, "GET", "/debug/clock", None)["unix_seconds"]
        .as_f64()
        .expect("unix_seconds")
}

/// Sets `servers` and waits for a poll that synchronised the clock with `action`.
fn synced_after(sw: &Switch, servers: Value, action: ClockAction) -> NtpView {
    call(
        sw,
        "PUT",
        "/network/ntp",
        Some(json!({ "servers": servers })),
    );
    appliance_tests::wait::until(
        "the VM's clock to be synchronised",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let v: NtpView = serde_json::from_value(call(sw, "GET", "/network/ntp", None))
                .map_err(|e| e.to_string())?;
            if v.status.synchronised && v.status.last_action == Some(action) {
                Ok(v)
            } else {
                Err(format!("{:?}", v.status))
            }
        },
    )
}

#[test]
fn a_vm_two_hours_slow_is_stepped_right_then_slewed() {
    let dir = TestDir::new("ntp_vm");
    let sw = Switch::new(1);
    let _chrony = Chrony::start(&dir.path, &sw.name, WORKSTATION);
    let mut vm = Vm::new(&dir, &sw, 1, "appliance.debug=1");
    vm.start();
    appliance_tests::wait::until("the API", BOOT, Duration::from_millis(500), || {
        api::status(&sw.name, FACTORY)
    });

    let shifted = call(
        &sw,
        "PUT",
        "/debug/clock",
        Some(json!({ "shift_seconds": SHIFT })),
    )["unix_seconds"]
        .as_f64()
        .expect("unix_seconds");
    let behind = host_now() - shifted;
    assert!((behind - 7200.0).abs() < 5.0, "the VM is {behind} s behind");

    let stepped = synced_after(&sw, json!([WORKSTATION]), ClockAction::Stepped);
    eprintln!("NTP after the step: {:?}", stepped.status);
    let offset = stepped.status.offset_seconds.expect("offset");
    assert!((offset - 7200.0).abs() < 5.0, "measured {offset} s");
    assert_eq!(stepped.status.stratum, Some(9));
    let lag = host_now() - vm_clock(&sw);
    assert!(
        lag.abs() < 2.0,
        "the VM's clock is {lag} s off the host's after the step"
    );

    // A new list polls at once: what is left is under 0.128 s, and slewed.
    let slewed = synced_after(&sw, json!([WORKSTATION, "192.0.2.1"]), ClockAction::Slewed);
    eprintln!("NTP after the second poll: {:?}", slewed.status);
    let offset = slewed.status.offset_seconds.expect("offset");
    assert!(offset.abs() < 0.128, "left after the step: {offset} s");
}
