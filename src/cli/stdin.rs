//! `-` for `xbuild build`'s inputs, as buildx reads them: `-f -` takes the Dockerfile from
//! stdin (the context is still `PATH`), and a context of `-` takes a tar archive (plain,
//! gzip, bzip2 or xz) from stdin as the context, or a lone Dockerfile with no context files.
//! What is read goes into a temporary directory that lives as long as the returned guard.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::error::{ExitKind, Failure};

/// The most a Dockerfile read from stdin may hold.
const MAX_DOCKERFILE: u64 = 16 << 20;

/// Replaces a `-` context or `-f -` by what stdin holds, written under a temporary
/// directory; returns that directory (keep it until the build is done), or `None` when
/// neither is `-`.
///
/// # Errors
/// Both are `-`; `-f` names a file inside a lone Dockerfile; stdin cannot be read, is too
/// big for a Dockerfile, or is an archive that does not unpack.
pub(crate) fn take(
    context: &mut PathBuf,
    file: &mut Option<PathBuf>,
) -> anyhow::Result<Option<tempfile::TempDir>> {
    let context_is_stdin = context.as_os_str() == "-";
    let file_is_stdin = file.as_deref() == Some(Path::new("-"));
    if !context_is_stdin && !file_is_stdin {
        return Ok(None);
    }
    if context_is_stdin && file_is_stdin {
        return Err(Failure::bad_input(
            "invalid argument: can't use stdin for both build context and dockerfile",
        )
        .into());
    }
    let tmp = tempfile::Builder::new()
        .prefix("xbuild-stdin-")
        .tempdir()
        .map_err(|error| Failure::new(ExitKind::Failed, anyhow::anyhow!(error)))?;
    let failed = |what: &str, error: std::io::Error| {
        Failure::new(ExitKind::Failed, anyhow::anyhow!("{what}: {error}"))
    };
    if file_is_stdin {
        let mut text = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_DOCKERFILE + 1)
            .read_to_end(&mut text)
            .map_err(|error| failed("reading the Dockerfile from stdin", error))?;
        if text.len() as u64 > MAX_DOCKERFILE {
            return Err(Failure::bad_input(format_args!(
                "-f -: the Dockerfile on stdin is over {} MiB",
                MAX_DOCKERFILE >> 20
            ))
            .into());
        }
        let path = tmp.path().join("Dockerfile");
        std::fs::write(&path, text).map_err(|error| failed("writing the Dockerfile", error))?;
        *file = Some(path);
        return Ok(Some(tmp));
    }
    let download = tmp.path().join("stdin");
    let mut out = std::fs::File::create(&download)
        .map_err(|error| failed("writing the context from stdin", error))?;
    std::io::copy(&mut std::io::stdin().lock(), &mut out)
        .map_err(|error| failed("reading the context from stdin", error))?;
    drop(out);
    let fetched = crate::remote::context::context_from_file(&download, tmp.path(), "-", None)
        .map_err(|error| Failure::new(error.exit_kind(), error))?;
    *file = match file.take() {
        None => Some(fetched.dockerfile),
        Some(given) if fetched.lone_dockerfile => {
            return Err(Failure::bad_input(format_args!(
                "the build context on stdin is a lone Dockerfile (not a tar archive): -f {} cannot name a file inside it",
                given.display()
            ))
            .into());
        }
        // As buildx: -f is a path inside the archive.
        Some(given) if given.is_relative() => Some(fetched.dir.join(given)),
        Some(given) => Some(given),
    };
    *context = fetched.dir;
    Ok(Some(tmp))
}
