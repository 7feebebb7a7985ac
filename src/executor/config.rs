//! The config instructions.

use anyhow::anyhow;

use crate::dockerfile::{CommandLine, Instruction, instruction};

/// The config entries of an `EXPOSE`'s words (checked when the Dockerfile was resolved),
/// sorted and without duplicates.
pub(crate) fn exposed_ports(words: &[String]) -> anyhow::Result<Vec<String>> {
    let mut ports = Vec::new();
    for word in words {
        ports.extend(
            instruction::exposed_ports(word).map_err(|message| anyhow!("EXPOSE: {message}"))?,
        );
    }
    ports.sort();
    ports.dedup();
    Ok(ports)
}

pub(crate) fn command_argv(command: &CommandLine, shell: &[String]) -> Vec<String> {
    match command {
        CommandLine::Exec(argv) => argv.clone(),
        CommandLine::Shell(script) => {
            let mut argv = shell.to_vec();
            argv.push(script.clone());
            argv
        }
    }
}

pub(crate) fn created_by(instruction: &Instruction) -> String {
    format!("{} # buildkit", instruction_text(instruction))
}

pub(crate) fn instruction_text(instruction: &Instruction) -> String {
    match instruction {
        Instruction::Env(env) => format!(
            "ENV {}",
            env.variables
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Instruction::Workdir(w) => format!("WORKDIR {}", w.path),
        Instruction::User(u) => format!("USER {}", u.user),
        Instruction::Label(l) => format!(
            "LABEL {}",
            l.labels
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        // Go's `%v` of BuildKit's port map: sorted keys, each with its empty value.
        Instruction::Expose(e) => format!(
            "EXPOSE map[{}]",
            exposed_ports(&e.ports)
                .unwrap_or_else(|_| e.ports.clone())
                .iter()
                .map(|port| format!("{port}:{{}}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Instruction::Volume(v) => format!("VOLUME {:?}", v.paths),
        Instruction::Stopsignal(s) => format!("STOPSIGNAL {}", s.signal),
        Instruction::Entrypoint(e) => format!("ENTRYPOINT {}", command_text(&e.command)),
        Instruction::Cmd(c) => format!("CMD {}", command_text(&c.command)),
        Instruction::Shell(s) => format!("SHELL {:?}", s.shell),
        Instruction::Onbuild(o) => format!("ONBUILD {}", o.expression),
        other => other.name().to_owned(),
    }
}

pub(crate) fn command_text(command: &CommandLine) -> String {
    match command {
        CommandLine::Exec(argv) => format!("{argv:?}"),
        CommandLine::Shell(script) => format!("[\"/bin/sh\" \"-c\" {script:?}]"),
    }
}
