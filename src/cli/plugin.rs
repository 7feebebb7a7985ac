//! xbuild as a Docker CLI plugin: installed (or linked) as `docker-xbuild` in a
//! `cli-plugins` directory, `docker xbuild build ...` runs it the way `docker buildx build
//! ...` runs buildx.
//!
//! The Docker CLI finds a plugin as an executable `docker-NAME`, asks it
//! `docker-NAME docker-cli-plugin-metadata` for a JSON object, and then runs
//! `docker-NAME [GLOBAL OPTIONS] NAME ARGS...` with the command line the user typed after
//! `docker` (so docker's own global options come first); `docker help NAME` runs
//! `docker-NAME help NAME`. This module owns that protocol only: it turns such a command line
//! back into xbuild's own (`xbuild ARGS...`) and applies the global options that mean
//! something here. It must not parse xbuild's own arguments (clap does, in [`super::args`]).
//!
//! Spec: <https://github.com/docker/cli/blob/master/docs/extend/cli_plugins.md>.

use std::ffi::OsString;
use std::path::Path;

use crate::error::Failure;

/// The subcommand the Docker CLI calls to read a plugin's metadata.
const METADATA_SUBCOMMAND: &str = "docker-cli-plugin-metadata";

/// The prefix of every Docker CLI plugin's executable name.
const PLUGIN_PREFIX: &str = "docker-";

/// What the process was asked to do, once the plugin protocol is taken off its arguments.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Print the plugin metadata JSON on stdout and exit 0.
    Metadata,
    /// Run xbuild with these arguments (`argv[0]` first). `plugin` is the plugin's name
    /// (`xbuild` for `docker-xbuild`) when run by the Docker CLI, for usage lines that read
    /// `docker xbuild ...`.
    Run {
        /// The arguments for xbuild's own parser.
        argv: Vec<OsString>,
        /// The plugin name when started as `docker-NAME NAME ...`.
        plugin: Option<String>,
        /// Docker global options that set an environment variable here:
        /// `--config DIR` (`DOCKER_CONFIG`) and `-H`/`--host` (`DOCKER_HOST`).
        environment: Vec<(&'static str, OsString)>,
    },
}

/// The plugin metadata the Docker CLI reads (`SchemaVersion` must be `0.1.0`).
pub fn metadata() -> String {
    serde_json::json!({
        "SchemaVersion": "0.1.0",
        "Vendor": "xbuild",
        "Version": env!("CARGO_PKG_VERSION"),
        "ShortDescription": "Daemonless multi-platform image builder (buildx's flags)",
    })
    .to_string()
}

/// Docker's global options (`docker --help`) that take a value, and the environment
/// variable xbuild reads for the two that mean something to it.
const GLOBAL_WITH_VALUE: [(&str, Option<&str>); 9] = [
    ("--config", Some(crate::env::DOCKER_CONFIG)),
    ("-H", Some(crate::env::DOCKER_HOST)),
    ("--host", Some(crate::env::DOCKER_HOST)),
    ("-c", None),
    ("--context", None),
    ("-l", None),
    ("--log-level", None),
    ("--tlscacert", None),
    ("--tlscert", None),
];

/// Docker's global flags without a value, plus `--tlskey` (with one); none of them has a
/// meaning for xbuild.
const GLOBAL_OTHER: [&str; 5] = ["-D", "--debug", "--tls", "--tlsverify", "--tlskey"];

/// Reads the process arguments: the plugin protocol when the executable is named
/// `docker-NAME` (or the metadata subcommand is asked for), else xbuild's own command line
/// unchanged.
///
/// # Errors
/// A Docker global option that xbuild cannot honour (`--context`, `--tls...`, `--debug`,
/// `--log-level`), or a missing value: bad input, before any work.
pub fn parse(argv: Vec<OsString>) -> Result<Invocation, Failure> {
    if argv.get(1).and_then(|arg| arg.to_str()) == Some(METADATA_SUBCOMMAND) {
        return Ok(Invocation::Metadata);
    }
    let name = argv
        .first()
        .and_then(|program| Path::new(program).file_name())
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_prefix(PLUGIN_PREFIX))
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    let Some(name) = name else {
        return Ok(Invocation::Run {
            argv,
            plugin: None,
            environment: Vec::new(),
        });
    };
    let mut rest = argv.into_iter();
    let program = rest.next().unwrap_or_default();
    let rest: Vec<OsString> = rest.collect();
    // `docker help NAME` runs `docker-NAME help NAME`.
    if rest.len() == 2 && rest[0] == "help" && rest[1] == name.as_str() {
        return Ok(Invocation::Run {
            argv: vec![program, "--help".into()],
            plugin: Some(name),
            environment: Vec::new(),
        });
    }
    let mut environment = Vec::new();
    let mut index = 0;
    while let Some(arg) = rest.get(index).and_then(|arg| arg.to_str()) {
        if arg == name || !arg.starts_with('-') {
            break;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg, None),
        };
        if let Some((_, variable)) = GLOBAL_WITH_VALUE.iter().find(|(known, _)| *known == flag) {
            let value = match inline {
                Some(value) => OsString::from(value),
                None => {
                    index += 1;
                    rest.get(index).cloned().ok_or_else(|| {
                        Failure::bad_input(format_args!("docker's option {flag} needs a value"))
                    })?
                }
            };
            match variable {
                Some(variable) => environment.push((*variable, value)),
                None => return Err(unsupported_global(flag)),
            }
        } else if GLOBAL_OTHER.contains(&flag) {
            return Err(unsupported_global(flag));
        } else {
            return Err(Failure::bad_input(format_args!(
                "unknown docker global option {arg} before `{name}`"
            )));
        }
        index += 1;
    }
    let mut xbuild = vec![program];
    match rest.get(index) {
        Some(arg) if arg == name.as_str() => xbuild.extend(rest[index + 1..].iter().cloned()),
        // Run by hand as `docker-xbuild build ...`: the plain command line, as buildx's
        // `docker-buildx` also works on its own.
        _ if index == 0 => xbuild.extend(rest),
        _ => {
            return Err(Failure::bad_input(format_args!(
                "expected `{name}` after docker's global options"
            )));
        }
    }
    Ok(Invocation::Run {
        argv: xbuild,
        plugin: Some(name),
        environment,
    })
}

fn unsupported_global(flag: &str) -> Failure {
    Failure::bad_input(format_args!(
        "docker's global option {flag} is not supported by xbuild (it talks to no daemon but \
         the one DOCKER_HOST or -H names, over a unix socket, for --load)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Invocation, Failure> {
        parse(args.iter().map(OsString::from).collect())
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn metadata_is_the_schema_the_docker_cli_reads() {
        assert_eq!(
            run(&["/x/docker-xbuild", "docker-cli-plugin-metadata"]).unwrap(),
            Invocation::Metadata
        );
        let value: serde_json::Value = serde_json::from_str(&metadata()).unwrap();
        assert_eq!(value["SchemaVersion"], "0.1.0");
        assert_eq!(value["Vendor"], "xbuild");
        assert_eq!(value["Version"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn plugin_name_is_taken_off_and_global_options_become_environment() {
        assert_eq!(
            run(&[
                "/usr/libexec/docker/cli-plugins/docker-xbuild",
                "-H",
                "unix:///run/d.sock",
                "--config=/cfg",
                "xbuild",
                "build",
                "-t",
                "app",
                "."
            ])
            .unwrap(),
            Invocation::Run {
                argv: argv(&[
                    "/usr/libexec/docker/cli-plugins/docker-xbuild",
                    "build",
                    "-t",
                    "app",
                    "."
                ]),
                plugin: Some("xbuild".into()),
                environment: vec![
                    ("DOCKER_HOST", "unix:///run/d.sock".into()),
                    ("DOCKER_CONFIG", "/cfg".into())
                ],
            }
        );
    }

    #[test]
    fn docker_help_name_is_help() {
        let Invocation::Run { argv: args, .. } = run(&["docker-xbuild", "help", "xbuild"]).unwrap()
        else {
            panic!("not a run");
        };
        assert_eq!(args, argv(&["docker-xbuild", "--help"]));
    }

    #[test]
    fn plain_xbuild_is_unchanged() {
        let Invocation::Run {
            argv: args, plugin, ..
        } = run(&["/usr/bin/xbuild", "xbuild", "build"]).unwrap()
        else {
            panic!("not a run");
        };
        assert_eq!(args, argv(&["/usr/bin/xbuild", "xbuild", "build"]));
        assert_eq!(plugin, None);
    }

    #[test]
    fn global_options_without_meaning_here_are_refused() {
        for flag in ["--context", "--tlsverify", "-D"] {
            let error = run(&["docker-xbuild", flag, "x", "xbuild", "build"]).unwrap_err();
            assert!(error.to_string().contains(flag), "{error}");
        }
        let error = run(&["docker-xbuild", "--bogus", "xbuild"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown docker global option --bogus")
        );
        let error = run(&["docker-xbuild", "-H"]).unwrap_err();
        assert!(error.to_string().contains("needs a value"), "{error}");
    }
}
