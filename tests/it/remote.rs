//! Remote sources end to end, for the forms the conformance cases (git over dumb HTTP) do
//! not cover: `ADD git://...` and a `git://` build context served by `git daemon` on
//! loopback (with `#ref:subdir`, `-f` inside the subdirectory, `--keep-git-dir`,
//! `--checksum`, a moved ref rebuilding and an unchanged one not), and tarballs (plain,
//! gzip, bzip2, xz) and a lone Dockerfile as the build context over HTTP; `ADD ssh://...`
//! through an OpenSSH `sshd` on loopback with the key given to `--ssh default=KEY`. Judged
//! with git, sshd's log, skopeo and umoci.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::build::{store_with_fixtures, unpack};
use crate::conformance::http::SiteHandle;
use crate::util::{self, Need};

fn needs() -> bool {
    util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Binfmt("aarch64"),
        Need::Program("git"),
        Need::Program("skopeo"),
        Need::Program("umoci"),
    ])
}

/// `git` in `dir`, with a fixed identity and no user configuration; its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        util::stderr(&output)
    );
    util::stdout(&output).trim().to_owned()
}

/// `git daemon` serving every repository under `base` on a free loopback port; killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(base: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // git-daemon itself, not `git daemon` (whose child would outlive a kill).
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let exec_path = util::stdout(&exec_path).trim().to_owned();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg("--export-all")
            .arg("--reuseaddr")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "git daemon on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn build(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut command = util::xbuild(dir);
    command
        .current_dir(dir)
        .args(["build", "--progress", "plain"])
        .args(args);
    util::run(&mut command)
}

#[test]
fn git_daemon_add_and_context() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let srv = dir.join("srv");
    let repo = srv.join("repo");
    std::fs::create_dir_all(repo.join("app/build")).unwrap();
    std::fs::create_dir_all(repo.join("data")).unwrap();
    git(&repo, &["init", "-q"]);
    let daemon = Daemon::start(&srv);
    let url = format!("git://127.0.0.1:{}/repo", daemon.port);
    std::fs::write(
        repo.join("app/build/Dockerfile"),
        format!(
            "FROM busybox\nCOPY hello.txt /hello.txt\nADD {url}#main:data /data/\n\
             RUN cat /data/x > /x-copy && echo ran\n"
        ),
    )
    .unwrap();
    std::fs::write(repo.join("app/hello.txt"), "from the subdir\n").unwrap();
    std::fs::write(repo.join("data/x"), "one\n").unwrap();
    std::fs::write(repo.join("data/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        repo.join("data/run.sh"),
        std::fs::Permissions::from_mode(0o775),
    )
    .unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "one"]);
    git(&repo, &["tag", "v1"]);
    let commit_time: i64 = git(&repo, &["log", "-1", "--format=%ct"]).parse().unwrap();

    // The context is the subdirectory `app` of tag v1; -f is relative to it.
    let context = format!("{url}#v1:app");
    let args = [
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        "app:1",
        "-f",
        "build/Dockerfile",
        context.as_str(),
    ];
    let output = build(dir, &args);
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert!(util::stderr(&output).contains("2 RUN steps run"));
    for arch in ["amd64", "arm64"] {
        let rootfs = unpack(dir, "docker.io/library/app:1", arch);
        let read = |path: &str| std::fs::read_to_string(rootfs.join(path)).unwrap();
        assert_eq!(read("hello.txt"), "from the subdir\n", "{arch}");
        assert_eq!(read("data/x"), "one\n");
        assert_eq!(read("x-copy"), "one\n");
        assert!(
            !rootfs.join("data/.git").exists(),
            "no .git without --keep-git-dir"
        );
        let meta = std::fs::metadata(rootfs.join("data/x")).unwrap();
        assert_eq!(meta.mtime(), commit_time, "the commit time, deterministic");
        assert_eq!(meta.mode() & 0o7777, 0o644);
        let meta = std::fs::metadata(rootfs.join("data/run.sh")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o755, "executable in git");
    }

    // Unchanged: nothing runs again.
    let output = build(dir, &args);
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert!(
        util::stderr(&output).contains("0 RUN steps run"),
        "{}",
        util::stderr(&output)
    );

    // main moves (the context's tag v1 does not): the ADD and the RUN after it run again.
    std::fs::write(repo.join("data/x"), "two\n").unwrap();
    git(&repo, &["commit", "-qam", "two"]);
    let output = build(dir, &args);
    assert!(output.status.success(), "{}", util::stderr(&output));
    assert!(util::stderr(&output).contains("2 RUN steps run"));
    let rootfs = unpack(dir, "docker.io/library/app:1", "amd64");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("x-copy")).unwrap(),
        "two\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("hello.txt")).unwrap(),
        "from the subdir\n"
    );

    // --keep-git-dir and --checksum in a local context's Dockerfile.
    let main = git(&repo, &["rev-parse", "main"]);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD --keep-git-dir --checksum={main} {url}#main /src\n"),
    )
    .unwrap();
    let ctx_arg = ctx.display().to_string();
    let output = build(dir, &["-t", "keep:1", ctx_arg.as_str()]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let rootfs = unpack(dir, "docker.io/library/keep:1", "amd64");
    let head = std::fs::read_to_string(rootfs.join("src/.git/HEAD")).unwrap();
    assert_eq!(head.trim(), main, "the fetched commit, detached");
    // git itself reads the kept repository: the checkout is that commit, unmodified.
    let src = rootfs.join("src");
    assert_eq!(git(&src, &["rev-parse", "HEAD"]), main);
    assert_eq!(git(&src, &["status", "--porcelain"]), "");

    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD --checksum={} {url}#main /src\n",
            if main.starts_with('0') {
                "1111111"
            } else {
                "0000000"
            }
        ),
    )
    .unwrap();
    let output = build(dir, &["-t", "bad:1", ctx_arg.as_str()]);
    assert_eq!(output.status.code(), Some(1), "{}", util::stderr(&output));
    assert!(util::stderr(&output).contains("expected checksum to match"));

    // git over ssh is refused before any work (exit 2), naming the line.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD git@127.0.0.1:repo.git#main /src\n",
    )
    .unwrap();
    let output = build(dir, &["-t", "ssh:1", ctx_arg.as_str()]);
    assert_eq!(output.status.code(), Some(2), "{}", util::stderr(&output));
    assert!(util::stderr(&output).contains("Dockerfile:2"));
    assert!(util::stderr(&output).contains("over ssh"));
}

#[test]
fn http_tarballs_and_a_lone_dockerfile_as_the_context() {
    if !needs() {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("Dockerfile"), "FROM scratch\nCOPY sub/f /f\n").unwrap();
    std::fs::write(src.join("sub/f"), "in the tarball\n").unwrap();
    std::fs::write(
        src.join("sub/Other.Dockerfile"),
        "FROM scratch\nCOPY Dockerfile /df\n",
    )
    .unwrap();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    for (name, flag) in [
        ("c.tar", ""),
        ("c.tgz", "z"),
        ("c.tbz", "j"),
        ("c.txz", "J"),
    ] {
        let status = Command::new("tar")
            .arg(format!("c{flag}f"))
            .arg(www.join(name))
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
    }
    std::fs::write(
        www.join("Dockerfile.remote"),
        "FROM scratch\nCOPY --from=busybox /bin/busybox /bb\n",
    )
    .unwrap();
    let site = SiteHandle::new(&www, HashMap::new());
    for name in ["c.tar", "c.tgz", "c.tbz", "c.txz"] {
        let url = format!("{}/{name}", site.url());
        let tag = format!("t:{}", name.replace('.', "-"));
        let output = build(dir, &["-t", tag.as_str(), url.as_str()]);
        assert!(output.status.success(), "{name}: {}", util::stderr(&output));
        let rootfs = unpack(dir, &format!("docker.io/library/{tag}"), "amd64");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("f")).unwrap(),
            "in the tarball\n",
            "{name}"
        );
    }
    // -f inside the tarball.
    let url = format!("{}/c.tgz", site.url());
    let output = build(
        dir,
        &["-t", "t:other", "-f", "sub/Other.Dockerfile", url.as_str()],
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    let rootfs = unpack(dir, "docker.io/library/t:other", "amd64");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("df")).unwrap(),
        "FROM scratch\nCOPY sub/f /f\n"
    );
    // A lone Dockerfile: built, with no context files.
    let url = format!("{}/Dockerfile.remote", site.url());
    let output = build(dir, &["-t", "t:lone", url.as_str()]);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let rootfs = unpack(dir, "docker.io/library/t:lone", "amd64");
    assert!(rootfs.join("bb").is_file());
    // ... where -f has nothing to name: refused, exit 2.
    let output = build(dir, &["-t", "t:lone", "-f", "x", url.as_str()]);
    assert_eq!(output.status.code(), Some(2), "{}", util::stderr(&output));
    assert!(util::stderr(&output).contains("lone Dockerfile"));
    // A missing file: a failed download, exit 1, naming the URL.
    let url = format!("{}/missing.tgz", site.url());
    let output = build(dir, &["-t", "t:missing", url.as_str()]);
    assert_eq!(output.status.code(), Some(1), "{}", util::stderr(&output));
    assert!(util::stderr(&output).contains("missing.tgz"));
}

/// Runs `xbuild build --platform linux/amd64 ARGS` in `dir/ctx` with `input` on stdin.
fn build_with_stdin(dir: &Path, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write as _;
    let mut child = util::xbuild(dir)
        .current_dir(dir.join("ctx"))
        .args(["build", "--platform", "linux/amd64", "--progress", "plain"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refusal may come before stdin is read: a closed pipe is not the test's failure.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

/// `-f -` (the Dockerfile on stdin, the context still PATH) and `-` as the context (a gzip
/// tar made by `tar`, or a lone Dockerfile), as buildx reads them; both at once, and `-f`
/// inside a lone Dockerfile, are refused (exit 2). The images are read back by umoci.
#[test]
fn stdin_gives_the_dockerfile_or_the_whole_context() {
    if !util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Program("skopeo"),
        Need::Program("umoci"),
        Need::Program("tar"),
    ]) {
        return;
    }
    let temp = util::temp_dir();
    let dir = temp.path();
    store_with_fixtures(dir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("c.txt"), "from the directory\n").unwrap();

    let output = build_with_stdin(
        dir,
        &["-f", "-", "-t", "stdin:1", "."],
        b"FROM busybox\nCOPY c.txt /c.txt\n",
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    let rootfs = unpack(dir, "docker.io/library/stdin:1", "amd64");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("c.txt")).unwrap(),
        "from the directory\n"
    );

    // A gzip tar of another directory as the whole context; -f inside it.
    let tarred = dir.join("tarred");
    std::fs::create_dir_all(tarred.join("build")).unwrap();
    std::fs::write(tarred.join("c.txt"), "from the tar\n").unwrap();
    std::fs::write(
        tarred.join("build/App.Dockerfile"),
        "FROM busybox\nCOPY c.txt /c.txt\n",
    )
    .unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&tarred)
        .args(["-czf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let output = build_with_stdin(
        dir,
        &["-f", "build/App.Dockerfile", "-t", "stdin:2", "-"],
        &tar.stdout,
    );
    assert!(output.status.success(), "{}", util::stderr(&output));
    let rootfs = unpack(dir, "docker.io/library/stdin:2", "amd64");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("c.txt")).unwrap(),
        "from the tar\n"
    );

    // A lone Dockerfile: no context files.
    let lone = b"FROM busybox\nLABEL from=stdin\n";
    let output = build_with_stdin(dir, &["-t", "stdin:3", "-"], lone);
    assert!(output.status.success(), "{}", util::stderr(&output));
    let output = build_with_stdin(dir, &["-f", "x/Dockerfile", "-"], lone);
    assert_eq!(output.status.code(), Some(2), "{}", util::stderr(&output));
    let output = build_with_stdin(dir, &["-f", "-", "-"], lone);
    assert_eq!(output.status.code(), Some(2), "{}", util::stderr(&output));
    assert!(
        util::stderr(&output).contains("can't use stdin for both build context and dockerfile"),
        "{}",
        util::stderr(&output)
    );
}

/// An OpenSSH `sshd` on a free loopback port, with its own host key and one authorized key
/// (`dir/id`); killed on drop.
struct Sshd {
    child: Child,
    port: u16,
}

impl Sshd {
    fn start(dir: &Path) -> Self {
        for key in ["host_key", "id"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key))
                .status()
                .unwrap();
            assert!(status.success());
        }
        std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {dir}/host_key\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile {dir}/sshd.pid\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "sshd on {port}: {}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn add_of_a_git_repository_over_ssh_uses_the_ssh_default_agent() {
    if !util::require(&[
        Need::Root,
        Need::Fixtures,
        Need::Program("git"),
        Need::Program("ssh-keygen"),
        Need::Program("ssh-agent"),
        Need::Program("umoci"),
    ]) {
        return;
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        assert!(
            std::env::var("XBUILD_TEST_STRICT").as_deref() != Ok("1"),
            "needs /usr/sbin/sshd (openssh-server) (XBUILD_TEST_STRICT=1)"
        );
        eprintln!("skipped: needs /usr/sbin/sshd (openssh-server)");
        return;
    }
    let dir = util::temp_dir();
    let dir = dir.path();
    store_with_fixtures(dir);
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let sshd = Sshd::start(&keys);
    // A bare repository, served by sshd (git-upload-pack over ssh).
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("hello.txt"), "over ssh\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let bare = dir.join("repo.git");
    git(
        dir,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let url = format!("ssh://root@127.0.0.1:{}{}#main", sshd.port, bare.display());
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM busybox\nADD {url} /src\n"),
    )
    .unwrap();

    // Without an agent: refused before any work, naming the line and --ssh.
    let refused = build(dir, &["--platform", "linux/amd64", "-t", "gitssh:1", "."]);
    assert_eq!(refused.status.code(), Some(2), "{}", util::stderr(&refused));
    let error = util::stderr(&refused);
    assert!(
        error.contains("Dockerfile:2") && error.contains("--ssh default"),
        "{error}"
    );

    // With the key given to --ssh default=KEY (loaded into an agent xbuild starts).
    let key = format!("default={}", keys.join("id").display());
    let built = build(
        dir,
        &[
            "--platform",
            "linux/amd64",
            "--ssh",
            &key,
            "-t",
            "gitssh:1",
            ".",
        ],
    );
    assert!(built.status.success(), "{}", util::stderr(&built));
    let rootfs = unpack(dir, "docker.io/library/gitssh:1", "amd64");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("src/hello.txt")).unwrap(),
        "over ssh\n"
    );
    assert!(!rootfs.join("src/.git").exists());
    assert!(
        std::fs::read_to_string(keys.join("sshd.log"))
            .unwrap()
            .contains("Accepted publickey"),
        "sshd saw the key"
    );

    // The same repository as a named context, through an agent of the test's own given as
    // --ssh default ($SSH_AUTH_SOCK).
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nCOPY --from=repo hello.txt /named.txt\n",
    )
    .unwrap();
    let agent = dir.join("agent.sock");
    let mut ssh_agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&agent)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !agent.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "ssh-agent");
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(keys.join("id"))
        .env("SSH_AUTH_SOCK", &agent)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", util::stderr(&added));
    let context = format!("repo={url}");
    let mut command = util::xbuild(dir);
    command
        .current_dir(dir)
        .env("SSH_AUTH_SOCK", &agent)
        .args(["build", "--progress", "plain", "--platform", "linux/amd64"])
        .args(["--ssh", "default", "--build-context", &context])
        .args(["-t", "gitssh:2", "."]);
    let named = util::run(&mut command);
    let _ = ssh_agent.kill();
    let _ = ssh_agent.wait();
    assert!(named.status.success(), "{}", util::stderr(&named));
    let rootfs = unpack(dir, "docker.io/library/gitssh:2", "amd64");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("named.txt")).unwrap(),
        "over ssh\n"
    );
}
