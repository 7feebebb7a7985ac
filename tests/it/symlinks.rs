//! Links resolve inside the image, as BuildKit resolves them, on the merged-/usr Debian
//! fixture (`/bin -> usr/bin`, `/lib -> usr/lib`, `/usr/bin/sh -> dash`), for linux/amd64 and
//! linux/arm64: the image is judged by umoci's unpacking of it and by `RUN`s of later steps.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::os::unix::fs::symlink;
use std::path::Path;

use crate::build::{build, needs, store_with_fixtures, unpack};
use crate::util;

fn is_link_to(path: &Path, target: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_symlink())
        && std::fs::read_link(path).unwrap() == Path::new(target)
}

#[test]
fn copy_add_and_workdir_follow_the_images_links() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("conf")).unwrap();
    std::fs::write(
        ctx.join("entrypoint.sh"),
        "#!/bin/sh\necho entry-ran \"$@\"\n",
    )
    .unwrap();
    std::fs::write(ctx.join("lib.txt"), "custom\n").unwrap();
    std::fs::write(ctx.join("conf/app.conf"), "x=1\n").unwrap();
    std::fs::create_dir_all(dir.join("tarsrc/t")).unwrap();
    std::fs::write(dir.join("tarsrc/t/f.txt"), "intar\n").unwrap();
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir.join("tarsrc"))
        .arg("-cf")
        .arg(ctx.join("real.tar"))
        .arg("t")
        .status()
        .unwrap();
    assert!(status.success());
    // A link in the context to an archive: ADD follows it and unpacks the archive.
    symlink("real.tar", ctx.join("link.tar")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:bookworm AS base\n\
         RUN mkdir -p /opt/real && ln -s /opt/real /opt/linkdir && ln -s /usr/local /loc\n\
         FROM base\n\
         COPY --chmod=755 entrypoint.sh /bin/entrypoint.sh\n\
         COPY lib.txt /lib/custom/lib.txt\n\
         RUN /bin/entrypoint.sh first && cat /usr/lib/custom/lib.txt\n\
         COPY --from=base /bin/bash /out/bash\n\
         COPY --from=base /bin/sh /out/\n\
         COPY --from=base /lib/ /out/libdir/\n\
         ADD link.tar /unpacked/\n\
         COPY conf/app.conf /opt/linkdir\n\
         WORKDIR /loc/app\n\
         WORKDIR /loc\n\
         RUN pwd > /pwd.txt\n\
         COPY --chmod=755 entrypoint.sh /bin/last.sh\n",
    )
    .unwrap();
    let output = build(dir, &["-t", "links:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert!(
        util::stdout(&output).contains("entry-ran first")
            || util::stderr(&output).contains("entry-ran first")
    );
    for arch in ["amd64", "arm64"] {
        let rootfs = unpack(dir, "docker.io/library/links:1", arch);
        // The merged-/usr links are still links; what was copied "into" them is in /usr.
        assert!(is_link_to(&rootfs.join("bin"), "usr/bin"), "{arch}: /bin");
        assert!(is_link_to(&rootfs.join("lib"), "usr/lib"), "{arch}: /lib");
        assert!(rootfs.join("usr/bin/entrypoint.sh").is_file(), "{arch}");
        assert!(rootfs.join("usr/bin/last.sh").is_file(), "{arch}");
        assert!(rootfs.join("usr/bin/bash").is_file(), "{arch}: bash kept");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("usr/lib/custom/lib.txt")).unwrap(),
            "custom\n"
        );
        // A source path's links are followed: /bin/bash through /bin, /bin/sh to dash.
        let bash = std::fs::symlink_metadata(rootfs.join("out/bash")).unwrap();
        assert!(bash.is_file(), "{arch}: /out/bash is a file");
        let sh = std::fs::symlink_metadata(rootfs.join("out/sh")).unwrap();
        assert!(
            sh.is_file(),
            "{arch}: /out/sh is dash's content, not a link"
        );
        assert_eq!(
            std::fs::read(rootfs.join("out/sh")).unwrap(),
            std::fs::read(rootfs.join("usr/bin/dash")).unwrap()
        );
        // Inside a copied directory, links stay links.
        assert!(
            is_link_to(&rootfs.join("out/libdir/apt/methods/ssh"), "rsh"),
            "{arch}: links inside a copied directory are kept"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("unpacked/t/f.txt")).unwrap(),
            "intar\n",
            "{arch}: ADD of a link to an archive unpacks it"
        );
        // A destination that is a link to a directory is that directory.
        assert!(is_link_to(&rootfs.join("opt/linkdir"), "/opt/real"));
        assert_eq!(
            std::fs::read_to_string(rootfs.join("opt/real/app.conf")).unwrap(),
            "x=1\n"
        );
        // WORKDIR through a link makes the directory it names and keeps the link.
        assert!(is_link_to(&rootfs.join("loc"), "/usr/local"));
        assert!(rootfs.join("usr/local/app").is_dir());
        // The step starts in the directory (the shell's `pwd` prints the physical path, as
        // under runc, which sets no PWD).
        assert_eq!(
            std::fs::read_to_string(rootfs.join("pwd.txt")).unwrap(),
            "/usr/local\n"
        );
    }
}

#[test]
fn a_directory_cannot_replace_a_link_and_chown_never_reads_the_host() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("rootfs/bin")).unwrap();
    std::fs::write(ctx.join("rootfs/bin/tool"), "t\n").unwrap();
    std::fs::write(ctx.join("f"), "f\n").unwrap();
    // BuildKit: "cannot copy to non-directory"; the /bin link must not become a directory.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:bookworm\nCOPY rootfs/ /\n",
    )
    .unwrap();
    let output = build(dir, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", util::stderr(&output));
    let stderr = util::stderr(&output);
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(
        stderr.contains("cannot copy to non-directory: /bin"),
        "{stderr}"
    );

    // A base image whose /etc/passwd is a link to a path that exists only on the host: the
    // name is resolved inside the image (where the file is missing), never on the host.
    let host_file = dir.join("host-passwd");
    std::fs::write(&host_file, "evil:x:4242:4242::/:/bin/sh\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\n\
             RUN ln -sf {} /etc/passwd\n\
             COPY --chown=evil f /f\n",
            host_file.display()
        ),
    )
    .unwrap();
    let output = build(dir, &[]);
    let stderr = util::stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no user \"evil\""), "{stderr}");
}

/// `COPY --chmod` of a directory holding links: the chmod is for files and directories (a
/// link has no mode of its own), so the layer's tar, which the image's blob is made from
/// later (from the step's snapshot), is the one the step hashed. It once listed the links
/// with the chmod's mode, which the snapshot cannot give back: without COPY's check of the
/// snapshot's tar (which then writes the blob from the list at once) the export failed with
/// a diff_id mismatch.
#[test]
fn copy_chmod_of_a_directory_holding_links_keeps_the_layer_lazy_and_exports() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("tree/sub")).unwrap();
    std::fs::write(ctx.join("tree/file"), "content\n").unwrap();
    symlink("file", ctx.join("tree/link")).unwrap();
    symlink("../nowhere", ctx.join("tree/sub/dangling")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY --chmod=640 tree/ /data/\n",
    )
    .unwrap();
    // One platform: with two, both steps make the same layer, and the one that finds the
    // other's snapshot writes its blob from the file list at once, which the export then
    // takes instead of making it from the snapshot.
    let mut command = util::xbuild(dir);
    command
        .current_dir(&ctx)
        .args(["build", "--platform", "linux/amd64", "--progress", "plain"])
        .args(["-t", "links:1", "."]);
    let output = util::run(&mut command);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let rootfs = unpack(dir, "docker.io/library/links:1", "amd64");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(rootfs.join("data/file")).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert!(is_link_to(&rootfs.join("data/link"), "file"));
    assert!(is_link_to(&rootfs.join("data/sub/dangling"), "../nowhere"));
}
