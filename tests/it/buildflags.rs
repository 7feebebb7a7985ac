//! buildx's build flags `--label`, `--annotation` and `--add-host` on the busybox fixtures,
//! judged by skopeo (configs, raw manifests and indexes) and umoci (what a RUN step saw);
//! bad values refused with exit 2 before any work.
#![allow(clippy::unwrap_used, reason = "tests panic on setup failures")]

use std::path::Path;
use std::process::Command;

use crate::build::{build, needs, store_with_fixtures, unpack};
use crate::util;

const NAME: &str = "docker.io/library/app:1";

const DOCKERFILE: &str = "FROM busybox\nLABEL a=dockerfile b=kept\nRUN cat /etc/hosts > /hosts.txt && echo hosts-step-ran\n";

fn skopeo_json(args: &[&str], target: &str) -> serde_json::Value {
    let output = Command::new("skopeo")
        .args(args)
        .arg(target)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn context(dir: &Path) {
    store_with_fixtures(dir);
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    std::fs::write(dir.join("ctx/Dockerfile"), DOCKERFILE).unwrap();
}

fn blob(dir: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&std::fs::read(dir.join("store/blobs/sha256").join(hex)).unwrap())
        .unwrap()
}

/// `--label`s override the Dockerfile's in every platform's config; a changed label
/// changes the digest but runs no RUN step again.
#[test]
fn labels_win_over_dockerfile_and_rerun_no_step() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    context(dir);
    let output = build(dir, &["-t", "app:1", "--label", "a=cli", "--label", "c=3"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let first = util::stdout(&output);
    for arch in ["amd64", "arm64"] {
        let config = skopeo_json(
            &["inspect", "--config", "--override-arch", arch],
            &format!("oci:{}:{NAME}", dir.join("store").display()),
        );
        let labels = &config["config"]["Labels"];
        assert_eq!(labels["a"], "cli", "{arch}: {config}");
        assert_eq!(labels["b"], "kept", "{arch}: {config}");
        assert_eq!(labels["c"], "3", "{arch}: {config}");
    }
    let output = build(dir, &["-t", "app:1", "--label", "a=changed"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let stderr = util::stderr(&output);
    assert!(stderr.contains("0 RUN steps run"), "{stderr}");
    assert_ne!(util::stdout(&output), first);
    let config = skopeo_json(
        &["inspect", "--config", "--override-arch", "arm64"],
        &format!("oci:{}:{NAME}", dir.join("store").display()),
    );
    assert_eq!(config["config"]["Labels"]["a"], "changed");
    assert!(config["config"]["Labels"].get("c").is_none(), "{config}");
}

/// Every kind of `--annotation` lands where buildx puts it: the index, each manifest (only
/// arm64's for a scoped one), the manifest descriptors, the store's index.json entry and an
/// OCI archive's.
#[test]
fn annotations_on_index_manifests_and_descriptors() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    context(dir);
    let output = build(
        dir,
        &[
            "-t",
            "app:1",
            "--annotation",
            "index:org.opencontainers.image.description=My app",
            "--annotation",
            "manifest[linux/arm64]:arm=yes",
            "--annotation",
            "plain=all",
            "--annotation",
            "manifest-descriptor:md=1",
            "--annotation",
            "index-descriptor:idd=2",
        ],
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    let store = format!("oci:{}:{NAME}", dir.join("store").display());
    let index = skopeo_json(&["inspect", "--raw"], &store);
    assert_eq!(
        index["annotations"]["org.opencontainers.image.description"], "My app",
        "{index}"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    for descriptor in manifests {
        assert_eq!(descriptor["annotations"]["md"], "1", "{descriptor}");
        let arch = descriptor["platform"]["architecture"].as_str().unwrap();
        let manifest = blob(dir, descriptor["digest"].as_str().unwrap());
        assert_eq!(
            manifest["annotations"]["plain"], "all",
            "{arch}: {manifest}"
        );
        let arm = manifest["annotations"].get("arm");
        assert_eq!(arm.is_some(), arch == "arm64", "{arch}: {manifest}");
        // skopeo reads that platform's image through the index.
        let config = skopeo_json(&["inspect", "--config", "--override-arch", arch], &store);
        assert_eq!(config["architecture"], arch);
    }
    // The store's index.json entry (the index descriptor).
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("store/index.json")).unwrap()).unwrap();
    let entry = top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["annotations"]["org.opencontainers.image.ref.name"] == NAME)
        .unwrap();
    assert_eq!(entry["annotations"]["idd"], "2", "{entry}");

    // An OCI archive's index.json too, with its name.
    let archive = dir.join("out.tar");
    let output = build(
        dir,
        &[
            "-t",
            "app:1",
            "--annotation",
            "index-descriptor:idd=2",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
        ],
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    let unpacked = dir.join("archive");
    std::fs::create_dir_all(&unpacked).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .arg("index.json")
        .status()
        .unwrap();
    assert!(status.success());
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let entry = &top["manifests"][0];
    assert_eq!(entry["annotations"]["idd"], "2", "{entry}");
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"], NAME,
        "{entry}"
    );
}

/// `--add-host` lines are in the /etc/hosts a RUN step reads, in both `HOST:IP` and
/// `HOST=IP` forms (IPv6 too), and a changed host runs the step again.
#[test]
fn add_host_lines_seen_by_run_and_keyed() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    context(dir);
    let hosts = [
        "--add-host",
        "myhost:10.1.2.3",
        "--add-host",
        "other=fd00::1",
    ];
    let output = build(dir, &[&["-t", "app:1"][..], &hosts].concat());
    assert!(output.status.success(), "{}", util::stderr(&output));
    for arch in ["amd64", "arm64"] {
        let root = unpack(dir, NAME, arch);
        let text = std::fs::read_to_string(root.join("hosts.txt")).unwrap();
        assert!(text.contains("10.1.2.3\tmyhost\n"), "{arch}: {text}");
        assert!(text.contains("fd00::1\tother\n"), "{arch}: {text}");
        // The step's /etc/hosts stays out of the layer.
        assert!(
            std::fs::read_to_string(root.join("etc/hosts"))
                .map_or(true, |hosts| !hosts.contains("myhost")),
            "{arch}"
        );
    }
    let output = build(dir, &[&["-t", "app:1"][..], &hosts].concat());
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert!(util::stderr(&output).contains("0 RUN steps run"));
    let output = build(dir, &["-t", "app:1", "--add-host", "myhost:10.9.9.9"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let stderr = util::stderr(&output);
    assert!(stderr.contains("2 RUN steps run"), "{stderr}");
}

/// `--ulimit` and `--shm-size` are what a RUN step sees (`ulimit -n`, `df /dev/shm`), and
/// part of its cache key.
#[test]
fn ulimit_and_shm_size_seen_by_run() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    context(dir);
    std::fs::write(
        dir.join("ctx/Dockerfile"),
        "FROM busybox\nRUN ulimit -n > /nofile && ulimit -Hn > /nofile-hard && df -k /dev/shm > /shm\n",
    )
    .unwrap();
    let flags = ["--ulimit", "nofile=1234:2345", "--shm-size", "128m"];
    let output = build(dir, &[&["-t", "app:1"][..], &flags].concat());
    assert!(output.status.success(), "{}", util::stderr(&output));
    let shm_kib = |text: &str| {
        text.lines()
            .nth(1)
            .and_then(|line| line.split_whitespace().nth(1))
            .map(ToOwned::to_owned)
    };
    for arch in ["amd64", "arm64"] {
        let root = unpack(dir, NAME, arch);
        let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
        assert_eq!(read("nofile").trim(), "1234", "{arch}");
        assert_eq!(read("nofile-hard").trim(), "2345", "{arch}");
        // 128m = 131072 KiB.
        let shm = read("shm");
        assert_eq!(shm_kib(&shm).as_deref(), Some("131072"), "{arch}: {shm}");
    }
    // Without the flags: Docker's 64m, and the steps run again.
    let output = build(dir, &["-t", "app:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let stderr = util::stderr(&output);
    assert!(stderr.contains("2 RUN steps run"), "{stderr}");
    let root = unpack(dir, NAME, "amd64");
    let shm = std::fs::read_to_string(root.join("shm")).unwrap();
    assert_eq!(shm_kib(&shm).as_deref(), Some("65536"), "{shm}");
    let nofile = std::fs::read_to_string(root.join("nofile")).unwrap();
    assert_ne!(nofile.trim(), "1234");
}

/// Bad values exit 2, name the flag and the value, and do no work (no Dockerfile needed:
/// the context does not even exist).
#[test]
fn bad_values_exit_2_before_any_work() {
    let temp = util::temp_dir();
    let dir = temp.path();
    let cases: &[(&[&str], &str)] = &[
        (&["--label", "novalue"], "--label novalue"),
        (&["--label", "=v"], "--label =v"),
        (
            &["--annotation", "bogus[linux/amd64]:k=v"],
            "--annotation bogus",
        ),
        (&["--annotation", "novalue"], "--annotation novalue"),
        (
            &["--annotation", "index[linux/amd64]:k=v"],
            "--annotation index[linux/amd64]:k=v",
        ),
        (&["--add-host", "nocolon"], "--add-host nocolon"),
        (&["--add-host", "h:999.1.1.1"], "--add-host h:999.1.1.1"),
        (
            &["--add-host", "h:host-gateway"],
            "--add-host h:host-gateway",
        ),
        (&["--add-host", "bad host:1.2.3.4"], "--add-host bad host"),
        (&["--shm-size", "lots"], "--shm-size lots"),
        (&["--shm-size", "0"], "--shm-size 0"),
        (&["--shm-size", "12x"], "--shm-size 12x"),
        (&["--ulimit", "bogus=1"], "--ulimit bogus=1"),
        (&["--ulimit", "nofile"], "--ulimit nofile"),
        (&["--ulimit", "nofile=x"], "--ulimit nofile=x"),
        (&["--ulimit", "nofile=20:10"], "--ulimit nofile=20:10"),
    ];
    for (args, named) in cases {
        let mut command = util::xbuild(dir);
        command
            .args(["build", "--platform", "linux/amd64,linux/arm64"])
            .args(*args)
            .arg(dir.join("missing-context"));
        let output = util::run(&mut command);
        let stderr = util::stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(!stderr.contains("missing-context"), "{args:?}: {stderr}");
    }
    // An index annotation makes one platform an index (`buildx_docs` pushes one); it takes
    // no platforms, and a list of types holds only known ones.
    for (value, reason) in [
        (
            "index[linux/amd64]:k=v",
            "index annotations take no platforms",
        ),
        ("index,bogus:k=v", "unknown annotation type \"bogus\""),
    ] {
        let mut command = util::xbuild(dir);
        command
            .args(["build", "--annotation", value])
            .arg(dir.join("missing-context"));
        let output = util::run(&mut command);
        let stderr = util::stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(reason), "{value}: {stderr}");
        assert!(!stderr.contains("missing-context"), "{value}: {stderr}");
    }
}
