//! The wrong-architecture guard on real ELF files: the fixtures' busybox binaries.

use std::fs;
use std::path::PathBuf;

use xbuild::executor::archcheck::foreign_elf_files;
use xbuild::platform::Platform;

use crate::util::{Need, fixtures_dir, require, temp_dir};

fn busybox(platform_dir: &str) -> PathBuf {
    fixtures_dir()
        .expect("fixtures are ready")
        .join("rootfs/busybox")
        .join(platform_dir)
        .join("bin/busybox")
}

fn platform(name: &str) -> Platform {
    Platform::parse(name).expect("known platform")
}

#[test]
fn amd64_binary_in_an_arm64_tree_is_reported_and_compatible_ones_are_not() {
    if !require(&[Need::Fixtures]) {
        return;
    }
    let dir = temp_dir();
    let root = dir.path().join("upper");
    fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(busybox("linux-amd64"), root.join("usr/local/bin/hello")).unwrap();
    fs::copy(busybox("linux-arm64"), root.join("bin/busybox")).unwrap();
    // arm/v7 runs on most arm64 CPUs: not a mismatch.
    fs::copy(busybox("linux-arm-v7"), root.join("bin/busybox32")).unwrap();
    fs::write(root.join("bin/script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::write(root.join("README"), "not a program").unwrap();
    fs::write(root.join("empty"), "").unwrap();
    std::os::unix::fs::symlink("/usr/local/bin/hello", root.join("bin/link")).unwrap();
    // An overlay whiteout: a 0/0 character device (root only).
    if nix::unistd::geteuid().is_root() {
        nix::sys::stat::mknod(
            &root.join("bin/removed"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            0,
        )
        .unwrap();
    }

    let found = foreign_elf_files(&root, &platform("linux/arm64")).unwrap();
    let messages: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        vec!["usr/local/bin/hello is linux/amd64, not linux/arm64"]
    );
    assert_eq!(found[0].platform, platform("linux/amd64"));

    // The same tree judged for amd64: the arm binaries are foreign, the amd64 one is not.
    let found = foreign_elf_files(&root, &platform("linux/amd64")).unwrap();
    let messages: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        vec![
            "bin/busybox is linux/arm64, not linux/amd64",
            "bin/busybox32 is linux/arm/v7, not linux/amd64",
        ]
    );
}

#[test]
fn every_fixture_busybox_matches_its_own_platform() {
    if !require(&[Need::Fixtures]) {
        return;
    }
    let cases = [
        ("linux-amd64", "linux/amd64"),
        ("linux-arm64", "linux/arm64"),
        ("linux-arm-v7", "linux/arm/v7"),
        ("linux-ppc64le", "linux/ppc64le"),
        ("linux-s390x", "linux/s390x"),
        ("linux-386", "linux/386"),
    ];
    for (dir_name, name) in cases {
        let dir = temp_dir();
        fs::copy(busybox(dir_name), dir.path().join("busybox")).unwrap();
        let own = foreign_elf_files(dir.path(), &platform(name)).unwrap();
        assert!(own.is_empty(), "{name}: {own:?}");
        // s390x is big-endian and ppc64le little: judged for each other, both are foreign.
        let other = if name == "linux/s390x" {
            "linux/ppc64le"
        } else {
            "linux/s390x"
        };
        let foreign = foreign_elf_files(dir.path(), &platform(other)).unwrap();
        assert_eq!(foreign.len(), 1, "{name} judged as {other}");
        assert_eq!(foreign[0].platform, platform(name));
    }
}

#[test]
fn layer_tars_are_checked_without_unpacking() {
    if !require(&[Need::Fixtures]) {
        return;
    }
    use xbuild::executor::archcheck::foreign_elf_in_layer;
    use xbuild::layer::{EntryKind, TarEntry, TarWriter};

    let mut tar = TarWriter::new(Vec::new(), None);
    let mut add = |path: &str, bytes: &[u8]| {
        let entry = TarEntry::new(
            path,
            EntryKind::File {
                size: bytes.len() as u64,
            },
            0o755,
        );
        tar.append(&entry, Some(&mut &bytes[..])).unwrap();
    };
    add("app/hello", &fs::read(busybox("linux-amd64")).unwrap());
    add("app/own", &fs::read(busybox("linux-arm64")).unwrap());
    add("app/run.sh", b"#!/bin/sh\nexec /app/hello\n");
    tar.append(
        &TarEntry::new("app/.wh.old", EntryKind::File { size: 0 }, 0o644),
        Some(&mut &b""[..]),
    )
    .unwrap();
    let bytes = tar.finish().unwrap();
    let found = foreign_elf_in_layer(&bytes[..], &platform("linux/arm64")).unwrap();
    let messages: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(messages, vec!["app/hello is linux/amd64, not linux/arm64"]);
}
