//! The seed store every case starts from (hard-linked into a fresh store per case run): the
//! fixture images under Docker Hub's names, with `busybox:latest` made closer to Docker Hub's
//! busybox, which BuildKit's tests rely on: its users and groups (`daemon`, `wheel` holding
//! root, ...; the fixture's busybox, made from Debian's busybox-static, has only root and
//! nobody), and every applet in `/bin` (`#!/bin/awk` scripts; the fixture has some in
//! `/usr/bin`, `/sbin`, `/usr/sbin` only).
//!
//! Made with skopeo and umoci (unpack, edit `/etc/passwd` and `/etc/group`, repack) and an
//! index written here: never with xbuild, so a bug of xbuild cannot change every case's base.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

/// Docker Hub busybox's `/etc/passwd` (busybox:1.36/1.37, glibc and musl variants alike).
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
";

/// Docker Hub busybox's `/etc/group`.
const GROUP: &str = "root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nobody:x:65534:
";

/// The platforms the Docker Hub-like busybox is made for (those the cases run on).
const ARCHES: [&str; 2] = ["amd64", "arm64"];

fn run(command: &mut Command) {
    let output = command.output().expect("command starts");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Makes the seed store at `dir/store` from the fixtures.
pub(crate) fn make(fixtures: &Path, dir: &Path) {
    let store = dir.join("store");
    run(Command::new("cp")
        .arg("-al")
        .arg(fixtures.join("oci"))
        .arg(&store));
    // A new index.json (not written through the hard link into the fixtures).
    let index = std::fs::read_to_string(store.join("index.json")).expect("fixture index");
    let index = index
        .replace("\"busybox:latest\"", "\"docker.io/library/busybox:latest\"")
        .replace(
            "\"debian:bookworm\"",
            "\"docker.io/library/debian:bookworm\"",
        );
    std::fs::remove_file(store.join("index.json")).expect("unlink index.json");
    std::fs::write(store.join("index.json"), index).expect("write index.json");

    let work = dir.join("work");
    for arch in ARCHES {
        let bundle = dir.join(format!("bundle-{arch}"));
        run(Command::new("skopeo")
            .args(["copy", "-q", "--override-arch", arch])
            .arg(format!(
                "oci:{}:docker.io/library/busybox:latest",
                store.display()
            ))
            .arg(format!("oci:{}:{arch}", work.display())));
        run(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{arch}", work.display()))
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");
        let etc = rootfs.join("etc");
        std::fs::write(etc.join("passwd"), PASSWD).expect("passwd");
        std::fs::write(etc.join("group"), GROUP).expect("group");
        for dir in ["usr/bin", "sbin", "usr/sbin"] {
            for entry in std::fs::read_dir(rootfs.join(dir)).expect("applet directory") {
                let name = entry.expect("directory entry").file_name();
                let link = rootfs.join("bin").join(&name);
                if std::fs::symlink_metadata(&link).is_err() {
                    std::os::unix::fs::symlink("busybox", &link).expect("applet link");
                }
            }
        }
        run(Command::new("umoci")
            .args([
                "repack",
                "--history.created_by",
                "conformance harness: Docker Hub busybox's /etc/passwd, /etc/group, applets in /bin",
                "--image",
            ])
            .arg(format!("{}:{arch}", work.display()))
            .arg(&bundle));
        run(Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci:{}:{arch}", work.display()))
            .arg(format!("oci:{}:hub-busybox-{arch}", store.display())));
    }

    // One index over the repacked manifests, named busybox:latest in place of the fixture's.
    let path = store.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("index.json")).expect("JSON");
    let entries = index["manifests"].as_array().expect("manifests").clone();
    let name_of = |entry: &serde_json::Value| {
        entry["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let mut platform_manifests = Vec::new();
    for arch in ARCHES {
        let entry = entries
            .iter()
            .find(|entry| name_of(entry) == format!("hub-busybox-{arch}"))
            .expect("repacked manifest in the index");
        platform_manifests.push(serde_json::json!({
            "mediaType": entry["mediaType"],
            "digest": entry["digest"],
            "size": entry["size"],
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let image_index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": platform_manifests,
    }))
    .expect("JSON");
    let hex = sha256_hex(&image_index);
    std::fs::write(store.join("blobs/sha256").join(&hex), &image_index).expect("index blob");
    let mut kept: Vec<serde_json::Value> = entries
        .into_iter()
        .filter(|entry| {
            let name = name_of(entry);
            !name.starts_with("hub-busybox-") && name != "docker.io/library/busybox:latest"
        })
        .collect();
    kept.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{hex}"),
        "size": image_index.len(),
        "annotations": {"org.opencontainers.image.ref.name": "docker.io/library/busybox:latest"},
    }));
    index["manifests"] = serde_json::Value::Array(kept);
    std::fs::write(&path, serde_json::to_vec(&index).expect("JSON")).expect("index.json");
}
