//! A URL as the build context, as `docker buildx build URL` takes it (BuildKit's
//! `dockerui` `DetectGitContext`/`DetectHTTPContext`): fetched into a directory, which is then
//! an ordinary local context.
//!
//! - A git reference ([`crate::source::gitref`]; the scheme-less `github.com/org/repo` form too,
//!   unless a local path of that name exists): the checkout of the commit it names, the
//!   subdirectory of `#ref:dir` as the context; the Dockerfile is `Dockerfile` in it.
//! - Another `http://` or `https://` URL: downloaded; a tar archive (plain, gzip, bzip2 or xz,
//!   recognised by its first bytes as BuildKit does) is unpacked and is the context, with its
//!   `Dockerfile`; any other file is the Dockerfile itself, alone in the context under the
//!   name `context` (what BuildKit does with it).
//!
//! The time `SOURCE_DATE_EPOCH=context` means comes along: the commit's committer time, the
//! download's `Last-Modified`, else the newest file of an archive.
//!
//! The CLI hook is one call before the build (see [`fetch_context`]); this module does not
//! read the Dockerfile or touch the store.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::git::{self, FetchOptions, GitError};
use crate::error::ExitKind;
use crate::source::gitref::{GitRef, GitRefError};

/// A remote context, fetched: a local directory and its Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteContext {
    /// The context directory (inside the temporary directory given).
    pub dir: PathBuf,
    /// The Dockerfile the context provides: `Dockerfile` (or `dockerfile`) in `dir`, or the
    /// downloaded file itself. A `-f` given by the user replaces it (relative to `dir`, as
    /// buildx reads `-f` against a remote context).
    pub dockerfile: PathBuf,
    /// What `SOURCE_DATE_EPOCH=context` means for it, when it has a time.
    pub source_date_epoch: Option<i64>,
    /// The git commit the context is, for a git context.
    pub commit: Option<String>,
    /// The URL was a lone Dockerfile: `dir` holds only it.
    pub lone_dockerfile: bool,
}

/// How to fetch a remote context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextOptions {
    /// For a git context: the agent for ssh remotes and whether `.git`
    /// is kept (`BUILDKIT_CONTEXT_KEEP_GIT_DIR`).
    pub git: FetchOptions,
}

/// What can go wrong fetching a remote context.
#[derive(Debug, thiserror::Error)]
pub enum ContextUrlError {
    /// A git reference with a bad query.
    #[error("build context {0}")]
    GitRef(#[from] GitRefError),
    /// Fetching the repository failed.
    #[error("build context: {0}")]
    Git(#[from] GitError),
    /// The download failed.
    #[error("build context {url}: downloading: {message}")]
    Download {
        /// The URL (credentials removed).
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The archive does not unpack.
    #[error("build context {url}: unpacking: {message}")]
    Unpack {
        /// The URL (credentials removed).
        url: String,
        /// What went wrong.
        message: String,
    },
    /// `-f` given with a URL that is a lone Dockerfile (there is no context to look in).
    #[error(
        "build context {url} is a lone Dockerfile (not a git repository or a tar archive): -f {file} cannot name a file inside it"
    )]
    FileWithLoneDockerfile {
        /// The URL (credentials removed).
        url: String,
        /// The `-f` given.
        file: String,
    },
    /// A file operation in the temporary directory failed.
    #[error("build context: {}: {operation}", path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl ContextUrlError {
    /// The exit status: a URL that cannot be used as written is bad input (2), a failed
    /// fetch is a failed build (1).
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Self::GitRef(_) | Self::FileWithLoneDockerfile { .. } => ExitKind::BadInput,
            Self::Git(error) => error.exit_kind(),
            Self::Download { .. } | Self::Unpack { .. } | Self::Io { .. } => ExitKind::Failed,
        }
    }
}

fn io_error(
    operation: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> ContextUrlError + use<> {
    let path = path.to_owned();
    move |source| ContextUrlError::Io {
        operation,
        path,
        source,
    }
}

/// Whether the build context argument is a URL to fetch rather than a local directory: a
/// git reference or an `http(s)://` URL (`github.com/org/repo` only when no such local path
/// exists, as buildx decides).
pub fn is_remote_context(argument: &str) -> bool {
    if argument.starts_with("http://") || argument.starts_with("https://") {
        return true;
    }
    match GitRef::parse(argument) {
        Ok(Some(reference)) if reference.indistinguishable_from_local => {
            !Path::new(argument).exists()
        }
        Ok(Some(_)) | Err(_) => true,
        Ok(None) => false,
    }
}

/// Fetches the context `url` names into `tmp` (a directory the caller owns and removes),
/// as described in the module documentation.
///
/// The CLI's hook, before the build reads its context: when [`is_remote_context`] says so,
/// `let remote = runtime.block_on(source::fetch_context(&url, tmp.path(), &options))?;`
/// then build with `remote.dir` as the context and `remote.dockerfile` as the Dockerfile
/// (unless `-f` is given: then `remote.dir.join(file)`).
///
/// # Errors
/// [`ContextUrlError`]: a bad git reference, a failed fetch or download, an archive that
/// does not unpack.
pub async fn fetch_context(
    url: &str,
    tmp: &Path,
    options: &ContextOptions,
) -> Result<RemoteContext, ContextUrlError> {
    if let Some(reference) = git_context(url)? {
        let dest = tmp.join("context");
        let options = options.git.clone();
        let checkout = tokio::task::spawn_blocking(move || {
            let resolved = git::resolve(&reference, &options)?;
            git::fetch(&reference, &resolved, &dest, &options)
        })
        .await
        .map_err(|error| ContextUrlError::Download {
            url: crate::source::gitref::redact(url),
            message: format!("the fetching thread failed: {error}"),
        })??;
        let dockerfile = crate::context::locate_dockerfile(&checkout.dir.join("Dockerfile"));
        return Ok(RemoteContext {
            dockerfile,
            dir: checkout.dir,
            source_date_epoch: Some(checkout.commit_time),
            commit: Some(checkout.resolved.commit),
            lone_dockerfile: false,
        });
    }
    let shown = crate::source::gitref::redact(url);
    let download = tmp.join("download");
    let last_modified = download_to(url, &download).await?;
    context_from_file(&download, tmp, &shown, last_modified)
}

/// A context from a file already in `tmp` (downloaded, or read from stdin for a context of
/// `-`): a tar archive (plain, gzip, bzip2, xz) is unpacked into `tmp/context`; any other
/// file is a lone Dockerfile. `shown` names the source in errors; `last_modified` is its
/// time, if known.
///
/// # Errors
/// An archive that does not unpack; file operations in `tmp`.
pub fn context_from_file(
    download: &Path,
    tmp: &Path,
    shown: &str,
    last_modified: Option<i64>,
) -> Result<RemoteContext, ContextUrlError> {
    let download = download.to_path_buf();
    let dir = tmp.join("context");
    fs::create_dir(&dir).map_err(io_error("creating", &dir))?;
    let kind = archive_kind(&download).map_err(io_error("reading", &download))?;
    let Some(kind) = kind else {
        // Not an archive: the Dockerfile itself, named `context` as BuildKit names it.
        let dockerfile = dir.join("context");
        fs::rename(&download, &dockerfile).map_err(io_error("moving", &download))?;
        return Ok(RemoteContext {
            dir,
            dockerfile,
            source_date_epoch: last_modified,
            commit: None,
            lone_dockerfile: true,
        });
    };
    let unpack_error = |message: String| ContextUrlError::Unpack {
        url: shown.to_owned(),
        message,
    };
    unpack(&download, kind, &dir).map_err(unpack_error)?;
    fs::remove_file(&download).map_err(io_error("removing", &download))?;
    let newest = newest_file_time(&dir).map_err(io_error("reading", &dir))?;
    Ok(RemoteContext {
        dockerfile: crate::context::locate_dockerfile(&dir.join("Dockerfile")),
        dir,
        source_date_epoch: last_modified.or(newest),
        commit: None,
        lone_dockerfile: false,
    })
}

/// A git reference, when `url` is one (as a context, the `github.com/...` form counts).
fn git_context(url: &str) -> Result<Option<GitRef>, ContextUrlError> {
    Ok(GitRef::parse(url)?)
}

/// Downloads `url` into `path`; returns the `Last-Modified` time, if any.
async fn download_to(url: &str, path: &Path) -> Result<Option<i64>, ContextUrlError> {
    let shown = crate::source::gitref::redact(url);
    let error = |message: String| ContextUrlError::Download {
        url: shown.clone(),
        message,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| error(e.to_string()))?;
    let mut response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| error(without_url(&e)))?;
    let last_modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_http_date);
    let mut file = fs::File::create(path).map_err(io_error("creating", path))?;
    while let Some(chunk) = response.chunk().await.map_err(|e| error(without_url(&e)))? {
        file.write_all(&chunk).map_err(io_error("writing", path))?;
    }
    file.sync_all().map_err(io_error("writing", path))?;
    Ok(last_modified)
}

/// reqwest's message without the URL it repeats (which may hold credentials).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text
            .replace(&format!(" for url ({url})"), "")
            .replace(url.as_str(), "");
    }
    text
}

/// An archive's compression, as BuildKit's `isArchive` recognises one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveKind {
    Tar,
    Gzip,
    Bzip2,
    Xz,
}

fn archive_kind(path: &Path) -> io::Result<Option<ArchiveKind>> {
    let mut head = Vec::with_capacity(1024);
    fs::File::open(path)?.take(1024).read_to_end(&mut head)?;
    Ok(if head.starts_with(b"BZh") {
        Some(ArchiveKind::Bzip2)
    } else if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Some(ArchiveKind::Gzip)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(ArchiveKind::Xz)
    } else if crate::layer::read::is_tar_header(&head) {
        Some(ArchiveKind::Tar)
    } else {
        None
    })
}

/// Unpacks `archive` into `dir` with xbuild's layer unpacker (nothing outside `dir`).
fn unpack(archive: &Path, kind: ArchiveKind, dir: &Path) -> Result<(), String> {
    let options = crate::layer::ApplyOptions {
        whiteouts: crate::layer::WhiteoutMode::Merge,
        allow_devices: false,
        set_owners: false,
        exact: false,
    };
    let file = fs::File::open(archive).map_err(|e| e.to_string())?;
    match kind {
        ArchiveKind::Tar | ArchiveKind::Gzip => {
            let stream = crate::layer::decompressed(file).map_err(|e| e.to_string())?;
            crate::layer::apply_layer(stream, dir, &options)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        ArchiveKind::Bzip2 | ArchiveKind::Xz => {
            let program = if kind == ArchiveKind::Xz {
                "xz"
            } else {
                "bzip2"
            };
            let mut child = Command::new(program)
                .arg("-dc")
                .stdin(file)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {program}: {e}"))?;
            let mut stdout = child
                .stdout
                .take()
                .ok_or_else(|| format!("{program}: no output"))?;
            let applied = crate::layer::apply_layer(&mut stdout, dir, &options);
            // The tar ends before the stream does (a tar is padded to whole records): read
            // the rest, or the decompressor dies of SIGPIPE writing it, with no message.
            let _ = io::copy(&mut stdout, &mut io::sink());
            drop(stdout);
            let output = child.wait_with_output().map_err(|e| e.to_string())?;
            if !output.status.success() {
                return Err(format!(
                    "{program} -dc failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            applied.map(drop).map_err(|e| e.to_string())
        }
    }
}

/// The newest mtime of a regular file under `dir`.
fn newest_file_time(dir: &Path) -> io::Result<Option<i64>> {
    use std::os::unix::fs::MetadataExt;
    let mut newest = None;
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                newest = newest.max(Some(meta.mtime()));
            }
        }
    }
    Ok(newest)
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 7231's preferred form) as seconds.
pub(crate) fn parse_http_date(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|name| name == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let mut clock = time.split(':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar padded to 1 MiB records (GNU tar `-b 2048`) ends long before its stream does:
    /// the unpacker must read the padding, or xz dies writing it into a closed pipe.
    #[test]
    fn an_xz_tar_with_long_padding_unpacks() {
        let Ok(tmp) = tempfile::tempdir() else { return };
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a.txt"), "a\n").unwrap();
        let archive = tmp.path().join("c.tar.xz");
        let made = Command::new("sh")
            .arg("-c")
            .arg("tar -b 2048 -C \"$1\" -cf - a.txt | xz -z > \"$2\"")
            .arg("sh")
            .arg(&src)
            .arg(&archive)
            .status();
        if !made.is_ok_and(|status| status.success()) {
            return; // no tar or xz here
        }
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        unpack(&archive, ArchiveKind::Xz, &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("a.txt")).unwrap(), "a\n");
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn remote_contexts() {
        assert!(is_remote_context("https://example.com/context.tar.gz"));
        assert!(is_remote_context("http://example.com/Dockerfile"));
        assert!(is_remote_context("https://example.com/repo.git#main:sub"));
        assert!(is_remote_context("git@example.com:repo.git"));
        assert!(is_remote_context("git://example.com/repo"));
        assert!(is_remote_context(
            "github.com/moby/buildkit-does-not-exist-here"
        ));
        assert!(!is_remote_context("."));
        assert!(!is_remote_context("some/dir"));
    }

    #[test]
    fn archives_by_their_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let check = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            archive_kind(&path).unwrap()
        };
        assert_eq!(check("gz", &[0x1f, 0x8b, 0x08, 0]), Some(ArchiveKind::Gzip));
        assert_eq!(check("bz", b"BZh91AY"), Some(ArchiveKind::Bzip2));
        assert_eq!(
            check("xz", &[0xfd, b'7', b'z', b'X', b'Z', 0, 1]),
            Some(ArchiveKind::Xz)
        );
        assert_eq!(check("text", b"FROM scratch\nCOPY . .\n"), None);
        let mut tar = ::tar::Builder::new(Vec::new());
        let mut header = ::tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "Dockerfile", &b"abc"[..])
            .unwrap();
        let bytes = tar.into_inner().unwrap();
        assert_eq!(check("tar", &bytes), Some(ArchiveKind::Tar));
    }
}
