//! `xbuild prune` and `xbuild du` with buildx's flags: record types, `until=`, the sizes to
//! keep (least recently used goes first), cache mounts, and never while the store is used.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use crate::util::{self, Need, require, temp_dir, xbuild};

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}{}",
        util::stdout(output),
        util::stderr(output)
    );
    util::stdout(output)
}

/// A cache-mount directory in the store holding `bytes` bytes, last used `age` ago.
fn cache_mount(root: &Path, name: &str, bytes: usize, age: Duration) {
    let dir = root.join("store/cache-mounts").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data"), vec![7u8; bytes]).unwrap();
    set_age(&dir, age);
}

fn set_age(path: &Path, age: Duration) {
    let file = std::fs::File::open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

fn mounts(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("store/cache-mounts"))
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn prune_keeps_the_most_recently_used_within_the_sizes_given() {
    let temp = temp_dir();
    let root = temp.path();
    ok(&util::run(xbuild(root).arg("du")));
    cache_mount(root, "old", 300_000, 30 * HOUR);
    cache_mount(root, "middle", 300_000, 3 * HOUR);
    cache_mount(root, "new", 300_000, Duration::ZERO);

    let du = ok(&util::run(xbuild(root).arg("du")));
    let row = du.lines().find(|l| l.starts_with("Cache mounts")).unwrap();
    assert!(row.contains(" 3 "), "{du}");
    let verbose = ok(&util::run(xbuild(root).args(["du", "--verbose"])));
    assert_eq!(verbose.matches("Type:").count(), 3, "{verbose}");
    assert!(verbose.contains("exec.cachemount"), "{verbose}");
    assert!(verbose.contains("Last used:"), "{verbose}");

    // Bad filters and sizes change nothing and exit 2.
    let bad = util::run(xbuild(root).args(["prune", "--filter", "type=bogus"]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        util::stderr(&bad).contains(
            "known: internal, frontend, source.local, source.git.checkout, exec.cachemount, regular"
        ),
        "{}",
        util::stderr(&bad)
    );
    let bad = util::run(xbuild(root).args(["prune", "--filter", "until=2d"]));
    assert_eq!(bad.status.code(), Some(2), "{}", util::stderr(&bad));
    let bad = util::run(xbuild(root).args(["prune", "--max-used-space", "lots"]));
    assert_eq!(bad.status.code(), Some(2), "{}", util::stderr(&bad));
    assert_eq!(mounts(root), ["middle", "new", "old"]);

    // Only what is older than until= goes.
    let out = ok(&util::run(xbuild(root).args([
        "prune",
        "--filter",
        "until=24h",
    ])));
    assert!(out.contains("1 cache mounts"), "{out}");
    assert_eq!(mounts(root), ["middle", "new"]);

    // Records of another type are kept.
    let out = ok(&util::run(xbuild(root).args([
        "prune",
        "--filter",
        "type=regular",
    ])));
    assert!(out.contains("0 cache mounts"), "{out}");
    assert_eq!(mounts(root), ["middle", "new"]);

    // Room for one mount: the least recently used goes, and the reserved space (the old
    // name --keep-storage too) stops pruning early.
    let out = ok(&util::run(xbuild(root).args([
        "prune",
        "--keep-storage",
        "1gb",
        "--max-used-space",
        "400kb",
    ])));
    assert!(out.contains("0 cache mounts"), "{out}");
    let out = ok(&util::run(xbuild(root).args([
        "prune",
        "-f",
        "--verbose",
        "--max-used-space",
        "400kb",
    ])));
    assert!(out.contains("1 cache mounts"), "{out}");
    assert!(out.contains("ID:") && out.contains("middle"), "{out}");
    assert_eq!(mounts(root), ["new"]);

    // type!= keeps that type; a plain prune takes the rest.
    let out = ok(&util::run(xbuild(root).args([
        "prune",
        "--all",
        "--filter",
        "type!=exec.cachemount",
    ])));
    assert!(out.contains("0 cache mounts"), "{out}");
    ok(&util::run(xbuild(root).arg("prune")));
    assert!(mounts(root).is_empty());
}

#[test]
fn prune_waits_while_another_process_uses_the_store() {
    if !require(&[Need::Program("flock")]) {
        return;
    }
    let temp = temp_dir();
    let root = temp.path();
    ok(&util::run(xbuild(root).arg("du")));
    cache_mount(root, "busy", 1000, 30 * HOUR);
    // A build holds the store's "in use" lock shared for as long as it runs.
    let mut user = Command::new("flock")
        .arg("-s")
        .arg(root.join("store/locks/use.lock"))
        .args(["sleep", "3"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut prune = xbuild(root)
        .arg("prune")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        prune.try_wait().unwrap().is_none(),
        "prune ran while the store was used"
    );
    assert_eq!(mounts(root), ["busy"]);
    user.wait().unwrap();
    let output = prune.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(mounts(root).is_empty());
}

#[test]
fn a_build_marks_what_it_uses_and_prune_removes_its_cache_mount() {
    if !crate::build::needs() {
        return;
    }
    let temp = temp_dir();
    let dir = temp.path();
    crate::build::store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=cache,target=/c echo x >> /c/n && cp /c/n /n\n",
    )
    .unwrap();
    let build = || {
        let mut command = xbuild(dir);
        command.current_dir(&ctx).args([
            "build",
            "--platform",
            "linux/amd64",
            "--progress",
            "plain",
            "-t",
            "p:1",
            ".",
        ]);
        let output = util::run(&mut command);
        assert!(output.status.success(), "{}", util::stderr(&output));
    };
    build();
    assert_eq!(mounts(dir).len(), 1);
    let du = ok(&util::run(xbuild(dir).args(["du", "--verbose"])));
    assert!(du.contains("Type:") && du.contains("regular"), "{du}");
    assert!(
        du.contains("echo x >> /c/n"),
        "the step's instruction describes it: {du}"
    );

    // Everything looks a day old; a cached rebuild uses the records again.
    for entry in std::fs::read_dir(dir.join("store/cache")).unwrap() {
        set_age(&entry.unwrap().path(), 24 * HOUR);
    }
    build();
    let out = ok(&util::run(
        xbuild(dir).args(["prune", "--filter", "until=1h"]),
    ));
    assert!(out.starts_with("Removed 0 cache records"), "{out}");

    // Cache mounts go with their type; the records stay.
    let out = ok(&util::run(xbuild(dir).args([
        "prune",
        "--filter",
        "type=exec.cachemount",
    ])));
    assert!(
        out.contains("Removed 0 cache records, 1 cache mounts"),
        "{out}"
    );
    assert!(mounts(dir).is_empty());
    let out = ok(&util::run(xbuild(dir).arg("prune")));
    assert!(!out.starts_with("Removed 0 cache records"), "{out}");
    // The image is still whole: skopeo reads it from the store.
    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!(
            "oci:{}:docker.io/library/p:1",
            dir.join("store").display()
        ))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", util::stderr(&inspect));
}
