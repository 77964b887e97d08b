//! Data sync in the lab: generated incompressible trees, a copy compared byte for byte,
//! Sync Now and its history, and a meter of the bytes a backup receives on the wire.

use crate::failover::{json_of, login, nft, until};
use crate::lab::Agent;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Deterministic incompressible bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn files_dir(agent: &Agent) -> PathBuf {
    agent.data.join("site/files")
}

/// Every file under `root`, by relative path, with its content.
pub fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let e = e.unwrap();
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

pub fn assert_same(a: &Path, b: &Path) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    let names = |s: &BTreeMap<String, Vec<u8>>| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&sa), names(&sb), "the same files");
    for (name, data) in &sa {
        assert!(sb[name] == *data, "{name} differs");
    }
}

/// Sync Now on `backup`; waits for the sync to end and returns its history entry.
pub fn sync_now(backup: &Agent) -> Value {
    let before = history(backup).len();
    let (s, body) = login(backup, "POST", "/failover/sync", None);
    assert_eq!(s, 202, "{body}");
    until("the sync to finish", 120, || {
        let h = history(backup);
        if h.len() > before {
            Ok(h[0].clone())
        } else {
            Err(format!("{h:?}"))
        }
    })
}

pub fn history(agent: &Agent) -> Vec<Value> {
    let (s, body) = login(agent, "GET", "/failover/sync/history", None);
    assert_eq!(s, 200, "{body}");
    json_of(&body)["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub fn write(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Bytes of TCP payload the backup received from the primary's port 443, as an nft counter in its
/// namespace sees them: the IP packets' bytes less 52 per packet (a 20-byte IPv4 header and
/// a 32-byte TCP header with timestamps).
pub struct Meter {
    ns: String,
}

impl Meter {
    /// Counts what `ns` receives from `from` (the primary: the tests' own API calls
    /// inside the namespace are not counted).
    pub fn start(ns: &str, from: &str) -> Meter {
        nft(
            ns,
            &format!(
                "table inet syncmeter {{\n chain input {{\n  type filter hook input priority 0;\n  \
                 ip saddr {from} tcp sport 443 counter\n }}\n}}\n"
            ),
        );
        Meter { ns: ns.to_string() }
    }

    pub fn payload(&self) -> u64 {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "nft",
                "list",
                "table",
                "inet",
                "syncmeter",
            ])
            .output()
            .expect("nft list");
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        let after = |w: &str| {
            words
                .iter()
                .position(|x| *x == w)
                .and_then(|i| words.get(i + 1))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {w} in {text}"))
        };
        after("bytes").saturating_sub(52 * after("packets"))
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "nft",
                "delete",
                "table",
                "inet",
                "syncmeter",
            ])
            .status();
    }
}

/// Sync Now on `backup` with the meter running; the most payload any one-second window
/// saw (sampled every 50 ms), once the sync has finished.
pub fn worst_window(backup: &Agent, meter: &Meter) -> (u64, Value) {
    let before = history(backup).len();
    let (s, body) = login(backup, "POST", "/failover/sync", None);
    assert_eq!(s, 202, "{body}");
    let mut samples: Vec<(std::time::Instant, u64)> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let entry = loop {
        samples.push((std::time::Instant::now(), meter.payload()));
        let h = history(backup);
        if h.len() > before {
            break h[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sync did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut worst = 0u64;
    for (i, (t0, b0)) in samples.iter().enumerate() {
        if let Some((_, b1)) = samples[i..]
            .iter()
            .take_while(|(t, _)| t.duration_since(*t0) <= std::time::Duration::from_secs(1))
            .last()
        {
            worst = worst.max(b1 - b0);
        }
    }
    (worst, entry)
}
