//! Dockerfile flags of BuildKit's syntax 1.x beyond what the conformance cases check:
//! `COPY --parents` keeps the source directories' own metadata, `--exclude` honours `!`
//! exceptions and leaves the excluded files out of the step's cache key; what a step
//! writes in a `RUN --mount=type=tmpfs` is in no layer; a `secret,env=` value reaches the
//! step and no file of the store (blobs decompressed), nor the progress output, even when
//! the step fails; `RUN --mount=type=ssh` reaches the `--ssh` agent (ours, or one xbuild
//! starts for key files) through a socket that is in no layer, and a required one without
//! `--ssh` stops the build before any work. Images are judged with skopeo and umoci, the
//! agent's answers by the agent protocol (`SSH2_AGENTC_REQUEST_IDENTITIES`) spoken from
//! the step, and on amd64 by the host's `ssh-add -l` run in the step.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::build::{build, needs, store_with_fixtures, unpack};
use crate::util;

/// A test directory with a store of the fixture images and an empty context, `ctx/`.
fn setup() -> tempfile::TempDir {
    let temp = util::temp_dir();
    store_with_fixtures(temp.path());
    fs::create_dir_all(temp.path().join("ctx")).unwrap();
    temp
}

/// Whether a plain progress log ends with "N steps cached".
fn cached_steps(log: &str, steps: usize) -> bool {
    log.contains(&format!(", {steps} steps cached\n"))
}

#[test]
fn copy_parents_and_exclude_keep_modes_exceptions_and_the_cache() {
    if !needs() {
        return;
    }
    let temp = setup();
    let dir = temp.path();
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

#[test]
fn a_tmpfs_mount_leaves_nothing_in_the_layer() {
    if !needs() {
        return;
    }
    let temp = setup();
    let dir = temp.path();
    let ctx = dir.join("ctx");
    // A cache mount inside the tmpfs is mounted after it (the order of the flags), so it
    // is not hidden: what the step writes there stays for the next build.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         RUN --mount=type=tmpfs,target=/scratch/deep,size=8m \\\n\
             --mount=type=cache,target=/scratch/deep/cache,id=tmpfs-test \\\n\
             head -c 4000000 /dev/urandom > /scratch/deep/big \\\n\
             && grep -q ' /scratch/deep tmpfs .*size=8192k' /proc/mounts \\\n\
             && touch /scratch/deep/cache/was-here && echo ok > /kept\n",
    )
    .unwrap();
    let output = build(dir, &["-t", "t:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    for arch in ["amd64", "arm64"] {
        let rootfs = unpack(dir, "docker.io/library/t:1", arch);
        assert_eq!(fs::read_to_string(rootfs.join("kept")).unwrap(), "ok\n");
        assert!(
            !rootfs.join("scratch").exists(),
            "the mount point is not in the layer ({arch})"
        );
    }
    // The step's layer holds /kept only: far below the 4 MB written to the tmpfs.
    let size = last_layer_size(dir, "arm64");
    assert!(size < 10_000, "the RUN's layer has {size} bytes");
    let mounts = dir.join("store/cache-mounts");
    let found = walk_names(&mounts).iter().any(|name| name == "was-here");
    assert!(found, "the cache mount inside the tmpfs was written");
}

/// The size of the last layer of the single-platform copy [`unpack`] made with skopeo.
fn last_layer_size(dir: &std::path::Path, arch: &str) -> u64 {
    let layout = dir.join(format!("single-{arch}"));
    let read = |digest: &str| -> serde_json::Value {
        let hex = digest.trim_start_matches("sha256:");
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let layers = manifest["layers"].as_array().unwrap();
    layers.last().unwrap()["size"].as_u64().unwrap()
}

/// Every file name below `dir`.
fn walk_names(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return names;
    };
    for entry in entries.flatten() {
        names.push(entry.file_name().to_string_lossy().into_owned());
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            names.extend(walk_names(&entry.path()));
        }
    }
    names
}

/// The files below `dir` (gzip ones decompressed) that contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            found.extend(files_containing(&path, needle));
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let mut bytes = fs::read(&path).unwrap();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut plain)
                .is_ok()
            {
                bytes = plain;
            }
        }
        if bytes.windows(needle.len()).any(|window| window == needle) {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_secret_in_an_environment_variable_reaches_no_file_and_no_log() {
    if !needs() {
        return;
    }
    let temp = setup();
    let dir = temp.path();
    let ctx = dir.join("ctx");
    let value = "s3cr3t-VALUE-9f2e";
    fs::write(dir.join("token"), value).unwrap();
    let secret = format!("id=tok,src={}", dir.join("token").display());
    // The step proves it saw the value (its length, and a file named after its digest),
    // writes a layer, and echoes the variable's name only.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         ENV TOKEN=public\n\
         RUN --mount=type=secret,id=tok,env=TOKEN \\\n\
             [ \"$TOKEN\" != public ] && [ ! -e /run/secrets/tok ] \\\n\
             && printf %s \"$TOKEN\" | wc -c > /len \\\n\
             && touch \"/seen-$(printf %s \"$TOKEN\" | sha256sum | cut -c1-8)\" && echo TOKEN-used\n\
         RUN [ \"$TOKEN\" = public ]\n",
    )
    .unwrap();
    let output = build(dir, &["-t", "s:1", "--secret", &secret]);
    let stderr = util::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("TOKEN-used"), "{stderr}");
    assert!(
        !stderr.contains(value),
        "the value is in the output:\n{stderr}"
    );
    let rootfs = unpack(dir, "docker.io/library/s:1", "arm64");
    assert_eq!(fs::read_to_string(rootfs.join("len")).unwrap().trim(), "17");
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(value.as_bytes()))
    };
    assert!(rootfs.join(format!("seen-{}", &digest[..8])).exists());
    // The check finds what is there (the command in the history) ...
    assert!(!files_containing(&dir.join("store"), b"echo TOKEN-used").is_empty());
    // ... and not the value, decompressed blobs included.
    assert_eq!(
        files_containing(&dir.join("store"), value.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );

    // A failed step keeps its state for `xbuild debug shell`: without the value.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=secret,id=tok,env=TOKEN echo > /partial && false\n",
    )
    .unwrap();
    let output = build(dir, &["-t", "s:2", "--secret", &secret]);
    assert_eq!(output.status.code(), Some(1), "{}", util::stderr(&output));
    assert!(!util::stderr(&output).contains(value));
    assert_eq!(
        files_containing(&dir.join("store"), value.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
}

/// Lists the comments of an agent's keys over the agent protocol: perl-base is in every
/// Debian image, `ssh-add` is not.
pub(crate) const LIST_KEYS: &str = r#"use IO::Socket::UNIX;
my $s = IO::Socket::UNIX->new(Peer => $ENV{SSH_AUTH_SOCK}) or die "connect $ENV{SSH_AUTH_SOCK}: $!";
print $s pack("NC", 1, 11);
read($s, my $len, 4) == 4 or die "short answer";
$len = unpack("N", $len);
read($s, my $body, $len) == $len or die "short body";
my ($type, $n) = unpack("CN", $body);
die "answer type $type" unless $type == 12;
my $at = 5;
for (1 .. $n) {
    my $blob = unpack("N", substr($body, $at, 4)); $at += 4 + $blob;
    my $comment = unpack("N", substr($body, $at, 4));
    print substr($body, $at + 4, $comment), "\n"; $at += 4 + $comment;
}
"#;

/// An `ssh-agent` of the test's own, stopped on drop.
pub(crate) struct TestAgent(pub(crate) std::process::Child);

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh ed25519 key at `path` with `comment`.
pub(crate) fn keygen(path: &std::path::Path, comment: &str) {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn ssh_mounts_reach_the_agent_and_a_required_one_needs_ssh() {
    if !needs() || !util::require(&[util::Need::Program("ssh-agent")]) {
        return;
    }
    let temp = setup();
    let dir = temp.path();
    let ctx = dir.join("ctx");
    fs::create_dir_all(ctx.join("tools")).unwrap();
    fs::write(ctx.join("tools/list-keys.pl"), LIST_KEYS).unwrap();
    // On amd64 the host's own `ssh-add -l` runs in the step too (Debian 12 like the
    // fixture; its libcrypto is the one library the fixture lacks).
    for file in [
        "/usr/bin/ssh-add",
        "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
    ] {
        let name = std::path::Path::new(file).file_name().unwrap();
        fs::copy(file, ctx.join("tools").join(name)).unwrap();
    }
    // Our agent, with one key.
    let socket = dir.join("agent.sock");
    let agent = TestAgent(
        std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    keygen(&dir.join("agent-key"), "key-in-the-agent");
    let status = std::process::Command::new("ssh-add")
        .arg("-q")
        .arg(dir.join("agent-key"))
        .env("SSH_AUTH_SOCK", &socket)
        .status()
        .unwrap();
    assert!(status.success());
    // A key file xbuild loads into an agent of its own.
    keygen(&dir.join("file-key"), "key-from-a-file");
    fs::write(
        ctx.join("Dockerfile"),
        "FROM debian:bookworm\n\
         ARG TARGETARCH\n\
         RUN --mount=type=ssh --mount=type=bind,source=tools,target=/t \\\n\
             [ \"$SSH_AUTH_SOCK\" = /run/buildkit/ssh_agent.0 ] && perl /t/list-keys.pl > /default-keys \\\n\
             && if [ \"$TARGETARCH\" = amd64 ]; then LD_LIBRARY_PATH=/t /t/ssh-add -l > /ssh-add-l; fi\n\
         RUN --mount=type=ssh,id=deploy,target=/tmp/deploy.sock,required=true \\\n\
             --mount=type=bind,source=tools,target=/t \\\n\
             [ \"$SSH_AUTH_SOCK\" = /tmp/deploy.sock ] && perl /t/list-keys.pl > /deploy-keys \\\n\
             && [ \"$(stat -c '%u %a' /tmp/deploy.sock)\" = '0 600' ]\n\
         RUN --mount=type=ssh,id=absent [ ! -e /run/buildkit/ssh_agent.0 ] && echo optional-skipped\n",
    )
    .unwrap();
    let key_file = format!("deploy={}", dir.join("file-key").display());
    let mut command = util::xbuild(dir);
    command
        .current_dir(&ctx)
        .env("SSH_AUTH_SOCK", &socket)
        .args(["build", "--platform", "linux/amd64,linux/arm64"])
        .args(["--progress", "plain", "-t", "k:1"])
        .args(["--ssh", "default", "--ssh", &key_file, "."]);
    let output = util::run(&mut command);
    let stderr = util::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("optional-skipped"), "{stderr}");
    for arch in ["amd64", "arm64"] {
        let rootfs = unpack(dir, "docker.io/library/k:1", arch);
        let read = |path: &str| fs::read_to_string(rootfs.join(path)).unwrap();
        assert_eq!(read("default-keys"), "key-in-the-agent\n", "{arch}");
        assert_eq!(read("deploy-keys"), "key-from-a-file\n", "{arch}");
        if arch == "amd64" {
            let listed = read("ssh-add-l");
            assert!(listed.contains("key-in-the-agent (ED25519)"), "{listed}");
        }
        assert!(
            !rootfs.join("run/buildkit").exists(),
            "a mount point in the image ({arch})"
        );
        assert!(
            !rootfs.join("tmp/deploy.sock").exists(),
            "a mount point in the image ({arch})"
        );
    }
    drop(agent);

    // Required, without --ssh: refused before any work, naming the line.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo must-not-run\nRUN --mount=type=ssh,required=true true\n",
    )
    .unwrap();
    let mut command = util::xbuild(dir);
    command.current_dir(&ctx).env_remove("SSH_AUTH_SOCK").args([
        "build",
        "--progress",
        "plain",
        ".",
    ]);
    let output = util::run(&mut command);
    let stderr = util::stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Dockerfile:3") && stderr.contains("no SSH key \"default\""),
        "{stderr}"
    );
    assert!(!stderr.contains("must-not-run"), "{stderr}");
    // --ssh default without an agent: a bad flag.
    let output = util::run(
        util::xbuild(dir)
            .current_dir(&ctx)
            .env_remove("SSH_AUTH_SOCK")
            .args(["build", "--ssh", "default", "."]),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(util::stderr(&output).contains("SSH_AUTH_SOCK is not set"));
}

/// `sharing=locked` waits while another holds the cache mount (here the test, with the
/// `flock(2)` a step takes); `sharing=private` does not wait: it uses a directory of its own
/// (`<dir>-1`); `from=` on a cache mount is refused before any work.
#[test]
fn cache_mount_sharing_locked_waits_and_private_uses_its_own_directory() {
    use nix::fcntl::{Flock, FlockArg};
    use sha2::Digest as _;
    if !needs() {
        return;
    }
    let temp = setup();
    let dir = temp.path();
    let ctx = dir.join("ctx");
    let start = |sharing: &str, marker: &str| {
        fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM busybox\nRUN --mount=type=cache,target=/c,id=sharing-test,sharing={sharing} \
                 touch /c/{marker} && echo {marker}\n"
            ),
        )
        .unwrap();
        util::xbuild(dir)
            .current_dir(&ctx)
            .args([
                "build",
                "--platform",
                "linux/amd64",
                "--progress",
                "plain",
                ".",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let finish = |child: std::process::Child| {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", util::stderr(&output));
    };
    // The mount's directory, as the first build makes it.
    finish(start("locked", "first"));
    // As executor/mounts.rs names it: the first 24 hex digits of the id's sha256, in hex.
    let digest = hex::encode(sha2::Sha256::digest(b"sharing-test"));
    let hash = hex::encode(&digest.as_bytes()[..24]);
    let base = dir.join("store/cache-mounts").join(&hash);
    assert!(base.join("first").exists());
    let appears = |path: std::path::PathBuf| {
        (0..40).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            path.exists()
        })
    };

    let held = Flock::lock(fs::File::open(&base).unwrap(), FlockArg::LockExclusive).unwrap();
    let locked = start("locked", "locked");
    assert!(
        !appears(base.join("locked")),
        "sharing=locked ran while the mount was held"
    );
    let private = start("private", "private");
    assert!(
        appears(
            dir.join("store/cache-mounts")
                .join(format!("{hash}-1/private"))
        ),
        "sharing=private waited, or used the held directory"
    );
    finish(private);
    drop(held);
    finish(locked);
    assert!(base.join("locked").exists());
}
