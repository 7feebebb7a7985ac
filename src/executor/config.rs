//! The config instructions (`ENV`, `LABEL`, `MAINTAINER`, `USER`, `EXPOSE`, `VOLUME`,
//! `STOPSIGNAL`, `SHELL`, `ENTRYPOINT`, `CMD`, `HEALTHCHECK`, `ONBUILD`, and the config half
//! of `WORKDIR`) as pure functions over an [`ImageState`], in the shape of BuildKit's
//! `dispatchEnv`, `dispatchExpose`, ...: each changes the image config as BuildKit does and
//! returns the step's history text (`created_by`). No I/O, no clock: the caller stamps the
//! history entry, and `WORKDIR`'s directory is made by the copy step
//! ([`super::copy::workdir`]).
//!
//! A build runs them through the dispatcher; `xbuild import --change` runs the same
//! functions on the imported image.

use super::state::join_path;
use crate::dockerfile::{CommandLine, Instruction, instruction};
use crate::oci::ImageState;

/// Why a config instruction could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An `EXPOSE` word BuildKit's port parser rejects.
    #[error("EXPOSE: {message}")]
    Expose {
        /// What is wrong with the port.
        message: String,
    },
    /// The instruction changes the file system or the stage, not the config (`RUN`, `COPY`,
    /// `ADD`, `FROM`, `ARG`).
    #[error("{instruction} is not a config instruction")]
    NotConfig {
        /// The instruction, upper case.
        instruction: &'static str,
    },
}

/// Applies one config instruction (already expanded) to `state`; returns the history text,
/// `None` for `ONBUILD` (BuildKit's `dispatchOnbuild` writes no history entry).
///
/// # Errors
/// [`ConfigError::NotConfig`] for `RUN`, `COPY`, `ADD`, `FROM` and `ARG`;
/// [`ConfigError::Expose`] for a port BuildKit would reject.
pub fn apply(
    state: &mut ImageState,
    instruction: &Instruction,
) -> Result<Option<String>, ConfigError> {
    match instruction {
        Instruction::Env(env) => set_env(state, env),
        Instruction::Label(label) => set_labels(state, label),
        Instruction::Maintainer(maintainer) => set_author(state, maintainer),
        Instruction::User(user) => set_user(state, user),
        Instruction::Expose(expose) => expose_ports(state, expose)?,
        Instruction::Volume(volume) => add_volumes(state, volume),
        Instruction::Stopsignal(signal) => set_stop_signal(state, signal),
        Instruction::Shell(shell) => set_shell(state, shell),
        Instruction::Entrypoint(entrypoint) => set_entrypoint(state, entrypoint),
        Instruction::Cmd(cmd) => set_cmd(state, cmd),
        Instruction::Healthcheck(health) => set_healthcheck(state, health),
        Instruction::Onbuild(onbuild) => {
            add_onbuild(state, onbuild);
            return Ok(None);
        }
        Instruction::Workdir(workdir) => set_workdir(state, workdir),
        Instruction::Run(_)
        | Instruction::Copy(_)
        | Instruction::Add(_)
        | Instruction::From(_)
        | Instruction::Arg(_) => {
            return Err(ConfigError::NotConfig {
                instruction: instruction.name(),
            });
        }
    }
    Ok(Some(created_by(instruction, state)))
}

/// The history text of an `ARG` (already resolved: each name with the value it got, or
/// none), as BuildKit's `dispatchArg` writes it: `ARG foo=bar baz`.
pub(crate) fn arg_created_by(arg: &instruction::Arg) -> String {
    let words: Vec<String> = arg
        .args
        .iter()
        .map(|declaration| match &declaration.default {
            Some(value) => format!("{}={value}", declaration.name),
            None => declaration.name.clone(),
        })
        .collect();
    format!("ARG {}", words.join(" "))
}

/// `ENV`: each variable replaces one of the same name, at the end.
fn set_env(state: &mut ImageState, env: &instruction::Env) {
    let mut pairs = state.env();
    for kv in &env.variables {
        pairs.retain(|(key, _)| key != &kv.key);
        pairs.push((kv.key.clone(), kv.value.clone()));
    }
    let mut cfg = state.cfg();
    cfg.set_env(Some(
        pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
    ));
    state.set_cfg(cfg);
}

/// `LABEL`: added or replaced.
fn set_labels(state: &mut ImageState, label: &instruction::Label) {
    let mut cfg = state.cfg();
    let mut labels = cfg.labels().clone().unwrap_or_default();
    for kv in &label.labels {
        labels.insert(kv.key.clone(), kv.value.clone());
    }
    cfg.set_labels(Some(labels));
    state.set_cfg(cfg);
}

/// `MAINTAINER`: the image's `author` (not the container config).
fn set_author(state: &mut ImageState, maintainer: &instruction::Maintainer) {
    state.config.set_author(Some(maintainer.name.clone()));
}

/// `USER`.
fn set_user(state: &mut ImageState, user: &instruction::User) {
    let mut cfg = state.cfg();
    cfg.set_user(Some(user.user.clone()));
    state.set_cfg(cfg);
}

/// `EXPOSE`: a set, as BuildKit's map (whose JSON keys come out sorted): one entry per port
/// of a range, the container side of `host:container`, lower-case protocol.
fn expose_ports(state: &mut ImageState, expose: &instruction::Expose) -> Result<(), ConfigError> {
    let mut cfg = state.cfg();
    let mut ports = cfg.exposed_ports().clone().unwrap_or_default();
    ports.extend(exposed_ports(&expose.ports)?);
    ports.sort();
    ports.dedup();
    cfg.set_exposed_ports(Some(ports));
    state.set_cfg(cfg);
    Ok(())
}

/// `VOLUME`: added in order, once each.
fn add_volumes(state: &mut ImageState, volume: &instruction::Volume) {
    let mut cfg = state.cfg();
    let mut volumes = cfg.volumes().clone().unwrap_or_default();
    for path in &volume.paths {
        if !volumes.contains(path) {
            volumes.push(path.clone());
        }
    }
    cfg.set_volumes(Some(volumes));
    state.set_cfg(cfg);
}

/// `STOPSIGNAL`.
fn set_stop_signal(state: &mut ImageState, signal: &instruction::Stopsignal) {
    let mut cfg = state.cfg();
    cfg.set_stop_signal(Some(signal.signal.clone()));
    state.set_cfg(cfg);
}

/// `SHELL`: Docker's `Shell` field (no room for it in the OCI config).
fn set_shell(state: &mut ImageState, shell: &instruction::Shell) {
    state
        .extra
        .insert("Shell".to_owned(), serde_json::json!(shell.shell));
}

/// `ENTRYPOINT`, shell form run by the stage's shell.
fn set_entrypoint(state: &mut ImageState, entrypoint: &instruction::Entrypoint) {
    let mut cfg = state.cfg();
    cfg.set_entrypoint(Some(command_argv(&entrypoint.command, &state.shell())));
    // ENTRYPOINT resets a CMD inherited from the base or set earlier in this stage; a CMD
    // later in the stage sets it again.
    cfg.set_cmd(None);
    state.set_cfg(cfg);
}

/// `CMD`, shell form run by the stage's shell.
fn set_cmd(state: &mut ImageState, cmd: &instruction::Cmd) {
    let mut cfg = state.cfg();
    cfg.set_cmd(Some(command_argv(&cmd.command, &state.shell())));
    state.set_cfg(cfg);
}

/// `HEALTHCHECK`: Docker's `Healthcheck` field, durations in nanoseconds.
fn set_healthcheck(state: &mut ImageState, health: &instruction::Healthcheck) {
    let value = match &health.health {
        instruction::Health::None => serde_json::json!({"Test": ["NONE"]}),
        instruction::Health::Check(check) => {
            let test = match &check.command {
                CommandLine::Shell(script) => {
                    vec!["CMD-SHELL".to_owned(), script.clone()]
                }
                CommandLine::Exec(argv) => {
                    let mut test = vec!["CMD".to_owned()];
                    test.extend(argv.iter().cloned());
                    test
                }
            };
            let nanos = |d: Option<std::time::Duration>| {
                d.map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            };
            let mut value = serde_json::json!({"Test": test});
            for (field, duration) in [
                ("Interval", check.interval),
                ("Timeout", check.timeout),
                ("StartPeriod", check.start_period),
                ("StartInterval", check.start_interval),
            ] {
                if duration.is_some() {
                    value[field] = serde_json::json!(nanos(duration));
                }
            }
            if let Some(retries) = check.retries {
                value["Retries"] = serde_json::json!(retries);
            }
            value
        }
    };
    state.extra.insert("Healthcheck".to_owned(), value);
}

/// `ONBUILD`: a trigger for images built `FROM` this one, kept in Docker's `OnBuild` field.
fn add_onbuild(state: &mut ImageState, onbuild: &instruction::Onbuild) {
    let mut triggers: Vec<String> = state
        .extra
        .get("OnBuild")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    triggers.push(onbuild.expression.clone());
    state
        .extra
        .insert("OnBuild".to_owned(), serde_json::json!(triggers));
}

/// `WORKDIR`: the working directory, relative to the current one.
fn set_workdir(state: &mut ImageState, workdir: &instruction::Workdir) {
    let dir = join_path(&state.workdir(), &workdir.path);
    let mut cfg = state.cfg();
    cfg.set_working_dir(Some(dir));
    state.set_cfg(cfg);
}

/// The config entries of an `EXPOSE`'s words (checked when the Dockerfile was resolved),
/// sorted and without duplicates.
fn exposed_ports(words: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut ports = Vec::new();
    for word in words {
        ports.extend(
            instruction::exposed_ports(word).map_err(|message| ConfigError::Expose { message })?,
        );
    }
    ports.sort();
    ports.dedup();
    Ok(ports)
}

/// A command as the argv the config holds: exec form as it is, shell form after `shell`.
fn command_argv(command: &CommandLine, shell: &[String]) -> Vec<String> {
    match command {
        CommandLine::Exec(argv) => argv.clone(),
        CommandLine::Shell(script) => {
            let mut argv = shell.to_vec();
            argv.push(script.clone());
            argv
        }
    }
}

/// The history text of a config instruction once applied to `state`, as BuildKit's
/// dispatchers write it: Go's `%v` of slices (`[a b]`), `%q` of `CMD`/`ENTRYPOINT`'s argv
/// (after the `SHELL` in force for the shell form), `%+v` of the health check, and the
/// absolute `WORKDIR`. Unlike a step that makes a layer, no ` # buildkit` suffix.
fn created_by(instruction: &Instruction, state: &ImageState) -> String {
    let pairs = |pairs: &[instruction::KeyValue]| -> String {
        pairs
            .iter()
            .map(|kv| format!(" {}={}", kv.key, kv.value))
            .collect()
    };
    match instruction {
        Instruction::Env(env) => format!("ENV{}", pairs(&env.variables)),
        Instruction::Label(label) => format!("LABEL{}", pairs(&label.labels)),
        Instruction::Workdir(_) => format!("WORKDIR {}", state.workdir()),
        Instruction::User(user) => format!("USER {}", user.user),
        Instruction::Maintainer(maintainer) => format!("MAINTAINER {}", maintainer.name),
        // BuildKit sorts the words, then lists each one's ports (a range as each port).
        Instruction::Expose(expose) => {
            let mut words = expose.ports.clone();
            words.sort();
            let ports: Vec<String> = words
                .iter()
                .flat_map(|word| instruction::exposed_ports(word).unwrap_or_default())
                .collect();
            format!("EXPOSE {}", go_slice(&ports))
        }
        Instruction::Volume(volume) => format!("VOLUME {}", go_slice(&volume.paths)),
        Instruction::Stopsignal(signal) => format!("STOPSIGNAL {}", signal.signal),
        Instruction::Shell(shell) => format!("SHELL {}", go_slice(&shell.shell)),
        Instruction::Entrypoint(entrypoint) => format!(
            "ENTRYPOINT {}",
            go_quoted_slice(&command_argv(&entrypoint.command, &state.shell()))
        ),
        Instruction::Cmd(cmd) => format!(
            "CMD {}",
            go_quoted_slice(&command_argv(&cmd.command, &state.shell()))
        ),
        Instruction::Healthcheck(health) => format!("HEALTHCHECK {}", healthcheck_text(health)),
        other => other.name().to_owned(),
    }
}

/// Go's `%v` of a `[]string`: `[a b c]`.
fn go_slice(words: &[String]) -> String {
    format!("[{}]", words.join(" "))
}

/// Go's `%q` of a `[]string`: `["a" "b c"]`.
fn go_quoted_slice(words: &[String]) -> String {
    let quoted: Vec<String> = words.iter().map(|word| go_quote(word)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes (printable Unicode kept).
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let code = c as u32;
                if code <= 0xffff {
                    out.push_str(&format!("\\u{code:04x}"));
                } else {
                    out.push_str(&format!("\\U{code:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%+v` of BuildKit's `HealthcheckConfig` (durations as Go prints them).
fn healthcheck_text(health: &instruction::Healthcheck) -> String {
    let (test, interval, timeout, start_period, start_interval, retries) = match &health.health {
        instruction::Health::None => (vec!["NONE".to_owned()], None, None, None, None, None),
        instruction::Health::Check(check) => {
            let test = match &check.command {
                CommandLine::Shell(script) => vec!["CMD-SHELL".to_owned(), script.clone()],
                CommandLine::Exec(argv) => {
                    let mut test = vec!["CMD".to_owned()];
                    test.extend(argv.iter().cloned());
                    test
                }
            };
            (
                test,
                check.interval,
                check.timeout,
                check.start_period,
                check.start_interval,
                check.retries,
            )
        }
    };
    let duration =
        |d: Option<std::time::Duration>| crate::gostd::format_duration(d.unwrap_or_default());
    format!(
        "{{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_slice(&test),
        duration(interval),
        duration(timeout),
        duration(start_period),
        duration(start_interval),
        retries.unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use oci_spec::image::ImageConfiguration;

    use super::*;
    use crate::dockerfile::{self, Expander};

    /// `line` as the build would see it: parsed, typed and expanded (no variables set).
    fn instruction(line: &str) -> Instruction {
        let tree = dockerfile::parse(&format!("FROM scratch\n{line}\n")).unwrap();
        let stages = dockerfile::stages(&tree).unwrap();
        stages.stages[0].instructions[0]
            .expand(&Expander::new('\\'), &Vec::new())
            .unwrap()
    }

    /// A fresh image with `lines` applied; the history texts in order.
    fn applied(lines: &[&str]) -> (ImageState, Vec<String>) {
        let mut state = ImageState::new(ImageConfiguration::default());
        let history = lines
            .iter()
            .map(|line| {
                apply(&mut state, &instruction(line))
                    .unwrap()
                    .unwrap_or_default()
            })
            .collect();
        (state, history)
    }

    fn config_json(state: &ImageState) -> serde_json::Value {
        serde_json::to_value(state.config.config()).unwrap()
    }

    #[test]
    fn env_replaces_a_variable_at_the_end_and_labels_merge() {
        let (state, history) = applied(&[
            "ENV A=1 B=2",
            "ENV A=3",
            "LABEL x=1 y=2",
            "LABEL x=3",
            "USER nobody:nogroup",
            "STOPSIGNAL SIGTERM",
            "VOLUME /data /cache",
            "VOLUME /data",
        ]);
        let config = config_json(&state);
        assert_eq!(config["Env"], serde_json::json!(["B=2", "A=3"]));
        assert_eq!(config["Labels"], serde_json::json!({"x": "3", "y": "2"}));
        assert_eq!(config["User"], "nobody:nogroup");
        assert_eq!(config["StopSignal"], "SIGTERM");
        assert_eq!(state.cfg().volumes().clone().unwrap(), ["/data", "/cache"]);
        assert_eq!(history[1], "ENV A=3");
        assert_eq!(history[2], "LABEL x=1 y=2");
        assert_eq!(history[6], "VOLUME [/data /cache]");
    }

    #[test]
    fn expose_writes_one_entry_per_port_as_buildkit() {
        let (state, history) = applied(&["EXPOSE 8000-8002/tcp 53/UDP 8080:80", "EXPOSE 80"]);
        assert_eq!(
            state.cfg().exposed_ports().clone().unwrap(),
            ["53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp"]
        );
        // BuildKit sorts the words as written, then lists each one's ports.
        assert_eq!(
            history[0],
            "EXPOSE [53/udp 8000/tcp 8001/tcp 8002/tcp 80/tcp]"
        );
    }

    #[test]
    fn a_bad_port_is_an_error() {
        let mut state = ImageState::new(ImageConfiguration::default());
        let expose = Instruction::Expose(instruction::Expose {
            ports: vec!["70000".to_owned()],
            ..match instruction("EXPOSE 80") {
                Instruction::Expose(expose) => expose,
                _ => unreachable!(),
            }
        });
        assert!(matches!(
            apply(&mut state, &expose),
            Err(ConfigError::Expose { .. })
        ));
    }

    #[test]
    fn shell_form_commands_use_the_stage_shell_and_entrypoint_resets_cmd() {
        let (state, history) = applied(&[
            "CMD echo base",
            "SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]",
            "ENTRYPOINT [\"/entry\"]",
        ]);
        let config = config_json(&state);
        assert_eq!(config["Entrypoint"], serde_json::json!(["/entry"]));
        assert!(config["Cmd"].is_null(), "{config}");
        assert_eq!(history[0], "CMD [\"/bin/sh\" \"-c\" \"echo base\"]");
        let (state, _) = applied(&["SHELL [\"/bin/bash\", \"-c\"]", "CMD echo hi"]);
        assert_eq!(
            state.cfg().cmd().clone().unwrap(),
            ["/bin/bash", "-c", "echo hi"]
        );
        assert_eq!(state.extra["Shell"], serde_json::json!(["/bin/bash", "-c"]));
    }

    #[test]
    fn docker_only_fields_leave_the_container_config_alone() {
        let (state, history) = applied(&[
            "MAINTAINER someone <a@b>",
            "HEALTHCHECK --interval=5s --retries=2 CMD true",
            "ONBUILD RUN echo child",
            "ONBUILD COPY . /src",
        ]);
        assert!(state.config.config().is_none());
        assert_eq!(state.config.author().as_deref(), Some("someone <a@b>"));
        assert_eq!(
            state.extra["Healthcheck"],
            serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000u64, "Retries": 2})
        );
        assert_eq!(
            state.extra["OnBuild"],
            serde_json::json!(["RUN echo child", "COPY . /src"])
        );
        assert_eq!(history[0], "MAINTAINER someone <a@b>");
        // BuildKit's dispatchOnbuild writes no history entry.
        assert_eq!(history[2], "");
    }

    #[test]
    fn workdir_is_relative_to_the_current_one() {
        let (state, history) = applied(&["WORKDIR /srv", "WORKDIR app/../api", "WORKDIR ."]);
        assert_eq!(state.workdir(), "/srv/api");
        assert_eq!(history[1], "WORKDIR /srv/api");
    }

    #[test]
    fn file_system_instructions_are_not_config() {
        let mut state = ImageState::new(ImageConfiguration::default());
        for line in ["RUN true", "COPY a /b", "ADD a /b"] {
            assert!(matches!(
                apply(&mut state, &instruction(line)),
                Err(ConfigError::NotConfig { .. })
            ));
        }
        assert_eq!(state, ImageState::new(ImageConfiguration::default()));
    }

    /// Every config instruction's history text, as BuildKit's dispatchers write it
    /// (dockerfile2llb's `commitToHistory` calls: no ` # buildkit` for these).
    #[test]
    fn history_texts_are_buildkits() {
        let (_, history) = applied(&[
            "ENV A=1 B=\"two words\"",
            "LABEL version=1.0 \"com.example.x\"=y",
            "MAINTAINER Jane <jane@example.com>",
            "USER app:app",
            "EXPOSE 5000 2375 1234/udp",
            "VOLUME [\"/data\", \"/logs\"]",
            "STOPSIGNAL SIGKILL",
            "WORKDIR /srv",
            "WORKDIR api",
            "CMD echo \"hi\"",
            "ENTRYPOINT [\"/bin/entry\", \"--flag\"]",
            "SHELL [\"/bin/bash\", \"-eu\", \"-c\"]",
            "CMD run it",
            "ENTRYPOINT exec app",
            "HEALTHCHECK --interval=30s --timeout=1m30s --start-period=500ms --retries=3 CMD curl -f http://localhost/",
            "HEALTHCHECK CMD [\"/bin/check\", \"-q\"]",
            "HEALTHCHECK NONE",
            "ONBUILD RUN make",
        ]);
        assert_eq!(
            history,
            [
                "ENV A=1 B=two words",
                "LABEL version=1.0 com.example.x=y",
                "MAINTAINER Jane <jane@example.com>",
                "USER app:app",
                "EXPOSE [1234/udp 2375/tcp 5000/tcp]",
                "VOLUME [/data /logs]",
                "STOPSIGNAL SIGKILL",
                "WORKDIR /srv",
                "WORKDIR /srv/api",
                "CMD [\"/bin/sh\" \"-c\" \"echo \\\"hi\\\"\"]",
                "ENTRYPOINT [\"/bin/entry\" \"--flag\"]",
                "SHELL [/bin/bash -eu -c]",
                "CMD [\"/bin/bash\" \"-eu\" \"-c\" \"run it\"]",
                "ENTRYPOINT [\"/bin/bash\" \"-eu\" \"-c\" \"exec app\"]",
                "HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/] Interval:30s Timeout:1m30s StartPeriod:500ms StartInterval:0s Retries:3}",
                "HEALTHCHECK {Test:[CMD /bin/check -q] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}",
                "HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}",
                "",
            ]
        );
    }

    #[test]
    fn arg_history_lists_each_name_with_its_value() {
        let Instruction::Arg(arg) = instruction("ARG foo=bar baz") else {
            unreachable!()
        };
        assert_eq!(arg_created_by(&arg), "ARG foo=bar baz");
    }
}
