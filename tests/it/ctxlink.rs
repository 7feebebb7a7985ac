//! A `COPY` of the context takes the files it did not change from the snapshot the same
//! step made in an earlier build, as hard links: the one-file-change rebuild gives the
//! image a fresh store gives, the earlier snapshot is not modified, and pruning the older
//! image leaves a store that `xbuild store check` finds clean and an image that unpacks to
//! the context.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::build::store_with_fixtures;
use crate::util::{self, Need};

/// `ls -R`, not `ls -l`: a linked file's link count is that of the inode it shares.
const DOCKERFILE: &str = "FROM busybox\nCOPY . /app\nRUN ls -R /app > /app.list\n";
const EPOCH: &str = "SOURCE_DATE_EPOCH=1700000000";

fn needs() -> bool {
    util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Program("skopeo"),
        Need::Program("umoci"),
    ])
}

/// A context of a few hundred files in directories, an executable, a hard link pair, a
/// symlink, an empty file and a file larger than one comparison chunk.
fn make_context(ctx: &Path) {
    std::fs::create_dir_all(ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    for dir in 0..6 {
        let sub = ctx.join(format!("d{dir}/inner"));
        std::fs::create_dir_all(&sub).unwrap();
        for file in 0..50 {
            std::fs::write(
                sub.join(format!("f{file}.txt")),
                format!("file {dir}/{file}\n").repeat(file + 1),
            )
            .unwrap();
        }
    }
    std::fs::write(ctx.join("big.bin"), vec![0x5a_u8; 600_000]).unwrap();
    std::fs::write(ctx.join("empty"), b"").unwrap();
    std::fs::write(ctx.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        ctx.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::hard_link(ctx.join("run.sh"), ctx.join("run-again.sh")).unwrap();
    std::os::unix::fs::symlink("d0/inner/f0.txt", ctx.join("link")).unwrap();
}

fn build(dir: &Path, ctx: &Path, tag: &str, iid: &Path) -> String {
    let mut command = util::xbuild(dir);
    command
        .current_dir(ctx)
        .args(["build", "--progress", "plain", "--platform", "linux/amd64"])
        .args(["--build-arg", EPOCH, "-t", tag, "--iidfile"])
        .arg(iid)
        .arg(".");
    let output = util::run(&mut command);
    let stderr = util::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    stderr
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let output = util::run(util::xbuild(dir).args(args));
    assert!(
        output.status.success(),
        "{args:?}: {}",
        util::stderr(&output)
    );
    util::stdout(&output)
}

/// The store's snapshots that hold `/app` (the `COPY`'s).
fn copy_snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("store/snapshots/sha256"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("app/big.bin").exists())
        .collect();
    found.sort();
    found
}

/// One entry of a tree: (inode, mode, uid, gid, mtime, content).
type Entry = (u64, u32, u32, u32, i64, Vec<u8>);

/// Every entry of a tree: path -> its [`Entry`].
fn listing(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut entries = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let content = if meta.is_file() {
            std::fs::read(&path).unwrap()
        } else if meta.is_symlink() {
            std::fs::read_link(&path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            for child in std::fs::read_dir(&path).unwrap() {
                stack.push(child.unwrap().path());
            }
            Vec::new()
        };
        let relative = path.strip_prefix(root).unwrap().to_path_buf();
        entries.insert(
            relative,
            (
                meta.ino(),
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                content,
            ),
        );
    }
    entries
}

#[test]
fn a_one_file_change_links_the_rest_and_gives_a_fresh_stores_image() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    make_context(&ctx);

    let first = build(dir, &ctx, "docker.io/library/ctxlink:1", &dir.join("iid1"));
    assert!(!first.contains("files linked"), "{first}");
    let [earlier] = copy_snapshots(dir).try_into().unwrap();
    let before = listing(&earlier);

    // One file changed (a line appended).
    let edited = ctx.join("d3/inner/f7.txt");
    let mut text = std::fs::read_to_string(&edited).unwrap();
    text.push_str("one more line\n");
    std::fs::write(&edited, &text).unwrap();
    let second = build(dir, &ctx, "docker.io/library/ctxlink:2", &dir.join("iid2"));
    // Every regular file but the edited one (and the second name of the hard link pair,
    // a tar hard link) taken from the earlier snapshot.
    let files = 6 * 50 + 4;
    assert!(
        second.contains(&format!(
            "{} of {files} files linked from the snapshot of an earlier build",
            files - 1
        )),
        "{second}"
    );
    // The earlier snapshot is as it was, inodes included.
    assert_eq!(listing(&earlier), before, "the earlier snapshot changed");
    let snapshots = copy_snapshots(dir);
    assert_eq!(snapshots.len(), 2);
    let later = snapshots.iter().find(|path| **path != earlier).unwrap();
    let after = listing(later);
    for (path, entry) in &after {
        let is_file = entry.1 & 0o170_000 == 0o100_000;
        if !is_file {
            continue;
        }
        let same_inode = before.get(path).is_some_and(|old| old.0 == entry.0);
        let changed = path == Path::new("app/d3/inner/f7.txt");
        assert_eq!(same_inode, !changed, "{}", path.display());
    }
    assert_eq!(
        after[Path::new("app/d3/inner/f7.txt")].5,
        text.as_bytes(),
        "the edited file's content"
    );

    // The same image as a build on an empty store.
    let fresh = util::temp_dir();
    store_with_fixtures(fresh.path());
    let clean = build(
        fresh.path(),
        &ctx,
        "docker.io/library/ctxlink:2",
        &dir.join("iid-fresh"),
    );
    assert!(!clean.contains("files linked"), "{clean}");
    let iid = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(iid("iid2"), iid("iid-fresh"));
    assert_ne!(iid("iid1"), iid("iid2"));

    // The older image and the build cache pruned: its snapshot goes, the store checks
    // clean, and the newer image still unpacks to the context.
    ok(dir, &["rmi", "docker.io/library/ctxlink:1"]);
    ok(dir, &["prune", "--all"]);
    assert!(!earlier.exists(), "the earlier snapshot was not pruned");
    ok(dir, &["store", "check"]);
    let rootfs = crate::build::unpack(dir, "docker.io/library/ctxlink:2", "amd64");
    for path in [
        "d3/inner/f7.txt",
        "d0/inner/f0.txt",
        "big.bin",
        "run.sh",
        "empty",
    ] {
        assert_eq!(
            std::fs::read(rootfs.join("app").join(path)).unwrap(),
            std::fs::read(ctx.join(path)).unwrap(),
            "{path}"
        );
    }
    let listed = std::fs::read_to_string(rootfs.join("app.list")).unwrap();
    assert!(listed.contains("f7.txt"), "{listed}");
    // Rebuilt after the prune (no cache records left): the same image.
    build(dir, &ctx, "docker.io/library/ctxlink:3", &dir.join("iid3"));
    assert_eq!(iid("iid3"), iid("iid2"));
    ok(dir, &["store", "check"]);

    // XBUILD_COPY_LINK=0 writes every file.
    std::fs::write(ctx.join("empty"), b"not any more\n").unwrap();
    let mut command = util::xbuild(dir);
    command
        .current_dir(&ctx)
        .env("XBUILD_COPY_LINK", "0")
        .args(["build", "--progress", "plain", "--platform", "linux/amd64"])
        .args([
            "--build-arg",
            EPOCH,
            "-t",
            "docker.io/library/ctxlink:4",
            ".",
        ]);
    let output = util::run(&mut command);
    let unlinked = util::stderr(&output);
    assert!(output.status.success(), "{unlinked}");
    assert!(!unlinked.contains("files linked"), "{unlinked}");
    let newest = copy_snapshots(dir)
        .into_iter()
        .find(|path| std::fs::read(path.join("app/empty")).unwrap() == b"not any more\n")
        .unwrap();
    let big = std::fs::metadata(newest.join("app/big.bin")).unwrap();
    assert_eq!(big.nlink(), 1, "a file of the last snapshot is linked");
}

/// Issue 19 item 4: what a `COPY` of a big context keeps per file. At 20,000 files the
/// first build and the no-change rebuild (and, since `rss4`, a one-file change) stay under
/// a bound that the per-file copies of c68514f (a second `lstat` and a whole
/// `std::fs::Metadata` per file, clones of every context entry, a second copy of the
/// layer's file list) exceed for the first two: 78 and 55 MiB there
/// (debug builds, the test's profile; the same image). The no-change rebuild's bound is
/// also under what 6bfa128 took (a selection made on a cache hit too, a hash-map stat
/// cache read whole: 34.7 MiB with its release binary, by hand), 20-25 MiB since; the first
/// build's, 35-40 MiB since, was not held against 6bfa128's debug build.
#[test]
fn a_20000_file_copy_stays_under_its_memory_bound() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY . /app\n").unwrap();
    for module in 0..100 {
        let sub = ctx.join(format!("module{module:03}/src"));
        std::fs::create_dir_all(&sub).unwrap();
        for file in 0..200 {
            std::fs::write(
                sub.join(format!("file{file:04}.txt")),
                format!("{module} {file}\n"),
            )
            .unwrap();
        }
    }
    let mut iids = Vec::new();
    for (round, bound_mib) in [
        ("first", BOUND_FIRST_MIB),
        ("no-change", BOUND_AGAIN_MIB),
        ("one-file change", BOUND_ONE_FILE_MIB),
    ] {
        if round == "one-file change" {
            let middle = ctx.join("module050/src/file0100.txt");
            let mut text = std::fs::read_to_string(&middle).unwrap();
            text.push_str("one more line\n");
            std::fs::write(&middle, text).unwrap();
        }
        let rss_file = dir.join(format!("rss-{round}"));
        let iid = dir.join(format!("iid-{round}"));
        let mut command = util::xbuild(dir);
        command
            .current_dir(&ctx)
            .env("XBUILD_PEAK_RSS_FILE", &rss_file)
            .args(["build", "--progress", "plain", "--platform", "linux/amd64"])
            .args(["--build-arg", EPOCH, "-t", "docker.io/library/ctxrss:1"])
            .arg("--iidfile")
            .arg(&iid)
            .arg(".");
        let output = util::run(&mut command);
        assert!(output.status.success(), "{}", util::stderr(&output));
        let peak = util::peak_rss_kib(&rss_file);
        eprintln!("20,000-file COPY, {round} build: peak RSS {peak} KiB");
        assert!(
            peak < bound_mib << 10,
            "{round} build: peak RSS {peak} KiB, bound {bound_mib} MiB"
        );
        iids.push(std::fs::read_to_string(&iid).unwrap());
    }
    assert_eq!(iids[0], iids[1], "the no-change rebuild's image");
    assert_ne!(iids[1], iids[2], "the one-file change's image");
}

/// Bounds of [`a_20000_file_copy_stays_under_its_memory_bound`], with a margin over what
/// was measured since (and, for the rebuild, under what 6bfa128 took). The first build's
/// since `rss4` (no set of listed paths, a directory source's items made one at a time, no
/// set of the unpacked paths): 28.7-31.7 MiB in three runs, 35-40 before; the one-file
/// change's (a line appended to one file, its own round since `rss4`): 28.4-31.9 MiB, not
/// measured before. Since `flist` (a context directory's files listed by walk index, the
/// blob's tree walk without a path per linked file): 27.3 and 25.7-26.1 MiB in three runs
/// (first, one-file change; the bounds were 38 and 40). The no-change rebuild's since `walk`
/// (64-byte walk records with their paths in one buffer, a stat cache of 36 bytes a file by
/// walk index): 17.4-18.0 MiB in three runs, 22.3-24.0 before, which its bound (32 before)
/// now refuses.
const BOUND_FIRST_MIB: u64 = 34;
const BOUND_AGAIN_MIB: u64 = 22;
const BOUND_ONE_FILE_MIB: u64 = 34;
