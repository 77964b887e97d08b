//! Static network configuration on a VM booted from the image: an address configured over
//! the factory address is kept across a reboot and answers the workstation; a power cut
//! right after a change leaves the old or the new configuration, never a torn one; an
//! unconfirmed change does not survive a power cut.

use appliance_agent::config::Config;
use appliance_tests::netns::Switch;
use appliance_tests::vm::{TestDir, Vm};
use appliance_tests::{api, wait};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

/// First boot under TCG formats the data disk and makes the TLS key: be generous.
const BOOT: Duration = Duration::from_secs(120);
const FACTORY: &str = "169.254.1.1";
const STATIC: &str = "192.0.2.10";

fn boot(name: &str, append: &str) -> (TestDir, Switch, Vm) {
    let dir = TestDir::new(name);
    let switch = Switch::new(1);
    // The workstation gets an address in the subnet the appliance will be given too.
    let out = Command::new("ip")
        .args([
            "-n",
            &switch.name,
            "addr",
            "add",
            "192.0.2.4/24",
            "dev",
            "br0",
        ])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut vm = Vm::new(&dir, &switch, 1, append);
    vm.start();
    api::wait_status(&switch.name, FACTORY, BOOT);
    (dir, switch, vm)
}

fn json_of(a: &appliance_agent::client::Answer) -> Value {
    serde_json::from_slice(&a.body).unwrap_or(Value::Null)
}

/// The configured IPv4 addresses of eth0, as the API reports them.
fn configured(ns: &str, host: &str) -> Vec<String> {
    let v = json_of(&api::ok(ns, host, "GET", "/network/config", None));
    v["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["name"] == "eth0")
        .flat_map(|i| i["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["address"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_static_address_survives_a_reboot_and_answers_the_workstation() {
    let (_dir, sw, mut vm) = boot("net_vm_static", "");
    let ns = sw.name.as_str();
    let a = api::ok(
        ns,
        FACTORY,
        "POST",
        "/network/interfaces/eth0/addresses",
        Some(json!({"address": "192.0.2.10/24"}).to_string().into_bytes()),
    );
    let v = json_of(&a);
    assert_eq!(v["report"]["in_sync"], true, "{v}");
    api::ok(
        ns,
        FACTORY,
        "PUT",
        "/network/hostname",
        Some(json!({"hostname": "vm-1"}).to_string().into_bytes()),
    );
    // Reachable at once on the new address, the factory address still there.
    api::wait_status(ns, STATIC, Duration::from_secs(20));

    api::ok(ns, STATIC, "POST", "/system/reboot", None);
    let after = wait::until(
        "the appliance to come back on its static address",
        BOOT,
        Duration::from_millis(500),
        || {
            let s = api::status(ns, STATIC)?;
            match &s.last_shutdown {
                Some(ls) if ls.kind == "reboot" => Ok(s),
                other => Err(format!("last shutdown still {other:?}")),
            }
        },
    );
    assert!(vm.is_running());
    assert_eq!(after.hostname, "vm-1");
    let nics = json_of(&api::ok(
        ns,
        STATIC,
        "GET",
        "/network/interfaces/eth0",
        None,
    ));
    let present: Vec<&str> = nics["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["present"] == true)
        .filter_map(|a| a["address"].as_str())
        .collect();
    assert!(present.contains(&"192.0.2.10/24"), "{nics}");
    assert!(present.contains(&"169.254.1.1/24"), "{nics}");
    let st = json_of(&api::ok(ns, STATIC, "GET", "/network/status", None));
    assert_eq!(st["report"]["in_sync"], true, "{st}");

    // The CLI from the workstation, at the static address.
    let out = sw.ctl(STATIC, &["ip", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("192.0.2.10/24") && text.contains("virtio_net"),
        "{text}"
    );
    let out = sw.ctl(STATIC, &["test", "ping", "192.0.2.4", "--count", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 sent, 1 received"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_power_cut_right_after_a_change_leaves_the_old_or_the_new_configuration() {
    let (_dir, sw, mut vm) = boot("net_vm_power_cut", "appliance.debug=1");
    let ns = sw.name.as_str();
    let file_parses = || {
        let raw = api::ok(
            ns,
            FACTORY,
            "GET",
            "/debug/data/config/appliance.toml",
            None,
        );
        let text = String::from_utf8_lossy(&raw.body).into_owned();
        Config::parse(&text, std::path::Path::new("appliance.toml"))
            .unwrap_or_else(|e| panic!("the settings file is torn: {e}\n{text}"));
    };

    // Acknowledged, then the power is cut at once: the new configuration is there.
    api::ok(
        ns,
        FACTORY,
        "POST",
        "/network/interfaces/eth0/addresses",
        Some(json!({"address": "192.0.2.21/24"}).to_string().into_bytes()),
    );
    vm.power_cut();
    vm.start();
    let s = api::wait_status(ns, FACTORY, BOOT);
    assert_eq!(s.config_error, None);
    file_parses();
    assert_eq!(configured(ns, FACTORY), vec!["192.0.2.21/24"]);

    // Cut while changes are in flight: each boot finds the old or the new file, whole.
    let mut before = configured(ns, FACTORY);
    for (round, delay_ms) in [(22u8, 30u64), (23, 120), (24, 400)] {
        let address = format!("192.0.2.{round}/24");
        let body = json!({ "address": address }).to_string().into_bytes();
        let name = sw.name.clone();
        let request = std::thread::spawn(move || {
            api::call(
                &name,
                FACTORY,
                "POST",
                "/network/interfaces/eth0/addresses",
                Some(body),
            )
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        vm.power_cut();
        let _ = request.join();
        vm.start();
        let s = api::wait_status(ns, FACTORY, BOOT);
        assert_eq!(s.config_error, None, "round {round}");
        file_parses();
        let now = configured(ns, FACTORY);
        let mut with_new = before.clone();
        with_new.push(address.clone());
        assert!(
            now == before || now == with_new,
            "round {round}: neither old {before:?} nor new {with_new:?}: {now:?}"
        );
        eprintln!(
            "power cut {delay_ms} ms into a change: {}",
            if now == before { "old" } else { "new" }
        );
        before = now;
    }

    // An unconfirmed change does not outlive the power: the old configuration boots.
    api::ok(
        ns,
        FACTORY,
        "DELETE",
        "/network/interfaces/eth0/addresses/192.0.2.21?confirm_within=600",
        None,
    );
    assert!(!configured(ns, FACTORY).contains(&"192.0.2.21/24".to_string()));
    vm.power_cut();
    vm.start();
    api::wait_status(ns, FACTORY, BOOT);
    assert_eq!(
        configured(ns, FACTORY),
        before,
        "the unconfirmed change was rolled back"
    );
    let st = json_of(&api::ok(ns, FACTORY, "GET", "/network/status", None));
    assert!(st["pending"].is_null(), "{st}");
    api::wait_status(ns, "192.0.2.21", Duration::from_secs(30));
}
