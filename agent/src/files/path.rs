//! The names of files in the site's file store: checked once, at the boundary.
//!
//! A [`SitePath`] is relative, UTF-8, at most [`MAX_PATH`] bytes, made of segments of 1 to
//! [`MAX_SEGMENT`] bytes separated by single `/`, none of them `.` or `..`, and without
//! NUL. It names nothing outside the store by itself; symbolic links inside the store are
//! refused where the path is resolved (`openat2` with `RESOLVE_NO_SYMLINKS`).

use std::fmt;

/// The longest path, in bytes.
pub const MAX_PATH: usize = 4096;
/// The longest segment (a file or directory name), in bytes: Linux's `NAME_MAX`.
pub const MAX_SEGMENT: usize = 255;

/// Why a path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("the path has {0} bytes; at most {MAX_PATH} are allowed")]
    TooLong(usize),
    #[error("the path must be relative to the file store: it must not start with '/'")]
    Absolute,
    #[error("the path has an empty segment ('//' or a '/' at the end)")]
    EmptySegment,
    #[error("the path has a '.' or '..' segment")]
    DotSegment,
    #[error("the path has a NUL character")]
    Nul,
    #[error("a segment of the path has {0} bytes; at most {MAX_SEGMENT} are allowed")]
    SegmentTooLong(usize),
    #[error("the path is not valid UTF-8")]
    NotUtf8,
    #[error("the path goes through a symbolic link, which the file store does not follow")]
    Symlink,
}

/// A checked path of the file store, such as `reports/2026/q4.pdf`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SitePath(String);

impl SitePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, outermost first (never empty).
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> + Clone {
        self.0.split('/')
    }

    /// The directories above the file, outermost first, and the file's own name.
    pub fn split_parent(&self) -> (Vec<&str>, &str) {
        match self.0.rsplit_once('/') {
            Some((dir, leaf)) => (dir.split('/').collect(), leaf),
            None => (Vec::new(), &self.0),
        }
    }
}

impl fmt::Display for SitePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SitePath {
    type Error = PathError;

    fn try_from(path: String) -> Result<SitePath, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        check_common(&path)?;
        for segment in path.split('/') {
            check_segment(segment)?;
        }
        Ok(SitePath(path))
    }
}

impl std::str::FromStr for SitePath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<SitePath, PathError> {
        SitePath::try_from(s.to_string())
    }
}

impl TryFrom<&[u8]> for SitePath {
    type Error = PathError;

    fn try_from(bytes: &[u8]) -> Result<SitePath, PathError> {
        let text = std::str::from_utf8(bytes).map_err(|_| PathError::NotUtf8)?;
        SitePath::try_from(text.to_string())
    }
}

/// The rules a path and a listing prefix share.
fn check_common(path: &str) -> Result<(), PathError> {
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong(path.len()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    Ok(())
}

fn check_segment(segment: &str) -> Result<(), PathError> {
    match segment {
        "" => Err(PathError::EmptySegment),
        "." | ".." => Err(PathError::DotSegment),
        s if s.len() > MAX_SEGMENT => Err(PathError::SegmentTooLong(s.len())),
        _ => Ok(()),
    }
}

/// A listing's prefix: the directories it names whole (`reports/2026/`) and the start of
/// a name within the last of them (`q`), as in `reports/2026/q`. Empty lists everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefix {
    dirs: Vec<String>,
    partial: String,
}

impl Prefix {
    /// The directories named whole, outermost first.
    pub fn dirs(&self) -> &[String] {
        &self.dirs
    }

    /// Whether a file's path starts with this prefix.
    pub fn matches(&self, path: &str) -> bool {
        path.starts_with(&self.to_string())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.dirs {
            write!(f, "{d}/")?;
        }
        f.write_str(&self.partial)
    }
}

impl TryFrom<&str> for Prefix {
    type Error = PathError;

    /// Whole segments follow a path's rules; the partial name at the end may be anything
    /// a segment may start with (so `..` is refused there too).
    fn try_from(prefix: &str) -> Result<Prefix, PathError> {
        check_common(prefix)?;
        let (dirs, partial) = match prefix.rsplit_once('/') {
            Some((dirs, partial)) => (dirs.split('/').collect::<Vec<_>>(), partial),
            None => (Vec::new(), prefix),
        };
        for d in &dirs {
            check_segment(d)?;
        }
        if matches!(partial, "." | "..") {
            return Err(PathError::DotSegment);
        }
        if partial.len() > MAX_SEGMENT {
            return Err(PathError::SegmentTooLong(partial.len()));
        }
        Ok(Prefix {
            dirs: dirs.into_iter().map(str::to_string).collect(),
            partial: partial.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &str) -> PathError {
        SitePath::try_from(path.to_string()).unwrap_err()
    }

    #[test]
    fn ordinary_paths_are_taken_as_they_are() {
        for p in [
            "a",
            "reports/2026/q4.pdf",
            "a b/ü.txt",
            "..hidden",
            ".config/x",
            "a..b",
        ] {
            assert_eq!(SitePath::try_from(p.to_string()).unwrap().as_str(), p);
        }
        let p: SitePath = "a/b/c.txt".parse().unwrap();
        assert_eq!(p.split_parent(), (vec!["a", "b"], "c.txt"));
        let p: SitePath = "c.txt".parse().unwrap();
        assert_eq!(p.split_parent(), (Vec::<&str>::new(), "c.txt"));
        assert_eq!(p.segments().count(), 1);
    }

    #[test]
    fn every_unsafe_path_is_refused_with_its_reason() {
        assert_eq!(refused(""), PathError::Empty);
        assert_eq!(refused("/etc/passwd"), PathError::Absolute);
        assert_eq!(refused("/"), PathError::Absolute);
        assert_eq!(refused(".."), PathError::DotSegment);
        assert_eq!(refused("../x"), PathError::DotSegment);
        assert_eq!(refused("a/../../x"), PathError::DotSegment);
        assert_eq!(refused("a/.."), PathError::DotSegment);
        assert_eq!(refused("./a"), PathError::DotSegment);
        assert_eq!(refused("a/./b"), PathError::DotSegment);
        assert_eq!(refused("a//b"), PathError::EmptySegment);
        assert_eq!(refused("a/"), PathError::EmptySegment);
        assert_eq!(refused("a\0b"), PathError::Nul);
        assert_eq!(refused(&"x".repeat(256)), PathError::SegmentTooLong(256));
        assert!(SitePath::try_from("x".repeat(255)).is_ok());
        let long = vec!["y".repeat(200); 21].join("/");
        assert_eq!(refused(&long), PathError::TooLong(long.len()));
        let longest = vec!["y".repeat(255); 16].join("/");
        assert_eq!(longest.len(), 4095);
        assert!(SitePath::try_from(longest).is_ok());
        assert_eq!(
            SitePath::try_from(&b"a/\xff"[..]).unwrap_err(),
            PathError::NotUtf8
        );
    }

    #[test]
    fn a_prefix_names_whole_directories_and_the_start_of_a_name() {
        let p = Prefix::try_from("reports/2026/q").unwrap();
        assert_eq!(p.dirs(), ["reports", "2026"]);
        assert!(p.matches("reports/2026/q4.pdf"));
        assert!(!p.matches("reports/2026/a.pdf"));
        assert!(!p.matches("reports/20266/q.pdf"));
        let all = Prefix::try_from("").unwrap();
        assert!(all.dirs().is_empty() && all.matches("anything/at/all"));
        let dir = Prefix::try_from("reports/").unwrap();
        assert_eq!(dir.dirs(), ["reports"]);
        assert!(dir.matches("reports/x") && !dir.matches("reportsx"));
        assert_eq!(dir.to_string(), "reports/");
        for (bad, why) in [
            ("/", PathError::Absolute),
            ("../", PathError::DotSegment),
            ("..", PathError::DotSegment),
            ("a/..", PathError::DotSegment),
            ("a//", PathError::EmptySegment),
            ("a\0", PathError::Nul),
        ] {
            assert_eq!(Prefix::try_from(bad).unwrap_err(), why, "{bad:?}");
        }
    }
}
