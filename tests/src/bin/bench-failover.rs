//! `bench-failover`: the outage a client sees when the primary of a pair dies (cable out
//! and process killed), measured as the longest gap between answered pings to the shared
//! IP (one every 10 ms), for several primary timeouts; and keepalived (VRRPv3) measured
//! the same way in the same run, at several advertisement intervals. Real agents and real
//! keepalived processes in network namespaces on one bridge.

use appliance_tests::failover::{established, wait_role, Pair, Pinger, CLIENT, SHARED};
use appliance_tests::lab::{Host, Lab};
use appliance_tests::vm::TestDir;
use clap::Parser;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Failovers per setting.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Primary timeouts of ours, in seconds.
    #[arg(long, value_delimiter = ',', default_value = "0.2,0.5,1,3")]
    timeouts: Vec<f64>,
    /// keepalived advertisement intervals, in seconds.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.3,1")]
    adverts: Vec<f64>,
}

/// Median and max, in ms.
fn stats(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => (f64::NAN, f64::NAN),
        n => (v[n / 2], v[n - 1]),
    }
}

fn flush(h: &Host) {
    let _ = Command::new("ip")
        .args(["-n", &h.ns, "addr", "flush", "dev", "eth0"])
        .status();
}

/// Waits until the client has had an answer after `since`, then stops the pinger.
fn outage(pinger: Pinger, since: Instant) -> Option<f64> {
    let end = Instant::now() + Duration::from_secs(30);
    while !pinger.answered_since(since) {
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    Some(pinger.finish().as_secs_f64() * 1000.0)
}

fn ours(timeout: f64, runs: usize) -> Vec<f64> {
    let dir = TestDir::new(&format!("bench-failover-{timeout}"));
    let settings = format!(
        "automatic_failover = true\nprimary_timeout_seconds = {timeout}\ntest_ips = [\"{CLIENT}\"]"
    );
    let mut p = Pair::start(dir.path.clone(), &settings);
    established(&p);
    let mut out = Vec::new();
    for i in 0..runs {
        let (dead, live) = if i % 2 == 0 {
            (&mut p.a, &p.b)
        } else {
            (&mut p.b, &p.a)
        };
        let pinger = Pinger::start(&p.client);
        std::thread::sleep(Duration::from_millis(500));
        let cut = Instant::now();
        dead.host.cable(false);
        dead.kill();
        wait_role(live, "primary", Duration::from_secs(30));
        match outage(pinger, cut) {
            Some(ms) => out.push(ms),
            None => eprintln!("run {i}: the client never reached the shared IP again"),
        }
        // The dead one comes back (as after a reboot) and becomes backup.
        flush(&dead.host);
        dead.restart();
        dead.wait_api();
        dead.host.cable(true);
        wait_role(dead, "backup", Duration::from_secs(30));
        appliance_tests::failover::until("the pair to see each other", 30, || {
            let st = appliance_tests::failover::status(live);
            if st["peer"]["reachable"] == true {
                Ok(())
            } else {
                Err(st.to_string())
            }
        });
    }
    out
}

fn keepalived_conf(advert: f64, priority: u8) -> String {
    format!(
        "global_defs {{\n  vrrp_version 3\n  vrrp_garp_master_delay 1\n  vrrp_garp_master_repeat 2\n}}\n\
         vrrp_instance bench {{\n  state BACKUP\n  nopreempt\n  interface eth0\n  virtual_router_id 51\n  \
         priority {priority}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {SHARED}/24 dev eth0\n  }}\n}}\n"
    )
}

struct Keepalived {
    child: Option<Child>,
    /// Starts so far: each start has its own pid files (a killed one's may linger).
    starts: u32,
    host: Host,
    dir: std::path::PathBuf,
    conf: String,
}

impl Keepalived {
    fn start(host: &Host, dir: &std::path::Path, conf: String) -> Keepalived {
        let mut k = Keepalived {
            child: None,
            starts: 0,
            host: host.clone(),
            dir: dir.to_path_buf(),
            conf,
        };
        k.spawn();
        k
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let d = self.dir.join(&self.host.ns);
        std::fs::create_dir_all(&d).expect("dir");
        let conf = d.join("keepalived.conf");
        std::fs::write(&conf, &self.conf).expect("conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("keepalived.log"))
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.host.ns, "keepalived"])
            .args(["--dont-fork", "--log-console", "--vrrp", "--use-file"])
            .arg(&conf)
            .arg("--pid")
            .arg(d.join(format!("k{}.pid", self.starts)))
            .arg("--vrrp_pid")
            .arg(d.join(format!("v{}.pid", self.starts)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            // Its own process group: keepalived runs its VRRP work in a child process,
            // which must die with it.
            .process_group(0)
            .spawn()
            .expect("start keepalived (apt-get install keepalived)");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let group = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill();
    }
}

fn vrrp(advert: f64, runs: usize) -> Vec<f64> {
    let dir = TestDir::new(&format!("bench-failover-vrrp-{advert}"));
    let mut lab = Lab::new(dir.path.clone());
    let (ha, hb, client) = (lab.host(0xa1), lab.host(0xb2), lab.host(0xc3));
    ha.add_address("192.0.2.1/24");
    hb.add_address("192.0.2.2/24");
    client.add_address(&format!("{CLIENT}/24"));
    let mut ka = Keepalived::start(&ha, &dir.path, keepalived_conf(advert, 150));
    let mut kb = Keepalived::start(&hb, &dir.path, keepalived_conf(advert, 100));
    let holds = |h: &Host| appliance_tests::failover::holds(h);
    let mut out = Vec::new();
    for i in 0..runs {
        // One master, the same for a whole second (a restarted instance may claim the
        // address for a moment before it hears the master's adverts).
        appliance_tests::failover::until("one steady VRRP master", 60, || {
            let first = (holds(&ha), holds(&hb));
            std::thread::sleep(Duration::from_secs(1));
            let second = (holds(&ha), holds(&hb));
            if first.0 != first.1 && first == second {
                Ok(())
            } else {
                Err(format!("a holds: {}, b holds: {}", second.0, second.1))
            }
        });
        let (dead, live) = if holds(&ha) {
            (&mut ka, &hb)
        } else {
            (&mut kb, &ha)
        };
        let pinger = Pinger::start(&client);
        std::thread::sleep(Duration::from_millis(500));
        let cut = Instant::now();
        dead.host.cable(false);
        dead.kill();
        match outage(pinger, cut) {
            // The client never lost the address: the instance killed was not the one
            // answering for it (keepalived's state and the kernel's address disagreed for
            // a moment); not a failover, so not counted.
            Some(ms) if ms < 50.0 => {
                eprintln!("vrrp run {i}: no outage ({ms:.0} ms): the killed instance was not answering; not counted")
            }
            Some(ms) => out.push(ms),
            None => eprintln!("vrrp run {i}: the client never reached the address again"),
        }
        appliance_tests::failover::until("the new master", 30, || {
            if holds(live) {
                Ok(())
            } else {
                Err("not yet".into())
            }
        });
        flush(&dead.host);
        let own = if dead.host.ns == ha.ns {
            "192.0.2.1/24"
        } else {
            "192.0.2.2/24"
        };
        dead.host.add_address(own);
        dead.host.cable(true);
        dead.spawn();
        std::thread::sleep(Duration::from_millis((advert * 4000.0) as u64 + 500));
    }
    out
}

/// RFC 5798's master down interval for the backup (priority 100): 3 × advert + skew,
/// skew = (256 − priority) / 256 × advert.
fn vrrp_budget(advert: f64) -> f64 {
    3.0 * advert + (256.0 - 100.0) / 256.0 * advert
}

fn main() {
    appliance_tests::crypto();
    let args = Args::parse();
    println!(
        "client-observed outage when the primary dies (cable out, process killed); {} runs each",
        args.runs
    );
    println!();
    // Ours also at each keepalived detection budget, for the comparison at an equal budget.
    let mut timeouts = args.timeouts.clone();
    for &a in &args.adverts {
        let b = (vrrp_budget(a) * 100.0).round() / 100.0;
        if !timeouts.iter().any(|t| (t - b).abs() < 1e-9) {
            timeouts.push(b);
        }
    }
    timeouts.sort_by(|a, b| a.total_cmp(b));
    println!("| ours: primary timeout | median | max | aim: timeout + 0.3 s |");
    println!("| --- | --- | --- | --- |");
    let mut ours_rows = Vec::new();
    for &t in &timeouts {
        let mut v = ours(t, args.runs);
        let (median, max) = stats(&mut v);
        let aim = t * 1000.0 + 300.0;
        println!(
            "| {t} s | {median:.0} ms | {max:.0} ms | {} |",
            if max <= aim { "met" } else { "missed" }
        );
        ours_rows.push((t, median));
    }
    println!();
    println!("| keepalived VRRPv3: advert | detection budget (3 adverts + skew) | median | max |");
    println!("| --- | --- | --- | --- |");
    let mut vrrp_rows = Vec::new();
    for &a in &args.adverts {
        let mut v = vrrp(a, args.runs);
        let (median, max) = stats(&mut v);
        let budget = vrrp_budget(a);
        println!("| {a} s | {budget:.2} s | {median:.0} ms | {max:.0} ms |");
        vrrp_rows.push((budget, median));
    }
    println!();
    println!("| detection budget | ours (timeout) | keepalived (budget) | ours / keepalived |");
    println!("| --- | --- | --- | --- |");
    for (budget, vrrp_median) in vrrp_rows {
        let nearest = ours_rows
            .iter()
            .min_by(|x, y| (x.0 - budget).abs().total_cmp(&(y.0 - budget).abs()));
        if let Some((t, our_median)) = nearest {
            println!(
                "| ~{budget:.2} s | {our_median:.0} ms ({t} s) | {vrrp_median:.0} ms | {:.2} |",
                our_median / vrrp_median
            );
        }
    }
}
