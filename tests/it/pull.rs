//! `xbuild pull` of images pushed by skopeo, per platform, and of a tampered blob, in the
//! set-ups of [`crate::regenv`].
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use crate::regenv::{self, Setup, TestRegistry};
use crate::util;

/// An image pushed by skopeo is pulled by xbuild for each platform, with the manifest
/// digests of the index; the store ends up with exactly the image's blobs, each matching
/// its digest, and names the index.
fn skopeo_push_is_pulled_per_platform(setup: Setup) {
    if !regenv::ready(setup) {
        return;
    }
    let registry = TestRegistry::start(setup);
    let home = util::temp_dir();
    let fixture = regenv::busybox();
    registry.skopeo_push_fixture("skopeo/busybox:latest", None);
    registry.login(home.path());
    let name = format!("{}/skopeo/busybox:latest", registry.host);

    for (platform, digest) in &fixture.platforms {
        let output =
            util::run(
                registry
                    .xbuild(home.path())
                    .args(["pull", "--platform", platform, &name]),
            );
        assert!(
            output.status.success(),
            "pull {platform}: {}",
            util::stderr(&output)
        );
        assert_eq!(
            util::stdout(&output),
            format!("{name}@{}\n{platform} {digest}\n", fixture.index),
            "pull {platform}"
        );
    }
    let store = home.path().join("store");
    assert_eq!(regenv::layout_blobs(&store), fixture.blobs);
    let named = regenv::named(&store, &name).expect("the store names the image");
    assert_eq!(named["digest"], fixture.index.as_str());
    assert_eq!(
        std::fs::read_dir(store.join("tmp"))
            .map(Iterator::count)
            .unwrap_or(0),
        0,
        "no temporary files are left"
    );
    if let Some(proxy) = &registry.proxy {
        assert!(
            proxy.faults.load(std::sync::atomic::Ordering::SeqCst) > 0,
            "faults were injected"
        );
    }
}

#[test]
fn skopeo_push_is_pulled_per_platform_plain() {
    skopeo_push_is_pulled_per_platform(Setup::Plain);
}

#[test]
fn skopeo_push_is_pulled_per_platform_tls_auth() {
    skopeo_push_is_pulled_per_platform(Setup::TlsAuth);
}

#[test]
fn skopeo_push_is_pulled_per_platform_faulty() {
    skopeo_push_is_pulled_per_platform(Setup::Faulty);
}

/// A layer served tampered by the proxy fails the pull with an error naming the blob and
/// the mismatch, exit 1, and leaves no name, no trace of the tampered blob and no temporary
/// file. Blobs it completed (the config, usually) may stay: each matches its digest.
fn tampered_blob_fails_and_leaves_nothing(setup: Setup) {
    if !regenv::ready(setup) {
        return;
    }
    // Through TLS a proxy cannot change bytes, so there the registry's own storage is
    // tampered with: it then serves the altered blob under the original digest.
    let through_storage = setup == Setup::TlsAuth;
    let registry = TestRegistry::start_with_proxy(setup, !through_storage);
    let home = util::temp_dir();
    let fixture = regenv::busybox();
    registry.skopeo_push_fixture("tamper/busybox:latest", None);
    registry.login(home.path());
    let manifest = regenv::json_blob(&regenv::fixture_layout(), &fixture.platforms["linux/arm64"]);
    let layer = &manifest["layers"][0];
    let layer_digest = layer["digest"].as_str().unwrap();
    if through_storage {
        let hex = layer_digest.trim_start_matches("sha256:");
        let data = registry
            .dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut bytes =
            std::fs::read(&data).expect("the pushed layer is in the registry's storage");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&data, bytes).unwrap();
    } else {
        registry
            .proxy
            .as_ref()
            .expect("a proxy")
            .tamper(layer_digest, layer["size"].as_u64().unwrap());
    }

    let name = format!("{}/tamper/busybox:latest", registry.host);
    let output =
        util::run(
            registry
                .xbuild(home.path())
                .args(["pull", "--platform", "linux/arm64", &name]),
        );
    let stderr = util::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not match its digest"), "{stderr}");
    assert!(stderr.contains(layer_digest), "{stderr}");
    let store = home.path().join("store");
    // layout_blobs checks that each kept blob matches its digest.
    let kept = regenv::layout_blobs(&store);
    assert!(
        !kept.iter().any(|digest| digest == layer_digest),
        "{kept:?}"
    );
    assert!(
        kept.iter().all(|digest| fixture.blobs.contains(digest)),
        "only the image's own blobs: {kept:?}"
    );
    assert!(regenv::named(&store, &name).is_none());
    assert_eq!(
        std::fs::read_dir(store.join("tmp"))
            .map(Iterator::count)
            .unwrap_or(0),
        0,
        "no temporary files are left"
    );
}

/// Plays another process pulling the same image: its copy of the config lands in the store
/// as this pull starts on the (tampered) layer.
struct OtherPuller {
    layout: xbuild::oci::ImageLayout,
    layer: String,
    config: Vec<u8>,
}

impl xbuild::registry::Progress for OtherPuller {
    fn start(&self, digest: &xbuild::oci::Digest, _size: u64, _action: &str) {
        if digest.to_string() == self.layer {
            self.layout.write_blob(&self.config).unwrap();
        }
    }
}

/// A failed pull removes no complete blob: another process pulling the same base at that
/// moment may be about to use it (here its config, stored while this pull fetched the
/// tampered layer).
#[test]
fn failed_pull_keeps_blobs_another_pull_stored() {
    if !regenv::ready(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start_with_proxy(Setup::Plain, true);
    registry.skopeo_push_fixture("shared/busybox:latest", None);
    let fixture_layout = regenv::fixture_layout();
    let fixture = regenv::busybox();
    let manifest = regenv::json_blob(&fixture_layout, &fixture.platforms["linux/arm64"]);
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    registry
        .proxy
        .as_ref()
        .expect("a proxy")
        .tamper(&layer, manifest["layers"][0]["size"].as_u64().unwrap());
    let config_bytes = std::fs::read(
        fixture_layout
            .join("blobs/sha256")
            .join(config.trim_start_matches("sha256:")),
    )
    .unwrap();

    let home = util::temp_dir();
    let store = home.path().join("layout");
    let layout = xbuild::oci::ImageLayout::open_or_create(&store).unwrap();
    let mut options = xbuild::registry::RegistryOptions::from_env(home.path());
    options.insecure_registries = vec![registry.host.clone()];
    let reference =
        xbuild::registry::ImageRef::parse(&format!("{}/shared/busybox:latest", registry.host))
            .unwrap();
    let choice = xbuild::registry::PlatformChoice::One(
        xbuild::platform::Platform::parse("linux/arm64").unwrap(),
    );
    let progress = std::sync::Arc::new(OtherPuller {
        layout: layout.clone(),
        layer: layer.clone(),
        config: config_bytes,
    });
    let result =
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(xbuild::registry::pull::pull_reference(
                std::sync::Arc::new(options),
                &layout,
                &reference,
                &choice,
                progress,
            ));
    let error = result.expect_err("the tampered layer fails the pull");
    let message = xbuild::error::chain_text(&error);
    assert!(message.contains("does not match its digest"), "{message}");
    // layout_blobs checks that each kept blob matches its digest.
    let kept = regenv::layout_blobs(&store);
    assert!(
        kept.contains(&config),
        "the other pull's config stays: {kept:?}"
    );
    assert!(!kept.contains(&layer), "{kept:?}");
    assert_eq!(
        std::fs::read_dir(store.join("tmp"))
            .map(Iterator::count)
            .unwrap_or(0),
        0,
        "no temporary files are left"
    );
}

#[test]
fn tampered_blob_fails_and_leaves_nothing_plain() {
    tampered_blob_fails_and_leaves_nothing(Setup::Plain);
}

#[test]
fn tampered_blob_fails_and_leaves_nothing_faulty() {
    tampered_blob_fails_and_leaves_nothing(Setup::Faulty);
}

#[test]
fn tampered_blob_fails_and_leaves_nothing_tls_auth() {
    tampered_blob_fails_and_leaves_nothing(Setup::TlsAuth);
}

/// Docker schema 2 (a manifest list of v2 manifests, as `skopeo --format v2s2` writes):
/// `--all-platforms` pulls every platform with the list's digests; pushing the pulled image
/// elsewhere gives the same digest (media types and bytes kept); a manifest named by
/// digest pulls as a single image with its platform from the config; `linux/arm` means
/// `arm/v7`; a second pull fetches nothing.
#[test]
fn docker_schema2_list_pulls_all_platforms_and_pushes_back_unchanged() {
    if !regenv::ready(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let home = util::temp_dir();
    let source = format!("oci:{}:busybox:latest", regenv::fixture_layout().display());
    let dest = format!("docker://{}/docker/busybox:v2", registry.direct);
    let output = util::run(&mut registry.skopeo(
        &[
            "copy", "--quiet", "--all", "--format", "v2s2", &source, &dest,
        ],
        &["dest"],
    ));
    assert!(output.status.success(), "{}", util::stderr(&output));
    let raw = registry.skopeo_raw("docker/busybox:v2");
    let list: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        list["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );

    let name = format!("{}/docker/busybox:v2", registry.host);
    let output = util::run(
        registry
            .xbuild(home.path())
            .args(["pull", "--all-platforms", &name]),
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    let mut expected = format!("{name}@{}\n", regenv::digest_of(&raw));
    for entry in list["manifests"].as_array().unwrap() {
        let p = &entry["platform"];
        let mut platform = format!(
            "{}/{}",
            p["os"].as_str().unwrap(),
            p["architecture"].as_str().unwrap()
        );
        if let Some(variant) = p["variant"].as_str() {
            platform = format!("{platform}/{variant}");
        }
        expected.push_str(&format!(
            "{platform} {}\n",
            entry["digest"].as_str().unwrap()
        ));
    }
    assert_eq!(util::stdout(&output), expected);
    let store = home.path().join("store");
    let blobs = regenv::layout_blobs(&store);
    for entry in list["manifests"].as_array().unwrap() {
        let manifest = regenv::json_blob(&store, entry["digest"].as_str().unwrap());
        assert!(blobs.contains(&manifest["config"]["digest"].as_str().unwrap().to_owned()));
        for layer in manifest["layers"].as_array().unwrap() {
            assert!(blobs.contains(&layer["digest"].as_str().unwrap().to_owned()));
        }
    }

    let again = util::run(
        registry
            .xbuild(home.path())
            .args(["pull", "--all-platforms", &name]),
    );
    assert!(again.status.success());
    assert!(
        util::stderr(&again).contains(": 0 blobs fetched"),
        "{}",
        util::stderr(&again)
    );

    // Push the pulled image back under another name: same bytes, same digest.
    let copy = format!("{}/docker/copy:v2", registry.host);
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).unwrap()).unwrap();
    let mut entry = index["manifests"][0].clone();
    entry["annotations"]["org.opencontainers.image.ref.name"] = copy.clone().into();
    index["manifests"].as_array_mut().unwrap().push(entry);
    std::fs::write(store.join("index.json"), index.to_string()).unwrap();
    let output = util::run(registry.xbuild(home.path()).args(["push", &copy]));
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert_eq!(registry.skopeo_raw("docker/copy:v2"), raw);

    // One manifest by digest: a single-platform image.
    let arm = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["platform"]["architecture"] == "arm")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_digest = format!("{}/docker/busybox@{arm}", registry.host);
    let fresh = util::temp_dir();
    // Asked for another platform explicitly, a single-platform image is refused.
    let output = util::run(registry.xbuild(fresh.path()).args([
        "pull",
        "--platform",
        "linux/amd64",
        &by_digest,
    ]));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        util::stderr(&output).contains("has no image for linux/amd64 (it has: linux/arm/v7)"),
        "{}",
        util::stderr(&output)
    );
    assert_eq!(
        regenv::layout_blobs(&fresh.path().join("store")),
        Vec::<String>::new()
    );
    // Without --platform, as docker pull, it is taken whatever its platform.
    let output = util::run(registry.xbuild(fresh.path()).args(["pull", &by_digest]));
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert_eq!(
        util::stdout(&output),
        format!("{by_digest}@{arm}\nlinux/arm/v7 {arm}\n")
    );

    let output =
        util::run(
            registry
                .xbuild(fresh.path())
                .args(["pull", "--platform", "linux/arm", &name]),
        );
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert!(
        util::stdout(&output).ends_with(&format!("linux/arm/v7 {arm}\n")),
        "{}",
        util::stdout(&output)
    );
    assert!(
        util::stderr(&output).contains(": 0 blobs fetched, 2 already in the store"),
        "{}",
        util::stderr(&output)
    );
}
