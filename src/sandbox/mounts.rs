//! The mount plan of a step's root, carried out through [`Sys`] in the child, inside its own
//! mount namespace (so every mount disappears with the namespace, whatever happens).
//!
//! Order: make `/` private, overlay the layers on the root directory, `/proc` (with
//! Docker's read-only and masked paths), a minimal `/dev`, `/sys` read-only (with Docker's
//! masked paths), the host's `/etc/resolv.conf` and `/etc/hosts`, the extra binds, the
//! secrets, then `pivot_root`.
//!
//! Devices, as Docker's default device cgroup allows: only the nodes bound from the host
//! (`null`, `zero`, `full`, `random`, `urandom`, `tty`), the step's own `ptmx` and pts, and
//! the console of a terminal open. Everything else the step can write to is mounted `nodev`
//! (the root, `/dev`, `/dev/shm`, every extra bind): `mknod` still works (CAP_MKNOD is in
//! Docker's set, and the node may end up in the layer) but opening the node fails with
//! `EACCES`. `nodev` mounts rather than a cgroup device program: it needs no cgroup v2
//! (this project's machines run cgroup v1 for devices), no BPF, and no cgroup at all;
//! `--security=insecure` lifts it, as a privileged container gets every device.
//!
//! Mount targets (extra binds, secrets) resolve symbolic links inside the root, never on
//! the host (we have not pivoted yet): an image whose `/run/secrets` is a link to `/etc`
//! gets the mount in its own `/etc`.
//!
//! Mount points the image lacks (`/proc`, `/etc/hosts`, ...) must be created, and creating
//! them through the overlay puts them in the upper directory, i.e. in the step's layer. We
//! create them anyway and report each one as a [`Placeholder`]; the parent removes them from
//! the upper directory after the child is gone (see `sandbox::remove_placeholders`). The
//! alternatives are worse: a tmpfs over `/etc` would hide the image's files, and writing to
//! the lower directories is forbidden.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use super::error::SetupError;
use super::sys::{PathKind, Sys};

/// Device nodes bound from the host into the step's `/dev` (the OCI runtime spec's default
/// devices, <https://github.com/opencontainers/runtime-spec/blob/main/config-linux.md>).
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// `/proc` entries made read-only, as Docker does: writing them as root would change the
/// host's kernel settings even without capabilities (`/proc/sys` checks the uid only).
const READONLY_PROC: &[&str] = &["bus", "fs", "irq", "sys", "sysrq-trigger"];

/// Paths hidden, as Docker does (moby `oci/defaults.go`, `MaskedPaths`): a file behind
/// `/dev/null`, a directory behind an empty read-only tmpfs (kernel memory, keyrings,
/// timers, interrupts, firmware tables, power capping).
const MASKED: &[&str] = &[
    "proc/asound",
    "proc/acpi",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// A mount point created in the root for the step, to remove from the upper directory
/// afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placeholder {
    /// Path relative to the root (`etc/hosts`).
    pub path: PathBuf,
    /// A directory (else an empty file).
    pub is_dir: bool,
}

/// What [`setup_root`] needs.
#[derive(Debug, Clone)]
pub struct RootPlan<'a> {
    /// The directory the overlay is mounted on, which becomes `/`.
    pub root: &'a Path,
    /// Lower directories, top first.
    pub lower_dirs: &'a [PathBuf],
    /// Upper directory.
    pub upper_dir: &'a Path,
    /// Overlay work directory.
    pub work_dir: &'a Path,
    /// The file bound on `/etc/resolv.conf` (a private copy of the host's).
    pub resolv_conf: &'a Path,
    /// The file bound on `/etc/hosts` (a private copy of the host's).
    pub hosts: &'a Path,
    /// The terminal bound on `/dev/console` (the slave of the step's pseudo-terminal, as
    /// runc does with `terminal: true`); `None` for a step without a terminal.
    pub console: Option<&'a Path>,
    /// Extra bind mounts, after everything else.
    pub binds: &'a [super::spec::BindMount],
    /// Secrets, written on a tmpfs mounted on `secrets_dir` and bound on their targets.
    pub secrets: &'a [super::spec::SecretFile],
    /// An empty directory outside the root for the secrets' tmpfs.
    pub secrets_dir: &'a Path,
    /// Docker's device policy: `nodev` everywhere the step can create nodes (off for
    /// `--security=insecure`).
    pub restrict_devices: bool,
    /// The size of `/dev/shm`, bytes.
    pub shm_size: u64,
}

/// The overlayfs option string. `\`, `:` and `,` in paths are escaped with a backslash, as
/// overlayfs reads them (a store may name snapshots `sha256:<hex>`).
///
/// `index=off,redirect_dir=off,metacopy=off`: the upper directory must be a plain change set
/// that `layer::diff` can read as Docker's overlay2 driver does: whole copied-up files, and
/// classic whiteouts, never redirect or metacopy xattrs pointing into the lower layers.
///
/// # Errors
/// A path that is not UTF-8.
pub fn overlay_options(
    lower_dirs: &[PathBuf],
    upper_dir: &Path,
    work_dir: &Path,
) -> Result<String, SetupError> {
    let text = |path: &Path| -> Result<String, SetupError> {
        let text = path.to_str().ok_or_else(|| {
            SetupError::new("overlay", format!("{} is not UTF-8", path.display()))
        })?;
        let mut escaped = String::with_capacity(text.len());
        for character in text.chars() {
            if matches!(character, '\\' | ':' | ',') {
                escaped.push('\\');
            }
            escaped.push(character);
        }
        Ok(escaped)
    };
    let lower = lower_dirs
        .iter()
        .map(|dir| text(dir))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!(
        "lowerdir={},upperdir={},workdir={},{OVERLAY_SETTINGS}",
        lower.join(":"),
        text(upper_dir)?,
        text(work_dir)?
    ))
}

/// See [`overlay_options`].
const OVERLAY_SETTINGS: &str = "index=off,redirect_dir=off,metacopy=off";

/// `mount(2)` copies its option string into one page.
const OPTIONS_LIMIT: usize = 4096;

/// Mounts the overlay: with `mount(2)` when the option string fits in a page, else with the
/// new mount API, one layer at a time (Linux 6.8+; older kernels cannot stack that many
/// layers by path, Docker's overlay2 works around it with short symlinks).
fn mount_overlay(sys: &dyn Sys, plan: &RootPlan<'_>) -> Result<(), SetupError> {
    let options = overlay_options(plan.lower_dirs, plan.upper_dir, plan.work_dir)?;
    let flags = if plan.restrict_devices {
        MsFlags::MS_NODEV
    } else {
        MsFlags::empty()
    };
    if options.len() < OPTIONS_LIMIT {
        return mount(
            sys,
            Some(Path::new("overlay")),
            plan.root,
            Some("overlay"),
            flags,
            Some(&options),
        );
    }
    let settings = OVERLAY_SETTINGS
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .collect::<Vec<_>>();
    sys.mount_overlay_layers(
        plan.root,
        plan.lower_dirs,
        plan.upper_dir,
        plan.work_dir,
        &settings,
        plan.restrict_devices,
    )
    .map_err(|errno| {
        SetupError::errno(
            "mount",
            format!(
                "cannot mount overlay with {} layers on {} (more than fit in mount(2)'s \
                 options need Linux 6.8 or later)",
                plan.lower_dirs.len(),
                plan.root.display()
            ),
            errno,
        )
    })
}

fn mount(
    sys: &dyn Sys,
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), SetupError> {
    sys.mount(source, target, fstype, flags, data)
        .map_err(|errno| {
            SetupError::errno(
                "mount",
                format!(
                    "cannot mount {} on {}",
                    fstype.map_or_else(
                        || source.map_or_else(String::new, |source| source.display().to_string()),
                        str::to_owned
                    ),
                    target.display()
                ),
                errno,
            )
        })
}

/// Makes the directory `root/name` (one component) exist, refusing a symbolic link (it
/// could point anywhere on the host: we have not pivoted yet).
fn ensure_dir(
    sys: &dyn Sys,
    root: &Path,
    name: &str,
    placeholders: &mut Vec<Placeholder>,
) -> Result<PathBuf, SetupError> {
    let path = root.join(name);
    match sys.kind(&path) {
        PathKind::Directory => {}
        PathKind::Missing => {
            sys.mkdir(&path).map_err(|error| {
                SetupError::new("mount", format!("cannot create /{name}: {error}"))
            })?;
            placeholders.push(Placeholder {
                path: PathBuf::from(name),
                is_dir: true,
            });
        }
        kind => {
            return Err(SetupError::new(
                "mount",
                format!(
                    "/{name} in the image is a {kind:?}, not a directory: refusing to mount on it"
                ),
            ));
        }
    }
    Ok(path)
}

/// Sets up the root: everything up to, not including, `pivot_root`. Returns the mount
/// points it had to create.
///
/// # Errors
/// The first mount that fails, as a [`SetupError`].
pub fn setup_root(sys: &dyn Sys, plan: &RootPlan<'_>) -> Result<Vec<Placeholder>, SetupError> {
    let root = plan.root;
    let mut placeholders = Vec::new();
    // systemd makes `/` a shared mount: without MS_PRIVATE our mounts would propagate back
    // into the host's namespace (mount_namespaces(7), "Shared subtrees").
    mount(
        sys,
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    mount_overlay(sys, plan)?;

    let proc_dir = ensure_dir(sys, root, "proc", &mut placeholders)?;
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        sys,
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        hidden,
        None,
    )?;
    for name in READONLY_PROC {
        let path = proc_dir.join(name);
        if sys.kind(&path) != PathKind::Missing {
            // A bind mount of the path on itself, then a read-only remount of that bind:
            // MS_RDONLY is ignored on the first MS_BIND call (mount(2)).
            mount(
                sys,
                Some(&path),
                &path,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            mount(
                sys,
                None,
                &path,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | hidden,
                None,
            )?;
        }
    }
    mask(sys, root, "proc/")?;

    let dev = ensure_dir(sys, root, "dev", &mut placeholders)?;
    let nodev = if plan.restrict_devices {
        MsFlags::MS_NODEV
    } else {
        MsFlags::empty()
    };
    mount(
        sys,
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | nodev,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let node = dev.join(name);
        // The node is a file on the fresh tmpfs, not in the image: no placeholder. Binding
        // the host's node works where mknod would not (user namespaces, nodev mounts).
        sys.create_file(&node).map_err(|error| {
            SetupError::new("mount", format!("cannot create /dev/{name}: {error}"))
        })?;
        let host = Path::new("/dev").join(name);
        mount(sys, Some(&host), &node, None, MsFlags::MS_BIND, None)?;
    }
    if let Some(console) = plan.console {
        let node = dev.join("console");
        sys.create_file(&node).map_err(|error| {
            SetupError::new("mount", format!("cannot create /dev/console: {error}"))
        })?;
        mount(sys, Some(console), &node, None, MsFlags::MS_BIND, None)?;
    }
    let create_dir = |name: &str| {
        let path = dev.join(name);
        sys.mkdir(&path)
            .map_err(|error| {
                SetupError::new("mount", format!("cannot create /dev/{name}: {error}"))
            })
            .map(|()| path)
    };
    let pts = create_dir("pts")?;
    // A private devpts instance: the step's ptys are not the host's.
    mount(
        sys,
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = create_dir("shm")?;
    mount(
        sys,
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        hidden,
        Some(&format!("mode=1777,size={}", plan.shm_size)),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        sys.symlink(Path::new(target), &dev.join(link))
            .map_err(|error| {
                SetupError::new("mount", format!("cannot create /dev/{link}: {error}"))
            })?;
    }

    let sys_dir = ensure_dir(sys, root, "sys", &mut placeholders)?;
    // A fresh sysfs shows the network devices of the mounting process's network namespace,
    // so with --network=none the step sees only its own `lo` there too.
    mount(
        sys,
        Some(Path::new("sysfs")),
        &sys_dir,
        Some("sysfs"),
        MsFlags::MS_RDONLY | hidden,
        None,
    )?;
    mask(sys, root, "sys/")?;

    bind_etc_files(sys, plan, &mut placeholders)?;
    for bind in plan.binds {
        bind_extra(sys, root, bind, plan.restrict_devices, &mut placeholders)?;
    }
    if !plan.secrets.is_empty() {
        // A tmpfs of this mount namespace only: the secrets never reach a disk, and go
        // away with the namespace, however the build ends.
        mount(
            sys,
            Some(Path::new("tmpfs")),
            plan.secrets_dir,
            Some("tmpfs"),
            hidden,
            Some("mode=700,size=16m"),
        )?;
        for (index, secret) in plan.secrets.iter().enumerate() {
            let file = plan.secrets_dir.join(index.to_string());
            sys.write_file(&file, &secret.content, secret.mode, secret.uid, secret.gid)
                .map_err(|error| {
                    SetupError::new(
                        "mount",
                        format!(
                            "cannot write the secret for {}: {error}",
                            secret.target.display()
                        ),
                    )
                })?;
            let bind = super::spec::BindMount {
                source: super::spec::MountSource::Host(file),
                target: secret.target.clone(),
                readonly: true,
            };
            bind_extra(sys, root, &bind, true, &mut placeholders)?;
        }
    }
    Ok(placeholders)
}

/// Hides Docker's masked paths under `prefix` (`proc/`, `sys/`): files behind `/dev/null`,
/// directories behind an empty read-only tmpfs; paths the kernel does not have are skipped.
fn mask(sys: &dyn Sys, root: &Path, prefix: &str) -> Result<(), SetupError> {
    for relative in MASKED.iter().filter(|path| path.starts_with(prefix)) {
        let path = root.join(relative);
        match sys.kind(&path) {
            PathKind::Directory => mount(
                sys,
                Some(Path::new("tmpfs")),
                &path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )?,
            PathKind::Missing | PathKind::Symlink => {}
            _ => mount(
                sys,
                Some(Path::new("/dev/null")),
                &path,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
        }
    }
    Ok(())
}

/// Resolves `target` (absolute, inside the step) against `root` the way the kernel would
/// after `chroot(root)`: `..` stops at the root, and every symbolic link met, absolute or
/// relative, is followed inside the root (at most 40, as the kernel allows). Missing
/// directories on the way are created (each a placeholder), and the last component, when
/// missing, as a directory or an empty file (`is_dir`). Returns the path relative to the
/// root.
fn resolve_in_root(
    sys: &dyn Sys,
    root: &Path,
    target: &Path,
    is_dir: bool,
    placeholders: &mut Vec<Placeholder>,
) -> Result<PathBuf, SetupError> {
    use std::collections::VecDeque;
    use std::path::Component;
    let bad =
        |why: &str| SetupError::new("mount", format!("mount target {}: {why}", target.display()));
    let mut pending: VecDeque<std::ffi::OsString> = target
        .components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    if pending.is_empty() {
        return Err(bad("it is the root"));
    }
    let mut resolved = PathBuf::new();
    let mut links = 0;
    let mut created_by_others = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let path = root.join(&candidate);
        let last = pending.is_empty();
        match sys.kind(&path) {
            PathKind::Symlink => {
                links += 1;
                if links > 40 {
                    return Err(bad("too many levels of symbolic links"));
                }
                let link = sys.read_link(&path).map_err(|error| {
                    bad(&format!(
                        "cannot read the link /{}: {error}",
                        candidate.display()
                    ))
                })?;
                if link.is_absolute() {
                    resolved = PathBuf::new();
                }
                for component in link.components().rev() {
                    match component {
                        Component::Normal(part) => pending.push_front(part.to_os_string()),
                        Component::ParentDir => pending.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            PathKind::Directory if !last || is_dir => resolved = candidate,
            PathKind::File if last && !is_dir => resolved = candidate,
            PathKind::Missing => {
                let made = if last && !is_dir {
                    sys.create_file(&path)
                } else {
                    sys.mkdir(&path)
                };
                // Another step made it in the meantime: a mount point inside a shared cache
                // mount (`/foo/bar/baz` in the cache at `/foo/bar`) is made by every step
                // that mounts it, at once. Look at what is there now, as if it had been
                // there; it is not ours to remove.
                if matches!(&made, Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists)
                    && created_by_others < 40
                {
                    created_by_others += 1;
                    pending.push_front(name);
                    continue;
                }
                made.map_err(|error| {
                    SetupError::new(
                        "mount",
                        format!("cannot create /{}: {error}", candidate.display()),
                    )
                })?;
                placeholders.push(Placeholder {
                    path: candidate.clone(),
                    is_dir: !last || is_dir,
                });
                resolved = candidate;
            }
            kind => {
                return Err(SetupError::new(
                    "mount",
                    format!(
                        "/{} in the image is a {kind:?}: refusing to mount on it",
                        candidate.display()
                    ),
                ));
            }
        }
    }
    if resolved.as_os_str().is_empty() {
        return Err(bad("it resolves to the root"));
    }
    Ok(resolved)
}

/// One extra bind mount: its mount point resolved inside the root and made (each missing
/// component a placeholder), bound, and remounted read-only when asked and `nodev,nosuid`
/// under the device policy (a bind keeps the flags of its source's mount otherwise).
fn bind_extra(
    sys: &dyn Sys,
    root: &Path,
    bind: &super::spec::BindMount,
    restrict_devices: bool,
    placeholders: &mut Vec<Placeholder>,
) -> Result<(), SetupError> {
    if !bind.target.is_absolute() {
        return Err(SetupError::new(
            "mount",
            format!("bad mount target {}", bind.target.display()),
        ));
    }
    let (host, tmpfs_size) = match &bind.source {
        super::spec::MountSource::Host(path) => (Some(path.as_path()), None),
        super::spec::MountSource::Tmpfs { size } => (None, Some(*size)),
    };
    let source_is_dir = host.is_none_or(|host| sys.kind(host) == PathKind::Directory);
    let relative = resolve_in_root(sys, root, &bind.target, source_is_dir, placeholders)?;
    let target = root.join(&relative);
    if let Some(size) = tmpfs_size {
        // BuildKit's tmpfs mount: `nosuid` (and `ro`, `size=` when asked), plus our device
        // policy.
        let mut flags = MsFlags::MS_NOSUID;
        if bind.readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        if restrict_devices {
            flags |= MsFlags::MS_NODEV;
        }
        let data = size.map(|size| format!("size={size}"));
        return mount(
            sys,
            Some(Path::new("tmpfs")),
            &target,
            Some("tmpfs"),
            flags,
            data.as_deref(),
        );
    }
    mount(
        sys,
        host,
        &target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let mut flags = MsFlags::empty();
    if bind.readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    if restrict_devices {
        flags |= MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    }
    if !flags.is_empty() {
        mount(
            sys,
            None,
            &target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_REC | flags,
            None,
        )?;
    }
    Ok(())
}

/// Binds the private copies of the host's `/etc/resolv.conf` and `/etc/hosts`. A bind mount
/// changes nothing in the overlay, so an existing file stays as it is in the layer; a missing
/// one is created as a placeholder. A symbolic link is left alone: following it before
/// `pivot_root` would resolve against the host's root.
fn bind_etc_files(
    sys: &dyn Sys,
    plan: &RootPlan<'_>,
    placeholders: &mut Vec<Placeholder>,
) -> Result<(), SetupError> {
    let etc = plan.root.join("etc");
    match sys.kind(&etc) {
        PathKind::Directory => {}
        PathKind::Missing => {
            ensure_dir(sys, plan.root, "etc", placeholders)?;
        }
        _ => return Ok(()),
    }
    for (name, source) in [("resolv.conf", plan.resolv_conf), ("hosts", plan.hosts)] {
        let target = etc.join(name);
        match sys.kind(&target) {
            PathKind::File => {}
            PathKind::Missing => {
                sys.create_file(&target).map_err(|error| {
                    SetupError::new("mount", format!("cannot create /etc/{name}: {error}"))
                })?;
                placeholders.push(Placeholder {
                    path: Path::new("etc").join(name),
                    is_dir: false,
                });
            }
            _ => continue,
        }
        mount(sys, Some(source), &target, None, MsFlags::MS_BIND, None)?;
    }
    Ok(())
}

/// Makes `root` the root directory and detaches the old one.
///
/// `pivot_root(".", ".")` stacks the old root on top of the new one at `/`; unmounting `.`
/// with `MNT_DETACH` then takes the old root away (pivot_root(2), NOTES; runc does the
/// same), so no path inside the step reaches the host's file system.
///
/// # Errors
/// The failing call.
pub fn pivot(sys: &dyn Sys, root: &Path) -> Result<(), SetupError> {
    sys.chdir(root).map_err(|errno| {
        SetupError::errno(
            "pivot_root",
            format!("cannot enter {}", root.display()),
            errno,
        )
    })?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .map_err(|errno| SetupError::errno("pivot_root", "pivot_root failed".to_owned(), errno))?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)
        .map_err(|errno| {
            SetupError::errno("pivot_root", "cannot detach the old root".to_owned(), errno)
        })?;
    sys.chdir(Path::new("/"))
        .map_err(|errno| SetupError::errno("pivot_root", "cannot enter /".to_owned(), errno))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::sys::{Call, RecordingSys};

    fn plan<'a>(lower: &'a [PathBuf]) -> RootPlan<'a> {
        RootPlan {
            root: Path::new("/s/root"),
            lower_dirs: lower,
            upper_dir: Path::new("/s/upper"),
            work_dir: Path::new("/s/work"),
            resolv_conf: Path::new("/s/resolv.conf"),
            hosts: Path::new("/s/hosts"),
            console: None,
            binds: &[],
            secrets: &[],
            secrets_dir: Path::new("/s/secrets"),
            restrict_devices: false,
            shm_size: super::super::spec::DEFAULT_SHM_SIZE,
        }
    }

    #[test]
    fn extra_binds_make_placeholders_and_remount_read_only() {
        let sys = RecordingSys::default();
        for dir in ["proc", "dev", "sys", "etc", "run"] {
            sys.dirs.borrow_mut().insert(Path::new("/s/root").join(dir));
        }
        sys.dirs.borrow_mut().insert(PathBuf::from("/host/cache"));
        sys.files.borrow_mut().insert(PathBuf::from("/host/secret"));
        let binds = [
            crate::sandbox::BindMount {
                source: crate::sandbox::MountSource::Host(PathBuf::from("/host/secret")),
                target: PathBuf::from("/run/secrets/token"),
                readonly: true,
            },
            crate::sandbox::BindMount {
                source: crate::sandbox::MountSource::Host(PathBuf::from("/host/cache")),
                target: PathBuf::from("/root/.cache"),
                readonly: false,
            },
        ];
        let lower = [PathBuf::from("/l")];
        let mut plan = plan(&lower);
        plan.binds = &binds;
        let placeholders = setup_root(&sys, &plan).unwrap();
        let made: Vec<(String, bool)> = placeholders
            .iter()
            .map(|p| (p.path.display().to_string(), p.is_dir))
            .filter(|(path, _)| path.starts_with("run") || path.starts_with("root"))
            .collect();
        assert_eq!(
            made,
            [
                ("run/secrets".to_owned(), true),
                ("run/secrets/token".to_owned(), false),
                ("root".to_owned(), true),
                ("root/.cache".to_owned(), true),
            ]
        );
        let got = mounts(&sys.take());
        let tail: Vec<(String, String)> = got[got.len() - 3..].to_vec();
        assert_eq!(
            tail,
            [
                (
                    "/s/root/run/secrets/token".to_owned(),
                    "bind /host/secret".to_owned()
                ),
                ("/s/root/run/secrets/token".to_owned(), "remount".to_owned()),
                (
                    "/s/root/root/.cache".to_owned(),
                    "bind /host/cache".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_tmpfs_mount_is_a_fresh_tmpfs_in_order_with_the_binds() {
        let sys = RecordingSys::default();
        for dir in ["proc", "dev", "sys", "etc", "run"] {
            sys.dirs.borrow_mut().insert(Path::new("/s/root").join(dir));
        }
        sys.dirs.borrow_mut().insert(PathBuf::from("/host/cache"));
        let binds = [
            crate::sandbox::BindMount {
                source: crate::sandbox::MountSource::Tmpfs {
                    size: Some(128 << 20),
                },
                target: PathBuf::from("/scratch"),
                readonly: false,
            },
            crate::sandbox::BindMount {
                source: crate::sandbox::MountSource::Host(PathBuf::from("/host/cache")),
                target: PathBuf::from("/scratch/cache"),
                readonly: false,
            },
        ];
        let lower = [PathBuf::from("/l")];
        let mut plan = plan(&lower);
        plan.binds = &binds;
        plan.restrict_devices = true;
        let placeholders = setup_root(&sys, &plan).unwrap();
        // The mount point the image lacks is a placeholder, removed from the layer.
        assert!(
            placeholders
                .iter()
                .any(|p| p.path == Path::new("scratch") && p.is_dir)
        );
        let calls = sys.take();
        let tmpfs = calls.iter().position(|call| {
            matches!(call, Call::Mount { target, fstype: Some(fstype), data: Some(data), flags, .. }
                if target == Path::new("/s/root/scratch") && fstype == "tmpfs"
                    && data == "size=134217728"
                    && flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV))
        });
        let cache = calls.iter().position(|call| {
            matches!(call, Call::Mount { target, source: Some(source), .. }
                if target == Path::new("/s/root/scratch/cache") && source == Path::new("/host/cache"))
        });
        assert!(
            tmpfs.is_some() && cache.is_some() && tmpfs < cache,
            "{calls:?}"
        );
    }

    fn mounts(calls: &[Call]) -> Vec<(String, String)> {
        calls
            .iter()
            .filter_map(|call| match call {
                Call::Mount {
                    target,
                    fstype,
                    source,
                    ..
                } => Some((
                    target.display().to_string(),
                    fstype
                        .clone()
                        .or_else(|| {
                            source
                                .as_ref()
                                .map(|source| format!("bind {}", source.display()))
                        })
                        .unwrap_or_else(|| "remount".to_owned()),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_full_image_gets_mounts_in_order_and_no_placeholders() {
        let sys = RecordingSys::default();
        for dir in ["proc", "dev", "sys", "etc"] {
            sys.dirs.borrow_mut().insert(Path::new("/s/root").join(dir));
        }
        for file in ["etc/hosts", "etc/resolv.conf"] {
            sys.files
                .borrow_mut()
                .insert(Path::new("/s/root").join(file));
        }
        let lower = [PathBuf::from("/l/top"), PathBuf::from("/l/base")];
        let placeholders = setup_root(&sys, &plan(&lower)).unwrap();
        assert!(placeholders.is_empty(), "{placeholders:?}");
        let calls = sys.take();
        let expected_start = [
            ("/", "remount"),
            ("/s/root", "overlay"),
            ("/s/root/proc", "proc"),
            ("/s/root/dev", "tmpfs"),
            ("/s/root/dev/null", "bind /dev/null"),
        ];
        let got = mounts(&calls);
        for (index, (target, kind)) in expected_start.iter().enumerate() {
            assert_eq!(
                (got[index].0.as_str(), got[index].1.as_str()),
                (*target, *kind),
                "{got:#?}"
            );
        }
        assert!(got.contains(&("/s/root/dev/pts".into(), "devpts".into())));
        assert!(got.contains(&("/s/root/dev/shm".into(), "tmpfs".into())));
        assert!(got.contains(&("/s/root/sys".into(), "sysfs".into())));
        assert_eq!(
            got[got.len() - 2..],
            [
                (
                    "/s/root/etc/resolv.conf".into(),
                    "bind /s/resolv.conf".into()
                ),
                ("/s/root/etc/hosts".into(), "bind /s/hosts".into())
            ]
        );
        match &calls[1] {
            Call::Mount {
                data: Some(data), ..
            } => assert_eq!(
                data,
                "lowerdir=/l/top:/l/base,upperdir=/s/upper,workdir=/s/work,index=off,\
                 redirect_dir=off,metacopy=off"
            ),
            other => panic!("{other:?}"),
        }
        match &calls[0] {
            Call::Mount { flags, .. } => assert_eq!(*flags, MsFlags::MS_REC | MsFlags::MS_PRIVATE),
            other => panic!("{other:?}"),
        }
        // Device nodes are bound, every one of them.
        for device in DEVICES {
            assert!(got.contains(&(
                format!("/s/root/dev/{device}"),
                format!("bind /dev/{device}")
            )));
        }
        // /sys is read-only.
        assert!(calls.iter().any(|call| matches!(call,
            Call::Mount { fstype: Some(fstype), flags, .. }
                if fstype == "sysfs" && flags.contains(MsFlags::MS_RDONLY))));
    }

    #[test]
    fn a_terminal_is_bound_on_dev_console_only_when_there_is_one() {
        let sys = RecordingSys::default();
        setup_root(&sys, &plan(&[PathBuf::from("/l")])).unwrap();
        let got = mounts(&sys.take());
        assert!(!got.iter().any(|(target, _)| target.ends_with("console")));

        let sys = RecordingSys::default();
        let lower = [PathBuf::from("/l")];
        let mut with_console = plan(&lower);
        with_console.console = Some(Path::new("/dev/pts/7"));
        let placeholders = setup_root(&sys, &with_console).unwrap();
        let calls = sys.take();
        assert!(calls.contains(&Call::CreateFile(PathBuf::from("/s/root/dev/console"))));
        let got = mounts(&calls);
        let dev = got
            .iter()
            .position(|mount| *mount == ("/s/root/dev".into(), "tmpfs".into()))
            .unwrap();
        let console = got
            .iter()
            .position(|mount| *mount == ("/s/root/dev/console".into(), "bind /dev/pts/7".into()))
            .unwrap();
        assert!(dev < console, "{got:#?}");
        // The node is on the /dev tmpfs, not in the image: nothing to clean up.
        assert!(
            !placeholders
                .iter()
                .any(|placeholder| placeholder.path.ends_with("console"))
        );
    }

    #[test]
    fn an_empty_image_gets_placeholders_for_every_mount_point() {
        let sys = RecordingSys::default();
        let placeholders = setup_root(&sys, &plan(&[PathBuf::from("/l/empty")])).unwrap();
        let paths = placeholders
            .iter()
            .map(|placeholder| (placeholder.path.display().to_string(), placeholder.is_dir))
            .collect::<Vec<_>>();
        assert_eq!(
            paths,
            [
                ("proc".into(), true),
                ("dev".into(), true),
                ("sys".into(), true),
                ("etc".into(), true),
                ("etc/resolv.conf".into(), false),
                ("etc/hosts".into(), false)
            ]
        );
    }

    #[test]
    fn proc_read_only_and_masked_paths_follow_docker() {
        let sys = RecordingSys::default();
        sys.dirs
            .borrow_mut()
            .insert(PathBuf::from("/s/root/proc/sys"));
        sys.files
            .borrow_mut()
            .insert(PathBuf::from("/s/root/proc/kcore"));
        setup_root(&sys, &plan(&[PathBuf::from("/l")])).unwrap();
        let calls = sys.take();
        assert!(calls.iter().any(|call| matches!(call,
            Call::Mount { target, flags, .. }
                if target == Path::new("/s/root/proc/sys") && flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_REMOUNT))));
        assert!(calls.iter().any(|call| matches!(call,
            Call::Mount { target, source: Some(source), .. }
                if target == Path::new("/s/root/proc/kcore") && source == Path::new("/dev/null"))));
    }

    #[test]
    fn symlinked_mount_points_are_refused_or_skipped() {
        let sys = RecordingSys::default();
        sys.symlinks
            .borrow_mut()
            .insert(PathBuf::from("/s/root/proc"));
        let error = setup_root(&sys, &plan(&[PathBuf::from("/l")])).unwrap_err();
        assert!(error.detail.contains("/proc"), "{error:?}");

        let sys = RecordingSys::default();
        sys.dirs.borrow_mut().insert(PathBuf::from("/s/root/etc"));
        sys.symlinks
            .borrow_mut()
            .insert(PathBuf::from("/s/root/etc/resolv.conf"));
        setup_root(&sys, &plan(&[PathBuf::from("/l")])).unwrap();
        let got = mounts(&sys.take());
        assert!(
            !got.iter()
                .any(|(target, _)| target.ends_with("resolv.conf"))
        );
        assert!(got.iter().any(|(target, _)| target.ends_with("etc/hosts")));
    }

    #[test]
    fn mount_targets_resolve_links_inside_the_root() {
        // /run -> /etc (absolute), /etc/link -> ../../../srv (climbs past the root):
        // both stay inside /s/root, never the host's /etc or /srv.
        let sys = RecordingSys::default();
        for dir in ["proc", "dev", "sys", "etc", "srv"] {
            sys.dirs.borrow_mut().insert(Path::new("/s/root").join(dir));
        }
        for (link, target) in [("run", "/etc"), ("etc/link", "../../../srv")] {
            let path = Path::new("/s/root").join(link);
            sys.symlinks.borrow_mut().insert(path.clone());
            sys.link_targets
                .borrow_mut()
                .insert(path, PathBuf::from(target));
        }
        sys.files.borrow_mut().insert(PathBuf::from("/host/secret"));
        let binds = [
            crate::sandbox::BindMount {
                source: crate::sandbox::MountSource::Host(PathBuf::from("/host/secret")),
                target: PathBuf::from("/run/secrets/token"),
                readonly: true,
            },
            crate::sandbox::BindMount {
                source: crate::sandbox::MountSource::Host(PathBuf::from("/host/secret")),
                target: PathBuf::from("/etc/link/token"),
                readonly: true,
            },
        ];
        let lower = [PathBuf::from("/l")];
        let mut plan = plan(&lower);
        plan.binds = &binds;
        plan.restrict_devices = true;
        let placeholders = setup_root(&sys, &plan).unwrap();
        let calls = sys.take();
        let got = mounts(&calls);
        assert!(got.contains(&(
            "/s/root/etc/secrets/token".to_owned(),
            "bind /host/secret".to_owned()
        )));
        assert!(got.contains(&(
            "/s/root/srv/token".to_owned(),
            "bind /host/secret".to_owned()
        )));
        assert!(
            placeholders
                .iter()
                .any(|placeholder| placeholder.path == Path::new("etc/secrets")),
            "{placeholders:?}"
        );
        // Under the device policy, each bind is remounted nodev and nosuid.
        assert!(calls.iter().any(|call| matches!(call,
            Call::Mount { target, source: None, flags, .. }
                if target == Path::new("/s/root/etc/secrets/token")
                    && flags.contains(MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_RDONLY))));
    }

    #[test]
    fn a_mount_point_made_by_another_step_at_the_same_time_is_used() {
        // Two steps mount the same cache at /foo/bar and make /foo/bar/baz inside it at
        // once (BuildKit's testCacheMountParallel): the one whose mkdir loses gets EEXIST.
        let sys = RecordingSys::default();
        for dir in ["proc", "dev", "sys", "foo", "foo/bar"] {
            sys.dirs.borrow_mut().insert(Path::new("/s/root").join(dir));
        }
        sys.dirs.borrow_mut().insert(PathBuf::from("/cache"));
        sys.raced
            .borrow_mut()
            .insert(PathBuf::from("/s/root/foo/bar/baz"));
        let binds = [crate::sandbox::BindMount {
            source: crate::sandbox::MountSource::Host(PathBuf::from("/cache")),
            target: PathBuf::from("/foo/bar/baz"),
            readonly: false,
        }];
        let lower = [PathBuf::from("/l")];
        let mut plan = plan(&lower);
        plan.binds = &binds;
        let placeholders = setup_root(&sys, &plan).unwrap();
        let got = mounts(&sys.take());
        assert!(got.contains(&("/s/root/foo/bar/baz".to_owned(), "bind /cache".to_owned())));
        // Not ours: nothing to remove after the step.
        assert!(
            !placeholders
                .iter()
                .any(|placeholder| placeholder.path == Path::new("foo/bar/baz")),
            "{placeholders:?}"
        );
    }

    #[test]
    fn secrets_go_on_a_tmpfs_outside_the_root_then_bound() {
        let sys = RecordingSys::default();
        let secrets = [crate::sandbox::SecretFile {
            content: b"value".to_vec(),
            target: PathBuf::from("/run/secrets/id"),
            mode: 0o400,
            uid: 0,
            gid: 0,
        }];
        let lower = [PathBuf::from("/l")];
        let mut plan = plan(&lower);
        plan.secrets = &secrets;
        setup_root(&sys, &plan).unwrap();
        let calls = sys.take();
        let tmpfs = calls
            .iter()
            .position(|call| {
                matches!(call, Call::Mount { target, fstype: Some(fstype), .. }
                if target == Path::new("/s/secrets") && fstype == "tmpfs")
            })
            .unwrap();
        let written = calls
            .iter()
            .position(|call| {
                *call
                    == Call::WriteFile {
                        path: PathBuf::from("/s/secrets/0"),
                        mode: 0o400,
                        uid: 0,
                        gid: 0,
                    }
            })
            .unwrap();
        let bound = calls
            .iter()
            .position(|call| matches!(call, Call::Mount { source: Some(source), target, .. }
                if source == Path::new("/s/secrets/0") && target == Path::new("/s/root/run/secrets/id")))
            .unwrap();
        assert!(tmpfs < written && written < bound, "{calls:#?}");
    }

    #[test]
    fn pivot_is_one_pivot_root_then_detach() {
        let sys = RecordingSys::default();
        pivot(&sys, Path::new("/s/root")).unwrap();
        assert_eq!(
            sys.take(),
            [
                Call::Chdir(PathBuf::from("/s/root")),
                Call::PivotRoot {
                    new_root: PathBuf::from("."),
                    put_old: PathBuf::from(".")
                },
                Call::Umount {
                    target: PathBuf::from("."),
                    flags: MntFlags::MNT_DETACH
                },
                Call::Chdir(PathBuf::from("/")),
            ]
        );
    }

    #[test]
    fn overlay_paths_are_escaped() {
        let options = overlay_options(
            &[PathBuf::from("/s/sha256:ab"), PathBuf::from("/s/a,b\\c")],
            Path::new("/u"),
            Path::new("/w"),
        )
        .unwrap();
        assert!(
            options.starts_with(r"lowerdir=/s/sha256\:ab:/s/a\,b\\c,upperdir=/u,"),
            "{options}"
        );
    }

    #[test]
    fn layers_beyond_one_page_of_options_use_the_new_mount_api() {
        let lower = (0..60)
            .map(|index| PathBuf::from(format!("/var/lib/xbuild/snapshots/{index:0>64}")))
            .collect::<Vec<_>>();
        let sys = RecordingSys::default();
        setup_root(&sys, &plan(&lower)).unwrap();
        let calls = sys.take();
        assert!(
            matches!(&calls[1], Call::OverlayLayers { lower_dirs, .. } if *lower_dirs == lower),
            "{:?}",
            calls[1]
        );
    }
}
