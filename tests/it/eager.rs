//! Eager compression on the busybox fixtures, both platforms: amd64 finishes while arm64's
//! last step still runs, and its layers are compressed meanwhile (seen in the progress
//! stream and in the store); the digests are those of a build that compresses at the end;
//! a build whose arm64 step fails leaves a store `xbuild store check` finds clean.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::path::Path;

use crate::build::{needs, store_with_fixtures};
use crate::util;

/// amd64's two layers are done in seconds; arm64's last step waits `SLEEP` seconds under
/// QEMU first (then fails with `FAIL=1`). The build stage is not in the image's chain.
const DOCKERFILE: &str = r#"
FROM busybox AS tools
RUN head -c 1500000 /dev/urandom > /tools-only

FROM busybox
ARG TARGETARCH
RUN seq 1 400000 > /big && echo "$TARGETARCH" > /arch
ARG SLEEP=0
ARG FAIL=0
RUN if [ "$TARGETARCH" = arm64 ]; then sleep "$SLEEP"; [ "$FAIL" = 0 ] || exit 3; fi; echo done > /last
COPY --from=tools /bin/busybox /copied
"#;

fn build(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut command = util::xbuild(dir);
    command
        .current_dir(dir.join("ctx"))
        .args(["build", "--platform", "linux/amd64,linux/arm64"])
        .args(extra)
        .arg(".");
    util::run(&mut command)
}

fn setup(dir: &Path) {
    store_with_fixtures(dir);
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    std::fs::write(dir.join("ctx/Dockerfile"), DOCKERFILE).unwrap();
}

/// The rawjson events of `stderr`, in order.
fn events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event.get("event").is_some())
        .collect()
}

/// The position in `events` of the first `kind` event of a vertex whose name has every one
/// of `needles`.
fn position(events: &[serde_json::Value], kind: &str, needles: &[&str]) -> Option<usize> {
    let vertices: Vec<u64> = events
        .iter()
        .filter(|event| event["event"] == "started")
        .filter(|event| {
            let name = event["name"].as_str().unwrap_or_default();
            needles.iter().all(|needle| name.contains(needle))
        })
        .filter_map(|event| event["vertex"].as_u64())
        .collect();
    events.iter().position(|event| {
        event["event"] == kind
            && event["vertex"]
                .as_u64()
                .is_some_and(|vertex| vertices.contains(&vertex))
    })
}

#[test]
fn exported_layers_are_compressed_while_the_other_platform_builds() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    setup(dir);
    let output = build(
        dir,
        &[
            "--progress",
            "rawjson",
            "--iidfile",
            &dir.join("iid").display().to_string(),
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            "--build-arg",
            "SLEEP=25",
            "-t",
            "eager:1",
        ],
    );
    let stderr = util::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    let events = events(&stderr);
    // arm64's last RUN sleeps 25 s; amd64's two layers are compressed before it ends.
    let last_arm64 = position(&events, "finished", &["[linux/arm64 stage-1 3/4] RUN"])
        .unwrap_or_else(|| panic!("arm64's step 3: {stderr}"));
    for step in [
        "[linux/amd64 stage-1 2/4] RUN seq",
        "[linux/amd64 stage-1 3/4] RUN",
        "[linux/amd64 stage-1 4/4] COPY",
    ] {
        let compressed = position(&events, "finished", &["compressing 1 layer of", step])
            .unwrap_or_else(|| panic!("{step} compressed in the background: {stderr}"));
        assert!(compressed < last_arm64, "{step}: {stderr}");
    }
    // The build stage is no image's: never compressed.
    assert!(
        !stderr.contains("compressing 1 layer of [linux/amd64 tools"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("compressing 1 layer of [linux/arm64 tools"),
        "{stderr}"
    );
    let eager_digest = std::fs::read_to_string(dir.join("iid")).unwrap();
    let eager_digest = eager_digest.trim().to_owned();
    assert!(eager_digest.starts_with("sha256:"), "{eager_digest}");

    // skopeo reads the index and each image; every layer blob is in the store.
    let inspect = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!(
            "oci:{}:docker.io/library/eager:1",
            dir.join("store").display()
        ))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", util::stderr(&inspect));
    for arch in ["amd64", "arm64"] {
        let rootfs = crate::build::unpack(dir, "docker.io/library/eager:1", arch);
        assert_eq!(
            std::fs::read_to_string(rootfs.join("arch")).unwrap(),
            format!("{arch}\n")
        );
    }

    // The same index from a fresh store whose only output is files (no eager compression:
    // every layer is compressed at the end).
    let other = util::temp_dir();
    let other = other.path();
    setup(other);
    let output = build(
        other,
        &[
            "-q",
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            "--build-arg",
            "SLEEP=25",
            "-o",
            &format!("type=local,dest={}", other.join("out").display()),
        ],
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert_eq!(util::stdout(&output).trim(), eager_digest);

    let check = util::run(util::xbuild(dir).args(["store", "check"]));
    assert!(check.status.success(), "{}", util::stderr(&check));
}

#[test]
fn a_failed_build_with_background_compression_leaves_a_clean_store() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    setup(dir);
    let output = build(
        dir,
        &[
            "--progress",
            "rawjson",
            "--build-arg",
            "SLEEP=15",
            "--build-arg",
            "FAIL=1",
            "-t",
            "eager:1",
        ],
    );
    let stderr = util::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // amd64's layers were being compressed when arm64's step failed.
    assert!(
        position(
            &events(&stderr),
            "started",
            &["compressing 1 layer of", "[linux/amd64"]
        )
        .is_some(),
        "{stderr}"
    );
    let check = util::run(util::xbuild(dir).args(["store", "check"]));
    assert!(
        check.status.success(),
        "{}{}",
        util::stdout(&check),
        util::stderr(&check)
    );
    // A rebuild that succeeds reuses what the failed build recorded and is whole.
    let output = build(dir, &["--build-arg", "SLEEP=0", "-t", "eager:2"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let check = util::run(util::xbuild(dir).args(["store", "check"]));
    assert!(check.status.success(), "{}", util::stderr(&check));
}
