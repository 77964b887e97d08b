//! `appliancectl files put|get|ls|rm`: the site's file store (`/login/api/v1/files`).
//! Contents stream both ways: a file is never read whole into memory, and a download
//! lands under a temporary name beside its target and is renamed when complete.

use super::{check, CliError, Outcome};
use crate::api::LOGIN_PREFIX;
use crate::client::{self, Client, StreamBody};
use crate::files::{FileInfo, FileList};
use clap::Subcommand;
use http_body_util::BodyExt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Subcommand, Debug)]
pub enum FilesAction {
    /// Upload a local file to a path of the store (parent directories are made).
    Put {
        /// The local file.
        local: PathBuf,
        /// Its path in the store, such as reports/2026/q4.pdf.
        remote: String,
    },
    /// Download a file of the store.
    Get {
        /// Its path in the store.
        remote: String,
        /// Where to write it: a file, a directory ("-": standard output; default: its
        /// name, in the current directory).
        local: Option<String>,
    },
    /// List the files whose path starts with a prefix (all when none is given).
    Ls {
        /// Such as reports/ or reports/2026/q.
        prefix: Option<String>,
    },
    /// Delete a file of the store (and the directories it leaves empty).
    Rm {
        /// Its path in the store.
        remote: String,
    },
}

/// Bytes read from a local file per chunk of an upload.
const CHUNK: usize = 256 * 1024;

/// The URL of a path of the store, each byte outside the unreserved set percent-encoded.
fn url(remote: &str) -> String {
    let mut out = format!("{LOGIN_PREFIX}/files/");
    for b in remote.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn info_text(verb: &str, f: &FileInfo) -> String {
    format!("{verb} {} ({} bytes, sha256 {})", f.path, f.size, f.sha256)
}

fn list_text(files: &[FileInfo]) -> String {
    if files.is_empty() {
        return "no files".into();
    }
    let width = files
        .iter()
        .map(|f| f.size.to_string().len())
        .max()
        .unwrap_or(1);
    files
        .iter()
        .map(|f| {
            format!(
                "{:>width$}  {}  {}  {}",
                f.size, f.modified, f.sha256, f.path
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A local file as a request body, read a chunk at a time.
fn file_body(file: tokio::fs::File) -> StreamBody {
    use futures_util::StreamExt;
    let chunks = crate::files::read_chunks(file, CHUNK)
        .map(|r| r.map(http_body::Frame::data).map_err(|e| Box::new(e) as _));
    BodyExt::boxed(http_body_util::StreamBody::new(chunks))
}

/// An answer whose body is read whole (an error, or the JSON of a success).
async fn whole(
    client: &Client,
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<client::Answer, CliError> {
    let status = resp.status().as_u16();
    let body = client::read_limited(resp.into_body(), &client.target()).await?;
    Ok(client::Answer {
        status,
        body,
        fingerprint: String::new(),
    })
}

async fn put(client: &Client, local: &Path, remote: &str) -> Outcome {
    let file = tokio::fs::File::open(local)
        .await
        .map_err(CliError::Local)?;
    let meta = file.metadata().await.map_err(CliError::Local)?;
    if !meta.is_file() {
        return Err(CliError::Usage(format!(
            "{} is not a regular file",
            local.display()
        )));
    }
    let length = meta.len();
    let resp = client
        .stream("PUT", &url(remote), Some((file_body(file), length)))
        .await?;
    let v = check(whole(client, resp).await?)?;
    let f: FileInfo = serde_json::from_value(v.clone()).map_err(CliError::Decode)?;
    Ok((v, info_text("stored", &f)))
}

async fn get(client: &Client, remote: &str, local: Option<&str>) -> Outcome {
    let resp = client.stream("GET", &url(remote), None).await?;
    if !resp.status().is_success() {
        check(whole(client, resp).await?)?;
        return Err(CliError::Usage(
            "the appliance answered without a file".into(),
        ));
    }
    let mut body = resp.into_body();
    let target = client.target();
    let broken = |_| {
        CliError::Client(crate::client::ClientError::Body {
            target: target.clone(),
        })
    };
    let to = match local {
        Some("-") => None,
        Some(l) => Some(PathBuf::from(l)),
        None => Some(PathBuf::from(".")),
    };
    // Into a directory: under the file's own name.
    let to = to.map(|to| {
        if to.is_dir() {
            to.join(remote.rsplit('/').next().unwrap_or(remote))
        } else {
            to
        }
    });
    let Some(to) = to else {
        use std::io::Write;
        let mut out = std::io::stdout();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(broken)?.into_data() {
                out.write_all(&data).map_err(CliError::Local)?;
            }
        }
        out.flush().map_err(CliError::Local)?;
        return Ok((serde_json::Value::Null, String::new()));
    };
    // Beside the target, so that the rename is atomic; removed if anything fails.
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let part = to.with_file_name(format!(".{name}.part{}", std::process::id()));
    let result = async {
        let mut file = tokio::fs::File::create(&part)
            .await
            .map_err(CliError::Local)?;
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(broken)?.into_data() {
                bytes += data.len() as u64;
                file.write_all(&data).await.map_err(CliError::Local)?;
            }
        }
        file.sync_all().await.map_err(CliError::Local)?;
        tokio::fs::rename(&part, &to)
            .await
            .map_err(CliError::Local)?;
        Ok::<u64, CliError>(bytes)
    }
    .await;
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    Ok((
        serde_json::json!({ "path": remote, "local": to.display().to_string(), "size": bytes }),
        format!("wrote {} ({bytes} bytes)", to.display()),
    ))
}

pub async fn execute(client: &Client, action: &FilesAction) -> Outcome {
    match action {
        FilesAction::Put { local, remote } => put(client, local, remote).await,
        FilesAction::Get { remote, local } => get(client, remote, local.as_deref()).await,
        FilesAction::Ls { prefix } => {
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("prefix", prefix.as_deref().unwrap_or(""))
                .finish();
            let path = format!("{LOGIN_PREFIX}/files?{query}");
            let v = check(client.request("GET", &path, None).await?)?;
            let list: FileList = serde_json::from_value(v.clone()).map_err(CliError::Decode)?;
            Ok((v, list_text(&list.files)))
        }
        FilesAction::Rm { remote } => {
            check(client.request("DELETE", &url(remote), None).await?)?;
            Ok((serde_json::Value::Null, format!("removed {remote}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_path_is_percent_encoded_but_its_slashes() {
        assert_eq!(
            url("a b/ü?#%.txt"),
            "/login/api/v1/files/a%20b/%C3%BC%3F%23%25.txt"
        );
        assert_eq!(url("../x"), "/login/api/v1/files/../x");
    }

    #[test]
    fn a_listing_reads_in_columns() {
        let f = |path: &str, size| FileInfo {
            path: path.into(),
            size,
            modified: "2026-12-03T19:00:00Z".into(),
            sha256: "ab".into(),
        };
        assert_eq!(list_text(&[]), "no files");
        assert_eq!(
            list_text(&[f("a", 5), f("b/c", 1234)]),
            "   5  2026-12-03T19:00:00Z  ab  a\n1234  2026-12-03T19:00:00Z  ab  b/c"
        );
    }
}
