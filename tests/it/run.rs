//! `xbuild run` on the busybox fixture image (per platform, under QEMU), Docker's
//! entrypoint/cmd/env/user/workdir rules on an imported image, exit status propagation, and
//! `xbuild debug shell` on a hand-made failed-step record.
#![allow(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use xbuild::executor::failed::FailedStep;
use xbuild::platform::Platform;

use crate::util::{Need, fixtures_dir, require, run, stderr, stdout, temp_dir, xbuild};

fn needs() -> bool {
    require(&[Need::Root, Need::Fixtures, Need::Binfmt("aarch64")])
}

/// A test directory whose store holds the fixture layout (hard links where the file system
/// allows: the store never writes a blob in place), names as the fixture script wrote them
/// (`busybox:latest`, not normalised: `xbuild run` must find them anyway).
fn store_with_fixtures() -> tempfile::TempDir {
    let dir = temp_dir();
    let source = fixtures_dir().expect("fixtures").join("oci");
    copy_tree(&source, &dir.path().join("store"));
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn xrun(dir: &Path, args: &[&str]) -> std::process::Output {
    run(xbuild(dir).arg("run").args(args))
}

#[test]
fn uname_reports_each_fixture_platforms_machine() {
    if !needs()
        || !require(&[
            Need::Binfmt("arm"),
            Need::Binfmt("ppc64le"),
            Need::Binfmt("s390x"),
        ])
    {
        return;
    }
    let dir = store_with_fixtures();
    for (platform, machine) in [
        ("linux/amd64", "x86_64"),
        ("linux/arm64", "aarch64"),
        ("linux/arm/v7", "armv7l"),
        ("linux/ppc64le", "ppc64le"),
        ("linux/s390x", "s390x"),
        ("linux/386", "i686"),
    ] {
        let output = xrun(
            dir.path(),
            &["--rm", "--platform", platform, "busybox", "uname", "-m"],
        );
        assert!(output.status.success(), "{platform}: {}", stderr(&output));
        assert_eq!(stdout(&output), format!("{machine}\n"), "{platform}");
    }
    // Nothing is left in the store's tmp.
    let tmp = dir.path().join("store/tmp");
    let left = std::fs::read_dir(&tmp).map_or(0, Iterator::count);
    assert_eq!(left, 0, "{}", tmp.display());
}

#[test]
fn the_containers_exit_status_and_streams_are_ours() {
    if !needs() {
        return;
    }
    let dir = store_with_fixtures();
    for platform in ["linux/amd64", "linux/arm64"] {
        let output = xrun(
            dir.path(),
            &[
                "--platform",
                platform,
                "busybox",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 7",
            ],
        );
        assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
        assert_eq!(stdout(&output), "out\n");
        assert!(stderr(&output).contains("err\n"), "{}", stderr(&output));
    }
    // -i: the container reads our stdin.
    let mut child = xbuild(dir.path())
        .args(["run", "-i", "busybox", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"echo from-stdin; exit 3\n",
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(stdout(&output), "from-stdin\n");
}

#[test]
fn entrypoint_cmd_env_user_and_workdir_follow_docker() {
    if !needs() {
        return;
    }
    let dir = store_with_fixtures();
    let rootfs = fixtures_dir().unwrap().join("rootfs/busybox/linux-arm64");
    let output = run(xbuild(dir.path()).args([
        "import",
        "--platform",
        "linux/arm64",
        "--change",
        r#"ENTRYPOINT ["/bin/sh", "-c"]"#,
        "--change",
        r#"CMD ["echo cmd:$GREETING; id -u; pwd; uname -m"]"#,
        "--change",
        "ENV GREETING=hello",
        "--change",
        "USER nobody",
        "--change",
        "WORKDIR /srv",
        rootfs.to_str().unwrap(),
        "app:1",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));

    // The config as it is; a single-platform arm64 image runs as arm64 without --platform.
    let output = xrun(dir.path(), &["app:1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "cmd:hello\n65534\n/srv\naarch64\n");

    // COMMAND replaces Cmd, the entrypoint stays.
    let output = xrun(
        dir.path(),
        &["--platform", "linux/arm64", "app:1", "echo replaced"],
    );
    assert_eq!(stdout(&output), "replaced\n", "{}", stderr(&output));

    // -e replaces a variable of the image and adds one; -u and -w replace User and
    // WorkingDir.
    let output = xrun(
        dir.path(),
        &[
            "-e",
            "GREETING=bye",
            "-e",
            "EXTRA=1",
            "-u",
            "0",
            "-w",
            "/tmp",
            "app:1",
            "echo $GREETING $EXTRA; id -u; pwd",
        ],
    );
    assert_eq!(stdout(&output), "bye 1\n0\n/tmp\n", "{}", stderr(&output));

    // --entrypoint replaces the entrypoint and clears Cmd ...
    let output = xrun(dir.path(), &["--entrypoint", "/bin/echo", "app:1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "\n");
    // ... and COMMAND becomes its arguments.
    let output = xrun(
        dir.path(),
        &["--entrypoint", "/bin/echo", "app:1", "a", "-n", "b"],
    );
    assert_eq!(stdout(&output), "a -n b\n", "{}", stderr(&output));

    // Nothing to run is bad input.
    let output = xrun(dir.path(), &["--entrypoint", "", "app:1"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no command"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_terminal_is_the_containers_controlling_tty() {
    if !needs() || !require(&[Need::Program("script")]) {
        return;
    }
    let dir = store_with_fixtures();
    // script(1) gives xbuild a terminal; -e returns the command's exit status.
    let command = format!(
        "{} run -t --platform linux/arm64 busybox sh -c 'tty; echo $TERM; [ -t 0 ] && echo stdin-tty; exit 5'",
        env!("CARGO_BIN_EXE_xbuild")
    );
    // Its stdin stays open (at end of file script(1) would type an EOF character).
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("XBUILD_ROOT", dir.path().join("store"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(output.status.code(), Some(5), "{}", stdout(&output));
    // A terminal turns \n into \r\n.
    assert_eq!(
        stdout(&output).replace("\r\n", "\n"),
        "/dev/console\nxterm\nstdin-tty\n"
    );
}

#[test]
fn network_none_and_keep() {
    if !needs() {
        return;
    }
    let dir = store_with_fixtures();
    let output = xrun(
        dir.path(),
        &["--network", "none", "busybox", "ls", "/sys/class/net"],
    );
    assert_eq!(stdout(&output), "lo\n", "{}", stderr(&output));
    let output = xrun(dir.path(), &["--network", "bridge", "busybox", "true"]);
    assert_eq!(output.status.code(), Some(2));

    let output = xrun(
        dir.path(),
        &["--keep", "busybox", "sh", "-c", "echo kept > /made"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stderr(&output);
    let upper = text
        .lines()
        .find_map(|line| line.strip_prefix("kept the container's changes in "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        std::fs::read_to_string(upper.join("made")).unwrap(),
        "kept\n"
    );
}

/// A failed-step record over the arm64 busybox fixture whose failed state holds `/marker`.
fn failed_record(dir: &Path, id: &str, user: &str) -> (FailedStep, PathBuf) {
    let store_root = dir.join("store");
    let failed_upper = FailedStep::dir(&store_root).join(format!("{id}.upper"));
    std::fs::create_dir_all(failed_upper.join("etc")).unwrap();
    std::fs::write(failed_upper.join("marker"), "failed state\n").unwrap();
    let record = FailedStep {
        id: id.into(),
        name: "[linux/arm64 build 2/2] RUN make".into(),
        platform: Platform::parse("linux/arm64").unwrap(),
        lower_dirs: vec![fixtures_dir().unwrap().join("rootfs/busybox/linux-arm64")],
        failed_upper: failed_upper.clone(),
        env: BTreeMap::from([
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("FOO".into(), "bar".into()),
        ]),
        user: user.into(),
        cwd: "/work".into(),
        shell: vec!["/bin/sh".into(), "-c".into()],
        outcome: "exit code 2".into(),
    };
    record.save(&store_root).unwrap();
    (record, failed_upper)
}

fn shell(dir: &Path, args: &[&str]) -> std::process::Output {
    run(xbuild(dir).args(["debug", "shell"]).args(args))
}

#[test]
fn debug_shell_opens_the_failed_state_or_the_one_before() {
    if !needs() {
        return;
    }
    let dir = store_with_fixtures();
    failed_record(dir.path(), "t1", "nobody");
    let (_, failed_upper) = failed_record(dir.path(), "t2", "root");

    // The failed state, as the step's user, directory and environment, emulated.
    let output = shell(
        dir.path(),
        &[
            "t1",
            "--",
            "sh",
            "-c",
            "cat /marker; echo $FOO; id -u; pwd; uname -m",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "failed state\nbar\n65534\n/work\naarch64\n"
    );

    // The state before the step lacks what the step made.
    let output = shell(dir.path(), &["--before", "t1", "--", "cat", "/marker"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    let output = shell(dir.path(), &["--before", "t1", "--", "ls", "/bin/busybox"]);
    assert!(output.status.success(), "{}", stderr(&output));

    // The default command is /bin/sh, reading our stdin.
    let mut child = xbuild(dir.path())
        .args(["debug", "shell", "t1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"cat /marker; exit 4\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert_eq!(stdout(&output), "failed state\n");

    // Changes made in the shell (as root) never reach the record or the snapshots below.
    let output = shell(
        dir.path(),
        &[
            "t2",
            "--",
            "sh",
            "-c",
            "echo changed > /marker; rm -rf /etc /bin/ls; touch /new; id -u; cat /marker",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "0\nchanged\n");
    assert!(
        fixtures_dir()
            .unwrap()
            .join("rootfs/busybox/linux-arm64/bin/ls")
            .exists()
    );
    let output = Command::new("ls")
        .arg("-A")
        .arg(&failed_upper)
        .output()
        .unwrap();
    assert_eq!(stdout(&output), "etc\nmarker\n");
    assert_eq!(
        std::fs::read_to_string(failed_upper.join("marker")).unwrap(),
        "failed state\n"
    );
    let output = shell(
        dir.path(),
        &["t2", "--", "sh", "-c", "cat /marker; ls -d /etc"],
    );
    assert_eq!(
        stdout(&output),
        "failed state\n/etc\n",
        "{}",
        stderr(&output)
    );

    // An unknown id is bad input.
    let output = shell(dir.path(), &["nosuch"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn an_image_missing_from_the_store_is_pulled_for_the_platform() {
    use crate::regenv::{Setup, TestRegistry, ready};
    if !needs() || !ready(Setup::Plain) {
        return;
    }
    let registry = TestRegistry::start(Setup::Plain);
    registry.skopeo_push_fixture("busybox:latest", None);
    let home = temp_dir();
    let image = format!("{}/busybox:latest", registry.host);
    let output = run(registry.xbuild(home.path()).args([
        "run",
        "--platform",
        "linux/arm64",
        &image,
        "uname",
        "-m",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "aarch64\n");
    assert!(
        stderr(&output).contains("locally, pulling"),
        "{}",
        stderr(&output)
    );
    // The second run finds it in the store.
    let output = run(registry.xbuild(home.path()).args([
        "run",
        "--platform",
        "linux/arm64",
        &image,
        "uname",
        "-m",
    ]));
    assert_eq!(stdout(&output), "aarch64\n", "{}", stderr(&output));
    assert!(!stderr(&output).contains("pulling"), "{}", stderr(&output));
}
