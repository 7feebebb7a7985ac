//! Dockerfile behaviour BuildKit's own frontend tests do not pin, checked as BuildKit behaves
//! on the busybox fixtures for linux/amd64 and linux/arm64: `COPY` keeps the hard links
//! among what it copies (judged by umoci's unpacking), and `RUN --mount=type=cache` with
//! `from=` (a cache that starts as a copy of a stage's directory) and `source=` (a path in
//! the cache), and a bind mount's `source=` resolved inside the stage, judged by what the
//! steps read and by umoci.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::build::{build, needs, store_with_fixtures, unpack};
use crate::util;

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .ino()
}

#[test]
fn copy_keeps_the_hard_links_among_what_it_copies() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("sub")).unwrap();
    std::fs::write(ctx.join("a"), "linked\n").unwrap();
    std::fs::hard_link(ctx.join("a"), ctx.join("b")).unwrap();
    std::fs::hard_link(ctx.join("a"), ctx.join("sub/d")).unwrap();
    // A name of the inode that .dockerignore leaves out plays no part.
    std::fs::hard_link(ctx.join("a"), ctx.join("ignored")).unwrap();
    std::fs::write(ctx.join(".dockerignore"), "ignored\n").unwrap();
    std::fs::write(ctx.join("lone"), "lone\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS stage\n\
         COPY . /ctx/\n\
         FROM busybox\n\
         COPY . /ctx/\n\
         COPY --exclude=a . /ex/\n\
         COPY sub/ /onlysub/\n\
         COPY --from=stage /ctx/ /fromstage/\n",
    )
    .unwrap();
    let output = build(dir, &["-t", "links:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    for arch in ["amd64", "arm64"] {
        let rootfs = unpack(dir, "docker.io/library/links:1", arch);
        // One inode for the three names copied (a tar hard link entry in the layer).
        let a = inode(&rootfs.join("ctx/a"));
        assert_eq!(inode(&rootfs.join("ctx/b")), a, "{arch}: ctx/b");
        assert_eq!(inode(&rootfs.join("ctx/sub/d")), a, "{arch}: ctx/sub/d");
        assert_eq!(std::fs::metadata(rootfs.join("ctx/a")).unwrap().nlink(), 3);
        assert!(!rootfs.join("ctx/ignored").exists(), "{arch}: ignored");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("ctx/sub/d")).unwrap(),
            "linked\n"
        );
        // `a` excluded: `b` is the file, `sub/d` its link.
        assert!(!rootfs.join("ex/a").exists(), "{arch}: ex/a excluded");
        assert_eq!(
            inode(&rootfs.join("ex/sub/d")),
            inode(&rootfs.join("ex/b")),
            "{arch}: ex/sub/d"
        );
        assert_ne!(inode(&rootfs.join("ex/b")), a, "{arch}: another copy");
        // The other names outside the source: a file of its own.
        assert_eq!(
            std::fs::metadata(rootfs.join("onlysub/d")).unwrap().nlink(),
            1,
            "{arch}: onlysub/d"
        );
        assert_ne!(inode(&rootfs.join("ctx/lone")), a);
        // From a stage, too (and, in this debug build, the key the copy looked up before it
        // viewed the stage equals the one its selection makes: a debug assertion).
        let from_stage = inode(&rootfs.join("fromstage/a"));
        assert_eq!(
            inode(&rootfs.join("fromstage/b")),
            from_stage,
            "{arch}: fromstage/b"
        );
        assert_eq!(inode(&rootfs.join("fromstage/sub/d")), from_stage);
        assert_ne!(from_stage, a);
    }
    // Which names are linked is content: unlinking `b` (same bytes) is a new layer.
    std::fs::remove_file(ctx.join("b")).unwrap();
    std::fs::write(ctx.join("b"), "linked\n").unwrap();
    let output = build(dir, &["-t", "links:2"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    for arch in ["amd64", "arm64"] {
        let rootfs = unpack(dir, "docker.io/library/links:2", arch);
        let a = inode(&rootfs.join("ctx/a"));
        assert_ne!(
            inode(&rootfs.join("ctx/b")),
            a,
            "{arch}: b is its own file now"
        );
        assert_eq!(inode(&rootfs.join("ctx/sub/d")), a, "{arch}: sub/d still");
    }
}

/// A hard link whose first name in the context's walk (by whole path: `a-b` before
/// `a/x`) sorts after another in the layer's order (`a/`, `a/x`, `a-b`): the layer's
/// first name is the file. This build once failed ("hard link target does not exist").
/// A name the layer format reserves for deletions (`.wh.`) is refused before any layer is
/// written, naming the line (exit 2): unpacked it would be a whiteout, not the file.
#[test]
fn copy_links_whose_first_name_sorts_last_and_refuses_whiteout_names() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("a")).unwrap();
    std::fs::write(ctx.join("a-b"), "linked\n").unwrap();
    std::fs::hard_link(ctx.join("a-b"), ctx.join("a/x")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY . /ctx/\n").unwrap();
    let output = build(dir, &["-t", "order:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    for arch in ["amd64", "arm64"] {
        let rootfs = unpack(dir, "docker.io/library/order:1", arch);
        assert_eq!(
            inode(&rootfs.join("ctx/a/x")),
            inode(&rootfs.join("ctx/a-b")),
            "{arch}: one inode"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("ctx/a/x")).unwrap(),
            "linked\n"
        );
    }

    std::fs::write(ctx.join(".wh.gone"), "content\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY a-b /b\nCOPY . /ctx/\n",
    )
    .unwrap();
    let output = build(dir, &["-t", "order:2"]);
    let stderr = util::stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Dockerfile:3") && stderr.contains("/ctx/.wh.gone"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot be stored in a layer"), "{stderr}");
}

#[test]
fn cache_and_bind_mounts_from_a_stage_and_with_a_source() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    // Both platforms may run at once: each writes names of its own (`uname -m`) in the
    // caches they share, so every interleaving gives the same files.
    std::fs::write(
        ctx.join("Dockerfile"),
        r#"FROM busybox AS seed
RUN mkdir -p /data/sub && echo "seeded $(uname -m)" > /data/sub/f && chown 1000:1000 /data/sub
FROM busybox
RUN --mount=type=cache,id=c1,from=seed,source=/data,target=/cache cat /cache/sub/f > /from && stat -c %u /cache/sub > /owner && echo added > /cache/new-$(uname -m)
RUN --mount=type=cache,id=c1,from=seed,source=/data,target=/cache,ro cat /cache/new-$(uname -m) > /kept
RUN --mount=type=cache,id=plain,target=/c mkdir -p /c/sel && echo "inside $(uname -m)" > /c/sel/x-$(uname -m)
RUN --mount=type=cache,id=plain,source=sel,target=/s cat /s/x-$(uname -m) > /sourced
"#,
    )
    .unwrap();
    let output = build(dir, &["-t", "caches:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    for (arch, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let rootfs = unpack(dir, "docker.io/library/caches:1", arch);
        let read = |name: &str| std::fs::read_to_string(rootfs.join(name)).unwrap();
        // The cache started as the stage's /data (its own platform's), owner kept.
        assert_eq!(read("from"), format!("seeded {machine}\n"), "{arch}");
        assert_eq!(read("owner"), "1000\n", "{arch}");
        // What a step wrote stays in the cache for the next one.
        assert_eq!(read("kept"), "added\n", "{arch}");
        // source= without from= is a path inside the cache.
        assert_eq!(read("sourced"), format!("inside {machine}\n"), "{arch}");
        // Nothing of a cache mount reaches the image.
        assert!(!rootfs.join("cache").join("sub").exists(), "{arch}");
        assert!(!rootfs.join("data").exists(), "{arch}");
    }
    // A bind mount's source that is a link in the stage resolves inside the stage: its
    // /etc, not the host's (which has no marker-stage file).
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS stage\n\
         RUN echo stage-etc > /etc/marker-stage && ln -s /etc /x\n\
         FROM busybox\n\
         RUN --mount=type=bind,from=stage,source=x,target=/m cat /m/marker-stage > /bound\n",
    )
    .unwrap();
    let output = build(dir, &["-t", "bound:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    for arch in ["amd64", "arm64"] {
        let rootfs = unpack(dir, "docker.io/library/bound:1", arch);
        assert_eq!(
            std::fs::read_to_string(rootfs.join("bound")).unwrap(),
            "stage-etc\n",
            "{arch}"
        );
    }
    // A source= the cache does not have: the step cannot start (BuildKit's mount fails).
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         RUN --mount=type=cache,id=fresh,source=missing,target=/m true\n",
    )
    .unwrap();
    let output = build(dir, &[]);
    let err = util::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("cache mount source /missing"), "{err}");
}

/// `RUN --mount=type=cache,from=STAGE` as BuildKit keys and seeds it (`getRefCacheDir`:
/// the cache of an id over a stage is `id:stage`, made from the whole stage, and `source=`
/// only selects what the mount shows): two mounts of one id and stage with different
/// sources share one cache. Each platform's seed stage differs, so each platform has a
/// cache of its own and the platforms running at once cannot change what the other reads.
#[test]
fn cache_mounts_of_one_id_and_stage_share_one_cache_whatever_the_source() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        r#"FROM busybox AS seed
RUN mkdir -p /data/sub /other && echo "seeded $(uname -m)" > /data/sub/f && echo other > /other/o
FROM busybox
RUN --mount=type=cache,id=shared,from=seed,source=/data,target=/cache echo "written by data" > /cache/new
RUN --mount=type=cache,id=shared,from=seed,source=/other,target=/o cat /o/o > /other-seen
RUN --mount=type=cache,id=shared,from=seed,target=/all cat /all/data/new > /whole-seen && ls /all/other > /whole-other
RUN --mount=type=cache,id=shared,from=seed,source=/data/sub,target=/sub cat /sub/f > /sub-seen && ls /sub > /sub-list
"#,
    )
    .unwrap();
    let output = build(dir, &["-t", "sharedcache:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    for (arch, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let rootfs = unpack(dir, "docker.io/library/sharedcache:1", arch);
        let read = |name: &str| {
            std::fs::read_to_string(rootfs.join(name))
                .unwrap_or_else(|error| panic!("{arch}: {name}: {error}"))
        };
        // Another source of the same id and stage: the same cache, seeded from the stage.
        assert_eq!(read("other-seen"), "other\n", "{arch}");
        // The whole cache: what the first step wrote under /data, and the stage's /other.
        assert_eq!(read("whole-seen"), "written by data\n", "{arch}");
        assert_eq!(read("whole-other"), "o\n", "{arch}");
        // A source below the first one's: the stage's files, nothing more.
        assert_eq!(read("sub-seen"), format!("seeded {machine}\n"), "{arch}");
        assert_eq!(read("sub-list"), "f\n", "{arch}");
        // Nothing of a cache mount reaches the image.
        for name in ["cache", "o", "all", "sub"] {
            let path = rootfs.join(name);
            assert!(
                std::fs::read_dir(&path).map_or(true, |mut d| d.next().is_none()),
                "{arch}: {name} has content"
            );
        }
    }
}

/// A cache mount's `source=` that is a file is mounted as that file, as BuildKit mounts
/// it: with `from=` (a file of the stage's copy) and without (a file of the cache), and
/// what a step appends stays in the cache. The plain cache is shared by both platforms, so
/// each writes names of its own (`$TARGETARCH`): every interleaving gives the same files.
#[test]
fn a_cache_mount_source_that_is_a_file_is_mounted_as_that_file() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        r#"FROM busybox AS seed
RUN mkdir -p /data && echo "seeded $(uname -m)" > /data/f
FROM busybox
ARG TARGETARCH
RUN --mount=type=cache,id=files,from=seed,source=/data/f,target=/file cat /file > /file-seen && echo appended >> /file
RUN --mount=type=cache,id=files,from=seed,source=data/f,target=/again cat /again > /file-after
RUN --mount=type=cache,id=plain,target=/c echo "plain $(uname -m)" > /c/p-$TARGETARCH
RUN --mount=type=cache,id=plain,source=p-${TARGETARCH},target=/p cat /p > /plain-file
"#,
    )
    .unwrap();
    let output = build(dir, &["-t", "filecache:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    for (arch, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let rootfs = unpack(dir, "docker.io/library/filecache:1", arch);
        let read = |name: &str| {
            std::fs::read_to_string(rootfs.join(name))
                .unwrap_or_else(|error| panic!("{arch}: {name}: {error}"))
        };
        assert_eq!(read("file-seen"), format!("seeded {machine}\n"), "{arch}");
        assert_eq!(
            read("file-after"),
            format!("seeded {machine}\nappended\n"),
            "{arch}"
        );
        assert_eq!(read("plain-file"), format!("plain {machine}\n"), "{arch}");
        // Nothing of a cache mount reaches the image.
        for name in ["file", "again", "p"] {
            assert!(
                std::fs::metadata(rootfs.join(name)).map_or(true, |m| m.len() == 0),
                "{arch}: /{name} has content"
            );
        }
        assert!(
            std::fs::read_dir(rootfs.join("c")).map_or(true, |mut d| d.next().is_none()),
            "{arch}: /c has content"
        );
    }
}
