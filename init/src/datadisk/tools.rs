//! Running e2fsprogs: `e2fsck` before mounting, `mke2fs` on a blank disk. Their output is
//! logged line by line (`init: e2fsck: ...`). Boot waits for them; on a large damaged disk a
//! check can take minutes, which is the point.

use std::process::{Command, Stdio};

use appliance_proto::paths::DATA_LABEL;

pub const E2FSCK: &str = "/sbin/e2fsck";
pub const MKE2FS: &str = "/sbin/mke2fs";

/// What an `e2fsck` exit code means for mounting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsckVerdict {
    /// Mount it; the text says what the check did.
    Usable(String),
    /// Errors left uncorrected by `-p`: run again with `-y`.
    RetryWithYes,
    /// Do not mount it.
    Unusable(String),
}

/// Maps an `e2fsck` exit code (a bit mask, see e2fsck(8)) to a verdict; `after_yes` is
/// true for the second, `-y`, run. `None` means it was killed by a signal.
pub fn fsck_verdict(code: Option<i32>, after_yes: bool) -> FsckVerdict {
    let Some(code) = code else {
        return FsckVerdict::Unusable("e2fsck was killed by a signal".into());
    };
    if code >= 8 {
        let what = if code & 128 != 0 {
            "shared library error"
        } else if code & 32 != 0 {
            "check cancelled"
        } else if code & 16 != 0 {
            "usage or syntax error"
        } else {
            "operational error"
        };
        return FsckVerdict::Unusable(format!("e2fsck failed with exit code {code} ({what})"));
    }
    if code & 4 != 0 {
        return if after_yes {
            FsckVerdict::Unusable(format!(
                "e2fsck -y left errors uncorrected (exit code {code})"
            ))
        } else {
            FsckVerdict::RetryWithYes
        };
    }
    let by = if after_yes { " by e2fsck -y" } else { "" };
    FsckVerdict::Usable(match code {
        0 if !after_yes => "clean".to_string(),
        0 => "errors corrected by e2fsck -y".to_string(),
        1 => format!("errors corrected{by}"),
        _ => format!("errors corrected{by}, e2fsck suggested a reboot"),
    })
}

/// Runs `e2fsck -p`, and `e2fsck -y` if that leaves errors; `Ok` says how it went.
pub fn check(dev: &str) -> Result<String, String> {
    let first = run(E2FSCK, &["-p", dev])?;
    match fsck_verdict(first, false) {
        FsckVerdict::Usable(how) => Ok(how),
        FsckVerdict::Unusable(why) => Err(why),
        FsckVerdict::RetryWithYes => {
            warn!("e2fsck -p left errors on {dev}; running e2fsck -y");
            match fsck_verdict(run(E2FSCK, &["-y", dev])?, true) {
                FsckVerdict::Usable(how) => Ok(how),
                FsckVerdict::Unusable(why) => Err(why),
                FsckVerdict::RetryWithYes => Err("e2fsck -y left errors uncorrected".into()),
            }
        }
    }
}

/// Makes the data file system on `dev` (which the caller has found blank), leaving the
/// device's last mebibyte free for the factory-reset marker ([`crate::reset::RESERVE`]).
pub fn format(dev: &str) -> Result<(), String> {
    let size = device_size(dev).map_err(|e| format!("cannot size {dev}: {e}"))?;
    format_bytes(dev, crate::reset::fs_bytes(size))
}

/// The size of a block device (or file) in bytes.
pub fn device_size(dev: &str) -> std::io::Result<u64> {
    use std::io::Seek;
    std::fs::File::open(dev)?.seek(std::io::SeekFrom::End(0))
}

/// Makes the data file system on the first `fs_bytes` bytes of `dev` (4 KiB blocks).
pub fn format_bytes(dev: &str, fs_bytes: u64) -> Result<(), String> {
    let blocks = (fs_bytes / 4096).to_string();
    let args = [
        "-t",
        "ext4",
        "-q",
        "-F",
        "-b",
        "4096",
        "-L",
        DATA_LABEL,
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1",
        dev,
        blocks.as_str(),
    ];
    match run(MKE2FS, &args)? {
        Some(0) => Ok(()),
        Some(code) => Err(format!("mke2fs failed with exit code {code}")),
        None => Err("mke2fs was killed by a signal".into()),
    }
}

/// Runs a tool to completion; its output is logged. `Ok(None)` means killed by a signal.
fn run(program: &str, args: &[&str]) -> Result<Option<i32>, String> {
    let name = program.rsplit('/').next().unwrap_or(program);
    info!("running {program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    let output = crate::ffi::with_empty_signal_mask(&mut cmd)
        .args(args)
        .env_clear()
        .env("PATH", crate::agent::PATH)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    for line in String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&output.stderr).lines())
    {
        if !line.trim().is_empty() {
            info!("{name}: {line}");
        }
    }
    Ok(output.status.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsck_codes() {
        assert_eq!(
            fsck_verdict(Some(0), false),
            FsckVerdict::Usable("clean".into())
        );
        assert_eq!(
            fsck_verdict(Some(1), false),
            FsckVerdict::Usable("errors corrected".into())
        );
        assert!(
            matches!(fsck_verdict(Some(2), false), FsckVerdict::Usable(s) if s.contains("reboot"))
        );
        assert!(matches!(
            fsck_verdict(Some(3), false),
            FsckVerdict::Usable(_)
        ));
        assert_eq!(fsck_verdict(Some(4), false), FsckVerdict::RetryWithYes);
        assert_eq!(fsck_verdict(Some(5), false), FsckVerdict::RetryWithYes);
        assert!(matches!(
            fsck_verdict(Some(4), true),
            FsckVerdict::Unusable(_)
        ));
        assert_eq!(
            fsck_verdict(Some(1), true),
            FsckVerdict::Usable("errors corrected by e2fsck -y".into())
        );
        for (code, word) in [
            (8, "operational"),
            (12, "operational"),
            (16, "usage"),
            (32, "cancelled"),
            (128, "library"),
        ] {
            assert!(
                matches!(fsck_verdict(Some(code), false), FsckVerdict::Unusable(s) if s.contains(word)),
                "{code}"
            );
        }
        assert!(matches!(
            fsck_verdict(None, false),
            FsckVerdict::Unusable(_)
        ));
    }

    #[test]
    fn a_missing_tool_is_an_error_not_a_panic() {
        let e = run("/nonexistent/e2fsck", &["-p", "/dev/null"]).unwrap_err();
        assert!(e.starts_with("cannot run /nonexistent/e2fsck"), "{e}");
    }
}
