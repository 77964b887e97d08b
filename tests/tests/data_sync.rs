//! Data sync between two real agents in namespaces: the backup's site becomes a byte-for-
//! byte copy of the primary's (settings and files), a 1% change costs about that much on
//! the wire, the backup's site is read only, its local settings stay its own, and a pull
//! cut off mid-way leaves the previous copy in force and resumes without fetching again
//! what had arrived.

use appliance_tests::failover::*;
use appliance_tests::sync::*;
use appliance_tests::vm::TestDir;
use serde_json::json;
use std::time::Duration;

/// No automatic pulls (the tests ask), no automatic failover (the partition must not
/// make the backup take over).
const SETTINGS: &str = "automatic_failover = false\nfirst_sync_delay_seconds = 3600\n\
                        sync_schedule = { every_minutes = 10080 }";

#[test]
fn the_backup_mirrors_the_primary_incrementally_and_read_only() {
    let dir = TestDir::new("data_sync_mirror");
    let p = Pair::start(dir.path.clone(), SETTINGS);
    let fa = files_dir(&p.a);
    // 300 small files in 30 directories and three of 2 MiB: about 4.4 MiB + 6 MiB.
    let mut total = 0usize;
    for i in 0..300u64 {
        let len = 1024 + (i as usize * 7919) % (28 * 1024);
        total += len;
        write(&fa, &format!("d{:02}/f{i:03}", i % 30), &noise(i, len));
    }
    for i in 0..3u64 {
        total += 2 << 20;
        write(&fa, &format!("big/b{i}"), &noise(1000 + i, 2 << 20));
    }
    let (s, body) = login(
        &p.a,
        "PUT",
        "/email",
        Some(
            json!({"enabled": true, "smtp_host": "smtp.example.net", "from": "a@example.net", "to": ["noc@example.net"]}),
        ),
    );
    assert_eq!(s, 200, "{body}");
    // A local setting of the backup that differs from the primary's.
    let (s, body) = login(
        &p.b,
        "PUT",
        "/failover/settings",
        Some(json!({"test_ips": ["192.0.2.77"]})),
    );
    assert_eq!(s, 200, "{body}");
    let b_settings = login(&p.b, "GET", "/failover/settings", None).1;

    established(&p);
    let first = sync_now(&p.b);
    assert_eq!(first["result"], "success", "{first}");
    assert_same(&fa, &files_dir(&p.b));
    assert_eq!(
        std::fs::read(p.a.data.join("site/settings.toml")).unwrap(),
        std::fs::read(p.b.data.join("site/settings.toml")).unwrap(),
        "the site settings are the primary's"
    );
    let (s, body) = login(&p.b, "GET", "/email", None);
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        json_of(&body)["smtp_host"],
        "smtp.example.net",
        "the reloaded settings are in force"
    );
    let wire1 = first["bytes_on_wire"].as_u64().unwrap();
    assert!(
        wire1 as f64 >= total as f64 * 0.98 && (wire1 as f64) < total as f64 * 1.1,
        "a first sync of incompressible data carries it all, once: {wire1} bytes for {total}"
    );

    // About 1%: an insertion in the middle of a big file, two small files rewritten, a
    // new one, and a directory renamed.
    let big = fa.join("big/b1");
    let mut data = std::fs::read(&big).unwrap();
    let insert = noise(7, 48 * 1024);
    data.splice(1 << 20..1 << 20, insert.iter().copied());
    std::fs::write(&big, &data).unwrap();
    write(&fa, "d01/f001", &noise(8, 20 * 1024));
    write(&fa, "d02/f002", &noise(9, 20 * 1024));
    write(&fa, "d03/new", &noise(10, 24 * 1024));
    std::fs::rename(fa.join("d04"), fa.join("d04-renamed")).unwrap();
    let changed = (48 + 20 + 20 + 24) * 1024u64;

    let second = sync_now(&p.b);
    assert_eq!(second["result"], "success", "{second}");
    assert_same(&fa, &files_dir(&p.b));
    let wire2 = second["bytes_on_wire"].as_u64().unwrap();
    // The changes, the chunks around the insertion (up to two of 128 KiB) and the tree
    // of the changed directories; not the renamed directory, not the rest of the file.
    assert!(
        wire2 <= changed + 2 * 128 * 1024 + 32 * 1024,
        "an incremental sync of {changed} changed bytes carried {wire2} bytes"
    );
    assert!(
        wire2 >= changed,
        "{wire2} < {changed}: the changes must travel"
    );
    assert_eq!(second["files_changed"], 4, "{second}");

    // The backup's site is read only; its local settings are its own.
    let (s, body) = login(
        &p.b,
        "PUT",
        "/email",
        Some(json!({"smtp_host": "other.example.net"})),
    );
    assert_eq!((s, code(&body)), (409, "backup_read_only".into()), "{body}");
    assert_eq!(login(&p.b, "GET", "/failover/settings", None).1, b_settings);
    let (s, body) = login(&p.b, "GET", "/failover/sync", None);
    assert_eq!(s, 200, "{body}");
    assert_eq!(json_of(&body)["state"], "idle");
}

#[test]
fn a_pull_cut_off_keeps_the_old_copy_and_resumes_without_fetching_again() {
    let dir = TestDir::new("data_sync_resume");
    let p = Pair::start(dir.path.clone(), SETTINGS);
    let fa = files_dir(&p.a);
    write(&fa, "old", &noise(1, 100 * 1024));
    established(&p);
    assert_eq!(sync_now(&p.b)["result"], "success");
    let old_copy = snapshot(&files_dir(&p.b));

    // 6 MiB new at 1 MB/s: cut the link about half-way.
    let size = 6usize << 20;
    write(&fa, "large", &noise(2, size));
    let (s, body) = login(
        &p.b,
        "PUT",
        "/failover/settings",
        Some(json!({"bandwidth_limit_bytes_per_second": 1_000_000})),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = login(&p.b, "POST", "/failover/sync", None);
    assert_eq!(s, 202, "{body}");
    let arrived = until("half of it to arrive", 30, || {
        let (_, body) = login(&p.b, "GET", "/failover/sync", None);
        let v = json_of(&body);
        let done = v["bytes_done"].as_u64().unwrap_or(0);
        if done >= size as u64 / 2 {
            Ok(done)
        } else {
            Err(v.to_string())
        }
    });
    partition(&p, true);
    let failed = until("the cut-off sync to fail", 40, || {
        let h = history(&p.b);
        match h.first() {
            Some(e) if h.len() == 2 => Ok(e.clone()),
            _ => Err(format!("{h:?}")),
        }
    });
    assert_ne!(failed["result"], "success", "{failed}");
    assert_eq!(
        snapshot(&files_dir(&p.b)),
        old_copy,
        "the previous copy is in force, whole"
    );
    partition(&p, false);
    let (s, body) = login(
        &p.b,
        "PUT",
        "/failover/settings",
        Some(json!({"bandwidth_limit_bytes_per_second": null})),
    );
    assert_eq!(s, 200, "{body}");
    std::thread::sleep(Duration::from_millis(500));
    let resumed = sync_now(&p.b);
    assert_eq!(resumed["result"], "success", "{resumed}");
    assert_same(&fa, &files_dir(&p.b));
    let wire = resumed["bytes_on_wire"].as_u64().unwrap();
    assert!(
        wire <= size as u64 - arrived + 256 * 1024,
        "the resumed sync carried {wire} bytes; {arrived} of {size} had arrived before the cut"
    );
}

#[test]
fn the_bandwidth_limit_holds_in_every_one_second_window() {
    let dir = TestDir::new("data_sync_limit");
    let p = Pair::start(dir.path.clone(), SETTINGS);
    let fa = files_dir(&p.a);
    established(&p);
    for (n, limit) in [200_000u64, 1_000_000, 4_000_000].into_iter().enumerate() {
        // About four seconds of data at the limit, incompressible.
        write(
            &fa,
            &format!("at-{limit}"),
            &noise(50 + n as u64, (limit * 4) as usize),
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
        eprintln!(
            "limit {limit}: worst 1 s window {worst} bytes ({:.3} of the limit)",
            worst as f64 / limit as f64
        );
        assert!(
            worst as f64 <= limit as f64 * 1.05,
            "at {limit} bytes/s a one-second window carried {worst} bytes"
        );
        assert!(
            worst as f64 >= limit as f64 * 0.8,
            "at {limit} bytes/s the sync used the limit ({worst} bytes in the best window)"
        );
    }
    assert_same(&fa, &files_dir(&p.b));
}

#[test]
fn a_planned_swap_pulls_a_final_sync_first_and_a_primary_that_served_gives_its_files_back() {
    let dir = TestDir::new("data_sync_swap");
    let p = Pair::start(dir.path.clone(), SETTINGS);
    let (fa, fb) = (files_dir(&p.a), files_dir(&p.b));
    write(&fa, "before/first", &noise(1, 50_000));
    established(&p);
    assert_eq!(sync_now(&p.b)["result"], "success");

    // Written on the primary after the last sync: the final sync must carry it. A slow
    // limit on the backup keeps the pause long enough to see.
    write(&fa, "before/second", &noise(2, 3 << 20));
    let (s, body) = login(
        &p.b,
        "PUT",
        "/failover/settings",
        Some(json!({"bandwidth_limit_bytes_per_second": 1_000_000})),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = login(
        &p.a,
        "POST",
        "/failover/become-backup",
        Some(json!({"data_sync_first": true})),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(json_of(&body)["outcome"], "sync_started", "{body}");
    let (s, body) = login(
        &p.a,
        "PUT",
        "/email",
        Some(json!({"smtp_host": "late.example.net"})),
    );
    assert_eq!(
        (s, code(&body)),
        (503, "site_paused".into()),
        "the primary serves no site during the final sync: {body}"
    );
    let (s, body) = login(&p.a, "GET", "/failover/status", None);
    assert_eq!(s, 200, "failover's own routes keep working: {body}");
    wait_role(&p.b, "primary", Duration::from_secs(60));
    wait_role(&p.a, "backup", Duration::from_secs(10));
    assert_same(&fa, &fb);
    let (s, body) = login(
        &p.b,
        "PUT",
        "/failover/settings",
        Some(json!({"bandwidth_limit_bytes_per_second": null})),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = login(
        &p.a,
        "PUT",
        "/email",
        Some(json!({"smtp_host": "x.example.net"})),
    );
    assert_eq!(
        (s, code(&body)),
        (409, "backup_read_only".into()),
        "the new backup is read only: {body}"
    );

    // Both primary for a while: the backup `a` is made primary by force while cut off,
    // and both sides take files.
    partition(&p, true);
    let (s, body) = login(
        &p.a,
        "POST",
        "/failover/become-primary",
        Some(json!({"force": true})),
    );
    assert_eq!(s, 200, "{body}");
    until("a to be primary", 10, || {
        let st = status(&p.a);
        if st["role"] == "primary" {
            Ok(())
        } else {
            Err(st.to_string())
        }
    });
    until("a's site to open", 5, || {
        let (s, body) = login(
            &p.a,
            "PUT",
            "/email",
            Some(json!({"smtp_host": "a.example.net"})),
        );
        if s == 200 {
            Ok(())
        } else {
            Err(body)
        }
    });
    write(&fa, "only-on-a", &noise(3, 40_000));
    write(&fb, "only-on-b", &noise(4, 40_000));
    write(&fa, "before/first", &noise(5, 30_000));
    write(&fb, "before/first", &noise(6, 30_000));
    partition(&p, false);
    let (primary, backup, pf, bf) = until("one primary and one backup", 60, || {
        let (ra, rb) = (status(&p.a)["role"].clone(), status(&p.b)["role"].clone());
        match (ra.as_str(), rb.as_str()) {
            (Some("primary"), Some("backup")) => Ok((&p.a, &p.b, fa.clone(), fb.clone())),
            (Some("backup"), Some("primary")) => Ok((&p.b, &p.a, fb.clone(), fa.clone())),
            _ => Err(format!("{ra} {rb}")),
        }
    });
    let primary_version = std::fs::read(pf.join("before/first")).unwrap();
    let backup_version = std::fs::read(bf.join("before/first")).unwrap();
    let e = sync_now(backup);
    assert_eq!(e["result"], "success", "{e}");
    assert_same(&pf, &bf);
    let all = snapshot(&pf);
    assert!(
        all.contains_key("only-on-a") && all.contains_key("only-on-b"),
        "{:?}",
        all.keys()
    );
    assert_eq!(
        all["before/first"], primary_version,
        "a file changed on both keeps the primary's version"
    );
    let kept: Vec<_> = all
        .iter()
        .filter(|(k, v)| {
            k.starts_with("conflicts/") && k.ends_with("/before/first") && **v == backup_version
        })
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "the backup's version is kept under conflicts/: {:?}",
        all.keys()
    );
    let _ = primary;
}

#[test]
fn a_backup_killed_while_it_installs_keeps_a_whole_copy() {
    let dir = TestDir::new("data_sync_kill");
    let mut p = Pair::start(dir.path.clone(), SETTINGS);
    let fa = files_dir(&p.a);
    for i in 0..200u64 {
        write(&fa, &format!("gen1/d{}/f{i}", i % 10), &noise(i, 3000));
    }
    established(&p);
    assert_eq!(sync_now(&p.b)["result"], "success");
    let old = snapshot(&files_dir(&p.b));
    // Many new files: the install (hard links, new files, the swap) takes a while.
    for i in 0..1500u64 {
        write(
            &fa,
            &format!("gen2/d{}/f{i}", i % 30),
            &noise(10_000 + i, 2000),
        );
    }
    let new = snapshot(&fa);
    let (s, body) = login(&p.b, "POST", "/failover/sync", None);
    assert_eq!(s, 202, "{body}");
    until("the install to begin", 60, || {
        let (_, body) = login(&p.b, "GET", "/failover/sync", None);
        let v = json_of(&body);
        if v["phase"] == "installing" || v["state"] == "idle" {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    p.b.kill();
    let after_kill = snapshot(&files_dir(&p.b));
    assert!(
        after_kill == old || after_kill == new,
        "the site is one generation or the other, whole"
    );
    p.b.restart();
    p.b.wait_api();
    wait_role(&p.b, "backup", Duration::from_secs(20));
    let e = sync_now(&p.b);
    assert_eq!(e["result"], "success", "{e}");
    assert_same(&fa, &files_dir(&p.b));
    assert!(
        !p.b.data.join("sync/next").exists(),
        "no staging generation is left behind"
    );
}

#[test]
fn the_primary_alerts_when_no_backup_pulls() {
    use appliance_tests::smtp::Sink;
    let dir = TestDir::new("data_sync_alert");
    let p = Pair::start(
        dir.path.clone(),
        &format!("{SETTINGS}\nno_pull_alert_minutes = 1"),
    );
    let sink = Sink::start(&p.a.host.ns, "127.0.0.1".parse().unwrap());
    let (s, body) = login(
        &p.a,
        "PUT",
        "/email",
        Some(
            json!({"enabled": true, "smtp_host": "127.0.0.1", "smtp_port": sink.addr().port(), "security": "none", "from": "a@example.net", "to": ["noc@example.net"]}),
        ),
    );
    assert_eq!(s, 200, "{body}");
    established(&p);
    // The backup never pulls (its schedule is a week away); after a minute the primary
    // says so: by e-mail, in its status and in its health.
    let mails = sink.wait_for(1, Duration::from_secs(90));
    assert!(
        mails[0].subject().contains("No data sync pulled"),
        "{}",
        mails[0].subject()
    );
    let st = status(&p.a);
    assert!(
        st["problem"]
            .as_str()
            .unwrap_or("")
            .contains("no backup has pulled"),
        "{st}"
    );
    // A pull ends it.
    assert_eq!(sync_now(&p.b)["result"], "success");
    until("the problem to clear", 10, || {
        let st = status(&p.a);
        if st["problem"].is_null() {
            Ok(())
        } else {
            Err(st.to_string())
        }
    });
}
