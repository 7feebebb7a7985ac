//! The output keys BuildKit's image exporter has and xbuild took last:
//! `oci-mediatypes=false` (Docker's media types), `store=false` (push only) and
//! `registry.insecure=true` (HTTPS without verifying the certificate), on `FROM scratch`
//! builds; judged by docker-registry and skopeo (and dockerd pulling what was pushed), not
//! by xbuild reading its own output.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::path::Path;
use std::process::Output;

use crate::regenv::{Setup, TestRegistry};
use crate::util::{self, Need};

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

fn needs(setup: Setup) -> bool {
    util::require(&[Need::Root, Need::Program("skopeo"), Need::Program("tar")])
        && crate::regenv::ready(setup)
}

/// A `FROM scratch` context with two files, each copied by a step of its own.
fn context(dir: &Path) {
    let context = dir.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY one.txt /one.txt\nCOPY two.txt /two.txt\n",
    )
    .unwrap();
    std::fs::write(context.join("one.txt"), "one\n").unwrap();
    std::fs::write(context.join("two.txt"), "two\n").unwrap();
}

/// `xbuild build` with a store of its own (`dir/<home>/store`), talking to `registry`.
fn build(registry: &TestRegistry, dir: &Path, home: &str, args: &[&str]) -> Output {
    util::run(
        registry
            .xbuild(&dir.join(home))
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

fn raw(registry: &TestRegistry, name: &str) -> serde_json::Value {
    serde_json::from_slice(&registry.skopeo_raw(name)).unwrap()
}

/// Every manifest of a Docker manifest list has Docker's types for itself, its config and
/// each layer; returns the list's manifest digests.
fn assert_docker_list(registry: &TestRegistry, repository: &str, list: &serde_json::Value) {
    assert_eq!(list["mediaType"], DOCKER_LIST, "{list}");
    assert!(list.get("annotations").is_none(), "{list}");
    let entries = list["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{list}");
    for entry in entries {
        assert_eq!(entry["mediaType"], DOCKER_MANIFEST, "{list}");
        let digest = entry["digest"].as_str().unwrap();
        let manifest = raw(registry, &format!("{repository}@{digest}"));
        assert_docker_manifest(&manifest);
    }
}

fn assert_docker_manifest(manifest: &serde_json::Value) {
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST, "{manifest}");
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG, "{manifest}");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{manifest}");
    for layer in layers {
        assert_eq!(layer["mediaType"], DOCKER_GZIP, "{manifest}");
    }
}

/// `oci-mediatypes=false`: the pushed image is a Docker manifest list of schema-2 manifests
/// with Docker's config and layer types (skopeo reads them from docker-registry), the same
/// in an OCI archive; the store names the Docker list; dockerd pulls it; a second build
/// without the key pushes OCI types again (the key, not the build, chose them).
#[test]
fn oci_mediatypes_false_writes_docker_media_types() {
    if !needs(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir);
    let tag = format!("{}/keys3/docker:1", registry.host);
    let archive = dir.join("docker-types.tar");
    let output = build(
        &registry,
        dir,
        "a",
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &tag,
            "-o",
            "type=image,push=true,oci-mediatypes=false",
            "-o",
            &format!("type=oci,dest={},oci-mediatypes=false", archive.display()),
        ],
    );
    ok(&output);
    let list = raw(&registry, "keys3/docker:1");
    assert_docker_list(&registry, "keys3/docker", &list);
    let list_digest = crate::regenv::digest_of(&registry.skopeo_raw("keys3/docker:1"));

    // The OCI archive holds the same list (skopeo reads the layout).
    let unpacked = dir.join("archive");
    std::fs::create_dir_all(&unpacked).unwrap();
    let untar = util::run(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&unpacked),
    );
    assert!(untar.status.success(), "{}", util::stderr(&untar));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["mediaType"], DOCKER_LIST, "{index}");
    assert_eq!(
        index["manifests"][0]["digest"],
        list_digest.as_str(),
        "{index}"
    );
    let inspected = util::run(std::process::Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}", unpacked.display()),
    ]));
    assert!(inspected.status.success(), "{}", util::stderr(&inspected));
    let from_layout: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(from_layout["mediaType"], DOCKER_LIST, "{from_layout}");

    // The store names the Docker list under the tag.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("a/store/index.json")).unwrap()).unwrap();
    let named = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|name| name.ends_with("keys3/docker:1"))
        })
        .unwrap_or_else(|| panic!("{index}"));
    assert_eq!(named["digest"], list_digest.as_str(), "{index}");

    // One platform without --platform: one Docker schema-2 manifest.
    let single = build(
        &registry,
        dir,
        "a",
        &[
            "-t",
            &format!("{}/keys3/docker:single", registry.host),
            "-o",
            "type=registry,oci-mediatypes=false",
        ],
    );
    ok(&single);
    assert_docker_manifest(&raw(&registry, "keys3/docker:single"));

    // Without the key: OCI types, from the same cached build.
    let oci = build(
        &registry,
        dir,
        "a",
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &format!("{}/keys3/docker:oci", registry.host),
            "--push",
        ],
    );
    ok(&oci);
    let index = raw(&registry, "keys3/docker:oci");
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );

    // dockerd (Docker 20.10's distribution code) pulls the Docker list for its platform.
    if !util::require(&[Need::Program("dockerd"), Need::Program("docker")]) {
        return;
    }
    let engine_dir = util::temp_dir();
    let Some(dockerd) = util::Dockerd::start(engine_dir.path()) else {
        panic!("dockerd did not start");
    };
    let pulled = util::run(dockerd.docker().args(["pull", &tag]));
    assert!(pulled.status.success(), "{}", util::stderr(&pulled));
    let inspected = util::run(dockerd.docker().args([
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &tag,
    ]));
    assert!(inspected.status.success(), "{}", util::stderr(&inspected));
    assert!(
        util::stdout(&inspected).contains(&list_digest),
        "{} does not name {list_digest}",
        util::stdout(&inspected)
    );
}

/// What BuildKit refuses beside `oci-mediatypes=false` is refused before the build (exit
/// 2): zstd layers, `oci-artifact=true`, index annotations, and attestations the user asked
/// for.
#[test]
fn oci_mediatypes_false_refuses_what_docker_types_cannot_carry() {
    if !needs(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir);
    let tag = format!("{}/keys3/refused:1", registry.host);
    for (args, fragment) in [
        (
            vec![
                "-o",
                "type=image,push=true,oci-mediatypes=false,compression=zstd",
            ],
            "compression=zstd conflicts with oci-mediatypes=false",
        ),
        (
            vec![
                "-o",
                "type=image,push=true,oci-mediatypes=false,annotation-index.org.a=b",
            ],
            "annotation-index.org.a=b: cannot export index or descriptor annotations",
        ),
        (
            vec![
                "--sbom=true",
                "-o",
                "type=image,push=true,oci-mediatypes=false",
            ],
            "oci-mediatypes=false (BuildKit refuses attestations",
        ),
    ] {
        let output = build(
            &registry,
            dir,
            "a",
            &[&["-t", tag.as_str()], &args[..]].concat(),
        );
        assert_eq!(output.status.code(), Some(2), "{}", util::stderr(&output));
        assert!(
            util::stderr(&output).contains(fragment),
            "{fragment}: {}",
            util::stderr(&output)
        );
    }
    let tags = registry
        .skopeo(
            &[
                "list-tags",
                &format!("docker://{}/keys3/refused", registry.host),
            ],
            &[""],
        )
        .output()
        .unwrap();
    assert!(
        !util::stdout(&tags).contains("\"1\""),
        "{}",
        util::stdout(&tags)
    );
}

/// The names in a store's `index.json` (`org.opencontainers.image.ref.name`).
fn store_names(home: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(home.join("store/index.json")) else {
        return Vec::new();
    };
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_owned)
        .collect()
}

/// `store=false`: the image is pushed (skopeo reads it) and nothing new is named in the
/// store; the steps are still cached (a second build runs none); with `store=true` (the
/// default) the same push names it.
#[test]
fn store_false_pushes_without_naming_the_image_here() {
    if !needs(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir);
    let tag = format!("{}/keys3/nostore:1", registry.host);
    let first = build(
        &registry,
        dir,
        "a",
        &[
            "-t",
            &tag,
            "--push",
            "-o",
            "type=image,push=true,store=false",
        ],
    );
    ok(&first);
    let manifest = raw(&registry, "keys3/nostore:1");
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "{manifest}"
    );
    let names = store_names(&dir.join("a"));
    assert!(
        names.iter().all(|name| !name.contains("keys3/nostore")),
        "{names:?}"
    );
    let second = build(
        &registry,
        dir,
        "a",
        &["-t", &tag, "-o", "type=registry,store=false"],
    );
    let err = ok(&second);
    assert!(err.contains("2 steps cached"), "{err}");
    assert!(
        store_names(&dir.join("a"))
            .iter()
            .all(|name| !name.contains("keys3/nostore")),
        "{:?}",
        store_names(&dir.join("a"))
    );
    let kept = build(&registry, dir, "a", &["-t", &tag, "-o", "type=registry"]);
    ok(&kept);
    assert!(
        store_names(&dir.join("a"))
            .iter()
            .any(|name| name.contains("keys3/nostore")),
        "{:?}",
        store_names(&dir.join("a"))
    );
    // Refused where it would write nothing.
    let nowhere = build(&registry, dir, "a", &["-o", "type=image,store=false"]);
    assert_eq!(nowhere.status.code(), Some(2), "{}", util::stderr(&nowhere));
    assert!(
        util::stderr(&nowhere).contains("store=false needs push=true"),
        "{}",
        util::stderr(&nowhere)
    );
}

/// `registry.insecure=true`: a registry on HTTPS with a certificate xbuild does not trust
/// (no CA in certs.d) takes the push; without the key the same push is refused naming the
/// certificate. skopeo, given the CA, reads what was pushed.
#[test]
fn registry_insecure_pushes_to_an_untrusted_certificate() {
    if !needs(Setup::TlsAuth) {
        return;
    }
    let registry = TestRegistry::start(Setup::TlsAuth);
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir);
    // Credentials without `xbuild login` (which would need the CA); no CA in certs.d.
    let docker_config = dir.join("a/docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    let auth = base64_encode(&format!(
        "{}:{}",
        crate::regenv::USER,
        crate::regenv::PASSWORD
    ));
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host),
    )
    .unwrap();
    let tag = format!("{}/keys3/insecure:1", registry.host);
    let run = |spec: &str| {
        util::run(
            util::xbuild(&dir.join("a"))
                .env("DOCKER_CONFIG", &docker_config)
                .env_remove("XBUILD_INSECURE_REGISTRIES")
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args(["build", "--progress", "plain", "-t", &tag, "-o", spec])
                .arg(dir.join("ctx")),
        )
    };
    let refused = run("type=registry");
    assert!(!refused.status.success());
    assert!(
        util::stderr(&refused).contains("certificate"),
        "{}",
        util::stderr(&refused)
    );
    let pushed = run("type=registry,registry.insecure=true");
    ok(&pushed);
    let manifest = raw(&registry, "keys3/insecure:1");
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "{manifest}"
    );
}

/// `--cache-to`/`--cache-from type=registry,...,registry.insecure=true`: a cache on an
/// HTTPS registry whose certificate xbuild does not trust (no CA in certs.d) is written and
/// read back with the key; without it the export fails naming the certificate and the
/// import is a warning (the steps run). skopeo, given the CA, reads the cache index.
#[test]
fn registry_insecure_reaches_a_cache_behind_an_untrusted_certificate() {
    if !needs(Setup::TlsAuth) {
        return;
    }
    let registry = TestRegistry::start(Setup::TlsAuth);
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir);
    // Credentials without `xbuild login` (which would need the CA); no CA in certs.d.
    let docker_config = dir.join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    let auth = base64_encode(&format!(
        "{}:{}",
        crate::regenv::USER,
        crate::regenv::PASSWORD
    ));
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host),
    )
    .unwrap();
    let cache = format!("type=registry,ref={}/mixcomp/cache:1", registry.host);
    let run = |home: &str, args: &[&str]| {
        util::run(
            util::xbuild(&dir.join(home))
                .env("DOCKER_CONFIG", &docker_config)
                .env_remove("XBUILD_INSECURE_REGISTRIES")
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args(["build", "--progress", "plain"])
                .args(args)
                .arg(dir.join("ctx")),
        )
    };
    let refused = run("a", &["--cache-to", &cache]);
    assert!(!refused.status.success());
    assert!(
        util::stderr(&refused).contains("certificate"),
        "{}",
        util::stderr(&refused)
    );
    ok(&run(
        "b",
        &["--cache-to", &format!("{cache},registry.insecure=true")],
    ));
    let index = raw(&registry, "mixcomp/cache:1");
    assert!(
        !index["manifests"].as_array().unwrap().is_empty(),
        "{index}"
    );
    // A fresh store reads the cache back with the key: both steps cached.
    let err = ok(&run(
        "c",
        &["--cache-from", &format!("{cache},registry.insecure=true")],
    ));
    assert!(err.contains("imported 2 cache records"), "{err}");
    assert!(err.contains("2 steps cached"), "{err}");
    // Without it the import fails on the certificate: a warning, the steps run.
    let err = ok(&run("d", &["--cache-from", &cache]));
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains("imported 2 cache records"), "{err}");
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The mtimes of a gzip layer's entries, `(path, seconds)`, as GNU tar lists them.
fn layer_mtimes(layer: &Path) -> Vec<(String, i64)> {
    let listed = util::run(
        std::process::Command::new("tar")
            .env("TZ", "UTC")
            .args(["--list", "--verbose", "--full-time", "-z", "-f"])
            .arg(layer),
    );
    assert!(listed.status.success(), "{}", util::stderr(&listed));
    util::stdout(&listed)
        .lines()
        .map(|line| {
            // `-rw-r--r-- 0/0 4 2023-11-14 22:13:20 new.txt`
            let fields: Vec<&str> = line.split_whitespace().collect();
            let date = util::run(std::process::Command::new("date").args([
                "-u",
                "-d",
                &format!("{} {}", fields[3], fields[4]),
                "+%s",
            ]));
            let seconds = util::stdout(&date).trim().parse().unwrap();
            (fields[5..].join(" "), seconds)
        })
        .collect()
}

/// `rewrite-timestamp=true` with SOURCE_DATE_EPOCH: the files of the layer the build makes
/// have mtimes no later than the epoch (a file touched now gets the epoch), the base
/// image's layers are the fixture's own blobs (not rewritten), as BuildKit's exporter does;
/// without SOURCE_DATE_EPOCH BuildKit's warning is printed and the file keeps its time.
/// Judged by GNU tar listing the layer blobs of the OCI archive.
#[test]
fn rewrite_timestamp_clamps_the_layers_the_build_makes() {
    if !util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Program("tar"),
        Need::Program("date"),
    ]) {
        return;
    }
    const EPOCH: i64 = 1_700_000_000;
    let dir = util::temp_dir();
    let dir = dir.path();
    let context = dir.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nCOPY new.txt /new.txt\n",
    )
    .unwrap();
    std::fs::write(context.join("new.txt"), "made now\n").unwrap();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    crate::build::store_with_fixtures(&home);
    let fixture = crate::regenv::busybox();
    let export = |name: &str, epoch: Option<i64>| -> (Output, std::path::PathBuf) {
        let archive = dir.join(format!("{name}.tar"));
        let mut command = util::xbuild(&home);
        if let Some(epoch) = epoch {
            command.env("SOURCE_DATE_EPOCH", epoch.to_string());
        }
        let output = util::run(
            command
                .args([
                    "build",
                    "--progress",
                    "plain",
                    "--platform",
                    "linux/amd64",
                    "-o",
                ])
                .arg(format!(
                    "type=oci,dest={},rewrite-timestamp=true",
                    archive.display()
                ))
                .arg(&context),
        );
        let unpacked = dir.join(name);
        std::fs::create_dir_all(&unpacked).unwrap();
        if output.status.success() {
            let untar = util::run(
                std::process::Command::new("tar")
                    .arg("-xf")
                    .arg(&archive)
                    .arg("-C")
                    .arg(&unpacked),
            );
            assert!(untar.status.success(), "{}", util::stderr(&untar));
        }
        (output, unpacked)
    };
    let (output, unpacked) = export("clamped", Some(EPOCH));
    ok(&output);
    let manifest = only_manifest(&unpacked);
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| layer["digest"].as_str().unwrap().to_owned())
        .collect();
    let base = crate::regenv::json_blob(
        &crate::regenv::fixture_layout(),
        &fixture.platforms["linux/amd64"],
    );
    let base_layers: Vec<String> = base["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| layer["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(layers.len(), base_layers.len() + 1, "{manifest}");
    assert_eq!(layers[..base_layers.len()], base_layers[..], "{manifest}");
    let made = blob_path(&unpacked, layers.last().unwrap());
    let times = layer_mtimes(&made);
    assert!(times.iter().any(|(path, _)| path == "new.txt"), "{times:?}");
    for (path, seconds) in &times {
        assert!(*seconds <= EPOCH, "{path}: {seconds} is after {EPOCH}");
    }
    assert!(
        times
            .iter()
            .any(|(path, seconds)| path == "new.txt" && *seconds == EPOCH),
        "{times:?}"
    );

    // Without an epoch: BuildKit's warning, and the file keeps its own (recent) time.
    let (output, unpacked) = export("kept", None);
    let err = ok(&output);
    assert!(
        err.contains("rewrite-timestamp is specified, but no source-date-epoch was found"),
        "{err}"
    );
    let manifest = only_manifest(&unpacked);
    let made = blob_path(
        &unpacked,
        manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
            .as_str()
            .unwrap(),
    );
    let times = layer_mtimes(&made);
    assert!(
        times
            .iter()
            .any(|(path, seconds)| path == "new.txt" && *seconds > EPOCH),
        "{times:?}"
    );
}

/// The one image manifest of an unpacked OCI archive (index → index → manifest, or index →
/// manifest).
fn only_manifest(layout: &Path) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut document =
        crate::regenv::json_blob(layout, index["manifests"][0]["digest"].as_str().unwrap());
    while let Some(entries) = document["manifests"].as_array() {
        let digest = entries[0]["digest"].as_str().unwrap().to_owned();
        document = crate::regenv::json_blob(layout, &digest);
    }
    document
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// `--cache-to ...,oci-mediatypes=false`: the cache ref is a Docker manifest list of
/// schema-2 manifests with Docker layer types (skopeo reads it from docker-registry), and a
/// fresh store builds from it with every step cached (the same digest); a local cache
/// directory names a Docker list in its `index.json` too.
#[test]
fn a_cache_with_docker_media_types_round_trips() {
    if !needs(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir);
    let reference = format!("{}/keys3/cache:docker", registry.host);
    let local = dir.join("local-cache");
    let first = build(
        &registry,
        dir,
        "a",
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-to",
            &format!("type=registry,ref={reference},mode=max,oci-mediatypes=false"),
            "--cache-to",
            &format!("type=local,dest={},oci-mediatypes=false", local.display()),
        ],
    );
    ok(&first);
    let list = raw(&registry, "keys3/cache:docker");
    assert_eq!(list["mediaType"], DOCKER_LIST, "{list}");
    let entries = list["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{list}");
    for entry in entries {
        assert_eq!(entry["mediaType"], DOCKER_MANIFEST, "{list}");
        let manifest = raw(
            &registry,
            &format!("keys3/cache@{}", entry["digest"].as_str().unwrap()),
        );
        assert_eq!(manifest["mediaType"], DOCKER_MANIFEST, "{manifest}");
        let layers = manifest["layers"].as_array().unwrap();
        assert!(!layers.is_empty(), "{manifest}");
        for layer in layers {
            assert_eq!(layer["mediaType"], DOCKER_GZIP, "{manifest}");
        }
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(local.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["mediaType"], DOCKER_LIST, "{index}");

    for (home, from) in [
        ("b", reference.clone()),
        ("c", format!("type=local,src={}", local.display())),
    ] {
        let second = build(
            &registry,
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
        assert!(err.contains("4 steps cached"), "{from}: {err}");
        assert_eq!(util::stdout(&second), util::stdout(&first), "{from}");
    }
}
