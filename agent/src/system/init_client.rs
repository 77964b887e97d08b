//! Client side of init's control socket (see `appliance_proto::control`).

use appliance_proto::control::{Reply, Request};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot reach init at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("init did not answer within {0:?}")]
    Timeout(Duration),
    #[error("talking to init failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("init refused: {0}")]
    Refused(String),
    #[error("init sent an answer that is not part of the protocol")]
    Protocol,
}

#[derive(Clone, Debug)]
pub struct InitClient {
    path: PathBuf,
}

impl InitClient {
    pub fn new(path: PathBuf) -> InitClient {
        InitClient { path }
    }

    /// Sends one request; returns whatever init sent after its `ok` line.
    pub async fn request(&self, request: &Request) -> Result<String, InitError> {
        tokio::time::timeout(TIMEOUT, self.exchange(request))
            .await
            .map_err(|_| InitError::Timeout(TIMEOUT))?
    }

    async fn exchange(&self, request: &Request) -> Result<String, InitError> {
        let mut stream =
            UnixStream::connect(&self.path)
                .await
                .map_err(|source| InitError::Connect {
                    path: self.path.clone(),
                    source,
                })?;
        stream.write_all(request.encode().as_bytes()).await?;
        stream.shutdown().await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        let (first, rest) = answer.split_once('\n').unwrap_or((&answer, ""));
        match Reply::parse(first) {
            Some(Reply::Ok) => Ok(rest.to_string()),
            Some(Reply::Err(m)) => Err(InitError::Refused(m)),
            None => Err(InitError::Protocol),
        }
    }
}
