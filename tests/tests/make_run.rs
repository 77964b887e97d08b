//! The README's first command: `make run` boots the appliance and says where its API
//! answers. The test takes the same path as the Makefile's `run` recipe once the image is
//! built (`qemu/run`), with `--exit-when-up` (what `make run RUN_ONCE=1` passes), its own
//! namespace and its own directory for disks and consoles, so it can run beside the others.

use appliance_tests::vm::TestDir;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// run-pair gives up after 120 s of waiting for the API; this is for it to say so.
const RUN: Duration = Duration::from_secs(180);

fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Whether any process still has `needle` on its command line (a QEMU left behind).
fn process_with_argument(needle: &str) -> Option<String> {
    let procs = std::fs::read_dir("/proc").ok()?;
    procs.flatten().find_map(|p| {
        let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        cmdline.contains(needle).then_some(cmdline)
    })
}

#[test]
fn make_run_boots_prints_the_api_address_and_cleans_up() {
    appliance_tests::images();
    appliance_tests::bin("appliancectl");
    let dir = TestDir::new("make_run");
    let ns = appliance_tests::unique("aptrun");
    let stdout = dir.path.join("run.stdout.log");
    let stderr = dir.path.join("run.stderr.log");
    let mut child = Command::new(appliance_tests::top().join("qemu/run"))
        .args(["--exit-when-up", "--ns", &ns])
        .arg("--out")
        .arg(&dir.path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout log"))
        .stderr(std::fs::File::create(&stderr).expect("stderr log"))
        .spawn()
        .expect("start qemu/run");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu/run") {
            break status;
        }
        if start.elapsed() > RUN {
            // SIGTERM, so that run-pair still stops the VM and removes the namespace.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let _ = child.wait();
            panic!("qemu/run --exit-when-up did not exit within {RUN:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(&stdout).unwrap_or_default();
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    let disk = dir.path.join("nodes/node1/data.img");
    if !status.success() {
        let console = std::fs::read_to_string(dir.path.join("run/node1.log")).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "qemu/run exited with {status}\nstdout:\n{out}\nstderr:\n{err}\nconsole:\n{}",
            tail.join("\n")
        );
    }
    assert!(
        out.lines()
            .any(|l| l == "API answering at https://169.254.1.1/appliance/api/v1/status"),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        !namespace_exists(&ns),
        "namespace {ns} is still there after qemu/run exited"
    );
    assert_eq!(
        process_with_argument(&disk.to_string_lossy()),
        None,
        "QEMU is still running after qemu/run exited"
    );
    assert!(
        dir.path.join("run/node1.log").exists() && disk.exists(),
        "the console and data disk go under --out"
    );
}
