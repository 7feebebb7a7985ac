//! Attacks a `RUN` step might try, each a test that fails if the attack works: the host's
//! loopback, packet sockets, device nodes, keyrings, user namespaces, a fork bomb, masked
//! paths, capabilities, secrets on disk, mount targets that are links out of the root, and
//! the entitlements. Where a check could pass for the wrong reason, the same probe is run
//! once with the protection lifted (`--security=insecure`, `--network=host`) to show that
//! it does see the difference. On linux/amd64 and, through QEMU, linux/arm64 (the C probes
//! too: built with Debian's `aarch64-linux-gnu-gcc` for arm64).

use std::io::Read;
use std::path::{Path, PathBuf};

use xbuild::sandbox::{Network, SecretFile, Security, StepCommand, StepOutcome, StepSpec};

use crate::sandbox::{busybox_root, run_spec, spec};
use crate::util::{Need, require, temp_dir};

/// The platforms an attack runs on: amd64, and arm64 when QEMU can run it.
fn platforms() -> Vec<&'static str> {
    let mut platforms = vec!["linux/amd64"];
    if require(&[Need::Binfmt("aarch64")]) {
        platforms.push("linux/arm64");
    }
    platforms
}

/// Runs `script` on busybox; returns stdout lines (panics unless it exits 0).
fn sh(platform: &str, script: &str, tweak: impl FnOnce(&mut StepSpec)) -> Vec<String> {
    let (mut step, dir) = spec(&[busybox_root(platform)], platform, StepCommand::sh(script));
    tweak(&mut step);
    let ran = run_spec(&step, dir);
    match &ran.result {
        Ok(StepOutcome::Exited { code: 0 }) => ran.stdout.clone(),
        other => panic!(
            "{platform}: {other:?}\nstdout: {:?}\nstderr: {:?}",
            ran.stdout, ran.stderr
        ),
    }
}

/// The C compiler that builds static probes for `platform`: the host's `gcc` for amd64,
/// Debian's cross compiler for arm64.
fn compiler(platform: &str) -> &'static str {
    match platform {
        "linux/amd64" => "gcc",
        "linux/arm64" => "aarch64-linux-gnu-gcc",
        other => panic!("no probe compiler for {other}"),
    }
}

/// The platforms the C probes run on: those of [`platforms`] whose compiler is installed
/// (CI installs both: scripts/setup-host.sh; amd64 is required for the probe tests).
fn probe_platforms() -> Vec<&'static str> {
    platforms()
        .into_iter()
        .filter(|platform| {
            *platform == "linux/amd64" || require(&[Need::Program(compiler(platform))])
        })
        .collect()
}

/// The probes of tests/fixtures/attack/attack.c, built static for `platform`, in a layer.
fn probe_layer(platform: &str) -> tempfile::TempDir {
    let dir = temp_dir();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/attack/attack.c");
    let status = std::process::Command::new(compiler(platform))
        .args(["-static", "-O1", "-o"])
        .arg(dir.path().join("attack"))
        .arg(&source)
        .status()
        .expect("gcc");
    assert!(status.success(), "{} failed", compiler(platform));
    dir
}

/// Runs `/attack ARGUMENTS` on busybox for `platform` (arm64 under QEMU); its stdout lines.
fn probe(platform: &str, arguments: &str, tweak: impl FnOnce(&mut StepSpec)) -> Vec<String> {
    let layer = probe_layer(platform);
    let lower = [layer.path().to_path_buf(), busybox_root(platform)];
    let (mut step, dir) = spec(
        &lower,
        platform,
        StepCommand::sh(format!("/attack {arguments}")),
    );
    tweak(&mut step);
    let ran = run_spec(&step, dir);
    assert!(
        matches!(ran.result, Ok(StepOutcome::Exited { code: 0 })),
        "{platform}: {:?} {:?} {:?}",
        ran.result,
        ran.stdout,
        ran.stderr
    );
    ran.stdout
}

/// slirp4netns's own sandbox detaches its old root; run in the host's mount namespace, that
/// detach once propagated to the host and unmounted its shared leaf mounts (an `ip netns`
/// name stopped working after any build). A step on the default network leaves them be.
#[test]
fn a_step_on_the_default_network_leaves_the_hosts_mounts_alone() {
    if !require(&[Need::Root, Need::Fixtures, Need::Program("slirp4netns")]) {
        return;
    }
    let name = format!("xbsec-{}", std::process::id());
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(ip(&["netns", "add", &name]).status.success());
    let lines = sh("linux/amd64", "ls /sys/class/net", |_| {});
    let after = ip(&["netns", "exec", &name, "true"]);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    ip(&["netns", "del", &name]);
    assert_eq!(lines, ["eth0", "lo"]);
    assert!(
        after.status.success(),
        "the netns mount went away: {}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert!(mounts.contains(&format!("/run/netns/{name}")), "{mounts}");
}

#[test]
fn a_step_cannot_reach_a_service_on_the_hosts_loopback() {
    if !require(&[Need::Root, Need::Fixtures, Need::Program("slirp4netns")]) {
        return;
    }
    // A service on the host's loopback that answers every connection by closing it, and
    // counts them.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    let script = format!(
        "ls /sys/class/net; for host in 127.0.0.1 10.0.2.2; do \
         nc -w 2 $host {port} </dev/null && echo $host reached || echo $host refused; done"
    );
    for platform in platforms() {
        let lines = sh(platform, &script, |_| {});
        assert_eq!(
            lines,
            ["eth0", "lo", "127.0.0.1 refused", "10.0.2.2 refused"],
            "{platform}"
        );
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{platform}: a connection arrived"
        );
    }
    // The same probe on the host's network does reach it: the test can tell.
    let lines = sh("linux/amd64", &script, |step| step.network = Network::Host);
    assert!(lines.contains(&"127.0.0.1 reached".to_owned()), "{lines:?}");
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

#[test]
fn network_none_is_only_lo_and_the_default_resolves_names() {
    if !require(&[Need::Root, Need::Fixtures, Need::Program("slirp4netns")]) {
        return;
    }
    let lines = sh("linux/amd64", "ls /sys/class/net", |step| {
        step.network = Network::None
    });
    assert_eq!(lines, ["lo"]);
    // Name resolution goes through slirp4netns's forwarder (the host's resolver may be on
    // its loopback); Debian's mirror must stay reachable from a step.
    let lines = sh(
        "linux/amd64",
        "cat /etc/resolv.conf | grep nameserver; nslookup deb.debian.org >/dev/null && echo resolved",
        |_| {},
    );
    assert_eq!(lines, ["nameserver 10.0.2.3", "resolved"]);
}

#[test]
fn a_packet_socket_sees_only_the_steps_own_traffic() {
    if !require(&[
        Need::Root,
        Need::Fixtures,
        Need::Program("gcc"),
        Need::Program("slirp4netns"),
    ]) {
        return;
    }
    // A host process talks to another over the host's loopback all along.
    let marker = "XBUILD-MARKER-PASSWORD";
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = receiver.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = socket.send_to(marker.as_bytes(), target);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let mut seen = Vec::new();
    for platform in probe_platforms() {
        let in_step = probe(platform, &format!("packet {marker}"), |_| {});
        let on_host = probe(platform, &format!("packet {marker}"), |step| {
            step.network = Network::Host
        });
        seen.push((platform, in_step, on_host));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    for (platform, in_step, on_host) in seen {
        assert_eq!(in_step, ["packets 0"], "{platform}");
        // In the host's namespace the same socket does capture them: the probe works.
        assert_ne!(on_host, ["packets 0"], "{platform}");
    }
}

#[test]
fn device_nodes_made_with_mknod_cannot_be_opened() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    // c 7:0 a virtual console's memory, c 5:1 the console, b 7:0 loop0, c 10:183 hwrng,
    // c 1:1 /dev/mem, b 8:0 a disk, c 1:3 null (allowed only as the bound /dev/null).
    let script = "for node in 'vcs c 7 0' 'console c 5 1' 'loop0 b 7 0' 'hwrng c 10 183' \
                  'mem c 1 1' 'sda b 8 0' 'null c 1 3'; do set -- $node; \
                  mknod /tmp/$1 $2 $3 $4 || echo $1 mknod-failed; \
                  head -c 1 /tmp/$1 >/dev/null 2>&1 && echo $1 opened || echo $1 refused; done; \
                  mknod /dev/vcs0 c 7 0 && (head -c 1 /dev/vcs0 >/dev/null 2>&1 && echo dev opened || echo dev refused); \
                  head -c 1 /dev/zero | wc -c; head -c 1 /dev/urandom | wc -c; echo > /dev/null && echo null ok";
    for platform in platforms() {
        let lines = sh(platform, script, |_| {});
        assert_eq!(
            lines,
            [
                "vcs refused",
                "console refused",
                "loop0 refused",
                "hwrng refused",
                "mem refused",
                "sda refused",
                "null refused",
                "dev refused",
                "1",
                "1",
                "null ok"
            ],
            "{platform}"
        );
    }
    // A privileged step (--security=insecure) can open its own null node: the probe works.
    let lines = sh(
        "linux/amd64",
        "mknod /tmp/null c 1 3; head -c 1 /tmp/null >/dev/null 2>&1 && echo opened || echo refused",
        |step| step.security = Security::Insecure,
    );
    assert_eq!(lines, ["opened"]);
}

/// `add_key(2)` into root's user keyring on the host; revoked when dropped.
struct HostKey(i64);

impl HostKey {
    fn add() -> Self {
        let kind = c"user";
        let name = c"xbuild-host-secret";
        let payload = b"host-secret";
        // SAFETY: add_key reads two strings and a payload that outlive the call.
        let id = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                kind.as_ptr(),
                name.as_ptr(),
                payload.as_ptr(),
                payload.len(),
                -4i32, // KEY_SPEC_USER_KEYRING
            )
        };
        assert!(id > 0, "add_key: {}", std::io::Error::last_os_error());
        Self(id)
    }
}

impl Drop for HostKey {
    fn drop(&mut self) {
        // SAFETY: KEYCTL_REVOKE (3) takes a key id.
        unsafe { libc::syscall(libc::SYS_keyctl, 3, self.0) };
    }
}

#[test]
fn the_hosts_keyring_and_keyctl_are_out_of_reach() {
    if !require(&[Need::Root, Need::Fixtures, Need::Program("gcc")]) {
        return;
    }
    let _key = HostKey::add();
    for platform in probe_platforms() {
        let lines = probe(platform, "keyctl", |_| {});
        let control = probe(platform, "keyctl", |step| {
            step.security = Security::Insecure
        });
        if platform != "linux/amd64"
            && control == ["add_key refused ENOSYS", "keyctl refused ENOSYS"]
        {
            // QEMU (7.2) does not emulate the keyring calls: a guest's add_key and keyctl
            // never reach the host, with or without the profile.
            assert_eq!(lines, control, "{platform}");
            continue;
        }
        assert_eq!(
            lines,
            ["add_key refused EPERM", "keyctl refused EPERM"],
            "{platform}: Docker's seccomp profile refuses the keyring calls"
        );
        // Without the profile (--security=insecure) the host's user keyring is readable:
        // the probe works; and the step's session keyring is a fresh one (the key went
        // there).
        assert_eq!(control[0], "add_key ok", "{platform}");
        assert!(
            control[1].starts_with("keyctl read "),
            "{platform}: {control:?}"
        );
    }
}

#[test]
fn user_namespaces_and_mounts_are_refused() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let script = "unshare -U -r -m sh -c 'mount -t tmpfs none /tmp && echo mounted' 2>/dev/null \
                  || echo refused; mount -t tmpfs none /tmp 2>/dev/null && echo mounted || echo refused";
    for platform in platforms() {
        assert_eq!(
            sh(platform, script, |_| {}),
            ["refused", "refused"],
            "{platform}"
        );
    }
    if require(&[Need::Program("gcc")]) {
        for platform in probe_platforms() {
            assert_eq!(
                probe(platform, "userns", |_| {}),
                ["unshare refused EPERM"],
                "{platform}"
            );
        }
    }
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    for platform in platforms() {
        // Sleeps in the background until fork fails (the subshell dies there), counted;
        // then everything but PID 1 is killed and the count read.
        let lines = sh(
            platform,
            "(i=0; while sleep 30 & do i=$((i+1)); echo $i > /tmp/count; done) 2>/dev/null; \
             kill -9 -1; cat /tmp/count",
            |step| {
                step.pids_limit = Some(40);
                step.pids_limit_required = true;
            },
        );
        let count: u32 = lines.last().unwrap().parse().unwrap();
        assert!((10..40).contains(&count), "{platform}: {count} processes");
        if platform == "linux/amd64" {
            // Without a limit the same loop (bounded at 60 here) goes past 40: the limit
            // is what stopped it.
            let lines = sh(
                platform,
                "(i=0; while [ $i -lt 60 ]; do sleep 30 & i=$((i+1)); echo $i > /tmp/count; done) \
                 2>/dev/null; kill -9 -1; cat /tmp/count",
                |step| step.pids_limit = None,
            );
            assert_eq!(lines.last().map(String::as_str), Some("60"));
        }
        // A real fork bomb: bounded, and the step ends (PID 1 exits, the kernel kills the
        // rest) while the host still forks. The shell forks its timer first: once the
        // bomb holds every pid of the step, even PID 1 cannot fork.
        let started = std::time::Instant::now();
        let lines = sh(
            platform,
            "sleep 3 & s=$!; (b() { b | b & }; b) 2>/dev/null & wait $s; echo survived",
            |step| {
                step.pids_limit = Some(40);
                step.pids_limit_required = true;
            },
        );
        // (QEMU may print its own complaint when a fork fails under it.)
        assert_eq!(
            lines.last().map(String::as_str),
            Some("survived"),
            "{lines:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(120));
        assert!(
            std::process::Command::new("true")
                .status()
                .unwrap()
                .success()
        );
    }
    // The default limit is in place: the step's cgroup has pids.max = the default.
    let (step, dir) = spec(
        &[busybox_root("linux/amd64")],
        "linux/amd64",
        StepCommand::sh("echo ready; sleep 1"),
    );
    let mut limits = Vec::new();
    let result =
        xbuild::sandbox::run_with(Path::new(env!("CARGO_BIN_EXE_xbuild")), &step, |_, _| {
            for parent in ["/sys/fs/cgroup/xbuild", "/sys/fs/cgroup/pids/xbuild"] {
                for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                    if let Ok(max) = std::fs::read_to_string(entry.path().join("pids.max")) {
                        limits.push(max.trim().to_owned());
                    }
                }
            }
        });
    assert!(
        matches!(result, Ok(StepOutcome::Exited { code: 0 })),
        "{result:?}"
    );
    drop(dir);
    assert!(
        limits.contains(&xbuild::sandbox::DEFAULT_PIDS_LIMIT.to_string()),
        "{limits:?}"
    );
}

#[test]
fn masked_paths_capabilities_and_groups_are_dockers() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let script = "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do \
                  [ -e $f ] && echo $f $(head -c 64 $f | wc -c); done; \
                  ls /sys/firmware | wc -l; \
                  echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo sys-writable || echo sys-read-only; \
                  grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status";
    for platform in platforms() {
        let lines = sh(platform, script, |_| {});
        let caps = &lines[lines.len() - 5..];
        assert_eq!(
            caps,
            [
                "CapInh:\t0000000000000000",
                "CapPrm:\t00000000a80425fb",
                "CapEff:\t00000000a80425fb",
                "CapBnd:\t00000000a80425fb",
                "CapAmb:\t0000000000000000"
            ],
            "{platform}"
        );
        let rest = &lines[..lines.len() - 5];
        for line in rest.iter().filter(|line| line.starts_with("/proc")) {
            assert!(line.ends_with(" 0"), "{platform}: {line} is readable");
        }
        assert!(
            rest.contains(&"0".to_owned()),
            "{platform}: /sys/firmware: {rest:?}"
        );
        assert!(
            rest.contains(&"sys-read-only".to_owned()),
            "{platform}: {rest:?}"
        );
    }
    // USER uid:gid: the primary gid is a supplementary group too, as in Docker.
    let lines = sh(
        "linux/amd64",
        "id -G; grep Groups /proc/self/status",
        |step| step.user = Some("1234:2345".into()),
    );
    assert_eq!(lines, ["2345", "Groups:\t2345 "]);
}

#[test]
fn secrets_stay_off_the_disk_and_mount_targets_stay_inside_the_root() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    // An image whose /run is a link to /etc (on the host, that would be the host's /etc).
    let layer = temp_dir();
    std::os::unix::fs::symlink("/etc", layer.path().join("run")).unwrap();
    let lower = [layer.path().to_path_buf(), busybox_root("linux/amd64")];
    let (mut step, dir) = spec(
        &lower,
        "linux/amd64",
        StepCommand::sh(
            "cat /run/secrets/token; echo; cat /etc/secrets/token; echo; \
             grep -c ' /etc/secrets/token tmpfs ' /proc/mounts; echo ready; sleep 1",
        ),
    );
    let secret = "s3cr3t-value-XYZ";
    step.secrets = vec![SecretFile {
        content: secret.as_bytes().to_vec(),
        target: PathBuf::from("/run/secrets/token"),
        mode: 0o400,
        uid: 0,
        gid: 0,
    }];
    let scratch = temp_dir();
    step.scratch_parent = Some(scratch.path().to_path_buf());
    let mut on_disk = Vec::new();
    let mut stdout = Vec::new();
    let result =
        xbuild::sandbox::run_with(Path::new(env!("CARGO_BIN_EXE_xbuild")), &step, |_, line| {
            let line = String::from_utf8_lossy(line).into_owned();
            if line == "ready" {
                // While the step runs: no file under the scratch directory holds it.
                on_disk = files_containing(scratch.path(), secret.as_bytes());
            }
            stdout.push(line);
        });
    assert!(
        matches!(result, Ok(StepOutcome::Exited { code: 0 })),
        "{result:?}"
    );
    assert_eq!(stdout[..3], [secret, secret, "1"], "{stdout:?}");
    assert!(on_disk.is_empty(), "{on_disk:?}");
    assert!(
        !Path::new("/etc/secrets").exists(),
        "the host's /etc was used"
    );
    // The mount point the step needed is gone from its layer.
    assert!(!step.upper_dir.join("etc/secrets").exists());
    drop(dir);
}

fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(metadata) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if metadata.is_dir() {
                stack.push(path);
            } else if metadata.is_file() {
                let mut content = Vec::new();
                if std::fs::File::open(&path)
                    .and_then(|mut file| file.read_to_end(&mut content))
                    .is_ok()
                    && content.windows(needle.len()).any(|window| window == needle)
                {
                    found.push(path);
                }
            }
        }
    }
    found
}

#[test]
fn entitlements_are_checked_before_any_work() {
    let dir = temp_dir();
    // A base image that does not exist: a refusal that comes before any work says so
    // instead of a pull error.
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM nonexistent.invalid/base:1\nRUN true\nRUN --network=host true\n",
    )
    .unwrap();
    let root = dir.path().join("store");
    let output = crate::util::run(crate::util::xbuild(&root).arg("build").arg(dir.path()));
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        crate::util::stderr(&output)
    );
    assert!(
        crate::util::stderr(&output)
            .contains("Dockerfile:3: entitlement network.host is not allowed: RUN --network=host needs --allow network.host"),
        "{}",
        crate::util::stderr(&output)
    );
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM nonexistent.invalid/base:1\nRUN --security=insecure true\n",
    )
    .unwrap();
    let output = crate::util::run(crate::util::xbuild(&root).arg("build").arg(dir.path()));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        crate::util::stderr(&output)
            .contains("Dockerfile:2: entitlement security.insecure is not allowed: RUN --security=insecure needs --allow security.insecure"),
        "{}",
        crate::util::stderr(&output)
    );
    // --network=host for the whole build needs it too; --allow network.host is accepted.
    let output = crate::util::run(
        crate::util::xbuild(&root)
            .args(["build", "--network", "host"])
            .arg(dir.path()),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(crate::util::stderr(&output).contains("--allow network.host"));
    let output = crate::util::run(
        crate::util::xbuild(&root)
            .args(["build", "--allow", "network.host,security.insecure"])
            .arg(dir.path()),
    );
    assert!(
        !crate::util::stderr(&output).contains("needs --allow"),
        "{}",
        crate::util::stderr(&output)
    );
    assert_ne!(
        output.status.code(),
        Some(2),
        "{}",
        crate::util::stderr(&output)
    );
}

/// `RUN --mount=type=bind` from the context sees the context as BuildKit sends it: after
/// `.dockerignore`, with links resolved inside it. A link to the host's `/etc/shadow` is
/// not found (it would be the context's own `etc/shadow`), an ignored file is not there, and
/// what the step sees cannot be copied into the image.
#[test]
fn bind_mounts_from_the_context_see_only_the_filtered_context() {
    if !crate::build::needs() {
        return;
    }
    let temp = temp_dir();
    let dir = temp.path();
    crate::build::store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("sub")).unwrap();
    std::fs::write(ctx.join("kept.txt"), "kept\n").unwrap();
    std::fs::write(ctx.join("ignored.txt"), "IGNORED-CONTENT\n").unwrap();
    std::fs::write(ctx.join("sub/inner.txt"), "inner\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "ignored.txt\n").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", ctx.join("shadow-link")).unwrap();
    std::os::unix::fs::symlink("kept.txt", ctx.join("kept-link")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         RUN --mount=type=bind,target=/ctx ls -a /ctx > /listing && \
         cat /ctx/kept.txt /ctx/kept-link /ctx/sub/inner.txt > /read && \
         (cat /ctx/ignored.txt > /leak 2>/dev/null || true)\n",
    )
    .unwrap();
    let output = crate::build::build(dir, &["-t", "bindctx"]);
    let stderr = crate::util::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    let unpacked = crate::build::unpack(dir, "docker.io/library/bindctx:latest", "amd64");
    let listing = std::fs::read_to_string(unpacked.join("listing")).unwrap();
    let names: Vec<&str> = listing.lines().collect();
    assert!(
        names.contains(&"kept.txt") && names.contains(&"sub"),
        "{listing}"
    );
    assert!(!names.contains(&"ignored.txt"), "{listing}");
    assert_eq!(
        std::fs::read_to_string(unpacked.join("read")).unwrap(),
        "kept\nkept\ninner\n"
    );
    let leak = std::fs::read_to_string(unpacked.join("leak")).unwrap_or_default();
    assert!(!leak.contains("IGNORED-CONTENT"), "{leak}");

    // A source that is a link out of the context resolves inside it: not found.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=bind,source=shadow-link,target=/s cat /s\n",
    )
    .unwrap();
    let output = crate::build::build(dir, &[]);
    let stderr = crate::util::stderr(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("shadow-link"), "{stderr}");
    assert!(!stderr.contains("root:"), "{stderr}");
}
