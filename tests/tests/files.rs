//! The site's file store with a real agent: put and get byte-identical (a few MiB, nested
//! and unusual names) through `appliancectl` and the API, the listing's sizes and
//! SHA-256, delete; paths that leave the store (`..`, absolute, a symbolic link planted in
//! the store) refused with nothing written outside; an upload cut off half way, or by the
//! agent's death, never visible; a full data partition (a small tmpfs) answered 507 with
//! the previous version intact; and a failover backup refusing to change its files.

use appliance_tests::api;
use appliance_tests::failover::{self, Pair};
use appliance_tests::lab::{Agent, Lab};
use appliance_tests::vm::TestDir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const LOCAL: &str = "127.0.0.1";
const FILES: &str = "/login/api/v1/files";

fn one_agent(name: &str) -> (TestDir, Lab, Agent) {
    let dir = TestDir::new(name);
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0xf1);
    let agent = Agent::start(&lab, &host, "agent", None);
    agent.wait_api();
    (dir, lab, agent)
}

/// `len` bytes that do not compress, the same for the same seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// curl against the agent as the administrator: `args`, then the URL of `path` (sent as
/// it is, `..` and all). Returns the status and the body.
fn curl(agent: &Agent, path: &str, args: &[&str]) -> (u16, String) {
    let token = api::token(&agent.host.ns, LOCAL).expect("login");
    let auth = format!("Authorization: Bearer {token}");
    let mut all = vec!["--path-as-is", "-H", auth.as_str()];
    all.extend_from_slice(args);
    let seen = agent.https(path, &all);
    (seen.status, seen.body)
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .map(|v| v["error"]["code"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn listing(agent: &Agent, prefix: &str) -> Vec<(String, u64, String)> {
    let (ok, out) = agent.ctl(&["--json", "files", "ls", prefix]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap_or("").to_string(),
                f["size"].as_u64().unwrap_or(0),
                f["sha256"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn uploads(agent: &Agent) -> Vec<String> {
    std::fs::read_dir(agent.data.join("tmp/uploads"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn files_dir(agent: &Agent) -> PathBuf {
    agent.data.join("site/files")
}

#[test]
fn files_go_in_and_come_out_byte_identical_listed_with_their_hashes() {
    let (dir, _lab, agent) = one_agent("files_round_trip");
    let big = dir.path.join("big.bin");
    std::fs::write(&big, noise(5 * 1024 * 1024 + 3, 1)).unwrap();
    let big_sha = sha256(&big);

    let (ok, out) = agent.ctl(&["files", "put", big.to_str().unwrap(), "data/2026/big.bin"]);
    assert!(ok, "{out}");
    assert!(out.contains(&big_sha), "{out}");
    let back = dir.path.join("back.bin");
    let (ok, out) = agent.ctl(&["files", "get", "data/2026/big.bin", back.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&big).unwrap());
    // Into a directory, under its own name.
    let into = dir.path.join("into");
    std::fs::create_dir(&into).unwrap();
    let (ok, out) = agent.ctl(&["files", "get", "data/2026/big.bin", into.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert_eq!(sha256(&into.join("big.bin")), big_sha);
    let (ok, out) = agent.ctl(&["files", "put", into.to_str().unwrap(), "a/dir"]);
    assert!(!ok && out.contains("not a regular file"), "{out}");

    // Through the API, with names that need encoding, several levels deep.
    let small = dir.path.join("small.txt");
    std::fs::write(&small, b"hello, file store\n").unwrap();
    let path = format!("{FILES}/a%20b/%C3%BC/deep/er/x.txt");
    let (status, body) = curl(&agent, &path, &["-T", small.to_str().unwrap()]);
    assert_eq!(status, 201, "{body}");
    let (status, body) = curl(&agent, &path, &["-T", small.to_str().unwrap()]);
    assert_eq!(status, 200, "a replacement: {body}");
    let (status, body) = curl(&agent, &path, &[]);
    assert_eq!((status, body.as_str()), (200, "hello, file store\n"));
    assert_eq!(
        std::fs::read(files_dir(&agent).join("a b/ü/deep/er/x.txt")).unwrap(),
        b"hello, file store\n"
    );
    // To standard output, unchanged.
    let (ok, out) = agent.ctl(&["files", "get", "a b/ü/deep/er/x.txt", "-"]);
    assert!(ok && out == "hello, file store\n", "{out:?}");

    assert_eq!(
        listing(&agent, ""),
        vec![
            ("a b/ü/deep/er/x.txt".to_string(), 18, sha256(&small)),
            (
                "data/2026/big.bin".to_string(),
                5 * 1024 * 1024 + 3,
                big_sha.clone()
            ),
        ]
    );
    assert_eq!(listing(&agent, "data/").len(), 1);
    assert_eq!(listing(&agent, "dat").len(), 1);
    assert!(listing(&agent, "nothing/").is_empty());
    let (ok, out) = agent.ctl(&["files", "ls"]);
    assert!(
        ok && out.contains("data/2026/big.bin") && out.contains(&big_sha),
        "{out}"
    );

    // A directory is not a file; a missing file is 404.
    let (status, body) = curl(&agent, &format!("{FILES}/data/2026"), &[]);
    assert_eq!(
        (status, code(&body)),
        (409, "is_a_directory".into()),
        "{body}"
    );
    let (status, body) = curl(&agent, &format!("{FILES}/data/nope"), &[]);
    assert_eq!((status, code(&body)), (404, "not_found".into()), "{body}");
    let (ok, out) = agent.ctl(&["files", "get", "data/nope", "-"]);
    assert!(
        !ok && (out.contains("not_found") || out.contains("no file")),
        "{out}"
    );

    // Delete: gone, and its emptied directories with it.
    let (ok, out) = agent.ctl(&["files", "rm", "data/2026/big.bin"]);
    assert!(ok, "{out}");
    assert!(!files_dir(&agent).join("data").exists());
    let (status, _) = curl(
        &agent,
        &format!("{FILES}/a%20b/%C3%BC/deep/er/x.txt"),
        &["-X", "DELETE"],
    );
    assert_eq!(status, 204);
    assert!(listing(&agent, "").is_empty());
    let (ok, out) = agent.ctl(&["files", "rm", "data/2026/big.bin"]);
    assert!(!ok && out.contains("404"), "{out}");
    assert!(uploads(&agent).is_empty());
}

#[test]
fn paths_that_leave_the_store_are_refused_and_nothing_is_written_outside() {
    let (dir, _lab, agent) = one_agent("files_paths");
    let outside = dir.path.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"not for the API").unwrap();
    let store = files_dir(&agent);
    std::os::unix::fs::symlink(&outside, store.join("evil")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), store.join("link")).unwrap();
    let payload = dir.path.join("payload");
    std::fs::write(&payload, b"pwned").unwrap();
    let payload = payload.to_str().unwrap();

    for path in [
        "../../../outside/x",
        "..%2F..%2Fx",
        "%2e%2e/x",
        "a/../../x",
        "%2Ftmp%2Fx",
        "/tmp/x",
        "./x",
        "a//b",
        "evil/x",
        "evil/deeper/x",
        "link",
    ] {
        let url = format!("{FILES}/{path}");
        let (status, body) = curl(&agent, &url, &["-T", payload]);
        assert_eq!(
            (status, code(&body)),
            (400, "bad_path".into()),
            "PUT {path}: {body}"
        );
    }
    for path in ["evil/secret", "link", "%2e%2e/%2e%2e/outside/secret"] {
        let (status, body) = curl(&agent, &format!("{FILES}/{path}"), &[]);
        assert_eq!(
            (status, code(&body)),
            (400, "bad_path".into()),
            "GET {path}: {body}"
        );
        assert!(!body.contains("not for the API"));
    }
    let (status, body) = curl(&agent, &format!("{FILES}/link"), &["-X", "DELETE"]);
    assert_eq!((status, code(&body)), (400, "bad_path".into()), "{body}");
    let (status, body) = curl(&agent, &format!("{FILES}?prefix=..%2F"), &[]);
    assert_eq!((status, code(&body)), (400, "bad_path".into()), "{body}");
    let (status, body) = curl(&agent, &format!("{FILES}?prefix=evil%2F"), &[]);
    assert_eq!((status, code(&body)), (400, "bad_path".into()), "{body}");

    // Nothing landed outside the store, the links are not listed, nothing half-written.
    let mut names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["secret"]);
    assert_eq!(
        std::fs::read(outside.join("secret")).unwrap(),
        b"not for the API"
    );
    assert!(!dir.path.join("x").exists() && !Path::new("/tmp/x").exists());
    assert!(listing(&agent, "").is_empty());
    assert!(uploads(&agent).is_empty());
}

#[test]
fn an_upload_cut_off_or_killed_half_way_never_becomes_visible() {
    let (dir, _lab, mut agent) = one_agent("files_cut_off");
    let v1 = dir.path.join("v1");
    std::fs::write(&v1, b"the first version").unwrap();
    let (ok, out) = agent.ctl(&["files", "put", v1.to_str().unwrap(), "doc"]);
    assert!(ok, "{out}");
    let big = dir.path.join("big");
    std::fs::write(&big, noise(4 * 1024 * 1024, 2)).unwrap();

    // curl sends about 1 MiB of 4 and gives up: the connection closes mid-body.
    for path in ["doc", "new/file"] {
        let (status, _) = curl(
            &agent,
            &format!("{FILES}/{path}"),
            &[
                "-T",
                big.to_str().unwrap(),
                "-H",
                "Expect:",
                "--limit-rate",
                "512K",
                "--max-time",
                "2",
            ],
        );
        assert_eq!(status, 0, "curl was to give up before the end");
    }
    failover::until("the cut-off uploads to be dropped", 15, || {
        let left = uploads(&agent);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    let (status, body) = curl(&agent, &format!("{FILES}/doc"), &[]);
    assert_eq!((status, body.as_str()), (200, "the first version"));
    assert_eq!(
        listing(&agent, ""),
        vec![("doc".to_string(), 17, sha256(&v1))],
        "neither cut-off upload is visible"
    );

    // The agent killed while an upload is under way: the half file stays out of the
    // store and is removed when the agent starts again.
    let token = api::token(&agent.host.ns, LOCAL).expect("login");
    let mut slow = agent
        .curl()
        .args([
            "--path-as-is",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ])
        .args(["-T", big.to_str().unwrap(), "--limit-rate", "256K"])
        .arg(format!("https://{LOCAL}{FILES}/doc"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("curl");
    failover::until("the upload to be under way", 15, || {
        let left = uploads(&agent);
        if left.is_empty() {
            Err("no upload yet".into())
        } else {
            Ok(())
        }
    });
    agent.kill();
    let _ = slow.kill();
    let _ = slow.wait();
    assert_eq!(
        uploads(&agent).len(),
        1,
        "the half file of the killed upload"
    );
    agent.restart();
    agent.wait_api();
    api::login(&agent.host.ns, LOCAL).expect("log in again after the restart");
    assert!(uploads(&agent).is_empty(), "{:?}", uploads(&agent));
    assert_eq!(
        listing(&agent, ""),
        vec![("doc".to_string(), 17, sha256(&v1))]
    );
}

/// A small tmpfs as an agent's data directory, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "fsdata",
            ])
            .arg(&path)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

#[test]
fn a_full_disk_answers_507_and_keeps_the_previous_version() {
    let dir = TestDir::new("files_disk_full");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0xf2);
    let _disk = SmallDisk::mount(dir.path.join("small/data"), "16M");
    let agent = Agent::start(&lab, &host, "small", None);
    agent.wait_api();

    let v1 = dir.path.join("v1");
    std::fs::write(&v1, noise(1024 * 1024, 3)).unwrap();
    let (ok, out) = agent.ctl(&["files", "put", v1.to_str().unwrap(), "keep/me"]);
    assert!(ok, "{out}");
    let big = dir.path.join("big");
    std::fs::write(&big, noise(32 * 1024 * 1024, 4)).unwrap();

    // Announced larger than the free space: refused before a byte is read.
    let url = format!("{FILES}/keep/me");
    let (status, body) = curl(&agent, &url, &["-T", big.to_str().unwrap()]);
    assert_eq!(
        (status, code(&body)),
        (507, "insufficient_storage".into()),
        "{body}"
    );
    let (ok, out) = agent.ctl(&["files", "put", big.to_str().unwrap(), "keep/me"]);
    assert!(
        !ok && (out.contains("insufficient_storage") || out.contains("507")),
        "{out}"
    );
    // Not announced (chunked): the disk fills while writing.
    let (status, body) = curl(
        &agent,
        &url,
        &[
            "-T",
            big.to_str().unwrap(),
            "-H",
            "Transfer-Encoding: chunked",
        ],
    );
    assert_eq!(
        (status, code(&body)),
        (507, "insufficient_storage".into()),
        "{body}"
    );

    assert!(uploads(&agent).is_empty(), "{:?}", uploads(&agent));
    assert_eq!(
        listing(&agent, ""),
        vec![("keep/me".to_string(), 1024 * 1024, sha256(&v1))]
    );
    let back = dir.path.join("back");
    let (ok, out) = agent.ctl(&["files", "get", "keep/me", back.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&v1).unwrap());
    // The space came back: a file that fits goes in.
    let (ok, out) = agent.ctl(&["files", "put", v1.to_str().unwrap(), "keep/me-too"]);
    assert!(ok, "{out}");
    drop(agent);
}

#[test]
fn the_backup_of_a_pair_refuses_to_change_its_files() {
    let dir = TestDir::new("files_backup");
    let pair = Pair::start(dir.path.clone(), "");
    failover::established(&pair);
    let payload = dir.path.join("payload");
    std::fs::write(&payload, b"site data").unwrap();

    let (status, body) = curl(
        &pair.a,
        &format!("{FILES}/on/primary"),
        &["-T", payload.to_str().unwrap()],
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = curl(
        &pair.b,
        &format!("{FILES}/on/backup"),
        &["-T", payload.to_str().unwrap()],
    );
    assert_eq!(
        (status, code(&body)),
        (409, "backup_read_only".into()),
        "{body}"
    );
    let (ok, out) = pair.b.ctl(&["files", "rm", "on/primary"]);
    assert!(!ok && out.contains("backup"), "{out}");
    assert!(!files_dir(&pair.b).join("on").exists());
    // Reading is allowed.
    let (status, body) = curl(&pair.b, FILES, &[]);
    assert_eq!(status, 200, "{body}");
}

/// The agent's peak resident memory (VmHWM) in KiB.
fn peak_kib(agent: &Agent) -> u64 {
    let pid = agent.pid().expect("agent running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_large_file_streams_through_without_filling_the_agents_memory() {
    const SIZE: u64 = 256 * 1024 * 1024;
    let (dir, _lab, agent) = one_agent("files_large");
    // Sparse: nothing on the test's own disk, all of it on the wire.
    let big = dir.path.join("big");
    std::fs::File::create(&big).unwrap().set_len(SIZE).unwrap();
    let before = peak_kib(&agent);
    let start = std::time::Instant::now();
    let (ok, out) = agent.ctl(&["files", "put", big.to_str().unwrap(), "large/zeros"]);
    assert!(ok, "{out}");
    let put = start.elapsed();
    let start = std::time::Instant::now();
    let (status, _) = curl(
        &agent,
        &format!("{FILES}/large/zeros"),
        &["-o", "/dev/null"],
    );
    assert_eq!(status, 200);
    let get = start.elapsed();
    let rate = |d: std::time::Duration| SIZE as f64 / 1048576.0 / d.as_secs_f64();
    eprintln!(
        "256 MiB: put {put:.1?} ({:.0} MiB/s), get {get:.1?} ({:.0} MiB/s)",
        rate(put),
        rate(get)
    );
    assert_eq!(
        listing(&agent, "large/"),
        vec![("large/zeros".to_string(), SIZE, sha256(&big))]
    );
    let after = peak_kib(&agent);
    eprintln!("agent peak memory: {before} KiB before, {after} KiB after 256 MiB up and down");
    assert!(
        after < before + 64 * 1024,
        "the agent's peak memory grew from {before} to {after} KiB: the file went through memory"
    );
    let (ok, out) = agent.ctl(&["files", "rm", "large/zeros"]);
    assert!(ok, "{out}");
}

#[test]
fn the_site_gate_makes_the_store_read_only_or_paused() {
    let dir = TestDir::new("files_gate");
    let mut lab = Lab::new(dir.path.clone());
    let host = lab.host(0xf3);
    let agent = Agent::start_with(&lab, &host, "agent", None, true);
    agent.wait_api();
    let payload = dir.path.join("payload");
    std::fs::write(&payload, b"site data").unwrap();
    let payload = payload.to_str().unwrap();
    let (status, body) = curl(&agent, &format!("{FILES}/kept"), &["-T", payload]);
    assert_eq!(status, 201, "{body}");
    let set = |access: &str| {
        let (status, body) = curl(
            &agent,
            "/appliance/api/v1/debug/site-access",
            &["-X", "PUT", "--data-binary", access],
        );
        assert_eq!(status, 204, "{body}");
    };

    // A backup's store: read, never written.
    set("read_only");
    let (status, body) = curl(&agent, &format!("{FILES}/new"), &["-T", payload]);
    assert_eq!(
        (status, code(&body)),
        (409, "backup_read_only".into()),
        "{body}"
    );
    let (status, body) = curl(&agent, &format!("{FILES}/kept"), &["-X", "DELETE"]);
    assert_eq!(
        (status, code(&body)),
        (409, "backup_read_only".into()),
        "{body}"
    );
    let (ok, out) = agent.ctl(&["files", "put", payload, "new"]);
    assert!(!ok && out.contains("backup"), "{out}");
    let (status, body) = curl(&agent, &format!("{FILES}/kept"), &[]);
    assert_eq!((status, body.as_str()), (200, "site data"));
    assert_eq!(listing(&agent, "").len(), 1);

    // Paused for a final sync: nothing at all.
    set("paused");
    for args in [vec![], vec!["-T", payload], vec!["-X", "DELETE"]] {
        let (status, body) = curl(&agent, &format!("{FILES}/kept"), &args);
        assert_eq!(
            (status, code(&body)),
            (503, "site_paused".into()),
            "{args:?}: {body}"
        );
    }
    let (status, body) = curl(&agent, FILES, &[]);
    assert_eq!((status, code(&body)), (503, "site_paused".into()), "{body}");

    set("open");
    let (ok, out) = agent.ctl(&["files", "rm", "kept"]);
    assert!(ok, "{out}");
    assert!(!files_dir(&agent).join("new").exists());
}
