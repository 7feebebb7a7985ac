//! QEMU user-mode emulation through binfmt_misc: the handler table (`binfmt/*.toml`,
//! [`catalog`]), the kernel's entries ([`misc`]), registration of `qemu-<cpu>` entries, the
//! per-architecture probe ([`probe`]), and [`check_runnable`], which the sandbox asks before
//! it starts a foreign step.
//!
//! Policy, kept in code and not in the data:
//! - Entries are registered with `F` ("fix binary": the kernel opens the interpreter at
//!   registration, so emulation works inside a build's root filesystem where the interpreter
//!   path does not exist) and `C` (credentials from the binary, so setuid programs behave),
//!   plus `P` ("preserve argv[0]") only for an interpreter that expects it: Debian's
//!   `/usr/libexec/qemu-binfmt/<cpu>-binfmt-P`. A plain `qemu-<cpu>-static` given `P` would
//!   take argv[0] for the program to run.
//! - An entry someone else registered (binfmt-support, systemd-binfmt, tonistiigi/binfmt) is
//!   never overwritten nor removed; one without `F` is reported as unusable inside a build.
//!   What is ours is recorded in [`STATE_DIR`] (a tmpfs, cleared at boot like the entries).
//!
//! It does not run build steps; it never needs a root filesystem.

pub mod catalog;
pub mod misc;
pub mod probe;

use std::path::{Path, PathBuf};

pub use catalog::Handler;
pub use misc::{BinfmtMisc, Entry};

use crate::platform::{self, Platform};

/// Where xbuild records the entries it registered (one file per entry, holding the line).
pub const STATE_DIR: &str = "/run/xbuild/binfmt";

/// Errors, each with the advice a user needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum BinfmtError {
    /// binfmt_misc is not mounted and we may not mount it.
    #[error("binfmt_misc is not mounted at {dir}; as root: mount -t binfmt_misc binfmt_misc {dir}")]
    NotMounted {
        /// The usual mount point.
        dir: PathBuf,
    },
    /// Mounting binfmt_misc failed.
    #[error("cannot mount binfmt_misc at {dir}")]
    Mount {
        /// The mount point.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Reading an entry or the directory failed.
    #[error("cannot read {path}")]
    Read {
        /// What was read.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Changing registrations needs root.
    #[error("{action} needs root (run it with sudo)")]
    NotRoot {
        /// What was attempted.
        action: String,
    },
    /// No static QEMU interpreter for a CPU.
    #[error(
        "no QEMU interpreter for {platform} (looked for {cpu}-binfmt-P and qemu-{cpu}-static); \
         install it: apt-get install qemu-user-static (Fedora: dnf install qemu-user-static)"
    )]
    InterpreterMissing {
        /// The platform asked for.
        platform: Platform,
        /// QEMU's CPU name.
        cpu: String,
    },
    /// The platform has no QEMU handler in `binfmt/`.
    #[error("xbuild has no QEMU handler for {platform}")]
    NoHandler {
        /// The platform.
        platform: Platform,
    },
    /// Writing to `register` failed.
    #[error("cannot register {name}: {}", register_advice(source))]
    Register {
        /// Entry name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Removing an entry failed.
    #[error("cannot remove {name}: {}", register_advice(source))]
    Unregister {
        /// Entry name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Recording our registrations failed.
    #[error("cannot record the registration in {path}")]
    State {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry of that name exists and is not ours.
    #[error(
        "{name} was registered by another tool (binfmt-support, systemd-binfmt, ...); \
         xbuild leaves it alone{hint}"
    )]
    NotOurs {
        /// Entry name.
        name: String,
        /// Extra advice (how to remove it with the tool that made it).
        hint: String,
    },
    /// The platform cannot run on this host, with the fix.
    #[error("{platform} cannot run on this {host} host: {reason}; {fix}")]
    NotRunnable {
        /// The platform asked for (`linux/arm64`).
        platform: String,
        /// The host platform.
        host: String,
        /// Why not.
        reason: String,
        /// What to do.
        fix: String,
    },
}

/// Advice for an errno from `register` or an entry file.
fn register_advice(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => "permission denied: run as root".to_owned(),
        Some(libc::EEXIST) => "an entry of that name already exists".to_owned(),
        Some(libc::ENOENT) => {
            "not found: is binfmt_misc mounted, and does the interpreter exist?".to_owned()
        }
        Some(libc::EINVAL) => {
            "the kernel refused the line (bad magic, mask, or flags this kernel lacks)".to_owned()
        }
        _ => error.to_string(),
    }
}

/// A QEMU interpreter found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// The path given to the kernel.
    pub path: PathBuf,
    /// Whether it expects the `P` calling convention (Debian's `-binfmt-P` wrappers).
    pub preserves_argv0: bool,
}

impl Interpreter {
    /// The flags of the entry xbuild registers for it: `FC`, plus `P` when it expects it.
    pub fn flags(&self) -> &'static str {
        if self.preserves_argv0 { "FCP" } else { "FC" }
    }
}

/// Finds a static QEMU for `handler`: Debian's `/usr/libexec/qemu-binfmt/<cpu>-binfmt-P`
/// first (it keeps argv[0], so multi-call binaries and `exec -a` behave), then
/// `qemu-<cpu>-static` on PATH, then in `/usr/bin`. Dynamically linked `qemu-<cpu>` is not
/// used: its libraries would be looked up inside the build's root filesystem.
pub fn find_interpreter(handler: &Handler) -> Option<Interpreter> {
    let wrapper = Path::new("/usr/libexec/qemu-binfmt").join(format!("{}-binfmt-P", handler.cpu));
    if wrapper.is_file() {
        return Some(Interpreter {
            path: wrapper,
            preserves_argv0: true,
        });
    }
    let static_name = format!("{}-static", handler.interpreter);
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(&static_name))
        .find(|candidate| candidate.is_file())
        .map(|path| Interpreter {
            path,
            preserves_argv0: false,
        })
}

/// The register line for `handler`:
/// `:name:M:offset:magic:mask:interpreter:flags`, every magic and mask byte escaped as
/// `\xHH` (so `:` or `\n` bytes cannot end a field early).
pub fn render_line(name: &str, handler: &Handler, interpreter: &Interpreter) -> String {
    let escape = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|byte| format!("\\x{byte:02x}"))
            .collect::<String>()
    };
    format!(
        ":{name}:M:{}:{}:{}:{}:{}",
        handler.offset,
        escape(&handler.magic),
        escape(&handler.mask),
        interpreter.path.display(),
        interpreter.flags()
    )
}

/// The handler that emulates `platform`.
///
/// # Errors
/// [`BinfmtError::NoHandler`].
pub fn handler_for(platform: &Platform) -> Result<&'static Handler, BinfmtError> {
    platform
        .run_info()
        .and_then(|info| catalog::by_cpu(&info.binfmt))
        .ok_or_else(|| BinfmtError::NoHandler {
            platform: platform.clone(),
        })
}

/// Entry names are `qemu-<cpu>`; `prefix` (tests, [`crate::env::XBUILD_BINFMT_PREFIX`])
/// goes in front so a test's entries cannot clash with the system's.
pub fn entry_name(prefix: &str, handler: &Handler) -> String {
    format!("{prefix}{}", handler.name)
}

/// How a platform runs on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    /// The CPU runs it.
    Native,
    /// binfmt_misc sends it to QEMU through this entry.
    Emulated(Entry),
    /// Neither.
    Unavailable,
}

/// What `xbuild binfmt ls` shows for one platform.
#[derive(Debug, Clone)]
pub struct PlatformStatus {
    /// The platform.
    pub platform: Platform,
    /// How it runs.
    pub runner: Runner,
    /// QEMU's version (`7.2.22`), for emulated platforms whose interpreter answers.
    pub qemu_version: Option<String>,
    /// The probe's outcome, when asked for: `Ok` or why it failed.
    pub verified: Option<Result<(), String>>,
    /// What is wrong and how to fix it, if anything.
    pub advice: Option<String>,
    /// Whether the entry was registered by xbuild.
    pub is_ours: bool,
}

/// Where the probes are written: a private temporary directory.
fn probe_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("xbuild-probe-").tempdir()
}

/// Runs the probe of `platform`; `Err` says why it failed.
///
/// # Errors
/// A message: the probe could not be written, executed, or did not exit with 0.
pub fn verify(platform: &Platform) -> Result<(), String> {
    let handler = handler_for(platform).map_err(|error| error.to_string())?;
    let dir =
        probe_dir().map_err(|error| format!("cannot create a temporary directory: {error}"))?;
    probe::run_probe(handler, dir.path()).map_err(|error| error.to_string())
}

/// The enabled entry the kernel would use for `platform`'s executables, preferring one with
/// `F` (several may match: the kernel tries the most recently registered first, which
/// `/proc` does not show).
fn handling_entry(entries: &[Entry], handler: &Handler) -> Option<Entry> {
    let header = probe::probe_elf(handler);
    let mut matching = entries
        .iter()
        .filter(|entry| entry.is_enabled && entry.matches(&header))
        .collect::<Vec<_>>();
    matching.sort_by_key(|entry| !entry.has_fix_binary());
    matching.first().map(|entry| (*entry).clone())
}

/// Whether `entry` was registered by xbuild (recorded in [`STATE_DIR`] with the same
/// interpreter).
pub fn is_ours(entry: &Entry) -> bool {
    std::fs::read_to_string(Path::new(STATE_DIR).join(&entry.name))
        .is_ok_and(|line| line_interpreter(&line) == Some(entry.interpreter.as_str()))
}

/// The interpreter field of a register line (`:name:M:offset:magic:mask:interpreter:flags`;
/// magic and mask are fully escaped, so they hold no `:`).
fn line_interpreter(line: &str) -> Option<&str> {
    line.split(':').nth(6)
}

/// QEMU's version, from `<interpreter> --version` run on the real binary (a `-binfmt-P`
/// wrapper would take `--version` for a program).
fn qemu_version(interpreter: &str) -> Option<String> {
    let path = std::fs::canonicalize(interpreter).ok()?;
    let output = std::process::Command::new(path)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.lines().next()?;
    let version = first
        .split_whitespace()
        .skip_while(|word| *word != "version")
        .nth(1)?;
    Some(version.to_owned())
}

/// The status of every platform of the table, probing each when `verify_each`.
///
/// # Errors
/// When binfmt_misc cannot be opened or read.
pub fn status(verify_each: bool) -> Result<Vec<PlatformStatus>, BinfmtError> {
    let entries = match BinfmtMisc::open() {
        Ok(misc) => misc.entries()?,
        Err(BinfmtError::NotMounted { .. }) => Vec::new(),
        Err(error) => return Err(error),
    };
    let mut rows = status_of(&entries, &platform::host(), find_interpreter);
    for row in &mut rows {
        if let Runner::Emulated(entry) = &row.runner {
            row.qemu_version = qemu_version(&entry.interpreter);
            row.is_ours = is_ours(entry);
        }
        if verify_each && row.runner != Runner::Unavailable {
            row.verified = Some(verify(&row.platform));
        }
    }
    Ok(rows)
}

/// The status of every platform given the kernel's `entries`, without running anything:
/// native, emulated by the entry the kernel would pick, or unavailable with what to do.
fn status_of(
    entries: &[Entry],
    host: &Platform,
    find_interpreter: impl Fn(&Handler) -> Option<Interpreter>,
) -> Vec<PlatformStatus> {
    let mut rows = Vec::new();
    for info in platform::catalog::all() {
        let target = info.platform();
        let handler = catalog::by_cpu(&info.binfmt);
        let entry = handler.and_then(|handler| handling_entry(entries, handler));
        let mut row = PlatformStatus {
            platform: target.clone(),
            runner: Runner::Unavailable,
            qemu_version: None,
            verified: None,
            advice: None,
            is_ours: false,
        };
        if let Some(entry) = entry {
            if !entry.has_fix_binary() {
                row.advice = Some(format!(
                    "{} has no F flag: unusable inside a build; remove it and run \
                     `xbuild binfmt install {}`",
                    entry.name, target
                ));
            }
            // Even where the CPU could run it, the kernel hands matching files to the entry.
            row.runner = Runner::Emulated(entry);
        } else if host.is_native_for(&target) {
            row.runner = Runner::Native;
        } else if let Some(handler) = handler {
            row.advice = Some(if find_interpreter(handler).is_some() {
                format!("run `xbuild binfmt install {target}`")
            } else {
                format!(
                    "no QEMU for it: install qemu-user-static (apt-get install \
                     qemu-user-static), then run `xbuild binfmt install {target}`"
                )
            });
        }
        rows.push(row);
    }
    rows
}

/// Checks that `platform` can run on this host before any work starts: natively (the probe
/// runs), or through an enabled binfmt_misc entry with `F` whose probe runs. Successful
/// answers are cached for the life of the process.
///
/// # Errors
/// [`BinfmtError::NotRunnable`] (or [`BinfmtError::NoHandler`]) carrying the fix: the
/// `xbuild binfmt install` command or the package to install. The CLI maps it to exit 3.
pub fn check_runnable(platform: &Platform) -> Result<Runner, BinfmtError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<Platform, Runner>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(runner) = cache.lock().ok().and_then(|map| map.get(platform).cloned()) {
        return Ok(runner);
    }
    let runner = resolve_runner(platform)?;
    if let Ok(mut map) = cache.lock() {
        map.insert(platform.clone(), runner.clone());
    }
    Ok(runner)
}

fn resolve_runner(platform: &Platform) -> Result<Runner, BinfmtError> {
    let host = platform::host();
    let not_runnable = |reason: String, fix: String| BinfmtError::NotRunnable {
        platform: platform.to_string(),
        host: host.to_string(),
        reason,
        fix,
    };
    let handler = handler_for(platform)?;
    let (entries, is_enabled) = match BinfmtMisc::open() {
        Ok(misc) => (misc.entries()?, misc.is_enabled()),
        Err(BinfmtError::NotMounted { .. }) => (Vec::new(), false),
        Err(error) => return Err(error),
    };
    // With binfmt_misc switched off as a whole, no entry is used.
    let entry = handling_entry(&entries, handler).filter(|_| is_enabled);
    if entry.is_none() && host.is_native_for(platform) {
        return match verify(platform) {
            Ok(()) => Ok(Runner::Native),
            Err(reason) => Err(not_runnable(
                format!("the CPU or kernel does not run it ({reason})"),
                format!("register an emulator for it: xbuild binfmt install {platform}"),
            )),
        };
    }
    let Some(entry) = entry else {
        if !entries.is_empty() && !is_enabled {
            return Err(not_runnable(
                "binfmt_misc is disabled".to_owned(),
                format!("as root: echo 1 > {}/status", misc::DEFAULT_DIR),
            ));
        }
        let fix = if find_interpreter(handler).is_some() {
            format!("register QEMU for it: xbuild binfmt install {platform}")
        } else {
            format!(
                "install QEMU (apt-get install qemu-user-static), then: xbuild binfmt install \
                 {platform}"
            )
        };
        return Err(not_runnable(
            format!(
                "no binfmt_misc entry handles its executables (no {})",
                handler.name
            ),
            fix,
        ));
    };
    if !entry.has_fix_binary() {
        return Err(not_runnable(
            format!(
                "binfmt_misc entry {} has no F flag, so its interpreter {} cannot be found \
                 inside a build's root filesystem",
                entry.name, entry.interpreter
            ),
            format!(
                "re-register it with F: echo -1 > {}/{} && xbuild binfmt install {platform}",
                misc::DEFAULT_DIR,
                entry.name
            ),
        ));
    }
    verify(platform).map_err(|reason| {
        not_runnable(
            format!("the probe failed through {} ({reason})", entry.name),
            format!(
                "check the interpreter {} (qemu-user-static)",
                entry.interpreter
            ),
        )
    })?;
    Ok(Runner::Emulated(entry))
}

/// What `install` did for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallOutcome {
    /// Registered `name` with `line`.
    Installed {
        /// Entry name.
        name: String,
        /// The line written to `register`.
        line: String,
    },
    /// Our entry is already there.
    AlreadyInstalled {
        /// Entry name.
        name: String,
    },
    /// The host runs it natively (the probe says so): nothing to register.
    Native,
    /// Another enabled entry with `F` already handles it.
    HandledBy {
        /// That entry's name.
        name: String,
    },
}

/// Registers the QEMU entry for `platform`, named `<prefix>qemu-<cpu>`. A platform the host
/// runs natively is left as is. With an empty prefix, so is one that another usable entry
/// already handles; with a prefix (tests) only an entry of the same name counts.
///
/// # Errors
/// Not root, no interpreter, an entry of that name that is not ours ([`BinfmtError::NotOurs`]),
/// or the kernel refusing the line.
pub fn install(
    misc: &BinfmtMisc,
    platform: &Platform,
    prefix: &str,
) -> Result<InstallOutcome, BinfmtError> {
    let handler = handler_for(platform)?;
    let name = entry_name(prefix, handler);
    let host = platform::host();
    // Registering the host's own architecture, or one the CPU runs, would send native
    // programs through QEMU: never, not even under a test prefix.
    let is_host_cpu = host.run_info().map(|info| &info.binfmt) == Some(&handler.cpu);
    if is_host_cpu || (host.is_native_for(platform) && verify(platform).is_ok()) {
        return Ok(InstallOutcome::Native);
    }
    if let Some(existing) = misc.entry(&name)? {
        let header = probe::probe_elf(handler);
        return if is_ours(&existing) {
            Ok(InstallOutcome::AlreadyInstalled { name })
        } else if existing.is_enabled && existing.has_fix_binary() && existing.matches(&header) {
            // Someone else's entry, usable by builds: nothing to do.
            Ok(InstallOutcome::HandledBy { name })
        } else {
            Err(BinfmtError::NotOurs {
                hint: if existing.has_fix_binary() {
                    "; it is disabled or does not match this platform's executables".to_owned()
                } else {
                    format!(
                        "; it has no F flag, so builds cannot use it: remove it (echo -1 > \
                         {}/{name}, or update-binfmts --disable {name}) and install again",
                        misc.dir().display()
                    )
                },
                name,
            })
        };
    }
    if prefix.is_empty() {
        if let Some(entry) = handling_entry(&misc.entries()?, handler) {
            if entry.has_fix_binary() {
                return Ok(InstallOutcome::HandledBy { name: entry.name });
            }
        }
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(BinfmtError::NotRoot {
            action: format!("registering {name}"),
        });
    }
    let interpreter = find_interpreter(handler).ok_or_else(|| BinfmtError::InterpreterMissing {
        platform: platform.clone(),
        cpu: handler.cpu.clone(),
    })?;
    let line = render_line(&name, handler, &interpreter);
    let state = Path::new(STATE_DIR).join(&name);
    let state_error = |source| BinfmtError::State {
        path: state.clone(),
        source,
    };
    std::fs::create_dir_all(STATE_DIR).map_err(state_error)?;
    // Record first: if we die between the two writes, an entry recorded but absent is
    // ignored, while an entry present but unrecorded would look like someone else's.
    std::fs::write(&state, &line).map_err(state_error)?;
    if let Err(error) = misc.register(&name, &line) {
        let _ = std::fs::remove_file(&state);
        return Err(error);
    }
    Ok(InstallOutcome::Installed { name, line })
}

/// What `uninstall` did for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UninstallOutcome {
    /// Removed our entry.
    Removed {
        /// Entry name.
        name: String,
    },
    /// No entry of that name.
    NotInstalled {
        /// Entry name.
        name: String,
    },
}

/// Removes our entry for `platform` (`<prefix>qemu-<cpu>`); someone else's is refused.
///
/// # Errors
/// [`BinfmtError::NotOurs`], [`BinfmtError::NotRoot`], or the kernel refusing.
pub fn uninstall(
    misc: &BinfmtMisc,
    platform: &Platform,
    prefix: &str,
) -> Result<UninstallOutcome, BinfmtError> {
    let handler = handler_for(platform)?;
    uninstall_name(misc, &entry_name(prefix, handler))
}

/// Removes every entry xbuild registered whose name starts with `prefix`.
///
/// # Errors
/// As [`uninstall`].
pub fn uninstall_all(
    misc: &BinfmtMisc,
    prefix: &str,
) -> Result<Vec<UninstallOutcome>, BinfmtError> {
    let mut outcomes = Vec::new();
    for entry in misc.entries()? {
        if entry.name.starts_with(prefix) && is_ours(&entry) {
            outcomes.push(uninstall_name(misc, &entry.name)?);
        }
    }
    Ok(outcomes)
}

fn uninstall_name(misc: &BinfmtMisc, name: &str) -> Result<UninstallOutcome, BinfmtError> {
    let state = Path::new(STATE_DIR).join(name);
    let Some(entry) = misc.entry(name)? else {
        // A record without an entry (unregistered by hand): forget it.
        let _ = std::fs::remove_file(&state);
        return Ok(UninstallOutcome::NotInstalled {
            name: name.to_owned(),
        });
    };
    if !is_ours(&entry) {
        return Err(BinfmtError::NotOurs {
            name: name.to_owned(),
            hint: format!(
                "; remove it with the tool that made it (update-binfmts --disable {name}) or \
                 echo -1 > {}/{name}",
                misc.dir().display()
            ),
        });
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(BinfmtError::NotRoot {
            action: format!("removing {name}"),
        });
    }
    misc.unregister(name)?;
    std::fs::remove_file(&state).map_err(|source| BinfmtError::State {
        path: state.clone(),
        source,
    })?;
    Ok(UninstallOutcome::Removed {
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/golden/binfmt/<cpu>.line`: the exact register line with the default flags and a
    /// fixed interpreter directory. `UPDATE_GOLDEN=1` rewrites them.
    #[test]
    fn register_lines_match_the_golden_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/binfmt");
        let update = std::env::var_os("UPDATE_GOLDEN").is_some();
        for handler in catalog::all() {
            let interpreter = Interpreter {
                path: PathBuf::from(format!("/usr/bin/{}-static", handler.interpreter)),
                preserves_argv0: false,
            };
            let line = format!("{}\n", render_line(&handler.name, handler, &interpreter));
            let path = dir.join(format!("{}.line", handler.cpu));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &line).unwrap();
            }
            let expected = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("{}: {error} (UPDATE_GOLDEN=1)", path.display()));
            assert_eq!(line, expected, "{}", path.display());
        }
        let golden = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(
            golden,
            catalog::all().len(),
            "stale files in {}",
            dir.display()
        );
    }

    #[test]
    fn the_interpreter_is_read_back_from_a_recorded_line() {
        let handler = catalog::by_cpu("s390x").unwrap();
        let interpreter = Interpreter {
            path: PathBuf::from("/usr/bin/qemu-s390x-static"),
            preserves_argv0: false,
        };
        let line = render_line("qemu-s390x", handler, &interpreter);
        assert_eq!(line_interpreter(&line), Some("/usr/bin/qemu-s390x-static"));
    }

    #[test]
    fn without_qemu_every_foreign_platform_says_what_to_install() {
        let host = Platform::parse("linux/amd64").unwrap();
        let rows = status_of(&[], &host, |_| None);
        for row in &rows {
            let name = row.platform.to_string();
            if name == "linux/amd64" || name == "linux/386" {
                assert_eq!(row.runner, Runner::Native, "{name}");
            } else {
                assert_eq!(row.runner, Runner::Unavailable, "{name}");
                let advice = row.advice.as_deref().unwrap();
                assert!(
                    advice.contains("apt-get install qemu-user-static"),
                    "{advice}"
                );
                assert!(
                    advice.contains(&format!("xbuild binfmt install {name}")),
                    "{advice}"
                );
            }
        }
    }

    #[test]
    fn an_entry_without_f_is_reported_unusable() {
        let handler = catalog::by_cpu("riscv64").unwrap();
        let entry = Entry {
            name: "qemu-riscv64".to_owned(),
            is_enabled: true,
            interpreter: "/usr/bin/qemu-riscv64-static".to_owned(),
            flags: String::new(),
            offset: 0,
            magic: handler.magic.clone(),
            mask: handler.mask.clone(),
            extension: None,
        };
        let host = Platform::parse("linux/amd64").unwrap();
        let rows = status_of(&[entry], &host, |_| None);
        let row = rows
            .iter()
            .find(|row| row.platform.architecture == "riscv64")
            .unwrap();
        assert!(matches!(row.runner, Runner::Emulated(_)));
        assert!(row.advice.as_deref().unwrap().contains("no F flag"));
    }

    #[test]
    fn preserve_argv0_only_for_binfmt_p_wrappers() {
        let mut interpreter = Interpreter {
            path: PathBuf::from("/usr/libexec/qemu-binfmt/arm-binfmt-P"),
            preserves_argv0: true,
        };
        assert_eq!(interpreter.flags(), "FCP");
        interpreter.preserves_argv0 = false;
        assert_eq!(interpreter.flags(), "FC");
    }

    #[test]
    fn errno_becomes_advice() {
        let advice = |errno| register_advice(&std::io::Error::from_raw_os_error(errno));
        assert!(advice(libc::EPERM).contains("root"));
        assert!(advice(libc::ENOENT).contains("mounted"));
        assert!(advice(libc::EEXIST).contains("already exists"));
    }

    #[test]
    fn the_entry_that_handles_a_platform_prefers_f() {
        let handler = catalog::by_cpu("aarch64").unwrap();
        let entry = |name: &str, flags: &str| Entry {
            name: name.to_owned(),
            is_enabled: true,
            interpreter: "/x".to_owned(),
            flags: flags.to_owned(),
            offset: 0,
            magic: handler.magic.clone(),
            mask: handler.mask.clone(),
            extension: None,
        };
        let found = handling_entry(&[entry("a", "P"), entry("b", "PF")], handler).unwrap();
        assert_eq!(found.name, "b");
        let arm = catalog::by_cpu("arm").unwrap();
        assert!(handling_entry(&[entry("a", "F")], arm).is_none());
    }
}
