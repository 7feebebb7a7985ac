//! Installation: `scripts/install.sh` into a staging tree, its completions judged by bash
//! itself, its man pages by `man`, and xbuild as a Docker CLI plugin judged by Debian's
//! `docker` CLI (discovery, help and a build through `docker xbuild build`).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Need, require, temp_dir};

/// Debian's docker CLI (`docker.io`), else whatever `docker` is on PATH.
fn docker_cli() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/docker");
    if debian.is_file() {
        debian
    } else {
        util::which("docker").unwrap_or(debian)
    }
}

/// Runs `scripts/install.sh` with PREFIX=/usr into `destdir`, with the binary under test.
fn install(destdir: &Path) {
    let output = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh"))
        .env("XBUILD_BIN", env!("CARGO_BIN_EXE_xbuild"))
        .env("PREFIX", "/usr")
        .env("DESTDIR", destdir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "install.sh: {}{}",
        util::stdout(&output),
        util::stderr(&output)
    );
}

#[test]
fn install_script_puts_binary_completions_man_pages_and_plugin_link() {
    if !require(&[Need::Program("bash"), Need::Program("man")]) {
        return;
    }
    let temp = temp_dir();
    let destdir = temp.path().join("pkg");
    install(&destdir);
    let usr = destdir.join("usr");
    assert!(usr.join("bin/xbuild").is_file());

    // bash completes subcommands and flags from the installed script.
    let script = usr.join("share/bash-completion/completions/xbuild");
    let complete = |words: &str| {
        let output = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source '{}'; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); \
                 _xbuild xbuild \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                script.display()
            ))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", util::stderr(&output));
        util::stdout(&output)
    };
    let words = complete("xbuild imagetools ''");
    assert!(words.lines().any(|w| w == "create"), "{words}");
    assert!(words.lines().any(|w| w == "inspect"), "{words}");
    let words = complete("xbuild prune --fil");
    assert_eq!(words.trim(), "--filter", "{words}");
    let zsh = std::fs::read_to_string(usr.join("share/zsh/site-functions/_xbuild")).unwrap();
    assert!(zsh.starts_with("#compdef xbuild"), "{zsh}");
    let fish =
        std::fs::read_to_string(usr.join("share/fish/vendor_completions.d/xbuild.fish")).unwrap();
    assert!(fish.contains("complete -c xbuild"), "{fish}");

    // man renders the pages (gzip-compressed, one per visible subcommand).
    let man_dir = usr.join("share/man/man1");
    let render = |page: &str| {
        let output = Command::new("man")
            .arg("-l")
            .arg(man_dir.join(page))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", util::stderr(&output));
        util::stdout(&output)
    };
    let page = render("xbuild-build.1.gz");
    assert!(page.contains("xbuild-build"), "{page}");
    assert!(page.contains("--platform"), "{page}");
    assert!(render("xbuild-imagetools-create.1.gz").contains("xbuild-imagetools-create"));
    assert!(!man_dir.join("xbuild-__run-step.1.gz").exists());

    // The plugin link points at the installed binary, relatively (the tree can move).
    let link = usr.join("libexec/docker/cli-plugins/docker-xbuild");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../../../bin/xbuild")
    );
    assert!(
        std::fs::canonicalize(&link).unwrap()
            == std::fs::canonicalize(usr.join("bin/xbuild")).unwrap()
    );
}

/// A Docker client configuration directory whose `cli-plugins/docker-xbuild` is the
/// installed plugin link of `destdir`.
fn docker_config_with_plugin(dir: &Path, destdir: &Path) -> PathBuf {
    let config = dir.join("docker-config");
    std::fs::create_dir_all(config.join("cli-plugins")).unwrap();
    std::os::unix::fs::symlink(
        destdir.join("usr/libexec/docker/cli-plugins/docker-xbuild"),
        config.join("cli-plugins/docker-xbuild"),
    )
    .unwrap();
    config
}

#[test]
fn the_docker_cli_finds_and_runs_xbuild_as_a_plugin_without_a_daemon() {
    if !require(&[Need::Program("docker")]) {
        return;
    }
    let temp = temp_dir();
    let destdir = temp.path().join("pkg");
    install(&destdir);
    let config = docker_config_with_plugin(temp.path(), &destdir);
    let docker = |args: &[&str]| {
        Command::new(docker_cli())
            .args(args)
            .env("DOCKER_CONFIG", &config)
            // No daemon: discovery and help must not need one.
            .env(
                "DOCKER_HOST",
                format!("unix://{}", temp.path().join("no.sock").display()),
            )
            .env("XBUILD_ROOT", temp.path().join("store"))
            .output()
            .unwrap()
    };
    let help = docker(&["--help"]);
    let text = util::stdout(&help);
    assert!(
        text.lines()
            .any(|line| line.trim_start().starts_with("xbuild*") && line.contains("Daemonless")),
        "{text}"
    );
    // `docker info` lists client plugins even when the daemon cannot be reached.
    let info = util::stdout(&docker(&["info"]));
    assert!(info.contains("xbuild: Daemonless"), "{info}");
    let help = docker(&["xbuild", "--help"]);
    assert!(help.status.success(), "{}", util::stderr(&help));
    let text = util::stdout(&help);
    assert!(text.contains("Usage: docker xbuild"), "{text}");
    assert!(text.contains("imagetools"), "{text}");
    let help = docker(&["xbuild", "build", "--help"]);
    assert!(util::stdout(&help).contains("Usage: docker xbuild build"));
    // A docker global option xbuild cannot honour is refused, exit 2.
    let refused = docker(&["-D", "xbuild", "du"]);
    assert_eq!(refused.status.code(), Some(2), "{}", util::stderr(&refused));
    assert!(util::stderr(&refused).contains("option -D"));
    // `docker --config DIR xbuild ...` reaches xbuild as DOCKER_CONFIG: `xbuild logout`
    // removes the login stored there, not in the environment's configuration.
    let other = temp.path().join("other");
    let other = docker_config_with_plugin(&other, &destdir);
    std::fs::write(
        other.join("config.json"),
        r#"{"auths":{"127.0.0.1:1":{"auth":"dTpw"}}}"#,
    )
    .unwrap();
    let other_text = other.to_string_lossy().into_owned();
    let logout = docker(&["--config", &other_text, "xbuild", "logout", "127.0.0.1:1"]);
    assert!(logout.status.success(), "{}", util::stderr(&logout));
    assert!(
        util::stdout(&logout).contains("Removing login credentials for 127.0.0.1:1"),
        "{}",
        util::stderr(&logout)
    );
    let left = std::fs::read_to_string(other.join("config.json")).unwrap();
    assert!(!left.contains("dTpw"), "{left}");
}

#[test]
fn docker_xbuild_build_builds_like_docker_buildx_build() {
    if !crate::build::needs() || !require(&[Need::Program("docker")]) {
        return;
    }
    let temp = temp_dir();
    let dir = temp.path();
    crate::build::store_with_fixtures(dir);
    let destdir = dir.join("pkg");
    install(&destdir);
    let config = docker_config_with_plugin(dir, &destdir);
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN uname -m > /arch\n",
    )
    .unwrap();
    let archive = dir.join("image.tar");
    let output = Command::new(docker_cli())
        .current_dir(&ctx)
        .args([
            "xbuild",
            "build",
            "--platform",
            "linux/arm64",
            "--progress",
            "plain",
            "-o",
        ])
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg(".")
        .env("DOCKER_CONFIG", &config)
        .env("XBUILD_ROOT", dir.join("store"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", util::stderr(&output));
    let inspect = Command::new("skopeo")
        .args(["--override-arch", "arm64", "inspect", "--config"])
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", util::stderr(&inspect));
    let config: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(config["architecture"], "arm64");
    assert!(
        config["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["created_by"]
                .as_str()
                .unwrap_or("")
                .contains("uname -m > /arch")),
        "{config}"
    );
}
