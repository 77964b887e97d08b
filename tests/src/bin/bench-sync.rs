//! `bench-sync`: data sync between two real agents in namespaces, beside rsync (daemon,
//! no encryption, Debian's package) between the same namespaces in the same run. A
//! generated site (by default 20,000 small files and 10 of 50 MB, incompressible) is
//! synced in full, then about 1% of it is changed (insertions and overwrites in large
//! files, small files rewritten, a directory renamed) and synced again. Then the bandwidth
//! limit's accuracy: the worst one-second window of TCP payload at three limits, measured
//! with an nft counter on the backup.

use appliance_tests::failover::{established, login, Pair};
use appliance_tests::sync::{assert_same, files_dir, history, noise, worst_window, write, Meter};
use appliance_tests::vm::TestDir;
use clap::Parser;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Small files (512 B to 32 KiB).
    #[arg(long, default_value_t = 20_000)]
    small: usize,
    /// Large files.
    #[arg(long, default_value_t = 10)]
    large: usize,
    /// Size of each large file, MB.
    #[arg(long, default_value_t = 50)]
    large_mb: usize,
    /// Bandwidth limits to check, bytes per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000000,5000000,20000000"
    )]
    limits: Vec<u64>,
}

const SMALL_DIRS: usize = 200;

/// Generates the site; returns its size in bytes.
fn generate(root: &Path, a: &Args) -> u64 {
    let mut total = 0u64;
    for i in 0..a.small {
        let len = 512 + (i * 7919) % (32 * 1024 - 512);
        write(
            root,
            &format!("small/d{:03}/f{i:05}", i % SMALL_DIRS),
            &noise(i as u64, len),
        );
        total += len as u64;
    }
    for i in 0..a.large {
        let len = a.large_mb * 1_000_000;
        write(
            root,
            &format!("large/l{i:02}"),
            &noise(1_000_000 + i as u64, len),
        );
        total += len as u64;
    }
    total
}

/// Changes about 1% of the site; returns the bytes changed (new content written).
fn change(root: &Path, a: &Args, total: u64) -> u64 {
    let target = total / 100;
    let mut changed = 0u64;
    // Insertions and overwrites of 1 MiB in the middle of large files.
    let mut i = 0;
    while i < a.large && changed < target / 2 {
        let path = root.join(format!("large/l{i:02}"));
        let mut data = std::fs::read(&path).expect("large file");
        let piece = noise(2_000_000 + i as u64, 1 << 20);
        let at = data.len() / 2;
        if i % 2 == 0 {
            data.splice(at..at, piece.iter().copied());
        } else {
            data[at..at + piece.len()].copy_from_slice(&piece);
        }
        std::fs::write(&path, &data).expect("write");
        changed += piece.len() as u64;
        i += 1;
    }
    // Small files rewritten, spread over the directories.
    let mut n = 0usize;
    while changed < target && n < a.small {
        let k = (n * 97) % a.small;
        let len = 512 + (k * 7919) % (32 * 1024 - 512);
        write(
            root,
            &format!("small/d{:03}/f{k:05}", k % SMALL_DIRS),
            &noise(3_000_000 + k as u64, len),
        );
        changed += len as u64;
        n += 1;
    }
    // A renamed directory costs nothing.
    std::fs::rename(root.join("small/d007"), root.join("small/d007-renamed")).expect("rename");
    changed
}

/// Sync Now on the backup; the wall-clock time and the bytes on the wire.
fn ours(p: &Pair) -> (f64, u64) {
    let before = history(&p.b).len();
    let t0 = Instant::now();
    let (s, body) = login(&p.b, "POST", "/failover/sync", None);
    assert_eq!(s, 202, "{body}");
    loop {
        let h = history(&p.b);
        if h.len() > before {
            assert_eq!(h[0]["result"], "success", "{:?}", h[0]);
            return (
                t0.elapsed().as_secs_f64(),
                h[0]["bytes_on_wire"].as_u64().unwrap_or(0),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Rsyncd(Child);

impl Drop for Rsyncd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rsyncd(p: &Pair, dir: &Path) -> Rsyncd {
    let conf = dir.join("rsyncd.conf");
    std::fs::write(
        &conf,
        format!(
            "uid = root\ngid = root\nuse chroot = no\npid file = {}\n[site]\npath = {}\nread only = yes\n",
            dir.join("rsyncd.pid").display(),
            files_dir(&p.a).display()
        ),
    )
    .expect("rsyncd.conf");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &p.a.host.ns,
            "rsync",
            "--daemon",
            "--no-detach",
            "--address=192.0.2.1",
        ])
        .arg(format!("--config={}", conf.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rsync --daemon");
    std::thread::sleep(Duration::from_millis(500));
    Rsyncd(child)
}

/// One rsync pull into `dest`; time and bytes on the wire (sent plus received).
fn rsync(p: &Pair, dest: &Path) -> (f64, u64) {
    let t0 = Instant::now();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &p.b.host.ns,
            "rsync",
            "-a",
            "--delete",
            "--stats",
            "rsync://192.0.2.1/site/",
        ])
        .arg(format!("{}/", dest.display()))
        .output()
        .expect("rsync");
    let secs = t0.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rsync: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let number = |label: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .map(|rest| {
                rest.trim()
                    .split_whitespace()
                    .next()
                    .unwrap_or("0")
                    .replace(',', "")
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (
        secs,
        number("Total bytes sent:") + number("Total bytes received:"),
    )
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn main() {
    let args = Args::parse();
    let dir = TestDir::new("bench-sync");
    let p = Pair::start(
        dir.path.clone(),
        "automatic_failover = false\nfirst_sync_delay_seconds = 3600\nsync_schedule = { every_minutes = 10080 }",
    );
    let fa = files_dir(&p.a);
    let t = Instant::now();
    let total = generate(&fa, &args);
    eprintln!(
        "generated {:.0} MB in {:.1} s",
        mb(total),
        t.elapsed().as_secs_f64()
    );
    established(&p);
    let _daemon = rsyncd(&p, &dir.path);
    let rdest = dir.path.join("rsync-copy");
    std::fs::create_dir_all(&rdest).expect("rsync dir");

    let (ours_full, ours_full_wire) = ours(&p);
    let (rs_full, rs_full_wire) = rsync(&p, &rdest);
    assert_same(&fa, &files_dir(&p.b));
    let changed = change(&fa, &args, total);
    let (ours_inc, ours_inc_wire) = ours(&p);
    let (rs_inc, rs_inc_wire) = rsync(&p, &rdest);
    assert_same(&fa, &files_dir(&p.b));
    assert_same(&fa, &rdest);

    println!(
        "site: {} small files, {} x {} MB; {:.0} MB; changed {:.2} MB ({:.2}%)",
        args.small,
        args.large,
        args.large_mb,
        mb(total),
        mb(changed),
        100.0 * changed as f64 / total as f64
    );
    println!("| run | ours | rsync |");
    println!("| --- | --- | --- |");
    println!(
        "| full: time | {ours_full:.1} s ({:.0} MB/s) | {rs_full:.1} s ({:.0} MB/s) |",
        mb(total) / ours_full,
        mb(total) / rs_full
    );
    println!(
        "| full: on the wire | {:.1} MB | {:.1} MB |",
        mb(ours_full_wire),
        mb(rs_full_wire)
    );
    println!("| 1% change: time | {ours_inc:.2} s | {rs_inc:.2} s |");
    println!(
        "| 1% change: on the wire | {:.2} MB ({:.2}x the change) | {:.2} MB ({:.2}x) |",
        mb(ours_inc_wire),
        ours_inc_wire as f64 / changed as f64,
        mb(rs_inc_wire),
        rs_inc_wire as f64 / changed as f64
    );

    println!("| limit (bytes/s) | worst 1 s window | of the limit |");
    println!("| --- | --- | --- |");
    for (n, limit) in args.limits.iter().copied().enumerate() {
        write(
            &fa,
            &format!("limit/at-{limit}"),
            &noise(4_000_000 + n as u64, (limit * 4) as usize),
        );
        let (s, body) = login(
            &p.b,
            "PUT",
            "/failover/settings",
            Some(json!({"bandwidth_limit_bytes_per_second": limit})),
        );
        assert_eq!(s, 200, "{body}");
        let meter = Meter::start(&p.b.host.ns, "192.0.2.1");
        let (worst, entry) = worst_window(&p.b, &meter);
        assert_eq!(entry["result"], "success", "{entry}");
        println!("| {limit} | {worst} | {:.3} |", worst as f64 / limit as f64);
    }
    // Where the backup's time went, from its log.
    let log = std::fs::read_to_string(dir.path.join("b.log")).unwrap_or_default();
    println!("backup's phases (ms since the pull started):");
    for line in log
        .lines()
        .filter(|l| l.contains("sync: ") && l.contains("ms="))
    {
        println!(
            "  {}",
            line.split_once("sync: ").map(|(_, r)| r).unwrap_or(line)
        );
    }
}
