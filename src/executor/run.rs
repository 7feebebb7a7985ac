//! `RUN`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, anyhow};

use super::failed::FailedStep;
use crate::binfmt::{self, Runner};
use crate::dockerfile::{self, CommandLine, ResolvedInstruction, instruction};
use crate::error::{ExitKind, Failure};
use crate::layer::{self, TreeKind};
use crate::plan::Vertex;
use crate::progress::{Event, Stream};

use super::cache::Key;
use super::scheduler::Ctx;
use super::state::Done;
use crate::sandbox::{self, StepCommand, StepSpec};

/// How many `RUN` steps run at once.
const MAX_RUNNING: usize = 3;

/// Lines of output kept for the error of a failed step.
const TAIL_LINES: usize = 10;

impl Ctx<'_> {
    /// A fresh upper and work directory in the store's tmp directory.
    pub(crate) fn scratch_dirs(&self) -> anyhow::Result<tempfile::TempDir> {
        let tmp = self.store.layout().tmp_dir();
        std::fs::create_dir_all(&tmp)?;
        let dir = tempfile::Builder::new().prefix("step-").tempdir_in(&tmp)?;
        std::fs::create_dir(dir.path().join("upper"))?;
        std::fs::create_dir(dir.path().join("work"))?;
        Ok(dir)
    }

    pub(crate) fn run_step(
        &self,
        vertex: &Vertex,
        resolved: &ResolvedInstruction,
        run: &instruction::Run,
        parent: &Done,
        inputs: &[Arc<Done>],
        mut key: Key,
    ) -> anyhow::Result<Done> {
        let name = vertex.display_name();
        let line = run.span.start;
        let file = self.options.dockerfile.display();
        let security = match run.security {
            Some(instruction::Security::Insecure) if !self.options.allow_insecure => {
                return Err(Failure::bad_input(format_args!(
                    "{file}:{line}: RUN --security=insecure needs --allow security.insecure"
                ))
                .into());
            }
            Some(instruction::Security::Insecure) => sandbox::Security::Insecure,
            _ => sandbox::Security::Sandbox,
        };
        let network = match run.network {
            Some(instruction::Network::None) => sandbox::Network::None,
            Some(instruction::Network::Host) => sandbox::Network::Host,
            _ if self.options.network_none => sandbox::Network::None,
            _ => sandbox::Network::Host,
        };
        key.add("network", &format!("{network:?}"));
        let mounts = super::mounts::prepare(self, vertex, run, parent, inputs, &mut key)?;
        let key = key.finish();
        if let Some(state) = self.cache_hit(&key, &name)? {
            return Ok(Done { state, key });
        }
        let mut state = parent.state.clone();
        let shell = state.shell();
        let command = match &run.command {
            CommandLine::Exec(argv) => StepCommand::Exec(argv.clone()),
            CommandLine::Shell(script) => StepCommand::Shell {
                shell: shell.clone(),
                script: heredoc_script(script, &run.heredocs),
            },
        };
        // Build args in scope as env, under the image env (ENV overrides ARG).
        let env_pairs = state.env();
        let mut env: Vec<String> = resolved
            .args
            .iter()
            .filter(|(key, _)| !env_pairs.iter().any(|(k, _)| k == key))
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        env.extend(env_pairs.iter().map(|(k, v)| format!("{k}={v}")));
        let lower_dirs = self.lower_dirs(&state)?;
        let dirs = self.scratch_dirs()?;
        let upper = dirs.path().join("upper");
        let mut spec = StepSpec::new(
            lower_dirs.clone(),
            upper.clone(),
            dirs.path().join("work"),
            vertex.platform.clone(),
            command.clone(),
        );
        spec.env = env.clone();
        spec.user = state.cfg().user().clone().filter(|user| !user.is_empty());
        spec.cwd = state.workdir();
        spec.network = network;
        spec.security = security;
        spec.mounts = mounts.binds.clone();
        spec.scratch_parent = Some(self.store.layout().tmp_dir());

        let emulated = matches!(
            binfmt::check_runnable(&vertex.platform),
            Ok(Runner::Emulated(_))
        );
        // Bounded: wait for a free slot.
        {
            let mut running = self
                .running
                .lock()
                .map_err(|_| anyhow!("a build thread panicked"))?;
            while *running >= MAX_RUNNING {
                running = self
                    .running_changed
                    .wait(running)
                    .map_err(|_| anyhow!("a build thread panicked"))?;
            }
            *running += 1;
        }
        let id = self.counter.next();
        self.sink.emit(Event::Started {
            vertex: id,
            name: name.clone(),
            emulated,
        });
        let started = Instant::now();
        let mut tail: VecDeque<String> = VecDeque::new();
        let outcome = sandbox::run(&spec, |stream, bytes| {
            let line = String::from_utf8_lossy(bytes).into_owned();
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.clone());
            self.sink.emit(Event::Log {
                vertex: id,
                stream: match stream {
                    sandbox::Stream::Stdout => Stream::Stdout,
                    sandbox::Stream::Stderr => Stream::Stderr,
                },
                line,
            });
        });
        if let Ok(mut running) = self.running.lock() {
            *running -= 1;
        }
        self.running_changed.notify_one();
        let elapsed = started.elapsed();
        if emulated {
            if let Ok(mut map) = self.emulated.lock() {
                *map.entry(vertex.platform.clone()).or_default() += elapsed;
            }
        }
        if let Ok(mut steps) = self.steps_run.lock() {
            *steps += 1;
        }
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                self.sink.emit(Event::Failed {
                    vertex: id,
                    duration: elapsed,
                    message: error.to_string(),
                });
                let kind = error.exit_kind();
                return Err(Failure::new(kind, anyhow::Error::new(error).context(name)).into());
            }
        };
        if !outcome.is_success() {
            self.sink.emit(Event::Failed {
                vertex: id,
                duration: elapsed,
                message: outcome.to_string(),
            });
            let debug_id = key[..12].to_owned();
            let debug_dir = FailedStep::dir(self.store.root());
            std::fs::create_dir_all(&debug_dir)?;
            let failed_upper = debug_dir.join(format!("{debug_id}.upper"));
            let _ = std::fs::remove_dir_all(&failed_upper);
            std::fs::rename(&upper, &failed_upper).context("keeping the failed step's changes")?;
            let record = FailedStep {
                id: debug_id.clone(),
                name: name.clone(),
                platform: vertex.platform.clone(),
                lower_dirs,
                failed_upper,
                env: env
                    .iter()
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                user: spec.user.clone().unwrap_or_else(|| "root".to_owned()),
                cwd: spec.cwd.clone(),
                shell,
                outcome: outcome.to_string(),
            };
            record.save(self.store.root())?;
            let mut message = format!("{name}: {outcome}");
            if !tail.is_empty() {
                message.push_str("\nlast lines of output:");
                for line in &tail {
                    message.push_str("\n  ");
                    message.push_str(line);
                }
            }
            message.push_str(&format!(
                "\nopen a shell in the failed state: xbuild debug shell {debug_id}\n\
                 or in the state before the step:  xbuild debug shell --before {debug_id}"
            ));
            return Err(Failure::new(ExitKind::Failed, anyhow!(message)).into());
        }
        let empty = std::fs::read_dir(&upper)?.next().is_none();
        if empty {
            state.push_history(&self.created, created_by_run(&command), true);
        } else {
            // The layer is kept as its snapshot; its blob is made if an image, a push or a
            // cache export needs it (a build stage's layers usually never are).
            let clamp = self.options.source_date_epoch;
            let (diff_id, _) = layer::tree_diff_id(&upper, TreeKind::OverlayUpper, clamp)
                .with_context(|| format!("{name}: committing the layer"))?;
            // A snapshot of this diff_id that is already there may have been unpacked from a
            // pulled blob rather than kept from a step; the blob is then made now, from this
            // step's own directory, rather than later from a tree made another way.
            let existing = self.store.snapshot(&diff_id).is_some();
            let blob = if existing {
                let blob = self
                    .tree_blob(&upper, &diff_id, clamp)
                    .with_context(|| format!("{name}: committing the layer"))?;
                self.store.put_layer_blob(&blob.diff_id, &blob.descriptor)?;
                Some(blob)
            } else {
                None
            };
            let dir = dirs.keep();
            self.store
                .adopt_snapshot(&diff_id, dir.join("upper"))
                .with_context(|| format!("{name}: keeping the snapshot"))?;
            let _ = std::fs::remove_dir_all(&dir);
            match blob {
                Some(blob) => state.push_layer(blob.descriptor, blob.diff_id),
                None => state.push_snapshot_layer(diff_id, clamp),
            }
            state.push_history(&self.created, created_by_run(&command), false);
        }
        self.record(&key, &state)?;
        self.sink.emit(Event::Finished {
            vertex: id,
            duration: elapsed,
        });
        Ok(Done { state, key })
    }
}

/// `RUN` heredocs: a command that is only `<<EOF` runs the body as the script; otherwise the
/// heredocs are appended so the shell reads them as its own here-documents.
pub(crate) fn heredoc_script(script: &str, heredocs: &[dockerfile::Heredoc]) -> String {
    match heredocs {
        [] => script.to_owned(),
        [only]
            if script
                .trim()
                .trim_start_matches("<<")
                .trim_start_matches('-')
                .trim_matches(['"', '\''])
                == only.name =>
        {
            only.content.clone()
        }
        _ => {
            let mut text = script.to_owned();
            for heredoc in heredocs {
                text.push('\n');
                text.push_str(&heredoc.content);
                if !heredoc.content.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&heredoc.name);
            }
            text
        }
    }
}

pub(crate) fn created_by_run(command: &StepCommand) -> String {
    format!("RUN {} # buildkit", command.argv().join(" "))
}
