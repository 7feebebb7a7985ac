//! The command line: clap structures ([`args`]), dispatch to the library, and the one place
//! that writes to stdout and stderr ([`output`]).
//!
//! `xbuild [OPTIONS] PATH` is `xbuild build [OPTIONS] PATH`, as users type
//! `xbuild --platform linux/amd64,linux/arm64 --push .`.

pub mod args;
pub mod attest;
pub mod attestations;
pub mod binfmt;
pub mod build;
mod call;
pub mod check;
pub mod completion;
pub mod debug;
pub mod image;
pub mod imagetools;
pub mod nodes;
pub mod output;
pub mod plugin;
pub mod progress;
pub mod prune;
pub mod registry;
pub mod run;
mod stdin;
pub mod store;
pub mod values;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::error::{ExitKind, Failure, exit_kind};
use args::{Cli, Command};

/// Parses the process arguments, runs the command and returns its exit status. Errors are
/// printed once, as a chain, on stderr.
pub fn main() -> ExitCode {
    let (argv, plugin) = match plugin::parse(std::env::args_os().collect()) {
        Ok(plugin::Invocation::Metadata) => {
            output::stdout(plugin::metadata());
            return ExitCode::SUCCESS;
        }
        Ok(plugin::Invocation::Run {
            argv,
            plugin,
            environment,
        }) => {
            for (variable, value) in environment {
                // SAFETY: nothing else runs yet (no runtime, no thread has been started), so
                // no other thread can read the environment while it changes.
                unsafe { std::env::set_var(variable, value) };
            }
            (argv, plugin)
        }
        Err(error) => {
            output::error(&error.into());
            return ExitCode::from(ExitKind::BadInput);
        }
    };
    let argv = with_default_subcommand(argv);
    let mut command = Cli::command();
    if let Some(plugin) = plugin {
        // Usage lines read `docker xbuild build ...`, as buildx's read `docker buildx ...`.
        command = command.bin_name(format!("docker {plugin}"));
    }
    let matches = match command.try_get_matches_from(argv) {
        Ok(matches) => matches,
        Err(error) => {
            // clap prints help and version on stdout (exit 0) and usage errors on stderr
            // (exit 2, our code for bad input).
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(2);
        }
    };
    // Named in the peak RSS record (`__run-step` for a step's sandbox process).
    let command_name = matches.subcommand_name().unwrap_or("xbuild").to_owned();
    let code = match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::error(&error);
            if let Some(hint) = disk_full_hint(&error) {
                output::stderr(hint);
            }
            ExitCode::from(exit_kind(&error).code())
        }
    };
    report_peak_rss(&command_name);
    code
}

/// With `XBUILD_PEAK_RSS_FILE` set, appends this process's peak resident set size to that
/// file, one line per process ([`peak_rss_record`]), for `scripts/bench.sh`: the figure is
/// xbuild's own, not that of the commands its RUN steps start (those run in other
/// processes). Each step's sandbox process (`xbuild __run-step`) writes its own line.
fn report_peak_rss(command_name: &str) {
    let Some(path) = std::env::var_os(crate::env::XBUILD_PEAK_RSS_FILE) else {
        return;
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(line) = peak_rss_record(&status, std::process::id(), command_name) else {
        return;
    };
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
}

/// The peak RSS record of a process from its `/proc/PID/status` text: `VmHWM` (kB) first,
/// so that `sort -n` orders records by it, then the process id, the subcommand and the
/// number of threads at exit, tab-separated, e.g. `41236\t4711\tbuild\t9\n`. `None` when
/// the text has no `VmHWM`.
fn peak_rss_record(status: &str, pid: u32, command_name: &str) -> Option<String> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|value| value.parse::<u64>().ok())
    };
    let peak = field("VmHWM")?;
    let threads = field("Threads").unwrap_or(0);
    Some(format!("{peak}\t{pid}\t{command_name}\t{threads}\n"))
}

/// Advice when a write failed because a file system is full (ENOSPC, or EDQUOT): the cause
/// chain already names the file; this says where the store is and how to get space back.
/// The errno is read from the `io::Error` in the chain, never from a message.
fn disk_full_hint(error: &anyhow::Error) -> Option<String> {
    let full = error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|error| {
            // A wrapped error (tempfile's, with its path) has the kind, not the errno.
            matches!(
                error.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || error
                .raw_os_error()
                .is_some_and(|code| code == libc::ENOSPC || code == libc::EDQUOT)
        })
    });
    full.then(|| {
        format!(
            "hint: a file system is full. The store is {} (XBUILD_ROOT): `xbuild prune` frees \
             what no image needs, or point XBUILD_ROOT at a larger file system",
            crate::store::default_root().display()
        )
    })
}

/// Runs one parsed command.
///
/// # Errors
/// Whatever the command fails with, tagged with its [`ExitKind`] where known.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // A step's sandbox process inherits what its build already checked.
    if !matches!(cli.command, Command::RunStep) {
        crate::env::check().map_err(Failure::bad_input)?;
    }
    match cli.command {
        Command::Build(build) => build.run(),
        Command::Images(args) => args.run(),
        Command::Inspect(args) => args.run(),
        Command::History(args) => args.run(),
        Command::Tag(args) => args.run(),
        Command::Rmi(args) => args.run(),
        Command::Prune(args) => args.run(),
        Command::Du(args) => args.run(),
        Command::Import(args) => args.run(),
        Command::Save(args) => args.run(),
        Command::Load(args) => args.run(),
        Command::Fsck(args) => args.run(),
        Command::Pull(pull) => pull.run(),
        Command::Push(push) => push.run(),
        Command::Login(login) => login.run(),
        Command::Logout(logout) => logout.run(),
        Command::Imagetools(imagetools) => imagetools.run(),
        Command::Manifest(manifest) => manifest.run(),
        Command::Attest(attest) => attest.run(),
        Command::Binfmt(binfmt) => binfmt.run(),
        // It exits with the step's status without returning: its record is written first.
        Command::RunStep => crate::sandbox::child::main(|| report_peak_rss("__run-step")),
        Command::Debug(debug) => debug.run(),
        Command::Run(args) => args.run(),
        Command::Builder(args) => args.run(),
        Command::NodeInfo => nodes::node_info(),
        Command::NodeBuild => nodes::node_build(),
        Command::Check(args) => args.run(),
        Command::Store(args) => args.run(),
        // The command tree is handed down, so that completion.rs need not name args.rs.
        Command::Completion(args) => args.run(&<Cli as clap::CommandFactory>::command()),
        Command::ManPages(args) => args.run(<Cli as clap::CommandFactory>::command()),
    }
}

/// Inserts `build` when the first argument is neither a subcommand nor a top-level flag that
/// clap answers itself (`--help`, `--version`), so `xbuild --platform ... .` means
/// `xbuild build --platform ... .`.
fn with_default_subcommand(mut argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(first) = argv.get(1).and_then(|arg| arg.to_str()) else {
        return argv;
    };
    let command = Cli::command();
    let is_subcommand = command
        .get_subcommands()
        .any(|sub| sub.get_name() == first || sub.get_all_aliases().any(|alias| alias == first));
    let is_top_level_flag = matches!(first, "-h" | "--help" | "-V" | "--version" | "help");
    if !is_subcommand && !is_top_level_flag {
        argv.insert(1, "build".into());
    }
    argv
}

/// Refuses an option that is parsed but not implemented yet (exit 2).
pub(crate) fn unsupported(what: impl std::fmt::Display) -> anyhow::Error {
    Failure::unsupported(what).into()
}

impl From<ExitKind> for ExitCode {
    fn from(kind: ExitKind) -> Self {
        Self::from(kind.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_rss_record_names_its_process() {
        let status = "Name:\txbuild\nVmPeak:\t 1830422 kB\nVmHWM:\t   41236 kB\n\
                      VmRSS:\t   30100 kB\nThreads:\t9\n";
        assert_eq!(
            peak_rss_record(status, 4711, "__run-step").as_deref(),
            Some("41236\t4711\t__run-step\t9\n")
        );
        // No VmHWM (not Linux's status format): no record, rather than a made-up figure.
        assert_eq!(
            peak_rss_record("Name:\txbuild\nVmRSS:\t 1 kB\n", 1, "build"),
            None
        );
        // A field whose name only starts like VmHWM's is not taken for it.
        assert_eq!(peak_rss_record("VmHWMx:\t5 kB\n", 1, "build"), None);
    }

    #[test]
    fn completions_name_the_subcommands_and_hide_internal_ones() {
        use clap_complete::Shell;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = completion::render(&Cli::command(), shell);
            assert!(script.contains("imagetools"), "{shell}");
            assert!(script.contains("platform"), "{shell}");
            assert!(!script.contains("__run-step"), "{shell}");
            assert!(!script.contains("fsck"), "{shell}");
        }
    }

    #[test]
    fn man_pages_cover_visible_subcommands() {
        let dir = tempfile::tempdir().unwrap();
        completion::ManPagesArgs {
            dir: dir.path().join("man1"),
        }
        .run(Cli::command())
        .unwrap();
        let page = std::fs::read_to_string(dir.path().join("man1/xbuild-build.1")).unwrap();
        assert!(page.contains("platform"));
        assert!(dir.path().join("man1/xbuild.1").is_file());
        assert!(dir.path().join("man1/xbuild-imagetools-create.1").is_file());
        assert!(!dir.path().join("man1/xbuild-__run-step.1").exists());
    }

    fn argv(args: &[&str]) -> Vec<String> {
        with_default_subcommand(args.iter().map(Into::into).collect())
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect()
    }

    #[test]
    fn build_is_the_default_subcommand() {
        assert_eq!(
            argv(&["xbuild", "--platform", "linux/arm64", "."]),
            ["xbuild", "build", "--platform", "linux/arm64", "."]
        );
        assert_eq!(argv(&["xbuild", "."]), ["xbuild", "build", "."]);
    }

    #[test]
    fn explicit_subcommands_and_help_are_kept() {
        assert_eq!(argv(&["xbuild", "build", "."]), ["xbuild", "build", "."]);
        assert_eq!(argv(&["xbuild", "--help"]), ["xbuild", "--help"]);
        assert_eq!(argv(&["xbuild"]), ["xbuild"]);
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
