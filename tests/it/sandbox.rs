//! The RUN sandbox on the busybox fixtures: namespaces, mounts, user, network, exit codes,
//! and that nothing outside the upper directory changes. These call the library's
//! `sandbox::run_with`, which re-executes the real `xbuild` binary as `__run-step`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use xbuild::platform::Platform;
use xbuild::sandbox::{self, Network, SandboxError, StepCommand, StepOutcome, StepSpec, Stream};

use crate::util::{Need, fixtures_dir, require, temp_dir};

/// The busybox fixture root of `platform` (`rootfs/busybox/linux-arm-v7`).
pub(crate) fn busybox_root(platform: &str) -> PathBuf {
    let platform = Platform::parse(platform).expect("a known platform");
    fixtures_dir()
        .expect("fixtures are required first")
        .join("rootfs/busybox")
        .join(platform.to_string().replace('/', "-"))
}

/// What one step produced.
pub(crate) struct Ran {
    pub result: Result<StepOutcome, SandboxError>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub upper: PathBuf,
    /// Holds the upper and work directories until the test ends.
    pub dir: tempfile::TempDir,
}

/// A spec over `lower` with a fresh upper and work directory in a temp dir.
pub(crate) fn spec(
    lower: &[PathBuf],
    platform: &str,
    command: StepCommand,
) -> (StepSpec, tempfile::TempDir) {
    let dir = temp_dir();
    let upper = dir.path().join("upper");
    let work = dir.path().join("work");
    std::fs::create_dir(&upper).expect("upper dir");
    std::fs::create_dir(&work).expect("work dir");
    let spec = StepSpec::new(
        lower.to_vec(),
        upper,
        work,
        Platform::parse(platform).expect("a known platform"),
        command,
    );
    (spec, dir)
}

/// Runs `spec` through the real binary, collecting output lines.
pub(crate) fn run_spec(spec: &StepSpec, dir: tempfile::TempDir) -> Ran {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let result = sandbox::run_with(
        Path::new(env!("CARGO_BIN_EXE_xbuild")),
        spec,
        |stream, line| {
            let line = String::from_utf8_lossy(line).into_owned();
            match stream {
                Stream::Stdout => stdout.push(line),
                Stream::Stderr => stderr.push(line),
            }
        },
    );
    Ran {
        result,
        stdout,
        stderr,
        upper: spec.upper_dir.clone(),
        dir,
    }
}

/// Runs `script` with `/bin/sh -c` on the busybox fixture of `platform`.
fn sh(platform: &str, script: &str, tweak: impl FnOnce(&mut StepSpec)) -> Ran {
    let (mut spec, dir) = spec(&[busybox_root(platform)], platform, StepCommand::sh(script));
    tweak(&mut spec);
    run_spec(&spec, dir)
}

fn ok(ran: &Ran) -> &[String] {
    match &ran.result {
        Ok(StepOutcome::Exited { code: 0 }) => &ran.stdout,
        other => panic!(
            "{other:?}\nstdout: {:?}\nstderr: {:?}",
            ran.stdout, ran.stderr
        ),
    }
}

#[test]
fn uname_reports_each_platforms_machine() {
    let cases = [
        ("linux/amd64", "x86_64", "x86_64"),
        ("linux/arm64", "aarch64", "aarch64"),
        ("linux/arm/v7", "arm", "armv7l"),
        ("linux/ppc64le", "ppc64le", "ppc64le"),
        ("linux/s390x", "s390x", "s390x"),
        ("linux/386", "i386", "i686"),
    ];
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    for (platform, cpu, machine) in cases {
        if cpu != "x86_64" && cpu != "i386" && !require(&[Need::Binfmt(cpu)]) {
            continue;
        }
        let ran = sh(platform, "uname -m", |_| {});
        assert_eq!(ok(&ran), [machine], "{platform}");
        // The busybox in that root really is of that platform (not the host's).
        let busybox = std::fs::read(busybox_root(platform).join("bin/busybox")).unwrap();
        assert_eq!(
            xbuild::platform::elf_platform(&busybox)
                .unwrap()
                .architecture,
            Platform::parse(platform).unwrap().architecture
        );
    }
}

#[test]
fn user_nobody_runs_as_65534_with_its_groups() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let ran = sh("linux/amd64", "id -u; id -g; echo $HOME", |spec| {
        spec.user = Some("nobody".into())
    });
    assert_eq!(ok(&ran), ["65534", "65534", "/nonexistent"]);
    let ran = sh("linux/amd64", "id -u; id -g", |spec| {
        spec.user = Some("1234:2345".into())
    });
    assert_eq!(ok(&ran), ["1234", "2345"]);
    let ran = sh("linux/amd64", "true", |spec| {
        spec.user = Some("nosuchuser".into())
    });
    match ran.result {
        Err(SandboxError::Setup { stage, detail }) => {
            assert_eq!(stage, "user");
            assert!(detail.contains("nosuchuser"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn network_none_has_only_loopback_and_it_is_up() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let ran = sh(
        "linux/amd64",
        "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags",
        |spec| {
            spec.network = Network::None;
        },
    );
    let lines = ok(&ran);
    assert_eq!(lines[0], "lo", "{lines:?}");
    // IFF_UP is bit 0 of the flags.
    let flags = u32::from_str_radix(lines[2].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "{lines:?}");
    // The default network has more than `lo` (its `eth0`).
    let ran = sh("linux/amd64", "ls /sys/class/net", |_| {});
    assert!(ok(&ran).len() > 1, "{:?}", ran.stdout);
}

#[test]
fn exit_codes_and_signals_come_back() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let ran = sh("linux/amd64", "exit 7", |_| {});
    assert!(
        matches!(ran.result, Ok(StepOutcome::Exited { code: 7 })),
        "{:?}",
        ran.result
    );
    // The step is PID 1 of its namespace, as in Docker: signals it has no handler for are
    // not delivered to it from inside, not even SIGKILL; its children die as usual.
    let ran = sh(
        "linux/amd64",
        "kill -9 $$; echo survived; sh -c 'kill -9 $$'; echo $?",
        |_| {},
    );
    assert_eq!(ok(&ran), ["survived", "137"]);
    // A fault is delivered even to PID 1: a program that crashes comes back as a signal.
    let crasher = temp_dir();
    let mut handler = xbuild::binfmt::handler_for(&xbuild::platform::host())
        .unwrap()
        .clone();
    handler.probe = vec![0; 8]; // no exit sequence on any architecture: it faults
    let path = crasher.path().join("crash");
    std::fs::write(&path, xbuild::binfmt::probe::probe_elf(&handler)).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let lower = [crasher.path().to_path_buf(), busybox_root("linux/amd64")];
    let (step, dir) = spec(
        &lower,
        "linux/amd64",
        StepCommand::Exec(vec!["/crash".into()]),
    );
    let ran = run_spec(&step, dir);
    assert!(
        matches!(ran.result, Ok(StepOutcome::Signaled { signal }) if signal == libc::SIGSEGV),
        "{:?}",
        ran.result
    );
}

#[test]
fn output_streams_line_by_line_on_both_streams() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let ran = sh(
        "linux/amd64",
        "echo one; echo two >&2; echo three; printf four",
        |_| {},
    );
    assert_eq!(ok(&ran), ["one", "three", "four"]);
    assert_eq!(ran.stderr, ["two"]);
}

#[test]
fn exec_form_uses_the_steps_path_and_reports_a_missing_program() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let lower = [busybox_root("linux/amd64")];
    let (mut step, dir) = spec(
        &lower,
        "linux/amd64",
        StepCommand::Exec(vec!["echo".into(), "a  b".into()]),
    );
    step.env = vec!["PATH=/bin".into()];
    assert_eq!(ok(&run_spec(&step, dir)), ["a  b"]);
    let (step, dir) = spec(
        &lower,
        "linux/amd64",
        StepCommand::Exec(vec!["no-such-program".into()]),
    );
    match run_spec(&step, dir).result {
        Err(SandboxError::Setup { stage, detail }) => {
            assert_eq!(stage, "exec");
            assert!(detail.contains("no-such-program"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn namespaces_hostname_workdir_and_env_are_the_steps() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let ran = sh(
        "linux/amd64",
        "echo $$; hostname; pwd; echo $GREETING; ls /proc | grep -c '^[0-9]'",
        |spec| {
            spec.hostname = "step-host".into();
            spec.cwd = "/work/dir".into();
            spec.env = vec!["GREETING=hello world".into()];
        },
    );
    // PID 1 in its own namespace, which holds only the shell and `ls`/`grep`.
    let lines = ok(&ran);
    assert_eq!(lines[..4], ["1", "step-host", "/work/dir", "hello world"]);
    assert!(lines[4].parse::<u32>().unwrap() <= 4, "{lines:?}");
    assert!(
        ran.upper.join("work/dir").is_dir(),
        "WORKDIR is created in the layer"
    );
}

#[test]
fn capabilities_are_dockers_default_set() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let ran = sh(
        "linux/amd64",
        "grep -E '^Cap(Bnd|Eff)' /proc/self/status; mkdir -p /m; mount -t tmpfs none /m && echo mounted || echo refused",
        |_| {},
    );
    assert_eq!(
        ok(&ran),
        [
            "CapEff:\t00000000a80425fb",
            "CapBnd:\t00000000a80425fb",
            "refused"
        ]
    );
    // RUN --security=insecure keeps every capability.
    let ran = sh(
        "linux/amd64",
        "grep -E '^CapBnd' /proc/self/status",
        |spec| {
            spec.security = xbuild::sandbox::Security::Insecure;
        },
    );
    let bounding = ok(&ran)[0].trim_start_matches("CapBnd:\t").to_owned();
    let bits = u64::from_str_radix(&bounding, 16).unwrap();
    assert!(bits & (1 << 21) != 0, "CAP_SYS_ADMIN kept: {bounding}");
}

#[test]
fn a_platform_that_cannot_run_fails_before_anything_starts() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let (mut step, dir) = spec(
        &[busybox_root("linux/amd64")],
        "linux/amd64",
        StepCommand::sh("touch /ran"),
    );
    // An architecture with no QEMU handler in binfmt/ (a Platform read from an image config
    // keeps what the table does not know, so the build could hand us one).
    step.platform = Platform::new("linux", "sparc64", None);
    let ran = run_spec(&step, dir);
    let error = ran.result.unwrap_err();
    assert!(matches!(error, SandboxError::NotRunnable(_)), "{error:?}");
    assert_eq!(error.exit_kind(), xbuild::ExitKind::HostNotReady);
    assert!(error.to_string().contains("linux/sparc64"), "{error}");
    assert_eq!(
        std::fs::read_dir(&ran.upper).unwrap().count(),
        0,
        "nothing ran"
    );
}

#[test]
fn etc_files_come_from_the_host_and_stay_out_of_the_layer() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    // On the host's network the step gets the host's resolv.conf (on the default network,
    // slirp4netns's forwarder: security::network_none_is_only_lo_and_the_default_resolves_names).
    let ran = sh("linux/amd64", "cat /etc/resolv.conf", |spec| {
        spec.network = Network::Host;
    });
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(ok(&ran), host.lines().collect::<Vec<_>>());
    for name in ["etc/resolv.conf", "etc/hosts", "etc", "proc", "dev", "sys"] {
        assert!(
            !ran.upper.join(name).exists(),
            "{name} reached the upper directory"
        );
    }
}

/// Every file of a tree: path → (mode, size, mtime, content hash-ish).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, u64, i64, Vec<u8>)> {
    let mut map = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable tree") {
            let path = entry.expect("readable entry").path();
            let metadata = std::fs::symlink_metadata(&path).expect("lstat");
            let content = if metadata.is_file() {
                std::fs::read(&path).expect("readable file")
            } else if metadata.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .expect("readable link")
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            if metadata.is_dir() {
                stack.push(path.clone());
            }
            map.insert(
                path,
                (metadata.mode(), metadata.size(), metadata.mtime(), content),
            );
        }
    }
    map
}

#[test]
fn only_the_upper_directory_changes_and_no_mount_is_left() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let lower = busybox_root("linux/amd64");
    let before = snapshot(&lower);
    let host_hosts = std::fs::read("/etc/hosts").unwrap();
    let ran = sh(
        "linux/amd64",
        "echo new > /new-file; rm /bin/cat; echo changed > /etc/passwd; echo evil >> /etc/hosts; \
         rm -rf /home; touch /tmp/x",
        |_| {},
    );
    ok(&ran);
    assert_eq!(snapshot(&lower), before, "the lower directory changed");
    assert_eq!(
        std::fs::read("/etc/hosts").unwrap(),
        host_hosts,
        "the host's /etc/hosts changed"
    );
    let upper = &ran.upper;
    assert_eq!(
        std::fs::read_to_string(upper.join("new-file")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/passwd")).unwrap(),
        "changed\n"
    );
    // Deletions are overlayfs whiteouts: character devices 0/0.
    let whiteout = std::fs::symlink_metadata(upper.join("bin/cat")).unwrap();
    assert_eq!(whiteout.rdev(), 0);
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));
    assert!(!upper.join("etc/hosts").exists());
    // No mount of this step is visible anywhere in the host's mount table.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let scratch = ran.dir.path().to_string_lossy().into_owned();
    assert!(!mountinfo.contains(&scratch), "{mountinfo}");
    assert!(!mountinfo.contains("xbuild-step-"), "{mountinfo}");
}

#[test]
fn layers_stack_top_first_and_an_empty_root_works() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let top = temp_dir();
    // Store-like names: overlayfs needs ':' and ',' escaped in its options.
    let layer = top.path().join("sha256:top,layer");
    std::fs::create_dir_all(layer.join("etc")).unwrap();
    std::fs::write(layer.join("etc/motd"), "from the top layer\n").unwrap();
    let lower = [layer, busybox_root("linux/amd64")];
    let (step, dir) = spec(&lower, "linux/amd64", StepCommand::sh("cat /etc/motd"));
    assert_eq!(ok(&run_spec(&step, dir)), ["from the top layer"]);

    // FROM scratch: nothing to run, and the failure says so.
    let (step, dir) = spec(&[], "linux/amd64", StepCommand::sh("true"));
    let ran = run_spec(&step, dir);
    assert!(
        matches!(&ran.result, Err(SandboxError::Setup { stage, .. }) if stage == "exec"),
        "{:?}",
        ran.result
    );
    for name in ["etc", "proc", "dev", "sys"] {
        assert!(
            !ran.upper.join(name).exists(),
            "{name} left in the upper directory"
        );
    }
}

#[test]
fn background_processes_die_with_the_step_and_umask_is_fixed() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let started = std::time::Instant::now();
    // `sleep` keeps stdout open; it is killed when PID 1 exits, so the step ends at once.
    let ran = sh("linux/amd64", "umask; sleep 300 & echo started", |_| {});
    assert_eq!(ok(&ran), ["0022", "started"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn steps_run_concurrently_from_an_async_runtime() {
    if !require(&[
        Need::Root,
        Need::Fixtures,
        Need::Binfmt("aarch64"),
        Need::Binfmt("s390x"),
    ]) {
        return;
    }
    // The build calls the sandbox from spawn_blocking on a multi-threaded runtime: a child
    // must not inherit another step's channel, or that step would never see end of file.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let outputs = runtime.block_on(async {
        let tasks = [
            "linux/amd64",
            "linux/arm64",
            "linux/s390x",
            "linux/386",
            "linux/amd64",
            "linux/arm64",
        ]
        .into_iter()
        .map(|platform| {
            tokio::task::spawn_blocking(move || {
                let ran = sh(platform, "uname -m; sleep 0.2", |_| {});
                (platform, ok(&ran).to_vec())
            })
        })
        .collect::<Vec<_>>();
        let mut outputs = Vec::new();
        for task in tasks {
            outputs.push(task.await.unwrap());
        }
        outputs
    });
    let expected = |platform: &str| match platform {
        "linux/amd64" => "x86_64",
        "linux/arm64" => "aarch64",
        "linux/s390x" => "s390x",
        _ => "i686",
    };
    for (platform, lines) in outputs {
        assert_eq!(lines, [expected(platform)], "{platform}");
    }
}

#[test]
fn more_layers_than_fit_in_one_page_of_mount_options() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    // 80 layers of ~100-byte paths: 8 KB of lowerdir, twice what mount(2) takes.
    let layers = temp_dir();
    let mut lower = Vec::new();
    for index in 0..80 {
        let layer = layers.path().join(format!("sha256:{index:0>64}"));
        std::fs::create_dir_all(layer.join("layers")).unwrap();
        std::fs::write(layer.join("layers").join(index.to_string()), "").unwrap();
        std::fs::write(layer.join("top"), format!("{index}\n")).unwrap();
        lower.push(layer);
    }
    lower.push(busybox_root("linux/amd64"));
    let (step, dir) = spec(
        &lower,
        "linux/amd64",
        StepCommand::sh("cat /top; ls /layers | wc -l"),
    );
    // The first lower directory is the top one.
    assert_eq!(ok(&run_spec(&step, dir)), ["0", "80"]);
}

#[test]
fn the_sandbox_scratch_lives_where_the_caller_says_and_is_removed() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    // A killed build leaves the sandbox's own directory behind: it must be in a place the
    // caller cleans (the store's tmp/, emptied by `xbuild store check`), not in /tmp.
    let parent = temp_dir();
    let (mut spec, dir) = spec(
        &[busybox_root("linux/amd64")],
        "linux/amd64",
        StepCommand::sh("echo running"),
    );
    spec.scratch_parent = Some(parent.path().to_path_buf());
    let mut seen_while_running = Vec::new();
    let result = sandbox::run_with(Path::new(env!("CARGO_BIN_EXE_xbuild")), &spec, |_, _| {
        seen_while_running = std::fs::read_dir(parent.path())
            .expect("the scratch parent")
            .map(|entry| entry.expect("an entry").file_name())
            .collect();
    });
    assert!(
        matches!(result, Ok(StepOutcome::Exited { code: 0 })),
        "{result:?}"
    );
    assert_eq!(seen_while_running.len(), 1, "{seen_while_running:?}");
    assert!(
        seen_while_running[0]
            .to_string_lossy()
            .starts_with("xbuild-step-"),
        "{seen_while_running:?}"
    );
    assert_eq!(
        std::fs::read_dir(parent.path()).unwrap().count(),
        0,
        "removed after the step"
    );
    drop(dir);
}
