//! `/login/api/v1/files`: the site's file store ([`crate::files`]), bodies streamed both
//! ways as `application/octet-stream`.
//!
//! | route | does |
//! | --- | --- |
//! | `GET /files?prefix=` | the files whose path starts with `prefix`: `path`, `size`, `modified`, `sha256`, sorted by path |
//! | `GET /files/{path}` | the content (`HEAD`: its length only) |
//! | `PUT /files/{path}` | stores the body: 201 new, 200 replaced; the file appears whole or not at all |
//! | `DELETE /files/{path}` | 204; directories left empty go too |
//!
//! Uploads are outside the API's 64 KiB body limit: their own limit is the free space of
//! the data partition (507 `insufficient_storage`). The body goes from the connection to
//! a blocking thread that writes and hashes it through a small channel, so a file of
//! several GiB never sits in memory; the thread commits only when it got the end of the
//! body, and anything else (the client gone, the handler dropped) abandons the upload.
//! An upload refused while its client is still sending (a bad path, a full disk) has the
//! rest of its body read and dropped for a few seconds first, so that the client reads
//! the answer rather than a reset connection (not when it sent `Expect: 100-continue`
//! and waits for a go-ahead that never comes).

use super::{ApiError, AppState};
use crate::files::{Chunk, FileList, FilesError, PathError, Prefix, SitePath};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;

/// Every path this module serves (relative to `/login/api/v1`), in OpenAPI's spelling.
#[cfg(test)]
pub(crate) const PATHS: &[&str] = &["/files", "/files/{path}"];

/// Chunks in flight between the connection and the writing thread.
const CHANNEL_CHUNKS: usize = 16;
/// How long the rest of a refused upload is read and dropped.
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(10);
/// Bytes read from a file per chunk of a download.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ListQuery {
    prefix: String,
}

/// The path of the URL, checked; one that is not UTF-8 once decoded is a bad path too.
fn site_path(path: Result<Path<String>, PathRejection>) -> Result<SitePath, ApiError> {
    let Path(path) = path.map_err(|_| FilesError::BadPath(PathError::NotUtf8))?;
    Ok(SitePath::try_from(path).map_err(FilesError::BadPath)?)
}

async fn list(
    State(app): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FileList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let prefix = Prefix::try_from(query.prefix.as_str()).map_err(FilesError::BadPath)?;
    let store = app.files.clone();
    let files = crate::store::blocking(move || store.list(&prefix)).await?;
    Ok(Json(FileList { files }))
}

async fn download(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let path = site_path(path)?;
    let store = app.files.clone();
    let (file, size) = crate::store::blocking(move || store.open_file(&path)).await?;
    let file = tokio::fs::File::from_std(file);
    let chunks = crate::files::read_chunks(file, READ_CHUNK);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

async fn upload(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let store = app.files.clone();
    let begun = match site_path(path) {
        Ok(path) => crate::store::blocking(move || store.begin(path, announced))
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let upload = match begun {
        Ok(upload) => upload,
        Err(e) => {
            // A client that asked to be told before it sends (`Expect: 100-continue`)
            // sends nothing; any other is already sending.
            let waits = headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            if !waits {
                drain(&mut body.into_data_stream()).await;
            }
            return Err(e);
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(CHANNEL_CHUNKS);
    let writer = tokio::task::spawn_blocking(move || upload.receive(|| rx.blocking_recv()));
    let mut frames = body.into_data_stream();
    let complete = loop {
        match frames.next().await {
            None => break true,
            Some(Ok(bytes)) => {
                if tx.send(Chunk::Data(bytes)).await.is_err() {
                    // The writer stopped: its error is the answer.
                    break false;
                }
            }
            Some(Err(e)) => {
                tracing::debug!(target: "remote", "an upload's body broke off: {e}");
                break false;
            }
        }
    };
    if complete {
        let _ = tx.send(Chunk::End).await;
    }
    drop(tx);
    let stored = match writer.await {
        Ok(Ok(stored)) => stored,
        Ok(Err(e)) => {
            if !complete {
                drain(&mut frames).await;
            }
            return Err(e.into());
        }
        Err(e) => return Err(ApiError::Internal(format!("the upload stopped: {e}"))),
    };
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(stored.info)).into_response())
}

/// Reads and drops what the client still sends of a refused upload, for [`DRAIN_FOR`] at
/// most: most clients write their whole body before they read, and would otherwise see a
/// broken connection instead of the answer.
async fn drain(frames: &mut axum::body::BodyDataStream) {
    let _ = tokio::time::timeout(DRAIN_FOR, async {
        while let Some(Ok(_)) = frames.next().await {}
    })
    .await;
}

async fn remove(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let path = site_path(path)?;
    let store = app.files.clone();
    crate::store::blocking(move || store.delete(&path)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The file routes. They stream their bodies: merge them where the API's body limit does
/// not apply.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/files", get(list))
        .route("/files/{*path}", get(download).put(upload).delete(remove))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_path_is_in_the_openapi_document_with_its_server() {
        assert_eq!(
            super::super::undocumented_login_paths(PATHS),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn file_store_errors_answer_their_documented_statuses() {
        let cases = [
            (
                FilesError::BadPath(PathError::DotSegment),
                StatusCode::BAD_REQUEST,
                "bad_path",
            ),
            (
                FilesError::NotFound("x".into()),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                FilesError::IsADirectory("d".into()),
                StatusCode::CONFLICT,
                "is_a_directory",
            ),
            (
                FilesError::ParentNotADirectory("f/x".into()),
                StatusCode::CONFLICT,
                "parent_not_a_directory",
            ),
            (
                FilesError::NoSpace { needed: 2, free: 1 },
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
            ),
            (
                FilesError::DiskFull("x".into()),
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
            ),
            (
                FilesError::Incomplete("x".into()),
                StatusCode::BAD_REQUEST,
                "upload_incomplete",
            ),
        ];
        let doc = include_str!("../../openapi.yaml");
        for (e, status, code) in cases {
            assert_eq!(ApiError::from(e).status_and_code(), (status, code));
            assert!(
                doc.contains(&format!("`{code}`")),
                "{code} is not documented"
            );
        }
    }

    #[test]
    fn the_path_of_the_url_is_checked_as_a_site_path() {
        let e = site_path(Ok(Path("a/../b".to_string()))).unwrap_err();
        assert_eq!(e.status_and_code(), (StatusCode::BAD_REQUEST, "bad_path"));
        assert_eq!(
            site_path(Ok(Path("a/b".to_string()))).unwrap().as_str(),
            "a/b"
        );
    }
}
