//! `xbuild build` end to end on the busybox fixtures, for linux/amd64 and linux/arm64 at
//! once, judged with skopeo and umoci: instructions, emulation, the cache, `$BUILDPLATFORM`
//! stages, unused stages, reproducibility and failures.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::path::Path;
use std::process::{Command, Output};

use crate::util::{self, Need};

/// The store of a test: the fixture OCI layout (blobs hard-linked), its images named as the
/// registry module names them, so `FROM busybox` resolves locally.
pub(crate) fn store_with_fixtures(dir: &Path) {
    let fixtures = util::fixtures_dir().expect("fixtures checked by require");
    let store = dir.join("store");
    let status = Command::new("cp")
        .arg("-al")
        .arg(fixtures.join("oci"))
        .arg(&store)
        .status()
        .unwrap();
    assert!(status.success());
    let index = std::fs::read_to_string(store.join("index.json")).unwrap();
    let index = index
        .replace("\"busybox:latest\"", "\"docker.io/library/busybox:latest\"")
        .replace(
            "\"debian:bookworm\"",
            "\"docker.io/library/debian:bookworm\"",
        );
    std::fs::remove_file(store.join("index.json")).unwrap();
    std::fs::write(store.join("index.json"), index).unwrap();
}

pub(crate) fn needs() -> bool {
    util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Binfmt("aarch64"),
        Need::Program("skopeo"),
        Need::Program("umoci"),
    ])
}

const DOCKERFILE: &str = r#"
FROM --platform=$BUILDPLATFORM busybox AS tools
RUN echo "tools-ran-on $(uname -m)" && echo built > /tool

FROM busybox AS broken
RUN echo "broken-stage-ran" && exit 7

FROM busybox
ARG TARGETARCH
ENV GREETING="hello there"
WORKDIR /app
COPY --from=tools /tool /opt/tool
COPY hello.txt data/ ./
RUN uname -m > /arch && echo "step-ran $(cat /arch) $TARGETARCH $GREETING" && cat hello.txt
USER nobody
ENTRYPOINT ["/bin/cat"]
CMD ["/arch"]
"#;

pub(crate) fn build(dir: &Path, extra: &[&str]) -> Output {
    let mut command = util::xbuild(dir);
    command
        .current_dir(dir.join("ctx"))
        .args([
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "--progress",
            "plain",
        ])
        .args(extra)
        .arg(".");
    util::run(&mut command)
}

/// The layers the `compressing N layer(s)` vertices of a plain log compressed, in all.
fn layers_compressed(text: &str) -> usize {
    text.lines()
        .filter_map(|line| line.split_once("compressing ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(" layer").map(|(count, _)| count))
        .filter_map(|count| count.parse::<usize>().ok())
        .sum()
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|line| line.contains(needle)).count()
}

/// Output lines of steps containing `needle` (not the lines naming a step).
fn output_lines(text: &str, needle: &str) -> usize {
    text.lines()
        .filter(|line| line.contains(needle) && !line.contains("RUN "))
        .count()
}

/// Unpacks one platform of a stored image with skopeo + umoci; returns the rootfs.
pub(crate) fn unpack(dir: &Path, name: &str, arch: &str) -> std::path::PathBuf {
    let layout = dir.join(format!("single-{arch}"));
    let bundle = dir.join(format!("bundle-{arch}"));
    let _ = std::fs::remove_dir_all(&layout);
    let _ = std::fs::remove_dir_all(&bundle);
    let status = Command::new("skopeo")
        .args(["copy", "-q", "--override-arch", arch])
        .arg(format!("oci:{}:{name}", dir.join("store").display()))
        .arg(format!("oci:{}:img", layout.display()))
        .status()
        .unwrap();
    assert!(status.success(), "skopeo copy {arch}");
    let status = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:img", layout.display()))
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(status.success(), "umoci unpack {arch}");
    bundle.join("rootfs")
}

fn config(dir: &Path, name: &str, arch: &str) -> serde_json::Value {
    let output = Command::new("skopeo")
        .args(["inspect", "--config", "--override-arch", arch])
        .arg(format!("oci:{}:{name}", dir.join("store").display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn two_platforms_build_cache_and_one_edit() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("data/sub")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("hello.txt"), "version one\n").unwrap();
    std::fs::write(ctx.join("data/sub/deep.txt"), "deep\n").unwrap();
    std::fs::write(ctx.join("data/ignored.log"), "no\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "*/*.log\n").unwrap();

    // Cold build.
    let output = build(dir, &["-t", "app:1"]);
    let err = util::stderr(&output);
    assert!(output.status.success(), "{err}");
    // The $BUILDPLATFORM stage ran once, natively; the unused failing stage never ran.
    assert_eq!(output_lines(&err, "tools-ran-on"), 1, "{err}");
    assert!(err.contains("tools-ran-on x86_64"), "{err}");
    assert!(!err.contains("broken-stage-ran"), "{err}");
    assert_eq!(output_lines(&err, "step-ran"), 2, "{err}");
    assert!(err.contains("step-ran x86_64 amd64 hello there"), "{err}");
    assert!(err.contains("step-ran aarch64 arm64 hello there"), "{err}");
    assert!(err.contains("(emulated)"), "{err}");
    assert!(
        err.contains("linux/arm64:") && err.contains("under emulation"),
        "{err}"
    );
    let digest = util::stdout(&output).trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");

    // The index has both platforms (skopeo reads our layout).
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!(
            "oci:{}:docker.io/library/app:1",
            dir.join("store").display()
        ))
        .output()
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);

    for (arch, uname) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let config = config(dir, "docker.io/library/app:1", arch);
        assert_eq!(config["architecture"], arch);
        let cfg = &config["config"];
        assert_eq!(cfg["User"], "nobody");
        assert_eq!(cfg["WorkingDir"], "/app");
        assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/cat"]));
        assert_eq!(cfg["Cmd"], serde_json::json!(["/arch"]));
        assert!(
            cfg["Env"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("GREETING=hello there")),
            "{cfg}"
        );
        let history = config["history"].as_array().unwrap();
        assert!(history.iter().any(
            |h| h["created_by"].as_str().unwrap_or("").starts_with("ENV ")
                && h["empty_layer"] == true
        ));
        let rootfs = unpack(dir, "docker.io/library/app:1", arch);
        assert_eq!(
            std::fs::read_to_string(rootfs.join("arch")).unwrap(),
            format!("{uname}\n")
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("opt/tool")).unwrap(),
            "built\n"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("app/hello.txt")).unwrap(),
            "version one\n"
        );
        // A directory source copies its contents; .dockerignore applies.
        assert_eq!(
            std::fs::read_to_string(rootfs.join("app/sub/deep.txt")).unwrap(),
            "deep\n"
        );
        assert!(!rootfs.join("app/ignored.log").exists());
        // Busybox itself is there and is the right architecture.
        assert!(rootfs.join("bin/busybox").exists());
    }

    // No change: every step CACHED, nothing runs in the sandbox.
    let output = build(dir, &["-t", "app:1"]);
    let err = util::stderr(&output);
    assert!(output.status.success(), "{err}");
    assert_eq!(
        output_lines(&err, "step-ran") + output_lines(&err, "tools-ran-on"),
        0,
        "{err}"
    );
    assert!(err.contains("0 RUN steps run"), "{err}");
    // Nothing changed, so nothing in the result changed either.
    assert_eq!(util::stdout(&output).trim(), digest);
    // tools RUN + 2 × (WORKDIR, COPY --from, COPY, RUN).
    assert_eq!(count(&err, "CACHED"), 9, "{err}");

    // One file edited: its COPY and the steps after it run again, nothing before.
    std::fs::write(ctx.join("hello.txt"), "version two\n").unwrap();
    let output = build(dir, &["-t", "app:2"]);
    let err = util::stderr(&output);
    assert!(output.status.success(), "{err}");
    assert_eq!(output_lines(&err, "tools-ran-on"), 0, "{err}");
    assert_eq!(output_lines(&err, "step-ran"), 2, "{err}");
    assert!(err.contains("version two"), "{err}");
    // tools RUN, and per platform WORKDIR and COPY --from stay cached.
    assert_eq!(count(&err, "CACHED"), 5, "{err}");
    assert!(err.contains("2 RUN steps run"), "{err}");
}

#[test]
fn same_inputs_on_two_empty_stores_give_the_same_index() {
    if !needs() {
        return;
    }
    let mut digests = Vec::new();
    for _ in 0..2 {
        let temp = util::temp_dir();
        let dir = temp.path();
        store_with_fixtures(dir);
        let ctx = dir.join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM busybox\nCOPY a.txt /a.txt\nRUN uname -m > /arch && echo x > /x\nENV A=1\n",
        )
        .unwrap();
        std::fs::write(ctx.join("a.txt"), "a\n").unwrap();
        let output = build(dir, &["-q", "--build-arg", "SOURCE_DATE_EPOCH=1700000000"]);
        assert!(output.status.success(), "{}", util::stderr(&output));
        digests.push(util::stdout(&output).trim().to_owned());
        // Let a second apart pass, so "now" would differ if it leaked in.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert!(digests[0].starts_with("sha256:"), "{digests:?}");
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn a_failing_step_names_itself_and_the_debug_command() {
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
        "FROM busybox\nRUN echo first-line; echo second-line >&2; touch /made; exit 3\n",
    )
    .unwrap();
    let mut command = util::xbuild(dir);
    command.current_dir(&ctx).args([
        "build",
        "--platform",
        "linux/arm64",
        "--progress",
        "plain",
        ".",
    ]);
    let output = util::run(&mut command);
    let err = util::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("[2/2] RUN echo first-line")
            && err.contains("did not complete successfully: exit code: 3"),
        "{err}"
    );
    assert!(
        err.contains("  first-line") && err.contains("  second-line"),
        "{err}"
    );
    let id = err
        .lines()
        .find_map(|line| line.split("xbuild debug shell --before ").nth(1))
        .expect("the debug command is printed")
        .trim()
        .to_owned();
    assert!(err.contains(&format!("xbuild debug shell {id}")), "{err}");
    let record = dir.join("store/debug").join(format!("{id}.json"));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    let upper = record["failed_upper"].as_str().unwrap();
    assert!(Path::new(upper).join("made").exists(), "{record}");

    // The printed commands open the failed state (the file the step made is there, under
    // emulation) and the state before it (it is not).
    let output = util::run(util::xbuild(dir).args(["debug", "shell", &id, "ls", "/made"]));
    assert_eq!(output.status.code(), Some(0), "{}", util::stderr(&output));
    assert!(
        util::stdout(&output).contains("/made"),
        "{}",
        util::stdout(&output)
    );
    let output =
        util::run(util::xbuild(dir).args(["debug", "shell", "--before", &id, "ls", "/made"]));
    assert_ne!(output.status.code(), Some(0), "{}", util::stdout(&output));
}

#[test]
fn dockerfile_errors_and_unsupported_flags_exit_2() {
    let temp = util::temp_dir();
    let dir = temp.path();
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    std::fs::write(dir.join("ctx/Dockerfile"), "FROM busybox\nRUNN x\n").unwrap();
    let mut command = util::xbuild(dir);
    command.current_dir(dir.join("ctx")).args(["build", "."]);
    let output = util::run(&mut command);
    assert_eq!(output.status.code(), Some(2), "{}", util::stderr(&output));
    assert!(
        util::stderr(&output).contains("Dockerfile:2"),
        "{}",
        util::stderr(&output)
    );

    let mut command = util::xbuild(dir);
    command
        .current_dir(dir.join("ctx"))
        .args(["build", "--push", "."]);
    let output = util::run(&mut command);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        util::stderr(&output).contains("pushing needs a name"),
        "{}",
        util::stderr(&output)
    );

    let mut command = util::xbuild(dir);
    command
        .current_dir(dir.join("ctx"))
        .args(["build", "-o", "type=bogus,dest=x", "."]);
    let output = util::run(&mut command);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        util::stderr(&output).contains("bogus"),
        "{}",
        util::stderr(&output)
    );
}

#[test]
fn run_mounts_secret_cache_and_bind_leave_no_trace() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("c.txt"), "from-context\n").unwrap();
    std::fs::write(dir.join("secret.txt"), "s3cr3t-XYZZY\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS other\nRUN echo from-other > /o.txt\n\
         FROM busybox\n\
         RUN --mount=type=secret,id=tok echo secret-len $(wc -c < /run/secrets/tok)\n\
         RUN --mount=type=cache,target=/cache echo x >> /cache/n && echo cache-lines $(wc -l < /cache/n)\n\
         RUN --mount=type=bind,target=/mnt cat /mnt/c.txt > /from-ctx\n\
         RUN --mount=type=bind,from=other,source=/o.txt,target=/o.txt cp /o.txt /copied\n",
    )
    .unwrap();
    let secret = format!("id=tok,src={}", dir.join("secret.txt").display());
    let output = build(dir, &["--secret", &secret, "-t", "m:1"]);
    let err = util::stderr(&output);
    assert!(output.status.success(), "{err}");
    assert_eq!(output_lines(&err, "secret-len 13"), 2, "{err}");
    // One cache directory shared by both platforms' steps. The mount's sharing is
    // `shared`, so the two steps may run at the same time: both may count 2 lines, but
    // the later one always does, and separate directories would give 1 and 1.
    assert!(output_lines(&err, "cache-lines 2") >= 1, "{err}");
    assert_eq!(
        output_lines(&err, "cache-lines 1") + output_lines(&err, "cache-lines 2"),
        2,
        "{err}"
    );
    for arch in ["amd64", "arm64"] {
        let rootfs = unpack(dir, "docker.io/library/m:1", arch);
        assert_eq!(
            std::fs::read_to_string(rootfs.join("from-ctx")).unwrap(),
            "from-context\n"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("copied")).unwrap(),
            "from-other\n"
        );
        for absent in ["run/secrets", "cache", "mnt", "o.txt"] {
            assert!(
                !rootfs.join(absent).exists(),
                "{absent} in the {arch} image"
            );
        }
    }
    // The secret is in no blob, snapshot or cache record.
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for f in $(find {0}/blobs {0}/snapshots {0}/cache -type f); do zcat -f \"$f\" | grep -l XYZZY >/dev/null && echo \"$f\"; done; true",
            dir.join("store").display()
        ))
        .output()
        .unwrap();
    assert_eq!(util::stdout(&output), "", "the secret leaked");
    // Without the secret, a required one is refused.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN --mount=type=secret,id=other,required=true true\n",
    )
    .unwrap();
    let output = build(dir, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", util::stderr(&output));
}

#[test]
fn copy_wildcards_chown_chmod_heredoc_and_add_archive() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("src/a")).unwrap();
    std::fs::create_dir_all(ctx.join("src/b")).unwrap();
    std::fs::create_dir_all(dir.join("tarsrc/t")).unwrap();
    std::fs::write(ctx.join("src/a/one.go"), "1\n").unwrap();
    std::fs::write(ctx.join("src/b/two.go"), "2\n").unwrap();
    std::fs::write(ctx.join("src/readme.md"), "r\n").unwrap();
    std::fs::write(dir.join("tarsrc/t/f.txt"), "intar\n").unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir.join("tarsrc"))
        .arg("-czf")
        .arg(ctx.join("arch.tar.gz"))
        .arg("t")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         COPY --chown=nobody:nogroup --chmod=640 src/*/*.go /gofiles/\n\
         COPY src/readme.md /docs/README\n\
         COPY --chmod=u+x,go-w src/readme.md /docs/symbolic\n\
         ADD arch.tar.gz /unpacked/\n\
         COPY <<EOF /etc/greeting\nhello there\nEOF\n\
         COPY --chown=1234 src/a /adir\n",
    )
    .unwrap();
    let output = build(dir, &["-t", "c:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    for arch in ["amd64", "arm64"] {
        let rootfs = unpack(dir, "docker.io/library/c:1", arch);
        use std::os::unix::fs::MetadataExt;
        for name in ["one.go", "two.go"] {
            let meta = std::fs::metadata(rootfs.join("gofiles").join(name)).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid(), meta.mode() & 0o777),
                (65534, 65534, 0o640)
            );
        }
        assert_eq!(
            std::fs::read_to_string(rootfs.join("docs/README")).unwrap(),
            "r\n"
        );
        let source_mode = std::fs::metadata(ctx.join("src/readme.md")).unwrap().mode() & 0o777;
        let meta = std::fs::metadata(rootfs.join("docs/symbolic")).unwrap();
        assert_eq!(
            meta.mode() & 0o777,
            (source_mode | 0o100) & !0o022,
            "symbolic --chmod"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("unpacked/t/f.txt")).unwrap(),
            "intar\n"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/greeting")).unwrap(),
            "hello there\n"
        );
        let meta = std::fs::metadata(rootfs.join("adir/one.go")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 1234));
        assert!(!rootfs.join("adir/a").exists());
        // The base image is still underneath.
        assert!(rootfs.join("etc/passwd").exists());
    }
}

/// Serves `body` to every request on 127.0.0.1 (a thread per connection); returns the port.
pub(crate) fn serve(body: &'static [u8]) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    port
}

#[test]
fn add_url_checks_the_checksum() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let body: &'static [u8] = b"remote-content\n";
    let port = serve(body);
    let sha = xbuild::oci::sha256_digest(body).digest().to_owned();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\nADD --checksum=sha256:{sha} http://127.0.0.1:{port}/file.txt /dl/\n"
        ),
    )
    .unwrap();
    let output = build(dir, &["-t", "u:1"]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let rootfs = unpack(dir, "docker.io/library/u:1", "arm64");
    assert_eq!(std::fs::read(rootfs.join("dl/file.txt")).unwrap(), body);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(rootfs.join("dl/file.txt"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );

    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\nADD --checksum=sha256:{} http://127.0.0.1:{port}/file.txt /dl/\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let output = build(dir, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        util::stderr(&output).contains("checksum mismatch"),
        "{}",
        util::stderr(&output)
    );
}

#[test]
fn onbuild_triggers_run_in_the_child_build() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("c.txt"), "child-file\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile.parent"),
        "FROM busybox\nONBUILD COPY c.txt /from-trigger.txt\nONBUILD RUN echo trigger-ran $(cat /from-trigger.txt) && uname -m > /arch\n",
    )
    .unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM parent:1\nRUN echo child-step\n",
    )
    .unwrap();
    let output = build(dir, &["-f", "Dockerfile.parent", "-t", "parent:1"]);
    let err = util::stderr(&output);
    assert!(output.status.success(), "{err}");
    assert_eq!(output_lines(&err, "trigger-ran"), 0, "{err}");
    let output = build(dir, &["-t", "child:1"]);
    let err = util::stderr(&output);
    assert!(output.status.success(), "{err}");
    assert_eq!(output_lines(&err, "trigger-ran child-file"), 2, "{err}");
    let rootfs = unpack(dir, "docker.io/library/child:1", "arm64");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("arch")).unwrap(),
        "aarch64\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("from-trigger.txt")).unwrap(),
        "child-file\n"
    );
}

/// `xbuild build` with outputs: `--push` to a registry on 127.0.0.1 (judged by skopeo), an OCI
/// archive (`-o type=oci`), `--metadata-file` and `--iidfile`, all naming the same index.
#[test]
fn build_outputs_push_archive_metadata_and_iidfile_agree() {
    use crate::regenv::{self, Setup, TestRegistry};
    use sha2::Digest as _;

    if !needs() || !regenv::ready(Setup::Plain) {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    std::fs::write(
        dir.join("ctx/Dockerfile"),
        "FROM busybox\nRUN uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n",
    )
    .unwrap();
    let registry = TestRegistry::start(Setup::Plain);
    let name = format!("{}/outputs/app:1", registry.host);
    let archive = dir.join("out.tar");
    let output = build(
        dir,
        &[
            "-t",
            &name,
            "--push",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            "--metadata-file",
            &dir.join("meta.json").display().to_string(),
            "--iidfile",
            &dir.join("iid").display().to_string(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", util::stderr(&output));
    let iid = std::fs::read_to_string(dir.join("iid")).unwrap();
    assert!(iid.starts_with("sha256:"), "{iid}");
    assert_eq!(util::stdout(&output).trim(), iid);

    let sha256 = |bytes: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(
        sha256(&raw.stdout),
        iid,
        "the registry holds the built index"
    );
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);

    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(
        sha256(&raw.stdout),
        iid,
        "the OCI archive holds the built index"
    );

    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    assert_eq!(metadata["containerimage.digest"], iid.as_str());
    let manifests = metadata["xbuild.manifests"].as_object().unwrap();
    assert!(manifests.contains_key("linux/amd64") && manifests.contains_key("linux/arm64"));
}

/// The wrong-architecture guard: an amd64 binary copied into the arm64 image is named with
/// the instruction that added it (a warning; `--check-arch=error` fails the build), while the
/// amd64 image built from the same Dockerfile is clean.
#[test]
fn an_amd64_binary_in_the_arm64_image_is_reported() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    let fixtures = util::fixtures_dir().unwrap();
    std::fs::copy(
        fixtures.join("rootfs/busybox/linux-amd64/bin/busybox"),
        dir.join("ctx/tool"),
    )
    .unwrap();
    std::fs::write(
        dir.join("ctx/Dockerfile"),
        "FROM busybox\nCOPY tool /usr/local/bin/tool\n",
    )
    .unwrap();
    let output = build(dir, &["-t", "archcheck:1"]);
    let stderr = util::stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("usr/local/bin/tool is linux/amd64"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("[linux/arm64]"), "{stderr}");
    assert!(warnings[0].contains("COPY"), "{stderr}");
    // What the guard found is remembered per layer and platform, so the cached rebuild
    // below reports it without reading the layers' files again.
    let memos: Vec<String> = std::fs::read_dir(dir.join("store/cache"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("archcheck_linux_arm64_"))
        .collect();
    assert_eq!(memos.len(), 1, "{memos:?}");

    let output = build(dir, &["-t", "archcheck:1", "--check-arch=error"]);
    let stderr = util::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("usr/local/bin/tool is linux/amd64, not linux/arm64"),
        "{stderr}"
    );
}

/// Config-only instructions for two platforms, read back by skopeo: LABEL, EXPOSE, VOLUME,
/// STOPSIGNAL, HEALTHCHECK and SHELL land in the config with `empty_layer` history, and the
/// SHELL is the one a later RUN uses.
#[test]
fn config_instructions_reach_the_image_config() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    std::fs::create_dir_all(dir.join("ctx")).unwrap();
    std::fs::write(
        dir.join("ctx/Dockerfile"),
        r#"FROM busybox
LABEL org.example.team="builders" version=1
EXPOSE 8080/tcp 53/UDP 9000-9001 7070:70
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s CMD ["true"]
SHELL ["/bin/sh", "-ec"]
RUN echo "$0 $-" > /shell-flags
"#,
    )
    .unwrap();
    let output = build(dir, &["-t", "config:1"]);
    assert_eq!(output.status.code(), Some(0), "{}", util::stderr(&output));
    for arch in ["amd64", "arm64"] {
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", "--config", "--override-arch", arch])
            .arg(format!(
                "oci:{}:docker.io/library/config:1",
                dir.join("store").display()
            ))
            .output()
            .unwrap();
        assert!(
            raw.status.success(),
            "{}",
            String::from_utf8_lossy(&raw.stderr)
        );
        let config: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
        assert_eq!(config["architecture"], arch);
        let inner = &config["config"];
        assert_eq!(inner["Labels"]["org.example.team"], "builders", "{config}");
        assert_eq!(inner["Labels"]["version"], "1");
        // As BuildKit writes them: the protocol in lower case, one entry per port of a
        // range, the container side of a mapping.
        let ports: Vec<&str> = inner["ExposedPorts"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            ports,
            ["53/udp", "70/tcp", "8080/tcp", "9000/tcp", "9001/tcp"],
            "{config}"
        );
        assert!(inner["Volumes"].get("/data").is_some(), "{config}");
        assert_eq!(inner["StopSignal"], "SIGTERM");
        assert_eq!(
            inner["Healthcheck"]["Test"],
            serde_json::json!(["CMD", "true"]),
            "{config}"
        );
        assert_eq!(
            inner["Shell"],
            serde_json::json!(["/bin/sh", "-ec"]),
            "{config}"
        );
        let history = config["history"].as_array().unwrap();
        assert!(
            history
                .iter()
                .any(|entry| entry["created_by"]
                    == "EXPOSE [53/udp 70/tcp 8080/tcp 9000/tcp 9001/tcp]"),
            "{config}"
        );
        let empty = history
            .iter()
            .filter(|entry| entry["empty_layer"] == true)
            .count();
        assert!(empty >= 6, "{config}");
    }
    let rootfs = unpack(dir, "docker.io/library/config:1", "arm64");
    let flags = std::fs::read_to_string(rootfs.join("shell-flags")).unwrap();
    assert!(
        flags.contains('e'),
        "RUN used SHELL [\"/bin/sh\", \"-ec\"]: {flags}"
    );
}

/// Stops the fixture registry started by `scripts/fixtures.sh registry start PORT`.
struct FixtureRegistry(u16);

impl Drop for FixtureRegistry {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fixtures.sh"))
            .args(["registry", "stop", &self.0.to_string()])
            .status();
    }
}

/// The reference workload (`../shared/bench/app`): built for two platforms from base images
/// in a registry (apt-get install gcc runs under QEMU for arm64), pushed, read back by
/// skopeo as an index of both, and each platform's binary says where it was built and runs.
#[test]
fn bench_app_builds_pushes_and_runs_on_both_platforms() {
    if !needs() || !util::require(&[Need::Program("docker-registry")]) {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fixtures.sh");
    let status = Command::new(&script)
        .args(["registry", "start", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "fixture registry");
    let _registry = FixtureRegistry(port);
    let app = util::conformance_dir()
        .parent()
        .expect("shared/")
        .join("bench/app");
    let name = format!("127.0.0.1:{port}/bench/app:1");
    let output = util::run(
        util::xbuild(dir)
            .args([
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "--progress",
                "plain",
            ])
            .args([
                "--build-arg",
                &format!("REG=127.0.0.1:{port}"),
                "-t",
                &name,
                "--push",
            ])
            .arg(&app),
    );
    assert_eq!(output.status.code(), Some(0), "{}", util::stderr(&output));

    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let architectures: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|manifest| manifest["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(architectures, ["amd64", "arm64"]);

    for (platform, arch, machine) in [
        ("linux/amd64", "amd64", "x86_64"),
        ("linux/arm64", "arm64", "aarch64"),
    ] {
        let output =
            util::run(util::xbuild(dir).args(["run", "--rm", "--platform", platform, &name]));
        assert_eq!(output.status.code(), Some(0), "{}", util::stderr(&output));
        assert!(
            util::stdout(&output).contains(&format!(
                "built for {arch}, running on {machine}, uid=65534 cwd=/app"
            )),
            "{}",
            util::stdout(&output)
        );
    }
}

/// Names and sizes of the store's blobs.
fn blob_sizes(dir: &Path) -> std::collections::HashMap<String, u64> {
    std::fs::read_dir(dir.join("store/blobs/sha256"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.metadata().unwrap().len(),
            )
        })
        .collect()
}

#[test]
fn a_build_stage_layer_is_compressed_only_when_an_image_needs_it() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    // The build stage makes 3 MB of incompressible data, deletes a base file (a whiteout)
    // and replaces a directory (an opaque directory); the image takes one small file.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS build\n\
         RUN head -c 3000000 /dev/urandom > /big && rm /linuxrc \
             && mkdir -p /d && echo x > /d/f\n\
         RUN rm -rf /d && mkdir /d && echo y > /d/g\n\
         FROM busybox\n\
         COPY --from=build /d/g /g\n",
    )
    .unwrap();
    let build = |extra: &[&str]| {
        let mut command = util::xbuild(dir);
        command
            .current_dir(&ctx)
            .args(["build", "--platform", "linux/amd64", "--progress", "plain"])
            .args(extra)
            .arg(".");
        let output = util::run(&mut command);
        assert!(output.status.success(), "{}", util::stderr(&output));
        util::stderr(&output)
    };
    let before = blob_sizes(dir);
    let log = build(&["-t", "app:1"]);
    // Only the image's own COPY layer (kept as its snapshot too) is compressed.
    assert_eq!(count(&log, "compressing 1 layer"), 1, "{log}");
    assert!(!log.contains("compressing 2"), "{log}");
    let made: Vec<u64> = blob_sizes(dir)
        .into_iter()
        .filter(|(name, _)| !before.contains_key(name))
        .map(|(_, size)| size)
        .collect();
    assert!(!made.is_empty());
    assert!(
        made.iter().all(|&size| size < 1_000_000),
        "no blob of the build stage's 3 MB layer yet: {made:?}"
    );

    // Exporting the build stage compresses its two layers from their snapshots.
    // (the first may be compressed in the background while the second step runs: the
    // layers compressed are counted, whichever vertex did it)
    let log = build(&["--target", "build", "-t", "stage:1"]);
    assert_eq!(layers_compressed(&log), 2, "{log}");
    assert!(
        blob_sizes(dir)
            .into_iter()
            .any(|(name, size)| !before.contains_key(&name) && size > 2_900_000),
        "the 3 MB layer is a blob now"
    );
    // umoci checks each layer's digest and diff_id while unpacking.
    let rootfs = unpack(dir, "docker.io/library/stage:1", "amd64");
    assert_eq!(
        std::fs::metadata(rootfs.join("big")).unwrap().len(),
        3_000_000
    );
    assert!(!rootfs.join("linuxrc").exists(), "whiteout applied");
    assert!(rootfs.join("d/g").exists());
    assert!(!rootfs.join("d/f").exists(), "opaque directory applied");

    // The blobs made are reused, not made again.
    let log = build(&["--target", "build", "-t", "stage:2"]);
    assert!(!log.contains("compressing"), "{log}");
    let mut check = util::xbuild(dir);
    check.args(["store", "check"]);
    let output = util::run(&mut check);
    assert!(output.status.success(), "{}", util::stderr(&output));
}
