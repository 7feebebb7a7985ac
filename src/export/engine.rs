//! `--load`: asks a Docker engine how it keeps images (`GET /info`) and hands it an archive
//! (`POST /images/load`) over its unix socket (`$DOCKER_HOST` when it is `unix://...`, else
//! `/var/run/docker.sock`). The few lines of HTTP/1.1 are written by hand: one request per
//! connection (`Connection: close`), the answer read to the end, chunked bodies decoded.
//! Which archive to send is `load`'s choice, not this file's.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The default socket of a Docker engine.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Why the engine could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `$DOCKER_HOST` names something other than a unix socket.
    #[error("DOCKER_HOST={0}: only unix:// sockets are supported yet")]
    UnsupportedHost(String),
    /// Nothing answers on the socket.
    #[error("no Docker engine answers on {socket}")]
    Unreachable {
        /// The socket.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The engine answered with an error.
    #[error("the Docker engine on {socket} refused the image: {message}")]
    Refused {
        /// The socket.
        socket: PathBuf,
        /// What it said.
        message: String,
    },
}

/// The engine's socket: `$DOCKER_HOST` (`unix://PATH`), else the default one.
///
/// # Errors
/// [`EngineError::UnsupportedHost`] for `tcp://` and other schemes.
pub fn docker_socket() -> Result<PathBuf, EngineError> {
    match std::env::var(crate::env::DOCKER_HOST) {
        Ok(host) if !host.is_empty() => host
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .ok_or(EngineError::UnsupportedHost(host)),
        _ => Ok(PathBuf::from(DEFAULT_DOCKER_SOCKET)),
    }
}

/// An HTTP answer: status code and decoded body.
struct Answer {
    status: u16,
    body: String,
}

async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<(&mut tokio::fs::File, u64)>,
) -> std::io::Result<Answer> {
    let mut stream = UnixStream::connect(socket).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
    if let Some((_, length)) = &body {
        head.push_str(&format!(
            "Content-Type: application/x-tar\r\nContent-Length: {length}\r\n"
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if let Some((file, _)) = body {
        tokio::io::copy(file, &mut stream).await?;
    }
    stream.flush().await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> std::io::Result<Answer> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| bad("the engine's answer has no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("the engine's answer has no status"))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let mut body = &raw[split + 4..];
    let decoded = if chunked {
        let mut out = Vec::new();
        while let Some(end) = body.windows(2).position(|window| window == b"\r\n") {
            let size_text = String::from_utf8_lossy(&body[..end]);
            let size_text = size_text.split(';').next().unwrap_or("").trim().to_owned();
            let size = usize::from_str_radix(&size_text, 16)
                .map_err(|_| bad("the engine's chunked answer is malformed"))?;
            body = &body[end + 2..];
            if size == 0 || body.len() < size {
                out.extend_from_slice(&body[..size.min(body.len())]);
                break;
            }
            out.extend_from_slice(&body[..size]);
            body = body.get(size + 2..).unwrap_or_default();
        }
        out
    } else {
        body.to_vec()
    };
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&decoded).into_owned(),
    })
}

/// How an engine keeps images, as `GET /info` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStore {
    /// The classic store (graph drivers): a tag names one image, one platform.
    Classic,
    /// containerd's image store (Docker 24+ with the `containerd-snapshotter` feature): a
    /// tag names a whole index, and `POST /images/load` takes an OCI archive.
    Containerd,
}

impl ImageStore {
    /// Reads an engine's `GET /info` answer as buildx does: the containerd image store when
    /// `DriverStatus` has the pair `["driver-type", "io.containerd.snapshotter.v1"]`.
    pub fn of_info(info: &serde_json::Value) -> Self {
        let containerd = info["DriverStatus"].as_array().is_some_and(|pairs| {
            pairs.iter().any(|pair| {
                pair[0].as_str() == Some("driver-type")
                    && pair[1].as_str() == Some("io.containerd.snapshotter.v1")
            })
        });
        if containerd {
            Self::Containerd
        } else {
            Self::Classic
        }
    }
}

/// How the engine on `socket` keeps images (`GET /info`).
///
/// # Errors
/// [`EngineError::Unreachable`] when the engine does not answer `/info` with JSON.
pub async fn image_store(socket: &Path) -> Result<ImageStore, EngineError> {
    let unreachable = |source| EngineError::Unreachable {
        socket: socket.to_path_buf(),
        source,
    };
    let answer = request(socket, "GET", "/info", None)
        .await
        .map_err(unreachable)?;
    if answer.status != 200 {
        return Err(unreachable(std::io::Error::other(format!(
            "GET /info answered {}",
            answer.status
        ))));
    }
    let info: serde_json::Value = serde_json::from_str(&answer.body).map_err(|error| {
        unreachable(std::io::Error::other(format!(
            "GET /info answered no JSON: {error}"
        )))
    })?;
    Ok(ImageStore::of_info(&info))
}

/// Loads the archive at `archive` (a docker-archive, or an OCI archive for an engine with
/// the containerd image store) into the engine; returns the engine's messages
/// (`Loaded image: app:1`).
///
/// # Errors
/// [`EngineError::Unreachable`] or [`EngineError::Refused`].
pub async fn load(socket: &Path, archive: &Path) -> Result<Vec<String>, EngineError> {
    let unreachable = |source| EngineError::Unreachable {
        socket: socket.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::open(archive).await.map_err(unreachable)?;
    let length = file.metadata().await.map_err(unreachable)?.len();
    let answer = request(
        socket,
        "POST",
        "/images/load?quiet=1",
        Some((&mut file, length)),
    )
    .await
    .map_err(unreachable)?;
    let refused = |message: String| EngineError::Refused {
        socket: socket.to_path_buf(),
        message,
    };
    if answer.status != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|value| value["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("status {}: {}", answer.status, answer.body.trim()));
        return Err(refused(message));
    }
    let mut messages = Vec::new();
    for line in answer.body.lines().filter(|line| !line.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|_| refused(format!("unexpected answer {line:?}")))?;
        if let Some(error) = value["error"].as_str() {
            return Err(refused(error.to_owned()));
        }
        if let Some(stream) = value["stream"].as_str() {
            messages.push(stream.trim().to_owned());
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_answers_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let answer = parse_answer(raw).expect("parses");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "hello world");
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = image_store(&dir.path().join("docker.sock"))
            .await
            .expect_err("nothing listens");
        assert!(matches!(error, EngineError::Unreachable { .. }), "{error}");
        assert!(error.to_string().contains("no Docker engine answers on"));
    }

    #[test]
    fn the_containerd_image_store_is_told_by_driver_status() {
        let containerd = serde_json::json!({
            "Driver": "overlayfs",
            "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
        });
        assert_eq!(ImageStore::of_info(&containerd), ImageStore::Containerd);
        let classic = serde_json::json!({
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
        });
        assert_eq!(ImageStore::of_info(&classic), ImageStore::Classic);
        assert_eq!(
            ImageStore::of_info(&serde_json::json!({"DriverStatus": null})),
            ImageStore::Classic
        );
    }

    #[test]
    fn plain_answers_keep_their_body() {
        let raw = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail";
        let answer = parse_answer(raw).expect("parses");
        assert_eq!(answer.status, 500);
        assert_eq!(answer.body, "fail");
    }
}
