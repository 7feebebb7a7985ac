//! buildx's `--cache-to`/`--cache-from` and `-o` keys end to end on `FROM scratch` builds
//! (no base image, no emulation): `ignore-error`, `image-manifest`, local `tag`/`digest`, a
//! local cache directory that does not grow, quoted `name` lists, `compression`,
//! `annotation*`, `name-canonical`, `platform-split` (`false` merging several platforms);
//! judged by skopeo, tar and the files
//! written, not by xbuild reading its own output.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::path::Path;
use std::process::Output;

use crate::util::{self, Need};

fn needs() -> bool {
    util::require(&[Need::Root, Need::Program("skopeo"), Need::Program("tar")])
}

/// A context with two files, each copied by a step of its own.
fn context(dir: &Path, second: &str) -> std::path::PathBuf {
    let context = dir.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY one.txt /one.txt\nCOPY two.txt /two.txt\n",
    )
    .unwrap();
    std::fs::write(context.join("one.txt"), "one\n").unwrap();
    std::fs::write(context.join("two.txt"), second).unwrap();
    context
}

/// `xbuild build` with a store of its own (`dir/<home>/store`).
fn build(dir: &Path, home: &str, args: &[&str]) -> Output {
    util::run(
        util::xbuild(&dir.join(home))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress", "plain"])
            .args(args)
            .arg(dir.join("ctx")),
    )
}

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "{}", util::stderr(output));
    util::stderr(output)
}

fn skopeo_raw(reference: &str) -> serde_json::Value {
    let output =
        util::run(std::process::Command::new("skopeo").args(["inspect", "--raw", reference]));
    assert!(
        output.status.success(),
        "{reference}: {}",
        util::stderr(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn blob_count(layout: &Path) -> usize {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .count()
}

/// `ignore-error=true`: a cache export that fails is a warning and the build succeeds;
/// without it the same export fails the build.
#[test]
fn a_failed_cache_export_is_a_warning_only_with_ignore_error() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir, "two\n");
    // A directory cannot be made under a regular file.
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let dest = blocker.join("cache");
    let spec = format!("type=local,dest={}", dest.display());
    let failed = build(dir, "a", &["--cache-to", &spec]);
    assert_eq!(failed.status.code(), Some(1), "{}", util::stderr(&failed));
    let err = ok(&build(
        dir,
        "a",
        &["--cache-to", &format!("{spec},ignore-error=true")],
    ));
    assert!(
        err.contains("WARNING") && err.contains("ignore-error=true"),
        "{err}"
    );
}

/// `image-manifest=true,tag=v2`: the tag names one OCI image manifest (skopeo reads it as
/// one), whose config holds the records of every platform; another store builds from it
/// (by tag and by digest) with every step cached, and a later export of one platform keeps
/// the other's records.
#[test]
fn an_image_manifest_cache_round_trips_by_tag_and_digest() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir, "two\n");
    let cache = dir.join("cache");
    let to = format!(
        "type=local,dest={},tag=v2,image-manifest=true,mode=max",
        cache.display()
    );
    let first = build(
        dir,
        "a",
        &["--platform", "linux/amd64,linux/arm64", "--cache-to", &to],
    );
    ok(&first);
    let digest = util::stdout(&first).trim().to_owned();
    let manifest = skopeo_raw(&format!("oci:{}:v2", cache.display()));
    assert_eq!(
        manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{manifest}"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.xbuild.cache.config.v1+json"
    );
    // No `latest` was written: the tag is the one asked for.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            entry["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["v2"]);
    let top = index["manifests"][0]["digest"].as_str().unwrap().to_owned();

    for (home, from) in [
        ("b", format!("type=local,src={},tag=v2", cache.display())),
        (
            "c",
            format!("type=local,src={},digest={top}", cache.display()),
        ),
    ] {
        let second = build(
            dir,
            home,
            &[
                "--platform",
                "linux/amd64,linux/arm64",
                "--cache-from",
                &from,
            ],
        );
        let err = ok(&second);
        assert!(err.contains("imported 4 cache records"), "{from}: {err}");
        assert_eq!(util::stdout(&second).trim(), digest, "{from}");
    }
    // Without the tag, `latest` is looked for: nothing there, a warning, steps run.
    let err = ok(&build(
        dir,
        "d",
        &[
            "--platform",
            "linux/arm64",
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
        ],
    ));
    assert!(err.contains("no cache there"), "{err}");

    // Exporting arm64 alone (changed files) keeps amd64's records in the one manifest.
    std::fs::write(dir.join("ctx/two.txt"), "changed\n").unwrap();
    ok(&build(
        dir,
        "e",
        &["--platform", "linux/arm64", "--cache-to", &to],
    ));
    std::fs::write(dir.join("ctx/two.txt"), "two\n").unwrap();
    let err = ok(&build(
        dir,
        "f",
        &[
            "--platform",
            "linux/amd64",
            "--cache-from",
            &format!("type=local,src={},tag=v2", cache.display()),
        ],
    ));
    assert!(err.contains("imported 2 cache records"), "{err}");
    assert!(err.contains("0 RUN steps run, 2 steps cached"), "{err}");
}

/// Exporting to one local directory again and again does not grow it: blobs no
/// `index.json` entry reaches any more are removed; a blob of another tag stays.
#[test]
fn a_local_cache_directory_drops_blobs_no_record_refers_to() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir, "two\n");
    let cache = dir.join("cache");
    let to = format!("type=local,dest={}", cache.display());
    std::fs::write(dir.join("ctx/two.txt"), "other\n").unwrap();
    ok(&build(
        dir,
        "a",
        &["--cache-to", &format!("{to},tag=other")],
    ));
    let other = blob_count(&cache);
    std::fs::write(dir.join("ctx/two.txt"), "two\n").unwrap();
    ok(&build(dir, "a", &["--cache-to", &to]));
    let after_first = blob_count(&cache);
    assert!(after_first > other, "{other} {after_first}");
    for round in 0..3 {
        std::fs::write(dir.join("ctx/two.txt"), format!("round {round}\n")).unwrap();
        ok(&build(dir, "a", &["--cache-to", &to]));
        assert_eq!(blob_count(&cache), after_first, "round {round}");
    }
    // skopeo still reads both tags whole.
    for tag in ["latest", "other"] {
        let copy = dir.join(format!("copy-{tag}"));
        let output = util::run(std::process::Command::new("skopeo").args([
            "copy",
            &format!("oci:{}:{tag}", cache.display()),
            &format!("oci:{}:x", copy.display()),
        ]));
        assert!(output.status.success(), "{tag}: {}", util::stderr(&output));
    }
}

/// `-o type=oci` with a quoted list of names, zstd layers and manifest annotations;
/// `type=docker` with two names in `RepoTags`; `type=image,name-canonical=true` names
/// `NAME@DIGEST` too; `type=local,platform-split=true` puts one platform in its folder;
/// a zstd and a gzip archive from one build, each with its layers' media type.
#[test]
fn output_keys_as_buildx_writes_them() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir, "two\n");
    let archive = dir.join("out.tar");
    ok(&build(
        dir,
        "a",
        &[
            "-o",
            &format!(
                "type=oci,dest={},\"name=reg.example/app:1,reg.example/app:2\",compression=zstd,annotation-manifest.org.example.key=value",
                archive.display()
            ),
        ],
    ));
    let manifest = skopeo_raw(&format!("oci-archive:{}", archive.display()));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{manifest}");
    for layer in layers {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{manifest}"
        );
    }
    assert_eq!(manifest["annotations"]["org.example.key"], "value");

    let docker = dir.join("docker.tar");
    ok(&build(
        dir,
        "a",
        &[
            "-o",
            &format!(
                "type=docker,dest={},\"name=reg.example/app:1,reg.example/app:2\"",
                docker.display()
            ),
        ],
    ));
    let listed = util::run(
        std::process::Command::new("tar")
            .arg("-xOf")
            .arg(&docker)
            .arg("manifest.json"),
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed[0]["RepoTags"],
        serde_json::json!(["reg.example/app:1", "reg.example/app:2"]),
        "{listed}"
    );

    let built = build(
        dir,
        "a",
        &[
            "-o",
            "type=image,name=reg.example/app:3,name-canonical=true",
        ],
    );
    ok(&built);
    let digest = util::stdout(&built).trim().to_owned();
    let store = dir.join("a/store");
    let names = skopeo_raw(&format!("oci:{}:reg.example/app:3", store.display()));
    assert_eq!(names["layers"].as_array().unwrap().len(), 2);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).unwrap()).unwrap();
    let canonical = format!("reg.example/app@{digest}");
    assert!(
        index["manifests"].as_array().unwrap().iter().any(|entry| {
            entry["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|name| name.ends_with(&canonical))
                && entry["digest"] == digest.as_str()
        }),
        "{canonical} not in {index}"
    );

    let local = dir.join("rootfs");
    ok(&build(
        dir,
        "a",
        &[
            "--platform",
            "linux/arm64",
            "-o",
            &format!("type=local,dest={},platform-split=true", local.display()),
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(local.join("linux_arm64/two.txt")).unwrap(),
        "two\n"
    );
    // Outputs with different compressions in one build: each gets its own set of
    // manifests (tests/it/compsets.rs says more).
    let other = dir.join("other.tar");
    ok(&build(
        dir,
        "a",
        &[
            "-o",
            &format!("type=oci,dest={},compression=zstd", archive.display()),
            "-o",
            &format!("type=oci,dest={},compression=gzip", other.display()),
        ],
    ));
    for (file, media_type) in [
        (&archive, "application/vnd.oci.image.layer.v1.tar+zstd"),
        (&other, "application/vnd.oci.image.layer.v1.tar+gzip"),
    ] {
        let manifest = skopeo_raw(&format!("oci-archive:{}", file.display()));
        for layer in manifest["layers"].as_array().unwrap() {
            assert_eq!(layer["mediaType"], media_type, "{manifest}");
        }
    }
}

/// `image-manifest=true` through docker-registry: the ref is one OCI image manifest
/// (skopeo reads it so), and a fresh store builds from it with every step cached and the
/// same digest.
#[test]
fn an_image_manifest_cache_in_a_registry_is_one_manifest() {
    if !needs() || !crate::regenv::ready(crate::regenv::Setup::Plain) {
        return;
    }
    let registry = crate::regenv::TestRegistry::start(crate::regenv::Setup::Plain);
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir, "two\n");
    let reference = format!("{}/keys/cache:im", registry.host);
    let first = build(
        dir,
        "a",
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-to",
            &format!("type=registry,ref={reference},image-manifest=true,oci-mediatypes=true"),
        ],
    );
    ok(&first);
    let manifest: serde_json::Value =
        serde_json::from_slice(&registry.skopeo_raw("keys/cache:im")).unwrap();
    assert_eq!(
        manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{manifest}"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.xbuild.cache.config.v1+json"
    );
    let second = build(
        dir,
        "b",
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-from",
            &reference,
        ],
    );
    let err = ok(&second);
    assert!(err.contains("imported 4 cache records"), "{err}");
    assert!(err.contains("4 steps cached"), "{err}");
    assert_eq!(util::stdout(&second), util::stdout(&first));

    // Issue 16's line, from Docker's multi-runner recipe, runs unchanged: pushed by digest
    // only (skopeo reads it by digest; no tag), named NAME@DIGEST in the store.
    let name = format!("{}/keys/app", registry.host);
    let pushed = build(
        dir,
        "c",
        &[
            "--platform",
            "linux/arm64",
            "-o",
            &format!("type=image,name={name},push-by-digest=true,name-canonical=true,push=true"),
        ],
    );
    ok(&pushed);
    let digest = util::stdout(&pushed).trim().to_owned();
    let manifest: serde_json::Value =
        serde_json::from_slice(&registry.skopeo_raw(&format!("keys/app@{digest}"))).unwrap();
    // An explicit --platform gives an index, as buildx.
    assert_eq!(
        manifest["manifests"][0]["platform"]["architecture"], "arm64",
        "{manifest}"
    );
    let tags = registry
        .skopeo(
            &["list-tags", &format!("docker://{}/keys/app", registry.host)],
            &[""],
        )
        .output()
        .unwrap();
    assert!(
        !util::stdout(&tags).contains("latest"),
        "{}",
        util::stdout(&tags)
    );
}

/// `platform-split=false` with two platforms, as BuildKit: one merged tree on `type=local`
/// and `type=tar` (shared directories merged), and a path both platforms have (even the
/// same file) refused with BuildKit's message before the destination is touched.
#[test]
fn platform_split_false_merges_platforms() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    let ctx = context(dir, "two\n");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH}.txt /share/${TARGETARCH}.txt\n",
    )
    .unwrap();
    std::fs::write(ctx.join("amd64.txt"), "amd\n").unwrap();
    std::fs::write(ctx.join("arm64.txt"), "arm\n").unwrap();
    let both = ["--platform", "linux/amd64,linux/arm64", "-o"];

    let local = dir.join("rootfs");
    let spec = format!("type=local,dest={},platform-split=false", local.display());
    ok(&build(dir, "a", &[&both[..], &[spec.as_str()]].concat()));
    let mut names: Vec<_> = std::fs::read_dir(&local)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["share"], "no platform folders, no scratch left");
    assert_eq!(
        std::fs::read_to_string(local.join("share/amd64.txt")).unwrap(),
        "amd\n"
    );
    assert_eq!(
        std::fs::read_to_string(local.join("share/arm64.txt")).unwrap(),
        "arm\n"
    );

    let archive = dir.join("rootfs.tar");
    let spec = format!("type=tar,dest={},platform-split=false", archive.display());
    ok(&build(dir, "a", &[&both[..], &[spec.as_str()]].concat()));
    let listed = util::run(std::process::Command::new("tar").arg("-tf").arg(&archive));
    assert!(listed.status.success(), "{}", util::stderr(&listed));
    let mut entries: Vec<_> = util::stdout(&listed)
        .lines()
        .map(|line| line.trim_start_matches("./").to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["share/", "share/amd64.txt", "share/arm64.txt"],
        "one merged tree, each directory once"
    );

    // The same file in both platforms is a conflict, as in BuildKit; the destination keeps
    // what it had.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nCOPY one.txt /one.txt\nCOPY ${TARGETARCH}.txt /share/\n",
    )
    .unwrap();
    let spec = format!("type=local,dest={},platform-split=false", local.display());
    let refused = build(dir, "a", &[&both[..], &[spec.as_str()]].concat());
    assert_eq!(refused.status.code(), Some(2), "{}", util::stderr(&refused));
    assert!(
        util::stderr(&refused).contains(
            "cannot overwrite one.txt from linux/amd64 with linux/arm64 when split option is disabled"
        ),
        "{}",
        util::stderr(&refused)
    );
    let mut names: Vec<_> = std::fs::read_dir(&local)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["share"], "nothing written, no scratch left");
    let spec = format!("type=tar,dest={},platform-split=false", archive.display());
    let refused = build(dir, "a", &[&both[..], &[spec.as_str()]].concat());
    assert_eq!(refused.status.code(), Some(2), "{}", util::stderr(&refused));
    assert!(util::stderr(&refused).contains("cannot overwrite one.txt"));
}
