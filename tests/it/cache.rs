//! `--cache-to` / `--cache-from` between separate stores through a docker-registry and a
//! local directory: steps imported are `CACHED` and never run, digests are the same,
//! `mode=max` keeps intermediate stages, records of one platform never serve another. The
//! cache documents are read back with skopeo.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::path::Path;
use std::process::Output;

use crate::regenv::{self, Setup, TestRegistry};
use crate::util::{self, Need};

const EPOCH: &str = "1700000000";

const TWO_STAGES: &str = r#"
ARG REG
FROM $REG/base/busybox AS build
RUN echo "stage-one-ran $(uname -m)" && uname -m > /one && echo stage-one > /only-in-stage-one

FROM $REG/base/busybox
COPY --from=build /one /one
COPY hello.txt /hello.txt
RUN echo "stage-two-ran $(uname -m)" && cat /one /hello.txt > /both
ENV DONE=yes
"#;

fn needs() -> bool {
    regenv::ready(Setup::Plain)
        && util::require(&[Need::Root, Need::Fixtures, Need::Binfmt("aarch64")])
}

/// A registry with the fixture busybox (all platforms) as `base/busybox`, and a context.
fn setup() -> (TestRegistry, tempfile::TempDir) {
    let registry = TestRegistry::start(Setup::Plain);
    registry.skopeo_push_fixture("base/busybox:latest", None);
    let dir = util::temp_dir();
    let context = dir.path().join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), TWO_STAGES).unwrap();
    std::fs::write(context.join("hello.txt"), "hello\n").unwrap();
    (registry, dir)
}

/// Builds in the store `dir/<home>/store` (empty the first time).
fn build(registry: &TestRegistry, dir: &Path, home: &str, args: &[&str]) -> Output {
    build_with_epoch(registry, dir, home, Some(EPOCH), args)
}

/// Builds `dir/ctx` in the store `dir/<home>/store` with `SOURCE_DATE_EPOCH` set to `epoch`,
/// or unset; asserts that it succeeds.
fn build_with_epoch(
    registry: &TestRegistry,
    dir: &Path,
    home: &str,
    epoch: Option<&str>,
    args: &[&str],
) -> Output {
    let mut command = registry.xbuild(&dir.join(home));
    match epoch {
        Some(epoch) => command.env("SOURCE_DATE_EPOCH", epoch),
        None => command.env_remove("SOURCE_DATE_EPOCH"),
    };
    let output = command
        .args(["build", "--progress", "plain", "--build-arg"])
        .arg(format!("REG={}", registry.host))
        .args(args)
        .arg(dir.join("ctx"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
    output
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|line| line.contains(needle)).count()
}

/// Lines the steps' own output printed (`stage-one-ran ...`), not the progress names that
/// quote the command.
fn ran(text: &str, marker: &str) -> usize {
    text.lines()
        .filter(|line| line.contains(marker) && !line.contains("echo"))
        .count()
}

/// The image `name` is complete in the store of `home`: skopeo copies every platform of it
/// out of the store's OCI layout. (Not `xbuild fsck`: a store that pulled one platform of a
/// multi-platform base names the whole base index, whose other manifests it lacks.)
fn complete(registry: &TestRegistry, dir: &Path, home: &str, name: &str) {
    let store = dir.join(home).join("store");
    let copy = dir.join(format!("{home}-copy"));
    let output = registry
        .skopeo(
            &[
                "copy",
                "--all",
                &format!("oci:{}:{name}", store.display()),
                &format!("oci:{}:x", copy.display()),
            ],
            &[],
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
}

fn raw_json(registry: &TestRegistry, name: &str) -> serde_json::Value {
    serde_json::from_slice(&registry.skopeo_raw(name)).unwrap()
}

/// The cache index as skopeo reads it: platform annotation → manifest digest.
fn cache_platforms(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            entry["annotations"]["dev.xbuild.cache.platform"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Another store pushed the cache; a build on an empty store with `--cache-from` runs no
/// step and gives the same index digest. `mode=min` keeps the final stage only: the first
/// stage's RUN runs again, the rest is cached.
#[test]
fn an_empty_store_with_cache_from_runs_no_step_and_gives_the_same_digest() {
    if !needs() {
        return;
    }
    let (registry, dir) = setup();
    let dir = dir.path();
    let max = format!("{}/cache/app:max", registry.host);
    let min = format!("{}/cache/app:min", registry.host);
    let platforms = "linux/amd64,linux/arm64";
    let first = build(
        &registry,
        dir,
        "a",
        &[
            "--platform",
            platforms,
            "-t",
            "app:1",
            "--cache-to",
            &format!("type=registry,ref={max},mode=max"),
            "--cache-to",
            &format!("type=registry,ref={min}"),
        ],
    );
    let err = util::stderr(&first);
    assert_eq!(ran(&err, "stage-one-ran"), 2, "{err}");
    assert_eq!(ran(&err, "stage-two-ran"), 2, "{err}");
    let digest = util::stdout(&first).trim().to_owned();

    // The cache is an ordinary OCI index: one manifest per platform, read by skopeo. The
    // build stage runs per target platform here, so both caches cover both.
    let index = raw_json(&registry, "cache/app:max");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(cache_platforms(&index), ["linux/amd64", "linux/arm64"]);
    let entry = &index["manifests"][1];
    assert_eq!(entry["platform"]["architecture"], "arm64");
    let manifest = raw_json(
        &registry,
        &format!("cache/app@{}", entry["digest"].as_str().unwrap()),
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.xbuild.cache.config.v1+json"
    );
    // The base layer, both RUN layers and both COPY layers of arm64 (mode=max); min has the
    // first stage's RUN layer fewer.
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        5,
        "{manifest}"
    );
    let min_index = raw_json(&registry, "cache/app:min");
    let min_manifest = raw_json(
        &registry,
        &format!(
            "cache/app@{}",
            min_index["manifests"][1]["digest"].as_str().unwrap()
        ),
    );
    assert_eq!(min_manifest["layers"].as_array().unwrap().len(), 4);

    // mode=max on an empty store: nothing runs, everything is CACHED, same digest, and the
    // store is complete.
    let second = build(
        &registry,
        dir,
        "b",
        &[
            "--platform",
            platforms,
            "-t",
            "app:1",
            "--cache-from",
            &format!("type=registry,ref={max}"),
        ],
    );
    let err = util::stderr(&second);
    assert_eq!(
        ran(&err, "stage-one-ran") + ran(&err, "stage-two-ran"),
        0,
        "{err}"
    );
    assert!(err.contains("0 RUN steps run"), "{err}");
    // Per platform: RUN (stage one), COPY --from, COPY, RUN.
    assert_eq!(count(&err, "CACHED"), 8, "{err}");
    assert_eq!(util::stdout(&second).trim(), digest);
    complete(&registry, dir, "b", "docker.io/library/app:1");

    // A rebuild in that store without the cache: the final stage's records are local now.
    // (The first stage's layers were never needed, so never fetched: that stage runs.)
    let third = build(
        &registry,
        dir,
        "b",
        &["--platform", platforms, "-t", "app:2"],
    );
    let err = util::stderr(&third);
    assert_eq!(ran(&err, "stage-two-ran"), 0, "{err}");
    assert_eq!(ran(&err, "stage-one-ran"), 2, "{err}");
    assert_eq!(util::stdout(&third).trim(), digest);

    // mode=min: the first stage is not in the cache and runs; the final stage is cached.
    let fourth = build(
        &registry,
        dir,
        "c",
        &["--platform", platforms, "-t", "app:1", "--cache-from", &min],
    );
    let err = util::stderr(&fourth);
    assert_eq!(ran(&err, "stage-one-ran"), 2, "{err}");
    assert_eq!(ran(&err, "stage-two-ran"), 0, "{err}");
    assert_eq!(util::stdout(&fourth).trim(), digest);
    complete(&registry, dir, "c", "docker.io/library/app:1");

    // Pushing only: the cached steps' layers are mounted from the cache repository into the
    // target, never downloaded; the registry then holds the whole image.
    let target = format!("{}/other/app:1", registry.host);
    let pushed = build(
        &registry,
        dir,
        "p",
        &[
            "--platform",
            platforms,
            "--push",
            "-t",
            &target,
            "--cache-from",
            &max,
        ],
    );
    let err = util::stderr(&pushed);
    assert!(err.contains("0 RUN steps run"), "{err}");
    assert_eq!(util::stdout(&pushed).trim(), digest);
    assert_eq!(
        regenv::digest_of(&registry.skopeo_raw("other/app:1")),
        digest
    );
    let blobs = regenv::layout_blobs(&dir.join("p").join("store"));
    // The layers the build made (not the base's, which FROM pulled) stayed in the registry.
    for layer in manifest["layers"].as_array().unwrap().iter().skip(1) {
        let layer = layer["digest"].as_str().unwrap();
        assert!(
            !blobs.iter().any(|blob| blob == layer),
            "{layer} was downloaded"
        );
    }
    let copy = dir.join("copied");
    let output = registry
        .skopeo(
            &[
                "copy",
                "--all",
                &format!("docker://{}/other/app:1", registry.direct),
                &format!("oci:{}:x", copy.display()),
            ],
            &["src"],
        )
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
}

/// `--cache-to type=inline`: the records of the image's own steps are in its image config
/// under BuildKit's `moby.buildkit.cache.v0` (read back with skopeo); a build on an empty
/// store with `--cache-from IMAGE` runs none of the final stage's steps (the first stage,
/// not part of the image, runs: mode=min) and pushes the same digest (the inline records
/// hold nothing that changes between builds).
#[test]
fn an_inline_cache_in_a_pushed_image_serves_an_empty_store() {
    if !needs() {
        return;
    }
    let (registry, dir) = setup();
    let dir = dir.path();
    let image = format!("{}/inline/app:1", registry.host);
    let platforms = "linux/amd64,linux/arm64";
    let first = build(
        &registry,
        dir,
        "a",
        &[
            "--platform",
            platforms,
            "--push",
            "-t",
            &image,
            "--cache-to",
            "type=inline",
        ],
    );
    let err = util::stderr(&first);
    assert_eq!(ran(&err, "stage-two-ran"), 2, "{err}");
    let digest = util::stdout(&first).trim().to_owned();
    assert_eq!(
        regenv::digest_of(&registry.skopeo_raw("inline/app:1")),
        digest
    );
    // The arm64 image's config holds the inline cache: base64 of a JSON list of records,
    // each naming the top layer of its result among the image's layers.
    let index = raw_json(&registry, "inline/app:1");
    let arm64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["platform"]["architecture"] == "arm64")
        .unwrap();
    let reference = format!(
        "docker://{}/inline/app@{}",
        registry.direct,
        arm64["digest"].as_str().unwrap()
    );
    let output = registry
        .skopeo(&["inspect", "--config", "--raw", &reference], &[""])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let inline = config["moby.buildkit.cache.v0"].as_str().unwrap();
    let decoded = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(inline.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let records: serde_json::Value = serde_json::from_slice(&decoded.stdout).unwrap();
    let records = records.as_array().unwrap();
    // COPY --from, COPY, RUN, ENV of the final stage.
    assert_eq!(records.len(), 4, "{records:?}");
    let layers = config["rootfs"]["diff_ids"].as_array().unwrap().len();
    assert!(records.iter().all(|record| {
        record["digest"].as_str().unwrap().starts_with("sha256:")
            && record["results"][0]["layerIndex"].as_u64().unwrap() < layers as u64
    }));

    // An empty store with the image as --cache-from: the final stage is cached, its layers
    // mounted from the image's repository; the same digest is pushed.
    let again = format!("{}/inline/app:2", registry.host);
    let second = build(
        &registry,
        dir,
        "b",
        &[
            "--platform",
            platforms,
            "--push",
            "-t",
            &again,
            "--cache-from",
            &image,
            "--cache-to",
            "type=inline",
        ],
    );
    let err = util::stderr(&second);
    assert_eq!(ran(&err, "stage-two-ran"), 0, "{err}");
    assert_eq!(ran(&err, "stage-one-ran"), 2, "{err}");
    assert_eq!(util::stdout(&second).trim(), digest);
    assert_eq!(
        regenv::digest_of(&registry.skopeo_raw("inline/app:2")),
        digest
    );
}

/// An arm64 runner's cache is never used for amd64: the amd64 build runs its steps and
/// fetches none of the arm64 layers. Both export to the same ref, which then holds both
/// platforms.
#[test]
fn a_cache_of_arm64_steps_is_never_used_for_amd64() {
    if !needs() {
        return;
    }
    let (registry, dir) = setup();
    let dir = dir.path();
    let shared = format!("{}/cache/shared:c", registry.host);
    let spec = format!("type=registry,ref={shared},mode=max");
    build(
        &registry,
        dir,
        "arm",
        &["--platform", "linux/arm64", "--cache-to", &spec],
    );
    let index = raw_json(&registry, "cache/shared:c");
    assert_eq!(cache_platforms(&index), ["linux/arm64"]);
    let layers_of = |entry: &serde_json::Value| -> Vec<String> {
        let manifest = raw_json(
            &registry,
            &format!("cache/shared@{}", entry["digest"].as_str().unwrap()),
        );
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|layer| layer["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    let arm_layers = layers_of(&index["manifests"][0]);

    let amd = build(
        &registry,
        dir,
        "amd",
        &[
            "--platform",
            "linux/amd64",
            "--cache-from",
            &shared,
            "--cache-to",
            &spec,
        ],
    );
    let err = util::stderr(&amd);
    assert_eq!(ran(&err, "stage-one-ran x86_64"), 1, "{err}");
    assert_eq!(ran(&err, "stage-two-ran x86_64"), 1, "{err}");
    assert_eq!(count(&err, "CACHED"), 0, "{err}");
    // The shared ref now holds both platforms' records.
    let index = raw_json(&registry, "cache/shared:c");
    assert_eq!(cache_platforms(&index), ["linux/amd64", "linux/arm64"]);
    // Not one arm64 layer came into the amd64 store (the COPY of hello.txt has the same
    // bytes on both platforms: that one the amd64 build made itself).
    let amd_layers = layers_of(&index["manifests"][0]);
    let arm_only: Vec<&String> = arm_layers
        .iter()
        .filter(|layer| !amd_layers.contains(layer))
        .collect();
    assert!(arm_only.len() >= 3, "{arm_layers:?} {amd_layers:?}");
    let blobs = regenv::layout_blobs(&dir.join("amd").join("store"));
    for digest in arm_only {
        assert!(
            !blobs.iter().any(|blob| blob == digest),
            "{digest} in the amd64 store"
        );
    }
}

/// `type=local`: an OCI layout directory (skopeo reads it) that an empty store imports.
#[test]
fn a_local_cache_directory_round_trips() {
    if !needs() {
        return;
    }
    let (registry, dir) = setup();
    let dir = dir.path();
    let cache = dir.join("cache-dir");
    let first = build(
        &registry,
        dir,
        "a",
        &[
            "--platform",
            "linux/arm64",
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
        ],
    );
    let digest = util::stdout(&first).trim().to_owned();
    let raw = registry
        .skopeo(
            &[
                "inspect",
                "--raw",
                &format!("oci:{}:latest", cache.display()),
            ],
            &[],
        )
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", util::stderr(&raw));
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(cache_platforms(&index), ["linux/arm64"]);

    let second = build(
        &registry,
        dir,
        "b",
        &[
            "--platform",
            "linux/arm64",
            "-t",
            "app:1",
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
        ],
    );
    let err = util::stderr(&second);
    assert!(err.contains("0 RUN steps run"), "{err}");
    assert_eq!(count(&err, "CACHED"), 4, "{err}");
    assert_eq!(util::stdout(&second).trim(), digest);
    complete(&registry, dir, "b", "docker.io/library/app:1");

    // One more step at the end: everything before it is CACHED, and the new step reads the
    // cached steps' files, whose layers come from the cache directory only then.
    let dockerfile = format!("{TWO_STAGES}RUN echo \"last-ran $(cat /both | tr '\\n' ' ')\"\n");
    std::fs::write(dir.join("ctx").join("Dockerfile"), dockerfile).unwrap();
    let third = build(
        &registry,
        dir,
        "d",
        &[
            "--platform",
            "linux/arm64",
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
        ],
    );
    let err = util::stderr(&third);
    assert!(err.contains("1 RUN steps run"), "{err}");
    assert_eq!(count(&err, "CACHED"), 4, "{err}");
    assert_eq!(ran(&err, "last-ran aarch64 hello"), 1, "{err}");
}

/// Bad specs are bad input (exit 2), before any work.
#[test]
fn bad_cache_specs_are_refused() {
    let dir = util::temp_dir();
    for (spec, flag, message) in [
        ("type=gha", "--cache-to", "not supported yet"),
        ("type=registry", "--cache-to", "needs ref="),
        ("type=local,dest=/x", "--cache-from", "unknown key dest"),
        (
            "type=inline,mode=max",
            "--cache-to",
            "an inline cache holds the image's own steps only",
        ),
        (
            "type=inline",
            "--cache-from",
            "type=inline is for --cache-to",
        ),
    ] {
        let output = util::xbuild(dir.path())
            .args(["build", flag, spec, "."])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{spec}");
        assert!(
            util::stderr(&output).contains(message),
            "{spec}: {}",
            util::stderr(&output)
        );
    }
    // An inline cache goes into an image config: files alone have none.
    let output = util::xbuild(dir.path())
        .args([
            "build",
            "-o",
            "type=local,dest=out",
            "--cache-to",
            "type=inline",
            ".",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        util::stderr(&output).contains("no output writes an image"),
        "{}",
        util::stderr(&output)
    );
}

/// CI fan-out: two runners (two separate stores) each push one platform by digest only
/// (`-o type=registry,name=...,push-by-digest=true`, the digest in `--metadata-file`), then
/// `imagetools create` joins them; skopeo sees one index with both platforms.
#[test]
fn push_by_digest_from_two_stores_then_imagetools_create_gives_both_platforms() {
    if !needs() {
        return;
    }
    let (registry, dir) = setup();
    let dir = dir.path();
    let name = format!("{}/fanout/app", registry.host);
    let mut digests = Vec::new();
    for (home, platform) in [("amd", "linux/amd64"), ("arm", "linux/arm64")] {
        let metadata = dir.join(format!("{home}.json"));
        let output = build(
            &registry,
            dir,
            home,
            &[
                "--platform",
                platform,
                "-o",
                &format!("type=registry,name={name},push-by-digest=true"),
                "--metadata-file",
                metadata.to_str().unwrap(),
            ],
        );
        let digest = util::stdout(&output).trim().to_owned();
        let metadata: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&metadata).unwrap()).unwrap();
        assert_eq!(metadata["containerimage.digest"], digest.as_str());
        assert_eq!(metadata["image.name"], name.as_str());
        // Pushed, by digest.
        assert_eq!(
            regenv::digest_of(&registry.skopeo_raw(&format!("fanout/app@{digest}"))),
            digest
        );
        digests.push(digest);
    }
    let output = registry
        .xbuild(&dir.join("amd"))
        .args(["imagetools", "create", "-t", &format!("{name}:1")])
        .args(digests.iter().map(|digest| format!("{name}@{digest}")))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
    let index = raw_json(&registry, "fanout/app:1");
    let mut platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            format!(
                "{}/{}",
                entry["platform"]["os"].as_str().unwrap(),
                entry["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
}

const CUT_OFF: &str = r#"
ARG REG
FROM $REG/base/busybox AS build
COPY src.txt /src.txt
RUN echo "build-ran" && cut -c1-5 /src.txt > /out

FROM $REG/base/busybox
COPY --from=build /out /out
RUN echo "final-ran" && cat /out /out > /twice
ENV DONE=yes
"#;

/// The early cut-off of a `COPY --from=<stage>`: when the stage runs again but the files
/// copied from it come out the same, the steps after the `COPY` are cached (the image is
/// the one a build from an empty store gives); when they change, those steps run again.
#[test]
fn a_stage_rebuilt_to_the_same_files_leaves_the_steps_after_its_copy_cached() {
    if !needs() {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    registry.skopeo_push_fixture("base/busybox:latest", None);
    let dir = util::temp_dir();
    let dir = dir.path();
    let context = dir.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), CUT_OFF).unwrap();
    let source = context.join("src.txt");
    let args = ["--platform", "linux/amd64", "-t", "app:1"];

    std::fs::write(&source, "hello world\n").unwrap();
    let first = build(&registry, dir, "a", &args);
    let err = util::stderr(&first);
    assert_eq!(ran(&err, "build-ran"), 1, "{err}");
    assert_eq!(ran(&err, "final-ran"), 1, "{err}");
    let first_digest = util::stdout(&first).trim().to_owned();

    // Only what the stage's RUN drops changed: it runs, its /out is the same.
    std::fs::write(&source, "hello there\n").unwrap();
    let second = build(&registry, dir, "a", &args);
    let err = util::stderr(&second);
    assert_eq!(ran(&err, "build-ran"), 1, "{err}");
    assert_eq!(ran(&err, "final-ran"), 0, "{err}");
    let second_digest = util::stdout(&second).trim().to_owned();
    assert_eq!(second_digest, first_digest);
    // The same bytes as a build of this context from an empty store.
    let fresh = build(&registry, dir, "b", &args);
    assert_eq!(util::stdout(&fresh).trim(), second_digest);

    // /out changes: the final stage runs again and the image is another.
    std::fs::write(&source, "HELLO there\n").unwrap();
    let third = build(&registry, dir, "a", &args);
    let err = util::stderr(&third);
    assert_eq!(ran(&err, "build-ran"), 1, "{err}");
    assert_eq!(ran(&err, "final-ran"), 1, "{err}");
    assert_ne!(util::stdout(&third).trim(), first_digest);
}

/// A build stage whose `RUN` makes `/out` with the script `make.sh` of the context, its
/// `ARG FLAVOR` only printed; a final stage that copies `/out`.
const BY_CONTENT: &str = r#"
ARG REG
FROM $REG/base/busybox AS build
ARG FLAVOR=plain
COPY make.sh /make.sh
RUN echo "build-ran $FLAVOR" && sh /make.sh

FROM $REG/base/busybox
COPY --from=build /out /out
RUN echo "final-ran" && ls -lR /out > /listing
ENV DONE=yes
"#;

/// `make.sh`: the baseline `/out` (a file, a link to it, dates set), with `change` after it.
fn make_script(date: &str, change: &str) -> String {
    format!(
        "mkdir -p /out/dir\necho hello > /out/dir/f\nln -s f /out/dir/l\n\
         touch -d '{date}' /out/dir/f /out/dir /out\n{change}\n"
    )
}

/// A build of `ctx` without `SOURCE_DATE_EPOCH` (each file keeps the mtime the stage gave it).
fn build_without_epoch(registry: &TestRegistry, dir: &Path, args: &[&str]) -> Output {
    let args = [&["--platform", "linux/amd64", "-t", "app:1"][..], args].concat();
    build_with_epoch(registry, dir, "home", None, &args)
}

/// Whether the step whose progress name contains `name` was `CACHED` (`#N <name>` then
/// `#N CACHED`).
fn step_cached(text: &str, name: &str) -> bool {
    let ids: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(name) && line.starts_with('#'))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(!ids.is_empty(), "no step {name}:\n{text}");
    ids.iter()
        .any(|id| text.lines().any(|line| line == format!("{id} CACHED")))
}

fn by_content_setup() -> (TestRegistry, tempfile::TempDir) {
    let registry = TestRegistry::start(Setup::Plain);
    registry.skopeo_push_fixture("base/busybox:latest", None);
    let dir = util::temp_dir();
    let context = dir.path().join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), BY_CONTENT).unwrap();
    (registry, dir)
}

/// Without `SOURCE_DATE_EPOCH`, a stage rebuilt to the same files (new mtimes), or run again
/// for a changed `ARG` of its own, gives a cache hit on the `COPY --from` itself (keyed on
/// what it selects, mtimes left out, as BuildKit's content checksum): the same image, the
/// steps after it cached. `--no-cache` runs it all the same.
#[test]
fn a_copy_from_a_stage_rebuilt_to_the_same_files_is_cached_by_content() {
    if !needs() {
        return;
    }
    let (registry, dir) = by_content_setup();
    let dir = dir.path();
    let script = dir.join("ctx").join("make.sh");
    std::fs::write(&script, make_script("2020-01-01 00:00:00", "")).unwrap();
    let first = build_without_epoch(&registry, dir, &[]);
    let err = util::stderr(&first);
    assert_eq!(ran(&err, "build-ran"), 1, "{err}");
    assert_eq!(ran(&err, "final-ran"), 1, "{err}");
    assert!(!step_cached(&err, "COPY --from=build"), "{err}");
    let digest = util::stdout(&first).trim().to_owned();

    // The same files with other mtimes.
    std::fs::write(&script, make_script("2021-06-01 12:00:00", "")).unwrap();
    let touched = build_without_epoch(&registry, dir, &[]);
    let err = util::stderr(&touched);
    assert_eq!(ran(&err, "build-ran"), 1, "{err}");
    assert!(step_cached(&err, "COPY --from=build"), "{err}");
    assert_eq!(ran(&err, "final-ran"), 0, "{err}");
    assert_eq!(util::stdout(&touched).trim(), digest);

    // An ARG of the source stage: the stage runs again, the COPY and what follows do not.
    let argued = build_without_epoch(&registry, dir, &["--build-arg", "FLAVOR=other"]);
    let err = util::stderr(&argued);
    assert_eq!(ran(&err, "build-ran other"), 1, "{err}");
    assert!(step_cached(&err, "COPY --from=build"), "{err}");
    assert_eq!(ran(&err, "final-ran"), 0, "{err}");
    assert_eq!(util::stdout(&argued).trim(), digest);

    // --no-cache runs every step.
    let fresh = build_without_epoch(&registry, dir, &["--no-cache"]);
    let err = util::stderr(&fresh);
    assert_eq!(ran(&err, "build-ran"), 1, "{err}");
    assert!(!step_cached(&err, "COPY --from=build"), "{err}");
    assert_eq!(ran(&err, "final-ran"), 1, "{err}");
}

/// Each field of the content checksum counts: a changed mode, owner, content (same size),
/// link target, or a file added below the copied directory makes the `COPY --from` run
/// again, each compared with the baseline it alone differs from.
#[test]
fn a_copy_from_runs_again_when_a_mode_owner_content_link_or_file_changes() {
    if !needs() {
        return;
    }
    let (registry, dir) = by_content_setup();
    let dir = dir.path();
    let script = dir.join("ctx").join("make.sh");
    let date = "2020-01-01 00:00:00";
    std::fs::write(&script, make_script(date, "")).unwrap();
    let baseline = build_without_epoch(&registry, dir, &[]);
    let mut digests = vec![util::stdout(&baseline).trim().to_owned()];
    for change in [
        "chmod 600 /out/dir/f",
        "chown 1:1 /out/dir/f",
        "echo HELLO > /out/dir/f && touch -d '2020-01-01 00:00:00' /out/dir/f",
        "rm /out/dir/l && ln -s g /out/dir/l",
        "touch -d '2020-01-01 00:00:00' /out/dir/new /out/dir",
    ] {
        std::fs::write(&script, make_script(date, change)).unwrap();
        let output = build_without_epoch(&registry, dir, &[]);
        let err = util::stderr(&output);
        assert!(!step_cached(&err, "COPY --from=build"), "{change}:\n{err}");
        assert_eq!(ran(&err, "final-ran"), 1, "{change}:\n{err}");
        let digest = util::stdout(&output).trim().to_owned();
        assert!(!digests.contains(&digest), "{change}: {digest}");
        digests.push(digest);
    }
}
