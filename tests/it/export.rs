//! Build outputs (`export::write`) on the fixture busybox image, each judged by an outside
//! tool: skopeo for OCI and docker archives and for pushes, a private dockerd for `--load`,
//! the fixture root filesystems for `type=local` and `type=tar`. The build command does not
//! call these yet, so the tests call the library with a `Built` made of the fixture index.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use xbuild::executor::{Built, BuiltImage};
use xbuild::export::{self, ExportError, ExportReport, Output, Written};
use xbuild::oci::{Descriptor, ImageLayout, image};
use xbuild::platform::Platform;
use xbuild::progress::{Event, Recorder, SharedSink, VertexCounter};
use xbuild::registry::RegistryOptions;
use xbuild::store::Store;

use crate::regenv::{self, Setup, TestRegistry};
use crate::util::{self, Dockerd, Need, require, temp_dir};

/// A store at `dir/store` holding the fixture busybox blobs (unnamed, as a build leaves
/// them), and a `Built` for `platforms` (all six when empty) over them: the fixture index
/// itself for all six, else a new index over the chosen manifests.
fn fixture_build(dir: &Path, platforms: &[&str], explicit_platforms: bool) -> (Store, Built) {
    let fixture = regenv::busybox();
    let root = dir.join("store");
    fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    for digest in &fixture.blobs {
        let hex = digest.strip_prefix("sha256:").unwrap();
        fs::write(
            root.join("blobs/sha256").join(hex),
            regenv::blob(&regenv::fixture_layout(), digest),
        )
        .unwrap();
    }
    let store = Store::open(&root).unwrap();
    let source = ImageLayout::open(regenv::fixture_layout()).unwrap();
    let mut top = source.resolve_ref("busybox:latest").unwrap().unwrap();
    top.set_annotations(None);
    let index = image::read_index(&source, top.digest()).unwrap();
    let images: Vec<BuiltImage> = index
        .manifests()
        .iter()
        .map(|entry| {
            let p = entry.platform().as_ref().unwrap();
            let mut name = format!("{}/{}", p.os(), p.architecture());
            if let Some(variant) = p.variant() {
                name = format!("{name}/{variant}");
            }
            BuiltImage {
                platform: Platform::parse(&name).unwrap(),
                manifest: entry.clone(),
            }
        })
        .filter(|image| {
            platforms.is_empty() || platforms.contains(&image.platform.to_string().as_str())
        })
        .collect();
    let index = if platforms.is_empty() {
        top
    } else {
        let manifests: Vec<Descriptor> = images.iter().map(|i| i.manifest.clone()).collect();
        store.put_index(manifests).unwrap()
    };
    let built = Built {
        images,
        index,
        explicit_platforms,
    };
    (store, built)
}

fn export(
    store: &Store,
    built: &Built,
    tags: &[&str],
    outputs: &[Output],
) -> Result<ExportReport, ExportError> {
    export_with_events(store, built, tags, outputs).0
}

fn export_with_events(
    store: &Store,
    built: &Built,
    tags: &[&str],
    outputs: &[Output],
) -> (Result<ExportReport, ExportError>, Vec<Event>) {
    let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    let registry = Arc::new(RegistryOptions::from_env(store.root()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let recorder = Arc::new(Recorder::default());
    let sink: SharedSink = recorder.clone();
    let result = runtime.block_on(export::write(
        store,
        registry,
        built,
        &tags,
        outputs,
        sink,
        &VertexCounter::default(),
    ));
    (result, recorder.events())
}

fn ok(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn busybox_bin(platform_dir: &str) -> Vec<u8> {
    fs::read(
        util::fixtures_dir()
            .unwrap()
            .join("rootfs/busybox")
            .join(platform_dir)
            .join("bin/busybox"),
    )
    .unwrap()
}

/// Relative paths of every entry under `root`, sorted.
fn tree(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, relative: &Path, into: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = relative.join(entry.file_name());
            into.push(path.clone());
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &path, into);
            }
        }
    }
    let mut paths = Vec::new();
    walk(root, Path::new(""), &mut paths);
    paths.sort();
    paths
}

/// `type=oci` holds the index with the same digest (skopeo reads the same bytes and copies
/// it), `--metadata-file` and `--iidfile` name it, and the default output names the tag.
#[test]
fn oci_archive_holds_the_index_and_metadata_names_every_digest() {
    if !require(&[Need::Fixtures, Need::Program("skopeo")]) {
        return;
    }
    let dir = temp_dir();
    let (store, built) = fixture_build(dir.path(), &[], true);
    let archive = dir.path().join("out/image.tar");
    let (report, events) = export_with_events(
        &store,
        &built,
        &["xbuild-test/app:1"],
        &[
            Output::STORE,
            Output::Oci {
                dest: archive.clone(),
                referrers: true,
                media_types: export::MediaTypes::Oci,
                tar: true,
            },
        ],
    );
    let report = report.unwrap();
    // One progress vertex for the archive, started and finished.
    let expected_name = format!("exporting OCI archive {}", archive.display());
    assert!(
        matches!(&events[..], [
            Event::Started { name, .. },
            Event::Finished { .. },
        ] if *name == expected_name),
        "{events:?}"
    );
    assert_eq!(
        report.written,
        vec![
            Written::Named("docker.io/xbuild-test/app:1".to_owned()),
            Written::OciArchive(archive.clone())
        ]
    );
    let index = built.index.digest().to_string();
    assert_eq!(
        store
            .resolve_ref("xbuild-test/app:1")
            .unwrap()
            .digest()
            .to_string(),
        index
    );

    let raw = ok(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", archive.display())));
    assert_eq!(regenv::digest_of(raw.as_bytes()), index);
    let copy = dir.path().join("copy");
    ok(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--all", "--quiet"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("oci:{}:copied", copy.display())));
    assert_eq!(regenv::layout_blobs(&copy), regenv::busybox().blobs);

    let metadata_file = dir.path().join("metadata.json");
    let iidfile = dir.path().join("iid");
    export::write_metadata_file(&metadata_file, &store, &built, &report).unwrap();
    export::write_iidfile(&iidfile, &built).unwrap();
    assert_eq!(fs::read_to_string(&iidfile).unwrap(), index);
    let metadata: serde_json::Value =
        serde_json::from_slice(&fs::read(&metadata_file).unwrap()).unwrap();
    assert_eq!(metadata["containerimage.digest"], index.as_str());
    assert_eq!(
        metadata["containerimage.descriptor"]["digest"],
        index.as_str()
    );
    assert_eq!(
        metadata["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(metadata["image.name"], "docker.io/xbuild-test/app:1");
    let fixture = regenv::busybox();
    let manifests = metadata["xbuild.manifests"].as_object().unwrap();
    assert_eq!(manifests.len(), 6);
    for (platform, digest) in &fixture.platforms {
        assert_eq!(manifests[platform], digest.as_str(), "{platform}");
    }
}

/// `type=docker` of one platform is read by skopeo as that platform with the tag; several
/// platforms are refused with their names.
#[test]
fn docker_archive_is_one_platform_and_several_are_refused() {
    if !require(&[Need::Fixtures, Need::Program("skopeo")]) {
        return;
    }
    let dir = temp_dir();
    let (store, built) = fixture_build(dir.path(), &["linux/arm64"], false);
    let archive = dir.path().join("docker.tar");
    let report = export(
        &store,
        &built,
        &["xbuild-test/app:1"],
        &[Output::Docker {
            dest: Some(archive.clone()),
            oci_media_types: false,
        }],
    )
    .unwrap();
    assert_eq!(
        report.written[0].to_string(),
        format!("wrote docker archive {} (linux/arm64)", archive.display())
    );
    // Selecting the image by its tag proves the tag is in manifest.json.
    let inspected = ok(Command::new("skopeo").arg("inspect").arg(format!(
        "docker-archive:{}:xbuild-test/app:1",
        archive.display()
    )));
    let value: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(value["Architecture"], "arm64");
    let absent = Command::new("skopeo")
        .arg("inspect")
        .arg(format!(
            "docker-archive:{}:xbuild-test/other:1",
            archive.display()
        ))
        .output()
        .unwrap();
    assert!(!absent.status.success());
    let config = ok(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", archive.display())));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let fixture_manifest: serde_json::Value = serde_json::from_slice(
        &store
            .layout()
            .read_blob(built.images[0].manifest.digest())
            .unwrap(),
    )
    .unwrap();
    let fixture_config: serde_json::Value = serde_json::from_slice(
        &store
            .layout()
            .read_blob(
                &fixture_manifest["config"]["digest"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(config["rootfs"], fixture_config["rootfs"]);

    let dir = temp_dir();
    let (store, built) = fixture_build(dir.path(), &["linux/amd64", "linux/arm64"], true);
    let error = export(
        &store,
        &built,
        &["xbuild-test/app:1"],
        &[Output::Docker {
            dest: Some(dir.path().join("docker.tar")),
            oci_media_types: false,
        }],
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("linux/amd64, linux/arm64"),
        "{error}"
    );
    assert_eq!(error.exit_kind(), xbuild::ExitKind::BadInput);
    assert!(!dir.path().join("docker.tar").exists());
}

/// `type=docker,oci-mediatypes=true`: BuildKit's OCI-typed docker archive, an OCI layout
/// with `manifest.json` beside it, read by skopeo both as `oci-archive:` and
/// `docker-archive:`, and loaded by a private dockerd 20.10 under its tag.
#[test]
fn docker_archive_with_oci_media_types_is_an_oci_layout_docker_loads() {
    if !require(&[
        Need::Root,
        Need::Fixtures,
        Need::Program("skopeo"),
        Need::Program("dockerd"),
        Need::Program("docker"),
    ]) {
        return;
    }
    let dir = temp_dir();
    let (store, built) = fixture_build(dir.path(), &["linux/amd64"], false);
    let archive = dir.path().join("docker-oci.tar");
    export(
        &store,
        &built,
        &["xbuild-test/oci:1"],
        &[Output::Docker {
            dest: Some(archive.clone()),
            oci_media_types: true,
        }],
    )
    .unwrap();
    let manifest_digest = built.images[0].manifest.digest().to_string();
    let raw = ok(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}:1", archive.display())));
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        raw["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{raw}"
    );
    for layer in raw["layers"].as_array().unwrap() {
        assert!(
            layer["mediaType"]
                .as_str()
                .unwrap()
                .starts_with("application/vnd.oci.image.layer.v1.tar"),
            "{raw}"
        );
    }
    let inspected = ok(Command::new("skopeo").arg("inspect").arg(format!(
        "docker-archive:{}:xbuild-test/oci:1",
        archive.display()
    )));
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["Architecture"], "amd64");
    let listing = ok(Command::new("tar").arg("-tf").arg(&archive));
    for entry in ["oci-layout", "index.json", "manifest.json"] {
        assert!(listing.lines().any(|l| l == entry), "{entry}: {listing}");
    }
    let hex = manifest_digest.strip_prefix("sha256:").unwrap();
    assert!(
        listing.lines().any(|l| l == format!("blobs/sha256/{hex}")),
        "{listing}"
    );

    let daemon_dir = dir.path().join("dockerd");
    fs::create_dir_all(&daemon_dir).unwrap();
    let Some(daemon) = Dockerd::start(&daemon_dir) else {
        let log = fs::read_to_string(daemon_dir.join("dockerd.err")).unwrap_or_default();
        if std::env::var("XBUILD_TEST_STRICT").as_deref() == Ok("1") {
            panic!("dockerd did not start:\n{log}");
        }
        eprintln!("skipped: dockerd did not start:\n{log}");
        return;
    };
    ok(daemon.docker().arg("load").arg("-i").arg(&archive));
    let architecture = ok(daemon.docker().args([
        "image",
        "inspect",
        "--format",
        "{{.Architecture}} {{len .RootFS.Layers}}",
        "xbuild-test/oci:1",
    ]));
    let layers = raw["layers"].as_array().unwrap().len();
    assert_eq!(architecture.trim(), format!("amd64 {layers}"));
}

/// `type=local`: one platform directly in dest, several in `linux_arm64`-style folders, with
/// the same files as the fixture root filesystems and busybox byte for byte.
#[test]
fn local_output_unpacks_each_platform_like_the_fixture_rootfs() {
    if !require(&[Need::Fixtures]) {
        return;
    }
    let dir = temp_dir();
    let fixtures = util::fixtures_dir().unwrap().join("rootfs/busybox");
    let (store, built) = fixture_build(dir.path(), &["linux/amd64"], false);
    let dest = dir.path().join("single");
    export(
        &store,
        &built,
        &[],
        &[Output::Local {
            dest: dest.clone(),
            split: None,
        }],
    )
    .unwrap();
    assert_eq!(
        fs::read(dest.join("bin/busybox")).unwrap(),
        busybox_bin("linux-amd64")
    );
    assert_eq!(tree(&dest), tree(&fixtures.join("linux-amd64")));

    let dir = temp_dir();
    let (store, built) = fixture_build(dir.path(), &["linux/arm64", "linux/arm/v7"], true);
    let dest = dir.path().join("multi");
    let report = export(
        &store,
        &built,
        &[],
        &[Output::Local {
            dest: dest.clone(),
            split: None,
        }],
    )
    .unwrap();
    assert_eq!(
        report.written[0].to_string(),
        format!(
            "wrote the root filesystem of linux/arm64, linux/arm/v7 to {}",
            dest.display()
        )
    );
    let mut folders: Vec<String> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders, ["linux_arm64", "linux_arm_v7"]);
    for (folder, fixture) in [
        ("linux_arm64", "linux-arm64"),
        ("linux_arm_v7", "linux-arm-v7"),
    ] {
        assert_eq!(
            fs::read(dest.join(folder).join("bin/busybox")).unwrap(),
            busybox_bin(fixture)
        );
        assert_eq!(tree(&dest.join(folder)), tree(&fixtures.join(fixture)));
    }
}

/// `platform-split=false` over two busybox platforms: every file is in both trees, so the
/// merge is refused as BuildKit refuses it (the first shared path found: a directory's
/// own entries in name order before its subdirectories'), on
/// `type=local` and `type=tar`, and nothing is written.
#[test]
fn platform_split_false_refuses_files_two_platforms_share() {
    if !require(&[Need::Fixtures]) {
        return;
    }
    let dir = temp_dir();
    let (store, built) = fixture_build(dir.path(), &["linux/amd64", "linux/arm64"], true);
    let dest = dir.path().join("merged");
    let archive = dir.path().join("merged.tar");
    for output in [
        Output::Local {
            dest: dest.clone(),
            split: Some(false),
        },
        Output::Tar {
            dest: archive.clone(),
            split: Some(false),
        },
    ] {
        let error = export(&store, &built, &[], &[output]).unwrap_err();
        assert!(
            matches!(error, ExportError::PlatformConflict { .. }),
            "{error:?}"
        );
        assert_eq!(error.exit_kind(), xbuild::ExitKind::BadInput);
        assert!(
            error.to_string().starts_with(
                "cannot overwrite linuxrc from linux/amd64 with linux/arm64 when split option \
                 is disabled"
            ),
            "{error}"
        );
    }
    assert_eq!(
        tree(&dest),
        Vec::<PathBuf>::new(),
        "nothing left in the destination"
    );
    assert!(!archive.exists(), "no tar written");
}

/// `type=tar` of two platforms: GNU tar lists and extracts it, one folder per platform.
#[test]
fn tar_output_is_the_root_filesystems_in_platform_folders() {
    if !require(&[Need::Fixtures, Need::Program("tar")]) {
        return;
    }
    let dir = temp_dir();
    let (store, built) = fixture_build(dir.path(), &["linux/amd64", "linux/s390x"], true);
    let dest = dir.path().join("rootfs.tar");
    export(
        &store,
        &built,
        &[],
        &[Output::Tar {
            dest: dest.clone(),
            split: None,
        }],
    )
    .unwrap();
    let listing = ok(Command::new("tar").arg("-tf").arg(&dest));
    assert!(
        listing.lines().any(|l| l == "linux_amd64/bin/busybox"),
        "{listing}"
    );
    assert!(
        listing.lines().any(|l| l == "linux_s390x/bin/busybox"),
        "{listing}"
    );
    let extracted = dir.path().join("extracted");
    fs::create_dir_all(&extracted).unwrap();
    ok(Command::new("tar")
        .arg("-xf")
        .arg(&dest)
        .arg("-C")
        .arg(&extracted));
    let fixtures = util::fixtures_dir().unwrap().join("rootfs/busybox");
    for (folder, fixture) in [
        ("linux_amd64", "linux-amd64"),
        ("linux_s390x", "linux-s390x"),
    ] {
        assert_eq!(
            fs::read(extracted.join(folder).join("bin/busybox")).unwrap(),
            busybox_bin(fixture)
        );
        assert_eq!(tree(&extracted.join(folder)), tree(&fixtures.join(fixture)));
    }
}

/// `--push` pushes the index under each tag (skopeo reads the same digest), and
/// `push-by-digest=true` pushes without a tag and reports `repo@digest`, which skopeo reads.
#[test]
fn push_and_push_by_digest_are_read_back_by_skopeo() {
    if !regenv::ready(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let dir = temp_dir();
    let (store, built) = fixture_build(dir.path(), &[], true);
    let index = built.index.digest().to_string();
    let tag = format!("{}/export/app:1", registry.host);
    let report = export(&store, &built, &[tag.as_str()], &[Output::push(false)]).unwrap();
    assert_eq!(
        report.written,
        vec![Written::Pushed {
            reference: tag.clone(),
            digest: index.clone()
        }]
    );
    assert_eq!(
        regenv::digest_of(&registry.skopeo_raw("export/app:1")),
        index
    );
    assert_eq!(store.resolve_ref(&tag).unwrap().digest().to_string(), index);

    // By digest, one platform (the manifest itself is the result).
    let dir = temp_dir();
    let (store, built) = fixture_build(dir.path(), &["linux/arm64"], false);
    let manifest = built.images[0].manifest.digest().to_string();
    let tag = format!("{}/export/bydigest:ignored", registry.host);
    let report = export(&store, &built, &[tag.as_str()], &[Output::push(true)]).unwrap();
    let expected = format!("{}/export/bydigest@{manifest}", registry.host);
    assert_eq!(report.written, vec![Written::PushedByDigest(expected)]);
    assert_eq!(
        regenv::digest_of(&registry.skopeo_raw(&format!("export/bydigest@{manifest}"))),
        manifest
    );
    // No tag was pushed: the repository lists none (docker-registry answers an empty or
    // missing list; skopeo fails on a repository with no tags at all).
    let tags = registry
        .skopeo(
            &[
                "list-tags",
                &format!("docker://{}/export/bydigest", registry.direct),
            ],
            &[""],
        )
        .output()
        .unwrap();
    if tags.status.success() {
        let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
        assert!(tags["Tags"].as_array().is_none_or(Vec::is_empty), "{tags}");
    }

    // Pushing without a name is bad input.
    let error = export(&store, &built, &[], &[Output::push(true)]).unwrap_err();
    assert_eq!(error.exit_kind(), xbuild::ExitKind::BadInput);
}

/// Set by [`load_puts_the_host_platform_under_the_tag_and_others_under_suffixed_tags`] for
/// its child process: the directory to work in.
const LOAD_CHILD_DIR: &str = "XBUILD_TEST_EXPORT_LOAD_DIR";

/// The `--load` half run in a child process, so that `DOCKER_HOST` is set in its
/// environment from the start (setting it in this multi-threaded process would race).
#[test]
#[ignore = "run by load_puts_the_host_platform_under_the_tag_and_others_under_suffixed_tags"]
fn load_child() {
    let Some(dir) = std::env::var_os(LOAD_CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let (store, built) = fixture_build(&dir, &["linux/amd64", "linux/arm64"], true);
    let report = export(
        &store,
        &built,
        &["xbuild-test/load:1"],
        &[Output::Docker {
            dest: None,
            oci_media_types: false,
        }],
    )
    .unwrap();
    fs::write(
        dir.join("report.txt"),
        format!("{}\n{}\n", report.written[0], report.notes.join("\n")),
    )
    .unwrap();
}

/// `--load` of two platforms into a classic engine: the host's platform (amd64 here) under
/// the tag, arm64 under `tag-arm64`, and a note saying so; `docker image inspect` agrees.
#[test]
fn load_puts_the_host_platform_under_the_tag_and_others_under_suffixed_tags() {
    if !require(&[
        Need::Root,
        Need::Fixtures,
        Need::Program("dockerd"),
        Need::Program("docker"),
    ]) {
        return;
    }
    if xbuild::platform::host() != Platform::parse("linux/amd64").unwrap() {
        eprintln!("skipped: the expectations are written for an amd64 host");
        return;
    }
    let dir = temp_dir();
    let daemon_dir = dir.path().join("dockerd");
    fs::create_dir_all(&daemon_dir).unwrap();
    let Some(daemon) = Dockerd::start(&daemon_dir) else {
        let log = fs::read_to_string(daemon_dir.join("dockerd.err")).unwrap_or_default();
        if std::env::var("XBUILD_TEST_STRICT").as_deref() == Ok("1") {
            panic!("dockerd did not start:\n{log}");
        }
        eprintln!("skipped: dockerd did not start:\n{log}");
        return;
    };
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["export::load_child", "--exact", "--ignored", "--nocapture"])
        .env(LOAD_CHILD_DIR, &work)
        .env("DOCKER_HOST", format!("unix://{}", daemon.socket.display()))
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "child: {}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let report = fs::read_to_string(work.join("report.txt")).unwrap();
    assert!(
        report.contains("xbuild-test/load:1 (linux/amd64), xbuild-test/load:1-arm64 (linux/arm64)"),
        "{report}"
    );
    assert!(
        report.contains(
            "linux/amd64 is loaded as xbuild-test/load:1, the others as xbuild-test/load:1-arm64"
        ),
        "{report}"
    );
    for (tag, arch) in [
        ("xbuild-test/load:1", "amd64"),
        ("xbuild-test/load:1-arm64", "arm64"),
    ] {
        let inspected =
            ok(daemon
                .docker()
                .args(["image", "inspect", "--format", "{{.Architecture}}", tag]));
        assert_eq!(inspected.trim(), arch, "{tag}");
    }
}
