//! Dockerfile flags of BuildKit's syntax 1.x beyond what the conformance cases check:
//! `COPY --parents` keeps the source directories' own metadata, `--exclude` honours `!`
//! exceptions and leaves the excluded files out of the step's cache key. Images are judged
//! with skopeo and umoci.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::build::{build, needs, store_with_fixtures, unpack};
use crate::util;

/// Whether a plain progress log ends with "N steps cached".
fn cached_steps(log: &str, steps: usize) -> bool {
    log.contains(&format!(", {steps} steps cached\n"))
}

#[test]
fn copy_parents_and_exclude_keep_modes_exceptions_and_the_cache() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    fs::create_dir_all(ctx.join("app/src/gen")).unwrap();
    fs::create_dir_all(ctx.join("app/docs")).unwrap();
    fs::set_permissions(ctx.join("app"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(ctx.join("app/src/main.go"), "main\n").unwrap();
    fs::write(ctx.join("app/src/gen/x.pb.go"), "gen\n").unwrap();
    fs::write(ctx.join("app/src/notes.txt"), "n\n").unwrap();
    fs::write(ctx.join("app/docs/a.md"), "a\n").unwrap();
    fs::write(ctx.join("app/keep.md"), "keep\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         COPY --parents app/./src/**/*.go /p/\n\
         COPY --parents app/src/main.go /q/\n\
         COPY --exclude=**/*.md --exclude=!keep.md app /e/\n",
    )
    .unwrap();
    let output = build(dir, &["-t", "f:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let rootfs = unpack(dir, "docker.io/library/f:1", "amd64");
    let read = |path: &str| fs::read_to_string(rootfs.join(path)).unwrap();
    // --parents with a pivot: the path after `/./`, `**` matching no directory and two.
    assert_eq!(read("p/src/main.go"), "main\n");
    assert_eq!(read("p/src/gen/x.pb.go"), "gen\n");
    assert!(!rootfs.join("p/src/notes.txt").exists());
    assert!(!rootfs.join("p/app").exists());
    // Without a pivot the whole path is kept, and its directories keep their mode.
    assert_eq!(read("q/app/src/main.go"), "main\n");
    let mode = fs::metadata(rootfs.join("q/app")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o750, "a parent directory keeps its own mode");
    assert!(!rootfs.join("q/app/docs").exists());
    // --exclude with an exception.
    assert_eq!(read("e/keep.md"), "keep\n");
    assert!(!rootfs.join("e/docs/a.md").exists());
    assert!(rootfs.join("e/docs").is_dir());
    assert_eq!(read("e/src/main.go"), "main\n");

    // An excluded file's change leaves every step cached; a copied file's change does not.
    fs::write(ctx.join("app/docs/a.md"), "changed\n").unwrap();
    let output = build(dir, &["-t", "f:2"]);
    let stderr = util::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        cached_steps(&stderr, 6),
        "every COPY CACHED on both platforms:\n{stderr}"
    );
    fs::write(ctx.join("app/keep.md"), "kept, changed\n").unwrap();
    let output = build(dir, &["-t", "f:3"]);
    let stderr = util::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        cached_steps(&stderr, 4),
        "only the --exclude COPY ran:\n{stderr}"
    );
    let rootfs = unpack(dir, "docker.io/library/f:3", "arm64");
    assert_eq!(
        fs::read_to_string(rootfs.join("e/keep.md")).unwrap(),
        "kept, changed\n"
    );
    let meta = fs::metadata(rootfs.join("e/keep.md")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
}
