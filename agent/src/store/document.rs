//! A settings file as one typed document: TOML with the schema version, a revision
//! counter, and the sections of a [`Schema`] type.
//!
//! ```toml
//! version = 2       # the schema: which sections exist and what they mean
//! revision = 7      # how many times the file was written; 0 (or absent) for none
//! [factory_address]
//! enabled = true
//! ```
//!
//! [`Document`] holds one such file and the value in force:
//! - No file: `T::default()` is in force, revision 0.
//! - A file that cannot be read, does not parse, has a schema version this firmware cannot
//!   read, or fails `T`'s validation: the problem is kept ([`Document::load_error`]) and
//!   logged, the defaults are in force, and the file is left as it is. Changes are refused
//!   ([`DocumentError::Unreadable`]) until it is fixed, replaced or removed, so a change
//!   never overwrites it with defaults plus the change. Each refused change first reads the
//!   file again: once fixed, it is in force and the change goes ahead.
//! - An older schema version is read through [`Schema::migrate`]. The file is written in
//!   the current version at the next change, never at load: reading never writes to
//!   `/data`, and a firmware put back before any change still finds the file it wrote.
//! - [`Document::update`] applies a change to a copy, validates it whole, writes it
//!   atomically (`store::write_atomic`, mode 0600) with the revision bumped, then
//!   publishes it on a `watch` channel. Changes are serialised: one at a time.
//!
//! A file with a life of its own rather than defaults (the network rollback record, which
//! is there or not) uses [`read_file`] and [`write_file`]: the same format and checks
//! without the value in force.

use super::{ReadError, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

/// Mode of every settings file: they hold keys and password hashes.
const FILE_MODE: u32 = 0o600;

/// What a document holds: its sections, as a serde type with `deny_unknown_fields`. It
/// has no field named `version` or `revision`: those belong to the document.
pub trait Schema: Clone + Serialize + DeserializeOwned {
    /// The schema version this firmware reads and writes.
    const VERSION: u32;
    /// Why a value is refused.
    type Invalid: std::error::Error + 'static;

    /// Checks a whole value: a file's content when it is read, every change before it is
    /// written.
    fn validate(&self) -> Result<(), Self::Invalid>;

    /// Reads the sections of a file written in an older schema `version` (`version` and
    /// `revision` taken out), or `None` if this firmware cannot read that version.
    fn migrate(version: u32, sections: toml::Table) -> Option<Result<Self, toml::de::Error>> {
        let _ = (version, sections);
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentError<E: std::error::Error + 'static> {
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {}", unsupported(*found, *reads))]
    Version {
        path: PathBuf,
        found: i64,
        reads: u32,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: E,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode the settings for {path}: {source}")]
    Encode {
        path: PathBuf,
        source: toml::ser::Error,
    },
    /// A change was refused because the file on disk is not in force.
    #[error("{path} does not parse: {reason}; fix or replace it, or do a config reset")]
    Unreadable { path: PathBuf, reason: String },
}

fn unsupported(found: i64, reads: u32) -> String {
    format!("schema version {found} is not supported (this firmware reads version {reads})")
}

impl<E: std::error::Error + 'static> DocumentError<E> {
    /// What is wrong with the file, without its path.
    fn reason(&self) -> String {
        match self {
            DocumentError::Parse { message, .. } => message.clone(),
            DocumentError::Version { found, reads, .. } => unsupported(*found, *reads),
            DocumentError::Read(e) => e.source.to_string(),
            DocumentError::Invalid { source, .. } => source.to_string(),
            other => other.to_string(),
        }
    }
}

/// A document's value as read from its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded<T> {
    pub value: T,
    pub revision: u64,
}

/// Parses and checks a document's text; `path` is for messages.
pub fn parse<T: Schema>(text: &str, path: &Path) -> Result<Loaded<T>, DocumentError<T::Invalid>> {
    let bad = |message: String| DocumentError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let mut sections: toml::Table =
        toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
    let version = match sections.remove("version") {
        Some(toml::Value::Integer(v)) => v,
        Some(_) => return Err(bad("`version` is not a number".into())),
        None => return Err(bad("missing field `version`".into())),
    };
    let revision = match sections.remove("revision") {
        None => 0,
        Some(toml::Value::Integer(r)) => {
            u64::try_from(r).map_err(|_| bad("`revision` is negative".into()))?
        }
        Some(_) => return Err(bad("`revision` is not a number".into())),
    };
    let unsupported = || DocumentError::Version {
        path: path.to_path_buf(),
        found: version,
        reads: T::VERSION,
    };
    let decoded = if version == i64::from(T::VERSION) {
        sections.try_into::<T>()
    } else {
        let older = u32::try_from(version).map_err(|_| unsupported())?;
        T::migrate(older, sections).ok_or_else(unsupported)?
    };
    let value = decoded.map_err(|e| bad(e.message().to_string()))?;
    value.validate().map_err(|source| DocumentError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Loaded { value, revision })
}

/// The text of a document at `revision`, in the current schema version.
pub fn encode<T: Schema>(
    value: &T,
    revision: u64,
    path: &Path,
) -> Result<String, DocumentError<T::Invalid>> {
    let sections = toml::to_string(value).map_err(|source| DocumentError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    // Keys before the first table belong to the root table, so the header can go first
    // whatever the sections are.
    let gap = if sections.starts_with('[') { "\n" } else { "" };
    Ok(format!(
        "version = {}\nrevision = {revision}\n{gap}{sections}",
        T::VERSION
    ))
}

/// The document in `path`, or `None` if there is no file.
pub fn read_file<T: Schema>(path: &Path) -> Result<Option<Loaded<T>>, DocumentError<T::Invalid>> {
    match super::read_if_present(path)? {
        None => Ok(None),
        Some(text) => parse(&text, path).map(Some),
    }
}

/// Validates `value`, then writes it atomically at `revision` (creating the directory).
pub fn write_file<T: Schema>(
    path: &Path,
    value: &T,
    revision: u64,
) -> Result<(), DocumentError<T::Invalid>> {
    value.validate().map_err(|source| DocumentError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    let text = encode(value, revision, path)?;
    super::replace(path, text.as_bytes(), FILE_MODE)?;
    Ok(())
}

/// A settings file, the value in force, and a channel that publishes every change.
pub struct Document<T> {
    path: PathBuf,
    state: Mutex<State>,
    tx: watch::Sender<T>,
}

struct State {
    /// The revision of the file in force; 0 before the first write.
    revision: u64,
    /// Why the file on disk is not in force, if it is not.
    problem: Option<Problem>,
}

struct Problem {
    /// The whole message, path included (for the log and status).
    message: String,
    /// What is wrong, without the path (for [`DocumentError::Unreadable`]).
    reason: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: Schema + Default> Document<T> {
    /// Reads `path`; a file that is not usable is reported and left as it is.
    pub fn load(path: PathBuf) -> Document<T> {
        let (value, state) = read_state::<T>(&path);
        if let Some(p) = &state.problem {
            tracing::error!(
                "settings not in force, running on their defaults: {}",
                p.message
            );
        }
        let (tx, _) = watch::channel(value);
        Document {
            path,
            state: Mutex::new(state),
            tx,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value in force.
    pub fn current(&self) -> T {
        self.tx.borrow().clone()
    }

    /// Looks at the value in force without copying it.
    pub fn with<R>(&self, look: impl FnOnce(&T) -> R) -> R {
        look(&self.tx.borrow())
    }

    pub fn subscribe(&self) -> watch::Receiver<T> {
        self.tx.subscribe()
    }

    /// Why the file on disk is not in force, if it is not.
    pub fn load_error(&self) -> Option<String> {
        lock(&self.state)
            .problem
            .as_ref()
            .map(|p| p.message.clone())
    }

    /// Reads the file again and puts what it holds in force: for a file replaced wholesale
    /// from outside this document (a data sync swaps the site directory). A file that is
    /// not usable is reported, and the defaults are in force, as at [`load`](Self::load).
    pub fn reload(&self) {
        let mut state = lock(&self.state);
        let (value, fresh) = read_state::<T>(&self.path);
        if let Some(p) = &fresh.problem {
            tracing::error!("settings not in force after reload: {}", p.message);
        }
        *state = fresh;
        self.tx.send_replace(value);
    }

    /// The revision of the file in force (0: never written).
    pub fn revision(&self) -> u64 {
        lock(&self.state).revision
    }

    /// Applies `change` to a copy, validates, writes and publishes it; returns the new value.
    /// On any error nothing changes.
    pub fn update(&self, change: impl FnOnce(&mut T)) -> Result<T, DocumentError<T::Invalid>> {
        self.try_update(|t| {
            change(t);
            Ok(t.clone())
        })
    }

    /// Like [`update`](Self::update) for a change that may refuse: its error leaves
    /// everything as it was. `change` runs with changes to this document locked out, so
    /// it must not change the document itself.
    pub fn try_update<R, E>(&self, change: impl FnOnce(&mut T) -> Result<R, E>) -> Result<R, E>
    where
        E: From<DocumentError<T::Invalid>>,
    {
        let mut state = lock(&self.state);
        if state.problem.is_some() {
            // It may have been fixed, replaced or removed since.
            let (value, fresh) = read_state::<T>(&self.path);
            *state = fresh;
            if state.problem.is_none() {
                tracing::info!(path = %self.path.display(), "settings file readable again: now in force");
                self.tx.send_replace(value);
            }
        }
        if let Some(p) = &state.problem {
            return Err(DocumentError::Unreadable {
                path: self.path.clone(),
                reason: p.reason.clone(),
            }
            .into());
        }
        let mut next = self.current();
        let out = change(&mut next)?;
        let revision = state.revision + 1;
        write_file(&self.path, &next, revision)?;
        state.revision = revision;
        self.tx.send_replace(next);
        Ok(out)
    }
}

fn read_state<T: Schema + Default>(path: &Path) -> (T, State) {
    match read_file::<T>(path) {
        Ok(Some(loaded)) => (
            loaded.value,
            State {
                revision: loaded.revision,
                problem: None,
            },
        ),
        Ok(None) => (
            T::default(),
            State {
                revision: 0,
                problem: None,
            },
        ),
        Err(e) => (
            T::default(),
            State {
                revision: 0,
                problem: Some(Problem {
                    message: e.to_string(),
                    reason: e.reason(),
                }),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Version 2 of a small schema; version 1 called `count` `number`.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        name: String,
        #[serde(default)]
        count: u32,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SampleV1 {
        name: String,
        number: u32,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("count {0} is over 100")]
    struct TooMany(u32);

    impl Schema for Sample {
        const VERSION: u32 = 2;
        type Invalid = TooMany;

        fn validate(&self) -> Result<(), TooMany> {
            if self.count > 100 {
                return Err(TooMany(self.count));
            }
            Ok(())
        }

        fn migrate(version: u32, sections: toml::Table) -> Option<Result<Self, toml::de::Error>> {
            match version {
                1 => Some(sections.try_into::<SampleV1>().map(|v| Sample {
                    name: v.name,
                    count: v.number,
                })),
                _ => None,
            }
        }
    }

    fn sample(dir: &Path) -> Document<Sample> {
        Document::load(dir.join("sample.toml"))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn values_round_trip_and_every_write_bumps_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let doc = sample(dir.path());
        assert_eq!(doc.current(), Sample::default());
        assert_eq!(doc.revision(), 0);
        assert!(!doc.path().exists(), "loading does not write");
        let mut rx = doc.subscribe();

        doc.update(|s| s.name = "one".into()).unwrap();
        doc.update(|s| s.count = 7).unwrap();
        assert_eq!(doc.revision(), 2);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().count, 7);
        let text = std::fs::read_to_string(doc.path()).unwrap();
        assert!(
            text.starts_with("version = 2\nrevision = 2\n"),
            "the header comes first: {text}"
        );

        let again = sample(dir.path());
        assert_eq!(
            again.current(),
            Sample {
                name: "one".into(),
                count: 7
            }
        );
        assert_eq!(again.revision(), 2);
        again.update(|s| s.count = 8).unwrap();
        assert_eq!(again.revision(), 3, "the count goes on from the file's");
        assert_eq!(names(dir.path()), ["sample.toml"], "no temp file is left");
    }

    #[test]
    fn a_refused_change_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let doc = sample(dir.path());
        doc.update(|s| s.count = 5).unwrap();
        let before = std::fs::read_to_string(doc.path()).unwrap();
        let err = doc.update(|s| s.count = 101).unwrap_err();
        assert!(matches!(err, DocumentError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("over 100"), "{err}");
        let err = doc
            .try_update(|s| {
                s.count = 6;
                Err::<(), _>(DocumentError::Parse {
                    path: "x".into(),
                    message: "refused by the change".into(),
                })
            })
            .unwrap_err();
        assert!(err.to_string().contains("refused by the change"));
        assert_eq!(doc.current().count, 5);
        assert_eq!(doc.revision(), 1);
        assert_eq!(std::fs::read_to_string(doc.path()).unwrap(), before);
    }

    #[test]
    fn a_bad_file_is_reported_and_never_overwritten_by_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.toml");
        for (text, needle) in [
            ("version = 2\ncolour = \"blue\"\n", "unknown field"),
            ("version = 2\ncount = 101\n", "over 100"),
            ("version = 2\nrevision = -1\n", "negative"),
            ("count = 1\n", "missing field `version`"),
            ("version = ", "sample.toml"),
        ] {
            std::fs::write(&path, text).unwrap();
            let doc = sample(dir.path());
            let err = doc.load_error().expect("the problem is reported");
            assert!(err.contains(needle) && err.contains("sample.toml"), "{err}");
            assert_eq!(
                doc.current(),
                Sample::default(),
                "the defaults are in force"
            );

            let refused = doc.update(|s| s.count = 1).unwrap_err();
            let message = refused.to_string();
            assert!(
                matches!(refused, DocumentError::Unreadable { .. }),
                "{message}"
            );
            assert!(
                message.starts_with(&format!("{} does not parse: ", path.display()))
                    && message.contains(needle)
                    && message.ends_with("; fix or replace it, or do a config reset"),
                "{message}"
            );
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                text,
                "left as it was"
            );
            assert_eq!(doc.current(), Sample::default());
        }
    }

    #[test]
    fn once_the_bad_file_is_fixed_the_next_change_goes_ahead_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.toml");
        std::fs::write(&path, "version = 2\ncolour = \"blue\"\n").unwrap();
        let doc = sample(dir.path());
        assert!(doc.update(|s| s.count = 1).is_err());

        std::fs::write(&path, "version = 2\nrevision = 4\nname = \"fixed\"\n").unwrap();
        let mut rx = doc.subscribe();
        let next = doc.update(|s| s.count = 1).unwrap();
        assert_eq!(
            next,
            Sample {
                name: "fixed".into(),
                count: 1
            }
        );
        assert_eq!(doc.load_error(), None);
        assert_eq!(doc.revision(), 5);
        assert_eq!(rx.borrow_and_update().clone(), next);
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.toml");
        for (text, needle) in [
            ("version = 3\n", "schema version 3 is not supported"),
            ("version = 0\n", "schema version 0 is not supported"),
            ("version = -1\n", "schema version -1 is not supported"),
            ("version = \"2\"\n", "`version` is not a number"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read_file::<Sample>(&path).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
            assert!(sample(dir.path()).load_error().is_some());
        }
        std::fs::write(&path, "version = 3\n").unwrap();
        assert!(matches!(
            read_file::<Sample>(&path),
            Err(DocumentError::Version {
                found: 3,
                reads: 2,
                ..
            })
        ));
    }

    #[test]
    fn an_older_version_migrates_and_is_written_back_at_the_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.toml");
        let v1 = "version = 1\nname = \"old\"\nnumber = 3\n";
        std::fs::write(&path, v1).unwrap();
        let doc = sample(dir.path());
        assert_eq!(doc.load_error(), None);
        assert_eq!(
            doc.current(),
            Sample {
                name: "old".into(),
                count: 3
            }
        );
        assert_eq!(doc.revision(), 0, "a file without a revision is at 0");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            v1,
            "loading does not write"
        );

        doc.update(|s| s.count += 1).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "version = 2\nrevision = 1\nname = \"old\"\ncount = 4\n"
        );
        // A version 1 file is checked against version 1's fields.
        std::fs::write(&path, "version = 1\nname = \"old\"\ncount = 3\n").unwrap();
        let err = read_file::<Sample>(&path).unwrap_err();
        assert!(err.to_string().contains("unknown field `count`"), "{err}");
    }

    #[test]
    fn files_are_private_and_written_atomically() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/sample.toml");
        let value = Sample {
            name: "x".into(),
            count: 1,
        };
        write_file(&path, &value, 9).unwrap();
        assert_eq!(
            read_file::<Sample>(&path).unwrap(),
            Some(Loaded { value, revision: 9 })
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(names(&dir.path().join("sub")), ["sample.toml"]);
        assert_eq!(read_file::<Sample>(&dir.path().join("none")).unwrap(), None);
    }
}
