//! Reliability under faults (issue 7): `xbuild build` killed with SIGKILL at chosen moments
//! (the quick version of `scripts/crash.sh`), four builds at once on one store, pulls and
//! pushes through a proxy that drops, fails and stalls connections, a registry that stays
//! down, and a store on a full file system. After each, `xbuild store check` must be clean
//! and digests must be those of an undisturbed build (skopeo reads the registry).
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::regenv::{self, Setup, TestRegistry};
use crate::util::{self, Need};

/// Reproducible digests: every build here sets it.
const EPOCH: &str = "1700000000";

fn needs() -> bool {
    util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Binfmt("aarch64"),
        Need::Program("skopeo"),
    ])
}

/// Writes `megabytes` MB of incompressible, deterministic bytes (xorshift).
fn write_noise(path: &Path, megabytes: usize, seed: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = seed | 1;
    let mut buffer = vec![0u8; 1 << 20];
    for _ in 0..megabytes {
        for chunk in buffer.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        file.write_all(&buffer).unwrap();
    }
}

/// A context directory `dir/ctx` with this Dockerfile and a `payload` of `megabytes` MB.
fn context(dir: &Path, dockerfile: &str, megabytes: usize) -> std::path::PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    write_noise(&ctx.join("payload"), megabytes, 0x9e37_79b9_7f4a_7c15);
    ctx
}

/// `xbuild build` of `ctx` for amd64+arm64 with the registry's CA/config, quiet, reproducible.
fn build_command(registry: &TestRegistry, home: &Path, ctx: &Path, args: &[&str]) -> Command {
    let mut command = registry.xbuild(home);
    command
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["build", "--platform", "linux/amd64,linux/arm64"])
        .args(args)
        .arg(ctx);
    command
}

fn store_check(home: &Path) -> Output {
    util::run(util::xbuild(home).args(["store", "check"]))
}

fn assert_store_clean(home: &Path, when: &str) {
    let check = store_check(home);
    assert!(
        check.status.success(),
        "store check {when}: {}{}",
        util::stdout(&check),
        util::stderr(&check)
    );
}

/// The digest of what the registry holds under `name`, read by skopeo from the registry
/// itself (never through the proxy).
fn registry_digest(registry: &TestRegistry, name: &str) -> String {
    regenv::digest_of(&registry.skopeo_raw(name))
}

/// Runs a build with `--progress rawjson` and kills it with SIGKILL at the first event line
/// matching every one of `needles`. Returns whether it was killed (false: it ended first).
fn kill_at_event(mut command: Command, needles: &[&str]) -> bool {
    let mut child: Child = command
        .args(["--progress", "rawjson"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let events = BufReader::new(child.stderr.take().unwrap());
    let mut killed = false;
    for line in events.lines() {
        let Ok(line) = line else { break };
        if needles.iter().all(|needle| line.contains(needle)) {
            killed = child.kill().is_ok();
            break;
        }
    }
    let _ = child.wait();
    killed
}

const CRASH_DOCKERFILE: &str = "ARG REG\n\
FROM ${REG}/crash/busybox:1\n\
RUN seq 1 400000 > /seq && sha256sum /seq > /seq.sum\n\
COPY payload /payload\n\
RUN sha256sum /payload > /payload.sum && uname -m > /arch\n";

/// The quick version of `scripts/crash.sh`: SIGKILL during the pull, a RUN under emulation,
/// the COPY of the context (store writes), and the push; after each, the store checks clean
/// and a rebuild on that store gives the index of an undisturbed build, which the registry
/// then holds.
#[test]
fn sigkill_at_four_moments_then_check_and_rebuild_give_the_same_index() {
    if !needs() || !regenv::ready(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    registry.skopeo_push_fixture("crash/busybox:1", None);
    let temp = util::temp_dir();
    let ctx = context(temp.path(), CRASH_DOCKERFILE, 24);
    let reg = format!("REG={}", registry.host);
    let name = format!("{}/crash/app:1", registry.host);
    let args = ["--build-arg", &reg, "-t", &name, "--push"];

    let reference_home = temp.path().join("reference");
    let output = util::run(build_command(&registry, &reference_home, &ctx, &args).arg("-q"));
    assert_eq!(output.status.code(), Some(0), "{}", util::stderr(&output));
    let reference = util::stdout(&output).trim().to_owned();
    assert_eq!(registry_digest(&registry, "crash/app:1"), reference);

    let moments: [(&str, &[&str]); 4] = [
        ("pull", &["\"event\":\"bytes\""]),
        (
            "RUN under emulation",
            &["\"started\"", "linux/arm64", "RUN seq", "\"emulated\":true"],
        ),
        ("COPY", &["\"started\"", "COPY payload"]),
        ("push", &["\"started\"", "pushing"]),
    ];
    let mut killed_at = Vec::new();
    for (index, (moment, needles)) in moments.iter().enumerate() {
        let home = temp.path().join(format!("round{index}"));
        let killed = kill_at_event(build_command(&registry, &home, &ctx, &args), needles);
        if killed {
            killed_at.push(*moment);
        }
        assert_store_clean(&home, &format!("after a kill at {moment}"));
        let output = util::run(build_command(&registry, &home, &ctx, &args).arg("-q"));
        assert_eq!(
            output.status.code(),
            Some(0),
            "rebuild after a kill at {moment}: {}",
            util::stderr(&output)
        );
        assert_eq!(
            util::stdout(&output).trim(),
            reference,
            "rebuild after a kill at {moment}"
        );
        assert_eq!(registry_digest(&registry, "crash/app:1"), reference);
        assert_store_clean(&home, &format!("after the rebuild ({moment})"));
        let tmp = home.join("store").join("tmp");
        assert_eq!(
            std::fs::read_dir(&tmp).map_or(0, Iterator::count),
            0,
            "tmp/ after the rebuild ({moment})"
        );
    }
    assert!(
        killed_at.len() >= 3,
        "most moments must be reached before the build ends: killed at {killed_at:?}"
    );
}

/// Four builds at once on one store: two of the same Dockerfile, two of others; all succeed,
/// the two same ones give the same index, and the store checks clean.
#[test]
fn four_builds_at_once_on_one_store() {
    if !needs() || !regenv::ready(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    registry.skopeo_push_fixture("shared/busybox:1", None);
    let temp = util::temp_dir();
    let home = temp.path();
    let dockerfiles = [
        "ARG REG\nFROM ${REG}/shared/busybox:1\nCOPY payload /payload\nRUN sha256sum /payload > /sum && uname -m > /arch\n",
        "ARG REG\nFROM ${REG}/shared/busybox:1\nCOPY payload /payload\nRUN sha256sum /payload > /sum && uname -m > /arch\n",
        "ARG REG\nFROM ${REG}/shared/busybox:1\nRUN echo other > /other && uname -m > /arch\n",
        "ARG REG\nFROM ${REG}/shared/busybox:1 AS base\nRUN seq 1 1000 > /seq\nFROM scratch\nCOPY --from=base /seq /seq\n",
    ];
    let reg = format!("REG={}", registry.host);
    let children: Vec<Child> = dockerfiles
        .iter()
        .enumerate()
        .map(|(index, dockerfile)| {
            let ctx = home.join(format!("ctx{index}"));
            std::fs::create_dir_all(&ctx).unwrap();
            std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
            write_noise(&ctx.join("payload"), 4, 7);
            build_command(&registry, home, &ctx, &["--build-arg", &reg, "-q"])
                .arg("-t")
                .arg(format!("concurrent:{index}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let digests: Vec<String> = children
        .into_iter()
        .enumerate()
        .map(|(index, child)| {
            let output = child.wait_with_output().unwrap();
            assert_eq!(
                output.status.code(),
                Some(0),
                "build {index}: {}",
                util::stderr(&output)
            );
            util::stdout(&output).trim().to_owned()
        })
        .collect();
    assert_eq!(digests[0], digests[1], "same Dockerfile, same index");
    assert_ne!(digests[0], digests[2]);
    assert_store_clean(home, "after four concurrent builds");
    let images = util::stdout(&util::run(util::xbuild(home).arg("images")));
    let tags: Vec<&str> = images
        .lines()
        .filter(|line| line.starts_with("concurrent "))
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    for index in 0..4 {
        assert!(
            tags.contains(&index.to_string().as_str()),
            "concurrent:{index}:\n{images}"
        );
    }
    // Every image is readable by skopeo, both platforms.
    for index in 0..4 {
        for arch in ["amd64", "arm64"] {
            let output = Command::new("skopeo")
                .args(["inspect", "--override-arch", arch])
                .arg(format!(
                    "oci:{}:docker.io/library/concurrent:{index}",
                    home.join("store").display()
                ))
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", util::stderr(&output));
        }
    }
}

const FAULT_DOCKERFILE: &str = "ARG REG\n\
FROM ${REG}/faults/busybox:1\n\
COPY payload /payload\n\
RUN uname -m > /arch\n";

/// Pull and push through the fault proxy (every fifth connection dropped, one request in
/// five answered 500), then with every seventh connection stalled too: the same index as a build
/// that talks to the registry directly, and the registry (read directly by skopeo) holds it.
#[test]
fn pull_and_push_through_faults_and_stalls_give_the_same_digests() {
    if !needs() || !regenv::ready(Setup::Faulty) {
        return;
    }
    let registry = TestRegistry::start(Setup::Faulty);
    registry.skopeo_push_fixture("faults/busybox:1", None);
    let temp = util::temp_dir();
    // 40 MB: the push of the COPY layer is chunked (8 MB chunks), so faults hit mid-blob.
    let ctx = context(temp.path(), FAULT_DOCKERFILE, 40);

    // Direct: the base from the registry itself, pushed there.
    let direct_home = temp.path().join("direct");
    let direct_reg = format!("REG={}", registry.direct);
    let direct_name = format!("{}/faults/direct:1", registry.direct);
    let output = util::run(
        build_command(
            &registry,
            &direct_home,
            &ctx,
            &[
                "--build-arg",
                &direct_reg,
                "-t",
                &direct_name,
                "--push",
                "-q",
            ],
        )
        .env("XBUILD_UPLOAD_CHUNK_SIZE", "8388608"),
    );
    assert_eq!(output.status.code(), Some(0), "{}", util::stderr(&output));
    let reference = util::stdout(&output).trim().to_owned();

    let proxy = registry.proxy.as_ref().unwrap();
    let proxied_reg = format!("REG={}", registry.host);
    for (round, stall) in [("drops and 500s", 0), ("stalls too", 7)] {
        proxy.stall_every(stall);
        let faults_before = proxy.faults.load(std::sync::atomic::Ordering::SeqCst);
        let home = temp.path().join(format!("proxied-{stall}"));
        let name = format!("{}/faults/proxied-{stall}:1", registry.host);
        let started = Instant::now();
        let output = util::run(
            build_command(
                &registry,
                &home,
                &ctx,
                &["--build-arg", &proxied_reg, "-t", &name, "--push", "-q"],
            )
            .env("XBUILD_UPLOAD_CHUNK_SIZE", "8388608")
            .env("XBUILD_REGISTRY_TIMEOUT", "2")
            // About a third of the connections fail here (every fifth dropped, every
            // seventh stalled, and one request in five answered 500), and the 4 parallel
            // uploads take connection numbers in between: 6 attempts in a row all failing
            // happened in about one run in five (CI, 2026-12-06). 12 keep the point of the
            // test (every fault is retried to the same digests) without that lottery.
            .env("XBUILD_REGISTRY_ATTEMPTS", "12"),
        );
        assert_eq!(
            output.status.code(),
            Some(0),
            "{round}: {}",
            util::stderr(&output)
        );
        assert_eq!(util::stdout(&output).trim(), reference, "{round}");
        assert_eq!(
            registry_digest(&registry, &format!("faults/proxied-{stall}:1")),
            reference,
            "{round}: the registry holds the index"
        );
        let faults = proxy.faults.load(std::sync::atomic::Ordering::SeqCst) - faults_before;
        assert!(faults >= 3, "{round}: only {faults} faults were injected");
        assert_store_clean(&home, round);
        eprintln!(
            "{round}: {faults} faults, {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    proxy.stall_every(0);
}

/// A registry that is down (nothing listening, or a server that accepts and never answers)
/// fails the build with exit 1 and an error naming the registry, within a bounded time:
/// six attempts with backoff (about 6 s) when refused; six read timeouts when hanging.
#[test]
fn a_registry_that_stays_down_fails_clearly_in_bounded_time() {
    if !needs() || !regenv::ready(Setup::Faulty) {
        return;
    }
    let temp = util::temp_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registry = TestRegistry::start(Setup::Faulty);
    let proxy = registry.proxy.as_ref().unwrap();
    proxy.stall_every(1);
    for (what, host, limit) in [
        ("refused", format!("127.0.0.1:{port}"), 30),
        ("hanging", registry.host.clone(), 60),
    ] {
        let home = temp.path().join(what);
        let ctx = home.join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {host}/app:1\nRUN true\n"),
        )
        .unwrap();
        let started = Instant::now();
        let output = util::run(
            build_command(&registry, &home, &ctx, &["--progress", "plain"])
                .env("XBUILD_REGISTRY_TIMEOUT", "2"),
        );
        let took = started.elapsed();
        let stderr = util::stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains(&host) && stderr.contains("cannot reach"),
            "{what}: {stderr}"
        );
        assert!(
            took < Duration::from_secs(limit),
            "{what}: took {took:?}: {stderr}"
        );
        eprintln!("{what}: failed after {:.1} s", took.as_secs_f64());
        assert_store_clean(&home, what);
    }
}

/// Unmounts the test's tmpfs.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A store on a 24 MB tmpfs: a COPY of 40 MB, then a RUN whose layer does not fit (its blob,
/// written when the image is), fail with exit 1 and "No space left on device" naming what
/// was being written, and the store checks clean afterwards (what the failed build left is
/// removed; the RUN's own result is cache, which `xbuild prune` removes).
#[test]
fn a_full_disk_fails_clearly_and_leaves_the_store_clean() {
    if !util::require(&[Need::Root, Need::Fixtures, Need::Program("skopeo")]) {
        return;
    }
    let temp = util::temp_dir();
    let home = temp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&home)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    let _tmpfs = Tmpfs(home.clone());
    regenv::store_with_busybox(&home, "docker.io/library/busybox:latest");
    let ctx = temp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    write_noise(&ctx.join("big"), 40, 3);
    for (case, dockerfile) in [
        ("COPY", "FROM busybox\nCOPY big /big\n"),
        (
            "RUN",
            "FROM busybox\nRUN head -c 9000000 /dev/urandom > /a\n",
        ),
    ] {
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let output = util::run(
            util::xbuild(&home)
                .args(["build", "--platform", "linux/amd64", "--progress", "plain"])
                .arg(&ctx),
        );
        let stderr = util::stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{case}: {stderr}");
        assert!(
            stderr.contains("No space left on device"),
            "{case}: {stderr}"
        );
        assert!(stderr.contains("hint: "), "{case}: {stderr}");
        eprintln!("{case}: {stderr}");
        assert_store_clean(&home, case);
        if case == "RUN" {
            // The step itself succeeded: its snapshot is kept as its cache (the layer is
            // compressed when the image is written, which is what ran out of space), and
            // `xbuild prune` gives the space back.
            assert!(stderr.contains("compressing 1 layer"), "{stderr}");
            let pruned = util::run(util::xbuild(&home).arg("prune"));
            assert!(pruned.status.success(), "{}", util::stderr(&pruned));
        }
        // The space is back: what the failed build wrote is gone.
        let free = nix::sys::statvfs::statvfs(&home).unwrap();
        let free_mb = free.blocks_available() * free.fragment_size() / (1 << 20);
        assert!(
            free_mb >= 12,
            "{case}: only {free_mb} MB free after the check"
        );
    }
}
