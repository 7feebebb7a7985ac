//! The store as other tools see it: `xbuild import` then skopeo and umoci read the layout;
//! archives saved and loaded (ours, skopeo's, `docker load`); the image commands;
//! reproducible digests; snapshots that stack as overlay lower directories.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Dockerd, Need, require, run, stderr, stdout, temp_dir, xbuild};

fn ok(output: &std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

fn sh(command: &mut Command, what: &str) -> String {
    ok(&command.output().expect("the program runs"), what)
}

/// A small root filesystem with every kind of thing a layer must keep.
fn make_rootfs(root: &Path, with_privileged: bool) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/motd"), "hello\n").unwrap();
    fs::hard_link(root.join("etc/motd"), root.join("etc/motd.hard")).unwrap();
    fs::write(root.join("etc/empty"), "").unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir_all(root.join("srv/shared")).unwrap();
    fs::set_permissions(root.join("srv/shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    fs::write(root.join("bin/suid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("bin/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    let deep = root.join(format!(
        "{}/{}/{}",
        "d".repeat(90),
        "e".repeat(90),
        "f".repeat(90)
    ));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("long-name-".repeat(12)), "deep").unwrap();
    std::os::unix::fs::symlink("../".repeat(40) + "etc/motd", root.join("etc/long-link")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    if with_privileged {
        std::os::unix::fs::chown(root.join("etc/motd"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("bin/sh"), Some(1), Some(2)).unwrap();
        nix::sys::stat::mknod(
            &root.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        fs::copy("/bin/busybox", root.join("bin/ping")).unwrap();
        sh(
            Command::new("setcap")
                .args(["cap_net_raw+ep"])
                .arg(root.join("bin/ping")),
            "setcap",
        );
    }
}

/// Everything a user can observe about a tree, by relative path (mtimes aside: they are
/// clamped by design).
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut found = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let file_type = meta.file_type();
            let mut text = format!(
                "mode={:o} uid={} gid={}",
                meta.mode(),
                meta.uid(),
                meta.gid()
            );
            if file_type.is_symlink() {
                text += &format!(" link={:?}", fs::read_link(&path).unwrap());
            } else if file_type.is_file() {
                text += &format!(
                    " sha={}",
                    xbuild::oci::sha256_digest(&fs::read(&path).unwrap())
                );
                if meta.nlink() > 1 {
                    let first = inodes.entry(meta.ino()).or_insert_with(|| relative.clone());
                    text += &format!(" hardlink-group={}", first.display());
                }
                if let Ok(Some(capability)) = xattr::get(&path, "security.capability") {
                    text += &format!(" capability={capability:?}");
                }
            } else if file_type.is_dir() {
                stack.push(path.clone());
            } else {
                text += &format!(" rdev={}", meta.rdev());
            }
            found.insert(relative, text);
        }
    }
    found
}

fn store_root(dir: &Path) -> PathBuf {
    dir.join("store")
}

#[test]
fn imported_rootfs_unpacked_by_umoci_equals_the_source() {
    if !require(&[
        Need::Root,
        Need::Program("umoci"),
        Need::Program("skopeo"),
        Need::Program("setcap"),
        Need::Program("tar"),
    ]) {
        return;
    }
    let dir = temp_dir();
    let source = dir.path().join("rootfs");
    make_rootfs(&source, true);
    let expected = describe(&source);

    // From a directory, then from a tar on stdin (made by GNU tar, xattrs included).
    ok(
        &run(xbuild(dir.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["import", "--change", "CMD [\"/bin/sh\"]"])
            .arg(&source)
            .arg("rootfs:dir")),
        "import DIR",
    );
    let tarball = dir.path().join("rootfs.tar");
    sh(
        Command::new("tar")
            .args([
                "--xattrs",
                "--xattrs-include=security.capability",
                "--numeric-owner",
                "-cpf",
            ])
            .arg(&tarball)
            .arg("-C")
            .arg(&source)
            .arg("."),
        "tar",
    );
    ok(
        &run(xbuild(dir.path())
            .args(["import", "-", "rootfs:tar"])
            .stdin(fs::File::open(&tarball).unwrap())),
        "import -",
    );
    let store = store_root(dir.path());
    for reference in ["rootfs:dir", "rootfs:tar"] {
        let inspected = sh(
            Command::new("skopeo").arg("inspect").arg(format!(
                "oci:{}:docker.io/library/{reference}",
                store.display()
            )),
            "skopeo inspect",
        );
        assert!(inspected.contains("\"Architecture\""), "{inspected}");
        let bundle = dir
            .path()
            .join(format!("bundle-{}", reference.replace(':', "-")));
        sh(
            Command::new("umoci")
                .args(["unpack", "--image"])
                .arg(format!("{}:docker.io/library/{reference}", store.display()))
                .arg(&bundle),
            "umoci unpack",
        );
        let mut actual = describe(&bundle.join("rootfs"));
        // GNU tar records the root directory "./" itself; the source's root is not a layer entry.
        actual.remove(Path::new(""));
        assert_eq!(
            actual, expected,
            "{reference}: umoci's rootfs differs from the source"
        );
    }
}

#[test]
fn same_tree_imported_twice_gives_the_same_digests() {
    let dir = temp_dir();
    // Same base name: the history records it.
    let first = dir.path().join("a").join("rootfs");
    let second = dir.path().join("b").join("rootfs");
    make_rootfs(&first, false);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    make_rootfs(&second, false);
    for compression in ["gzip", "zstd"] {
        let digests: Vec<String> = [&first, &second]
            .iter()
            .enumerate()
            .map(|(index, source)| {
                let store = dir.path().join(format!("run-{compression}-{index}"));
                ok(
                    &run(xbuild(&store)
                        .env("SOURCE_DATE_EPOCH", "1700000000")
                        .args(["import", "--compression", compression])
                        .arg(source)
                        .arg("app:1")),
                    "import",
                )
            })
            .collect();
        assert_eq!(digests[0], digests[1], "{compression}");
        assert!(digests[0].starts_with("sha256:"), "{}", digests[0]);
    }
}

/// A tree of a few MB (dozens of gzip blocks, several zstd jobs): text-like and random
/// files.
fn make_big_tree(root: &Path) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for index in 0..40 {
        let directory = root.join(format!("d{}", index % 5));
        fs::create_dir_all(&directory).unwrap();
        let mut bytes = Vec::new();
        if index % 3 == 0 {
            while bytes.len() < 100_000 {
                bytes.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            while bytes.len() < 200_000 {
                let word = ["layer ", "digest ", "fn main() {\n", "return x;\n", "}\n"];
                bytes.extend_from_slice(word[(next() % 5) as usize].as_bytes());
                if next() % 11 == 0 {
                    bytes.extend_from_slice(format!("{}\n", next() % 1000).as_bytes());
                }
            }
        }
        fs::write(directory.join(format!("f{index}")), bytes).unwrap();
    }
}

/// The blob file of the only layer of `reference` in the store at `store`, and its diff_id.
fn only_layer(store: &Path, manifest_digest: &str) -> (PathBuf, String) {
    let blob = |digest: &str| {
        store
            .join("blobs/sha256")
            .join(digest.trim().trim_start_matches("sha256:"))
    };
    let read_json = |digest: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(blob(digest)).unwrap()).unwrap()
    };
    let manifest = read_json(manifest_digest);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    let config = read_json(manifest["config"]["digest"].as_str().unwrap());
    (
        blob(layers[0]["digest"].as_str().unwrap()),
        config["rootfs"]["diff_ids"][0].as_str().unwrap().to_owned(),
    )
}

/// Layers are compressed on every core (gzip in blocks as pigz does, zstd multithreaded),
/// and the bytes do not depend on how many threads do it: the same tree imported with 1, 2
/// and 4 compressing threads gives the same image. gzip, zstd and Python read the blob back
/// to the tar of the diff_id, and the gzip blob is a single member.
#[test]
fn layers_are_the_same_bytes_for_any_number_of_compressing_threads() {
    if !require(&[
        Need::Program("gzip"),
        Need::Program("zstd"),
        Need::Program("python3"),
    ]) {
        return;
    }
    let dir = temp_dir();
    let tree = dir.path().join("tree");
    make_big_tree(&tree);
    for compression in ["gzip", "zstd"] {
        let digests: Vec<(String, PathBuf)> = [1, 2, 4]
            .iter()
            .map(|threads| {
                let store = dir.path().join(format!("store-{compression}-{threads}"));
                let digest = ok(
                    &run(xbuild(&store)
                        .env("SOURCE_DATE_EPOCH", "1700000000")
                        .env("XBUILD_COMPRESS_THREADS", threads.to_string())
                        .args(["import", "--compression", compression])
                        .arg(&tree)
                        .arg("app:1")),
                    "import",
                );
                (digest.trim().to_owned(), store_root(&store))
            })
            .collect();
        for (digest, _) in &digests {
            assert_eq!(
                digest, &digests[0].0,
                "{compression}: 1 thread against more"
            );
        }
        let (blob, diff_id) = only_layer(&digests[0].1, &digests[0].0);
        let (tester, decompress) = match compression {
            "gzip" => (
                "gzip",
                "import gzip, sys, zlib\n\
                 data = open(sys.argv[1], 'rb').read()\n\
                 member = zlib.decompressobj(31)\n\
                 tar = member.decompress(data)\n\
                 assert member.eof and not member.unused_data, 'one gzip member'\n\
                 assert gzip.decompress(data) == tar\n\
                 sys.stdout.buffer.write(tar)",
            ),
            _ => (
                "zstd",
                "import subprocess, sys\n\
                 sys.stdout.buffer.write(subprocess.run(['zstd', '-dc', sys.argv[1]],\n\
                 check=True, capture_output=True).stdout)",
            ),
        };
        sh(Command::new(tester).arg("-t").arg(&blob), "test the blob");
        let hashed = sh(
            Command::new("sh")
                .arg("-c")
                .arg("python3 -c \"$0\" \"$1\" | sha256sum")
                .arg(decompress)
                .arg(&blob),
            "decompress and hash",
        );
        assert_eq!(
            format!("sha256:{}", hashed.split_whitespace().next().unwrap()),
            diff_id,
            "{compression}: the decompressed blob is the tar of the diff_id"
        );
    }
}

#[test]
fn archives_round_trip_and_skopeo_archives_load() {
    if !require(&[Need::Program("skopeo")]) {
        return;
    }
    let dir = temp_dir();
    let source = dir.path().join("rootfs");
    make_rootfs(&source, false);
    let digest = ok(
        &run(xbuild(dir.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("import")
            .arg(&source)
            .arg("app:1")),
        "import",
    );
    let digest = digest.trim();
    let store = store_root(dir.path());
    let archives = dir.path().join("archives");
    fs::create_dir_all(&archives).unwrap();
    let oci = archives.join("ours-oci.tar");
    let docker = archives.join("ours-docker.tar");
    ok(
        &run(xbuild(dir.path()).args(["save", "app:1", "-o"]).arg(&oci)),
        "save oci",
    );
    ok(
        &run(xbuild(dir.path())
            .args(["save", "app:1", "--format", "docker", "-o"])
            .arg(&docker)),
        "save docker",
    );
    // Saving twice gives the same bytes.
    let again = archives.join("again.tar");
    ok(
        &run(xbuild(dir.path()).args(["save", "app:1", "-o"]).arg(&again)),
        "save again",
    );
    assert_eq!(fs::read(&oci).unwrap(), fs::read(&again).unwrap());

    let skopeo_oci = archives.join("skopeo-oci.tar");
    let skopeo_docker = archives.join("skopeo-docker.tar");
    sh(
        Command::new("skopeo")
            .arg("copy")
            .arg(format!("oci:{}:docker.io/library/app:1", store.display()))
            .arg(format!(
                "oci-archive:{}:app:from-skopeo",
                skopeo_oci.display()
            )),
        "skopeo copy to oci-archive",
    );
    sh(
        Command::new("skopeo")
            .arg("copy")
            .arg(format!("oci:{}:docker.io/library/app:1", store.display()))
            .arg(format!(
                "docker-archive:{}:app:from-skopeo",
                skopeo_docker.display()
            )),
        "skopeo copy to docker-archive",
    );
    // Skopeo reads our archives too.
    sh(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", oci.display())),
        "skopeo inspect our oci archive",
    );
    sh(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{}", docker.display())),
        "skopeo inspect our docker archive",
    );

    let config_digest = |root: &Path, reference: &str| -> String {
        let inspected = ok(&run(xbuild(root).args(["inspect", reference])), "inspect");
        let value: serde_json::Value = serde_json::from_str(&inspected).unwrap();
        value["Manifest"]["config"]["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let expected_config = config_digest(dir.path(), "app:1");
    for (archive, name, same_manifest) in [
        (&oci, "app:1", true),
        (&docker, "app:1", true),
        (&skopeo_oci, "app:from-skopeo", false),
        (&skopeo_docker, "app:from-skopeo", false),
    ] {
        let fresh = temp_dir();
        let loaded = ok(
            &run(xbuild(fresh.path()).args(["load", "-i"]).arg(archive)),
            "load",
        );
        assert!(
            loaded.contains(&format!("Loaded image: {name}")),
            "{loaded}"
        );
        assert_eq!(
            config_digest(fresh.path(), name),
            expected_config,
            "{archive:?}"
        );
        if same_manifest {
            let images = ok(
                &run(xbuild(fresh.path()).args(["images", "--no-trunc"])),
                "images",
            );
            assert!(images.contains(digest), "{archive:?} loaded as\n{images}");
        }
        ok(&run(xbuild(fresh.path()).arg("fsck")), "fsck");
        // What we loaded reads back with skopeo, and unpacks.
        sh(
            Command::new("skopeo")
                .arg("copy")
                .arg(format!(
                    "oci:{}:docker.io/library/{name}",
                    store_root(fresh.path()).display()
                ))
                .arg(format!("dir:{}", fresh.path().join("copy").display())),
            "skopeo copy out of the store",
        );
    }
}

#[test]
fn multi_platform_indexes_are_stored_saved_and_loaded_as_indexes() {
    if !require(&[Need::Program("skopeo")]) {
        return;
    }
    let dir = temp_dir();
    let source = dir.path().join("rootfs");
    make_rootfs(&source, false);
    for platform in ["linux/amd64", "linux/arm64", "linux/arm/v7"] {
        ok(
            &run(xbuild(dir.path())
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args(["import", "--platform", platform])
                .arg(&source)
                .arg(format!("part:{}", platform.replace('/', "-")))),
            "import",
        );
    }
    let store_dir = store_root(dir.path());
    {
        let store = xbuild::store::Store::open(&store_dir).unwrap();
        let manifests = ["linux-amd64", "linux-arm64", "linux-arm-v7"]
            .iter()
            .map(|tag| {
                let image = store.image(&format!("part:{tag}"), None).unwrap();
                let mut descriptor = image.descriptor.clone();
                descriptor.set_annotations(None);
                descriptor.set_platform(Some(image.platform().to_oci()));
                descriptor
            })
            .collect();
        let index = store.put_index(manifests).unwrap();
        store.set_ref("multi:1", &index).unwrap();
    }
    let raw = sh(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!(
                "oci:{}:docker.io/library/multi:1",
                store_dir.display()
            )),
        "skopeo inspect --raw",
    );
    assert!(
        raw.contains("application/vnd.oci.image.index.v1+json"),
        "{raw}"
    );
    let images = ok(&run(xbuild(dir.path()).arg("images")), "images");
    assert!(
        images.contains("linux/amd64,linux/arm64,linux/arm/v7"),
        "{images}"
    );
    let inspected = ok(
        &run(xbuild(dir.path()).args(["inspect", "multi:1", "--platform", "linux/aarch64"])),
        "inspect --platform",
    );
    let value: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(value["Platform"], "linux/arm64");
    assert_eq!(value["Config"]["architecture"], "arm64");
    let missing = run(xbuild(dir.path()).args(["inspect", "multi:1", "--platform", "linux/s390x"]));
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("linux/s390x"),
        "{}",
        stderr(&missing)
    );

    // OCI archive: the index comes back with the same digest.
    let archive = dir.path().join("multi.tar");
    ok(
        &run(xbuild(dir.path())
            .args(["save", "multi:1", "-o"])
            .arg(&archive)),
        "save",
    );
    let fresh = temp_dir();
    ok(
        &run(xbuild(fresh.path()).args(["load", "-i"]).arg(&archive)),
        "load",
    );
    let top = |root: &Path| {
        let inspected = ok(
            &run(xbuild(root).args(["inspect", "multi:1", "--platform", "linux/arm/v7"])),
            "inspect",
        );
        let value: serde_json::Value = serde_json::from_str(&inspected).unwrap();
        (value["Digest"].clone(), value["Platforms"].clone())
    };
    assert_eq!(top(dir.path()), top(fresh.path()));

    // docker-archive: one platform.
    let docker = dir.path().join("arm64.tar");
    ok(
        &run(xbuild(dir.path())
            .args([
                "save",
                "multi:1",
                "--format",
                "docker",
                "--platform",
                "linux/arm64",
                "-o",
            ])
            .arg(&docker)),
        "save docker --platform",
    );
    let fresh = temp_dir();
    ok(
        &run(xbuild(fresh.path()).args(["load", "-i"]).arg(&docker)),
        "load docker",
    );
    let inspected = ok(
        &run(xbuild(fresh.path()).args(["inspect", "multi:1"])),
        "inspect",
    );
    assert!(
        inspected.contains("\"architecture\": \"arm64\""),
        "{inspected}"
    );
}

#[test]
fn image_commands_list_tag_show_history_remove_and_prune() {
    let dir = temp_dir();
    let source = dir.path().join("rootfs");
    make_rootfs(&source, false);
    ok(
        &run(xbuild(dir.path())
            .args(["import", "-c", "ENV A=1", "-m", "first import"])
            .arg(&source)
            .arg("example.com/team/app:1")),
        "import",
    );
    ok(
        &run(xbuild(dir.path()).args(["tag", "example.com/team/app:1", "copy"])),
        "tag",
    );
    let images = ok(&run(xbuild(dir.path()).arg("images")), "images");
    assert!(images.contains("example.com/team/app"), "{images}");
    assert!(images.contains("copy "), "{images}");
    assert!(images.contains("latest"), "{images}");
    let history = ok(
        &run(xbuild(dir.path()).args(["history", "copy"])),
        "history",
    );
    assert!(history.contains("xbuild import rootfs"), "{history}");
    assert!(history.contains("first import"), "{history}");

    let unknown = run(xbuild(dir.path()).args(["rmi", "nothing:here"]));
    assert_eq!(unknown.status.code(), Some(2));
    ok(&run(xbuild(dir.path()).args(["rmi", "copy"])), "rmi copy");
    // Still named once: prune keeps everything.
    let pruned = ok(&run(xbuild(dir.path()).arg("prune")), "prune");
    assert!(pruned.contains("0 blobs"), "{pruned}");
    ok(
        &run(xbuild(dir.path()).args(["rmi", "example.com/team/app:1"])),
        "rmi",
    );
    let du = ok(&run(xbuild(dir.path()).arg("du")), "du");
    let unreferenced = du
        .lines()
        .find(|line| line.starts_with("Unreferenced blobs"))
        .and_then(|line| line.split_whitespace().nth(2));
    assert_eq!(unreferenced, Some("3"), "{du}");
    let pruned = ok(&run(xbuild(dir.path()).arg("prune")), "prune");
    assert!(pruned.contains("3 blobs"), "{pruned}");
    let blobs = fs::read_dir(store_root(dir.path()).join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
}

#[test]
fn snapshots_stack_as_overlay_lower_directories() {
    if !require(&[Need::Root]) {
        return;
    }
    use xbuild::layer::{self, EntryKind, FileListEntry, TarEntry};
    let dir = temp_dir();
    let source = dir.path().join("rootfs");
    make_rootfs(&source, true);
    let store = xbuild::store::Store::open(store_root(dir.path())).unwrap();
    let base = layer::write_tree_layer(
        store.layout(),
        &source,
        layer::TreeKind::RootFs,
        layer::Compression::Gzip,
        None,
    )
    .unwrap();
    // Second layer: removes etc/motd, makes srv opaque with one new file, adds a file.
    let upper = dir.path().join("upper");
    fs::create_dir_all(upper.join("etc")).unwrap();
    nix::sys::stat::mknod(
        &upper.join("etc/motd"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir_all(upper.join("srv")).unwrap();
    xattr::set(upper.join("srv"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(upper.join("srv/new"), "new").unwrap();
    let second = layer::write_tree_layer(
        store.layout(),
        &upper,
        layer::TreeKind::OverlayUpper,
        layer::Compression::Zstd,
        None,
    )
    .unwrap();
    let third = layer::write_file_list_layer(
        store.layout(),
        vec![FileListEntry {
            entry: TarEntry::new("copied", EntryKind::File { size: 6 }, 0o600),
            source: Some({
                let path = dir.path().join("copied");
                fs::write(&path, "copied").unwrap();
                path
            }),
        }],
        layer::Compression::Gzip,
        None,
    )
    .unwrap();
    let platform = xbuild::platform::host();
    let mut config = xbuild::oci::image::new_image_config(&platform, None);
    for blob in [&base, &second, &third] {
        config
            .rootfs_mut()
            .diff_ids_mut()
            .push(blob.diff_id.to_string());
    }
    let descriptor = store
        .put_image(
            &config,
            vec![
                base.descriptor.clone(),
                second.descriptor.clone(),
                third.descriptor.clone(),
            ],
        )
        .unwrap();
    store.set_ref("stacked:1", &descriptor).unwrap();
    let image = store.image("stacked:1", None).unwrap();
    let snapshots = store.ensure_snapshots(&image).unwrap();
    assert_eq!(snapshots.len(), 3);
    for snapshot in &snapshots {
        assert_eq!(fs::metadata(snapshot).unwrap().mode() & 0o7777, 0o755);
    }
    assert_eq!(
        store.snapshot(&second.diff_id).as_ref(),
        Some(&snapshots[1])
    );
    // The second snapshot is in overlay form.
    let whiteout = fs::symlink_metadata(snapshots[1].join("etc/motd")).unwrap();
    assert_eq!(whiteout.rdev(), 0);
    assert_eq!(
        xattr::get(snapshots[1].join("srv"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );

    // Mounted read-only with the top layer first, the stack shows the image.
    let mountpoint = dir.path().join("merged");
    fs::create_dir_all(&mountpoint).unwrap();
    let lower = snapshots
        .iter()
        .rev()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={lower}"))
        .arg(&mountpoint)
        .output()
        .unwrap();
    if !mounted.status.success() {
        panic!(
            "mounting overlay failed: {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
    }
    let seen = (
        mountpoint.join("etc/motd").exists(),
        mountpoint.join("etc/empty").exists(),
        mountpoint.join("srv/shared").exists(),
        fs::read_to_string(mountpoint.join("srv/new")).ok(),
        fs::read_to_string(mountpoint.join("copied")).ok(),
        xattr::get(mountpoint.join("bin/ping"), "security.capability")
            .ok()
            .flatten()
            .is_some(),
    );
    let _ = Command::new("umount").arg(&mountpoint).status();
    assert_eq!(
        seen,
        (
            false,
            true,
            false,
            Some("new".to_owned()),
            Some("copied".to_owned()),
            true
        )
    );
    // Snapshots are kept while the image is named, and go with it.
    drop(store);
    ok(&run(xbuild(dir.path()).args(["prune"])), "prune");
    assert!(snapshots.iter().all(|path| path.is_dir()));
    ok(&run(xbuild(dir.path()).args(["rmi", "stacked:1"])), "rmi");
    let pruned = ok(&run(xbuild(dir.path()).args(["prune"])), "prune");
    assert!(pruned.contains("3 snapshots"), "{pruned}");
}

#[test]
fn docker_loads_a_saved_docker_archive() {
    if !require(&[
        Need::Root,
        Need::Program("dockerd"),
        Need::Program("docker"),
    ]) {
        return;
    }
    let dir = temp_dir();
    let source = dir.path().join("rootfs");
    make_rootfs(&source, false);
    ok(
        &run(xbuild(dir.path())
            .args(["import", "-c", "CMD [\"/bin/sh\"]"])
            .arg(&source)
            .arg("xbuild-test/app:1")),
        "import",
    );
    let archive = dir.path().join("docker.tar");
    ok(
        &run(xbuild(dir.path())
            .args(["save", "xbuild-test/app:1", "--format", "docker", "-o"])
            .arg(&archive)),
        "save",
    );
    let inspected = ok(
        &run(xbuild(dir.path()).args(["inspect", "xbuild-test/app:1"])),
        "inspect",
    );
    let value: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    let config = value["Manifest"]["config"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();

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
    let loaded = sh(
        daemon.docker().arg("load").arg("-i").arg(&archive),
        "docker load",
    );
    assert!(loaded.contains("xbuild-test/app:1"), "{loaded}");
    let id = sh(
        daemon.docker().args([
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "xbuild-test/app:1",
        ]),
        "docker image inspect",
    );
    assert_eq!(id.trim(), config);
}

#[test]
fn fixture_archives_written_by_skopeo_load() {
    if !require(&[Need::Fixtures, Need::Program("skopeo")]) {
        return;
    }
    let fixtures = crate::util::fixtures_dir().unwrap().join("oci");
    let dir = temp_dir();
    for (image, platforms) in [("busybox:latest", 6), ("debian:bookworm", 2)] {
        let source = format!("oci:{}:{image}", fixtures.display());
        let oci = dir
            .path()
            .join(format!("{}-oci.tar", image.replace(':', "-")));
        sh(
            Command::new("skopeo")
                .args(["copy", "--all", "--preserve-digests", &source])
                .arg(format!("oci-archive:{}:{image}", oci.display())),
            "skopeo copy to oci-archive",
        );
        let docker = dir
            .path()
            .join(format!("{}-docker.tar", image.replace(':', "-")));
        sh(
            Command::new("skopeo")
                .args(["copy", "--override-arch", "arm64", &source])
                .arg(format!("docker-archive:{}:{image}-arm64", docker.display())),
            "skopeo copy to docker-archive",
        );
        let loaded = ok(
            &run(xbuild(dir.path()).args(["load", "-i"]).arg(&oci)),
            "load oci",
        );
        assert!(loaded.contains(image), "{loaded}");
        let loaded = ok(
            &run(xbuild(dir.path()).args(["load", "-i"]).arg(&docker)),
            "load docker",
        );
        assert!(loaded.contains(&format!("{image}-arm64")), "{loaded}");

        let fixture_layout = xbuild::oci::ImageLayout::open(&fixtures).unwrap();
        let fixture_top = fixture_layout.resolve_ref(image).unwrap().unwrap();
        let inspected = ok(
            &run(xbuild(dir.path()).args(["inspect", image, "--platform", "linux/arm64"])),
            "inspect",
        );
        let value: serde_json::Value = serde_json::from_str(&inspected).unwrap();
        assert_eq!(value["Digest"], fixture_top.digest().to_string());
        assert_eq!(value["Platforms"].as_array().unwrap().len(), platforms);
        let arm64_config = value["Manifest"]["config"]["digest"].clone();
        let inspected = ok(
            &run(xbuild(dir.path()).args(["inspect", &format!("{image}-arm64")])),
            "inspect docker-archive image",
        );
        let value: serde_json::Value = serde_json::from_str(&inspected).unwrap();
        assert_eq!(value["Manifest"]["config"]["digest"], arm64_config);
    }
    ok(&run(xbuild(dir.path()).arg("fsck")), "fsck");
    let history = ok(
        &run(xbuild(dir.path()).args(["history", "debian:bookworm", "--platform", "linux/amd64"])),
        "history",
    );
    assert!(history.lines().count() >= 2, "{history}");
}

#[test]
fn fixture_images_unpack_into_snapshots_and_flattened_trees() {
    if !require(&[Need::Root, Need::Fixtures]) {
        return;
    }
    let fixtures = crate::util::fixtures_dir().unwrap();
    let dir = temp_dir();
    let store = xbuild::store::Store::open(store_root(dir.path())).unwrap();
    {
        let fixture_store = xbuild::oci::ImageLayout::open(fixtures.join("oci")).unwrap();
        for (image, platform, rootfs) in [
            ("debian:bookworm", "linux/arm64", "debian/linux-arm64"),
            ("busybox:latest", "linux/arm/v7", "busybox/linux-arm-v7"),
        ] {
            let top = fixture_store.resolve_ref(image).unwrap().unwrap();
            let wanted = xbuild::platform::Platform::parse(platform).unwrap();
            let resolved =
                xbuild::oci::image::resolve_image(&fixture_store, &top, Some(&wanted)).unwrap();
            // Blobs into our store.
            let mut needed = std::collections::HashSet::new();
            xbuild::oci::image::reachable_blobs(&fixture_store, &resolved.descriptor, &mut needed)
                .unwrap();
            for digest in needed {
                let mut writer = store.layout().blob_writer().unwrap();
                std::io::copy(&mut fixture_store.open_blob(&digest).unwrap(), &mut writer).unwrap();
                writer.commit(None).unwrap();
            }
            let snapshots = store.ensure_snapshots(&resolved).unwrap();
            assert!(!snapshots.is_empty());
            let flat = dir.path().join(format!("flat-{}", image.replace(':', "-")));
            store.unpack_image(&resolved, &flat).unwrap();
            let expected = describe(&fixtures.join("rootfs").join(rootfs));
            let actual = describe(&flat);
            let differing: Vec<_> = expected
                .iter()
                .filter(|(path, text)| actual.get(*path) != Some(text))
                .take(5)
                .collect();
            assert!(differing.is_empty(), "{image}: {differing:?}");
            assert_eq!(expected.len(), actual.len(), "{image}");
        }
    }
}
