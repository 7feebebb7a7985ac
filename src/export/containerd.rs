//! `-o type=containerd[,namespace=NS][,name=N][,unpack=true|false]`: the build's whole
//! index, every platform, loaded into containerd's image store under each name, the way
//! `ctr images import --all-platforms` and `nerdctl load --all-platforms` keep it: every
//! blob in containerd's content store, one image record per name pointing at the index.
//!
//! containerd speaks gRPC only. This module drives it through containerd's own client
//! program, `ctr` (shipped with every containerd package), with an OCI archive of the
//! result written to the store's `tmp/`: `ctr images import --all-platforms` over the
//! socket. A gRPC client compiled in (tonic, prost, h2 and containerd's protos) would add a
//! protocol stack this crate has nowhere else for one output; `ctr` costs users one
//! program they already have wherever containerd runs, and a temporary copy of the image
//! on disk while it is read.
//!
//! This module owns where containerd is (`$CONTAINERD_ADDRESS`, else
//! [`DEFAULT_CONTAINERD_SOCKET`]), the namespace (`namespace=`, else
//! `$CONTAINERD_NAMESPACE`, else `default`, as `ctr` and `nerdctl`), the checks made before a
//! build ([`preflight`]) and the import. It does not talk to Docker engines (`engine` and
//! `load` do), and it sends no attestations: containerd 1.6 keeps no referrers (an
//! attestation would be unnamed content, removed by its garbage collector), so the build
//! refuses `--attest`/`--sbom`/`--provenance` with this output before any work.

use std::path::{Path, PathBuf};

use super::{ExportError, Written, archive, containerd_names, temp_archive};
use crate::executor::Built;
use crate::platform::Platform;
use crate::registry::ImageRef;
use crate::store::Store;

/// containerd's default socket.
pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// The namespace when neither `namespace=` nor `$CONTAINERD_NAMESPACE` gives one (`ctr`'s
/// and `nerdctl`'s).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Why containerd could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// `$CONTAINERD_ADDRESS` names something other than a unix socket.
    #[error("CONTAINERD_ADDRESS={0}: only a unix socket is supported (a path, or unix://PATH)")]
    UnsupportedAddress(String),
    /// No `ctr` program on `PATH`.
    #[error(
        "type=containerd imports through containerd's `ctr` program, which is not on PATH \
         (it comes with the containerd package: apt-get install containerd)"
    )]
    NoCtr,
    /// Nothing answers on the socket.
    #[error("no containerd answers on {} (start containerd, or set CONTAINERD_ADDRESS)", socket.display())]
    Unreachable {
        /// The socket.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No `-t` and no `name=`: containerd keeps an image only under a name.
    #[error("type=containerd needs a name: give -t NAME or name=NAME")]
    NoName,
    /// `unpack=true`, but the host's platform is not among those built.
    #[error(
        "type=containerd,unpack=true unpacks the host's platform ({host}), which this build \
         does not make (it makes {built}): add it to --platform, or use unpack=false"
    )]
    UnpackPlatform {
        /// The host's platform.
        host: Platform,
        /// The platforms built, comma separated.
        built: String,
    },
    /// `ctr` could not be started or containerd refused the import.
    #[error("containerd on {} refused the import: {message}", socket.display())]
    Refused {
        /// The socket.
        socket: PathBuf,
        /// What `ctr` said.
        message: String,
    },
}

impl ContainerdError {
    /// The exit status: bad input (2) for an unsupported address, a missing name or an
    /// unpack of a platform not built; host not ready (3) without `ctr` or containerd;
    /// failed (1) when containerd refuses the import.
    pub fn exit_kind(&self) -> crate::ExitKind {
        match self {
            Self::UnsupportedAddress(_) | Self::NoName | Self::UnpackPlatform { .. } => {
                crate::ExitKind::BadInput
            }
            Self::NoCtr | Self::Unreachable { .. } => crate::ExitKind::HostNotReady,
            Self::Refused { .. } => crate::ExitKind::Failed,
        }
    }
}

/// containerd's socket: `$CONTAINERD_ADDRESS` (a path or `unix://PATH`), else
/// [`DEFAULT_CONTAINERD_SOCKET`].
///
/// # Errors
/// [`ContainerdError::UnsupportedAddress`] for another scheme (`tcp://`).
pub fn containerd_socket() -> Result<PathBuf, ContainerdError> {
    match std::env::var(crate::env::CONTAINERD_ADDRESS) {
        Ok(address) if !address.is_empty() => socket_of(&address),
        _ => Ok(PathBuf::from(DEFAULT_CONTAINERD_SOCKET)),
    }
}

fn socket_of(address: &str) -> Result<PathBuf, ContainerdError> {
    if let Some(path) = address.strip_prefix("unix://") {
        return Ok(PathBuf::from(path));
    }
    if address.contains("://") {
        return Err(ContainerdError::UnsupportedAddress(address.to_owned()));
    }
    Ok(PathBuf::from(address))
}

/// The namespace: `namespace=`, else `$CONTAINERD_NAMESPACE`, else `default`.
pub fn namespace(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_owned)
        .or_else(|| {
            std::env::var(crate::env::CONTAINERD_NAMESPACE)
                .ok()
                .filter(|namespace| !namespace.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// Whether `name` is a namespace containerd takes: alphanumeric words joined by single `.`,
/// `_` or `-`, at most 76 characters (containerd's `namespaces.Validate`).
pub fn valid_namespace(name: &str) -> bool {
    let mut previous_separator = true;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            previous_separator = false;
        } else if matches!(c, '.' | '_' | '-') && !previous_separator {
            previous_separator = true;
        } else {
            return false;
        }
    }
    !name.is_empty() && !previous_separator && name.len() <= 76
}

/// What the CLI checks before a build with `-o type=containerd`: a name to load under, the
/// host's platform among those built when unpacking, a `ctr` on `PATH`, and something
/// listening on containerd's socket. Returns the socket.
///
/// # Errors
/// [`ContainerdError`]: `NoName`, `UnpackPlatform`, `UnsupportedAddress`, `NoCtr`,
/// `Unreachable`.
pub fn preflight(
    names: usize,
    unpack: bool,
    targets: &[Platform],
) -> Result<PathBuf, ContainerdError> {
    if names == 0 {
        return Err(ContainerdError::NoName);
    }
    if unpack {
        unpack_platform(targets)?;
    }
    let socket = containerd_socket()?;
    ctr_program()?;
    answers(&socket)?;
    Ok(socket)
}

/// Whether something listens on the socket (a connection is made and closed).
fn answers(socket: &Path) -> Result<(), ContainerdError> {
    std::os::unix::net::UnixStream::connect(socket)
        .map(drop)
        .map_err(|source| ContainerdError::Unreachable {
            socket: socket.to_path_buf(),
            source,
        })
}

fn unpack_platform(targets: &[Platform]) -> Result<(), ContainerdError> {
    let host = crate::platform::host();
    if crate::platform::best_match(&host, targets).is_some() {
        return Ok(());
    }
    Err(ContainerdError::UnpackPlatform {
        host,
        built: super::report::platform_list(targets),
    })
}

fn ctr_program() -> Result<PathBuf, ContainerdError> {
    let path = std::env::var_os("PATH").ok_or(ContainerdError::NoCtr)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("ctr"))
        .find(|candidate| candidate.is_file())
        .ok_or(ContainerdError::NoCtr)
}

/// `-o type=containerd`: an OCI archive of the result with one `index.json` entry per
/// name (`io.containerd.image.name`: the full name, `docker.io/library/app:1`), imported
/// with `ctr images import --all-platforms` (`--no-unpack` unless `unpack`).
pub(super) async fn load_into_containerd(
    store: &Store,
    built: &Built,
    references: &[ImageRef],
    namespace_key: Option<&str>,
    unpack: bool,
) -> Result<Written, ExportError> {
    let failed = ExportError::Containerd;
    if references.is_empty() {
        return Err(failed(ContainerdError::NoName));
    }
    let platforms: Vec<Platform> = built.images.iter().map(|i| i.platform.clone()).collect();
    if unpack {
        unpack_platform(&platforms).map_err(failed)?;
    }
    let socket = containerd_socket().map_err(failed)?;
    let ctr = ctr_program().map_err(failed)?;
    let namespace = namespace(namespace_key);
    let names = containerd_names(references);
    let (top, task_names) = (built.result().clone(), names.clone());
    let archive_file = temp_archive(store, "containerd-", move |store, path, out| {
        archive::write_oci_named(store, &top, &task_names, false, path, out)
    })
    .await?;
    let mut command = tokio::process::Command::new(&ctr);
    command
        .arg("--address")
        .arg(&socket)
        .args(["--namespace", &namespace, "--connect-timeout", "10s"])
        .args(["images", "import", "--all-platforms"]);
    if !unpack {
        command.arg("--no-unpack");
    }
    command.arg(archive_file.path());
    command.stdin(std::process::Stdio::null());
    let output = command.output().await;
    // The archive is deleted only once `ctr` has read it.
    drop(archive_file);
    let refused = |message: String| {
        failed(ContainerdError::Refused {
            socket: socket.clone(),
            message,
        })
    };
    let output = output.map_err(|error| refused(format!("{}: {error}", ctr.display())))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let said = if said.is_empty() {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        } else {
            said
        };
        return Err(refused(format!(
            "ctr images import ({}): {said}",
            output.status
        )));
    }
    Ok(Written::LoadedIndex {
        into: format!(
            "containerd on {} (namespace {namespace}{})",
            socket.display(),
            if unpack {
                ", the host's platform unpacked"
            } else {
                ""
            }
        ),
        names: names.into_iter().map(|(_, name)| name).collect(),
        platforms,
    })
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("default", true)]
    #[case("k8s.io", true)]
    #[case("my_ns-1", true)]
    #[case("", false)]
    #[case("a..b", false)]
    #[case("-a", false)]
    #[case("a-", false)]
    #[case("a/b", false)]
    #[case("Ünï", false)]
    fn namespaces_as_containerd_validates_them(#[case] name: &str, #[case] valid: bool) {
        assert_eq!(valid_namespace(name), valid, "{name}");
    }

    #[test]
    fn addresses_are_unix_sockets() {
        assert_eq!(
            socket_of("unix:///run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        assert_eq!(
            socket_of("/run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        let error = socket_of("tcp://1.2.3.4:1").unwrap_err();
        assert_eq!(error.exit_kind(), crate::ExitKind::BadInput);
        assert!(error.to_string().contains("tcp://1.2.3.4:1"), "{error}");
    }

    #[test]
    fn a_missing_socket_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        let error = answers(&socket).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("no containerd answers on {}", socket.display())),
            "{error}"
        );
        assert_eq!(error.exit_kind(), crate::ExitKind::HostNotReady);
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        answers(&socket).unwrap();
    }

    #[test]
    fn unpack_needs_the_host_platform_built() {
        let host = crate::platform::host();
        assert!(unpack_platform(std::slice::from_ref(&host)).is_ok());
        let other = if host.architecture == "amd64" {
            Platform::parse("linux/s390x").unwrap()
        } else {
            Platform::parse("linux/amd64").unwrap()
        };
        let error = unpack_platform(&[other]).unwrap_err();
        assert!(error.to_string().contains("unpack=true"), "{error}");
        assert_eq!(error.exit_kind(), crate::ExitKind::BadInput);
    }
}
