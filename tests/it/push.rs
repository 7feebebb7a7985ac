//! `xbuild push` and `xbuild imagetools create` against docker-registry, judged by skopeo,
//! in the three set-ups of [`crate::regenv`].
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use crate::regenv::{self, Setup, TestRegistry};
use crate::util;

/// A multi-platform image pushed by xbuild is read by `skopeo inspect --raw` with the same
/// index digest (the same bytes), and `skopeo copy --all` of it to an OCI layout gives the
/// same blobs; a second push uploads nothing (HEAD finds every blob).
fn pushed_index_is_read_by_skopeo(setup: Setup) {
    if !regenv::ready(setup) {
        return;
    }
    let registry = TestRegistry::start(setup);
    let home = util::temp_dir();
    let fixture = regenv::busybox();
    let name = format!("{}/push/busybox:latest", registry.host);
    regenv::store_with_busybox(home.path(), &name);
    registry.login(home.path());

    // Small chunks, so the 1 MB layers go up as chunked uploads (faults hit them too).
    let output = util::run(
        registry
            .xbuild(home.path())
            .env("XBUILD_UPLOAD_CHUNK_SIZE", "262144")
            .args(["push", &name]),
    );
    assert!(output.status.success(), "push: {}", util::stderr(&output));
    assert_eq!(util::stdout(&output), format!("{name}@{}\n", fixture.index));

    let raw = registry.skopeo_raw("push/busybox:latest");
    assert_eq!(regenv::digest_of(&raw), fixture.index);
    assert_eq!(raw, regenv::blob(&regenv::fixture_layout(), &fixture.index));

    let copy = home.path().join("copy");
    let source = format!("docker://{}/push/busybox:latest", registry.direct);
    let dest = format!("oci:{}:busybox", copy.display());
    let output =
        util::run(&mut registry.skopeo(&["copy", "--all", "--quiet", &source, &dest], &["src"]));
    assert!(
        output.status.success(),
        "skopeo copy: {}",
        util::stderr(&output)
    );
    assert_eq!(regenv::layout_blobs(&copy), fixture.blobs);

    let again = util::run(registry.xbuild(home.path()).args(["push", &name]));
    assert!(
        again.status.success(),
        "second push: {}",
        util::stderr(&again)
    );
    assert!(
        util::stderr(&again).contains("0 blobs uploaded"),
        "{}",
        util::stderr(&again)
    );
    if let Some(proxy) = &registry.proxy {
        // The layers went up in chunks.
        let patches = proxy
            .requests()
            .iter()
            .filter(|r| r.starts_with("PATCH /v2/push/busybox/blobs/uploads/"))
            .count();
        assert!(patches >= 6 * 4, "{patches} PATCH requests");
        assert!(
            proxy.faults.load(std::sync::atomic::Ordering::SeqCst) > 0,
            "faults were injected"
        );
    }
}

#[test]
fn pushed_index_is_read_by_skopeo_plain() {
    pushed_index_is_read_by_skopeo(Setup::Plain);
}

#[test]
fn pushed_index_is_read_by_skopeo_tls_auth() {
    pushed_index_is_read_by_skopeo(Setup::TlsAuth);
}

#[test]
fn pushed_index_is_read_by_skopeo_faulty() {
    pushed_index_is_read_by_skopeo(Setup::Faulty);
}

/// `imagetools create` merges two single-platform images (pushed by skopeo into other
/// repositories) into one index that skopeo sees with both platforms and can copy whole.
fn imagetools_create_merges_platforms(setup: Setup, decline_mounts: bool) {
    if !regenv::ready(setup) {
        return;
    }
    let registry = TestRegistry::start_with_proxy(setup, setup == Setup::Faulty || decline_mounts);
    if decline_mounts {
        registry.proxy.as_ref().unwrap().decline_mounts();
    }
    let home = util::temp_dir();
    let fixture = regenv::busybox();
    registry.skopeo_push_fixture("single/amd64:1", Some("amd64"));
    registry.skopeo_push_fixture("single/arm64:1", Some("arm64"));
    registry.login(home.path());

    let target = format!("{}/merged/busybox:multi", registry.host);
    let output = util::run(registry.xbuild(home.path()).args([
        "imagetools",
        "create",
        "-t",
        &target,
        &format!("{}/single/amd64:1", registry.host),
        &format!("{}/single/arm64:1", registry.host),
    ]));
    assert!(output.status.success(), "create: {}", util::stderr(&output));
    let printed = util::stdout(&output);
    let digest = printed
        .trim()
        .strip_prefix(&format!("{target}@"))
        .unwrap_or_else(|| panic!("unexpected output {printed:?}"))
        .to_owned();

    let raw = registry.skopeo_raw("merged/busybox:multi");
    assert_eq!(regenv::digest_of(&raw), digest);
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let entries: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                format!(
                    "{}/{}",
                    entry["platform"]["os"].as_str().unwrap(),
                    entry["platform"]["architecture"].as_str().unwrap()
                ),
                entry["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (
                "linux/amd64".to_owned(),
                fixture.platforms["linux/amd64"].clone()
            ),
            (
                "linux/arm64".to_owned(),
                fixture.platforms["linux/arm64"].clone()
            ),
        ]
    );

    // Every manifest and blob is in the new repository: skopeo can copy it whole.
    let copy = home.path().join("copy");
    let source = format!("docker://{}/merged/busybox:multi", registry.direct);
    let dest = format!("oci:{}:m", copy.display());
    let output =
        util::run(&mut registry.skopeo(&["copy", "--all", "--quiet", &source, &dest], &["src"]));
    assert!(
        output.status.success(),
        "skopeo copy: {}",
        util::stderr(&output)
    );
    assert_eq!(regenv::layout_blobs(&copy).len(), 1 + 2 * 3);

    // Blobs came by cross-repository mount, or (mount declined) by upload.
    if let Some(proxy) = &registry.proxy {
        let requests = proxy.requests();
        let mounts = requests
            .iter()
            .filter(|r| r.starts_with("POST /v2/merged/busybox/blobs/uploads/?mount="))
            .count();
        let uploads = requests
            .iter()
            .filter(|r| r.starts_with("PUT /v2/merged/busybox/blobs/uploads/"))
            .count();
        assert!(mounts >= 4, "{requests:#?}");
        if decline_mounts {
            assert!(uploads >= 4, "{requests:#?}");
        } else {
            assert_eq!(uploads, 0, "{requests:#?}");
        }
    }
}

#[test]
fn imagetools_create_merges_platforms_plain() {
    imagetools_create_merges_platforms(Setup::Plain, false);
}

#[test]
fn imagetools_create_merges_platforms_tls_auth() {
    imagetools_create_merges_platforms(Setup::TlsAuth, false);
}

#[test]
fn imagetools_create_merges_platforms_faulty() {
    imagetools_create_merges_platforms(Setup::Faulty, false);
}

/// A registry that declines the cross-repository mount (`202`): the blobs are copied
/// through the store and uploaded instead.
#[test]
fn imagetools_create_uploads_when_a_mount_is_declined() {
    imagetools_create_merges_platforms(Setup::Plain, true);
}

/// An index pulled for one platform only cannot be pushed whole: the error says which
/// platform is missing and how to get it; after `pull --all-platforms` it pushes with the
/// same digest.
#[test]
fn partly_pulled_index_is_refused_until_pulled_whole() {
    if !regenv::ready(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let home = util::temp_dir();
    let fixture = regenv::busybox();
    registry.skopeo_push_fixture("partial/busybox:latest", None);
    let name = format!("{}/partial/busybox:latest", registry.host);
    let output =
        util::run(
            registry
                .xbuild(home.path())
                .args(["pull", "--platform", "linux/s390x", &name]),
        );
    assert!(output.status.success(), "{}", util::stderr(&output));

    let output = util::run(registry.xbuild(home.path()).args(["push", &name]));
    let stderr = util::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("for linux/amd64"), "{stderr}");
    assert!(stderr.contains("--all-platforms"), "{stderr}");

    let output = util::run(
        registry
            .xbuild(home.path())
            .args(["pull", "--all-platforms", &name]),
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    let output = util::run(registry.xbuild(home.path()).args(["push", &name]));
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert_eq!(util::stdout(&output), format!("{name}@{}\n", fixture.index));
}

/// A blob pulled from one repository is mounted, not uploaded, when an image holding it is
/// pushed to another repository of the same registry (the store remembers where it came
/// from); skopeo then reads the pushed index with the same digest.
#[test]
fn push_mounts_blobs_pulled_from_another_repository() {
    if !regenv::ready(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let home = util::temp_dir();
    let fixture = regenv::busybox();
    registry.skopeo_push_fixture("origin/busybox:latest", None);
    let source = format!("{}/origin/busybox:latest", registry.host);
    let target = format!("{}/copy/busybox:1", registry.host);
    let output = util::run(
        registry
            .xbuild(home.path())
            .args(["pull", "--all-platforms", &source]),
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    let output = util::run(registry.xbuild(home.path()).args(["tag", &source, &target]));
    assert!(output.status.success(), "{}", util::stderr(&output));

    let output = util::run(registry.xbuild(home.path()).args(["push", &target]));
    let stderr = util::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(": 0 blobs uploaded, 12 mounted"),
        "{stderr}"
    );
    assert_eq!(
        util::stdout(&output),
        format!("{target}@{}\n", fixture.index)
    );
}

/// A push streams each blob from the store's file: a 15 MB layer (under the 16 MiB chunk
/// size, so one `PUT`) is never whole in memory. Before, the upload read it into memory and
/// copied it once more for the request: 55 MiB peak RSS against about 27 MiB now.
#[test]
fn push_streams_blobs_from_disk() {
    if !regenv::ready(Setup::Plain) || !util::require(&[util::Need::Program("curl")]) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let home = util::temp_dir();
    let store = home.path().join("store");
    let blobs = store.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    // Incompressible and unrepeated: xorshift bytes.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let layer: Vec<u8> = (0..15_000_000 / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    let put = |bytes: &[u8]| {
        let digest = regenv::digest_of(bytes);
        std::fs::write(blobs.join(digest.strip_prefix("sha256:").unwrap()), bytes).unwrap();
        (digest, bytes.len())
    };
    let (layer_digest, layer_size) = put(&layer);
    drop(layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string();
    let (config_digest, config_size) = put(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
    })
    .to_string();
    let (manifest_digest, manifest_size) = put(manifest.as_bytes());
    let name = format!("{}/push/big:1", registry.host);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": name},
        }],
    });
    std::fs::write(store.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        store.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();

    let rss_file = home.path().join("peak-rss");
    let output = util::run(
        registry
            .xbuild(home.path())
            .env("XBUILD_PEAK_RSS_FILE", &rss_file)
            .args(["push", &name]),
    );
    assert!(output.status.success(), "push: {}", util::stderr(&output));
    let raw = registry.skopeo_raw("push/big:1");
    assert_eq!(regenv::digest_of(&raw), manifest_digest);
    // The layer as the registry serves it (skopeo would recompress a layer that is not
    // gzip): the same bytes.
    let served = util::run(std::process::Command::new("curl").args([
        "-sf",
        &format!(
            "http://{}/v2/push/big/blobs/{layer_digest}",
            registry.direct
        ),
    ]));
    assert!(served.status.success(), "curl: {}", util::stderr(&served));
    assert_eq!(regenv::digest_of(&served.stdout), layer_digest);
    let peak_kib = util::peak_rss_kib(&rss_file);
    eprintln!("push of a {layer_size}-byte layer: peak RSS {peak_kib} KiB");
    assert!(peak_kib < 44 << 10, "peak RSS {peak_kib} KiB");
}
