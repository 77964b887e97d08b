//! `bench-boot`: boots the appliance image several times and prints the median of each
//! boot phase, the sizes of the firmware files and the memory of init and the agent.
//!
//! Phases (host clock for QEMU start and the API answering, the guest's monotonic clock for
//! the rest; the kernel's start on the host clock is placed by init's first console line):
//! QEMU start → kernel start → init start → API listening → API answering over the bridge.
//! The first boot (formatting the data disk, making the TLS key) is reported on its own.
//! Then the same for the UEFI disk image booted by OVMF (`run-node --disk`), where "kernel
//! start" comes after the firmware and the EFI stub.

use appliance_tests::netns::Switch;
use appliance_tests::vm::{TestDir, Vm};
use appliance_tests::{api, images, top};
use clap::Parser;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Warm boots to measure (after one first boot).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Warm boots of the UEFI disk image (after its first boot).
    #[arg(long, default_value_t = 3)]
    uefi_runs: usize,
}

struct Run {
    qemu_to_kernel: f64,
    kernel_to_init: f64,
    init_to_listening: f64,
    listening_to_answering: f64,
    listening_to_address: f64,
    total: f64,
    shutdown: f64,
    init_rss: Option<u64>,
    agent_rss: Option<u64>,
}

/// The guest timestamp of init's first console line, and when the host saw it.
fn init_line(vm: &Vm) -> Option<f64> {
    let text = vm.console();
    let end = text.find("] init:")?;
    let start = text[..end].rfind('[')?;
    text[start + 1..end].trim().parse::<f64>().ok()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn one_boot(vm: &mut Vm, sw: &Switch) -> Run {
    // A workstation that has not talked to this address before: with the previous boot's
    // ARP entry still cached, its first SYN would reach the appliance before the address is
    // claimed and wait out TCP's 1 s retransmission timer, which measures the client.
    let _ = std::process::Command::new("ip")
        .args(["-n", &sw.name, "neigh", "flush", "all"])
        .status();
    let t0 = Instant::now();
    vm.start();
    let deadline = Duration::from_secs(120);
    let mut seen_init: Option<Instant> = None;
    let mut answered: Option<Instant> = None;
    let mut status = None;
    while answered.is_none() {
        assert!(
            t0.elapsed() < deadline,
            "boot did not finish within {deadline:?}"
        );
        if seen_init.is_none() && init_line(vm).is_some() {
            seen_init = Some(Instant::now());
        }
        if vm.console().contains("api-listening") {
            // Any HTTPS answer counts (an unauthenticated call gets a JSON refusal); the
            // status, which needs a login, is read afterwards and not timed.
            if api::raw_within(
                &sw.name,
                "169.254.1.1",
                "GET",
                "/status",
                None,
                None,
                Duration::from_millis(300),
            )
            .is_ok()
            {
                answered = Some(Instant::now());
                status = Some(api::status(&sw.name, "169.254.1.1").expect("status after login"));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (Some(seen_init), Some(answered), Some(status)) = (seen_init, answered, status) else {
        panic!("incomplete boot record");
    };
    let mark = |name: &str| {
        status
            .boot_timeline
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.ms)
            .unwrap_or_else(|| panic!("no {name} milestone"))
    };
    let init_start = mark("init-start");
    let listening = mark("api-listening");
    let first_line = init_line(vm).unwrap_or(init_start / 1000.0) * 1000.0;
    // Host time of the kernel's start: when init's first line showed, less its guest time.
    let kernel_start = ms(seen_init - t0) - first_line;
    let total = ms(answered - t0);
    let t_off = Instant::now();
    api::ok(&sw.name, "169.254.1.1", "POST", "/system/shutdown", None);
    vm.wait_exit(Duration::from_secs(60));
    Run {
        qemu_to_kernel: kernel_start,
        kernel_to_init: init_start,
        init_to_listening: listening - init_start,
        listening_to_answering: total - kernel_start - listening,
        listening_to_address: mark("factory-address-up") - listening,
        total,
        shutdown: ms(t_off.elapsed()),
        init_rss: status.agent.init_rss_kib,
        agent_rss: status.agent.rss_kib,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn size(path: &std::path::Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!(
            "{:>8.2} MiB  {}",
            m.len() as f64 / 1048576.0,
            path.display()
        ),
        Err(e) => format!("{:>12}  {} ({e})", "?", path.display()),
    }
}

fn main() {
    appliance_tests::crypto();
    let args = Args::parse();
    let dir = TestDir::new("bench-boot");
    let sw = Switch::new(1);
    let mut vm = Vm::new(&dir, &sw, 1, "");
    let first = one_boot(&mut vm, &sw);
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let r = one_boot(&mut vm, &sw);
        eprintln!(
            "run {}: total {:.0} ms (qemu→kernel {:.0}, kernel→init {:.0}, init→listening {:.0}, listening→answering {:.0})",
            i + 1,
            r.total,
            r.qemu_to_kernel,
            r.kernel_to_init,
            r.init_to_listening,
            r.listening_to_answering
        );
        runs.push(r);
    }
    drop(vm);
    let uefi_dir = TestDir::new("bench-boot-uefi");
    let mut uefi = Vm::new_uefi(&uefi_dir, &sw, 1);
    let uefi_first = one_boot(&mut uefi, &sw);
    let uefi_runs: Vec<Run> = (0..args.uefi_runs)
        .map(|i| {
            let r = one_boot(&mut uefi, &sw);
            eprintln!("UEFI run {}: total {:.0} ms", i + 1, r.total);
            r
        })
        .collect();
    let col = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    println!(
        "boot phases, median of {} warm boots (TCG, 1 vCPU, 256 MiB):",
        runs.len()
    );
    println!(
        "  QEMU start → kernel start      {:>8.0} ms",
        col(|r| r.qemu_to_kernel)
    );
    println!(
        "  kernel start → init            {:>8.0} ms",
        col(|r| r.kernel_to_init)
    );
    println!(
        "  init → API listening           {:>8.0} ms",
        col(|r| r.init_to_listening)
    );
    println!(
        "  API listening → answering      {:>8.0} ms  (HTTPS from the workstation over the bridge)",
        col(|r| r.listening_to_answering)
    );
    println!(
        "    of which: factory address    {:>8.0} ms  (RFC 5227 probing, fast profile)",
        col(|r| r.listening_to_address)
    );
    println!(
        "  QEMU start → API answering     {:>8.0} ms",
        col(|r| r.total)
    );
    println!(
        "  shutdown request → QEMU exit   {:>8.0} ms",
        col(|r| r.shutdown)
    );
    println!("first boot (formats /data, makes the TLS key):");
    println!(
        "  QEMU start → API answering     {:>8.0} ms  (init → listening {:.0} ms)",
        first.total, first.init_to_listening
    );
    let ucol = |f: fn(&Run) -> f64| median(uefi_runs.iter().map(f).collect());
    println!(
        "UEFI boot of appliance-test.img (OVMF, NVMe, e1000e), median of {} warm boots:",
        uefi_runs.len()
    );
    let uefi_lines = [
        (
            "QEMU start → kernel start",
            ucol(|r| r.qemu_to_kernel),
            format!(
                "(firmware and EFI stub; direct: {:.0} ms)",
                col(|r| r.qemu_to_kernel)
            ),
        ),
        (
            "kernel start → init",
            ucol(|r| r.kernel_to_init),
            String::new(),
        ),
        (
            "QEMU start → API answering",
            ucol(|r| r.total),
            format!("(direct kernel boot: {:.0} ms)", col(|r| r.total)),
        ),
        (
            "first boot → API answering",
            uefi_first.total,
            "(grows and formats /data)".into(),
        ),
    ];
    for (label, value, note) in uefi_lines {
        println!("  {label:<30} {value:>8.0} ms  {note}");
    }
    let rss = |v: Vec<Option<u64>>| median(v.into_iter().flatten().map(|k| k as f64).collect());
    println!("memory (RSS, median):");
    println!(
        "  init                           {:>8.0} KiB",
        rss(runs.iter().map(|r| r.init_rss).collect())
    );
    println!(
        "  agent                          {:>8.0} KiB",
        rss(runs.iter().map(|r| r.agent_rss).collect())
    );
    println!("sizes:");
    let img = images();
    println!("  {}", size(&img.join("bzImage")));
    println!("  {}", size(&img.join("initramfs.cpio.gz")));
    println!("  {}", size(&img.join("appliance.efi")));
    println!(
        "  {}  (sparse; data partition 128 MiB before it grows)",
        size(&img.join("appliance.img"))
    );
    let bin = top().join("out/bin");
    println!("  {}", size(&bin.join("appliance-init")));
    println!("  {}", size(&bin.join("appliance-agent")));
}
