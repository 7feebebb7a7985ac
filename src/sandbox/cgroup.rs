//! The step's pids limit: a cgroup of its own with `pids.max`, so that a fork bomb in a
//! `RUN` stops at the limit instead of at the host's (`kernel.pid_max`, shared with every
//! other process of the machine).
//!
//! Where: cgroup v2 when `/sys/fs/cgroup` is the unified hierarchy with the `pids`
//! controller (`/sys/fs/cgroup/xbuild/step-<pid>`, `+pids` enabled in the root's and
//! `xbuild`'s `cgroup.subtree_control`; the root cgroup may hold processes and delegate at
//! once), else the v1 `pids` hierarchy (`/sys/fs/cgroup/pids/xbuild/step-<pid>`), as
//! podman's cgroupfs manager does. `<pid>` is the re-executed child's: it creates the
//! cgroup before it forks the step's PID 1, PID 1 moves itself in before it runs anything
//! of the step (so every process of the step is inside), and the child removes it once PID
//! 1 is gone (all of the step's processes with it: they were in its PID namespace).
//!
//! Without a reachable `pids` controller (none mounted at `/sys/fs/cgroup`, as under `ip
//! netns exec`, or a read-only cgroupfs in a container), a limit the user asked for fails
//! the step with that reason; the default limit is then not applied.
//!
//! A child killed with the build leaves an empty cgroup behind: the next step removes the
//! `step-<pid>` cgroups whose process is gone (an empty cgroup is all `rmdir` removes).
//!
//! It must not touch any cgroup but its own `xbuild` directory's.

use std::path::{Path, PathBuf};

use super::error::SetupError;

/// The cgroup v2 mount point.
const UNIFIED: &str = "/sys/fs/cgroup";
/// The cgroup v1 `pids` hierarchy.
const V1_PIDS: &str = "/sys/fs/cgroup/pids";

/// A step's cgroup, removed by [`StepCgroup::remove`].
#[derive(Debug)]
pub struct StepCgroup {
    dir: PathBuf,
}

impl StepCgroup {
    /// Creates the cgroup of the child `pid` with `pids.max` set to `limit`. `None` when
    /// that is not possible here and the limit is not `required`.
    ///
    /// # Errors
    /// With `required`: no `pids` controller, or the cgroup cannot be made (read-only
    /// cgroupfs, ...): the message says so and how to run without a limit.
    pub fn create(limit: u64, pid: u32, required: bool) -> Result<Option<Self>, SetupError> {
        match Self::make(limit, pid) {
            Ok(cgroup) => Ok(Some(cgroup)),
            Err(_) if !required => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn make(limit: u64, pid: u32) -> Result<Self, SetupError> {
        let failed = |what: String| {
            SetupError::new(
                "cgroup",
                format!(
                    "cannot limit the step to {limit} processes: {what} (--pids-limit=-1 runs \
                     steps without a limit)"
                ),
            )
        };
        let io = |what: &str, path: &Path| {
            let what = what.to_owned();
            let path = path.to_path_buf();
            move |error: std::io::Error| failed(format!("{what} {}: {error}", path.display()))
        };
        let unified = Path::new(UNIFIED);
        let parent = if std::fs::read_to_string(unified.join("cgroup.controllers"))
            .is_ok_and(|controllers| controllers.split_whitespace().any(|name| name == "pids"))
        {
            let parent = unified.join("xbuild");
            std::fs::create_dir_all(&parent).map_err(io("creating", &parent))?;
            for dir in [unified, parent.as_path()] {
                let control = dir.join("cgroup.subtree_control");
                let enabled = std::fs::read_to_string(&control).unwrap_or_default();
                if !enabled.split_whitespace().any(|name| name == "pids") {
                    std::fs::write(&control, "+pids").map_err(io("writing", &control))?;
                }
            }
            parent
        } else if Path::new(V1_PIDS).join("cgroup.procs").is_file() {
            let parent = Path::new(V1_PIDS).join("xbuild");
            std::fs::create_dir_all(&parent).map_err(io("creating", &parent))?;
            parent
        } else {
            return Err(failed(format!(
                "no cgroup pids controller at {UNIFIED} (v2) or {V1_PIDS} (v1)"
            )));
        };
        remove_stale(&parent);
        let dir = parent.join(format!("step-{pid}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // Left by an earlier child of the same pid: empty, since that pid was ours.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io("creating", &dir)(error)),
        }
        let cgroup = Self { dir };
        let max = cgroup.dir.join("pids.max");
        if let Err(error) = std::fs::write(&max, limit.to_string()) {
            cgroup.remove();
            return Err(io("writing", &max)(error));
        }
        Ok(cgroup)
    }

    /// The `cgroup.procs` file PID 1 writes itself into.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Removes the cgroup (every process in it is gone): a few tries, since the last exits
    /// may still be accounted for a moment.
    pub fn remove(self) {
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                _ => return,
            }
        }
    }
}

/// Removes `step-<pid>` cgroups whose process no longer exists (a killed build's).
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("step-"))
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone {
            // Fails, and keeps it, if it is not empty.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}
