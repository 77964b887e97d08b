//! The shared libraries a dynamically linked program needs, as `ldd` lists them.

use crate::ImageError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Parses `ldd` output into the absolute paths of the libraries and the loader.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            out.push(PathBuf::from(p));
        }
    }
    out
}

/// The libraries `binary` loads (empty for a static binary).
pub fn needed(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| ImageError::Ldd {
            path: binary.to_path_buf(),
            detail: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if stdout.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        return Err(ImageError::Ldd {
            path: binary.to_path_buf(),
            detail: stderr.trim().to_string(),
        });
    }
    if let Some(missing) = stdout.lines().find(|l| l.contains("not found")) {
        return Err(ImageError::Ldd {
            path: binary.to_path_buf(),
            detail: missing.trim().to_string(),
        });
    }
    Ok(parse_ldd(&stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libraries_and_loader_and_skips_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibext2fs.so.2 => /lib/x86_64-linux-gnu/libext2fs.so.2 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libext2fs.so.2"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn finds_the_libraries_of_a_host_tool() {
        let libs = needed(Path::new("/sbin/mke2fs")).unwrap();
        assert!(
            libs.iter()
                .any(|p| p.to_string_lossy().contains("libext2fs")),
            "{libs:?}"
        );
    }
}
