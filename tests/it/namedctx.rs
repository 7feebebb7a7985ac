//! `--no-cache-filter` and `--build-context` on the busybox fixtures, for linux/amd64 and
//! linux/arm64 at once; the images' files read from `-o type=local` folders (tar and the
//! file system judge, not xbuild).
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::path::Path;
use std::process::Output;

use crate::build::{needs, store_with_fixtures};
use crate::util;

const PLATFORMS: [&str; 2] = ["linux_amd64", "linux_arm64"];

/// Builds `dir/ctx` for both platforms into `dir/<out>` (`-o type=local`).
fn build(dir: &Path, out: &str, extra: &[&str]) -> Output {
    let mut command = util::xbuild(dir);
    command
        .current_dir(dir.join("ctx"))
        .args([
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "--progress",
            "plain",
            "-o",
        ])
        .arg(format!("type=local,dest={}", dir.join(out).display()))
        .args(extra)
        .arg(".");
    util::run(&mut command)
}

fn read(dir: &Path, out: &str, platform: &str, file: &str) -> String {
    std::fs::read_to_string(dir.join(out).join(platform).join(file))
        .unwrap_or_else(|error| panic!("{out}/{platform}/{file}: {error}"))
}

/// Lines a step's own output printed (`a-ran`), not the progress names quoting the command.
fn ran(text: &str, marker: &str) -> usize {
    text.lines()
        .filter(|line| line.contains(marker) && !line.contains("echo"))
        .count()
}

const TWO_STAGES: &str = r#"
FROM busybox AS a
RUN echo "a-ran" && cat /proc/sys/kernel/random/uuid > /stamp

FROM busybox AS b
RUN echo "b-first-ran"
COPY --from=a /stamp /stamp
RUN echo "b-after-ran" && cp /stamp /stamp-copy
"#;

/// `--no-cache-filter a`: `a`'s RUN runs again on both platforms and `b`, which copies
/// from it, gets the new file (a random UUID: busybox's `date` has no `%N`, and two runs in
/// one second would write the same bytes, which rightly keeps `b` cached) (its COPY and the RUN after it run again: their keys follow
/// `a`'s new content), while `b`'s first RUN, which does not depend on `a`, is cached.
/// Without the filter everything is cached and the files are the newest ones. A name no
/// stage has is ignored (as buildx does), and matching ignores case.
#[test]
fn no_cache_filter_reruns_the_stage_and_its_readers_see_the_new_result() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    store_with_fixtures(dir);
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    std::fs::write(dir.join("ctx/Dockerfile"), TWO_STAGES).unwrap();

    let first = build(dir, "out1", &[]);
    assert!(first.status.success(), "{}", util::stderr(&first));
    let log = util::stderr(&first);
    assert_eq!(ran(&log, "a-ran"), 2, "{log}");

    let second = build(dir, "out2", &["--no-cache-filter", "nosuchstage,A"]);
    assert!(second.status.success(), "{}", util::stderr(&second));
    let log = util::stderr(&second);
    assert_eq!(ran(&log, "a-ran"), 2, "a re-runs on both platforms: {log}");
    assert_eq!(ran(&log, "b-first-ran"), 0, "b's own first RUN hits: {log}");
    assert_eq!(
        ran(&log, "b-after-ran"),
        2,
        "b's RUN after the COPY re-runs: {log}"
    );
    for platform in PLATFORMS {
        let old = read(dir, "out1", platform, "stamp");
        let new = read(dir, "out2", platform, "stamp");
        assert_ne!(old, new, "{platform}: a's RUN ran again");
        assert_eq!(read(dir, "out2", platform, "stamp-copy"), new, "{platform}");
    }

    let third = build(dir, "out3", &[]);
    assert!(third.status.success(), "{}", util::stderr(&third));
    let log = util::stderr(&third);
    for marker in ["a-ran", "b-first-ran", "b-after-ran"] {
        assert_eq!(ran(&log, marker), 0, "{marker} is cached: {log}");
    }
    for platform in PLATFORMS {
        let newest = read(dir, "out2", platform, "stamp");
        assert_eq!(read(dir, "out3", platform, "stamp"), newest, "{platform}");
        assert_eq!(
            read(dir, "out3", platform, "stamp-copy"),
            newest,
            "{platform}"
        );
    }
}

/// A copy of the fixtures' OCI layout (blobs hard-linked) at `dir/layout`: its images are
/// tagged `busybox:latest` and `debian:bookworm`.
fn fixture_layout(dir: &Path) -> std::path::PathBuf {
    let layout = dir.join("layout");
    let status = std::process::Command::new("cp")
        .arg("-al")
        .arg(util::fixtures_dir().unwrap().join("oci"))
        .arg(&layout)
        .status()
        .unwrap();
    assert!(status.success());
    layout
}

const LOCAL_CONTEXT: &str = r#"
FROM busybox AS base
RUN echo "base-stage-ran" && exit 1

FROM busybox
COPY --from=base /o* /ctx/
RUN uname -m > /arch && ls /ctx > /listing
"#;

/// BuildKit's `testNamedLocalContext`, on both platforms: a directory replaces the stage
/// `base` (its RUN never runs), read after its own `.dockerignore` (`out2` is left out);
/// changing a file of it changes what the build copies (its content is the key).
#[test]
fn build_context_directory_replaces_a_stage_and_reads_its_own_dockerignore() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    store_with_fixtures(dir);
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    std::fs::write(dir.join("ctx/Dockerfile"), LOCAL_CONTEXT).unwrap();
    let base = dir.join("basedir");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("out"), "dummy-result").unwrap();
    std::fs::write(base.join("out2"), "dummy-result").unwrap();
    std::fs::write(base.join(".dockerignore"), "out2\n").unwrap();
    let flag = format!("base={}", base.display());

    let first = build(dir, "out1", &["--build-context", &flag]);
    assert!(first.status.success(), "{}", util::stderr(&first));
    let log = util::stderr(&first);
    assert_eq!(ran(&log, "base-stage-ran"), 0, "{log}");
    for (platform, arch) in [("linux_amd64", "x86_64"), ("linux_arm64", "aarch64")] {
        assert_eq!(read(dir, "out1", platform, "ctx/out"), "dummy-result");
        assert_eq!(
            read(dir, "out1", platform, "listing"),
            "out\n",
            "{platform}"
        );
        assert_eq!(read(dir, "out1", platform, "arch").trim(), arch);
    }

    std::fs::write(base.join("out"), "changed").unwrap();
    let second = build(dir, "out2", &["--build-context", &flag]);
    assert!(second.status.success(), "{}", util::stderr(&second));
    for platform in PLATFORMS {
        assert_eq!(
            read(dir, "out2", platform, "ctx/out"),
            "changed",
            "{platform}"
        );
    }
    // A change in an ignored file changes nothing: every step is cached.
    std::fs::write(base.join("out2"), "ignored").unwrap();
    let third = build(dir, "out3", &["--build-context", &flag]);
    assert!(third.status.success(), "{}", util::stderr(&third));
    assert!(
        util::stderr(&third).contains("0 RUN steps run"),
        "{}",
        util::stderr(&third)
    );
}

const IMAGE_CONTEXTS: &str = r#"
FROM alpine AS first
RUN uname -m > /arch

FROM docker.io/library/alpine:latest
COPY --from=first /arch /arch
COPY --from=nginx:1 /bin/busybox /nginx-busybox
RUN --mount=from=nginx:1,target=/n cmp /n/bin/busybox /nginx-busybox && echo mount-ok
"#;

/// `docker-image://` and `oci-layout://` contexts override image names in `FROM` (both
/// spellings of `alpine`), `COPY --from` and `RUN --mount from=`, for each platform: the
/// images come from the store and from an OCI layout on disk (neither `alpine` nor
/// `nginx:1` exists anywhere), and the RUN steps run on each platform's binaries.
#[test]
fn build_context_images_and_oci_layouts_override_image_names_per_platform() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    store_with_fixtures(dir);
    let layout = fixture_layout(dir);
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    std::fs::write(dir.join("ctx/Dockerfile"), IMAGE_CONTEXTS).unwrap();
    let output = build(
        dir,
        "out",
        &[
            "--build-context",
            "alpine=docker-image://busybox",
            "--build-context",
            &format!("nginx:1=oci-layout://{}:busybox:latest", layout.display()),
        ],
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    let log = util::stderr(&output);
    assert_eq!(ran(&log, "mount-ok"), 2, "{log}");
    let fixtures = util::fixtures_dir().unwrap().join("rootfs/busybox");
    for (platform, arch, fixture) in [
        ("linux_amd64", "x86_64", "linux-amd64"),
        ("linux_arm64", "aarch64", "linux-arm64"),
    ] {
        assert_eq!(read(dir, "out", platform, "arch").trim(), arch);
        let copied = std::fs::read(dir.join("out").join(platform).join("nginx-busybox")).unwrap();
        let expected = std::fs::read(fixtures.join(fixture).join("bin/busybox"))
            .unwrap_or_else(|error| panic!("fixture rootfs for {fixture}: {error}"));
        assert_eq!(
            copied, expected,
            "{platform}: the layout's image for the platform"
        );
    }
}

/// Values that cannot work are refused before any work, naming the flag and the value.
#[test]
fn build_context_values_that_cannot_work_are_refused_naming_the_flag() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    store_with_fixtures(dir);
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    std::fs::write(dir.join("ctx/Dockerfile"), "FROM busybox\n").unwrap();
    for (value, reason) in [
        ("base=/nonexistent/dir", "/nonexistent/dir"),
        ("base=target:other", "not supported"),
        ("Base=.", "invalid context name"),
        ("base", "expected NAME=VALUE"),
        ("scratch=.", "never looked up"),
        (
            "base=oci-layout:///nonexistent",
            "oci-layout:///nonexistent",
        ),
        ("base=docker-image://", "needs an image reference"),
    ] {
        let output = build(dir, "out", &["--build-context", value]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{value}: {}",
            util::stderr(&output)
        );
        let error = util::stderr(&output);
        assert!(
            error.contains(&format!("--build-context {value}")) && error.contains(reason),
            "{value}: {error}"
        );
    }
}

const URL_CONTEXTS: &str = r#"
FROM busybox AS unused
FROM busybox
COPY --from=tarball /sub/f /from-tar
COPY --from=lone /context /from-lone
RUN --mount=from=tarball,target=/t cat /t/sub/f > /mounted
"#;

/// URLs as named contexts, fetched from a loopback HTTP server only when the build reads
/// them: a tarball is unpacked (`COPY --from` and `RUN --mount from=` read it on both
/// platforms), any other file is a directory holding it as `context` (BuildKit's name); a
/// context naming a stage the target does not need is never fetched (its URL answers 404).
#[test]
fn build_context_urls_are_fetched_when_the_build_reads_them() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    store_with_fixtures(dir);
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    std::fs::write(dir.join("ctx/Dockerfile"), URL_CONTEXTS).unwrap();
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f"), "in the tarball\n").unwrap();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(www.join("c.tgz"))
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(www.join("lone.txt"), "a lone file\n").unwrap();
    let site = crate::conformance::http::SiteHandle::new(&www, std::collections::HashMap::new());
    let url = site.url();
    let output = build(
        dir,
        "out",
        &[
            "--build-context",
            &format!("tarball={url}/c.tgz"),
            "--build-context",
            &format!("lone={url}/lone.txt"),
            "--build-context",
            &format!("unused={url}/missing.tgz"),
        ],
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    for platform in PLATFORMS {
        assert_eq!(read(dir, "out", platform, "from-tar"), "in the tarball\n");
        assert_eq!(read(dir, "out", platform, "mounted"), "in the tarball\n");
        assert_eq!(read(dir, "out", platform, "from-lone"), "a lone file\n");
    }
    let log = site.take_log();
    assert!(
        !log.iter().any(|line| line.contains("missing.tgz")),
        "{log:?}"
    );
    // A URL that does not answer fails the build naming the flag.
    let output = build(
        dir,
        "out-missing",
        &["--build-context", &format!("tarball={url}/missing.tgz")],
    );
    assert_eq!(output.status.code(), Some(1), "{}", util::stderr(&output));
    assert!(
        util::stderr(&output).contains("--build-context tarball"),
        "{}",
        util::stderr(&output)
    );
}
