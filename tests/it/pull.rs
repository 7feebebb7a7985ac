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
/// the mismatch, exit 1, and leaves nothing in the store: no name, no blob, no temporary
/// file.
fn tampered_blob_fails_and_leaves_nothing(setup: Setup) {
    if !regenv::ready(setup) {
        return;
    }
    let registry = TestRegistry::start_with_proxy(setup, true);
    let home = util::temp_dir();
    let fixture = regenv::busybox();
    registry.skopeo_push_fixture("tamper/busybox:latest", None);
    let manifest = regenv::json_blob(&regenv::fixture_layout(), &fixture.platforms["linux/arm64"]);
    let layer = &manifest["layers"][0];
    let layer_digest = layer["digest"].as_str().unwrap();
    registry
        .proxy
        .as_ref()
        .expect("a proxy")
        .tamper(layer_digest, layer["size"].as_u64().unwrap());

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
    assert_eq!(regenv::layout_blobs(&store), Vec::<String>::new());
    assert!(regenv::named(&store, &name).is_none());
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
