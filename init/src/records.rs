//! The small state files init writes: how the previous boot ended
//! ([`appliance_proto::state::LastShutdown`]), and the durable, atomic write they use.
//!
//! The shutdown record lives on `/data/.init/shutdown`: the ordered shutdown writes it just
//! before unmounting, and the next boot moves it to `/run/appliance/last-shutdown` and
//! deletes it, so a boot that finds no record knows the previous one ended uncleanly.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use appliance_proto::paths;
use appliance_proto::state::LastShutdown;

use crate::datadisk::DataDisk;

/// Replaces `path` with `contents` so that a power cut leaves the old or the new file,
/// never a torn one: write a temp file in the same directory, fsync it, rename it over,
/// fsync the directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// fsyncs a directory, so that a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What the shutdown record said, if there was one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Missing,
    Text(String),
    Unreadable(String),
}

/// How the previous boot ended, from the data disk's state and the shutdown record.
pub fn last_shutdown(persistent: bool, formatted: bool, record: &Record) -> LastShutdown {
    let plain = |kind: &str, reason: &str| LastShutdown {
        kind: kind.into(),
        reason: reason.into(),
        unix_time: None,
    };
    if !persistent {
        return plain("unknown", "no persistent data partition");
    }
    if formatted {
        return plain("first-boot", "the data partition was created this boot");
    }
    match record {
        Record::Missing => plain("unclean", "no shutdown record: power cut, crash or reset"),
        Record::Text(text) => LastShutdown::parse(text)
            .unwrap_or_else(|| plain("unclean", "the shutdown record is damaged")),
        Record::Unreadable(e) => plain("unclean", &format!("cannot read the shutdown record: {e}")),
    }
}

/// Moves the shutdown record from `/data` to `/run/appliance/last-shutdown`.
pub fn take_last_shutdown(data: &DataDisk) -> LastShutdown {
    take_last_shutdown_at(
        data,
        Path::new(paths::SHUTDOWN_RECORD),
        Path::new(paths::LAST_SHUTDOWN),
        true,
    )
}

/// Reports a factory reset done at this boot as the way the previous boot ended.
pub fn record_reset(reason: String) {
    let unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs());
    let last = LastShutdown {
        kind: "factory-reset".into(),
        reason,
        unix_time,
    };
    info!("previous boot ended: {} ({})", last.kind, last.reason);
    if let Err(e) = write_atomic(Path::new(paths::LAST_SHUTDOWN), last.encode().as_bytes()) {
        error!("cannot write {}: {e}", paths::LAST_SHUTDOWN);
    }
}

/// Deletes the shutdown record and makes the deletion durable.
fn forget_record(record_path: &Path) {
    match std::fs::remove_file(record_path) {
        Ok(()) => {
            if let Err(e) = sync_dir(record_path.parent().unwrap_or(Path::new("/"))) {
                error!("cannot sync {}: {e}", record_path.display());
            }
        }
        Err(e) => error!(
            "cannot delete {}: {e}; the next unclean shutdown will look clean",
            record_path.display()
        ),
    }
}

/// With `background`, the record is deleted on a thread of its own (see below).
pub fn take_last_shutdown_at(
    data: &DataDisk,
    record_path: &Path,
    out: &Path,
    background: bool,
) -> LastShutdown {
    let record = if data.is_persistent() {
        match std::fs::read_to_string(record_path) {
            Ok(text) => Record::Text(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Record::Missing,
            Err(e) => Record::Unreadable(e.to_string()),
        }
    } else {
        Record::Missing
    };
    let last = last_shutdown(data.is_persistent(), data.formatted(), &record);
    let when = last
        .unix_time
        .map(|t| format!(" at unix time {t}"))
        .unwrap_or_default();
    info!("previous boot ended: {}{when} ({})", last.kind, last.reason);
    if let Err(e) = write_atomic(out, last.encode().as_bytes()) {
        error!("cannot write {}: {e}", out.display());
    }
    if record != Record::Missing {
        // Gone for good, so that a crash from here on is reported as unclean at the next
        // boot. The directory sync waits for a journal commit (a disk flush); it runs on its
        // own thread so the agent starts meanwhile, leaving a window of milliseconds in which
        // a power cut would still be reported as the previous clean shutdown.
        let path = record_path.to_path_buf();
        let forget = move || forget_record(&path);
        if !background {
            forget();
        } else if let Err(e) = std::thread::Builder::new()
            .name("record".into())
            .spawn(forget.clone())
        {
            warn!("cannot start a thread ({e}); removing the shutdown record inline");
            forget();
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use appliance_proto::state::DataState;

    fn persistent(formatted: bool) -> DataDisk {
        DataDisk {
            state: DataState::Persistent {
                device: "/dev/vda".into(),
                formatted,
                check: "clean".into(),
            },
            device: Some("/dev/vda".into()),
        }
    }

    #[test]
    fn kinds() {
        let rec = Record::Text("kind=poweroff\nreason=power button\ntime=42\n".into());
        assert_eq!(last_shutdown(false, false, &rec).kind, "unknown");
        assert_eq!(last_shutdown(true, true, &rec).kind, "first-boot");
        let l = last_shutdown(true, false, &rec);
        assert_eq!(
            (l.kind.as_str(), l.reason.as_str(), l.unix_time),
            ("poweroff", "power button", Some(42))
        );
        assert_eq!(last_shutdown(true, false, &Record::Missing).kind, "unclean");
        assert_eq!(
            last_shutdown(true, false, &Record::Text("garbage".into())).kind,
            "unclean"
        );
        assert_eq!(
            last_shutdown(true, false, &Record::Unreadable("EIO".into())).kind,
            "unclean"
        );
    }

    #[test]
    fn the_record_is_moved_so_the_next_boot_is_unclean() {
        let t = TempDir::new("records");
        let rec = t.path("shutdown");
        let out = t.path("last-shutdown");
        write_atomic(&rec, b"kind=reboot\nreason=api: test\ntime=7\n").unwrap();
        let l = take_last_shutdown_at(&persistent(false), &rec, &out, false);
        assert_eq!(l.kind, "reboot");
        assert!(!rec.exists());
        assert_eq!(
            LastShutdown::parse(&std::fs::read_to_string(&out).unwrap()),
            Some(l)
        );
        let l = take_last_shutdown_at(&persistent(false), &rec, &out, false);
        assert_eq!(l.kind, "unclean");
        assert_eq!(
            LastShutdown::parse(&std::fs::read_to_string(&out).unwrap())
                .unwrap()
                .kind,
            "unclean"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let t = TempDir::new("atomic");
        let p = t.path("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&t.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"]);
    }
}
