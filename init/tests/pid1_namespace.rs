//! The real binary as PID 1, against the real kernel, without a VM: in new pid, mount,
//! UTS, network and IPC namespaces, chrooted into a throwaway directory.
//!
//! Why this is safe to run on a developer's machine (as root; skipped otherwise):
//! - `reboot(2)` from a child pid namespace only kills that namespace's init (see
//!   `reboot_pid_ns` in the kernel), and `kill(-1)` only reaches the namespace;
//! - a `$$ = 1` guard stops the run if the pid namespace was not made;
//! - every mount is in the private mount namespace, host name and `lo` in their own
//!   namespaces;
//! - the chroot has no `mke2fs` or `e2fsck`, so init cannot check or format any disk it
//!   sees in sysfs (it only reads their first and last MiB) and runs volatile.
//!
//! The agent stand-in is `sleep` without arguments: it fails at once, which exercises the
//! output pipe and the restart backoff.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Copies a dynamically linked program and the libraries `ldd` lists.
fn install(root: &Path, program: &Path, dest: &str) {
    let target = root.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(program, &target).unwrap();
    let out = Command::new("ldd").arg(program).output().unwrap();
    for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if word.starts_with('/') {
            let lib = root.join(word.trim_start_matches('/'));
            std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
            std::fs::copy(word, &lib).unwrap();
        }
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn request(sock: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// The pid (in our namespace) of the namespace's init: the child of `unshare`.
fn ns_init_pid(unshare: &Child) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

#[test]
fn boots_serves_and_powers_off_as_pid_1_in_a_namespace() {
    if !nix::unistd::geteuid().is_root() || !have("unshare") || !have("chroot") || !have("ldd") {
        eprintln!("skipped: needs root, unshare, chroot and ldd");
        return;
    }
    let root = Root(std::env::temp_dir().join(format!("init-ns-test-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    std::fs::create_dir_all(&root.0).unwrap();
    install(
        &root.0,
        Path::new(env!("CARGO_BIN_EXE_appliance-init")),
        "/init",
    );
    install(&root.0, Path::new("/bin/sleep"), "/bin/appliance-agent");
    assert!(!root.0.join("sbin/mke2fs").exists());

    let log_path = root.0.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let script = format!(
        "test $$ = 1 || exit 9; exec chroot {} /init",
        root.0.display()
    );
    let mut unshare = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--net",
            "--ipc",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let mut pid = None;
    wait_until("the namespace's init", Duration::from_secs(10), || {
        pid = ns_init_pid(&unshare);
        pid.is_some()
    });
    let pid = pid.unwrap();
    let run = PathBuf::from(format!("/proc/{pid}/root/run/appliance"));
    let sock = run.join("init.sock");
    let result = std::panic::catch_unwind(|| {
        wait_until("the control socket", Duration::from_secs(20), || {
            sock.exists()
        });
        assert_eq!(request(&sock, "ping"), "ok\n");
        assert!(request(&sock, "frobnicate").starts_with("err unknown request"));
        // No data disk: a reset is refused whole (no reboot follows), and there is
        // nothing to cancel.
        let refused = request(&sock, "reset rma");
        assert!(
            refused.starts_with("err there is no data disk"),
            "{refused}"
        );
        assert_eq!(request(&sock, "reset cancel"), "ok\nnone\n");
        assert_eq!(
            request(&sock, "ping"),
            "ok\n",
            "still running, not rebooting"
        );

        let timeline = std::fs::read_to_string(run.join("timeline")).unwrap();
        for m in ["init-start", "data-ready"] {
            assert!(timeline.contains(m), "{timeline}");
        }
        let data = std::fs::read_to_string(run.join("data")).unwrap();
        assert!(data.starts_with("mode=volatile\n"), "{data}");
        let last = std::fs::read_to_string(run.join("last-shutdown")).unwrap();
        assert!(last.starts_with("kind=unknown\n"), "{last}");

        // The stand-in fails at once: its output is captured and it is restarted later
        // and later.
        wait_until("two agent restarts", Duration::from_secs(20), || {
            read_log().matches("; restarting in").count() >= 2
        });
        let log = read_log();
        assert!(log.contains("] agent: "), "{log}");
        assert!(
            log.contains("restarting in 0.1 s") && log.contains("restarting in 0.2 s"),
            "{log}"
        );

        let ring = request(&sock, "log");
        assert!(
            ring.starts_with("ok\n") && ring.contains("init: milestone init-start"),
            "{ring}"
        );

        assert_eq!(request(&sock, "poweroff namespace test"), "ok\n");
    });
    if let Err(panic) = result {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = unshare.wait();
        eprintln!("{}", read_log());
        std::panic::resume_unwind(panic);
    }

    // reboot(2) in a pid namespace kills its init with SIGINT for a power-off; unshare
    // passes that on.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = unshare.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("init did not finish its shutdown:\n{}", read_log());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = read_log();
    let _ = std::fs::remove_file(&log_path);
    assert!(
        status.signal() == Some(libc::SIGINT) || status.code() == Some(128 + libc::SIGINT),
        "{status:?}\n{log}"
    );
    for line in [
        "shutting down to poweroff: namespace test",
        "sent SIGTERM to every process",
        "unmounted /data",
        "poweroff: namespace test (shutdown took",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
    assert!(
        !log.contains("shutdown record written"),
        "volatile data gets no record:\n{log}"
    );
}
