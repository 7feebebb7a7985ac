//! Outputs of one build with different layer compressions (issue 16): one set of
//! manifests and index per compression, as BuildKit's exporters each convert the layers to
//! their own. Judged by skopeo, docker-registry, tar, gzip, zstd and umoci: each output
//! holds layers of its media type whose decompressed bytes are the config's diff_ids, both
//! sets unpack to the same files, the indexes differ and are reproducible, outputs of one
//! compression share one set, and each set's attestation manifests name its own manifests.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use crate::regenv::{Setup, TestRegistry};
use crate::util::{self, Need};

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn needs() -> bool {
    util::require(&[
        Need::Root,
        Need::Program("skopeo"),
        Need::Program("umoci"),
        Need::Program("tar"),
        Need::Program("gzip"),
        Need::Program("zstd"),
    ])
}

/// A `FROM scratch` context of two `COPY` layers (no base image, no emulation: both
/// platforms build on any host).
fn context(dir: &Path) {
    let context = dir.join("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY one.txt /one.txt\nCOPY two.txt /etc/two.txt\n",
    )
    .unwrap();
    std::fs::write(context.join("one.txt"), "one\n".repeat(5000)).unwrap();
    std::fs::write(context.join("two.txt"), "two\n").unwrap();
}

/// `xbuild build` of `dir/ctx` for both platforms with a store of its own
/// (`dir/<home>/store`), through `registry` when there is one.
fn build(dir: &Path, home: &str, registry: Option<&TestRegistry>, args: &[&str]) -> Output {
    let home = dir.join(home);
    let mut command = match registry {
        Some(registry) => registry.xbuild(&home),
        None => util::xbuild(&home),
    };
    util::run(
        command
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress", "plain"])
            .args(["--platform", "linux/amd64,linux/arm64"])
            .args(args)
            .arg(dir.join("ctx")),
    )
}

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "{}", util::stderr(output));
    util::stdout(output).trim().to_owned()
}

fn run_ok(command: &mut Command) -> Output {
    let output = util::run(command);
    assert!(
        output.status.success(),
        "{command:?}: {}",
        util::stderr(&output)
    );
    output
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// `skopeo copy --all --preserve-digests` of `source` into the OCI layout `dest` (tag
/// `x`): the index, manifests, configs and blobs as they are, to read with the file
/// system.
fn copy_all(source: &str, dest: &Path) {
    run_ok(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        source,
        &format!("oci:{}:x", dest.display()),
    ]));
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap()
}

/// sha256 of what `program -dc` makes of `bytes` (gzip or zstd).
fn decompressed_digest(program: &str, bytes: &[u8]) -> String {
    let dir = util::temp_dir();
    let file = dir.path().join("blob");
    std::fs::write(&file, bytes).unwrap();
    let output = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("{program} -dc < '{}' | sha256sum", file.display())),
    );
    format!(
        "sha256:{}",
        util::stdout(&output).split_whitespace().next().unwrap()
    )
}

/// One set as copied into an OCI layout: its index digest, and per platform
/// (`linux/amd64`) the manifest digest, the config digest and the layers' media types.
struct Set {
    index: String,
    manifests: BTreeMap<String, (String, String, Vec<String>)>,
}

/// Reads the set in `layout` (tag `x`), checking that every layer is of `media_type` and
/// decompresses (with `program`) to its diff_id in the config.
fn read_set(layout: &Path, media_type: &str, program: &str) -> Set {
    let top = json(&std::fs::read(layout.join("index.json")).unwrap());
    let index_digest = top["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let index = json(&blob(layout, &index_digest));
    let mut manifests = BTreeMap::new();
    for entry in index["manifests"].as_array().unwrap() {
        if entry["annotations"]["vnd.docker.reference.type"].is_string() {
            continue; // an attestation manifest (platform unknown/unknown)
        }
        let platform = &entry["platform"];
        let platform = format!(
            "{}/{}",
            platform["os"].as_str().unwrap(),
            platform["architecture"].as_str().unwrap()
        );
        let digest = entry["digest"].as_str().unwrap().to_owned();
        let manifest = json(&blob(layout, &digest));
        let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
        let config = json(&blob(layout, &config_digest));
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2, "{manifest}");
        assert_eq!(diff_ids.len(), 2, "{config}");
        let mut types = Vec::new();
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            assert_eq!(layer["mediaType"], media_type, "{platform}: {manifest}");
            let bytes = blob(layout, layer["digest"].as_str().unwrap());
            assert_eq!(
                decompressed_digest(program, &bytes),
                diff_id.as_str().unwrap(),
                "{platform}: the layer's bytes are its diff_id's tar"
            );
            types.push(layer["mediaType"].as_str().unwrap().to_owned());
        }
        manifests.insert(platform, (digest, config_digest, types));
    }
    assert_eq!(manifests.len(), 2, "{index}");
    Set {
        index: index_digest,
        manifests,
    }
}

/// umoci's unpacking of `arch`'s image in `source` (skopeo turns it into gzip first:
/// umoci 0.4 reads no zstd): the two files the build copied.
fn unpacked(dir: &Path, name: &str, source: &str, arch: &str) -> (String, String) {
    let layout = dir.join(format!("umoci-{name}-{arch}"));
    run_ok(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-compress",
        "--dest-compress-format",
        "gzip",
        "--override-arch",
        arch,
        source,
        &format!("oci:{}:x", layout.display()),
    ]));
    let bundle = dir.join(format!("bundle-{name}-{arch}"));
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:x", layout.display()))
            .arg(&bundle),
    );
    (
        std::fs::read_to_string(bundle.join("rootfs/one.txt")).unwrap(),
        std::fs::read_to_string(bundle.join("rootfs/etc/two.txt")).unwrap(),
    )
}

/// `-o type=oci,...,compression=zstd` and `-o type=registry,...,compression=gzip` in one
/// build: the archive holds zstd layers, the registry gzip ones, the same configs and
/// files, two index digests; `--metadata-file` and the printed digest are the last
/// output's (as buildx, whose BuildKit merges its exporters' answers in order); a cached
/// rebuild and a build in a fresh store give the same two digests.
#[test]
fn a_zstd_archive_and_a_gzip_push_get_a_set_of_manifests_each() {
    if !needs() || !crate::regenv::ready(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir);
    let name = format!("{}/sets/app:1", registry.host);
    let archive = |run: &str| dir.join(format!("zstd-{run}.tar"));
    let run = |home: &str, tag: &str| -> (String, serde_json::Value) {
        let metadata = dir.join(format!("metadata-{home}-{tag}.json"));
        let printed = ok(&build(
            dir,
            home,
            Some(&registry),
            &[
                "-o",
                &format!(
                    "type=oci,dest={},compression=zstd",
                    archive(&format!("{home}-{tag}")).display()
                ),
                "-o",
                &format!("type=registry,name={name}-{tag},compression=gzip"),
                "--metadata-file",
                &metadata.display().to_string(),
            ],
        ));
        (printed, json(&std::fs::read(&metadata).unwrap()))
    };
    let (printed, metadata) = run("a", "first");

    let zstd_layout = dir.join("zstd-layout");
    copy_all(
        &format!("oci-archive:{}", archive("a-first").display()),
        &zstd_layout,
    );
    let zstd = read_set(&zstd_layout, ZSTD, "zstd");
    let gzip_layout = dir.join("gzip-layout");
    copy_all(
        &format!("docker://{}/sets/app:1-first", registry.direct),
        &gzip_layout,
    );
    let gzip = read_set(&gzip_layout, GZIP, "gzip");

    assert_ne!(zstd.index, gzip.index, "one index per compression");
    for (platform, (manifest, config, _)) in &zstd.manifests {
        let (other_manifest, other_config, _) = &gzip.manifests[platform];
        assert_ne!(manifest, other_manifest, "{platform}: manifests differ");
        assert_eq!(config, other_config, "{platform}: one config for both sets");
    }
    // The same files in both, on both platforms.
    for arch in ["amd64", "arm64"] {
        let from_zstd = unpacked(
            dir,
            "zstd",
            &format!("oci-archive:{}", archive("a-first").display()),
            arch,
        );
        let from_gzip = unpacked(
            dir,
            "gzip",
            &format!("docker://{}/sets/app:1-first", registry.direct),
            arch,
        );
        assert_eq!(from_zstd, from_gzip, "{arch}");
        assert_eq!(from_zstd.1, "two\n");
    }
    // buildx's metadata and image id: the last output's (the push).
    assert_eq!(printed, gzip.index);
    assert_eq!(metadata["containerimage.digest"], gzip.index.as_str());

    // A cached rebuild and a fresh store: the same two digests.
    for (home, tag) in [("a", "cached"), ("b", "fresh")] {
        let (printed, _) = run(home, tag);
        assert_eq!(printed, gzip.index, "{home}: the push's index");
        let layout = dir.join(format!("zstd-layout-{home}"));
        copy_all(
            &format!(
                "oci-archive:{}",
                archive(&format!("{home}-{tag}")).display()
            ),
            &layout,
        );
        assert_eq!(read_set(&layout, ZSTD, "zstd").index, zstd.index, "{home}");
        let raw = registry.skopeo_raw(&format!("sets/app:1-{tag}"));
        assert_eq!(
            crate::regenv::digest_of(&raw),
            gzip.index,
            "{home}: the pushed index"
        );
    }
}

/// Three outputs, two of them zstd: two sets, the zstd outputs' archives hold the same
/// index; an output without `compression=` takes gzip (each output its own, as BuildKit's
/// exporters), and `--compression` only where an output has none of its own.
#[test]
fn outputs_of_one_compression_share_a_set() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir);
    let archive = |name: &str| dir.join(format!("{name}.tar"));
    let index_of = |name: &str| -> String {
        let layout = dir.join(format!("layout-{name}"));
        copy_all(&format!("oci-archive:{}", archive(name).display()), &layout);
        let top = json(&std::fs::read(layout.join("index.json")).unwrap());
        top["manifests"][0]["digest"].as_str().unwrap().to_owned()
    };
    ok(&build(
        dir,
        "a",
        None,
        &[
            "-o",
            &format!("type=oci,dest={},compression=zstd", archive("z1").display()),
            "-o",
            &format!("type=oci,dest={}", archive("g").display()),
            "-o",
            &format!("type=oci,dest={},compression=zstd", archive("z2").display()),
        ],
    ));
    let (z1, g, z2) = (index_of("z1"), index_of("g"), index_of("z2"));
    assert_eq!(z1, z2, "the zstd outputs share one set");
    assert_ne!(z1, g);
    let z1_set = read_set(&dir.join("layout-z1"), ZSTD, "zstd");
    let g_set = read_set(&dir.join("layout-g"), GZIP, "gzip");
    assert_eq!(z1_set.index, z1);
    assert_eq!(g_set.index, g);

    // `--compression=zstd` is the default of the output without a key: one set.
    ok(&build(
        dir,
        "a",
        None,
        &[
            "--compression",
            "zstd",
            "-o",
            &format!("type=oci,dest={}", archive("default-z").display()),
            "-o",
            &format!(
                "type=oci,dest={},compression=zstd",
                archive("keyed-z").display()
            ),
        ],
    ));
    assert_eq!(index_of("default-z"), z1);
    assert_eq!(index_of("keyed-z"), z1);
    // ... and refused when no output takes it (never accepted and ignored).
    let refused = build(
        dir,
        "a",
        None,
        &[
            "--compression",
            "uncompressed",
            "-o",
            &format!(
                "type=oci,dest={},compression=zstd",
                archive("refused").display()
            ),
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", util::stderr(&refused));
    assert!(
        util::stderr(&refused).contains("--compression=uncompressed: no output takes it"),
        "{}",
        util::stderr(&refused)
    );
    assert!(!archive("refused").exists());
}

/// `--attest type=provenance` with `attestation-layout=buildx` on a zstd and a gzip
/// archive: each index lists attestation manifests for its own manifests only (the
/// descriptors' `vnd.docker.reference.digest` and the statements' subjects), read with
/// skopeo and tar.
#[test]
fn each_set_has_attestations_of_its_own_manifests() {
    if !needs() {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir);
    let archive = |name: &str| dir.join(format!("{name}.tar"));
    ok(&build(
        dir,
        "a",
        None,
        &[
            "--attest",
            "type=provenance,mode=min",
            "-o",
            &format!(
                "type=oci,dest={},compression=zstd,attestation-layout=buildx",
                archive("zstd").display()
            ),
            "-o",
            &format!(
                "type=oci,dest={},compression=gzip,attestation-layout=buildx",
                archive("gzip").display()
            ),
        ],
    ));
    let mut all_subjects: Vec<BTreeSet<String>> = Vec::new();
    for (name, media_type, program) in [("zstd", ZSTD, "zstd"), ("gzip", GZIP, "gzip")] {
        let layout = dir.join(format!("layout-{name}"));
        copy_all(&format!("oci-archive:{}", archive(name).display()), &layout);
        let set = read_set(&layout, media_type, program);
        let own: BTreeSet<String> = set
            .manifests
            .values()
            .map(|(digest, _, _)| digest.clone())
            .collect();
        let index = json(&blob(&layout, &set.index));
        let mut referred = BTreeSet::new();
        let mut subjects = BTreeSet::new();
        for entry in index["manifests"].as_array().unwrap() {
            let annotations = &entry["annotations"];
            if annotations["vnd.docker.reference.type"] != "attestation-manifest" {
                continue;
            }
            referred.insert(
                annotations["vnd.docker.reference.digest"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
            let manifest = json(&blob(&layout, entry["digest"].as_str().unwrap()));
            for layer in manifest["layers"].as_array().unwrap() {
                let statement = json(&blob(&layout, layer["digest"].as_str().unwrap()));
                for subject in statement["subject"].as_array().unwrap() {
                    subjects.insert(format!(
                        "sha256:{}",
                        subject["digest"]["sha256"].as_str().unwrap()
                    ));
                }
            }
        }
        assert_eq!(
            referred, own,
            "{name}: attestation manifests of its own manifests"
        );
        assert_eq!(subjects, own, "{name}: statements about its own manifests");
        all_subjects.push(subjects);
    }
    assert!(all_subjects[0].is_disjoint(&all_subjects[1]));
}

/// Build nodes send back one set of manifests: outputs of different compressions with a
/// builder whose node builds a platform are refused before any work (exit 2, no output
/// written, the node never reached: its address is a closed port).
#[test]
fn several_sets_with_build_nodes_are_refused_before_work() {
    if !util::require(&[Need::Root]) {
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    context(dir);
    let config = dir.join("config");
    let builder = util::run(
        util::xbuild(&dir.join("a"))
            .env("XDG_CONFIG_HOME", &config)
            .args(["builder", "create", "--name", "arm"])
            .args(["--node", "linux/arm64=ssh://build@127.0.0.1:9"]),
    );
    ok(&builder);
    let archive = |name: &str| dir.join(format!("{name}.tar"));
    let refused = util::run(
        util::xbuild(&dir.join("a"))
            .env("XDG_CONFIG_HOME", &config)
            .args(["build", "--builder", "arm", "--progress", "plain"])
            .args(["--platform", "linux/amd64,linux/arm64"])
            .args([
                "-o",
                &format!("type=oci,dest={},compression=zstd", archive("z").display()),
            ])
            .args(["-o", &format!("type=oci,dest={}", archive("g").display())])
            .arg(dir.join("ctx")),
    );
    assert_eq!(refused.status.code(), Some(2), "{}", util::stderr(&refused));
    assert!(
        util::stderr(&refused).contains("not supported yet with build nodes"),
        "{}",
        util::stderr(&refused)
    );
    assert!(!archive("z").exists() && !archive("g").exists());
}
