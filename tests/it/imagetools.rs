//! `xbuild imagetools create|inspect` with buildx's flags against docker-registry, judged by
//! skopeo: `--platform`, `--annotation`, `--append`, `-f`, `--prefer-index=false`,
//! `--dry-run`, `--metadata-file`; `inspect --raw` and `--format`.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::process::Output;

use crate::regenv::{self, Setup, TestRegistry};
use crate::util;

fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}{}",
        util::stdout(output),
        util::stderr(output)
    );
    util::stdout(output)
}

fn platforms(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
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
        .collect()
}

#[test]
fn imagetools_create_and_inspect_take_buildx_flags() {
    if !regenv::ready(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let home = util::temp_dir();
    let fixture = regenv::busybox();
    registry.skopeo_push_fixture("src/all:1", None);
    registry.skopeo_push_fixture("single/amd64:1", Some("amd64"));
    registry.skopeo_push_fixture("single/arm64:1", Some("arm64"));
    let host = &registry.host;
    let xbuild = |args: &[&str]| util::run(registry.xbuild(home.path()).args(args));
    let all = format!("{host}/src/all:1");

    // --dry-run prints the index and pushes nothing; --platform keeps what it names.
    let printed = ok(
        &xbuild(&[
            "imagetools",
            "create",
            "--dry-run",
            "-p",
            "linux/arm64",
            &all,
        ]),
        "dry run",
    );
    let index: serde_json::Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(platforms(&index), ["linux/arm64"]);
    assert_eq!(
        index["manifests"][0]["digest"],
        fixture.platforms["linux/arm64"].as_str()
    );
    let missing = util::run(&mut registry.skopeo(
        &[
            "inspect",
            "--raw",
            &format!("docker://{}/app:1", registry.direct),
        ],
        &[""],
    ));
    assert!(!missing.status.success(), "the dry run pushed");
    assert!(
        util::stderr(&missing).contains("manifest unknown"),
        "{}",
        util::stderr(&missing)
    );

    // Annotations on the index and, scoped, on one descriptor; two platforms of six.
    let metadata = home.path().join("metadata.json");
    let target = format!("{host}/app:1");
    ok(
        &xbuild(&[
            "imagetools",
            "create",
            "-t",
            &target,
            "--platform",
            "linux/amd64,linux/arm64",
            "--annotation",
            "index:org.opencontainers.image.description=hello world",
            "--annotation",
            "manifest-descriptor[linux/arm64]:com.example.arch=arm",
            "--metadata-file",
            metadata.to_str().unwrap(),
            &all,
        ]),
        "create",
    );
    let raw = registry.skopeo_raw("app:1");
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(platforms(&index), ["linux/amd64", "linux/arm64"]);
    assert_eq!(
        index["annotations"]["org.opencontainers.image.description"],
        "hello world"
    );
    assert!(index["manifests"][0]["annotations"]["com.example.arch"].is_null());
    assert_eq!(
        index["manifests"][1]["annotations"]["com.example.arch"],
        "arm"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metadata).unwrap()).unwrap();
    assert_eq!(
        written["containerimage.descriptor"]["digest"],
        regenv::digest_of(&raw).as_str()
    );
    assert_eq!(written["image.name"], format!("{host}/app").as_str());

    // inspect: --raw is the registry's bytes; --format as buildx documents it.
    let inspected = registry
        .xbuild(home.path())
        .args(["imagetools", "inspect", "--raw", &target])
        .output()
        .unwrap();
    assert_eq!(inspected.stdout, raw);
    let manifest = ok(
        &xbuild(&[
            "imagetools",
            "inspect",
            "--format",
            "{{json .Manifest}}",
            &target,
        ]),
        "inspect json .Manifest",
    );
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest["digest"], regenv::digest_of(&raw).as_str());
    assert_eq!(manifest["size"], raw.len());
    assert_eq!(manifest["manifests"].as_array().unwrap().len(), 2);
    let digest = ok(
        &xbuild(&[
            "imagetools",
            "inspect",
            "--format",
            "d={{.Manifest.Digest}}",
            &target,
        ]),
        "inspect digest",
    );
    assert_eq!(digest.trim(), format!("d={}", regenv::digest_of(&raw)));
    let image = ok(
        &xbuild(&[
            "imagetools",
            "inspect",
            "--format",
            "{{json .Image}}",
            &target,
        ]),
        "inspect json .Image",
    );
    let image: serde_json::Value = serde_json::from_str(&image).unwrap();
    for arch in ["amd64", "arm64"] {
        let mut config = std::process::Command::new("skopeo");
        config
            .arg(format!("--override-arch={arch}"))
            .args(["inspect", "--tls-verify=false", "--config"])
            .arg(format!("docker://{}/app:1", registry.direct));
        let config: serde_json::Value =
            serde_json::from_str(&ok(&util::run(&mut config), "skopeo config")).unwrap();
        let ours = &image[format!("linux/{arch}")];
        assert_eq!(ours["architecture"], config["architecture"]);
        assert_eq!(ours["rootfs"]["diff_ids"], config["rootfs"]["diff_ids"]);
    }
    let refused = xbuild(&["imagetools", "inspect", "--format", "{{.Config}}", &target]);
    assert_eq!(refused.status.code(), Some(2), "{}", util::stderr(&refused));

    // --append adds to what the tag has.
    let app2 = format!("{host}/app:2");
    ok(
        &xbuild(&[
            "imagetools",
            "create",
            "-t",
            &app2,
            &format!("{host}/single/amd64:1"),
        ]),
        "create app:2",
    );
    ok(
        &xbuild(&[
            "imagetools",
            "create",
            "--append",
            "-t",
            &app2,
            &format!("{host}/single/arm64:1"),
        ]),
        "append",
    );
    let index: serde_json::Value = serde_json::from_slice(&registry.skopeo_raw("app:2")).unwrap();
    assert_eq!(platforms(&index), ["linux/amd64", "linux/arm64"]);

    // -f: a descriptor from a file, its annotations laid over the registry's; the digest
    // is found in the tag's repository.
    let arm64 = index["manifests"][1].clone();
    let mut descriptor = arm64.clone();
    descriptor["annotations"] = serde_json::json!({"org.example.from-file": "yes"});
    let file = home.path().join("descriptor.json");
    std::fs::write(&file, descriptor.to_string()).unwrap();
    ok(
        &xbuild(&[
            "imagetools",
            "create",
            "-t",
            &format!("{host}/app:3"),
            "-f",
            file.to_str().unwrap(),
        ]),
        "create -f",
    );
    let index: serde_json::Value = serde_json::from_slice(&registry.skopeo_raw("app:3")).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["digest"], arm64["digest"]);
    assert_eq!(
        index["manifests"][0]["annotations"]["org.example.from-file"],
        "yes"
    );

    // --prefer-index=false: one single-platform source is copied as it is.
    ok(
        &xbuild(&[
            "imagetools",
            "create",
            "--prefer-index=false",
            "-t",
            &format!("{host}/app:4"),
            &format!("{host}/single/arm64:1"),
        ]),
        "carbon copy",
    );
    assert_eq!(
        registry.skopeo_raw("app:4"),
        registry.skopeo_raw("single/arm64:1")
    );

    // Refused before anything is pushed: annotation types buildx refuses, no tag.
    for args in [
        vec!["--annotation", "manifest:k=v", "-t", "REG/app:5"],
        vec!["--annotation", "k=v", "-t", "REG/app:5"],
        vec![],
    ] {
        let mut command = vec!["imagetools".to_owned(), "create".to_owned()];
        command.extend(args.iter().map(|a| a.replace("REG", host)));
        command.push(all.clone());
        let refused = util::run(registry.xbuild(home.path()).args(&command));
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{command:?}: {}",
            util::stderr(&refused)
        );
    }
    let missing = util::run(&mut registry.skopeo(
        &[
            "inspect",
            "--raw",
            &format!("docker://{}/app:5", registry.direct),
        ],
        &[""],
    ));
    assert!(!missing.status.success());
    assert!(
        util::stderr(&missing).contains("manifest unknown"),
        "{}",
        util::stderr(&missing)
    );
}
