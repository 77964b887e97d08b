//! `bench-acd`: how long the factory address takes, link up to usable, for each timing
//! profile, and how often two agents started together end on different addresses. Real
//! agents in network namespaces on one bridge.

use appliance_tests::lab::{Agent, Lab};
use appliance_tests::vm::TestDir;
use clap::Parser;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// Single-agent starts per profile.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Simultaneous two-agent starts per profile.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return "no data".into();
    }
    format!(
        "median {:.0} ms (min {:.0}, max {:.0}, n={})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

fn flush(h: &appliance_tests::lab::Host) {
    let _ = std::process::Command::new("ip")
        .args(["-n", &h.ns, "addr", "flush", "dev", "eth0"])
        .status();
}

fn main() {
    appliance_tests::crypto();
    let args = Args::parse();
    let dir = TestDir::new("bench-acd");
    let mut lab = Lab::new(dir.path.clone());
    let (h1, h2) = (lab.host(0x71), lab.host(0x72));
    let timeout = Duration::from_secs(60);
    for profile in ["fast", "rfc"] {
        let config = format!("version = 1\n[factory_address]\ntiming = \"{profile}\"\n");
        let mut usable = Vec::new();
        for _ in 0..args.runs {
            flush(&h1);
            let a = Agent::start(&lab, &h1, "single", Some(&config));
            if let Some(ms) = a.wait_held(timeout).usable_after_ms {
                usable.push(ms);
            }
        }
        println!(
            "{profile:>4}: link up → factory address usable: {}",
            stats(usable)
        );
        let pairs = if profile == "rfc" {
            args.pairs.min(10)
        } else {
            args.pairs
        };
        let (mut distinct, mut tie_breaks, mut pair_usable) = (0, 0, Vec::new());
        for _ in 0..pairs {
            flush(&h1);
            flush(&h2);
            let a1 = Agent::start(&lab, &h1, "p1", Some(&config));
            let a2 = Agent::start(&lab, &h2, "p2", Some(&config));
            let (f1, f2) = (a1.wait_held(timeout), a2.wait_held(timeout));
            if f1.address != f2.address {
                distinct += 1;
            }
            if f1
                .conflicts
                .iter()
                .chain(&f2.conflicts)
                .any(|c| c.kind == "simultaneous-probe")
            {
                tie_breaks += 1;
            }
            pair_usable.extend(f1.usable_after_ms.into_iter().chain(f2.usable_after_ms));
        }
        println!(
            "{profile:>4}: {pairs} simultaneous two-agent starts: {distinct} ended on distinct addresses, \
             {tie_breaks} through a simultaneous-probe tie-break; usable {}",
            stats(pair_usable)
        );
    }
}
