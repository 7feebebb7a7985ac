//! `RUN`: the command runs in the sandbox ([`crate::sandbox`]) over the parent's snapshots,
//! with its `--mount`s ([`super::mounts`]), as the image's user, in its working directory,
//! with the image's environment over the build arguments in scope, under QEMU when the
//! platform is foreign; at most three at once. The changes (the overlay's upper directory)
//! become a layer kept as its snapshot, whose blob is written only when something needs it
//! ([`super::blobs`]). A failed command leaves its two states for `xbuild debug shell`
//! ([`super::failed`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::blobs::tree_blob;
use super::error::{ExecutorError, StepFailure, Within as _};
use super::failed::FailedStep;
use super::services::Services;
use super::state::Done;
use crate::binfmt::{self, Runner};
use crate::cache::Key;
use crate::dockerfile::{self, CommandLine, ResolvedInstruction, instruction};
use crate::layer::{self, TreeKind};
use crate::plan::Vertex;
use crate::progress::{Event, Stream};
use crate::sandbox::{self, BindMount, MountSource, StepCommand, StepSpec};

/// Lines of output kept for the error of a failed step.
const TAIL_LINES: usize = 10;

/// `RUN`: the command in the sandbox over the parent's snapshots, under QEMU when the
/// vertex's platform is foreign; the changes become a layer kept as its snapshot. A failed
/// command keeps both states for `xbuild debug shell`.
pub(crate) fn step(
    services: &Services<'_>,
    vertex: &Vertex,
    resolved: &ResolvedInstruction,
    run: &instruction::Run,
    parent: &Done,
    inputs: &[Arc<Done>],
    mut key: Key,
) -> Result<Done, ExecutorError> {
    let name = vertex.display_name();
    // `--security=insecure` without `--allow security.insecure` was refused before any
    // work (super::validate).
    let security = match run.security {
        Some(instruction::Security::Insecure) => sandbox::Security::Insecure,
        _ => sandbox::Security::Sandbox,
    };
    let network = match run.network {
        Some(instruction::Network::None) => sandbox::Network::None,
        // Without `--allow network.host` refused before any work (super::validate; a base
        // image's ONBUILD triggers are planned steps, validated with the rest).
        Some(instruction::Network::Host) => sandbox::Network::Host,
        _ if services.options.network_none => sandbox::Network::None,
        _ if services.options.network_host => sandbox::Network::Host,
        _ => sandbox::Network::Default,
    };
    key.add("network", &format!("{network:?}"));
    if !services.options.add_hosts.is_empty() {
        // Only when given, so keys of builds without `--add-host` stay as they were.
        let lines: String = services
            .options
            .add_hosts
            .iter()
            .map(sandbox::HostEntry::line)
            .collect();
        key.add("add-host", &lines);
    }
    if let Some(size) = services.options.shm_size {
        key.add("shm-size", &size.to_string());
    }
    // `--build-arg BUILDKIT_SANDBOX_HOSTNAME=name`: the step's host name (BuildKit's
    // frontend option of that build argument), in `/etc/hosts` too.
    let hostname = services
        .options
        .build_args
        .get(dockerfile::SANDBOX_HOSTNAME_BUILD_ARG)
        .filter(|name| !name.is_empty());
    if let Some(hostname) = hostname {
        key.add("hostname", hostname);
    }
    for ulimit in &services.options.ulimits {
        key.add(
            "ulimit",
            &format!("{}={}:{}", ulimit.name, ulimit.soft, ulimit.hard),
        );
    }
    let mounts = super::mounts::prepare(services, vertex, run, parent, inputs, &mut key)?;
    // As BuildKit names the step: a secret's variable shows as `****`.
    let name = mask_variables(
        &name,
        mounts.secret_env.iter().map(|(name, _)| name.as_str()),
    );
    let key = key.finish();
    if let Some(state) = services.cache_hit(vertex, &key, &name)? {
        return Ok(Done::new(state, key));
    }
    let mut state = parent.state.clone();
    let shell = state.shell();
    // A RUN that is one heredoc starting with `#!` runs that file, as BuildKit does: the body
    // is a 0755 file in a read-only directory mounted at `/dev/pipes/`, which the shell
    // runs (its kernel reads the `#!` line).
    let shebang = match &run.command {
        CommandLine::Shell(script) => shebang_heredoc(script, &run.heredocs),
        CommandLine::Exec(_) => None,
    };
    let pipes = shebang
        .map(|heredoc| pipes_dir(services, heredoc))
        .transpose()?;
    let command = match &run.command {
        CommandLine::Exec(argv) => StepCommand::Exec(argv.clone()),
        CommandLine::Shell(_) if shebang.is_some() => StepCommand::Shell {
            shell: shell.clone(),
            script: format!("{PIPES_DIR}/{}", shebang.map_or("", |h| h.name.as_str())),
        },
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
        .filter(|(key, _)| !crate::dockerfile::sbomscan::is_scan_arg(key))
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    env.extend(env_pairs.iter().map(|(k, v)| format!("{k}={v}")));
    // The proxy build arguments (`--build-arg http_proxy=...`), without `ARG`, both cases,
    // as BuildKit's `ProxyEnv`: in the step's environment only, never in its key, the
    // image's config or history.
    for (name, value) in dockerfile::proxy_env(&services.options.build_args) {
        env.retain(|pair| pair.split('=').next() != Some(name.as_str()));
        env.push(format!("{name}={value}"));
    }
    if let Some(socket) = &mounts.ssh_auth_sock {
        if !env.iter().any(|pair| pair.starts_with("SSH_AUTH_SOCK=")) {
            env.push(format!("SSH_AUTH_SOCK={socket}"));
        }
    }
    let lower_dirs = services.lower_dirs(&state)?;
    let dirs = services.scratch_dirs()?;
    let upper = dirs.path().join("upper");
    let mut spec = StepSpec::new(
        lower_dirs.clone(),
        upper.clone(),
        dirs.path().join("work"),
        vertex.platform.clone(),
        command.clone(),
    );
    // The secrets' variables over everything else, for the step only.
    spec.env = env
        .iter()
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            !mounts.secret_env.iter().any(|(name, _)| name == key)
        })
        .cloned()
        .chain(
            mounts
                .secret_env
                .iter()
                .map(|(name, value)| format!("{name}={value}")),
        )
        .collect();
    spec.user = state.cfg().user().clone().filter(|user| !user.is_empty());
    spec.cwd = state.workdir();
    if let Some(hostname) = hostname {
        spec.hostname.clone_from(hostname);
    }
    spec.network = network;
    spec.security = security;
    spec.mounts = mounts.binds.clone();
    if let Some(pipes) = &pipes {
        spec.mounts.push(BindMount {
            source: MountSource::Host(pipes.path().to_path_buf()),
            target: PathBuf::from(PIPES_DIR),
            readonly: true,
        });
    }
    spec.secrets = mounts.secrets.clone();
    spec.pids_limit = services.options.pids_limit;
    spec.pids_limit_required = services.options.pids_limit_required;
    spec.scratch_parent = Some(services.store.layout().tmp_dir());
    spec.extra_hosts = services.options.add_hosts.clone();
    spec.shm_size = services.options.shm_size;
    spec.ulimits = services.options.ulimits.clone();

    let emulated = matches!(
        binfmt::check_runnable(&vertex.platform),
        Ok(Runner::Emulated(_))
    );
    // Bounded: wait for a free slot.
    let slot = services.run_slot();
    let id = services.counter.next();
    services.sink.emit(Event::Started {
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
        services.sink.emit(Event::Log {
            vertex: id,
            stream: match stream {
                sandbox::Stream::Stdout => Stream::Stdout,
                sandbox::Stream::Stderr => Stream::Stderr,
            },
            line,
        });
    });
    drop(slot);
    let elapsed = started.elapsed();
    services.count_run(&vertex.platform, emulated.then_some(elapsed));
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            services.sink.emit(Event::Failed {
                vertex: id,
                duration: elapsed,
                message: error.to_string(),
            });
            return Err(ExecutorError::Within {
                context: name,
                source: Box::new(error.into()),
            });
        }
    };
    if !outcome.is_success() {
        services.sink.emit(Event::Failed {
            vertex: id,
            duration: elapsed,
            message: outcome.to_string(),
        });
        let debug_id = key[..12].to_owned();
        let debug_dir = FailedStep::dir(services.store.root());
        std::fs::create_dir_all(&debug_dir)?;
        let failed_upper = debug_dir.join(format!("{debug_id}.upper"));
        let _ = std::fs::remove_dir_all(&failed_upper);
        std::fs::rename(&upper, &failed_upper)
            .within(|| "keeping the failed step's changes".to_owned())?;
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
        record.save(services.store.root())?;
        return Err(ExecutorError::StepFailed(Box::new(StepFailure {
            platform: vertex.platform.clone(),
            step: name,
            command: command.argv().join(" "),
            outcome,
            output_tail: tail.into(),
            debug_id,
        })));
    }
    // A RUN that changed no file still makes a layer (an empty tar), as BuildKit keeps one
    // for every RUN: its history entry is never `empty_layer`.
    let created_by = created_by_run(&command, resolved, &state);
    // The layer is kept as its snapshot; its blob is made if an image, a push or a
    // cache export needs it (a build stage's layers usually never are).
    let clamp = services.options.source_date_epoch;
    // The layer's tar is hashed (CPU: reading the files back from the page cache) while its
    // files are written to the disk (I/O: the snapshot's durability), rather than one after
    // the other: the commit takes the longer of the two, not their sum. Nothing writes to
    // `upper` any more (the step's processes are gone).
    let hashed = std::thread::scope(|scope| {
        let sync = scope.spawn(|| crate::store::Store::sync_snapshot_contents(&upper));
        let hashed = layer::tree_diff_id(&upper, TreeKind::OverlayUpper, clamp);
        // A panic in the sync thread is a bug; it resumes here as in the hashing thread.
        if let Err(panic) = sync.join() {
            std::panic::resume_unwind(panic);
        }
        hashed
    });
    let (diff_id, _) = hashed.within(|| format!("{name}: committing the layer"))?;
    // A snapshot of this diff_id that is already there may have been unpacked from a
    // pulled blob rather than kept from a step; the blob is then made now, from this
    // step's own directory, rather than later from a tree made another way.
    // A blob of this diff_id that an earlier build made at this compression is that blob:
    // the same tar, the same compressor and level.
    let existing = services.store.snapshot(&diff_id).is_some();
    let compression = services.options.compression;
    let blob = if !existing {
        None
    } else if let Some(descriptor) = services.store.layer_blob(&diff_id, compression)? {
        Some(descriptor)
    } else {
        let blob = tree_blob(services, &upper, &diff_id, clamp)
            .within(|| format!("{name}: committing the layer"))?;
        services
            .store
            .put_layer_blob(&blob.diff_id, &blob.descriptor, compression)?;
        Some(blob.descriptor)
    };
    let dir = dirs.keep();
    services
        .store
        .adopt_synced_snapshot(&diff_id, dir.join("upper"))
        .within(|| format!("{name}: keeping the snapshot"))?;
    let _ = std::fs::remove_dir_all(&dir);
    match blob {
        Some(descriptor) => state.push_own_layer(descriptor, diff_id),
        None => state.push_snapshot_layer(diff_id, clamp),
    }
    state.push_history(&services.created, created_by, false);
    services.cache.record(&key, &state)?;
    services.sink.emit(Event::Finished {
        vertex: id,
        duration: elapsed,
    });
    Ok(Done::new(state, key))
}

/// Where a `#!` heredoc's file is mounted, as BuildKit mounts it.
const PIPES_DIR: &str = "/dev/pipes";

/// The heredoc of a `RUN` that is only `<<EOF` (or `<<-EOF`) whose body (tabs stripped for
/// `<<-`) starts with `#!`: BuildKit runs it as a file rather than as shell text.
fn shebang_heredoc<'a>(
    script: &str,
    heredocs: &'a [dockerfile::Heredoc],
) -> Option<&'a dockerfile::Heredoc> {
    let [only] = heredocs else {
        return None;
    };
    let word = script
        .trim()
        .trim_start_matches("<<")
        .trim_start_matches('-')
        .trim_matches(['"', '\'']);
    (word == only.name
        && !only.name.contains('/')
        && !only.name.is_empty()
        && only.body().starts_with("#!"))
    .then_some(only)
}

/// A directory holding `heredoc`'s body as an executable file named after it, removed on
/// drop.
fn pipes_dir(
    services: &Services<'_>,
    heredoc: &dockerfile::Heredoc,
) -> Result<tempfile::TempDir, ExecutorError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix("pipes-")
        .tempdir_in(services.store.layout().tmp_dir())?;
    let file = dir.path().join(&heredoc.name);
    std::fs::write(&file, heredoc.body())?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
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

/// A `RUN`'s history text, as BuildKit's `runCommandString`: the stage's `ARG`s declared
/// before it (`|2 foo=1 bar=2`: each name once, in the order first declared, with the value
/// the command sees, empty without one), then its argv.
pub(crate) fn created_by_run(
    command: &StepCommand,
    resolved: &ResolvedInstruction,
    state: &crate::oci::ImageState,
) -> String {
    let env = state.env();
    let mut words: Vec<String> = resolved
        .arg_names
        .iter()
        .map(|name| {
            let value = env
                .iter()
                .chain(&resolved.args)
                .find(|(key, _)| key == name)
                .map_or("", |(_, value)| value.as_str());
            format!("{name}={value}")
        })
        .collect();
    if !words.is_empty() {
        words.insert(0, format!("|{}", words.len()));
    }
    words.extend(command.argv());
    format!("RUN {} # buildkit", words.join(" "))
}

/// `text` with each reference to one of `names` (`$NAME`, `${NAME}`) replaced by `****`.
pub(crate) fn mask_variables<'a>(text: &str, names: impl Iterator<Item = &'a str>) -> String {
    let mut masked = text.to_owned();
    for name in names {
        masked = masked.replace(&format!("${{{name}}}"), "****");
        let plain = format!("${name}");
        let mut out = String::with_capacity(masked.len());
        let mut rest = masked.as_str();
        while let Some(at) = rest.find(&plain) {
            let after = &rest[at + plain.len()..];
            out.push_str(&rest[..at]);
            if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                out.push_str(&plain);
            } else {
                out.push_str("****");
            }
            rest = after;
        }
        out.push_str(rest);
        masked = out;
    }
    masked
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_variables_are_masked_in_the_step_name() {
        let names = ["SECRET", "T"];
        assert_eq!(
            super::mask_variables(
                r#"RUN [ "$SECRET" == "pw" ] && echo ${T} $TOKEN $SECRET_2 $T"#,
                names.into_iter()
            ),
            r#"RUN [ "****" == "pw" ] && echo **** $TOKEN $SECRET_2 ****"#
        );
    }
}
